//! The presence benchmark (not a test): the heartbeats of many seated viewers beside a join
//! storm, through the local stack, once with every heartbeat at the broadcast's pool
//! (`PRESENCE=pool`, the design before) and once with heartbeats at each stage's `StageSeats`
//! (`PRESENCE=stages`), in one run on this machine. Every object's request count comes from
//! the object itself (`GET /api/admin/broadcasts/{id}/presence`), read before and after the
//! measured window: the pool's own request rate and each stage object's, beside the totals
//! and the join p50/p99. All objects share one workerd thread here; on Cloudflare each object
//! has its own, so the per-object rates are what decide scale (docs/presence.md).
//!
//!   cargo run --release -p stagefan-tests --bin stagefan-presence-bench
//!   PRESENCE_BENCH_SEATED=4000 PRESENCE_BENCH_JOINS=3000 PRESENCE_BENCH_HB_CLIENTS=48
//!   PRESENCE_BENCH_JOIN_CLIENTS=16 PRESENCE_BENCH_STAGES=60 (the defaults) to change the load.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stagefan_tests::{percentile_ms, Api, Stack, ADMIN_KEY};
use tokio::sync::Mutex;

/// Seats per stage (IVS's default is 50; 100 keeps the stage count of the run modest).
const CAPACITY: usize = 100;
/// The heartbeat interval of the pages: `LEASE_TTL_SECONDS` / 3 at the default TTL.
const HEARTBEAT_INTERVAL_S: f64 = 20.0;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    ok: Vec<Duration>,
    errors: std::collections::BTreeMap<String, usize>,
    leases: Vec<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.ok.extend(other.ok);
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.leases.extend(other.leases);
    }
}

/// `n` new viewers at `concurrency`: their answers.
async fn seat(api: &Api, b: &str, prefix: &str, n: usize, concurrency: usize) -> (Tally, f64) {
    let next = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (api, next, all, b, prefix) = (
            api.clone(),
            next.clone(),
            all.clone(),
            b.to_string(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = Tally::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let a = api.viewer(&b, &format!("{prefix}-{i}")).await;
                if a.status == 200 {
                    local.ok.push(a.elapsed);
                    local
                        .leases
                        .push(a.body["leaseId"].as_str().unwrap_or_default().to_string());
                } else {
                    *local
                        .errors
                        .entry(format!("{} {}", a.status, a.code()))
                        .or_default() += 1;
                }
            }
            all.lock().await.merge(local);
        }));
    }
    for t in tasks {
        t.await.expect("seat task");
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut tally = std::mem::take(&mut *all.lock().await);
    tally.ok.sort();
    (tally, seconds)
}

/// Heartbeats over `leases` at `concurrency` until `stop`.
async fn heartbeats(
    api: &Api,
    leases: Arc<Vec<String>>,
    concurrency: usize,
    stop: Arc<AtomicBool>,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (api, next, all, leases, stop) = (
            api.clone(),
            next.clone(),
            all.clone(),
            leases.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let a = api.lease_call("heartbeat", &leases[i % leases.len()]).await;
                if a.status == 200 {
                    local.ok.push(a.elapsed);
                } else {
                    *local
                        .errors
                        .entry(format!("{} {}", a.status, a.code()))
                        .or_default() += 1;
                }
            }
            all.lock().await.merge(local);
        }));
    }
    for t in tasks {
        t.await.expect("heartbeat task");
    }
    let mut tally = std::mem::take(&mut *all.lock().await);
    tally.ok.sort();
    tally
}

/// Every object's counters: (pool requests, pool requests by call, per stage: requests).
async fn counters(api: &Api, b: &str) -> (u64, Value, Vec<(u64, u64)>) {
    let a = api
        .get(
            &format!("/api/admin/broadcasts/{b}/presence"),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(a.status, 200, "presence counters: {a:?}");
    let pool = a.body["pool"]["requests"].as_u64().unwrap_or(0);
    let stages = a.body["stages"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|s| {
                    (
                        s["stage"].as_u64().unwrap_or(0),
                        s["counters"]["requests"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (pool, a.body["pool"]["byCall"].clone(), stages)
}

struct Outcome {
    mode: &'static str,
    seconds: f64,
    joins: Tally,
    beats: Tally,
    pool_rate: f64,
    pool_by_call: Vec<(String, f64)>,
    stage_rates: Vec<f64>,
    viewers: u64,
    over_capacity: usize,
}

async fn run(mode: &'static str) -> Outcome {
    let seated_n = env_or("PRESENCE_BENCH_SEATED", 4000);
    let joins_n = env_or("PRESENCE_BENCH_JOINS", 3000);
    let hb_clients = env_or("PRESENCE_BENCH_HB_CLIENTS", 48);
    let join_clients = env_or("PRESENCE_BENCH_JOIN_CLIENTS", 16);
    let stages = env_or("PRESENCE_BENCH_STAGES", 75).to_string();
    let capacity = CAPACITY.to_string();
    let vars: Vec<(&str, &str)> = vec![
        ("PRESENCE", mode),
        ("STAGE_CAPACITY", &capacity),
        ("MIN_STAGES", &stages),
        ("MAX_STAGES", &stages),
        ("LEASE_TTL_SECONDS", "3600"),
        ("ADMISSION_CONTROL", "off"),
    ];
    let stack = Stack::start(&format!("presence-bench-{mode}"), &vars);
    let api = stack.api();
    let b = "bench";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    // Every stage first (MIN_STAGES: IVS's 5 CreateStage/s), so that the storm measures
    // seats, not creates.
    let want: usize = stages.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Each ensure starts the next creates (at most a few in flight).
        let snap = api.create_broadcast(b).await.body;
        let ready = snap["stages"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter(|s| s["state"] == "warming" || s["state"] == "live")
                    .count()
            })
            .unwrap_or(0);
        if ready >= want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stages not created: {ready}/{want}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (seated, _) = seat(&api, b, "seated", seated_n, 32).await;
    assert!(
        seated.errors.is_empty(),
        "seating the audience: {:?}",
        seated.errors
    );
    let leases = Arc::new(seated.leases);
    // Warm the heartbeat path.
    let stop = Arc::new(AtomicBool::new(false));
    let warm = tokio::spawn({
        let (api, leases, stop) = (api.clone(), leases.clone(), stop.clone());
        async move { heartbeats(&api, leases, hb_clients, stop).await }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    warm.await.unwrap();

    // The measured window: heartbeats of the seated audience beside a join storm.
    let (pool_before, by_call_before, stages_before) = counters(&api, b).await;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let beating = tokio::spawn({
        let (api, leases, stop) = (api.clone(), leases.clone(), stop.clone());
        async move { heartbeats(&api, leases, hb_clients, stop).await }
    });
    let (joins, _) = seat(&api, b, "storm", joins_n, join_clients).await;
    stop.store(true, Ordering::Relaxed);
    let beats = beating.await.unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let (pool_after, by_call_after, stages_after) = counters(&api, b).await;

    let before: std::collections::BTreeMap<u64, u64> = stages_before.into_iter().collect();
    let stage_rates: Vec<f64> = stages_after
        .iter()
        .map(|(id, n)| (n - before.get(id).copied().unwrap_or(0)) as f64 / seconds)
        .collect();
    let mut pool_by_call: Vec<(String, f64)> = by_call_after
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let was = by_call_before[k].as_u64().unwrap_or(0);
                    (k.clone(), (v.as_u64().unwrap_or(0) - was) as f64 / seconds)
                })
                .filter(|(_, r)| *r > 0.0)
                .collect()
        })
        .unwrap_or_default();
    pool_by_call.sort_by(|a, b| b.1.total_cmp(&a.1));
    let snap = api.snapshot(b).await;
    let over_capacity = snap["stages"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|s| s["load"].as_u64() > s["capacity"].as_u64())
                .count()
        })
        .unwrap_or(0);
    Outcome {
        mode,
        seconds,
        joins,
        beats,
        pool_rate: (pool_after - pool_before) as f64 / seconds,
        pool_by_call,
        stage_rates,
        viewers: snap["viewers"].as_u64().unwrap_or(0),
        over_capacity,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // PRESENCE_BENCH_MODES=stages,pool runs them in another order (or one alone).
    let modes = std::env::var("PRESENCE_BENCH_MODES").unwrap_or_else(|_| "pool,stages".into());
    let mut outcomes = Vec::new();
    for mode in modes.split(',') {
        let mode: &'static str = match mode.trim() {
            "pool" => "pool",
            "stages" => "stages",
            other => panic!("PRESENCE_BENCH_MODES: {other:?} is not pool or stages"),
        };
        outcomes.push(run(mode).await);
    }
    println!();
    println!(
        "presence: heartbeats of {} seated viewers beside a join storm of {}, stage capacity \
         {CAPACITY}, on this machine ({} cores, every object on one workerd thread)",
        env_or("PRESENCE_BENCH_SEATED", 4000),
        env_or("PRESENCE_BENCH_JOINS", 3000),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!();
    println!(
        "| presence | window s | heartbeats/s | hb p50/p99 ms | joins/s | join p50/p99 ms | \
         pool req/s | stage objects | stage req/s max / mean | all objects req/s | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let stage_sum: f64 = o.stage_rates.iter().sum();
        let stage_max = o.stage_rates.iter().copied().fold(0.0, f64::max);
        let stage_mean = if o.stage_rates.is_empty() {
            0.0
        } else {
            stage_sum / o.stage_rates.len() as f64
        };
        let mut errors = o.joins.errors.clone();
        for (k, v) in &o.beats.errors {
            *errors.entry(format!("hb {k}")).or_default() += v;
        }
        println!(
            "| {} | {:.1} | {:.0} | {:.0} / {:.0} | {:.0} | {:.0} / {:.0} | {:.0} | {} | {:.1} / {:.1} | {:.0} | {} |",
            o.mode,
            o.seconds,
            o.beats.ok.len() as f64 / o.seconds,
            percentile_ms(&o.beats.ok, 50.0),
            percentile_ms(&o.beats.ok, 99.0),
            o.joins.ok.len() as f64 / o.seconds,
            percentile_ms(&o.joins.ok, 50.0),
            percentile_ms(&o.joins.ok, 99.0),
            o.pool_rate,
            o.stage_rates.len(),
            stage_max,
            stage_mean,
            o.pool_rate + stage_sum,
            if errors.is_empty() {
                "-".to_string()
            } else {
                format!("{errors:?}")
            }
        );
    }
    println!();
    for o in &outcomes {
        let calls: Vec<String> = o
            .pool_by_call
            .iter()
            .map(|(k, r)| format!("{k} {r:.1}/s"))
            .collect();
        println!(
            "{}: the pool took {} | {} viewers seated after the run, {} stages over capacity",
            o.mode,
            calls.join(", "),
            o.viewers,
            o.over_capacity
        );
    }
    // What one broadcast holds: the pool's requests per viewer per second at the pages'
    // heartbeat interval, against the most requests per second the pool object took here.
    let pool = outcomes.iter().find(|o| o.mode == "pool");
    let stages = outcomes.iter().find(|o| o.mode == "stages");
    if let (Some(pool), Some(stages)) = (pool, stages) {
        let ceiling = pool.pool_rate.max(stages.pool_rate);
        println!();
        println!(
            "the pool object's ceiling here: {ceiling:.0} requests/s (the busiest pool of the run)"
        );
        println!(
            "pool presence: every viewer costs the pool 1/{HEARTBEAT_INTERVAL_S:.0} request/s \
             -> one broadcast holds at most {:.0} viewers (before any join)",
            ceiling * HEARTBEAT_INTERVAL_S
        );
        let stage_max = stages.stage_rates.iter().copied().fold(0.0, f64::max);
        println!(
            "stage presence: a heartbeat costs the pool nothing; each stage object takes \
             capacity/{HEARTBEAT_INTERVAL_S:.0} heartbeats/s ({:.1}/s at {CAPACITY} seats; the \
             busiest one took {stage_max:.0}/s here), the pool 1 sync per stage per 30 s -> \
             the pool's ceiling bounds a broadcast at {:.0} stages ({:.0} viewers at \
             {CAPACITY} seats) before joins, and a stage object bounds one stage at {:.0} seats",
            CAPACITY as f64 / HEARTBEAT_INTERVAL_S,
            ceiling * 30.0,
            ceiling * 30.0 * CAPACITY as f64,
            ceiling * HEARTBEAT_INTERVAL_S
        );
        println!(
            "pool requests/s during the storm: pool presence {:.0}, stage presence {:.0} ({:.1}x fewer)",
            pool.pool_rate,
            stages.pool_rate,
            pool.pool_rate / stages.pool_rate.max(1e-9)
        );
    }
}
