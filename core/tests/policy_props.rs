//! Property tests of scale-down and scale-up over random snapshots: the safety rules hold for
//! any pool the policy may be shown.

use proptest::prelude::*;
use stagefan_core::config::FanoutMode;
use stagefan_core::policy::*;
use stagefan_core::pool::*;

const NOW: Millis = 1_764_160_000_000;

fn state() -> impl Strategy<Value = StageState> {
    prop_oneof![
        Just(StageState::Creating),
        Just(StageState::Warming),
        Just(StageState::Live),
        Just(StageState::Draining),
        Just(StageState::Deleted),
    ]
}

/// One random stage: state, load, host flag, ages, and (replicate mode) an origin index.
fn stage() -> impl Strategy<Value = (StageState, u32, bool, u64, u64, Option<usize>)> {
    (
        state(),
        0u32..6,
        any::<bool>(),
        0u64..20 * 60_000,
        0u64..20 * 60_000,
        prop::option::of(0usize..8),
    )
}

fn snapshot(
    capacity: u32,
    min: u32,
    raw: Vec<(StageState, u32, bool, u64, u64, Option<usize>)>,
    recent_arrivals: u64,
) -> Snapshot {
    let arn = |i: usize| format!("arn:aws:ivs:us-east-1:123456789012:stage/p{i:011}");
    let n = raw.len();
    let stages: Vec<StageView> = raw
        .iter()
        .enumerate()
        .map(|(i, &(state, load, host, empty_age, drain_age, origin))| {
            let exists = !matches!(state, StageState::Creating | StageState::Deleted);
            let load = if exists && state != StageState::Deleted {
                load.min(capacity)
            } else {
                0
            };
            // An origin must be an older stage that is itself an origin (index 0 always is).
            let origin = origin
                .filter(|o| *o < i && *o < n)
                .filter(|o| raw[*o].5.is_none_or(|oo| oo >= *o));
            StageView {
                stage_arn: (state != StageState::Creating).then(|| arn(i)),
                id: StageId(i as u64 + 1),
                name: format!("default-{}", i + 1),
                state,
                load,
                capacity,
                created_at: NOW - 30 * 60_000,
                live_at: None,
                empty_since: (load == 0 && state != StageState::Deleted).then(|| NOW - empty_age),
                draining_since: (state == StageState::Draining).then(|| NOW - drain_age),
                delete_requested: false,
                host_participant_id: None,
                host_publishing: host && exists,
                origin_arn: origin.map(arn),
                meter: Default::default(),
            }
        })
        .collect();
    Snapshot {
        broadcast: "default".into(),
        capacity,
        fanout_mode: FanoutMode::MultiPublish,
        min_stages: min,
        max_stages: 100,
        deployment: "local".into(),
        headroom_seats: 1,
        scale_down_grace_ms: 300_000,
        delete_grace_ms: 300_000,
        viewers: stages.iter().map(|s| s.load).sum(),
        now: NOW,
        stages,
        stats: Stats::default(),
        quota: None,
        meter: Default::default(),
        prices: Default::default(),
        recent_arrivals,
        consolidate: true,
        saved: Default::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn scale_down_never_breaks_a_safety_rule(
        capacity in 1u32..6,
        min in 1u32..4,
        headroom in 1u32..12,
        raw in prop::collection::vec(stage(), 0..10),
        arrivals in 0u64..12,
    ) {
        let snap = snapshot(capacity, min, raw, arrivals);
        let cfg = PolicyConfig {
            headroom_seats: headroom,
            min_stages: min,
            max_stages: 100,
            scale_down_grace_ms: 5 * 60_000,
            delete_grace_ms: 5 * 60_000,
            ..PolicyConfig::default()
        };
        let actions = scale_down(&cfg, &snap, NOW);
        let by_arn = |a: &str| snap.stages.iter().find(|s| s.stage_arn.as_deref() == Some(a)).unwrap();
        let mut drained = Vec::new();
        let mut consolidated = Vec::new();
        for action in &actions {
            match action {
                ScaleAction::Delete { stage_arn } => {
                    let st = by_arn(stage_arn);
                    prop_assert_eq!(st.state, StageState::Draining);
                    prop_assert_eq!(st.load, 0, "delete with viewers");
                    prop_assert!(NOW - st.draining_since.unwrap() >= cfg.delete_grace_ms);
                }
                ScaleAction::Drain { stage_arn } => {
                    let st = by_arn(stage_arn);
                    prop_assert!(matches!(st.state, StageState::Warming | StageState::Live));
                    prop_assert_eq!(st.load, 0, "drain of a stage with viewers");
                    prop_assert!(NOW - st.empty_since.unwrap() >= cfg.scale_down_grace_ms);
                    drained.push(st);
                }
                ScaleAction::Consolidate { stage_arn } => {
                    let st = by_arn(stage_arn);
                    prop_assert!(matches!(st.state, StageState::Warming | StageState::Live));
                    prop_assert!(st.load > 0, "consolidation of an empty stage");
                    prop_assert!(arrivals <= u64::from(headroom / 2), "consolidated while viewers arrive");
                    consolidated.push(st);
                    drained.push(st);
                }
                ScaleAction::Create => prop_assert!(false, "scale_down never creates"),
            }
        }
        if !consolidated.is_empty() {
            // After the moves, the free seats still cover the headroom and its margin.
            let sum = LoadSummary::from_snapshot(&snap);
            let free = sum.free_live_seats + sum.free_warming_seats + sum.creating_seats;
            let freed: u64 = drained.iter().map(|s| u64::from(s.capacity)).sum();
            prop_assert!(
                free - freed >= u64::from(headroom) + consolidation_margin(capacity),
                "consolidated into the headroom"
            );
        }
        let active = snap.stages.iter().filter(|s| matches!(s.state, StageState::Warming | StageState::Live)).count();
        let live = snap.stages.iter().filter(|s| s.state == StageState::Live).count();
        let live_drained = drained.iter().filter(|s| s.state == StageState::Live).count();
        if !drained.is_empty() {
            prop_assert!(active - drained.len() >= min as usize, "drained below min_stages");
            prop_assert!(live == 0 || live_drained < live, "drained every live stage");
            let sum = LoadSummary::from_snapshot(&snap);
            let free = sum.free_live_seats + sum.free_warming_seats + sum.creating_seats;
            let freed: u64 = drained.iter().map(|s| u64::from(s.capacity)).sum();
            prop_assert!(free - freed >= u64::from(headroom), "drained into the headroom");
        }
        // No origin is drained while a replica it feeds stays active.
        for st in &drained {
            let arn = st.stage_arn.as_deref().unwrap();
            let feeds = snap.stages.iter().any(|r| {
                r.origin_arn.as_deref() == Some(arn)
                    && matches!(r.state, StageState::Warming | StageState::Live)
                    && !drained.iter().any(|d| d.stage_arn == r.stage_arn)
            });
            prop_assert!(!feeds, "drained an origin that feeds replicas");
        }
        // Applying the drains, the policy does not want to create a stage right back.
        let mut after = snap.clone();
        for st in after.stages.iter_mut() {
            if drained.iter().any(|d| d.stage_arn == st.stage_arn) {
                st.state = StageState::Draining;
            }
        }
        if !drained.is_empty() && consolidated.is_empty() {
            let up = scale_up(&cfg, &LoadSummary::from_snapshot(&after));
            prop_assert_eq!(up.create, 0, "scale-down then scale-up oscillation");
        }
    }

    #[test]
    fn scale_up_covers_the_headroom_within_its_limits(
        capacity in 1u32..60,
        headroom in 1u32..200,
        max in 1u32..30,
        raw in prop::collection::vec(stage(), 0..10),
        max_creating in 1u32..8,
    ) {
        let snap = snapshot(capacity, 1, raw, 0);
        let cfg = PolicyConfig { headroom_seats: headroom, min_stages: 1, max_stages: max, max_creating, ..PolicyConfig::default() };
        let load = LoadSummary::from_snapshot(&snap);
        let up = scale_up(&cfg, &load);
        prop_assert!(up.create <= up.wanted);
        prop_assert!(load.creating + up.create <= max_creating.max(load.creating), "more creates in flight than allowed");
        prop_assert!(load.existing() + up.create <= max.max(load.existing()), "above max_stages");
        let free = load.free_live_seats + load.free_warming_seats + load.creating_seats;
        if up.create == up.wanted {
            let after = free + u64::from(up.create) * u64::from(capacity);
            prop_assert!(after >= u64::from(headroom), "headroom not covered");
            prop_assert!(up.limited_by.is_none());
        } else {
            prop_assert!(up.limited_by.is_some());
        }
        if up.wanted > 0 {
            // Not one stage more than needed.
            let short = free + u64::from(up.wanted - 1) * u64::from(capacity);
            let serving = load.creating + load.warming + load.live;
            prop_assert!(short < u64::from(headroom) || serving + up.wanted - 1 < cfg.min_stages);
        }
    }
}
