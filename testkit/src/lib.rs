//! What stagefan's three test harnesses share (`tests/`, `ivs-local/tests/common`,
//! `monitor/tests/common`): free ports, temporary folders, child processes that are killed
//! when a test ends however it ends, and the slow-client attack every server of ours is
//! tried with. No I/O happens on import; each helper says what it touches.

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A free TCP port on 127.0.0.1 (another process may take it before the caller binds it:
/// unlikely, and such a start fails loudly).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind udp 127.0.0.1:0")
        .port()
}

/// A new empty folder under the system's temporary folder, named after `tag`, this process
/// and the time, so that parallel and repeated runs never share one.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("stagefan-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    dir
}

/// A child process killed (and reaped) when dropped: a failing test leaves nothing running.
pub struct Guard(pub Child);

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long a slow client may stay connected before it counts as holding the server.
pub const SLOW_CLIENT_HELD: Duration = Duration::from_secs(30);

/// A "slowloris": connects to `addr` and dribbles a `GET path` request head one byte every
/// half second (nothing at all with `silent`) until the server closes the connection.
/// Returns how long the connection stayed open, `None` if still open at
/// [`SLOW_CLIENT_HELD`].
pub async fn slow_client(addr: String, path: &'static str, silent: bool) -> Option<Duration> {
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let started = Instant::now();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    let mut bytes = head.into_bytes().into_iter().chain(std::iter::repeat(b'a'));
    let mut buf = [0u8; 256];
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while started.elapsed() < SLOW_CLIENT_HELD {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                // Closed (FIN), reset, or an error answer (408/400) before the close.
                Ok(0) | Err(_) => return Some(started.elapsed()),
                Ok(_) => continue,
            },
            _ = tick.tick() => {
                if !silent && stream.write_all(&[bytes.next().expect("endless")]).await.is_err() {
                    return Some(started.elapsed());
                }
            }
        }
    }
    None
}

/// The status of `GET path` on the HTTP/1.1 server at `addr`, asked over a fresh connection
/// (`Connection: close`) and read within 3 s.
pub async fn get_status(addr: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        conn.write_all(head.as_bytes())
            .await
            .expect("send the request");
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer)
            .await
            .expect("read the answer");
        let line = String::from_utf8_lossy(&answer);
        line.split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status line in {:?}", &line[..line.len().min(80)]))
    };
    tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .unwrap_or_else(|_| panic!("GET {path} on {addr} was not answered within 3 s"))
}

/// The slow-client attack on the server at `addr`: 150 slow clients that dribble a request
/// head for `path` and 10 that send nothing. While they are connected, an ordinary `GET path`
/// is asked five times and must be answered `200` each time; then every slow client must have
/// been cut off, none before `at_least` (a client merely slow on a bad network keeps its few
/// seconds), and the server still answers. Prints and returns the first and last cut-off
/// times.
pub async fn slowloris(addr: &str, path: &'static str, at_least: Duration) -> (Duration, Duration) {
    let clients: Vec<_> = (0..160)
        .map(|n| tokio::spawn(slow_client(addr.to_string(), path, n >= 150)))
        .collect();
    let answered = || async {
        let status = get_status(addr, path).await;
        assert_eq!(
            status, 200,
            "GET {path} while 160 slow clients are connected"
        );
    };
    // While they dribble, the server answers others at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..5 {
        answered().await;
    }
    let mut open_for = Vec::with_capacity(clients.len());
    for c in clients {
        open_for.push(
            c.await
                .expect("slow client task")
                .expect("a slow client was never cut off"),
        );
    }
    open_for.sort();
    let (first, last) = (open_for[0], open_for[open_for.len() - 1]);
    assert!(
        first >= at_least,
        "cut off before {at_least:?}: {open_for:?}"
    );
    // And the server is still well.
    answered().await;
    eprintln!(
        "slow headers: 160 slow clients of {addr} cut off after {:.1} s (first) .. {:.1} s (last)",
        first.as_secs_f64(),
        last.as_secs_f64()
    );
    (first, last)
}
