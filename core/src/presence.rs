//! Viewer presence at the stage: the leases of one stage, kept alive by heartbeats in an
//! object of that stage (the worker's `StageSeats`), so that keeping a seat costs the
//! broadcast's pool nothing per viewer per interval (docs/presence.md).
//!
//! The pool still grants every seat, alone and exactly; it counts a seat as taken until the
//! stage's object reports it freed (left or lapsed). Frees travel in batches
//! ([`StageLeases::batch`], at most one report per [`REPORT_INTERVAL_MS`] for expiries, at once
//! for a leave), and the pool applies a batch idempotently
//! ([`crate::pool::Pool::apply_frees`]): a free that arrives late only keeps a seat counted
//! a little longer, never makes the pool seat more than a stage holds.
//!
//! A lease of stage presence names its stage: `{broadcast}.{stage}.{22 random characters}`
//! ([`crate::regions::lease_route`]), so the edge routes a heartbeat to the stage's object without
//! asking the pool. The whole id is the key of the stage's table: a lease id with another
//! stage written into it is unknown there (`lease_not_found`), as any made-up id is.
//!
//! Nothing here reads a clock: `now` (unix ms) is an argument.
//!
//! ```
//! use stagefan_core::pool::StageId;
//! use stagefan_core::presence::{FreeKind, StageLeases, StageStatus};
//!
//! let now = 1_764_160_000_000;
//! let mut stage = StageLeases::new("b", StageId(1), 60_000, StageStatus::default(), now);
//! // The pool granted a seat there: it admits the lease before it answers the viewer.
//! let expires = stage.admit("b.1.aaaaaaaaaaaaaaaaaaaaaa", false, now).unwrap();
//! assert_eq!(expires, now + 60_000);
//! // Heartbeats renew it here, the pool hears nothing.
//! stage.heartbeat("b.1.aaaaaaaaaaaaaaaaaaaaaa", now + 20_000).unwrap();
//! // Unrenewed, it lapses; the lapse waits in the batch for the pool.
//! assert_eq!(stage.expire(now + 80_000), 1);
//! let batch = stage.batch();
//! assert_eq!(batch[0].kind, FreeKind::Lapsed);
//! // The pool applied it: the batch is acknowledged.
//! stage.reported(&batch, StageStatus::default(), now + 80_000);
//! assert!(stage.batch().is_empty());
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::pool::{derive, Life, LifeRecord, StageId, HOST_RECONNECT_GRACE_MS};
use crate::time::Millis;

/// A stage's object reports lapsed leases to the pool at most this often (a leave is
/// reported at once). The pool learns a lapse within this of it.
pub const REPORT_INTERVAL_MS: Millis = 2_000;
/// A stage's object with leases reports to the pool at least this often even with nothing
/// to free (and learns the broadcast's life and its stage's fate in the answer), in case a
/// push of the pool's was lost.
pub const SYNC_INTERVAL_MS: Millis = 30_000;
/// Frees in one report, at most (the rest follow in the next).
pub const MAX_BATCH: usize = 2_000;

/// Where a broadcast's viewers keep their seats alive (`PRESENCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Every heartbeat renews the lease in the pool (one pool request per viewer per
    /// heartbeat interval): the design before stage presence, kept to measure against.
    #[default]
    Pool,
    /// Heartbeats and leaves go to the stage's object; the pool learns frees in batches.
    Stages,
}

impl Presence {
    /// Reads `PRESENCE`: `stages` (the default when unset) or `pool`.
    pub fn parse(value: Option<&str>) -> Result<Presence, crate::ids::InvalidField> {
        match value.map(str::trim) {
            None | Some("") | Some("stages") => Ok(Presence::Stages),
            Some("pool") => Ok(Presence::Pool),
            Some(other) => Err(crate::ids::InvalidField::new(
                "PRESENCE",
                format!("must be `stages` or `pool`, got {other:?}"),
            )),
        }
    }
}

/// How a seat was freed at its stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreeKind {
    /// The viewer gave it back (`leave`).
    Left,
    /// Its lease lapsed without a heartbeat.
    Lapsed,
}

/// A seat freed at its stage, to report to the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Free {
    /// The lease.
    pub lease_id: String,
    /// How it was freed.
    pub kind: FreeKind,
}

/// What the pool tells a stage's object: what its heartbeat answers need of the broadcast's
/// life (the pool's inputs to [`derive`], so the object follows time-derived changes by itself)
/// and whether IVS lost the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StageStatus {
    /// The broadcast's life record.
    pub life: LifeRecord,
    /// When the pool was made.
    pub created_at: Millis,
    /// Whether the host publishes on some stage of the pool.
    pub host_publishing: bool,
    /// The stage is gone from IVS: its seats were evicted by the pool.
    pub gone: bool,
    /// The stage is draining: its viewers are to move to another stage (their heartbeat
    /// answers say so, and the edge gives them their new seat).
    pub draining: bool,
}

impl StageStatus {
    /// The broadcast's state at `now`, as the pool would say it.
    pub fn life_at(&self, now: Millis) -> Life {
        derive(
            &self.life,
            self.created_at,
            self.host_publishing,
            now,
            HOST_RECONNECT_GRACE_MS,
        )
    }

    /// Whether the host ended the broadcast.
    pub fn is_ended(&self) -> bool {
        self.life.is_ended()
    }
}

/// Why a stage's object refuses a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceError {
    /// No live lease of that id at this stage (never granted here, given back, or lapsed).
    LeaseNotFound,
    /// IVS lost the stage: the seat was evicted; the viewer takes a new one.
    StageGone,
    /// The host ended the broadcast.
    Ended,
}

impl PresenceError {
    /// The API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            PresenceError::LeaseNotFound => "lease_not_found",
            PresenceError::StageGone => "stage_gone",
            PresenceError::Ended => "broadcast_ended",
        }
    }
}

/// The one stored record of a stage's object besides its leases and frees (serde camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageMeta {
    /// The pool whose stage this is: its name (`{broadcast}`, or `{broadcast}@{region}` in
    /// another region), the `StagePool` it reports to.
    pub broadcast: String,
    /// The stage, as the pool numbers it.
    pub stage: StageId,
    /// What the pool last said.
    #[serde(default)]
    pub status: StageStatus,
    /// When the pool last took a report (or pushed its status).
    #[serde(default)]
    pub last_report_at: Millis,
}

/// A stage's object's rows, for [`StageLeases::from_rows`].
#[derive(Debug, Clone, Default)]
pub struct StageRows {
    /// The meta row, if stored.
    pub meta: Option<StageMeta>,
    /// Lease id and when it lapses.
    pub leases: Vec<(String, Millis)>,
    /// Frees not yet acknowledged by the pool.
    pub frees: Vec<Free>,
}

/// Rows to write after a mutation (see [`StageLeases::take_changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageChanges {
    /// Lease rows to upsert (read them with [`StageLeases::expires_at`]).
    pub leases_upserted: BTreeSet<String>,
    /// Lease rows to delete.
    pub leases_removed: BTreeSet<String>,
    /// Free rows to upsert.
    pub frees_upserted: BTreeSet<String>,
    /// Free rows to delete (acknowledged).
    pub frees_removed: BTreeSet<String>,
    /// Whether the meta row changed.
    pub meta: bool,
}

impl StageChanges {
    /// Whether nothing is to be written.
    pub fn is_empty(&self) -> bool {
        *self == StageChanges::default()
    }
}

/// The leases of one stage: who holds a seat there and until when, and the frees the pool has
/// not yet acknowledged. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageLeases {
    meta: StageMeta,
    ttl_ms: Millis,
    leases: BTreeMap<String, Millis>,
    expiry: BTreeSet<(Millis, String)>,
    frees: BTreeMap<String, FreeKind>,
    changes: StageChanges,
}

impl StageLeases {
    /// The (empty) lease table of `stage` of `broadcast`, leases living `ttl_ms`.
    pub fn new(
        broadcast: &str,
        stage: StageId,
        ttl_ms: Millis,
        status: StageStatus,
        now: Millis,
    ) -> StageLeases {
        let changes = StageChanges {
            meta: true,
            ..StageChanges::default()
        };
        StageLeases {
            meta: StageMeta {
                broadcast: broadcast.to_string(),
                stage,
                status,
                last_report_at: now,
            },
            ttl_ms,
            leases: BTreeMap::new(),
            expiry: BTreeSet::new(),
            frees: BTreeMap::new(),
            changes,
        }
    }

    /// Rebuilds the table from its rows; `None` when there is no meta row (no such table).
    pub fn from_rows(ttl_ms: Millis, rows: StageRows) -> Option<StageLeases> {
        let meta = rows.meta?;
        let mut table = StageLeases {
            meta,
            ttl_ms,
            leases: BTreeMap::new(),
            expiry: BTreeSet::new(),
            frees: BTreeMap::new(),
            changes: StageChanges::default(),
        };
        for (id, expires_at) in rows.leases {
            table.expiry.insert((expires_at, id.clone()));
            table.leases.insert(id, expires_at);
        }
        for free in rows.frees {
            table.frees.insert(free.lease_id, free.kind);
        }
        Some(table)
    }

    /// The meta row.
    pub fn meta(&self) -> &StageMeta {
        &self.meta
    }

    /// When a live lease lapses.
    pub fn expires_at(&self, lease_id: &str) -> Option<Millis> {
        self.leases.get(lease_id).copied()
    }

    /// Live leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether no lease is live.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Frees waiting for the pool.
    pub fn pending(&self) -> usize {
        self.frees.len()
    }

    /// What the pool last said.
    pub fn status(&self) -> &StageStatus {
        &self.meta.status
    }

    /// The pool granted `lease_id` a seat on this stage (`reconnect`: a seat it already
    /// held). A new lease is taken (again, idempotently, if it is already live here); a
    /// reconnect renews a live lease and is `LeaseNotFound` for one that is not (it lapsed or
    /// was given back here, and the pool has not heard yet: the pool frees it and seats the
    /// viewer anew). A freed id is never admitted again. Returns when the lease lapses.
    pub fn admit(
        &mut self,
        lease_id: &str,
        reconnect: bool,
        now: Millis,
    ) -> Result<Millis, PresenceError> {
        self.expire(now);
        if self.meta.status.gone {
            return Err(PresenceError::StageGone);
        }
        if self.meta.status.is_ended() {
            return Err(PresenceError::Ended);
        }
        if self.leases.contains_key(lease_id) {
            return Ok(self.renew(lease_id, now));
        }
        if reconnect || self.frees.contains_key(lease_id) {
            return Err(PresenceError::LeaseNotFound);
        }
        let expires_at = now.saturating_add(self.ttl_ms);
        self.leases.insert(lease_id.to_string(), expires_at);
        self.expiry.insert((expires_at, lease_id.to_string()));
        self.changes.leases_upserted.insert(lease_id.to_string());
        Ok(expires_at)
    }

    /// Renews a live lease for another TTL (never shortening it). A lease of a stage IVS
    /// lost is `StageGone` while it is remembered (until it would have lapsed); every lease
    /// of an ended broadcast is `Ended`.
    pub fn heartbeat(&mut self, lease_id: &str, now: Millis) -> Result<Millis, PresenceError> {
        self.expire(now);
        if self.meta.status.is_ended() {
            return Err(PresenceError::Ended);
        }
        if !self.leases.contains_key(lease_id) {
            return Err(PresenceError::LeaseNotFound);
        }
        if self.meta.status.gone {
            return Err(PresenceError::StageGone);
        }
        Ok(self.renew(lease_id, now))
    }

    /// The viewer gives its seat back: `false` when no such lease is live here (idempotent).
    pub fn leave(&mut self, lease_id: &str, now: Millis) -> bool {
        self.expire(now);
        if !self.leases.contains_key(lease_id) {
            return false;
        }
        self.free(lease_id, FreeKind::Left);
        true
    }

    /// Frees every lease that lapsed by `now` (a lease is live while `now < expires_at`);
    /// returns how many.
    pub fn expire(&mut self, now: Millis) -> u32 {
        let mut n = 0;
        while let Some((t, id)) = self.expiry.first().cloned() {
            if t > now {
                break;
            }
            self.free(&id, FreeKind::Lapsed);
            n += 1;
        }
        n
    }

    /// The frees to report to the pool (at most [`MAX_BATCH`]), oldest lease ids first.
    pub fn batch(&self) -> Vec<Free> {
        self.frees
            .iter()
            .take(MAX_BATCH)
            .map(|(id, kind)| Free {
                lease_id: id.clone(),
                kind: *kind,
            })
            .collect()
    }

    /// The pool applied `batch` and answered `status` at `now`: those frees are done.
    pub fn reported(&mut self, batch: &[Free], status: StageStatus, now: Millis) {
        for free in batch {
            if self.frees.remove(&free.lease_id).is_some() {
                self.changes.frees_removed.insert(free.lease_id.clone());
                self.changes.frees_upserted.remove(&free.lease_id);
            }
        }
        self.set_status(status);
        self.meta.last_report_at = self.meta.last_report_at.max(now);
        self.changes.meta = true;
    }

    /// The pool pushed its status (the host came or went, the end, the stage gone).
    pub fn set_status(&mut self, status: StageStatus) {
        if self.meta.status != status {
            self.meta.status = status;
            self.changes.meta = true;
        }
    }

    /// Whether a report to the pool is due at `now`: lapses waiting for
    /// [`REPORT_INTERVAL_MS`] since the last one, or leases held for [`SYNC_INTERVAL_MS`].
    pub fn report_due(&self, now: Millis) -> bool {
        let since = now.saturating_sub(self.meta.last_report_at);
        (!self.frees.is_empty() && since >= REPORT_INTERVAL_MS)
            || (!self.leases.is_empty() && since >= SYNC_INTERVAL_MS)
    }

    /// When the object should wake next (its alarm), if ever: the next lapse, the next
    /// report of waiting frees, or the next sync while it holds leases; never before `now`.
    pub fn next_wake(&self, now: Millis) -> Option<Millis> {
        let last = self.meta.last_report_at;
        let candidates = [
            self.expiry.first().map(|(t, _)| *t),
            (!self.frees.is_empty()).then(|| last.saturating_add(REPORT_INTERVAL_MS)),
            (!self.leases.is_empty()).then(|| last.saturating_add(SYNC_INTERVAL_MS)),
        ];
        candidates.into_iter().flatten().min().map(|t| t.max(now))
    }

    /// The rows touched since the last call.
    pub fn take_changes(&mut self) -> StageChanges {
        std::mem::take(&mut self.changes)
    }

    fn renew(&mut self, lease_id: &str, now: Millis) -> Millis {
        let at = self.leases.get_mut(lease_id).expect("lease exists");
        let renewed = (*at).max(now.saturating_add(self.ttl_ms));
        if renewed != *at {
            self.expiry.remove(&(*at, lease_id.to_string()));
            *at = renewed;
            self.expiry.insert((renewed, lease_id.to_string()));
            self.changes.leases_upserted.insert(lease_id.to_string());
        }
        renewed
    }

    fn free(&mut self, lease_id: &str, kind: FreeKind) {
        let Some(at) = self.leases.remove(lease_id) else {
            return;
        };
        self.expiry.remove(&(at, lease_id.to_string()));
        self.changes.leases_upserted.remove(lease_id);
        self.changes.leases_removed.insert(lease_id.to_string());
        self.frees.insert(lease_id.to_string(), kind);
        self.changes.frees_upserted.insert(lease_id.to_string());
        self.changes.frees_removed.remove(lease_id);
    }

    /// The kind of a waiting free (for the adapter's rows).
    pub fn free_kind(&self, lease_id: &str) -> Option<FreeKind> {
        self.frees.get(lease_id).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::LifeRecord;

    const T0: Millis = 1_764_160_000_000;
    const TTL: Millis = 60_000;

    fn lease(n: u32) -> String {
        format!("b.3.{n:022}")
    }

    fn table() -> StageLeases {
        StageLeases::new("b", StageId(3), TTL, StageStatus::default(), T0)
    }

    fn rows_of(t: &StageLeases) -> StageRows {
        StageRows {
            meta: Some(t.meta.clone()),
            leases: t.leases.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            frees: t.batch(),
        }
    }

    #[test]
    fn heartbeats_renew_and_never_shorten() {
        let mut t = table();
        assert_eq!(t.admit(&lease(1), false, T0), Ok(T0 + TTL));
        assert_eq!(t.heartbeat(&lease(1), T0 + 20_000), Ok(T0 + 20_000 + TTL));
        // A heartbeat from a skewed clock does not cut the lease short.
        assert_eq!(t.heartbeat(&lease(1), T0 + 1_000), Ok(T0 + 20_000 + TTL));
        assert_eq!(
            t.heartbeat(&lease(2), T0 + 1_000),
            Err(PresenceError::LeaseNotFound)
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_lease_is_live_strictly_before_it_lapses() {
        let mut t = table();
        t.admit(&lease(1), false, T0).unwrap();
        assert_eq!(t.expire(T0 + TTL - 1), 0);
        assert_eq!(t.expire(T0 + TTL), 1);
        assert_eq!(
            t.heartbeat(&lease(1), T0 + TTL),
            Err(PresenceError::LeaseNotFound)
        );
        assert_eq!(
            t.batch(),
            vec![Free {
                lease_id: lease(1),
                kind: FreeKind::Lapsed
            }]
        );
    }

    #[test]
    fn leaving_is_idempotent_and_reported_once_acknowledged() {
        let mut t = table();
        t.admit(&lease(1), false, T0).unwrap();
        assert!(t.leave(&lease(1), T0 + 5));
        assert!(!t.leave(&lease(1), T0 + 6));
        let batch = t.batch();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].kind, FreeKind::Left);
        // Not acknowledged: still waiting (a lost report is sent again).
        assert_eq!(t.batch(), batch);
        t.reported(&batch, StageStatus::default(), T0 + 10);
        assert!(t.batch().is_empty());
        // Acknowledging again is harmless.
        t.reported(&batch, StageStatus::default(), T0 + 11);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn a_freed_lease_is_never_admitted_again() {
        let mut t = table();
        t.admit(&lease(1), false, T0).unwrap();
        t.expire(T0 + TTL);
        // The pool has not heard yet and reconnects the viewer: the stage says no, so the
        // pool frees the seat and gives a new one.
        assert_eq!(
            t.admit(&lease(1), true, T0 + TTL + 1),
            Err(PresenceError::LeaseNotFound)
        );
        assert_eq!(
            t.admit(&lease(1), false, T0 + TTL + 1),
            Err(PresenceError::LeaseNotFound)
        );
        // A reconnect of a live lease renews it; admitting a live lease again is idempotent.
        t.admit(&lease(2), false, T0).unwrap();
        assert_eq!(t.admit(&lease(2), true, T0 + 100), Ok(T0 + 100 + TTL));
        assert_eq!(t.admit(&lease(2), false, T0 + 200), Ok(T0 + 200 + TTL));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn an_ended_broadcast_or_a_gone_stage_answers_every_heartbeat() {
        let mut t = table();
        t.admit(&lease(1), false, T0).unwrap();
        let gone = StageStatus {
            gone: true,
            ..StageStatus::default()
        };
        t.set_status(gone);
        assert_eq!(
            t.heartbeat(&lease(1), T0 + 1),
            Err(PresenceError::StageGone)
        );
        assert_eq!(
            t.heartbeat(&lease(2), T0 + 1),
            Err(PresenceError::LeaseNotFound)
        );
        assert_eq!(
            t.admit(&lease(3), false, T0 + 1),
            Err(PresenceError::StageGone)
        );
        let life = LifeRecord {
            ended_at: Some(T0 + 2),
            ..LifeRecord::default()
        };
        t.set_status(StageStatus {
            life,
            ..StageStatus::default()
        });
        assert_eq!(t.heartbeat(&lease(2), T0 + 3), Err(PresenceError::Ended));
        assert_eq!(t.heartbeat(&lease(1), T0 + 3), Err(PresenceError::Ended));
    }

    #[test]
    fn the_life_follows_time_without_the_pool() {
        let mut life = LifeRecord::default();
        assert!(life.host_changed(true, T0));
        assert!(life.host_changed(false, T0 + 1_000));
        let status = StageStatus {
            life,
            created_at: T0,
            host_publishing: false,
            gone: false,
            draining: false,
        };
        use crate::pool::BroadcastState;
        assert_eq!(
            status.life_at(T0 + 2_000).state,
            BroadcastState::HostReconnecting
        );
        assert_eq!(
            status
                .life_at(T0 + 1_000 + HOST_RECONNECT_GRACE_MS + 1)
                .state,
            BroadcastState::OffAir
        );
    }

    #[test]
    fn wakes_for_lapses_reports_and_syncs() {
        let mut t = table();
        assert_eq!(t.next_wake(T0), None);
        t.admit(&lease(1), false, T0).unwrap();
        assert_eq!(t.next_wake(T0), Some(T0 + SYNC_INTERVAL_MS));
        assert!(!t.report_due(T0 + SYNC_INTERVAL_MS - 1));
        assert!(t.report_due(T0 + SYNC_INTERVAL_MS));
        t.reported(&[], StageStatus::default(), T0 + SYNC_INTERVAL_MS);
        assert_eq!(t.next_wake(T0 + SYNC_INTERVAL_MS), Some(T0 + TTL));
        // The lapse waits for the report interval since the last report, then goes.
        t.expire(T0 + TTL);
        assert!(t.report_due(T0 + TTL));
        let mut t = table();
        t.admit(&lease(1), false, T0).unwrap();
        t.leave(&lease(1), T0 + 10);
        assert!(!t.report_due(T0 + 10));
        assert_eq!(t.next_wake(T0 + 10), Some(T0 + REPORT_INTERVAL_MS));
        t.reported(&t.batch(), StageStatus::default(), T0 + 20);
        assert_eq!(t.next_wake(T0 + 20), None);
    }

    #[test]
    fn batches_are_bounded() {
        let mut t = table();
        for n in 0..(MAX_BATCH as u32 + 5) {
            t.admit(&lease(n), false, T0).unwrap();
        }
        t.expire(T0 + TTL);
        let first = t.batch();
        assert_eq!(first.len(), MAX_BATCH);
        t.reported(&first, StageStatus::default(), T0 + TTL);
        assert_eq!(t.batch().len(), 5);
    }

    #[test]
    fn rows_round_trip_and_changes_name_them() {
        let mut t = table();
        assert!(t.take_changes().meta, "a new table writes its meta");
        t.admit(&lease(1), false, T0).unwrap();
        t.admit(&lease(2), false, T0).unwrap();
        t.leave(&lease(2), T0 + 1);
        let c = t.take_changes();
        assert_eq!(c.leases_upserted, BTreeSet::from([lease(1)]));
        assert_eq!(c.leases_removed, BTreeSet::from([lease(2)]));
        assert_eq!(c.frees_upserted, BTreeSet::from([lease(2)]));
        // A heartbeat that changes nothing writes nothing.
        t.heartbeat(&lease(1), T0).unwrap();
        assert!(t.take_changes().is_empty());
        let back = StageLeases::from_rows(TTL, rows_of(&t)).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back.pending(), 1);
        assert_eq!(back.expires_at(&lease(1)), Some(T0 + TTL));
        assert_eq!(back.meta(), t.meta());
        assert!(StageLeases::from_rows(TTL, StageRows::default()).is_none());
    }
}
