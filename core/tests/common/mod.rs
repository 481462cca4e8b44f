//! What the pool's tests share: the adapter's table store.
#![allow(dead_code)] // each test file uses a different part

use std::collections::BTreeMap;

use stagefan_core::pool::*;

/// The adapter's rows, kept up to date only from the change records (`take_changes`), as the
/// worker's storage keeps them.
#[derive(Default)]
pub struct Store {
    meta: Option<PoolMeta>,
    stages: BTreeMap<StageId, Stage>,
    leases: BTreeMap<String, Lease>,
}

impl Store {
    /// Applies the pool's changes since the last call.
    pub fn apply(&mut self, pool: &mut Pool) {
        let c = pool.take_changes();
        if c.meta {
            self.meta = Some(pool.meta().clone());
        }
        for id in &c.stages {
            self.stages
                .insert(*id, pool.stage(*id).expect("changed stage exists").clone());
        }
        for id in &c.stages_removed {
            assert!(
                pool.stage(*id).is_none(),
                "removed stage {id} still in pool"
            );
            self.stages.remove(id);
        }
        for id in &c.leases_upserted {
            self.leases.insert(
                id.clone(),
                pool.lease(id).expect("changed lease exists").clone(),
            );
        }
        for id in &c.leases_removed {
            assert!(pool.lease(id).is_none(), "removed lease {id} still in pool");
            self.leases.remove(id);
        }
    }

    /// The stored rows.
    pub fn rows(&self) -> PoolRows {
        PoolRows {
            meta: self.meta.clone().expect("meta written"),
            stages: self.stages.values().cloned().collect(),
            leases: self.leases.values().cloned().collect(),
        }
    }

    /// The pool rebuilt from the rows, as stored (through their JSON).
    pub fn rebuild(&self, settings: PoolSettings) -> Pool {
        let json = serde_json::to_string(&self.rows()).unwrap();
        Pool::from_rows(settings, serde_json::from_str(&json).unwrap()).unwrap()
    }
}
