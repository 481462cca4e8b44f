//! The account-quota ledger, pure: IVS's region-wide quotas of concurrent subscriptions,
//! concurrent publishers and stages, handed out to the pools that use them as grants.
//!
//! IVS enforces per account and region 20,000 concurrent subscriptions (one viewer watching
//! one publisher is 1), 1,000 concurrent publishers and 1,000 stages (the defaults
//! below); a join past them is refused at WHIP (`QUOTA_EXCEEDED`). The
//! worker's `IvsBudget` object (one per IVS endpoint and region) holds one [`Ledger`]; every
//! pool (a *holder*, named by its broadcast id) holds a [`Grant`] of each quota and seats a
//! viewer or creates a stage only within it, so no token is handed out that IVS would refuse
//! for a region quota.
//!
//! - **Set-target calls.** A holder asks for the total it wants ([`Ledger::grant`]); it gets
//!   that, or as much as is free: a reduction is always granted, an increase up to what no
//!   other holder has. Asking again with the same target is a renewal, so a retried call is
//!   harmless.
//! - **Chunks.** Pools ask for subscriptions in chunks ([`subscription_target`]), so the
//!   ledger is called once per chunk of joins, not per viewer.
//! - **Leases.** A grant lapses `grant_ttl_ms` after its last call ([`Ledger::expire`]): a
//!   pool that crashed or was deleted cannot hold quota for ever.
//! - **A reserve** of each quota ([`LedgerConfig::reserve_percent`]) is kept for the account's
//!   other users.
//!
//! Never more than [`LedgerConfig::usable`] is held in total, whatever the order of the calls
//! (a property test, `core/tests/ledger.rs`). `now` is an argument; there is no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// IVS's default concurrent subscriptions per account and region.
pub const IVS_CONCURRENT_SUBSCRIPTIONS: u32 = 20_000;
/// IVS's default concurrent publishers per account and region.
pub const IVS_CONCURRENT_PUBLISHERS: u32 = 1_000;
/// IVS's default stages per account and region.
pub const IVS_STAGES: u32 = 1_000;
/// How long a grant lasts without a call of its holder, by default.
pub const DEFAULT_GRANT_TTL_MS: Millis = 300_000;
/// Subscriptions a pool asks for at a time, at most (see [`chunk_for`]).
pub const MAX_SUBSCRIPTION_CHUNK: u32 = 50;

/// An amount of each region quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Quotas {
    /// Concurrent subscriptions (a viewer watching the host is one).
    pub subscriptions: u32,
    /// Concurrent publishers (the host on a stage, or its replica).
    pub publishers: u32,
    /// Stages.
    pub stages: u32,
}

impl Quotas {
    /// Nothing of any quota.
    pub const ZERO: Quotas = Quotas {
        subscriptions: 0,
        publishers: 0,
        stages: 0,
    };

    /// The amount of `quota`.
    pub fn get(&self, quota: Quota) -> u32 {
        match quota {
            Quota::Subscriptions => self.subscriptions,
            Quota::Publishers => self.publishers,
            Quota::Stages => self.stages,
        }
    }

    fn set(&mut self, quota: Quota, value: u32) {
        match quota {
            Quota::Subscriptions => self.subscriptions = value,
            Quota::Publishers => self.publishers = value,
            Quota::Stages => self.stages = value,
        }
    }

    fn zip(self, other: Quotas, f: impl Fn(u32, u32) -> u32) -> Quotas {
        let mut out = Quotas::ZERO;
        for q in Quota::ALL {
            out.set(q, f(self.get(q), other.get(q)));
        }
        out
    }

    /// Each quota of `self` minus `other`'s, at least 0.
    pub fn saturating_sub(self, other: Quotas) -> Quotas {
        self.zip(other, u32::saturating_sub)
    }

    /// Each quota of both, added.
    pub fn saturating_add(self, other: Quotas) -> Quotas {
        self.zip(other, u32::saturating_add)
    }

    /// Whether every quota of `self` is at least `other`'s.
    pub fn covers(&self, other: &Quotas) -> bool {
        Quota::ALL.iter().all(|&q| self.get(q) >= other.get(q))
    }

    /// Whether every quota is 0.
    pub fn is_zero(&self) -> bool {
        *self == Quotas::ZERO
    }
}

/// One of IVS's region quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quota {
    /// Concurrent subscriptions.
    Subscriptions,
    /// Concurrent publishers.
    Publishers,
    /// Stages.
    Stages,
}

impl Quota {
    /// Every quota.
    pub const ALL: [Quota; 3] = [Quota::Subscriptions, Quota::Publishers, Quota::Stages];

    /// What IVS calls it.
    pub fn ivs_name(self) -> &'static str {
        match self {
            Quota::Subscriptions => "concurrent subscriptions",
            Quota::Publishers => "concurrent publishers",
            Quota::Stages => "stages",
        }
    }
}

spelled!(
    Quota,
    "Its name in messages and JSON.",
    Quota::Subscriptions => "subscriptions",
    Quota::Publishers => "publishers",
    Quota::Stages => "stages",
);

/// The ledger's configuration (`IVS_QUOTA_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerConfig {
    /// `IVS_QUOTA_SUBSCRIPTIONS`, `IVS_QUOTA_PUBLISHERS`, `IVS_QUOTA_STAGES`: the account's
    /// quotas in this region (IVS's defaults 20,000, 1,000, 1,000; raise them with AWS's).
    pub limits: Quotas,
    /// `IVS_QUOTA_RESERVE_PERCENT`: the share of each quota kept for the account's other
    /// users (0..=90, default 0).
    pub reserve_percent: u32,
    /// `IVS_QUOTA_GRANT_TTL_SECONDS` in ms: a grant lapses this long after its holder's
    /// last call.
    pub grant_ttl_ms: Millis,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            limits: Quotas {
                subscriptions: IVS_CONCURRENT_SUBSCRIPTIONS,
                publishers: IVS_CONCURRENT_PUBLISHERS,
                stages: IVS_STAGES,
            },
            reserve_percent: 0,
            grant_ttl_ms: DEFAULT_GRANT_TTL_MS,
        }
    }
}

impl LedgerConfig {
    /// What stagefan may hand out: each limit minus its reserve (rounded up).
    pub fn usable(&self) -> Quotas {
        let pct = u64::from(self.reserve_percent.min(100));
        let mut out = Quotas::ZERO;
        for q in Quota::ALL {
            let limit = u64::from(self.limits.get(q));
            let reserve = (limit * pct).div_ceil(100);
            out.set(q, (limit - reserve) as u32);
        }
        out
    }
}

/// What one holder holds: the stored row of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    /// The holder (a pool: its broadcast id).
    pub holder: String,
    /// What it holds.
    pub held: Quotas,
    /// When it lapses unless the holder calls again (the ledger's clock).
    pub expires_at: Millis,
    /// The ledger's sequence number of this row's last change (for logs: it restarts from
    /// the highest stored row's).
    pub version: u64,
}

/// The ledger's answer to a holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantAnswer {
    /// What the holder now holds.
    pub held: Quotas,
    /// How long it lasts from the call (the holder counts it from when it asked).
    pub ttl_ms: Millis,
    /// The row's version.
    pub version: u64,
    /// What is left in the region for anyone after this call.
    pub free: Quotas,
    /// What stagefan may hold in the region in all (the limits minus the reserve).
    pub usable: Quotas,
    /// The first quota of which the holder asked more than it got.
    pub short: Option<Quota>,
}

/// The ledger of one region: every holder's grant. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ledger {
    grants: BTreeMap<String, Grant>,
    version: u64,
}

impl Ledger {
    /// The ledger of the stored rows.
    pub fn from_rows(rows: impl IntoIterator<Item = Grant>) -> Ledger {
        let grants: BTreeMap<String, Grant> =
            rows.into_iter().map(|g| (g.holder.clone(), g)).collect();
        let version = grants.values().map(|g| g.version).max().unwrap_or(0);
        Ledger { grants, version }
    }

    /// Every grant, by holder.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.values()
    }

    /// The grant of `holder`, if it holds one.
    pub fn holding(&self, holder: &str) -> Option<&Grant> {
        self.grants.get(holder)
    }

    /// What every holder holds, together.
    pub fn held_total(&self) -> Quotas {
        self.grants
            .values()
            .fold(Quotas::ZERO, |sum, g| sum.saturating_add(g.held))
    }

    /// What is left to hand out.
    pub fn free(&self, cfg: &LedgerConfig) -> Quotas {
        cfg.usable().saturating_sub(self.held_total())
    }

    /// Drops the grants that lapsed by `now`; returns their holders (delete their rows).
    pub fn expire(&mut self, now: Millis) -> Vec<String> {
        let lapsed: Vec<String> = self
            .grants
            .values()
            .filter(|g| g.expires_at <= now)
            .map(|g| g.holder.clone())
            .collect();
        for h in &lapsed {
            self.grants.remove(h);
        }
        lapsed
    }

    /// Sets what `holder` holds to `want`, or as near as the region allows: each quota is
    /// lowered to `want` at once, raised only by what is free. Renews the grant's lease. A
    /// `want` of nothing gives the grant back. Sweeps lapsed grants first.
    pub fn grant(
        &mut self,
        cfg: &LedgerConfig,
        holder: &str,
        want: Quotas,
        now: Millis,
    ) -> GrantAnswer {
        self.expire(now);
        let free = self.free(cfg);
        let held = self.grants.get(holder).map_or(Quotas::ZERO, |g| g.held);
        let mut new = Quotas::ZERO;
        let mut short = None;
        for q in Quota::ALL {
            let (w, h) = (want.get(q), held.get(q));
            let got = if w <= h {
                w
            } else {
                h + (w - h).min(free.get(q))
            };
            if got < w && short.is_none() {
                short = Some(q);
            }
            new.set(q, got);
        }
        self.put(cfg, holder, new, now, short)
    }

    /// Renews `holder`'s grant as it is (nothing if it lapsed: then it must ask again).
    pub fn renew(&mut self, cfg: &LedgerConfig, holder: &str, now: Millis) -> GrantAnswer {
        self.expire(now);
        let held = self.grants.get(holder).map_or(Quotas::ZERO, |g| g.held);
        self.put(cfg, holder, held, now, None)
    }

    /// Gives `holder`'s grant back; whether it held one.
    pub fn give_back(&mut self, holder: &str) -> bool {
        self.grants.remove(holder).is_some()
    }

    fn put(
        &mut self,
        cfg: &LedgerConfig,
        holder: &str,
        held: Quotas,
        now: Millis,
        short: Option<Quota>,
    ) -> GrantAnswer {
        self.version += 1;
        if held.is_zero() {
            self.grants.remove(holder);
        } else {
            self.grants.insert(
                holder.to_string(),
                Grant {
                    holder: holder.to_string(),
                    held,
                    expires_at: now.saturating_add(cfg.grant_ttl_ms),
                    version: self.version,
                },
            );
        }
        GrantAnswer {
            held,
            ttl_ms: cfg.grant_ttl_ms,
            version: self.version,
            free: self.free(cfg),
            usable: cfg.usable(),
            short,
        }
    }
}

/// A region's ledger as a reader outside the ledger sees it (the admin route, the monitor's
/// quota gauges, the status page): what the account allows, what stagefan may hold of it,
/// and what its pools hold now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerUsage {
    /// The account's quotas in the region (`IVS_QUOTA_*`).
    pub limits: Quotas,
    /// What stagefan may hold: the limits minus the reserve for the account's other users.
    pub usable: Quotas,
    /// What every pool of the region holds (grants that had not lapsed at the read).
    pub held: Quotas,
    /// Pools holding a grant.
    pub holders: u32,
}

impl Ledger {
    /// The region's use at `now`, lapsed grants left out (the read changes nothing).
    pub fn usage(&self, cfg: &LedgerConfig, now: Millis) -> LedgerUsage {
        let live = self.grants.values().filter(|g| g.expires_at > now);
        let (held, holders) = live.fold((Quotas::ZERO, 0u32), |(sum, n), g| {
            (sum.saturating_add(g.held), n + 1)
        });
        LedgerUsage {
            limits: cfg.limits,
            usable: cfg.usable(),
            held,
            holders,
        }
    }
}

/// The subscriptions a pool asks for at a time: a stage's capacity, at most
/// [`MAX_SUBSCRIPTION_CHUNK`], at least 1.
pub fn chunk_for(capacity: u32) -> u32 {
    capacity.clamp(1, MAX_SUBSCRIPTION_CHUNK)
}

/// The subscriptions a pool with `seated` viewers holding `held` should ask for, if it should
/// ask. On a join (`trim` false): more once fewer than half a `chunk` is left
/// (`seated + chunk`). On its alarm (`trim` true): the same ahead of need, and back down to
/// `seated + chunk` once more than two chunks are idle. When the region is `tight` (less
/// than a chunk was left at the last answer) the chunk is 1, a pool asks only for the viewer
/// in front of it, and its alarm gives every idle grant back, so that the last
/// subscriptions of a region go to the pools whose viewers ask for them.
pub fn subscription_target(
    seated: u32,
    held: u32,
    chunk: u32,
    tight: bool,
    trim: bool,
) -> Option<u32> {
    let left = held.saturating_sub(seated);
    if tight {
        return if !trim && left == 0 {
            Some(seated.saturating_add(1))
        } else if trim && left > 0 {
            Some(seated)
        } else {
            None
        };
    }
    let chunk = chunk.max(1);
    let low = left < chunk.div_ceil(2);
    let idle = trim && left > 2 * chunk;
    (low || idle).then(|| seated.saturating_add(chunk))
}
