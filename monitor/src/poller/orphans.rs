//! Orphan collection: deleting this deployment's stages that no pool knows.

use std::collections::HashSet;
use std::time::Duration;

use stagefan_core::ivs::Operation;
use stagefan_core::policy::{KnownStages, Orphan};
use stagefan_core::pool::Snapshot;
use tokio::time::Instant;

use super::sampling::{sample_stage, SampleError};
use super::RegionPoller;
use crate::edge::EdgeError;
use crate::ivs::CallError;
use crate::metrics::{ActionKind, Outcome};

impl RegionPoller {
    /// Deletes the orphans found at the last complete listing that are still orphans, within
    /// the budget; what the budget cannot fit stays for the next round. A candidate is
    /// deleted only when (1) the pool its broadcast tag names, asked directly, does not know
    /// it (a pool whose registration has not landed yet is not in the edge's list), and
    /// (2) IVS lists nobody connected to it; the `DeleteStage` then waits for its slot in the
    /// account-wide budget the pools use.
    pub(super) async fn collect_orphans(&mut self, snaps: &[Snapshot], deadline: Instant) -> usize {
        if self.pending_orphans.is_empty() {
            return 0;
        }
        let known = KnownStages::from_snapshots(snaps);
        let listed: HashSet<&str> = snaps.iter().map(|s| s.broadcast.as_str()).collect();
        let mut deleted = 0;
        let mut left = Vec::new();
        let pending = std::mem::take(&mut self.pending_orphans);
        let mut out_of_budget = false;
        for orphan in pending {
            if known.arns.contains(&orphan.arn) {
                tracing::info!(stage = %orphan.arn, "orphan candidate is now known to a pool; kept");
                continue;
            }
            if out_of_budget {
                left.push(orphan);
                continue;
            }
            let broadcast = orphan.broadcast.as_deref().unwrap_or("");
            match self.claimed_by_its_pool(&orphan, &listed).await {
                Claim::Known => {
                    tracing::info!(
                        stage = %orphan.arn,
                        broadcast,
                        "orphan candidate belongs to a pool the edge does not list (yet); kept"
                    );
                    continue;
                }
                Claim::Unsure => {
                    left.push(orphan);
                    continue;
                }
                Claim::Unclaimed => {}
            }
            match sample_stage(&self.ivs, &orphan.arn, deadline).await {
                Err(SampleError::Deferred) => {
                    out_of_budget = true;
                    left.push(orphan);
                    continue;
                }
                // Could not tell who is connected: not now.
                Ok(None) => {
                    left.push(orphan);
                    continue;
                }
                // Already gone from IVS: nothing to collect.
                Err(SampleError::Missing) => continue,
                Ok(Some((publishers, subscribers, _))) => {
                    if !publishers.is_empty() || !subscribers.is_empty() {
                        let connected = format!(
                            "{} publishers, {} subscribers",
                            publishers.len(),
                            subscribers.len()
                        );
                        let why = ("participants_connected", connected.as_str());
                        self.record_orphan_delete(&orphan, Outcome::Refused, Some(why));
                        // Dropped from the list; the next listing pass looks at it again.
                        continue;
                    }
                }
            }
            self.wait_for_delete_slot().await;
            // The slot is ours now: the call may run past the round's end rather than waste it.
            let call_by = Instant::now() + self.settings.poll_interval;
            match self
                .ivs
                .delete_stage(&orphan.arn, call_by.max(deadline))
                .await
            {
                Ok(()) => {
                    self.delete_throttled = false;
                    deleted += 1;
                    self.record_orphan_delete(&orphan, Outcome::Done, None);
                }
                Err(e) if e.is_not_found() => {
                    tracing::info!(stage = %orphan.arn, "orphan already gone");
                }
                Err(CallError::Deferred(..)) => {
                    out_of_budget = true;
                    left.push(orphan);
                }
                Err(e) => {
                    self.delete_throttled = e.is_throttling();
                    let error = e.to_string();
                    let why = ("call_failed", error.as_str());
                    self.record_orphan_delete(&orphan, Outcome::Error, Some(why));
                    left.push(orphan);
                }
            }
        }
        self.pending_orphans = left;
        deleted
    }

    /// Counts and logs one orphan delete the same way each time: done at `info`; refused or
    /// failed at `warn`, with why (a stable reason code and its detail).
    fn record_orphan_delete(
        &self,
        orphan: &Orphan,
        outcome: Outcome,
        why: Option<(&'static str, &str)>,
    ) {
        self.metrics
            .actions
            .action(ActionKind::OrphanDelete, outcome);
        let broadcast = orphan.broadcast.as_deref().unwrap_or("");
        let (stage, age_ms, outcome) = (&orphan.arn, orphan.age_ms, outcome.as_str());
        match why {
            None => {
                tracing::info!(action = "orphan_delete", region = %self.region(), %stage, broadcast, age_ms, outcome, "scaling action")
            }
            Some((reason, detail)) => {
                tracing::warn!(action = "orphan_delete", region = %self.region(), %stage, broadcast, age_ms, outcome, reason, detail, "scaling action")
            }
        }
    }

    /// Whether the pool an orphan candidate's broadcast tag names knows it. Pools the edge
    /// listed are already in `known`; a pool it did not list (its registration failed and is
    /// being retried) is asked for its snapshot.
    async fn claimed_by_its_pool(&self, orphan: &Orphan, listed: &HashSet<&str>) -> Claim {
        let Some(b) = orphan.broadcast.as_deref() else {
            return Claim::Unclaimed;
        };
        if listed.contains(b) || !crate::edge::valid_broadcast_id(b) {
            return Claim::Unclaimed;
        }
        match self.edge.snapshot(&self.pool(b)).await {
            Ok(snap) => {
                if KnownStages::from_snapshots([&snap])
                    .arns
                    .contains(&orphan.arn)
                {
                    Claim::Known
                } else {
                    Claim::Unclaimed
                }
            }
            Err(EdgeError::Status { status: 404, .. }) => Claim::Unclaimed,
            Err(e) => {
                tracing::warn!(broadcast = b, error = %e, "cannot ask an orphan's pool; kept for now");
                Claim::Unsure
            }
        }
    }

    /// Waits for a `DeleteStage` slot of the region's account-wide IVS budget (the edge's,
    /// shared with every pool of the region). When the edge cannot give one, the monitor's own budget still paces the
    /// call (at `--ivs-budget`, at most 5 per second) and the fallback is logged.
    async fn wait_for_delete_slot(&mut self) {
        let throttled = std::mem::take(&mut self.delete_throttled);
        match self
            .edge
            .reserve_slot(self.region(), Operation::DeleteStage, throttled)
            .await
        {
            Ok(slot) => {
                if slot.wait_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(slot.wait_ms)).await;
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the account-wide IVS budget is out of reach: DeleteStage paced by the \
                     monitor's own budget alone"
                );
            }
        }
    }
}

/// What an orphan candidate's own pool says of it.
enum Claim {
    /// The pool knows the stage: not an orphan.
    Known,
    /// No pool claims it.
    Unclaimed,
    /// The pool could not be asked: decide later.
    Unsure,
}
