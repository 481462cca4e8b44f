//! The worker's paths for a bad day, through the real worker under `wrangler dev` and the real
//! ivs-local with scripted faults (`/_local/faults`): a `CreateStage` that creates but whose
//! answer is lost (looked up by name, never sent twice), a worker restart in the middle of a
//! join storm (no seat lost or doubled), and the pool's own alarm-driven scale-down.
//!
//! What is checked is what IVS holds (ivs-local's stages and request counters), not what the
//! pool says of itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stagefan_tests::{Answer, Api, Fault, IvsLocal, Stack};

/// Waits until the broadcast's pool seats `user` (503 while its first stage is being made).
async fn wait_for_seat(api: &Api, broadcast: &str, user: &str, within: Duration) -> Answer {
    let deadline = Instant::now() + within;
    loop {
        let a = api.viewer(broadcast, user).await;
        if a.status == 200 {
            return a;
        }
        assert_eq!(a.status, 503, "{a:?}");
        assert!(
            Instant::now() < deadline,
            "{user} not seated in {broadcast} within {within:?}: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the pool has no stage in `creating`, and returns its snapshot.
async fn settled(api: &Api, broadcast: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let snap = api.snapshot(broadcast).await;
        let creating = stages(&snap)
            .iter()
            .filter(|s| s["state"] == "creating")
            .count();
        if creating == 0 {
            return snap;
        }
        assert!(
            Instant::now() < deadline,
            "{creating} stages of {broadcast} still creating after {within:?}: {snap}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn stages(snap: &Value) -> Vec<Value> {
    snap["stages"].as_array().cloned().unwrap_or_default()
}

/// The ARNs of the pool's stages that exist (not deleted), sorted.
fn pool_arns(snap: &Value) -> Vec<String> {
    let mut arns: Vec<String> = stages(snap)
        .iter()
        .filter(|s| s["state"] != "deleted")
        .filter_map(|s| s["stageArn"].as_str().map(str::to_string))
        .collect();
    arns.sort();
    arns
}

/// IVS's stages of a broadcast by name: each create intent has its own name
/// (`{broadcast}-{n}`), so a name held twice is a create sent twice.
async fn ivs_stages_by_name(ivs: &IvsLocal, broadcast: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in ivs.list_stages().await {
        if s["tags"]["stagefan:broadcast"].as_str() != Some(broadcast) {
            continue;
        }
        by_name
            .entry(s["name"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(s["arn"].as_str().unwrap_or_default().to_string());
    }
    by_name
}

async fn assert_one_stage_per_intent(ivs: &IvsLocal, broadcast: &str) {
    let by_name = ivs_stages_by_name(ivs, broadcast).await;
    let doubles: Vec<_> = by_name.iter().filter(|(_, arns)| arns.len() > 1).collect();
    assert!(
        doubles.is_empty(),
        "IVS holds two stages for one create intent of {broadcast}: {doubles:?}"
    );
}

/// One broadcast whose first `CreateStage` meets `faults`: the viewer is seated, IVS holds
/// exactly the stage the pool holds, and ivs-local saw `creates` CreateStage requests.
async fn first_create_meets(
    api: &Api,
    ivs: &IvsLocal,
    broadcast: &str,
    faults: &[Fault],
    creates: u64,
) {
    for f in faults {
        ivs.add_fault(f).await;
    }
    let before = ivs.requests("CreateStage").await;
    assert_eq!(api.create_broadcast(broadcast).await.status, 200);
    let seat = wait_for_seat(api, broadcast, "viewer", Duration::from_secs(60)).await;
    let snap = settled(api, broadcast, Duration::from_secs(60)).await;
    let fired = ivs.faults().await;
    assert_eq!(
        fired["faults"],
        json!([]),
        "{broadcast}: every scripted fault was met: {fired}"
    );
    let by_name = ivs_stages_by_name(ivs, broadcast).await;
    let sent = ivs.requests("CreateStage").await - before;
    eprintln!("{broadcast}: {sent} CreateStage requests, IVS holds {by_name:?}");
    assert_one_stage_per_intent(ivs, broadcast).await;
    assert_eq!(by_name.len(), 1, "{broadcast}: one stage: {by_name:?}");
    let ivs_arns: Vec<String> = by_name.values().flatten().cloned().collect();
    assert_eq!(pool_arns(&snap), ivs_arns, "{broadcast}: {snap}");
    assert_eq!(seat.body["stageArn"], ivs_arns[0].as_str());
    assert_eq!(
        sent, creates,
        "{broadcast}: CreateStage requests (a create re-sent after a lost answer is one too many)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_whose_answer_is_lost_is_looked_up_never_sent_twice() {
    let stack = Stack::start(
        "faults-create",
        &[("STAGE_CAPACITY", "10"), ("MIN_STAGES", "1")],
    );
    let (api, ivs) = (stack.api(), stack.ivs_local());

    // The stage is made, the answer is a 500: the pool finds it by name.
    first_create_meets(
        &api,
        &ivs,
        "lost500",
        &[Fault::lost_after_effect("CreateStage")],
        1,
    )
    .await;
    // The same with the connection cut mid-answer (a transport error, not an IVS error).
    first_create_meets(
        &api,
        &ivs,
        "lostcut",
        &[Fault::cut_after_effect("CreateStage")],
        1,
    )
    .await;
    // A 503 that did not create: the lookup finds nothing, the create is sent again.
    first_create_meets(
        &api,
        &ivs,
        "err503",
        &[Fault::error("CreateStage", 503).times(2)],
        3,
    )
    .await;
    // A throttle: paced by the budget and sent again (no lookup needed, nothing was made).
    first_create_meets(
        &api,
        &ivs,
        "throttled",
        &[Fault::throttle("CreateStage").times(2)],
        3,
    )
    .await;
    // Lost answers on two creates in a row of a growing pool, and a slow one.
    let b = "grow";
    ivs.add_fault(&Fault::lost_after_effect("CreateStage").times(2))
        .await;
    ivs.add_fault(&Fault::delay("CreateStage", 1_500)).await;
    let before = ivs.requests("CreateStage").await;
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let mut seated = Vec::new();
    for i in 0..25 {
        seated.push(wait_for_seat(&api, b, &format!("g{i}"), Duration::from_secs(60)).await);
    }
    let snap = settled(&api, b, Duration::from_secs(60)).await;
    assert_eq!(ivs.faults().await["faults"], json!([]));
    assert_one_stage_per_intent(&ivs, b).await;
    let ivs_arns: Vec<String> = ivs_stages_by_name(&ivs, b)
        .await
        .into_values()
        .flatten()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(pool_arns(&snap), ivs_arns, "{snap}");
    assert_eq!(
        ivs.requests("CreateStage").await - before,
        ivs_arns.len() as u64,
        "one CreateStage per stage"
    );
    assert_eq!(snap["viewers"], 25);
    assert!(ivs_arns.len() >= 3, "25 viewers on 10 seats: {ivs_arns:?}");
}

/// After an unknown outcome whose lookup by name fails too, the create is still never sent
/// again: the intent stays `creating` until the maintenance alarm finds it by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_create_whose_lookup_fails_is_still_never_sent_twice() {
    let stack = Stack::start(
        "faults-lookup",
        &[("STAGE_CAPACITY", "10"), ("MIN_STAGES", "1")],
    );
    let (api, ivs) = (stack.api(), stack.ivs_local());
    let b = "lookupfails";
    // The create is made and its answer lost; every lookup for the next few seconds fails.
    ivs.add_fault(&Fault::lost_after_effect("CreateStage"))
        .await;
    ivs.add_fault(&Fault::error("ListStages", 500).times(12))
        .await;
    let before = ivs.requests("CreateStage").await;
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let seat = wait_for_seat(&api, b, "patient", Duration::from_secs(150)).await;
    settled(&api, b, Duration::from_secs(150)).await;
    // What the worker did not meet of the failing lookups would fail ours.
    ivs.clear_faults().await;
    assert_one_stage_per_intent(&ivs, b).await;
    assert_eq!(
        ivs.requests("CreateStage").await - before,
        1,
        "the create was sent once"
    );
    let by_name = ivs_stages_by_name(&ivs, b).await;
    assert_eq!(by_name.len(), 1, "{by_name:?}");
    assert_eq!(
        seat.body["stageArn"],
        by_name.values().next().unwrap()[0].as_str()
    );
}

/// What one simulated viewer went through in the storm.
#[derive(Debug)]
struct Seated {
    user: String,
    answer: Answer,
    /// Requests that got no answer or a 5xx (the worker was down or restarting).
    lost: u32,
    at: Instant,
}

/// A viewer that keeps asking, as the page does: after a refusal it waits its `Retry-After`
/// (capped at 1 s here), after no answer or a 5xx 200 ms.
async fn keep_asking(api: Api, broadcast: String, user: String, until: Instant) -> Seated {
    let mut lost = 0;
    loop {
        let a = api.viewer(&broadcast, &user).await;
        match a.status {
            200 => {
                return Seated {
                    user,
                    answer: a,
                    lost,
                    at: Instant::now(),
                }
            }
            // 429: a per-client admission limit, if the edge has one (issue 8).
            429 | 503 if a.retry_after.is_some() => {
                let secs: u64 = a
                    .retry_after
                    .as_deref()
                    .and_then(|r| r.parse().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_millis(200 + 800 * secs.min(1))).await;
            }
            0 | 500..=599 => {
                lost += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("{user}: unexpected {other}: {a:?}"),
        }
        assert!(Instant::now() < until, "{user} never seated ({lost} lost)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_restart_in_a_join_storm_loses_and_doubles_no_seat() {
    const CAPACITY: u64 = 10;
    const VIEWERS: usize = 100;
    let stack = Arc::new(Stack::start(
        "faults-restart-storm",
        &[
            ("STAGE_CAPACITY", &CAPACITY.to_string()),
            ("MAX_STAGES", "14"),
            ("LEASE_TTL_SECONDS", "600"),
        ],
    ));
    let (api, ivs) = (stack.api(), stack.ivs_local());
    let b = "restartstorm";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let first = wait_for_seat(&api, b, "first", Duration::from_secs(60)).await;

    // The storm: viewers arrive over about 6 s; the worker is restarted 1.5 s in.
    let until = Instant::now() + Duration::from_secs(240);
    let mut tasks = Vec::new();
    for i in 0..VIEWERS {
        let (api, b) = (api.clone(), b.to_string());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(60 * i as u64)).await;
            keep_asking(api, b, format!("storm-{i}"), until).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let restart_began = Instant::now();
    let restarting = stack.clone();
    tokio::task::spawn_blocking(move || restarting.restart_worker())
        .await
        .expect("restart");
    let restart_ended = Instant::now();
    eprintln!(
        "restart storm: the worker restart took {:.1} s",
        (restart_ended - restart_began).as_secs_f64()
    );
    let mut seated = Vec::new();
    for t in tasks {
        seated.push(t.await.expect("viewer task"));
    }
    let lost: u32 = seated.iter().map(|s| s.lost).sum();
    let before = seated.iter().filter(|s| s.at < restart_began).count();
    let after = seated.iter().filter(|s| s.at > restart_ended).count();
    eprintln!(
        "restart storm: {VIEWERS} viewers seated, {before} before the restart, {after} after it, {lost} requests without an answer"
    );
    // The restart really came in the middle of the storm.
    assert!(
        before > 0 && after > 0,
        "seated before {before}, after {after}"
    );
    assert!(lost > 0, "no request met the restart");

    // No seat given twice: every viewer holds its own lease.
    let mut held: Vec<(String, String)> = vec![(
        first.body["leaseId"].as_str().unwrap().to_string(),
        first.body["stageArn"].as_str().unwrap().to_string(),
    )];
    for s in &seated {
        held.push((
            s.answer.body["leaseId"].as_str().unwrap().to_string(),
            s.answer.body["stageArn"].as_str().unwrap().to_string(),
        ));
    }
    let distinct: BTreeSet<&str> = held.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(distinct.len(), held.len(), "a lease given to two viewers");

    // No seat lost: every lease held is known to the pool after the restart.
    for (s, (lease, _)) in seated.iter().zip(held.iter().skip(1)) {
        let hb = api.lease_call("heartbeat", &lease).await;
        assert_eq!(
            hb.status, 200,
            "{}'s lease after the restart: {hb:?}",
            s.user
        );
    }

    // The pool's loads are the leases held on each stage, plus at most one seat per lost
    // answer (a join whose answer was lost may have taken a seat its viewer never learned of;
    // it lapses with its lease). No stage is above capacity.
    let snap = settled(&api, b, Duration::from_secs(150)).await;
    let mut per_stage: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, arn) in &held {
        *per_stage.entry(arn.as_str()).or_default() += 1;
    }
    let mut unclaimed = 0;
    for s in stages(&snap) {
        let load = s["load"].as_u64().unwrap();
        assert!(load <= CAPACITY, "stage above capacity: {s}");
        let Some(arn) = s["stageArn"].as_str() else {
            assert_eq!(load, 0, "{s}");
            continue;
        };
        let holding = per_stage.remove(arn).unwrap_or(0);
        assert!(
            load >= holding,
            "stage {arn}: load {load} below the {holding} leases held on it"
        );
        unclaimed += load - holding;
    }
    assert!(
        per_stage.is_empty(),
        "leases on stages the pool does not have: {per_stage:?}"
    );
    assert_eq!(
        snap["viewers"].as_u64().unwrap(),
        held.len() as u64 + unclaimed
    );
    assert!(
        unclaimed <= u64::from(lost),
        "{unclaimed} seats nobody holds, {lost} lost answers"
    );
    eprintln!("restart storm: {unclaimed} seats taken by joins whose answer was lost");

    // The restarted worker found our public key in IVS: imported once, not again.
    assert_eq!(ivs.requests("ImportPublicKey").await, 1, "imported once");

    // IVS holds exactly the pool's stages, one per create intent (creates cut by the restart
    // were looked up by name, not sent again).
    assert_one_stage_per_intent(&ivs, b).await;
    assert_eq!(pool_arns(&snap), ivs.stage_arns_of(b).await, "{snap}");

    // Everyone leaves: only the unclaimed seats remain.
    for (lease, _) in &held {
        let a = api.lease_call("leave", &lease).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(
        api.snapshot(b).await["viewers"].as_u64().unwrap(),
        unclaimed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_scales_down_by_its_own_alarm() {
    // No monitor (the harness runs none): only the pool's maintenance alarm can scale down.
    let stack = Stack::start(
        "faults-scale-down",
        &[
            ("STAGE_CAPACITY", "2"),
            ("MIN_STAGES", "1"),
            ("MAX_STAGES", "6"),
            ("SCALE_DOWN_GRACE_SECONDS", "2"),
            ("LEASE_TTL_SECONDS", "600"),
        ],
    );
    let (api, ivs) = (stack.api(), stack.ivs_local());
    let b = "shrink";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let mut seats = Vec::new();
    for i in 0..7 {
        seats.push(wait_for_seat(&api, b, &format!("s{i}"), Duration::from_secs(60)).await);
    }
    let snap = settled(&api, b, Duration::from_secs(60)).await;
    let grown = pool_arns(&snap);
    assert!(grown.len() >= 4, "7 viewers on 2 seats: {snap}");
    assert_eq!(grown, ivs.stage_arns_of(b).await);
    let deletes_before = ivs.requests("DeleteStage").await;

    // One viewer stays; the others leave.
    let (kept, gone) = seats.split_first().unwrap();
    let kept_stage = kept.body["stageArn"].as_str().unwrap().to_string();
    for a in gone {
        let left = api.lease_call("leave", &a.body["leaseId"]).await;
        assert_eq!(left.status, 200, "{left:?}");
    }

    // The alarm drains what is empty beyond the grace, then deletes it at IVS, down to the
    // stage the kept viewer is on (its free seat is the headroom).
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        let hb = api.lease_call("heartbeat", &kept.body["leaseId"]).await;
        assert_eq!(hb.status, 200, "the kept viewer keeps its seat: {hb:?}");
        let snap = api.snapshot(b).await;
        let kept_state = stages(&snap)
            .into_iter()
            .find(|s| s["stageArn"] == kept_stage.as_str())
            .map(|s| s["state"].clone());
        assert!(
            matches!(
                kept_state.as_ref().and_then(Value::as_str),
                Some("warming" | "live")
            ),
            "the stage with a viewer is never drained: {snap}"
        );
        if ivs.stage_arns_of(b).await == [kept_stage.clone()]
            && pool_arns(&snap) == [kept_stage.clone()]
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not scaled down within {:?}: pool {snap}, IVS {:?}",
            deadline - started,
            ivs.stage_arns_of(b).await
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "scale-down: {} stages down to 1 in {:.1} s by the pool's alarm",
        grown.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        ivs.requests("DeleteStage").await - deletes_before,
        grown.len() as u64 - 1,
        "one DeleteStage per stage let go"
    );
    assert_eq!(api.snapshot(b).await["viewers"], 1);
}
