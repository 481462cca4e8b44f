//! Pacing calls to IVS, pure: the two pacers every adapter uses, driven by `now` arguments.
//!
//! - [`SlotSchedule`] hands out time slots for one operation so that every caller together
//!   stays within a rate: the account-wide budget of IVS stage operations
//!   ([`crate::budget`], held by the worker's `IvsBudget` Durable Object) and the pools'
//!   fallback when that object cannot be reached.
//! - [`TokenBucket`] lets a call through now or not: the worker's replication calls, the
//!   monitor's per-operation budget, and ivs-local's emulation of IVS's own rate limiter.
//!
//! The rules of a [`SlotSchedule`] for a [`SlotRate`] of `N` per second with a burst of `B`:
//!
//! - slots are handed out in order and no two are equal (each is at least 1 ms after the
//!   previous one);
//! - at most `N` slots fall in any window of `1 s + guard` (the guard absorbs the jitter
//!   between a slot and the request's arrival at IVS, so IVS never sees more than `N` in any
//!   1-second window);
//! - beyond a burst of `B`, slots are spread at `1/N` apart on average: any `B + 1`
//!   consecutive slots span at least `B × (1 s + guard) / N`.
//!
//! Only the last `N` slots are kept: a slot in the past constrains nothing once its window has
//! passed, so a reservation that was never used (its caller changed its mind or died) costs
//! at most one window of capacity, and after idle time the next caller gets `now`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::ivs::Operation;
use crate::time::Millis;

/// The rate of one operation's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRate {
    /// Slots in any window of `1 s + guard_ms` at most (at least 1).
    pub per_second: u32,
    /// Slots that may come back to back (1 ms apart) after idle time, 1..=`per_second`.
    pub burst: u32,
    /// Milliseconds added to the 1-second window.
    pub guard_ms: u64,
}

impl SlotRate {
    /// A rate of `per_second` with a burst of `burst` (both clamped to sensible bounds).
    pub fn new(per_second: u32, burst: u32, guard_ms: u64) -> SlotRate {
        let per_second = per_second.max(1);
        SlotRate {
            per_second,
            burst: burst.clamp(1, per_second),
            guard_ms,
        }
    }

    /// The window in which at most `per_second` slots fall.
    pub fn window_ms(&self) -> Millis {
        1_000 + self.guard_ms
    }

    /// The least span of `burst + 1` consecutive slots.
    pub fn burst_span_ms(&self) -> Millis {
        (u64::from(self.burst) * self.window_ms()).div_ceil(u64::from(self.per_second))
    }
}

/// One operation's schedule: the slots handed out recently (at most `per_second` of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotSchedule {
    recent: VecDeque<Millis>,
}

impl SlotSchedule {
    /// An empty schedule (the next caller gets `now`).
    pub fn new() -> SlotSchedule {
        SlotSchedule::default()
    }

    /// The slot the next reservation would get at `now`, without taking it.
    pub fn next_slot(&self, rate: &SlotRate, now: Millis) -> Millis {
        let mut slot = now;
        let n = self.recent.len();
        if let Some(&last) = self.recent.back() {
            slot = slot.max(last + 1);
        }
        let burst = rate.burst as usize;
        if n >= burst {
            slot = slot.max(self.recent[n - burst] + rate.burst_span_ms());
        }
        let per_second = rate.per_second as usize;
        if n >= per_second {
            slot = slot.max(self.recent[n - per_second] + rate.window_ms());
        }
        slot
    }

    /// Reserves the next slot at `now`: the earliest instant its holder may make the call.
    pub fn reserve(&mut self, rate: &SlotRate, now: Millis) -> Millis {
        let slot = self.next_slot(rate, now);
        self.recent.push_back(slot);
        while self.recent.len() > rate.per_second as usize {
            self.recent.pop_front();
        }
        slot
    }

    /// IVS throttled a call anyway (another client of the account, or a clock off): count a
    /// full window as used at `now`, so the next slot is a window later.
    pub fn throttled(&mut self, rate: &SlotRate, now: Millis) {
        let last = self.recent.back().copied().unwrap_or(0).max(now);
        self.recent.clear();
        self.recent
            .extend(std::iter::repeat_n(last, rate.per_second as usize));
    }

    /// The slots kept (ascending), for inspection.
    pub fn recent(&self) -> impl Iterator<Item = Millis> + '_ {
        self.recent.iter().copied()
    }
}

/// Micro-tokens per token: the bucket counts in millionths so that fractional refill rates
/// (0.5 per second) stay exact in integers.
const MICRO: u64 = 1_000_000;

/// A token bucket driven by `now` arguments: `capacity` tokens at most, refilled at
/// `refill_per_second`. Full when made. Time that goes backwards refills nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenBucket {
    capacity_micro: u64,
    /// Micro-tokens added per millisecond (= tokens per second × 1000).
    refill_micro_per_ms: u64,
    tokens_micro: u64,
    updated_at: Millis,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens (at least 1) refilled at `refill_per_second`
    /// (at least 0.001, precise to 0.001).
    pub fn new(capacity: u32, refill_per_second: f64, now: Millis) -> TokenBucket {
        let capacity_micro = u64::from(capacity.max(1)) * MICRO;
        let per_ms = if refill_per_second.is_finite() {
            (refill_per_second * 1000.0).round()
        } else {
            1.0
        };
        let refill_micro_per_ms = if per_ms < 1.0 { 1 } else { per_ms as u64 };
        TokenBucket {
            capacity_micro,
            refill_micro_per_ms,
            tokens_micro: capacity_micro,
            updated_at: now,
        }
    }

    /// A full bucket of one second's worth of tokens (at least one, fractions kept) refilled
    /// at `per_second`: a rate limiter that never throttles a client that keeps to the rate
    /// in every 1-second window, as IVS's own does (and ivs-local's emulation of it).
    pub fn one_second(per_second: f64, now: Millis) -> TokenBucket {
        let mut bucket = TokenBucket::new(1, per_second, now);
        if per_second.is_finite() && per_second > 1.0 {
            bucket.capacity_micro = (per_second * MICRO as f64).round() as u64;
            bucket.tokens_micro = bucket.capacity_micro;
        }
        bucket
    }

    /// The bucket IVS's `CreateStage` limit calls for: a second's worth of tokens, refilled
    /// at IVS's documented rate ([`Operation::documented_tps`]).
    pub fn create_stage(now: Millis) -> TokenBucket {
        TokenBucket::one_second(f64::from(Operation::CreateStage.documented_tps()), now)
    }

    /// Most tokens the bucket holds.
    pub fn capacity(&self) -> u32 {
        (self.capacity_micro / MICRO) as u32
    }

    /// Tokens added per second.
    pub fn refill_per_second(&self) -> f64 {
        self.refill_micro_per_ms as f64 / 1000.0
    }

    fn level(&self, now: Millis) -> u64 {
        let elapsed = now.saturating_sub(self.updated_at);
        self.tokens_micro
            .saturating_add(elapsed.saturating_mul(self.refill_micro_per_ms))
            .min(self.capacity_micro)
    }

    fn refill(&mut self, now: Millis) {
        self.tokens_micro = self.level(now);
        self.updated_at = self.updated_at.max(now);
    }

    /// Whole tokens available at `now`.
    pub fn available(&self, now: Millis) -> u32 {
        (self.level(now) / MICRO) as u32
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Millis) -> bool {
        self.try_take_n(1, now)
    }

    /// Takes `n` tokens if all are there (none otherwise).
    pub fn try_take_n(&mut self, n: u32, now: Millis) -> bool {
        self.refill(now);
        let need = u64::from(n) * MICRO;
        if self.tokens_micro >= need {
            self.tokens_micro -= need;
            true
        } else {
            false
        }
    }

    /// Milliseconds from `now` until one token is available (0 if one is).
    pub fn time_until_available(&self, now: Millis) -> Millis {
        let level = self.level(now);
        if level >= MICRO {
            0
        } else {
            (MICRO - level).div_ceil(self.refill_micro_per_ms)
        }
    }

    /// Takes back the effect of a throttled call: empties the bucket at `now`, so the next
    /// token comes after a full refill interval (a server's "slow down" overrides our count).
    pub fn drain_on_throttle(&mut self, now: Millis) {
        self.refill(now);
        self.tokens_micro = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_second_bucket_holds_a_seconds_worth_fractions_kept() {
        let mut b = TokenBucket::one_second(2.5, 0);
        assert!(b.try_take(0) && b.try_take(0));
        assert!(!b.try_take(0), "2.5 tokens make a burst of 2");
        // 0.5 left; 1 more after 200 ms at 2.5 per second.
        assert!(!b.try_take(199));
        assert!(b.try_take(200));
        let mut slow = TokenBucket::one_second(0.5, 0);
        assert!(slow.try_take(0));
        assert!(!slow.try_take(1_999));
        assert!(slow.try_take(2_000));
        assert_eq!(TokenBucket::create_stage(0), TokenBucket::new(5, 5.0, 0));
    }
}
