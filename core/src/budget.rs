//! The account-wide budget of IVS stage operations, pure: a [`SlotSchedule`] hands out time
//! slots for one operation so that every caller together stays within IVS's rate.
//!
//! IVS limits `CreateStage`, `DeleteStage`, `StartParticipantReplication` and
//! `StopParticipantReplication` to 5 requests per second each, per account and region, however
//! many broadcasts ask. One schedule per operation (held by the worker's `IvsBudget` Durable
//! Object, one per IVS endpoint and region) gives each caller the earliest instant it may call;
//! the caller sleeps until then instead of polling. The rules, for a [`SlotRate`] of `N` per
//! second with a burst of `B`:
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

/// IVS's rate for each stage operation stagefan makes (per account and region), from the one
/// table of IVS's documented rates, [`Operation::documented_tps`].
pub const IVS_STAGE_OPERATION_TPS: u32 = Operation::CreateStage.documented_tps();
/// IVS's rate of `CreateParticipantToken`, per account and region.
pub const IVS_CREATE_TOKEN_TPS: u32 = Operation::CreateParticipantToken.documented_tps();
/// Default margin added to the 1-second window, in milliseconds.
pub const DEFAULT_GUARD_MS: u64 = 100;

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

/// The rates of the budgeted operations (set by the configuration, `IVS_*_TPS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetConfig {
    /// `IVS_CREATE_STAGE_TPS`: `CreateStage` calls per second, default 5.
    pub create_stage_tps: u32,
    /// `IVS_DELETE_STAGE_TPS`: `DeleteStage` calls per second, default 5.
    pub delete_stage_tps: u32,
    /// `IVS_REPLICATION_TPS`: `StartParticipantReplication` calls per second, and as many
    /// `StopParticipantReplication`, default 5.
    pub replication_tps: u32,
    /// `IVS_CREATE_TOKEN_TPS`: `CreateParticipantToken` calls per second (`api` token
    /// mode), default 50.
    pub create_token_tps: u32,
    /// `IVS_PARTICIPANT_TPS`: `DisconnectParticipant` calls per second (strangers: viewers
    /// still connected after their seat went), and as many `GetStage` (checking a stage a
    /// viewer found missing), default 5.
    pub participant_tps: u32,
    /// `IVS_BUDGET_GUARD_MS`: margin added to the 1-second window, default 100.
    pub guard_ms: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            create_stage_tps: IVS_STAGE_OPERATION_TPS,
            delete_stage_tps: IVS_STAGE_OPERATION_TPS,
            replication_tps: IVS_STAGE_OPERATION_TPS,
            create_token_tps: IVS_CREATE_TOKEN_TPS,
            participant_tps: IVS_STAGE_OPERATION_TPS,
            guard_ms: DEFAULT_GUARD_MS,
        }
    }
}

impl BudgetConfig {
    /// The schedule's rate for `op`, or `None` when `op` is not budgeted here. The burst is
    /// the whole per-second rate, as IVS's own limiter allows.
    pub fn rate(&self, op: Operation) -> Option<SlotRate> {
        let tps = match op {
            Operation::CreateStage => self.create_stage_tps,
            Operation::DeleteStage => self.delete_stage_tps,
            Operation::StartParticipantReplication | Operation::StopParticipantReplication => {
                self.replication_tps
            }
            Operation::CreateParticipantToken => self.create_token_tps,
            Operation::DisconnectParticipant | Operation::GetStage => self.participant_tps,
            _ => return None,
        };
        Some(SlotRate::new(tps, tps, self.guard_ms))
    }

    /// The operations with a schedule.
    pub const OPERATIONS: [Operation; 7] = [
        Operation::CreateStage,
        Operation::DeleteStage,
        Operation::StartParticipantReplication,
        Operation::StopParticipantReplication,
        Operation::CreateParticipantToken,
        Operation::DisconnectParticipant,
        Operation::GetStage,
    ];
}
