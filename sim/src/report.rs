//! A run's report: seats per second and time to seat in virtual time, stages over time per
//! region, refusals by reason, IVS calls by operation, participant-hours and their cost, and
//! the invariants. Rendered as plain text, deterministically (same run, same bytes).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use stagefan_core::ivs::Operation;
use stagefan_core::pool::Stats;
use stagefan_core::time::Millis;

use crate::checks::Checks;
use crate::ivs::{IvsRegion, Outcome};
use crate::scenario::Scenario;

/// The price of a participant-hour the report uses unless `--price` says otherwise: the cost
/// meter's default (`stagefan_core::meter`, `IVS_PARTICIPANT_HOUR_PRICES`), an estimate;
/// ivs-facts.md §7 marks IVS's real-time rates UNCONFIRMED.
pub fn default_price() -> f64 {
    stagefan_core::meter::Prices::default().viewer as f64 / 1e6
}
/// Free participant-hours per month in IVS's free tier (first 12 months), ivs-facts.md §7.
pub const FREE_TIER_HOURS: f64 = 20.0;

/// Stages of one region at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Virtual time from the start.
    pub at: Millis,
    /// The region's index.
    pub region: u8,
    /// Live stages.
    pub live: u32,
    /// Warming stages.
    pub warming: u32,
    /// Stages being created.
    pub creating: u32,
    /// Draining stages.
    pub draining: u32,
    /// Seated viewers.
    pub viewers: u32,
    /// Stages IVS holds.
    pub ivs_stages: u32,
}

/// What one region did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionReport {
    name: &'static str,
    calls: BTreeMap<(Operation, Outcome), u64>,
    peak_subscriptions: u64,
    peak_stages: usize,
    quota_subscriptions: u32,
    quota_stages: u32,
    subscriber_ms: u128,
    publisher_ms: u128,
    stats: Stats,
    restarts: u64,
}

/// A run's report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    scenario: String,
    seed: u64,
    viewers: u32,
    capacity: u32,
    max_stages: u32,
    regions_spec: Vec<&'static str>,
    arrival_ms: Millis,
    /// Viewers who arrived.
    pub arrived: u64,
    waits: Vec<u32>,
    seats_by_second: BTreeMap<u64, u32>,
    /// Refusals (and other answers without a seat) by reason.
    pub refusals: BTreeMap<&'static str, u64>,
    /// Viewers who gave up, by the last reason they were told.
    pub gave_up: BTreeMap<&'static str, u64>,
    /// Joins sent on to the next region for its quota.
    pub spills: u64,
    /// Viewers who needed a new seat (stage gone, lease lost).
    pub reseats: u64,
    /// Leases dropped with a stage gone from IVS.
    pub evicted: u64,
    /// Stages that vanished from IVS.
    pub vanished: u64,
    /// Durable Object restarts.
    pub restarts: u64,
    /// Stages created.
    pub stages_created: u64,
    /// Creates that failed.
    pub create_failures: u64,
    /// Stages drained by scale-down.
    pub drains: u64,
    /// Ledger calls.
    pub ledger_calls: u64,
    /// Calls sent, by region and operation.
    pub sent: BTreeMap<(u8, Operation), u64>,
    /// Stages over time.
    pub samples: Vec<Sample>,
    regions: Vec<RegionReport>,
    /// Seat-milliseconds the pools metered (the cost meter's viewer time, `Pool::meter`).
    pub metered_seat_ms: u128,
    /// Seat-milliseconds of the leases the viewers held (the model's side).
    pub model_seat_ms: u128,
    /// When the run stopped (virtual).
    pub ended_at: Millis,
    /// Viewers never seated.
    pub never_seated: u64,
    /// Hostile viewers.
    pub hostile: u64,
    /// Hostile viewers seated.
    pub hostile_seated: u64,
    /// Events processed.
    pub steps: u64,
    /// The invariants.
    pub checks: Checks,
    /// The price per participant-hour used.
    pub price: f64,
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

const HOUR_MS: f64 = 3_600_000.0;

impl Report {
    /// An empty report of `sc` run with `seed`.
    pub fn new(sc: &Scenario, seed: u64) -> Report {
        Report {
            scenario: sc.name.clone(),
            seed,
            viewers: sc.viewers,
            capacity: sc.pool.capacity,
            max_stages: sc.pool.max_stages,
            regions_spec: sc.regions.iter().map(|r| r.name).collect(),
            arrival_ms: sc.arrival_ms,
            arrived: 0,
            waits: Vec::with_capacity(sc.viewers as usize),
            seats_by_second: BTreeMap::new(),
            refusals: BTreeMap::new(),
            gave_up: BTreeMap::new(),
            spills: 0,
            reseats: 0,
            evicted: 0,
            vanished: 0,
            restarts: 0,
            stages_created: 0,
            create_failures: 0,
            drains: 0,
            ledger_calls: 0,
            sent: BTreeMap::new(),
            samples: Vec::new(),
            regions: Vec::new(),
            metered_seat_ms: 0,
            model_seat_ms: 0,
            ended_at: 0,
            never_seated: 0,
            hostile: 0,
            hostile_seated: 0,
            steps: 0,
            checks: Checks::default(),
            price: default_price(),
        }
    }

    /// A viewer's first seat at `at`, `waited` after it arrived.
    pub fn seated(&mut self, at: Millis, waited: Millis) {
        self.waits.push(waited.min(u64::from(u32::MAX)) as u32);
        *self.seats_by_second.entry(at / 1000).or_default() += 1;
    }

    /// What region `i` did.
    pub fn region(&mut self, _i: u8, ivs: &IvsRegion, stats: Stats, restarts: u64) {
        self.regions.push(RegionReport {
            name: ivs.name,
            calls: ivs.calls.clone(),
            peak_subscriptions: ivs.peak_subscriptions,
            peak_stages: ivs.peak_stages,
            quota_subscriptions: ivs.quotas.subscriptions,
            quota_stages: ivs.quotas.stages,
            subscriber_ms: ivs.participant_ms.0,
            publisher_ms: ivs.participant_ms.1,
            stats,
            restarts,
        });
    }

    /// Violations in all.
    pub fn violations(&self) -> u64 {
        self.checks.total()
    }

    /// Viewers seated at least once.
    pub fn seated_viewers(&self) -> u64 {
        self.waits.len() as u64
    }

    /// Time to seat at quantile `p` (milliseconds, virtual).
    pub fn time_to_seat(&self, p: f64) -> u32 {
        let mut w = self.waits.clone();
        w.sort_unstable();
        pct(&w, p)
    }

    /// The report as text; its last line is `sim: <viewers> viewers, <violations> violations`.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let w = &mut o;
        let _ = writeln!(
            w,
            "scenario: {} ({} viewers; regions {}; capacity {} seats per stage, at most {} stages per pool)",
            self.scenario,
            self.viewers,
            self.regions_spec.join(", "),
            self.capacity,
            self.max_stages
        );
        let _ = writeln!(w, "seed: {}", self.seed);
        let _ = writeln!(
            w,
            "virtual time: {:.1} s, {} events",
            self.ended_at as f64 / 1000.0,
            self.steps
        );

        let mut waits = self.waits.clone();
        waits.sort_unstable();
        let seated = waits.len() as u64;
        let _ = writeln!(w, "\nviewers");
        let _ = writeln!(
            w,
            "  arrived {}, seated {} ({:.2}%), never seated {} (of them hostile {}; hostile in all {}, seated {})",
            self.arrived,
            seated,
            100.0 * seated as f64 / self.arrived.max(1) as f64,
            self.never_seated,
            self.hostile - self.hostile_seated.min(self.hostile),
            self.hostile,
            self.hostile_seated
        );
        let peak = self.seats_by_second.values().max().copied().unwrap_or(0);
        let window_s = (self.arrival_ms / 1000).max(1);
        let in_window: u64 = self
            .seats_by_second
            .range(..window_s)
            .map(|(_, n)| u64::from(*n))
            .sum();
        let _ = writeln!(
            w,
            "  seats/s (first seats, virtual): mean {:.1} over the {} s of arrivals, peak {} in one second",
            in_window as f64 / window_s as f64,
            window_s,
            peak
        );
        let _ = writeln!(
            w,
            "  time to seat (arrival to first seat, virtual): p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            pct(&waits, 0.5),
            pct(&waits, 0.9),
            pct(&waits, 0.99),
            waits.last().copied().unwrap_or(0)
        );
        let _ = writeln!(
            w,
            "  re-seats {} (evicted with a vanished stage {}), sent to the next region {}",
            self.reseats, self.evicted, self.spills
        );
        let _ = writeln!(w, "  answers without a seat, by reason:");
        for (k, v) in &self.refusals {
            let _ = writeln!(w, "    {k:<18} {v}");
        }
        let _ = writeln!(w, "  gave up, by the last reason told:");
        for (k, v) in &self.gave_up {
            let _ = writeln!(w, "    {k:<18} {v}");
        }

        let _ = writeln!(
            w,
            "\nstages over time (live+warming / creating / draining; seated viewers)"
        );
        let mut header = String::from("  t(min)");
        for name in &self.regions_spec {
            let _ = write!(header, " | {name:>30}");
        }
        let _ = writeln!(w, "{header}");
        let mut by_time: BTreeMap<Millis, Vec<&Sample>> = BTreeMap::new();
        for s in &self.samples {
            by_time.entry(s.at).or_default().push(s);
        }
        for (t, ss) in &by_time {
            let mut line = format!("  {:>6.1}", *t as f64 / 60_000.0);
            for s in ss {
                let cell = format!(
                    "{} / {} / {}; {}",
                    s.live + s.warming,
                    s.creating,
                    s.draining,
                    s.viewers
                );
                let _ = write!(line, " | {cell:>30}");
            }
            let _ = writeln!(w, "{line}");
        }

        let _ = writeln!(
            w,
            "\nIVS calls by operation (sent by stagefan; outcomes at IVS)"
        );
        let _ = writeln!(
            w,
            "  {:<16} {:<16} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6}",
            "region", "operation", "sent", "ok", "429", "5xx", "lost", "404", "402"
        );
        for (i, reg) in self.regions.iter().enumerate() {
            let ops: std::collections::BTreeSet<Operation> =
                reg.calls.keys().map(|(op, _)| *op).collect();
            for op in ops {
                let n = |o: Outcome| reg.calls.get(&(op, o)).copied().unwrap_or(0);
                let sent = self.sent.get(&(i as u8, op)).copied().unwrap_or(0);
                let _ = writeln!(
                    w,
                    "  {:<16} {:<16} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6}",
                    reg.name,
                    format!("{op:?}"),
                    sent,
                    n(Outcome::Ok),
                    n(Outcome::Throttled),
                    n(Outcome::ServerError),
                    n(Outcome::Lost),
                    n(Outcome::NotFound),
                    n(Outcome::QuotaExceeded)
                );
            }
        }

        let _ = writeln!(w, "\nregions, quotas and the pools");
        for reg in &self.regions {
            let s = &reg.stats;
            let _ = writeln!(
                w,
                "  {}: peak {} subscriptions of {} ({:.0}%), peak {} stages of {}; pool: {} joins, {} reconnects, {} refusals, {} client refusals, {} leaves, {} lapsed, {} evicted, peak {} viewers; {} restarts",
                reg.name,
                reg.peak_subscriptions,
                reg.quota_subscriptions,
                100.0 * reg.peak_subscriptions as f64 / f64::from(reg.quota_subscriptions.max(1)),
                reg.peak_stages,
                reg.quota_stages,
                s.joins,
                s.reconnects,
                s.refusals,
                s.client_refusals,
                s.leaves,
                s.lease_expiries,
                s.evictions,
                s.peak_viewers,
                reg.restarts
            );
        }
        let _ = writeln!(
            w,
            "  stages created {}, creates failed {}, drained {}, ledger calls {}, restarts {}, stages vanished {}",
            self.stages_created,
            self.create_failures,
            self.drains,
            self.ledger_calls,
            self.restarts,
            self.vanished
        );

        let subs: u128 = self.regions.iter().map(|r| r.subscriber_ms).sum();
        let pubs: u128 = self.regions.iter().map(|r| r.publisher_ms).sum();
        let (sub_h, pub_h) = (subs as f64 / HOUR_MS, pubs as f64 / HOUR_MS);
        let metered_h = self.metered_seat_ms as f64 / HOUR_MS;
        let model_h = self.model_seat_ms as f64 / HOUR_MS;
        let packed_stage_ms: u128 = self.packed_stage_ms();
        let packed_h = packed_stage_ms as f64 / HOUR_MS;
        let _ = writeln!(w, "\nparticipant-hours and cost");
        let _ = writeln!(
            w,
            "  IVS (model): viewers {sub_h:.1} h, host {pub_h:.1} h (one publisher per stage), total {:.1} h",
            sub_h + pub_h
        );
        let _ = writeln!(
            w,
            "  seats: metered by the pools (the cost meter's viewer time) {metered_h:.3} h, held by the viewers (model) {model_h:.3} h; seats held by viewers already gone {:.1} h",
            (metered_h - sub_h).max(0.0)
        );
        let _ = writeln!(
            w,
            "  host publisher-hours if stages were packed full (ceil(viewers/capacity) at each sample): {packed_h:.1} h"
        );
        let _ = writeln!(
            w,
            "  price: {:.4} USD per participant-hour (the cost meter's default, an estimate: ivs-facts.md §7 marks IVS's rates UNCONFIRMED; --price sets another)",
            self.price
        );
        let cost = (sub_h + pub_h) * self.price;
        let _ = writeln!(
            w,
            "  estimated cost at {:.4}/h: viewers {:.2}, host {:.2}, total {:.2} USD (free tier: {} h/month); consolidation would save at most {:.2} USD of host publisher-hours",
            self.price,
            sub_h * self.price,
            pub_h * self.price,
            cost,
            FREE_TIER_HOURS,
            (pub_h - packed_h).max(0.0) * self.price
        );

        let _ = writeln!(w, "\ninvariants");
        let _ = write!(w, "{}", self.checks.render());
        let _ = writeln!(
            w,
            "sim: {} viewers, {} violations",
            self.arrived,
            self.violations()
        );
        o
    }

    /// Stage-milliseconds a fully packed pool would have used: `ceil(viewers / capacity)`
    /// stages between samples.
    fn packed_stage_ms(&self) -> u128 {
        let mut last: BTreeMap<u8, (Millis, u32)> = BTreeMap::new();
        let mut total: u128 = 0;
        for s in &self.samples {
            if let Some((t, viewers)) = last.get(&s.region) {
                let stages = viewers.div_ceil(self.capacity.max(1));
                total += u128::from(s.at - t) * u128::from(stages);
            }
            last.insert(s.region, (s.at, s.viewers));
        }
        total
    }
}
