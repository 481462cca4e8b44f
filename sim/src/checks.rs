//! The invariants, each a named check, and the first step and seed at which each broke.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use stagefan_core::time::Millis;

/// A named invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// No stage holds more seats (in the pool) or subscribers (in IVS) than its capacity.
    StageCapacity,
    /// Each stage's load equals the subscribers IVS holds on it plus the seats held by
    /// viewers not connected right now (dropped, not yet lapsed).
    LoadsMatchIvs,
    /// No region uses more of a quota than the account has; the ledger never hands out more
    /// than is usable.
    RegionQuota,
    /// No operation is sent to IVS more often than its documented rate (any 1-s window).
    IvsRate,
    /// Every IVS stage is known to its pool, a create in flight, or collected: none unknown
    /// for minutes, none left once the broadcast ended.
    StagesKnown,
    /// A restart rebuilds the same seats (none lost, none doubled) and the same meter.
    SeatsAcrossRestart,
    /// Every join is answered in time; every viewer is seated or told why.
    ViewerAnswered,
    /// The seat time the pools metered equals the lease lifetimes the viewers held.
    ParticipantHours,
    /// The pool's own indexes agree with its rows (`Pool::check_consistency`).
    PoolConsistency,
}

impl Check {
    /// Every check, in report order.
    pub const ALL: [Check; 9] = [
        Check::StageCapacity,
        Check::LoadsMatchIvs,
        Check::RegionQuota,
        Check::IvsRate,
        Check::StagesKnown,
        Check::SeatsAcrossRestart,
        Check::ViewerAnswered,
        Check::ParticipantHours,
        Check::PoolConsistency,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Check::StageCapacity => "stage_capacity",
            Check::LoadsMatchIvs => "loads_match_ivs",
            Check::RegionQuota => "region_quota",
            Check::IvsRate => "ivs_rate",
            Check::StagesKnown => "stages_known",
            Check::SeatsAcrossRestart => "seats_across_restart",
            Check::ViewerAnswered => "viewer_answered",
            Check::ParticipantHours => "participant_hours",
            Check::PoolConsistency => "pool_consistency",
        }
    }
}

/// The first time a check broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The event number.
    pub step: u64,
    /// Virtual time from the start.
    pub at_ms: Millis,
    /// The run's seed.
    pub seed: u64,
    /// What was seen.
    pub detail: String,
}

/// Violations of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    first: BTreeMap<Check, Violation>,
    counts: BTreeMap<Check, u64>,
}

impl Checks {
    /// Records a violation.
    pub fn violate(&mut self, check: Check, step: u64, at_ms: Millis, seed: u64, detail: String) {
        *self.counts.entry(check).or_default() += 1;
        self.first.entry(check).or_insert(Violation {
            step,
            at_ms,
            seed,
            detail,
        });
    }

    /// Violations in all.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// How often `check` broke.
    pub fn count(&self, check: Check) -> u64 {
        self.counts.get(&check).copied().unwrap_or(0)
    }

    /// The first violation of `check`.
    pub fn first(&self, check: Check) -> Option<&Violation> {
        self.first.get(&check)
    }

    /// One line per check.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in Check::ALL {
            match self.first.get(&c) {
                None => {
                    let _ = writeln!(out, "  {:<21} ok", c.name());
                }
                Some(v) => {
                    let _ = writeln!(
                        out,
                        "  {:<21} BROKEN {} times; first at step {} (t={:.3} s, seed {}): {}",
                        c.name(),
                        self.count(c),
                        v.step,
                        v.at_ms as f64 / 1000.0,
                        v.seed,
                        v.detail
                    );
                }
            }
        }
        out
    }
}
