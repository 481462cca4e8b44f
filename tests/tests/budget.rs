//! The account-wide IVS budget end to end: several broadcasts scale up (and down) at once
//! through the real worker and the real ivs-local, and ivs-local's own counters show that
//! stagefan as a whole stayed within IVS's 5 per second for `CreateStage` and `DeleteStage`
//! (never more than 5 in any sliding 1-second window, never throttled).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stagefan_tests::{Answer, Api, Stack, ADMIN_KEY};

const CAPACITY: u32 = 3;
const MAX_STAGES: u32 = 20;
const BROADCASTS: [&str; 3] = ["budget-a", "budget-b", "budget-c"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pools_share_one_ivs_budget() {
    let stack = Stack::start(
        "budget",
        &[
            ("STAGE_CAPACITY", &CAPACITY.to_string()),
            ("MAX_STAGES", &MAX_STAGES.to_string()),
            ("MIN_STAGES", "1"),
            // A headroom of two stages: each pool wants several stages at once.
            ("HEADROOM", "2"),
            ("LEASE_TTL_SECONDS", "300"),
        ],
    );
    let api = stack.api();

    // 1. Three broadcasts made at once, then a join storm on each, all at the same time: every
    //    pool wants many stages at once (20 × 3 seats each).
    let created = futures_join(BROADCASTS.map(|b| {
        let api = api.clone();
        async move { api.create_broadcast(b).await }
    }))
    .await;
    for a in &created {
        assert_eq!(a.status, 200, "{a:?}");
    }
    let seats = (CAPACITY * MAX_STAGES) as usize;
    let started = Instant::now();
    let mut handles = Vec::new();
    for b in BROADCASTS {
        for i in 0..seats {
            let api = api.clone();
            handles.push(tokio::spawn(async move {
                seat_with_retries(&api, b, &format!("{b}-v{i}")).await
            }));
        }
    }
    let mut outcomes: Vec<Seating> = Vec::new();
    for h in handles {
        outcomes.push(h.await.expect("viewer task"));
    }
    let storm_secs = started.elapsed().as_secs_f64();
    let first_try = outcomes.iter().filter(|o| o.refusals == 0).count();
    let refusals: u32 = outcomes.iter().map(|o| o.refusals).sum();
    let max_retry_after = outcomes
        .iter()
        .map(|o| o.max_retry_after)
        .max()
        .unwrap_or(0);
    let seated: Vec<&Seating> = outcomes.iter().filter(|o| o.grant.is_some()).collect();
    let stats = ivs_stats(&stack).await;
    let create = &stats["operations"]["CreateStage"];
    eprintln!(
        "budget: {} broadcasts x {seats} viewers in {storm_secs:.1} s: {} seated ({first_try} at \
         the first try), {refusals} refusals (503, Retry-After at most {max_retry_after} s); \
         CreateStage: {} requests, at most {} in any 1 s window, {} throttled",
        BROADCASTS.len(),
        seated.len(),
        create["requests"],
        create["maxRequestsPerSecond"],
        create["throttled"],
    );
    assert_eq!(
        seated.len(),
        outcomes.len(),
        "every viewer is seated once the stages exist"
    );
    for b in BROADCASTS {
        check_pool(&api, b, seats, &outcomes).await;
    }
    assert_eq!(
        create["throttled"], 0,
        "CreateStage was throttled: {create}"
    );
    assert!(
        create["maxRequestsPerSecond"].as_u64().unwrap() <= 5,
        "more than 5 CreateStage in one second: {create}"
    );
    assert_eq!(
        create["requests"].as_u64().unwrap(),
        u64::from(MAX_STAGES) * BROADCASTS.len() as u64,
        "one CreateStage per stage: {create}"
    );

    // 2. Everyone leaves, and every stage but one of each pool is deleted, all at once.
    let leaves = seated.iter().map(|o| {
        let api = api.clone();
        let lease = o.grant.as_ref().unwrap().body["leaseId"].clone();
        async move { api.lease_call("leave", &lease).await }
    });
    for a in futures_join(leaves).await {
        assert_eq!(a.status, 200, "{a:?}");
    }
    let mut deletes = Vec::new();
    for b in BROADCASTS {
        let snap = api.snapshot(b).await;
        let arns: Vec<String> = snap["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["stageArn"].as_str().map(str::to_string))
            .collect();
        for arn in arns.into_iter().skip(1) {
            let api = api.clone();
            deletes.push(async move {
                api.post(
                    &format!("/api/admin/broadcasts/{b}/actions"),
                    &json!({"action": "delete", "stageArn": arn}),
                    Some(ADMIN_KEY),
                )
                .await
            });
        }
    }
    let wanted = deletes.len();
    let started = Instant::now();
    let answers = futures_join(deletes).await;
    let delete_secs = started.elapsed().as_secs_f64();
    let done = answers
        .iter()
        .filter(|a| a.status == 200 && a.body["outcome"] == "done")
        .count();
    let stats = ivs_stats(&stack).await;
    let delete = &stats["operations"]["DeleteStage"];
    eprintln!(
        "budget: {wanted} deletes at once in {delete_secs:.1} s, {done} done; DeleteStage: {} \
         requests, at most {} in any 1 s window, {} throttled",
        delete["requests"], delete["maxRequestsPerSecond"], delete["throttled"],
    );
    eprintln!(
        "budget: slots given up by a pool that woke too late (taken anew): {}",
        wrangler_log(&stack).matches("slot missed").count()
    );
    for a in &answers {
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.body["outcome"], "done", "{a:?}");
    }
    assert_eq!(
        delete["throttled"], 0,
        "DeleteStage was throttled: {delete}"
    );
    assert!(
        delete["maxRequestsPerSecond"].as_u64().unwrap() <= 5,
        "more than 5 DeleteStage in one second: {delete}"
    );
    // Each pool then makes a stage back for its headroom (within the budget too); once those
    // creates are done, ivs-local has exactly the stages the pools list.
    for b in BROADCASTS {
        let mut arns = Vec::new();
        for _ in 0..50 {
            let snap = api.snapshot(b).await;
            let stages = snap["stages"].as_array().unwrap().clone();
            if stages.iter().all(|s| s["state"] != "creating") {
                arns = stages
                    .iter()
                    .filter(|s| s["state"] != "deleted")
                    .filter_map(|s| s["stageArn"].as_str().map(str::to_string))
                    .collect();
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        arns.sort();
        assert!(!arns.is_empty() && arns.len() < 4, "{b}: {arns:?}");
        assert_eq!(arns, stack.ivs_local().stage_arns_of(b).await, "{b}");
    }
    let create = &ivs_stats(&stack).await["operations"]["CreateStage"];
    assert_eq!(create["throttled"], 0, "{create}");
    assert!(
        create["maxRequestsPerSecond"].as_u64().unwrap() <= 5,
        "{create}"
    );
}

/// One viewer: asks for a seat until it gets one, honouring `Retry-After` on each 503.
struct Seating {
    grant: Option<Answer>,
    refusals: u32,
    max_retry_after: u64,
}

async fn seat_with_retries(api: &Api, broadcast: &str, user: &str) -> Seating {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seating = Seating {
        grant: None,
        refusals: 0,
        max_retry_after: 0,
    };
    while Instant::now() < deadline {
        let a = api.viewer(broadcast, user).await;
        match a.status {
            200 => {
                seating.grant = Some(a);
                return seating;
            }
            503 => {
                assert_eq!(a.code(), "no_capacity", "{a:?}");
                let retry: u64 = a
                    .retry_after
                    .as_deref()
                    .expect("503 carries Retry-After")
                    .parse()
                    .expect("Retry-After in seconds");
                assert!((1..=30).contains(&retry), "Retry-After {retry}: {a:?}");
                seating.refusals += 1;
                seating.max_retry_after = seating.max_retry_after.max(retry);
                tokio::time::sleep(Duration::from_secs(retry)).await;
            }
            other => panic!("unexpected answer {other} for {user}: {a:?}"),
        }
    }
    seating
}

/// A pool's counts are exact: its viewers are the seats granted in it, no stage is above its
/// capacity, each stage's load is the leases granted on it, and it has no more than
/// `MAX_STAGES` stages, exactly those ivs-local has with its tags.
async fn check_pool(api: &Api, b: &str, seats: usize, outcomes: &[Seating]) {
    let snap = api.snapshot(b).await;
    assert_eq!(
        snap["viewers"].as_u64().unwrap() as usize,
        seats,
        "{b}: {}",
        snap["stats"]
    );
    let mut granted: BTreeMap<String, u64> = BTreeMap::new();
    for o in outcomes {
        let Some(a) = &o.grant else { continue };
        if a.body["broadcast"] == b {
            *granted
                .entry(a.body["stageArn"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let stages: Vec<&Value> = snap["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] != "deleted")
        .collect();
    assert!(
        stages.len() as u32 <= MAX_STAGES,
        "{b}: {} stages",
        stages.len()
    );
    for s in &stages {
        let load = s["load"].as_u64().unwrap();
        assert!(load <= u64::from(CAPACITY), "stage above capacity: {s}");
        let arn = s["stageArn"].as_str().expect("no stage is still creating");
        assert_eq!(load, granted.get(arn).copied().unwrap_or(0), "{s}");
    }
    let stats = &snap["stats"];
    assert_eq!(stats["createFailures"], 0, "{b}: {stats}");
}

/// This run's wrangler log (the worker's warnings and errors).
fn wrangler_log(stack: &Stack) -> String {
    let dir = stack.state_dir.join("wrangler-logs");
    let newest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .max();
    newest
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

async fn ivs_stats(stack: &Stack) -> Value {
    reqwest::get(format!("{}/_local/stats", stack.ivs))
        .await
        .expect("ivs-local answers")
        .json()
        .await
        .expect("stats are JSON")
}

/// Runs futures concurrently on the runtime and returns their outputs in order.
async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}
