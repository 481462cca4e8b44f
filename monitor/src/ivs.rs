//! The monitor's IVS client: raw REST-JSON calls signed with SigV4 (`stagefan_core::sigv4`),
//! each one through the [`Budget`], counted and timed in [`IvsMetrics`](crate::metrics).
//!
//! A call is never retried here: a throttled or failed call switches on the budget's backoff
//! for its operation, and the poll loop simply picks the work up again in a later round.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;
use stagefan_core::ivs::{
    EmptyResponse, GetStageRequest, GetStageResponse, IvsError, ListParticipantsRequest,
    ListParticipantsResponse, ListStagesRequest, ListStagesResponse, Operation, ParticipantState,
    Stage, SIGNING_NAME,
};
use stagefan_core::sigv4::{self, Credentials, HttpRequest, SigningParams, UtcDateTime};
use tokio::time::Instant;

use crate::budget::{Budget, CallResult, Deferred};
use crate::metrics::Metrics;

/// Page size for list calls (the model's maximum).
pub const PAGE_SIZE: u32 = 100;

/// Why an IVS call gave no result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The budget had no room before the deadline; nothing was sent.
    #[error("{} put off: no budget left before the round's end", .0.name())]
    Deferred(Operation, Deferred),
    /// IVS answered with an error.
    #[error("{0}")]
    Ivs(#[from] IvsError),
    /// No answer (connection refused, timeout).
    #[error("no answer from IVS: {0}")]
    Transport(String),
    /// An answer that is not the operation's JSON.
    #[error("IVS answered {0} with a body that does not parse: {1}")]
    Decode(Operation, String),
}

impl CallError {
    /// Whether IVS said "not found" (a stage deleted between listing and reading).
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Ivs(e) if e.status == 404)
    }

    /// Whether IVS said "slow down" (429).
    pub fn is_throttling(&self) -> bool {
        matches!(self, CallError::Ivs(e) if e.status == 429)
    }
}

/// How to reach IVS.
#[derive(Clone, Debug)]
pub struct IvsSettings {
    /// Base URL, e.g. `http://127.0.0.1:8790` or `https://ivsrealtime.us-east-1.amazonaws.com`.
    pub endpoint: String,
    /// Signing region.
    pub region: String,
    /// Signing credentials.
    pub credentials: Credentials,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// A signed, budgeted IVS client.
pub struct IvsClient {
    http: reqwest::Client,
    base: String,
    host: String,
    region: String,
    credentials: Credentials,
    budget: Arc<Budget>,
    metrics: Arc<Metrics>,
}

impl IvsClient {
    /// A client for `settings`, spending `budget`, reporting to `metrics`.
    pub fn new(
        settings: IvsSettings,
        budget: Arc<Budget>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(&settings.endpoint)
            .map_err(|e| format!("IVS endpoint {:?}: {e}", settings.endpoint))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(format!("IVS endpoint {:?} has no host", settings.endpoint)),
        };
        let http = reqwest::Client::builder()
            .pool_idle_timeout(crate::IDLE_CONNECTION_TIMEOUT)
            .timeout(settings.timeout)
            .build()
            .map_err(|e| e.to_string())?;
        for op in [
            Operation::ListStages,
            Operation::GetStage,
            Operation::ListParticipants,
            Operation::DeleteStage,
        ] {
            metrics
                .ivs
                .set_budget_rate(&settings.region, op, budget.rate());
            let st = budget.state(op);
            metrics
                .ivs
                .set_budget_state(&settings.region, op, st.tokens, st.backoff_seconds);
        }
        Ok(Self {
            http,
            base: settings.endpoint.trim_end_matches('/').to_string(),
            host,
            region: settings.region,
            credentials: settings.credentials,
            budget,
            metrics,
        })
    }

    /// The region this client calls (its SigV4 scope and its metrics' `region`).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The budget this client spends.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// One page of `ListStages` (with tags).
    pub async fn list_stages(
        &self,
        next_token: Option<String>,
        deadline: Instant,
    ) -> Result<ListStagesResponse, CallError> {
        let req = ListStagesRequest {
            next_token,
            max_results: Some(PAGE_SIZE),
        };
        self.call(Operation::ListStages, &req, deadline).await
    }

    /// `GetStage`: the stage, with its `activeSessionId`.
    pub async fn get_stage(&self, arn: &str, deadline: Instant) -> Result<Stage, CallError> {
        let req = GetStageRequest {
            arn: arn.to_string(),
        };
        let resp: GetStageResponse = self.call(Operation::GetStage, &req, deadline).await?;
        resp.stage
            .ok_or_else(|| CallError::Decode(Operation::GetStage, "no `stage` member".into()))
    }

    /// One page of connected participants of a stage's session.
    pub async fn list_participants(
        &self,
        stage_arn: &str,
        session_id: &str,
        next_token: Option<String>,
        deadline: Instant,
    ) -> Result<ListParticipantsResponse, CallError> {
        let req = ListParticipantsRequest {
            stage_arn: stage_arn.to_string(),
            session_id: session_id.to_string(),
            filter_by_state: Some(ParticipantState::Connected),
            next_token,
            max_results: Some(PAGE_SIZE),
            ..ListParticipantsRequest::default()
        };
        self.call(Operation::ListParticipants, &req, deadline).await
    }

    /// `DeleteStage`.
    pub async fn delete_stage(&self, arn: &str, deadline: Instant) -> Result<(), CallError> {
        let req = GetStageRequest {
            arn: arn.to_string(),
        };
        let _: EmptyResponse = self.call(Operation::DeleteStage, &req, deadline).await?;
        Ok(())
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: Operation,
        req: &Req,
        deadline: Instant,
    ) -> Result<Resp, CallError> {
        let permit = match self.budget.acquire(op, deadline).await {
            Ok(p) => p,
            Err(d) => {
                self.metrics.ivs.deferred(&self.region, op);
                return Err(CallError::Deferred(op, d));
            }
        };
        let body = serde_json::to_vec(req).map_err(|e| CallError::Decode(op, e.to_string()))?;
        let path = op.path(None);
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/json"),
        ];
        let signed = sigv4::sign_request(
            &HttpRequest {
                method: op.http_method(),
                path: &path,
                query: "",
                headers: &headers,
                body: &body,
            },
            &SigningParams {
                credentials: &self.credentials,
                region: &self.region,
                service: SIGNING_NAME,
                time: UtcDateTime::from_unix(unix),
                settings: Default::default(),
            },
        )
        .map_err(|e| CallError::Transport(e.to_string()))?;
        let mut request = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("host", &self.host)
            .header("content-type", "application/json");
        for (name, value) in &signed.headers {
            request = request.header(*name, value);
        }
        let started = std::time::Instant::now();
        let sent = request.body(body).send().await;
        let result = match sent {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let error_type = resp
                    .headers()
                    .get("x-amzn-errortype")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match resp.bytes().await {
                    Ok(bytes) => Ok((status, error_type, bytes)),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let seconds = started.elapsed().as_secs_f64();
        // The call has ended: the spacing to the next one of this operation starts now.
        drop(permit);
        let outcome = match result {
            Err(e) => {
                self.metrics
                    .ivs
                    .observe_call(&self.region, op, "error", seconds);
                self.budget.record(op, CallResult::Failed);
                Err(CallError::Transport(e.to_string()))
            }
            Ok((status, error_type, bytes)) => {
                self.metrics
                    .ivs
                    .observe_call(&self.region, op, &status.to_string(), seconds);
                let class = if status == 429 {
                    CallResult::Throttled
                } else if status >= 500 {
                    CallResult::Failed
                } else {
                    CallResult::Answered
                };
                if let Some(pause) = self.budget.record(op, class) {
                    tracing::warn!(
                        region = %self.region,
                        operation = op.name(),
                        status,
                        backoff_ms = pause.as_millis() as u64,
                        "IVS pushed back; pausing this operation"
                    );
                }
                if (200..300).contains(&status) {
                    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
                    serde_json::from_slice(bytes).map_err(|e| CallError::Decode(op, e.to_string()))
                } else {
                    Err(CallError::Ivs(IvsError::from_response(
                        status,
                        error_type.as_deref(),
                        &bytes,
                    )))
                }
            }
        };
        let st = self.budget.state(op);
        self.metrics
            .ivs
            .set_budget_state(&self.region, op, st.tokens, st.backoff_seconds);
        outcome
    }
}
