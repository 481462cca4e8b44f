//! The broadcast's life as hosts and viewers see it: not started, on air, the host
//! reconnecting, off air, ended. Derived, never stored as such: the pool keeps a
//! [`LifeRecord`] (when the host came on air, when it last left every stage, an explicit end)
//! in its meta row, and [`derive`] turns it and `now` into a [`Life`].

use serde::{Deserialize, Serialize};

use super::*;

/// How long after the host stopped publishing on every stage the broadcast still counts as
/// the host reconnecting (a page reload, a network gap) before it is off air.
pub const HOST_RECONNECT_GRACE_MS: Millis = 30_000;

/// Where a broadcast is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastState {
    /// The host has not published yet (since the pool was made, or started afresh).
    NotStarted,
    /// The host publishes on at least one stage.
    OnAir,
    /// The host was on air and publishes nowhere, for less than [`HOST_RECONNECT_GRACE_MS`].
    HostReconnecting,
    /// The host was on air and has published nowhere for longer than the grace.
    OffAir,
    /// The host ended the broadcast; a later `publisher-all` starts it afresh.
    Ended,
}

spelled!(
    BroadcastState,
    "The `snake_case` spelling used in JSON.",
    BroadcastState::NotStarted => "not_started",
    BroadcastState::OnAir => "on_air",
    BroadcastState::HostReconnecting => "host_reconnecting",
    BroadcastState::OffAir => "off_air",
    BroadcastState::Ended => "ended",
);

/// A broadcast's state and since when it holds (unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Life {
    /// The state.
    pub state: BroadcastState,
    /// Since when (unix ms): the start, the host's arrival, its leaving (reconnecting), the
    /// end of the grace (off air), or the end.
    pub since: Millis,
}

/// What a pool remembers of its broadcast's life (part of [`PoolMeta`], serde camelCase;
/// absent in rows stored before it existed: a broadcast that has not started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LifeRecord {
    /// When this run of the broadcast began, if it was started afresh after an end (else the
    /// pool's creation).
    pub started_at: Option<Millis>,
    /// Since when the host publishes on some stage (`None` while it publishes nowhere).
    pub on_air_since: Option<Millis>,
    /// Since when the host, having been on air, publishes nowhere (`None` if it never was on
    /// air in this run, or publishes now).
    pub off_air_since: Option<Millis>,
    /// When the host ended the broadcast (`None` while it runs).
    pub ended_at: Option<Millis>,
}

impl LifeRecord {
    /// Whether the host ended the broadcast.
    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some()
    }

    /// The host now publishes somewhere (`publishing`) or nowhere, as of `at`. Returns whether
    /// the record changed (so the meta row is written only on a change). Ignored once ended.
    pub fn host_changed(&mut self, publishing: bool, at: Millis) -> bool {
        if self.is_ended() {
            return false;
        }
        match (publishing, self.on_air_since) {
            (true, None) => {
                self.on_air_since = Some(at);
                self.off_air_since = None;
                true
            }
            (false, Some(_)) => {
                self.on_air_since = None;
                self.off_air_since = Some(at);
                true
            }
            _ => false,
        }
    }

    /// The host ended the broadcast at `at` (idempotent: the first end stays).
    pub fn end(&mut self, at: Millis) -> bool {
        if self.is_ended() {
            return false;
        }
        *self = LifeRecord {
            started_at: self.started_at,
            ended_at: Some(at),
            ..LifeRecord::default()
        };
        true
    }

    /// The broadcast starts afresh at `at` (after an end): not started again.
    pub fn restart(&mut self, at: Millis) {
        *self = LifeRecord {
            started_at: Some(at),
            ..LifeRecord::default()
        };
    }
}

/// The state of a broadcast whose record is `record`, made at `created_at`, whose host
/// publishes somewhere now (`host_publishing`, from the stages), at `now`, with a reconnect
/// grace of `grace_ms`. Pure; `since` is never after `now`.
pub fn derive(
    record: &LifeRecord,
    created_at: Millis,
    host_publishing: bool,
    now: Millis,
    grace_ms: Millis,
) -> Life {
    let life = |state, since: Millis| Life {
        state,
        since: since.min(now),
    };
    if let Some(at) = record.ended_at {
        return life(BroadcastState::Ended, at);
    }
    if host_publishing {
        return life(BroadcastState::OnAir, record.on_air_since.unwrap_or(now));
    }
    match record.off_air_since {
        Some(off) if now.saturating_sub(off) < grace_ms => {
            life(BroadcastState::HostReconnecting, off)
        }
        Some(off) => life(BroadcastState::OffAir, off.saturating_add(grace_ms)),
        None => life(
            BroadcastState::NotStarted,
            record.started_at.unwrap_or(created_at),
        ),
    }
}

/// What ending a broadcast did ([`Pool::end`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ending {
    /// Whether this call ended it (`false`: it was ended already).
    pub ended_now: bool,
    /// The leases freed (every seat).
    pub leases_freed: Vec<String>,
    /// The stages to delete now, each in its slot of the IVS budget.
    pub deletes: Vec<DeleteIntent>,
}

impl Pool {
    /// Whether the host publishes on some stage that exists.
    pub fn host_publishing(&self) -> bool {
        self.stages
            .values()
            .any(|s| s.host_publishing && s.state != StageState::Deleted)
    }

    /// The broadcast's state at `now` (see [`derive`]). O(stages), no change recorded.
    pub fn life(&self, now: Millis) -> Life {
        derive(
            &self.meta.life,
            self.meta.created_at,
            self.host_publishing(),
            now,
            HOST_RECONNECT_GRACE_MS,
        )
    }

    /// Whether the host ended the broadcast (and has not started it afresh).
    pub fn is_ended(&self) -> bool {
        self.meta.life.is_ended()
    }

    /// Follows the stages' host publishing into the life record (after any change of it).
    pub(super) fn refresh_life(&mut self, at: Millis) {
        let publishing = self.host_publishing();
        if self.meta.life.host_changed(publishing, at) {
            self.changes.meta = true;
        }
    }

    /// The host ends the broadcast: every lease is freed (counted as evictions), the host is
    /// taken off every stage, and every stage that exists is drained and to be deleted (the
    /// intents returned; stages still being created are deleted once created, see
    /// [`Pool::end_deletes`]). New seats and creates are refused until [`Pool::restart`].
    /// Idempotent: ending an ended broadcast frees nothing new and returns the deletes still
    /// to do.
    pub fn end(&mut self, now: Millis) -> Ending {
        self.advance(now);
        let ended_now = self.meta.life.end(now);
        self.meta.saved.stop(now);
        let leases_freed: Vec<String> = self.leases.keys().cloned().collect();
        for id in &leases_freed {
            self.remove_lease(id);
        }
        self.meta.stats.evictions += leases_freed.len() as u64;
        let hosted: Vec<StageId> = self
            .stages
            .values()
            .filter(|s| s.host_publishing)
            .map(|s| s.id)
            .collect();
        for id in hosted {
            self.update_stage(id, |st| st.set_publishing(false, now));
            self.changes.stage(id);
        }
        self.changes.meta = true;
        Ending {
            ended_now,
            leases_freed,
            deletes: self.end_deletes(now),
        }
    }

    /// An ended broadcast's stages that exist and still have to be deleted: each is drained
    /// (whatever the minimum of stages) and its delete intent recorded. Empty unless ended.
    pub fn end_deletes(&mut self, now: Millis) -> Vec<DeleteIntent> {
        if !self.is_ended() {
            return Vec::new();
        }
        let ids: Vec<StageId> = self
            .stages
            .values()
            .filter(|s| {
                matches!(
                    s.state,
                    StageState::Warming | StageState::Live | StageState::Draining
                ) && s.arn.is_some()
            })
            .map(|s| s.id)
            .collect();
        let mut intents = Vec::with_capacity(ids.len());
        for id in ids {
            self.start_draining(id, now);
            let st = self.stages.get_mut(&id).expect("listed");
            if st.delete_requested_at.is_none() {
                st.delete_requested_at = Some(now);
                self.changes.stage(id);
            }
            let arn = st.arn.clone().expect("filtered");
            intents.push(DeleteIntent { stage: id, arn });
        }
        intents
    }

    /// Starts an ended broadcast afresh at `now`: not started again, seats and creates
    /// allowed. Returns whether it was ended. The old stages go on being deleted.
    pub fn restart(&mut self, now: Millis) -> bool {
        self.advance(now);
        if !self.is_ended() {
            return false;
        }
        self.meta.life.restart(now);
        self.changes.meta = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use BroadcastState::*;

    const G: Millis = HOST_RECONNECT_GRACE_MS;
    const T0: Millis = 1_764_160_000_000;

    fn rec(
        started: Option<Millis>,
        on: Option<Millis>,
        off: Option<Millis>,
        ended: Option<Millis>,
    ) -> LifeRecord {
        LifeRecord {
            started_at: started,
            on_air_since: on,
            off_air_since: off,
            ended_at: ended,
        }
    }

    #[test]
    fn the_states_by_table() {
        let t = T0 + 100_000;
        #[rustfmt::skip]
        let table: [(LifeRecord, bool, Millis, BroadcastState, Millis); 9] = [
            // never published
            (rec(None, None, None, None), false, t, NotStarted, T0),
            (rec(Some(T0 + 5), None, None, None), false, t, NotStarted, T0 + 5),
            // publishing
            (rec(None, Some(T0 + 7), None, None), true, t, OnAir, T0 + 7),
            // stages say publishing before the record heard of it: since now
            (rec(None, None, None, None), true, t, OnAir, t),
            // left 10 s ago: reconnecting; 30 s ago: off air since the grace ended
            (rec(None, None, Some(t - 10_000), None), false, t, HostReconnecting, t - 10_000),
            (rec(None, None, Some(t - G + 1), None), false, t, HostReconnecting, t - G + 1),
            (rec(None, None, Some(t - G), None), false, t, OffAir, t),
            (rec(None, None, Some(t - 90_000), None), false, t, OffAir, t - 90_000 + G),
            // ended wins over everything
            (rec(None, Some(T0), None, Some(T0 + 9)), true, t, Ended, T0 + 9),
        ];
        for (n, (record, publishing, now, state, since)) in table.into_iter().enumerate() {
            let life = derive(&record, T0, publishing, now, G);
            assert_eq!(life, Life { state, since }, "row {n}: {record:?}");
        }
    }

    #[test]
    fn states_spell_as_the_contract_says() {
        for (s, text) in [
            (NotStarted, "not_started"),
            (OnAir, "on_air"),
            (HostReconnecting, "host_reconnecting"),
            (OffAir, "off_air"),
            (Ended, "ended"),
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), text);
            assert_eq!(s.as_str(), text);
        }
        // Rows stored before the record existed read as a broadcast that has not started.
        let old: LifeRecord = serde_json::from_str("{}").unwrap();
        assert_eq!(old, LifeRecord::default());
    }

    #[derive(Debug, Clone)]
    enum Event {
        Publishing(bool),
        End,
        Restart,
        Wait(Millis),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            4 => any::<bool>().prop_map(Event::Publishing),
            1 => Just(Event::End),
            1 => Just(Event::Restart),
            3 => (0..2 * G).prop_map(Event::Wait),
        ]
    }

    proptest! {
        /// Any sequence of host changes, ends, restarts and waits: the state follows a simple
        /// model (ended until restarted; on air exactly while publishing; after having been on
        /// air, reconnecting within the grace and off air after it; else not started), `since`
        /// never moves past `now`, and the record changes exactly when the model's does.
        #[test]
        fn derived_state_follows_the_model(events in proptest::collection::vec(event(), 0..60)) {
            let mut record = LifeRecord::default();
            let mut now = T0;
            let mut publishing = false;
            // The model: ended, been on air in this run, when the host last left.
            let (mut ended, mut was_on_air, mut left_at) = (false, false, None::<Millis>);
            for e in events {
                match e {
                    Event::Publishing(p) => {
                        let changed = record.host_changed(p, now);
                        if !ended {
                            prop_assert_eq!(changed, p != publishing);
                            if p { was_on_air = true; left_at = None; }
                            else if publishing { left_at = Some(now); }
                            publishing = p;
                        } else {
                            prop_assert!(!changed);
                        }
                    }
                    Event::End => {
                        prop_assert_eq!(record.end(now), !ended);
                        ended = true;
                        publishing = false;
                    }
                    Event::Restart => {
                        record.restart(now);
                        (ended, was_on_air, left_at, publishing) = (false, false, None, false);
                    }
                    Event::Wait(ms) => now += ms,
                }
                let life = derive(&record, T0, publishing, now, G);
                prop_assert!(life.since <= now);
                let expected = if ended {
                    Ended
                } else if publishing {
                    OnAir
                } else if let Some(left) = left_at.filter(|_| was_on_air) {
                    if now - left < G { HostReconnecting } else { OffAir }
                } else {
                    NotStarted
                };
                prop_assert_eq!(life.state, expected, "{:?}", record);
            }
        }
    }

    fn pool_with_stages(n: u64) -> Pool {
        let settings = PoolSettings {
            capacity: 2,
            min_stages: 1,
            ..PoolSettings::default()
        };
        Pool::with_created_stages(settings, n, T0)
    }

    #[test]
    fn a_pool_follows_its_host_through_its_life() {
        let mut pool = pool_with_stages(2);
        let ids: Vec<StageId> = pool.stages().map(|s| s.id).collect();
        assert_eq!(pool.life(T0 + 1).state, NotStarted);
        pool.mark_live(ids[0], "host-a", T0 + 10).unwrap();
        pool.mark_live(ids[1], "host-b", T0 + 20).unwrap();
        assert_eq!(
            pool.life(T0 + 30),
            Life {
                state: OnAir,
                since: T0 + 10
            }
        );
        // Off one stage: still on air; off both: reconnecting, then off air.
        pool.host_unpublished(ids[0], T0 + 40).unwrap();
        assert_eq!(pool.life(T0 + 41).state, OnAir);
        pool.host_unpublished(ids[1], T0 + 50).unwrap();
        assert_eq!(pool.life(T0 + 51).state, HostReconnecting);
        assert_eq!(
            pool.life(T0 + 50 + G),
            Life {
                state: OffAir,
                since: T0 + 50 + G
            }
        );
        // The record is in the meta row: a rebuilt pool says the same.
        let rebuilt = Pool::from_rows(pool.settings().clone(), pool.export()).unwrap();
        assert_eq!(rebuilt.life(T0 + 60), pool.life(T0 + 60));
        // Back on air.
        pool.mark_live(ids[1], "host-b", T0 + 70).unwrap();
        assert_eq!(pool.life(T0 + 80).since, T0 + 70);
    }

    #[test]
    fn ending_frees_every_seat_and_deletes_every_stage_then_a_restart_starts_afresh() {
        let mut pool = pool_with_stages(3);
        let ids: Vec<StageId> = pool.stages().map(|s| s.id).collect();
        pool.mark_live(ids[0], "host", T0 + 10).unwrap();
        let seats: Vec<String> = (0..4u8)
            .map(|n| {
                pool.assign(&format!("v{n}"), T0 + 20, &[n; 16])
                    .unwrap()
                    .lease_id
            })
            .collect();
        pool.begin_create(T0 + 25).unwrap(); // in flight when the host ends
        pool.take_changes();

        let ending = pool.end(T0 + 30);
        assert!(ending.ended_now);
        let mut freed = ending.leases_freed.clone();
        freed.sort();
        let mut held = seats.clone();
        held.sort();
        assert_eq!(freed, held);
        assert_eq!(pool.viewers(), 0);
        assert_eq!(
            ending.deletes.len(),
            3,
            "every created stage, whatever min_stages"
        );
        assert!(pool.pending_changes().meta);
        assert_eq!(
            pool.life(T0 + 40),
            Life {
                state: Ended,
                since: T0 + 30
            }
        );
        pool.check_consistency().unwrap();
        // Seats, heartbeats, creates and the host are refused.
        assert!(matches!(
            pool.join(
                &JoinRequest {
                    user_id: "late",
                    ..Default::default()
                },
                T0 + 41,
                &[9; 16]
            ),
            Err(AssignError::Ended)
        ));
        assert_eq!(pool.heartbeat(&seats[0], T0 + 41), Err(PoolError::Ended));
        assert_eq!(pool.begin_create(T0 + 41), Err(PoolError::Ended));
        assert_eq!(
            pool.mark_live(ids[1], "host", T0 + 41),
            Err(PoolError::Ended)
        );
        // Ending again: nothing new, the same deletes still to do.
        let again = pool.end(T0 + 42);
        assert!(!again.ended_now && again.leases_freed.is_empty());
        assert_eq!(again.deletes, ending.deletes);
        // The stage in flight is deleted once created.
        let creating = pool
            .stages()
            .find(|s| s.state == StageState::Creating)
            .unwrap()
            .id;
        let arn = "arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGHlate";
        pool.created(creating, arn, StageEndpoints::default(), T0 + 43)
            .unwrap();
        assert_eq!(pool.end_deletes(T0 + 44).len(), 4);
        for d in &ending.deletes {
            pool.deleted(d.stage, T0 + 45).unwrap();
        }
        // Ended survives a rebuild from the rows.
        let rebuilt = Pool::from_rows(pool.settings().clone(), pool.export()).unwrap();
        assert!(rebuilt.is_ended());
        // A restart: not started again, creates and seats allowed.
        assert!(pool.restart(T0 + 50));
        assert_eq!(
            pool.life(T0 + 51),
            Life {
                state: NotStarted,
                since: T0 + 50
            }
        );
        assert!(pool.end_deletes(T0 + 52).is_empty());
        pool.begin_create(T0 + 52).unwrap();
        pool.check_consistency().unwrap();
    }
}
