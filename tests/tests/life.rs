//! The broadcast's life end to end, through the real worker and ivs-local: not started, on
//! air, ended by the host (every seat freed, every heartbeat and new seat answered
//! `410 broadcast_ended`, every stage deleted in ivs-local within the IVS budget), the end kept
//! across a worker restart, and a later `publisher-all` starting the broadcast afresh.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stagefan_tests::{Answer, Api, Stack, HOST_KEY};

const B: &str = "life";
const VIEWERS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_a_broadcast_frees_every_seat_and_deletes_every_stage() {
    let stack = Stack::start(
        "life",
        &[
            ("STAGE_CAPACITY", "2"),
            ("MIN_STAGES", "1"),
            ("LEASE_TTL_SECONDS", "300"),
        ],
    );
    let api = stack.api();
    let ivs = stack.ivs_local();

    // Bad input first: no key, a wrong key, a bad id, a broadcast nobody made.
    let end = |id: &str| format!("/api/broadcasts/{id}/end");
    let a = api.post(&end(B), &json!({}), None).await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"), "{a:?}");
    let a = api.post(&end(B), &json!({}), Some("wrong")).await;
    assert_eq!(a.status, 401, "{a:?}");
    let a = api.post(&end("bad id!"), &json!({}), Some(HOST_KEY)).await;
    assert_eq!((a.status, a.code()), (400, "invalid_field"), "{a:?}");
    let a = api.post(&end("nobody"), &json!({}), Some(HOST_KEY)).await;
    assert_eq!((a.status, a.code()), (404, "broadcast_not_found"), "{a:?}");

    // Not started: the host has its stage, nobody publishes yet.
    let tokens = publisher_tokens(&api).await;
    assert_eq!(summary(&api).await["broadcastState"], "not_started");
    let first = seat(&api, "early").await;
    assert_eq!(first.body["broadcastState"], "not_started", "{first:?}");

    // On air once the host reports publishing.
    let arn = tokens[0]["stageArn"].as_str().unwrap();
    let pid = tokens[0]["participantId"].as_str().unwrap();
    let published = json!({"broadcast": B, "stageArn": arn, "participantId": pid});
    let a = api
        .post("/api/host/published", &published, Some(HOST_KEY))
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let s = summary(&api).await;
    assert_eq!(s["broadcastState"], "on_air", "{s}");
    let hb = heartbeat(&api, &first).await;
    assert_eq!(hb.status, 200, "{hb:?}");
    assert_eq!(hb.body["broadcastState"], "on_air", "{hb:?}");
    assert!(hb.body["broadcastStateSince"].as_str().is_some(), "{hb:?}");

    // More viewers than one stage holds: the pool grows to several stages.
    let mut seats = vec![first];
    for n in 1..VIEWERS {
        seats.push(seat(&api, &format!("v{n}")).await);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while ivs.stage_arns_of(B).await.len() < 3 {
        assert!(Instant::now() < deadline, "the pool did not grow");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deletes_before = ivs.requests("DeleteStage").await;

    // The end.
    let a = api.post(&end(B), &json!({}), Some(HOST_KEY)).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["broadcastState"], "ended");
    assert_eq!(a.body["seatsFreed"], VIEWERS as u64, "{a:?}");
    assert!(a.body["stagesDeleting"].as_u64().unwrap() >= 3, "{a:?}");
    let ended_at = Instant::now();
    for s in &seats {
        let hb = heartbeat(&api, s).await;
        assert_eq!((hb.status, hb.code()), (410, "broadcast_ended"), "{hb:?}");
    }
    let late = api.viewer(B, "late").await;
    assert_eq!(
        (late.status, late.code()),
        (410, "broadcast_ended"),
        "{late:?}"
    );
    assert!(late.body.get("token").is_none());
    let a = api
        .post("/api/host/published", &published, Some(HOST_KEY))
        .await;
    assert_eq!((a.status, a.code()), (410, "broadcast_ended"), "{a:?}");
    assert_eq!(summary(&api).await["broadcastState"], "ended");
    // Ending again is harmless.
    let again = api.post(&end(B), &json!({}), Some(HOST_KEY)).await;
    assert_eq!(
        (again.status, again.body["seatsFreed"].clone()),
        (200, json!(0))
    );

    // Every stage is deleted in ivs-local, paced by the budget (5 per 1.1 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = ivs.stage_arns_of(B).await;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stages left after the end: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let stats = ivs.stats().await;
    let delete = &stats["operations"]["DeleteStage"];
    eprintln!(
        "life: stages deleted {:.1} s after the end; DeleteStage {} requests (before: \
         {deletes_before}), at most {} in any 1 s window, {} throttled",
        ended_at.elapsed().as_secs_f64(),
        delete["requests"],
        delete["maxRequestsPerSecond"],
        delete["throttled"]
    );
    assert!(
        delete["maxRequestsPerSecond"].as_u64().unwrap() <= 5,
        "{delete}"
    );
    assert_eq!(delete["throttled"].as_u64().unwrap_or(0), 0, "{delete}");
    let snap = api.snapshot(B).await;
    assert_eq!(snap["viewers"], 0, "no lease left: {snap}");
    assert!(
        snap["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "deleted" || s["state"] == "creating"),
        "{snap}"
    );

    // The end is stored: a restarted worker still refuses seats.
    stack.restart_worker();
    let after = seat_answer(&api, "after-restart").await;
    assert_eq!(
        (after.status, after.code()),
        (410, "broadcast_ended"),
        "{after:?}"
    );
    assert_eq!(summary(&api).await["broadcastState"], "ended");

    // The host starts afresh: not started again, new stages, seats again.
    let tokens = publisher_tokens(&api).await;
    assert_eq!(summary(&api).await["broadcastState"], "not_started");
    let fresh = tokens[0]["stageArn"].as_str().unwrap();
    assert!(
        !seats.iter().any(|s| s.body["stageArn"] == fresh),
        "a new stage"
    );
    assert!(ivs.stage_arns_of(B).await.contains(&fresh.to_string()));
    let again = seat(&api, "again").await;
    assert_eq!(again.body["broadcastState"], "not_started");
}

/// The host's tokens, once the pool has a stage (asking again while it is being created).
async fn publisher_tokens(api: &Api) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = api
            .post(
                "/api/token/publisher-all",
                &json!({"broadcast": B}),
                Some(HOST_KEY),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        let tokens = a.body["tokens"].as_array().cloned().unwrap_or_default();
        if !tokens.is_empty() {
            return tokens;
        }
        assert!(Instant::now() < deadline, "no stage for the host: {a:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn summary(api: &Api) -> Value {
    let a = api.get(&format!("/api/broadcasts/{B}"), None).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body
}

/// A viewer's seat answer, retried while every stage is full (503) or being created.
async fn seat_answer(api: &Api, user: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = api.viewer(B, user).await;
        if a.status != 503 || Instant::now() > deadline {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn seat(api: &Api, user: &str) -> Answer {
    let a = seat_answer(api, user).await;
    assert_eq!(a.status, 200, "{user}: {a:?}");
    a
}

async fn heartbeat(api: &Api, seat: &Answer) -> Answer {
    api.lease_call("heartbeat", &seat.body["leaseId"]).await
}
