//! Slow clients cannot hold ivs-local: 150 raw TCP connections that send a request head one
//! byte every half second (a "slowloris"), and 10 that send nothing, are all cut off after
//! the header-read timeout (5 s), while ordinary requests keep being answered.

mod common;

use std::time::Duration;

use common::IvsLocal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off_and_do_not_hold_the_server() {
    let ivs = IvsLocal::start(&["--no-media"]);
    stagefan_testkit::slowloris(&ivs.host, "/_local/stats", Duration::from_secs(4)).await;
}
