//! The `IvsBudget` Durable Object: the account-wide budget of IVS stage operations, one
//! instance per IVS endpoint and region (`idFromName("{endpoint} {region}")`), shared by every
//! `StagePool`.
//!
//! IVS limits `CreateStage`, `DeleteStage` and the participant-replication calls to 5 per
//! second per account and region, whatever the number of broadcasts. A pool asks
//! (`calls::BudgetCall::Reserve`, `{"reserve":{"operation":"CreateStage",...}}`) before each
//! such call and gets the earliest instant it may make it (`stagefan_core::budget::SlotSchedule`); it sleeps until
//! then. A reservation is read, decided and written in one synchronous turn (no await in
//! between), so no two callers get the same slot; the schedule is stored in SQLite so that a
//! restarted instance does not hand out slots that are already taken.
//!
//! It also keeps the account-quota ledger of its region (`stagefan_core::ledger`): the
//! grants of concurrent subscriptions, publishers and stages each pool holds
//! (`BudgetCall::Grant`, `Renew`, `Return`), one row per holder in table `grants`, decided
//! and written in one synchronous turn like a slot.
//!
//! A class of its own rather than a part of the `Registry`: the registry holds its input gate
//! closed during the public-key import (several IVS calls), which would stall every
//! reservation behind it, and a budget per endpoint and region is a different key than the
//! one registry.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use stagefan_core::budget::{BudgetConfig, SlotSchedule};
use stagefan_core::ivs::Operation;
use stagefan_core::ledger::{GrantAnswer, Ledger, LedgerConfig, LedgerUsage, Quotas};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use crate::calls::{self, BudgetCall};
use crate::error::{AppError, AppResult};
use crate::runtime;
use crate::settings::Settings;

/// A slot granted by the budget.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    /// The instant (unix ms, the budget's clock) the call may be made.
    pub at: u64,
    /// Milliseconds from the budget's `now` until then (for logs).
    pub wait_ms: u64,
}

#[durable_object]
pub struct IvsBudget {
    sql: SqlStorage,
    config: std::result::Result<(BudgetConfig, LedgerConfig), String>,
    schedules: RefCell<Option<BTreeMap<String, SlotSchedule>>>,
    ledger: RefCell<Option<Ledger>>,
}

impl DurableObject for IvsBudget {
    fn new(state: State, env: Env) -> Self {
        IvsBudget {
            sql: state.storage().sql(),
            config: Settings::from_env(&env)
                .map(|s| (s.config.budget, s.config.quota))
                .map_err(|e| format!("{e:?}")),
            schedules: RefCell::new(None),
            ledger: RefCell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let result: AppResult<serde_json::Value> =
            match calls::receive::<BudgetCall>(&mut req, "IVS budget").await {
                Ok(BudgetCall::Reserve {
                    operation,
                    throttled,
                }) => self.reserve(&operation, throttled).and_then(to_value),
                Ok(BudgetCall::Grant { holder, want }) => {
                    self.ledger_call(&holder, |l, cfg, now| l.grant(cfg, &holder, want, now))
                }
                Ok(BudgetCall::Renew { holder }) => {
                    self.ledger_call(&holder, |l, cfg, now| l.renew(cfg, &holder, now))
                }
                Ok(BudgetCall::Return { holder }) => self.give_back(&holder),
                Ok(BudgetCall::Usage {}) => self.usage().and_then(to_value),
                Err(e) => Err(e),
            };
        calls::answer(result)
    }
}

impl IvsBudget {
    /// Reserves the next slot of `name` (an IVS operation); `throttled` says the caller's last
    /// call of it was throttled by IVS, which pushes the schedule a window back first.
    fn reserve(&self, name: &str, throttled: bool) -> AppResult<Slot> {
        let (config, _) = self.configs()?;
        let rate = Operation::from_name(name)
            .and_then(|op| config.rate(op))
            .ok_or_else(|| {
                AppError::bad_field("operation", format!("{name:?} has no budget here"))
            })?;
        let now = runtime::now_ms();
        let mut schedules = self.schedules.borrow_mut();
        let schedules = match schedules.as_mut() {
            Some(s) => s,
            None => schedules.insert(self.load()?),
        };
        let schedule = schedules.entry(name.to_string()).or_default();
        if throttled {
            schedule.throttled(&rate, now);
        }
        let at = schedule.reserve(&rate, now);
        self.sql.exec(
            "INSERT INTO schedules (operation, row) VALUES (?, ?) ON CONFLICT(operation) DO UPDATE SET row = excluded.row",
            vec![name.into(), serde_json::to_string(schedule)?.into()],
        )?;
        Ok(Slot {
            at,
            wait_ms: at.saturating_sub(now),
        })
    }

    fn configs(&self) -> AppResult<&(BudgetConfig, LedgerConfig)> {
        self.config
            .as_ref()
            .map_err(|e| AppError::Internal(e.clone()))
    }

    /// Runs one ledger decision and stores what it changed: the holder's row, and the rows
    /// of grants that lapsed.
    fn ledger_call(
        &self,
        holder: &str,
        decide: impl FnOnce(&mut Ledger, &LedgerConfig, u64) -> GrantAnswer,
    ) -> AppResult<serde_json::Value> {
        let (_, cfg) = self.configs()?;
        let now = runtime::now_ms();
        let mut ledger = self.ledger.borrow_mut();
        let ledger = match ledger.as_mut() {
            Some(l) => l,
            None => ledger.insert(self.load_ledger()?),
        };
        for lapsed in ledger.expire(now) {
            worker::console_warn!("quota grant of {lapsed} lapsed (not renewed): reclaimed");
            self.sql
                .exec("DELETE FROM grants WHERE holder = ?", vec![lapsed.into()])?;
        }
        let answer = decide(ledger, cfg, now);
        match ledger.holding(holder) {
            Some(grant) => self.sql.exec(
                "INSERT INTO grants (holder, row) VALUES (?, ?) ON CONFLICT(holder) DO UPDATE SET row = excluded.row",
                vec![holder.into(), serde_json::to_string(grant)?.into()],
            )?,
            None => self
                .sql
                .exec("DELETE FROM grants WHERE holder = ?", vec![holder.into()])?,
        };
        to_value(answer)
    }

    /// The region's use of its quotas, read without a decision (lapsed grants left out).
    fn usage(&self) -> AppResult<LedgerUsage> {
        let (_, cfg) = self.configs()?;
        let mut ledger = self.ledger.borrow_mut();
        let ledger = match ledger.as_mut() {
            Some(l) => l,
            None => ledger.insert(self.load_ledger()?),
        };
        Ok(ledger.usage(cfg, runtime::now_ms()))
    }

    fn give_back(&self, holder: &str) -> AppResult<serde_json::Value> {
        let held = self
            .ledger
            .borrow()
            .as_ref()
            .map(|l| l.holding(holder).is_some());
        self.ledger_call(holder, |l, cfg, now| {
            l.grant(cfg, holder, Quotas::ZERO, now)
        })?;
        Ok(serde_json::json!({"returned": held.unwrap_or(true)}))
    }

    fn load_ledger(&self) -> AppResult<Ledger> {
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS grants (holder TEXT PRIMARY KEY, row TEXT NOT NULL)",
            None,
        )?;
        #[derive(Deserialize)]
        struct Row {
            row: String,
        }
        let rows: Vec<Row> = self.sql.exec("SELECT row FROM grants", None)?.to_array()?;
        let grants = rows
            .iter()
            .map(|r| serde_json::from_str(&r.row))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Ledger::from_rows(grants))
    }

    fn load(&self) -> AppResult<BTreeMap<String, SlotSchedule>> {
        self.sql.exec(
            "CREATE TABLE IF NOT EXISTS schedules (operation TEXT PRIMARY KEY, row TEXT NOT NULL)",
            None,
        )?;
        #[derive(Deserialize)]
        struct Row {
            operation: String,
            row: String,
        }
        let rows: Vec<Row> = self
            .sql
            .exec("SELECT operation, row FROM schedules", None)?
            .to_array()?;
        let mut schedules = BTreeMap::new();
        for r in rows {
            // A row that does not read (an older format) is an empty schedule: at worst one
            // window of calls too early after a deploy, which IVS's throttling then paces.
            let schedule = serde_json::from_str(&r.row).unwrap_or_default();
            schedules.insert(r.operation, schedule);
        }
        Ok(schedules)
    }
}

fn to_value(answer: impl Serialize) -> AppResult<serde_json::Value> {
    Ok(serde_json::to_value(answer)?)
}

/// Asks the ledger of `endpoint` + `region` to set what `holder` holds to `want` (or as near
/// as the region allows; see `stagefan_core::ledger::Ledger::grant`).
pub async fn grant(
    env: &Env,
    endpoint: &str,
    region: &str,
    holder: &str,
    want: Quotas,
) -> AppResult<GrantAnswer> {
    let call = BudgetCall::Grant {
        holder: holder.to_string(),
        want,
    };
    calls::send_for(
        env,
        "IVS_BUDGET",
        &format!("{endpoint} {region}"),
        "https://budget/grant",
        &call,
        "quota grant",
    )
    .await
}

/// Reads the quota ledger of `endpoint` + `region`.
pub async fn usage(env: &Env, endpoint: &str, region: &str) -> AppResult<LedgerUsage> {
    calls::send_for(
        env,
        "IVS_BUDGET",
        &format!("{endpoint} {region}"),
        "https://budget/usage",
        &BudgetCall::Usage {},
        "quota usage",
    )
    .await
}

/// Asks the budget of `endpoint` + `region` for the next slot of `op`.
pub async fn reserve(
    env: &Env,
    endpoint: &str,
    region: &str,
    op: Operation,
    throttled: bool,
) -> AppResult<Slot> {
    let call = BudgetCall::Reserve {
        operation: op.name().to_string(),
        throttled,
    };
    calls::send_for(
        env,
        "IVS_BUDGET",
        &format!("{endpoint} {region}"),
        "https://budget/reserve",
        &call,
        &format!("budget reserve {}", op.name()),
    )
    .await
}
