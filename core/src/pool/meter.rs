//! The pool's cost meter: participant time of the broadcast and of each stage, exact over
//! the `now` arguments, and its estimated cost ([`crate::meter`]).
//!
//! Viewers are metered by their seats: a seat is one participant from its join until it is
//! given back or lapses (the integrator [`PoolMeta::viewer_ms`], exact to each expiry), so
//! the meter counts a seat whose viewer has already closed its page until its lease ends —
//! at most `LEASE_TTL_SECONDS` too much per such viewer, never too little. The host is metered
//! on each stage from the moment the pool learns it publishes there until it learns it
//! stopped (or the stage is deleted); in replicate mode a replica stage's publisher is the
//! replica. A stage's own time lives in its row ([`StageMeter`]); the time of stages the
//! pool has forgotten is kept in its meta row, so the broadcast's total never shrinks.

use serde::{Deserialize, Serialize};

use super::*;
use crate::meter::{ByKind, MeterView};

/// Participant time of one stage (stored with the stage's row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StageMeter {
    /// Time already counted: viewers of the seats given back here, the host's (or replica's)
    /// time up to `publishing_since`.
    pub closed: ByKind,
    /// Since when the publisher counted here has been publishing, not yet in `closed`.
    pub publishing_since: Option<Millis>,
}

impl StageMeter {
    /// Moves the open publisher time up to `at` into `closed` (a replica's when `replica`).
    fn accrue(&mut self, at: Millis, replica: bool) {
        let Some(since) = self.publishing_since else {
            return;
        };
        if at <= since {
            return;
        }
        let dt = at - since;
        if replica {
            self.closed.replicas = self.closed.replicas.saturating_add(dt);
        } else {
            self.closed.hosts = self.closed.hosts.saturating_add(dt);
        }
        self.publishing_since = Some(at);
    }

    /// The publisher time counted up to `now`.
    fn publisher_ms(&self, now: Millis, replica: bool) -> ByKind {
        let mut ms = self.closed;
        if let Some(since) = self.publishing_since {
            let open = now.saturating_sub(since);
            if replica {
                ms.replicas = ms.replicas.saturating_add(open);
            } else {
                ms.hosts = ms.hosts.saturating_add(open);
            }
        }
        ms
    }
}

impl Stage {
    /// Sets whether the host (or its replica) publishes here, as of `at`, metering the time.
    pub(super) fn set_publishing(&mut self, on: bool, at: Millis) {
        self.meter.accrue(at, self.origin.is_some());
        if on && self.meter.publishing_since.is_none() {
            self.meter.publishing_since = Some(at);
        } else if !on {
            self.meter.publishing_since = None;
        }
        self.host_publishing = on;
    }

    /// Changes the stage's origin (replicate mode) as of `at`: the time before counts as
    /// what the stage was.
    pub(super) fn set_origin(&mut self, origin: Option<StageId>, at: Millis) {
        self.meter.accrue(at, self.origin.is_some());
        self.origin = origin;
    }

    /// A seat given back at `at` that was taken at `joined_at`.
    pub(super) fn seat_ended(&mut self, joined_at: Millis, at: Millis) {
        let ms = at.saturating_sub(joined_at);
        self.meter.closed.viewers = self.meter.closed.viewers.saturating_add(ms);
    }

    /// Participants here now, by kind.
    fn participants(&self) -> ByKind {
        let publishing = u64::from(self.host_publishing && self.state != StageState::Deleted);
        let replica = self.origin.is_some();
        ByKind {
            viewers: u64::from(self.load),
            hosts: if replica { 0 } else { publishing },
            replicas: if replica { publishing } else { 0 },
        }
    }
}

impl Pool {
    /// The broadcast's meter at `now` (without integrating: a view).
    pub fn meter(&self, now: Millis) -> MeterView {
        let open_viewers = now
            .saturating_sub(self.meta.integrated_at)
            .saturating_mul(self.leases.len() as u64);
        let mut ms = ByKind {
            viewers: self.meta.viewer_ms.saturating_add(open_viewers),
            ..self.meta.forgotten
        };
        let mut participants = ByKind {
            viewers: self.leases.len() as u64,
            ..ByKind::default()
        };
        for st in self.stages.values() {
            let publisher = st.meter.publisher_ms(now, st.origin.is_some());
            ms.hosts = ms.hosts.saturating_add(publisher.hosts);
            ms.replicas = ms.replicas.saturating_add(publisher.replicas);
            let here = st.participants();
            participants.hosts += here.hosts;
            participants.replicas += here.replicas;
        }
        MeterView::new(ms, participants, &self.settings.prices)
    }

    /// Each stage's meter at `now`, by stage id: its seats' time (given back, and held up to
    /// `now`) and its publisher's.
    pub fn stage_meters(&self, now: Millis) -> BTreeMap<StageId, MeterView> {
        let mut held: BTreeMap<StageId, u64> = BTreeMap::new();
        for lease in self.leases.values() {
            let ms = held.entry(lease.stage).or_default();
            *ms = ms.saturating_add(now.saturating_sub(lease.joined_at));
        }
        self.stages
            .values()
            .map(|st| {
                let mut ms = st.meter.publisher_ms(now, st.origin.is_some());
                ms.viewers = ms
                    .viewers
                    .saturating_add(held.get(&st.id).copied().unwrap_or(0));
                (
                    st.id,
                    MeterView::new(ms, st.participants(), &self.settings.prices),
                )
            })
            .collect()
    }

    /// A stage is forgotten: its publisher time moves to the pool's meta row (its viewers'
    /// time is in the pool's integrator already).
    pub(super) fn meter_forget(&mut self, st: &Stage) {
        let at = st.deleted_at.unwrap_or(self.meta.integrated_at);
        let ms = st.meter.publisher_ms(at, st.origin.is_some());
        self.meta.forgotten.hosts = self.meta.forgotten.hosts.saturating_add(ms.hosts);
        self.meta.forgotten.replicas = self.meta.forgotten.replicas.saturating_add(ms.replicas);
        self.changes.meta = true;
    }
}
