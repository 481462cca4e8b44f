//! The `StagePool` Durable Object: one per broadcast (`idFromName(broadcast)`), the single
//! writer of that broadcast's `stagefan_core::pool::Pool`.
//!
//! The pool is loaded from SQLite once, lazily, on the first request; every mutation writes
//! the rows it touched (`Pool::take_changes`) in the same turn of the event loop, so a
//! response never reports a state that is not stored. Between awaits a Durable Object runs one
//! thing at a time, so assignment is atomic; IVS calls are awaited, and what is in flight with
//! IVS is explicit pool state (a `creating` stage is the create intent).
//!
//! The edge (`routes`) talks to it over internal requests `POST https://pool/<op>/<broadcast>`
//! (JSON body, no headers); errors come back as the final HTTP error.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stagefan_core::budget::SlotSchedule;
use stagefan_core::ivs::{
    CreateStageRequest, CreateStageResponse, DeleteStageRequest, DisconnectParticipantRequest,
    EmptyResponse, GetStageRequest, GetStageResponse, ListStagesRequest, ListStagesResponse,
    Operation,
};
use stagefan_core::policy::{self, ScaleAction};
use stagefan_core::pool::{
    AssignError, CreateIntent, DeleteIntent, JoinRequest, Lease, Observation, Pool, PoolError,
    PoolMeta, PoolRows, Snapshot, Stage, StageEndpoints, StageId, StageState, Stranger,
    LEASE_RANDOM_BYTES, TAG_BROADCAST,
};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use crate::budget;
use crate::error::{AppError, AppResult};
use crate::ivs_client::{CallError, IvsClient, Retry};
use crate::registry;
use crate::runtime;
use crate::settings::Settings;

mod replication;

/// How long a viewer who finds every stage full waits for a stage being created (a join storm
/// on a fresh pool needs about two seconds of IVS's 5/s CreateStage for ten stages).
const WAIT_FOR_CREATE_MS: u64 = 4_000;
/// Attempts of one `CreateStage` intent before it is given up.
const CREATE_ATTEMPTS: u32 = 6;
/// Attempts of a `DeleteStage` or `StopParticipantReplication` (each in its own budget slot).
const BUDGETED_ATTEMPTS: u32 = 4;
/// Slots a call may miss (its instance too busy to call on time) before it calls anyway.
const MAX_MISSED_SLOTS: u32 = 10;
/// How often one stage is checked with `GetStage` when viewers report it missing.
const MISSING_CHECK_INTERVAL_MS: u64 = 10_000;
/// How long, and how many, evicted leases are remembered for their heartbeats.
const EVICTED_RETAINED_MS: u64 = 10 * 60_000;
const EVICTED_RETAINED_MAX: usize = 100_000;
/// The reason IVS's participant list shows for a viewer disconnected without a seat.
const STRANGER_REASON: &str = "stagefan: no seat on this stage (lease lapsed or given back)";

/// How often the alarm tidies the pool (expired leases, scale-down) while it has viewers or
/// more stages than its minimum.
const MAINTENANCE_INTERVAL_MS: u64 = 15_000;

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
}

/// What the edge asks the pool for a viewer (`join`).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinCall {
    pub user_id: String,
    #[serde(default)]
    pub lease_id: Option<String>,
    #[serde(default)]
    pub client: Option<String>,
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

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublisherStages {
    pub broadcast: String,
    pub fanout_mode: stagefan_core::config::FanoutMode,
    pub stages: Vec<PublisherStage>,
    /// Stages being created right now (the host page asks again to pick them up).
    pub creating: u32,
    /// Replicate mode: the stages that receive the host by replication, and from which origin.
    #[serde(default)]
    pub replicas: Vec<replication::ReplicaStage>,
}

/// The state shared by requests and by the background IVS calls they start.
struct Shared {
    sql: SqlStorage,
    env: Env,
    settings: std::result::Result<Settings, String>,
    inner: RefCell<Inner>,
    /// Signalled whenever a create intent ends or gets its slot.
    create_done: CreateSignal,
}

#[derive(Default)]
struct Inner {
    loaded: bool,
    pool: Option<Pool>,
    /// Creates waiting for their slot in the account-wide `CreateStage` budget: when each may
    /// call IVS (this instance's clock).
    create_slots: BTreeMap<StageId, u64>,
    /// This pool's own schedules, used only when the account-wide budget cannot be reached
    /// (so that the pool still never exceeds IVS's rate on its own).
    fallback: BTreeMap<&'static str, SlotSchedule>,
    /// Whether the maintenance alarm is set (saves a storage read per request).
    alarm_set: bool,
    /// Whether the Registry lists this pool (stored: table `registration`). Until it does,
    /// the monitor cannot tell this pool's stages from orphans by the list alone, so every
    /// `ensure`, snapshot and maintenance alarm tries again.
    registered: bool,
    /// Registration attempts made by this instance (for `STAGEFAN_TEST_FAIL_REGISTRATIONS`).
    registration_attempts: u32,
    /// Replicate mode: replications being brought up (memory only).
    replication: replication::Replicator,
    /// Leases dropped because their stage went missing in IVS, and when (memory only: after
    /// a restart their heartbeats answer `lease_not_found`, which the page treats alike).
    evicted: BTreeMap<String, u64>,
    /// When each stage was last checked with `GetStage` after a viewer found it missing.
    checked_missing: BTreeMap<StageId, u64>,
}

/// Wakes the viewers waiting for a stage being created when a create ends (either way) or
/// learns its slot, so that hundreds of waiters in a join storm sleep instead of polling the
/// pool.
#[derive(Default)]
struct CreateSignal {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl CreateSignal {
    fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Resolves at the next `notify` after this call.
    fn next(&self) -> impl Future<Output = ()> + '_ {
        let seen = self.generation.get();
        std::future::poll_fn(move |cx| {
            if self.generation.get() != seen {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Waits for the next `notify`, or `timeout`, whichever comes first.
    async fn wait(&self, timeout: Duration) {
        let mut next = pin!(self.next());
        let mut delay = pin!(worker::Delay::from(timeout));
        std::future::poll_fn(|cx| {
            if next.as_mut().poll(cx).is_ready() || delay.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[durable_object]
pub struct StagePool {
    state: State,
    shared: Rc<Shared>,
}

impl DurableObject for StagePool {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        let settings = Settings::from_env(&env).map_err(|e| format!("{e:?}"));
        StagePool {
            state,
            shared: Rc::new(Shared {
                sql,
                env,
                settings,
                inner: RefCell::new(Inner::default()),
                create_done: CreateSignal::default(),
            }),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        let (op, broadcast) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path.trim_start_matches('/'), ""));
        let (op, broadcast) = (op.to_string(), broadcast.to_string());
        let body: Value = req.json().await.unwrap_or(Value::Null);
        let result = self.handle(&op, &broadcast, body).await;
        Ok(match result {
            Ok(value) => Response::from_json(&value)?,
            Err(e) => e.into_response(),
        })
    }

    async fn alarm(&self) -> Result<Response> {
        if let Err(e) = self.maintain().await {
            worker::console_error!("pool maintenance: {e:?}");
        }
        Response::ok("ok")
    }
}

impl StagePool {
    async fn handle(&self, op: &str, broadcast: &str, body: Value) -> AppResult<Value> {
        let shared = &self.shared;
        let settings = shared
            .settings
            .as_ref()
            .map_err(|e| AppError::Internal(e.clone()))?;
        shared.load(broadcast)?;
        let is_default = settings.config.default_broadcast.as_deref() == Some(broadcast);
        match op {
            "ensure" => {
                self.ensure(broadcast).await?;
                Ok(serde_json::to_value(self.snapshot()?)?)
            }
            "join" => {
                if is_default {
                    // The configured default broadcast exists by configuration.
                    self.ensure(broadcast).await?;
                }
                let call: JoinCall = serde_json::from_value(body)
                    .map_err(|e| AppError::Internal(format!("join call: {e}")))?;
                let grant = self.join(broadcast, &call).await?;
                Ok(serde_json::to_value(grant)?)
            }
            "heartbeat" => {
                let lease_id = body["leaseId"].as_str().unwrap_or_default();
                if !shared.has_pool() {
                    return Err(AppError::lease_not_found());
                }
                let lease =
                    shared.mutate(|pool, now| pool.heartbeat(lease_id, now).map_err(pool_error));
                let lease = match lease {
                    Err(AppError::NotFound { .. }) if shared.was_evicted(lease_id) => {
                        return Err(AppError::Gone {
                            code: "stage_gone",
                            message: "the stage of this seat is gone: ask for a new seat \
                                      (POST /api/token/viewer with this leaseId)"
                                .into(),
                        })
                    }
                    other => other?,
                };
                self.schedule_maintenance().await;
                Ok(json!({"leaseId": lease.id, "expiresAt": lease.expires_at}))
            }
            "leave" => {
                let lease_id = body["leaseId"].as_str().unwrap_or_default();
                if shared.has_pool() {
                    shared.mutate(|pool, now| Ok(pool.leave(lease_id, now)))?;
                }
                Ok(json!({"left": true}))
            }
            "bind" => {
                // api token mode: IVS chose the participant id of the seat's token.
                let lease_id = body["leaseId"].as_str().unwrap_or_default();
                let participant = body["participantId"].as_str().unwrap_or_default();
                if !shared.has_pool() {
                    return Err(AppError::lease_not_found());
                }
                shared.mutate(|pool, now| {
                    pool.bind_participant(lease_id, participant, now)
                        .map_err(pool_error)
                })?;
                Ok(json!({"bound": true}))
            }
            "stage-missing" => {
                let lease_id = body["leaseId"].as_str().unwrap_or_default();
                if !shared.has_pool() {
                    return Err(AppError::lease_not_found());
                }
                let gone = self.check_missing_stage(lease_id).await?;
                Ok(json!({"stageGone": gone}))
            }
            "publisher" => {
                self.ensure(broadcast).await?;
                refuse_mode_switch(shared, &body)?;
                Ok(serde_json::to_value(self.publisher_stages()?)?)
            }
            "published" => {
                let arn = body["stageArn"].as_str().unwrap_or_default();
                let participant = body["participantId"].as_str().unwrap_or_default();
                shared.mutate(|pool, now| {
                    let id = pool.stage_id(arn).map_err(pool_error)?;
                    pool.mark_live(id, participant, now).map_err(pool_error)
                })?;
                // Replicate mode: copy the host into the origin's replica stages.
                replication::spawn(shared, &self.state);
                Ok(json!({"stageArn": arn, "state": "live"}))
            }
            "summary" => {
                if is_default {
                    self.ensure(broadcast).await?;
                }
                let snapshot = self.snapshot()?;
                Ok(shared.with_pool(|pool| {
                    public_summary(&snapshot, |id| pool.stage(id).and_then(|s| s.origin))
                }))
            }
            "snapshot" => {
                if is_default {
                    self.ensure(broadcast).await?;
                } else if shared.has_pool() && !shared.ensure_registered().await {
                    // Asked directly (the monitor checking an orphan candidate's pool).
                    self.schedule_maintenance().await;
                }
                Ok(serde_json::to_value(self.snapshot()?)?)
            }
            "action" => self.action(body).await,
            "observations" => {
                let obs: Observation = serde_json::from_value(body).map_err(|e| {
                    AppError::bad_request("invalid_json", format!("observations: {e}"))
                })?;
                let report = shared.mutate(|pool, now| Ok(pool.observe(&obs, now)))?;
                shared.remember_evicted(&report.evicted);
                if !report.gone.is_empty() {
                    worker::console_warn!("stages gone from IVS: {:?}", report.gone);
                    self.scale_up();
                }
                if !report.strangers.is_empty() {
                    let shared = shared.clone();
                    let strangers = report.strangers.clone();
                    self.state
                        .wait_until(async move { disconnect_strangers(&shared, strangers).await });
                }
                Ok(serde_json::to_value(report)?)
            }
            _ => Err(AppError::NotFound {
                code: "not_found",
                message: format!("no pool operation {op:?}"),
            }),
        }
    }

    /// Creates the pool (and its first `MIN_STAGES` stages) if it does not exist.
    async fn ensure(&self, broadcast: &str) -> AppResult<()> {
        let shared = &self.shared;
        if !shared.has_pool() {
            let settings = shared.settings()?;
            let now = runtime::now_ms();
            let pool =
                Pool::new(broadcast, settings.config.pool_settings(), now).map_err(pool_error)?;
            {
                let mut inner = shared.inner.borrow_mut();
                inner.pool = Some(pool);
            }
            // The first write of a new pool is every row.
            shared.write_all()?;
        }
        if !shared.ensure_registered().await {
            // The maintenance alarm retries until the registration lands.
            self.schedule_maintenance().await;
        }
        self.scale_up();
        Ok(())
    }

    /// Decides and starts the creates the policy asks for (ahead of need).
    fn scale_up(&self) -> u32 {
        let intents = self.shared.plan_creates();
        let started = intents.len() as u32;
        for intent in intents {
            let shared = self.shared.clone();
            self.state.wait_until(async move {
                create_stage(shared.clone(), intent).await;
                // A replica stage created while the host is live gets its replication started.
                replication::run(&shared).await;
            });
        }
        started
    }

    async fn join(&self, broadcast: &str, call: &JoinCall) -> AppResult<JoinGrant> {
        let shared = &self.shared;
        if !shared.has_pool() {
            return Err(AppError::NotFound {
                code: "broadcast_not_found",
                message: format!("no broadcast {broadcast:?}: the host has not started it"),
            });
        }
        let deadline = runtime::now_ms() + WAIT_FOR_CREATE_MS;
        loop {
            let now = runtime::now_ms();
            // A viewer with a seat keeps it; a new one needs a stage with room, and a client
            // at its limit of seats is refused before any stage is asked for.
            let request = JoinRequest {
                user_id: &call.user_id,
                lease_id: call.lease_id.as_deref(),
                client: call.client.as_deref(),
            };
            let (has_room_or_seat, at_limit) = shared.with_pool(|pool| {
                let held = request.lease_id.and_then(|id| pool.lease(id));
                let room = held.is_some_and(|l| pool.stage(l.stage).is_some_and(|s| s.is_active()))
                    || pool.peek_assignment().is_some();
                (room, pool.client_at_limit(&request))
            });
            if !has_room_or_seat && !at_limit {
                // Every stage is full: make more if the policy allows, and wait a little for
                // stages being created, unless their slots in the account-wide CreateStage
                // budget come after the wait (then the viewer is told when to come back).
                self.scale_up();
                let creating = shared.with_pool(|p| p.load_summary().creating);
                let next_stage_by_deadline =
                    shared.next_create_at(now).is_none_or(|at| at < deadline);
                if now < deadline && creating > 0 && next_stage_by_deadline {
                    shared
                        .create_done
                        .wait(Duration::from_millis(deadline - now))
                        .await;
                    continue;
                }
            }
            // Assign (this also records a refusal when there is no seat).
            let random: [u8; LEASE_RANDOM_BYTES] = runtime::random();
            let assigned = {
                let mut inner = shared.inner.borrow_mut();
                let pool = inner.pool.as_mut().ok_or_else(not_found_pool)?;
                pool.join(&request, now, &random)
            };
            match assigned {
                Ok(a) => {
                    let grant = shared.with_pool(|pool| {
                        let endpoints = pool
                            .stage(a.stage)
                            .and_then(|s| s.endpoints.clone())
                            .unwrap_or_default();
                        JoinGrant {
                            broadcast: broadcast.to_string(),
                            lease_id: a.lease_id,
                            stage_arn: a.stage_arn,
                            stage_state: a.stage_state,
                            whip_url: endpoints.whip,
                            events_url: endpoints.events,
                            lease_expires_at: a.expires_at,
                            lease_ttl_seconds: pool.settings().lease_ttl_ms / 1000,
                            reconnected: a.reconnected,
                            participant_id: a.participant_id,
                            user_id: a.user_id,
                        }
                    });
                    shared.persist()?;
                    self.scale_up();
                    self.schedule_maintenance().await;
                    return Ok(grant);
                }
                Err(AssignError::LeaseIdTaken(_)) => continue,
                Err(AssignError::ClientLimit { held, limit }) => {
                    shared.persist()?;
                    return Err(AppError::TooManyRequests {
                        code: "client_seat_limit",
                        message: format!(
                            "this address already holds {held} seats of this broadcast (the \
                             limit is {limit}); give one back or wait for one to lapse"
                        ),
                        retry_after_secs: shared
                            .with_pool(|p| (p.settings().lease_ttl_ms / 1000).max(1) as u32),
                    });
                }
                Err(AssignError::NoSeat(_)) => {
                    shared.persist()?;
                    // A create left unresolved (its outcome unknown, the lookup failing) is
                    // settled by the maintenance alarm: make sure one is set.
                    self.schedule_maintenance().await;
                    let retry_after_secs = shared.retry_after(now);
                    return Err(AppError::NoCapacity { retry_after_secs });
                }
            }
        }
    }

    /// A viewer's join found its stage missing (`STAGE_NOT_FOUND` at WHIP/WHEP or from the
    /// SDK): ask IVS (`GetStage`, within the account-wide budget, at most once per stage per
    /// `MISSING_CHECK_INTERVAL_MS`) and mark the stage gone if IVS no longer has it. Returns
    /// whether the lease's stage is gone (then the viewer asks for a new seat).
    async fn check_missing_stage(&self, lease_id: &str) -> AppResult<bool> {
        let shared = &self.shared;
        let now = runtime::now_ms();
        let stage = shared.with_pool(|pool| {
            let lease = pool.lease(lease_id)?;
            let st = pool.stage(lease.stage)?;
            Some((st.id, st.arn.clone(), st.is_active()))
        });
        let Some((stage, Some(arn), active)) = stage else {
            // No live lease (or its stage is already deleted): the viewer needs a new seat.
            return Ok(!shared.with_pool(|pool| pool.lease(lease_id).is_some()));
        };
        if !active {
            return Ok(false);
        }
        {
            let mut inner = shared.inner.borrow_mut();
            let last = inner.checked_missing.get(&stage).copied();
            if last.is_some_and(|t| now < t + MISSING_CHECK_INTERVAL_MS) {
                return Ok(false);
            }
            inner.checked_missing.insert(stage, now);
        }
        let client = shared.ivs()?;
        let answer: std::result::Result<GetStageResponse, CallError> = call_budgeted(
            shared,
            &client,
            Operation::GetStage,
            &GetStageRequest { arn: arn.clone() },
            BUDGETED_ATTEMPTS,
        )
        .await;
        match answer {
            Err(CallError::Ivs(e)) if e.status == 404 => {
                let evicted =
                    shared.mutate(|pool, now| pool.gone(stage, now).map_err(pool_error))?;
                worker::console_warn!(
                    "stage {arn} is gone from IVS (a viewer found it missing): {} seats evicted",
                    evicted.len()
                );
                shared.remember_evicted(&evicted);
                self.scale_up();
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) => {
                worker::console_error!("GetStage {arn}: {e}");
                Ok(false)
            }
        }
    }

    fn publisher_stages(&self) -> AppResult<PublisherStages> {
        let shared = &self.shared;
        let inner = shared.inner.borrow();
        let pool = inner.pool.as_ref().ok_or_else(not_found_pool)?;
        let stages = pool
            .publisher_stages()
            .into_iter()
            .filter_map(|s| {
                let endpoints = s.endpoints.clone()?;
                Some(PublisherStage {
                    stage_arn: s.arn.clone()?,
                    state: s.state,
                    whip_url: endpoints.whip,
                    events_url: endpoints.events,
                })
            })
            .collect();
        Ok(PublisherStages {
            broadcast: pool.broadcast().to_string(),
            fanout_mode: pool.fanout(),
            stages,
            creating: pool.load_summary().creating,
            replicas: replication::replica_stages(pool),
        })
    }

    fn snapshot(&self) -> AppResult<Snapshot> {
        self.shared.mutate(|pool, now| Ok(pool.snapshot(now)))
    }

    /// Admin scaling actions (`create`, `drain`, `delete`).
    async fn action(&self, body: Value) -> AppResult<Value> {
        let shared = &self.shared;
        if !shared.has_pool() {
            return Err(not_found_pool());
        }
        let action: ScaleAction = serde_json::from_value(body).map_err(|e| {
            AppError::bad_field(
                "action",
                format!("`action` must be create, drain or delete (with `stageArn`): {e}"),
            )
        })?;
        let outcome: std::result::Result<(), PoolError> = match &action {
            ScaleAction::Create => {
                let intent = shared.mutate(|pool, now| Ok(pool.begin_create(now)));
                match intent? {
                    Ok(intent) => {
                        // An explicit create waits for its slot in the budget like any other.
                        create_stage(shared.clone(), intent).await;
                        replication::spawn(shared, &self.state);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            ScaleAction::Drain { stage_arn } => shared.mutate(|pool, now| {
                let id = pool.stage_id(stage_arn).map_err(pool_error)?;
                Ok(pool.drain(id, now))
            })?,
            ScaleAction::Delete { stage_arn } => {
                replication::release_for_delete(shared, stage_arn).await;
                let intent = shared.mutate(|pool, now| {
                    let id = pool.stage_id(stage_arn).map_err(pool_error)?;
                    Ok(pool.request_delete(id, now))
                })?;
                match intent {
                    Ok(intent) => delete_stage(shared, intent).await,
                    Err(e) => Err(e),
                }
            }
        };
        let snapshot = self.snapshot()?;
        Ok(match outcome {
            Ok(()) => json!({"outcome": "done", "snapshot": snapshot}),
            Err(e) => {
                json!({"outcome": "refused", "reason": e.code(), "message": e.to_string(), "snapshot": snapshot})
            }
        })
    }

    /// Sets the alarm that sweeps expired leases and scales down, if none is set.
    async fn schedule_maintenance(&self) {
        if self.shared.inner.borrow().alarm_set {
            return;
        }
        self.shared.inner.borrow_mut().alarm_set = true;
        let storage = self.state.storage();
        if let Ok(None) = storage.get_alarm().await {
            let _ = storage
                .set_alarm(Duration::from_millis(MAINTENANCE_INTERVAL_MS))
                .await;
        }
    }

    async fn maintain(&self) -> AppResult<()> {
        let shared = &self.shared;
        shared.inner.borrow_mut().alarm_set = false;
        shared.load("")?;
        if !shared.has_pool() {
            return Ok(());
        }
        // First, so that no error below keeps a pool the Registry lost from being listed; the
        // alarm is re-armed (`busy`) until the registration lands.
        let registered = shared.ensure_registered().await;
        if !registered {
            self.schedule_maintenance().await;
        }
        let settings = shared.settings()?;
        let policy_cfg = settings.config.policy();
        let snapshot = self.snapshot()?;
        let now = runtime::now_ms();
        for action in policy::scale_down(&policy_cfg, &snapshot, now) {
            match action {
                ScaleAction::Drain { stage_arn } => {
                    let _ = shared.mutate(|pool, now| {
                        let id = pool.stage_id(&stage_arn).map_err(pool_error)?;
                        Ok(pool.drain(id, now))
                    });
                }
                ScaleAction::Delete { stage_arn } => {
                    replication::release_for_delete(shared, &stage_arn).await;
                    let intent = shared.mutate(|pool, now| {
                        let id = pool.stage_id(&stage_arn).map_err(pool_error)?;
                        Ok(pool.request_delete(id, now))
                    })?;
                    if let Ok(intent) = intent {
                        let _ = delete_stage(shared, intent).await;
                    }
                }
                ScaleAction::Create => {}
            }
        }
        // Creates whose instance died mid-call: resolved by looking the stage up by name,
        // never by creating again.
        let stale = policy::stale_creates(&policy_cfg, &snapshot, now);
        if !stale.is_empty() {
            let client = shared.ivs()?;
            for id in stale {
                let Some(intent) = shared.with_pool(|p| {
                    p.stage(id).map(|s| CreateIntent {
                        stage: id,
                        name: s.name.clone(),
                        tags: p.tags(),
                        origin: s.origin,
                    })
                }) else {
                    continue;
                };
                if let Ok(found) = find_stage_by_name(&client, &intent).await {
                    let _ = shared.mutate(|pool, now| {
                        Ok(match found {
                            Some(stage) => {
                                let endpoints = stage.endpoints.unwrap_or_default();
                                pool.created(
                                    id,
                                    &stage.arn,
                                    StageEndpoints {
                                        whip: endpoints.whip.unwrap_or_default(),
                                        events: endpoints.events.unwrap_or_default(),
                                    },
                                    now,
                                )
                            }
                            None => pool.create_failed(id, now),
                        })
                    });
                    shared.create_done.notify();
                }
            }
        }
        self.scale_up();
        replication::spawn(shared, &self.state);
        let busy = !registered
            || shared.with_pool(|p| {
                let load = p.load_summary();
                p.viewers() > 0
                    || load.creating > 0
                    || load.warming + load.live + load.draining > p.settings().min_stages
            });
        if busy {
            self.schedule_maintenance().await;
        }
        Ok(())
    }
}

impl Shared {
    fn settings(&self) -> AppResult<&Settings> {
        self.settings
            .as_ref()
            .map_err(|e| AppError::Internal(e.clone()))
    }

    fn has_pool(&self) -> bool {
        self.inner.borrow().pool.is_some()
    }

    /// Remembers leases evicted with a stage that went missing, so their heartbeats can say
    /// why (`stage_gone`) for `EVICTED_RETAINED_MS`.
    fn remember_evicted(&self, leases: &[String]) {
        if leases.is_empty() {
            return;
        }
        let now = runtime::now_ms();
        let mut inner = self.inner.borrow_mut();
        inner
            .evicted
            .retain(|_, at| now.saturating_sub(*at) < EVICTED_RETAINED_MS);
        for id in leases {
            if inner.evicted.len() >= EVICTED_RETAINED_MAX {
                break;
            }
            inner.evicted.insert(id.clone(), now);
        }
    }

    fn was_evicted(&self, lease_id: &str) -> bool {
        let now = runtime::now_ms();
        self.inner
            .borrow()
            .evicted
            .get(lease_id)
            .is_some_and(|at| now.saturating_sub(*at) < EVICTED_RETAINED_MS)
    }

    fn with_pool<T>(&self, f: impl FnOnce(&Pool) -> T) -> T {
        let inner = self.inner.borrow();
        f(inner.pool.as_ref().expect("pool loaded"))
    }

    /// Runs `f` on the pool at `now` and writes the rows it touched.
    fn mutate<T>(&self, f: impl FnOnce(&mut Pool, u64) -> AppResult<T>) -> AppResult<T> {
        let now = runtime::now_ms();
        let result = {
            let mut inner = self.inner.borrow_mut();
            let pool = inner.pool.as_mut().ok_or_else(not_found_pool)?;
            f(pool, now)
        };
        self.persist()?;
        result
    }

    /// Loads the pool from SQLite, once.
    fn load(&self, broadcast: &str) -> AppResult<()> {
        if self.inner.borrow().loaded {
            return Ok(());
        }
        // A broadcast nobody created has no tables: reading that costs no storage, so a
        // request for an unknown broadcast leaves nothing behind (the tables are made by
        // `ensure`, the only way a pool comes to exist).
        if !self.has_tables()? {
            let mut inner = self.inner.borrow_mut();
            inner.pool = None;
            inner.loaded = true;
            return Ok(());
        }
        self.create_tables()?;
        #[derive(Deserialize)]
        struct RowText {
            row: String,
        }
        let read = |table: &str| -> AppResult<Vec<String>> {
            let rows: Vec<RowText> = self
                .sql
                .exec(&format!("SELECT row FROM {table}"), None)?
                .to_array()?;
            Ok(rows.into_iter().map(|r| r.row).collect())
        };
        let meta = read("meta")?;
        #[derive(Deserialize)]
        struct Registered {
            at: i64,
        }
        let registered: Vec<Registered> = self
            .sql
            .exec("SELECT at FROM registration", None)?
            .to_array()?;
        let registered = registered.first().is_some_and(|r| r.at > 0);
        let pool = match meta.first() {
            None => None,
            Some(meta) => {
                let meta: PoolMeta = serde_json::from_str(meta)?;
                if meta.broadcast != broadcast && !broadcast.is_empty() {
                    return Err(AppError::Internal(format!(
                        "pool of {:?} asked as {broadcast:?}",
                        meta.broadcast
                    )));
                }
                let stages = read("stages")?
                    .iter()
                    .map(|r| serde_json::from_str::<Stage>(r))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let leases = read("leases")?
                    .iter()
                    .map(|r| serde_json::from_str::<Lease>(r))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let settings = self.settings()?.config.pool_settings();
                Some(
                    Pool::from_rows(
                        settings,
                        PoolRows {
                            meta,
                            stages,
                            leases,
                        },
                    )
                    .map_err(|e| AppError::Internal(format!("stored pool: {e}")))?,
                )
            }
        };
        let creating: Vec<StageId> = pool
            .as_ref()
            .map(|p| {
                p.stages()
                    .filter(|s| s.state == StageState::Creating)
                    .map(|s| s.id)
                    .collect()
            })
            .unwrap_or_default();
        {
            let mut inner = self.inner.borrow_mut();
            inner.pool = pool;
            inner.loaded = true;
            inner.registered = registered;
        }
        if !creating.is_empty() {
            // A previous instance died during these creates: they are resolved by the
            // maintenance alarm through `policy::stale_creates` (looked up by name, never
            // created twice).
            worker::console_log!("{} create intents found in flight at load", creating.len());
        }
        Ok(())
    }

    fn has_tables(&self) -> AppResult<bool> {
        #[derive(Deserialize)]
        struct Count {
            n: i64,
        }
        let rows: Vec<Count> = self
            .sql
            .exec(
                "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                None,
            )?
            .to_array()?;
        Ok(rows.first().is_some_and(|c| c.n > 0))
    }

    fn create_tables(&self) -> AppResult<()> {
        for ddl in [
            "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 1), row TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS stages (id INTEGER PRIMARY KEY, row TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, row TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS registration (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL)",
        ] {
            self.sql.exec(ddl, None)?;
        }
        Ok(())
    }

    /// Makes sure the Registry lists this pool: registers it unless that is known to have
    /// landed (stored), and says whether it has. A failure is logged and left to the next
    /// `ensure`, snapshot or maintenance alarm (the caller sets one): before this retry, a
    /// pool whose one registry write failed stayed unlisted for good and its stages looked
    /// like orphans to the monitor.
    async fn ensure_registered(&self) -> bool {
        let (broadcast, created_at, attempt) = {
            let mut inner = self.inner.borrow_mut();
            if inner.registered {
                return true;
            }
            let Some(pool) = inner.pool.as_ref() else {
                return false;
            };
            let (b, at) = (pool.broadcast().to_string(), pool.meta().created_at);
            inner.registration_attempts += 1;
            (b, at, inner.registration_attempts)
        };
        // A test hook: this instance's first N registrations fail as a lost registry write.
        let injected = crate::settings::var(&self.env, "STAGEFAN_TEST_FAIL_REGISTRATIONS")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .is_some_and(|n| attempt <= n);
        let result = if injected {
            Err(AppError::Internal(
                "registry write failed (STAGEFAN_TEST_FAIL_REGISTRATIONS)".into(),
            ))
        } else {
            registry::register(&self.env, &broadcast, created_at).await
        };
        match result {
            Ok(()) => {
                let stored = self.sql.exec(
                    "INSERT INTO registration (id, at) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET at = excluded.at",
                    vec![(runtime::now_ms().max(1) as i64).into()],
                );
                if let Err(e) = stored {
                    worker::console_error!("recording the registration of {broadcast}: {e:?}");
                }
                self.inner.borrow_mut().registered = true;
                worker::console_log!("pool {broadcast} registered (attempt {attempt})");
                true
            }
            Err(e) => {
                worker::console_error!(
                    "registering pool {broadcast} failed (attempt {attempt}): {e:?}; retried by \
                     the maintenance alarm"
                );
                false
            }
        }
    }

    /// Writes the rows the last mutations touched.
    fn persist(&self) -> AppResult<()> {
        let mut inner = self.inner.borrow_mut();
        let Some(pool) = inner.pool.as_mut() else {
            return Ok(());
        };
        let changes = pool.take_changes();
        if changes.is_empty() {
            return Ok(());
        }
        let sql = &self.sql;
        for id in &changes.stages {
            if let Some(stage) = pool.stage(*id) {
                sql.exec(
                    "INSERT INTO stages (id, row) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET row = excluded.row",
                    vec![(id.0 as i64).into(), serde_json::to_string(stage)?.into()],
                )?;
            }
        }
        for id in &changes.stages_removed {
            sql.exec(
                "DELETE FROM stages WHERE id = ?",
                vec![(id.0 as i64).into()],
            )?;
        }
        for id in &changes.leases_upserted {
            if let Some(lease) = pool.lease(id) {
                sql.exec(
                    "INSERT INTO leases (id, row) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET row = excluded.row",
                    vec![id.clone().into(), serde_json::to_string(lease)?.into()],
                )?;
            }
        }
        for id in &changes.leases_removed {
            sql.exec("DELETE FROM leases WHERE id = ?", vec![id.clone().into()])?;
        }
        if changes.meta {
            sql.exec(
                "INSERT INTO meta (id, row) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET row = excluded.row",
                vec![serde_json::to_string(pool.meta())?.into()],
            )?;
        }
        Ok(())
    }

    /// Writes every row (a new pool).
    fn write_all(&self) -> AppResult<()> {
        self.create_tables()?;
        {
            let mut inner = self.inner.borrow_mut();
            let pool = inner.pool.as_mut().ok_or_else(not_found_pool)?;
            let rows = pool.export();
            let _ = pool.take_changes();
            self.sql.exec("DELETE FROM stages", None)?;
            self.sql.exec("DELETE FROM leases", None)?;
            self.sql.exec(
                "INSERT INTO meta (id, row) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET row = excluded.row",
                vec![serde_json::to_string(&rows.meta)?.into()],
            )?;
            for stage in &rows.stages {
                self.sql.exec(
                    "INSERT INTO stages (id, row) VALUES (?, ?)",
                    vec![
                        (stage.id.0 as i64).into(),
                        serde_json::to_string(stage)?.into(),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// The creates the scaling policy wants now, as intents already recorded in the pool.
    fn plan_creates(&self) -> Vec<CreateIntent> {
        let Ok(settings) = self.settings() else {
            return Vec::new();
        };
        let policy_cfg = settings.config.policy();
        let now = runtime::now_ms();
        let intents = {
            let mut inner = self.inner.borrow_mut();
            let Some(pool) = inner.pool.as_mut() else {
                return Vec::new();
            };
            let decision = policy::scale_up(&policy_cfg, &pool.load_summary());
            (0..decision.create)
                .map_while(|_| pool.begin_create(now).ok())
                .collect::<Vec<_>>()
        };
        if !intents.is_empty() {
            if let Err(e) = self.persist() {
                worker::console_error!("persist create intents: {e:?}");
            }
        }
        intents
    }

    /// When the next stage being created can come at the earliest: `None` when a create is
    /// already calling IVS (or asking for its slot), else the earliest slot of those waiting.
    fn next_create_at(&self, now: u64) -> Option<u64> {
        let inner = self.inner.borrow();
        let creating = inner.pool.as_ref().map_or(0, |p| p.load_summary().creating) as usize;
        let waiting: Vec<u64> = inner
            .create_slots
            .values()
            .copied()
            .filter(|at| *at > now)
            .collect();
        if waiting.len() < creating {
            return None;
        }
        waiting.into_iter().min()
    }

    /// When a refused viewer should come back: when the next stage being created may be made
    /// (its slot in the account-wide budget), at least a second; later when the pool is at
    /// its maximum of stages.
    fn retry_after(&self, now: u64) -> u32 {
        let mut retry_ms = 1_000;
        let at_max = self.inner.borrow().pool.as_ref().is_some_and(|pool| {
            let sum = pool.load_summary();
            sum.creating == 0 && sum.existing() >= pool.settings().max_stages
        });
        if at_max {
            retry_ms = 5_000;
        }
        if let Some(at) = self.next_create_at(now) {
            retry_ms = retry_ms.max(at.saturating_sub(now));
        }
        retry_ms.div_ceil(1000).max(1) as u32
    }

    /// Waits until this pool may make an `op` call: its slot of the account-wide budget (or,
    /// when the budget cannot be reached, of the pool's own schedule at the same rate).
    /// `throttled`: IVS throttled the last attempt. `create`: the create that waits, so that
    /// viewers know when its stage can come.
    ///
    /// A slot is honoured only on time: a caller that wakes up later than half the guard
    /// after its slot (this instance was busy) could reach IVS in the next window's company,
    /// so it gives the slot up (it stays counted) and takes a new one.
    async fn wait_for_slot(&self, op: Operation, mut throttled: bool, create: Option<StageId>) {
        let tolerance = self
            .settings()
            .map_or(5, |s| (s.config.budget.guard_ms / 2).max(5));
        for _ in 0..MAX_MISSED_SLOTS {
            let at = self.reserve_slot(op, throttled).await;
            throttled = false;
            if let Some(id) = create {
                self.inner.borrow_mut().create_slots.insert(id, at);
                self.create_done.notify();
            }
            sleep_until(at).await;
            if let Some(id) = create {
                self.inner.borrow_mut().create_slots.remove(&id);
            }
            let late = runtime::now_ms().saturating_sub(at);
            if late <= tolerance {
                return;
            }
            worker::console_warn!("{} slot missed by {late} ms: taking a new one", op.name());
        }
    }

    /// The instant this pool may make the next `op` call: a slot of the account-wide budget
    /// (the budget's clock; instances' clocks agree to well within the guard), or, when the
    /// budget cannot be reached, of the pool's own schedule at the same rate (logged).
    async fn reserve_slot(&self, op: Operation, throttled: bool) -> u64 {
        let Ok(settings) = self.settings() else {
            return runtime::now_ms();
        };
        let cfg = &settings.config;
        match budget::reserve(&self.env, &cfg.ivs_endpoint, &cfg.ivs_region, op, throttled).await {
            Ok(slot) => slot.at,
            Err(e) => {
                worker::console_error!(
                    "IVS budget unreachable ({e:?}): {} paced by this pool alone",
                    op.name()
                );
                let now = runtime::now_ms();
                let Some(rate) = cfg.budget.rate(op) else {
                    return now;
                };
                let mut inner = self.inner.borrow_mut();
                let schedule = inner.fallback.entry(op.name()).or_default();
                if throttled {
                    schedule.throttled(&rate, now);
                }
                schedule.reserve(&rate, now)
            }
        }
    }

    fn ivs(&self) -> AppResult<IvsClient> {
        let settings = self.settings()?;
        Ok(IvsClient::new(
            &settings.config.ivs_endpoint,
            &settings.config.ivs_region,
            settings.credentials()?.clone(),
        ))
    }
}

/// Carries out one create intent: `CreateStage` once, retried only when it surely did not
/// happen (throttled); after an answer that may hide a create (5xx, no answer) the stage is
/// looked up by its name before anything else.
async fn create_stage(shared: Rc<Shared>, intent: CreateIntent) {
    let client = match shared.ivs() {
        Ok(c) => c,
        Err(e) => {
            worker::console_error!("create {}: {e:?}", intent.name);
            let _ = shared.mutate(|pool, now| Ok(pool.create_failed(intent.stage, now)));
            shared.create_done.notify();
            return;
        }
    };
    let request = CreateStageRequest {
        name: Some(intent.name.clone()),
        tags: Some(intent.tags.clone()),
        ..Default::default()
    };
    let mut attempt = 1;
    let mut throttled = false;
    let outcome = loop {
        // Every attempt waits for its own slot in the account-wide CreateStage budget; the
        // viewers waiting for this stage learn when it comes.
        shared
            .wait_for_slot(Operation::CreateStage, throttled, Some(intent.stage))
            .await;
        let result: std::result::Result<CreateStageResponse, CallError> = client
            .call(Operation::CreateStage, &request, Retry::NONE)
            .await;
        match result {
            Ok(resp) => break resp.stage,
            Err(e) if attempt < CREATE_ATTEMPTS && e.is_retryable() => {
                throttled = e.is_throttling();
                if !throttled {
                    // A 5xx or no answer: back off (a throttle is paced by the budget).
                    let wait = Retry::DEFAULT.backoff(attempt, runtime::random_fraction());
                    worker::Delay::from(wait.max(Duration::from_millis(50))).await;
                }
                if e.outcome_unknown() {
                    match find_stage_by_name(&client, &intent).await {
                        Ok(Some(stage)) => break Some(stage),
                        // IVS surely has no such stage: the create may be sent again.
                        Ok(None) => {}
                        // Not known either way: never send the create again. The intent
                        // stays `creating` and the maintenance alarm resolves it by name
                        // (`policy::stale_creates`).
                        Err(lookup) => {
                            worker::console_error!(
                                "CreateStage {}: outcome unknown ({e}) and the lookup failed \
                                 ({lookup}); left to the maintenance alarm",
                                intent.name
                            );
                            shared.create_done.notify();
                            return;
                        }
                    }
                }
                attempt += 1;
            }
            Err(e) => {
                worker::console_error!("CreateStage {}: {e}", intent.name);
                if e.outcome_unknown() {
                    match find_stage_by_name(&client, &intent).await {
                        Ok(Some(stage)) => break Some(stage),
                        Ok(None) => {}
                        Err(_) => {
                            shared.create_done.notify();
                            return;
                        }
                    }
                }
                break None;
            }
        }
    };
    let result = shared.mutate(|pool, now| {
        Ok(match outcome {
            Some(stage) => {
                let endpoints = stage.endpoints.unwrap_or_default();
                pool.created(
                    intent.stage,
                    &stage.arn,
                    StageEndpoints {
                        whip: endpoints.whip.unwrap_or_default(),
                        events: endpoints.events.unwrap_or_default(),
                    },
                    now,
                )
            }
            None => pool.create_failed(intent.stage, now),
        })
    });
    shared.create_done.notify();
    if let Ok(Err(e)) | Err(e) = result.map_err(|e| PoolError::Corrupt(format!("{e:?}"))) {
        worker::console_error!("recording create of {}: {e}", intent.name);
    }
}

/// The stage of a create intent, if IVS has it (by name and broadcast tag).
async fn find_stage_by_name(
    client: &IvsClient,
    intent: &CreateIntent,
) -> std::result::Result<Option<stagefan_core::ivs::Stage>, CallError> {
    let mut next_token = None;
    loop {
        let page: ListStagesResponse = client
            .call(
                Operation::ListStages,
                &ListStagesRequest {
                    next_token: next_token.take(),
                    max_results: Some(100),
                },
                Retry::DEFAULT,
            )
            .await?;
        let found = page.stages.iter().find(|s| {
            s.name.as_deref() == Some(intent.name.as_str())
                && s.tags.as_ref().and_then(|t| t.get(TAG_BROADCAST))
                    == intent.tags.get(TAG_BROADCAST)
        });
        if let Some(summary) = found {
            let got: GetStageResponse = client
                .call(
                    Operation::GetStage,
                    &GetStageRequest {
                        arn: summary.arn.clone(),
                    },
                    Retry::DEFAULT,
                )
                .await?;
            return Ok(got.stage);
        }
        match page.next_token {
            Some(t) if !t.is_empty() => next_token = Some(t),
            _ => return Ok(None),
        }
    }
}

/// Carries out a delete intent: `DeleteStage` (idempotent in effect: a stage already gone is
/// deleted too), then records it.
async fn delete_stage(
    shared: &Rc<Shared>,
    intent: DeleteIntent,
) -> std::result::Result<(), PoolError> {
    replication::stop_before_delete(shared, &intent).await;
    let client = shared
        .ivs()
        .map_err(|e| PoolError::Corrupt(format!("{e:?}")))?;
    let result: std::result::Result<EmptyResponse, CallError> = call_budgeted(
        shared,
        &client,
        Operation::DeleteStage,
        &DeleteStageRequest {
            arn: intent.arn.clone(),
        },
        BUDGETED_ATTEMPTS,
    )
    .await;
    let gone = match &result {
        Ok(_) => true,
        Err(CallError::Ivs(e)) => e.status == 404,
        Err(_) => false,
    };
    if !gone {
        worker::console_error!(
            "DeleteStage {}: {}",
            intent.arn,
            result.err().map(|e| e.to_string()).unwrap_or_default()
        );
        return Err(PoolError::Corrupt(
            "DeleteStage failed; retried by the next action".into(),
        ));
    }
    shared
        .mutate(|pool, now| Ok(pool.deleted(intent.stage, now)))
        .map_err(|e| PoolError::Corrupt(format!("{e:?}")))?
        .map(|_evicted| ())
}

/// Disconnects participants connected to a stage without a seat there (their lease lapsed or
/// was given back, or they never had one), each call in its slot of the account-wide budget.
async fn disconnect_strangers(shared: &Rc<Shared>, strangers: Vec<Stranger>) {
    let Ok(client) = shared.ivs() else {
        return;
    };
    for stranger in strangers {
        let request = DisconnectParticipantRequest {
            stage_arn: stranger.stage_arn.clone(),
            participant_id: stranger.participant_id.clone(),
            reason: Some(STRANGER_REASON.to_string()),
        };
        let result: std::result::Result<EmptyResponse, CallError> = call_budgeted(
            shared,
            &client,
            Operation::DisconnectParticipant,
            &request,
            BUDGETED_ATTEMPTS,
        )
        .await;
        match result {
            Ok(_) => worker::console_log!(
                "disconnected {} from {}: no seat there",
                stranger.participant_id,
                stranger.stage_arn
            ),
            Err(e) => worker::console_error!(
                "DisconnectParticipant {} on {}: {e}",
                stranger.participant_id,
                stranger.stage_arn
            ),
        }
    }
}

/// Sleeps until `at` (this instance's clock).
async fn sleep_until(at: u64) {
    let wait = at.saturating_sub(runtime::now_ms());
    if wait > 0 {
        worker::Delay::from(Duration::from_millis(wait)).await;
    }
}

/// Calls a budgeted IVS operation: each attempt waits for its slot in the account-wide budget
/// (a throttled attempt tells the budget); 5xx and no answer are retried with backoff, up to
/// `attempts` in all. Only for operations that are safe to repeat.
async fn call_budgeted<Req: Serialize, Resp: serde::de::DeserializeOwned>(
    shared: &Shared,
    client: &IvsClient,
    op: Operation,
    body: &Req,
    attempts: u32,
) -> std::result::Result<Resp, CallError> {
    let mut attempt = 1;
    let mut throttled = false;
    loop {
        shared.wait_for_slot(op, throttled, None).await;
        match client.call(op, body, Retry::NONE).await {
            Err(e) if attempt < attempts && e.is_retryable() => {
                throttled = e.is_throttling();
                if !throttled {
                    let wait = Retry::DEFAULT.backoff(attempt, runtime::random_fraction());
                    worker::Delay::from(wait.max(Duration::from_millis(50))).await;
                }
                attempt += 1;
            }
            result => return result,
        }
    }
}

/// The public view of a pool: no hosts, no counters. In replicate mode each stage also says
/// whether it is an `origin` (the host uploads to it) or a `replica` (it gets the host by
/// replication from `originArn`, `null` while that origin is being created); `origin_of`
/// gives a stage's origin. Multi-publish stages carry neither field.
pub fn public_summary(
    snapshot: &Snapshot,
    origin_of: impl Fn(StageId) -> Option<StageId>,
) -> Value {
    let replicate = snapshot.fanout_mode == stagefan_core::config::FanoutMode::Replicate;
    let stages: Vec<Value> = snapshot
        .stages
        .iter()
        .filter(|s| s.state != StageState::Deleted)
        .map(|s| {
            let mut stage = json!({
                "stageArn": s.stage_arn,
                "state": s.state,
                "load": s.load,
                "capacity": s.capacity,
            });
            if replicate {
                if origin_of(s.id).is_some() {
                    stage["role"] = json!("replica");
                    stage["originArn"] = json!(s.origin_arn);
                } else {
                    stage["role"] = json!("origin");
                }
            }
            stage
        })
        .collect();
    json!({
        "broadcast": snapshot.broadcast,
        "capacity": snapshot.capacity,
        "fanoutMode": snapshot.fanout_mode,
        "viewers": snapshot.viewers,
        "stages": stages,
    })
}

/// A pool keeps the fan-out mode it was created with: a host asking for the other mode
/// (`fanoutMode` in `publisher-all`) is refused with 409 `fanout_mode_locked`.
fn refuse_mode_switch(shared: &Shared, body: &Value) -> AppResult<()> {
    let Some(asked) = body.get("fanoutMode").and_then(Value::as_str) else {
        return Ok(());
    };
    let asked = stagefan_core::config::FanoutMode::parse(asked)
        .map_err(|e| AppError::bad_field("fanoutMode", e.to_string()))?;
    let current = shared.with_pool(|p| p.fanout());
    if asked != current {
        return Err(AppError::Conflict {
            code: "fanout_mode_locked",
            message: format!(
                "this broadcast runs in {} mode since it was created; a running broadcast \
                 cannot switch to {} (end it, or use another broadcast id)",
                current.as_str(),
                asked.as_str()
            ),
        });
    }
    Ok(())
}

fn not_found_pool() -> AppError {
    AppError::NotFound {
        code: "broadcast_not_found",
        message: "no such broadcast: the host has not started it".into(),
    }
}

fn pool_error(e: PoolError) -> AppError {
    match e {
        PoolError::Corrupt(detail) => AppError::Internal(detail),
        e => match e.code() {
            "lease_not_found" => AppError::lease_not_found(),
            "unknown_stage" => AppError::NotFound {
                code: "stage_not_found",
                message: e.to_string(),
            },
            code => AppError::Conflict {
                code,
                message: e.to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stagefan_core::config::FanoutMode;
    use stagefan_core::pool::PoolSettings;

    const T0: u64 = 1_764_160_000_000;

    /// A pool of `created` stages with ARNs, plus one more being created.
    fn pool(fanout: FanoutMode, created: u64) -> Pool {
        let settings = PoolSettings {
            fanout,
            max_stages: 20,
            ..PoolSettings::default()
        };
        let mut pool = Pool::new("b", settings, T0).unwrap();
        for n in 0..created {
            let intent = pool.begin_create(T0).unwrap();
            let arn = format!("arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGH{n:04}");
            pool.created(intent.stage, &arn, StageEndpoints::default(), T0)
                .unwrap();
        }
        pool.begin_create(T0).unwrap();
        pool
    }

    fn summary(pool: &mut Pool) -> Value {
        let snapshot = pool.snapshot(T0);
        public_summary(&snapshot, |id| pool.stage(id).and_then(|s| s.origin))
    }

    #[test]
    fn replicate_mode_marks_origins_and_their_replicas() {
        let mut p = pool(FanoutMode::Replicate, 7);
        let s = summary(&mut p);
        let stages = s["stages"].as_array().unwrap();
        assert_eq!(stages.len(), 8);
        let arn = |n: usize| stages[n]["stageArn"].clone();
        // One origin per six stages: 0 and 6; 1-5 replicate 0, 7 (being created) replicates 6.
        for (n, stage) in stages.iter().enumerate() {
            match n {
                0 | 6 => {
                    assert_eq!(stage["role"], "origin", "{stage}");
                    assert!(stage.get("originArn").is_none(), "{stage}");
                }
                1..=5 => {
                    assert_eq!(stage["role"], "replica", "{stage}");
                    assert_eq!(stage["originArn"], arn(0));
                }
                _ => {
                    assert_eq!(stage["role"], "replica", "{stage}");
                    assert_eq!(stage["state"], "creating");
                    assert_eq!(stage["stageArn"], Value::Null);
                    assert_eq!(stage["originArn"], arn(6));
                }
            }
        }
    }

    #[test]
    fn multi_publish_stages_carry_no_role() {
        let mut p = pool(FanoutMode::MultiPublish, 2);
        let s = summary(&mut p);
        for stage in s["stages"].as_array().unwrap() {
            let keys: Vec<&str> = stage
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            assert_eq!(keys, ["capacity", "load", "stageArn", "state"], "{stage}");
        }
        assert_eq!(s["fanoutMode"], "multi-publish");
    }
}
