//! Viewers: seats, leases, heartbeats and expiry, and the load each stage carries.

use super::*;

impl Pool {
    /// Gives `user_id` a new seat, as [`Pool::join`] does for a request without a lease or a
    /// client.
    pub fn assign(
        &mut self,
        user_id: &str,
        now: Millis,
        random: &[u8; LEASE_RANDOM_BYTES],
    ) -> Result<Assignment, AssignError> {
        self.join(
            &JoinRequest {
                user_id,
                ..JoinRequest::default()
            },
            now,
            random,
        )
    }

    /// Gives a viewer a seat. A request that presents a live lease of this pool gets that
    /// seat again (sticky reconnect: same lease, same stage, same participant, renewed even if
    /// its stage is now the fullest); a lease on a draining stage is moved to a new seat: its
    /// old seat given back first, or, for a make-before-break move ([`JoinRequest::moving`]),
    /// kept (the viewer gives it back once the new stage plays) and marked with the new one,
    /// which the same move asked again answers. A
    /// request without a live lease is a new seat, never anybody else's: the live stage with
    /// the lowest load below capacity, else the warming one, ties to the oldest (in replicate
    /// mode a warming replica is skipped: it gets viewers once the host's replica is observed
    /// there). A new seat is refused when its client already holds
    /// [`PoolSettings::max_seats_per_client`] seats (before a stage is looked for, so a
    /// flood's refusals ask for no stage). `random` makes the lease and participant ids. The
    /// user id is not validated here (see [`validate_user_id`]).
    /// O(log stages + log leases).
    pub fn join(
        &mut self,
        req: &JoinRequest<'_>,
        now: Millis,
        random: &[u8; LEASE_RANDOM_BYTES],
    ) -> Result<Assignment, AssignError> {
        self.advance(now);
        if self.is_ended() {
            return Err(AssignError::Ended);
        }
        let ttl = self.pool_lease_ttl_ms();

        let held = req.lease_id.filter(|id| self.leases.contains_key(*id));
        if let Some(lease_id) = held {
            if self.stages[&self.leases[lease_id].stage].is_active() {
                return Ok(self.reconnect(lease_id, now, ttl));
            }
            // A move asked again answers the seat it gave, while that seat lives.
            let moved_to = self.leases[lease_id].moved_to.clone();
            if let Some(to) = moved_to.filter(|to| req.moving && self.leases.contains_key(to)) {
                return Ok(self.reconnect(&to, now, ttl));
            }
        }

        // A seat moved off a draining stage is the same client's: it does not count twice.
        let moving = held.map(str::to_string);
        if self.client_at_limit(req) {
            let limit = self.settings.max_seats_per_client;
            let holds = req.client.map_or(0, |c| self.seats_of_client(c));
            self.meta.stats.client_refusals += 1;
            self.changes.meta = true;
            return Err(AssignError::ClientLimit { held: holds, limit });
        }

        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        let participant_id = derive_participant_id(random);
        if self.by_participant.contains_key(&participant_id) {
            // The same random bytes made a seat already (the id names the pool and the
            // secret; in stage presence the stage comes between them).
            return Err(AssignError::LeaseIdTaken(format!(
                "{}.{secret}",
                self.name()
            )));
        }
        // A new seat is one more subscription of the region: only within the pool's grant
        // (a seat moved off a draining stage gives its old one back, unless it is a
        // make-before-break move: both are subscribed until the old one is given back).
        let gives_back = moving.is_some() && !req.moving;
        if !gives_back && self.subscriptions_exhausted(now) {
            self.meta.stats.refusals += 1;
            self.changes.meta = true;
            return Err(AssignError::NoSeat(NoSeat {
                stages_creating: 0,
                replicas_waiting: 0,
                can_create: self.existing_stages() < self.settings.max_stages,
                region_quota: Some(crate::ledger::Quota::Subscriptions),
            }));
        }
        let Some(stage_id) = self.pick_stage() else {
            self.meta.stats.refusals += 1;
            self.changes.meta = true;
            let count = |f: &dyn Fn(&Stage) -> bool| self.stages.values().filter(|s| f(s)).count();
            let creating = count(&|s| s.state == StageState::Creating) as u32;
            let replicas_waiting = count(&|s| {
                s.state == StageState::Warming && s.origin.is_some() && s.load < s.capacity
            }) as u32;
            // The region's quota is what stops this pool only when the pool could otherwise
            // grow: a pool at its own `max_stages` is simply full.
            let can_create = self.existing_stages() < self.settings.max_stages;
            let region_quota = if can_create && creating == 0 && replicas_waiting == 0 {
                self.stage_quota_exhausted(now)
            } else {
                None
            };
            return Err(AssignError::NoSeat(NoSeat {
                stages_creating: creating,
                replicas_waiting,
                can_create,
                region_quota,
            }));
        };
        // A lease names its pool (`{broadcast}` or `{broadcast}@{region}`) and, in stage
        // presence, its stage (whose object keeps the lease alive).
        let lease_id = match self.settings.presence {
            Presence::Pool => format!("{}.{secret}", self.name()),
            Presence::Stages => format!("{}.{stage_id}.{secret}", self.name()),
        };
        if self.leases.contains_key(&lease_id) {
            return Err(AssignError::LeaseIdTaken(lease_id));
        }
        // Moving off a draining stage: the old seat is given back first, or (make-before-
        // break) kept until its viewer gives it back, and it names the new one.
        let mut client = req.client.map(str::to_string);
        let mut user_id = req.user_id.to_string();
        if let Some(old) = &moving {
            if req.moving {
                user_id = self.leases[old].user_id.clone();
            }
            client = self.leases[old].client.clone().or(client);
            if req.moving {
                let lease = self.leases.get_mut(old).expect("held");
                lease.moved_to = Some(lease_id.clone());
                self.changes.lease(old);
                self.meta.stats.moves += 1;
            } else {
                self.remove_lease(old);
                self.meta.stats.leaves += 1;
            }
        }

        // In stage presence a new lease lives one TTL here until its stage has taken it
        // ([`Pool::admitted`]): a seat whose admission never happened (the object died in
        // between) lapses by itself, as its viewer never heard of it.
        let expires_at = now.saturating_add(self.settings.lease_ttl_ms.min(ttl));
        let lease = Lease {
            id: lease_id.clone(),
            user_id: user_id.clone(),
            participant_id: participant_id.clone(),
            client: client.clone(),
            stage: stage_id,
            joined_at: now,
            renewed_at: now,
            expires_at,
            moved_to: None,
        };
        self.expiry.insert((expires_at, lease_id.clone()));
        self.by_participant
            .insert(participant_id.clone(), lease_id.clone());
        if let Some(client) = client {
            *self.by_client.entry(client).or_default() += 1;
        }
        self.leases.insert(lease_id.clone(), lease);
        self.changes.lease(&lease_id);
        let (was_empty, arn, state) = self.update_stage(stage_id, |stage| {
            stage.load += 1;
            (
                stage.empty_since.take().is_some(),
                stage.arn.clone().unwrap_or_default(),
                stage.state,
            )
        });
        if was_empty {
            self.changes.stage(stage_id);
        }
        if moving.is_none() {
            self.record_arrival(now);
        }
        let stats = &mut self.meta.stats;
        stats.joins += 1;
        stats.peak_viewers = stats.peak_viewers.max(self.leases.len() as u64);
        self.changes.meta = true;
        Ok(Assignment {
            lease_id,
            stage: stage_id,
            stage_arn: arn,
            stage_state: state,
            expires_at,
            reconnected: false,
            participant_id,
            user_id,
        })
    }

    /// A sticky reconnect: `lease_id` (live, on a warming or live stage) is renewed and
    /// answered again.
    fn reconnect(&mut self, lease_id: &str, now: Millis, ttl: u64) -> Assignment {
        let lease = &self.leases[lease_id];
        let stage = &self.stages[&lease.stage];
        let (stage_arn, stage_state) = (stage.arn.clone().unwrap_or_default(), stage.state);
        let (stage_id, participant_id, user_id) = (
            lease.stage,
            lease.participant_id.clone(),
            lease.user_id.clone(),
        );
        let lease_id = lease_id.to_string();
        let expires_at = self.renew(&lease_id, now, ttl);
        self.meta.stats.reconnects += 1;
        self.changes.meta = true;
        Assignment {
            lease_id,
            stage: stage_id,
            stage_arn,
            stage_state,
            expires_at,
            reconnected: true,
            participant_id,
            user_id,
        }
    }

    /// The stage the next new viewer would get, without assigning.
    pub fn peek_assignment(&self) -> Option<StageId> {
        self.pick_stage()
    }

    /// O(log stages): the first of the ordered set of stages with room.
    pub(super) fn pick_stage(&self) -> Option<StageId> {
        self.open.first().map(|&(_, _, id)| id)
    }

    /// Mutates a stage and keeps the index of stages with room in step with its state and load.
    pub(super) fn update_stage<R>(&mut self, id: StageId, f: impl FnOnce(&mut Stage) -> R) -> R {
        let st = self.stages.get_mut(&id).expect("stage exists");
        let before = open_key(st);
        let out = f(st);
        let after = open_key(st);
        if before != after {
            if let Some(k) = before {
                self.open.remove(&k);
            }
            if let Some(k) = after {
                self.open.insert(k);
            }
        }
        out
    }

    /// Renews a live lease for another TTL. Returns the renewed lease.
    pub fn heartbeat(&mut self, lease_id: &str, now: Millis) -> Result<Lease, PoolError> {
        self.advance(now);
        if self.is_ended() {
            return Err(PoolError::Ended);
        }
        if !self.leases.contains_key(lease_id) {
            return Err(PoolError::LeaseNotFound);
        }
        // A heartbeat at the pool is of a lease the pool keeps alive itself (one made before
        // the pool's presence moved to its stages included): one TTL.
        self.renew(lease_id, now, self.settings.lease_ttl_ms);
        Ok(self.leases[lease_id].clone())
    }

    /// Gives a seat back. Idempotent: `false` when there was no such live lease.
    pub fn leave(&mut self, lease_id: &str, now: Millis) -> bool {
        self.advance(now);
        if !self.leases.contains_key(lease_id) {
            return false;
        }
        self.remove_lease(lease_id);
        self.meta.stats.leaves += 1;
        self.changes.meta = true;
        true
    }

    /// Frees every lease that lapsed by `now` and integrates viewer time; returns how many
    /// lapsed. (Every method taking `now` does this first.)
    pub fn expire(&mut self, now: Millis) -> u32 {
        let before = self.meta.stats.lease_expiries;
        self.advance(now);
        (self.meta.stats.lease_expiries - before) as u32
    }

    pub(super) fn renew(&mut self, lease_id: &str, now: Millis, ttl: u64) -> Millis {
        let lease = self.leases.get_mut(lease_id).expect("lease exists");
        self.expiry.remove(&(lease.expires_at, lease.id.clone()));
        // Never shorten a lease (a `now` from a skewed clock must not cut a seat short).
        lease.expires_at = lease.expires_at.max(now.saturating_add(ttl));
        lease.renewed_at = lease.renewed_at.max(now);
        self.expiry.insert((lease.expires_at, lease.id.clone()));
        self.changes.lease(lease_id);
        lease.expires_at
    }

    pub(super) fn remove_lease(&mut self, lease_id: &str) {
        let Some(lease) = self.leases.remove(lease_id) else {
            return;
        };
        self.expiry.remove(&(lease.expires_at, lease.id.clone()));
        if self.by_participant.get(&lease.participant_id) == Some(&lease.id) {
            self.by_participant.remove(&lease.participant_id);
        }
        if let Some(client) = &lease.client {
            if let Some(n) = self.by_client.get_mut(client) {
                *n -= 1;
                if *n == 0 {
                    self.by_client.remove(client);
                }
            }
        }
        self.changes.lease_removed(lease_id);
        if self.stages.contains_key(&lease.stage) {
            let at = self.meta.integrated_at;
            self.update_stage(lease.stage, |st| {
                st.load -= 1;
                st.seat_ended(lease.joined_at, at);
                if st.load == 0 && st.state != StageState::Deleted {
                    st.empty_since = Some(at);
                }
            });
            // The stage's row carries its meter: written whenever a seat ends.
            self.changes.stage(lease.stage);
        }
    }

    /// Integrates viewer time up to `t` (never backwards).
    pub(super) fn integrate(&mut self, t: Millis) {
        if t > self.meta.integrated_at {
            let dt = t - self.meta.integrated_at;
            self.meta.viewer_ms = self
                .meta
                .viewer_ms
                .saturating_add(dt.saturating_mul(self.leases.len() as u64));
            self.meta.integrated_at = t;
            self.meta.stats.viewer_seconds = self.meta.viewer_ms / 1000;
            self.changes.meta = true;
        }
    }

    /// Sweeps lapsed leases in expiry order, integrating viewer time exactly up to each
    /// expiry, then up to `now`.
    pub(super) fn advance(&mut self, now: Millis) {
        while let Some((t, id)) = self.expiry.first().cloned() {
            if t > now {
                break;
            }
            self.integrate(t);
            self.remove_lease(&id);
            self.meta.stats.lease_expiries += 1;
            self.changes.meta = true;
        }
        self.integrate(now);
    }
}
