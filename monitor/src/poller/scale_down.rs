//! Scale-down: the pools carry out what core's policy decides for each.

use stagefan_core::policy::{self, PolicyConfig, ScaleAction};
use stagefan_core::pool::Snapshot;

use super::RegionPoller;
use crate::metrics::{ActionKind, Outcome};

impl RegionPoller {
    /// Asks the pools to carry out what core's policy decides for each, with the pool's own
    /// knobs (its snapshot carries them: the same policy and configuration as its alarm).
    pub(super) async fn scale_down(&self, snaps: &[Snapshot]) -> (usize, usize) {
        let (mut done, mut refused) = (0, 0);
        for snap in snaps {
            let cfg = PolicyConfig::of_snapshot(snap);
            for action in policy::scale_down(&cfg, snap, snap.now) {
                let (kind, arn) = match &action {
                    ScaleAction::Drain { stage_arn } => (ActionKind::Drain, stage_arn.as_str()),
                    ScaleAction::Consolidate { stage_arn } => {
                        (ActionKind::Consolidate, stage_arn.as_str())
                    }
                    ScaleAction::Delete { stage_arn } => (ActionKind::Delete, stage_arn.as_str()),
                    ScaleAction::Create => (ActionKind::Create, ""),
                };
                let outcome = match self.edge.act(&self.pool(&snap.broadcast), &action).await {
                    Ok(answer) if answer.done() => {
                        done += 1;
                        tracing::info!(
                            action = kind.as_str(),
                            region = %self.region(),
                            broadcast = %snap.broadcast,
                            stage = %arn,
                            outcome = "done",
                            "scaling action"
                        );
                        Outcome::Done
                    }
                    Ok(answer) => {
                        refused += 1;
                        tracing::info!(
                            action = kind.as_str(),
                            region = %self.region(),
                            broadcast = %snap.broadcast,
                            stage = %arn,
                            outcome = "refused",
                            reason = answer.reason.as_deref().unwrap_or(""),
                            "scaling action"
                        );
                        Outcome::Refused
                    }
                    Err(e) => {
                        tracing::warn!(
                            action = kind.as_str(),
                            region = %self.region(),
                            broadcast = %snap.broadcast,
                            stage = %arn,
                            outcome = "error",
                            error = %e,
                            "scaling action"
                        );
                        Outcome::Error
                    }
                };
                self.metrics.actions.action(kind, outcome);
            }
        }
        (done, refused)
    }
}
