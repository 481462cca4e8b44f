//! Replicate fan-out mode in the `StagePool` Durable Object: the host publishes to origin
//! stages only, and the pool copies the host's participant into each origin's replica stages
//! with IVS participant replication.
//!
//! What to call and when is `stagefan_core::replication` (pure); this module makes the calls:
//! `StartParticipantReplication` (a `ConflictException` means it already runs), then
//! `GetStage` + `ListParticipants` on the replica stage until the host's replica is listed as
//! a published participant, which is reported to the pool as an observation: only then does
//! the replica stage go live and take viewers. Calls are paced by a token bucket within IVS's
//! rate (5 per second per operation; the monitor's polling shares that budget, so we keep to
//! 4); Start and Stop also wait for their slot in the account-wide budget (`crate::budget`),
//! which every pool shares. One loop runs at a time per pool, registered with `waitUntil` (a loop started by
//! a request must not be cut off with it). Before a replica stage is deleted its replication
//! is stopped.
//!
//! The tracker (which replications were started, for which host participant, when; failed
//! starts and their backoff) is stored write-through in the pool's SQLite storage, table
//! `replications` (one JSON row per replica stage, like the pool's rows), and loaded lazily
//! when a loop first runs: a Durable Object that was evicted or restarted checks the
//! replications it had started instead of starting them again.

use std::rc::Rc;
use std::time::Duration;

use stagefan_core::config::FanoutMode;
use stagefan_core::ivs::{
    EmptyResponse, ErrorKind, GetStageRequest, GetStageResponse, ListParticipantsRequest,
    ListParticipantsResponse, Operation, ParticipantState, StartParticipantReplicationRequest,
    StopParticipantReplicationRequest,
};
use stagefan_core::policy::TokenBucket;
use stagefan_core::pool::{
    DeleteIntent, Observation, Pool, Replication, StageObservation, StageState,
};
use stagefan_core::replication::{ReplicationTracker, Step, TrackedReplication, TrackerChanges};

use super::storage::{delete_row, put_row, stage_key};
use super::Shared;
use crate::calls::ReplicaStage;
use crate::error::AppResult;
use crate::ivs_client::{CallError, IvsClient, Retry};
use crate::runtime;

/// Replication calls per second we allow ourselves (IVS allows 5 per operation).
const CALLS_PER_SECOND: f64 = 4.0;
/// How long one loop keeps trying before it leaves the rest to the maintenance alarm.
const LOOP_BUDGET_MS: u64 = 120_000;
/// How long a source may be gone before IVS ends its replications (a host page that reloads
/// reconnects with a new participant id, which is replicated anew).
const RECONNECT_WINDOW_SECONDS: u32 = 10;
/// A loop that has not planned for this long is taken for gone (IVS calls time out well
/// before: each is retried at most a few times within seconds).
const STALE_LOOP_MS: u64 = 60_000;

/// The replication state of the Durable Object (see `stagefan_core::replication`); the
/// tracker is also stored (table `replications`).
#[derive(Default)]
pub(super) struct Replicator {
    tracker: ReplicationTracker,
    /// Whether the tracker was loaded from storage.
    loaded: bool,
    bucket: Option<TokenBucket>,
    /// While a loop runs: when it last planned.
    running_since: Option<u64>,
}

/// The replica stages of a replicate-mode pool (warming, live or draining), oldest first.
pub(super) fn replica_stages(pool: &Pool) -> Vec<ReplicaStage> {
    pool.stages()
        .filter(|s| {
            matches!(
                s.state,
                StageState::Warming | StageState::Live | StageState::Draining
            )
        })
        .filter_map(|s| {
            let origin = pool.stage(s.origin?)?;
            Some(ReplicaStage {
                stage_arn: s.arn.clone()?,
                origin_arn: origin.arn.clone()?,
                state: s.state,
                // The replica of the origin's current host (not of an earlier connection).
                receiving: s.host_publishing
                    && s.host_participant_id.is_some()
                    && s.host_participant_id == origin.host_participant_id,
            })
        })
        .collect()
}

/// Brings up the replications the pool needs, in the background (registered with the Durable
/// Object's `waitUntil`, so its IVS calls outlive the request that started it).
pub(super) fn spawn(shared: &Rc<Shared>, state: &worker::State) {
    if !claim(shared) {
        return;
    }
    let shared = shared.clone();
    state.wait_until(async move {
        work(&shared).await;
        shared.inner.borrow_mut().replication.running_since = None;
    });
}

/// The same, awaited (for a caller already running in the background).
pub(super) async fn run(shared: &Rc<Shared>) {
    if !claim(shared) {
        return;
    }
    work(shared).await;
    shared.inner.borrow_mut().replication.running_since = None;
}

/// Whether to start a loop: replicate mode, and no live loop (one that stopped beating for
/// longer than `STALE_LOOP_MS` was cut off with its request and is replaced).
fn claim(shared: &Rc<Shared>) -> bool {
    let now = runtime::now_ms();
    let mut inner = shared.inner.borrow_mut();
    let replicate = inner
        .pool
        .as_ref()
        .is_some_and(|p| p.fanout() == FanoutMode::Replicate);
    let busy = inner
        .replication
        .running_since
        .is_some_and(|beat| now < beat + STALE_LOOP_MS);
    if !replicate || busy {
        return false;
    }
    inner.replication.running_since = Some(now);
    if !inner.replication.loaded {
        inner.replication.loaded = true;
        match load(shared) {
            Ok(tracker) => inner.replication.tracker = tracker,
            // Storage failing: carry on from memory (a start IVS already has answers 409).
            Err(e) => worker::console_error!("loading the replication tracker: {e:?}"),
        }
    }
    true
}

/// Reads the stored tracker rows (creating the table on first use).
fn load(shared: &Shared) -> AppResult<ReplicationTracker> {
    shared.sql.exec(
        "CREATE TABLE IF NOT EXISTS replications (replica INTEGER PRIMARY KEY, row TEXT NOT NULL)",
        None,
    )?;
    let rows = shared
        .rows("replications")?
        .iter()
        .map(|r| serde_json::from_str::<TrackedReplication>(r))
        .collect::<Result<Vec<_>, _>>()?;
    if !rows.is_empty() {
        worker::console_log!("replication: {} tracked replications reloaded", rows.len());
    }
    Ok(ReplicationTracker::from_rows(rows))
}

/// Runs `f` on the tracker and writes the rows it changed.
fn with_tracker<T>(shared: &Shared, f: impl FnOnce(&mut ReplicationTracker) -> T) -> T {
    let (result, changes) = {
        let mut inner = shared.inner.borrow_mut();
        let tracker = &mut inner.replication.tracker;
        let result = f(tracker);
        (result, tracker.take_changes())
    };
    store(shared, &changes);
    result
}

/// Writes the tracker's changed rows (a failure is logged: the tracker in memory stays right,
/// and a start repeated after a restart answers 409, which counts as started).
fn store(shared: &Shared, changes: &TrackerChanges) {
    if !changes.is_empty() {
        if let Err(e) = persist(shared, changes) {
            worker::console_error!("storing the replication tracker: {e:?}");
        }
    }
}

fn persist(shared: &Shared, changes: &TrackerChanges) -> AppResult<()> {
    for row in &changes.upserted {
        put_row(
            &shared.sql,
            "replications",
            "replica",
            stage_key(row.replica),
            row,
        )?;
    }
    for id in &changes.removed {
        delete_row(&shared.sql, "replications", "replica", stage_key(*id))?;
    }
    Ok(())
}

async fn work(shared: &Rc<Shared>) {
    let client = match shared.ivs() {
        Ok(c) => c,
        Err(e) => {
            worker::console_error!("replication: {e:?}");
            return;
        }
    };
    let started = runtime::now_ms();
    loop {
        let now = runtime::now_ms();
        if now > started + LOOP_BUDGET_MS {
            return;
        }
        let plan = {
            let (plan, changes) = {
                let mut inner = shared.inner.borrow_mut();
                let super::Inner {
                    pool, replication, ..
                } = &mut *inner;
                let Some(pool) = pool.as_ref() else {
                    return;
                };
                replication.running_since = Some(now);
                let plan = replication.tracker.plan(pool, now);
                (plan, replication.tracker.take_changes())
            };
            store(shared, &changes);
            plan
        };
        for step in plan.steps {
            take_call_token(shared).await;
            match step {
                Step::Start(r) => start(shared, &client, &r).await,
                Step::Verify(r) => verify(shared, &client, &r).await,
            }
        }
        let Some(next_at) = plan.next_at else {
            return;
        };
        let wait = next_at.saturating_sub(runtime::now_ms()).clamp(50, 5_000);
        worker::Delay::from(Duration::from_millis(wait)).await;
    }
}

/// Waits for a call token of our replication budget.
async fn take_call_token(shared: &Rc<Shared>) {
    loop {
        let now = runtime::now_ms();
        let wait = {
            let mut inner = shared.inner.borrow_mut();
            let bucket = inner
                .replication
                .bucket
                .get_or_insert_with(|| TokenBucket::new(4, CALLS_PER_SECOND, now));
            if bucket.try_take(now) {
                return;
            }
            bucket.time_until_available(now).max(1)
        };
        worker::Delay::from(Duration::from_millis(wait)).await;
    }
}

async fn start(shared: &Rc<Shared>, client: &IvsClient, r: &Replication) {
    let Some(pid) = r.host_participant_id.clone() else {
        return;
    };
    let request = StartParticipantReplicationRequest {
        source_stage_arn: r.origin_arn.clone(),
        destination_stage_arn: r.replica_arn.clone(),
        participant_id: pid,
        reconnect_window_seconds: Some(RECONNECT_WINDOW_SECONDS),
        attributes: None,
    };
    // One attempt in its slot of the account-wide budget; a failed start is retried by the
    // tracker's backoff.
    let result: Result<EmptyResponse, CallError> = super::call_budgeted(
        shared,
        client,
        Operation::StartParticipantReplication,
        &request,
        1,
    )
    .await;
    let now = runtime::now_ms();
    match result {
        // Conflict: it already runs (a start of ours whose answer was lost, or one made before
        // the tracker's row was written).
        Ok(_) => with_tracker(shared, |t| t.started(r.replica, now)),
        Err(CallError::Ivs(e)) if e.kind == ErrorKind::Conflict => {
            with_tracker(shared, |t| t.started(r.replica, now))
        }
        Err(e) => {
            let throttled = e.is_throttling();
            if throttled {
                if let Some(b) = shared.inner.borrow_mut().replication.bucket.as_mut() {
                    b.drain_on_throttle(now);
                }
            }
            with_tracker(shared, |t| {
                let failures = t.failures(r.replica) + 1;
                worker::console_error!(
                    "StartParticipantReplication {} -> {} (failure {failures}): {e}",
                    r.origin_arn,
                    r.replica_arn
                );
                t.start_failed(r.replica, now, throttled.then_some(1_000));
            });
        }
    }
}

async fn verify(shared: &Rc<Shared>, client: &IvsClient, r: &Replication) {
    let Some(pid) = r.host_participant_id.clone() else {
        return;
    };
    let seen = match replica_published(client, &r.replica_arn, &pid).await {
        Ok(seen) => seen,
        Err(e) => {
            worker::console_error!("checking the replica in {}: {e}", r.replica_arn);
            false
        }
    };
    let now = runtime::now_ms();
    if seen {
        let observation = Observation {
            observed_at: now,
            stages: vec![StageObservation {
                stage_arn: r.replica_arn.clone(),
                publishers: vec![pid],
                subscribers: Vec::new(),
            }],
            ..Default::default()
        };
        let report = shared.mutate(|pool, now| Ok(pool.observe(&observation, now)));
        if let Err(e) = report {
            worker::console_error!("recording the replica in {}: {e:?}", r.replica_arn);
        }
    } else {
        with_tracker(shared, |t| t.not_seen(r.replica, now));
    }
}

/// Whether `pid` is a connected, published participant of the stage's active session.
async fn replica_published(client: &IvsClient, arn: &str, pid: &str) -> Result<bool, CallError> {
    let stage: GetStageResponse = client
        .call(
            Operation::GetStage,
            &GetStageRequest {
                arn: arn.to_string(),
            },
            Retry::DEFAULT,
        )
        .await?;
    let Some(session_id) = stage.stage.and_then(|s| s.active_session_id) else {
        return Ok(false);
    };
    let found = client
        .find_in_pages(
            Operation::ListParticipants,
            |next_token| ListParticipantsRequest {
                stage_arn: arn.to_string(),
                session_id: session_id.clone(),
                filter_by_published: Some(true),
                next_token,
                max_results: Some(100),
                ..Default::default()
            },
            |page: &ListParticipantsResponse| {
                page.participants
                    .iter()
                    .any(|p| {
                        p.participant_id.as_deref() == Some(pid)
                            && p.state == Some(ParticipantState::Connected)
                            && p.published == Some(true)
                    })
                    .then_some(())
            },
        )
        .await?;
    Ok(found.is_some())
}

/// Before a replica stage without viewers is deleted: its host is a replica that IVS keeps
/// publishing there until the replication stops, and the pool never deletes a stage its host
/// publishes on. So the replication is stopped first and the host marked gone from the stage;
/// then the delete can go ahead (if the pool still refuses it, e.g. below its minimum, the
/// replication loop starts the replication again). Does nothing for a stage with viewers, an
/// origin, or a replica without its host.
pub(super) async fn release_for_delete(shared: &Rc<Shared>, stage_arn: &str) {
    let target = shared.with_pool(|pool| {
        let stage = pool.stage_by_arn(stage_arn)?;
        if stage.load > 0 || !stage.host_publishing {
            return None;
        }
        let origin = pool.stage(stage.origin?)?;
        let pid = stage
            .host_participant_id
            .clone()
            .or_else(|| origin.host_participant_id.clone())?;
        Some((stage.id, origin.arn.clone()?, pid))
    });
    let Some((id, origin_arn, pid)) = target else {
        return;
    };
    if stop(shared, &origin_arn, stage_arn, &pid).await {
        let _ =
            shared.mutate(|pool, now| pool.host_unpublished(id, now).map_err(super::pool_error));
    }
}

/// When a replica stage is deleted anyway (DeleteStage ends its replications too): stop the
/// replication first, which frees the host's replication slot at once.
pub(super) async fn stop_before_delete(shared: &Rc<Shared>, intent: &DeleteIntent) {
    let found = shared.with_pool(|pool| {
        let stage = pool.stage(intent.stage)?;
        let origin = pool.stage(stage.origin?)?;
        let pid = stage
            .host_participant_id
            .clone()
            .or_else(|| origin.host_participant_id.clone())?;
        Some((origin.arn.clone()?, pid))
    });
    if let Some((origin_arn, pid)) = found {
        stop(shared, &origin_arn, &intent.arn, &pid).await;
    }
}

/// `StopParticipantReplication`; true when it is stopped (or was not running).
async fn stop(shared: &Rc<Shared>, origin_arn: &str, replica_arn: &str, pid: &str) -> bool {
    let Ok(client) = shared.ivs() else {
        return false;
    };
    let result: Result<EmptyResponse, CallError> = super::call_budgeted(
        shared,
        &client,
        Operation::StopParticipantReplication,
        &StopParticipantReplicationRequest {
            source_stage_arn: origin_arn.to_string(),
            destination_stage_arn: replica_arn.to_string(),
            participant_id: pid.to_string(),
        },
        super::BUDGETED_ATTEMPTS,
    )
    .await;
    match result {
        Ok(_) => true,
        // Not running (never started, or ended with its source): nothing to stop.
        Err(CallError::Ivs(e)) if e.status == 404 => true,
        Err(e) => {
            worker::console_error!("StopParticipantReplication {replica_arn}: {e}");
            false
        }
    }
}
