//! The calls between the worker and its Durable Objects, typed: one enum per object, shared
//! by the caller and the object, in serde's externally tagged form (`"ensure"`,
//! `{"join":{"userId":"alice",...}}`). An internally tagged form (`{"op":"join",...}`) makes
//! serde buffer the body to find its tag first: slower, and 14 KB more of gzipped wasm.
//!
//! A call is a `POST` with the call's JSON as its body and no headers: the objects read the
//! body whatever its content type, and a headers object costs measurably more to build in
//! workerd — on the pool's path, once per viewer (docs/benchmarks.md). A body that is not a
//! call of the object answers 400 `invalid_call`, never a panic.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stagefan_core::config::FanoutMode;
use stagefan_core::ledger::Quotas;
use stagefan_core::policy::ScaleAction;
use stagefan_core::pool::{BroadcastState, Observation, StageId, StageState};
use stagefan_core::presence::{Free, StageStatus};
use worker::{Env, Method, Request, RequestInit, Response};

use crate::error::{AppError, AppResult};

/// A call to a broadcast's `StagePool` in one region (`idFromName(pool)`, the pool being
/// `{broadcast}` in the primary region, `{broadcast}@{region}` in another), posted to
/// `https://pool/<op>/<pool>`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum PoolCall {
    /// Creates the pool (and its first stages) if it does not exist; answers its snapshot.
    Ensure,
    /// A seat for a viewer (a reconnect presents its lease); answers a [`JoinGrant`].
    Join {
        user_id: String,
        lease_id: Option<String>,
        /// The viewer's client address, when admission control counts seats per client.
        client: Option<String>,
    },
    /// Renews a lease; answers [`Renewed`].
    Heartbeat { lease_id: String },
    /// A make-before-break move of a seat off its draining stage: a new seat on another
    /// stage, the old one kept until the viewer gives it back; answers a [`JoinGrant`] (the
    /// same seat again when the lease's stage is not draining, or the move was made before).
    Move { lease_id: String },
    /// Gives a seat back (idempotent).
    Leave { lease_id: String },
    /// `api` token mode: IVS chose the participant id of the seat's token.
    Bind {
        lease_id: String,
        participant_id: String,
    },
    /// A viewer found its stage missing in IVS; answers whether it is gone.
    StageMissing { lease_id: String },
    /// The stages the host publishes to; answers [`PublisherStages`]. A host may name the
    /// mode it expects (a pool in the other mode refuses).
    Publisher { fanout_mode: Option<FanoutMode> },
    /// The host ends the broadcast: every seat freed, every stage deleted (paced); answers
    /// [`Ended`].
    End,
    /// The host publishes to a stage.
    Published {
        stage_arn: String,
        participant_id: String,
    },
    /// The public summary (`stagefan_core::summary::PublicSummary`).
    Summary,
    /// The admin snapshot.
    Snapshot,
    /// An admin scaling action.
    Action { action: ScaleAction },
    /// A round of the monitor's observations of IVS.
    Observations { observation: Observation },
    /// Stage presence: a stage's `StageSeats` reports seats freed there (left or lapsed);
    /// answers the stage's `StageStatus`.
    StageReport { stage: StageId, frees: Vec<Free> },
    /// The pool object's request counters since it started (for the benchmark); answers
    /// [`ObjectCounters`] with the stages whose objects may hold leases.
    Counters,
}

impl PoolCall {
    /// The name of the call (for errors and logs).
    pub fn name(&self) -> &'static str {
        match self {
            PoolCall::Ensure => "ensure",
            PoolCall::Join { .. } => "join",
            PoolCall::Heartbeat { .. } => "heartbeat",
            PoolCall::Move { .. } => "move",
            PoolCall::Leave { .. } => "leave",
            PoolCall::Bind { .. } => "bind",
            PoolCall::StageMissing { .. } => "stage-missing",
            PoolCall::Publisher { .. } => "publisher",
            PoolCall::End => "end",
            PoolCall::Published { .. } => "published",
            PoolCall::Summary => "summary",
            PoolCall::Snapshot => "snapshot",
            PoolCall::Action { .. } => "action",
            PoolCall::Observations { .. } => "observations",
            PoolCall::StageReport { .. } => "stage-report",
            PoolCall::Counters => "counters",
        }
    }
}

/// A viewer's seat as the pool grants it; the edge mints the token.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinGrant {
    pub broadcast: String,
    pub lease_id: String,
    pub stage_arn: String,
    pub stage_state: StageState,
    pub whip_url: String,
    pub events_url: String,
    pub lease_expires_at: u64,
    pub lease_ttl_seconds: u64,
    pub reconnected: bool,
    /// The seat's IVS participant id: the token must carry it.
    pub participant_id: String,
    /// The display name the seat was taken with.
    pub user_id: String,
    /// Where the broadcast is in its life, and since when (unix ms).
    pub broadcast_state: BroadcastState,
    pub broadcast_state_since: u64,
}

/// A lease renewed by its heartbeat.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Renewed {
    pub lease_id: String,
    /// Unix ms.
    pub expires_at: u64,
    /// Where the broadcast is in its life, and since when (unix ms): how a seated viewer
    /// learns that the host left or came on air.
    pub broadcast_state: BroadcastState,
    pub broadcast_state_since: u64,
    /// The seat's stage is draining: the viewer is to move (the edge asks the pool for its
    /// new seat).
    #[serde(default)]
    pub moving: bool,
}

/// A broadcast the host ended.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ended {
    pub broadcast: String,
    /// Unix ms.
    pub ended_at: u64,
    /// Seats freed by this end.
    pub seats_freed: u32,
    /// Stages being deleted (each in its slot of the IVS budget).
    pub stages_deleting: u32,
}

/// A stage the host publishes to.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherStage {
    pub stage_arn: String,
    pub state: StageState,
    pub whip_url: String,
    pub events_url: String,
}

/// The stages the host publishes to, and what is coming.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherStages {
    pub broadcast: String,
    pub fanout_mode: FanoutMode,
    pub stages: Vec<PublisherStage>,
    /// Stages being created right now (the host page asks again to pick them up).
    pub creating: u32,
    /// Replicate mode: the stages that receive the host by replication, and from which origin.
    #[serde(default)]
    pub replicas: Vec<ReplicaStage>,
}

/// A stage that receives the host by replication, for the host page.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStage {
    pub stage_arn: String,
    /// The origin stage the host publishes to.
    pub origin_arn: String,
    pub state: StageState,
    /// Whether the replica of the origin's current host is known to publish there.
    pub receiving: bool,
}

/// A call to a stage's `StageSeats` (`idFromName(stage_seats_name(pool, stage))`), posted
/// to `https://stage-seats/<op>/<pool>/<stage>`: stage presence (`stagefan_core::presence`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum StageCall {
    /// From the pool: it granted `lease_id` a seat on this stage (`reconnect`: one it already
    /// held); answers [`Admitted`], or 404 `lease_not_found` for a reconnect of a lease that
    /// lapsed or was given back here.
    Admit {
        lease_id: String,
        reconnect: bool,
        status: StageStatus,
    },
    /// A viewer's heartbeat; answers [`Renewed`].
    Heartbeat { lease_id: String },
    /// A viewer gives its seat back (idempotent); reported to the pool before the answer.
    Leave { lease_id: String },
    /// From the pool: its status changed (the host, the end, the stage gone).
    Sync { status: StageStatus },
    /// The object's request counters since it started; answers [`ObjectCounters`].
    Stats,
}

impl StageCall {
    /// The name of the call (for errors, logs and counters).
    pub fn name(&self) -> &'static str {
        match self {
            StageCall::Admit { .. } => "admit",
            StageCall::Heartbeat { .. } => "heartbeat",
            StageCall::Leave { .. } => "leave",
            StageCall::Sync { .. } => "sync",
            StageCall::Stats => "stats",
        }
    }
}

/// The name of a stage's `StageSeats` object: the pool's name (`{broadcast}`, or
/// `{broadcast}@{region}` in another region, where stage ids start again at 1) and the stage,
/// derivable from a lease id of stage presence (`stagefan_core::regions::lease_route`), so the
/// edge needs no pool to find it.
pub fn stage_seats_name(pool: &str, stage: StageId) -> String {
    format!("{pool}/{stage}")
}

/// A lease a stage's object took.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Admitted {
    /// Unix ms.
    pub expires_at: u64,
}

/// Requests an object took since it started, by call (the benchmark's honest count).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectCounters {
    /// Every request but the counters' own.
    pub requests: u64,
    /// By call name.
    pub by_call: std::collections::BTreeMap<String, u64>,
    /// Alarms run.
    #[serde(default)]
    pub alarms: u64,
    /// Requests this object sent to others, by call name.
    #[serde(default)]
    pub sent: std::collections::BTreeMap<String, u64>,
    /// The pool: the stages whose objects may hold leases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageId>,
    /// A stage's object: live leases and frees waiting for the pool.
    #[serde(default)]
    pub leases: u64,
    #[serde(default)]
    pub pending_frees: u64,
}

impl ObjectCounters {
    /// Counts one request of `call`.
    pub fn count(&mut self, call: &str) {
        self.requests += 1;
        *self.by_call.entry(call.to_string()).or_default() += 1;
    }

    /// Counts one request sent, of `call`.
    pub fn sent(&mut self, call: &str) {
        *self.sent.entry(call.to_string()).or_default() += 1;
    }
}

/// A call to the `Registry` (one instance).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum RegistryCall {
    /// Records that a broadcast exists (idempotent).
    Register { broadcast: String, now: u64 },
    /// Every broadcast, sorted: answers [`Broadcasts`].
    List,
    /// Whether a broadcast exists: answers [`Exists`].
    Has { broadcast: String },
    /// Up to `limit` broadcasts after `after`, sorted: answers [`Broadcasts`].
    Page { after: String, limit: u32 },
    /// The ARN of our public key in IVS (imported on first use) in `region` (absent: the
    /// primary region): answers [`KeyArn`]. Self-signed tokens need the key imported in each
    /// region a stage is in.
    PublicKey {
        pem: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
}

impl RegistryCall {
    /// The name of the call (for errors and logs).
    pub fn name(&self) -> &'static str {
        match self {
            RegistryCall::Register { .. } => "register",
            RegistryCall::List => "list",
            RegistryCall::Has { .. } => "has",
            RegistryCall::Page { .. } => "page",
            RegistryCall::PublicKey { .. } => "public-key",
        }
    }
}

/// Broadcast ids.
#[derive(Debug, Serialize, Deserialize)]
pub struct Broadcasts {
    pub broadcasts: Vec<String>,
}

/// Whether a broadcast exists.
#[derive(Debug, Serialize, Deserialize)]
pub struct Exists {
    pub exists: bool,
}

/// The ARN of a public key in IVS.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeyArn {
    pub arn: String,
}

/// A call to an `IvsBudget` (one per IVS endpoint and region).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum BudgetCall {
    /// The next slot of `operation` (an IVS operation name); `throttled`: the caller's last
    /// call of it was throttled by IVS. Answers a `budget::Slot`.
    Reserve { operation: String, throttled: bool },
    /// The account-quota ledger: sets what `holder` (a pool: its broadcast id) holds of the
    /// region's quotas to `want`, or as near as is free, and renews the grant's lease.
    /// Answers a `stagefan_core::ledger::GrantAnswer`.
    Grant { holder: String, want: Quotas },
    /// Renews `holder`'s grant as it is; answers a `GrantAnswer` (nothing once it lapsed).
    Renew { holder: String },
    /// Gives `holder`'s grant back; answers `{"returned": bool}`.
    Return { holder: String },
    /// Reads the ledger (changes nothing); answers a `stagefan_core::ledger::LedgerUsage`.
    Usage {},
}

/// Sends `call` to the object named `name` of the namespace bound as `binding`, at `url`
/// (which only logs and the object's own routing read), and returns its answer whatever the
/// status.
pub async fn send(
    env: &Env,
    binding: &str,
    name: &str,
    url: &str,
    call: &impl Serialize,
) -> AppResult<Response> {
    let stub = env
        .durable_object(binding)?
        .id_from_name(name)?
        .get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(serde_json::to_string(call)?.into()));
    Ok(stub
        .fetch_with_request(Request::new_with_init(url, &init)?)
        .await?)
}

/// [`send`] to objects whose errors are ours to report, not the client's: an error status is
/// an internal error naming `what`; the answer is read as `T`.
pub async fn send_for<T: DeserializeOwned>(
    env: &Env,
    binding: &str,
    name: &str,
    url: &str,
    call: &impl Serialize,
    what: &str,
) -> AppResult<T> {
    let mut resp = send(env, binding, name, url, call).await?;
    let status = resp.status_code();
    let text = resp.text().await?;
    if status >= 400 {
        return Err(AppError::Internal(format!("{what}: {status} {text}")));
    }
    serde_json::from_str(&text).map_err(|e| AppError::Internal(format!("{what}: answer: {e}")))
}

/// Reads the call in an object's request: 400 `invalid_call` when the body is not one.
pub async fn receive<C: DeserializeOwned>(req: &mut Request, object: &str) -> AppResult<C> {
    let text = req.text().await?;
    parse(&text, object)
}

fn parse<C: DeserializeOwned>(text: &str, object: &str) -> AppResult<C> {
    serde_json::from_str(text).map_err(|e| {
        AppError::bad_request("invalid_call", format!("not a call of the {object}: {e}"))
    })
}

/// The answer of an object to a call: its JSON, or the error as the final HTTP error.
pub fn answer<T: Serialize>(result: AppResult<T>) -> worker::Result<Response> {
    Ok(match result {
        Ok(value) => Response::from_json(&value)?,
        Err(e) => e.into_response(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_are_tagged_by_name_with_camel_case_fields() {
        let join = PoolCall::Join {
            user_id: "alice".into(),
            lease_id: None,
            client: Some("203.0.113.9".into()),
        };
        assert_eq!(
            serde_json::to_value(&join).unwrap(),
            json!({"join": {"userId": "alice", "leaseId": null, "client": "203.0.113.9"}})
        );
        let missing = PoolCall::StageMissing {
            lease_id: "b.x".into(),
        };
        assert_eq!(
            serde_json::to_value(&missing).unwrap(),
            json!({"stage-missing": {"leaseId": "b.x"}})
        );
        let action = PoolCall::Action {
            action: ScaleAction::Drain {
                stage_arn: "arn:s".into(),
            },
        };
        let text = serde_json::to_string(&action).unwrap();
        let back: PoolCall = parse(&text, "pool").unwrap();
        assert!(matches!(
            back,
            PoolCall::Action { action: ScaleAction::Drain { stage_arn } } if stage_arn == "arn:s"
        ));
        assert_eq!(
            serde_json::to_value(RegistryCall::PublicKey {
                pem: "p".into(),
                region: None
            })
            .unwrap(),
            json!({"public-key": {"pem": "p"}})
        );
        let back: RegistryCall = parse(
            r#"{"public-key":{"pem":"p","region":"eu-west-1"}}"#,
            "registry",
        )
        .unwrap();
        assert!(matches!(
            back,
            RegistryCall::PublicKey { region: Some(r), .. } if r == "eu-west-1"
        ));
    }

    #[test]
    fn every_call_reads_back() {
        let calls = [
            PoolCall::Ensure,
            PoolCall::Heartbeat {
                lease_id: "l".into(),
            },
            PoolCall::Publisher {
                fanout_mode: Some(FanoutMode::Replicate),
            },
            PoolCall::Observations {
                observation: Observation::default(),
            },
            PoolCall::Summary,
            PoolCall::End,
        ];
        for call in calls {
            let text = serde_json::to_string(&call).unwrap();
            let back: PoolCall = parse(&text, "pool").unwrap();
            assert_eq!(back.name(), call.name(), "{text}");
        }
    }

    #[test]
    fn stage_calls_read_back() {
        let report = PoolCall::StageReport {
            stage: StageId(3),
            frees: vec![Free {
                lease_id: "b.3.x".into(),
                kind: stagefan_core::presence::FreeKind::Lapsed,
            }],
        };
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            json!({"stage-report": {"stage": 3, "frees": [{"leaseId": "b.3.x", "kind": "lapsed"}]}})
        );
        for call in [
            StageCall::Admit {
                lease_id: "b.3.x".into(),
                reconnect: true,
                status: StageStatus::default(),
            },
            StageCall::Heartbeat {
                lease_id: "b.3.x".into(),
            },
            StageCall::Stats,
        ] {
            let text = serde_json::to_string(&call).unwrap();
            let back: StageCall = parse(&text, "stage seats").unwrap();
            assert_eq!(back.name(), call.name(), "{text}");
        }
        assert!(parse::<StageCall>(r#"{"heartbeat":{}}"#, "stage seats").is_err());
        assert_eq!(stage_seats_name("b", StageId(3)), "b/3");
    }

    #[test]
    fn a_malformed_call_is_a_clear_400() {
        for text in [
            "",
            "null",
            "{}",
            r#""teleport""#,
            r#"{"teleport":{}}"#,
            r#""heartbeat""#,
            r#"{"heartbeat":{}}"#,
            r#"{"heartbeat":{"leaseId":7}}"#,
            r#"{"publisher":{"fanoutMode":"sideways"}}"#,
        ] {
            match parse::<PoolCall>(text, "pool") {
                Err(AppError::BadRequest { code, message, .. }) => {
                    assert_eq!(code, "invalid_call");
                    assert!(message.starts_with("not a call of the pool"), "{message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(
            parse::<BudgetCall>(r#"{"reserve":{"operation":"CreateStage"}}"#, "budget").is_err()
        );
        assert!(parse::<BudgetCall>(r#"{"grant":{"holder":"b"}}"#, "budget").is_err());
    }

    #[test]
    fn ledger_calls_read_back() {
        let grant = BudgetCall::Grant {
            holder: "b".into(),
            want: Quotas {
                subscriptions: 50,
                publishers: 1,
                stages: 1,
            },
        };
        assert_eq!(
            serde_json::to_value(&grant).unwrap(),
            json!({"grant": {"holder": "b", "want": {"subscriptions": 50, "publishers": 1, "stages": 1}}})
        );
        for text in [
            r#"{"renew":{"holder":"b"}}"#,
            r#"{"return":{"holder":"b"}}"#,
            r#"{"usage":{}}"#,
        ] {
            parse::<BudgetCall>(text, "budget").unwrap();
        }
        assert_eq!(
            serde_json::to_value(BudgetCall::Usage {}).unwrap(),
            json!({"usage": {}})
        );
    }
}
