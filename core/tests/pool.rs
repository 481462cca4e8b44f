//! Unit tests of the stage pool: one rule per test.

mod common;

use common::Store;

use stagefan_core::config::FanoutMode;
use stagefan_core::pool::*;

/// The lease a user holds (user ids are display names now; in these tests each is unique).
fn lease_of_user<'a>(pool: &'a Pool, user_id: &str) -> Option<&'a Lease> {
    pool.leases().find(|l| l.user_id == user_id)
}

const T0: Millis = 1_764_160_000_000;
const TTL: u64 = 60_000;

fn settings(capacity: u32, min: u32, max: u32) -> PoolSettings {
    PoolSettings {
        capacity,
        min_stages: min,
        max_stages: max,
        lease_ttl_ms: TTL,
        fanout: FanoutMode::MultiPublish,
        ..PoolSettings::default()
    }
}

fn rnd(n: u64) -> [u8; LEASE_RANDOM_BYTES] {
    let mut b = [0u8; LEASE_RANDOM_BYTES];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8..].copy_from_slice(&(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
    b
}

fn arn(n: u64) -> String {
    format!("arn:aws:ivs:us-east-1:123456789012:stage/stage{n:07}")
}

fn endpoints() -> StageEndpoints {
    StageEndpoints {
        whip: "http://127.0.0.1:8790/whip".into(),
        events: "ws://127.0.0.1:8790/events".into(),
    }
}

/// Creates a stage and brings it to warming.
fn warm(pool: &mut Pool, now: Millis) -> StageId {
    let intent = pool.begin_create(now).unwrap();
    pool.created(intent.stage, &arn(intent.stage.0), endpoints(), now)
        .unwrap();
    intent.stage
}

/// Creates a stage and brings it to live.
fn live(pool: &mut Pool, now: Millis) -> StageId {
    let id = warm(pool, now);
    pool.mark_live(id, &format!("host-{id}"), now).unwrap();
    id
}

fn pool_with_live(n: usize, capacity: u32) -> (Pool, Vec<StageId>) {
    let mut pool = Pool::new("default", settings(capacity, 1, 100), T0).unwrap();
    let ids = (0..n).map(|_| live(&mut pool, T0)).collect();
    (pool, ids)
}

fn load(pool: &Pool, id: StageId) -> u32 {
    pool.stage(id).unwrap().load
}

#[test]
fn new_pool_refuses_a_bad_broadcast_id() {
    assert!(Pool::new("bad.id", settings(5, 1, 5), T0).is_err());
    assert!(Pool::new("", settings(5, 1, 5), T0).is_err());
    let pool = Pool::new("show_1-a", settings(5, 1, 5), T0).unwrap();
    assert_eq!(pool.broadcast(), "show_1-a");
    assert_eq!(pool.viewers(), 0);
    assert_eq!(pool.stages().count(), 0);
}

#[test]
fn stage_lifecycle_creating_warming_live_draining_deleted() {
    let mut pool = Pool::new("default", settings(5, 1, 5), T0).unwrap();
    let first = live(&mut pool, T0);
    let intent = pool.begin_create(T0 + 1).unwrap();
    assert_eq!(intent.name, format!("default-{}", intent.stage));
    assert_eq!(intent.tags.get("stagefan:managed").unwrap(), "true");
    assert_eq!(intent.tags.get("stagefan:broadcast").unwrap(), "default");
    let id = intent.stage;
    assert_eq!(pool.stage(id).unwrap().state, StageState::Creating);
    assert_eq!(pool.stage(id).unwrap().arn, None);

    pool.created(id, &arn(9), endpoints(), T0 + 2).unwrap();
    let st = pool.stage(id).unwrap();
    assert_eq!(st.state, StageState::Warming);
    assert_eq!(st.warm_at, Some(T0 + 2));
    assert_eq!(pool.stage_by_arn(&arn(9)).unwrap().id, id);
    assert_eq!(pool.stage_id(&arn(9)).unwrap(), id);

    pool.mark_live(id, "host-p", T0 + 3).unwrap();
    let st = pool.stage(id).unwrap();
    assert_eq!(st.state, StageState::Live);
    assert_eq!(st.live_at, Some(T0 + 3));
    assert_eq!(st.host_participant_id.as_deref(), Some("host-p"));
    assert!(st.host_publishing);

    pool.host_unpublished(id, T0 + 4).unwrap();
    pool.drain(id, T0 + 5).unwrap();
    assert_eq!(pool.stage(id).unwrap().state, StageState::Draining);
    assert_eq!(pool.stage(id).unwrap().draining_since, Some(T0 + 5));
    let del = pool.request_delete(id, T0 + 6).unwrap();
    assert_eq!(del.arn, arn(9));
    assert_eq!(pool.deleted(id, T0 + 7).unwrap(), Vec::<String>::new());
    let st = pool.stage(id).unwrap();
    assert_eq!(st.state, StageState::Deleted);
    assert_eq!(st.deleted_at, Some(T0 + 7));
    assert_eq!(pool.stats().stages_created, 2);
    assert_eq!(pool.stats().stages_deleted, 1);
    assert_eq!(pool.stage(first).unwrap().state, StageState::Live);
}

#[test]
fn a_create_intent_is_completed_once() {
    let mut pool = Pool::new("default", settings(5, 1, 5), T0).unwrap();
    let id = pool.begin_create(T0).unwrap().stage;
    pool.created(id, &arn(1), endpoints(), T0).unwrap();
    // The same answer again (a retried callback) is harmless...
    pool.created(id, &arn(1), endpoints(), T0 + 1).unwrap();
    assert_eq!(pool.stats().stages_created, 1);
    // ...a different ARN for the same intent is refused.
    let err = pool.created(id, &arn(2), endpoints(), T0).unwrap_err();
    assert!(matches!(err, PoolError::WrongState { .. }), "{err}");
    assert!(pool.create_failed(id, T0).is_err());
    // Another intent cannot claim an ARN already in the pool.
    let other = pool.begin_create(T0).unwrap().stage;
    assert_eq!(
        pool.created(other, &arn(1), endpoints(), T0),
        Err(PoolError::ArnInUse(arn(1)))
    );
    assert!(matches!(
        pool.created(StageId(99), &arn(3), endpoints(), T0),
        Err(PoolError::UnknownStage(_))
    ));
    // Intents get distinct ids.
    assert_ne!(id, other);
}

#[test]
fn a_failed_create_is_deleted_and_counted() {
    let mut pool = Pool::new("default", settings(5, 1, 5), T0).unwrap();
    let id = pool.begin_create(T0).unwrap().stage;
    pool.create_failed(id, T0 + 5).unwrap();
    let st = pool.stage(id).unwrap();
    assert_eq!(st.state, StageState::Deleted);
    assert!(st.create_failed);
    assert_eq!(pool.stats().create_failures, 1);
    assert_eq!(pool.stats().stages_created, 0);
    assert!(pool.created(id, &arn(1), endpoints(), T0).is_err());
    assert!(pool.create_failed(id, T0).is_err());
}

#[test]
fn creates_are_refused_at_max_stages_counting_those_in_flight() {
    let mut pool = Pool::new("default", settings(5, 1, 3), T0).unwrap();
    live(&mut pool, T0);
    pool.begin_create(T0).unwrap();
    pool.begin_create(T0).unwrap();
    assert_eq!(pool.begin_create(T0), Err(PoolError::MaxStages { max: 3 }));
    // A failed create frees its place.
    let failed = pool.begin_create(T0);
    assert!(failed.is_err());
    let creating: Vec<StageId> = pool
        .stages()
        .filter(|s| s.state == StageState::Creating)
        .map(|s| s.id)
        .collect();
    pool.create_failed(creating[0], T0).unwrap();
    assert!(pool.begin_create(T0).is_ok());
}

#[test]
fn assignment_goes_to_the_least_loaded_live_stage() {
    let (mut pool, ids) = pool_with_live(3, 10);
    for u in 0..6 {
        pool.assign(&format!("u{u}"), T0, &rnd(u)).unwrap();
    }
    // Round-robin by load: 2 each.
    for id in &ids {
        assert_eq!(load(&pool, *id), 2);
    }
    pool.leave(&lease_of_user(&pool, "u1").unwrap().id.clone(), T0);
    let stage_of_u1_freed = ids
        .iter()
        .copied()
        .find(|id| load(&pool, *id) == 1)
        .unwrap();
    let a = pool.assign("new", T0, &rnd(100)).unwrap();
    assert_eq!(a.stage, stage_of_u1_freed);
    assert_eq!(a.stage_state, StageState::Live);
    assert_eq!(
        a.stage_arn,
        pool.stage(a.stage).unwrap().arn.clone().unwrap()
    );
    assert!(!a.reconnected);
}

#[test]
fn ties_go_to_the_oldest_stage() {
    let (mut pool, ids) = pool_with_live(3, 10);
    assert_eq!(pool.assign("a", T0, &rnd(1)).unwrap().stage, ids[0]);
    assert_eq!(pool.assign("b", T0, &rnd(2)).unwrap().stage, ids[1]);
    assert_eq!(pool.assign("c", T0, &rnd(3)).unwrap().stage, ids[2]);
    assert_eq!(pool.assign("d", T0, &rnd(4)).unwrap().stage, ids[0]);
    assert_eq!(pool.peek_assignment(), Some(ids[1]));
}

#[test]
fn live_stages_come_before_warming_ones_until_full() {
    let mut pool = Pool::new("default", settings(2, 1, 10), T0).unwrap();
    let w1 = warm(&mut pool, T0);
    let l = live(&mut pool, T0);
    let w2 = warm(&mut pool, T0);
    // The live stage takes viewers even though the warming ones are emptier.
    assert_eq!(pool.assign("a", T0, &rnd(1)).unwrap().stage, l);
    assert_eq!(pool.assign("b", T0, &rnd(2)).unwrap().stage, l);
    // Live is full: the emptiest warming stage, the oldest on a tie.
    let c = pool.assign("c", T0, &rnd(3)).unwrap();
    assert_eq!((c.stage, c.stage_state), (w1, StageState::Warming));
    assert_eq!(pool.assign("d", T0, &rnd(4)).unwrap().stage, w2);
    assert_eq!(pool.assign("e", T0, &rnd(5)).unwrap().stage, w1);
    assert_eq!(pool.assign("f", T0, &rnd(6)).unwrap().stage, w2);
    let refused = pool.assign("g", T0, &rnd(7)).unwrap_err();
    assert_eq!(
        refused,
        AssignError::NoSeat(NoSeat {
            stages_creating: 0,
            replicas_waiting: 0,
            can_create: true,
            region_quota: None,
        })
    );
    assert_eq!(pool.stats().refusals, 1);
    assert_eq!(pool.stats().joins, 6);
}

#[test]
fn creating_draining_and_deleted_stages_get_no_viewers() {
    let mut pool = Pool::new("default", settings(5, 1, 10), T0).unwrap();
    let keep = live(&mut pool, T0);
    let drained = live(&mut pool, T0);
    let gone = live(&mut pool, T0);
    pool.begin_create(T0).unwrap();
    pool.host_unpublished(drained, T0).unwrap();
    pool.drain(drained, T0).unwrap();
    pool.host_unpublished(gone, T0).unwrap();
    pool.request_delete(gone, T0).unwrap();
    pool.deleted(gone, T0).unwrap();
    for u in 0..5 {
        assert_eq!(
            pool.assign(&format!("u{u}"), T0, &rnd(u)).unwrap().stage,
            keep
        );
    }
    let err = pool.assign("late", T0, &rnd(99)).unwrap_err();
    match err {
        AssignError::NoSeat(no) => {
            assert!(no.stage_being_created());
            assert_eq!(no.stages_creating, 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn refusal_says_whether_more_stages_can_be_made() {
    let mut pool = Pool::new("default", settings(1, 1, 1), T0).unwrap();
    live(&mut pool, T0);
    pool.assign("a", T0, &rnd(1)).unwrap();
    assert_eq!(
        pool.assign("b", T0, &rnd(2)).unwrap_err(),
        AssignError::NoSeat(NoSeat {
            stages_creating: 0,
            replicas_waiting: 0,
            can_create: false,
            region_quota: None,
        })
    );
}

#[test]
fn lease_ids_are_the_broadcast_and_22_url_safe_chars() {
    let (mut pool, _) = pool_with_live(1, 10);
    let a = pool.assign("viewer-1", T0, &[0xFB; 16]).unwrap();
    let (b, rest) = a.lease_id.split_once('.').unwrap();
    assert_eq!(b, "default");
    assert_eq!(rest.len(), 22);
    assert!(rest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_eq!(rest, "-_v7-_v7-_v7-_v7-_v7-w");
    // The same random bytes again cannot make a second lease with the same id.
    assert_eq!(
        pool.assign("viewer-2", T0, &[0xFB; 16]),
        Err(AssignError::LeaseIdTaken(a.lease_id.clone()))
    );
    assert_eq!(pool.viewers(), 1);
}

#[test]
fn sticky_reconnect_returns_the_same_lease_and_stage_even_when_fullest() {
    let (mut pool, ids) = pool_with_live(2, 10);
    let first = pool.assign("sticky", T0, &rnd(1)).unwrap();
    assert_eq!(first.stage, ids[0]);
    for u in 0..3 {
        pool.assign(&format!("u{u}"), T0, &rnd(10 + u)).unwrap();
    }
    // Now ids[0] has 2 and ids[1] has 2; add one more to ids[0]'s rival so it is fuller.
    assert_eq!(load(&pool, ids[0]), 2);
    pool.assign("x", T0, &rnd(50)).unwrap(); // goes to ids[0] (tie → oldest)
    assert_eq!(load(&pool, ids[0]), 3);
    let again = pool
        .join(&with_lease("sticky", &first.lease_id), T0 + 10_000, &rnd(2))
        .unwrap();
    assert!(again.reconnected);
    assert_eq!(again.participant_id, first.participant_id);
    assert_eq!(again.lease_id, first.lease_id);
    assert_eq!(again.stage, ids[0]);
    assert_eq!(again.expires_at, T0 + 10_000 + TTL);
    assert_eq!(load(&pool, ids[0]), 3, "no second seat");
    assert_eq!(pool.stats().reconnects, 1);
    assert_eq!(pool.stats().joins, 5);
}

#[test]
fn a_lapsed_lease_is_not_sticky() {
    let (mut pool, _) = pool_with_live(2, 10);
    let first = pool.assign("v", T0, &rnd(1)).unwrap();
    let later = pool
        .join(&with_lease("v", &first.lease_id), T0 + TTL, &rnd(2))
        .unwrap();
    assert!(!later.reconnected);
    assert_ne!(later.participant_id, first.participant_id);
    assert_ne!(later.lease_id, first.lease_id);
    assert_eq!(pool.stats().lease_expiries, 1);
    assert_eq!(pool.viewers(), 1);
}

#[test]
fn a_viewer_on_a_draining_stage_is_moved_on_reconnect() {
    let (mut pool, ids) = pool_with_live(2, 10);
    let first = pool.assign("v", T0, &rnd(1)).unwrap();
    assert_eq!(first.stage, ids[0]);
    pool.drain(ids[0], T0).unwrap();
    let moved = pool
        .join(&with_lease("v", &first.lease_id), T0 + 1, &rnd(2))
        .unwrap();
    assert!(!moved.reconnected);
    assert_eq!(moved.stage, ids[1]);
    assert!(pool.lease(&first.lease_id).is_none());
    assert_eq!(load(&pool, ids[0]), 0);
    assert_eq!(load(&pool, ids[1]), 1);
    assert_eq!(pool.viewers(), 1);
    assert_eq!(pool.stats().leaves, 1);
}

#[test]
fn heartbeat_renews_and_a_lapsed_lease_is_not_found() {
    let (mut pool, _) = pool_with_live(1, 10);
    let a = pool.assign("v", T0, &rnd(1)).unwrap();
    let renewed = pool.heartbeat(&a.lease_id, T0 + 30_000).unwrap();
    assert_eq!(renewed.expires_at, T0 + 30_000 + TTL);
    assert_eq!(renewed.renewed_at, T0 + 30_000);
    assert_eq!(pool.next_expiry(), Some(T0 + 30_000 + TTL));
    // Still live just before expiry...
    assert!(pool.heartbeat(&a.lease_id, T0 + 30_000 + TTL - 1).is_ok());
    // ...gone at it.
    let gone_at = T0 + 30_000 + TTL - 1 + TTL;
    assert_eq!(
        pool.heartbeat(&a.lease_id, gone_at),
        Err(PoolError::LeaseNotFound)
    );
    assert_eq!(
        pool.heartbeat("default.unknown", T0),
        Err(PoolError::LeaseNotFound)
    );
    assert_eq!(pool.viewers(), 0);
}

#[test]
fn a_heartbeat_with_an_older_clock_never_shortens_a_lease() {
    let (mut pool, _) = pool_with_live(1, 10);
    let a = pool.assign("v", T0 + 50_000, &rnd(1)).unwrap();
    let r = pool.heartbeat(&a.lease_id, T0).unwrap();
    assert_eq!(r.expires_at, T0 + 50_000 + TTL);
}

#[test]
fn leave_frees_the_seat_and_is_idempotent() {
    let (mut pool, ids) = pool_with_live(1, 1);
    let a = pool.assign("v", T0, &rnd(1)).unwrap();
    assert!(pool.assign("w", T0, &rnd(2)).is_err());
    assert!(pool.leave(&a.lease_id, T0 + 1));
    assert!(!pool.leave(&a.lease_id, T0 + 2));
    assert_eq!(load(&pool, ids[0]), 0);
    assert_eq!(pool.stats().leaves, 1);
    assert!(pool.assign("w", T0 + 3, &rnd(3)).is_ok());
    assert!(lease_of_user(&pool, "v").is_none());
}

#[test]
fn expire_frees_exactly_the_lapsed_leases() {
    let (mut pool, ids) = pool_with_live(1, 10);
    pool.assign("a", T0, &rnd(1)).unwrap();
    pool.assign("b", T0 + 1_000, &rnd(2)).unwrap();
    pool.assign("c", T0 + 2_000, &rnd(3)).unwrap();
    assert_eq!(pool.expire(T0 + TTL - 1), 0);
    assert_eq!(pool.expire(T0 + TTL + 1_000), 2);
    assert_eq!(pool.viewers(), 1);
    assert_eq!(load(&pool, ids[0]), 1);
    assert_eq!(lease_of_user(&pool, "c").unwrap().stage, ids[0]);
    assert_eq!(pool.stats().lease_expiries, 2);
    assert_eq!(pool.expire(T0 + TTL + 1_000), 0);
}

#[test]
fn viewer_seconds_integrate_over_time_up_to_each_expiry() {
    let (mut pool, _) = pool_with_live(1, 10);
    pool.assign("a", T0, &rnd(1)).unwrap(); // 1 viewer
    let b = pool.assign("b", T0 + 10_000, &rnd(2)).unwrap(); // 2 viewers
    pool.leave(&b.lease_id, T0 + 20_000); // 1 viewer
                                          // a lapses at T0 + 60 s; swept much later, counted only up to its expiry.
    pool.expire(T0 + 500_000);
    // a: 60 s; b: 10 s.
    assert_eq!(pool.stats().viewer_seconds, 70);
    assert_eq!(pool.meta().viewer_ms, 70_000);
    assert_eq!(pool.stats().peak_viewers, 2);
}

#[test]
fn empty_since_tracks_when_a_stage_became_empty() {
    let (mut pool, ids) = pool_with_live(1, 10);
    assert_eq!(pool.stage(ids[0]).unwrap().empty_since, Some(T0));
    let a = pool.assign("a", T0 + 5, &rnd(1)).unwrap();
    assert_eq!(pool.stage(ids[0]).unwrap().empty_since, None);
    pool.leave(&a.lease_id, T0 + 9);
    assert_eq!(pool.stage(ids[0]).unwrap().empty_since, Some(T0 + 9));
    pool.assign("b", T0 + 10, &rnd(2)).unwrap();
    pool.expire(T0 + 10 + TTL + 500);
    assert_eq!(
        pool.stage(ids[0]).unwrap().empty_since,
        Some(T0 + 10 + TTL),
        "empty from the expiry time, not the sweep time"
    );
}

#[test]
fn drain_is_refused_below_min_stages_and_for_the_last_live_stage() {
    let mut pool = Pool::new("default", settings(5, 2, 10), T0).unwrap();
    let a = live(&mut pool, T0);
    let b = warm(&mut pool, T0);
    assert_eq!(pool.drain(a, T0), Err(PoolError::BelowMinStages { min: 2 }));
    let c = warm(&mut pool, T0);
    // Three stages, min 2: a is the only live one.
    assert_eq!(pool.drain(a, T0), Err(PoolError::LastLiveStage(a)));
    pool.drain(b, T0).unwrap();
    // Draining again is a no-op, even though it would now be below the minimum.
    pool.drain(b, T0 + 1).unwrap();
    assert_eq!(pool.stage(b).unwrap().draining_since, Some(T0));
    assert_eq!(pool.drain(c, T0), Err(PoolError::BelowMinStages { min: 2 }));
    let creating = pool.begin_create(T0).unwrap().stage;
    assert!(matches!(
        pool.drain(creating, T0),
        Err(PoolError::WrongState { .. })
    ));
    assert!(matches!(
        pool.drain(StageId(77), T0),
        Err(PoolError::UnknownStage(_))
    ));
}

#[test]
fn delete_is_refused_with_viewers_or_with_the_host_publishing_on_a_serving_stage() {
    let (mut pool, ids) = pool_with_live(2, 10);
    let a = pool.assign("v", T0, &rnd(1)).unwrap();
    assert_eq!(a.stage, ids[0]);
    pool.host_unpublished(ids[0], T0).unwrap();
    assert_eq!(
        pool.request_delete(ids[0], T0),
        Err(PoolError::HasViewers {
            stage: ids[0],
            viewers: 1
        })
    );
    assert_eq!(
        pool.request_delete(ids[1], T0),
        Err(PoolError::HostPublishing(ids[1]))
    );
    // Refusals change nothing.
    assert_eq!(pool.stage(ids[0]).unwrap().state, StageState::Live);
    assert_eq!(pool.stage(ids[1]).unwrap().state, StageState::Live);
    pool.host_unpublished(ids[1], T0).unwrap();
    let del = pool.request_delete(ids[1], T0 + 1).unwrap();
    assert_eq!(del.stage, ids[1]);
    let st = pool.stage(ids[1]).unwrap();
    assert_eq!(st.state, StageState::Draining, "a delete drains first");
    assert_eq!(st.delete_requested_at, Some(T0 + 1));
    // Asking again gives the same intent and keeps the first time.
    assert_eq!(pool.request_delete(ids[1], T0 + 2).unwrap(), del);
    assert_eq!(
        pool.stage(ids[1]).unwrap().delete_requested_at,
        Some(T0 + 1)
    );
    // A host report on a draining stage does not block its delete: no viewer is sent
    // there, and the host page leaves a stage the pool no longer lists.
    pool.mark_live(ids[1], "host", T0 + 3).unwrap();
    assert_eq!(pool.stage(ids[1]).unwrap().state, StageState::Draining);
    assert_eq!(pool.request_delete(ids[1], T0 + 4).unwrap(), del);
    // The last live stage cannot be deleted either (the delete would drain it).
    pool.leave(&a.lease_id, T0 + 5);
    assert_eq!(
        pool.request_delete(ids[0], T0 + 5),
        Err(PoolError::BelowMinStages { min: 1 })
    );
}

#[test]
fn deleting_a_stage_that_vanished_evicts_its_leases() {
    let (mut pool, ids) = pool_with_live(2, 10);
    let a = pool.assign("a", T0, &rnd(1)).unwrap();
    let b = pool.assign("b", T0, &rnd(2)).unwrap();
    assert_eq!((a.stage, b.stage), (ids[0], ids[1]));
    let evicted = pool.deleted(ids[0], T0 + 1).unwrap();
    assert_eq!(evicted, vec![a.lease_id.clone()]);
    assert_eq!(pool.viewers(), 1);
    assert_eq!(pool.stats().evictions, 1);
    assert_eq!(pool.stage(ids[0]).unwrap().load, 0);
    assert!(pool.leases().all(|l| l.stage != ids[0]));
    // Idempotent.
    assert_eq!(pool.deleted(ids[0], T0 + 2).unwrap(), Vec::<String>::new());
    assert_eq!(pool.stats().stages_deleted, 1);
    // The evicted viewer gets a new seat elsewhere.
    assert_eq!(pool.assign("a", T0 + 3, &rnd(3)).unwrap().stage, ids[1]);
}

#[test]
fn old_deleted_stages_are_forgotten_and_reported_as_removed_rows() {
    let mut pool = Pool::new("default", settings(5, 1, 100), T0).unwrap();
    live(&mut pool, T0);
    pool.take_changes();
    let mut failed = Vec::new();
    for i in 0..(DELETED_STAGES_RETAINED as u64 + 3) {
        let id = pool.begin_create(T0 + i).unwrap().stage;
        pool.create_failed(id, T0 + i).unwrap();
        failed.push(id);
    }
    let changes = pool.take_changes();
    let deleted = pool
        .stages()
        .filter(|s| s.state == StageState::Deleted)
        .count();
    assert_eq!(deleted, DELETED_STAGES_RETAINED);
    let forgotten: Vec<StageId> = failed[..3].to_vec();
    assert_eq!(
        changes.stages_removed.iter().copied().collect::<Vec<_>>(),
        forgotten
    );
    for id in forgotten {
        assert!(pool.stage(id).is_none());
        assert!(!changes.stages.contains(&id));
    }
}

#[test]
fn observations_mark_live_and_report_drift() {
    let mut pool = Pool::new("default", settings(10, 1, 10), T0).unwrap();
    let a = warm(&mut pool, T0);
    let b = warm(&mut pool, T0);
    pool.assign("v1", T0, &rnd(1)).unwrap();
    pool.assign("v2", T0, &rnd(2)).unwrap();
    pool.assign("v3", T0, &rnd(3)).unwrap();
    assert_eq!((load(&pool, a), load(&pool, b)), (2, 1));
    let obs = Observation {
        observed_at: T0 + 100,
        stages: vec![
            StageObservation {
                stage_arn: arn(a.0),
                publishers: vec!["host-pid".into()],
                subscribers: vec!["s1".into(), "s2".into()],
            },
            StageObservation {
                stage_arn: arn(b.0),
                publishers: vec![],
                subscribers: vec![],
            },
            StageObservation {
                stage_arn: "arn:aws:ivs:us-east-1:123456789012:stage/unknown".into(),
                publishers: vec![],
                subscribers: vec![],
            },
        ],
        ..Default::default()
    };
    let report = pool.observe(&obs, T0 + 200);
    assert_eq!(report.became_live, vec![arn(a.0)]);
    assert_eq!(
        report.drift,
        vec![Drift {
            stage_arn: arn(b.0),
            pool: 1,
            ivs: 0
        }]
    );
    assert_eq!(
        report.unknown_stages,
        vec!["arn:aws:ivs:us-east-1:123456789012:stage/unknown".to_string()]
    );
    let st = pool.stage(a).unwrap();
    assert_eq!(st.state, StageState::Live);
    assert_eq!(st.live_at, Some(T0 + 100));
    assert_eq!(st.host_participant_id.as_deref(), Some("host-pid"));
    assert_eq!(pool.stage(b).unwrap().state, StageState::Warming);
    // The same observation again changes nothing.
    pool.take_changes();
    let again = pool.observe(&obs, T0 + 300);
    assert!(again.became_live.is_empty());
    assert!(pool.take_changes().stages.is_empty());
}

#[test]
fn an_observation_older_than_a_host_report_does_not_override_it() {
    let (mut pool, ids) = pool_with_live(1, 10);
    pool.mark_live(ids[0], "host", T0 + 1_000).unwrap();
    let stale = Observation {
        observed_at: T0 + 500,
        stages: vec![StageObservation {
            stage_arn: arn(ids[0].0),
            publishers: vec![],
            subscribers: vec![],
        }],
        ..Default::default()
    };
    pool.observe(&stale, T0 + 2_000);
    assert!(pool.stage(ids[0]).unwrap().host_publishing);
    let fresh = Observation {
        observed_at: T0 + 1_500,
        ..stale
    };
    pool.observe(&fresh, T0 + 2_000);
    let st = pool.stage(ids[0]).unwrap();
    assert!(!st.host_publishing);
    assert_eq!(st.state, StageState::Live, "a live stage stays live");
}

#[test]
fn replicate_mode_makes_one_origin_per_six_stages() {
    let mut s = settings(10, 1, 20);
    s.fanout = FanoutMode::Replicate;
    let mut pool = Pool::new("default", s, T0).unwrap();
    let mut intents = Vec::new();
    for _ in 0..8 {
        intents.push(pool.begin_create(T0).unwrap());
    }
    let origin = intents[0].stage;
    assert_eq!(intents[0].origin, None);
    for i in &intents[1..6] {
        assert_eq!(i.origin, Some(origin));
    }
    assert_eq!(intents[6].origin, None, "the seventh stage is a new origin");
    assert_eq!(intents[7].origin, Some(intents[6].stage));
    for i in &intents {
        pool.created(i.stage, &arn(i.stage.0), endpoints(), T0)
            .unwrap();
    }
    let publishers: Vec<StageId> = pool.publisher_stages().iter().map(|s| s.id).collect();
    assert_eq!(publishers, vec![origin, intents[6].stage]);
    // A replica does not go live on a host report...
    assert_eq!(
        pool.mark_live(intents[1].stage, "host", T0),
        Err(PoolError::ReplicaStage(intents[1].stage))
    );
    pool.mark_live(origin, "host-jti", T0).unwrap();
    // ...only when IVS shows the replica published there.
    let obs = Observation {
        observed_at: T0 + 1,
        stages: vec![StageObservation {
            stage_arn: arn(intents[1].stage.0),
            publishers: vec!["host-jti".into()],
            subscribers: vec![],
        }],
        ..Default::default()
    };
    pool.observe(&obs, T0 + 1);
    assert_eq!(
        pool.stage(intents[1].stage).unwrap().state,
        StageState::Live
    );
    let reps = pool.replications();
    assert_eq!(reps.len(), 6);
    let first = reps.iter().find(|r| r.replica == intents[1].stage).unwrap();
    assert_eq!(first.origin_arn, arn(origin.0));
    assert_eq!(first.host_participant_id.as_deref(), Some("host-jti"));
    // An origin still feeding active replicas cannot be drained.
    assert_eq!(
        pool.drain(origin, T0),
        Err(PoolError::OriginHasReplicas(origin))
    );
    let snap = pool.snapshot_view(T0);
    assert_eq!(snap.fanout_mode, FanoutMode::Replicate);
    let view = snap
        .stages
        .iter()
        .find(|v| v.id == intents[2].stage)
        .unwrap();
    assert_eq!(view.origin_arn, Some(arn(origin.0)));
}

#[test]
fn a_warming_replica_gets_no_viewers_until_the_host_is_seen_there() {
    let mut s = settings(1, 1, 20);
    s.fanout = FanoutMode::Replicate;
    let mut pool = Pool::new("default", s, T0).unwrap();
    let origin = warm(&mut pool, T0);
    let replica = warm(&mut pool, T0);
    assert_eq!(pool.stage(replica).unwrap().origin, Some(origin));
    // The warming origin takes a viewer (the host publishes there directly)...
    assert_eq!(pool.assign("a", T0, &rnd(1)).unwrap().stage, origin);
    // ...the warming replica does not, and the refusal says a seat is on its way.
    match pool.assign("b", T0, &rnd(2)) {
        Err(AssignError::NoSeat(no)) => {
            assert_eq!(no.replicas_waiting, 1);
            assert!(no.seat_coming());
            assert!(!no.stage_being_created());
        }
        other => panic!("{other:?}"),
    }
    pool.mark_live(origin, "host", T0).unwrap();
    let obs = Observation {
        observed_at: T0 + 1,
        stages: vec![StageObservation {
            stage_arn: arn(replica.0),
            publishers: vec!["host".into()],
            subscribers: vec![],
        }],
        ..Default::default()
    };
    pool.observe(&obs, T0 + 1);
    assert_eq!(pool.assign("b", T0 + 2, &rnd(3)).unwrap().stage, replica);
}

#[test]
fn a_replica_promoted_to_origin_takes_viewers_while_warming() {
    let mut s = settings(5, 1, 20);
    s.fanout = FanoutMode::Replicate;
    let mut pool = Pool::new("default", s, T0).unwrap();
    let origin = pool.begin_create(T0).unwrap().stage;
    let replica = warm(&mut pool, T0);
    assert!(pool.assign("a", T0, &rnd(1)).is_err());
    pool.create_failed(origin, T0).unwrap();
    assert_eq!(pool.stage(replica).unwrap().origin, None);
    assert_eq!(pool.assign("a", T0, &rnd(2)).unwrap().stage, replica);
    pool.check_consistency().unwrap();
}

#[test]
fn replicas_of_a_failed_origin_are_rehomed() {
    let mut s = settings(10, 1, 20);
    s.fanout = FanoutMode::Replicate;
    let mut pool = Pool::new("default", s, T0).unwrap();
    let origin = pool.begin_create(T0).unwrap().stage;
    let r1 = pool.begin_create(T0).unwrap().stage;
    let r2 = pool.begin_create(T0).unwrap().stage;
    pool.create_failed(origin, T0).unwrap();
    assert_eq!(pool.stage(r1).unwrap().origin, None);
    assert_eq!(pool.stage(r2).unwrap().origin, Some(r1));
    let next = pool.begin_create(T0).unwrap();
    assert_eq!(next.origin, Some(r1));
}

#[test]
fn multi_publish_mode_publishes_to_every_warming_and_live_stage() {
    let mut pool = Pool::new("default", settings(10, 1, 20), T0).unwrap();
    let a = live(&mut pool, T0);
    let b = warm(&mut pool, T0);
    let c = live(&mut pool, T0);
    pool.begin_create(T0).unwrap();
    pool.host_unpublished(c, T0).unwrap();
    pool.drain(c, T0).unwrap();
    let ids: Vec<StageId> = pool.publisher_stages().iter().map(|s| s.id).collect();
    assert_eq!(ids, vec![a, b]);
    assert!(pool.replications().is_empty());
}

#[test]
fn changes_name_exactly_the_rows_touched() {
    let (mut pool, ids) = pool_with_live(2, 10);
    let first = pool.take_changes();
    assert!(first.meta);
    assert_eq!(first.stages.len(), 2);
    assert!(pool.take_changes().is_empty());

    let a = pool.assign("a", T0, &rnd(1)).unwrap();
    let c = pool.take_changes();
    assert!(c.leases_upserted.contains(&a.lease_id));
    assert!(c.meta);
    // The stage stopped being empty: its row changes.
    assert_eq!(c.stages.iter().copied().collect::<Vec<_>>(), vec![ids[0]]);

    pool.heartbeat(&a.lease_id, T0 + 10).unwrap();
    let c = pool.take_changes();
    assert_eq!(c.leases_upserted.len(), 1);
    assert!(c.stages.is_empty());

    pool.leave(&a.lease_id, T0 + 20);
    let c = pool.take_changes();
    assert!(c.leases_removed.contains(&a.lease_id));
    assert!(c.leases_upserted.is_empty());

    // A lease made and freed between two takes is only a removal.
    let b = pool.assign("b", T0 + 30, &rnd(2)).unwrap();
    pool.leave(&b.lease_id, T0 + 40);
    let c = pool.take_changes();
    assert!(c.leases_removed.contains(&b.lease_id));
    assert!(!c.leases_upserted.contains(&b.lease_id));
}

#[test]
fn a_pool_rebuilt_from_its_changed_rows_is_the_same_pool() {
    let s = settings(3, 1, 10);
    let mut pool = Pool::new("default", s.clone(), T0).unwrap();
    let mut store = Store::default();
    let a = live(&mut pool, T0);
    let b = warm(&mut pool, T0);
    store.apply(&mut pool);
    let mut leases = Vec::new();
    for u in 0..5 {
        leases.push(pool.assign(&format!("u{u}"), T0 + u, &rnd(u)).unwrap());
        store.apply(&mut pool);
    }
    pool.leave(&leases[1].lease_id, T0 + 100);
    store.apply(&mut pool);
    pool.heartbeat(&leases[2].lease_id, T0 + 200).unwrap();
    store.apply(&mut pool);
    pool.mark_live(b, "h", T0 + 300).unwrap();
    store.apply(&mut pool);
    pool.expire(T0 + TTL + 10);
    store.apply(&mut pool);
    let rebuilt = store.rebuild(s.clone());
    assert_eq!(rebuilt.export(), pool.export());
    assert_eq!(rebuilt.snapshot_view(T0), pool.snapshot_view(T0));
    assert_eq!(rebuilt.stage(a).unwrap().load, pool.stage(a).unwrap().load);
    assert_eq!(rebuilt.next_expiry(), pool.next_expiry());
    // The rebuilt pool carries on identically.
    let mut p1 = pool.clone();
    let mut p2 = rebuilt;
    assert_eq!(
        p1.assign("z", T0 + TTL + 20, &rnd(77)),
        p2.assign("z", T0 + TTL + 20, &rnd(77))
    );
    assert_eq!(p1.export(), p2.export());
}

#[test]
fn from_rows_refuses_inconsistent_rows() {
    let (mut pool, ids) = pool_with_live(1, 10);
    pool.assign("a", T0, &rnd(1)).unwrap();
    let good = pool.export();
    let s = settings(10, 1, 100);
    assert!(Pool::from_rows(s.clone(), good.clone()).is_ok());

    let mut bad = good.clone();
    bad.leases[0].stage = StageId(42);
    assert!(matches!(
        Pool::from_rows(s.clone(), bad),
        Err(PoolError::Corrupt(_))
    ));

    let mut bad = good.clone();
    let mut twin = bad.leases[0].clone();
    twin.id = "default.another".into();
    bad.leases.push(twin);
    assert!(
        Pool::from_rows(s.clone(), bad).is_err(),
        "a user with two leases"
    );

    let mut bad = good.clone();
    bad.leases[0].id = "other.AAAAAAAAAAAAAAAAAAAAAA".into();
    assert!(
        Pool::from_rows(s.clone(), bad).is_err(),
        "a lease of another broadcast"
    );

    let mut bad = good.clone();
    bad.meta.next_stage_id = ids[0].0;
    assert!(
        Pool::from_rows(s.clone(), bad).is_err(),
        "a stage id from the future"
    );

    let mut bad = good;
    bad.stages[0].state = StageState::Creating;
    assert!(
        Pool::from_rows(s, bad).is_err(),
        "a lease on a creating stage"
    );
}

#[test]
fn a_rebuilt_pool_keeps_its_fanout_mode() {
    let mut s = settings(10, 1, 20);
    s.fanout = FanoutMode::Replicate;
    let pool = Pool::new("default", s.clone(), T0).unwrap();
    s.fanout = FanoutMode::MultiPublish;
    let rebuilt = Pool::from_rows(s, pool.export()).unwrap();
    assert_eq!(rebuilt.fanout(), FanoutMode::Replicate);
    assert_eq!(rebuilt.settings().fanout, FanoutMode::Replicate);
}

#[test]
fn the_snapshot_has_the_contract_shape() {
    let (mut pool, _) = pool_with_live(1, 50);
    pool.assign("a", T0, &rnd(1)).unwrap();
    pool.begin_create(T0).unwrap();
    let snap = pool.snapshot(T0 + 1_000);
    let json = serde_json::to_value(&snap).unwrap();
    for key in [
        "broadcast",
        "capacity",
        "fanoutMode",
        "minStages",
        "viewers",
        "now",
        "stages",
        "stats",
    ] {
        assert!(json.get(key).is_some(), "snapshot lacks {key}: {json}");
    }
    assert_eq!(json["fanoutMode"], "multi-publish");
    assert_eq!(json["viewers"], 1);
    assert_eq!(json["now"], T0 + 1_000);
    let stage = &json["stages"][0];
    for key in [
        "stageArn",
        "state",
        "load",
        "capacity",
        "createdAt",
        "liveAt",
        "emptySince",
        "hostParticipantId",
    ] {
        assert!(stage.get(key).is_some(), "stage lacks {key}: {stage}");
    }
    assert_eq!(stage["state"], "live");
    assert_eq!(stage["load"], 1);
    assert_eq!(stage["emptySince"], serde_json::Value::Null);
    assert_eq!(json["stages"][1]["state"], "creating");
    assert_eq!(json["stages"][1]["stageArn"], serde_json::Value::Null);
    for key in [
        "joins",
        "refusals",
        "leaseExpiries",
        "leaves",
        "peakViewers",
        "viewerSeconds",
        "stagesCreated",
        "stagesDeleted",
        "createFailures",
    ] {
        assert!(json["stats"].get(key).is_some(), "stats lack {key}");
    }
    assert_eq!(json["stats"]["viewerSeconds"], 1);
    // The monitor parses it back.
    let back: Snapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, snap);
    let sum = LoadSummary::from_snapshot(&back);
    assert_eq!(sum, pool.load_summary());
}

#[test]
fn observation_json_matches_the_contract() {
    let obs: Observation = serde_json::from_str(
        r#"{"observedAt":5,"stages":[{"stageArn":"a","publishers":["p"],"subscribers":["s","t"]}]}"#,
    )
    .unwrap();
    assert_eq!(obs.observed_at, 5);
    assert_eq!(obs.stages[0].subscribers.len(), 2);
    let report = ObservationReport {
        drift: vec![Drift {
            stage_arn: "a".into(),
            pool: 1,
            ivs: 2,
        }],
        ..Default::default()
    };
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["drift"][0]["stageArn"], "a");
    assert_eq!(v["drift"][0]["pool"], 1);
    assert_eq!(v["drift"][0]["ivs"], 2);
}

#[test]
fn pool_errors_have_stable_codes() {
    assert_eq!(
        PoolError::HasViewers {
            stage: StageId(1),
            viewers: 2
        }
        .code(),
        "has_viewers"
    );
    assert_eq!(
        PoolError::HostPublishing(StageId(1)).code(),
        "host_publishing"
    );
    assert_eq!(
        PoolError::BelowMinStages { min: 1 }.code(),
        "below_min_stages"
    );
    assert_eq!(
        PoolError::LastLiveStage(StageId(1)).code(),
        "last_live_stage"
    );
    assert!(PoolError::HasViewers {
        stage: StageId(3),
        viewers: 2
    }
    .to_string()
    .contains("2 viewers"));
}

fn with_lease<'a>(user_id: &'a str, lease_id: &'a str) -> JoinRequest<'a> {
    JoinRequest {
        user_id,
        lease_id: Some(lease_id),
        client: None,
        moving: false,
    }
}

fn from_client<'a>(user_id: &'a str, client: &'a str) -> JoinRequest<'a> {
    JoinRequest {
        user_id,
        lease_id: None,
        client: Some(client),
        moving: false,
    }
}

#[test]
fn naming_a_viewers_user_id_never_returns_its_seat() {
    let (mut pool, _) = pool_with_live(2, 10);
    let alice = pool.assign("alice", T0, &rnd(1)).unwrap();
    // Somebody else says it is alice, without her lease: a seat of its own.
    let impostor = pool.assign("alice", T0 + 1, &rnd(2)).unwrap();
    assert!(!impostor.reconnected);
    assert_ne!(impostor.lease_id, alice.lease_id);
    assert_ne!(impostor.participant_id, alice.participant_id);
    // A made-up lease id is no way in either.
    let guess = format!("{}x", &alice.lease_id[..alice.lease_id.len() - 1]);
    let guessed = pool
        .join(&with_lease("alice", &guess), T0 + 2, &rnd(3))
        .unwrap();
    assert!(!guessed.reconnected);
    assert_ne!(guessed.lease_id, alice.lease_id);
    assert_eq!(pool.viewers(), 3);
    pool.check_consistency().unwrap();
}

#[test]
fn every_reconnect_of_a_lease_is_the_same_participant() {
    let (mut pool, ids) = pool_with_live(2, 10);
    let first = pool.assign("v", T0, &rnd(1)).unwrap();
    for n in 0..50 {
        let again = pool
            .join(&with_lease("v", &first.lease_id), T0 + n, &rnd(100 + n))
            .unwrap();
        assert!(again.reconnected);
        assert_eq!(again.participant_id, first.participant_id);
        assert_eq!(again.lease_id, first.lease_id);
    }
    assert_eq!(load(&pool, ids[0]) + load(&pool, ids[1]), 1);
    assert_eq!(
        pool.lease_of_participant(&first.participant_id).unwrap().id,
        first.lease_id
    );
}

#[test]
fn a_client_holds_at_most_its_limit_of_seats_and_reconnects_are_free() {
    let mut s = settings(3, 1, 10);
    s.max_seats_per_client = 2;
    let mut pool = Pool::new("b", s, T0).unwrap();
    let id = pool.begin_create(T0).unwrap().stage;
    pool.created(id, &arn(1), StageEndpoints::default(), T0)
        .unwrap();
    pool.mark_live(id, "host", T0).unwrap();
    let a = pool
        .join(&from_client("a", "10.0.0.1"), T0, &rnd(1))
        .unwrap();
    pool.join(&from_client("b", "10.0.0.1"), T0, &rnd(2))
        .unwrap();
    let refused = pool.join(&from_client("c", "10.0.0.1"), T0, &rnd(3));
    assert_eq!(refused, Err(AssignError::ClientLimit { held: 2, limit: 2 }));
    // The refusal is not a want of seats: it asks for no stage and counts apart.
    assert_eq!(pool.stats().refusals, 0);
    assert_eq!(pool.stats().client_refusals, 1);
    // Another address still gets the last seat; a held seat still reconnects.
    pool.join(&from_client("d", "10.0.0.2"), T0, &rnd(4))
        .unwrap();
    let back = JoinRequest {
        user_id: "a",
        lease_id: Some(&a.lease_id),
        client: Some("10.0.0.1"),
        moving: false,
    };
    assert!(pool.join(&back, T0 + 5, &rnd(5)).unwrap().reconnected);
    // A seat given back is a seat the client may take again.
    assert!(pool.leave(&a.lease_id, T0 + 6));
    assert_eq!(pool.seats_of_client("10.0.0.1"), 1);
    pool.check_consistency().unwrap();
    let rebuilt = Pool::from_rows(pool.settings().clone(), pool.export()).unwrap();
    assert_eq!(rebuilt.seats_of_client("10.0.0.1"), 1);
}

#[test]
fn a_stage_gone_from_ivs_evicts_its_viewers_and_takes_no_more() {
    let (mut pool, ids) = pool_with_live(2, 10);
    let a = pool.assign("a", T0, &rnd(1)).unwrap();
    let b = pool.assign("b", T0, &rnd(2)).unwrap();
    assert_eq!((a.stage, b.stage), (ids[0], ids[1]));
    let gone_arn = pool.stage(ids[0]).unwrap().arn.clone().unwrap();
    let report = pool.observe(
        &Observation {
            observed_at: T0 + 1,
            missing: vec![gone_arn.clone()],
            ..Default::default()
        },
        T0 + 1,
    );
    assert_eq!(report.gone, vec![gone_arn]);
    assert_eq!(report.evicted, vec![a.lease_id.clone()]);
    let st = pool.stage(ids[0]).unwrap();
    assert_eq!(st.state, StageState::Deleted);
    assert!(st.gone);
    // Its viewer comes back with its lease and is seated on the healthy stage.
    let again = pool
        .join(&with_lease("a", &a.lease_id), T0 + 2, &rnd(3))
        .unwrap();
    assert_eq!(again.stage, ids[1]);
    assert!(!again.reconnected);
    assert_eq!(pool.load_summary().existing(), 1);
    pool.check_consistency().unwrap();
}

#[test]
fn subscribers_without_a_seat_on_their_stage_are_strangers() {
    let (mut pool, ids) = pool_with_live(2, 10);
    let a = pool.assign("a", T0, &rnd(1)).unwrap();
    let b = pool.assign("b", T0, &rnd(2)).unwrap();
    assert!(pool.leave(&b.lease_id, T0 + 1));
    let arn0 = pool.stage(ids[0]).unwrap().arn.clone().unwrap();
    let arn1 = pool.stage(ids[1]).unwrap().arn.clone().unwrap();
    let report = pool.observe(
        &Observation {
            observed_at: T0 + 2,
            stages: vec![
                StageObservation {
                    stage_arn: arn0.clone(),
                    publishers: vec!["host".into()],
                    // a's seat is here; "zz" never had one.
                    subscribers: vec![a.participant_id.clone(), "zz".into()],
                },
                StageObservation {
                    stage_arn: arn1.clone(),
                    publishers: vec!["host".into()],
                    // b gave its seat back and is still connected; a is seated elsewhere.
                    subscribers: vec![b.participant_id.clone(), a.participant_id.clone()],
                },
            ],
            ..Default::default()
        },
        T0 + 2,
    );
    let strangers: Vec<(String, String)> = report
        .strangers
        .iter()
        .map(|s| (s.stage_arn.clone(), s.participant_id.clone()))
        .collect();
    assert_eq!(
        strangers,
        vec![
            (arn0, "zz".to_string()),
            (arn1.clone(), b.participant_id.clone()),
            (arn1, a.participant_id.clone()),
        ]
    );
}

#[test]
fn client_keys_group_ipv6_by_64_and_refuse_what_is_not_an_address() {
    assert_eq!(client_key("203.0.113.7").as_deref(), Some("203.0.113.7"));
    assert_eq!(
        client_key("2001:db8:1:2:3:4:5:6").as_deref(),
        Some("2001:db8:1:2::/64")
    );
    assert_eq!(
        client_key("2001:db8:1:2:ffff::1"),
        client_key("2001:db8:1:2::9")
    );
    assert_eq!(
        client_key("::ffff:198.51.100.1").as_deref(),
        Some("198.51.100.1")
    );
    assert_eq!(client_key("not an ip"), None);
    assert_eq!(client_key(""), None);
}

#[test]
fn participant_ids_are_valid_jtis_and_hide_the_lease() {
    let (mut pool, _) = pool_with_live(1, 10);
    let a = pool.assign("a", T0, &rnd(1)).unwrap();
    assert!(stagefan_core::token::is_valid_jti(&a.participant_id));
    let secret = a.lease_id.split_once('.').unwrap().1;
    assert!(!secret.contains(&a.participant_id) && !a.participant_id.contains(secret));
}

#[test]
fn a_stored_lease_without_a_participant_id_gets_a_stable_one() {
    let (mut pool, _) = pool_with_live(1, 10);
    pool.assign("a", T0, &rnd(1)).unwrap();
    let mut rows = pool.export();
    rows.leases[0].participant_id.clear();
    let one = Pool::from_rows(pool.settings().clone(), rows.clone()).unwrap();
    let two = Pool::from_rows(pool.settings().clone(), rows).unwrap();
    let pid = &one.leases().next().unwrap().participant_id;
    assert!(!pid.is_empty());
    assert_eq!(pid, &two.leases().next().unwrap().participant_id);
}

#[test]
fn a_pool_of_another_region_names_its_leases_after_itself_and_keeps_its_region() {
    let s = settings(3, 1, 10);
    assert!(Pool::new_in_region("default", "EU", s.clone(), T0).is_err());
    let mut pool = Pool::new_in_region("default", "eu-west-1", s.clone(), T0).unwrap();
    assert_eq!(pool.broadcast(), "default");
    assert_eq!(pool.region(), Some("eu-west-1"));
    assert_eq!(pool.name(), "default@eu-west-1");
    let mut store = Store::default();
    live(&mut pool, T0);
    let seat = pool.assign("u", T0, &rnd(1)).unwrap();
    store.apply(&mut pool);
    assert!(
        seat.lease_id.starts_with("default@eu-west-1."),
        "{}",
        seat.lease_id
    );
    let route = stagefan_core::regions::pool_of_lease(&seat.lease_id).unwrap();
    assert_eq!(
        (route.broadcast, route.region),
        ("default", Some("eu-west-1"))
    );
    // Rebuilt from its rows, it is still that region's pool, and the lease reconnects.
    let mut rebuilt = store.rebuild(s);
    assert_eq!(rebuilt.name(), "default@eu-west-1");
    let again = rebuilt
        .join(&with_lease("u", &seat.lease_id), T0 + 10, &rnd(2))
        .unwrap();
    assert!(again.reconnected);
    // The primary region's pool keeps today's names.
    let (mut primary, _) = pool_with_live(1, 3);
    assert_eq!(primary.region(), None);
    let seat = primary.assign("u", T0, &rnd(3)).unwrap();
    assert_eq!(seat.lease_id.split_once('.').unwrap().0, "default");
}
