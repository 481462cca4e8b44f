//! The monitor against a scripted IVS and a scripted edge (real HTTP servers on port 0), with
//! tokio's clock paused: the budget, backoff, round-robin coverage, the scale-down policy,
//! orphan collection, observations and drift, and the metrics they produce.

mod common;

use std::time::Duration;

use common::*;
use stagefan_core::policy::ScaleAction;
use stagefan_core::pool::StageState;
use stagefan_monitor::metrics::{ActionKind, Outcome};
use tokio::time::Instant;

/// Runs rounds back to back as the loop's ticker would, for `total` of virtual time.
async fn run_for(h: &mut Harness, poll: Duration, total: Duration) -> usize {
    let end = Instant::now() + total;
    let mut rounds = 0;
    while Instant::now() < end {
        let next = Instant::now() + poll;
        h.poller.round().await;
        rounds += 1;
        tokio::time::sleep_until(next).await;
    }
    rounds
}

fn times(calls: &[Call]) -> Vec<Instant> {
    calls.iter().map(|c| c.at).collect()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_stages_are_covered_round_robin_within_the_budget() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let mut stages = Vec::new();
    for n in 0..1000 {
        let a = arn(&stage_id(n));
        ivs.add_stage(&a, true, Some("big"));
        stages.push(stage(n as u64, &a, StageState::Live, 0, 50));
    }
    ivs.set_participants(&arn(&stage_id(7)), 1, 3);
    edge.put_pool(snapshot("big", 1, stages));
    let poll = Duration::from_secs(5);
    let mut h = harness(ivs.clone(), edge.clone(), 2.0, settings(poll)).await;
    h.edge.with_pool("big", |p, _| {
        for s in &mut p.stages {
            s.empty_since = None; // keep the policy out of this test
        }
    });
    // The listing (10 pages of 100 at 1.8/s) shows which stages have a session; only those
    // cost a ListParticipants, and only stages not listed yet a GetStage.
    run_for(&mut h, poll, Duration::from_secs(60)).await;
    for op in ["ListStages", "GetStage", "ListParticipants"] {
        let calls = h.ivs.calls_of(op);
        assert!(!calls.is_empty(), "{op} was called");
        assert!(
            max_per_second(&times(&calls)) <= 2,
            "{op}: {} calls in one second",
            max_per_second(&times(&calls))
        );
        assert!(calls.iter().all(|c| c.status == 200), "{op}: all answered");
    }
    let observed: std::collections::HashSet<String> = h
        .edge
        .observations()
        .into_iter()
        .flat_map(|(_, o)| o.stages)
        .map(|s| s.stage_arn)
        .collect();
    assert_eq!(observed.len(), 1000, "every stage observed within a minute");
    let get = h.ivs.calls_of("GetStage");
    let first_pass_done = h.ivs.calls_of("ListStages")[9].at;
    assert!(
        get.iter().all(|c| c.at <= first_pass_done + poll),
        "GetStage only for stages the first listing pass had not shown yet"
    );
    assert!(get.len() <= 25, "{} GetStage calls", get.len());
    // Stage 7 (the one with a session) is read every round.
    let lp = h.ivs.calls_of("ListParticipants");
    assert!(lp.len() >= 10, "{} ListParticipants calls", lp.len());
    assert!(lp
        .iter()
        .all(|c| c.arn.as_deref() == Some(arn(&stage_id(7)).as_str())));
    assert_eq!(h.ivs.0.lock().unwrap().bad_signatures, 0);
    let text = h.metrics.encode();
    assert_eq!(
        series(&text, "stagefan_ivs_stages{region=\"us-east-1\"}"),
        Some(1000.0)
    );
    assert_eq!(
        series(
            &text,
            "stagefan_ivs_stage_subscribers{broadcast=\"big\",region=\"us-east-1\",stage=\"st0000000007\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        series(
            &text,
            "stagefan_ivs_budget_requests_per_second{operation=\"GetStage\",region=\"us-east-1\"}"
        ),
        Some(2.0)
    );
    assert!(
        series(
            &text,
            "stagefan_ivs_deferred_calls_total{operation=\"GetStage\",region=\"us-east-1\"}"
        )
        .unwrap()
            > 0.0
    );
    // Observations reached the pool with the participants IVS listed.
    let seen = h
        .edge
        .observations()
        .into_iter()
        .flat_map(|(_, o)| o.stages)
        .find(|s| s.stage_arn == arn(&stage_id(7)))
        .expect("stage 7 observed");
    assert_eq!(seen.publishers, vec!["host0".to_string()]);
    assert_eq!(seen.subscribers.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn throttling_and_faults_slow_the_monitor_down_but_never_stop_it() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let mut stages = Vec::new();
    for n in 0..20 {
        let a = arn(&stage_id(n));
        ivs.add_stage(&a, true, Some("b"));
        ivs.set_participants(&a, 1, 2);
        stages.push(stage(n as u64, &a, StageState::Live, 2, 50));
    }
    edge.put_pool(snapshot("b", 1, stages));
    ivs.script("ListParticipants", &[429, 429, 429, 500]);
    ivs.script("GetStage", &[503]);
    ivs.script("ListStages", &[429]);
    let poll = Duration::from_secs(2);
    let mut h = harness(ivs, edge, 2.0, settings(poll)).await;
    run_for(&mut h, poll, Duration::from_secs(120)).await;

    let get = h.ivs.calls_of("ListParticipants");
    // After each pushed-back call the next one waits for the backoff: 0.5-1 s, then 1-2 s,
    // 2-4 s, 4-8 s (jittered doubling).
    let gaps: Vec<Duration> = get.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (i, min) in [500u64, 1000, 2000, 4000].into_iter().enumerate() {
        assert_eq!(get[i].status, if i < 3 { 429 } else { 500 });
        assert!(
            gaps[i] >= Duration::from_millis(min),
            "gap {i}: {:?}",
            gaps[i]
        );
    }
    assert!(max_per_second(&times(&get)) <= 2);
    // It recovered: every stage got sampled despite the pushback.
    let ok: std::collections::HashSet<_> = get
        .iter()
        .filter(|c| c.status == 200)
        .filter_map(|c| c.arn.clone())
        .collect();
    assert_eq!(ok.len(), 20);
    let text = h.metrics.encode();
    assert_eq!(
        series(
            &text,
            "stagefan_ivs_requests_total{operation=\"ListParticipants\",region=\"us-east-1\",status=\"429\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        series(
            &text,
            "stagefan_ivs_requests_total{operation=\"ListParticipants\",region=\"us-east-1\",status=\"500\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &text,
            "stagefan_ivs_requests_total{operation=\"GetStage\",region=\"us-east-1\",status=\"503\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            &text,
            "stagefan_ivs_requests_total{operation=\"ListStages\",region=\"us-east-1\",status=\"429\"}"
        ),
        Some(1.0)
    );
    assert!(series(&text, "stagefan_ivs_stages{region=\"us-east-1\"}").is_some_and(|v| v == 20.0));
    assert_eq!(series(&text, "stagefan_round_success"), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn idle_stages_are_drained_then_deleted_after_the_grace_and_busy_ones_never() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let busy = arn("busy00000001");
    let idle = arn("idle00000001");
    let hosted = arn("host00000001");
    for a in [&busy, &idle, &hosted] {
        ivs.add_stage(a, true, Some("b"));
    }
    ivs.set_participants(&busy, 1, 4);
    ivs.set_participants(&hosted, 1, 0);
    let mut s_busy = stage(1, &busy, StageState::Live, 4, 50);
    s_busy.host_publishing = true;
    let mut s_hosted = stage(2, &hosted, StageState::Live, 0, 50);
    s_hosted.host_publishing = true;
    let s_idle = stage(3, &idle, StageState::Live, 0, 50);
    edge.put_pool(snapshot("b", 1, vec![s_busy, s_hosted, s_idle]));
    let t0 = edge.now_ms();
    edge.with_pool("b", |p, _| {
        for s in &mut p.stages {
            if s.load == 0 {
                s.empty_since = Some(t0);
            }
        }
    });
    let poll = Duration::from_secs(5);
    let mut h = harness(ivs.clone(), edge.clone(), 2.0, settings(poll)).await;
    let start = Instant::now();

    // Within the 60 s scale-down grace nothing happens.
    run_for(&mut h, poll, Duration::from_secs(55)).await;
    assert!(h.edge.actions().is_empty(), "{:?}", h.edge.actions());

    run_for(&mut h, poll, Duration::from_secs(100)).await;
    let actions = h.edge.actions();
    let drains: Vec<_> = actions
        .iter()
        .filter(|a| matches!(a.action, ScaleAction::Drain { .. }))
        .collect();
    assert!(!drains.is_empty());
    // The first drain: an empty stage, after the grace.
    let first = drains[0];
    assert!(first.at - start >= Duration::from_secs(60));
    assert_eq!(first.outcome, "done");
    let drained = match &first.action {
        ScaleAction::Drain { stage_arn } => stage_arn.clone(),
        _ => unreachable!(),
    };
    assert_ne!(drained, busy, "a stage with viewers is never drained");
    let deletes: Vec<_> = actions
        .iter()
        .filter(|a| matches!(a.action, ScaleAction::Delete { .. }) && a.outcome == "done")
        .collect();
    assert_eq!(deletes.len(), 2, "{actions:?}");
    for st in [&idle, &hosted] {
        let delete = ScaleAction::Delete {
            stage_arn: st.clone(),
        };
        assert!(deletes.iter().any(|d| d.action == delete), "{actions:?}");
    }
    assert!(
        deletes[0].at - first.at >= Duration::from_secs(20),
        "delete after the delete grace"
    );
    // Never an action on the busy stage.
    for a in &actions {
        match &a.action {
            ScaleAction::Drain { stage_arn }
            | ScaleAction::Consolidate { stage_arn }
            | ScaleAction::Delete { stage_arn } => {
                assert_ne!(stage_arn, &busy)
            }
            ScaleAction::Create => {}
        }
    }
    // The empty stage where the host still publishes is drained (no viewers are sent there)
    // and deleted after the grace like the other: nobody watches that upload, and the host
    // page leaves a stage the pool no longer lists. The busy stage stays live.
    let states: Vec<(String, StageState)> = h.edge.with_pool("b", |p, _| {
        p.stages
            .iter()
            .map(|s| (s.stage_arn.clone().unwrap(), s.state))
            .collect()
    });
    let state_of = |a: &str| states.iter().find(|(x, _)| x == a).unwrap().1;
    assert_eq!(state_of(&busy), StageState::Live);
    assert_eq!(state_of(&idle), StageState::Deleted);
    assert_eq!(state_of(&hosted), StageState::Deleted);
    assert_eq!(drained, idle, "newest empty stage first");
    assert_eq!(h.metrics.actions.count(ActionKind::Drain, Outcome::Done), 2);
    assert_eq!(
        h.metrics.actions.count(ActionKind::Delete, Outcome::Done),
        2
    );
    let text = h.metrics.encode();
    assert_eq!(
        series(
            &text,
            "stagefan_scaling_actions_total{kind=\"drain\",outcome=\"done\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        series(
            &text,
            "stagefan_stages{broadcast=\"b\",region=\"us-east-1\",state=\"deleted\"}"
        ),
        Some(2.0)
    );
}

#[tokio::test(start_paused = true)]
async fn orphans_are_collected_after_their_grace_and_nothing_else_is() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let known = arn("known0000001");
    let orphan = arn("orphan000001");
    let foreign = arn("foreign00001");
    ivs.add_stage(&known, true, Some("b"));
    ivs.add_stage(&orphan, true, Some("gone"));
    ivs.add_stage(&foreign, false, None);
    edge.put_pool(snapshot(
        "b",
        1,
        vec![stage(1, &known, StageState::Live, 0, 50)],
    ));
    let poll = Duration::from_secs(5);
    let mut h = harness(ivs.clone(), edge.clone(), 2.0, settings(poll)).await;
    let start = Instant::now();
    run_for(&mut h, poll, Duration::from_secs(110)).await;
    assert!(
        h.ivs.calls_of("DeleteStage").is_empty(),
        "not within the 120 s grace"
    );
    run_for(&mut h, poll, Duration::from_secs(40)).await;
    let deletes = h.ivs.calls_of("DeleteStage");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].arn.as_deref(), Some(orphan.as_str()));
    assert!(deletes[0].at - start >= Duration::from_secs(120));
    assert!(!h.ivs.has_stage(&orphan));
    assert!(h.ivs.has_stage(&known) && h.ivs.has_stage(&foreign));
    assert_eq!(
        h.metrics
            .actions
            .count(ActionKind::OrphanDelete, Outcome::Done),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn an_orphan_is_deleted_only_when_nobody_is_connected_and_only_if_it_is_ours() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let known = arn("known0000001");
    let empty = arn("empty0000001");
    let watched = arn("watched00001");
    let hosted = arn("hosted000001");
    let theirs = arn("theirs000001");
    let untagged = arn("untagged0001");
    ivs.add_stage(&known, true, Some("b"));
    // Unknown to every pool, of this deployment: only the one nobody is connected to goes.
    ivs.add_stage(&empty, true, Some("gone"));
    ivs.add_stage(&watched, true, Some("gone"));
    ivs.set_participants(&watched, 0, 3);
    ivs.add_stage(&hosted, true, Some("gone"));
    ivs.set_participants(&hosted, 1, 0);
    // Another deployment's stage on the same account, and one made before the tag existed.
    ivs.add_stage_of(&theirs, Some("staging"), Some("gone"));
    ivs.add_stage(&untagged, true, Some("gone"));
    ivs.0
        .lock()
        .unwrap()
        .stages
        .get_mut(&untagged)
        .unwrap()
        .tags
        .remove("stagefan:deployment");
    edge.put_pool(snapshot(
        "b",
        1,
        vec![stage(1, &known, StageState::Live, 0, 50)],
    ));
    let poll = Duration::from_secs(5);
    let mut h = harness(ivs.clone(), edge.clone(), 2.0, settings(poll)).await;
    run_for(&mut h, poll, Duration::from_secs(200)).await;

    let deletes = h.ivs.calls_of("DeleteStage");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].arn.as_deref(), Some(empty.as_str()));
    for a in [&known, &watched, &hosted, &theirs, &untagged] {
        assert!(h.ivs.has_stage(a), "{a} kept");
    }
    // Who is connected was asked right before deciding (ListParticipants, CONNECTED only),
    // every time a candidate came up, and never for another deployment's stage.
    let asked: Vec<Option<String>> = h
        .ivs
        .calls_of("ListParticipants")
        .into_iter()
        .map(|c| c.arn)
        .collect();
    assert!(asked.contains(&Some(watched.clone())) && asked.contains(&Some(hosted.clone())));
    assert!(!asked.contains(&Some(theirs.clone())));
    assert!(
        h.ivs
            .calls_of("GetStage")
            .iter()
            .all(|c| c.arn.as_deref() != Some(theirs.as_str())),
        "another deployment's stage is never looked at"
    );
    assert_eq!(
        h.metrics
            .actions
            .count(ActionKind::OrphanDelete, Outcome::Done),
        1
    );
    assert!(
        h.metrics
            .actions
            .count(ActionKind::OrphanDelete, Outcome::Refused)
            >= 2,
        "the kept ones are counted as refused"
    );
    // Once the viewers leave, the next pass collects that stage too.
    ivs.set_participants(&watched, 0, 0);
    run_for(&mut h, poll, Duration::from_secs(60)).await;
    assert!(!h.ivs.has_stage(&watched));
    assert!(h.ivs.has_stage(&hosted), "the host is still there");
}

#[tokio::test(start_paused = true)]
async fn nothing_is_collected_when_the_edges_pools_are_another_deployments() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let orphan = arn("orphan000001");
    ivs.add_stage(&orphan, true, Some("gone"));
    let mut snap = snapshot("b", 1, vec![]);
    snap.deployment = "staging".into();
    edge.put_pool(snap);
    let poll = Duration::from_secs(5);
    let mut h = harness(ivs.clone(), edge.clone(), 2.0, settings(poll)).await;
    run_for(&mut h, poll, Duration::from_secs(300)).await;
    assert!(h.ivs.calls_of("DeleteStage").is_empty());
    assert!(h.ivs.has_stage(&orphan));
}

#[tokio::test(start_paused = true)]
async fn a_pool_missing_from_the_edges_list_is_asked_and_keeps_its_stages() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let listed = arn("listed000001");
    let unlisted = arn("unlisted0001");
    let orphan = arn("orphan000001");
    ivs.add_stage(&listed, true, Some("b"));
    ivs.add_stage(&unlisted, true, Some("late"));
    // A stage tagged for that pool which the pool does not know is still an orphan.
    ivs.add_stage(&orphan, true, Some("late"));
    edge.put_pool(snapshot(
        "b",
        1,
        vec![stage(1, &listed, StageState::Live, 0, 50)],
    ));
    // The pool `late` exists, but its registration has not landed: the list lacks it.
    edge.put_pool(snapshot(
        "late",
        1,
        vec![stage(1, &unlisted, StageState::Warming, 0, 50)],
    ));
    edge.0.lock().unwrap().unlisted.insert("late".into());
    let poll = Duration::from_secs(5);
    let mut h = harness(ivs.clone(), edge.clone(), 2.0, settings(poll)).await;
    run_for(&mut h, poll, Duration::from_secs(200)).await;
    let deletes = h.ivs.calls_of("DeleteStage");
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(deletes[0].arn.as_deref(), Some(orphan.as_str()));
    assert!(h.ivs.has_stage(&unlisted) && h.ivs.has_stage(&listed));
}

#[tokio::test(start_paused = true)]
async fn orphan_deletes_take_their_slots_from_the_edges_budget_or_pace_themselves() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let orphans: Vec<String> = (0..12).map(|n| arn(&format!("orphan{n:06}"))).collect();
    for a in &orphans {
        ivs.add_stage(a, true, Some("gone"));
    }
    edge.put_pool(snapshot("b", 1, vec![]));
    // The pools take DeleteStage slots too: 4 of them, when the orphans' grace ends.
    let pools_deletes: Vec<Instant> = {
        let mut st = edge.0.lock().unwrap();
        let now = st.now_ms();
        let rate = stagefan_core::budget::SlotRate::new(5, 5, 100);
        (0..4)
            .map(|_| {
                let slot = st.schedule.reserve(&rate, now + 125_000);
                Instant::now() + Duration::from_millis(slot - now)
            })
            .collect()
    };
    let poll = Duration::from_secs(5);
    // The monitor's own budget allows 5 per second: only the edge's slots hold it back.
    let mut h = harness(ivs.clone(), edge.clone(), 5.0, settings(poll)).await;
    run_for(&mut h, poll, Duration::from_secs(180)).await;
    let deletes = h.ivs.calls_of("DeleteStage");
    assert_eq!(deletes.len(), 12, "{deletes:?}");
    let slots = edge.0.lock().unwrap().slots.clone();
    assert!(slots.iter().all(|s| s.operation == "DeleteStage"));
    // Never more deletes by any instant than slots granted up to it: each delete reached IVS
    // at or after a slot of its own, so the pools' 4 and the monitor's deletes together
    // never exceed 5 in any window of 1.1 s.
    let mut at: Vec<Instant> = deletes.iter().map(|c| c.at).collect();
    at.sort();
    for (n, call) in at.iter().enumerate() {
        let granted = slots.iter().filter(|s| s.at <= *call).count();
        assert!(granted > n, "delete {n} came before its slot");
    }
    let mut all = at.clone();
    all.extend(pools_deletes);
    all.sort();
    let mut windowed = 0;
    for (i, t) in all.iter().enumerate() {
        let n = all[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_millis(1100))
            .count();
        windowed = windowed.max(n);
    }
    assert!(windowed <= 5, "{windowed} deletes in 1.1 s");

    // The edge's budget unreachable: the deletes go on, paced by the monitor's own budget.
    let more: Vec<String> = (0..6).map(|n| arn(&format!("later0{n:05}"))).collect();
    for a in &more {
        ivs.add_stage(a, true, Some("gone"));
    }
    edge.0.lock().unwrap().budget_down = true;
    run_for(&mut h, poll, Duration::from_secs(180)).await;
    let later: Vec<Instant> = h
        .ivs
        .calls_of("DeleteStage")
        .into_iter()
        .filter(|c| more.iter().any(|m| c.arn.as_deref() == Some(m.as_str())))
        .map(|c| c.at)
        .collect();
    assert_eq!(later.len(), 6);
    assert!(max_per_second(&later) <= 5);
}

#[tokio::test(start_paused = true)]
async fn no_orphan_is_collected_while_a_pool_cannot_be_read() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let a1 = arn("poolone00001");
    let a2 = arn("pooltwo00001");
    ivs.add_stage(&a1, true, Some("one"));
    ivs.add_stage(&a2, true, Some("two"));
    edge.put_pool(snapshot(
        "one",
        1,
        vec![stage(1, &a1, StageState::Live, 0, 50)],
    ));
    edge.put_pool(snapshot(
        "two",
        1,
        vec![stage(1, &a2, StageState::Live, 0, 50)],
    ));
    edge.0.lock().unwrap().failing.insert("two".into());
    let poll = Duration::from_secs(5);
    let mut h = harness(ivs.clone(), edge.clone(), 2.0, settings(poll)).await;
    let r = h.poller.round().await;
    assert!(!r.ok);
    run_for(&mut h, poll, Duration::from_secs(300)).await;
    assert!(h.ivs.calls_of("DeleteStage").is_empty());
    assert!(h.ivs.has_stage(&a2));
    let text = h.metrics.encode();
    assert_eq!(series(&text, "stagefan_round_success"), Some(0.0));
    assert_eq!(
        series(
            &text,
            "stagefan_edge_requests_total{route=\"snapshot\",status=\"500\"}"
        ),
        Some(
            h.edge.0.lock().unwrap().failing.len() as f64
                * series(&text, "stagefan_rounds_total{outcome=\"failed\"}").unwrap()
        )
    );
}

#[tokio::test(start_paused = true)]
async fn pool_statistics_and_drift_are_exported_exactly() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let a = arn("stats0000001");
    let b = arn("stats0000002");
    ivs.add_stage(&a, true, Some("s"));
    ivs.add_stage(&b, true, Some("s"));
    ivs.set_participants(&a, 1, 30);
    ivs.set_participants(&b, 1, 7); // the pool says 9: drift -2
    let mut snap = snapshot(
        "s",
        1,
        vec![
            stage(1, &a, StageState::Live, 30, 50),
            stage(2, &b, StageState::Live, 9, 50),
        ],
    );
    snap.stats.joins = 137;
    snap.stats.refusals = 4;
    snap.stats.lease_expiries = 11;
    snap.stats.peak_viewers = 39;
    snap.stats.viewer_seconds = 5000;
    snap.stats.stages_created = 2;
    snap.meter = stagefan_core::meter::MeterView::new(
        stagefan_core::meter::ByKind {
            viewers: 5_000_400,
            hosts: 7_200_000,
            replicas: 0,
        },
        stagefan_core::meter::ByKind {
            viewers: 39,
            hosts: 2,
            replicas: 0,
        },
        &stagefan_core::meter::Prices::default(),
    );
    edge.put_pool(snap);
    let poll = Duration::from_secs(5);
    let mut h = harness(ivs, edge.clone(), 2.0, settings(poll)).await;
    let r = h.poller.round().await;
    assert!(r.ok);
    assert_eq!(r.sampled, 2);
    let text = h.metrics.encode();
    let get = |s: &str| series(&text, s);
    assert_eq!(
        get("stagefan_joins_total{broadcast=\"s\",region=\"us-east-1\"}"),
        Some(137.0)
    );
    assert_eq!(
        get("stagefan_refusals_total{broadcast=\"s\",region=\"us-east-1\"}"),
        Some(4.0)
    );
    assert_eq!(
        get("stagefan_lease_expiries_total{broadcast=\"s\",region=\"us-east-1\"}"),
        Some(11.0)
    );
    assert_eq!(
        get("stagefan_broadcast_peak_viewers{broadcast=\"s\",region=\"us-east-1\"}"),
        Some(39.0)
    );
    assert_eq!(
        get("stagefan_viewer_seconds_total{broadcast=\"s\",region=\"us-east-1\"}"),
        Some(5000.0)
    );
    assert_eq!(
        get("stagefan_stages_created_total{broadcast=\"s\",region=\"us-east-1\"}"),
        Some(2.0)
    );
    // The cost meter: 5,000.4 viewer-seconds and two host-hours; 41 participants now.
    assert_eq!(
        get("stagefan_participant_seconds_total{broadcast=\"s\",fanout=\"multi-publish\",kind=\"viewer\",region=\"us-east-1\"}"),
        Some(5000.0)
    );
    assert_eq!(
        get("stagefan_participant_seconds_total{broadcast=\"s\",fanout=\"multi-publish\",kind=\"host\",region=\"us-east-1\"}"),
        Some(7200.0)
    );
    assert_eq!(
        get("stagefan_broadcast_participants{broadcast=\"s\",kind=\"host\",region=\"us-east-1\"}"),
        Some(2.0)
    );
    // (5,000.4 s + 7,200 s) × 0.072 USD / 3,600 s = 0.244008 USD; 41 × 0.072 = 2.952 USD/h.
    assert_eq!(
        get("stagefan_broadcast_cost_usd{broadcast=\"s\",region=\"us-east-1\"}"),
        Some(0.244008)
    );
    assert_eq!(
        get("stagefan_broadcast_cost_usd_per_hour{broadcast=\"s\",region=\"us-east-1\"}"),
        Some(2.952)
    );
    assert_eq!(
        get("stagefan_broadcast_viewers{broadcast=\"s\",region=\"us-east-1\"}"),
        Some(39.0)
    );
    assert_eq!(
        get("stagefan_stage_viewers{broadcast=\"s\",region=\"us-east-1\",stage=\"stats0000001\"}"),
        Some(30.0)
    );
    assert_eq!(
        get("stagefan_stage_fill_ratio{broadcast=\"s\",region=\"us-east-1\",stage=\"stats0000001\"}"),
        Some(0.6)
    );
    assert_eq!(
        get("stagefan_stage_capacity{broadcast=\"s\",region=\"us-east-1\",stage=\"stats0000002\"}"),
        Some(50.0)
    );
    assert_eq!(
        get("stagefan_stages{broadcast=\"s\",region=\"us-east-1\",state=\"live\"}"),
        Some(2.0)
    );
    assert_eq!(
        get("stagefan_stage_drift_viewers{broadcast=\"s\",region=\"us-east-1\",stage=\"stats0000002\"}"),
        Some(-2.0)
    );
    assert_eq!(
        get("stagefan_stage_drift_viewers{broadcast=\"s\",region=\"us-east-1\",stage=\"stats0000001\"}"),
        Some(0.0)
    );
    assert_eq!(
        get("stagefan_drifting_stages{broadcast=\"s\",region=\"us-east-1\"}"),
        Some(1.0)
    );

    // The pool's counters move on; the metrics follow by exactly the difference.
    edge.with_pool("s", |p, _| {
        p.stats.joins = 200;
        p.stages[0].load = 20;
        p.viewers = 29;
    });
    tokio::time::sleep(poll).await;
    h.poller.round().await;
    let text = h.metrics.encode();
    assert_eq!(
        series(
            &text,
            "stagefan_joins_total{broadcast=\"s\",region=\"us-east-1\"}"
        ),
        Some(200.0)
    );
    assert_eq!(
        series(
            &text,
            "stagefan_broadcast_viewers{broadcast=\"s\",region=\"us-east-1\"}"
        ),
        Some(29.0)
    );

    // A stage that leaves the pool leaves the metrics.
    edge.with_pool("s", |p, _| {
        p.stages.remove(1);
    });
    tokio::time::sleep(poll).await;
    h.poller.round().await;
    let text = h.metrics.encode();
    assert_eq!(
        series(
            &text,
            "stagefan_stage_viewers{broadcast=\"s\",region=\"us-east-1\",stage=\"stats0000002\"}"
        ),
        None
    );
    assert_eq!(
        series(
            &text,
            "stagefan_stage_drift_viewers{broadcast=\"s\",region=\"us-east-1\",stage=\"stats0000002\"}"
        ),
        None
    );

    // A broadcast that goes away takes its gauges along (its counters stay).
    edge.0.lock().unwrap().pools.remove("s");
    tokio::time::sleep(poll).await;
    h.poller.round().await;
    let text = h.metrics.encode();
    assert_eq!(
        series(
            &text,
            "stagefan_broadcast_viewers{broadcast=\"s\",region=\"us-east-1\"}"
        ),
        None
    );
    assert_eq!(
        series(
            &text,
            "stagefan_stage_viewers{broadcast=\"s\",region=\"us-east-1\",stage=\"stats0000001\"}"
        ),
        None
    );
    assert_eq!(
        series(
            &text,
            "stagefan_stages{broadcast=\"s\",region=\"us-east-1\",state=\"live\"}"
        ),
        None
    );
    assert_eq!(
        series(
            &text,
            "stagefan_joins_total{broadcast=\"s\",region=\"us-east-1\"}"
        ),
        Some(200.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_wrong_secret_is_rejected_by_ivs_and_counted() {
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let a = arn("signed000001");
    ivs.add_stage(&a, true, Some("b"));
    edge.put_pool(snapshot(
        "b",
        1,
        vec![stage(1, &a, StageState::Live, 0, 50)],
    ));
    let ivs_addr = ivs.start().await;
    let edge_addr = edge.start().await;
    let metrics = std::sync::Arc::new(stagefan_monitor::metrics::Metrics::new().unwrap());
    let client = stagefan_monitor::ivs::IvsClient::new(
        stagefan_monitor::ivs::IvsSettings {
            endpoint: format!("http://{ivs_addr}"),
            region: "us-east-1".into(),
            credentials: stagefan_core::sigv4::Credentials::new(ACCESS_KEY, "wrong", None),
            timeout: Duration::from_secs(3600),
        },
        std::sync::Arc::new(stagefan_monitor::budget::Budget::new(2.0)),
        metrics.clone(),
    )
    .unwrap();
    let edge_client = stagefan_monitor::edge::EdgeClient::new(
        &format!("http://{edge_addr}"),
        ADMIN_KEY.into(),
        Duration::from_secs(3600),
        metrics.clone(),
    )
    .unwrap();
    let mut poller = stagefan_monitor::poller::Poller::new(
        edge_client,
        client,
        metrics.clone(),
        settings(Duration::from_secs(5)),
    );
    poller.round().await;
    assert!(ivs.0.lock().unwrap().bad_signatures >= 1);
    let text = metrics.encode();
    assert!(series(
        &text,
        "stagefan_ivs_requests_total{operation=\"GetStage\",region=\"us-east-1\",status=\"403\"}"
    )
    .is_some());
}
