//! The broadcast's end inside the pool object: every seat freed, every stage deleted through
//! the paced delete path (one budget slot per `DeleteStage`), and a later `publisher-all`
//! starting it afresh. The states themselves are `stagefan_core::pool::life`'s.

use stagefan_core::pool::DeleteIntent;

use super::ivs_calls::delete_stage;
use super::{not_found_pool, StagePool};
use crate::calls::Ended;
use crate::error::AppResult;

impl StagePool {
    /// The host ends the broadcast (idempotent: ending it again frees nothing new and makes
    /// sure its stages are being deleted).
    pub(super) async fn end_broadcast(&self) -> AppResult<Ended> {
        let shared = &self.shared;
        if !shared.has_pool() {
            return Err(not_found_pool());
        }
        let ending = shared.mutate(|pool, now| Ok(pool.end(now)))?;
        let (broadcast, ended_at) = shared.with_pool(|p| {
            (
                p.broadcast().to_string(),
                p.meta().life.ended_at.unwrap_or_default(),
            )
        });
        if ending.ended_now {
            worker::console_log!(
                "broadcast {broadcast} ended: {} seats freed, {} stages to delete",
                ending.leases_freed.len(),
                ending.deletes.len()
            );
        }
        let stages_deleting = ending.deletes.len() as u32;
        self.spawn_deletes(ending.deletes);
        // Stages still being created are deleted by the maintenance alarm once they exist.
        self.schedule_maintenance().await;
        Ok(Ended {
            broadcast,
            ended_at,
            seats_freed: ending.leases_freed.len() as u32,
            stages_deleting,
        })
    }

    /// Deletes an ended broadcast's stages in the background, each `DeleteStage` in its slot
    /// of the account-wide budget; a stage whose delete is already under way is left to it.
    pub(super) fn spawn_deletes(&self, intents: Vec<DeleteIntent>) {
        for intent in intents {
            if !self.shared.inner.borrow_mut().deleting.insert(intent.stage) {
                continue;
            }
            let shared = self.shared.clone();
            self.state.wait_until(async move {
                let stage = intent.stage;
                if let Err(e) = delete_stage(&shared, intent).await {
                    worker::console_error!("ending: deleting stage {stage}: {e}");
                }
                shared.inner.borrow_mut().deleting.remove(&stage);
            });
        }
    }

    /// The maintenance alarm's part for an ended broadcast: the stages left to delete (a
    /// create that landed after the end, a delete that failed or was cut off by a restart).
    pub(super) fn continue_ending(&self) -> AppResult<bool> {
        let shared = &self.shared;
        if !shared.with_pool(|p| p.is_ended()) {
            return Ok(false);
        }
        let deletes = shared.mutate(|pool, now| Ok(pool.end_deletes(now)))?;
        self.spawn_deletes(deletes);
        Ok(true)
    }

    /// A host asks for its stages: an ended broadcast starts afresh (not started again; the
    /// old stages go on being deleted, new ones are created).
    pub(super) fn restart_if_ended(&self) -> AppResult<()> {
        let shared = &self.shared;
        if shared.has_pool() && shared.mutate(|pool, now| Ok(pool.restart(now)))? {
            worker::console_log!(
                "broadcast {} starts afresh",
                shared.with_pool(|p| p.broadcast().to_string())
            );
        }
        Ok(())
    }
}
