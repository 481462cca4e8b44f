//! What a run simulates: the audience's curve, the regions and their quotas, the pool's
//! settings, IVS's error shapes and latencies, the host's life and the Durable Objects'
//! restarts. A few named presets; every knob is a field.

use stagefan_core::ledger::Quotas;
use stagefan_core::pool::{
    headroom_seats, PoolSettings, DEFAULT_HEADROOM, DEFAULT_MAX_SEATS_PER_CLIENT,
};
use stagefan_core::time::Millis;

/// One IVS region the broadcast fans out in: one pool of the broadcast, one ledger and one
/// budget of the region.
#[derive(Debug, Clone)]
pub struct RegionSpec {
    /// The region's name (`us-east-1`).
    pub name: &'static str,
    /// The share of viewers whose nearest region it is (weights, any scale).
    pub weight: u32,
    /// The account's quotas in the region (`IVS_QUOTA_*`).
    pub quotas: Quotas,
}

/// IVS's behaviour: latencies and error shapes.
#[derive(Debug, Clone)]
pub struct IvsFaults {
    /// One-way network latency to IVS: this many milliseconds at least ...
    pub latency_base_ms: u64,
    /// ... plus an exponential draw of this mean ...
    pub latency_mean_ms: f64,
    /// ... and this share of calls is ten times slower.
    pub slow_share: f64,
    /// Share of calls answered 500 without effect.
    pub server_error: f64,
    /// Share of calls whose effect happens but whose answer is lost (outcome unknown).
    pub answer_lost: f64,
    /// Mean time between stages that vanish from IVS (per region), 0: never.
    pub vanish_mean_ms: f64,
}

/// A scenario. See the presets in [`Scenario::named`].
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name (printed in the report).
    pub name: String,
    /// Viewers who arrive.
    pub viewers: u32,
    /// They arrive within this span ...
    pub arrival_ms: Millis,
    /// ... the rate rising linearly over this first share of it, then flat (a flash crowd).
    pub ramp_share: f64,
    /// Mean stay (exponential).
    pub stay_mean_ms: f64,
    /// Share of departures that say `leave`; the rest just vanish (their lease lapses).
    pub graceful_leave: f64,
    /// Chance that a viewer's connection blips once during its stay (it reconnects by lease).
    pub blip_chance: f64,
    /// Share of arrivals that are hostile: groups of `hostile_group` joins from one address.
    pub hostile_share: f64,
    /// Joins per hostile address.
    pub hostile_group: u32,
    /// Refusals after which a viewer gives up (it was told why each time).
    pub give_up_after: u32,
    /// The regions.
    pub regions: Vec<RegionSpec>,
    /// The pool's settings in every region.
    pub pool: PoolSettings,
    /// IVS's behaviour.
    pub ivs: IvsFaults,
    /// Mean time between restarts of one pool's Durable Object, 0: never.
    pub restart_mean_ms: f64,
    /// The host drops at these instants (from the start) for these spans.
    pub host_drops: Vec<(Millis, Millis)>,
    /// The host ends the broadcast at this instant.
    pub end_at: Millis,
    /// The run stops here at the latest.
    pub horizon_ms: Millis,
    /// The report samples stages this often.
    pub sample_ms: Millis,
}

fn quotas(subscriptions: u32, stages: u32) -> Quotas {
    Quotas {
        subscriptions,
        publishers: stages,
        stages,
    }
}

fn settings(capacity: u32, max_stages: u32) -> PoolSettings {
    PoolSettings {
        capacity,
        max_stages,
        headroom_seats: headroom_seats(capacity, DEFAULT_HEADROOM),
        // The worker's default (`MAX_SEATS_PER_CLIENT`), not the bare struct's 0.
        max_seats_per_client: DEFAULT_MAX_SEATS_PER_CLIENT,
        ..PoolSettings::default()
    }
}

const MIN: Millis = 60_000;

impl Scenario {
    /// The scenarios by name: `smoke` (a few thousand viewers, every fault, seconds in
    /// debug), `quota` (one region at IVS's default quotas, a crowd larger than them),
    /// `million` (one million viewers in ten minutes over three regions).
    pub fn named(name: &str) -> Option<Scenario> {
        let ivs = IvsFaults {
            latency_base_ms: 20,
            latency_mean_ms: 30.0,
            slow_share: 0.01,
            server_error: 0.01,
            answer_lost: 0.01,
            vanish_mean_ms: 20.0 * MIN as f64,
        };
        Some(match name {
            "smoke" => Scenario {
                name: name.into(),
                viewers: 3_000,
                arrival_ms: 2 * MIN,
                ramp_share: 0.2,
                stay_mean_ms: 3.0 * MIN as f64,
                graceful_leave: 0.7,
                blip_chance: 0.1,
                hostile_share: 0.02,
                hostile_group: 30,
                give_up_after: 20,
                regions: vec![
                    RegionSpec {
                        name: "us-east-1",
                        weight: 2,
                        quotas: quotas(1_500, 100),
                    },
                    RegionSpec {
                        name: "eu-west-1",
                        weight: 1,
                        quotas: quotas(20_000, 1_000),
                    },
                ],
                pool: settings(50, 100),
                ivs: IvsFaults {
                    server_error: 0.05,
                    answer_lost: 0.05,
                    vanish_mean_ms: 2.0 * MIN as f64,
                    ..ivs
                },
                restart_mean_ms: 40_000.0,
                host_drops: vec![(MIN, 10_000), (3 * MIN, 45_000)],
                end_at: 6 * MIN,
                horizon_ms: 20 * MIN,
                sample_ms: MIN,
            },
            "quota" => Scenario {
                name: name.into(),
                viewers: 30_000,
                arrival_ms: 5 * MIN,
                ramp_share: 0.2,
                stay_mean_ms: 10.0 * MIN as f64,
                graceful_leave: 0.8,
                blip_chance: 0.05,
                hostile_share: 0.005,
                hostile_group: 50,
                give_up_after: 10,
                regions: vec![RegionSpec {
                    name: "us-east-1",
                    weight: 1,
                    quotas: quotas(20_000, 1_000),
                }],
                pool: settings(50, 1_000),
                ivs,
                restart_mean_ms: 3.0 * MIN as f64,
                host_drops: vec![(4 * MIN, 20_000)],
                end_at: 15 * MIN,
                horizon_ms: 30 * MIN,
                sample_ms: MIN,
            },
            "million" => Scenario {
                name: name.into(),
                viewers: 1_000_000,
                arrival_ms: 10 * MIN,
                ramp_share: 0.2,
                stay_mean_ms: 8.0 * MIN as f64,
                graceful_leave: 0.8,
                blip_chance: 0.05,
                hostile_share: 0.005,
                hostile_group: 50,
                give_up_after: 10,
                regions: vec![
                    RegionSpec {
                        name: "us-east-1",
                        weight: 5,
                        quotas: quotas(400_000, 1_000),
                    },
                    RegionSpec {
                        name: "eu-west-1",
                        weight: 3,
                        quotas: quotas(300_000, 1_000),
                    },
                    RegionSpec {
                        name: "ap-northeast-1",
                        weight: 2,
                        quotas: quotas(100_000, 1_000),
                    },
                ],
                pool: settings(500, 1_000),
                ivs,
                restart_mean_ms: 5.0 * MIN as f64,
                host_drops: vec![(8 * MIN, 20_000), (14 * MIN, 90_000)],
                end_at: 30 * MIN,
                horizon_ms: 45 * MIN,
                sample_ms: MIN,
            },
            _ => return None,
        })
    }

    /// The names [`Scenario::named`] knows.
    pub const NAMES: [&'static str; 3] = ["smoke", "quota", "million"];

    /// A smaller copy: `viewers` viewers, the regions' subscription quotas scaled alike.
    pub fn scaled(mut self, viewers: u32) -> Scenario {
        let f = f64::from(viewers) / f64::from(self.viewers.max(1));
        for r in &mut self.regions {
            r.quotas.subscriptions = ((f64::from(r.quotas.subscriptions) * f) as u32).max(1);
        }
        self.viewers = viewers;
        self
    }

    /// The instant (from the start) of arrival `i` of `n`: stratified draws from the crowd's
    /// curve (rate rising linearly over `ramp_share`, then flat), `u` in `[0, 1)`.
    pub fn arrival_at(&self, i: u32, u: f64) -> Millis {
        let n = f64::from(self.viewers.max(1));
        let q = (f64::from(i) + u) / n;
        let a = self.ramp_share.clamp(1e-9, 1.0);
        let c = 1.0 / (1.0 - a / 2.0);
        let x = if q < c * a / 2.0 {
            (2.0 * a * q / c).sqrt()
        } else {
            q / c + a / 2.0
        };
        (x.clamp(0.0, 1.0) * self.arrival_ms as f64) as Millis
    }
}
