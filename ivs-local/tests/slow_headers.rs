//! Slow clients cannot hold ivs-local: 150 raw TCP connections that send a request head one
//! byte every half second (a "slowloris"), and 10 that send nothing, are all cut off after
//! the header-read timeout (5 s), while ordinary requests keep being answered.

mod common;

use std::time::Duration;

use common::IvsLocal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off_and_do_not_hold_the_server() {
    let ivs = IvsLocal::start(&["--no-media"]);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let stats = format!("{}/_local/stats", ivs.base);
    let (first, last) = stagefan_testkit::slowloris(
        &ivs.host,
        "/_local/stats",
        Duration::from_secs(4),
        || async {
            let answer = http
                .get(&stats)
                .send()
                .await
                .expect("answered while 160 slow clients are connected");
            assert_eq!(answer.status(), 200);
        },
    )
    .await;
    eprintln!(
        "slow headers: 160 slow clients cut off after {:.1} s (first) .. {:.1} s (last)",
        first.as_secs_f64(),
        last.as_secs_f64()
    );
}
