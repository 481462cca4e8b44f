//! Test harness of stagefan's integration tests and benchmark: starts the real local stack
//! (`scripts/stack.sh`: ivs-local + the worker under `wrangler dev`) on free ports, and talks to
//! the edge API and to ivs-local (SigV4-signed, like the worker).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stagefan_core::sigv4::{self, Credentials, SigningParams, SigningSettings, UtcDateTime};

pub const HOST_KEY: &str = "test-host-key";
pub const ADMIN_KEY: &str = "test-admin-key";

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Where `ivs-local` (and `stagefan-monitor`) are: `STAGEFAN_BIN_DIR`, else the profile
/// directory of the running executable, else its sibling `debug/` (a release benchmark with
/// the debug binaries `make build` made).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STAGEFAN_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target profile dir").to_path_buf();
    }
    if !dir.join("ivs-local").exists() {
        let debug = dir.with_file_name("debug");
        if debug.join("ivs-local").exists() {
            return debug;
        }
    }
    dir
}

pub use stagefan_testkit::{free_tcp_port, free_udp_port};

/// A running local stack; dropping it stops every process it started.
pub struct Stack {
    child: Child,
    pub edge: String,
    /// The primary region's ivs-local.
    pub ivs: String,
    pub state_dir: PathBuf,
    /// Every region's ivs-local, `(region, base URL)`, the primary first.
    pub regions: Vec<(String, String)>,
}

impl Stack {
    /// Starts the stack with these worker variables (e.g. `STAGE_CAPACITY`), without the
    /// monitor, and waits until the edge answers.
    pub fn start(name: &str, vars: &[(&str, &str)]) -> Stack {
        Stack::start_in(name, &["us-east-1"], vars)
    }

    /// Starts the stack with one ivs-local per region of `regions` (the first is the
    /// primary; `IVS_REGIONS` and `IVS_ENDPOINTS` are the worker's when there are several).
    pub fn start_in(name: &str, regions: &[&str], vars: &[(&str, &str)]) -> Stack {
        let edge_port = free_tcp_port();
        let ports: Vec<u16> = regions.iter().map(|_| free_tcp_port()).collect();
        let media_ports: Vec<u16> = regions.iter().map(|_| free_udp_port()).collect();
        let ivs_port = ports[0];
        let media_port = media_ports[0];
        let join = |v: &[u16]| v.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let inspector_port = free_tcp_port();
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        let state_dir = root().join(".stagefan").join(format!("test-{slug}"));
        let mut cmd = Command::new("bash");
        cmd.arg(root().join("scripts/stack.sh"))
            .current_dir(root())
            .env("STAGEFAN_PORT", edge_port.to_string())
            .env("IVS_LOCAL_PORT", ivs_port.to_string())
            .env("IVS_LOCAL_MEDIA_PORT", media_port.to_string())
            .env("STAGEFAN_INSPECTOR_PORT", inspector_port.to_string())
            .env("STAGEFAN_MONITOR", "0")
            .env("STAGEFAN_STATE_DIR", &state_dir)
            .env("STAGEFAN_BIN_DIR", bin_dir())
            .env("STAGEFAN_HOST_KEY", HOST_KEY)
            .env("STAGEFAN_ADMIN_KEY", ADMIN_KEY)
            .env("STAGEFAN_PARENT_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if regions.len() > 1 {
            cmd.env("IVS_REGIONS", regions.join(","))
                .env("IVS_LOCAL_PORTS", join(&ports))
                .env("IVS_LOCAL_MEDIA_PORTS", join(&media_ports));
        } else {
            cmd.env("AWS_REGION", regions[0]);
        }
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start scripts/stack.sh");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let ready = line.starts_with("STAGEFAN_READY");
                if tx.send(line).is_err() || ready {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(900);
        let mut stack = Stack {
            child,
            edge: format!("http://127.0.0.1:{edge_port}"),
            ivs: format!("http://127.0.0.1:{ivs_port}"),
            state_dir,
            regions: regions
                .iter()
                .zip(&ports)
                .map(|(r, p)| (r.to_string(), format!("http://127.0.0.1:{p}")))
                .collect(),
        };
        loop {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(line) if line.starts_with("STAGEFAN_READY") => return stack,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = stack.child.try_wait() {
                        panic!("scripts/stack.sh exited before it was ready: {status}");
                    }
                    assert!(Instant::now() < deadline, "the stack did not start in time");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = stack.child.wait();
                    panic!("scripts/stack.sh closed its output before it was ready: {status:?}");
                }
            }
        }
    }

    pub fn api(&self) -> Api {
        Api::new(&self.edge)
    }

    /// The process ids of the stack's processes whose command name is `comm` (for example
    /// `workerd`, to read its memory from `/proc`).
    pub fn pids_named(&self, comm: &str) -> Vec<u32> {
        let mut parents: std::collections::BTreeMap<u32, u32> = Default::default();
        let mut names: std::collections::BTreeMap<u32, String> = Default::default();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so split at the last ')'.
            let Some((head, tail)) = stat.rsplit_once(')') else {
                continue;
            };
            let name = head.split_once('(').map(|(_, n)| n).unwrap_or_default();
            let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse().ok());
            if let Some(ppid) = ppid {
                parents.insert(pid, ppid);
                names.insert(pid, name.to_string());
            }
        }
        let root = self.child.id();
        let descends = |mut pid: u32| {
            while let Some(&parent) = parents.get(&pid) {
                if parent == root {
                    return true;
                }
                pid = parent;
            }
            false
        };
        names
            .iter()
            .filter(|(pid, name)| name.as_str() == comm && descends(**pid))
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Resident memory of a process, in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(pid: u32) -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    pub fn ivs_local(&self) -> IvsLocal {
        IvsLocal::in_region(&self.ivs, &self.regions[0].0)
    }

    /// The ivs-local of `region`.
    pub fn ivs_local_in(&self, region: &str) -> IvsLocal {
        let (_, base) = self
            .regions
            .iter()
            .find(|(r, _)| r == region)
            .unwrap_or_else(|| panic!("the stack runs no region {region}"));
        IvsLocal::in_region(base, region)
    }

    /// Restarts the worker alone (a new workerd on the same local Durable Object storage, as
    /// after an eviction; ivs-local keeps its state) and waits until it answers again.
    pub fn restart_worker(&self) {
        let marker = self.state_dir.join("worker-restarts");
        let restarts = || {
            std::fs::read_to_string(&marker)
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        let before = restarts();
        let sent = Command::new("kill")
            .args(["-USR1", &self.child.id().to_string()])
            .status()
            .expect("kill -USR1");
        assert!(sent.success(), "signalling scripts/stack.sh");
        let deadline = Instant::now() + Duration::from_secs(300);
        while restarts() == before {
            assert!(
                Instant::now() < deadline,
                "the worker did not restart in time"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SIGTERM lets the script stop its process groups.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client address of the next request made without one: every request of these tests is
/// another simulated client (`CF-Connecting-IP` from 10.0.0.0/8, as Cloudflare would set it),
/// so that per-client admission control limits only the tests that ask as one client
/// ([`Api::post_from`]).
pub fn next_client_ip() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % (1 << 24);
    format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255)
}

/// An answer of the edge.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
    pub elapsed: Duration,
}

impl Answer {
    /// The `error.code` of an error answer.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// A client of the edge API.
/// How long the harness keeps an idle connection. Both servers close idle connections after
/// 5 s (ivs-local's header-read timeout also runs between requests; Node's `keepAliveTimeout`
/// is 5 s), and a request written on a connection the server is closing fails with
/// `IncompleteMessage`: the client closes first.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// `POST path` with a raw body and an optional bearer key.
    /// A viewer route that takes a lease (`heartbeat`, `leave`, `stage-missing`):
    /// `POST /api/viewer/{route}` with `{"leaseId": lease}`.
    /// A lease's call (heartbeat, leave, stage-missing: idempotent), sent again as a real
    /// client would when `wrangler dev`'s local proxy answers that the worker restarted
    /// mid-request (its own 503 under load, never the worker's answer).
    pub async fn lease_call(&self, route: &str, lease: impl serde::Serialize) -> Answer {
        let body = serde_json::json!({ "leaseId": lease });
        let path = format!("/api/viewer/{route}");
        let mut answer = self.post(&path, &body, None).await;
        for _ in 0..3 {
            if !is_dev_proxy_restart(&answer) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            answer = self.post(&path, &body, None).await;
        }
        answer
    }

    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        key: Option<&str>,
    ) -> Answer {
        let mut req = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/json")
            .header("cf-connecting-ip", next_client_ip())
            .body(body);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        Self::send(req).await
    }

    pub async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> Answer {
        self.post_raw(path, body.to_string(), key).await
    }

    /// `POST path` as the client at `ip` (the `CF-Connecting-IP` Cloudflare would set).
    pub async fn post_from(&self, ip: &str, path: &str, body: &Value) -> Answer {
        let req = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/json")
            .header("cf-connecting-ip", ip)
            .body(body.to_string());
        Self::send(req).await
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Answer {
        let mut req = self
            .http
            .get(format!("{}{}", self.base, path))
            .header("cf-connecting-ip", next_client_ip());
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        Self::send(req).await
    }

    async fn send(req: reqwest::RequestBuilder) -> Answer {
        let started = Instant::now();
        let resp = match req.send().await {
            Ok(resp) => resp,
            // No answer (timeout, connection refused): status 0, for the caller to judge.
            Err(e) => {
                return Answer {
                    status: 0,
                    body: serde_json::json!({"error": {"code": "no_answer", "message": e.to_string()}}),
                    retry_after: None,
                    elapsed: started.elapsed(),
                }
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            body,
            retry_after,
            elapsed: started.elapsed(),
        }
    }

    /// A viewer token for `user_id` in `broadcast`.
    pub async fn viewer(&self, broadcast: &str, user_id: &str) -> Answer {
        self.post(
            "/api/token/viewer",
            &serde_json::json!({"userId": user_id, "broadcast": broadcast}),
            None,
        )
        .await
    }

    /// Creates a broadcast's pool (admin).
    pub async fn create_broadcast(&self, broadcast: &str) -> Answer {
        self.post(
            &format!("/api/admin/broadcasts/{broadcast}"),
            &serde_json::json!({}),
            Some(ADMIN_KEY),
        )
        .await
    }

    /// The admin snapshot of a broadcast.
    pub async fn snapshot(&self, broadcast: &str) -> Value {
        let a = self
            .get(
                &format!("/api/admin/broadcasts/{broadcast}"),
                Some(ADMIN_KEY),
            )
            .await;
        assert_eq!(a.status, 200, "snapshot of {broadcast}: {a:?}");
        a.body
    }
}

/// A SigV4-signed client of ivs-local's control plane, with the local credentials.
pub struct IvsLocal {
    http: reqwest::Client,
    base: String,
    host: String,
    credentials: Credentials,
    region: String,
}

impl IvsLocal {
    pub fn new(base: &str) -> IvsLocal {
        IvsLocal::in_region(base, "us-east-1")
    }

    /// The ivs-local at `base` claiming to be `region` (the SigV4 scope of its calls).
    pub fn in_region(base: &str, region: &str) -> IvsLocal {
        IvsLocal {
            region: region.to_string(),
            http: reqwest::Client::builder()
                .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
                .build()
                .expect("http client"),
            base: base.to_string(),
            host: base.trim_start_matches("http://").to_string(),
            credentials: Credentials::new("AKIDLOCALSTAGEFAN", "stagefan-local-secret", None),
        }
    }

    /// `POST /<operation>` with a JSON body; the status and the JSON answer.
    pub async fn call(&self, operation: &str, body: &Value) -> (u16, Value) {
        let path = format!("/{operation}");
        let body = body.to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/json"),
        ];
        let signed = sigv4::sign_request(
            &sigv4::HttpRequest {
                method: "POST",
                path: &path,
                query: "",
                headers: &headers,
                body: body.as_bytes(),
            },
            &SigningParams {
                credentials: &self.credentials,
                region: &self.region,
                service: "ivs",
                time: UtcDateTime::from_unix(now),
                settings: SigningSettings::default(),
            },
        )
        .expect("signs");
        let mut req = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in &signed.headers {
            req = req.header(*name, value);
        }
        let resp = req.send().await.expect("ivs-local answers");
        let status = resp.status().as_u16();
        let value = resp.json().await.unwrap_or(Value::Null);
        (status, value)
    }

    /// Every stage ivs-local has, following `nextToken`; retried when throttled (5 TPS).
    pub async fn list_stages(&self) -> Vec<Value> {
        let mut stages = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut body = serde_json::json!({"maxResults": 100});
            if let Some(t) = &next {
                body["nextToken"] = Value::String(t.clone());
            }
            let (status, page) = self.call("ListStages", &body).await;
            if status == 429 {
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
            assert_eq!(status, 200, "ListStages: {page}");
            stages.extend(page["stages"].as_array().cloned().unwrap_or_default());
            match page["nextToken"].as_str() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return stages,
            }
        }
    }

    /// The ARNs of the stages tagged as stagefan's for `broadcast`.
    pub async fn stage_arns_of(&self, broadcast: &str) -> Vec<String> {
        let mut arns: Vec<String> = self
            .list_stages()
            .await
            .into_iter()
            .filter(|s| s["tags"]["stagefan:broadcast"].as_str() == Some(broadcast))
            .filter(|s| s["tags"]["stagefan:managed"].as_str() == Some("true"))
            .filter_map(|s| s["arn"].as_str().map(str::to_string))
            .collect();
        arns.sort();
        arns
    }
}

/// A scripted fault of ivs-local's control plane (`POST /_local/faults`, see
/// ivs-local/README.md): what one operation suffers, on how many requests.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    pub operation: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub count: u64,
    pub skip: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

impl Fault {
    fn new(operation: &str, kind: &'static str) -> Fault {
        Fault {
            operation: operation.to_string(),
            kind,
            status: None,
            count: 1,
            skip: 0,
            delay_ms: None,
            cut: false,
        }
    }

    /// `operation` answers `status` (an IVS error) and does not happen.
    pub fn error(operation: &str, status: u16) -> Fault {
        Fault {
            status: Some(status),
            ..Fault::new(operation, "error")
        }
    }

    /// `operation` answers 429 ThrottlingException and does not happen.
    pub fn throttle(operation: &str) -> Fault {
        Fault::new(operation, "throttle")
    }

    /// `operation` happens after `ms` milliseconds.
    pub fn delay(operation: &str, ms: u64) -> Fault {
        Fault {
            delay_ms: Some(ms),
            ..Fault::new(operation, "delay")
        }
    }

    /// `operation` happens, and its caller gets a 500.
    pub fn lost_after_effect(operation: &str) -> Fault {
        Fault::new(operation, "lost_after_effect")
    }

    /// `operation` happens, and its answer is cut off mid-way (the connection fails).
    pub fn cut_after_effect(operation: &str) -> Fault {
        Fault {
            cut: true,
            ..Fault::new(operation, "lost_after_effect")
        }
    }

    /// Acts on `n` requests (default 1).
    pub fn times(self, n: u64) -> Fault {
        Fault { count: n, ..self }
    }

    /// Lets `n` requests through first.
    pub fn after(self, n: u64) -> Fault {
        Fault { skip: n, ..self }
    }

    /// With this status (`error`, `lost_after_effect`).
    pub fn status(self, status: u16) -> Fault {
        Fault {
            status: Some(status),
            ..self
        }
    }
}

impl IvsLocal {
    /// Adds a scripted fault behind those already there; the rule as ivs-local holds it.
    pub async fn add_fault(&self, fault: &Fault) -> Value {
        let resp = self
            .http
            .post(format!("{}/_local/faults", self.base))
            .json(fault)
            .send()
            .await
            .expect("ivs-local answers");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 201, "POST /_local/faults {fault:?}: {body}");
        body
    }

    /// `GET /_local/faults`: `{"faults": [rules that remain], "fired": {op: {kind: n}}}`.
    pub async fn faults(&self) -> Value {
        self.local_get("/_local/faults").await
    }

    /// How many faults of `kind` were injected into `operation` so far.
    pub async fn faults_fired(&self, operation: &str, kind: &str) -> u64 {
        self.faults().await["fired"][operation][kind]
            .as_u64()
            .unwrap_or(0)
    }

    /// Removes every scripted fault; how many rules there were.
    pub async fn clear_faults(&self) -> u64 {
        let resp = self
            .http
            .delete(format!("{}/_local/faults", self.base))
            .send()
            .await
            .expect("ivs-local answers");
        assert_eq!(resp.status().as_u16(), 200, "DELETE /_local/faults");
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        body["cleared"].as_u64().unwrap_or(0)
    }

    /// `GET /_local/stats` (request counters per operation, state counts).
    pub async fn stats(&self) -> Value {
        self.local_get("/_local/stats").await
    }

    /// How many requests of `operation` reached ivs-local (signed or not, answered or not).
    pub async fn requests(&self, operation: &str) -> u64 {
        self.stats().await["operations"][operation]["requests"]
            .as_u64()
            .unwrap_or(0)
    }

    async fn local_get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("ivs-local answers");
        assert_eq!(resp.status().as_u16(), 200, "GET {path}");
        resp.json().await.expect("JSON")
    }
}

/// Percentile (0..=100) of sorted durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// `wrangler dev`'s proxy answer when the local worker process restarted mid-request.
fn is_dev_proxy_restart(a: &Answer) -> bool {
    a.status == 503
        && a.body
            .as_str()
            .is_some_and(|b| b.contains("restarted mid-request"))
}
