//! Each region's account quotas as its ledger (the edge's `IvsBudget` object) holds them.

use prometheus::{IntGaugeVec, Opts, Registry};
use stagefan_core::ledger::{LedgerUsage, Quota};

use super::register;

/// `stagefan_region_quota_{used,usable,limit}{region,quota}` and the holders per region.
pub struct QuotaMetrics {
    used: IntGaugeVec,
    usable: IntGaugeVec,
    limit: IntGaugeVec,
    holders: IntGaugeVec,
}

impl QuotaMetrics {
    /// Registers the quota series.
    pub fn register(r: &Registry) -> Result<Self, prometheus::Error> {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            register(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
        };
        Ok(Self {
            used: vec(
                "region_quota_used",
                "What stagefan's pools hold of a region's account quota (subscriptions, \
                 publishers, stages), as the region's ledger granted it.",
                &["region", "quota"],
            )?,
            usable: vec(
                "region_quota_usable",
                "What stagefan may hold of a region's quota: the limit minus the reserve \
                 for the account's other users (IVS_QUOTA_RESERVE_PERCENT).",
                &["region", "quota"],
            )?,
            limit: vec(
                "region_quota_limit",
                "The account's quota in the region (IVS_QUOTA_SUBSCRIPTIONS, \
                 IVS_QUOTA_PUBLISHERS, IVS_QUOTA_STAGES).",
                &["region", "quota"],
            )?,
            holders: vec(
                "region_quota_holders",
                "Pools holding a grant of the region's quotas.",
                &["region"],
            )?,
        })
    }

    /// Publishes one region's ledger.
    pub fn set(&self, region: &str, usage: &LedgerUsage) {
        for q in Quota::ALL {
            let labels = [region, q.as_str()];
            let gauge = |v: u32| i64::from(v);
            self.used
                .with_label_values(&labels)
                .set(gauge(usage.held.get(q)));
            self.usable
                .with_label_values(&labels)
                .set(gauge(usage.usable.get(q)));
            self.limit
                .with_label_values(&labels)
                .set(gauge(usage.limits.get(q)));
        }
        self.holders
            .with_label_values(&[region])
            .set(i64::from(usage.holders));
    }
}
