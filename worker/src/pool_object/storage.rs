//! The pool's SQLite storage: the schema, the one load of a pool, and the writes of the rows
//! each mutation touched (`Pool::take_changes`), in the same turn of the event loop.
//!
//! Every row is the JSON of one `stagefan_core::pool` record: `meta` (one row), `stages`,
//! `leases`, and `registration` (when the Registry is known to list the pool).

use serde::{Deserialize, Serialize};
use stagefan_core::pool::{Lease, Pool, PoolMeta, PoolRows, Stage, StageId, StageState};

use worker::{SqlStorage, SqlStorageValue};

use super::{not_found_pool, Shared};
use crate::error::{AppError, AppResult};
use crate::runtime;

impl Shared {
    /// The `row` column (JSON text) of every row of `table`.
    pub(super) fn rows(&self, table: &str) -> AppResult<Vec<String>> {
        #[derive(Deserialize)]
        struct RowText {
            row: String,
        }
        let rows: Vec<RowText> = self
            .sql
            .exec(&format!("SELECT row FROM {table}"), None)?
            .to_array()?;
        Ok(rows.into_iter().map(|r| r.row).collect())
    }

    /// Loads the pool from SQLite, once.
    /// Loads the pool named `name` (`broadcast`, or `broadcast@region` outside the primary
    /// region; empty: whatever is stored, for the alarm).
    pub(super) fn load(&self, name: &str) -> AppResult<()> {
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
        let read = |table: &str| self.rows(table);
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
                let stored = match &meta.region {
                    None => meta.broadcast.clone(),
                    Some(region) => format!("{}@{region}", meta.broadcast),
                };
                if stored != name && !name.is_empty() {
                    return Err(AppError::Internal(format!(
                        "pool {stored:?} asked as {name:?}"
                    )));
                }
                let stages = read("stages")?
                    .iter()
                    .map(|r| serde_json::from_str::<Stage>(r))
                    .collect::<Result<Vec<_>, _>>()?;
                let leases = read("leases")?
                    .iter()
                    .map(|r| serde_json::from_str::<Lease>(r))
                    .collect::<Result<Vec<_>, _>>()?;
                let settings = self.settings()?.config.pool_settings();
                let mut pool = Pool::from_rows(
                    settings,
                    PoolRows {
                        meta,
                        stages,
                        leases,
                    },
                )
                .map_err(|e| AppError::Internal(format!("stored pool: {e}")))?;
                // A pool stored before the ledger takes its grant like a new one.
                pool.enforce_quota();
                Some(pool)
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
            inner.loaded_at = runtime::now_ms();
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
                put_row(sql, "stages", "id", stage_key(*id), stage)?;
            }
        }
        for id in &changes.stages_removed {
            delete_row(sql, "stages", "id", stage_key(*id))?;
        }
        for id in &changes.leases_upserted {
            if let Some(lease) = pool.lease(id) {
                put_row(sql, "leases", "id", id.as_str().into(), lease)?;
            }
        }
        for id in &changes.leases_removed {
            delete_row(sql, "leases", "id", id.as_str().into())?;
        }
        if changes.meta {
            put_row(sql, "meta", "id", 1i64.into(), pool.meta())?;
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
            put_row(&self.sql, "meta", "id", 1i64.into(), &rows.meta)?;
            for stage in &rows.stages {
                put_row(&self.sql, "stages", "id", stage_key(stage.id), stage)?;
            }
        }
        Ok(())
    }
}

/// The key of a stage's row.
pub(super) fn stage_key(id: StageId) -> SqlStorageValue {
    (id.0 as i64).into()
}

/// Writes `row`, as JSON, as the row keyed `key` of `table` (whose key column is
/// `key_column`), new or not.
pub(super) fn put_row(
    sql: &SqlStorage,
    table: &str,
    key_column: &str,
    key: SqlStorageValue,
    row: &impl Serialize,
) -> AppResult<()> {
    sql.exec(
        &format!(
            "INSERT INTO {table} ({key_column}, row) VALUES (?, ?) \
             ON CONFLICT({key_column}) DO UPDATE SET row = excluded.row"
        ),
        vec![key, serde_json::to_string(row)?.into()],
    )?;
    Ok(())
}

/// Deletes the row keyed `key` of `table`.
pub(super) fn delete_row(
    sql: &SqlStorage,
    table: &str,
    key_column: &str,
    key: SqlStorageValue,
) -> AppResult<()> {
    sql.exec(
        &format!("DELETE FROM {table} WHERE {key_column} = ?"),
        vec![key],
    )?;
    Ok(())
}
