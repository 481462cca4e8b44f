//! Slow clients cannot hold the monitor's admin server: 150 raw TCP connections that send a
//! request head one byte every half second, and 10 that send nothing, are all cut off after
//! the header-read timeout (5 s), while `/metrics` keeps answering.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A slow connection still open after this long counts as held.
const HELD: Duration = Duration::from_secs(30);

/// Dribbles a request head a byte at a time (nothing with `silent`) until the server closes
/// the connection; how long it stayed open (`None`: still open at [`HELD`]).
async fn slow_client(addr: String, silent: bool) -> Option<Duration> {
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let started = Instant::now();
    let head = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    let mut bytes = head.into_bytes().into_iter().chain(std::iter::repeat(b'a'));
    let mut buf = [0u8; 256];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while started.elapsed() < HELD {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => continue,
            },
            _ = tick.tick() => {
                if !silent && stream.write_all(&[bytes.next().unwrap()]).await.is_err() {
                    return Some(started.elapsed());
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off_and_do_not_hold_the_admin_server() {
    let (_ivs, _edge, ivs_url, edge_url) = scripted_stack().await;
    let port = free_port();
    let _monitor = start_monitor(&ivs_url, &edge_url, port, "1s");
    let addr = format!("127.0.0.1:{port}");
    wait_for(&format!("http://{addr}/live"), 200, Duration::from_secs(30)).await;
    let clients: Vec<_> = (0..160)
        .map(|n| tokio::spawn(slow_client(addr.clone(), n >= 150)))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for _ in 0..5 {
        let answer = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .expect("answered while 160 slow clients are connected");
        assert_eq!(answer.status(), 200);
    }
    let mut open_for = Vec::new();
    for c in clients {
        open_for.push(c.await.unwrap().expect("a slow client was never cut off"));
    }
    open_for.sort();
    eprintln!(
        "slow headers: 160 slow clients of the monitor cut off after {:.1} s (first) .. {:.1} s (last)",
        open_for[0].as_secs_f64(),
        open_for[open_for.len() - 1].as_secs_f64()
    );
    assert!(open_for[0] >= Duration::from_secs(4), "{open_for:?}");
    let answer = http
        .get(format!("http://{addr}/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}
