//! The real binary (`CARGO_BIN_EXE_stagefan-monitor`) against the scripted IVS and edge:
//! `/live`, `/ready`, `promtool check metrics` on its exposition, a real Prometheus server
//! scraping it, and graceful shutdown on SIGTERM. Needs Debian's `prometheus` package
//! (`/usr/bin/prometheus`, `/usr/bin/promtool`).

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;
use stagefan_core::pool::StageState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition_and_prometheus_scrapes_the_expected_series() {
    let promtool = tool("promtool");
    let prometheus = tool("prometheus");
    let (_ivs, _edge, ivs_url, edge_url) = scripted_stack().await;
    let port = free_port();
    let _monitor = start_monitor(&ivs_url, &edge_url, port, "1s");
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{base}/live"), 200, Duration::from_secs(30)).await;
    wait_for(&format!("{base}/ready"), 200, Duration::from_secs(30)).await;
    // Two rounds so that both stages have been sampled.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let exposition = wait_for(&format!("{base}/metrics"), 200, Duration::from_secs(5)).await;
    assert!(exposition.contains("# HELP stagefan_joins_total "));
    assert!(exposition.contains("# TYPE stagefan_joins_total counter"));
    assert!(exposition.contains("# TYPE stagefan_ivs_request_duration_seconds histogram"));
    assert_eq!(
        series(
            &exposition,
            "stagefan_joins_total{broadcast=\"default\",region=\"us-east-1\"}"
        ),
        Some(42.0)
    );

    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics: {report}");
    assert!(report.trim().is_empty(), "promtool lint findings: {report}");

    // A real Prometheus scraping the monitor every second.
    let dir = temp_dir("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: stagefan-monitor\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let _prom = Guard(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    let api = format!("http://127.0.0.1:{prom_port}/api/v1/query");
    let query = |q: &'static str| {
        let api = api.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(r) = reqwest::Client::new()
                    .get(&api)
                    .query(&[("query", q)])
                    .send()
                    .await
                {
                    if let Ok(v) = r.json::<Value>().await {
                        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
                        if !result.is_empty() {
                            return result;
                        }
                    }
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "Prometheus returned no series for {q}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    let value = |r: &Value| r["value"][1].as_str().unwrap().parse::<f64>().unwrap();

    let up = query("up{job=\"stagefan-monitor\"}").await;
    assert_eq!(value(&up[0]), 1.0);
    let joins = query("stagefan_joins_total").await;
    assert_eq!(joins.len(), 1);
    assert_eq!(joins[0]["metric"]["broadcast"], "default");
    assert_eq!(value(&joins[0]), 42.0);
    let refusals = query("stagefan_refusals_total").await;
    assert_eq!(value(&refusals[0]), 3.0);
    let viewers = query("stagefan_broadcast_viewers").await;
    assert_eq!(value(&viewers[0]), 17.0);
    let mut fill = query("stagefan_stage_fill_ratio").await;
    fill.sort_by_key(|r| r["metric"]["stage"].as_str().unwrap().to_string());
    assert_eq!(fill.len(), 2);
    assert_eq!(fill[0]["metric"]["stage"], "promstage001");
    assert_eq!(value(&fill[0]), 12.0 / 50.0);
    assert_eq!(value(&fill[1]), 5.0 / 50.0);
    let calls = query("sum by (operation) (stagefan_ivs_requests_total{status=\"200\"})").await;
    let ops: Vec<&str> = calls
        .iter()
        .map(|r| r["metric"]["operation"].as_str().unwrap())
        .collect();
    for op in ["ListStages", "GetStage", "ListParticipants"] {
        assert!(ops.contains(&op), "{op} in {ops:?}");
    }
    let budget = query(
        "stagefan_ivs_budget_requests_per_second{operation=\"GetStage\",region=\"us-east-1\"}",
    )
    .await;
    assert_eq!(value(&budget[0]), 2.0);
    let subs = query("stagefan_ivs_stage_subscribers{stage=\"promstage001\"}").await;
    assert_eq!(value(&subs[0]), 12.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sigterm_finishes_the_round_and_exits_cleanly_second_exits_at_once() {
    let (_ivs, _edge, ivs_url, edge_url) = scripted_stack().await;
    let port = free_port();
    let mut monitor = start_monitor(&ivs_url, &edge_url, port, "1s");
    let base = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{base}/ready"), 200, Duration::from_secs(30)).await;
    kill(monitor.0.id(), "TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = monitor.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "graceful exit");

    // A monitor in a long round (1,000 stages, 0.1 call/s: the round waits for budget until
    // its 60 s end) keeps going after the first signal and leaves at the second.
    let ivs = ScriptedIvs::default();
    let edge = ScriptedEdge::default();
    let mut stages = Vec::new();
    for n in 0..1000 {
        let a = arn(&stage_id(n));
        ivs.add_stage(&a, true, Some("slow"));
        stages.push(stage(n as u64, &a, StageState::Live, 0, 50));
    }
    edge.put_pool(snapshot("slow", 1, stages));
    let ivs_url = format!("http://{}", ivs.start().await);
    let edge_url = format!("http://{}", edge.start().await);
    let port = free_port();
    let mut monitor =
        start_monitor_with(&ivs_url, &edge_url, port, "60s", &["--ivs-budget", "0.1"]);
    wait_for(
        &format!("http://127.0.0.1:{port}/live"),
        200,
        Duration::from_secs(30),
    )
    .await;
    // Wait until the round is under way (the first GetStage went out).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ivs.calls_of("GetStage").is_empty() {
        assert!(std::time::Instant::now() < deadline, "no round started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill(monitor.0.id(), "INT");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        monitor.0.try_wait().unwrap().is_none(),
        "the first signal lets the round finish"
    );
    kill(monitor.0.id(), "INT");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = monitor.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after the second signal"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(130));
}
