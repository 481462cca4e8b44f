//! Property tests of the pool: random sequences of operations, with the pool's invariants
//! checked after every step and each answer checked against an independent expectation.

mod common;

use common::Store;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use stagefan_core::config::FanoutMode;
use stagefan_core::pool::*;

/// The lease a user holds (user ids are display names now; in these tests each is unique).
fn lease_of_user<'a>(pool: &'a Pool, user_id: &str) -> Option<&'a Lease> {
    pool.leases().find(|l| l.user_id == user_id)
}

const T0: Millis = 1_700_000_000_000;
const USERS: u8 = 16;

#[derive(Debug, Clone)]
enum Op {
    Assign(u8),
    Heartbeat(u8),
    Leave(u8),
    Advance(u32),
    Expire,
    BeginCreate,
    Created(u8),
    CreateFailed(u8),
    MarkLive(u8),
    HostUnpublished(u8),
    Drain(u8),
    RequestDelete(u8),
    Deleted(u8),
    Observe(u8, bool, u8),
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..USERS).prop_map(Op::Assign),
        3 => (0..USERS).prop_map(Op::Heartbeat),
        2 => (0..USERS).prop_map(Op::Leave),
        4 => (0u32..25_000).prop_map(Op::Advance),
        1 => Just(Op::Expire),
        3 => Just(Op::BeginCreate),
        3 => any::<u8>().prop_map(Op::Created),
        1 => any::<u8>().prop_map(Op::CreateFailed),
        3 => any::<u8>().prop_map(Op::MarkLive),
        1 => any::<u8>().prop_map(Op::HostUnpublished),
        2 => any::<u8>().prop_map(Op::Drain),
        2 => any::<u8>().prop_map(Op::RequestDelete),
        1 => any::<u8>().prop_map(Op::Deleted),
        2 => (any::<u8>(), any::<bool>(), 0u8..6).prop_map(|(i, p, s)| Op::Observe(i, p, s)),
        1 => Just(Op::Rebuild),
    ]
}

fn settings() -> impl Strategy<Value = PoolSettings> {
    (
        1u32..5,
        1u32..3,
        2u32..9,
        1_000u64..30_000,
        any::<bool>(),
        0u32..4,
    )
        .prop_map(
            |(capacity, min, max, ttl, replicate, per_client)| PoolSettings {
                capacity,
                min_stages: min,
                max_stages: max.max(min),
                lease_ttl_ms: ttl,
                fanout: if replicate {
                    FanoutMode::Replicate
                } else {
                    FanoutMode::MultiPublish
                },
                max_seats_per_client: per_client,
                ..PoolSettings::default()
            },
        )
}

/// The client address a model user asks from: several users share one (a household).
fn client(u: u8) -> String {
    format!("10.0.0.{}", u % 3)
}

struct World {
    pool: Pool,
    settings: PoolSettings,
    store: Store,
    now: Millis,
    seq: u64,
}

impl World {
    fn random(&mut self) -> [u8; LEASE_RANDOM_BYTES] {
        self.seq += 1;
        let mut b = [0u8; LEASE_RANDOM_BYTES];
        b[..8].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    fn nth_stage(&self, i: u8, filter: impl Fn(&Stage) -> bool) -> Option<StageId> {
        let ids: Vec<StageId> = self
            .pool
            .stages()
            .filter(|s| filter(s))
            .map(|s| s.id)
            .collect();
        if ids.is_empty() {
            None
        } else {
            Some(ids[usize::from(i) % ids.len()])
        }
    }
}

fn user(u: u8) -> String {
    format!("user-{u}")
}

fn eligible_stage(pool: &Pool) -> Option<StageId> {
    let pick = |state: StageState| {
        pool.stages()
            .filter(|s| s.state == state && s.load < s.capacity)
            // Replicate mode: a warming replica waits for the host's replica before viewers.
            .filter(|s| state == StageState::Live || s.origin.is_none())
            .min_by_key(|s| (s.load, s.id))
            .map(|s| s.id)
    };
    pick(StageState::Live).or_else(|| pick(StageState::Warming))
}

fn check_invariants(w: &World, swept: bool) -> Result<(), TestCaseError> {
    let pool = &w.pool;
    pool.check_consistency()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut per_stage: BTreeMap<StageId, u32> = BTreeMap::new();
    let mut users = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for lease in pool.leases() {
        *per_stage.entry(lease.stage).or_default() += 1;
        prop_assert!(
            users.insert(lease.user_id.clone()),
            "user {} holds two leases",
            lease.user_id
        );
        prop_assert!(ids.insert(lease.id.clone()), "lease counted twice");
        prop_assert_eq!(
            pool.lease_of_participant(&lease.participant_id)
                .map(|l| &l.id),
            Some(&lease.id),
            "a participant id names another seat"
        );
        prop_assert_eq!(
            lease_of_user(pool, &lease.user_id).map(|l| &l.id),
            Some(&lease.id)
        );
        let (b, rnd) = lease.id.split_once('.').expect("broadcast.random");
        prop_assert_eq!(b, pool.broadcast());
        prop_assert_eq!(rnd.len(), 22);
        if let Some(client) = &lease.client {
            let limit = w.settings.max_seats_per_client;
            prop_assert!(limit == 0 || pool.seats_of_client(client) <= limit);
        }
        if swept {
            prop_assert!(lease.expires_at > w.now, "a lapsed lease survived a sweep");
        }
    }
    for st in pool.stages() {
        let held = per_stage.get(&st.id).copied().unwrap_or(0);
        prop_assert_eq!(
            st.load,
            held,
            "stage {} load differs from its leases",
            st.id
        );
        prop_assert!(st.load <= st.capacity, "stage {} above capacity", st.id);
        if matches!(st.state, StageState::Creating | StageState::Deleted) {
            prop_assert_eq!(held, 0, "{} stage {} holds leases", st.state, st.id);
        }
        prop_assert_eq!(
            st.load == 0,
            st.empty_since.is_some() || st.state == StageState::Deleted
        );
        if st.state != StageState::Creating && st.state != StageState::Deleted {
            prop_assert!(st.arn.is_some());
        }
        if let Some(o) = st.origin {
            if st.state != StageState::Deleted {
                let origin = pool.stage(o).expect("origin exists");
                prop_assert!(
                    origin.state != StageState::Deleted,
                    "replica of a deleted origin"
                );
                prop_assert!(origin.origin.is_none(), "replica of a replica");
            }
        }
    }
    for origin in pool.stages().filter(|s| s.origin.is_none()) {
        let replicas = pool
            .stages()
            .filter(|s| s.origin == Some(origin.id) && s.state != StageState::Deleted)
            .count();
        prop_assert!(replicas <= MAX_REPLICAS_PER_ORIGIN);
    }
    for (id, _) in per_stage {
        prop_assert!(pool.stage(id).is_some(), "lease on a forgotten stage");
    }
    prop_assert_eq!(pool.viewers() as usize, pool.leases().count());
    let s = pool.stats();
    prop_assert_eq!(
        s.joins,
        u64::from(pool.viewers()) + s.leaves + s.lease_expiries + s.evictions
    );
    prop_assert!(s.peak_viewers >= u64::from(pool.viewers()));
    let existing = pool
        .stages()
        .filter(|s| s.state != StageState::Deleted)
        .count();
    prop_assert!(existing <= w.settings.max_stages as usize);

    // Snapshot → rebuild round trip: from all rows, and from the rows the change records wrote.
    let rebuilt = Pool::from_rows(w.settings.clone(), pool.export())
        .map_err(|e| TestCaseError::fail(format!("rebuild: {e}")))?;
    prop_assert_eq!(rebuilt.export(), pool.export());
    prop_assert_eq!(rebuilt.snapshot_view(w.now), pool.snapshot_view(w.now));
    let from_store = Pool::from_rows(w.settings.clone(), w.store.rows())
        .map_err(|e| TestCaseError::fail(format!("rebuild from store: {e}")))?;
    prop_assert_eq!(from_store.export(), pool.export());
    let json = serde_json::to_string(&pool.snapshot_view(w.now)).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    prop_assert_eq!(back, pool.snapshot_view(w.now));
    Ok(())
}

fn step(w: &mut World, op: &Op) -> Result<(), TestCaseError> {
    // What the pool looks like once lapsed leases are swept at `now`: the expectation.
    let mut probe = w.pool.clone();
    probe.expire(w.now);
    let now = w.now;
    match op {
        Op::Assign(u) => {
            let user = user(*u);
            // An honest viewer presents the lease it holds (the page keeps it).
            let held = lease_of_user(&probe, &user).cloned();
            let sticky = held
                .clone()
                .filter(|l| probe.stage(l.stage).unwrap().is_active());
            let expected = eligible_stage(&probe);
            let random = w.random();
            let address = client(*u);
            let limit = w.settings.max_seats_per_client;
            let over_limit =
                held.is_none() && limit > 0 && probe.seats_of_client(&address) >= limit;
            let request = JoinRequest {
                user_id: &user,
                lease_id: held.as_ref().map(|l| l.id.as_str()),
                client: Some(&address),
                moving: false,
            };
            match w.pool.join(&request, now, &random) {
                Ok(a) => {
                    prop_assert!(!over_limit, "a client over its limit got a new seat");
                    if let Some(old) = sticky {
                        prop_assert!(a.reconnected);
                        prop_assert_eq!(&a.participant_id, &old.participant_id);
                        prop_assert_eq!(&a.lease_id, &old.id);
                        prop_assert_eq!(a.stage, old.stage, "sticky reconnect moved stages");
                        prop_assert_eq!(
                            w.pool.stage(a.stage).unwrap().load,
                            probe.stage(a.stage).unwrap().load
                        );
                    } else {
                        prop_assert!(!a.reconnected);
                        prop_assert_eq!(Some(a.stage), expected, "not the least-loaded stage");
                        prop_assert_eq!(
                            w.pool.stage(a.stage).unwrap().load,
                            probe.stage(a.stage).unwrap().load + 1
                        );
                    }
                    prop_assert_eq!(a.expires_at, now + w.settings.lease_ttl_ms);
                    prop_assert!(matches!(
                        a.stage_state,
                        StageState::Live | StageState::Warming
                    ));
                }
                Err(AssignError::ClientLimit { held: n, limit: l }) => {
                    prop_assert!(over_limit, "refused a client below its limit");
                    prop_assert_eq!((n, l), (limit, limit));
                }
                Err(AssignError::NoSeat(no)) => {
                    prop_assert!(!over_limit, "the client limit is checked first");
                    prop_assert!(sticky.is_none());
                    prop_assert_eq!(expected, None, "refused with a seat free");
                    let creating = probe
                        .stages()
                        .filter(|s| s.state == StageState::Creating)
                        .count() as u32;
                    prop_assert_eq!(no.stages_creating, creating);
                    let waiting = probe
                        .stages()
                        .filter(|s| s.state == StageState::Warming && s.origin.is_some())
                        .count() as u32;
                    prop_assert_eq!(no.replicas_waiting, waiting);
                }
                Err(e) => return Err(TestCaseError::fail(format!("assign: {e}"))),
            }
        }
        Op::Heartbeat(u) => {
            let lease = lease_of_user(&probe, &user(*u)).cloned();
            let id = lease
                .as_ref()
                .map_or_else(|| "x.none".to_string(), |l| l.id.clone());
            let r = w.pool.heartbeat(&id, now);
            match lease {
                Some(old) => {
                    let renewed = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(
                        renewed.expires_at,
                        old.expires_at.max(now + w.settings.lease_ttl_ms)
                    );
                    prop_assert_eq!(renewed.stage, old.stage);
                }
                None => prop_assert_eq!(r, Err(PoolError::LeaseNotFound)),
            }
        }
        Op::Leave(u) => {
            let lease = lease_of_user(&probe, &user(*u)).cloned();
            let id = lease
                .as_ref()
                .map_or_else(|| "x.none".to_string(), |l| l.id.clone());
            prop_assert_eq!(w.pool.leave(&id, now), lease.is_some());
            prop_assert!(w.pool.lease(&id).is_none());
        }
        Op::Advance(ms) => w.now += u64::from(*ms),
        Op::Expire => {
            let due = w.pool.leases().filter(|l| l.expires_at <= now).count() as u32;
            prop_assert_eq!(w.pool.expire(now), due);
        }
        Op::BeginCreate => {
            let existing = probe
                .stages()
                .filter(|s| s.state != StageState::Deleted)
                .count() as u32;
            let r = w.pool.begin_create(now);
            prop_assert_eq!(r.is_ok(), existing < w.settings.max_stages);
            if let Ok(intent) = r {
                let st = w.pool.stage(intent.stage).unwrap();
                prop_assert_eq!(st.state, StageState::Creating);
                prop_assert_eq!(st.origin, intent.origin);
            }
        }
        Op::Created(i) => {
            if let Some(id) = w.nth_stage(*i, |s| s.state == StageState::Creating) {
                w.seq += 1;
                let arn = format!("arn:aws:ivs:us-east-1:123456789012:stage/s{:011}", w.seq);
                let eps = StageEndpoints {
                    whip: "http://w".into(),
                    events: "ws://e".into(),
                };
                w.pool
                    .created(id, &arn, eps.clone(), now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(w.pool.stage(id).unwrap().state, StageState::Warming);
                // Completing the intent again with another ARN is refused: no double create.
                prop_assert!(w.pool.created(id, "arn:other", eps, now).is_err());
            }
        }
        Op::CreateFailed(i) => {
            if let Some(id) = w.nth_stage(*i, |s| s.state == StageState::Creating) {
                w.pool
                    .create_failed(id, now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                if let Some(st) = w.pool.stage(id) {
                    prop_assert_eq!(st.state, StageState::Deleted);
                }
            }
        }
        Op::MarkLive(i) => {
            if let Some(id) = w.nth_stage(*i, |_| true) {
                let before = probe.stage(id).unwrap().clone();
                let r = w.pool.mark_live(id, "host", now);
                let after = w.pool.stage(id).unwrap();
                match before.state {
                    StageState::Warming | StageState::Live | StageState::Draining
                        if before.origin.is_none() =>
                    {
                        prop_assert!(r.is_ok());
                        prop_assert!(after.host_publishing);
                        let want = if before.state == StageState::Draining {
                            StageState::Draining
                        } else {
                            StageState::Live
                        };
                        prop_assert_eq!(after.state, want);
                    }
                    _ => {
                        prop_assert!(r.is_err());
                        prop_assert_eq!(after.state, before.state);
                    }
                }
            }
        }
        Op::HostUnpublished(i) => {
            if let Some(id) = w.nth_stage(*i, |_| true) {
                w.pool
                    .host_unpublished(id, now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(!w.pool.stage(id).unwrap().host_publishing);
            }
        }
        Op::Drain(i) => {
            if let Some(id) = w.nth_stage(*i, |_| true) {
                let before = probe.stage(id).unwrap().clone();
                let active = probe.stages().filter(|s| s.is_active()).count() as u32;
                let live = probe
                    .stages()
                    .filter(|s| s.state == StageState::Live)
                    .count();
                let r = w.pool.drain(id, now);
                if r.is_ok() && before.state != StageState::Draining {
                    prop_assert!(before.is_active());
                    prop_assert!(active > w.settings.min_stages, "drained below min_stages");
                    prop_assert!(
                        before.state != StageState::Live || live > 1,
                        "drained the last live stage"
                    );
                    prop_assert_eq!(w.pool.stage(id).unwrap().state, StageState::Draining);
                }
                if r.is_err() {
                    prop_assert_eq!(w.pool.stage(id).unwrap().state, before.state);
                }
            }
        }
        Op::RequestDelete(i) => {
            if let Some(id) = w.nth_stage(*i, |_| true) {
                let before = probe.stage(id).unwrap().clone();
                match w.pool.request_delete(id, now) {
                    Ok(intent) => {
                        prop_assert_eq!(before.load, 0, "delete with viewers");
                        prop_assert!(
                            !before.host_publishing || before.state == StageState::Draining,
                            "delete under the host of a serving stage"
                        );
                        prop_assert_eq!(Some(intent.arn), before.arn);
                        prop_assert_eq!(w.pool.stage(id).unwrap().state, StageState::Draining);
                    }
                    Err(_) => prop_assert_eq!(w.pool.stage(id).unwrap().state, before.state),
                }
            }
        }
        Op::Deleted(i) => {
            if let Some(id) = w.nth_stage(*i, |s| s.state != StageState::Creating) {
                let mut on_it: Vec<String> = probe
                    .leases()
                    .filter(|l| l.stage == id)
                    .map(|l| l.id.clone())
                    .collect();
                let mut evicted = w
                    .pool
                    .deleted(id, now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                on_it.sort();
                evicted.sort();
                prop_assert_eq!(evicted, on_it);
            }
        }
        Op::Observe(i, publishing, subs) => {
            if let Some(id) = w.nth_stage(*i, |s| s.arn.is_some()) {
                let before = probe.stage(id).unwrap().clone();
                let obs = Observation {
                    observed_at: now,
                    stages: vec![StageObservation {
                        stage_arn: before.arn.clone().unwrap(),
                        publishers: if *publishing {
                            vec!["host".into()]
                        } else {
                            vec![]
                        },
                        subscribers: (0..*subs).map(|s| format!("sub{s}")).collect(),
                    }],
                    ..Default::default()
                };
                let report = w.pool.observe(&obs, now);
                let after = w.pool.stage(id).unwrap();
                if before.state == StageState::Deleted {
                    prop_assert_eq!(report.unknown_stages.len(), 1);
                } else {
                    let drift = u32::from(*subs) != before.load;
                    prop_assert_eq!(report.drift.len(), usize::from(drift));
                    prop_assert_eq!(after.host_publishing, *publishing);
                    if *publishing && before.state == StageState::Warming {
                        prop_assert_eq!(after.state, StageState::Live);
                    } else {
                        prop_assert_eq!(after.state, before.state);
                    }
                }
            }
        }
        Op::Rebuild => {
            let rows = w.store.rows();
            w.pool = Pool::from_rows(w.settings.clone(), rows)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
    }
    w.store.apply(&mut w.pool);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn pool_invariants_hold_under_random_operations(
        settings in settings(),
        ops in prop::collection::vec(op(), 1..160),
    ) {
        let mut pool = Pool::new("prop", settings.clone(), T0).unwrap();
        let mut store = Store::default();
        store.apply(&mut pool);
        let mut w = World { pool, settings, store, now: T0, seq: 0 };
        for op in &ops {
            step(&mut w, op)?;
            // Ops that always reach the pool sweep lapsed leases; the others may find no
            // stage to act on and leave the pool alone.
            let swept = matches!(
                op,
                Op::Assign(_) | Op::Heartbeat(_) | Op::Leave(_) | Op::Expire | Op::BeginCreate
            );
            check_invariants(&w, swept)?;
        }
    }

    /// A full-capacity join storm: every seat is handed out exactly once, spread evenly.
    #[test]
    fn a_join_storm_fills_every_seat_evenly_and_never_more(
        stages in 1usize..12,
        capacity in 1u32..20,
        extra in 0u32..30,
    ) {
        let settings = PoolSettings { capacity, min_stages: 1, max_stages: 64, lease_ttl_ms: 60_000, fanout: FanoutMode::MultiPublish, ..PoolSettings::default() };
        let mut pool = Pool::new("storm", settings, T0).unwrap();
        for n in 0..stages {
            let id = pool.begin_create(T0).unwrap().stage;
            pool.created(id, &format!("arn:{n}"), StageEndpoints::default(), T0).unwrap();
            pool.mark_live(id, "h", T0).unwrap();
        }
        let seats = stages as u32 * capacity;
        let mut granted = 0;
        for v in 0..seats + extra {
            let mut r = [0u8; LEASE_RANDOM_BYTES];
            r[..4].copy_from_slice(&v.to_le_bytes());
            match pool.assign(&format!("v{v}"), T0, &r) {
                Ok(_) => granted += 1,
                Err(AssignError::NoSeat(_)) => prop_assert!(v >= seats),
                Err(e) => return Err(TestCaseError::fail(e.to_string())),
            }
            let loads: Vec<u32> = pool.stages().map(|s| s.load).collect();
            let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
            prop_assert!(hi - lo <= 1, "uneven spread {:?}", loads);
        }
        prop_assert_eq!(granted, seats);
        prop_assert_eq!(pool.stats().refusals, u64::from(extra));
    }
}
