//! The pool within its grant of the region's IVS quotas: no seat beyond its granted
//! subscriptions, no stage beyond its granted stages and publishers, a lapsed grant is
//! nothing, chunked asks, idle grants given back, the grant kept across a reload.

use stagefan_core::alarm;
use stagefan_core::ledger::{GrantAnswer, Ledger, LedgerConfig, Quota, Quotas};
use stagefan_core::pool::*;

const T0: Millis = 1_764_160_000_000;

fn pool(capacity: u32) -> Pool {
    let settings = PoolSettings {
        capacity,
        min_stages: 1,
        max_stages: 10,
        ..PoolSettings::default()
    };
    let mut pool = Pool::new("quota", settings, T0).unwrap();
    pool.enforce_quota();
    pool
}

fn rnd(n: u64) -> [u8; LEASE_RANDOM_BYTES] {
    let mut b = [0u8; LEASE_RANDOM_BYTES];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8..].copy_from_slice(&(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
    b
}

fn live(pool: &mut Pool, now: Millis) -> Result<StageId, PoolError> {
    let intent = pool.begin_create(now)?;
    let arn = format!(
        "arn:aws:ivs:us-east-1:123456789012:stage/q{:011}",
        intent.stage.0
    );
    pool.created(intent.stage, &arn, StageEndpoints::default(), now)?;
    pool.mark_live(intent.stage, "host", now)?;
    Ok(intent.stage)
}

fn cfg(subscriptions: u32, publishers: u32, stages: u32) -> LedgerConfig {
    LedgerConfig {
        limits: Quotas {
            subscriptions,
            publishers,
            stages,
        },
        reserve_percent: 0,
        grant_ttl_ms: 60_000,
    }
}

/// What the worker does: ask the ledger for what the pool wants, record the answer.
fn ask(
    pool: &mut Pool,
    ledger: &mut Ledger,
    cfg: &LedgerConfig,
    extra: u32,
    trim: bool,
    now: Millis,
) -> Option<GrantAnswer> {
    let want = pool.quota_want(now, extra, trim)?;
    pool.lower_quota(want);
    let answer = ledger.grant(cfg, "quota", want, now);
    pool.apply_quota(&answer, now);
    Some(answer)
}

#[test]
fn nothing_without_a_grant() {
    let mut pool = pool(5);
    assert_eq!(
        pool.begin_create(T0).unwrap_err(),
        PoolError::RegionQuota(Quota::Stages)
    );
    match pool.assign("a", T0, &rnd(1)) {
        Err(AssignError::NoSeat(no)) => {
            assert_eq!(no.region_quota, Some(Quota::Subscriptions))
        }
        other => panic!("{other:?}"),
    }
    // It wants a stage (and its publisher) and a chunk of subscriptions.
    assert_eq!(
        pool.quota_want(T0, 1, false),
        Some(Quotas {
            subscriptions: 5,
            publishers: 1,
            stages: 1
        })
    );
}

#[test]
fn seats_and_stages_only_within_the_grant() {
    let cfg = cfg(7, 2, 3);
    let mut ledger = Ledger::default();
    let mut pool = pool(5);
    ask(&mut pool, &mut ledger, &cfg, 1, false, T0).unwrap();
    let first = live(&mut pool, T0).unwrap();
    // One stage granted: the second is refused until granted.
    assert_eq!(
        pool.begin_create(T0).unwrap_err(),
        PoolError::RegionQuota(Quota::Stages)
    );
    // 7 in the region, a chunk of 5 granted: less than a chunk is left, the region is tight.
    assert!(pool.quota_hold().unwrap().tight);
    for i in 0..5 {
        pool.assign(&format!("v{i}"), T0, &rnd(i)).unwrap();
    }
    match pool.assign("v5", T0, &rnd(5)) {
        Err(AssignError::NoSeat(no)) => assert_eq!(no.region_quota, Some(Quota::Subscriptions)),
        other => panic!("{other:?}"),
    }
    // Tight: one more for the viewer asking (and the second stage it wants).
    let answer = ask(&mut pool, &mut ledger, &cfg, 1, false, T0 + 1).unwrap();
    assert_eq!(answer.held.subscriptions, 6);
    let second = live(&mut pool, T0 + 2).unwrap();
    pool.assign("v5", T0 + 2, &rnd(5)).unwrap();
    assert_ne!(first, second);
    // Publishers: 2 granted, a third stage would need a third.
    ask(&mut pool, &mut ledger, &cfg, 1, false, T0 + 3);
    assert_eq!(
        pool.begin_create(T0 + 3).unwrap_err(),
        PoolError::RegionQuota(Quota::Publishers)
    );
    assert_eq!(pool.quota_hold().unwrap().short, Some(Quota::Publishers));
    assert_eq!(pool.quota_hold().unwrap().held.subscriptions, 7);
    pool.assign("v6", T0 + 4, &rnd(6)).unwrap();
    match pool.assign("v7", T0 + 4, &rnd(7)) {
        Err(AssignError::NoSeat(no)) => assert_eq!(no.region_quota, Some(Quota::Subscriptions)),
        other => panic!("{other:?}"),
    }
    // The region is used up: asking gets nothing more.
    let answer = ask(&mut pool, &mut ledger, &cfg, 1, false, T0 + 5).unwrap();
    assert_eq!(answer.held.subscriptions, 7);
    assert_eq!(answer.short, Some(Quota::Subscriptions));
    assert_eq!(pool.viewers(), 7);
    assert!(cfg.usable().covers(&ledger.held_total()));
    // A reconnect is never refused by the quota.
    let lease = pool.leases().next().unwrap().id.clone();
    let again = pool
        .join(
            &JoinRequest {
                user_id: "v0",
                lease_id: Some(&lease),
                client: None,
                moving: false,
            },
            T0 + 5,
            &rnd(99),
        )
        .unwrap();
    assert!(again.reconnected);
}

#[test]
fn a_lapsed_grant_is_nothing_and_renewal_is_due_at_half_its_ttl() {
    let cfg = cfg(100, 10, 10);
    let mut ledger = Ledger::default();
    let mut pool = pool(5);
    ask(&mut pool, &mut ledger, &cfg, 1, false, T0).unwrap();
    live(&mut pool, T0).unwrap();
    pool.assign("a", T0, &rnd(1)).unwrap();
    let hold = pool.quota_hold().unwrap().clone();
    assert_eq!(hold.expires_at, T0 + 60_000);
    assert_eq!(hold.renew_at, T0 + 30_000);
    // Nothing to ask before the renewal is due; the alarm comes by then.
    assert_eq!(pool.quota_want(T0 + 1_000, 0, true), None);
    let wake = alarm::next_wake(&pool, true, T0 + 1_000).unwrap();
    assert!(wake <= T0 + 30_000, "{wake}");
    // Due: the same again.
    assert_eq!(pool.quota_want(T0 + 30_000, 0, true), Some(hold.held));
    // Lapsed: no new seat, however many were granted.
    assert_eq!(pool.quota_granted(T0 + 60_000), Some(Quotas::ZERO));
    match pool.assign("b", T0 + 60_000, &rnd(2)) {
        Err(AssignError::NoSeat(no)) => assert_eq!(no.region_quota, Some(Quota::Subscriptions)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn idle_grants_go_back_and_the_grant_survives_a_reload() {
    let cfg = cfg(1_000, 10, 10);
    let mut ledger = Ledger::default();
    let mut pool = pool(50);
    ask(&mut pool, &mut ledger, &cfg, 1, false, T0).unwrap();
    live(&mut pool, T0).unwrap();
    // 200 granted (several chunks asked in a storm), 10 seated.
    let answer = ledger.grant(
        &cfg,
        "quota",
        Quotas {
            subscriptions: 200,
            publishers: 1,
            stages: 1,
        },
        T0,
    );
    pool.apply_quota(&answer, T0);
    for i in 0..10 {
        pool.assign(&format!("v{i}"), T0, &rnd(i)).unwrap();
    }
    // On the alarm: back to the seated plus one chunk.
    let want = pool.quota_want(T0 + 1, 0, true).unwrap();
    assert_eq!(want.subscriptions, 60);
    ask(&mut pool, &mut ledger, &cfg, 0, true, T0 + 1);
    assert_eq!(ledger.held_total().subscriptions, 60);
    // The grant is part of the pool's rows.
    let rows = pool.export();
    let back = Pool::from_rows(pool.settings().clone(), rows).unwrap();
    assert_eq!(back.quota_hold(), pool.quota_hold());
    assert_eq!(back.quota_granted(T0 + 2).unwrap().subscriptions, 60);
    // A pool whose quota is not enforced (stored before the ledger) is as it was.
    let settings = PoolSettings::default();
    let mut free = Pool::new("free", settings, T0).unwrap();
    assert!(free.quota_hold().is_none());
    assert!(free.begin_create(T0).is_ok());
    assert_eq!(free.quota_want(T0, 1, false), None);
    assert!(free.snapshot(T0).quota.is_none());
    let snap = pool.snapshot(T0 + 2);
    let view = snap.quota.unwrap();
    assert_eq!(view.in_use.subscriptions, 10);
    assert_eq!(view.held.subscriptions, 60);
}

#[test]
fn a_pool_full_at_its_own_max_stages_is_out_of_capacity_not_of_quota() {
    let settings = PoolSettings {
        capacity: 2,
        min_stages: 1,
        max_stages: 2,
        ..PoolSettings::default()
    };
    let mut pool = Pool::new("quota", settings, T0).unwrap();
    pool.enforce_quota();
    let cfg = cfg(100, 100, 100);
    let mut ledger = Ledger::default();
    // The grant covers exactly what the pool holds: two stages and a chunk of seats.
    for _ in 0..2 {
        ask(&mut pool, &mut ledger, &cfg, 1, false, T0).expect("an ask");
        live(&mut pool, T0).unwrap();
    }
    for n in 0..4 {
        ask(&mut pool, &mut ledger, &cfg, 0, false, T0);
        pool.assign(&format!("v{n}"), T0, &rnd(n)).unwrap();
    }
    ask(&mut pool, &mut ledger, &cfg, 0, false, T0);
    match pool.assign("late", T0, &rnd(99)) {
        Err(AssignError::NoSeat(no)) => {
            assert!(!no.can_create, "{no:?}");
            assert_eq!(no.region_quota, None, "full at max_stages is no_capacity");
        }
        other => panic!("{other:?}"),
    }
}

// ----- the scale-up decisions moved from the worker into `policy` -----

#[test]
fn plan_creates_records_what_the_policy_wants_and_stops_at_the_grant() {
    use stagefan_core::policy::{plan_creates, stages_beyond_grant, PolicyConfig};
    let mut pool = pool(10);
    let cfg = PolicyConfig {
        headroom_seats: 25,
        min_stages: 1,
        max_stages: 10,
        ..PolicyConfig::default()
    };
    // Nothing granted yet: the policy wants 3 stages, the grant has room for none.
    assert_eq!(stages_beyond_grant(&cfg, &pool, T0), 3);
    assert!(plan_creates(&cfg, &mut pool, T0).is_empty());
    // A grant of two stages (and publishers): two intents, one still beyond the grant.
    let mut ledger = Ledger::default();
    let lc = cfg_2();
    let answer = ledger.grant(
        &lc,
        "quota",
        Quotas {
            subscriptions: 10,
            publishers: 2,
            stages: 2,
        },
        T0,
    );
    pool.apply_quota(&answer, T0);
    assert_eq!(stages_beyond_grant(&cfg, &pool, T0), 1);
    let intents = plan_creates(&cfg, &mut pool, T0);
    assert_eq!(intents.len(), 2);
    assert_eq!(pool.load_summary().creating, 2);
    // The two in flight count toward the headroom: one more wanted, none granted.
    assert_eq!(stages_beyond_grant(&cfg, &pool, T0), 1);
    assert!(plan_creates(&cfg, &mut pool, T0).is_empty());
}

#[test]
fn without_an_enforced_quota_nothing_is_beyond_the_grant() {
    use stagefan_core::policy::{plan_creates, stages_beyond_grant, PolicyConfig};
    let mut pool = Pool::new("free", PoolSettings::default(), T0).unwrap();
    let cfg = PolicyConfig::for_pool(pool.settings());
    assert_eq!(stages_beyond_grant(&cfg, &pool, T0), 0);
    assert_eq!(plan_creates(&cfg, &mut pool, T0).len(), 1);
}

fn cfg_2() -> LedgerConfig {
    cfg(1_000, 100, 100)
}
