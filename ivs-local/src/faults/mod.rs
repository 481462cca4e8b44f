//! Scripted faults of the control plane, so that a client's paths for a bad day at AWS can be
//! tested against the real emulator: an operation answers an error or a throttle, is slow, or
//! takes effect while its answer is lost (a 5xx, or the connection cut mid-answer).
//!
//! `POST /_local/faults` adds a rule, `GET` lists the rules that remain and how often each kind
//! fired, `DELETE` removes every rule (unsigned, local only, like `/_local/stats`). A rule
//! applies to the signed requests of one operation that pass the rate limiter, in the order
//! rules were added: it lets `skip` of them through, then acts on the next `count`, then is
//! gone.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Map, Value};
use stagefan_core::ivs::{ErrorKind, IvsError, Operation};

use crate::app::App;

/// Most rules held at once.
pub const MAX_RULES: usize = 1_000;
/// Largest `count` and `skip`.
pub const MAX_COUNT: u64 = 1_000_000;
/// Longest `delayMs`.
pub const MAX_DELAY_MS: u64 = 600_000;

/// What a rule does to a request it applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Answers an IVS error with `status`; the operation does not happen.
    Error,
    /// Answers 429 `ThrottlingException`; the operation does not happen.
    Throttle,
    /// Waits `delay`, then carries out the operation as usual.
    Delay,
    /// Carries out the operation, then answers a 5xx (or cuts the connection mid-answer): the
    /// client cannot tell whether it happened.
    LostAfterEffect,
}

impl FaultKind {
    /// The name in the JSON API.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Error => "error",
            FaultKind::Throttle => "throttle",
            FaultKind::Delay => "delay",
            FaultKind::LostAfterEffect => "lost_after_effect",
        }
    }

    fn from_name(name: &str) -> Option<FaultKind> {
        [
            FaultKind::Error,
            FaultKind::Throttle,
            FaultKind::Delay,
            FaultKind::LostAfterEffect,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// A rule as asked for (validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub operation: Operation,
    pub kind: FaultKind,
    /// The status answered (`error`: 400..=599, `lost_after_effect`: 500..=599).
    pub status: Option<u16>,
    /// Requests acted on before the rule is gone.
    pub count: u64,
    /// Matching requests let through first.
    pub skip: u64,
    /// Wait before acting (any kind; the whole point of `delay`).
    pub delay: Duration,
    /// `lost_after_effect` only: cut the connection mid-answer instead of a 5xx.
    pub cut: bool,
}

/// A refused rule: the field at fault and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn integer(
    obj: &Map<String, Value>,
    field: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, SpecError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(bad(
                field,
                format!("{field} must be an integer from {min} to {max}"),
            )),
        },
    }
}

impl FaultSpec {
    /// Reads a rule from its JSON form; unknown fields and fields that do not fit the kind are
    /// refused, naming the field.
    pub fn from_json(v: &Value) -> Result<FaultSpec, SpecError> {
        let Some(obj) = v.as_object() else {
            return Err(bad("", "the body must be a JSON object"));
        };
        const FIELDS: [&str; 7] = [
            "operation",
            "kind",
            "status",
            "count",
            "skip",
            "delayMs",
            "cut",
        ];
        if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(
                unknown,
                format!("unknown field {unknown} (known: {})", FIELDS.join(", ")),
            ));
        }
        let operation = match obj.get("operation") {
            Some(Value::String(name)) => Operation::from_name(name)
                .ok_or_else(|| bad("operation", format!("no IVS operation named {name:?}")))?,
            _ => {
                return Err(bad(
                    "operation",
                    "operation must name an IVS operation, e.g. \"CreateStage\"",
                ))
            }
        };
        let kinds = "error, throttle, delay or lost_after_effect";
        let kind = match obj.get("kind") {
            Some(Value::String(name)) => FaultKind::from_name(name)
                .ok_or_else(|| bad("kind", format!("kind must be {kinds}, not {name:?}")))?,
            _ => return Err(bad("kind", format!("kind must be {kinds}"))),
        };
        let status = integer(obj, "status", 0, u64::from(u16::MAX))?.map(|s| s as u16);
        let count = integer(obj, "count", 1, MAX_COUNT)?.unwrap_or(1);
        let skip = integer(obj, "skip", 0, MAX_COUNT)?.unwrap_or(0);
        let delay_ms = integer(obj, "delayMs", 0, MAX_DELAY_MS)?;
        let cut = match obj.get("cut") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("cut", "cut must be true or false")),
        };
        let status = match kind {
            FaultKind::Error => match status.unwrap_or(500) {
                s @ 400..=599 => Some(s),
                _ => return Err(bad("status", "an error's status must be from 400 to 599")),
            },
            FaultKind::LostAfterEffect if cut => {
                if status.is_some() {
                    return Err(bad("status", "a cut connection answers no status"));
                }
                None
            }
            FaultKind::LostAfterEffect => match status.unwrap_or(500) {
                s @ 500..=599 => Some(s),
                _ => return Err(bad(
                    "status",
                    "a lost answer's status must be from 500 to 599 (a 4xx says it did not happen)",
                )),
            },
            FaultKind::Throttle | FaultKind::Delay => {
                if status.is_some() {
                    return Err(bad(
                        "status",
                        format!("status is not used by kind {}", kind.name()),
                    ));
                }
                None
            }
        };
        if cut && kind != FaultKind::LostAfterEffect {
            return Err(bad("cut", "cut applies to kind lost_after_effect only"));
        }
        if kind == FaultKind::Delay && delay_ms.unwrap_or(0) == 0 {
            return Err(bad("delayMs", "a delay needs delayMs > 0"));
        }
        Ok(FaultSpec {
            operation,
            kind,
            status,
            count,
            skip,
            delay: Duration::from_millis(delay_ms.unwrap_or(0)),
            cut,
        })
    }
}

#[derive(Debug)]
struct Rule {
    id: u64,
    spec: FaultSpec,
    /// Requests still to act on.
    remaining: u64,
    /// Requests still to let through first.
    skip: u64,
    fired: u64,
}

/// One rule in `GET /_local/faults`.
#[derive(Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    pub id: u64,
    pub operation: &'static str,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub delay_ms: u64,
    pub cut: bool,
    /// Requests still to let through before acting.
    pub skip: u64,
    /// Requests still to act on.
    pub remaining: u64,
    /// Requests acted on so far.
    pub fired: u64,
}

impl Rule {
    fn view(&self) -> RuleView {
        RuleView {
            id: self.id,
            operation: self.spec.operation.name(),
            kind: self.spec.kind.name(),
            status: self.spec.status,
            delay_ms: self.spec.delay.as_millis() as u64,
            cut: self.spec.cut,
            skip: self.skip,
            remaining: self.remaining,
            fired: self.fired,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    rules: Vec<Rule>,
    /// Faults injected so far, by operation and kind (kept when rules are cleared).
    fired: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
}

/// The rules in force, shared by every request.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<Inner>,
}

/// Why a rule could not be added.
#[derive(Debug, PartialEq, Eq)]
pub enum AddError {
    Invalid(SpecError),
    TooMany,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule behind those already there.
    pub fn add(&self, spec: FaultSpec) -> Result<RuleView, AddError> {
        let mut inner = self.lock();
        if inner.rules.len() >= MAX_RULES {
            return Err(AddError::TooMany);
        }
        inner.next_id += 1;
        let rule = Rule {
            id: inner.next_id,
            remaining: spec.count,
            skip: spec.skip,
            spec,
            fired: 0,
        };
        let view = rule.view();
        inner.rules.push(rule);
        Ok(view)
    }

    /// Removes every rule; how many there were.
    pub fn clear(&self) -> usize {
        std::mem::take(&mut self.lock().rules).len()
    }

    /// The rules that remain, in the order they apply.
    pub fn rules(&self) -> Vec<RuleView> {
        self.lock().rules.iter().map(Rule::view).collect()
    }

    /// Faults injected so far, by operation and kind.
    pub fn fired(&self) -> BTreeMap<&'static str, BTreeMap<&'static str, u64>> {
        self.lock().fired.clone()
    }

    /// What this request of `op` suffers: every rule for `op` in turn either lets it through
    /// (counting down its `skip`) or acts on it (counting down its `count`); the first that
    /// acts decides.
    pub fn take(&self, op: Operation) -> Injection {
        let mut inner = self.lock();
        let mut acting = None;
        for (i, rule) in inner.rules.iter_mut().enumerate() {
            if rule.spec.operation != op {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            rule.remaining -= 1;
            rule.fired += 1;
            acting = Some((i, rule.spec.clone(), rule.id));
            break;
        }
        let Some((i, spec, id)) = acting else {
            return Injection::default();
        };
        if inner.rules[i].remaining == 0 {
            inner.rules.remove(i);
        }
        *inner
            .fired
            .entry(op.name())
            .or_default()
            .entry(spec.kind.name())
            .or_default() += 1;
        drop(inner);
        tracing::info!(operation = %op, kind = spec.kind.name(), rule = id, "fault injected");
        Injection { spec: Some(spec) }
    }
}

/// The fault one request suffers (none by default).
#[derive(Debug, Default)]
pub struct Injection {
    spec: Option<FaultSpec>,
}

fn error_with_status(status: u16, message: &str) -> IvsError {
    let kind = match status {
        400 => ErrorKind::Validation,
        402 => ErrorKind::ServiceQuotaExceeded,
        403 => ErrorKind::AccessDenied,
        404 => ErrorKind::ResourceNotFound,
        409 => ErrorKind::Conflict,
        429 => ErrorKind::Throttling,
        500..=599 => ErrorKind::InternalServer,
        _ => ErrorKind::Other,
    };
    IvsError {
        kind,
        status,
        message: message.to_string(),
    }
}

impl Injection {
    /// Whether a fault applies at all.
    #[cfg(test)]
    fn is_some(&self) -> bool {
        self.spec.is_some()
    }

    /// Waits the rule's delay, if any.
    pub async fn wait(&self) {
        if let Some(spec) = &self.spec {
            if !spec.delay.is_zero() {
                tokio::time::sleep(spec.delay).await;
            }
        }
    }

    /// The answer instead of the operation, for faults under which it does not happen.
    pub fn refusal(&self) -> Option<IvsError> {
        let spec = self.spec.as_ref()?;
        match spec.kind {
            FaultKind::Error => Some(error_with_status(
                spec.status.unwrap_or(500),
                "Injected fault (ivs-local /_local/faults)",
            )),
            FaultKind::Throttle => Some(IvsError::new(ErrorKind::Throttling, "Rate exceeded")),
            FaultKind::Delay | FaultKind::LostAfterEffect => None,
        }
    }

    /// The answer after the operation ran: a lost answer replaces its result.
    pub fn after_effect<T>(&self, result: Result<T, IvsError>) -> Result<T, IvsError> {
        match &self.spec {
            Some(spec) if spec.kind == FaultKind::LostAfterEffect && !spec.cut => {
                if let Err(e) = &result {
                    tracing::info!(error = %e, "fault: the operation failed; its answer is lost anyway");
                }
                Err(error_with_status(
                    spec.status.unwrap_or(500),
                    "We encountered an internal error. Please try again.",
                ))
            }
            _ => result,
        }
    }

    /// The response as sent: a cut connection sends the status line and half of the body,
    /// then fails the body, so that the server closes the connection mid-answer.
    pub fn deliver(&self, resp: Response) -> Response {
        match &self.spec {
            Some(spec) if spec.kind == FaultKind::LostAfterEffect && spec.cut => {
                let (mut parts, body) = resp.into_parts();
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(parts, Body::new(CutBody::new(body)))
            }
            _ => resp,
        }
    }
}

/// A body that yields the first half of the real one, then an error.
struct CutBody {
    inner: Body,
    state: Cut,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Nothing sent yet.
    Start,
    /// Half sent; the error comes next.
    Half,
    /// The error was given.
    Done,
}

impl CutBody {
    fn new(inner: Body) -> Self {
        Self {
            inner,
            state: Cut::Start,
        }
    }
}

fn cut_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "fault: connection cut after the effect",
    )
}

impl http_body::Body for CutBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.state {
            Cut::Done => Poll::Ready(None),
            Cut::Half => {
                self.state = Cut::Done;
                Poll::Ready(Some(Err(cut_error())))
            }
            // The real answer is small and whole (built from a string): its first frame is it.
            Cut::Start => match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let data = frame.into_data().unwrap_or_default();
                    self.state = Cut::Half;
                    Poll::Ready(Some(Ok(http_body::Frame::data(
                        data.slice(..data.len() / 2),
                    ))))
                }
                Poll::Ready(_) => {
                    self.state = Cut::Done;
                    Poll::Ready(Some(Err(cut_error())))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == Cut::Done
    }
}

fn json_response(status: StatusCode, v: Value) -> Response {
    let mut resp = (status, v.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn listing(app: &App) -> Value {
    json!({"faults": app.faults.rules(), "fired": app.faults.fired()})
}

/// `GET /_local/faults`: the rules that remain and the faults fired so far.
pub async fn list(State(app): State<Arc<App>>) -> Response {
    json_response(StatusCode::OK, listing(&app))
}

/// `POST /_local/faults`: adds one rule (201 with the rule; 400 naming the field at fault).
pub async fn add(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let spec = match parsed {
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "invalid_json", "message": format!("the body is not JSON: {e}")}}),
            )
        }
        Ok(v) => FaultSpec::from_json(&v),
    };
    let result = spec
        .map_err(AddError::Invalid)
        .and_then(|s| app.faults.add(s));
    match result {
        Ok(rule) => json_response(StatusCode::CREATED, json!(rule)),
        Err(AddError::Invalid(e)) => json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": {"code": "invalid_field", "message": e.message, "field": e.field}}),
        ),
        Err(AddError::TooMany) => json_response(
            StatusCode::CONFLICT,
            json!({"error": {"code": "too_many_faults", "message": format!("at most {MAX_RULES} rules at once; DELETE /_local/faults clears them")}}),
        ),
    }
}

/// `DELETE /_local/faults`: removes every rule.
pub async fn clear(State(app): State<Arc<App>>) -> Response {
    let cleared = app.faults.clear();
    json_response(StatusCode::OK, json!({"cleared": cleared}))
}

#[cfg(test)]
mod tests;
