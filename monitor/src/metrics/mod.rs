//! Prometheus metrics, one struct per subsystem, each with `register()`.
//!
//! Every name carries the `stagefan_` prefix (set once on the registry), base units
//! (seconds, ratios) and `_total` on counters. Label values come from typed enums
//! ([`Operation`], [`ActionKind`], [`Outcome`], [`StageState`]) so a typo cannot split a series.
//!
//! [`Operation`]: stagefan_core::ivs::Operation
//! [`StageState`]: stagefan_core::pool::StageState

use prometheus::{Registry, TextEncoder};

mod actions;
mod calls;
mod observed;
mod pool;
mod quota;
mod rounds;
#[cfg(test)]
mod tests;

pub use actions::{ActionKind, ActionMetrics, Outcome};
pub use calls::{EdgeMetrics, IvsMetrics};
pub use observed::ObservedMetrics;
pub use pool::PoolMetrics;
pub use quota::QuotaMetrics;
pub use rounds::RoundMetrics;

/// Prefix of every series.
pub const PREFIX: &str = "stagefan";

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
    /// Each region's account quotas (the edge's ledgers).
    pub quota: QuotaMetrics,
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
            quota: QuotaMetrics::register(&registry)?,
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

/// The stage label: the ARN's last part (the stage id), short and unique per account.
pub fn stage_label(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}
