//! Consolidation and make-before-break moves: when the audience shrinks, the viewers of
//! under-filled stages are moved into fewer stages and the emptied stages deleted.
//!
//! The policy decides which stages to drain ([`crate::policy::scale_down`]); the pool drains
//! them ([`Pool::consolidate`]). A draining stage's viewers learn it from their heartbeat
//! answers and ask for a move ([`JoinRequest::moving`]): a new seat on a stage with room,
//! granted while the old one is kept, so a moved viewer holds two seats (and two of the
//! region's subscriptions) until the new stage plays and it gives the old one back. No stage
//! ever holds more seats than its capacity, moves included: the new seat is an ordinary seat.
//! The host keeps publishing to a draining stage (and a replica keeps being fed) while it
//! still has viewers ([`Stage::serves`]).
//!
//! What consolidation saved ([`Saved`]) is the publisher time of the stages it closed, from
//! their deletion while the broadcast goes on: what keeping them open would have cost. It is
//! an upper bound, since without consolidation a stage would still have closed by itself once
//! its last viewer left.

use serde::{Deserialize, Serialize};

use super::*;
use crate::meter::MeterView;

/// How many buckets [`Arrivals`] keeps: the window is cut in this many.
const ARRIVAL_BUCKETS: u64 = 6;

/// New seats per time bucket over a recent window (the pool's scale-down grace): how fast
/// viewers are arriving, in a few bytes whatever the rate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Arrivals {
    /// `(bucket start, new seats)`, oldest first.
    buckets: Vec<(Millis, u64)>,
}

impl Arrivals {
    fn width(window_ms: Millis) -> Millis {
        (window_ms / ARRIVAL_BUCKETS).max(1_000)
    }

    /// One new seat at `now`.
    pub fn record(&mut self, now: Millis, window_ms: Millis) {
        let width = Arrivals::width(window_ms);
        let start = now - now % width;
        match self.buckets.last_mut() {
            Some((at, n)) if *at == start => *n += 1,
            Some((at, _)) if *at > start => {
                // A `now` behind the last bucket (a skewed clock): counted in the last one.
                self.buckets.last_mut().expect("some").1 += 1;
            }
            _ => self.buckets.push((start, 1)),
        }
        let horizon = now.saturating_sub(window_ms + width);
        self.buckets.retain(|(at, _)| *at >= horizon);
        let keep = ARRIVAL_BUCKETS as usize + 2;
        if self.buckets.len() > keep {
            self.buckets.drain(..self.buckets.len() - keep);
        }
    }

    /// New seats within `window_ms` before `now` (to the bucket: a bucket that began within
    /// the window counts whole).
    pub fn within(&self, now: Millis, window_ms: Millis) -> u64 {
        let width = Arrivals::width(window_ms);
        let from = now.saturating_sub(window_ms);
        self.buckets
            .iter()
            .filter(|(at, _)| at + width > from)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Publisher time that stages closed by consolidation would have spent had they stayed open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Saved {
    /// Time saved up to `since`.
    pub closed: ByKind,
    /// Publishers not running now because consolidation closed their stages.
    pub open: ByKind,
    /// Since when `open` has been saving.
    pub since: Millis,
}

impl Saved {
    fn accrue(&mut self, at: Millis) {
        if at > self.since {
            let dt = at - self.since;
            self.closed.hosts = self
                .closed
                .hosts
                .saturating_add(self.open.hosts.saturating_mul(dt));
            self.closed.replicas = self
                .closed
                .replicas
                .saturating_add(self.open.replicas.saturating_mul(dt));
            self.since = at;
        }
    }

    /// A consolidated stage was deleted at `at`: from now on its publisher is saved.
    pub(super) fn stage_closed(&mut self, replica: bool, at: Millis) {
        self.accrue(at);
        if replica {
            self.open.replicas += 1;
        } else {
            self.open.hosts += 1;
        }
    }

    /// The broadcast ended at `at`: nothing is saved after it.
    pub(super) fn stop(&mut self, at: Millis) {
        self.accrue(at);
        self.open = ByKind::default();
    }

    /// The time saved up to `now`.
    fn ms_at(&self, now: Millis) -> ByKind {
        let mut s = *self;
        s.accrue(now);
        s.closed
    }
}

impl Stage {
    /// Whether the host must still reach this stage's viewers: warming or live, or draining
    /// with viewers not yet moved off it.
    pub fn serves(&self) -> bool {
        self.is_active() || (self.state == StageState::Draining && self.load > 0)
    }
}

impl Pool {
    /// Drains `stage` for consolidation (as [`Pool::drain`], with its rules) and counts it:
    /// its viewers are moved into the other stages, and once it is empty it is deleted.
    pub fn consolidate(&mut self, stage: StageId, now: Millis) -> Result<(), PoolError> {
        self.advance(now);
        self.check_drain(stage)?;
        let st = self.get(stage)?;
        if st.state == StageState::Draining {
            return Ok(());
        }
        self.start_draining(stage, now);
        self.update_stage(stage, |st| st.consolidated = true);
        self.meta.stats.consolidations += 1;
        self.changes.meta = true;
        Ok(())
    }

    /// New seats granted within the scale-down grace before `now` (moves not counted).
    pub fn recent_arrivals(&self, now: Millis) -> u64 {
        self.meta
            .arrivals
            .within(now, self.settings.scale_down_grace_ms)
    }

    pub(super) fn record_arrival(&mut self, now: Millis) {
        let window = self.settings.scale_down_grace_ms;
        self.meta.arrivals.record(now, window);
    }

    /// What consolidation saved up to `now`: publisher time and its estimated cost, and the
    /// cost per hour it saves now.
    pub fn saved(&self, now: Millis) -> MeterView {
        let saved = &self.meta.saved;
        let end = self.meta.life.ended_at.map_or(now, |e| e.min(now));
        MeterView::new(saved.ms_at(end), saved.open, &self.settings.prices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_764_160_000_000;

    #[test]
    fn arrivals_count_the_window_and_forget_older_ones() {
        let mut a = Arrivals::default();
        let window = 60_000;
        for i in 0..30 {
            a.record(T0 + i * 1_000, window);
        }
        assert_eq!(a.within(T0 + 29_000, window), 30);
        // Two windows later, nothing is recent and little is kept.
        a.record(T0 + 200_000, window);
        assert_eq!(a.within(T0 + 200_000, window), 1);
        assert!(a.buckets.len() <= ARRIVAL_BUCKETS as usize + 2);
        assert_eq!(a.within(T0 + 400_000, window), 0);
    }

    #[test]
    fn a_clock_behind_the_last_bucket_still_counts() {
        let mut a = Arrivals::default();
        a.record(T0 + 50_000, 60_000);
        a.record(T0, 60_000);
        assert_eq!(a.within(T0 + 50_000, 60_000), 2);
    }

    #[test]
    fn saved_time_runs_per_closed_publisher_until_the_end() {
        let mut s = Saved {
            since: T0,
            ..Saved::default()
        };
        s.stage_closed(false, T0 + 1_000);
        s.stage_closed(true, T0 + 3_000);
        assert_eq!(s.ms_at(T0 + 5_000).hosts, 4_000);
        assert_eq!(s.ms_at(T0 + 5_000).replicas, 2_000);
        s.stop(T0 + 6_000);
        assert_eq!(s.ms_at(T0 + 60_000).hosts, 5_000);
        assert_eq!(s.open, ByKind::default());
    }
}
