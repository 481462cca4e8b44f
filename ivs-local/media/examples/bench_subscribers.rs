//! Load generator for the media plane: many WHEP-style subscribers that receive (but do not
//! decode) a stage's host, while the media server's CPU is sampled from /proc.
//!
//! ```text
//! cargo run --release -p ivs-local-media --example bench_subscribers -- \
//!     --url http://127.0.0.1:8792 --pid <loopback pid> [--stage bench] \
//!     [--steps 0,25,50,100,150,200] [--window 10]
//! ```
//!
//! Each subscriber is a str0m client with its own UDP socket (a browser has one per peer
//! connection) posting a receive-only offer to `{url}/subscribe?stage=`. For every step it adds
//! subscribers up to that count, lets them settle, then measures over `--window` seconds: the
//! server's CPU (utime+stime of `--pid`), what the server forwarded (its `/stats`), the frames
//! and bytes each subscriber received, and prints one JSON line per step. tests/bench/media-bench.mjs drives it with a Chromium
//! publisher at 720p.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Default)]
struct Counters {
    video_frames: AtomicU64,
    audio_frames: AtomicU64,
    bytes: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// Minimal HTTP/1.1 POST (the example has no HTTP client dependency): returns (status, body).
async fn post_sdp(url: &str, body: &str) -> Result<(u16, String), Box<dyn std::error::Error>> {
    http("POST", url, body).await
}

/// The server's forwarded (packets, bytes) so far, from `GET {base}/stats`.
async fn forwarded(base: &str) -> (u64, u64) {
    let Ok((200, body)) = http("GET", &format!("{base}/stats"), "").await else {
        return (0, 0);
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    (
        v["packetsForwarded"].as_u64().unwrap_or(0),
        v["bytesForwarded"].as_u64().unwrap_or(0),
    )
}

async fn http(
    method: &str,
    url: &str,
    body: &str,
) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(host).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).await?;
    let resp = String::from_utf8_lossy(&resp);
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad HTTP response")?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

async fn subscriber(
    url: String,
    counters: Arc<Counters>,
) -> Result<(), Box<dyn std::error::Error>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let local = socket.local_addr()?;
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_h264(true)
        .enable_vp8(true)
        .enable_opus(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().ok_or("no offer")?;
    let (status, body) = post_sdp(&url, &offer.to_sdp_string()).await?;
    if status != 201 {
        return Err(format!("subscribe: HTTP {status}: {body}").into());
    }
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&body)?)?;

    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output()? {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::Connected) => {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                }
                Output::Event(Event::MediaData(d)) => {
                    let kind = rtc.media(d.mid).map(|m| m.kind());
                    match kind {
                        Some(MediaKind::Video) => &counters.video_frames,
                        _ => &counters.audio_frames,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                    counters
                        .bytes
                        .fetch_add(d.data.len() as u64, Ordering::Relaxed);
                }
                Output::Event(_) => {}
            }
            if !rtc.is_alive() {
                return Ok(());
            }
        };
        let wait = timeout.saturating_duration_since(Instant::now());
        let input = tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let (n, source) = r?;
                match buf[..n].try_into() {
                    Ok(contents) => Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp, source, destination: local, contents,
                    }),
                    Err(_) => continue,
                }
            }
            _ = tokio::time::sleep(wait) => Input::Timeout(Instant::now()),
        };
        rtc.handle_input(input)?;
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0 // CLK_TCK is 100 on Linux
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = arg("--url", "http://127.0.0.1:8792");
    let stage = arg("--stage", "bench");
    let pid: u32 = arg("--pid", "0").parse()?;
    let window: u64 = arg("--window", "10").parse()?;
    let steps: Vec<usize> = arg("--steps", "0,25,50,100,150,200")
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let url = format!("{base}/subscribe?stage={stage}");
    let _: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .map_err(|_| "--url must be http://ip:port")?;

    let counters = Arc::new(Counters::default());
    let mut running = 0usize;
    for &target in &steps {
        while running < target {
            let (u, c) = (url.clone(), counters.clone());
            tokio::spawn(async move {
                if let Err(e) = subscriber(u, c.clone()).await {
                    eprintln!("subscriber failed: {e}");
                    c.failed.fetch_add(1, Ordering::Relaxed);
                }
            });
            running += 1;
            // Join at a steady pace, as viewers do (each join costs a keyframe request).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (p0, fb0) = forwarded(&base).await;
        let (c0, v0, a0, b0, t0) = (
            cpu_seconds(pid),
            counters.video_frames.load(Ordering::Relaxed),
            counters.audio_frames.load(Ordering::Relaxed),
            counters.bytes.load(Ordering::Relaxed),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs(window)).await;
        let secs = t0.elapsed().as_secs_f64();
        let (p1, fb1) = forwarded(&base).await;
        let server_pps = (p1 - p0) as f64 / secs;
        let server_mbps = (fb1 - fb0) as f64 * 8.0 / secs / 1e6;
        let cpu = (cpu_seconds(pid) - c0) / secs;
        let video_fps = (counters.video_frames.load(Ordering::Relaxed) - v0) as f64 / secs;
        let audio_fps = (counters.audio_frames.load(Ordering::Relaxed) - a0) as f64 / secs;
        let mbps = (counters.bytes.load(Ordering::Relaxed) - b0) as f64 * 8.0 / secs / 1e6;
        let per_sub = |x: f64| if target > 0 { x / target as f64 } else { 0.0 };
        println!(
            "{{\"subscribers\":{target},\"connected\":{},\"failed\":{},\"serverCpuCores\":{cpu:.4},\
             \"videoFpsPerSubscriber\":{:.2},\"audioFpsPerSubscriber\":{:.2},\
             \"receivedMbpsTotal\":{mbps:.2},\"receivedMbpsPerSubscriber\":{:.3},\
             \"serverForwardedPps\":{server_pps:.0},\"serverForwardedMbps\":{server_mbps:.2}}}",
            counters.connected.load(Ordering::Relaxed),
            counters.failed.load(Ordering::Relaxed),
            per_sub(video_fps),
            per_sub(audio_fps),
            per_sub(mbps),
        );
    }
    Ok(())
}
