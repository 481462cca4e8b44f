//! The IVS call budget: one token bucket per operation (IVS limits each operation family
//! separately, 5 requests per second per account and region), plus a backoff that a
//! throttling answer or a server fault switches on.
//!
//! Two rules per operation:
//! - a token bucket (core's [`TokenBucket`]) of one token refilled at the budget's rate, so
//!   calls never come in bursts;
//! - one call in flight at a time, and the next one starts at least `1 / rate` after the
//!   previous one *ended*. IVS counts a call when it handles it, which is between the start
//!   and the end of the call; so however the network or a busy host delays requests, two
//!   calls are handled more than `1 / rate` apart, and no one-second window at IVS ever
//!   holds more than `rate` of them.
//!
//! The clock is tokio's, so tests can pause it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use stagefan_core::ivs::Operation;
use stagefan_core::policy::TokenBucket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The first pause after a throttled or failed call; doubled per further failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest pause.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How a call ended, as far as the budget cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// IVS answered (any non-throttling, non-5xx status).
    Answered,
    /// 429 ThrottlingException: IVS says we are over its rate.
    Throttled,
    /// 5xx or no answer: IVS is struggling; give it room.
    Failed,
}

/// The budget had no token for this operation before the caller's deadline; the call is put
/// off (to the next round).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deferred {
    /// When a token will be there.
    pub ready_at: Instant,
}

#[derive(Debug)]
struct Family {
    bucket: TokenBucket,
    failures: u32,
    backoff_until: Option<Instant>,
    /// `1 / rate` after the end of the last call.
    not_before: Option<Instant>,
    /// One call in flight.
    slot: Arc<Semaphore>,
}

/// Per-operation token buckets with backoff. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    origin: Instant,
    families: Mutex<HashMap<Operation, Family>>,
}

/// The right to make one call. Dropping it (when the call has ended) starts the spacing
/// before the next call of the operation.
#[derive(Debug)]
pub struct Permit<'a> {
    budget: &'a Budget,
    op: Operation,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let gap = Duration::from_secs_f64(1.0 / self.budget.rate);
        let end = Instant::now();
        self.budget
            .with_family(self.op, |fam, _| fam.not_before = Some(end + gap));
    }
}

/// What the budget of one operation looks like now (for metrics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FamilyState {
    /// Whole tokens available.
    pub tokens: f64,
    /// Seconds of backoff left.
    pub backoff_seconds: f64,
}

impl Budget {
    /// A budget of `rate` requests per second for each operation.
    pub fn new(rate: f64) -> Self {
        Self {
            rate,
            origin: Instant::now(),
            families: Mutex::new(HashMap::new()),
        }
    }

    /// The configured rate per operation.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn with_family<R>(&self, op: Operation, f: impl FnOnce(&mut Family, u64) -> R) -> R {
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let now_ms = self.millis(Instant::now());
        let rate = self.rate;
        let fam = families.entry(op).or_insert_with(|| Family {
            bucket: TokenBucket::new(1, rate, now_ms),
            failures: 0,
            backoff_until: None,
            not_before: None,
            slot: Arc::new(Semaphore::new(1)),
        });
        f(fam, now_ms)
    }

    /// Waits for the right to call `op` (a free slot, a token, the spacing after the previous
    /// call, the end of any backoff), unless it would come after `deadline`: then takes
    /// nothing and returns [`Deferred`].
    pub async fn acquire(&self, op: Operation, deadline: Instant) -> Result<Permit<'_>, Deferred> {
        let slot = self.with_family(op, |fam, _| fam.slot.clone());
        let Ok(Ok(slot)) = tokio::time::timeout_at(deadline, slot.acquire_owned()).await else {
            return Err(Deferred { ready_at: deadline });
        };
        loop {
            let now = Instant::now();
            let ready_at = self.with_family(op, |fam, now_ms| {
                let wait_until = fam
                    .backoff_until
                    .into_iter()
                    .chain(fam.not_before)
                    .filter(|t| *t > now)
                    .max();
                if wait_until.is_none() && fam.bucket.try_take(now_ms) {
                    return None;
                }
                let token_at = now + Duration::from_millis(fam.bucket.time_until_available(now_ms));
                Some(token_at.max(wait_until.unwrap_or(now)))
            });
            let Some(ready_at) = ready_at else {
                return Ok(Permit {
                    budget: self,
                    op,
                    _slot: slot,
                });
            };
            if ready_at > deadline {
                return Err(Deferred { ready_at });
            }
            tokio::time::sleep_until(ready_at).await;
        }
    }

    /// Feeds a call's result back: throttling and failures empty the bucket and pause the
    /// operation for an exponentially growing, jittered time; an answer ends the backoff.
    /// Returns the pause imposed, if any.
    pub fn record(&self, op: Operation, result: CallResult) -> Option<Duration> {
        let now = Instant::now();
        self.with_family(op, |fam, now_ms| match result {
            CallResult::Answered => {
                fam.failures = 0;
                None
            }
            CallResult::Throttled | CallResult::Failed => {
                fam.failures = fam.failures.saturating_add(1);
                fam.bucket.drain_on_throttle(now_ms);
                let pause = backoff(fam.failures, rand::thread_rng().gen_range(0.5..=1.0));
                fam.backoff_until = Some(now + pause);
                Some(pause)
            }
        })
    }

    /// The state of one operation's budget now.
    pub fn state(&self, op: Operation) -> FamilyState {
        let now = Instant::now();
        self.with_family(op, |fam, now_ms| FamilyState {
            tokens: f64::from(fam.bucket.available(now_ms)),
            backoff_seconds: fam
                .backoff_until
                .map_or(0.0, |t| t.saturating_duration_since(now).as_secs_f64()),
        })
    }
}

/// The pause after `failures` consecutive failures (1 = first), scaled by `jitter` in
/// `0.5..=1.0` so that several clients do not retry in step.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let full = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_MAX);
    full.mul_f64(jitter.clamp(0.5, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(6, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(60, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(1, 0.5), Duration::from_millis(500));
        assert_eq!(backoff(1, 0.1), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_by_the_rate() {
        let budget = Budget::new(2.0);
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        let mut at = Vec::new();
        for _ in 0..5 {
            let _permit = budget.acquire(Operation::GetStage, far).await.unwrap();
            at.push(start.elapsed().as_millis());
        }
        assert_eq!(at, vec![0, 500, 1000, 1500, 2000]);
        // Another operation has its own bucket.
        drop(budget.acquire(Operation::ListStages, far).await.unwrap());
        assert_eq!(start.elapsed().as_millis(), 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_call_waits_for_the_previous_one_to_end_and_then_the_full_gap() {
        let budget = Arc::new(Budget::new(2.0));
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        let permit = budget.acquire(Operation::GetStage, far).await.unwrap();
        let other = {
            let budget = budget.clone();
            tokio::spawn(async move {
                let _p = budget.acquire(Operation::GetStage, far).await.unwrap();
                Instant::now()
            })
        };
        // The first call takes 800 ms (slow network): the second may start only 500 ms
        // after it ended, although a token was there after 500 ms.
        tokio::time::sleep(Duration::from_millis(800)).await;
        drop(permit);
        let second = other.await.unwrap();
        assert_eq!(second - start, Duration::from_millis(1300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_would_miss_the_deadline_is_deferred_without_taking_a_token() {
        let budget = Budget::new(1.0);
        let start = Instant::now();
        budget
            .acquire(Operation::ListParticipants, start + Duration::from_secs(10))
            .await
            .unwrap();
        let deferred = budget
            .acquire(
                Operation::ListParticipants,
                start + Duration::from_millis(400),
            )
            .await
            .unwrap_err();
        assert_eq!(deferred.ready_at, start + Duration::from_secs(1));
        assert_eq!(start.elapsed(), Duration::ZERO, "a deferral does not wait");
        budget
            .acquire(Operation::ListParticipants, start + Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_pauses_the_operation_and_success_resets_the_backoff() {
        let budget = Budget::new(2.0);
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        drop(budget.acquire(Operation::GetStage, far).await.unwrap());
        let p1 = budget
            .record(Operation::GetStage, CallResult::Throttled)
            .unwrap();
        assert!(p1 >= Duration::from_millis(500) && p1 <= Duration::from_secs(1));
        assert!(budget.state(Operation::GetStage).backoff_seconds > 0.0);
        drop(budget.acquire(Operation::GetStage, far).await.unwrap());
        assert!(start.elapsed() >= p1);
        let p2 = budget
            .record(Operation::GetStage, CallResult::Failed)
            .unwrap();
        assert!(p2 >= Duration::from_secs(1) && p2 <= Duration::from_secs(2));
        let before = start.elapsed();
        drop(budget.acquire(Operation::GetStage, far).await.unwrap());
        assert!(start.elapsed() - before >= p2);
        assert_eq!(
            budget.record(Operation::GetStage, CallResult::Answered),
            None
        );
        let p3 = budget
            .record(Operation::GetStage, CallResult::Throttled)
            .unwrap();
        assert!(
            p3 <= Duration::from_secs(1),
            "the backoff restarts after a success"
        );
        // Other operations are not paused.
        let t = start.elapsed();
        drop(budget.acquire(Operation::ListStages, far).await.unwrap());
        assert_eq!(start.elapsed(), t);
    }
}
