//! The monitor binary against the real ivs-local (its SigV4 checks, its IVS-rate throttling
//! and its own counters at `/_local/stats`), with the scripted edge for the pools.
//!
//! Ignored by default: they need the ivs-local binary (`cargo build -p ivs-local`, same
//! `CARGO_TARGET_DIR`, or `IVS_LOCAL_BIN`); `STAGEFAN_MONITOR_STAGES=1000` makes the budget
//! test the 1,000-stage benchmark (about five minutes):
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

/// How many stages the budget test seeds: 120 in `make test` (about a minute), IVS's default
/// quota of 1,000 in `make bench` (`STAGEFAN_MONITOR_STAGES=1000`, about 5 minutes), whose
/// printed RSS and CPU are the figures in docs/benchmarks.md.
fn stage_count() -> u64 {
    std::env::var("STAGEFAN_MONITOR_STAGES")
        .ok()
        .map(|v| v.parse().expect("STAGEFAN_MONITOR_STAGES is a number"))
        .unwrap_or(120)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the ivs-local binary; about a minute (5 with 1,000 stages)"]
async fn with_many_stages_in_ivs_local_the_monitor_stays_within_its_budget() {
    let count = stage_count();
    // Room for them and the orphan below (IVS's default quota is 1,000).
    let quota = (count + 1).to_string();
    let (_ivs_local, ivs_url) = start_ivs_local(&[("IVS_LOCAL_STAGE_QUOTA", quota.as_str())]).await;
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
        json!({"stagefan:managed": "true", "stagefan:broadcast": "alpha", "stagefan:deployment": DEPLOYMENT}),
    )
    .await;
    let started = std::time::Instant::now();
    // The stages at 4 CreateStage/s (IVS's limit is 5), each added to a pool as it lands.
    for n in 0..count {
        let t = std::time::Instant::now();
        let broadcast = if n % 2 == 0 { "alpha" } else { "beta" };
        let a = create_stage(
            &ivs_url,
            &format!("bench-{n}"),
            json!({"stagefan:managed": "true", "stagefan:broadcast": broadcast, "stagefan:deployment": DEPLOYMENT}),
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
    // Let it sample a while longer with all of them in place: at least three rounds, and
    // long enough to sample every stage twice at the budget of 2 GetStage/s.
    let tail = Duration::from_secs(60.min(20.max(count)));
    tokio::time::sleep(tail).await;
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
        "monitor with {count} stages: seeded in {:.0} s, ran {wall:.0} s; RSS {rss_kb} KiB, peak RSS {hwm_kb} KiB, CPU {cpu_s:.2} s = {:.2}% of one core; {samples} stage samples",
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
        op(&stats, "ListStages")["requests"].as_u64().unwrap() >= 5,
        "full listings"
    );
    let observed: std::collections::HashSet<String> = edge
        .observations()
        .into_iter()
        .flat_map(|(_, o)| o.stages)
        .map(|s| s.stage_arn)
        .collect();
    assert_eq!(observed.len() as u64, count, "every stage observed");
    assert_eq!(
        op(&stats, "DeleteStage")["requests"],
        1,
        "the orphan and nothing else is deleted"
    );
    let (status, _) = ivs_call(&ivs_url, "GetStage", json!({"arn": orphan})).await;
    assert_eq!(status, 404, "the orphan was collected");
    assert_eq!(
        series(&metrics, "stagefan_ivs_stages{region=\"us-east-1\"}"),
        Some(count as f64)
    );
    assert!(samples >= count as f64);
    assert!(!metrics.contains("status=\"429\""));
    // Memory stays small: under 64 MiB resident (with 1,000 stages too).
    assert!(hwm_kb < 64 * 1024, "peak RSS {hwm_kb} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the ivs-local binary"]
async fn an_orphan_in_ivs_local_is_collected_and_nothing_else() {
    let (_ivs_local, ivs_url) = start_ivs_local(&[]).await;
    let ours = |b: &str| json!({"stagefan:managed": "true", "stagefan:broadcast": b, "stagefan:deployment": DEPLOYMENT});
    let known = create_stage(&ivs_url, "known", ours("b")).await;
    let orphan = create_stage(&ivs_url, "orphan", ours("ghost")).await;
    let foreign = create_stage(&ivs_url, "someone-elses", json!({"team": "other"})).await;
    // Another stagefan deployment on the same account: its pools are behind another edge, so
    // this monitor knows none of them; its stages look exactly like orphans but for the tag.
    let other_deployment = create_stage(
        &ivs_url,
        "ghost-2",
        json!({"stagefan:managed": "true", "stagefan:broadcast": "ghost", "stagefan:deployment": "staging"}),
    )
    .await;
    // A stagefan stage from before the deployment tag: whose it is cannot be told, so it stays.
    let untagged = create_stage(
        &ivs_url,
        "ghost-3",
        json!({"stagefan:managed": "true", "stagefan:broadcast": "ghost"}),
    )
    .await;
    let edge = ScriptedEdge::default();
    edge.put_pool(snapshot(
        "b",
        1,
        vec![stage(1, &known, StageState::Live, 0, 50)],
    ));
    let edge_url = format!("http://{}", edge.start().await);
    let port = free_port();
    let _monitor = start_monitor_with(&ivs_url, &edge_url, port, "1s", &["--orphan-grace", "3s"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = ivs_call(&ivs_url, "GetStage", json!({"arn": orphan})).await;
        if status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "orphan not collected");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A few more rounds after the orphan went: the others were candidates as long.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for a in [&known, &foreign, &other_deployment, &untagged] {
        let (status, _) = ivs_call(&ivs_url, "GetStage", json!({"arn": a})).await;
        assert_eq!(status, 200, "{a} kept");
    }
    // The delete took its slot from the edge's account-wide budget.
    let slots = edge.0.lock().unwrap().slots.clone();
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert_eq!(slots[0].operation, "DeleteStage");
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
            json!({"stagefan:managed": "true", "stagefan:broadcast": "b", "stagefan:deployment": DEPLOYMENT}),
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
        "stagefan_ivs_requests_total{operation=\"ListStages\",region=\"us-east-1\",status=\"429\"}",
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
        "stagefan_ivs_requests_total{operation=\"ListStages\",region=\"us-east-1\",status=\"200\"}",
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
        "stagefan_ivs_requests_total{operation=\"ListStages\",region=\"us-east-1\",status=\"200\"}",
    )
    .unwrap();
    assert!(after > before, "it recovered and samples again");
    assert_eq!(series(&later, "stagefan_round_success"), Some(1.0));
    drop(monitor);
}

/// A str0m subscriber connected to an ivs-local stage over WHEP-style signaling, its ICE and
/// DTLS kept alive on a thread until dropped: a participant IVS lists as CONNECTED.
struct Viewer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Viewer {
    async fn join(whip: &str, token: &str) -> Viewer {
        use str0m::change::SdpAnswer;
        use str0m::media::{Direction, MediaKind};
        use str0m::{Candidate, Rtc};
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rtc = Rtc::new(std::time::Instant::now());
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let mut sdp = rtc.sdp_api();
        sdp.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = sdp.apply().unwrap();
        let answer = reqwest::Client::new()
            .post(format!("{whip}/subscribe"))
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .body(offer.to_sdp_string())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 201, "subscribe refused");
        let answer = SdpAnswer::from_sdp_string(&answer.text().await.unwrap()).unwrap();
        rtc.sdp_api().accept_answer(pending, answer).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || drive(rtc, socket, &stopped));
        Viewer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs a peer's I/O: sends what it transmits, feeds it what arrives and its timeouts.
fn drive(mut rtc: str0m::Rtc, socket: std::net::UdpSocket, stop: &std::sync::atomic::AtomicBool) {
    use std::time::Instant;
    use str0m::net::{Protocol, Receive};
    use str0m::{Input, Output};
    let mut buf = vec![0u8; 2000];
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let deadline = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        socket.set_read_timeout(Some(wait)).unwrap();
        buf.resize(2000, 0);
        let input = match socket.recv_from(&mut buf) {
            Ok((n, source)) => {
                buf.truncate(n);
                let Ok(contents) = buf.as_slice().try_into() else {
                    continue;
                };
                Input::Receive(
                    Instant::now(),
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: socket.local_addr().unwrap(),
                        contents,
                    },
                )
            }
            Err(_) => Input::Timeout(Instant::now()),
        };
        if rtc.handle_input(input).is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the ivs-local binary"]
async fn an_orphan_with_a_connected_viewer_in_ivs_local_is_kept_until_the_viewer_leaves() {
    let (_ivs_local, ivs_url) = start_ivs_local(&[("IVS_LOCAL_NO_MEDIA", "false")]).await;
    let ours = json!({"stagefan:managed": "true", "stagefan:broadcast": "ghost", "stagefan:deployment": DEPLOYMENT});
    let (status, created) = ivs_call(
        &ivs_url,
        "CreateStage",
        json!({"name": "watched", "tags": ours}),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let watched = created["stage"]["arn"].as_str().unwrap().to_string();
    let whip = created["stage"]["endpoints"]["whip"]
        .as_str()
        .unwrap()
        .to_string();
    let empty = create_stage(&ivs_url, "empty", ours.clone()).await;
    let (status, token) = ivs_call(
        &ivs_url,
        "CreateParticipantToken",
        json!({"stageArn": watched, "capabilities": ["SUBSCRIBE"]}),
    )
    .await;
    assert_eq!(status, 200, "{token}");
    let viewer = Viewer::join(&whip, token["participantToken"]["token"].as_str().unwrap()).await;

    let edge = ScriptedEdge::default();
    edge.put_pool(snapshot("b", 1, vec![]));
    let edge_url = format!("http://{}", edge.start().await);
    let port = free_port();
    let _monitor = start_monitor_with(&ivs_url, &edge_url, port, "1s", &["--orphan-grace", "2s"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = ivs_call(&ivs_url, "GetStage", json!({"arn": empty})).await;
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the empty orphan was not collected"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The watched one was a candidate as long, and is looked at every listing pass.
    let refused = "stagefan_scaling_actions_total{kind=\"orphan_delete\",outcome=\"refused\"}";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = wait_for(
            &format!("http://127.0.0.1:{port}/metrics"),
            200,
            Duration::from_secs(5),
        )
        .await;
        if series(&metrics, refused).unwrap_or(0.0) >= 2.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refused:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (status, _) = ivs_call(&ivs_url, "GetStage", json!({"arn": watched})).await;
    assert_eq!(status, 200, "a stage with a connected viewer was deleted");

    // The viewer leaves (its media session ends by ICE consent timeout): the stage is
    // collected at a later pass.
    drop(viewer);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = ivs_call(&ivs_url, "GetStage", json!({"arn": watched})).await;
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the left stage was not collected"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
