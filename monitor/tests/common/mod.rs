//! Test doubles that are real HTTP servers on port 0: a scripted IVS (SigV4-verified, with
//! forced throttling and faults) and a scripted edge (admin API over simple pools). Their
//! clocks are tokio's, so tests can pause time.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use stagefan_core::budget::{SlotRate, SlotSchedule};
use stagefan_core::ivs::ParticipantSummary;
use stagefan_core::policy::ScaleAction;
use stagefan_core::pool::{Drift, Observation, Snapshot, StageId, StageState, StageView, Stats};
use stagefan_core::sigv4::{self, Credentials, HttpRequest, VerifyParams};
use stagefan_monitor::budget::Budget;
use stagefan_monitor::edge::EdgeClient;
use stagefan_monitor::ivs::{IvsClient, IvsSettings};
use stagefan_monitor::metrics::Metrics;
use stagefan_monitor::poller::{PollSettings, Poller};
use tokio::time::Instant;

pub const ACCESS_KEY: &str = "AKIDLOCALSTAGEFAN";
pub const SECRET: &str = "stagefan-local-secret";
pub const ADMIN_KEY: &str = "admin-key-for-tests";
/// The deployment the monitor under test belongs to (its default).
pub const DEPLOYMENT: &str = "local";
/// The scripted pools' knobs (they travel in each snapshot): a stage empty for 60 s is
/// drained, a drained one deleted after 20 s, and 1 free seat is kept.
pub const SCALE_DOWN_GRACE_MS: u64 = 60_000;
pub const DELETE_GRACE_MS: u64 = 20_000;

pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

pub fn arn(id: &str) -> String {
    format!("arn:aws:ivs:us-east-1:123456789012:stage/{id}")
}

/// A stage id of 12 alphanumerics from a number.
pub fn stage_id(n: usize) -> String {
    format!("st{n:010}")
}

// ------------------------------------------------------------------------------------------
// Scripted IVS

#[derive(Clone, Debug, Default)]
pub struct IvsStageRec {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub session: Option<String>,
    pub participants: Vec<ParticipantSummary>,
}

#[derive(Clone, Debug)]
pub struct Call {
    pub op: String,
    pub at: Instant,
    pub status: u16,
    pub arn: Option<String>,
}

#[derive(Default)]
pub struct IvsState {
    pub stages: BTreeMap<String, IvsStageRec>,
    pub calls: Vec<Call>,
    /// Statuses to answer instead of doing the operation, per operation, in order.
    pub script: HashMap<String, VecDeque<u16>>,
    pub bad_signatures: usize,
    /// The region whose SigV4 scope requests must carry (`None`: us-east-1).
    pub region: Option<String>,
}

#[derive(Clone, Default)]
pub struct ScriptedIvs(pub Arc<Mutex<IvsState>>);

impl ScriptedIvs {
    /// An IVS of `region`: it accepts only requests signed for that region.
    pub fn in_region(region: &str) -> ScriptedIvs {
        let ivs = ScriptedIvs::default();
        ivs.0.lock().unwrap().region = Some(region.to_string());
        ivs
    }

    /// A stage; a `managed` one is stagefan's, of the monitor's deployment.
    pub fn add_stage(&self, arn: &str, managed: bool, broadcast: Option<&str>) {
        self.add_stage_of(arn, managed.then_some(DEPLOYMENT), broadcast);
    }

    /// A stage of `deployment`'s stagefan (`None`: not stagefan's).
    pub fn add_stage_of(&self, arn: &str, deployment: Option<&str>, broadcast: Option<&str>) {
        let mut tags = BTreeMap::new();
        if let Some(d) = deployment {
            tags.insert("stagefan:managed".to_string(), "true".to_string());
            tags.insert("stagefan:deployment".to_string(), d.to_string());
        }
        if let Some(b) = broadcast {
            tags.insert("stagefan:broadcast".to_string(), b.to_string());
        }
        self.0.lock().unwrap().stages.insert(
            arn.to_string(),
            IvsStageRec {
                name: format!("name-{}", arn.rsplit('/').next().unwrap()),
                tags,
                ..Default::default()
            },
        );
    }

    /// Puts `publishers` host(s) and `subscribers` viewers on a stage, in a session.
    pub fn set_participants(&self, arn: &str, publishers: usize, subscribers: usize) {
        let mut st = self.0.lock().unwrap();
        let rec = st.stages.get_mut(arn).expect("stage exists");
        rec.session = Some("st-session000001".to_string());
        rec.participants.clear();
        for i in 0..publishers {
            rec.participants
                .push(participant(&format!("host{i}"), true));
        }
        for i in 0..subscribers {
            rec.participants
                .push(participant(&format!("viewer{i}"), false));
        }
    }

    pub fn script(&self, op: &str, statuses: &[u16]) {
        self.0
            .lock()
            .unwrap()
            .script
            .entry(op.to_string())
            .or_default()
            .extend(statuses.iter().copied());
    }

    pub fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().calls.clone()
    }

    pub fn calls_of(&self, op: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.op == op).collect()
    }

    pub fn has_stage(&self, arn: &str) -> bool {
        self.0.lock().unwrap().stages.contains_key(arn)
    }

    pub async fn start(&self) -> SocketAddr {
        let router = Router::new().fallback(ivs_handler).with_state(self.clone());
        serve(router).await
    }
}

fn participant(id: &str, published: bool) -> ParticipantSummary {
    serde_json::from_value(json!({
        "participantId": id,
        "userId": id,
        "state": "CONNECTED",
        "published": published,
    }))
    .unwrap()
}

fn ivs_error(status: u16, kind: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("x-amzn-ErrorType", kind.to_string())],
        Json(json!({ "message": message })),
    )
        .into_response()
}

async fn ivs_handler(
    State(ivs): State<ScriptedIvs>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = uri.path().trim_start_matches('/').to_string();
    let header_pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let header_refs: Vec<(&str, &str)> = header_pairs
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let region = ivs
        .0
        .lock()
        .unwrap()
        .region
        .clone()
        .unwrap_or_else(|| "us-east-1".to_string());
    let verified = sigv4::verify(
        &HttpRequest {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            headers: &header_refs,
            body: &body,
        },
        &VerifyParams {
            region: &region,
            service: "ivs",
            now_unix,
            max_skew_secs: sigv4::MAX_CLOCK_SKEW_SECS,
            normalize_path: true,
        },
        |key| (key == ACCESS_KEY).then(|| Credentials::new(ACCESS_KEY, SECRET, None)),
    );
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let arn = req
        .get("arn")
        .or_else(|| req.get("stageArn"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut st = ivs.0.lock().unwrap();
    let at = Instant::now();
    if let Err(e) = verified {
        st.bad_signatures += 1;
        st.calls.push(Call {
            op,
            at,
            status: 403,
            arn,
        });
        return ivs_error(403, "InvalidSignatureException", &e.to_string());
    }
    if let Some(status) = st.script.get_mut(&op).and_then(VecDeque::pop_front) {
        st.calls.push(Call {
            op,
            at,
            status,
            arn,
        });
        return match status {
            429 => ivs_error(429, "ThrottlingException", "Rate exceeded"),
            s if s >= 500 => ivs_error(s, "InternalServerException", "scripted fault"),
            s => ivs_error(s, "ValidationException", "scripted error"),
        };
    }
    let page = |total: usize| {
        let start: usize = req
            .get("nextToken")
            .and_then(Value::as_str)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let size = req.get("maxResults").and_then(Value::as_u64).unwrap_or(50) as usize;
        let end = (start + size).min(total);
        let next = (end < total).then(|| end.to_string());
        (start.min(total), end, next)
    };
    let (status, resp) = match op.as_str() {
        "ListStages" => {
            let all: Vec<Value> = st
                .stages
                .iter()
                .map(|(a, r)| {
                    json!({"arn": a, "name": r.name, "tags": r.tags, "activeSessionId": r.session})
                })
                .collect();
            let (s, e, next) = page(all.len());
            (200, json!({"stages": all[s..e], "nextToken": next}))
        }
        "GetStage" => match arn.as_ref().and_then(|a| st.stages.get(a).map(|r| (a, r))) {
            Some((a, r)) => (
                200,
                json!({"stage": {"arn": a, "name": r.name, "tags": r.tags, "activeSessionId": r.session}}),
            ),
            None => (404, Value::Null),
        },
        "ListParticipants" => match arn.as_ref().and_then(|a| st.stages.get(a)) {
            Some(r) => {
                let all = r.participants.clone();
                let (s, e, next) = page(all.len());
                (200, json!({"participants": all[s..e], "nextToken": next}))
            }
            None => (404, Value::Null),
        },
        "DeleteStage" => match arn.as_ref().and_then(|a| st.stages.remove(a)) {
            Some(_) => (200, json!({})),
            None => (404, Value::Null),
        },
        _ => (400, Value::Null),
    };
    st.calls.push(Call {
        op,
        at,
        status,
        arn,
    });
    match status {
        200 => Json(resp).into_response(),
        404 => ivs_error(404, "ResourceNotFoundException", "no such stage"),
        _ => ivs_error(400, "ValidationException", "unknown operation"),
    }
}

// ------------------------------------------------------------------------------------------
// Scripted edge

#[derive(Clone, Debug)]
pub struct ActionRec {
    pub broadcast: String,
    pub action: ScaleAction,
    pub outcome: String,
    pub at: Instant,
}

/// A slot the scripted edge handed out from its account-wide budget.
#[derive(Clone, Debug)]
pub struct SlotRec {
    pub operation: String,
    /// The region named (`None`: none, the primary).
    pub region: Option<String>,
    pub throttled: bool,
    pub at: Instant,
}

pub struct EdgeState {
    pub pools: BTreeMap<String, Snapshot>,
    /// Pools that exist but are not in the list (their registration has not landed).
    pub unlisted: HashSet<String>,
    /// The budget's schedule (core's, 5 per 1.1 s) and the slots it gave.
    pub schedule: SlotSchedule,
    pub slots: Vec<SlotRec>,
    /// When set, the budget route answers 503 (the edge cannot reach its budget).
    pub budget_down: bool,
    pub observations: Vec<(String, Observation)>,
    pub actions: Vec<ActionRec>,
    pub failing: HashSet<String>,
    pub unauthorized: usize,
    /// What `GET /api/admin/regions` answers (`{"regions": [...]}`).
    pub regions: Value,
    origin: Instant,
    origin_ms: u64,
}

#[derive(Clone)]
pub struct ScriptedEdge(pub Arc<Mutex<EdgeState>>);

impl Default for ScriptedEdge {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(EdgeState {
            pools: BTreeMap::new(),
            unlisted: HashSet::new(),
            schedule: SlotSchedule::new(),
            slots: Vec::new(),
            budget_down: false,
            observations: Vec::new(),
            actions: Vec::new(),
            failing: HashSet::new(),
            unauthorized: 0,
            regions: json!({"regions": []}),
            origin: Instant::now(),
            origin_ms: 1_764_000_000_000,
        })))
    }
}

impl EdgeState {
    pub fn now_ms(&self) -> u64 {
        self.origin_ms + self.origin.elapsed().as_millis() as u64
    }
}

/// A stage of a scripted pool.
pub fn stage(n: u64, arn: &str, state: StageState, load: u32, capacity: u32) -> StageView {
    StageView {
        stage_arn: Some(arn.to_string()),
        id: StageId(n),
        name: format!("name-{}", arn.rsplit('/').next().unwrap()),
        state,
        load,
        capacity,
        created_at: 0,
        live_at: None,
        empty_since: None,
        draining_since: None,
        delete_requested: false,
        host_participant_id: None,
        host_publishing: false,
        origin_arn: None,
        meter: Default::default(),
    }
}

pub fn snapshot(broadcast: &str, min_stages: u32, stages: Vec<StageView>) -> Snapshot {
    let viewers: u32 = stages.iter().map(|s| s.load).sum();
    serde_json::from_value(json!({
        "broadcast": broadcast,
        "capacity": 50,
        "fanoutMode": "multi-publish",
        "minStages": min_stages,
        "maxStages": 2000,
        "deployment": DEPLOYMENT,
        "headroomSeats": 1,
        "scaleDownGraceMs": SCALE_DOWN_GRACE_MS,
        "deleteGraceMs": DELETE_GRACE_MS,
        "viewers": viewers,
        "now": 0,
        "stages": serde_json::to_value(stages).unwrap(),
        "stats": serde_json::to_value(Stats::default()).unwrap(),
    }))
    .unwrap()
}

impl ScriptedEdge {
    pub fn put_pool(&self, snap: Snapshot) {
        self.0
            .lock()
            .unwrap()
            .pools
            .insert(snap.broadcast.clone(), snap);
    }

    /// A pool of another region: `{broadcast}@{region}` (the edge lists only broadcasts).
    pub fn put_pool_in(&self, region: &str, snap: Snapshot) {
        let name = format!("{}@{region}", snap.broadcast);
        self.0.lock().unwrap().pools.insert(name, snap);
    }

    pub fn with_pool<R>(&self, b: &str, f: impl FnOnce(&mut Snapshot, u64) -> R) -> R {
        let mut st = self.0.lock().unwrap();
        let now = st.now_ms();
        f(st.pools.get_mut(b).unwrap(), now)
    }

    pub fn now_ms(&self) -> u64 {
        self.0.lock().unwrap().now_ms()
    }

    pub fn actions(&self) -> Vec<ActionRec> {
        self.0.lock().unwrap().actions.clone()
    }

    pub fn observations(&self) -> Vec<(String, Observation)> {
        self.0.lock().unwrap().observations.clone()
    }

    pub async fn start(&self) -> SocketAddr {
        let router = Router::new()
            .route("/api/admin/broadcasts", get(edge_list))
            .route("/api/admin/broadcasts/{id}", get(edge_snapshot))
            .route(
                "/api/admin/broadcasts/{id}/observations",
                post(edge_observe),
            )
            .route("/api/admin/broadcasts/{id}/actions", post(edge_action))
            .route("/api/admin/ivs-budget/slots", post(edge_slot))
            .route("/api/admin/regions", get(edge_regions))
            .with_state(self.clone());
        serve(router).await
    }
}

fn authorized(edge: &ScriptedEdge, headers: &HeaderMap) -> bool {
    let ok = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {ADMIN_KEY}"));
    if !ok {
        edge.0.lock().unwrap().unauthorized += 1;
    }
    ok
}

fn edge_error(status: StatusCode, code: &str) -> Response {
    edge_error_message(status, code, code)
}

fn edge_error_message(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn edge_list(State(edge): State<ScriptedEdge>, headers: HeaderMap) -> Response {
    if !authorized(&edge, &headers) {
        return edge_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let st = edge.0.lock().unwrap();
    let ids: Vec<String> = st
        .pools
        .keys()
        .filter(|b| !st.unlisted.contains(*b) && !b.contains('@'))
        .cloned()
        .collect();
    Json(json!({ "broadcasts": ids })).into_response()
}

async fn edge_snapshot(
    State(edge): State<ScriptedEdge>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&edge, &headers) {
        return edge_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut st = edge.0.lock().unwrap();
    if st.failing.contains(&id) {
        return edge_error(StatusCode::INTERNAL_SERVER_ERROR, "internal");
    }
    let now = st.now_ms();
    match st.pools.get_mut(&id) {
        Some(s) => {
            s.now = now;
            Json(s.clone()).into_response()
        }
        None => edge_error(StatusCode::NOT_FOUND, "broadcast_not_found"),
    }
}

async fn edge_slot(
    State(edge): State<ScriptedEdge>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&edge, &headers) {
        return edge_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut st = edge.0.lock().unwrap();
    if st.budget_down {
        return edge_error(StatusCode::SERVICE_UNAVAILABLE, "budget_unreachable");
    }
    let operation = body["operation"].as_str().unwrap_or_default().to_string();
    if operation != "DeleteStage" {
        return edge_error(StatusCode::BAD_REQUEST, "invalid_field");
    }
    let throttled = body["throttled"].as_bool().unwrap_or(false);
    let region = body["region"].as_str().map(str::to_string);
    let now = st.now_ms();
    let rate = SlotRate::new(5, 5, 100);
    if throttled {
        st.schedule.throttled(&rate, now);
    }
    let at = st.schedule.reserve(&rate, now);
    let wait_ms = at - now;
    st.slots.push(SlotRec {
        operation,
        region,
        throttled,
        at: Instant::now() + Duration::from_millis(wait_ms),
    });
    Json(json!({"operation": "DeleteStage", "at": at, "waitMs": wait_ms})).into_response()
}

async fn edge_regions(State(edge): State<ScriptedEdge>, headers: HeaderMap) -> Response {
    if !authorized(&edge, &headers) {
        return edge_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    Json(edge.0.lock().unwrap().regions.clone()).into_response()
}

async fn edge_observe(
    State(edge): State<ScriptedEdge>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(obs): Json<Observation>,
) -> Response {
    if !authorized(&edge, &headers) {
        return edge_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut st = edge.0.lock().unwrap();
    let Some(pool) = st.pools.get(&id) else {
        return edge_error(StatusCode::NOT_FOUND, "broadcast_not_found");
    };
    let mut drift = Vec::new();
    for o in &obs.stages {
        if let Some(s) = pool
            .stages
            .iter()
            .find(|s| s.stage_arn.as_deref() == Some(&o.stage_arn))
        {
            if s.load as usize != o.subscribers.len() {
                drift.push(Drift {
                    stage_arn: o.stage_arn.clone(),
                    pool: s.load,
                    ivs: o.subscribers.len() as u32,
                });
            }
        }
    }
    st.observations.push((id, obs));
    Json(json!({ "drift": drift })).into_response()
}

async fn edge_action(
    State(edge): State<ScriptedEdge>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(action): Json<ScaleAction>,
) -> Response {
    if !authorized(&edge, &headers) {
        return edge_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let mut st = edge.0.lock().unwrap();
    let now = st.now_ms();
    let Some(pool) = st.pools.get_mut(&id) else {
        return edge_error(StatusCode::NOT_FOUND, "broadcast_not_found");
    };
    let active = pool
        .stages
        .iter()
        .filter(|s| matches!(s.state, StageState::Warming | StageState::Live))
        .count() as u32;
    let min = pool.min_stages;
    // As the real pool answers (stack.rs checks the two against each other): a stage it does
    // not have is a 404; a refusal names its reason with `PoolError::code`; a delete drains
    // the stage first if needed, so it obeys the minimum too.
    let arn = match &action {
        ScaleAction::Drain { stage_arn }
        | ScaleAction::Consolidate { stage_arn }
        | ScaleAction::Delete { stage_arn } => Some(stage_arn),
        ScaleAction::Create => None,
    };
    let found = arn.and_then(|arn| {
        pool.stages
            .iter()
            .position(|s| s.stage_arn.as_deref() == Some(arn.as_str()))
    });
    if let (Some(arn), None) = (arn, found) {
        return edge_error_message(
            StatusCode::NOT_FOUND,
            "stage_not_found",
            &format!("unknown stage {arn}"),
        );
    }
    let drainable = |s: &StageView| -> Result<(), &'static str> {
        match s.state {
            StageState::Draining => Ok(()),
            StageState::Warming | StageState::Live if active > min => Ok(()),
            StageState::Warming | StageState::Live => Err("below_min_stages"),
            _ => Err("wrong_state"),
        }
    };
    let (outcome, reason) = match (&action, found) {
        (ScaleAction::Drain { .. } | ScaleAction::Consolidate { .. }, Some(i)) => {
            let s = &mut pool.stages[i];
            match drainable(s) {
                Ok(()) => {
                    if s.state != StageState::Draining {
                        s.state = StageState::Draining;
                        s.draining_since = Some(now);
                    }
                    ("done", None)
                }
                Err(reason) => ("refused", Some(reason)),
            }
        }
        (ScaleAction::Delete { .. }, Some(i)) => {
            let s = &mut pool.stages[i];
            let check = if matches!(s.state, StageState::Creating | StageState::Deleted) {
                Err("wrong_state")
            } else if s.load > 0 {
                Err("has_viewers")
            } else if s.host_publishing && s.state != StageState::Draining {
                Err("host_publishing")
            } else {
                drainable(s)
            };
            match check {
                Ok(()) => {
                    s.state = StageState::Deleted;
                    ("done", None)
                }
                Err(reason) => ("refused", Some(reason)),
            }
        }
        _ => ("refused", Some("not_scripted")),
    };
    let snap = pool.clone();
    st.actions.push(ActionRec {
        broadcast: id,
        action,
        outcome: outcome.to_string(),
        at: Instant::now(),
    });
    Json(json!({"outcome": outcome, "reason": reason, "snapshot": snap})).into_response()
}

// ------------------------------------------------------------------------------------------
// A monitor wired to the doubles.

pub struct Harness {
    pub ivs: ScriptedIvs,
    pub edge: ScriptedEdge,
    pub metrics: Arc<Metrics>,
    pub poller: Poller,
}

pub fn settings(poll: Duration) -> PollSettings {
    PollSettings {
        poll_interval: poll,
        orphan_grace: Duration::from_secs(120),
        deployment: DEPLOYMENT.to_string(),
    }
}

pub async fn harness(
    ivs: ScriptedIvs,
    edge: ScriptedEdge,
    budget: f64,
    settings: PollSettings,
) -> Harness {
    let ivs_addr = ivs.start().await;
    let edge_addr = edge.start().await;
    let metrics = Arc::new(Metrics::new().unwrap());
    let client = IvsClient::new(
        IvsSettings {
            endpoint: format!("http://{ivs_addr}"),
            region: "us-east-1".into(),
            credentials: Credentials::new(ACCESS_KEY, SECRET, None),
            timeout: Duration::from_secs(3600),
        },
        Arc::new(Budget::new(budget)),
        metrics.clone(),
    )
    .unwrap();
    let edge_client = EdgeClient::new(
        &format!("http://{edge_addr}"),
        ADMIN_KEY.into(),
        Duration::from_secs(3600),
        metrics.clone(),
    )
    .unwrap();
    let poller = Poller::new(edge_client, client, metrics.clone(), settings);
    Harness {
        ivs,
        edge,
        metrics,
        poller,
    }
}

/// The value of one series in the exposition, e.g. `stagefan_joins_total{broadcast="default"}`.
pub fn series(exposition: &str, name_and_labels: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let rest = l.strip_prefix(name_and_labels)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Largest number of calls in any half-open one-second window.
pub fn max_per_second(times: &[Instant]) -> usize {
    let mut best = 0;
    for (i, t) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        best = best.max(n);
    }
    best
}

// ------------------------------------------------------------------------------------------
// Processes

use std::path::PathBuf;
use std::process::{Command, Stdio};

// Each test binary uses some of them.
#[allow(unused_imports)]
pub use stagefan_testkit::{free_tcp_port as free_port, temp_dir, Guard};

pub fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's `prometheus` package (apt-get install -y prometheus)"
    );
    path
}

pub async fn scripted_stack() -> (ScriptedIvs, ScriptedEdge, String, String) {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let a = arn("promstage001");
    let b = arn("promstage002");
    ivs.add_stage(&a, true, Some("default"));
    ivs.add_stage(&b, true, Some("default"));
    ivs.set_participants(&a, 1, 12);
    ivs.set_participants(&b, 1, 5);
    let mut snap = snapshot(
        "default",
        1,
        vec![
            stage(1, &a, StageState::Live, 12, 50),
            stage(2, &b, StageState::Live, 5, 50),
        ],
    );
    snap.stats.joins = 42;
    snap.stats.refusals = 3;
    edge.put_pool(snap);
    let ivs_addr = ivs.start().await;
    let edge_addr = edge.start().await;
    (
        ivs,
        edge,
        format!("http://{ivs_addr}"),
        format!("http://{edge_addr}"),
    )
}

pub fn start_monitor(ivs_url: &str, edge_url: &str, port: u16, poll: &str) -> Guard {
    start_monitor_with(ivs_url, edge_url, port, poll, &[])
}

pub fn start_monitor_with(
    ivs_url: &str,
    edge_url: &str,
    port: u16,
    poll: &str,
    extra: &[&str],
) -> Guard {
    // STAGEFAN_MONITOR_BIN runs another build (e.g. release, for measurements).
    let bin = std::env::var("STAGEFAN_MONITOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_stagefan-monitor").to_string());
    let child = Command::new(bin)
        .args([
            "--poll-interval",
            poll,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .env("STAGEFAN_EDGE_URL", edge_url)
        .env("STAGEFAN_ADMIN_KEY", ADMIN_KEY)
        .env("IVS_ENDPOINT", ivs_url)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("AWS_SESSION_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("monitor binary starts");
    Guard(child)
}

pub async fn wait_for(url: &str, want: u16, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(r) = reqwest::get(url).await {
            if r.status().as_u16() == want {
                return r.text().await.unwrap();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} did not answer {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn kill(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

// ------------------------------------------------------------------------------------------
// The real ivs-local

/// The ivs-local binary: `IVS_LOCAL_BIN`, or the one cargo built beside this test
/// (`cargo build -p ivs-local`, or any `cargo test --workspace`).
pub fn ivs_local_bin() -> PathBuf {
    if let Ok(p) = std::env::var("IVS_LOCAL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("ivs-local");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p ivs-local` (same CARGO_TARGET_DIR) or set IVS_LOCAL_BIN",
        bin.display()
    );
    bin
}

/// Starts ivs-local on free ports, control plane only; returns it and its base URL.
pub async fn start_ivs_local(extra_env: &[(&str, &str)]) -> (Guard, String) {
    let port = free_port();
    let media = free_port();
    let mut cmd = Command::new(ivs_local_bin());
    cmd.env("IVS_LOCAL_PORT", port.to_string())
        .env("IVS_LOCAL_MEDIA_PORT", media.to_string())
        .env("IVS_LOCAL_NO_MEDIA", "true")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let guard = Guard(cmd.spawn().expect("ivs-local starts"));
    let base = format!("http://127.0.0.1:{port}");
    wait_for(
        &format!("{base}/_local/stats"),
        200,
        Duration::from_secs(30),
    )
    .await;
    (guard, base)
}

/// One signed IVS call (the test's own, not the monitor's): status and JSON body.
pub async fn ivs_call(base: &str, op: &str, body: Value) -> (u16, Value) {
    let url = reqwest::Url::parse(base).unwrap();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let bytes = serde_json::to_vec(&body).unwrap();
    let path = format!("/{op}");
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let creds = Credentials::new(ACCESS_KEY, SECRET, None);
    let signed = sigv4::sign(
        &HttpRequest {
            method: "POST",
            path: &path,
            query: "",
            headers: &headers,
            body: &bytes,
        },
        &sigv4::SigningParams {
            credentials: &creds,
            region: "us-east-1",
            service: "ivs",
            time: sigv4::UtcDateTime::from_unix(now),
            settings: Default::default(),
        },
    );
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("host", &host)
        .header("content-type", "application/json");
    for (n, v) in &signed.headers {
        req = req.header(*n, v);
    }
    let resp = req.body(bytes).send().await.unwrap();
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

/// CreateStage with tags, retrying throttled attempts; returns the ARN.
pub async fn create_stage(base: &str, name: &str, tags: Value) -> String {
    loop {
        let (status, v) = ivs_call(base, "CreateStage", json!({"name": name, "tags": tags})).await;
        match status {
            200 => return v["stage"]["arn"].as_str().unwrap().to_string(),
            429 => tokio::time::sleep(Duration::from_millis(250)).await,
            s => panic!("CreateStage answered {s}: {v}"),
        }
    }
}

/// ivs-local's `/_local/stats`.
pub async fn local_stats(base: &str) -> Value {
    reqwest::get(format!("{base}/_local/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
