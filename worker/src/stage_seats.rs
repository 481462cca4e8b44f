//! The `StageSeats` Durable Object: one per stage of a broadcast in stage presence
//! (`idFromName("<pool>/<stage>")`, the pool `<broadcast>` or `<broadcast>@<region>`,
//! `calls::stage_seats_name`), the keeper of that stage's
//! leases (`stagefan_core::presence::StageLeases`). Heartbeats and leaves come here from the
//! edge, routed by the lease id alone; new seats and reconnects come from the pool (`admit`),
//! which alone grants seats. Frees go back to the pool in batches: a leave at once, lapses
//! from the alarm at most every `REPORT_INTERVAL_MS` (docs/presence.md).
//!
//! Storage is SQLite, written in the same turn as each mutation: `meta` (one JSON row),
//! `leases` (id, expires_at) and `frees` (id, kind: not yet acknowledged by the pool). An
//! object nobody admitted a lease to has no tables, and a heartbeat there creates none.

use std::cell::RefCell;
use std::time::Duration;

use serde::Deserialize;
use stagefan_core::pool::StageId;
use stagefan_core::presence::{
    Free, FreeKind, PresenceError, StageLeases, StageMeta, StageRows, StageStatus,
};
use worker::{durable_object, DurableObject, Env, Request, Response, Result, SqlStorage, State};

use crate::calls::{self, Admitted, ObjectCounters, PoolCall, Renewed, StageCall};
use crate::error::{AppError, AppResult};
use crate::pool_object::slots::CreateSignal;
use crate::runtime;
use crate::settings::Settings;

/// Rounds a leave waits for the report of its free before leaving it to the alarm.
const REPORT_ROUNDS: u32 = 4;

#[durable_object]
pub struct StageSeats {
    state: State,
    env: Env,
    sql: SqlStorage,
    ttl_ms: std::result::Result<u64, String>,
    inner: RefCell<Inner>,
    /// Signalled whenever a report to the pool ends.
    reported: CreateSignal,
}

#[derive(Default)]
struct Inner {
    loaded: bool,
    table: Option<StageLeases>,
    /// When the alarm is set for, if this instance set one.
    alarm_at: Option<u64>,
    /// Whether a report to the pool is in flight (one at a time: the leaves that come
    /// meanwhile go in the next).
    reporting: bool,
    counters: ObjectCounters,
}

impl DurableObject for StageSeats {
    fn new(state: State, env: Env) -> Self {
        let sql = state.storage().sql();
        let ttl_ms = Settings::from_env(&env)
            .map(|s| u64::from(s.config.lease_ttl_seconds) * 1000)
            .map_err(|e| format!("{e:?}"));
        StageSeats {
            state,
            env,
            sql,
            ttl_ms,
            inner: RefCell::new(Inner::default()),
            reported: CreateSignal::default(),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // `/<call>/<broadcast>/<stage>`: the call's name is for logs, the call is the body.
        let path = req.path();
        let mut parts = path.trim_start_matches('/').splitn(3, '/').skip(1);
        let broadcast = parts.next().unwrap_or_default().to_string();
        let stage = parts.next().and_then(|s| s.parse::<u64>().ok());
        let result = match (
            calls::receive::<StageCall>(&mut req, "stage seats").await,
            stage,
        ) {
            (Ok(call), Some(stage)) => self.handle(&broadcast, StageId(stage), call).await,
            (Ok(_), None) => Err(AppError::bad_request(
                "invalid_call",
                "a stage seats call names /<call>/<broadcast>/<stage>",
            )),
            (Err(e), _) => Err(e),
        };
        calls::answer(result)
    }

    async fn alarm(&self) -> Result<Response> {
        {
            let mut inner = self.inner.borrow_mut();
            inner.alarm_at = None;
            inner.counters.alarms += 1;
        }
        if let Err(e) = self.wake().await {
            worker::console_error!("stage seats alarm: {e:?}");
        }
        Response::ok("ok")
    }
}

impl StageSeats {
    async fn handle(
        &self,
        broadcast: &str,
        stage: StageId,
        call: StageCall,
    ) -> AppResult<serde_json::Value> {
        if !matches!(call, StageCall::Stats) {
            self.inner.borrow_mut().counters.count(call.name());
        }
        self.load()?;
        let now = runtime::now_ms();
        let value = match call {
            StageCall::Admit {
                lease_id,
                reconnect,
                status,
            } => {
                let ttl_ms = self.ttl_ms()?;
                let expires_at = {
                    let mut inner = self.inner.borrow_mut();
                    if inner.table.is_none() {
                        self.create_tables()?;
                        inner.table = Some(StageLeases::new(broadcast, stage, ttl_ms, status, now));
                    }
                    let table = inner.table.as_mut().expect("made above");
                    table.set_status(status);
                    table.admit(&lease_id, reconnect, now)
                };
                self.persist()?;
                let expires_at = expires_at.map_err(presence_error)?;
                self.schedule(now).await;
                serde_json::to_value(Admitted { expires_at })?
            }
            StageCall::Heartbeat { lease_id } => {
                let renewed = self.mutate(|t| {
                    let expires_at = t.heartbeat(&lease_id, now)?;
                    let life = t.status().life_at(now);
                    Ok(Renewed {
                        lease_id: lease_id.clone(),
                        expires_at,
                        broadcast_state: life.state,
                        broadcast_state_since: life.since,
                        moving: t.status().draining,
                    })
                });
                let renewed = renewed.ok_or_else(AppError::lease_not_found)?;
                let renewed = renewed.map_err(presence_error)?;
                self.persist()?;
                if self.inner.borrow().alarm_at.is_none() {
                    // A new instance (after a restart) makes sure its lapses will be reported
                    // even if the stored alarm was lost.
                    self.schedule(now).await;
                }
                serde_json::to_value(renewed)?
            }
            StageCall::Leave { lease_id } => {
                let left = self.mutate(|t| Ok(t.leave(&lease_id, now)));
                self.persist()?;
                if matches!(left, Some(Ok(true))) {
                    // A leave is reported before its answer: the seat is free for the next
                    // viewer now.
                    self.report_free(&lease_id).await;
                    self.schedule(now).await;
                }
                serde_json::json!({"left": true})
            }
            StageCall::Sync { status } => {
                let synced = self.mutate(|t| {
                    t.set_status(status);
                    Ok(())
                });
                if synced.is_some() {
                    self.persist()?;
                }
                serde_json::json!({"synced": true})
            }
            StageCall::Stats => {
                let mut inner = self.inner.borrow_mut();
                let (leases, pending) = inner
                    .table
                    .as_ref()
                    .map_or((0, 0), |t| (t.len() as u64, t.pending() as u64));
                inner.counters.leases = leases;
                inner.counters.pending_frees = pending;
                serde_json::to_value(&inner.counters)?
            }
        };
        Ok(value)
    }

    fn ttl_ms(&self) -> AppResult<u64> {
        self.ttl_ms
            .clone()
            .map_err(|e| AppError::Internal(format!("settings: {e}")))
    }

    /// Runs `f` on the table, if this object has one.
    fn mutate<T>(
        &self,
        f: impl FnOnce(&mut StageLeases) -> std::result::Result<T, PresenceError>,
    ) -> Option<std::result::Result<T, PresenceError>> {
        let mut inner = self.inner.borrow_mut();
        inner.table.as_mut().map(f)
    }

    /// The alarm: lapses, the report if one is due, the next alarm.
    async fn wake(&self) -> AppResult<()> {
        self.load()?;
        let now = runtime::now_ms();
        let due = self
            .mutate(|t| {
                t.expire(now);
                Ok(t.report_due(now) || t.pending() > 0)
            })
            .and_then(|r| r.ok())
            .unwrap_or(false);
        self.persist()?;
        if due {
            if let Err(e) = self.report().await {
                worker::console_error!("reporting to the pool: {e:?}");
            }
        }
        self.schedule(runtime::now_ms()).await;
        Ok(())
    }

    /// Reports until the pool has acknowledged the free of `lease_id`, one report in flight
    /// at a time: concurrent leaves of this stage travel together in the next report. After
    /// a few failed rounds it is left to the alarm.
    async fn report_free(&self, lease_id: &str) {
        for _ in 0..REPORT_ROUNDS {
            let pending = self
                .inner
                .borrow()
                .table
                .as_ref()
                .is_some_and(|t| t.free_kind(lease_id).is_some());
            if !pending {
                return;
            }
            if self.inner.borrow().reporting {
                self.reported.wait(Duration::from_secs(2)).await;
                continue;
            }
            if let Err(e) = self.report().await {
                worker::console_error!("reporting a leave to the pool: {e:?}");
            }
        }
    }

    /// Sends the waiting frees to the pool (also an empty batch: a sync) and takes its
    /// status from the answer; one report in flight at a time (`reporting`). A failure keeps
    /// them waiting for the next alarm.
    async fn report(&self) -> AppResult<()> {
        {
            let mut inner = self.inner.borrow_mut();
            if inner.reporting {
                return Ok(());
            }
            inner.reporting = true;
        }
        let sent = self.send_report().await;
        self.inner.borrow_mut().reporting = false;
        self.reported.notify();
        sent
    }

    async fn send_report(&self) -> AppResult<()> {
        let (broadcast, stage, batch) = {
            let inner = self.inner.borrow();
            let Some(t) = inner.table.as_ref() else {
                return Ok(());
            };
            (t.meta().broadcast.clone(), t.meta().stage, t.batch())
        };
        let call = PoolCall::StageReport {
            stage,
            frees: batch.clone(),
        };
        self.inner.borrow_mut().counters.sent(call.name());
        let url = format!("https://pool/{}/{broadcast}", call.name());
        let status: StageStatus = calls::send_for(
            &self.env,
            "STAGE_POOL",
            &broadcast,
            &url,
            &call,
            "stage report",
        )
        .await?;
        let now = runtime::now_ms();
        self.mutate(|t| {
            t.reported(&batch, status, now);
            Ok(())
        });
        self.persist()
    }

    /// Sets the alarm for the table's next wake, unless one is set for no later.
    async fn schedule(&self, now: u64) {
        let at = {
            let inner = self.inner.borrow();
            let Some(at) = inner.table.as_ref().and_then(|t| t.next_wake(now)) else {
                return;
            };
            if inner.alarm_at.is_some_and(|set| set <= at) {
                return;
            }
            at
        };
        self.inner.borrow_mut().alarm_at = Some(at);
        let _ = self
            .state
            .storage()
            .set_alarm(at.saturating_sub(now).max(1) as i64)
            .await;
    }

    /// Loads the table from SQLite, once (nothing is created for an object without one).
    fn load(&self) -> AppResult<()> {
        if self.inner.borrow().loaded {
            return Ok(());
        }
        #[derive(Deserialize)]
        struct Count {
            n: i64,
        }
        let tables: Vec<Count> = self
            .sql
            .exec(
                "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                None,
            )?
            .to_array()?;
        let table = if tables.first().is_some_and(|c| c.n > 0) {
            #[derive(Deserialize)]
            struct Row {
                row: String,
            }
            #[derive(Deserialize)]
            struct LeaseRow {
                id: String,
                expires_at: i64,
            }
            #[derive(Deserialize)]
            struct FreeRow {
                id: String,
                kind: String,
            }
            let meta: Vec<Row> = self.sql.exec("SELECT row FROM meta", None)?.to_array()?;
            let meta = match meta.first() {
                Some(r) => Some(serde_json::from_str::<StageMeta>(&r.row)?),
                None => None,
            };
            let leases: Vec<LeaseRow> = self
                .sql
                .exec("SELECT id, expires_at FROM leases", None)?
                .to_array()?;
            let frees: Vec<FreeRow> = self
                .sql
                .exec("SELECT id, kind FROM frees", None)?
                .to_array()?;
            let rows = StageRows {
                meta,
                leases: leases
                    .into_iter()
                    .map(|l| (l.id, l.expires_at.max(0) as u64))
                    .collect(),
                frees: frees
                    .into_iter()
                    .map(|f| Free {
                        lease_id: f.id,
                        kind: if f.kind == "left" {
                            FreeKind::Left
                        } else {
                            FreeKind::Lapsed
                        },
                    })
                    .collect(),
            };
            StageLeases::from_rows(self.ttl_ms()?, rows)
        } else {
            None
        };
        let mut inner = self.inner.borrow_mut();
        inner.table = table;
        inner.loaded = true;
        Ok(())
    }

    fn create_tables(&self) -> AppResult<()> {
        for ddl in [
            "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 1), row TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, expires_at INTEGER NOT NULL)",
            "CREATE TABLE IF NOT EXISTS frees (id TEXT PRIMARY KEY, kind TEXT NOT NULL)",
        ] {
            self.sql.exec(ddl, None)?;
        }
        Ok(())
    }

    /// Writes the rows the last mutations touched.
    fn persist(&self) -> AppResult<()> {
        let mut inner = self.inner.borrow_mut();
        let Some(table) = inner.table.as_mut() else {
            return Ok(());
        };
        let changes = table.take_changes();
        if changes.is_empty() {
            return Ok(());
        }
        if changes.meta {
            self.sql.exec(
                "INSERT INTO meta (id, row) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET row = excluded.row",
                vec![serde_json::to_string(table.meta())?.into()],
            )?;
        }
        for id in &changes.leases_upserted {
            if let Some(at) = table.expires_at(id) {
                self.sql.exec(
                    "INSERT INTO leases (id, expires_at) VALUES (?, ?) \
                     ON CONFLICT(id) DO UPDATE SET expires_at = excluded.expires_at",
                    vec![id.as_str().into(), (at.min(i64::MAX as u64) as i64).into()],
                )?;
            }
        }
        for id in &changes.leases_removed {
            self.sql
                .exec("DELETE FROM leases WHERE id = ?", vec![id.as_str().into()])?;
        }
        for id in &changes.frees_upserted {
            if let Some(kind) = table.free_kind(id) {
                let kind = match kind {
                    FreeKind::Left => "left",
                    FreeKind::Lapsed => "lapsed",
                };
                self.sql.exec(
                    "INSERT INTO frees (id, kind) VALUES (?, ?) \
                     ON CONFLICT(id) DO UPDATE SET kind = excluded.kind",
                    vec![id.as_str().into(), kind.into()],
                )?;
            }
        }
        for id in &changes.frees_removed {
            self.sql
                .exec("DELETE FROM frees WHERE id = ?", vec![id.as_str().into()])?;
        }
        Ok(())
    }
}

fn presence_error(e: PresenceError) -> AppError {
    match e {
        PresenceError::LeaseNotFound => AppError::lease_not_found(),
        PresenceError::StageGone => AppError::Gone {
            code: "stage_gone",
            message: "the stage of this seat is gone: ask for a new seat \
                      (POST /api/token/viewer with this leaseId)"
                .into(),
        },
        PresenceError::Ended => AppError::Gone {
            code: "broadcast_ended",
            message: "the broadcast has ended".into(),
        },
    }
}
