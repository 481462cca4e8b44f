//! The pool's SQLite storage: the schema, the one load of a pool, and the writes of the rows
//! each mutation touched (`Pool::take_changes`), in the same turn of the event loop.
//!
//! Every row is the JSON of one `stagefan_core::pool` record: `meta` (one row), `stages`,
//! `leases`, and `registration` (when the Registry is known to list the pool).

use serde::Deserialize;
use stagefan_core::pool::{Lease, Pool, PoolMeta, PoolRows, Stage, StageId, StageState};

use super::{not_found_pool, Shared};
use crate::error::{AppError, AppResult};
use crate::runtime;

impl Shared {
    /// Loads the pool from SQLite, once.
    pub(super) fn load(&self, broadcast: &str) -> AppResult<()> {
        if self.inner.borrow().loaded {
            return Ok(());
        }
        // A broadcast nobody created has no tables: reading that costs no storage, so a
        // request for an unknown broadcast leaves nothing behind (the tables are made by
        // `ensure`, the only way a pool comes to exist).
        if !self.has_tables()? {
            let mut inner = self.inner.borrow_mut();
            inner.pool = None;
            inner.loaded = true;
            return Ok(());
        }
        self.create_tables()?;
        #[derive(Deserialize)]
        struct RowText {
            row: String,
        }
        let read = |table: &str| -> AppResult<Vec<String>> {
            let rows: Vec<RowText> = self
                .sql
                .exec(&format!("SELECT row FROM {table}"), None)?
                .to_array()?;
            Ok(rows.into_iter().map(|r| r.row).collect())
        };
        let meta = read("meta")?;
        #[derive(Deserialize)]
        struct Registered {
            at: i64,
        }
        let registered: Vec<Registered> = self
            .sql
            .exec("SELECT at FROM registration", None)?
            .to_array()?;
        let registered = registered.first().is_some_and(|r| r.at > 0);
        let pool = match meta.first() {
            None => None,
            Some(meta) => {
                let meta: PoolMeta = serde_json::from_str(meta)?;
                if meta.broadcast != broadcast && !broadcast.is_empty() {
                    return Err(AppError::Internal(format!(
                        "pool of {:?} asked as {broadcast:?}",
                        meta.broadcast
                    )));
                }
                let stages = read("stages")?
                    .iter()
                    .map(|r| serde_json::from_str::<Stage>(r))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let leases = read("leases")?
                    .iter()
                    .map(|r| serde_json::from_str::<Lease>(r))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let settings = self.settings()?.config.pool_settings();
                Some(
                    Pool::from_rows(
                        settings,
                        PoolRows {
                            meta,
                            stages,
                            leases,
                        },
                    )
                    .map_err(|e| AppError::Internal(format!("stored pool: {e}")))?,
                )
            }
        };
        let creating: Vec<StageId> = pool
            .as_ref()
            .map(|p| {
                p.stages()
                    .filter(|s| s.state == StageState::Creating)
                    .map(|s| s.id)
                    .collect()
            })
            .unwrap_or_default();
        {
            let mut inner = self.inner.borrow_mut();
            inner.pool = pool;
            inner.loaded = true;
            inner.registered = registered;
        }
        if !creating.is_empty() {
            // A previous instance died during these creates: they are resolved by the
            // maintenance alarm through `policy::stale_creates` (looked up by name, never
            // created twice).
            worker::console_log!("{} create intents found in flight at load", creating.len());
        }
        Ok(())
    }

    fn has_tables(&self) -> AppResult<bool> {
        #[derive(Deserialize)]
        struct Count {
            n: i64,
        }
        let rows: Vec<Count> = self
            .sql
            .exec(
                "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                None,
            )?
            .to_array()?;
        Ok(rows.first().is_some_and(|c| c.n > 0))
    }

    fn create_tables(&self) -> AppResult<()> {
        for ddl in [
            "CREATE TABLE IF NOT EXISTS meta (id INTEGER PRIMARY KEY CHECK (id = 1), row TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS stages (id INTEGER PRIMARY KEY, row TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS leases (id TEXT PRIMARY KEY, row TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS registration (id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL)",
        ] {
            self.sql.exec(ddl, None)?;
        }
        Ok(())
    }

    /// Records that the Registry lists this pool (a failure is logged: the registration is
    /// then made again by a later instance, which is harmless).
    pub(super) fn store_registered(&self) {
        let stored = self.sql.exec(
            "INSERT INTO registration (id, at) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET at = excluded.at",
            vec![(runtime::now_ms().max(1) as i64).into()],
        );
        if let Err(e) = stored {
            worker::console_error!("recording the registration: {e:?}");
        }
    }

    /// Writes the rows the last mutations touched.
    pub(super) fn persist(&self) -> AppResult<()> {
        let mut inner = self.inner.borrow_mut();
        let Some(pool) = inner.pool.as_mut() else {
            return Ok(());
        };
        let changes = pool.take_changes();
        if changes.is_empty() {
            return Ok(());
        }
        let sql = &self.sql;
        for id in &changes.stages {
            if let Some(stage) = pool.stage(*id) {
                sql.exec(
                    "INSERT INTO stages (id, row) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET row = excluded.row",
                    vec![(id.0 as i64).into(), serde_json::to_string(stage)?.into()],
                )?;
            }
        }
        for id in &changes.stages_removed {
            sql.exec(
                "DELETE FROM stages WHERE id = ?",
                vec![(id.0 as i64).into()],
            )?;
        }
        for id in &changes.leases_upserted {
            if let Some(lease) = pool.lease(id) {
                sql.exec(
                    "INSERT INTO leases (id, row) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET row = excluded.row",
                    vec![id.clone().into(), serde_json::to_string(lease)?.into()],
                )?;
            }
        }
        for id in &changes.leases_removed {
            sql.exec("DELETE FROM leases WHERE id = ?", vec![id.clone().into()])?;
        }
        if changes.meta {
            sql.exec(
                "INSERT INTO meta (id, row) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET row = excluded.row",
                vec![serde_json::to_string(pool.meta())?.into()],
            )?;
        }
        Ok(())
    }

    /// Writes every row (a new pool).
    pub(super) fn write_all(&self) -> AppResult<()> {
        self.create_tables()?;
        {
            let mut inner = self.inner.borrow_mut();
            let pool = inner.pool.as_mut().ok_or_else(not_found_pool)?;
            let rows = pool.export();
            let _ = pool.take_changes();
            self.sql.exec("DELETE FROM stages", None)?;
            self.sql.exec("DELETE FROM leases", None)?;
            self.sql.exec(
                "INSERT INTO meta (id, row) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET row = excluded.row",
                vec![serde_json::to_string(&rows.meta)?.into()],
            )?;
            for stage in &rows.stages {
                self.sql.exec(
                    "INSERT INTO stages (id, row) VALUES (?, ?)",
                    vec![
                        (stage.id.0 as i64).into(),
                        serde_json::to_string(stage)?.into(),
                    ],
                )?;
            }
        }
        Ok(())
    }
}
