//! A stage's life: created, warming, live, draining, deleted; and the fan-out of the host
//! to the stages (publisher stages, replications).

use std::collections::BTreeMap;

use super::*;

impl Pool {
    pub(super) fn existing_stages(&self) -> u32 {
        self.stages
            .values()
            .filter(|s| s.state != StageState::Deleted)
            .count() as u32
    }

    pub(super) fn get(&self, id: StageId) -> Result<&Stage, PoolError> {
        self.stages
            .get(&id)
            .ok_or_else(|| PoolError::UnknownStage(id.to_string()))
    }

    /// The id of the stage with this ARN.
    pub fn stage_id(&self, arn: &str) -> Result<StageId, PoolError> {
        self.by_arn
            .get(arn)
            .copied()
            .ok_or_else(|| PoolError::UnknownStage(arn.to_string()))
    }

    /// Decides to create one stage: a `creating` row whose id is the intent. The adapter calls
    /// `CreateStage` once for it, then [`Pool::created`] or [`Pool::create_failed`]. Refused at
    /// `max_stages`. In replicate mode the new stage becomes a replica of the oldest origin with
    /// fewer than 5 replicas, or a new origin.
    pub fn begin_create(&mut self, now: Millis) -> Result<CreateIntent, PoolError> {
        self.advance(now);
        if self.is_ended() {
            return Err(PoolError::Ended);
        }
        if self.existing_stages() >= self.settings.max_stages {
            return Err(PoolError::MaxStages {
                max: self.settings.max_stages,
            });
        }
        if let Some(quota) = self.stage_quota_exhausted(now) {
            return Err(PoolError::RegionQuota(quota));
        }
        let origin = match self.meta.fanout {
            FanoutMode::MultiPublish => None,
            FanoutMode::Replicate => self.origin_with_room(),
        };
        let id = StageId(self.meta.next_stage_id);
        self.meta.next_stage_id += 1;
        let name = format!("{}-{}", self.meta.broadcast, id.0);
        let stage = Stage {
            id,
            name: name.clone(),
            arn: None,
            state: StageState::Creating,
            capacity: self.settings.capacity,
            load: 0,
            endpoints: None,
            origin,
            created_at: now,
            warm_at: None,
            live_at: None,
            empty_since: Some(now),
            draining_since: None,
            delete_requested_at: None,
            deleted_at: None,
            create_failed: false,
            gone: false,
            host_participant_id: None,
            host_publishing: false,
            host_changed_at: None,
            meter: StageMeter::default(),
            consolidated: false,
        };
        self.stages.insert(id, stage);
        self.changes.stage(id);
        self.changes.meta = true;
        Ok(CreateIntent {
            stage: id,
            name,
            tags: self.tags(),
            origin,
        })
    }

    /// The tags stagefan puts on this broadcast's stages.
    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (TAG_MANAGED.to_string(), "true".to_string()),
            (TAG_BROADCAST.to_string(), self.meta.broadcast.clone()),
            (TAG_DEPLOYMENT.to_string(), self.settings.deployment.clone()),
        ])
    }

    pub(super) fn replica_count(&self, origin: StageId) -> usize {
        self.stages
            .values()
            .filter(|s| s.origin == Some(origin) && s.state != StageState::Deleted)
            .count()
    }

    pub(super) fn origin_with_room(&self) -> Option<StageId> {
        self.stages
            .values()
            .filter(|s| {
                s.origin.is_none()
                    && matches!(
                        s.state,
                        StageState::Creating | StageState::Warming | StageState::Live
                    )
            })
            .map(|s| s.id)
            .find(|id| self.replica_count(*id) < MAX_REPLICAS_PER_ORIGIN)
    }

    /// IVS created the stage of intent `stage`: it becomes `warming` with its ARN and
    /// endpoints. Repeating it with the same ARN is a no-op; any other state is refused.
    pub fn created(
        &mut self,
        stage: StageId,
        arn: &str,
        endpoints: StageEndpoints,
        now: Millis,
    ) -> Result<(), PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        if st.state != StageState::Creating {
            if st.arn.as_deref() == Some(arn) {
                return Ok(());
            }
            return Err(PoolError::WrongState {
                stage,
                state: st.state,
                needed: "only a creating stage can be created",
            });
        }
        if self.by_arn.contains_key(arn) {
            return Err(PoolError::ArnInUse(arn.to_string()));
        }
        self.update_stage(stage, |st| {
            st.arn = Some(arn.to_string());
            st.endpoints = Some(endpoints);
            st.state = StageState::Warming;
            st.warm_at = Some(now);
            st.empty_since = Some(now);
        });
        self.by_arn.insert(arn.to_string(), stage);
        self.meta.stats.stages_created += 1;
        self.changes.stage(stage);
        self.changes.meta = true;
        Ok(())
    }

    /// The create of intent `stage` failed: the row becomes `deleted` (flagged as a failed
    /// create). A new attempt is a new intent.
    pub fn create_failed(&mut self, stage: StageId, now: Millis) -> Result<(), PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        if st.state != StageState::Creating {
            return Err(PoolError::WrongState {
                stage,
                state: st.state,
                needed: "only a creating stage can fail to be created",
            });
        }
        let st = self.stages.get_mut(&stage).expect("checked");
        st.create_failed = true;
        self.meta.stats.create_failures += 1;
        self.finish_delete(stage, now);
        Ok(())
    }

    /// The host page reports it publishes on `stage` as `participant_id`: a warming stage goes
    /// live; a draining one stays draining and is marked as having the host (metered; its
    /// delete still goes ahead once it is empty). In replicate mode, refused for replica stages (they go live only
    /// when an observation shows the host's replica there).
    pub fn mark_live(
        &mut self,
        stage: StageId,
        participant_id: &str,
        now: Millis,
    ) -> Result<(), PoolError> {
        self.advance(now);
        if self.is_ended() {
            return Err(PoolError::Ended);
        }
        let st = self.get(stage)?;
        if st.origin.is_some() {
            return Err(PoolError::ReplicaStage(stage));
        }
        if matches!(st.state, StageState::Creating | StageState::Deleted) {
            return Err(PoolError::WrongState {
                stage,
                state: st.state,
                needed: "the host can publish only on a stage that exists",
            });
        }
        self.set_host(stage, Some(participant_id), now);
        Ok(())
    }

    /// The host stopped publishing on `stage` (reported by the host page or the adapter).
    pub fn host_unpublished(&mut self, stage: StageId, now: Millis) -> Result<(), PoolError> {
        self.advance(now);
        self.get(stage)?;
        self.set_host(stage, None, now);
        Ok(())
    }

    pub(super) fn set_host(&mut self, stage: StageId, publisher: Option<&str>, at: Millis) -> bool {
        let went_live = self.update_stage(stage, |st| {
            let mut went_live = false;
            match publisher {
                Some(pid) => {
                    st.set_publishing(true, at);
                    if st.host_participant_id.as_deref() != Some(pid) {
                        st.host_participant_id = Some(pid.to_string());
                    }
                    if st.state == StageState::Warming {
                        st.state = StageState::Live;
                        st.live_at = Some(at);
                        went_live = true;
                    }
                }
                None => st.set_publishing(false, at),
            }
            st.host_changed_at = Some(st.host_changed_at.map_or(at, |t| t.max(at)));
            went_live
        });
        self.changes.stage(stage);
        self.refresh_life(at);
        went_live
    }

    /// Stops sending viewers to `stage` (warming or live → draining; idempotent on draining).
    /// Refused when fewer than `min_stages` warming/live stages would remain, for the last live
    /// stage, and (replicate mode) for an origin whose replicas are not all draining.
    pub fn drain(&mut self, stage: StageId, now: Millis) -> Result<(), PoolError> {
        self.advance(now);
        self.check_drain(stage)?;
        self.start_draining(stage, now);
        Ok(())
    }

    pub(super) fn check_drain(&self, stage: StageId) -> Result<(), PoolError> {
        let st = self.get(stage)?;
        match st.state {
            StageState::Draining => return Ok(()),
            StageState::Warming | StageState::Live => {}
            state => {
                return Err(PoolError::WrongState {
                    stage,
                    state,
                    needed: "only a warming or live stage can be drained",
                })
            }
        }
        let active = self.stages.values().filter(|s| s.is_active()).count() as u32;
        if active <= self.settings.min_stages {
            return Err(PoolError::BelowMinStages {
                min: self.settings.min_stages,
            });
        }
        if st.state == StageState::Live {
            let live = self
                .stages
                .values()
                .filter(|s| s.state == StageState::Live)
                .count();
            if live <= 1 {
                return Err(PoolError::LastLiveStage(stage));
            }
        }
        if st.origin.is_none()
            && self
                .stages
                .values()
                .any(|s| s.origin == Some(stage) && s.is_active())
        {
            return Err(PoolError::OriginHasReplicas(stage));
        }
        Ok(())
    }

    pub(super) fn start_draining(&mut self, stage: StageId, now: Millis) {
        let started = self.update_stage(stage, |st| {
            let started = st.state != StageState::Draining;
            if started {
                st.state = StageState::Draining;
                st.draining_since = Some(now);
            }
            started
        });
        if started {
            self.changes.stage(stage);
        }
    }

    /// Decides to delete `stage` (draining it first if it is not, under the rules of
    /// [`Pool::drain`]). Refused while viewers hold seats on it, or while the host publishes
    /// there unless it is draining.
    /// The adapter then calls `DeleteStage` and [`Pool::deleted`]. Repeating it returns the
    /// same intent.
    pub fn request_delete(
        &mut self,
        stage: StageId,
        now: Millis,
    ) -> Result<DeleteIntent, PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        if matches!(st.state, StageState::Creating | StageState::Deleted) {
            return Err(PoolError::WrongState {
                stage,
                state: st.state,
                needed: "only a stage that exists can be deleted",
            });
        }
        if st.load > 0 {
            return Err(PoolError::HasViewers {
                stage,
                viewers: st.load,
            });
        }
        // On a draining stage the host only holds an upload nobody watches any more.
        if st.host_publishing && st.state != StageState::Draining {
            return Err(PoolError::HostPublishing(stage));
        }
        let arn = st.arn.clone().expect("an existing stage has an ARN");
        self.check_drain(stage)?;
        self.start_draining(stage, now);
        let st = self.stages.get_mut(&stage).expect("checked");
        if st.delete_requested_at.is_none() {
            st.delete_requested_at = Some(now);
            self.changes.stage(stage);
        }
        Ok(DeleteIntent { stage, arn })
    }

    /// The stage is gone from IVS (after `DeleteStage`, or found missing). Any leases still on
    /// it are dropped (counted as evictions) and returned as their ids; in replicate mode its
    /// replicas are re-homed. Idempotent on a deleted stage; a creating stage is refused (use
    /// [`Pool::create_failed`]).
    pub fn deleted(&mut self, stage: StageId, now: Millis) -> Result<Vec<String>, PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        match st.state {
            StageState::Deleted => return Ok(Vec::new()),
            StageState::Creating => {
                return Err(PoolError::WrongState {
                    stage,
                    state: st.state,
                    needed: "a creating stage fails (create_failed), it is not deleted",
                })
            }
            _ => {}
        }
        let evicted: Vec<String> = self
            .leases
            .values()
            .filter(|l| l.stage == stage)
            .map(|l| l.id.clone())
            .collect();
        for id in &evicted {
            self.remove_lease(id);
        }
        self.meta.stats.evictions += evicted.len() as u64;
        self.meta.stats.stages_deleted += 1;
        self.finish_delete(stage, now);
        Ok(evicted)
    }

    /// IVS no longer has `stage` (a `GetStage`/`ListStages` answer, a join that found it
    /// missing, the monitor): it is marked deleted at once, whatever it held, so that no
    /// viewer is seated there again and scale-down never counts it; its leases are dropped
    /// (evictions, returned) so their viewers take new seats, and the policy replaces it if
    /// the audience needs it. A creating stage is left to its create; idempotent.
    pub fn gone(&mut self, stage: StageId, now: Millis) -> Result<Vec<String>, PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        if matches!(st.state, StageState::Deleted | StageState::Creating) {
            return Ok(Vec::new());
        }
        self.update_stage(stage, |st| st.gone = true);
        self.deleted(stage, now)
    }

    /// Records the participant id IVS gave a seat's token (`api` token mode: IVS picks the
    /// participant id, so a lease's id is the one of its last token). Returns whether the
    /// lease is live; an id that another lease holds is refused.
    pub fn bind_participant(
        &mut self,
        lease_id: &str,
        participant_id: &str,
        now: Millis,
    ) -> Result<(), PoolError> {
        self.advance(now);
        let Some(lease) = self.leases.get(lease_id) else {
            return Err(PoolError::LeaseNotFound);
        };
        if lease.participant_id == participant_id {
            return Ok(());
        }
        if self.by_participant.contains_key(participant_id) {
            return Err(PoolError::Corrupt(format!(
                "participant {participant_id} already holds a seat"
            )));
        }
        let old = lease.participant_id.clone();
        self.by_participant.remove(&old);
        self.by_participant
            .insert(participant_id.to_string(), lease_id.to_string());
        self.leases
            .get_mut(lease_id)
            .expect("checked")
            .participant_id = participant_id.to_string();
        self.changes.lease(lease_id);
        Ok(())
    }

    pub(super) fn finish_delete(&mut self, stage: StageId, now: Millis) {
        let (was_origin, closed) = self.update_stage(stage, |st| {
            let closed = st.consolidated && st.state != StageState::Deleted;
            st.state = StageState::Deleted;
            st.deleted_at = Some(now);
            st.empty_since = None;
            st.set_publishing(false, now);
            (st.origin.is_none(), closed)
        });
        if closed && !self.is_ended() {
            // From now on consolidation saves this stage's publisher.
            self.meta.saved.stage_closed(!was_origin, now);
        }
        self.changes.stage(stage);
        self.changes.meta = true;
        self.refresh_life(now);
        if was_origin {
            self.rehome_replicas(stage, now);
        }
        self.forget_old_deleted();
    }

    /// An origin is gone: its oldest surviving replica becomes an origin (the host must now
    /// publish there) and the others (at most 4 more) follow it.
    pub(super) fn rehome_replicas(&mut self, origin: StageId, now: Millis) {
        let orphans: Vec<StageId> = self
            .stages
            .values()
            .filter(|s| s.origin == Some(origin) && s.state != StageState::Deleted)
            .map(|s| s.id)
            .collect();
        let Some((&first, rest)) = orphans.split_first() else {
            return;
        };
        // The origin link decides whether a warming stage takes viewers: keep the index in step.
        self.update_stage(first, |st| st.set_origin(None, now));
        self.changes.stage(first);
        for &id in rest {
            self.update_stage(id, |st| st.set_origin(Some(first), now));
            self.changes.stage(id);
        }
    }

    pub(super) fn forget_old_deleted(&mut self) {
        let mut deleted: Vec<(Millis, StageId)> = self
            .stages
            .values()
            .filter(|s| s.state == StageState::Deleted)
            .map(|s| (s.deleted_at.unwrap_or(0), s.id))
            .collect();
        if deleted.len() <= DELETED_STAGES_RETAINED {
            return;
        }
        deleted.sort();
        let excess = deleted.len() - DELETED_STAGES_RETAINED;
        for (_, id) in deleted.into_iter().take(excess) {
            // A deleted origin's id may still be named by nobody (replicas were re-homed).
            if let Some(st) = self.stages.remove(&id) {
                self.meter_forget(&st);
                if let Some(arn) = st.arn {
                    self.by_arn.remove(&arn);
                }
                self.changes.stage_removed(id);
            }
        }
    }

    // ----- fan-out -----

    /// The stages the host must publish to (and needs publisher tokens for): warming or live
    /// stages, and draining ones whose viewers are not all moved yet ([`Stage::serves`]); in
    /// replicate mode only the origins among them. Oldest first.
    pub fn publisher_stages(&self) -> Vec<&Stage> {
        self.stages
            .values()
            .filter(|s| s.serves() && s.arn.is_some() && s.origin.is_none())
            .collect()
    }

    /// Replicate mode: the replications that should run (origin and replica both serving
    /// viewers, [`Stage::serves`], with ARNs). Empty in multi-publish mode.
    pub fn replications(&self) -> Vec<Replication> {
        self.stages
            .values()
            .filter(|s| s.serves())
            .filter_map(|replica| {
                let origin = self.stages.get(&replica.origin?)?;
                if matches!(origin.state, StageState::Creating | StageState::Deleted) {
                    return None;
                }
                Some(Replication {
                    origin: origin.id,
                    origin_arn: origin.arn.clone()?,
                    replica: replica.id,
                    replica_arn: replica.arn.clone()?,
                    host_participant_id: origin.host_participant_id.clone(),
                })
            })
            .collect()
    }
}
