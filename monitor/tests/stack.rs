//! The monitor binary against the real local stack: the worker under `wrangler dev` (its
//! pools, its admin API) and ivs-local. The test starts its own monitor on a free port; the
//! stack must already run, without a monitor of its own (two monitors would race for the
//! same scaling actions). `scripts/with-stack.sh` starts such a stack on free ports and
//! exports `STAGEFAN_URL`, `STAGEFAN_ADMIN_KEY` and `IVS_ENDPOINT`:
//!
//!     cargo build -p ivs-local -p stagefan-monitor
//!     SCALE_DOWN_GRACE_SECONDS=4 \
//!       scripts/with-stack.sh cargo test -p stagefan-monitor --test stack -- --ignored --test-threads 1
//!
//! (the idle-stage test needs the short grace: it is the pools' own knob, which the monitor
//! reads from each pool's snapshot; the default `HEADROOM` of 0.5 makes the pool keep a
//! stage beyond the one it empties, so that one may go)
//!
//! or against a stack started by hand (`STAGEFAN_MONITOR=0 scripts/stack.sh`):
//! `STAGEFAN_EDGE_URL` (or `STAGEFAN_URL`), `STAGEFAN_ADMIN_KEY`, `IVS_ENDPOINT`.
//!
//! Each test makes its own broadcast (admin `POST /api/admin/broadcasts/{id}`), so they do
//! not disturb the stack's `default` broadcast.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

struct Stack {
    edge: String,
    admin_key: String,
    ivs: String,
}

fn stack() -> Stack {
    let admin_key = std::env::var("STAGEFAN_ADMIN_KEY")
        .expect("STAGEFAN_ADMIN_KEY: the running stack's admin key (see this file's header)");
    Stack {
        edge: std::env::var("STAGEFAN_EDGE_URL")
            .or_else(|_| std::env::var("STAGEFAN_URL"))
            .unwrap_or_else(|_| "http://127.0.0.1:8787".into()),
        admin_key,
        ivs: std::env::var("IVS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:8790".into()),
    }
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{prefix}-{n}")
}

impl Stack {
    fn monitor(&self, port: u16, extra: &[&str]) -> Guard {
        let bin = std::env::var("STAGEFAN_MONITOR_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_stagefan-monitor").to_string());
        let child = std::process::Command::new(bin)
            .args([
                "--poll-interval",
                "1s",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(extra)
            .env("STAGEFAN_EDGE_URL", &self.edge)
            .env("STAGEFAN_ADMIN_KEY", &self.admin_key)
            .env("IVS_ENDPOINT", &self.ivs)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("monitor starts");
        Guard(child)
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.edge))
            .bearer_auth(&self.admin_key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the edge answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn create_broadcast(&self, id: &str) -> Value {
        let (status, snap) = self
            .admin(
                reqwest::Method::POST,
                &format!("/api/admin/broadcasts/{id}"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 200, "creating broadcast {id}: {snap}");
        snap
    }

    async fn snapshot(&self, id: &str) -> Value {
        let (status, snap) = self
            .admin(
                reqwest::Method::GET,
                &format!("/api/admin/broadcasts/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{snap}");
        snap
    }

    /// A viewer's seat request, each from its own simulated client address (the
    /// `CF-Connecting-IP` Cloudflare sets), so the edge's per-client admission control sees a
    /// storm of viewers, not one client asking again and again.
    async fn join(&self, broadcast: &str, user: &str) -> (u16, Value) {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = reqwest::Client::new()
            .post(format!("{}/api/token/viewer", self.edge))
            .header(
                "cf-connecting-ip",
                format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255),
            )
            .json(&json!({"userId": user, "broadcast": broadcast}))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> u16 {
        reqwest::Client::new()
            .post(format!("{}{path}", self.edge))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

async fn metrics(port: u16) -> String {
    wait_for(
        &format!("http://127.0.0.1:{port}/metrics"),
        200,
        Duration::from_secs(5),
    )
    .await
}

fn sum_series(exposition: &str, prefix: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the running local stack (worker + ivs-local); see the file header"]
async fn a_join_storm_is_reflected_exactly_in_the_metrics() {
    let s = stack();
    let b = unique("storm");
    s.create_broadcast(&b).await;
    let port = free_port();
    let _monitor = s.monitor(port, &[]);
    wait_for(
        &format!("http://127.0.0.1:{port}/ready"),
        200,
        Duration::from_secs(60),
    )
    .await;

    // 150 viewers, 25 at a time.
    let mut joined = 0u64;
    let mut refused = 0u64;
    let mut leases = Vec::new();
    for chunk in 0..6 {
        let mut tasks = Vec::new();
        for i in 0..25 {
            let s2 = Stack {
                edge: s.edge.clone(),
                admin_key: s.admin_key.clone(),
                ivs: s.ivs.clone(),
            };
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                s2.join(&b, &format!("storm-{chunk}-{i}")).await
            }));
        }
        for t in tasks {
            let (status, v) = t.await.unwrap();
            match status {
                200 => {
                    joined += 1;
                    leases.push(v["leaseId"].as_str().unwrap().to_string());
                }
                503 => {
                    assert_eq!(v["error"]["code"], "no_capacity", "a refusal says why: {v}");
                    refused += 1
                }
                other => panic!("join answered {other}: {v}"),
            }
        }
    }
    assert_eq!(joined + refused, 150);
    println!("join storm on {b}: {joined} seated, {refused} refused (503)");
    let snap = s.snapshot(&b).await;
    assert_eq!(snap["stats"]["joins"], joined);
    assert_eq!(snap["stats"]["refusals"], refused);
    assert_eq!(snap["viewers"], joined);

    // Within a few rounds the monitor shows exactly what the pool counted.
    let label = format!("{{broadcast=\"{b}\",region=\"us-east-1\"}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = metrics(port).await;
        // All three: a scrape between the last seat and the last refusal already shows every
        // join and viewer, but not every refusal.
        if series(&text, &format!("stagefan_joins_total{label}")) == Some(joined as f64)
            && series(&text, &format!("stagefan_broadcast_viewers{label}")) == Some(joined as f64)
            && series(&text, &format!("stagefan_refusals_total{label}")).unwrap_or(0.0)
                == refused as f64
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "metrics never matched the pool:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let per_stage = sum_series(
        &text,
        &format!("stagefan_stage_viewers{{broadcast=\"{b}\",region=\"us-east-1\","),
    );
    assert_eq!(per_stage, joined as f64, "seats per stage add up");
    let snap = s.snapshot(&b).await;
    let stages_now = snap["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["state"] != "deleted")
        .count();
    let by_state: f64 = ["creating", "warming", "live", "draining"]
        .iter()
        .map(|st| {
            series(
                &text,
                &format!(
                    "stagefan_stages{{broadcast=\"{b}\",region=\"us-east-1\",state=\"{st}\"}}"
                ),
            )
            .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(by_state, stages_now as f64);

    for l in leases {
        assert_eq!(
            s.post("/api/viewer/leave", json!({"leaseId": l})).await,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the running local stack (worker + ivs-local); see the file header"]
async fn an_idle_stage_is_drained_and_deleted_after_the_grace_and_a_busy_one_is_not() {
    let s = stack();
    let b = unique("idle");
    s.create_broadcast(&b).await;
    // 70 viewers need two stages of 50.
    let mut by_stage: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut i = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while by_stage.values().map(Vec::len).sum::<usize>() < 70 {
        let (status, v) = s.join(&b, &format!("idle-{i}")).await;
        i += 1;
        match status {
            200 => by_stage
                .entry(v["stageArn"].as_str().unwrap().to_string())
                .or_default()
                .push(v["leaseId"].as_str().unwrap().to_string()),
            503 => tokio::time::sleep(Duration::from_millis(300)).await,
            other => panic!("join answered {other}: {v}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "could not seat 70 viewers"
        );
    }
    assert!(
        by_stage.len() >= 2,
        "viewers spread over {} stage(s)",
        by_stage.len()
    );
    // The stage with the fewest viewers empties, and so does every other but the busiest,
    // which keeps 10 viewers: the free seats left then cover the headroom (25) however the
    // viewers were spread, so the pool's policy lets the empty stages go.
    let idle = by_stage
        .iter()
        .min_by_key(|(_, l)| l.len())
        .map(|(a, _)| a.clone())
        .unwrap();
    let (busy, mut busy_leases) = by_stage
        .iter()
        .max_by_key(|(_, l)| l.len())
        .map(|(a, l)| (a.clone(), l.clone()))
        .unwrap();
    let mut leaving: Vec<String> = busy_leases.split_off(10);
    for (arn, leases) in &by_stage {
        if *arn != busy {
            leaving.extend(leases.iter().cloned());
        }
    }
    for l in &leaving {
        assert_eq!(
            s.post("/api/viewer/leave", json!({"leaseId": l})).await,
            200
        );
    }
    // The graces are the pool's own (the worker's configuration, in its snapshot): the
    // stack must run with a short grace for this test.
    let knobs = s.snapshot(&b).await;
    let grace_ms = knobs["scaleDownGraceMs"].as_u64().unwrap();
    assert!(
        grace_ms <= 10_000,
        "start the stack with SCALE_DOWN_GRACE_SECONDS=4 (see the file header): {knobs}"
    );
    let port = free_port();
    let _monitor = s.monitor(port, &["--orphan-grace", "1h"]);
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(60);
    loop {
        for l in &busy_leases {
            s.post("/api/viewer/heartbeat", json!({"leaseId": l})).await;
        }
        let snap = s.snapshot(&b).await;
        let state_of = |arn: &str| {
            snap["stages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|st| st["stageArn"] == arn)
                .map(|st| st["state"].as_str().unwrap().to_string())
        };
        assert_ne!(
            state_of(&busy).as_deref(),
            Some("deleted"),
            "a stage with viewers is never deleted"
        );
        assert_ne!(
            state_of(&busy).as_deref(),
            Some("draining"),
            "a stage with viewers is not drained"
        );
        if state_of(&idle).as_deref() == Some("deleted") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "idle stage not deleted: {snap}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(grace_ms),
        "not before the grace"
    );
    let (gone, _) = ivs_call(&s.ivs, "GetStage", json!({"arn": idle})).await;
    assert_eq!(gone, 404, "deleted in IVS too");
    let (kept, _) = ivs_call(&s.ivs, "GetStage", json!({"arn": busy})).await;
    assert_eq!(kept, 200);
    let text = metrics(port).await;
    assert!(
        series(
            &text,
            "stagefan_scaling_actions_total{kind=\"drain\",outcome=\"done\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        series(
            &text,
            "stagefan_scaling_actions_total{kind=\"delete\",outcome=\"done\"}"
        )
        .unwrap()
            >= 1.0
    );
    for l in busy_leases {
        s.post("/api/viewer/leave", json!({"leaseId": l})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the running local stack (worker + ivs-local); see the file header"]
async fn an_orphan_is_collected_and_the_pools_stages_are_not() {
    let s = stack();
    let b = unique("orph");
    let snap = s.create_broadcast(&b).await;
    let deployment = snap["deployment"].as_str().unwrap().to_string();
    let orphan = create_stage(
        &s.ivs,
        &unique("orphan"),
        json!({"stagefan:managed": "true", "stagefan:broadcast": unique("ghost"), "stagefan:deployment": deployment}),
    )
    .await;
    let port = free_port();
    let _monitor = s.monitor(port, &["--orphan-grace", "3s", "--deployment", &deployment]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = ivs_call(&s.ivs, "GetStage", json!({"arn": orphan})).await;
        if status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "orphan not collected");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every stage of every pool is still in IVS.
    let (_, list) = s
        .admin(reqwest::Method::GET, "/api/admin/broadcasts", None)
        .await;
    for id in list["broadcasts"].as_array().unwrap() {
        let snap = s.snapshot(id.as_str().unwrap()).await;
        for st in snap["stages"].as_array().unwrap() {
            if ["warming", "live", "draining"].contains(&st["state"].as_str().unwrap()) {
                let (status, _) =
                    ivs_call(&s.ivs, "GetStage", json!({"arn": st["stageArn"]})).await;
                assert_eq!(status, 200, "pool stage {st} kept");
            }
        }
    }
    assert!(snap["stages"].is_array());
    let text = metrics(port).await;
    assert!(
        series(
            &text,
            "stagefan_scaling_actions_total{kind=\"orphan_delete\",outcome=\"done\"}"
        )
        .unwrap()
            >= 1.0
    );
}

/// Where the scripted edge's answer differs in shape from the real edge's: a field the double
/// sends that the real edge does not, or another JSON type (null matches anything; arrays are
/// compared by their first elements).
fn shape_differences(path: &str, real: &Value, double: &Value, out: &mut Vec<String>) {
    match (real, double) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(r), Value::Object(d)) => {
            for (k, dv) in d {
                match r.get(k) {
                    None => out.push(format!("{path}.{k}: only in the double")),
                    Some(rv) => shape_differences(&format!("{path}.{k}"), rv, dv, out),
                }
            }
        }
        (Value::Array(r), Value::Array(d)) => {
            if let (Some(r0), Some(d0)) = (r.first(), d.first()) {
                shape_differences(&format!("{path}[0]"), r0, d0, out);
            }
        }
        (r, d) if std::mem::discriminant(r) == std::mem::discriminant(d) => {}
        (r, d) => out.push(format!("{path}: real {r}, double {d}")),
    }
}

async fn call(
    base: &str,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The monitor's tests run against a scripted edge (tests/common); it is only worth what it
/// shares with the real one. The same requests to both: the real snapshot must parse as the
/// double's pools, and each answer must match in status, error code and shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the running local stack (worker + ivs-local); see the file header"]
async fn the_scripted_edge_answers_in_the_real_edges_shapes() {
    let stack = stack();
    let b = unique("shapes");
    stack.create_broadcast(&b).await;
    let mut seat = None;
    for _ in 0..150 {
        let (status, v) = stack.join(&b, "shape-viewer").await;
        if status == 200 {
            seat = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seat = seat.expect("a seat in the new broadcast");
    let arn = seat["stageArn"].as_str().unwrap().to_string();
    let real_snap = stack.snapshot(&b).await;
    let pool: stagefan_core::pool::Snapshot = serde_json::from_value(real_snap.clone())
        .unwrap_or_else(|e| {
            panic!("the real snapshot is not the double's Snapshot: {e}: {real_snap}")
        });
    let edge = ScriptedEdge::default();
    edge.put_pool(pool);
    let double = format!("http://{}", edge.start().await);

    let observed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let missing = "arn:aws:ivs:us-east-1:123456789012:stage/NoSuchStage1";
    let nosuch = unique("nosuch");
    let requests: Vec<(&str, reqwest::Method, String, Option<Value>, bool)> = vec![
        (
            "list",
            reqwest::Method::GET,
            "/api/admin/broadcasts".into(),
            None,
            true,
        ),
        (
            "snapshot",
            reqwest::Method::GET,
            format!("/api/admin/broadcasts/{b}"),
            None,
            true,
        ),
        (
            "unknown broadcast",
            reqwest::Method::GET,
            format!("/api/admin/broadcasts/{nosuch}"),
            None,
            true,
        ),
        (
            "wrong key",
            reqwest::Method::GET,
            format!("/api/admin/broadcasts/{b}"),
            None,
            false,
        ),
        (
            "observations with drift",
            reqwest::Method::POST,
            format!("/api/admin/broadcasts/{b}/observations"),
            Some(json!({"observedAt": observed_at, "stages": [
                {"stageArn": arn, "publishers": [], "subscribers": ["a", "b"]}]})),
            true,
        ),
        (
            "delete of a stage with a viewer",
            reqwest::Method::POST,
            format!("/api/admin/broadcasts/{b}/actions"),
            Some(json!({"action": "delete", "stageArn": arn})),
            true,
        ),
        (
            "drain of a stage the pool does not have",
            reqwest::Method::POST,
            format!("/api/admin/broadcasts/{b}/actions"),
            Some(json!({"action": "drain", "stageArn": missing})),
            true,
        ),
    ];
    let mut differences = Vec::new();
    for (what, method, path, body, right_key) in requests {
        let (real_key, double_key) = if right_key {
            (stack.admin_key.as_str(), ADMIN_KEY)
        } else {
            ("wrong-key", "wrong-key")
        };
        let real = call(&stack.edge, real_key, method.clone(), &path, body.clone()).await;
        let fake = call(&double, double_key, method, &path, body).await;
        if real.0 != fake.0 {
            differences.push(format!("{what}: status real {} double {}", real.0, fake.0));
        }
        if real.1["error"]["code"] != fake.1["error"]["code"] {
            differences.push(format!(
                "{what}: error code real {} double {}",
                real.1["error"]["code"], fake.1["error"]["code"]
            ));
        }
        for field in ["outcome", "reason"] {
            if real.1[field] != fake.1[field] {
                differences.push(format!(
                    "{what}: {field} real {} double {}",
                    real.1[field], fake.1[field]
                ));
            }
        }
        if what == "observations with drift" && real.1["drift"] != fake.1["drift"] {
            differences.push(format!(
                "{what}: drift real {} double {}",
                real.1["drift"], fake.1["drift"]
            ));
        }
        shape_differences(what, &real.1, &fake.1, &mut differences);
        println!(
            "{what}: real {} {}, double {} {}",
            real.0, real.1, fake.0, fake.1
        );
    }
    assert!(
        differences.is_empty(),
        "the scripted edge differs from the real one:\n  {}",
        differences.join("\n  ")
    );
}
