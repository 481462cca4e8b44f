//! The join storm over 1, 2 and 4 regions in one run (not a test): for each region count its
//! own local stack (the worker on `wrangler dev`, one ivs-local per region), one broadcast
//! with a pool per region, then `BENCH_REQUESTS` viewer tokens from `BENCH_CONCURRENCY`
//! clients, viewer `i` asking for region `i mod n` (a worldwide audience, each viewer placed
//! in its preferred region: a `region` in the body is honoured first). Prints viewer tokens
//! per second, p50/p99 of the successes, the seats each region got (the per-region spread)
//! and each figure as a ratio against the one-region run; each stack measures its own bare
//! Durable Object counter (heartbeats on the leases just made) so that the token path is
//! read against the machine's ceiling in the same run.
//!
//!   cargo run --release -p stagefan-tests --bin stagefan-regions-bench
//!   BENCH_REQUESTS=10000 BENCH_CONCURRENCY=64 (the defaults); BENCH_REGIONS=1,2,4 (default).
//!
//! Not part of `make test`: minutes of load on the whole machine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use stagefan_tests::{percentile_ms, Api, Stack};
use tokio::sync::Mutex;

/// Up to four IVS Real-Time regions, the primary first.
const REGIONS: [&str; 4] = ["us-east-1", "eu-west-1", "ap-northeast-1", "us-west-2"];
const BROADCAST: &str = "bench";

/// One storm's outcome.
struct Storm {
    ok: usize,
    errors: BTreeMap<String, usize>,
    seconds: f64,
    latencies: Vec<Duration>,
    /// Seats per region, from the answers' `region`.
    seats: BTreeMap<String, usize>,
    leases: Vec<String>,
}

impl Storm {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
}

enum Load {
    Viewers {
        regions: Vec<String>,
        prefix: String,
    },
    Heartbeats {
        leases: Arc<Vec<String>>,
    },
}

async fn drive(api: &Api, load: Load, requests: usize, concurrency: usize) -> Storm {
    let next = Arc::new(AtomicUsize::new(0));
    let load = Arc::new(load);
    let all = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (api, next, load, all) = (api.clone(), next.clone(), load.clone(), all.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let answer = match &*load {
                    Load::Viewers { regions, prefix } => {
                        let body = json!({
                            "userId": format!("{prefix}-{i}"),
                            "broadcast": BROADCAST,
                            "region": regions[i % regions.len()],
                        });
                        api.post("/api/token/viewer", &body, None).await
                    }
                    Load::Heartbeats { leases } => {
                        api.lease_call("heartbeat", &leases[i % leases.len()]).await
                    }
                };
                local.push(answer);
            }
            all.lock().await.extend(local);
        }));
    }
    for t in tasks {
        t.await.expect("load task");
    }
    let seconds = started.elapsed().as_secs_f64();
    let answers = std::mem::take(&mut *all.lock().await);
    let mut storm = Storm {
        ok: 0,
        errors: BTreeMap::new(),
        seconds,
        latencies: Vec::new(),
        seats: BTreeMap::new(),
        leases: Vec::new(),
    };
    for a in answers {
        if a.status == 200 {
            storm.ok += 1;
            storm.latencies.push(a.elapsed);
            if let Some(region) = a.body["region"].as_str() {
                *storm.seats.entry(region.to_string()).or_default() += 1;
            }
            if let Some(lease) = a.body["leaseId"].as_str() {
                storm.leases.push(lease.to_string());
            }
        } else {
            *storm
                .errors
                .entry(format!("{} {}", a.status, a.code()))
                .or_default() += 1;
        }
    }
    storm.latencies.sort();
    storm
}

/// One region count: its stack, warm-up, the storm, then the bare-counter baseline.
async fn bench(n: usize, requests: usize, concurrency: usize) -> (Storm, Storm) {
    let regions: Vec<&str> = REGIONS[..n].to_vec();
    let vars = [
        ("STAGE_CAPACITY", "25000"),
        ("LEASE_TTL_SECONDS", "3600"),
        ("MAX_STAGES", "4"),
        ("TOKEN_MODE", "self-signed"),
        ("TOKEN_SIGNER", "webcrypto"),
    ];
    let stack = Stack::start_in(&format!("regions-bench-{n}"), &regions, &vars);
    let api = stack.api();
    let created = api.create_broadcast(BROADCAST).await;
    assert_eq!(created.status, 200, "{created:?}");
    // Every region's first stage, and a warm isolate (key import, JIT).
    let names: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
    for region in &names {
        let started = Instant::now();
        loop {
            let body = json!({"userId": format!("first-{region}"), "broadcast": BROADCAST, "region": region});
            let a = api.post("/api/token/viewer", &body, None).await;
            if a.status == 200 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{region}: {a:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let warm = Load::Viewers {
        regions: names.clone(),
        prefix: "warm".into(),
    };
    drive(&api, warm, 200.min(requests), concurrency).await;
    let load = Load::Viewers {
        regions: names,
        prefix: "viewer".into(),
    };
    let storm = drive(&api, load, requests, concurrency).await;
    let leases = Arc::new(storm.leases.clone());
    let heartbeats = drive(&api, Load::Heartbeats { leases }, requests, concurrency).await;
    (storm, heartbeats)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let requests = env_usize("BENCH_REQUESTS", 10_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let counts: Vec<usize> = std::env::var("BENCH_REGIONS")
        .unwrap_or_else(|_| "1,2,4".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .ok()
                .filter(|n| (1..=REGIONS.len()).contains(n))
                .unwrap_or_else(|| panic!("BENCH_REGIONS: {s:?} is not 1..=4"))
        })
        .collect();
    let mut results = Vec::new();
    for &n in &counts {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        eprintln!("[bench] {n} region(s); load before: {}", load.trim());
        results.push((n, bench(n, requests, concurrency).await));
    }

    println!();
    println!(
        "join storm over 1, 2 and 4 regions: {requests} viewer tokens per run, {concurrency} concurrent clients, viewer i asks for region i mod n; this machine ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!("| regions | ok | tokens/s | p50 ms | p99 ms | seats per region (min–max) | bare DO counter/s | tokens / counter | errors |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (n, (storm, hb)) in &results {
        let spread: Vec<String> = storm
            .seats
            .iter()
            .map(|(r, s)| format!("{r} {s}"))
            .collect();
        let (min, max) = (
            storm.seats.values().min().copied().unwrap_or(0),
            storm.seats.values().max().copied().unwrap_or(0),
        );
        println!(
            "| {n} | {} | {:.0} | {:.1} | {:.1} | {} ({min}–{max}) | {:.0} | {:.2} | {} |",
            storm.ok,
            storm.rate(),
            percentile_ms(&storm.latencies, 50.0),
            percentile_ms(&storm.latencies, 99.0),
            spread.join(", "),
            hb.rate(),
            storm.rate() / hb.rate(),
            if storm.errors.is_empty() {
                "-".to_string()
            } else {
                format!("{:?}", storm.errors)
            }
        );
    }
    if let Some((_, (one, _))) = results.iter().find(|(n, _)| *n == 1) {
        println!();
        for (n, (storm, _)) in results.iter().filter(|(n, _)| *n != 1) {
            println!(
                "ratio {n} regions / 1 region: tokens/s {:.2}, p50 {:.2}, p99 {:.2}",
                storm.rate() / one.rate(),
                percentile_ms(&storm.latencies, 50.0) / percentile_ms(&one.latencies, 50.0),
                percentile_ms(&storm.latencies, 99.0) / percentile_ms(&one.latencies, 99.0),
            );
        }
    }
}
