//! The edge's admin API (docs/contract.md, "Admin"): the monitor reads the pools and asks
//! them to act; the pool stays the single writer of its state.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stagefan_core::ivs::Operation;
use stagefan_core::ledger::LedgerUsage;
use stagefan_core::policy::ScaleAction;
use stagefan_core::pool::{Drift, Observation, Snapshot};

use crate::metrics::Metrics;

/// Why an admin call gave no result.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// No answer.
    #[error("no answer from the edge: {0}")]
    Transport(String),
    /// A non-2xx answer.
    #[error("the edge answered {status} on {route}: {body}")]
    Status {
        /// The route label.
        route: &'static str,
        /// HTTP status.
        status: u16,
        /// The body (the edge's JSON error), cut short.
        body: String,
    },
    /// A 2xx answer that is not the expected JSON.
    #[error("the edge's answer on {0} does not parse: {1}")]
    Decode(&'static str, String),
    /// A pool name that is not a broadcast id (`[A-Za-z0-9_-]{1,64}`) or
    /// `{broadcast}@{region}` (never put into a URL).
    #[error("pool name {0:?} is not valid")]
    BadBroadcastId(String),
}

/// `GET /api/admin/broadcasts`.
#[derive(Debug, Deserialize)]
struct BroadcastList {
    broadcasts: Vec<String>,
}

/// The answer to `POST .../observations`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObservationAnswer {
    /// Stages whose pool count differs from IVS's subscriber list.
    pub drift: Vec<Drift>,
    /// Stages that went live because of the observation.
    pub became_live: Vec<String>,
    /// Observed ARNs the pool does not know.
    pub unknown_stages: Vec<String>,
}

/// The answer to `POST .../actions`.
#[derive(Debug, Deserialize)]
pub struct ActionAnswer {
    /// `done` or `refused`.
    pub outcome: String,
    /// Why it was refused.
    #[serde(default)]
    pub reason: Option<String>,
}

impl ActionAnswer {
    /// Whether the pool carried the action out.
    pub fn done(&self) -> bool {
        self.outcome == "done"
    }
}

/// `GET /api/admin/regions`.
#[derive(Debug, Deserialize)]
struct RegionList {
    regions: Vec<RegionUsage>,
}

/// One region's account-quota ledger, as the edge reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct RegionUsage {
    /// The region.
    pub region: String,
    /// Its ledger.
    #[serde(flatten)]
    pub usage: LedgerUsage,
}

/// A slot of the account-wide IVS budget (`POST /api/admin/ivs-budget/slots`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSlot {
    /// The instant (unix ms, the edge's clock) the call may be made.
    pub at: u64,
    /// Milliseconds from the edge's `now` until then: what the monitor sleeps, from the
    /// answer's arrival, so that a clock of its own that is off does not matter.
    pub wait_ms: u64,
}

/// Whether `id` is a valid broadcast id.
pub fn valid_broadcast_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A client of the edge's admin routes.
pub struct EdgeClient {
    http: reqwest::Client,
    base: String,
    admin_key: String,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for EdgeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeClient")
            .field("base", &self.base)
            .field("admin_key", &"<redacted>")
            .finish()
    }
}

impl EdgeClient {
    /// A client of the edge at `base` (e.g. `http://127.0.0.1:8787`).
    pub fn new(
        base: &str,
        admin_key: String,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        reqwest::Url::parse(base).map_err(|e| format!("edge URL {base:?}: {e}"))?;
        let http = reqwest::Client::builder()
            .pool_idle_timeout(crate::IDLE_CONNECTION_TIMEOUT)
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            admin_key,
            metrics,
        })
    }

    /// The ids of every broadcast.
    pub async fn broadcasts(&self) -> Result<Vec<String>, EdgeError> {
        let list: BroadcastList = self
            .send("broadcasts", "/api/admin/broadcasts", None::<&()>)
            .await?;
        Ok(list.broadcasts)
    }

    /// Every region's quota ledger, primary first.
    pub async fn regions(&self) -> Result<Vec<RegionUsage>, EdgeError> {
        let list: RegionList = self
            .send("regions", "/api/admin/regions", None::<&()>)
            .await?;
        Ok(list.regions)
    }

    /// A pool's admin snapshot (`broadcast`: a pool name, `b` or `b@region`).
    pub async fn snapshot(&self, broadcast: &str) -> Result<Snapshot, EdgeError> {
        let path = broadcast_path(broadcast, "")?;
        self.send("snapshot", &path, None::<&()>).await
    }

    /// Posts what IVS showed; returns the drift the pool computed.
    pub async fn observe(
        &self,
        broadcast: &str,
        observation: &Observation,
    ) -> Result<ObservationAnswer, EdgeError> {
        let path = broadcast_path(broadcast, "/observations")?;
        self.send("observations", &path, Some(observation)).await
    }

    /// Asks the pool to carry out a scaling action.
    pub async fn act(
        &self,
        broadcast: &str,
        action: &ScaleAction,
    ) -> Result<ActionAnswer, EdgeError> {
        let path = broadcast_path(broadcast, "/actions")?;
        self.send("actions", &path, Some(action)).await
    }

    /// Reserves the next slot of `op` in `region`'s account-wide IVS budget that the pools
    /// of that region use too (the edge's `IvsBudget` Durable Object of the region).
    /// `throttled`: IVS throttled our last `op` there.
    pub async fn reserve_slot(
        &self,
        region: &str,
        op: Operation,
        throttled: bool,
    ) -> Result<BudgetSlot, EdgeError> {
        let body =
            serde_json::json!({"operation": op.name(), "throttled": throttled, "region": region});
        self.send("ivs_budget", "/api/admin/ivs-budget/slots", Some(&body))
            .await
    }

    async fn send<B: Serialize, R: DeserializeOwned>(
        &self,
        route: &'static str,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, EdgeError> {
        let url = format!("{}{}", self.base, path);
        let req = match body {
            Some(b) => self.http.post(url).json(b),
            None => self.http.get(url),
        }
        .bearer_auth(&self.admin_key);
        let started = std::time::Instant::now();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.metrics
                    .edge
                    .observe_call(route, "error", started.elapsed().as_secs_f64());
                return Err(EdgeError::Transport(e.to_string()));
            }
        };
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await;
        self.metrics
            .edge
            .observe_call(route, &status.to_string(), started.elapsed().as_secs_f64());
        let bytes = bytes.map_err(|e| EdgeError::Transport(e.to_string()))?;
        if !(200..300).contains(&status) {
            let mut body = String::from_utf8_lossy(&bytes).into_owned();
            body.truncate(300);
            return Err(EdgeError::Status {
                route,
                status,
                body,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| EdgeError::Decode(route, e.to_string()))
    }
}

fn broadcast_path(broadcast: &str, tail: &str) -> Result<String, EdgeError> {
    if stagefan_core::regions::parse_pool_name("broadcast", broadcast).is_err() {
        return Err(EdgeError::BadBroadcastId(broadcast.to_string()));
    }
    Ok(format!("/api/admin/broadcasts/{broadcast}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_ids_are_checked_before_they_reach_a_url() {
        assert!(valid_broadcast_id("default"));
        assert!(valid_broadcast_id("a-b_C9"));
        assert!(!valid_broadcast_id(""));
        assert!(!valid_broadcast_id("../x"));
        assert!(!valid_broadcast_id("a/b"));
        assert!(!valid_broadcast_id(&"x".repeat(65)));
        assert!(broadcast_path("a?b", "").is_err());
        assert_eq!(
            broadcast_path("default", "/actions").unwrap(),
            "/api/admin/broadcasts/default/actions"
        );
        // Another region's pool.
        assert_eq!(
            broadcast_path("default@eu-west-1", "").unwrap(),
            "/api/admin/broadcasts/default@eu-west-1"
        );
        assert!(broadcast_path("a@b@c", "").is_err());
        assert!(broadcast_path("a@EU/1", "").is_err());
    }

    #[test]
    fn scale_actions_serialize_as_the_contract_says() {
        let a = ScaleAction::Drain {
            stage_arn: "arn:aws:ivs:us-east-1:123456789012:stage/abcdefghijkl".into(),
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::json!({"action":"drain","stageArn":"arn:aws:ivs:us-east-1:123456789012:stage/abcdefghijkl"})
        );
    }
}
