//! Time slots for IVS's rate-limited stage operations: every call waits for its slot in the
//! account-wide budget (the `IvsBudget` object), or, when that cannot be reached, in this
//! pool's own schedule at the same rate; and the signal that wakes viewers waiting for a stage
//! being created.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::pin;
use std::task::{Poll, Waker};
use std::time::Duration;

use stagefan_core::alarm;
use stagefan_core::ivs::Operation;
use stagefan_core::pool::StageId;

use super::Shared;
use crate::budget;
use crate::runtime;

/// Slots a call may miss (its instance too busy to call on time) before it calls anyway.
const MAX_MISSED_SLOTS: u32 = 10;

/// Wakes the viewers waiting for a stage being created when a create ends (either way) or
/// learns its slot, so that hundreds of waiters in a join storm sleep instead of polling the
/// pool (and, in a stage's `StageSeats`, the leaves waiting for the report in flight).
#[derive(Default)]
pub(crate) struct CreateSignal {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl CreateSignal {
    pub(crate) fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Resolves at the next `notify` after this call.
    fn next(&self) -> impl Future<Output = ()> + '_ {
        let seen = self.generation.get();
        std::future::poll_fn(move |cx| {
            if self.generation.get() != seen {
                Poll::Ready(())
            } else {
                self.wakers.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Waits for the next `notify`, or `timeout`, whichever comes first.
    pub(crate) async fn wait(&self, timeout: Duration) {
        let mut next = pin!(self.next());
        let mut delay = pin!(worker::Delay::from(timeout));
        std::future::poll_fn(|cx| {
            if next.as_mut().poll(cx).is_ready() || delay.as_mut().poll(cx).is_ready() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

impl Shared {
    /// When the next stage being created can come at the earliest (`alarm::next_create_at`
    /// of the creates waiting for their slots).
    pub(super) fn next_create_at(&self, now: u64) -> Option<u64> {
        let inner = self.inner.borrow();
        let creating = inner.pool.as_ref().map_or(0, |p| p.load_summary().creating);
        alarm::next_create_at(creating, inner.create_slots.values().copied(), now)
    }

    /// When a refused viewer should come back (`alarm::retry_after_secs`).
    pub(super) fn retry_after(&self, now: u64) -> u32 {
        let next = self.next_create_at(now);
        self.inner
            .borrow()
            .pool
            .as_ref()
            .map_or(1, |pool| alarm::retry_after_secs(pool, next, now))
    }

    /// Waits until this pool may make an `op` call: its slot of the account-wide budget (or,
    /// when the budget cannot be reached, of the pool's own schedule at the same rate).
    /// `throttled`: IVS throttled the last attempt. `create`: the create that waits, so that
    /// viewers know when its stage can come.
    ///
    /// A slot is honoured only on time: a caller that wakes up later than half the guard
    /// after its slot (this instance was busy) could reach IVS in the next window's company,
    /// so it gives the slot up (it stays counted) and takes a new one.
    pub(super) async fn wait_for_slot(
        &self,
        op: Operation,
        mut throttled: bool,
        create: Option<StageId>,
    ) {
        let tolerance = self
            .settings()
            .map_or(5, |s| (s.config.budget.guard_ms / 2).max(5));
        for _ in 0..MAX_MISSED_SLOTS {
            let at = self.reserve_slot(op, throttled).await;
            throttled = false;
            if let Some(id) = create {
                self.inner.borrow_mut().create_slots.insert(id, at);
                self.create_done.notify();
            }
            sleep_until(at).await;
            if let Some(id) = create {
                self.inner.borrow_mut().create_slots.remove(&id);
            }
            let late = runtime::now_ms().saturating_sub(at);
            if late <= tolerance {
                return;
            }
            worker::console_warn!("{} slot missed by {late} ms: taking a new one", op.name());
        }
    }

    /// The instant this pool may make the next `op` call: a slot of the account-wide budget
    /// (the budget's clock; instances' clocks agree to well within the guard), or, when the
    /// budget cannot be reached, of the pool's own schedule at the same rate (logged).
    async fn reserve_slot(&self, op: Operation, throttled: bool) -> u64 {
        let Ok(settings) = self.settings() else {
            return runtime::now_ms();
        };
        let cfg = &settings.config;
        let Ok((region, endpoint)) = self.region() else {
            return runtime::now_ms();
        };
        match budget::reserve(&self.env, &endpoint, &region, op, throttled).await {
            Ok(slot) => slot.at,
            Err(e) => {
                worker::console_error!(
                    "IVS budget unreachable ({e:?}): {} paced by this pool alone",
                    op.name()
                );
                let now = runtime::now_ms();
                let Some(rate) = cfg.budget.rate(op) else {
                    return now;
                };
                let mut inner = self.inner.borrow_mut();
                let schedule = inner.fallback.entry(op.name()).or_default();
                if throttled {
                    schedule.throttled(&rate, now);
                }
                schedule.reserve(&rate, now)
            }
        }
    }
}

/// Sleeps until `at` (this instance's clock).
async fn sleep_until(at: u64) {
    let wait = at.saturating_sub(runtime::now_ms());
    if wait > 0 {
        worker::Delay::from(Duration::from_millis(wait)).await;
    }
}
