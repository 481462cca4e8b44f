//! Consolidation and make-before-break moves, through the pool and the policy together: the
//! audience shrinks, the policy picks the under-filled stages, the pool drains them, their
//! viewers move (holding both seats until they give the old one back), the emptied stages are
//! deleted, and the meter counts what that saved.

use stagefan_core::config::FanoutMode;
use stagefan_core::policy::{scale_down, PolicyConfig, ScaleAction};
use stagefan_core::pool::*;

const T0: Millis = 1_764_160_000_000;
const MIN: Millis = 60_000;
const GRACE: Millis = 10_000;

fn settings(capacity: u32, headroom_seats: u32) -> PoolSettings {
    PoolSettings {
        capacity,
        min_stages: 1,
        max_stages: 20,
        lease_ttl_ms: 10 * MIN,
        fanout: FanoutMode::MultiPublish,
        headroom_seats,
        scale_down_grace_ms: GRACE,
        delete_grace_ms: GRACE,
        ..PoolSettings::default()
    }
}

fn rnd(n: u64) -> [u8; LEASE_RANDOM_BYTES] {
    let mut b = [0u8; LEASE_RANDOM_BYTES];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8..].copy_from_slice(&(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
    b
}

fn arn(id: StageId) -> String {
    format!("arn:aws:ivs:us-east-1:123456789012:stage/stage{:07}", id.0)
}

fn live(pool: &mut Pool, now: Millis) -> StageId {
    let intent = pool.begin_create(now).unwrap();
    let endpoints = StageEndpoints {
        whip: "http://127.0.0.1:8790/whip".into(),
        events: "ws://127.0.0.1:8790/events".into(),
    };
    pool.created(intent.stage, &arn(intent.stage), endpoints, now)
        .unwrap();
    pool.mark_live(intent.stage, &format!("host-{}", intent.stage), now)
        .unwrap();
    intent.stage
}

fn move_seat(pool: &mut Pool, lease: &Lease, now: Millis, n: u64) -> Assignment {
    let req = JoinRequest {
        user_id: "whoever-asks",
        lease_id: Some(&lease.id),
        client: lease.client.as_deref(),
        moving: true,
    };
    pool.join(&req, now, &rnd(n)).unwrap()
}

fn no_stage_over_capacity(pool: &Pool) {
    for st in pool.stages() {
        let held = pool.leases().filter(|l| l.stage == st.id).count() as u32;
        assert_eq!(held, st.load, "stage {} load", st.id);
        assert!(st.load <= st.capacity, "stage {} over capacity", st.id);
    }
}

fn apply(pool: &mut Pool, actions: &[ScaleAction], now: Millis) {
    for a in actions {
        match a {
            ScaleAction::Consolidate { stage_arn } => {
                let id = pool.stage_id(stage_arn).unwrap();
                pool.consolidate(id, now).unwrap();
            }
            ScaleAction::Drain { stage_arn } => {
                let id = pool.stage_id(stage_arn).unwrap();
                pool.drain(id, now).unwrap();
            }
            ScaleAction::Delete { stage_arn } => {
                let id = pool.stage_id(stage_arn).unwrap();
                pool.request_delete(id, now).unwrap();
                pool.deleted(id, now).unwrap();
            }
            ScaleAction::Create => unreachable!("scale_down never creates"),
        }
    }
}

/// The scenario: capacity 3, twelve viewers over four stages, eight leave (one stays
/// on each stage); the four are moved into two stages, the two emptied stages deleted.
#[test]
fn twelve_viewers_then_four_are_moved_into_two_stages() {
    let mut pool = Pool::new("b", settings(3, 1), T0).unwrap();
    let stages: Vec<StageId> = (0..4).map(|_| live(&mut pool, T0)).collect();
    let mut leases = Vec::new();
    for v in 0..12u64 {
        let a = pool.assign(&format!("v{v}"), T0 + v, &rnd(v)).unwrap();
        leases.push(a);
    }
    assert!(stages.iter().all(|s| pool.stage(*s).unwrap().load == 3));
    // Eight leave: the first two of each stage's three.
    let mut stay = Vec::new();
    for s in &stages {
        let on: Vec<&Assignment> = leases.iter().filter(|a| a.stage == *s).collect();
        for a in &on[..2] {
            assert!(pool.leave(&a.lease_id, T0 + 1_000));
        }
        stay.push(on[2].lease_id.clone());
    }
    no_stage_over_capacity(&pool);
    let policy = PolicyConfig::for_pool(pool.settings());

    // Still arriving within the grace: nothing moves yet.
    let soon = T0 + GRACE / 2;
    assert!(scale_down(&policy, &pool.snapshot(soon), soon).is_empty());

    // Quiet: the two least filled (all hold one; the newest first) are consolidated.
    let t1 = T0 + 2 * GRACE;
    let actions = scale_down(&policy, &pool.snapshot(t1), t1);
    assert_eq!(
        actions,
        vec![
            ScaleAction::Consolidate {
                stage_arn: arn(stages[3])
            },
            ScaleAction::Consolidate {
                stage_arn: arn(stages[2])
            },
        ]
    );
    apply(&mut pool, &actions, t1);
    assert_eq!(pool.snapshot(t1).stats.consolidations, 2);

    // The moved viewers: a new seat each on a stage that stays, the old one kept.
    let moving: Vec<Lease> = pool
        .leases()
        .filter(|l| l.stage == stages[2] || l.stage == stages[3])
        .cloned()
        .collect();
    assert_eq!(moving.len(), 2);
    let mut moved = Vec::new();
    for (i, old) in moving.iter().enumerate() {
        let a = move_seat(&mut pool, old, t1 + 100, 100 + i as u64);
        assert!(!a.reconnected);
        assert_ne!(a.lease_id, old.id);
        assert!(a.stage == stages[0] || a.stage == stages[1]);
        assert_eq!(a.user_id, old.user_id, "a move keeps the seat's viewer");
        // Asked again (a retried heartbeat), the same new seat.
        let again = move_seat(&mut pool, old, t1 + 200, 200 + i as u64);
        assert_eq!(again.lease_id, a.lease_id);
        assert!(again.reconnected);
        no_stage_over_capacity(&pool);
        moved.push((old.id.clone(), a));
    }
    // Both seats held during the move: 4 viewers, 6 seats.
    assert_eq!(pool.viewers(), 6);
    assert_eq!(pool.snapshot(t1 + 200).stats.moves, 2);
    // Moves are not arrivals: consolidation is not held back by them.
    assert_eq!(pool.recent_arrivals(t1 + 200), 0);
    // The host keeps publishing to the draining stages while they have viewers.
    assert_eq!(pool.publisher_stages().len(), 4);

    // The new stage plays: each viewer gives its old seat back.
    for (old, _) in &moved {
        assert!(pool.leave(old, t1 + 1_000));
    }
    assert_eq!(pool.viewers(), 4);
    assert_eq!(pool.stage(stages[0]).unwrap().load, 2);
    assert_eq!(pool.stage(stages[1]).unwrap().load, 2);
    assert_eq!(
        pool.publisher_stages().len(),
        2,
        "empty draining stages are left"
    );

    // After the delete grace the emptied stages go; nothing else.
    let t2 = t1 + 1_000 + GRACE;
    let actions = scale_down(&policy, &pool.snapshot(t2), t2);
    assert_eq!(
        actions,
        vec![
            ScaleAction::Delete {
                stage_arn: arn(stages[2])
            },
            ScaleAction::Delete {
                stage_arn: arn(stages[3])
            },
        ]
    );
    apply(&mut pool, &actions, t2);
    let t3 = t2 + 10_000;
    assert!(scale_down(&policy, &pool.snapshot(t3), t3).is_empty());

    // What it saved: two host uploads since t2, priced at the host price.
    let saved = pool.saved(t3);
    assert_eq!(saved.participant_ms.hosts, 2 * 10_000);
    assert_eq!(saved.participants.hosts, 2);
    let expected_micro = 2 * 10_000 * pool.settings().prices.host / 3_600_000;
    assert_eq!(saved.cost_micro_usd, expected_micro);
    // Nothing is saved after the end.
    pool.end(t3);
    let later = pool.saved(t3 + 60_000);
    assert_eq!(later.participant_ms.hosts, 2 * 10_000);
}

#[test]
fn a_move_off_a_stage_that_is_not_draining_is_the_same_seat() {
    let mut pool = Pool::new("b", settings(3, 1), T0).unwrap();
    live(&mut pool, T0);
    let a = pool.assign("v", T0, &rnd(1)).unwrap();
    let lease = pool.lease(&a.lease_id).unwrap().clone();
    let again = move_seat(&mut pool, &lease, T0 + 5, 2);
    assert!(again.reconnected);
    assert_eq!(again.lease_id, a.lease_id);
    assert_eq!(pool.viewers(), 1);
}

#[test]
fn a_move_with_no_room_elsewhere_is_refused_and_the_old_seat_stays() {
    let mut pool = Pool::new("b", settings(1, 0), T0).unwrap();
    let s1 = live(&mut pool, T0);
    let s2 = live(&mut pool, T0);
    let a = pool.assign("a", T0, &rnd(1)).unwrap();
    let b = pool.assign("b", T0, &rnd(2)).unwrap();
    assert_ne!(a.stage, b.stage);
    pool.drain(s2, T0 + 1).unwrap();
    let on_s2 = if a.stage == s2 { &a } else { &b };
    let lease = pool.lease(&on_s2.lease_id).unwrap().clone();
    let req = JoinRequest {
        user_id: "x",
        lease_id: Some(&lease.id),
        client: None,
        moving: true,
    };
    assert!(matches!(
        pool.join(&req, T0 + 2, &rnd(3)),
        Err(AssignError::NoSeat(_))
    ));
    assert!(pool.lease(&lease.id).is_some(), "the old seat stays");
    assert_eq!(pool.stage(s1).unwrap().load, 1);
    assert_eq!(pool.stage(s2).unwrap().load, 1);
}

#[test]
fn consolidation_waits_for_an_empty_stage_to_go_and_can_be_off() {
    let mut pool = Pool::new("b", settings(4, 1), T0).unwrap();
    let s: Vec<StageId> = (0..3).map(|_| live(&mut pool, T0)).collect();
    let a = pool.assign("a", T0, &rnd(1)).unwrap();
    let b = pool.assign("b", T0, &rnd(2)).unwrap();
    let c = pool.assign("c", T0, &rnd(3)).unwrap();
    pool.leave(&c.lease_id, T0 + 1);
    assert_ne!(a.stage, b.stage);
    let t = T0 + GRACE / 2 + GRACE;
    // The stage c left is empty, but only for less than its grace: nothing yet.
    let policy = PolicyConfig::for_pool(pool.settings());
    let empty = s
        .iter()
        .find(|id| pool.stage(**id).unwrap().load == 0)
        .unwrap();
    assert_eq!(pool.stage(*empty).unwrap().empty_since, Some(T0 + 1));
    let early = T0 + 1 + GRACE - 1;
    assert!(scale_down(&policy, &pool.snapshot(early), early).is_empty());
    // Once it is drained, one of the two others is consolidated into the last.
    let actions = scale_down(&policy, &pool.snapshot(t), t);
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(
        actions[0],
        ScaleAction::Drain {
            stage_arn: arn(*empty)
        }
    );
    assert!(matches!(actions[1], ScaleAction::Consolidate { .. }));
    let off = PolicyConfig {
        consolidate: false,
        ..policy
    };
    let only_drain = scale_down(&off, &pool.snapshot(t), t);
    assert_eq!(only_drain, actions[..1].to_vec());
}
