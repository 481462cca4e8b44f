//! Stage presence in the pool object (`PRESENCE=stages`, docs/presence.md): a granted seat is
//! admitted at its stage's `StageSeats` before the viewer hears of it; the stages report frees
//! in batches (`stage-report`); the pool pushes what changed of its status (the host, the
//! end, a stage gone) to the stages' objects before it answers the call that changed it.

use futures_util::future::join_all;
use stagefan_core::presence::{Free, StageStatus};

use super::*;
use crate::calls::{stage_seats_name, Admitted, StageCall};

/// What the stage's object said of a lease the pool granted.
pub(super) enum Admission {
    /// Taken; the lease lapses at this unix ms unless renewed there.
    Taken(u64),
    /// A reconnect of a lease that lapsed or was given back at its stage (the report is on its
    /// way): the pool frees it and seats the viewer anew.
    Lapsed,
}

impl Shared {
    /// Admits `lease_id` at its stage's object (`reconnect`: a seat it held already). The
    /// stage's object is named by the pool's name (`{broadcast}` or `{broadcast}@{region}`:
    /// stage ids repeat across a broadcast's regions) and the stage.
    pub(super) async fn admit_at_stage(
        &self,
        stage: StageId,
        lease_id: &str,
        reconnect: bool,
    ) -> AppResult<Admission> {
        let (status, pool) = self.with_pool(|p| (p.stage_status(stage), p.name()));
        let call = StageCall::Admit {
            lease_id: lease_id.to_string(),
            reconnect,
            status,
        };
        self.inner.borrow_mut().counters.sent(call.name());
        let url = format!("https://stage-seats/admit/{pool}/{stage}");
        let name = stage_seats_name(&pool, stage);
        let mut resp = calls::send(&self.env, "STAGE_SEATS", &name, &url, &call).await?;
        let code = resp.status_code();
        let text = resp.text().await?;
        match code {
            200 => {
                let admitted: Admitted = serde_json::from_str(&text)
                    .map_err(|e| AppError::Internal(format!("admit answer: {e}")))?;
                Ok(Admission::Taken(admitted.expires_at))
            }
            404 if reconnect => Ok(Admission::Lapsed),
            _ => Err(AppError::Internal(format!(
                "admitting a lease at stage {stage}: {code} {text}"
            ))),
        }
    }

    /// A stage's report: its frees applied (idempotently), its status answered.
    pub(super) fn stage_report(&self, stage: StageId, frees: &[Free]) -> AppResult<StageStatus> {
        self.mutate(|pool, now| {
            pool.apply_frees(stage, frees, now);
            Ok(pool.stage_status(stage))
        })
    }

    /// Pushes to every stage's object whose status changed since this instance last pushed
    /// it (all of them once after a start), and waits for the answers: a heartbeat after the
    /// call that changed it (the host on air, the end, a stage gone) sees it. A failed push
    /// is tried again after the next call; the stages' own reports also carry the status.
    pub(super) async fn push_stage_statuses(&self) {
        let (pool_name, changed) = {
            let inner = self.inner.borrow();
            let Some(pool) = inner.pool.as_ref() else {
                return;
            };
            let changed: Vec<(StageId, StageStatus)> = pool
                .stage_statuses()
                .into_iter()
                .filter(|(id, st)| inner.pushed.get(id) != Some(st))
                .collect();
            (pool.name(), changed)
        };
        if changed.is_empty() {
            return;
        }
        for _ in &changed {
            self.inner.borrow_mut().counters.sent("sync");
        }
        let sends = changed.iter().map(|(stage, status)| {
            let call = StageCall::Sync { status: *status };
            let url = format!("https://stage-seats/sync/{pool_name}/{stage}");
            let name = stage_seats_name(&pool_name, *stage);
            async move {
                let sent: AppResult<Value> =
                    calls::send_for(&self.env, "STAGE_SEATS", &name, &url, &call, "sync").await;
                sent
            }
        });
        let answers = join_all(sends).await;
        let mut inner = self.inner.borrow_mut();
        for ((stage, status), answer) in changed.into_iter().zip(answers) {
            match answer {
                Ok(_) => {
                    inner.pushed.insert(stage, status);
                }
                Err(e) => worker::console_error!("pushing the status of stage {stage}: {e:?}"),
            }
        }
    }
}
