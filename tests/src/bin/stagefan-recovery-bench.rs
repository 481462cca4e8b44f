//! Benchmark, not a test: how fast the pool seats a storm and comes back from a worker
//! restart, through the local stack. The tests check that every seat is given exactly once and
//! none is lost; how fast is measured here, beside the figures the tests used to assert.
//!
//!   make bench   (or: cargo run --release -p stagefan-tests --bin stagefan-recovery-bench)
//!
//! 1. Join storm on a fresh pool (capacity 10, 12 stages at most, 300 concurrent viewers, as
//!    `tests/tests/edge.rs`): the share of the 120 seats given during the storm itself, while
//!    the pool creates stages at IVS's 5 per second (former test threshold: 90 %).
//! 2. A worker restart (SIGUSR1 to the stack: a new workerd on the same storage) in the middle
//!    of a 100-viewer storm: how long the worker was away, and when the last viewer was seated
//!    (former test threshold in tests/tests/replication_restart.rs: a restart under 24 s).
//!
//! BENCH_ROUNDS (default 3) repeats each part on its own broadcast.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stagefan_tests::{Api, Stack};

const CAPACITY: usize = 10;
const MAX_STAGES: usize = 12;

async fn first_seat(api: &Api, broadcast: &str) {
    for _ in 0..300 {
        if api.viewer(broadcast, "first").await.status == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no first seat in {broadcast}");
}

/// Seats given during a storm of `storm` concurrent joins on a fresh pool.
async fn storm_round(api: &Api, broadcast: &str, storm: usize) -> (usize, f64) {
    assert_eq!(api.create_broadcast(broadcast).await.status, 200);
    first_seat(api, broadcast).await;
    let started = Instant::now();
    let tasks: Vec<_> = (0..storm)
        .map(|i| {
            let (api, b) = (api.clone(), broadcast.to_string());
            tokio::spawn(async move { api.viewer(&b, &format!("storm-{i}")).await.status })
        })
        .collect();
    let mut seated = 1;
    for t in tasks {
        if t.await.expect("viewer") == 200 {
            seated += 1;
        }
    }
    (seated, started.elapsed().as_secs_f64())
}

/// A viewer asking until seated (as the page does); when it was seated.
async fn keep_asking(api: Api, broadcast: String, user: String) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let a = api.viewer(&broadcast, &user).await;
        if a.status == 200 {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{user} never seated: {a:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A restart 1.5 s into a 100-viewer storm: (restart seconds, last seat after the restart began).
async fn restart_round(stack: &Arc<Stack>, api: &Api, broadcast: &str) -> (f64, f64) {
    assert_eq!(api.create_broadcast(broadcast).await.status, 200);
    first_seat(api, broadcast).await;
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (api, b) = (api.clone(), broadcast.to_string());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(60 * i)).await;
                keep_asking(api, b, format!("restart-{i}")).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let began = Instant::now();
    let s = stack.clone();
    tokio::task::spawn_blocking(move || s.restart_worker())
        .await
        .expect("restart");
    let restart = began.elapsed().as_secs_f64();
    let mut last = began;
    for t in tasks {
        last = last.max(t.await.expect("viewer"));
    }
    (restart, (last - began).as_secs_f64())
}

fn summary(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let list: Vec<String> = values.iter().map(|x| format!("{x:.1}")).collect();
    format!(
        "min {:.1}, median {:.1}, max {:.1} ({})",
        v[0],
        v[v.len() / 2],
        v[v.len() - 1],
        list.join(", ")
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let stack = Arc::new(Stack::start(
        "recovery-bench",
        &[
            ("STAGE_CAPACITY", &CAPACITY.to_string()),
            ("MAX_STAGES", &MAX_STAGES.to_string()),
            ("LEASE_TTL_SECONDS", "600"),
        ],
    ));
    let api = stack.api();
    let seats = CAPACITY * MAX_STAGES;

    let mut shares = Vec::new();
    println!();
    println!("join storm on a fresh pool: 300 concurrent viewers, {CAPACITY} seats x {MAX_STAGES} stages");
    for r in 0..rounds {
        let (seated, secs) = storm_round(&api, &format!("storm{r}"), 300).await;
        let share = 100.0 * seated as f64 / seats as f64;
        println!("  round {r}: {seated} of {seats} seats given during the storm ({share:.1} %), storm answered in {secs:.1} s");
        shares.push(share);
    }
    println!(
        "  seats given during the storm, %: {} (former test threshold: 90 %)",
        summary(&shares)
    );

    let (mut restarts, mut lasts) = (Vec::new(), Vec::new());
    println!();
    println!("worker restart 1.5 s into a 100-viewer storm (capacity {CAPACITY})");
    for r in 0..rounds {
        let (restart, last) = restart_round(&stack, &api, &format!("restart{r}")).await;
        println!("  round {r}: worker away {restart:.1} s; every viewer seated {last:.1} s after the restart began");
        restarts.push(restart);
        lasts.push(last);
    }
    println!(
        "  worker restart, s: {} (former test threshold: 24 s)",
        summary(&restarts)
    );
    println!(
        "  last viewer seated after the restart began, s: {}",
        summary(&lasts)
    );
}
