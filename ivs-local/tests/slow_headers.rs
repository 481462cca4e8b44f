//! Slow clients cannot hold ivs-local: 150 raw TCP connections that send a request head one
//! byte every half second (a "slowloris"), and 10 that send nothing, are all cut off after
//! the header-read timeout, while ordinary requests keep being answered.

mod common;

use std::time::{Duration, Instant};

use common::IvsLocal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Seconds after which a slow connection still open counts as held (the timeout is 5 s).
const HELD: Duration = Duration::from_secs(30);

/// Dribbles a request head onto `host`, a byte at a time (none with `silent`), until the
/// server closes the connection; returns how long it stayed open (`None`: still open at
/// [`HELD`]).
async fn slow_client(host: String, silent: bool) -> Option<Duration> {
    let mut stream = TcpStream::connect(&host).await.expect("connect");
    let started = Instant::now();
    let head = format!("GET /_local/stats HTTP/1.1\r\nHost: {host}\r\nX-Slow: ");
    let mut bytes = head.into_bytes().into_iter().chain(std::iter::repeat(b'a'));
    let mut buf = [0u8; 256];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while started.elapsed() < HELD {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                // Closed (FIN), reset, or an error answer (408/400) before the close.
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
async fn slow_request_heads_are_cut_off_and_do_not_hold_the_server() {
    let ivs = IvsLocal::start(&["--no-media"]);
    let mut clients = Vec::new();
    for n in 0..160 {
        clients.push(tokio::spawn(slow_client(ivs.host.clone(), n >= 150)));
    }
    // While they dribble, the server answers others at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for _ in 0..5 {
        let answer = http
            .get(format!("{}/_local/stats", ivs.base))
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
        "slow headers: 160 slow clients cut off after {:.1} s (first) .. {:.1} s (last)",
        open_for[0].as_secs_f64(),
        open_for[open_for.len() - 1].as_secs_f64()
    );
    // Not before the timeout: a client that is merely slow on a bad network still has its
    // few seconds.
    assert!(open_for[0] >= Duration::from_secs(4), "{open_for:?}");
    // And the server is still well.
    let answer = http
        .get(format!("{}/_local/stats", ivs.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}
