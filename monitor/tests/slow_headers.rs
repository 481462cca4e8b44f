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
    stagefan_testkit::slowloris(&addr, "/metrics", Duration::from_secs(4)).await;
}
