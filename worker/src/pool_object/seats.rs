//! Seats inside the pool object: a viewer's join (a new seat or a reconnect by lease, the
//! wait for a stage being created), its heartbeat, and a viewer's report that its stage is
//! missing in IVS (checked with `GetStage` before the pool believes it).

use stagefan_core::presence::{Free, FreeKind, Presence};

use super::*;

impl StagePool {
    /// Renews a lease; a lease evicted with its stage (gone from IVS) is `stage_gone`.
    pub(super) async fn heartbeat(&self, lease_id: &str) -> AppResult<Renewed> {
        let shared = &self.shared;
        if !shared.has_pool() {
            return Err(AppError::lease_not_found());
        }
        let lease = shared.mutate(|pool, now| pool.heartbeat(lease_id, now).map_err(pool_error));
        let lease = match lease {
            Err(AppError::NotFound { .. }) if shared.was_evicted(lease_id) => {
                return Err(AppError::Gone {
                    code: "stage_gone",
                    message: "the stage of this seat is gone: ask for a new seat \
                              (POST /api/token/viewer with this leaseId)"
                        .into(),
                })
            }
            other => other?,
        };
        self.schedule_maintenance().await;
        let (life, moving) = shared.with_pool(|pool| {
            let draining = pool
                .stage(lease.stage)
                .is_some_and(|s| s.state == StageState::Draining);
            (pool.life(runtime::now_ms()), draining)
        });
        Ok(Renewed {
            lease_id: lease.id,
            expires_at: lease.expires_at,
            broadcast_state: life.state,
            broadcast_state_since: life.since,
            moving,
        })
    }

    pub(super) async fn join(
        &self,
        broadcast: &str,
        request: &JoinRequest<'_>,
    ) -> AppResult<JoinGrant> {
        let mut request = *request;
        let request = &mut request;
        let shared = &self.shared;
        if !shared.has_pool() {
            return Err(AppError::NotFound {
                code: "broadcast_not_found",
                message: format!("no broadcast {broadcast:?}: the host has not started it"),
            });
        }
        let deadline = runtime::now_ms() + WAIT_FOR_CREATE_MS;
        loop {
            // A new seat needs a subscription of the region's quota granted to this pool.
            self.quota_before_join(request).await;
            let now = runtime::now_ms();
            // A viewer with a seat keeps it; a new one needs a stage with room, and a client
            // at its limit of seats is refused before any stage is asked for.
            let (has_room_or_seat, at_limit) = shared.with_pool(|pool| {
                let held = request.lease_id.and_then(|id| pool.lease(id));
                let room = held.is_some_and(|l| pool.stage(l.stage).is_some_and(|s| s.is_active()))
                    || pool.peek_assignment().is_some();
                (room, pool.client_at_limit(request))
            });
            if !has_room_or_seat && !at_limit {
                // Every stage is full: make more if the policy allows, and wait a little for
                // stages being created, unless their slots in the account-wide CreateStage
                // budget come after the wait (then the viewer is told when to come back).
                // A stage needs its share of the region's stages and publishers first.
                shared.quota_for_stages().await;
                self.scale_up();
                let creating = shared.with_pool(|p| p.load_summary().creating);
                let next_stage_by_deadline =
                    shared.next_create_at(now).is_none_or(|at| at < deadline);
                if now < deadline && creating > 0 && next_stage_by_deadline {
                    shared
                        .create_done
                        .wait(Duration::from_millis(deadline - now))
                        .await;
                    continue;
                }
            }
            // Assign (this also records a refusal when there is no seat).
            let random: [u8; LEASE_RANDOM_BYTES] = runtime::random();
            let assigned = {
                let mut inner = shared.inner.borrow_mut();
                let pool = inner.pool.as_mut().ok_or_else(not_found_pool)?;
                pool.join(request, now, &random)
            };
            match assigned {
                Ok(a) => {
                    let mut lease_expires_at = a.expires_at;
                    if shared.with_pool(|p| p.presence()) == Presence::Stages {
                        // The seat's stage keeps it alive: it takes the lease before the
                        // viewer hears of it. The seat is written once, with `admitted`,
                        // before the answer: a seat lost in between (the object died) was
                        // never the viewer's, and its stage's copy lapses unrenewed.
                        let admitted = shared
                            .admit_at_stage(a.stage, &a.lease_id, a.reconnected)
                            .await;
                        match admitted {
                            Ok(presence::Admission::Taken(at)) => {
                                lease_expires_at = at;
                                // From now on the stage reports its free; the pool holds it.
                                shared.mutate(|pool, now| Ok(pool.admitted(&a.lease_id, now)))?;
                            }
                            Ok(presence::Admission::Lapsed) => {
                                // It lapsed at its stage and the report is on its way: free
                                // it now, and seat the viewer anew.
                                let lapsed = [Free {
                                    lease_id: a.lease_id.clone(),
                                    kind: FreeKind::Lapsed,
                                }];
                                shared.mutate(|pool, now| {
                                    Ok(pool.apply_frees(a.stage, &lapsed, now))
                                })?;
                                request.lease_id = None;
                                continue;
                            }
                            Err(e) => {
                                if !a.reconnected {
                                    shared.mutate(|pool, now| Ok(pool.leave(&a.lease_id, now)))?;
                                }
                                return Err(e);
                            }
                        }
                    }
                    let grant = shared.with_pool(|pool| {
                        let life = pool.life(now);
                        let endpoints = pool
                            .stage(a.stage)
                            .and_then(|s| s.endpoints.clone())
                            .unwrap_or_default();
                        JoinGrant {
                            broadcast: broadcast.to_string(),
                            lease_id: a.lease_id,
                            stage_arn: a.stage_arn,
                            stage_state: a.stage_state,
                            whip_url: endpoints.whip,
                            events_url: endpoints.events,
                            lease_expires_at,
                            lease_ttl_seconds: pool.settings().lease_ttl_ms / 1000,
                            reconnected: a.reconnected,
                            participant_id: a.participant_id,
                            user_id: a.user_id,
                            broadcast_state: life.state,
                            broadcast_state_since: life.since,
                        }
                    });
                    shared.persist()?;
                    self.scale_up();
                    self.schedule_maintenance().await;
                    return Ok(grant);
                }
                Err(AssignError::LeaseIdTaken(_)) => continue,
                Err(AssignError::Ended) => return Err(broadcast_ended()),
                Err(AssignError::ClientLimit { held, limit }) => {
                    shared.persist()?;
                    return Err(AppError::TooManyRequests {
                        code: "client_seat_limit",
                        message: format!(
                            "this address already holds {held} seats of this broadcast (the \
                             limit is {limit}); give one back or wait for one to lapse"
                        ),
                        retry_after_secs: shared.with_pool(alarm::seat_limit_retry_after_secs),
                    });
                }
                Err(AssignError::NoSeat(no)) => {
                    shared.persist()?;
                    // A create left unresolved (its outcome unknown, the lookup failing) is
                    // settled by the maintenance alarm: make sure one is set.
                    self.schedule_maintenance().await;
                    if let Some(quota) = no.region_quota {
                        return Err(AppError::RegionQuota {
                            quota,
                            retry_after_secs: alarm::REGION_QUOTA_RETRY_AFTER_SECS,
                        });
                    }
                    let retry_after_secs = shared.retry_after(now);
                    return Err(AppError::NoCapacity { retry_after_secs });
                }
            }
        }
    }

    /// A viewer's join found its stage missing (`STAGE_NOT_FOUND` at WHIP/WHEP or from the
    /// SDK): ask IVS (`GetStage`, within the account-wide budget, at most once per stage per
    /// `MISSING_CHECK_INTERVAL_MS`) and mark the stage gone if IVS no longer has it. Returns
    /// whether the lease's stage is gone (then the viewer asks for a new seat).
    pub(super) async fn check_missing_stage(&self, lease_id: &str) -> AppResult<bool> {
        let shared = &self.shared;
        let now = runtime::now_ms();
        let stage = shared.with_pool(|pool| {
            let lease = pool.lease(lease_id)?;
            let st = pool.stage(lease.stage)?;
            Some((st.id, st.arn.clone(), st.is_active()))
        });
        let Some((stage, Some(arn), active)) = stage else {
            // No live lease (or its stage is already deleted): the viewer needs a new seat.
            return Ok(!shared.with_pool(|pool| pool.lease(lease_id).is_some()));
        };
        if !active {
            return Ok(false);
        }
        {
            let mut inner = shared.inner.borrow_mut();
            let last = inner.checked_missing.get(&stage).copied();
            if last.is_some_and(|t| now < t + MISSING_CHECK_INTERVAL_MS) {
                return Ok(false);
            }
            inner.checked_missing.insert(stage, now);
        }
        let client = shared.ivs()?;
        let answer: std::result::Result<GetStageResponse, CallError> = call_budgeted(
            shared,
            &client,
            Operation::GetStage,
            &GetStageRequest { arn: arn.clone() },
            BUDGETED_ATTEMPTS,
        )
        .await;
        match answer {
            Err(CallError::Ivs(e)) if e.status == 404 => {
                let evicted =
                    shared.mutate(|pool, now| pool.gone(stage, now).map_err(pool_error))?;
                worker::console_warn!(
                    "stage {arn} is gone from IVS (a viewer found it missing): {} seats evicted",
                    evicted.len()
                );
                shared.remember_evicted(&evicted);
                self.scale_up();
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) => {
                worker::console_error!("GetStage {arn}: {e}");
                Ok(false)
            }
        }
    }
}
