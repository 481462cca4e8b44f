//! Making a pool, and rebuilding it from its stored rows (and checking them).

use std::collections::{BTreeMap, BTreeSet};

use super::*;

impl Pool {
    /// A pool of `meta` with no stages and no leases, and nothing changed yet.
    fn empty(settings: PoolSettings, meta: PoolMeta) -> Pool {
        Pool {
            settings,
            meta,
            stages: BTreeMap::new(),
            by_arn: BTreeMap::new(),
            leases: BTreeMap::new(),
            by_participant: BTreeMap::new(),
            by_client: BTreeMap::new(),
            expiry: BTreeSet::new(),
            open: BTreeSet::new(),
            changes: Changes::default(),
        }
    }

    /// A new, empty pool for `broadcast` (validated as a broadcast id). It has no stages: the
    /// adapter (or the policy) calls [`Pool::begin_create`] for `min_stages` of them.
    pub fn new(broadcast: &str, settings: PoolSettings, now: Millis) -> Result<Pool, PoolError> {
        validate_broadcast_id(broadcast)?;
        let meta = PoolMeta {
            broadcast: broadcast.to_string(),
            fanout: settings.fanout,
            created_at: now,
            next_stage_id: 1,
            stats: Stats::default(),
            viewer_ms: 0,
            integrated_at: now,
            life: LifeRecord::default(),
            quota: None,
            forgotten: ByKind::default(),
            region: None,
            arrivals: Arrivals::default(),
            saved: Saved {
                since: now,
                ..Saved::default()
            },
        };
        let mut pool = Pool::empty(settings, meta);
        pool.changes.meta = true;
        Ok(pool)
    }

    /// A new, empty pool for `broadcast` in a region other than the deployment's primary
    /// one (`crate::regions`): the pool `{broadcast}@{region}`, whose leases carry that name.
    pub fn new_in_region(
        broadcast: &str,
        region: &str,
        settings: PoolSettings,
        now: Millis,
    ) -> Result<Pool, PoolError> {
        crate::regions::validate_region(region)?;
        let mut pool = Pool::new(broadcast, settings, now)?;
        pool.meta.region = Some(region.to_string());
        Ok(pool)
    }

    /// Rebuilds a pool from its rows. Loads are recomputed from the leases; the fan-out mode
    /// is the one stored in `meta` (a pool keeps its mode); the other settings are the ones
    /// given. Inconsistent rows are refused with [`PoolError::Corrupt`].
    pub fn from_rows(settings: PoolSettings, rows: PoolRows) -> Result<Pool, PoolError> {
        let PoolRows {
            meta,
            stages,
            leases,
        } = rows;
        validate_broadcast_id(&meta.broadcast)?;
        let settings = PoolSettings {
            fanout: meta.fanout,
            ..settings
        };
        let mut pool = Pool::empty(settings, meta);
        for mut st in stages {
            if st.id.0 >= pool.meta.next_stage_id {
                return Err(PoolError::Corrupt(format!(
                    "stage {} is not below nextStageId {}",
                    st.id, pool.meta.next_stage_id
                )));
            }
            if st.state != StageState::Creating
                && st.state != StageState::Deleted
                && st.arn.is_none()
            {
                return Err(PoolError::Corrupt(format!(
                    "stage {} is {} without an ARN",
                    st.id, st.state
                )));
            }
            st.load = 0;
            if let Some(arn) = &st.arn {
                if pool.by_arn.insert(arn.clone(), st.id).is_some() {
                    return Err(PoolError::Corrupt(format!("ARN {arn} appears twice")));
                }
            }
            if pool.stages.insert(st.id, st).is_some() {
                return Err(PoolError::Corrupt("a stage id appears twice".into()));
            }
        }
        let prefix = format!("{}.", pool.name());
        for mut lease in leases {
            if lease.participant_id.is_empty() {
                lease.participant_id = derive_participant_id(lease.id.as_bytes());
            }
            if !lease.id.starts_with(&prefix) {
                return Err(PoolError::Corrupt(format!(
                    "lease {} does not belong to pool {}",
                    lease.id,
                    pool.name()
                )));
            }
            let Some(st) = pool.stages.get_mut(&lease.stage) else {
                return Err(PoolError::Corrupt(format!(
                    "lease {} is on unknown stage {}",
                    lease.id, lease.stage
                )));
            };
            if matches!(st.state, StageState::Creating | StageState::Deleted) {
                return Err(PoolError::Corrupt(format!(
                    "lease {} is on {} stage {}",
                    lease.id, st.state, st.id
                )));
            }
            st.load += 1;
            if pool
                .by_participant
                .insert(lease.participant_id.clone(), lease.id.clone())
                .is_some()
            {
                return Err(PoolError::Corrupt(format!(
                    "participant {} holds two leases",
                    lease.participant_id
                )));
            }
            if let Some(client) = &lease.client {
                *pool.by_client.entry(client.clone()).or_default() += 1;
            }
            pool.expiry.insert((lease.expires_at, lease.id.clone()));
            if pool.leases.insert(lease.id.clone(), lease).is_some() {
                return Err(PoolError::Corrupt("a lease id appears twice".into()));
            }
        }
        for st in pool.stages.values() {
            if st.load > st.capacity {
                return Err(PoolError::Corrupt(format!(
                    "stage {} holds {} leases for {} seats",
                    st.id, st.load, st.capacity
                )));
            }
        }
        pool.open = pool.stages.values().filter_map(open_key).collect();
        Ok(pool)
    }

    /// Checks every internal index against the rows: loads equal the leases on each stage and
    /// stay within capacity, one lease per user, the expiry, ARN and open-stage indexes match,
    /// no lease on a creating or deleted stage. O(stages + leases); for tests and for an
    /// adapter that wants to verify a rebuilt pool.
    pub fn check_consistency(&self) -> Result<(), PoolError> {
        let bad = |m: String| Err(PoolError::Corrupt(m));
        let mut loads: BTreeMap<StageId, u32> = BTreeMap::new();
        let mut participants = BTreeSet::new();
        let mut clients: BTreeMap<&str, u32> = BTreeMap::new();
        for lease in self.leases.values() {
            let Some(st) = self.stages.get(&lease.stage) else {
                return bad(format!("lease {} on a missing stage", lease.id));
            };
            if matches!(st.state, StageState::Creating | StageState::Deleted) {
                return bad(format!(
                    "lease {} on {} stage {}",
                    lease.id, st.state, st.id
                ));
            }
            *loads.entry(lease.stage).or_default() += 1;
            if !participants.insert(lease.participant_id.as_str()) {
                return bad(format!(
                    "participant {} holds two leases",
                    lease.participant_id
                ));
            }
            if self.by_participant.get(&lease.participant_id) != Some(&lease.id) {
                return bad(format!("participant index misses lease {}", lease.id));
            }
            if let Some(client) = &lease.client {
                *clients.entry(client.as_str()).or_default() += 1;
            }
            if !self.expiry.contains(&(lease.expires_at, lease.id.clone())) {
                return bad(format!("expiry index misses lease {}", lease.id));
            }
        }
        if self.by_participant.len() != self.leases.len() || self.expiry.len() != self.leases.len()
        {
            return bad("lease indexes hold stale entries".into());
        }
        let indexed: BTreeMap<&str, u32> = self
            .by_client
            .iter()
            .map(|(c, n)| (c.as_str(), *n))
            .collect();
        if indexed != clients {
            return bad("client index out of step with the leases".into());
        }
        for st in self.stages.values() {
            let held = loads.get(&st.id).copied().unwrap_or(0);
            if st.load != held || st.load > st.capacity {
                return bad(format!(
                    "stage {} load {} with {} leases and {} seats",
                    st.id, st.load, held, st.capacity
                ));
            }
            if let Some(arn) = &st.arn {
                if self.by_arn.get(arn) != Some(&st.id) {
                    return bad(format!("ARN index misses stage {}", st.id));
                }
            }
        }
        if self.by_arn.len() != self.stages.values().filter(|s| s.arn.is_some()).count() {
            return bad("ARN index holds stale entries".into());
        }
        let open: BTreeSet<OpenKey> = self.stages.values().filter_map(open_key).collect();
        if open != self.open {
            return bad("open-stage index out of step".into());
        }
        Ok(())
    }

    /// Every row of the pool (for a first full write, or tests).
    pub fn export(&self) -> PoolRows {
        PoolRows {
            meta: self.meta.clone(),
            stages: self.stages.values().cloned().collect(),
            leases: self.leases.values().cloned().collect(),
        }
    }

    /// The rows touched since the last call; the adapter writes them (see the module docs).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// The rows touched since the last [`Pool::take_changes`], without taking them.
    pub fn pending_changes(&self) -> &Changes {
        &self.changes
    }
}
