//! Unit and property tests of the scaling policy and the token bucket.

use std::collections::BTreeMap;

use proptest::prelude::*;
use stagefan_core::config::FanoutMode;
use stagefan_core::policy::*;
use stagefan_core::pool::*;

const T0: Millis = 1_764_160_000_000;
const MIN: u64 = 60_000;

// ----- token bucket -----

#[test]
fn a_bucket_starts_full_and_refills_at_its_rate() {
    let mut b = TokenBucket::new(5, 5.0, T0);
    assert_eq!(b.capacity(), 5);
    assert_eq!(b.available(T0), 5);
    for _ in 0..5 {
        assert!(b.try_take(T0));
    }
    assert!(!b.try_take(T0));
    assert_eq!(b.time_until_available(T0), 200);
    assert_eq!(b.time_until_available(T0 + 150), 50);
    assert!(!b.try_take(T0 + 199));
    assert!(b.try_take(T0 + 200));
    assert!(!b.try_take(T0 + 200));
    // Never above capacity however long it rests.
    assert_eq!(b.available(T0 + 3_600_000), 5);
}

#[test]
fn a_bucket_handles_fractional_rates_exactly() {
    let mut b = TokenBucket::new(1, 0.5, T0);
    assert!(b.try_take(T0));
    assert_eq!(b.time_until_available(T0), 2_000);
    assert!(!b.try_take(T0 + 1_999));
    assert!(b.try_take(T0 + 2_000));
    let mut c = TokenBucket::new(3, 2.5, T0);
    assert!(c.try_take_n(3, T0));
    assert_eq!(c.time_until_available(T0), 400);
    assert!(!c.try_take_n(2, T0 + 400), "all-or-nothing");
    assert_eq!(c.available(T0 + 400), 1);
    assert!(c.try_take_n(2, T0 + 800));
}

#[test]
fn a_bucket_ignores_time_going_backwards() {
    let mut b = TokenBucket::new(2, 1.0, T0);
    assert!(b.try_take_n(2, T0 + 10_000));
    // An earlier `now` neither refills nor breaks anything.
    assert!(!b.try_take(T0));
    assert_eq!(b.available(T0), 0);
    assert_eq!(b.time_until_available(T0 + 10_000), 1_000);
    assert!(b.try_take(T0 + 11_000));
}

#[test]
fn a_throttle_empties_the_bucket() {
    let mut b = TokenBucket::create_stage(T0);
    assert_eq!(b.refill_per_second(), 5.0);
    b.drain_on_throttle(T0);
    assert_eq!(b.available(T0), 0);
    assert_eq!(b.time_until_available(T0), 200);
}

#[test]
fn a_bucket_survives_serialization() {
    let mut b = TokenBucket::new(5, 5.0, T0);
    b.try_take_n(3, T0);
    let back: TokenBucket = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
    assert_eq!(back, b);
    assert_eq!(back.available(T0), 2);
}

proptest! {
    /// Over any run of takes, the tokens granted never exceed the burst plus the rate times
    /// the time elapsed.
    #[test]
    fn a_bucket_never_grants_more_than_its_budget(
        burst in 1u32..10,
        rate_milli in 100u32..20_000,
        steps in prop::collection::vec((0u64..700, 1u32..4), 1..200),
    ) {
        let rate = f64::from(rate_milli) / 1000.0;
        let mut b = TokenBucket::new(burst, rate, T0);
        let mut now = T0;
        let mut granted: u64 = 0;
        for (dt, n) in steps {
            now += dt;
            let wait = b.time_until_available(now);
            let ok = b.try_take_n(n, now);
            if ok {
                granted += u64::from(n);
            }
            if wait == 0 {
                prop_assert!(b.available(now) > 0 || ok, "said available but was not");
            } else {
                prop_assert!(!ok, "granted while it said to wait");
            }
            let budget = f64::from(burst) + rate * (now - T0) as f64 / 1000.0;
            prop_assert!(granted as f64 <= budget + 1e-9, "granted {} > budget {}", granted, budget);
        }
    }
}

// ----- scale up -----

fn summary(capacity: u32) -> LoadSummary {
    LoadSummary {
        capacity,
        ..LoadSummary::default()
    }
}

fn cfg(headroom_seats: u32, min: u32, max: u32) -> PolicyConfig {
    PolicyConfig {
        headroom_seats,
        min_stages: min,
        max_stages: max,
        scale_down_grace_ms: 5 * MIN,
        delete_grace_ms: MIN,
        ..PolicyConfig::default()
    }
}

#[test]
fn no_stage_is_created_while_headroom_is_covered() {
    let load = LoadSummary {
        live: 1,
        free_live_seats: 25,
        ..summary(50)
    };
    let up = scale_up(&cfg(25, 1, 10), &load);
    assert_eq!(
        up,
        ScaleUp {
            create: 0,
            wanted: 0,
            limited_by: None
        }
    );
}

#[test]
fn stages_are_created_ahead_of_need_before_anyone_is_refused() {
    // 24 free seats on live, 0 on warming: below the 25-seat headroom; one stage covers it.
    let load = LoadSummary {
        live: 1,
        free_live_seats: 24,
        viewers: 26,
        ..summary(50)
    };
    let up = scale_up(&cfg(25, 1, 10), &load);
    assert_eq!(up.create, 1);
    assert_eq!(up.wanted, 1);
}

#[test]
fn stages_being_created_count_toward_headroom() {
    let load = LoadSummary {
        live: 1,
        creating: 1,
        creating_seats: 50,
        free_live_seats: 0,
        ..summary(50)
    };
    assert_eq!(scale_up(&cfg(25, 1, 10), &load).create, 0);
    // A headroom of 120 seats with 50 in flight needs two more stages of 50.
    assert_eq!(scale_up(&cfg(120, 1, 10), &load).create, 2);
}

#[test]
fn warming_seats_count_toward_headroom() {
    let load = LoadSummary {
        live: 1,
        warming: 1,
        free_warming_seats: 30,
        ..summary(50)
    };
    assert_eq!(scale_up(&cfg(25, 1, 10), &load).create, 0);
}

#[test]
fn scale_up_stops_at_max_stages() {
    let load = LoadSummary {
        live: 2,
        draining: 1,
        ..summary(10)
    };
    let up = scale_up(&cfg(35, 1, 4), &load);
    assert_eq!(up.wanted, 4);
    assert_eq!(up.create, 1, "4 max minus 3 existing (draining ones count)");
    assert_eq!(up.limited_by, Some(ScaleLimit::MaxStages));
}

#[test]
fn scale_up_keeps_a_bounded_number_of_creates_in_flight() {
    let load = LoadSummary {
        live: 1,
        ..summary(10)
    };
    let policy = PolicyConfig {
        max_creating: 5,
        ..cfg(80, 1, 100)
    };
    let up = scale_up(&policy, &load);
    assert_eq!(up.wanted, 8);
    assert_eq!(up.create, 5);
    assert_eq!(up.limited_by, Some(ScaleLimit::InFlight));
    // With those 5 in flight, the 3 more it wants wait until some are done.
    let again = LoadSummary {
        creating: 5,
        creating_seats: 50,
        ..load
    };
    let up = scale_up(&policy, &again);
    assert_eq!((up.wanted, up.create), (3, 0));
    assert_eq!(up.limited_by, Some(ScaleLimit::InFlight));
    let fewer = LoadSummary {
        creating: 4,
        creating_seats: 40,
        ..load
    };
    assert_eq!(scale_up(&policy, &fewer).create, 1);
}

#[test]
fn an_empty_pool_gets_its_minimum_stages() {
    let up = scale_up(&cfg(1, 3, 10), &summary(50));
    assert_eq!(up.create, 3);
}

// ----- scale down -----

struct Snap {
    pool: Pool,
}

fn arn(id: StageId) -> String {
    format!("arn:aws:ivs:us-east-1:123456789012:stage/st{:010}", id.0)
}

impl Snap {
    fn new(capacity: u32, min: u32) -> Snap {
        let settings = PoolSettings {
            capacity,
            min_stages: min,
            max_stages: 100,
            lease_ttl_ms: 3_600_000,
            fanout: FanoutMode::MultiPublish,
            ..PoolSettings::default()
        };
        Snap {
            pool: Pool::new("default", settings, T0).unwrap(),
        }
    }

    fn live(&mut self, at: Millis) -> StageId {
        let id = self.pool.begin_create(at).unwrap().stage;
        self.pool
            .created(id, &arn(id), StageEndpoints::default(), at)
            .unwrap();
        self.pool.mark_live(id, "host", at).unwrap();
        id
    }

    fn viewers(&mut self, n: u64, at: Millis) {
        for v in 0..n {
            let mut r = [0u8; LEASE_RANDOM_BYTES];
            r[..8].copy_from_slice(&(v + at).to_le_bytes());
            self.pool.assign(&format!("v{v}-{at}"), at, &r).unwrap();
        }
    }

    fn view(&self, now: Millis) -> Snapshot {
        self.pool.snapshot_view(now)
    }
}

#[test]
fn empty_stages_beyond_the_minimum_are_drained_after_the_grace() {
    let mut s = Snap::new(10, 1);
    let a = s.live(T0);
    let b = s.live(T0);
    let c = s.live(T0);
    s.viewers(1, T0);
    assert_eq!(s.pool.stage(a).unwrap().load, 1);
    let policy = cfg(5, 1, 100);
    // Before the grace: nothing.
    let early = T0 + 5 * MIN - 1;
    assert!(scale_down(&policy, &s.view(early), early).is_empty());
    // After it: the newest empty ones first; a keeps 9 free seats, above the headroom of 5.
    let now = T0 + 5 * MIN;
    assert_eq!(
        scale_down(&policy, &s.view(now), now),
        vec![
            ScaleAction::Drain { stage_arn: arn(c) },
            ScaleAction::Drain { stage_arn: arn(b) },
        ]
    );
}

#[test]
fn scale_down_keeps_the_headroom_so_it_does_not_oscillate() {
    let mut s = Snap::new(10, 1);
    s.live(T0);
    s.live(T0);
    s.live(T0);
    // 8 viewers over 3 stages of 10: 3, 3, 2; every stage holds viewers: nothing to drain
    // for being empty. Without consolidation nothing happens; with it, the least filled
    // stage's 2 viewers move into the others (12 seats stay free, above 5 + the margin).
    s.viewers(8, T0);
    let now = T0 + 10 * MIN;
    let off = PolicyConfig {
        consolidate: false,
        ..cfg(5, 1, 100)
    };
    assert!(scale_down(&off, &s.view(now), now).is_empty());
    let least = s
        .pool
        .stages()
        .min_by_key(|st| (st.load, std::cmp::Reverse(st.id)))
        .unwrap()
        .id;
    assert_eq!(s.pool.stage(least).unwrap().load, 2);
    assert_eq!(
        scale_down(&cfg(5, 1, 100), &s.view(now), now),
        vec![ScaleAction::Consolidate {
            stage_arn: arn(least)
        }]
    );
    // Headroom 12: the 12 free seats would cover it but not its margin of one.
    assert!(scale_down(&cfg(12, 1, 100), &s.view(now), now).is_empty());

    let mut s = Snap::new(10, 1);
    let a = s.live(T0);
    let b = s.live(T0);
    s.viewers(8, T0);
    assert_eq!(
        (s.pool.stage(a).unwrap().load, s.pool.stage(b).unwrap().load),
        (4, 4)
    );
    let newest = s.live(T0);
    // Free: 6 + 6 + 10 = 22. Headroom 15: draining the empty stage leaves 12 < 15: keep it.
    assert!(scale_down(&cfg(15, 1, 100), &s.view(now), now).is_empty());
    // Headroom 12: 12 ≥ 12, drain it.
    assert_eq!(
        scale_down(&cfg(12, 1, 100), &s.view(now), now),
        vec![ScaleAction::Drain {
            stage_arn: arn(newest)
        }]
    );
}

#[test]
fn scale_down_respects_min_stages_and_the_last_live_stage() {
    let mut s = Snap::new(10, 2);
    s.live(T0);
    s.live(T0);
    let now = T0 + 10 * MIN;
    assert!(
        scale_down(&cfg(1, 2, 100), &s.view(now), now).is_empty(),
        "two stages, minimum two"
    );
    let mut s = Snap::new(10, 1);
    s.live(T0);
    assert!(
        scale_down(&cfg(1, 1, 100), &s.view(now), now).is_empty(),
        "the last live stage"
    );
    // A warming stage and one live: the warming one may go, the live one stays.
    let mut s = Snap::new(10, 1);
    s.live(T0);
    let w = s.pool.begin_create(T0).unwrap().stage;
    s.pool
        .created(w, &arn(w), StageEndpoints::default(), T0)
        .unwrap();
    assert_eq!(
        scale_down(&cfg(1, 1, 100), &s.view(now), now),
        vec![ScaleAction::Drain { stage_arn: arn(w) }]
    );
}

#[test]
fn drained_stages_are_deleted_only_when_empty_after_the_grace() {
    let mut s = Snap::new(10, 1);
    let a = s.live(T0);
    let d = s.live(T0);
    s.viewers(2, T0); // one on a, one on d
    let b = s.live(T0);
    let c = s.live(T0);
    // b: drained, empty, host gone. c: drained, host still publishing (an upload nobody
    // watches: it goes too). d: drained, a viewer stays.
    s.pool.host_unpublished(b, T0).unwrap();
    s.pool.drain(b, T0).unwrap();
    s.pool.drain(c, T0).unwrap();
    s.pool.host_unpublished(d, T0).unwrap();
    s.pool.drain(d, T0).unwrap();
    assert_eq!(s.pool.stage(d).unwrap().load, 1);
    assert_eq!(s.pool.stage(a).unwrap().load, 1);
    let c_ = cfg(1, 1, 100);
    let early = T0 + MIN - 1;
    assert!(scale_down(&c_, &s.view(early), early).is_empty());
    let now = T0 + MIN;
    // b and c go; d keeps its viewer; a is the last live stage and is not drained either.
    assert_eq!(
        scale_down(&c_, &s.view(now), now),
        vec![
            ScaleAction::Delete { stage_arn: arn(b) },
            ScaleAction::Delete { stage_arn: arn(c) },
        ]
    );
}

#[test]
fn a_draining_stage_with_viewers_is_never_deleted() {
    let mut s = Snap::new(10, 1);
    let a = s.live(T0);
    let b = s.live(T0);
    s.viewers(2, T0); // one on a, one on b
    s.pool.host_unpublished(b, T0).unwrap();
    s.pool.drain(b, T0).unwrap();
    assert_eq!(s.pool.stage(b).unwrap().load, 1);
    let now = T0 + 100 * MIN;
    let actions = scale_down(&cfg(1, 1, 100), &s.view(now), now);
    assert!(
        !actions.contains(&ScaleAction::Delete { stage_arn: arn(b) }),
        "{actions:?}"
    );
    assert!(!actions.contains(&ScaleAction::Drain { stage_arn: arn(a) }));
}

#[test]
fn an_origin_feeding_replicas_is_not_drained() {
    let settings = PoolSettings {
        capacity: 10,
        min_stages: 1,
        max_stages: 100,
        lease_ttl_ms: 60_000,
        fanout: FanoutMode::Replicate,
        ..PoolSettings::default()
    };
    let mut pool = Pool::new("default", settings, T0).unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = pool.begin_create(T0).unwrap().stage;
        pool.created(id, &arn(id), StageEndpoints::default(), T0)
            .unwrap();
        ids.push(id);
    }
    pool.mark_live(ids[0], "host", T0).unwrap();
    let obs = Observation {
        observed_at: T0,
        stages: ids[1..]
            .iter()
            .map(|id| StageObservation {
                stage_arn: arn(*id),
                publishers: vec!["host".into()],
                subscribers: vec![],
            })
            .collect(),
        ..Default::default()
    };
    pool.observe(&obs, T0);
    let now = T0 + 100 * MIN;
    let actions = scale_down(&cfg(1, 1, 100), &pool.snapshot_view(now), now);
    // Both replicas are drained (newest first); the origin is kept as the last live one and
    // because it feeds them.
    assert_eq!(
        actions,
        vec![
            ScaleAction::Drain {
                stage_arn: arn(ids[2])
            },
            ScaleAction::Drain {
                stage_arn: arn(ids[1])
            },
        ]
    );
    // With min 3 none goes.
    assert!(scale_down(&cfg(1, 3, 100), &pool.snapshot_view(now), now).is_empty());
}

#[test]
fn stale_create_intents_are_reported() {
    let mut s = Snap::new(10, 1);
    s.live(T0);
    let old = s.pool.begin_create(T0).unwrap().stage;
    let young = s.pool.begin_create(T0 + 50_000).unwrap().stage;
    let c = PolicyConfig::default();
    assert_eq!(c.creating_timeout_ms, 60_000);
    assert_eq!(
        stale_creates(&c, &s.view(T0 + 60_000), T0 + 60_000),
        vec![old]
    );
    assert_eq!(
        stale_creates(&c, &s.view(T0 + 110_000), T0 + 110_000),
        vec![old, young]
    );
}

#[test]
fn abandoned_create_intents_are_looked_up_after_a_short_settle() {
    let mut s = Snap::new(10, 1);
    s.live(T0);
    // Made by an instance that died; this one loaded the pool at T0 + 5 s.
    let before_load = s.pool.begin_create(T0 + 1_000).unwrap().stage;
    let loaded_at = T0 + 5_000;
    // Made by this instance: one still calling IVS, one whose lookup failed at T0 + 8 s.
    let calling = s.pool.begin_create(T0 + 6_000).unwrap().stage;
    let lookup_failed = s.pool.begin_create(T0 + 7_000).unwrap().stage;
    let failed = BTreeMap::from([(lookup_failed, T0 + 8_000)]);
    let at = |s: &Snap, t: Millis| abandoned_creates(&s.view(t), loaded_at, &failed, t);
    assert!(at(&s, T0 + 14_999).is_empty(), "nothing before the settle");
    assert_eq!(at(&s, T0 + 15_000), vec![before_load]);
    assert_eq!(at(&s, T0 + 18_000), vec![before_load, lookup_failed]);
    // Long before `creating_timeout_ms`; the intent still calling IVS is never among them.
    assert!(!at(&s, T0 + 59_000).contains(&calling));
    assert!(stale_creates(&PolicyConfig::default(), &s.view(T0 + 18_000), T0 + 18_000).is_empty());
    // A resolved intent is no longer reported.
    let arn = "arn:aws:ivs:us-east-1:123456789012:stage/abandonedAAA";
    s.pool
        .created(before_load, arn, StageEndpoints::default(), T0 + 19_000)
        .unwrap();
    assert_eq!(at(&s, T0 + 19_000), vec![lookup_failed]);
}

#[test]
fn scale_actions_serialize_as_the_actions_route_body() {
    let drain = ScaleAction::Drain {
        stage_arn: "arn:x".into(),
    };
    assert_eq!(
        serde_json::to_value(&drain).unwrap(),
        serde_json::json!({"action":"drain","stageArn":"arn:x"})
    );
    assert_eq!(
        serde_json::to_value(ScaleAction::Create).unwrap(),
        serde_json::json!({"action":"create"})
    );
    let del: ScaleAction =
        serde_json::from_str(r#"{"action":"delete","stageArn":"arn:y"}"#).unwrap();
    assert_eq!(
        del,
        ScaleAction::Delete {
            stage_arn: "arn:y".into()
        }
    );
}

// ----- orphans -----

const DEPLOYMENT: &str = "local";

fn ivs_stage(arn: &str, name: &str, managed: bool, created_at: Option<Millis>) -> IvsStage {
    let mut tags = BTreeMap::new();
    if managed {
        tags.insert(TAG_MANAGED.to_string(), "true".to_string());
        tags.insert(TAG_BROADCAST.to_string(), "default".to_string());
        tags.insert(TAG_DEPLOYMENT.to_string(), DEPLOYMENT.to_string());
    }
    IvsStage {
        arn: arn.into(),
        name: Some(name.into()),
        tags,
        created_at,
    }
}

#[test]
fn orphans_are_managed_unknown_and_older_than_the_grace() {
    let mut s = Snap::new(10, 1);
    let known = s.live(T0);
    let creating = s.pool.begin_create(T0).unwrap();
    let known_stages = KnownStages::from_snapshots([&s.view(T0)]);
    let grace = 10 * MIN;
    let list = vec![
        ivs_stage(&arn(known), "default-1", true, Some(T0 - 100 * MIN)),
        // Created in IVS, but the pool has not heard back yet: known by name.
        ivs_stage("arn:new", &creating.name, true, Some(T0 - 100 * MIN)),
        ivs_stage("arn:orphan", "default-99", true, Some(T0 - 11 * MIN)),
        ivs_stage("arn:young", "default-98", true, Some(T0 - 9 * MIN)),
        ivs_stage("arn:foreign", "theirs", false, Some(T0 - 100 * MIN)),
    ];
    let orphans = find_orphans(&list, &known_stages, DEPLOYMENT, T0, grace);
    assert_eq!(
        orphans,
        vec![Orphan {
            arn: "arn:orphan".into(),
            broadcast: Some("default".into()),
            age_ms: 11 * MIN
        }]
    );
}

#[test]
fn the_tracker_ages_stages_without_a_creation_time_from_first_sight() {
    let known = KnownStages::default();
    let mut t = OrphanTracker::new();
    let list = vec![ivs_stage("arn:a", "x-1", true, None)];
    assert!(t.find(&list, &known, DEPLOYMENT, T0, 10 * MIN).is_empty());
    assert!(t
        .find(&list, &known, DEPLOYMENT, T0 + 9 * MIN, 10 * MIN)
        .is_empty());
    let found = t.find(&list, &known, DEPLOYMENT, T0 + 10 * MIN, 10 * MIN);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].age_ms, 10 * MIN);
    // A stage that disappears and comes back starts over.
    assert!(t
        .find(&[], &known, DEPLOYMENT, T0 + 11 * MIN, 10 * MIN)
        .is_empty());
    assert!(t
        .find(&list, &known, DEPLOYMENT, T0 + 12 * MIN, 10 * MIN)
        .is_empty());
    // The stateless check leaves stages of unknown age alone.
    assert!(find_orphans(&list, &known, DEPLOYMENT, T0 + 100 * MIN, 10 * MIN).is_empty());
    // A stage that becomes known stops being tracked.
    let mut k = KnownStages::default();
    k.arns.insert("arn:a".into());
    assert!(t
        .find(&list, &k, DEPLOYMENT, T0 + 100 * MIN, 10 * MIN)
        .is_empty());
}

#[test]
fn only_this_deployments_stages_are_candidates() {
    let known = KnownStages::default();
    let old = Some(T0 - 100 * MIN);
    let mine = ivs_stage("arn:mine", "default-1", true, old);
    let mut theirs = ivs_stage("arn:theirs", "default-1", true, old);
    theirs
        .tags
        .insert(TAG_DEPLOYMENT.to_string(), "staging".to_string());
    // Made before the deployment tag existed: nobody can tell whose it is, so it is left alone.
    let mut untagged = ivs_stage("arn:untagged", "default-2", true, old);
    untagged.tags.remove(TAG_DEPLOYMENT);
    // The deployment tag without the managed tag is not stagefan's.
    let mut unmanaged = ivs_stage("arn:unmanaged", "default-3", true, old);
    unmanaged.tags.remove(TAG_MANAGED);
    let list = vec![mine, theirs, untagged, unmanaged];
    let arns = |o: Vec<Orphan>| o.into_iter().map(|o| o.arn).collect::<Vec<_>>();
    assert_eq!(
        arns(find_orphans(&list, &known, DEPLOYMENT, T0, 10 * MIN)),
        ["arn:mine"]
    );
    assert_eq!(
        arns(find_orphans(&list, &known, "staging", T0, 10 * MIN)),
        ["arn:theirs"]
    );
    let mut t = OrphanTracker::new();
    assert_eq!(arns(t.find(&list, &known, DEPLOYMENT, T0, 0)), ["arn:mine"]);
    assert!(find_orphans(&list, &known, "prod", T0, 0).is_empty());
}

#[test]
fn a_pools_stages_carry_its_deployment_and_its_snapshot_its_policy() {
    let settings = PoolSettings {
        deployment: "eu-prod".into(),
        headroom_seats: 7,
        scale_down_grace_ms: 11_000,
        delete_grace_ms: 13_000,
        min_stages: 2,
        max_stages: 9,
        ..PoolSettings::default()
    };
    let mut pool = Pool::new("b", settings.clone(), T0).unwrap();
    let intent = pool.begin_create(T0).unwrap();
    assert_eq!(intent.tags.get(TAG_DEPLOYMENT).unwrap(), "eu-prod");
    assert_eq!(intent.tags.get(TAG_MANAGED).unwrap(), "true");
    let snap = pool.snapshot(T0);
    assert_eq!(snap.deployment, "eu-prod");
    // The monitor's policy (from the snapshot) is the pool's own (from its settings).
    let from_snapshot = PolicyConfig::of_snapshot(&snap);
    assert_eq!(from_snapshot, PolicyConfig::for_pool(&settings));
    assert_eq!(from_snapshot.headroom_seats, 7);
    assert_eq!(from_snapshot.scale_down_grace_ms, 11_000);
    assert_eq!(from_snapshot.delete_grace_ms, 13_000);
    assert_eq!((from_snapshot.min_stages, from_snapshot.max_stages), (2, 9));
    // And it survives the JSON the edge sends.
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["deployment"], "eu-prod");
    assert_eq!(json["headroomSeats"], 7);
    let back: Snapshot = serde_json::from_value(json).unwrap();
    assert_eq!(PolicyConfig::of_snapshot(&back), from_snapshot);
}

#[test]
fn ivs_stage_json_parses() {
    let st: IvsStage =
        serde_json::from_str(r#"{"arn":"arn:z","name":"n","tags":{"stagefan:managed":"true"}}"#)
            .unwrap();
    assert!(st.is_managed());
    assert_eq!(st.created_at, None);
    let st: IvsStage = serde_json::from_str(r#"{"arn":"arn:z"}"#).unwrap();
    assert!(!st.is_managed());
}

// ----- the policy driving a pool -----

proptest! {
    /// Viewers arrive in bursts of up to 3 every 250 ms; the policy, run between bursts as the
    /// worker would, with a headroom of two bursts, means nobody is refused once the first
    /// stages exist, and the create budget holds.
    #[test]
    fn the_policy_keeps_ahead_of_a_steady_audience(
        capacity in 4u32..20,
        arrivals in prop::collection::vec(0u32..4, 10..120),
    ) {
        let settings = PoolSettings { capacity, min_stages: 1, max_stages: 1000, lease_ttl_ms: 3_600_000, fanout: FanoutMode::MultiPublish, ..PoolSettings::default() };
        let mut pool = Pool::new("default", settings, T0).unwrap();
        // Headroom of two bursts: what a round consumes before the stages it asked for are up.
        let c = PolicyConfig { headroom_seats: 6, ..PolicyConfig::default() };
        let mut now = T0;
        let mut creates: Vec<Millis> = Vec::new();
        let mut v = 0u64;
        for burst in arrivals {
            now += 250;
            // IVS answers creates from the previous round.
            let creating: Vec<StageId> = pool.stages().filter(|s| s.state == StageState::Creating).map(|s| s.id).collect();
            for id in creating {
                pool.created(id, &arn(id), StageEndpoints::default(), now).unwrap();
                pool.mark_live(id, "host", now).unwrap();
            }
            let up = scale_up(&c, &pool.load_summary());
            for _ in 0..up.create {
                pool.begin_create(now).unwrap();
                creates.push(now);
            }
            prop_assert!(pool.load_summary().creating <= c.max_creating, "too many creates in flight");
            for _ in 0..burst {
                v += 1;
                let mut r = [0u8; LEASE_RANDOM_BYTES];
                r[..8].copy_from_slice(&v.to_le_bytes());
                let res = pool.assign(&format!("v{v}"), now, &r);
                // At most 3 arrivals per 250 ms against a headroom of 6 seats: never refused
                // once the first stages exist (they are created in the first round).
                if now > T0 + 250 {
                    prop_assert!(res.is_ok(), "refused at {} viewers", pool.viewers());
                }
            }
        }
        // Only the stages the audience needed were made: one round's demand at most ahead.
        let stages = creates.len() as u64;
        prop_assert!(stages <= 1 + u64::from((pool.viewers() + 6).div_ceil(capacity)), "{} stages for {} viewers", stages, pool.viewers());
    }
}
