//! IVS's per-operation request rates as token buckets (core's [`TokenBucket`]), and the request counters behind
//! `GET /_local/stats` (including the most requests seen in any sliding 1-second window, so a
//! test can prove a client stayed within its budget).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use stagefan_core::ivs::Operation;
use stagefan_core::pacing::TokenBucket;

const WINDOW: Duration = Duration::from_secs(1);

/// Sliding 1-second window of arrival times, remembering its largest size.
#[derive(Debug, Default)]
struct Window {
    times: VecDeque<Instant>,
    max: usize,
}

impl Window {
    fn push(&mut self, now: Instant) {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        self.max = self.max.max(self.times.len());
    }
}

#[derive(Debug, Default)]
struct OpCounters {
    requests: u64,
    throttled: u64,
    refused_auth: u64,
    statuses: BTreeMap<u16, u64>,
    all: Window,
    accepted: Window,
}

/// One operation's figures in `/_local/stats`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OpStats {
    /// Requests that reached the operation (signed or not).
    pub requests: u64,
    /// Answered with ThrottlingException.
    pub throttled: u64,
    /// Refused by SigV4 verification.
    pub refused_auth: u64,
    /// Responses by HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Most requests in any sliding 1-second window (all, including refused ones).
    pub max_requests_per_second: usize,
    /// Most requests let through the rate limiter in any sliding 1-second window.
    pub max_accepted_per_second: usize,
    /// The operation's limit here (IVS's rate times the scale); null when unlimited.
    pub limit_per_second: Option<f64>,
}

struct Inner {
    buckets: BTreeMap<Operation, TokenBucket>,
    /// The first instant seen: the buckets count milliseconds from it.
    epoch: Option<Instant>,
    counters: BTreeMap<Operation, OpCounters>,
}

/// Rate limiter and counters, shared by every request.
pub struct Limits {
    scale: f64,
    inner: Mutex<Inner>,
}

/// What the limiter decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Allowed,
    /// Answer 429 ThrottlingException.
    Throttled,
}

impl Limits {
    /// IVS's documented rates times `scale`; `scale == 0` disables throttling.
    pub fn new(scale: f64) -> Self {
        Self {
            scale,
            inner: Mutex::new(Inner {
                buckets: BTreeMap::new(),
                epoch: None,
                counters: BTreeMap::new(),
            }),
        }
    }

    fn limit(&self, op: Operation) -> Option<f64> {
        (self.scale > 0.0).then(|| f64::from(op.documented_tps()) * self.scale)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a request's arrival.
    pub fn arrived(&self, op: Operation, now: Instant) {
        let mut inner = self.lock();
        let c = inner.counters.entry(op).or_default();
        c.requests += 1;
        c.all.push(now);
    }

    /// Counts a request refused by SigV4.
    pub fn refused_auth(&self, op: Operation) {
        self.lock().counters.entry(op).or_default().refused_auth += 1;
    }

    /// Takes a token from the operation's bucket (after authentication, as AWS does).
    pub fn admit(&self, op: Operation, now: Instant) -> Verdict {
        let limit = self.limit(op);
        let mut inner = self.lock();
        let allowed = match limit {
            None => true,
            Some(rate) => {
                let epoch = *inner.epoch.get_or_insert(now);
                let ms = now.saturating_duration_since(epoch).as_millis() as u64;
                inner
                    .buckets
                    .entry(op)
                    .or_insert_with(|| TokenBucket::one_second(rate, ms))
                    .try_take(ms)
            }
        };
        let c = inner.counters.entry(op).or_default();
        if allowed {
            c.accepted.push(now);
            Verdict::Allowed
        } else {
            c.throttled += 1;
            Verdict::Throttled
        }
    }

    /// Counts the response status.
    pub fn answered(&self, op: Operation, status: u16) {
        *self
            .lock()
            .counters
            .entry(op)
            .or_default()
            .statuses
            .entry(status)
            .or_default() += 1;
    }

    /// Every operation's figures (operations never called are listed with zeros).
    pub fn snapshot(&self) -> BTreeMap<&'static str, OpStats> {
        let inner = self.lock();
        Operation::ALL
            .iter()
            .map(|op| {
                let c = inner.counters.get(op);
                (
                    op.name(),
                    OpStats {
                        requests: c.map_or(0, |c| c.requests),
                        throttled: c.map_or(0, |c| c.throttled),
                        refused_auth: c.map_or(0, |c| c.refused_auth),
                        statuses: c.map(|c| c.statuses.clone()).unwrap_or_default(),
                        max_requests_per_second: c.map_or(0, |c| c.all.max),
                        max_accepted_per_second: c.map_or(0, |c| c.accepted.max),
                        limit_per_second: self.limit(*op),
                    },
                )
            })
            .collect()
    }

    /// The scale of IVS's rates in force.
    pub fn scale(&self) -> f64 {
        self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_and_refills() {
        let limits = Limits::new(1.0);
        let t0 = Instant::now();
        let allowed = (0..10)
            .filter(|_| limits.admit(Operation::CreateStage, t0) == Verdict::Allowed)
            .count();
        assert_eq!(allowed, 5);
        assert_eq!(
            limits.admit(Operation::CreateStage, t0 + Duration::from_millis(100)),
            Verdict::Throttled
        );
        assert_eq!(
            limits.admit(Operation::CreateStage, t0 + Duration::from_millis(200)),
            Verdict::Allowed
        );
        // Another operation has its own bucket.
        assert_eq!(limits.admit(Operation::GetStage, t0), Verdict::Allowed);
        let snap = limits.snapshot();
        assert_eq!(snap["CreateStage"].throttled, 6);
        assert_eq!(snap["CreateStage"].max_accepted_per_second, 6);
        assert_eq!(snap["CreateParticipantToken"].limit_per_second, Some(50.0));
    }

    #[test]
    fn scale_zero_disables_throttling_and_the_window_slides() {
        let limits = Limits::new(0.0);
        let t0 = Instant::now();
        for i in 0..100 {
            assert_eq!(limits.admit(Operation::CreateStage, t0), Verdict::Allowed);
            limits.arrived(Operation::ListStages, t0 + Duration::from_millis(i * 20));
        }
        // 100 arrivals spread over 2 s: at most 50 in any 1-second window.
        assert_eq!(limits.snapshot()["ListStages"].max_requests_per_second, 50);
    }
}
