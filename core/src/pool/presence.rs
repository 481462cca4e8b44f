//! The pool's side of stage presence (`crate::presence`): its leases never lapse by
//! themselves, a stage's object reports its frees in batches and the pool applies them
//! idempotently, and what the pool tells a stage's object.

use super::*;
use crate::presence::{Free, FreeKind, StageStatus};

impl Pool {
    /// How long a lease lives in the pool: the TTL when the pool keeps presence itself,
    /// forever when the stages do (a seat is counted until its stage reports it freed).
    pub(super) fn pool_lease_ttl_ms(&self) -> u64 {
        match self.settings.presence {
            Presence::Pool => self.settings.lease_ttl_ms,
            Presence::Stages => Millis::MAX,
        }
    }

    /// Where this pool's viewers keep their seats alive.
    pub fn presence(&self) -> Presence {
        self.settings.presence
    }

    /// `lease_id`'s stage took it (stage presence): from now on it never lapses here, its
    /// stage reports when it is freed. `false` when the pool no longer holds it.
    pub fn admitted(&mut self, lease_id: &str, now: Millis) -> bool {
        self.advance(now);
        if !self.leases.contains_key(lease_id) {
            return false;
        }
        self.renew(lease_id, now, Millis::MAX);
        true
    }

    /// Applies a batch of frees reported by `stage`'s object: each lease that is still held
    /// on that stage is freed (a leave or a lapse, counted as such); a lease the pool no
    /// longer holds, or holds on another stage, is ignored, so a batch sent twice, late or to
    /// the wrong pool frees nothing twice. Returns how many seats it freed.
    pub fn apply_frees(&mut self, stage: StageId, frees: &[Free], now: Millis) -> u32 {
        self.advance(now);
        let mut freed = 0;
        for free in frees {
            if self
                .leases
                .get(&free.lease_id)
                .is_none_or(|lease| lease.stage != stage)
            {
                continue;
            }
            self.remove_lease(&free.lease_id);
            match free.kind {
                FreeKind::Left => self.meta.stats.leaves += 1,
                FreeKind::Lapsed => self.meta.stats.lease_expiries += 1,
            }
            self.changes.meta = true;
            freed += 1;
        }
        freed
    }

    /// What `stage`'s object needs to answer heartbeats: the broadcast's life, and whether
    /// the stage is gone (deleted, or unknown to this pool).
    pub fn stage_status(&self, stage: StageId) -> StageStatus {
        StageStatus {
            life: self.meta.life,
            created_at: self.meta.created_at,
            host_publishing: self.host_publishing(),
            gone: self
                .stages
                .get(&stage)
                .is_none_or(|s| s.state == StageState::Deleted),
            draining: self
                .stages
                .get(&stage)
                .is_some_and(|s| s.state == StageState::Draining),
        }
    }

    /// The status of every stage whose object may hold leases (every stage IVS created, the
    /// deleted ones still remembered included), for the pool's pushes; empty when the pool
    /// keeps presence itself. O(stages).
    pub fn stage_statuses(&self) -> Vec<(StageId, StageStatus)> {
        if self.settings.presence != Presence::Stages {
            return Vec::new();
        }
        let common = StageStatus {
            life: self.meta.life,
            created_at: self.meta.created_at,
            host_publishing: self.host_publishing(),
            gone: false,
            draining: false,
        };
        self.stages
            .values()
            .filter(|s| s.state != StageState::Creating)
            .map(|s| {
                let gone = s.state == StageState::Deleted;
                let draining = s.state == StageState::Draining;
                (
                    s.id,
                    StageStatus {
                        gone,
                        draining,
                        ..common
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presence::StageLeases;
    use crate::regions::lease_route;

    const T0: Millis = 1_764_160_000_000;

    fn pool(capacity: u32, stages: u64) -> Pool {
        let settings = PoolSettings {
            capacity,
            max_seats_per_client: 2,
            presence: Presence::Stages,
            ..PoolSettings::default()
        };
        let mut pool = Pool::with_created_stages(settings, stages, T0);
        let ids: Vec<StageId> = pool.stages().map(|s| s.id).collect();
        for id in ids {
            pool.mark_live(id, "host", T0).unwrap();
        }
        pool
    }

    fn seat(pool: &mut Pool, n: u8, now: Millis) -> Result<Assignment, AssignError> {
        pool.assign(&format!("v{n}"), now, &[n; LEASE_RANDOM_BYTES])
    }

    #[test]
    fn leases_name_their_stage_and_never_lapse_in_the_pool() {
        let mut p = pool(10, 2);
        let a = seat(&mut p, 1, T0).unwrap();
        let route = lease_route(&a.lease_id).unwrap();
        assert_eq!(route.pool.broadcast, "b");
        assert_eq!(route.stage, Some(a.stage));
        // Until its stage took it, a lease lives one TTL: a seat whose admission never
        // happened lapses by itself.
        let lost = seat(&mut p, 2, T0).unwrap();
        assert_eq!(lost.expires_at, T0 + p.settings().lease_ttl_ms);
        assert!(p.admitted(&a.lease_id, T0 + 1));
        assert!(!p.admitted("b.1.nobody", T0 + 1));
        // A day later, without a word from the stage, the admitted seat is still counted;
        // the other lapsed.
        assert_eq!(p.expire(T0 + 86_400_000), 1);
        assert_eq!(p.viewers(), 1);
        assert!(p.lease(&lost.lease_id).is_none());
        // A reconnect by lease is the same seat.
        let again = p
            .join(
                &JoinRequest {
                    user_id: "v1",
                    lease_id: Some(&a.lease_id),
                    client: None,
                    moving: false,
                },
                T0 + 1,
                &[9; LEASE_RANDOM_BYTES],
            )
            .unwrap();
        assert!(again.reconnected);
        assert_eq!(again.participant_id, a.participant_id);
    }

    #[test]
    fn frees_apply_once_and_only_on_their_stage() {
        let mut p = pool(10, 2);
        let a = seat(&mut p, 1, T0).unwrap();
        let b = seat(&mut p, 2, T0).unwrap();
        assert!(p.admitted(&a.lease_id, T0) && p.admitted(&b.lease_id, T0));
        assert_ne!(a.stage, b.stage, "least-loaded spreads them");
        let free_a = [Free {
            lease_id: a.lease_id.clone(),
            kind: FreeKind::Left,
        }];
        // Reported by the wrong stage: nothing.
        assert_eq!(p.apply_frees(b.stage, &free_a, T0 + 1), 0);
        assert_eq!(p.viewers(), 2);
        assert_eq!(p.apply_frees(a.stage, &free_a, T0 + 2), 1);
        // Sent again (the answer was lost): nothing more.
        assert_eq!(p.apply_frees(a.stage, &free_a, T0 + 3), 0);
        assert_eq!(p.viewers(), 1);
        assert_eq!(p.meta().stats.leaves, 1);
        let lapse = [Free {
            lease_id: b.lease_id.clone(),
            kind: FreeKind::Lapsed,
        }];
        assert_eq!(p.apply_frees(b.stage, &lapse, T0 + 4), 1);
        assert_eq!(p.meta().stats.lease_expiries, 1);
        assert_eq!(p.viewers(), 0);
        assert!(p.check_consistency().is_ok());
    }

    #[test]
    fn late_frees_never_let_the_pool_seat_over_capacity() {
        // Two stages of 3; viewers come and go, their frees reach the pool late and out of
        // order. The pool never seats more than capacity, and every seat freed at a stage
        // is counted free once its report arrives.
        let mut p = pool(3, 2);
        let mut stages: BTreeMap<StageId, StageLeases> = BTreeMap::new();
        let mut in_flight: Vec<(StageId, Vec<Free>)> = Vec::new();
        let mut now = T0;
        for round in 0..60u8 {
            now += 1_000;
            match seat(&mut p, round, now) {
                Ok(a) => {
                    let table = stages.entry(a.stage).or_insert_with(|| {
                        StageLeases::new("b", a.stage, 5_000, p.stage_status(a.stage), now)
                    });
                    table.admit(&a.lease_id, false, now).unwrap();
                    assert!(p.admitted(&a.lease_id, now));
                }
                Err(AssignError::NoSeat(_)) => {}
                Err(e) => panic!("{e:?}"),
            }
            for st in p.stages() {
                assert!(st.load <= st.capacity, "over capacity: {st:?}");
            }
            // Every third round a viewer leaves; the rest lapse. Reports travel late.
            for (id, table) in stages.iter_mut() {
                if round % 3 == 0 {
                    if let Some(lease) = p.leases().find(|l| l.stage == *id).map(|l| l.id.clone()) {
                        table.leave(&lease, now);
                    }
                }
                table.expire(now);
                let batch = table.batch();
                if !batch.is_empty() {
                    in_flight.push((*id, batch.clone()));
                    table.reported(&batch, p.stage_status(*id), now);
                }
            }
            // Deliver the oldest report only every other round (late), sometimes twice.
            if round % 2 == 0 && !in_flight.is_empty() {
                let (id, batch) = in_flight.remove(0);
                p.apply_frees(id, &batch, now);
                if round % 4 == 0 {
                    assert_eq!(p.apply_frees(id, &batch, now), 0, "a batch applies once");
                }
            }
            let held: usize = stages.values().map(StageLeases::len).sum();
            assert!(
                p.viewers() as usize >= held,
                "the pool counts every live lease"
            );
        }
        for (id, batch) in in_flight.drain(..) {
            p.apply_frees(id, &batch, now);
        }
        let held: usize = stages.values().map(StageLeases::len).sum();
        assert_eq!(
            p.viewers() as usize,
            held,
            "once every report arrived, counts agree"
        );
        assert!(p.check_consistency().is_ok());
    }

    #[test]
    fn leases_made_before_the_switch_keep_their_ttl() {
        let settings = PoolSettings {
            capacity: 10,
            ..PoolSettings::default()
        };
        let mut old = Pool::with_created_stages(settings.clone(), 1, T0);
        let id = old.stages().next().unwrap().id;
        old.mark_live(id, "host", T0).unwrap();
        let a = seat(&mut old, 1, T0).unwrap();
        assert_eq!(lease_route(&a.lease_id).unwrap().stage, None);
        let switched = PoolSettings {
            presence: Presence::Stages,
            ..settings
        };
        let mut p = Pool::from_rows(switched, old.export()).unwrap();
        // Its heartbeats still come to the pool (the edge routes by the id's form): one TTL
        // each, so it still lapses here when they stop.
        let renewed = p.heartbeat(&a.lease_id, T0 + 1_000).unwrap();
        assert_eq!(renewed.expires_at, T0 + 1_000 + p.settings().lease_ttl_ms);
        assert_eq!(p.expire(renewed.expires_at), 1);
        assert_eq!(p.viewers(), 0);
        // New seats name their stage.
        let b = seat(&mut p, 2, T0 + 2_000).unwrap();
        assert_eq!(lease_route(&b.lease_id).unwrap().stage, Some(b.stage));
    }

    #[test]
    fn the_status_says_gone_and_ended() {
        let mut p = pool(10, 2);
        let a = seat(&mut p, 1, T0).unwrap();
        assert!(!p.stage_status(a.stage).gone);
        assert!(p.stage_status(a.stage).host_publishing);
        assert!(p.stage_status(StageId(99)).gone);
        p.gone(a.stage, T0 + 1).unwrap();
        assert!(p.stage_status(a.stage).gone);
        let statuses = p.stage_statuses();
        assert_eq!(statuses.len(), 2);
        assert!(statuses.iter().all(|(id, st)| *st == p.stage_status(*id)));
        p.end(T0 + 2);
        assert!(p.stage_status(a.stage).is_ended());
        assert_eq!(
            p.stage_status(a.stage).life_at(T0 + 3).state,
            BroadcastState::Ended
        );
    }
}
