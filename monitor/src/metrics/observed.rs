//! IVS's view of the pools' stages and how it differs from the pools' counts.

use prometheus::{GaugeVec, IntCounter, IntGaugeVec, Opts, Registry};

use super::{register, stage_label};

/// IVS's view of the pools' stages and how it differs from the pools' counts.
pub struct ObservedMetrics {
    publishers: IntGaugeVec,
    subscribers: IntGaugeVec,
    drift: IntGaugeVec,
    drifting: IntGaugeVec,
    samples: IntCounter,
    ivs_stages: IntGaugeVec,
    coverage_age: GaugeVec,
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
                    &["broadcast", "region", "stage"],
                )?,
            )?,
            subscribers: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "ivs_stage_subscribers",
                        "Connected non-publishing participants IVS lists on a stage (last sample).",
                    ),
                    &["broadcast", "region", "stage"],
                )?,
            )?,
            drift: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "stage_drift_viewers",
                        "IVS's subscriber count minus the pool's seat count for a stage, as the pool reported it for the last observation.",
                    ),
                    &["broadcast", "region", "stage"],
                )?,
            )?,
            drifting: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "drifting_stages",
                        "Stages whose last observation differed from the pool's count, per pool (broadcast and region).",
                    ),
                    &["broadcast", "region"],
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
                IntGaugeVec::new(
                    Opts::new(
                        "ivs_stages",
                        "Stages in the region's IVS at its last complete ListStages pass.",
                    ),
                    &["region"],
                )?,
            )?,
            coverage_age: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "ivs_sample_oldest_age_seconds",
                        "Age of the oldest sample among the region's pools' stages: how long a full round-robin pass takes.",
                    ),
                    &["region"],
                )?,
            )?,
        })
    }

    /// Records one stage sample of the pool of `broadcast` in `region`.
    pub fn sampled(
        &self,
        broadcast: &str,
        region: &str,
        arn: &str,
        publishers: usize,
        subscribers: usize,
    ) {
        let stage = stage_label(arn);
        self.samples.inc();
        self.publishers
            .with_label_values(&[broadcast, region, stage])
            .set(publishers as i64);
        self.subscribers
            .with_label_values(&[broadcast, region, stage])
            .set(subscribers as i64);
    }

    /// Records the drift the pool reported for one stage.
    pub fn set_drift(&self, broadcast: &str, region: &str, arn: &str, ivs_minus_pool: i64) {
        self.drift
            .with_label_values(&[broadcast, region, stage_label(arn)])
            .set(ivs_minus_pool);
    }

    /// Publishes the number of drifting stages of a pool.
    pub fn set_drifting(&self, broadcast: &str, region: &str, n: usize) {
        self.drifting
            .with_label_values(&[broadcast, region])
            .set(n as i64);
    }

    /// Forgets a stage that left every pool.
    pub fn forget(&self, broadcast: &str, region: &str, arn: &str) {
        let labels = [broadcast, region, stage_label(arn)];
        let _ = self.publishers.remove_label_values(&labels);
        let _ = self.subscribers.remove_label_values(&labels);
        let _ = self.drift.remove_label_values(&labels);
    }

    /// Publishes the size of `region`'s last complete listing.
    pub fn set_ivs_stages(&self, region: &str, n: usize) {
        self.ivs_stages.with_label_values(&[region]).set(n as i64);
    }

    /// Publishes how old the oldest sample of `region` is.
    pub fn set_oldest_sample_age(&self, region: &str, seconds: f64) {
        self.coverage_age.with_label_values(&[region]).set(seconds);
    }
}
