//! The poll loop's rounds.

use prometheus::{Gauge, IntCounterVec, IntGauge, Opts, Registry};

use super::register;

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
