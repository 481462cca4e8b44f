//! The maintenance alarm: expired leases, scale-down, stale creates and a lost registration.
//! When it is needed next is `core`'s decision (`stagefan_core::alarm::next_wake`).

use stagefan_core::alarm;
use stagefan_core::policy::{self, ScaleAction};
use stagefan_core::pool::CreateIntent;

use super::ivs_calls::{delete_stage, find_stage_by_name, record_create};
use super::{pool_error, replication, StagePool};
use crate::error::AppResult;
use crate::runtime;

impl StagePool {
    /// Sets the alarm to when the pool next needs its maintenance (`alarm::next_wake`),
    /// unless one is set already: that one is at most `alarm::MAINTENANCE_INTERVAL_MS` away
    /// (set less than an interval ago), as the fixed 15-s alarm was; only a lease shorter
    /// than the interval, taken since, is swept later than its own instant.
    pub(super) async fn schedule_maintenance(&self) {
        let shared = &self.shared;
        if shared.inner.borrow().alarm_set {
            return;
        }
        let now = runtime::now_ms();
        let wake = {
            let inner = shared.inner.borrow();
            inner
                .pool
                .as_ref()
                .and_then(|pool| alarm::next_wake(pool, inner.registered, now))
        };
        let Some(at) = wake else {
            return;
        };
        shared.inner.borrow_mut().alarm_set = true;
        let storage = self.state.storage();
        if let Ok(None) = storage.get_alarm().await {
            let _ = storage.set_alarm(at.saturating_sub(now) as i64).await;
        }
    }

    /// The alarm: expired leases, scale-down, stale creates and a lost registration, then the
    /// next alarm.
    pub(super) async fn maintain(&self) -> AppResult<()> {
        let shared = &self.shared;
        shared.inner.borrow_mut().alarm_set = false;
        shared.load("")?;
        if !shared.has_pool() {
            return Ok(());
        }
        // First, so that no error below keeps a pool the Registry lost from being listed; the
        // alarm comes back (`alarm::next_wake`) until the registration lands.
        let registered = shared.ensure_registered().await;
        if !registered {
            self.schedule_maintenance().await;
        }
        let settings = shared.settings()?;
        let policy_cfg = settings.config.policy();
        // The quota grant: renewed, idle quota given back, stages ahead of need asked for.
        shared.sync_quota(shared.stages_wanted(), true).await;
        let snapshot = self.snapshot()?;
        let now = runtime::now_ms();
        // An ended broadcast deletes every stage instead of scaling down.
        let ended = self.continue_ending()?;
        let scale_down = if ended {
            Vec::new()
        } else {
            policy::scale_down(&policy_cfg, &snapshot, now)
        };
        for action in scale_down {
            match action {
                ScaleAction::Drain { stage_arn } => {
                    let _ = shared.mutate(|pool, now| {
                        let id = pool.stage_id(&stage_arn).map_err(pool_error)?;
                        Ok(pool.drain(id, now))
                    });
                }
                ScaleAction::Consolidate { stage_arn } => {
                    let _ = shared.mutate(|pool, now| {
                        let id = pool.stage_id(&stage_arn).map_err(pool_error)?;
                        Ok(pool.consolidate(id, now))
                    });
                }
                ScaleAction::Delete { stage_arn } => {
                    replication::release_for_delete(shared, &stage_arn).await;
                    let intent = shared.mutate(|pool, now| {
                        let id = pool.stage_id(&stage_arn).map_err(pool_error)?;
                        Ok(pool.request_delete(id, now))
                    })?;
                    if let Ok(intent) = intent {
                        let _ = delete_stage(shared, intent).await;
                    }
                }
                ScaleAction::Create => {}
            }
        }
        // Creates whose instance died mid-call: resolved by looking the stage up by name,
        // never by creating again.
        // Creates no call of this instance will resolve (made before it loaded the pool, or
        // whose lookup failed) are looked up once they settled, not after the timeout.
        let mut stale = policy::stale_creates(&policy_cfg, &snapshot, now);
        let abandoned = {
            let inner = shared.inner.borrow();
            policy::abandoned_creates(&snapshot, inner.loaded_at, &inner.failed_lookups, now)
        };
        for id in abandoned {
            if !stale.contains(&id) {
                stale.push(id);
            }
        }
        if !stale.is_empty() {
            let client = shared.ivs()?;
            for id in stale {
                let Some(intent) = shared.with_pool(|p| {
                    p.stage(id).map(|s| CreateIntent {
                        stage: id,
                        name: s.name.clone(),
                        tags: p.tags(),
                        origin: s.origin,
                    })
                }) else {
                    continue;
                };
                if let Ok(found) = find_stage_by_name(shared, &client, &intent).await {
                    record_create(shared, &intent, found);
                }
            }
        }
        self.scale_up();
        replication::spawn(shared, &self.state);
        // Done whatever the outcome, so the next alarm follows the pool's state now.
        self.schedule_maintenance().await;
        Ok(())
    }
}
