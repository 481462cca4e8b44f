//! The monitor's orphan collection through the real worker (wrangler's dev server) and the
//! real ivs-local, with the real monitor binary:
//!
//! - a stage of another deployment in the same ivs-local, and one made before the deployment
//!   tag, survive the collector, beside an orphan of this deployment that goes;
//! - a pool whose registration failed (`STAGEFAN_TEST_FAIL_REGISTRATIONS=1`: its first
//!   registry write fails) keeps its stages, and gets registered;
//! - the monitor's orphan deletes and the pools' deletes, made at the same time, stay within
//!   the one account-wide budget: ivs-local never sees more than 5 `DeleteStage` in any
//!   second, and throttles none.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stagefan_tests::{bin_dir, free_tcp_port, Api, IvsLocal, Stack, ADMIN_KEY};

const DEPLOYMENT: &str = "orphan-test";

/// The monitor binary, killed on drop.
struct Monitor(Child);

impl Monitor {
    fn start(stack: &Stack, extra: &[&str]) -> Monitor {
        let port = free_tcp_port();
        let child = Command::new(bin_dir().join("stagefan-monitor"))
            .args([
                "--poll-interval",
                "1s",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--deployment", DEPLOYMENT])
            .args(extra)
            .env("STAGEFAN_EDGE_URL", &stack.edge)
            .env("STAGEFAN_ADMIN_KEY", ADMIN_KEY)
            .env("IVS_ENDPOINT", &stack.ivs)
            .env("AWS_ACCESS_KEY_ID", "AKIDLOCALSTAGEFAN")
            .env("AWS_SECRET_ACCESS_KEY", "stagefan-local-secret")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the monitor starts (cargo build -p stagefan-monitor)");
        Monitor(child)
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn create_stage(ivs: &IvsLocal, name: &str, tags: Value) -> String {
    loop {
        let (status, v) = ivs
            .call("CreateStage", &json!({"name": name, "tags": tags}))
            .await;
        match status {
            200 => return v["stage"]["arn"].as_str().unwrap().to_string(),
            429 => tokio::time::sleep(Duration::from_millis(300)).await,
            s => panic!("CreateStage {s}: {v}"),
        }
    }
}

async fn exists(ivs: &IvsLocal, arn: &str) -> bool {
    loop {
        let (status, v) = ivs.call("GetStage", &json!({ "arn": arn })).await;
        match status {
            200 => return true,
            404 => return false,
            429 => tokio::time::sleep(Duration::from_millis(300)).await,
            s => panic!("GetStage {s}: {v}"),
        }
    }
}

fn ours(broadcast: &str) -> Value {
    json!({"stagefan:managed": "true", "stagefan:broadcast": broadcast, "stagefan:deployment": DEPLOYMENT})
}

async fn listed(api: &Api) -> Vec<String> {
    let a = api.get("/api/admin/broadcasts", Some(ADMIN_KEY)).await;
    assert_eq!(a.status, 200, "{a:?}");
    serde_json::from_value(a.body["broadcasts"].clone()).unwrap()
}

async fn delete_stats(stack: &Stack) -> Value {
    let stats: Value = reqwest::get(format!("{}/_local/stats", stack.ivs))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stats["operations"]["DeleteStage"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_collector_spares_other_deployments_and_unregistered_pools_and_shares_the_budget() {
    let stack = Stack::start(
        "orphans",
        &[
            ("STAGEFAN_DEPLOYMENT", DEPLOYMENT),
            ("STAGEFAN_TEST_FAIL_REGISTRATIONS", "1"),
            ("SCALE_DOWN_GRACE_SECONDS", "3600"),
            ("MIN_STAGES", "1"),
        ],
    );
    let api = stack.api();
    let ivs = stack.ivs_local();

    // 0. The budget route the monitor takes its slots from: admin only, its input checked.
    let route = "/api/admin/ivs-budget/slots";
    let slot = api
        .post(route, &json!({"operation": "DeleteStage"}), Some(ADMIN_KEY))
        .await;
    assert_eq!(slot.status, 200, "{slot:?}");
    assert_eq!(slot.body["operation"], "DeleteStage");
    assert!(
        slot.body["at"].as_u64().unwrap() > 1_700_000_000_000,
        "{slot:?}"
    );
    assert!(slot.body["waitMs"].as_u64().unwrap() <= 1_100, "{slot:?}");
    let a = api
        .post(route, &json!({"operation": "DeleteStage"}), None)
        .await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"), "{a:?}");
    for (body, field) in [
        (json!({"operation": "ListParticipants"}), "operation"),
        (json!({}), "operation"),
        (
            json!({"operation": "DeleteStage", "throttled": "yes"}),
            "throttled",
        ),
    ] {
        let a = api.post(route, &body, Some(ADMIN_KEY)).await;
        assert_eq!(a.status, 400, "{body}: {a:?}");
        assert_eq!(a.body["error"]["field"], field, "{body}: {a:?}");
    }

    // 1. A pool whose registration fails once: it exists, the edge's list lacks it.
    let a = api.create_broadcast("unlisted").await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["deployment"], DEPLOYMENT, "{a:?}");
    assert!(!listed(&api).await.contains(&"unlisted".to_string()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let pool_stage = loop {
        let snap = api.snapshot("unlisted").await;
        if let Some(arn) = snap["stages"][0]["stageArn"].as_str() {
            break arn.to_string();
        }
        assert!(Instant::now() < deadline, "no stage: {snap}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Its stage carries the deployment.
    let tagged = ivs.list_stages().await;
    let st = tagged
        .iter()
        .find(|s| s["arn"] == pool_stage.as_str())
        .unwrap();
    assert_eq!(st["tags"]["stagefan:deployment"], DEPLOYMENT, "{st}");

    // 2. Beside it: an orphan of this deployment, another deployment's stage and one from
    //    before the tag, all unknown to every pool of this edge.
    let orphan = create_stage(&ivs, "ghost-1", ours("ghost")).await;
    let theirs = create_stage(
        &ivs,
        "ghost-1",
        json!({"stagefan:managed": "true", "stagefan:broadcast": "ghost", "stagefan:deployment": "someone-else"}),
    )
    .await;
    let untagged = create_stage(
        &ivs,
        "ghost-2",
        json!({"stagefan:managed": "true", "stagefan:broadcast": "ghost"}),
    )
    .await;

    let monitor = Monitor::start(&stack, &["--orphan-grace", "2s", "--ivs-budget", "5"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while exists(&ivs, &orphan).await {
        assert!(Instant::now() < deadline, "the orphan was not collected");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A few more rounds: every other stage was a candidate as long as the orphan.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (what, arn) in [
        ("another deployment's stage", &theirs),
        ("a stage from before the deployment tag", &untagged),
        ("the unregistered pool's stage", &pool_stage),
    ] {
        assert!(exists(&ivs, arn).await, "{what} was deleted");
    }
    // The pool got registered (retried by its alarm, or when the monitor asked it directly).
    let deadline = Instant::now() + Duration::from_secs(45);
    while !listed(&api).await.contains(&"unlisted".to_string()) {
        assert!(Instant::now() < deadline, "the pool never got registered");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(monitor);

    // 3. Pools and the monitor deleting at once. A pool with 9 more stages...
    let a = api.create_broadcast("bulk").await;
    assert_eq!(a.status, 200, "{a:?}");
    let creates = (0..9).map(|_| {
        let api = api.clone();
        tokio::spawn(async move {
            api.post(
                "/api/admin/broadcasts/bulk/actions",
                &json!({"action": "create"}),
                Some(ADMIN_KEY),
            )
            .await
        })
    });
    for c in creates.collect::<Vec<_>>() {
        let a = c.await.unwrap();
        assert_eq!(a.body["outcome"], "done", "{a:?}");
    }
    let bulk: Vec<String> = api.snapshot("bulk").await["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["stageArn"].as_str().map(str::to_string))
        .collect();
    assert!(bulk.len() >= 9, "{bulk:?}");
    // ...and 10 orphans.
    let mut orphans = Vec::new();
    for n in 0..10 {
        orphans.push(create_stage(&ivs, &format!("lost-{n}"), ours("lost")).await);
    }
    let before = delete_stats(&stack).await["requests"].as_u64().unwrap();
    let _monitor = Monitor::start(&stack, &["--orphan-grace", "2s", "--ivs-budget", "5"]);
    // The pools' deletes start as soon as the monitor's do.
    let deadline = Instant::now() + Duration::from_secs(60);
    while delete_stats(&stack).await["requests"].as_u64().unwrap() == before {
        assert!(Instant::now() < deadline, "the monitor deleted nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let deletes: Vec<_> = bulk
        .iter()
        .skip(1)
        .map(|arn| {
            let api = api.clone();
            let arn = arn.clone();
            tokio::spawn(async move {
                api.post(
                    "/api/admin/broadcasts/bulk/actions",
                    &json!({"action": "delete", "stageArn": arn}),
                    Some(ADMIN_KEY),
                )
                .await
            })
        })
        .collect();
    for d in deletes {
        let a = d.await.unwrap();
        assert_eq!(a.body["outcome"], "done", "{a:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for arn in &orphans {
        while exists(&ivs, arn).await {
            assert!(Instant::now() < deadline, "orphan {arn} not collected");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = delete_stats(&stack).await;
    eprintln!(
        "orphans: {} pool deletes and 10 orphan deletes at once, done in {secs:.1} s; \
         DeleteStage at ivs-local: {stats}",
        bulk.len() - 1
    );
    assert_eq!(stats["throttled"], 0, "DeleteStage was throttled: {stats}");
    assert!(
        stats["maxRequestsPerSecond"].as_u64().unwrap() <= 5,
        "more than 5 DeleteStage in one second: {stats}"
    );
    assert!(
        stats["requests"].as_u64().unwrap() >= before + 10 + bulk.len() as u64 - 1,
        "{stats}"
    );
}
