//! Replicate fan-out mode: which `StartParticipantReplication` calls and checks the adapter
//! must make, and when.
//!
//! The [`Pool`] says which replications should run ([`Pool::replications`]); IVS says whether
//! one runs (the host's replica is listed as a publisher of the replica stage, which the
//! adapter reports with [`Pool::observe`]). In between, a [`ReplicationTracker`] remembers, per
//! replica stage, what was tried: start the replication, then check that the replica is
//! published there, retrying with capped exponential backoff. It lives in the adapter's memory
//! only: after a restart a start that is already done answers `ConflictException`, which
//! counts as started.
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

use std::collections::BTreeMap;

use crate::pool::{Millis, Pool, Replication, StageId};

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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Start,
    Verify { checks: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    participant: String,
    phase: Phase,
    failures: u32,
    due_at: Millis,
}

/// Per replica stage: what was tried and when to try next. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationTracker {
    entries: BTreeMap<StageId, Entry>,
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
    /// The steps due at `now` for the replications the pool still needs (see [`pending`]).
    /// Forgets replica stages that need nothing any more; a new host participant id starts
    /// over.
    pub fn plan(&mut self, pool: &Pool, now: Millis) -> Plan {
        let wanted = pending(pool);
        self.entries
            .retain(|id, _| wanted.iter().any(|r| r.replica == *id));
        let mut plan = Plan::default();
        for r in wanted {
            let pid = r.host_participant_id.clone().unwrap_or_default();
            let entry = self.entries.entry(r.replica).or_insert_with(|| Entry {
                participant: pid.clone(),
                phase: Phase::Start,
                failures: 0,
                due_at: now,
            });
            if entry.participant != pid {
                *entry = Entry {
                    participant: pid,
                    phase: Phase::Start,
                    failures: 0,
                    due_at: now,
                };
            }
            if entry.due_at <= now {
                plan.steps.push(match entry.phase {
                    Phase::Start => Step::Start(r),
                    Phase::Verify { .. } => Step::Verify(r),
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
            e.phase = Phase::Verify { checks: 0 };
            e.failures = 0;
            e.due_at = now + VERIFY_INTERVAL_MS;
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
            e.phase = Phase::Start;
            e.due_at = now + retry_after.unwrap_or(0).max(backoff);
        }
    }

    /// A check did not find the replica published: check again, or after [`MAX_CHECKS`]
    /// start the replication again.
    pub fn not_seen(&mut self, replica: StageId, now: Millis) {
        if let Some(e) = self.entries.get_mut(&replica) {
            let checks = match e.phase {
                Phase::Verify { checks } => checks + 1,
                Phase::Start => 0,
            };
            if checks >= MAX_CHECKS {
                e.phase = Phase::Start;
                e.due_at = now;
            } else {
                e.phase = Phase::Verify { checks };
                e.due_at = now + VERIFY_INTERVAL_MS;
            }
        }
    }

    /// Failed starts in a row for `replica` (0 when unknown).
    pub fn failures(&self, replica: StageId) -> u32 {
        self.entries.get(&replica).map_or(0, |e| e.failures)
    }

    /// Whether anything is pending.
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FanoutMode;
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
}
