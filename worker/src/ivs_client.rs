//! IVS Real-Time over `fetch`: REST-JSON requests signed with SigV4 (`stagefan_core::sigv4`),
//! to `IVS_ENDPOINT` (IVS itself, or ivs-local).
//!
//! Throttling and 5xx are retried with exponential backoff and full jitter. `CreateStage` is
//! never retried blindly: see `StagePool::create_stage`, which looks the stage up by name
//! after an answer that may hide a create.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use stagefan_core::ivs::{
    ErrorKind, IvsError, ListParticipantsResponse, ListStagesResponse, Operation, SIGNING_NAME,
};
use stagefan_core::sigv4::{self, Credentials, SigningParams, SigningSettings, UtcDateTime};
use worker::{Delay, Fetch, Headers, Method, Request, RequestInit};

use crate::runtime;

/// A page of a `List*` answer.
pub trait Paged {
    /// The token of the next page, if any.
    fn next_token(&self) -> Option<&str>;
}

impl Paged for ListStagesResponse {
    fn next_token(&self) -> Option<&str> {
        self.next_token.as_deref()
    }
}

impl Paged for ListParticipantsResponse {
    fn next_token(&self) -> Option<&str> {
        self.next_token.as_deref()
    }
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// IVS answered with an error.
    Ivs(IvsError),
    /// No answer (network), or one that could not be read.
    Transport(String),
}

impl CallError {
    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Ivs(e) => e.kind.is_retryable() || e.status >= 500,
            CallError::Transport(_) => true,
        }
    }

    /// Whether the request may have been carried out although it failed (a 5xx or no answer):
    /// for a create, the stage must be looked up before trying again.
    pub fn outcome_unknown(&self) -> bool {
        match self {
            CallError::Ivs(e) => e.status >= 500,
            CallError::Transport(_) => true,
        }
    }

    pub fn is_throttling(&self) -> bool {
        matches!(self, CallError::Ivs(e) if e.kind == ErrorKind::Throttling)
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Ivs(e) => write!(f, "{e}"),
            CallError::Transport(e) => write!(f, "transport: {e}"),
        }
    }
}

/// Retry schedule: `attempts` tries in all, backoff doubling from `base` up to `cap`, each wait
/// drawn uniformly from [0, backoff] ("full jitter").
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Retry {
    pub const DEFAULT: Retry = Retry {
        attempts: 4,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(1_000),
    };
    pub const NONE: Retry = Retry {
        attempts: 1,
        base: Duration::ZERO,
        cap: Duration::ZERO,
    };

    /// The wait before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.cap);
        exp.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// A client bound to one endpoint, region and credentials.
pub struct IvsClient {
    endpoint: String,
    host: String,
    region: String,
    credentials: Credentials,
}

impl IvsClient {
    pub fn new(endpoint: &str, region: &str, credentials: Credentials) -> IvsClient {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let host = endpoint
            .split_once("://")
            .map_or(endpoint.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        IvsClient {
            endpoint,
            host,
            region: region.to_string(),
            credentials,
        }
    }

    /// Reads the pages of a `List*` operation `op` (the request of each made by `request`
    /// from the page token) until `find` picks something from one, or the pages end.
    pub async fn find_in_pages<Req: Serialize, Resp: DeserializeOwned + Paged, T>(
        &self,
        op: Operation,
        request: impl Fn(Option<String>) -> Req,
        mut find: impl FnMut(&Resp) -> Option<T>,
    ) -> Result<Option<T>, CallError> {
        let mut next_token = None;
        loop {
            let page: Resp = self.call(op, &request(next_token), Retry::DEFAULT).await?;
            if let Some(found) = find(&page) {
                return Ok(Some(found));
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => next_token = Some(t.to_string()),
                _ => return Ok(None),
            }
        }
    }

    /// Calls `op` with `body`, retrying throttling and 5xx per `retry`.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: Operation,
        body: &Req,
        retry: Retry,
    ) -> Result<Resp, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| CallError::Transport(e.to_string()))?;
        let path = op.path(None);
        let mut attempt = 1;
        loop {
            match self.send_once(op.http_method(), &path, &body).await {
                Ok(bytes) => {
                    let bytes = if bytes.is_empty() {
                        b"{}".to_vec()
                    } else {
                        bytes
                    };
                    return serde_json::from_slice(&bytes).map_err(|e| {
                        CallError::Transport(format!("{}: unreadable answer: {e}", op.name()))
                    });
                }
                Err(e) if e.is_retryable() && attempt < retry.attempts => {
                    Delay::from(retry.backoff(attempt, runtime::random_fraction())).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_once(&self, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, CallError> {
        let time = UtcDateTime::from_unix(runtime::now_secs());
        let content_type = "application/json";
        let wire_headers = [("host", self.host.as_str()), ("content-type", content_type)];
        let transport = |e: worker::Error| CallError::Transport(e.to_string());
        let signed = sigv4::sign_request(
            &sigv4::HttpRequest {
                method,
                path,
                query: "",
                headers: &wire_headers,
                body,
            },
            &SigningParams {
                credentials: &self.credentials,
                region: &self.region,
                service: SIGNING_NAME,
                time,
                settings: SigningSettings::default(),
            },
        )
        .map_err(|e| CallError::Transport(e.to_string()))?;
        let headers = Headers::new();
        headers
            .set("content-type", content_type)
            .map_err(transport)?;
        for (name, value) in &signed.headers {
            headers.set(name, value).map_err(transport)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(method.to_string()))
            .with_headers(headers)
            .with_body(Some(js_sys::Uint8Array::from(body).into()));
        let url = format!("{}{}", self.endpoint, path);
        let request = Request::new_with_init(&url, &init).map_err(transport)?;
        let mut response = Fetch::Request(request).send().await.map_err(transport)?;
        let status = response.status_code();
        let bytes = response.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            let error_type = response.headers().get("x-amzn-errortype").ok().flatten();
            // The header may carry a suffix (`Name:http://...`), as AWS's front ends send.
            let error_type =
                error_type.map(|t| t.split(':').next().unwrap_or_default().to_string());
            Err(CallError::Ivs(IvsError::from_response(
                status,
                error_type.as_deref(),
                &bytes,
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let r = Retry::DEFAULT;
        assert_eq!(r.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(r.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(r.backoff(5, 1.0), Duration::from_millis(1_000));
        assert_eq!(r.backoff(3, 0.5), Duration::from_millis(200));
        assert_eq!(r.backoff(30, 1.0), Duration::from_millis(1_000));
    }
}
