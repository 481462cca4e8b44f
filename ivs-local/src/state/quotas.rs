//! The region's concurrent-publishers and concurrent-subscriptions quotas. IVS enforces them
//! per account and Region since July 2025 (defaults 1,000 publishers and 20,000
//! subscriptions, "simultaneous publisher-to-subscriber connections across all stages");
//! ivs-local enforces them at the WHIP join, where it refuses a full stage.
//!
//! What is counted, and when. The counts are not kept on the side: they are read from the
//! participant records each time, the same way the per-stage caps are, so they cannot drift
//! or leak. They are the participants the registry holds CONNECTED with a media session.
//!
//! - A **publisher** is a participant admitted by a WHIP publish. It counts from its
//!   admission, before ICE is up, so two racing joins cannot both take the last slot. It stops
//!   counting the moment its connection ends: DELETE, ICE consent lost, the setup deadline, a
//!   refused offer, a newer connection of the same participant id, DisconnectParticipant,
//!   DeleteStage, or its events socket closing.
//! - A **replica** counts as a publisher of its destination stage while it is CONNECTED there.
//!   ivs-local models replication as a publishing participant of the destination, which
//!   already counts toward that stage's 12. It does not count while its source is away
//!   within the reconnect window, and counts again when the source comes back. Whether real
//!   IVS counts replicas toward this quota is unconfirmed.
//! - A **subscription** is one subscriber × one publisher it receives. Each ivs-local
//!   subscribe session (local `/whip/subscribe` or the SDK's `/whip/subscribe/{publisherId}`)
//!   carries one publisher, the stage's host, and a participant id holds one session at a
//!   time. So every subscriber CONNECTED with a media session is one subscription, counted
//!   over the same span as a publisher. Here a session admitted before its stage has a host
//!   counts too: it is waiting for that host.
//! - Publishers receive no media from each other here, so they hold no subscriptions.
//! - A participant joined only by its events socket counts toward neither quota. The SDK
//!   meets capacity on WHIP, and the stage caps do the same.

use super::*;

/// One of the region-wide concurrent quotas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionQuota {
    /// Concurrent publishers (IVS default 1,000).
    Publishers,
    /// Concurrent subscriptions (IVS default 20,000).
    Subscriptions,
}

impl RegionQuota {
    /// The quota a join of `role` takes from.
    pub fn of(role: Role) -> Self {
        match role {
            Role::Publisher => RegionQuota::Publishers,
            Role::Subscriber => RegionQuota::Subscriptions,
        }
    }

    /// The refusal's message, naming the quota.
    pub fn message(self, limit: usize) -> String {
        let what = match self {
            RegionQuota::Publishers => "publishers",
            RegionQuota::Subscriptions => "subscriptions",
        };
        format!("Concurrent {what} quota exceeded: at most {limit} per region")
    }
}

/// The region's current counts and limits (`/_local/stats` `quotas`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaUsage {
    /// Stages that exist.
    pub stages: usize,
    /// `--stage-quota`.
    pub stage_quota: usize,
    /// Concurrent publishers, replicas included.
    pub publishers: usize,
    /// `--publisher-quota`.
    pub publisher_quota: usize,
    /// Concurrent subscriptions.
    pub subscriptions: usize,
    /// `--subscription-quota`.
    pub subscription_quota: usize,
}

impl QuotaUsage {
    /// `{"stages": {"current", "limit"}, "publishers": {…}, "subscriptions": {…}}`.
    pub fn to_json(self) -> serde_json::Value {
        let pair =
            |current: usize, limit: usize| serde_json::json!({"current": current, "limit": limit});
        serde_json::json!({
            "stages": pair(self.stages, self.stage_quota),
            "publishers": pair(self.publishers, self.publisher_quota),
            "subscriptions": pair(self.subscriptions, self.subscription_quota),
        })
    }
}

impl Store {
    /// The region's participants of `role` that count toward its quota (see the module).
    pub fn region_count(&self, role: Role) -> usize {
        self.stages
            .values()
            .filter_map(|s| s.session.as_ref())
            .map(|s| s.connected(role))
            .sum()
    }

    /// The region's counts and limits.
    pub fn quota_usage(&self) -> QuotaUsage {
        QuotaUsage {
            stages: self.stages.len(),
            stage_quota: self.cfg.stage_quota,
            publishers: self.region_count(Role::Publisher),
            publisher_quota: self.cfg.publisher_quota,
            subscriptions: self.region_count(Role::Subscriber),
            subscription_quota: self.cfg.subscription_quota,
        }
    }

    /// Whether `more` more participants of `role` fit in the region's quota. `more` is 0 for
    /// a participant that reconnects into its own slot.
    pub(super) fn check_region_quota(&self, role: Role, more: usize) -> Result<(), AdmitError> {
        let quota = RegionQuota::of(role);
        let limit = match quota {
            RegionQuota::Publishers => self.cfg.publisher_quota,
            RegionQuota::Subscriptions => self.cfg.subscription_quota,
        };
        if more > 0 && self.region_count(role) + more > limit {
            return Err(AdmitError::QuotaExceeded { quota, limit });
        }
        Ok(())
    }

    /// The replicas of `pid` that wait for it to come back to `stage_arn` (within their
    /// reconnect window at `now`): they become publishers again when it does.
    pub(super) fn waiting_replicas(&self, stage_arn: &str, pid: &str, now: i64) -> usize {
        self.replications
            .iter()
            .filter(|r| {
                r.state == ReplicationState::Active
                    && r.source_stage_arn == stage_arn
                    && r.participant_id == pid
                    && r.source_left_at
                        .is_some_and(|t| now < t + r.reconnect_window_seconds)
            })
            .count()
    }

    /// A join of `pid` to `stage_id` was refused at a cap or quota: a participant already in
    /// the session (joined by its events socket, or connected before) gets a JOIN_ERROR
    /// event with `QUOTA_EXCEEDED`, IVS's participant-event code for both.
    pub(super) fn record_join_refused(&mut self, stage_id: &str, pid: &str, now: i64) {
        if let Some(p) = self.participant_mut(stage_id, pid) {
            let mut e = event(EventName::JoinError, pid, now);
            e.error_code = Some("QUOTA_EXCEEDED".into());
            push_event(p, e);
        }
    }
}
