//! The monitor binary against the real ivs-local (its SigV4 checks, its IVS-rate throttling
//! and its own counters at `/_local/stats`), with the scripted edge for the pools.
//!
//! Ignored by default: they need the ivs-local binary (`cargo build -p ivs-local`, same
//! `CARGO_TARGET_DIR`, or `IVS_LOCAL_BIN`), and the 1,000-stage run takes about five minutes:
//!
//!     cargo build -p ivs-local && cargo test -p stagefan-monitor --test ivs_local -- --ignored --nocapture

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use stagefan_core::pool::StageState;

fn op<'a>(stats: &'a Value, name: &str) -> &'a Value {
    &stats["operations"][name]
}

fn proc_figures(pid: u32) -> (u64, u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces): utime is 14th, stime 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let hz = 100.0; // USER_HZ on Linux
    (kb("VmRSS:"), kb("VmHWM:"), ticks / hz)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the ivs-local binary; about 5 minutes"]
async fn with_1000_stages_in_ivs_local_the_monitor_stays_within_its_budget() {
    // Room for the 1,000 and the orphan below (IVS's default quota is 1,000).
    let (_ivs_local, ivs_url) = start_ivs_local(&[("IVS_LOCAL_STAGE_QUOTA", "1001")]).await;
    let edge = ScriptedEdge::default();
    edge.put_pool(snapshot("alpha", 1, vec![]));
    edge.put_pool(snapshot("beta", 1, vec![]));
    let edge_url = format!("http://{}", edge.start().await);
    let port = free_port();
    let monitor = start_monitor_with(
        &ivs_url,
        &edge_url,
        port,
        "5s",
        &[
            "--ivs-budget",
            "2",
            "--scale-down-grace",
            "1h",
            // Short enough that a pool's stage taken for an orphan would be deleted during the
            // run (an hour would hide it), longer than a round (a stage listed in IVS before
            // its pool shows it is not an orphan).
            "--orphan-grace",
            "30s",
        ],
    );
    let pid = monitor.0.id();
    // One real orphan among them (managed, in no pool): the collector is at work in this run.
    let orphan = create_stage(
        &ivs_url,
        "bench-orphan",
        json!({"stagefan:managed": "true", "stagefan:broadcast": "alpha"}),
    )
    .await;
    let started = std::time::Instant::now();
    // 1,000 stages at 4 CreateStage/s (IVS's limit is 5), each added to a pool as it lands.
    for n in 0..1000u64 {
        let t = std::time::Instant::now();
        let broadcast = if n % 2 == 0 { "alpha" } else { "beta" };
        let a = create_stage(
            &ivs_url,
            &format!("bench-{n}"),
            json!({"stagefan:managed": "true", "stagefan:broadcast": broadcast}),
        )
        .await;
        edge.with_pool(broadcast, |p, _| {
            p.stages.push(stage(n, &a, StageState::Live, 0, 50));
        });
        if let Some(rest) = Duration::from_millis(250).checked_sub(t.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    let seeded = started.elapsed();
    // Let it sample a while longer with all 1,000 in place.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let (rss_kb, hwm_kb, cpu_s) = proc_figures(pid);
    let wall = started.elapsed().as_secs_f64();

    let stats = local_stats(&ivs_url).await;
    let metrics = wait_for(
        &format!("http://127.0.0.1:{port}/metrics"),
        200,
        Duration::from_secs(5),
    )
    .await;
    let samples = series(&metrics, "stagefan_ivs_stage_samples_total").unwrap_or(0.0);
    println!(
        "monitor with 1000 stages: seeded in {:.0} s, ran {wall:.0} s; RSS {rss_kb} KiB, peak RSS {hwm_kb} KiB, CPU {cpu_s:.2} s = {:.2}% of one core; {samples} stage samples",
        seeded.as_secs_f64(),
        100.0 * cpu_s / wall
    );
    for name in ["ListStages", "GetStage", "ListParticipants", "DeleteStage"] {
        let o = op(&stats, name);
        println!("ivs-local {name}: {o}");
        assert_eq!(o["throttled"], 0, "{name} throttled: {o}");
        assert_eq!(o["refusedAuth"], 0, "{name} refused: {o}");
        assert!(
            o["maxRequestsPerSecond"].as_u64().unwrap() <= 2,
            "{name} over the budget of 2/s: {o}"
        );
    }
    assert!(
        op(&stats, "ListStages")["requests"].as_u64().unwrap() >= 10,
        "full listings"
    );
    let observed: std::collections::HashSet<String> = edge
        .observations()
        .into_iter()
        .flat_map(|(_, o)| o.stages)
        .map(|s| s.stage_arn)
        .collect();
    assert_eq!(observed.len(), 1000, "every stage observed");
    assert_eq!(
        op(&stats, "DeleteStage")["requests"],
        1,
        "the orphan and nothing else is deleted"
    );
    let (status, _) = ivs_call(&ivs_url, "GetStage", json!({"arn": orphan})).await;
    assert_eq!(status, 404, "the orphan was collected");
    assert_eq!(series(&metrics, "stagefan_ivs_stages"), Some(1000.0));
    assert!(samples >= 1000.0);
    assert!(!metrics.contains("status=\"429\""));
    // Memory stays small: under 64 MiB resident with 1,000 stages.
    assert!(hwm_kb < 64 * 1024, "peak RSS {hwm_kb} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the ivs-local binary"]
async fn an_orphan_in_ivs_local_is_collected_and_nothing_else() {
    let (_ivs_local, ivs_url) = start_ivs_local(&[]).await;
    let known = create_stage(
        &ivs_url,
        "known",
        json!({"stagefan:managed": "true", "stagefan:broadcast": "b"}),
    )
    .await;
    let orphan = create_stage(
        &ivs_url,
        "orphan",
        json!({"stagefan:managed": "true", "stagefan:broadcast": "ghost"}),
    )
    .await;
    let foreign = create_stage(&ivs_url, "someone-elses", json!({"team": "other"})).await;
    let edge = ScriptedEdge::default();
    edge.put_pool(snapshot(
        "b",
        1,
        vec![stage(1, &known, StageState::Live, 0, 50)],
    ));
    let edge_url = format!("http://{}", edge.start().await);
    let port = free_port();
    let _monitor = start_monitor_with(
        &ivs_url,
        &edge_url,
        port,
        "1s",
        &["--orphan-grace", "3s", "--scale-down-grace", "1h"],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = ivs_call(&ivs_url, "GetStage", json!({"arn": orphan})).await;
        if status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "orphan not collected");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for a in [&known, &foreign] {
        let (status, _) = ivs_call(&ivs_url, "GetStage", json!({"arn": a})).await;
        assert_eq!(status, 200, "{a} kept");
    }
    let stats = local_stats(&ivs_url).await;
    assert_eq!(op(&stats, "DeleteStage")["requests"], 1);
    let metrics = wait_for(
        &format!("http://127.0.0.1:{port}/metrics"),
        200,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        series(
            &metrics,
            "stagefan_scaling_actions_total{kind=\"orphan_delete\",outcome=\"done\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the ivs-local binary"]
async fn when_someone_else_eats_the_ivs_rate_the_monitor_backs_off_and_keeps_going() {
    let (_ivs_local, ivs_url) = start_ivs_local(&[]).await;
    let mut stages = Vec::new();
    for n in 0..10u64 {
        let a = create_stage(
            &ivs_url,
            &format!("s{n}"),
            json!({"stagefan:managed": "true", "stagefan:broadcast": "b"}),
        )
        .await;
        stages.push(stage(n, &a, StageState::Live, 0, 50));
    }
    let edge = ScriptedEdge::default();
    edge.put_pool(snapshot("b", 1, stages));
    let edge_url = format!("http://{}", edge.start().await);
    let port = free_port();
    let monitor = start_monitor_with(&ivs_url, &edge_url, port, "1s", &["--ivs-budget", "5"]);
    wait_for(
        &format!("http://127.0.0.1:{port}/ready"),
        200,
        Duration::from_secs(30),
    )
    .await;
    // Another client of the same account spends ListStages' whole rate for 10 s.
    let hog = tokio::spawn({
        let ivs_url = ivs_url.clone();
        async move {
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < end {
                let _ = ivs_call(&ivs_url, "ListStages", json!({"maxResults": 1})).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    hog.await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = wait_for(
        &format!("http://127.0.0.1:{port}/metrics"),
        200,
        Duration::from_secs(5),
    )
    .await;
    let throttled = series(
        &metrics,
        "stagefan_ivs_requests_total{operation=\"ListStages\",status=\"429\"}",
    )
    .unwrap_or(0.0);
    assert!(throttled >= 1.0, "the monitor met throttling");
    let stats = local_stats(&ivs_url).await;
    // The monitor slowed down: with its pause doubling after each 429 (0.5-1 s, 1-2 s, 2-4 s,
    // 4-8 s) it meets at most about 5 of them in 10 s, where one call a round (1 s) would
    // have met 10.
    assert!(throttled <= 7.0, "{throttled} throttled calls");
    assert!(op(&stats, "ListStages")["throttled"].as_u64().unwrap() >= throttled as u64);
    let before = series(
        &metrics,
        "stagefan_ivs_requests_total{operation=\"ListStages\",status=\"200\"}",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = wait_for(
        &format!("http://127.0.0.1:{port}/metrics"),
        200,
        Duration::from_secs(5),
    )
    .await;
    let after = series(
        &later,
        "stagefan_ivs_requests_total{operation=\"ListStages\",status=\"200\"}",
    )
    .unwrap();
    assert!(after > before, "it recovered and samples again");
    assert_eq!(series(&later, "stagefan_round_success"), Some(1.0));
    drop(monitor);
}
