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
mod tests;
