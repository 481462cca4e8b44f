//! Launches the real `ivs-local` binary on free ports and talks to it with requests signed by
//! `stagefan_core::sigv4`.
#![allow(dead_code)] // each test file uses a different part of this harness

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use stagefan_core::ivs::Operation;
use stagefan_core::sigv4::{
    self, Credentials, HttpRequest, SigningParams, SigningSettings, UtcDateTime,
};

pub const ACCESS_KEY: &str = "AKIDLOCALSTAGEFAN";
pub const SECRET: &str = "stagefan-local-secret";

/// A running ivs-local; killed on drop.
pub struct IvsLocal {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub host: String,
}

impl IvsLocal {
    /// Starts the binary with `--port 0 --media-port 0` and `extra` flags, and waits for its
    /// ready line.
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// [`start`](Self::start) with environment variables `env` set for the process.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ivs-local"));
        for var in [
            "IVS_LOCAL_PORT",
            "IVS_LOCAL_MEDIA_PORT",
            "IVS_LOCAL_REGION",
            "IVS_LOCAL_ACCOUNT_ID",
            "IVS_LOCAL_RATE_SCALE",
            "IVS_LOCAL_SUBSCRIBER_CAP",
            "IVS_LOCAL_PUBLISHER_CAP",
            "IVS_LOCAL_STAGE_QUOTA",
            "IVS_QUOTA_STAGES",
            "IVS_QUOTA_PUBLISHERS",
            "IVS_QUOTA_SUBSCRIPTIONS",
            "IVS_LOCAL_NO_MEDIA",
            "IVS_LOCAL_ICE_SETUP_TIMEOUT",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .args(["--port", "0", "--media-port", "0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ivs-local starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("ivs-local ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ivs-local printed its ready line");
        let base = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http="))
            .expect("http= in the ready line")
            .to_string();
        let host = base.trim_start_matches("http://").to_string();
        Self { child, base, host }
    }

    /// A client with the right credentials.
    pub fn client(&self) -> Client {
        Client {
            // ivs-local closes idle connections after 5 s (its header-read timeout runs
            // between requests too): close ours first, or a request races the close.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
            base: self.base.clone(),
            host: self.host.clone(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `GET /_local/stats`.
    pub async fn stats(&self) -> Value {
        reqwest::get(format!("{}/_local/stats", self.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for IvsLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to sign (defaults: the right credentials, region, service and clock).
#[derive(Clone)]
pub struct Sign {
    pub access_key: String,
    pub secret: String,
    pub region: String,
    pub service: String,
    pub clock_offset_secs: i64,
    /// Sign this body but send the request's body (tampering).
    pub signed_body: Option<Vec<u8>>,
    /// Send no Authorization at all.
    pub unsigned: bool,
}

impl Default for Sign {
    fn default() -> Self {
        Self {
            access_key: ACCESS_KEY.into(),
            secret: SECRET.into(),
            region: "us-east-1".into(),
            service: "ivs".into(),
            clock_offset_secs: 0,
            signed_body: None,
            unsigned: false,
        }
    }
}

/// A response: status, `x-amzn-ErrorType`, JSON body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub error_type: Option<String>,
    pub body: Value,
}

impl Resp {
    /// Asserts an IVS error of `name` and `status` with a message, and returns the message.
    pub fn assert_error(&self, name: &str, status: u16) -> String {
        assert_eq!(
            (self.status, self.error_type.as_deref()),
            (status, Some(name)),
            "{self:?}"
        );
        let msg = self.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(!msg.is_empty(), "error without message: {self:?}");
        msg
    }

    /// Asserts 200 and returns the body.
    pub fn ok(self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        self.body
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    host: String,
}

impl Client {
    /// `POST /{Operation}` with a JSON body, correctly signed.
    pub async fn call(&self, op: Operation, body: Value) -> Resp {
        self.send(
            op.http_method(),
            &op.path(None),
            "",
            body.to_string().into_bytes(),
            &Sign::default(),
        )
        .await
    }

    /// Any request, signed as `sign` says.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: Vec<u8>,
        sign: &Sign,
    ) -> Resp {
        let base_headers = [
            ("host", self.host.as_str()),
            ("content-type", "application/json"),
        ];
        let creds = Credentials::new(sign.access_key.clone(), sign.secret.clone(), None);
        let signed_body = sign.signed_body.clone().unwrap_or_else(|| body.clone());
        let signed = sigv4::sign_request(
            &HttpRequest {
                method,
                path,
                query,
                headers: &base_headers,
                body: &signed_body,
            },
            &SigningParams {
                credentials: &creds,
                region: &sign.region,
                service: &sign.service,
                time: UtcDateTime::from_unix(unix_now() + sign.clock_offset_secs),
                settings: SigningSettings::default(),
            },
        )
        .expect("signs");
        let url = if query.is_empty() {
            format!("{}{}", self.base, path)
        } else {
            format!("{}{}?{}", self.base, path, query)
        };
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .header("content-type", "application/json")
            .body(body);
        if !sign.unsigned {
            for (n, v) in &signed.headers {
                req = req.header(*n, v);
            }
        }
        let resp = req.send().await.expect("ivs-local answers");
        let status = resp.status().as_u16();
        let error_type = resp
            .headers()
            .get("x-amzn-ErrorType")
            .map(|v| v.to_str().unwrap().to_string());
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Resp {
            status,
            error_type,
            body,
        }
    }
}

/// An SDP offer made by str0m, a real WebRTC stack: audio and video, send-only to publish,
/// receive-only to subscribe.
pub fn offer(publish: bool) -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::new(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    let dir = if publish {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}
