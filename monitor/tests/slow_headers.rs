//! Slow clients cannot hold the monitor's admin server: 150 raw TCP connections that send a
//! request head one byte every half second, and 10 that send nothing, are all cut off after
//! the header-read timeout (5 s), while `/metrics` keeps answering.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off_and_do_not_hold_the_admin_server() {
    let (_ivs, _edge, ivs_url, edge_url) = scripted_stack().await;
    let port = free_port();
    let _monitor = start_monitor(&ivs_url, &edge_url, port, "1s");
    let addr = format!("127.0.0.1:{port}");
    wait_for(&format!("http://{addr}/live"), 200, Duration::from_secs(30)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let metrics = format!("http://{addr}/metrics");
    let (first, last) =
        stagefan_testkit::slowloris(&addr, "/metrics", Duration::from_secs(4), || async {
            let answer = http
                .get(&metrics)
                .send()
                .await
                .expect("answered while 160 slow clients are connected");
            assert_eq!(answer.status(), 200);
        })
        .await;
    eprintln!(
        "slow headers: 160 slow clients of the monitor cut off after {:.1} s (first) .. {:.1} s (last)",
        first.as_secs_f64(),
        last.as_secs_f64()
    );
}
