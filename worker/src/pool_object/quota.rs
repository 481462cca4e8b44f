//! The pool's grant of the region's IVS quotas, from the account-quota ledger in the
//! `IvsBudget` object (`stagefan_core::ledger`; the pool's side in
//! `stagefan_core::pool::quota`).
//!
//! The ledger is called per chunk of seats, never per viewer: a join that finds fewer than
//! half a chunk left asks for the next one in the background, and only a join that finds the
//! grant used up (or a full pool that needs a stage the grant does not cover) waits for the
//! answer. One call at a time per pool (the others wait for it): answers then arrive in the
//! order the ledger decided them, and a reduction is applied to the pool before it is sent,
//! so the pool never seats within quota it is giving back. The alarm renews the grant and
//! gives idle quota back. An unreachable ledger leaves the grant as it was until it lapses.

use std::rc::Rc;
use std::time::Duration;

use futures_util::future::join_all;
use stagefan_core::ledger::Quotas;
use stagefan_core::policy;
use stagefan_core::pool::JoinRequest;

use super::ivs_calls::create_stage;
use super::{replication, Shared, StagePool};
use crate::budget;
use crate::runtime;

/// How long a join waits for another request's ledger call before it looks again.
const WAIT_FOR_LEDGER_MS: u64 = 3_000;

impl Shared {
    /// Asks the ledger for what the pool wants now (`Pool::quota_want`: `extra_stages` beyond
    /// those it holds; idle quota back when `trim`), unless it wants nothing. When another
    /// call is in flight, waits for that one instead. Returns whether the grant changed.
    pub(super) async fn sync_quota(&self, extra_stages: u32, trim: bool) -> bool {
        if self.inner.borrow().quota_busy {
            self.quota_done
                .wait(Duration::from_millis(WAIT_FOR_LEDGER_MS))
                .await;
            return true;
        }
        let Ok(settings) = self.settings() else {
            return false;
        };
        let asked_at = runtime::now_ms();
        let (broadcast, want, before) = {
            let mut inner = self.inner.borrow_mut();
            let Some(pool) = inner.pool.as_mut() else {
                return false;
            };
            let Some(want) = pool.quota_want(asked_at, extra_stages, trim) else {
                return false;
            };
            // Never count on what is being given back.
            pool.lower_quota(want);
            let before = pool.quota_granted(asked_at).unwrap_or(Quotas::ZERO);
            let broadcast = pool.broadcast().to_string();
            inner.quota_busy = true;
            (broadcast, want, before)
        };
        if let Err(e) = self.persist() {
            worker::console_error!("persist quota: {e:?}");
        }
        let cfg = &settings.config;
        let answer = budget::grant(
            &self.env,
            &cfg.ivs_endpoint,
            &cfg.ivs_region,
            &broadcast,
            want,
        )
        .await;
        let changed = match answer {
            Ok(answer) => {
                if let Some(short) = answer.short {
                    worker::console_warn!(
                        "pool {broadcast}: the region's {} quota is used up (asked {want:?}, \
                         holds {:?}, {:?} free in the region)",
                        short.ivs_name(),
                        answer.held,
                        answer.free
                    );
                }
                let changed = answer.held != before;
                if let Some(pool) = self.inner.borrow_mut().pool.as_mut() {
                    pool.apply_quota(&answer, asked_at);
                }
                if let Err(e) = self.persist() {
                    worker::console_error!("persist quota: {e:?}");
                }
                changed
            }
            Err(e) => {
                worker::console_error!("quota ledger unreachable ({e:?}): pool {broadcast} keeps its grant until it lapses");
                false
            }
        };
        self.inner.borrow_mut().quota_busy = false;
        self.quota_done.notify();
        changed
    }

    /// The stages the scaling policy wants now beyond those the grant covers.
    pub(super) fn stages_beyond_grant(&self) -> u32 {
        let Ok(settings) = self.settings() else {
            return 0;
        };
        let now = runtime::now_ms();
        self.with_pool(|pool| policy::stages_beyond_grant(&settings.config.policy(), pool, now))
    }

    /// The stages the policy wants (for an ask that covers them all).
    pub(super) fn stages_wanted(&self) -> u32 {
        let Ok(settings) = self.settings() else {
            return 0;
        };
        self.with_pool(|pool| {
            policy::scale_up(&settings.config.policy(), &pool.load_summary()).create
        })
    }

    /// Makes sure the grant covers one stage (and its publisher) more than the pool holds,
    /// for an explicit create. Concurrent creates each wait for the ledger call in flight
    /// and ask again until the grant covers them, the ledger gives nothing more (the region
    /// is short) or it cannot be reached; a few rounds at most.
    pub(super) async fn quota_for_one_more_stage(&self) {
        for _ in 0..16 {
            let now = runtime::now_ms();
            let covered = self.with_pool(|pool| {
                pool.quota_granted(now).is_none_or(|g| {
                    let used = pool.quota_in_use();
                    g.stages > used.stages && g.publishers > used.publishers
                })
            });
            if covered {
                return;
            }
            let busy = self.inner.borrow().quota_busy;
            let changed = self.sync_quota(1, false).await;
            if !busy && !changed {
                return;
            }
        }
    }

    /// Makes sure the grant covers the stages the policy wants, asking if it does not.
    pub(super) async fn quota_for_stages(&self) -> bool {
        if self.stages_beyond_grant() == 0 {
            return false;
        }
        self.sync_quota(self.stages_wanted(), false).await
    }
}

/// Asks for the stages the policy wants, then starts their creates (a scale-up the grant
/// did not cover when it was decided).
pub(super) async fn grow(shared: Rc<Shared>) {
    if !shared.quota_for_stages().await {
        return;
    }
    let creates = shared
        .plan_creates()
        .into_iter()
        .map(|intent| create_stage(shared.clone(), intent));
    join_all(creates).await;
    replication::run(&shared).await;
}

impl StagePool {
    /// Before a join: a new seat needs a subscription of the grant. Fewer than half a chunk
    /// left: the next chunk is asked for in the background; none left: asked for and waited.
    pub(super) async fn quota_before_join(&self, request: &JoinRequest<'_>) {
        let shared = &self.shared;
        let state = |shared: &Shared| {
            let now = runtime::now_ms();
            shared.with_pool(|pool| {
                if request.lease_id.and_then(|id| pool.lease(id)).is_some() {
                    return (false, false);
                }
                let exhausted = pool
                    .quota_granted(now)
                    .is_some_and(|g| pool.viewers() >= g.subscriptions);
                (pool.quota_want(now, 0, false).is_some(), exhausted)
            })
        };
        let (ask, mut exhausted) = state(shared);
        // A storm of joins shares the chunks: the call a join waited for may have been
        // another's, and its chunk taken by others. Ask again until the grant has room, the
        // ledger gives nothing more (the region is short, or it cannot be reached: the join
        // is then refused `region_quota`), or the wait is over.
        let deadline = runtime::now_ms() + WAIT_FOR_LEDGER_MS;
        while exhausted && runtime::now_ms() < deadline {
            let busy = shared.inner.borrow().quota_busy;
            let changed = shared.sync_quota(0, false).await;
            exhausted = state(shared).1;
            if !busy && !changed {
                break;
            }
        }
        if ask && !exhausted {
            let shared = shared.clone();
            self.state.wait_until(async move {
                shared.sync_quota(0, false).await;
            });
        }
    }
}
