//! The join-storm benchmark (not a test): viewer tokens per second and latency through the
//! local stack (the worker on `wrangler dev` + ivs-local, on this machine), at 64 concurrent
//! clients, for each way of making tokens, against two baselines measured in the same run:
//! `GET /api/config` (the edge alone) and `POST /api/viewer/heartbeat` (the edge plus a
//! Durable Object round trip with one SQLite write: a bare counter; since stage presence the
//! object is the lease's `StageSeats`, see stagefan-presence-bench). Also the worker's wasm
//! size, raw and gzipped.
//!
//!   make bench          (or: cargo run --release -p stagefan-tests --bin stagefan-bench)
//!   BENCH_REQUESTS=10000 BENCH_CONCURRENCY=64 (the defaults) to change the load;
//!   BENCH_ONLY=<name>|<name>: only those runs (a name, or text in names: `two regions`).
//!
//! The two-region run (us-east-1, eu-west-1, one ivs-local each) gives each region a
//! subscription quota of about half the storm: the first region fills and the storm
//! overflows into the second, through the edge's placement (every seat in one of them).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stagefan_tests::{percentile_ms, root, Api, Stack};
use tokio::sync::Mutex;

struct Run {
    label: String,
    ok: usize,
    errors: Vec<(u16, String)>,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
    fn line(&self) -> String {
        let mut errors = std::collections::BTreeMap::new();
        for (status, code) in &self.errors {
            *errors.entry(format!("{status} {code}")).or_insert(0) += 1;
        }
        format!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {} |",
            self.label,
            self.ok,
            self.rate(),
            percentile_ms(&self.latencies, 50.0),
            percentile_ms(&self.latencies, 99.0),
            if errors.is_empty() {
                "-".to_string()
            } else {
                format!("{errors:?}")
            }
        )
    }
}

enum Load {
    Viewers { broadcast: String, prefix: String },
    Heartbeats { leases: Arc<Vec<String>> },
    Config,
}

async fn drive(
    api: &Api,
    label: &str,
    load: Load,
    requests: usize,
    concurrency: usize,
) -> (Run, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new((Vec::new(), Vec::new(), Vec::new())));
    let load = Arc::new(load);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (api, next, results, load) = (api.clone(), next.clone(), results.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = (Vec::new(), Vec::new(), Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let answer = match &*load {
                    Load::Viewers { broadcast, prefix } => {
                        api.viewer(broadcast, &format!("{prefix}-{i}")).await
                    }
                    Load::Heartbeats { leases } => {
                        api.lease_call("heartbeat", &leases[i % leases.len()]).await
                    }
                    Load::Config => api.get("/api/config", None).await,
                };
                if answer.status == 200 {
                    local.0.push(answer.elapsed);
                    if let Some(lease) = answer.body["leaseId"].as_str() {
                        local.2.push(lease.to_string());
                    }
                } else {
                    local.1.push((answer.status, answer.code().to_string()));
                }
            }
            let mut all = results.lock().await;
            all.0.extend(local.0);
            all.1.extend(local.1);
            all.2.extend(local.2);
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
    let seconds = started.elapsed().as_secs_f64();
    let (mut latencies, errors, leases) = std::mem::take(&mut *results.lock().await);
    latencies.sort();
    (
        Run {
            label: label.to_string(),
            ok: latencies.len(),
            errors,
            seconds,
            latencies,
        },
        leases,
    )
}

/// A stack's environment: variable names and values.
type Env = Vec<(&'static str, String)>;

async fn bench_stack(
    name: &str,
    regions: &[&str],
    vars: &[(&str, String)],
    requests: usize,
    concurrency: usize,
    baselines: bool,
) -> Vec<Run> {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let stack = Stack::start_in(name, regions, &vars);
    let api = stack.api();
    let b = "bench";
    let created = api.create_broadcast(b).await;
    assert_eq!(created.status, 200, "{created:?}");
    // Wait for the first stage, and warm the isolate (key import, JIT).
    for _ in 0..100 {
        if api.viewer(b, "warm-0").await.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let warm = Load::Viewers {
        broadcast: b.into(),
        prefix: "warm".into(),
    };
    drive(&api, "warm-up", warm, 200.min(requests), concurrency).await;

    let mut runs = Vec::new();
    if baselines {
        let (config, _) = drive(
            &api,
            "baseline: GET /api/config (edge only)",
            Load::Config,
            requests,
            concurrency,
        )
        .await;
        runs.push(config);
    }
    let load = Load::Viewers {
        broadcast: b.into(),
        prefix: "viewer".into(),
    };
    let (mut viewers, leases) = drive(
        &api,
        &format!("viewer tokens, {name}"),
        load,
        requests,
        concurrency,
    )
    .await;
    if regions.len() > 1 {
        // Leases of a region other than the primary carry `@{region}`.
        let second = leases.iter().filter(|l| l.contains('@')).count();
        viewers.label += &format!(" ({second} of {} seats in the second)", leases.len());
    }
    runs.push(viewers);
    if baselines && !leases.is_empty() {
        let load = Load::Heartbeats {
            leases: Arc::new(leases),
        };
        let (hb, _) = drive(
            &api,
            "baseline: heartbeat (edge + DO + 1 SQLite write)",
            load,
            requests,
            concurrency,
        )
        .await;
        runs.push(hb);
    }
    runs
}

fn wasm_size() -> (u64, u64) {
    let dir = root().join("worker/build");
    let wasm = std::fs::read_dir(&dir)
        .expect("worker/build (make worker)")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "wasm"))
        .expect("a .wasm in worker/build");
    let raw = std::fs::metadata(&wasm).expect("wasm").len();
    let gz = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -9 -c '{}' | wc -c", wasm.display()))
        .output()
        .expect("gzip");
    let gz: u64 = String::from_utf8_lossy(&gz.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (raw, gz)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let common = [
        ("STAGE_CAPACITY", "25000"),
        ("LEASE_TTL_SECONDS", "3600"),
        ("MAX_STAGES", "4"),
    ];

    let mut runs = Vec::new();
    let with = |extra: &[(&'static str, &'static str)]| -> Env {
        common
            .iter()
            .chain(extra.iter())
            .map(|(k, v)| (*k, v.to_string()))
            .collect()
    };
    const ONE: &[&str] = &["us-east-1"];
    const TWO: &[&str] = &["us-east-1", "eu-west-1"];
    // The same storm with per-client admission control off: what the rate-limiting binding
    // and the seats-per-client count cost (every request is its own client address).
    // CreateParticipantToken: ivs-local enforces IVS's 50 TPS, as IVS does. The first run
    // also measures the baselines.
    let webcrypto = [("TOKEN_MODE", "self-signed"), ("TOKEN_SIGNER", "webcrypto")];
    // Two regions: the storm and its warm-up fill the first region and overflow into the
    // second (quota per region: half of them, rounded up).
    let half = ((requests + 201) / 2 + 1).to_string();
    let mut two_regions = with(&webcrypto);
    two_regions.push(("IVS_QUOTA_SUBSCRIPTIONS", half));
    let variants: [(&str, &[&str], Env, usize, bool); 5] = [
        (
            "self-signed (WebCrypto)",
            ONE,
            with(&webcrypto),
            requests,
            true,
        ),
        (
            "self-signed (WebCrypto), two regions",
            TWO,
            two_regions,
            requests,
            false,
        ),
        (
            "self-signed (WebCrypto), admission control off",
            ONE,
            with(&[webcrypto[0], webcrypto[1], ("ADMISSION_CONTROL", "off")]),
            requests,
            false,
        ),
        (
            "self-signed (Rust p384)",
            ONE,
            with(&[("TOKEN_MODE", "self-signed"), ("TOKEN_SIGNER", "rust")]),
            requests,
            false,
        ),
        (
            "api (CreateParticipantToken)",
            ONE,
            with(&[("TOKEN_MODE", "api")]),
            (requests / 4).max(200),
            false,
        ),
    ];
    // `BENCH_ONLY=a|b`: the runs named exactly `a` or `b`, or, for a term that names no run
    // exactly, whose names contain it.
    let only = std::env::var("BENCH_ONLY").ok().filter(|s| !s.is_empty());
    let picked = |name: &str| {
        only.as_deref().is_none_or(|only| {
            only.split('|').any(|term| {
                name == term || (!variants.iter().any(|v| v.0 == term) && name.contains(term))
            })
        })
    };
    for (name, regions, env, n, baselines) in &variants {
        if !picked(name) {
            continue;
        }
        runs.extend(bench_stack(name, regions, env, *n, concurrency, *baselines).await);
    }

    println!();
    println!("join storm through the local stack: {requests} requests, {concurrency} concurrent clients, on this machine ({} cores)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!();
    println!("| run | ok | per second | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|");
    for r in &runs {
        println!("{}", r.line());
    }
    let rate = |needle: &str| {
        runs.iter()
            .find(|r| r.label.contains(needle))
            .map(Run::rate)
    };
    println!();
    if let (Some(webcrypto), Some(rust), Some(api)) = (
        rate("WebCrypto"),
        rate("Rust p384"),
        rate("CreateParticipantToken"),
    ) {
        println!(
            "ratio self-signed (WebCrypto) / api: {:.1}x",
            webcrypto / api
        );
        println!("ratio self-signed (Rust p384) / api: {:.1}x", rust / api);
        println!(
            "ratio WebCrypto / Rust p384 signer: {:.2}x",
            webcrypto / rust
        );
    }
    if let (Some(one), Some(two)) = (rate("WebCrypto)"), rate("two regions")) {
        println!(
            "ratio two regions / one region (WebCrypto): {:.2}",
            two / one
        );
    }
    if let (Some(on), Some(off)) = (rate("WebCrypto)"), rate("admission control off")) {
        println!("ratio admission control on / off: {:.2}", on / off);
    }
    if let (Some(tokens), Some(hb)) = (rate("WebCrypto"), rate("heartbeat")) {
        println!(
            "viewer tokens (WebCrypto) / bare DO counter (heartbeat): {:.2}",
            tokens / hb
        );
    }
    let (raw, gz) = wasm_size();
    println!(
        "worker wasm: {raw} bytes raw ({:.2} MiB), {gz} bytes gzipped ({:.2} MiB)",
        raw as f64 / 1048576.0,
        gz as f64 / 1048576.0
    );
}
