//! The pools as their admin snapshots show them.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use stagefan_core::pool::{Snapshot, StageState, Stats};

use super::{register, stage_label};

/// Every state, for `stagefan_stages{state}` (all are exported, zeros included).
const STATES: [StageState; 5] = [
    StageState::Creating,
    StageState::Warming,
    StageState::Live,
    StageState::Draining,
    StageState::Deleted,
];

/// Counters the pool keeps (cumulative) and the monitor mirrors as Prometheus counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PoolCounter {
    Joins,
    Reconnects,
    Refusals,
    Leaves,
    LeaseExpiries,
    Evictions,
    ViewerSeconds,
    StagesCreated,
    StagesDeleted,
    CreateFailures,
}

impl PoolCounter {
    const ALL: [PoolCounter; 10] = [
        PoolCounter::Joins,
        PoolCounter::Reconnects,
        PoolCounter::Refusals,
        PoolCounter::Leaves,
        PoolCounter::LeaseExpiries,
        PoolCounter::Evictions,
        PoolCounter::ViewerSeconds,
        PoolCounter::StagesCreated,
        PoolCounter::StagesDeleted,
        PoolCounter::CreateFailures,
    ];

    fn value(self, s: &Stats) -> u64 {
        match self {
            PoolCounter::Joins => s.joins,
            PoolCounter::Reconnects => s.reconnects,
            PoolCounter::Refusals => s.refusals,
            PoolCounter::Leaves => s.leaves,
            PoolCounter::LeaseExpiries => s.lease_expiries,
            PoolCounter::Evictions => s.evictions,
            PoolCounter::ViewerSeconds => s.viewer_seconds,
            PoolCounter::StagesCreated => s.stages_created,
            PoolCounter::StagesDeleted => s.stages_deleted,
            PoolCounter::CreateFailures => s.create_failures,
        }
    }
}

/// The pools as their admin snapshots show them.
pub struct PoolMetrics {
    stages: IntGaugeVec,
    stage_viewers: IntGaugeVec,
    stage_capacity: IntGaugeVec,
    stage_fill: GaugeVec,
    broadcast_viewers: IntGaugeVec,
    broadcast_capacity: IntGaugeVec,
    broadcast_fill: GaugeVec,
    peak_viewers: IntGaugeVec,
    broadcasts: IntGauge,
    counters: HashMap<PoolCounter, IntCounterVec>,
    /// The cost meter: participant-seconds by broadcast, fan-out mode and kind.
    participant_seconds: IntCounterVec,
    participants: IntGaugeVec,
    cost_usd: GaugeVec,
    cost_usd_per_hour: GaugeVec,
    /// Last participant-seconds of each (broadcast, kind), as `last` for the pool counters.
    last_meter: Mutex<HashMap<(String, String, &'static str), u64>>,
    /// Last value of each pool counter, per broadcast, to turn the pool's cumulative counts
    /// into counter increments.
    last: Mutex<HashMap<(String, String, PoolCounter), u64>>,
}

impl PoolMetrics {
    /// Registers the pool series.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let counter_defs: [(PoolCounter, &str, &str); 10] = [
            (
                PoolCounter::Joins,
                "joins_total",
                "Viewers given a seat (assignments), per broadcast.",
            ),
            (
                PoolCounter::Reconnects,
                "reconnects_total",
                "Viewers with a live lease who asked again and kept their seat.",
            ),
            (
                PoolCounter::Refusals,
                "refusals_total",
                "Viewers refused for want of a seat (503 no_capacity).",
            ),
            (
                PoolCounter::Leaves,
                "leaves_total",
                "Leases given back by viewers.",
            ),
            (
                PoolCounter::LeaseExpiries,
                "lease_expiries_total",
                "Leases that lapsed without a heartbeat.",
            ),
            (
                PoolCounter::Evictions,
                "lease_evictions_total",
                "Leases dropped because their stage was deleted.",
            ),
            (
                PoolCounter::ViewerSeconds,
                "viewer_seconds_total",
                "Viewer-seconds watched, integrated by the pool.",
            ),
            (
                PoolCounter::StagesCreated,
                "stages_created_total",
                "Stages IVS confirmed as created for the broadcast (stages used).",
            ),
            (
                PoolCounter::StagesDeleted,
                "stages_deleted_total",
                "Stages of the broadcast deleted.",
            ),
            (
                PoolCounter::CreateFailures,
                "stage_create_failures_total",
                "CreateStage intents that failed.",
            ),
        ];
        let mut counters = HashMap::new();
        for (kind, name, help) in counter_defs {
            let c = register(
                r,
                IntCounterVec::new(Opts::new(name, help), &["broadcast", "region"])?,
            )?;
            counters.insert(kind, c);
        }
        Ok(Self {
            stages: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "stages",
                        "Stages of a broadcast's pool in a region, by state.",
                    ),
                    &["broadcast", "region", "state"],
                )?,
            )?,
            stage_viewers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "stage_viewers",
                        "Seats taken on a stage, as the pool counts them.",
                    ),
                    &["broadcast", "region", "stage"],
                )?,
            )?,
            stage_capacity: register(
                r,
                IntGaugeVec::new(
                    Opts::new("stage_capacity", "Seats on a stage."),
                    &["broadcast", "region", "stage"],
                )?,
            )?,
            stage_fill: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "stage_fill_ratio",
                        "Seats taken over seats on a stage (0..1).",
                    ),
                    &["broadcast", "region", "stage"],
                )?,
            )?,
            broadcast_viewers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "broadcast_viewers",
                        "Viewers holding a seat, per broadcast.",
                    ),
                    &["broadcast", "region"],
                )?,
            )?,
            broadcast_capacity: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "broadcast_capacity",
                        "Seats on the broadcast's warming and live stages.",
                    ),
                    &["broadcast", "region"],
                )?,
            )?,
            broadcast_fill: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "broadcast_fill_ratio",
                        "Viewers over seats on warming and live stages (0..1).",
                    ),
                    &["broadcast", "region"],
                )?,
            )?,
            peak_viewers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "broadcast_peak_viewers",
                        "Highest number of concurrent viewers the broadcast has had.",
                    ),
                    &["broadcast", "region"],
                )?,
            )?,
            broadcasts: register(
                r,
                IntGauge::new("broadcasts", "Broadcasts (pools) the edge knows.")?,
            )?,
            counters,
            last: Mutex::new(HashMap::new()),
            participant_seconds: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "participant_seconds_total",
                        "Participant-seconds IVS bills, as the pool meters them: kind viewer \
                         (seats), host (the host on each stage it publishes to), replica \
                         (replicate mode).",
                    ),
                    &["broadcast", "region", "fanout", "kind"],
                )?,
            )?,
            participants: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "broadcast_participants",
                        "Participants of the broadcast now, by kind (viewer, host, replica).",
                    ),
                    &["broadcast", "region", "kind"],
                )?,
            )?,
            cost_usd: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "broadcast_cost_usd",
                        "Estimated IVS cost of the broadcast so far, USD, at the configured \
                         price table (IVS_PARTICIPANT_HOUR_PRICES): an estimate, not a bill.",
                    ),
                    &["broadcast", "region"],
                )?,
            )?,
            cost_usd_per_hour: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "broadcast_cost_usd_per_hour",
                        "Estimated IVS cost of an hour at the broadcast's participants now, USD.",
                    ),
                    &["broadcast", "region"],
                )?,
            )?,
            last_meter: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the per-pool gauges with what `snapshots` show and advances the counters.
    /// Called once per round with every snapshot that could be read, each with the region
    /// of its pool (a broadcast has a pool per region: its series carry `region`); the pools
    /// whose snapshot could not be read keep their previous gauges (`kept`: broadcast,
    /// region).
    pub fn observe(
        &self,
        snapshots: &[(&str, &Snapshot)],
        kept: &[(String, String)],
        total_broadcasts: usize,
    ) {
        self.broadcasts.set(total_broadcasts as i64);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for &(region, s) in snapshots {
            let b = s.broadcast.as_str();
            let mut by_state: HashMap<StageState, i64> = HashMap::new();
            let mut seats: i64 = 0;
            for st in &s.stages {
                *by_state.entry(st.state).or_default() += 1;
                if matches!(st.state, StageState::Warming | StageState::Live) {
                    seats += i64::from(st.capacity);
                }
                if st.state == StageState::Deleted {
                    continue;
                }
                let Some(arn) = st.stage_arn.as_deref() else {
                    continue;
                };
                let stage = stage_label(arn);
                self.stage_viewers
                    .with_label_values(&[b, region, stage])
                    .set(i64::from(st.load));
                self.stage_capacity
                    .with_label_values(&[b, region, stage])
                    .set(i64::from(st.capacity));
                self.stage_fill
                    .with_label_values(&[b, region, stage])
                    .set(ratio(u64::from(st.load), u64::from(st.capacity)));
            }
            for state in STATES {
                self.stages
                    .with_label_values(&[b, region, state.as_str()])
                    .set(by_state.get(&state).copied().unwrap_or(0));
            }
            let pool = [b, region];
            self.broadcast_viewers
                .with_label_values(&pool)
                .set(i64::from(s.viewers));
            self.broadcast_capacity.with_label_values(&pool).set(seats);
            self.broadcast_fill
                .with_label_values(&pool)
                .set(ratio(u64::from(s.viewers), seats.max(0) as u64));
            self.peak_viewers
                .with_label_values(&pool)
                .set(i64::try_from(s.stats.peak_viewers).unwrap_or(i64::MAX));
            for kind in PoolCounter::ALL {
                let counter = self.counters[&kind].with_label_values(&pool);
                let now = kind.value(&s.stats);
                let prev = last
                    .entry((b.to_string(), region.to_string(), kind))
                    .or_insert(0);
                advance_counter(&counter, prev, now);
            }
        }
        drop(last);
        self.observe_meters(snapshots);
        // Stages and pools come and go: drop the series no pool shows any more (after the
        // new values are set, so a scrape never sees a gap). Pools whose snapshot could not
        // be read keep their last values.
        let fresh: HashSet<(&str, &str, &str)> = snapshots
            .iter()
            .flat_map(|&(region, s)| {
                s.stages
                    .iter()
                    .filter(|st| st.state != StageState::Deleted)
                    .filter_map(move |st| {
                        Some((
                            s.broadcast.as_str(),
                            region,
                            stage_label(st.stage_arn.as_deref()?),
                        ))
                    })
            })
            .collect();
        let read: HashSet<(&str, &str)> = snapshots
            .iter()
            .map(|&(region, s)| (s.broadcast.as_str(), region))
            .collect();
        let label = |labels: &HashMap<&str, &str>, name: &str| -> String {
            labels.get(name).copied().unwrap_or("").to_string()
        };
        let is_kept = |b: &str, r: &str| kept.iter().any(|(kb, kr)| kb == b && kr == r);
        let keep_stage = |labels: &HashMap<&str, &str>| {
            let (b, r, st) = (
                label(labels, "broadcast"),
                label(labels, "region"),
                label(labels, "stage"),
            );
            is_kept(&b, &r) || fresh.contains(&(b.as_str(), r.as_str(), st.as_str()))
        };
        let keep_pool = |labels: &HashMap<&str, &str>| {
            let (b, r) = (label(labels, "broadcast"), label(labels, "region"));
            is_kept(&b, &r) || read.contains(&(b.as_str(), r.as_str()))
        };
        const STAGE: &[&str] = &["broadcast", "region", "stage"];
        const POOL: &[&str] = &["broadcast", "region"];
        for vec in [&self.stage_viewers, &self.stage_capacity] {
            retain(vec, STAGE, &keep_stage);
        }
        retain(&self.stage_fill, STAGE, &keep_stage);
        retain(&self.stages, &["broadcast", "region", "state"], &keep_pool);
        for vec in [
            &self.broadcast_viewers,
            &self.broadcast_capacity,
            &self.peak_viewers,
        ] {
            retain(vec, POOL, &keep_pool);
        }
        retain(&self.broadcast_fill, POOL, &keep_pool);
        retain(
            &self.participants,
            &["broadcast", "region", "kind"],
            &keep_pool,
        );
        for vec in [&self.cost_usd, &self.cost_usd_per_hour] {
            retain(vec, POOL, &keep_pool);
        }
    }

    /// The cost meter's series of each snapshot.
    fn observe_meters(&self, snapshots: &[(&str, &Snapshot)]) {
        let mut last = self.last_meter.lock().unwrap_or_else(|e| e.into_inner());
        for &(region, s) in snapshots {
            let b = s.broadcast.as_str();
            let m = &s.meter;
            let kinds = [
                ("viewer", m.participant_ms.viewers, m.participants.viewers),
                ("host", m.participant_ms.hosts, m.participants.hosts),
                (
                    "replica",
                    m.participant_ms.replicas,
                    m.participants.replicas,
                ),
            ];
            for (kind, ms, now) in kinds {
                let counter = self.participant_seconds.with_label_values(&[
                    b,
                    region,
                    s.fanout_mode.as_str(),
                    kind,
                ]);
                let prev = last
                    .entry((b.to_string(), region.to_string(), kind))
                    .or_insert(0);
                advance_counter(&counter, prev, ms / 1000);
                self.participants
                    .with_label_values(&[b, region, kind])
                    .set(i64::try_from(now).unwrap_or(i64::MAX));
            }
            self.cost_usd
                .with_label_values(&[b, region])
                .set(m.cost_micro_usd as f64 / 1e6);
            self.cost_usd_per_hour
                .with_label_values(&[b, region])
                .set(m.cost_micro_usd_per_hour as f64 / 1e6);
        }
    }
}

/// Moves a Prometheus counter to a cumulative value read elsewhere. A value that went
/// down (the pool was recreated) restarts the counter, which Prometheus reads as a reset.
pub(super) fn advance_counter(counter: &IntCounter, prev: &mut u64, now: u64) {
    if now >= *prev {
        counter.inc_by(now - *prev);
    } else {
        counter.reset();
        counter.inc_by(now);
    }
    *prev = now;
}

pub(super) fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Removes the series of a vector (integer or float gauges) whose labels `keep` rejects.
fn retain<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    names: &[&str],
    keep: &dyn Fn(&HashMap<&str, &str>) -> bool,
) {
    use prometheus::core::Collector;
    for mf in vec.collect() {
        for m in mf.get_metric() {
            let labels: HashMap<&str, &str> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if !keep(&labels) {
                let values: Vec<&str> = names
                    .iter()
                    .map(|n| labels.get(n).copied().unwrap_or(""))
                    .collect();
                let _ = vec.remove_label_values(&values);
            }
        }
    }
}
