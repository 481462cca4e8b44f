//! The account-wide budget of IVS stage operations, pure: a [`SlotSchedule`] hands out time
//! slots for one operation so that every caller together stays within IVS's rate.
//!
//! IVS limits `CreateStage`, `DeleteStage`, `StartParticipantReplication` and
//! `StopParticipantReplication` to 5 requests per second each ([`Operation::documented_tps`]),
//! per account and region, however many broadcasts ask. One schedule per operation (held by
//! the worker's `IvsBudget` Durable Object, one per IVS endpoint and region) gives each caller
//! the earliest instant it may call; the caller sleeps until then instead of polling. The
//! schedule's rules are in [`crate::pacing`].

use serde::{Deserialize, Serialize};

use crate::ivs::Operation;
pub use crate::pacing::{SlotRate, SlotSchedule};

/// IVS's rate for each stage operation stagefan makes (per account and region), from the one
/// table of IVS's documented rates, [`Operation::documented_tps`].
pub const IVS_STAGE_OPERATION_TPS: u32 = Operation::CreateStage.documented_tps();
/// IVS's rate of `CreateParticipantToken`, per account and region.
pub const IVS_CREATE_TOKEN_TPS: u32 = Operation::CreateParticipantToken.documented_tps();
/// Default margin added to the 1-second window, in milliseconds.
pub const DEFAULT_GUARD_MS: u64 = 100;

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
    /// viewer found missing) and `ListStages` (the pages of a create's lookup by name: with
    /// 500 stages or more one lookup alone sent 6 pages in a second, found by `sim/`),
    /// default 5.
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
            Operation::DisconnectParticipant | Operation::GetStage | Operation::ListStages => {
                self.participant_tps
            }
            _ => return None,
        };
        Some(SlotRate::new(tps, tps, self.guard_ms))
    }

    /// The operations with a schedule.
    pub const OPERATIONS: [Operation; 8] = [
        Operation::CreateStage,
        Operation::DeleteStage,
        Operation::StartParticipantReplication,
        Operation::StopParticipantReplication,
        Operation::CreateParticipantToken,
        Operation::DisconnectParticipant,
        Operation::GetStage,
        Operation::ListStages,
    ];
}
