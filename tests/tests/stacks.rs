//! Stacks started from one checkout leave each other alone (`scripts/stack.sh`): each keeps
//! its worker build, pages, wrangler config and `.wrangler/` in its own state directory, and a
//! start on a busy port exits before it touches any state. A stack started in the background
//! by a script (where SIGINT starts ignored) still stops on SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use stagefan_tests::{bin_dir, free_tcp_port, free_udp_port, root, Stack, HOST_KEY};

/// `/host`, `/watch` and `/status` answer 200 with their page.
async fn pages_served(stack: &Stack, when: &str) {
    let http = reqwest::Client::new();
    for (path, marker) in [
        ("/host", "host.js"),
        ("/watch", "watch.js"),
        ("/status", "status.js"),
    ] {
        let answer = http
            .get(format!("{}{path}", stack.edge))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{when}: GET {}{path}: {e}", stack.edge));
        let status = answer.status().as_u16();
        let body = answer.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{when}: GET {}{path}: {body:?}", stack.edge);
        assert!(
            body.contains("<html") && body.contains(marker),
            "{when}: GET {}{path} is not its page: {body:?}",
            stack.edge
        );
    }
}

/// Starts `scripts/stack.sh` on `edge_port` (else a free one; the other ports free) with
/// `state_dir`, and expects it to give up with a failure status.
async fn refused_start(edge_port: Option<&str>, state_dir: &std::path::Path, what: &str) {
    let edge_port = edge_port.map_or_else(|| free_tcp_port().to_string(), str::to_string);
    let started = Instant::now();
    let mut again = Command::new("bash")
        .arg(root().join("scripts/stack.sh"))
        .current_dir(root())
        .env("STAGEFAN_PORT", edge_port)
        .env("IVS_LOCAL_PORT", free_tcp_port().to_string())
        .env("IVS_LOCAL_MEDIA_PORT", free_udp_port().to_string())
        .env("STAGEFAN_INSPECTOR_PORT", free_tcp_port().to_string())
        .env("STAGEFAN_MONITOR", "0")
        .env("STAGEFAN_STATE_DIR", state_dir)
        .env("STAGEFAN_BIN_DIR", bin_dir())
        .env("STAGEFAN_PARENT_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start scripts/stack.sh");
    let status = loop {
        if let Some(status) = again.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            // SIGTERM, so that it stops what it started.
            let _ = Command::new("kill")
                .args(["-TERM", &again.id().to_string()])
                .status();
            let _ = again.wait();
            panic!("{what} did not give up");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "{what}: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_from_one_checkout() {
    let first = Stack::start("stacks-first", &[]);
    pages_served(&first, "the first stack alone").await;

    // Something the first stack keeps in its Durable Object storage: a pool and a seat.
    let api = first.api();
    let host = api
        .post(
            "/api/token/publisher-all",
            &json!({"broadcast": "default"}),
            Some(HOST_KEY),
        )
        .await;
    assert_eq!(host.status, 200, "{:?}", host.body);
    let seat = api
        .post("/api/token/viewer", &json!({"userId": "stays"}), None)
        .await;
    assert_eq!(seat.status, 200, "{:?}", seat.body);
    let lease = seat.body["leaseId"].as_str().expect("leaseId").to_string();

    let second = Stack::start("stacks-second", &[]);
    // What `make run` does before it starts: rebuild the shared pages (web/dist).
    let built = Command::new("node")
        .arg("web/build.mjs")
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("node web/build.mjs");
    assert!(built.success(), "node web/build.mjs: {built}");
    pages_served(&first, "the first stack, with a second one running").await;
    pages_served(&second, "the second stack").await;

    // A start on the first stack's edge port and state directory (a second `make run`), and
    // one on free ports but the first stack's state directory: both refuse.
    let edge_port = first.edge.rsplit(':').next().expect("edge port");
    refused_start(Some(edge_port), &first.state_dir, "a start on a busy port").await;
    refused_start(None, &first.state_dir, "a start on a busy state directory").await;

    // The first stack still has its storage: the seat is still there, the pages still served.
    let beat = api.lease_call("heartbeat", &lease).await;
    assert_eq!(
        beat.status, 200,
        "heartbeat after the busy start: {:?}",
        beat.body
    );
    let pool = api.get("/api/broadcasts/default", None).await;
    assert_eq!(pool.status, 200, "{:?}", pool.body);
    assert_eq!(pool.body["viewers"], 1, "{:?}", pool.body);
    pages_served(&first, "the first stack, after a busy start").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_stack_stops_on_sigint() {
    let state_dir = root().join(".stagefan").join("test-stacks-background");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let out = state_dir.join("stack.out");
    std::fs::write(&out, "").expect("empty stack.out");
    // A background job of a non-interactive shell: SIGINT is ignored when it starts.
    let mut shell = Command::new("bash")
        .arg("-c")
        .arg(r#"scripts/stack.sh >"$OUT" 2>&1 & echo $!; wait"#)
        .current_dir(root())
        .env("OUT", &out)
        .env("STAGEFAN_PORT", free_tcp_port().to_string())
        .env("IVS_LOCAL_PORT", free_tcp_port().to_string())
        .env("IVS_LOCAL_MEDIA_PORT", free_udp_port().to_string())
        .env("STAGEFAN_INSPECTOR_PORT", free_tcp_port().to_string())
        .env("STAGEFAN_MONITOR", "0")
        .env("STAGEFAN_STATE_DIR", &state_dir)
        .env("STAGEFAN_BIN_DIR", bin_dir())
        .env("STAGEFAN_PARENT_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("bash -c 'scripts/stack.sh &'");
    let mut line = String::new();
    BufReader::new(shell.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the stack's pid");
    let pid = line.trim().to_string();
    let started = Instant::now();
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("STAGEFAN_READY")
    {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the background stack did not start: {}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        assert!(
            shell.try_wait().expect("wait").is_none(),
            "the background stack exited: {}",
            std::fs::read_to_string(&out).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let sent = Command::new("kill").args(["-INT", &pid]).status();
    assert!(sent.expect("kill -INT").success(), "kill -INT {pid}");
    let asked = Instant::now();
    let stopped = loop {
        if shell.try_wait().expect("wait").is_some() {
            break true;
        }
        if asked.elapsed() > Duration::from_secs(30) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if !stopped {
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = shell.wait();
    }
    assert!(stopped, "a background stack ignored SIGINT for 30 s");
}
