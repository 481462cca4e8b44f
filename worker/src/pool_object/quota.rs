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

/// How long a request waits for the ledger (its own calls and others') before it gives up.
const WAIT_FOR_LEDGER_MS: u64 = 3_000;

impl Shared {
    /// Asks the ledger for what the pool wants now (`Pool::quota_want`: `extra_stages` beyond
    /// those it holds; idle quota back when `trim`), unless it wants nothing. When another
    /// call is in flight, waits for that one instead (and asks nothing). Returns whether this
    /// call changed the grant.
    pub(super) async fn sync_quota(&self, extra_stages: u32, trim: bool) -> bool {
        if self.inner.borrow().quota_busy {
            self.quota_done
                .wait(Duration::from_millis(WAIT_FOR_LEDGER_MS))
                .await;
            return false;
        }
        let Ok((region, endpoint)) = self.region() else {
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
        let answer = budget::grant(&self.env, &endpoint, &region, &broadcast, want).await;
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

    /// Asks the ledger until `enough` holds of the pool: a storm of requests shares the
    /// ledger's answers, so the call one waited for may have been another's and its grant
    /// taken by others. Stops when `enough` holds, when the ledger gives nothing more (the
    /// region is short, or it cannot be reached) or after [`WAIT_FOR_LEDGER_MS`]. Returns
    /// whether `enough` holds at the end.
    pub(super) async fn quota_until(
        &self,
        extra_stages: u32,
        enough: impl Fn(&stagefan_core::pool::Pool, u64) -> bool,
    ) -> bool {
        let holds = || {
            let now = runtime::now_ms();
            self.with_pool(|pool| enough(pool, now))
        };
        let deadline = runtime::now_ms() + WAIT_FOR_LEDGER_MS;
        while !holds() && runtime::now_ms() < deadline {
            let waited = self.inner.borrow().quota_busy;
            if !self.sync_quota(extra_stages, false).await && !waited {
                // Our own ask changed nothing: the ledger has no more to give.
                break;
            }
        }
        holds()
    }

    /// Makes sure the grant covers one stage (and its publisher) more than the pool holds,
    /// for an explicit create.
    pub(super) async fn quota_for_one_more_stage(&self) {
        self.quota_until(1, |pool, now| {
            pool.quota_granted(now).is_none_or(|g| {
                let used = pool.quota_in_use();
                g.stages > used.stages && g.publishers > used.publishers
            })
        })
        .await;
    }

    /// Makes sure the grant covers the stages the policy wants, asking if it does not (or
    /// waiting for the ask in flight). Returns whether the grant now covers more of them
    /// than before.
    pub(super) async fn quota_for_stages(&self) -> bool {
        let beyond = self.stages_beyond_grant();
        if beyond == 0 {
            return false;
        }
        self.sync_quota(self.stages_wanted(), false).await;
        self.stages_beyond_grant() < beyond
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
    /// left: the next chunk is asked for in the background; none left: asked for and waited
    /// (the join is refused `region_quota` if none comes).
    pub(super) async fn quota_before_join(&self, request: &JoinRequest<'_>) {
        let shared = &self.shared;
        let now = runtime::now_ms();
        let (reconnect, ask) = shared.with_pool(|pool| {
            (
                request.lease_id.and_then(|id| pool.lease(id)).is_some(),
                pool.quota_want(now, 0, false).is_some(),
            )
        });
        if reconnect {
            return;
        }
        let has_room = |pool: &stagefan_core::pool::Pool, now| {
            pool.quota_granted(now)
                .is_none_or(|g| pool.viewers() < g.subscriptions)
        };
        if !shared.with_pool(|pool| has_room(pool, now)) {
            shared.quota_until(0, has_room).await;
        } else if ask {
            let shared = shared.clone();
            self.state.wait_until(async move {
                shared.sync_quota(0, false).await;
            });
        }
    }
}
