//! Scaling actions and orphan collection.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

use super::register;

/// What a scaling action was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionKind {
    /// Stop placing viewers on a stage (asked of the pool).
    Drain,
    /// Drain an under-filled stage, its viewers moved into fewer stages (asked of the pool).
    Consolidate,
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
            ActionKind::Consolidate => "consolidate",
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
    orphans: IntGaugeVec,
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
            ActionKind::Consolidate,
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
                IntGaugeVec::new(
                    Opts::new(
                        "orphan_stages",
                        "stagefan-tagged stages in the region's IVS that no pool knows (in their grace period or awaiting deletion).",
                    ),
                    &["region"],
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

    /// How many orphans are known in `region`.
    pub fn set_orphans(&self, region: &str, n: usize) {
        self.orphans.with_label_values(&[region]).set(n as i64);
    }

    /// The count of one kind and outcome (for tests and logs).
    pub fn count(&self, kind: ActionKind, outcome: Outcome) -> u64 {
        self.actions
            .with_label_values(&[kind.as_str(), outcome.as_str()])
            .get()
    }
}
