//! The account-quota ledger: grants never exceed the region's usable quotas under any
//! interleaving of holders' calls, renewals and lapses; chunked targets; the reserve.

use proptest::prelude::*;
use stagefan_core::ledger::{
    chunk_for, subscription_target, Grant, Ledger, LedgerConfig, LedgerUsage, Quota, Quotas,
};

fn cfg(subs: u32, pubs: u32, stages: u32) -> LedgerConfig {
    LedgerConfig {
        limits: Quotas {
            subscriptions: subs,
            publishers: pubs,
            stages,
        },
        reserve_percent: 0,
        grant_ttl_ms: 60_000,
    }
}

fn q(subscriptions: u32, publishers: u32, stages: u32) -> Quotas {
    Quotas {
        subscriptions,
        publishers,
        stages,
    }
}

#[test]
fn a_grant_is_what_is_free_and_a_reduction_always_lands() {
    let cfg = cfg(12, 3, 3);
    let mut ledger = Ledger::default();
    let a = ledger.grant(&cfg, "a", q(10, 2, 2), 0);
    assert_eq!(a.held, q(10, 2, 2));
    assert_eq!(a.short, None);
    assert_eq!(a.free, q(2, 1, 1));
    let b = ledger.grant(&cfg, "b", q(5, 2, 2), 1);
    assert_eq!(b.held, q(2, 1, 1));
    assert_eq!(b.short, Some(Quota::Subscriptions));
    assert_eq!(b.free, Quotas::ZERO);
    // a gives some back: b gets it on its next call.
    let a = ledger.grant(&cfg, "a", q(6, 1, 1), 2);
    assert_eq!(a.held, q(6, 1, 1));
    let b = ledger.grant(&cfg, "b", q(5, 2, 2), 3);
    assert_eq!(b.held, q(5, 2, 2));
    assert_eq!(ledger.held_total(), q(11, 3, 3));
    assert!(b.version > a.version);
}

#[test]
fn usage_counts_live_grants_only_and_changes_nothing() {
    let mut cfg = cfg(100, 10, 10);
    cfg.reserve_percent = 10;
    let mut ledger = Ledger::default();
    ledger.grant(&cfg, "a", q(40, 1, 2), 0);
    ledger.grant(&cfg, "b", q(20, 2, 1), 30_000);
    let at = |now| ledger.usage(&cfg, now);
    assert_eq!(
        at(59_999),
        LedgerUsage {
            limits: q(100, 10, 10),
            usable: q(90, 9, 9),
            held: q(60, 3, 3),
            holders: 2,
        }
    );
    // a's grant lapses at 60 s: the read leaves it out, and leaves the ledger as it was.
    assert_eq!(at(60_000).held, q(20, 2, 1));
    assert_eq!(at(60_000).holders, 1);
    assert!(ledger.holding("a").is_some());
    assert_eq!(at(90_000).held, Quotas::ZERO);
    let json = serde_json::to_value(at(0)).unwrap();
    assert_eq!(json["held"]["subscriptions"], 60);
    assert_eq!(json["usable"]["stages"], 9);
}

#[test]
fn asking_again_is_a_renewal_and_a_lapsed_grant_is_reclaimed() {
    let cfg = cfg(10, 10, 10);
    let mut ledger = Ledger::default();
    ledger.grant(&cfg, "a", q(10, 1, 1), 0);
    // Renewed at 50 s: lasts until 110 s.
    let renewed = ledger.grant(&cfg, "a", q(10, 1, 1), 50_000);
    assert_eq!(renewed.held, q(10, 1, 1));
    assert_eq!(ledger.holding("a").unwrap().expires_at, 110_000);
    let b = ledger.grant(&cfg, "b", q(5, 1, 1), 100_000);
    assert_eq!(b.held, q(0, 1, 1), "a still holds every subscription");
    // a stops calling: at 110 s its grant lapses and b gets it.
    let b = ledger.grant(&cfg, "b", q(5, 1, 1), 110_000);
    assert_eq!(b.held, q(5, 1, 1));
    assert!(ledger.holding("a").is_none());
    // `renew` keeps what is held; a lapsed holder renews nothing.
    assert_eq!(ledger.renew(&cfg, "b", 120_000).held, q(5, 1, 1));
    assert_eq!(ledger.renew(&cfg, "a", 120_000).held, Quotas::ZERO);
    assert_eq!(ledger.expire(180_000), vec!["b".to_string()]);
}

#[test]
fn giving_back_and_asking_for_nothing_free_the_grant() {
    let cfg = cfg(10, 10, 10);
    let mut ledger = Ledger::default();
    ledger.grant(&cfg, "a", q(4, 1, 1), 0);
    ledger.grant(&cfg, "b", q(4, 1, 1), 0);
    assert!(ledger.give_back("a"));
    assert!(!ledger.give_back("a"));
    assert_eq!(ledger.grant(&cfg, "b", Quotas::ZERO, 1).held, Quotas::ZERO);
    assert!(ledger.holding("b").is_none());
    assert_eq!(ledger.free(&cfg), q(10, 10, 10));
}

#[test]
fn the_reserve_is_kept_and_rows_read_back() {
    let mut cfg = cfg(20_000, 1_000, 1_000);
    cfg.reserve_percent = 10;
    assert_eq!(cfg.usable(), q(18_000, 900, 900));
    cfg.limits = q(12, 5, 1);
    cfg.reserve_percent = 25;
    assert_eq!(cfg.usable(), q(9, 3, 0), "the reserve rounds up");
    assert_eq!(LedgerConfig::default().usable(), q(20_000, 1_000, 1_000));

    let cfg = self::cfg(10, 10, 10);
    let mut ledger = Ledger::default();
    ledger.grant(&cfg, "a", q(3, 1, 1), 0);
    ledger.grant(&cfg, "b", q(4, 2, 2), 0);
    let rows: Vec<Grant> = ledger.grants().cloned().collect();
    let json = serde_json::to_string(&rows).unwrap();
    let back = Ledger::from_rows(serde_json::from_str::<Vec<Grant>>(&json).unwrap());
    assert_eq!(back, ledger);
}

#[test]
fn pools_ask_in_chunks_and_give_idle_back() {
    assert_eq!(chunk_for(5), 5);
    assert_eq!(chunk_for(10_000), 50);
    assert_eq!(chunk_for(0), 1);
    // Fresh pool: the first viewer asks for a chunk.
    assert_eq!(subscription_target(0, 0, 50, false, false), Some(50));
    // Plenty left: no call.
    assert_eq!(subscription_target(20, 50, 50, false, false), None);
    // Fewer than half a chunk left: the next chunk.
    assert_eq!(subscription_target(26, 50, 50, false, false), Some(76));
    // The alarm gives back what is idle beyond two chunks.
    assert_eq!(subscription_target(10, 200, 50, false, true), Some(60));
    assert_eq!(subscription_target(10, 100, 50, false, true), None);
    // A tight region: one at a time, only for a viewer asking, idle back at once.
    assert_eq!(subscription_target(7, 7, 50, true, false), Some(8));
    assert_eq!(subscription_target(7, 9, 50, true, false), None);
    assert_eq!(subscription_target(7, 9, 50, true, true), Some(7));
    assert_eq!(subscription_target(7, 7, 50, true, true), None);
}

#[derive(Debug, Clone)]
enum Step {
    Grant {
        holder: usize,
        want: (u32, u32, u32),
    },
    Renew {
        holder: usize,
    },
    GiveBack {
        holder: usize,
    },
    Wait {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..4usize, 0..30u32, 0..6u32, 0..6u32)
            .prop_map(|(holder, s, p, st)| Step::Grant { holder, want: (s, p, st) }),
        1 => (0..4usize).prop_map(|holder| Step::Renew { holder }),
        1 => (0..4usize).prop_map(|holder| Step::GiveBack { holder }),
        2 => (0..40_000u64).prop_map(|ms| Step::Wait { ms }),
    ]
}

proptest! {
    /// Whatever the holders do, in whatever order: the total held never exceeds the usable
    /// quotas, every answer is what the ledger then holds for that holder, nobody gets more
    /// than it asked, a reduction is always granted, and a stored-and-reloaded ledger holds
    /// the same grants.
    #[test]
    fn grants_never_exceed_the_limits(
        limits in (0..40u32, 0..10u32, 0..10u32),
        reserve in 0..50u32,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        let cfg = LedgerConfig {
            limits: q(limits.0, limits.1, limits.2),
            reserve_percent: reserve,
            grant_ttl_ms: 60_000,
        };
        let usable = cfg.usable();
        let mut ledger = Ledger::default();
        let mut now = 0u64;
        for s in steps {
            match s {
                Step::Grant { holder, want } => {
                    let name = format!("pool-{holder}");
                    let want = q(want.0, want.1, want.2);
                    let before = ledger.holding(&name).filter(|g| g.expires_at > now).map(|g| g.held);
                    let answer = ledger.grant(&cfg, &name, want, now);
                    prop_assert!(want.covers(&answer.held));
                    for quota in Quota::ALL {
                        let held_before = before.map_or(0, |h| h.get(quota));
                        if want.get(quota) <= held_before {
                            prop_assert_eq!(answer.held.get(quota), want.get(quota));
                        }
                    }
                    let stored = ledger.holding(&name).map_or(Quotas::ZERO, |g| g.held);
                    prop_assert_eq!(stored, answer.held);
                    prop_assert_eq!(answer.short.is_some(), answer.held != want);
                }
                Step::Renew { holder } => {
                    let name = format!("pool-{holder}");
                    let answer = ledger.renew(&cfg, &name, now);
                    let stored = ledger.holding(&name).map_or(Quotas::ZERO, |g| g.held);
                    prop_assert_eq!(stored, answer.held);
                }
                Step::GiveBack { holder } => {
                    ledger.give_back(&format!("pool-{holder}"));
                }
                Step::Wait { ms } => {
                    now += ms;
                    ledger.expire(now);
                }
            }
            prop_assert!(usable.covers(&ledger.held_total()), "{:?} > {:?}", ledger.held_total(), usable);
            let reloaded = Ledger::from_rows(ledger.grants().cloned());
            prop_assert!(reloaded.grants().eq(ledger.grants()));
            prop_assert_eq!(reloaded.held_total(), ledger.held_total());
        }
    }
}
