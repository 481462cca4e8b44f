//! The pool's share of the region's IVS quotas: the grant it holds from the account-quota
//! ledger ([`crate::ledger`]), what it uses of it, and what it should ask for next.
//!
//! A pool whose quota is enforced ([`Pool::enforce_quota`]; the worker does it for every
//! pool) seats a new viewer only within its granted subscriptions and creates a stage only
//! within its granted stages and publishers. What it uses: one subscription per seat (each
//! viewer subscribes to one publisher: the host, or the host's replica on a replica stage),
//! and per stage it holds (creating, warming, live or draining) one stage and one publisher
//! (multi-publish: the host publishes to every stage; replicate mode: the host on its origin,
//! its replica on each replica stage). The grant is the pool's own row (in [`PoolMeta`]), so
//! it survives a restart; it lapses at `expires_at` unless renewed, as the ledger's copy does.

use serde::{Deserialize, Serialize};

use super::*;
use crate::ledger::{self, GrantAnswer, Quota, Quotas};

/// What the pool holds of the region's quotas (stored with the pool's meta row).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QuotaHold {
    /// What the ledger granted.
    pub held: Quotas,
    /// When the grant lapses (this pool's clock: when it asked, plus the grant's TTL).
    pub expires_at: Millis,
    /// When to renew it (half its TTL after the ask).
    pub renew_at: Millis,
    /// The ledger's version of the grant.
    pub version: u64,
    /// Whether less than a chunk of subscriptions was left in the region at the last answer:
    /// the pool then asks one at a time and gives idle ones back at once.
    pub tight: bool,
    /// The quota the pool last asked more of than it got (a scale-up or seats blocked by the
    /// region), for the snapshot and the refusal's code.
    pub short: Option<Quota>,
}

/// The quota part of the admin snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaView {
    /// What the pool holds (nothing once the grant lapsed).
    pub held: Quotas,
    /// What it uses of it.
    pub in_use: Quotas,
    /// When the grant lapses unless renewed.
    pub expires_at: Millis,
    /// Whether the region was nearly handed out at the last answer.
    pub tight: bool,
    /// The quota the region could not give the pool more of at its last ask.
    pub short: Option<Quota>,
}

impl Pool {
    /// Turns the quota on: from now on, seats and stages only within the grant (none until
    /// the first [`Pool::apply_quota`]).
    pub fn enforce_quota(&mut self) {
        if self.meta.quota.is_none() {
            self.meta.quota = Some(QuotaHold::default());
            self.changes.meta = true;
        }
    }

    /// The grant, when the quota is enforced.
    pub fn quota_hold(&self) -> Option<&QuotaHold> {
        self.meta.quota.as_ref()
    }

    /// What the pool may use at `now`: `None` when the quota is not enforced, nothing once the
    /// grant lapsed.
    pub fn quota_granted(&self, now: Millis) -> Option<Quotas> {
        let hold = self.meta.quota.as_ref()?;
        Some(if now < hold.expires_at {
            hold.held
        } else {
            Quotas::ZERO
        })
    }

    /// What the pool uses: one subscription per seat, one stage and one publisher per stage
    /// it holds (deleted ones aside).
    pub fn quota_in_use(&self) -> Quotas {
        let stages = self.existing_stages();
        Quotas {
            subscriptions: self.leases.len() as u32,
            publishers: stages,
            stages,
        }
    }

    /// What the pool should ask the ledger for now, if anything: more subscriptions by chunks
    /// ([`ledger::subscription_target`]), `extra_stages` stages (and their publishers) beyond
    /// those it holds, idle grants back when `trim` (its alarm), or the same again when the
    /// grant is due for renewal. `None` when the quota is not enforced or nothing is to ask.
    pub fn quota_want(&self, now: Millis, extra_stages: u32, trim: bool) -> Option<Quotas> {
        let hold = self.meta.quota.as_ref()?;
        let held = self.quota_granted(now)?;
        let used = self.quota_in_use();
        let chunk = ledger::chunk_for(self.settings.capacity);
        let mut want = held;
        if let Some(subs) = ledger::subscription_target(
            used.subscriptions,
            held.subscriptions,
            chunk,
            hold.tight,
            trim,
        ) {
            want.subscriptions = subs;
        }
        let stages = used.stages.saturating_add(extra_stages);
        if stages > held.stages || (trim && held.stages > stages) {
            want.stages = stages;
        }
        if stages > held.publishers || (trim && held.publishers > stages) {
            want.publishers = stages;
        }
        let renew = now >= hold.renew_at && !(held.is_zero() && want.is_zero());
        (want != held || renew).then_some(want)
    }

    /// Lowers the grant to at most `target` before giving the rest back, so the pool never
    /// counts on what it is returning.
    pub fn lower_quota(&mut self, target: Quotas) {
        if let Some(hold) = self.meta.quota.as_mut() {
            let lowered = Quotas {
                subscriptions: hold.held.subscriptions.min(target.subscriptions),
                publishers: hold.held.publishers.min(target.publishers),
                stages: hold.held.stages.min(target.stages),
            };
            if lowered != hold.held {
                hold.held = lowered;
                self.changes.meta = true;
            }
        }
    }

    /// Records the ledger's answer to a call made at `asked_at`.
    pub fn apply_quota(&mut self, answer: &GrantAnswer, asked_at: Millis) {
        let chunk = ledger::chunk_for(self.settings.capacity);
        let hold = self.meta.quota.get_or_insert_with(QuotaHold::default);
        hold.held = answer.held;
        hold.expires_at = asked_at.saturating_add(answer.ttl_ms);
        hold.renew_at = asked_at.saturating_add(answer.ttl_ms / 2);
        hold.version = answer.version;
        hold.tight = answer.free.subscriptions < chunk;
        hold.short = answer.short;
        self.changes.meta = true;
    }

    /// The quota part of the snapshot.
    pub fn quota_view(&self, now: Millis) -> Option<QuotaView> {
        let hold = self.meta.quota.as_ref()?;
        Some(QuotaView {
            held: self.quota_granted(now)?,
            in_use: self.quota_in_use(),
            expires_at: hold.expires_at,
            tight: hold.tight,
            short: hold.short,
        })
    }

    /// Whether a new seat is beyond the granted subscriptions.
    pub(super) fn subscriptions_exhausted(&self, now: Millis) -> bool {
        self.quota_granted(now)
            .is_some_and(|g| self.leases.len() as u32 >= g.subscriptions)
    }

    /// The region quota a new stage would exceed, if any.
    pub(super) fn stage_quota_exhausted(&self, now: Millis) -> Option<Quota> {
        let granted = self.quota_granted(now)?;
        let used = self.quota_in_use();
        if used.stages >= granted.stages {
            Some(Quota::Stages)
        } else if used.publishers >= granted.publishers {
            Some(Quota::Publishers)
        } else {
            None
        }
    }
}
