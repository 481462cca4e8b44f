//! Prometheus metrics, one struct per subsystem, each with `register()`.
//!
//! Every name carries the `stagefan_` prefix (set once on the registry), base units
//! (seconds, ratios) and `_total` on counters. Label values come from typed enums
//! ([`Operation`], [`ActionKind`], [`Outcome`], [`StageState`]) so a typo cannot split a series.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use stagefan_core::pool::{Snapshot, StageState, Stats};

use stagefan_core::ivs::Operation;

/// Prefix of every series.
pub const PREFIX: &str = "stagefan";

/// Every state, for `stagefan_stages{state}` (all are exported, zeros included).
const STATES: [StageState; 5] = [
    StageState::Creating,
    StageState::Warming,
    StageState::Live,
    StageState::Draining,
    StageState::Deleted,
];

/// All of the monitor's metrics and the registry that holds them.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// What the pools report (admin snapshots).
    pub pool: PoolMetrics,
    /// Calls to IVS and the budget.
    pub ivs: IvsMetrics,
    /// Calls to the edge's admin API.
    pub edge: EdgeMetrics,
    /// Scaling actions and orphan collection.
    pub actions: ActionMetrics,
    /// IVS's view of the stages, and its drift from the pools.
    pub observed: ObservedMetrics,
    /// The poll loop itself.
    pub rounds: RoundMetrics,
}

impl Metrics {
    /// A fresh registry with every subsystem registered.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some(PREFIX.to_string()), None)?;
        Ok(Self {
            pool: PoolMetrics::register(&registry)?,
            ivs: IvsMetrics::register(&registry)?,
            edge: EdgeMetrics::register(&registry)?,
            actions: ActionMetrics::register(&registry)?,
            observed: ObservedMetrics::register(&registry)?,
            rounds: RoundMetrics::register(&registry)?,
            registry,
        })
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let families = self.registry.gather();
        // Encoding gathered families into a String cannot fail on well-formed families;
        // an error here would be a bug in a metric's definition, so it is logged, not hidden.
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "encoding metrics failed");
                String::new()
            })
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> Result<C, prometheus::Error> {
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

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
    /// Last value of each pool counter, per broadcast, to turn the pool's cumulative counts
    /// into counter increments.
    last: Mutex<HashMap<(String, PoolCounter), u64>>,
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
                IntCounterVec::new(Opts::new(name, help), &["broadcast"])?,
            )?;
            counters.insert(kind, c);
        }
        Ok(Self {
            stages: register(
                r,
                IntGaugeVec::new(
                    Opts::new("stages", "Stages of a broadcast's pool, by state."),
                    &["broadcast", "state"],
                )?,
            )?,
            stage_viewers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "stage_viewers",
                        "Seats taken on a stage, as the pool counts them.",
                    ),
                    &["broadcast", "stage"],
                )?,
            )?,
            stage_capacity: register(
                r,
                IntGaugeVec::new(
                    Opts::new("stage_capacity", "Seats on a stage."),
                    &["broadcast", "stage"],
                )?,
            )?,
            stage_fill: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "stage_fill_ratio",
                        "Seats taken over seats on a stage (0..1).",
                    ),
                    &["broadcast", "stage"],
                )?,
            )?,
            broadcast_viewers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "broadcast_viewers",
                        "Viewers holding a seat, per broadcast.",
                    ),
                    &["broadcast"],
                )?,
            )?,
            broadcast_capacity: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "broadcast_capacity",
                        "Seats on the broadcast's warming and live stages.",
                    ),
                    &["broadcast"],
                )?,
            )?,
            broadcast_fill: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "broadcast_fill_ratio",
                        "Viewers over seats on warming and live stages (0..1).",
                    ),
                    &["broadcast"],
                )?,
            )?,
            peak_viewers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "broadcast_peak_viewers",
                        "Highest number of concurrent viewers the broadcast has had.",
                    ),
                    &["broadcast"],
                )?,
            )?,
            broadcasts: register(
                r,
                IntGauge::new("broadcasts", "Broadcasts (pools) the edge knows.")?,
            )?,
            counters,
            last: Mutex::new(HashMap::new()),
        })
    }

    /// Replaces the per-pool gauges with what `snapshots` show and advances the counters.
    /// Called once per round with every snapshot that could be read; the broadcasts whose
    /// snapshot could not be read keep their previous gauges (`kept`).
    pub fn observe(&self, snapshots: &[Snapshot], kept: &[String], total_broadcasts: usize) {
        self.broadcasts.set(total_broadcasts as i64);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for s in snapshots {
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
                    .with_label_values(&[b, stage])
                    .set(i64::from(st.load));
                self.stage_capacity
                    .with_label_values(&[b, stage])
                    .set(i64::from(st.capacity));
                self.stage_fill
                    .with_label_values(&[b, stage])
                    .set(ratio(u64::from(st.load), u64::from(st.capacity)));
            }
            for state in STATES {
                self.stages
                    .with_label_values(&[b, state.as_str()])
                    .set(by_state.get(&state).copied().unwrap_or(0));
            }
            self.broadcast_viewers
                .with_label_values(&[b])
                .set(i64::from(s.viewers));
            self.broadcast_capacity.with_label_values(&[b]).set(seats);
            self.broadcast_fill
                .with_label_values(&[b])
                .set(ratio(u64::from(s.viewers), seats.max(0) as u64));
            self.peak_viewers
                .with_label_values(&[b])
                .set(i64::try_from(s.stats.peak_viewers).unwrap_or(i64::MAX));
            for kind in PoolCounter::ALL {
                let counter = self.counters[&kind].with_label_values(&[b]);
                let now = kind.value(&s.stats);
                let prev = last.entry((b.to_string(), kind)).or_insert(0);
                advance_counter(&counter, prev, now);
            }
        }
        drop(last);
        // Stages and broadcasts come and go: drop the series no pool shows any more (after the
        // new values are set, so a scrape never sees a gap). Broadcasts whose snapshot could
        // not be read keep their last values.
        let fresh: HashSet<(&str, &str)> = snapshots
            .iter()
            .flat_map(|s| {
                s.stages
                    .iter()
                    .filter(|st| st.state != StageState::Deleted)
                    .filter_map(move |st| {
                        Some((s.broadcast.as_str(), stage_label(st.stage_arn.as_deref()?)))
                    })
            })
            .collect();
        let read: HashSet<&str> = snapshots.iter().map(|s| s.broadcast.as_str()).collect();
        let keep_stage = |labels: &HashMap<&str, &str>| {
            let b = labels.get("broadcast").copied().unwrap_or("");
            let st = labels.get("stage").copied().unwrap_or("");
            kept.iter().any(|k| k == b) || fresh.contains(&(b, st))
        };
        let keep_broadcast = |labels: &HashMap<&str, &str>| {
            let b = labels.get("broadcast").copied().unwrap_or("");
            kept.iter().any(|k| k == b) || read.contains(b)
        };
        for vec in [&self.stage_viewers, &self.stage_capacity] {
            retain(vec, &["broadcast", "stage"], &keep_stage);
        }
        retain(&self.stage_fill, &["broadcast", "stage"], &keep_stage);
        retain(&self.stages, &["broadcast", "state"], &keep_broadcast);
        for vec in [
            &self.broadcast_viewers,
            &self.broadcast_capacity,
            &self.peak_viewers,
        ] {
            retain(vec, &["broadcast"], &keep_broadcast);
        }
        retain(&self.broadcast_fill, &["broadcast"], &keep_broadcast);
    }
}

/// Moves a Prometheus counter to a cumulative value read elsewhere. A value that went
/// down (the pool was recreated) restarts the counter, which Prometheus reads as a reset.
fn advance_counter(counter: &IntCounter, prev: &mut u64, now: u64) {
    if now >= *prev {
        counter.inc_by(now - *prev);
    } else {
        counter.reset();
        counter.inc_by(now);
    }
    *prev = now;
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The stage label: the ARN's last part (the stage id), short and unique per account.
pub fn stage_label(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
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

/// Calls to IVS, and the budget they are made within.
pub struct IvsMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    budget_rate: GaugeVec,
    budget_tokens: GaugeVec,
    backoff: GaugeVec,
    over_budget: IntCounterVec,
}

impl IvsMetrics {
    /// Registers the IVS series.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "ivs_requests_total",
                        "IVS API calls, by operation and HTTP status (\"error\" when no answer came).",
                    ),
                    &["operation", "status"],
                )?,
            )?,
            duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "ivs_request_duration_seconds",
                        "Latency of IVS API calls, by operation.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
                    &["operation"],
                )?,
            )?,
            budget_rate: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "ivs_budget_requests_per_second",
                        "The monitor's configured IVS call budget, per operation.",
                    ),
                    &["operation"],
                )?,
            )?,
            budget_tokens: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "ivs_budget_tokens",
                        "Calls the token bucket would allow right now, per operation.",
                    ),
                    &["operation"],
                )?,
            )?,
            backoff: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "ivs_backoff_seconds",
                        "Current pause after throttling or a server error, per operation.",
                    ),
                    &["operation"],
                )?,
            )?,
            over_budget: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "ivs_deferred_calls_total",
                        "Calls put off to a later round because the budget had no room before the round's end.",
                    ),
                    &["operation"],
                )?,
            )?,
        })
    }

    /// Counts one call and its latency.
    pub fn observe_call(&self, op: Operation, status: &str, seconds: f64) {
        self.requests.with_label_values(&[op.name(), status]).inc();
        self.duration
            .with_label_values(&[op.name()])
            .observe(seconds);
    }

    /// Publishes the budget's configured rate.
    pub fn set_budget_rate(&self, op: Operation, rate: f64) {
        self.budget_rate.with_label_values(&[op.name()]).set(rate);
    }

    /// Publishes the tokens left and the backoff in force.
    pub fn set_budget_state(&self, op: Operation, tokens: f64, backoff_seconds: f64) {
        self.budget_tokens
            .with_label_values(&[op.name()])
            .set(tokens);
        self.backoff
            .with_label_values(&[op.name()])
            .set(backoff_seconds);
    }

    /// Counts a call deferred to the next round.
    pub fn deferred(&self, op: Operation) {
        self.over_budget.with_label_values(&[op.name()]).inc();
    }
}

/// Calls to the edge's admin API.
pub struct EdgeMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl EdgeMetrics {
    /// Registers the edge series.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            requests: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "edge_requests_total",
                        "Calls to the edge's admin API, by route and HTTP status (\"error\" when no answer came).",
                    ),
                    &["route", "status"],
                )?,
            )?,
            duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "edge_request_duration_seconds",
                        "Latency of calls to the edge's admin API, by route.",
                    )
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                    &["route"],
                )?,
            )?,
        })
    }

    /// Counts one call and its latency.
    pub fn observe_call(&self, route: &str, status: &str, seconds: f64) {
        self.requests.with_label_values(&[route, status]).inc();
        self.duration.with_label_values(&[route]).observe(seconds);
    }
}

/// What a scaling action was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// Stop placing viewers on a stage (asked of the pool).
    Drain,
    /// Delete an empty draining stage (asked of the pool).
    Delete,
    /// Create a stage ahead of need (asked of the pool).
    Create,
    /// Delete a stagefan-tagged stage no pool knows (`DeleteStage` on IVS).
    OrphanDelete,
}

impl ActionKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Drain => "drain",
            ActionKind::Delete => "delete",
            ActionKind::Create => "create",
            ActionKind::OrphanDelete => "orphan_delete",
        }
    }
}

/// How a scaling action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Carried out.
    Done,
    /// The pool said no (its rules won over the monitor's view).
    Refused,
    /// The call failed (network, 5xx, throttled).
    Error,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

/// Scaling actions and orphan collection.
pub struct ActionMetrics {
    actions: IntCounterVec,
    orphans: IntGauge,
}

impl ActionMetrics {
    /// Registers the action series.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let actions = register(
            r,
            IntCounterVec::new(
                Opts::new(
                    "scaling_actions_total",
                    "Scaling actions the monitor carried out or asked for, by kind and outcome.",
                ),
                &["kind", "outcome"],
            )?,
        )?;
        // Pre-create the series so that rates are defined before the first action.
        for kind in [
            ActionKind::Drain,
            ActionKind::Delete,
            ActionKind::Create,
            ActionKind::OrphanDelete,
        ] {
            for outcome in [Outcome::Done, Outcome::Refused, Outcome::Error] {
                actions.with_label_values(&[kind.as_str(), outcome.as_str()]);
            }
        }
        Ok(Self {
            actions,
            orphans: register(
                r,
                IntGauge::new(
                    "orphan_stages",
                    "stagefan-tagged stages in IVS that no pool knows (in their grace period or awaiting deletion).",
                )?,
            )?,
        })
    }

    /// Counts one action.
    pub fn action(&self, kind: ActionKind, outcome: Outcome) {
        self.actions
            .with_label_values(&[kind.as_str(), outcome.as_str()])
            .inc();
    }

    /// How many orphans are known.
    pub fn set_orphans(&self, n: usize) {
        self.orphans.set(n as i64);
    }

    /// The count of one kind and outcome (for tests and logs).
    pub fn count(&self, kind: ActionKind, outcome: Outcome) -> u64 {
        self.actions
            .with_label_values(&[kind.as_str(), outcome.as_str()])
            .get()
    }
}

/// IVS's view of the pools' stages and how it differs from the pools' counts.
pub struct ObservedMetrics {
    publishers: IntGaugeVec,
    subscribers: IntGaugeVec,
    drift: IntGaugeVec,
    drifting: IntGaugeVec,
    samples: IntCounter,
    ivs_stages: IntGauge,
    coverage_age: Gauge,
}

impl ObservedMetrics {
    /// Registers the observation series.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            publishers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "ivs_stage_publishers",
                        "Connected publishing participants IVS lists on a stage (last sample).",
                    ),
                    &["broadcast", "stage"],
                )?,
            )?,
            subscribers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "ivs_stage_subscribers",
                        "Connected non-publishing participants IVS lists on a stage (last sample).",
                    ),
                    &["broadcast", "stage"],
                )?,
            )?,
            drift: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "stage_drift_viewers",
                        "IVS's subscriber count minus the pool's seat count for a stage, as the pool reported it for the last observation.",
                    ),
                    &["broadcast", "stage"],
                )?,
            )?,
            drifting: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "drifting_stages",
                        "Stages whose last observation differed from the pool's count, per broadcast.",
                    ),
                    &["broadcast"],
                )?,
            )?,
            samples: register(
                r,
                IntCounter::new(
                    "ivs_stage_samples_total",
                    "Stages sampled in IVS (GetStage plus ListParticipants).",
                )?,
            )?,
            ivs_stages: register(
                r,
                IntGauge::new(
                    "ivs_stages",
                    "Stages in IVS at the last complete ListStages pass.",
                )?,
            )?,
            coverage_age: register(
                r,
                Gauge::new(
                    "ivs_sample_oldest_age_seconds",
                    "Age of the oldest sample among the pools' stages: how long a full round-robin pass takes.",
                )?,
            )?,
        })
    }

    /// Records one stage sample.
    pub fn sampled(&self, broadcast: &str, arn: &str, publishers: usize, subscribers: usize) {
        let stage = stage_label(arn);
        self.samples.inc();
        self.publishers
            .with_label_values(&[broadcast, stage])
            .set(publishers as i64);
        self.subscribers
            .with_label_values(&[broadcast, stage])
            .set(subscribers as i64);
    }

    /// Records the drift the pool reported for one stage.
    pub fn set_drift(&self, broadcast: &str, arn: &str, ivs_minus_pool: i64) {
        self.drift
            .with_label_values(&[broadcast, stage_label(arn)])
            .set(ivs_minus_pool);
    }

    /// Publishes the number of drifting stages of a broadcast.
    pub fn set_drifting(&self, broadcast: &str, n: usize) {
        self.drifting.with_label_values(&[broadcast]).set(n as i64);
    }

    /// Forgets a stage that left every pool.
    pub fn forget(&self, broadcast: &str, arn: &str) {
        let stage = stage_label(arn);
        let _ = self.publishers.remove_label_values(&[broadcast, stage]);
        let _ = self.subscribers.remove_label_values(&[broadcast, stage]);
        let _ = self.drift.remove_label_values(&[broadcast, stage]);
    }

    /// Publishes the size of the last complete listing.
    pub fn set_ivs_stages(&self, n: usize) {
        self.ivs_stages.set(n as i64);
    }

    /// Publishes how old the oldest sample is.
    pub fn set_oldest_sample_age(&self, seconds: f64) {
        self.coverage_age.set(seconds);
    }
}

/// The poll loop.
pub struct RoundMetrics {
    rounds: IntCounterVec,
    duration: Gauge,
    success: IntGauge,
    last_success: Gauge,
}

impl RoundMetrics {
    /// Registers the round series.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            rounds: register(
                r,
                IntCounterVec::new(
                    Opts::new("rounds_total", "Poll rounds, by outcome (ok, failed)."),
                    &["outcome"],
                )?,
            )?,
            duration: register(
                r,
                Gauge::new("round_duration_seconds", "Duration of the last poll round.")?,
            )?,
            success: register(
                r,
                IntGauge::new(
                    "round_success",
                    "1 if the last poll round read every pool, 0 if it did not.",
                )?,
            )?,
            last_success: register(
                r,
                Gauge::new(
                    "round_last_success_timestamp_seconds",
                    "Unix time of the end of the last successful round.",
                )?,
            )?,
        })
    }

    /// Records the end of a round.
    pub fn finished(&self, ok: bool, seconds: f64, unix_now: f64) {
        self.rounds
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
        self.duration.set(seconds);
        self.success.set(i64::from(ok));
        if ok {
            self.last_success.set(unix_now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_counter_is_mirrored_by_differences_and_a_recreated_pool_resets_it() {
        let c = IntCounter::new("c_total", "c").unwrap();
        let mut prev = 0;
        advance_counter(&c, &mut prev, 7);
        assert_eq!(c.get(), 7);
        advance_counter(&c, &mut prev, 7);
        advance_counter(&c, &mut prev, 12);
        assert_eq!(c.get(), 12);
        // The pool was recreated and counts from zero again.
        advance_counter(&c, &mut prev, 3);
        assert_eq!(c.get(), 3);
        assert_eq!(prev, 3);
    }

    #[test]
    fn stage_labels_are_the_stage_id() {
        assert_eq!(
            stage_label("arn:aws:ivs:us-east-1:123456789012:stage/AbCdEfGhIjKl"),
            "AbCdEfGhIjKl"
        );
        assert_eq!(stage_label("no-slash"), "no-slash");
        assert_eq!(ratio(3, 0), 0.0);
        assert_eq!(ratio(25, 50), 0.5);
    }

    #[test]
    fn every_family_has_help_and_the_prefix() {
        let m = Metrics::new().unwrap();
        m.rounds.finished(true, 0.1, 1.0);
        m.actions.set_orphans(0);
        let text = m.encode();
        let mut families = 0;
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            families += 1;
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(name.starts_with("stagefan_"), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has HELP");
            if line.ends_with(" counter") {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
        assert!(families >= 5);
    }
}
