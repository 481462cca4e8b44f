//! Replicate mode across a restart of the worker (a new workerd on the same local Durable
//! Object storage, ivs-local kept running): the pool's replication tracker is stored, so a
//! failed `StartParticipantReplication` keeps its backoff instead of starting over.
//!
//! The host is reported publishing on the origin under a participant id that ivs-local does
//! not know, so every start fails (404) and backs off 0.5, 1, 2, 4, 8, 16, 30 s. After the
//! seventh failure the next start is 30 s away; the worker restarts, the host report is
//! repeated (which runs the replication loop at once), and no start may come before the stored
//! due time. A tracker kept in memory only would start again at once.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stagefan_tests::{Stack, HOST_KEY};

const BROADCAST: &str = "restart";

/// StartParticipantReplication requests ivs-local has seen, and how many it answered 404.
async fn starts(stack: &Stack) -> (u64, u64) {
    let stats: Value = reqwest::get(format!("{}/_local/stats", stack.ivs))
        .await
        .expect("ivs-local stats")
        .json()
        .await
        .expect("stats JSON");
    let op = &stats["operations"]["StartParticipantReplication"];
    (
        op["requests"].as_u64().unwrap_or(0),
        op["statuses"]["404"].as_u64().unwrap_or(0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replication_keeps_its_backoff_across_a_worker_restart() {
    let stack = Stack::start(
        "replication-restart",
        &[
            ("FANOUT_MODE", "replicate"),
            ("MIN_STAGES", "2"),
            ("STAGE_CAPACITY", "2"),
        ],
    );
    let api = stack.api();

    // The pool: one origin and one replica stage, both created at IVS.
    let deadline = Instant::now() + Duration::from_secs(30);
    let origin = loop {
        let a = api
            .post(
                "/api/token/publisher-all",
                &json!({ "broadcast": BROADCAST }),
                Some(HOST_KEY),
            )
            .await;
        assert_eq!(a.status, 200, "publisher-all: {a:?}");
        let tokens = a.body["tokens"].as_array().cloned().unwrap_or_default();
        let replicas = a.body["replicas"].as_array().cloned().unwrap_or_default();
        if tokens.len() == 1 && replicas.len() == 1 {
            break tokens[0]["stageArn"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "two stages: {a:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let report = || async {
        let a = api
            .post(
                "/api/host/published",
                &json!({ "broadcast": BROADCAST, "stageArn": origin, "participantId": "ghost-host" }),
                Some(HOST_KEY),
            )
            .await;
        assert_eq!(a.status, 200, "host/published: {a:?}");
    };
    report().await;

    // Seven failed starts: 0 + 0.5 + 1 + 2 + 4 + 8 + 16 s.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = (0, 0);
    while seen.0 < 7 {
        assert!(Instant::now() < deadline, "seven failed starts: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = starts(&stack).await;
    }
    let seventh = Instant::now();
    assert_eq!(
        seen,
        (7, 7),
        "every start fails with 404 (no such publisher)"
    );

    stack.restart_worker();
    let restarted = seventh.elapsed();
    println!(
        "worker restarted {:.1} s after the seventh start",
        restarted.as_secs_f64()
    );
    // Not a speed check (stagefan-recovery-bench measures the restart): the test can only tell
    // a stored backoff from a forgotten one while the 30 s backoff still runs (3 s of the check
    // below plus a margin), so a restart slower than that leaves nothing to check here.
    assert!(
        restarted < Duration::from_secs(24),
        "the worker came back {restarted:?} after the seventh start, too late to tell a stored \
         backoff (next start 30 s after it) from a forgotten one: nothing was checked"
    );
    report().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        starts(&stack).await.0,
        7,
        "no start before the stored backoff ends (a tracker that forgot would start at once)"
    );

    // The reloaded tracker still starts it when due: 30 s after the seventh failure.
    let deadline = seventh + Duration::from_secs(45);
    while starts(&stack).await.0 < 8 {
        assert!(Instant::now() < deadline, "the eighth start when due");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let eighth = seventh.elapsed();
    println!(
        "eighth start {:.1} s after the seventh",
        eighth.as_secs_f64()
    );
    assert!(
        eighth >= Duration::from_secs(28),
        "the eighth start came {eighth:?} after the seventh, before its backoff"
    );
}
