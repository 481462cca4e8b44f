//! IVS Real-Time of one region, modelled: stages with their participants, the region's
//! quotas (counted, never silently enforced, so the invariants see any excess), IVS's own
//! per-operation rate limiter (a token bucket per operation, as ivs-local emulates it), and
//! the counters of every call by operation and outcome.

use std::collections::{BTreeMap, VecDeque};

use stagefan_core::ivs::Operation;
use stagefan_core::ledger::Quotas;
use stagefan_core::pacing::TokenBucket;
use stagefan_core::time::Millis;

/// A stage IVS holds.
#[derive(Debug, Clone)]
pub struct IvsStage {
    /// Its name (`{broadcast}-{id}`).
    pub name: String,
    /// Viewers connected (subscribers).
    pub subscribers: u32,
    /// Publishers connected (the host).
    pub publishers: u32,
    /// When IVS created it.
    pub created_at: Millis,
}

/// How one call ended, as its caller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Done, answered.
    Ok,
    /// 429: IVS's limiter refused it (no effect).
    Throttled,
    /// 500 without effect.
    ServerError,
    /// Done, but the answer was lost (the caller sees a timeout).
    Lost,
    /// 404.
    NotFound,
    /// 402 `ServiceQuotaExceededException` (no effect).
    QuotaExceeded,
}

impl Outcome {
    /// Its column in the report.
    pub const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Throttled,
        Outcome::ServerError,
        Outcome::Lost,
        Outcome::NotFound,
        Outcome::QuotaExceeded,
    ];

    /// A short label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Throttled => "429",
            Outcome::ServerError => "5xx",
            Outcome::Lost => "lost",
            Outcome::NotFound => "404",
            Outcome::QuotaExceeded => "402",
        }
    }
}

/// One region of IVS.
#[derive(Debug)]
pub struct IvsRegion {
    /// The region's name.
    pub name: &'static str,
    /// Its quotas.
    pub quotas: Quotas,
    /// Stages by ARN.
    pub stages: BTreeMap<String, IvsStage>,
    next_stage: u64,
    limiter: BTreeMap<Operation, TokenBucket>,
    /// Calls stagefan sent per operation in the last second (the rate invariant).
    pub sent_window: BTreeMap<Operation, VecDeque<Millis>>,
    /// Calls by operation and outcome.
    pub calls: BTreeMap<(Operation, Outcome), u64>,
    /// Subscriptions in the region now (connected viewers).
    pub subscriptions: u64,
    /// Publishers in the region now.
    pub publishers: u64,
    /// Participant-milliseconds connected (subscribers, publishers): what IVS bills.
    pub participant_ms: (u128, u128),
    integrated_at: Millis,
    /// Highest subscriptions at once.
    pub peak_subscriptions: u64,
    /// Highest stages at once.
    pub peak_stages: usize,
}

impl IvsRegion {
    /// An empty region.
    pub fn new(name: &'static str, quotas: Quotas, now: Millis) -> IvsRegion {
        IvsRegion {
            name,
            quotas,
            stages: BTreeMap::new(),
            next_stage: 0,
            limiter: BTreeMap::new(),
            sent_window: BTreeMap::new(),
            calls: BTreeMap::new(),
            subscriptions: 0,
            publishers: 0,
            participant_ms: (0, 0),
            integrated_at: now,
            peak_subscriptions: 0,
            peak_stages: 0,
        }
    }

    /// Integrates the connected participants up to `now`.
    pub fn integrate(&mut self, now: Millis) {
        if now > self.integrated_at {
            let dt = u128::from(now - self.integrated_at);
            self.participant_ms.0 += dt * u128::from(self.subscriptions);
            self.participant_ms.1 += dt * u128::from(self.publishers);
            self.integrated_at = now;
        }
    }

    /// Records a call stagefan sends at `now` (its slot): returns the calls of `op` in the
    /// last second, this one included.
    pub fn sent(&mut self, op: Operation, now: Millis) -> usize {
        let w = self.sent_window.entry(op).or_default();
        while w.front().is_some_and(|&t| now.saturating_sub(t) >= 1_000) {
            w.pop_front();
        }
        w.push_back(now);
        w.len()
    }

    /// IVS's limiter at the call's arrival: whether it lets it through.
    pub fn admit(&mut self, op: Operation, now: Millis) -> bool {
        let tps = op.documented_tps().max(1);
        self.limiter
            .entry(op)
            .or_insert_with(|| TokenBucket::new(tps, f64::from(tps), now))
            .try_take(now)
    }

    /// Counts a call's outcome.
    pub fn count(&mut self, op: Operation, outcome: Outcome) {
        *self.calls.entry((op, outcome)).or_default() += 1;
    }

    /// `CreateStage`: a new stage (refused 402 at the stage quota), its ARN.
    pub fn create_stage(&mut self, name: &str, now: Millis) -> Result<String, Outcome> {
        if self.stages.len() as u64 >= u64::from(self.quotas.stages) {
            return Err(Outcome::QuotaExceeded);
        }
        self.next_stage += 1;
        let arn = format!(
            "arn:aws:ivs:{}:123456789012:stage/s{:011}",
            self.name, self.next_stage
        );
        self.stages.insert(
            arn.clone(),
            IvsStage {
                name: name.to_string(),
                subscribers: 0,
                publishers: 0,
                created_at: now,
            },
        );
        self.peak_stages = self.peak_stages.max(self.stages.len());
        Ok(arn)
    }

    /// `DeleteStage` (or a stage vanishing): its participants are disconnected. Returns
    /// whether it existed.
    pub fn delete_stage(&mut self, arn: &str, now: Millis) -> bool {
        self.integrate(now);
        let Some(st) = self.stages.remove(arn) else {
            return false;
        };
        self.subscriptions -= u64::from(st.subscribers);
        self.publishers -= u64::from(st.publishers);
        true
    }

    /// A viewer connects to `arn`: whether the stage exists.
    pub fn subscribe(&mut self, arn: &str, now: Millis) -> bool {
        self.integrate(now);
        let Some(st) = self.stages.get_mut(arn) else {
            return false;
        };
        st.subscribers += 1;
        self.subscriptions += 1;
        self.peak_subscriptions = self.peak_subscriptions.max(self.subscriptions);
        true
    }

    /// A viewer disconnects from `arn` (nothing if the stage is gone).
    pub fn unsubscribe(&mut self, arn: &str, now: Millis) {
        self.integrate(now);
        if let Some(st) = self.stages.get_mut(arn) {
            st.subscribers -= 1;
            self.subscriptions -= 1;
        }
    }

    /// The host publishes on (`true`) or leaves (`false`) `arn`.
    pub fn publish(&mut self, arn: &str, on: bool, now: Millis) {
        self.integrate(now);
        if let Some(st) = self.stages.get_mut(arn) {
            if on && st.publishers == 0 {
                st.publishers = 1;
                self.publishers += 1;
            } else if !on && st.publishers > 0 {
                st.publishers = 0;
                self.publishers -= 1;
            }
        }
    }

    /// `ListStages` page `page` (100 stages a page, in ARN order): the ARN of the stage
    /// named `name` if it is on that page.
    pub fn find_on_page(&self, name: &str, page: u32) -> Option<String> {
        self.stages
            .iter()
            .skip(page as usize * 100)
            .take(100)
            .find(|(_, s)| s.name == name)
            .map(|(a, _)| a.clone())
    }
}
