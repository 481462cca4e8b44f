//! The `StagePool` Durable Object: one per broadcast and region (`idFromName(broadcast)` in
//! the primary region, `idFromName("{broadcast}@{region}")` in another:
//! `stagefan_core::regions`), the single writer of that pool (`stagefan_core::pool::Pool`).
//! It calls its region's IVS endpoint and takes its slots and quota from its region's
//! `IvsBudget`.
//!
//! The pool is loaded from SQLite once, lazily, on the first request; every mutation writes
//! the rows it touched (`Pool::take_changes`) in the same turn of the event loop, so a
//! response never reports a state that is not stored. Between awaits a Durable Object runs one
//! thing at a time, so assignment is atomic; IVS calls are awaited, and what is in flight with
//! IVS is explicit pool state (a `creating` stage is the create intent).
//!
//! The edge (`routes`) talks to it over internal requests `POST https://pool/<op>/<pool>`
//! whose body is a `calls::PoolCall` (no headers); errors come back as the final HTTP error.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use stagefan_core::alarm;
use stagefan_core::budget::SlotSchedule;
use stagefan_core::ivs::{GetStageRequest, GetStageResponse, Operation};
use stagefan_core::policy::{self, ScaleAction};
use stagefan_core::pool::{
    AssignError, CreateIntent, JoinRequest, Pool, PoolError, Snapshot, StageId, StageState,
    LEASE_RANDOM_BYTES,
};
use stagefan_core::summary::{self, PublicSummary};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use crate::calls::{self, JoinGrant, PoolCall, PublisherStage, PublisherStages, Renewed};
use crate::error::{AppError, AppResult};
use crate::ivs_client::CallError;
use crate::registry;
use crate::runtime;
use crate::settings::Settings;

use ivs_calls::{call_budgeted, create_stage, delete_stage, disconnect_strangers};
use slots::CreateSignal;

mod ivs_calls;
mod life;
mod maintenance;
mod presence;
mod quota;
mod replication;
mod seats;
pub(crate) mod slots;
mod storage;

/// How long a viewer who finds every stage full waits for a stage being created (a join storm
/// on a fresh pool needs about two seconds of IVS's 5/s CreateStage for ten stages).
const WAIT_FOR_CREATE_MS: u64 = 4_000;
/// Attempts of a `DeleteStage` or `StopParticipantReplication` (each in its own budget slot).
const BUDGETED_ATTEMPTS: u32 = 4;
/// How often one stage is checked with `GetStage` when viewers report it missing.
const MISSING_CHECK_INTERVAL_MS: u64 = 10_000;
/// How long, and how many, evicted leases are remembered for their heartbeats.
const EVICTED_RETAINED_MS: u64 = 10 * 60_000;
const EVICTED_RETAINED_MAX: usize = 100_000;

/// The state shared by requests and by the background IVS calls they start.
struct Shared {
    sql: SqlStorage,
    env: Env,
    settings: std::result::Result<Settings, String>,
    inner: RefCell<Inner>,
    /// Signalled whenever a create intent ends or gets its slot.
    create_done: CreateSignal,
    /// Signalled whenever a call to the quota ledger ends.
    quota_done: CreateSignal,
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
    /// Stages of an ended broadcast whose `DeleteStage` is under way (memory only).
    deleting: BTreeSet<StageId>,
    /// Whether a call to the quota ledger is in flight (one at a time).
    quota_busy: bool,
    /// The region of the name this pool was asked by (`{broadcast}@{region}`; `None`: the
    /// primary region's pool, named by its broadcast), until a stored pool says it.
    named_region: Option<String>,
    /// When this instance loaded the pool: create intents older than that have no call
    /// of this instance behind them (`policy::abandoned_creates`).
    loaded_at: u64,
    /// Create intents whose outcome-unknown lookup failed, and when (memory only).
    failed_lookups: BTreeMap<StageId, u64>,
    /// Stage presence: the status this instance last pushed to each stage's object.
    pushed: BTreeMap<StageId, stagefan_core::presence::StageStatus>,
    /// Requests taken and sent since this instance started (the benchmark reads them).
    counters: calls::ObjectCounters,
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
                quota_done: CreateSignal::default(),
            }),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // `/<call>/<pool>`: the call's name is there for logs, the call is the body; the pool
        // is `{broadcast}` (the primary region's) or `{broadcast}@{region}`.
        let path = req.path();
        let (_, name) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or_default();
        let name = name.to_string();
        let result = match calls::receive::<PoolCall>(&mut req, "pool").await {
            Ok(call) => match self.named(&name) {
                // Not counted: the counters' own call.
                Ok(_) if matches!(call, PoolCall::Counters) => {
                    self.shared.load(&name).and_then(|()| self.counters())
                }
                Ok(broadcast) => {
                    self.shared.inner.borrow_mut().counters.count(call.name());
                    let report = matches!(call, PoolCall::StageReport { .. });
                    let result = self.handle(&name, &broadcast, call).await;
                    if !report {
                        // What the call changed of the stages' status reaches their objects
                        // before its answer (stage presence).
                        self.shared.push_stage_statuses().await;
                    }
                    result
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        calls::answer(result)
    }

    async fn alarm(&self) -> Result<Response> {
        self.shared.inner.borrow_mut().counters.alarms += 1;
        if let Err(e) = self.maintain().await {
            worker::console_error!("pool maintenance: {e:?}");
        }
        self.shared.push_stage_statuses().await;
        Response::ok("ok")
    }
}

/// A typed answer as JSON.
fn to_value(answer: impl Serialize) -> AppResult<Value> {
    Ok(serde_json::to_value(answer)?)
}

impl StagePool {
    /// Reads the pool's name (`broadcast` or `broadcast@region`, a region of the deployment
    /// other than the primary) and remembers its region; answers the broadcast.
    fn named(&self, name: &str) -> AppResult<String> {
        let pool = stagefan_core::regions::parse_pool_name("pool", name)?;
        if let Some(region) = pool.region {
            let config = &self.shared.settings()?.config;
            if config.region(region).is_none() || region == config.ivs_region {
                return Err(AppError::bad_request(
                    "invalid_call",
                    format!("pool {name:?}: {region:?} is not another region of this deployment"),
                ));
            }
        }
        self.shared.inner.borrow_mut().named_region = pool.region.map(str::to_string);
        Ok(pool.broadcast.to_string())
    }

    /// The request counters, with the stages whose objects may hold leases.
    fn counters(&self) -> AppResult<Value> {
        let inner = self.shared.inner.borrow();
        let stages = inner
            .pool
            .as_ref()
            .map(|p| p.stage_statuses().into_iter().map(|(id, _)| id).collect())
            .unwrap_or_default();
        let counters = calls::ObjectCounters {
            requests: inner.counters.requests,
            by_call: inner.counters.by_call.clone(),
            alarms: inner.counters.alarms,
            sent: inner.counters.sent.clone(),
            stages,
            leases: inner.pool.as_ref().map_or(0, |p| u64::from(p.viewers())),
            pending_frees: 0,
        };
        to_value(counters)
    }

    async fn handle(&self, name: &str, broadcast: &str, call: PoolCall) -> AppResult<Value> {
        let shared = &self.shared;
        let settings = shared.settings()?;
        shared.load(name)?;
        let is_default = settings.config.default_broadcast.as_deref() == Some(broadcast);
        let value = match call {
            PoolCall::Ensure => {
                self.ensure(broadcast).await?;
                shared.with_region(to_value(self.snapshot()?)?)
            }
            PoolCall::Join {
                user_id,
                lease_id,
                client,
            } => {
                if is_default {
                    // The configured default broadcast exists by configuration.
                    self.ensure(broadcast).await?;
                }
                let request = JoinRequest {
                    user_id: &user_id,
                    lease_id: lease_id.as_deref(),
                    client: client.as_deref(),
                    moving: false,
                };
                to_value(self.join(broadcast, &request).await?)?
            }
            PoolCall::Move { lease_id } => {
                // The seat's own viewer and client: a move is the seat's, not a new viewer's.
                let held = shared
                    .has_pool()
                    .then(|| {
                        shared.with_pool(|p| {
                            p.lease(&lease_id)
                                .map(|l| (l.user_id.clone(), l.client.clone()))
                        })
                    })
                    .flatten();
                let (user_id, client) = held.ok_or_else(AppError::lease_not_found)?;
                let request = JoinRequest {
                    user_id: &user_id,
                    lease_id: Some(&lease_id),
                    client: client.as_deref(),
                    moving: true,
                };
                to_value(self.join(broadcast, &request).await?)?
            }
            PoolCall::Heartbeat { lease_id } => to_value(self.heartbeat(&lease_id).await?)?,
            PoolCall::Leave { lease_id } => {
                if shared.has_pool() {
                    shared.mutate(|pool, now| Ok(pool.leave(&lease_id, now)))?;
                }
                json!({"left": true})
            }
            PoolCall::Bind {
                lease_id,
                participant_id,
            } => {
                if !shared.has_pool() {
                    return Err(AppError::lease_not_found());
                }
                shared.mutate(|pool, now| {
                    pool.bind_participant(&lease_id, &participant_id, now)
                        .map_err(pool_error)
                })?;
                json!({"bound": true})
            }
            PoolCall::StageMissing { lease_id } => {
                if !shared.has_pool() {
                    return Err(AppError::lease_not_found());
                }
                json!({"stageGone": self.check_missing_stage(&lease_id).await?})
            }
            PoolCall::Publisher { fanout_mode } => {
                self.restart_if_ended()?;
                self.ensure(broadcast).await?;
                summary::check_fanout(shared.with_pool(|p| p.fanout()), fanout_mode).map_err(
                    |e| AppError::Conflict {
                        code: "fanout_mode_locked",
                        message: e.to_string(),
                    },
                )?;
                to_value(self.publisher_stages()?)?
            }
            PoolCall::End => to_value(self.end_broadcast().await?)?,
            PoolCall::Published {
                stage_arn,
                participant_id,
            } => {
                shared.mutate(|pool, now| {
                    let id = pool.stage_id(&stage_arn).map_err(pool_error)?;
                    pool.mark_live(id, &participant_id, now).map_err(pool_error)
                })?;
                // Replicate mode: copy the host into the origin's replica stages.
                replication::spawn(shared, &self.state);
                json!({"stageArn": stage_arn, "state": "live"})
            }
            PoolCall::Summary => {
                if is_default {
                    self.ensure(broadcast).await?;
                }
                let snapshot = self.snapshot()?;
                shared.with_region(to_value(
                    shared.with_pool(|pool| PublicSummary::of(pool, &snapshot)),
                )?)
            }
            PoolCall::Snapshot => {
                if is_default {
                    self.ensure(broadcast).await?;
                } else if shared.has_pool() && !shared.ensure_registered().await {
                    // Asked directly (the monitor checking an orphan candidate's pool).
                    self.schedule_maintenance().await;
                }
                shared.with_region(to_value(self.snapshot()?)?)
            }
            PoolCall::Action { action } => self.action(action).await?,
            PoolCall::StageReport { stage, frees } => {
                if !shared.has_pool() {
                    return Err(not_found_pool());
                }
                to_value(shared.stage_report(stage, &frees)?)?
            }
            PoolCall::Counters => self.counters()?,
            PoolCall::Observations { observation } => {
                let report = shared.mutate(|pool, now| Ok(pool.observe(&observation, now)))?;
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
                to_value(report)?
            }
        };
        Ok(value)
    }

    /// Creates the pool (and its first `MIN_STAGES` stages) if it does not exist.
    async fn ensure(&self, broadcast: &str) -> AppResult<()> {
        let shared = &self.shared;
        if !shared.has_pool() {
            let settings = shared.settings()?;
            let now = runtime::now_ms();
            let region = shared.inner.borrow().named_region.clone();
            let pool_settings = settings.config.pool_settings();
            let mut pool = match region {
                None => Pool::new(broadcast, pool_settings, now),
                Some(region) => Pool::new_in_region(broadcast, &region, pool_settings, now),
            }
            .map_err(pool_error)?;
            pool.enforce_quota();
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
        // The first stages need their share of the region's stages and publishers.
        shared.quota_for_stages().await;
        self.scale_up();
        Ok(())
    }

    /// Decides and starts the creates the policy asks for (ahead of need).
    fn scale_up(&self) -> u32 {
        let intents = self.shared.plan_creates();
        let started = intents.len() as u32;
        if self.shared.stages_beyond_grant() > 0 {
            // The grant does not cover what the policy wants: ask, then create.
            self.state.wait_until(quota::grow(self.shared.clone()));
        }
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

    /// Admin scaling actions (`create`, `drain`, `consolidate`, `delete`).
    async fn action(&self, action: ScaleAction) -> AppResult<Value> {
        let shared = &self.shared;
        if !shared.has_pool() {
            return Err(not_found_pool());
        }
        let outcome: std::result::Result<(), PoolError> = match &action {
            ScaleAction::Create => {
                // An explicit create needs one more stage (and publisher) of the region's
                // quota than the pool holds.
                shared.quota_for_one_more_stage().await;
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
            ScaleAction::Consolidate { stage_arn } => shared.mutate(|pool, now| {
                let id = pool.stage_id(stage_arn).map_err(pool_error)?;
                Ok(pool.consolidate(id, now))
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

    /// The pool's region and its IVS endpoint: the stored pool's, else the name's; the
    /// primary region for the pool named by its broadcast alone. A region no longer
    /// configured keeps IVS's own endpoint of it (so its stages can still be deleted).
    fn region(&self) -> AppResult<(String, String)> {
        let config = &self.settings()?.config;
        let region = {
            let inner = self.inner.borrow();
            match inner.pool.as_ref() {
                Some(pool) => pool.region().map(str::to_string),
                None => inner.named_region.clone(),
            }
        };
        Ok(match region {
            None => (config.ivs_region.clone(), config.ivs_endpoint.clone()),
            Some(region) => {
                let endpoint = config.region(&region).map_or_else(
                    || stagefan_core::regions::default_endpoint(&region),
                    |r| r.endpoint.clone(),
                );
                (region, endpoint)
            }
        })
    }

    /// An answer (a snapshot or summary) with the pool's `region`.
    fn with_region(&self, mut value: Value) -> Value {
        if let (Value::Object(map), Ok((region, _))) = (&mut value, self.region()) {
            map.insert("region".into(), Value::String(region));
        }
        value
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
                self.store_registered();
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
            policy::plan_creates(&policy_cfg, pool, now)
        };
        if !intents.is_empty() {
            if let Err(e) = self.persist() {
                worker::console_error!("persist create intents: {e:?}");
            }
        }
        intents
    }
}

fn not_found_pool() -> AppError {
    AppError::NotFound {
        code: "broadcast_not_found",
        message: "no such broadcast: the host has not started it".into(),
    }
}

/// The host ended the broadcast: seats, heartbeats and host reports are refused (410).
fn broadcast_ended() -> AppError {
    AppError::Gone {
        code: "broadcast_ended",
        message: "the broadcast has ended".into(),
    }
}

fn pool_error(e: PoolError) -> AppError {
    match e {
        PoolError::Corrupt(detail) => AppError::Internal(detail),
        PoolError::Ended => broadcast_ended(),
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
