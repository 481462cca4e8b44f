//! Calls to IVS (and the budget they are made within) and to the edge's admin API.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use stagefan_core::ivs::Operation;

use super::register;

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
                        "IVS API calls, by region, operation and HTTP status (\"error\" when no answer came).",
                    ),
                    &["region", "operation", "status"],
                )?,
            )?,
            duration: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "ivs_request_duration_seconds",
                        "Latency of IVS API calls, by region and operation.",
                    )
                    .buckets(vec![
                        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ]),
                    &["region", "operation"],
                )?,
            )?,
            budget_rate: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "ivs_budget_requests_per_second",
                        "The monitor's configured IVS call budget, per region and operation.",
                    ),
                    &["region", "operation"],
                )?,
            )?,
            budget_tokens: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "ivs_budget_tokens",
                        "Calls the token bucket would allow right now, per region and operation.",
                    ),
                    &["region", "operation"],
                )?,
            )?,
            backoff: register(
                r,
                GaugeVec::new(
                    Opts::new(
                        "ivs_backoff_seconds",
                        "Current pause after throttling or a server error, per region and operation.",
                    ),
                    &["region", "operation"],
                )?,
            )?,
            over_budget: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "ivs_deferred_calls_total",
                        "Calls put off to a later round because the budget had no room before the round's end.",
                    ),
                    &["region", "operation"],
                )?,
            )?,
        })
    }

    /// Counts one call to `region`'s IVS and its latency.
    pub fn observe_call(&self, region: &str, op: Operation, status: &str, seconds: f64) {
        self.requests
            .with_label_values(&[region, op.name(), status])
            .inc();
        self.duration
            .with_label_values(&[region, op.name()])
            .observe(seconds);
    }

    /// Publishes the configured rate of `region`'s budget.
    pub fn set_budget_rate(&self, region: &str, op: Operation, rate: f64) {
        self.budget_rate
            .with_label_values(&[region, op.name()])
            .set(rate);
    }

    /// Publishes the tokens left and the backoff in force in `region`'s budget.
    pub fn set_budget_state(&self, region: &str, op: Operation, tokens: f64, backoff_seconds: f64) {
        self.budget_tokens
            .with_label_values(&[region, op.name()])
            .set(tokens);
        self.backoff
            .with_label_values(&[region, op.name()])
            .set(backoff_seconds);
    }

    /// Counts a call to `region`'s IVS deferred to the next round.
    pub fn deferred(&self, region: &str, op: Operation) {
        self.over_budget
            .with_label_values(&[region, op.name()])
            .inc();
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
