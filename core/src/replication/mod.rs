//! Replicate fan-out mode: which `StartParticipantReplication` calls and checks the adapter
//! must make, and when.
//!
//! The [`Pool`] says which replications should run ([`Pool::replications`]); IVS says whether
//! one runs (the host's replica is listed as a publisher of the replica stage, which the
//! adapter reports with [`Pool::observe`]). In between, a [`ReplicationTracker`] remembers, per
//! replica stage, what was tried: start the replication, then check that the replica is
//! published there, retrying with capped exponential backoff.
//!
//! The adapter stores the tracker write-through, like the pool: every change that a restart
//! needs (a replication to start, started with which participant and when, failed starts and
//! their backoff, a replica that needs nothing more) is handed over by
//! [`ReplicationTracker::take_changes`] as [`TrackedReplication`] rows (serde) and removed
//! replica ids, and [`ReplicationTracker::from_rows`] rebuilds it. A tracker rebuilt after a
//! restart checks the replications it had started instead of starting them again. Only the
//! count of checks of a started replication is not stored: a restart grants it up to
//! [`MAX_CHECKS`] fresh checks.
//!
//! ```
//! use stagefan_core::config::FanoutMode;
//! use stagefan_core::pool::{Pool, PoolSettings, StageEndpoints};
//! use stagefan_core::replication::{ReplicationTracker, Step};
//!
//! let now = 1_764_160_000_000;
//! let settings = PoolSettings { fanout: FanoutMode::Replicate, ..PoolSettings::default() };
//! let mut pool = Pool::new("default", settings, now).unwrap();
//! for n in 0..2 {
//!     let intent = pool.begin_create(now).unwrap();
//!     let arn = format!("arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGH000{n}");
//!     pool.created(intent.stage, &arn, StageEndpoints::default(), now).unwrap();
//! }
//! let origin = pool.publisher_stages()[0].id;
//! pool.mark_live(origin, "host", now).unwrap();
//! let mut tracker = ReplicationTracker::default();
//! let plan = tracker.plan(&pool, now);
//! assert!(matches!(&plan.steps[..], [Step::Start(r)] if r.host_participant_id.as_deref() == Some("host")));
//! tracker.started(plan.steps[0].replication().replica, now);
//! let plan = tracker.plan(&pool, now + 300);
//! assert!(matches!(&plan.steps[..], [Step::Verify(_)]));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::pool::{Pool, Replication, StageId};
use crate::time::Millis;

/// The first wait after a failed start; it doubles with each failure.
pub const START_BACKOFF_MS: Millis = 500;
/// The longest wait between two starts of one replication.
pub const MAX_BACKOFF_MS: Millis = 30_000;
/// The wait between a start and the first check, and between checks.
pub const VERIFY_INTERVAL_MS: Millis = 300;
/// Checks that do not find the replica published before the replication is started again
/// (it may have ended, e.g. its source reconnected under a new participant id).
pub const MAX_CHECKS: u32 = 40;

/// What the adapter must do now for one replica stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Call `StartParticipantReplication` (origin → replica, the host's participant id), then
    /// [`ReplicationTracker::started`] (also on `ConflictException`) or
    /// [`ReplicationTracker::start_failed`].
    Start(Replication),
    /// Read the replica stage's participants; when the host's replica publishes there, report
    /// it with [`Pool::observe`], else call [`ReplicationTracker::not_seen`].
    Verify(Replication),
}

impl Step {
    /// The replication the step is about.
    pub fn replication(&self) -> &Replication {
        match self {
            Step::Start(r) | Step::Verify(r) => r,
        }
    }
}

/// The steps due now, and when to plan again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Due now, oldest replica stage first.
    pub steps: Vec<Step>,
    /// When the next pending step falls due (`None`: nothing is pending).
    pub next_at: Option<Millis>,
}

/// One replica stage's replication as the tracker knows it: also the stored row (serde,
/// camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackedReplication {
    /// The replica stage (the row's key).
    pub replica: StageId,
    /// The host's participant id on the origin that this replication copies.
    pub participant: String,
    /// When its start succeeded (or IVS said it already ran); `None` while it is still to be
    /// started.
    pub started_at: Option<Millis>,
    /// Failed starts in a row.
    pub failures: u32,
    /// When the next step (start or check) falls due.
    pub due_at: Millis,
}

/// The rows to write since the last [`ReplicationTracker::take_changes`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackerChanges {
    /// Rows to insert or replace.
    pub upserted: Vec<TrackedReplication>,
    /// Replica stages whose row is to be deleted.
    pub removed: Vec<StageId>,
}

impl TrackerChanges {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.upserted.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    participant: String,
    /// `Some` once started: then the step is a check.
    started_at: Option<Millis>,
    /// Checks since the start that did not find the replica (memory only).
    checks: u32,
    failures: u32,
    due_at: Millis,
}

impl Entry {
    fn to_start(participant: String, now: Millis) -> Self {
        Entry {
            participant,
            started_at: None,
            checks: 0,
            failures: 0,
            due_at: now,
        }
    }
}

/// Per replica stage: what was tried and when to try next. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationTracker {
    entries: BTreeMap<StageId, Entry>,
    /// Replica stages whose row changed since the last `take_changes`.
    dirty: BTreeSet<StageId>,
}

/// The replications still to be brought up: the origin's host is known and publishing, and
/// the replica stage does not show that host publishing yet.
pub fn pending(pool: &Pool) -> Vec<Replication> {
    pool.replications()
        .into_iter()
        .filter(|r| {
            let Some(pid) = r.host_participant_id.as_deref() else {
                return false;
            };
            let origin_publishing = pool.stage(r.origin).is_some_and(|o| o.host_publishing);
            let replica_has_host = pool.stage(r.replica).is_some_and(|s| {
                s.host_publishing && s.host_participant_id.as_deref() == Some(pid)
            });
            origin_publishing && !replica_has_host
        })
        .collect()
}

impl ReplicationTracker {
    /// Rebuilds a tracker from its stored rows (nothing to write afterwards).
    pub fn from_rows(rows: impl IntoIterator<Item = TrackedReplication>) -> Self {
        let entries = rows
            .into_iter()
            .map(|r| {
                (
                    r.replica,
                    Entry {
                        participant: r.participant,
                        started_at: r.started_at,
                        checks: 0,
                        failures: r.failures,
                        due_at: r.due_at,
                    },
                )
            })
            .collect();
        ReplicationTracker {
            entries,
            dirty: BTreeSet::new(),
        }
    }

    /// Every row, oldest replica stage first.
    pub fn rows(&self) -> Vec<TrackedReplication> {
        self.entries
            .iter()
            .map(|(id, e)| Self::row(*id, e))
            .collect()
    }

    fn row(replica: StageId, e: &Entry) -> TrackedReplication {
        TrackedReplication {
            replica,
            participant: e.participant.clone(),
            started_at: e.started_at,
            failures: e.failures,
            due_at: e.due_at,
        }
    }

    /// The rows changed since the last call: write them, delete the removed ones.
    pub fn take_changes(&mut self) -> TrackerChanges {
        let mut changes = TrackerChanges::default();
        for id in std::mem::take(&mut self.dirty) {
            match self.entries.get(&id) {
                Some(e) => changes.upserted.push(Self::row(id, e)),
                None => changes.removed.push(id),
            }
        }
        changes
    }

    /// The steps due at `now` for the replications the pool still needs (see [`pending`]).
    /// Forgets replica stages that need nothing any more; a new host participant id starts
    /// over.
    pub fn plan(&mut self, pool: &Pool, now: Millis) -> Plan {
        let wanted = pending(pool);
        let dirty = &mut self.dirty;
        self.entries.retain(|id, _| {
            let keep = wanted.iter().any(|r| r.replica == *id);
            if !keep {
                dirty.insert(*id);
            }
            keep
        });
        let mut plan = Plan::default();
        for r in wanted {
            let pid = r.host_participant_id.clone().unwrap_or_default();
            let entry = self.entries.entry(r.replica).or_insert_with(|| {
                self.dirty.insert(r.replica);
                Entry::to_start(pid.clone(), now)
            });
            if entry.participant != pid {
                *entry = Entry::to_start(pid, now);
                self.dirty.insert(r.replica);
            }
            if entry.due_at <= now {
                plan.steps.push(match entry.started_at {
                    None => Step::Start(r),
                    Some(_) => Step::Verify(r),
                });
            } else {
                plan.next_at = Some(plan.next_at.map_or(entry.due_at, |t| t.min(entry.due_at)));
            }
        }
        if !plan.steps.is_empty() {
            // Steps now in flight are due again at the latest after a check interval.
            let soon = now + VERIFY_INTERVAL_MS;
            plan.next_at = Some(plan.next_at.map_or(soon, |t| t.min(soon)));
        }
        plan
    }

    /// The start for `replica` succeeded (or IVS said it already runs): check it soon.
    pub fn started(&mut self, replica: StageId, now: Millis) {
        if let Some(e) = self.entries.get_mut(&replica) {
            e.started_at = Some(now);
            e.checks = 0;
            e.failures = 0;
            e.due_at = now + VERIFY_INTERVAL_MS;
            self.dirty.insert(replica);
        }
    }

    /// The start for `replica` failed: try again after a backoff that doubles with each
    /// failure (capped), or after `retry_after` if IVS said when (throttling).
    pub fn start_failed(&mut self, replica: StageId, now: Millis, retry_after: Option<Millis>) {
        if let Some(e) = self.entries.get_mut(&replica) {
            e.failures += 1;
            let backoff = START_BACKOFF_MS
                .saturating_mul(1 << (e.failures - 1).min(16))
                .min(MAX_BACKOFF_MS);
            e.started_at = None;
            e.due_at = now + retry_after.unwrap_or(0).max(backoff);
            self.dirty.insert(replica);
        }
    }

    /// A check did not find the replica published: check again, or after [`MAX_CHECKS`]
    /// start the replication again.
    pub fn not_seen(&mut self, replica: StageId, now: Millis) {
        if let Some(e) = self.entries.get_mut(&replica) {
            let checks = if e.started_at.is_some() {
                e.checks + 1
            } else {
                0
            };
            if checks >= MAX_CHECKS {
                e.started_at = None;
                e.checks = 0;
                e.due_at = now;
                self.dirty.insert(replica);
            } else {
                if e.started_at.is_none() {
                    e.started_at = Some(now);
                    self.dirty.insert(replica);
                }
                // The count is memory only: a restart merely grants fresh checks.
                e.checks = checks;
                e.due_at = now + VERIFY_INTERVAL_MS;
            }
        }
    }

    /// Failed starts in a row for `replica` (0 when unknown).
    pub fn failures(&self, replica: StageId) -> u32 {
        self.entries.get(&replica).map_or(0, |e| e.failures)
    }

    /// When the replication into `replica` was started, if it is known to be.
    pub fn started_at(&self, replica: StageId) -> Option<Millis> {
        self.entries.get(&replica).and_then(|e| e.started_at)
    }

    /// Whether anything is pending.
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modes::FanoutMode;
    use crate::pool::{Observation, PoolSettings, StageEndpoints, StageObservation, StageState};

    const T0: Millis = 1_764_160_000_000;

    fn arn(n: u64) -> String {
        format!("arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGH{n:04}")
    }

    /// A replicate-mode pool with `n` warming stages (one origin per six).
    fn pool(n: u64) -> Pool {
        let settings = PoolSettings {
            fanout: FanoutMode::Replicate,
            max_stages: 100,
            ..PoolSettings::default()
        };
        let mut pool = Pool::new("b", settings, T0).unwrap();
        for i in 0..n {
            let intent = pool.begin_create(T0).unwrap();
            pool.created(intent.stage, &arn(i), StageEndpoints::default(), T0)
                .unwrap();
        }
        pool
    }

    fn see(pool: &mut Pool, replica: StageId, pid: &str, at: Millis) {
        let stage_arn = pool.stage(replica).unwrap().arn.clone().unwrap();
        pool.observe(
            &Observation {
                observed_at: at,
                stages: vec![StageObservation {
                    stage_arn,
                    publishers: vec![pid.into()],
                    subscribers: vec![],
                }],
                ..Default::default()
            },
            at,
        );
    }

    #[test]
    fn nothing_is_started_before_the_host_publishes_on_the_origin() {
        let p = pool(3);
        let mut t = ReplicationTracker::default();
        assert_eq!(t.plan(&p, T0), Plan::default());
        assert!(t.is_idle());
    }

    #[test]
    fn start_then_verify_until_the_replica_is_seen() {
        let mut p = pool(3);
        let origin = p.publisher_stages()[0].id;
        p.mark_live(origin, "host", T0).unwrap();
        let mut t = ReplicationTracker::default();
        let plan = t.plan(&p, T0);
        assert_eq!(plan.steps.len(), 2, "both replicas of the origin");
        for s in &plan.steps {
            assert!(matches!(s, Step::Start(r) if r.origin == origin));
            t.started(s.replication().replica, T0);
        }
        // Not due before the check interval.
        let plan = t.plan(&p, T0 + 100);
        assert!(plan.steps.is_empty());
        assert_eq!(plan.next_at, Some(T0 + VERIFY_INTERVAL_MS));
        let plan = t.plan(&p, T0 + VERIFY_INTERVAL_MS);
        assert!(plan.steps.iter().all(|s| matches!(s, Step::Verify(_))));
        let first = plan.steps[0].replication().replica;
        let second = plan.steps[1].replication().replica;
        // The first replica shows up; it goes live and needs nothing more.
        see(&mut p, first, "host", T0 + 400);
        assert_eq!(p.stage(first).unwrap().state, StageState::Live);
        t.not_seen(second, T0 + 400);
        let plan = t.plan(&p, T0 + 400 + VERIFY_INTERVAL_MS);
        assert_eq!(plan.steps, vec![Step::Verify(p.replications()[1].clone())]);
        assert_eq!(plan.steps[0].replication().replica, second);
        see(&mut p, second, "host", T0 + 800);
        assert_eq!(t.plan(&p, T0 + 900), Plan::default());
        assert!(t.is_idle());
    }

    #[test]
    fn failed_starts_back_off_exponentially_up_to_the_cap() {
        let mut p = pool(2);
        let origin = p.publisher_stages()[0].id;
        p.mark_live(origin, "host", T0).unwrap();
        let mut t = ReplicationTracker::default();
        let mut now = T0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            let plan = t.plan(&p, now);
            assert_eq!(plan.steps.len(), 1);
            let replica = plan.steps[0].replication().replica;
            t.start_failed(replica, now, None);
            let next = t.plan(&p, now).next_at.unwrap();
            waits.push(next - now);
            now = next;
        }
        assert_eq!(&waits[..4], &[500, 1_000, 2_000, 4_000]);
        assert!(waits.iter().all(|&w| w <= MAX_BACKOFF_MS));
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF_MS);
        // Throttling says when: never sooner than the backoff, later if IVS asks.
        let replica = t.plan(&p, now).steps[0].replication().replica;
        t.start_failed(replica, now, Some(45_000));
        assert_eq!(t.plan(&p, now).next_at, Some(now + 45_000));
        assert_eq!(t.failures(replica), 11);
    }

    #[test]
    fn a_replica_never_seen_is_started_again_and_a_new_host_id_starts_over() {
        let mut p = pool(2);
        let origin = p.publisher_stages()[0].id;
        p.mark_live(origin, "host-1", T0).unwrap();
        let mut t = ReplicationTracker::default();
        let replica = t.plan(&p, T0).steps[0].replication().replica;
        t.started(replica, T0);
        let mut now = T0;
        for _ in 0..MAX_CHECKS {
            now += VERIFY_INTERVAL_MS;
            assert!(matches!(t.plan(&p, now).steps[..], [Step::Verify(_)]));
            t.not_seen(replica, now);
        }
        assert!(matches!(t.plan(&p, now).steps[..], [Step::Start(_)]));
        t.started(replica, now);
        // The host reconnects with another participant id: start again at once, for it.
        p.mark_live(origin, "host-2", now + 1).unwrap();
        let plan = t.plan(&p, now + 1);
        assert!(matches!(&plan.steps[..],
            [Step::Start(r)] if r.host_participant_id.as_deref() == Some("host-2")));
    }

    #[test]
    fn the_host_stopping_on_the_origin_or_a_drained_replica_cancels_pending_work() {
        let mut p = pool(3);
        let origin = p.publisher_stages()[0].id;
        p.mark_live(origin, "host", T0).unwrap();
        let mut t = ReplicationTracker::default();
        assert_eq!(t.plan(&p, T0).steps.len(), 2);
        let replicas: Vec<StageId> = p.replications().iter().map(|r| r.replica).collect();
        p.drain(replicas[1], T0 + 1).unwrap();
        assert_eq!(t.plan(&p, T0 + 2).steps.len(), 1);
        p.host_unpublished(origin, T0 + 3).unwrap();
        assert_eq!(t.plan(&p, T0 + 4), Plan::default());
        assert!(t.is_idle());
    }

    #[test]
    fn a_new_origin_every_sixth_stage_gets_its_own_replications() {
        let mut p = pool(12);
        let origins: Vec<StageId> = p.publisher_stages().iter().map(|s| s.id).collect();
        assert_eq!(origins.len(), 2);
        p.mark_live(origins[0], "h1", T0).unwrap();
        p.mark_live(origins[1], "h2", T0).unwrap();
        let plan = ReplicationTracker::default().plan(&p, T0);
        assert_eq!(plan.steps.len(), 10);
        for o in &origins {
            let n = plan
                .steps
                .iter()
                .filter(|s| s.replication().origin == *o)
                .count();
            assert_eq!(
                n, 5,
                "at most 5 replicas per origin (IVS's per-participant limit)"
            );
        }
    }

    /// What a Durable Object restart does: only the stored rows survive (through JSON).
    fn restart(
        t: &mut ReplicationTracker,
        stored: &mut BTreeMap<StageId, String>,
    ) -> ReplicationTracker {
        let changes = t.take_changes();
        for row in changes.upserted {
            stored.insert(row.replica, serde_json::to_string(&row).unwrap());
        }
        for id in changes.removed {
            stored.remove(&id);
        }
        ReplicationTracker::from_rows(
            stored
                .values()
                .map(|json| serde_json::from_str::<TrackedReplication>(json).unwrap()),
        )
    }

    #[test]
    fn a_rebuilt_tracker_checks_the_replications_it_had_started_instead_of_starting_them_again() {
        let mut p = pool(3);
        let origin = p.publisher_stages()[0].id;
        p.mark_live(origin, "host", T0).unwrap();
        let mut t = ReplicationTracker::default();
        let plan = t.plan(&p, T0);
        let (first, second) = (
            plan.steps[0].replication().replica,
            plan.steps[1].replication().replica,
        );
        t.started(first, T0 + 10);
        t.start_failed(second, T0 + 10, None);
        let mut stored = BTreeMap::new();
        let mut rebuilt = restart(&mut t, &mut stored);
        assert_eq!(rebuilt.rows(), t.rows(), "every row survives");
        assert_eq!(rebuilt.started_at(first), Some(T0 + 10));
        assert_eq!(rebuilt.take_changes(), TrackerChanges::default());
        // Both due a while later: the started one is checked, the failed one started again.
        let plan = rebuilt.plan(&p, T0 + 5_000);
        assert_eq!(
            plan.steps,
            vec![
                Step::Verify(p.replications()[0].clone()),
                Step::Start(p.replications()[1].clone()),
            ]
        );
        // Without the rows (the tracker in memory only) both would be started again.
        let plan = ReplicationTracker::default().plan(&p, T0 + 5_000);
        assert!(plan.steps.iter().all(|s| matches!(s, Step::Start(_))));
    }

    #[test]
    fn a_failed_start_keeps_its_backoff_across_a_restart() {
        let mut p = pool(2);
        let origin = p.publisher_stages()[0].id;
        p.mark_live(origin, "host", T0).unwrap();
        let mut t = ReplicationTracker::default();
        let replica = t.plan(&p, T0).steps[0].replication().replica;
        let mut now = T0;
        for _ in 0..3 {
            t.start_failed(replica, now, None);
            now = t.plan(&p, now).next_at.unwrap();
        }
        t.start_failed(replica, now, None);
        let due = t.plan(&p, now).next_at.unwrap();
        assert_eq!(due - now, 4_000);
        let mut rebuilt = restart(&mut t, &mut BTreeMap::new());
        assert_eq!(rebuilt.failures(replica), 4);
        // Not due again before the backoff that was running, after the restart too.
        let plan = rebuilt.plan(&p, now + 1);
        assert!(plan.steps.is_empty());
        assert_eq!(plan.next_at, Some(due));
        let plan = rebuilt.plan(&p, due);
        assert!(matches!(plan.steps[..], [Step::Start(_)]));
        rebuilt.start_failed(replica, due, None);
        assert_eq!(
            rebuilt.plan(&p, due).next_at,
            Some(due + 8_000),
            "the backoff goes on doubling"
        );
    }

    #[test]
    fn a_row_for_an_earlier_host_connection_is_started_over_for_the_current_one() {
        let mut p = pool(2);
        let origin = p.publisher_stages()[0].id;
        p.mark_live(origin, "host-1", T0).unwrap();
        let mut t = ReplicationTracker::default();
        let replica = t.plan(&p, T0).steps[0].replication().replica;
        t.started(replica, T0);
        let mut stored = BTreeMap::new();
        let mut rebuilt = restart(&mut t, &mut stored);
        // While the Durable Object was gone the host page reconnected.
        p.mark_live(origin, "host-2", T0 + 1_000).unwrap();
        let plan = rebuilt.plan(&p, T0 + 1_000);
        assert!(matches!(&plan.steps[..],
            [Step::Start(r)] if r.host_participant_id.as_deref() == Some("host-2")));
        let changes = rebuilt.take_changes();
        assert_eq!(changes.upserted.len(), 1);
        assert_eq!(changes.upserted[0].participant, "host-2");
        assert_eq!(changes.upserted[0].started_at, None);
    }

    #[test]
    fn changes_name_exactly_the_rows_to_write_and_to_delete() {
        let mut p = pool(3);
        let origin = p.publisher_stages()[0].id;
        p.mark_live(origin, "host", T0).unwrap();
        let mut t = ReplicationTracker::default();
        assert!(t.take_changes().is_empty());
        let plan = t.plan(&p, T0);
        let replicas: Vec<StageId> = plan.steps.iter().map(|s| s.replication().replica).collect();
        let changes = t.take_changes();
        assert_eq!(
            changes
                .upserted
                .iter()
                .map(|r| r.replica)
                .collect::<Vec<_>>(),
            replicas,
            "new rows: to be started"
        );
        assert!(changes
            .upserted
            .iter()
            .all(|r| r.started_at.is_none() && r.participant == "host"));
        // Planning again changes nothing stored.
        t.plan(&p, T0 + 1);
        assert!(t.take_changes().is_empty());
        t.started(replicas[0], T0 + 2);
        t.started(replicas[1], T0 + 2);
        assert_eq!(t.take_changes().upserted.len(), 2);
        // A check that misses is not worth a write; giving up on the checks is.
        t.not_seen(replicas[0], T0 + 300);
        assert!(t.take_changes().is_empty());
        for i in 1..MAX_CHECKS {
            t.not_seen(replicas[0], T0 + 300 + u64::from(i) * VERIFY_INTERVAL_MS);
        }
        let changes = t.take_changes();
        assert_eq!(changes.upserted.len(), 1);
        assert_eq!(changes.upserted[0].started_at, None, "to be started again");
        // The second replica shows up live: its row goes.
        see(&mut p, replicas[1], "host", T0 + 20_000);
        t.plan(&p, T0 + 20_000);
        assert_eq!(
            t.take_changes(),
            TrackerChanges {
                upserted: vec![],
                removed: vec![replicas[1]]
            }
        );
        // The host stops: every row goes.
        p.host_unpublished(origin, T0 + 21_000).unwrap();
        t.plan(&p, T0 + 21_000);
        assert_eq!(t.take_changes().removed, vec![replicas[0]]);
        assert!(t.is_idle());
    }

    #[test]
    fn the_stored_row_is_camel_case_json() {
        let row = TrackedReplication {
            replica: StageId(7),
            participant: "host".into(),
            started_at: Some(T0),
            failures: 2,
            due_at: T0 + 300,
        };
        let json = serde_json::to_value(&row).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"replica": 7, "participant": "host", "startedAt": T0,
                               "failures": 2, "dueAt": T0 + 300})
        );
        assert_eq!(
            serde_json::from_value::<TrackedReplication>(json).unwrap(),
            row
        );
    }
}
