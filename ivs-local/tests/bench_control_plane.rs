//! Benchmark (not a test: `#[ignore]`d): throughput of the real ivs-local binary for signed
//! control-plane calls, throttling off. Run:
//!   cargo test --release -p ivs-local --test bench_control_plane -- --ignored --nocapture
//! Prints requests/s and latency percentiles for ListStages (SigV4 verification + JSON) and
//! CreateParticipantToken (plus one ES384 signature each), and their ratio.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::IvsLocal;
use serde_json::json;
use stagefan_core::ivs::Operation as Op;

async fn run(
    ivs: &IvsLocal,
    op: Op,
    body: serde_json::Value,
    total: usize,
    concurrency: usize,
) -> (f64, Duration, Duration) {
    let client = Arc::new(ivs.client());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let body = body.clone();
        let n = total / concurrency + usize::from(w < total % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let r = client.call(op, body.clone()).await;
                assert_eq!(r.status, 200, "{r:?}");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let p = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (total as f64 / secs, p(0.5), p(0.99))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
async fn control_plane_throughput() {
    let ivs = IvsLocal::start(&["--rate-scale", "0", "--no-media"]);
    let c = ivs.client();
    let arn = c.call(Op::CreateStage, json!({})).await.ok()["stage"]["arn"]
        .as_str()
        .unwrap()
        .to_string();
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    for (name, op, body) in [
        ("ListStages", Op::ListStages, json!({})),
        (
            "CreateParticipantToken",
            Op::CreateParticipantToken,
            json!({"stageArn": arn}),
        ),
    ] {
        run(&ivs, op, body.clone(), 200, 16).await; // warm-up
        let (rps, p50, p99) = run(&ivs, op, body, 3000, 16).await;
        println!("ivs-local ({profile}) {name:24} {rps:8.0} req/s  p50 {:6.2} ms  p99 {:6.2} ms  (16 clients)",
            p50.as_secs_f64() * 1e3, p99.as_secs_f64() * 1e3);
    }
}
