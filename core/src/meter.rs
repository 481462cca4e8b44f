//! The cost meter's words: participant time by kind, the price table, and the estimated cost.
//!
//! IVS Real-Time bills "the duration of participant hours for each host or viewer connected
//! to a stage". A broadcast's participants are its viewers (one per seat), the host on every
//! stage it publishes to itself (multi-publish: each stage; replicate: each origin), and in
//! replicate mode the host's replica on each replica stage. Whether a replica is billed as a
//! participant is not documented in what this project could check, so it is metered and
//! priced apart. The prices are estimates from configuration (`IVS_PARTICIPANT_HOUR_PRICES`),
//! not a bill: money is kept in micro-dollars, integers, so sums are exact and reproducible.

use serde::{Deserialize, Serialize};

use crate::ids::InvalidField;

/// One hour in milliseconds.
pub const HOUR_MS: u64 = 3_600_000;

/// The default price of one participant-hour, in micro-dollars: 0.072 USD. An estimate
/// (Amazon's public price list for real-time participants, not confirmed in this project's
/// reference store); set `IVS_PARTICIPANT_HOUR_PRICES` to the rates of your account.
pub const DEFAULT_PARTICIPANT_HOUR_MICRO_USD: u64 = 72_000;

/// Participant time of one kind each: viewers, the host's own publishers, replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ByKind {
    /// Viewers: one participant per seat.
    pub viewers: u64,
    /// The host, once per stage it publishes to itself.
    pub hosts: u64,
    /// The host's replicas (replicate mode), one per replica stage receiving it.
    pub replicas: u64,
}

impl ByKind {
    /// The sum of the three kinds.
    pub fn total(&self) -> u64 {
        self.viewers
            .saturating_add(self.hosts)
            .saturating_add(self.replicas)
    }

    /// `self + other`, kind by kind.
    pub fn plus(self, other: ByKind) -> ByKind {
        ByKind {
            viewers: self.viewers.saturating_add(other.viewers),
            hosts: self.hosts.saturating_add(other.hosts),
            replicas: self.replicas.saturating_add(other.replicas),
        }
    }
}

/// The price table: micro-dollars per participant-hour of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prices {
    /// A viewer's hour.
    pub viewer: u64,
    /// A host publisher's hour.
    pub host: u64,
    /// A replica's hour.
    pub replica: u64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            viewer: DEFAULT_PARTICIPANT_HOUR_MICRO_USD,
            host: DEFAULT_PARTICIPANT_HOUR_MICRO_USD,
            replica: DEFAULT_PARTICIPANT_HOUR_MICRO_USD,
        }
    }
}

/// The variable the price table is read from.
pub const PRICES_VAR: &str = "IVS_PARTICIPANT_HOUR_PRICES";

/// Most a participant-hour may be priced at: 100 USD (anything above is a typo).
const MAX_PRICE_MICRO_USD: u64 = 100_000_000;

impl Prices {
    /// Parses `viewer=0.072,host=0.072,replica=0.072` (USD per participant-hour, up to six
    /// decimals; kinds left out keep the default; `all=` sets the three at once, before the
    /// others). `None` or an empty string: the defaults.
    pub fn parse(value: Option<&str>) -> Result<Prices, InvalidField> {
        let mut prices = Prices::default();
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(prices);
        };
        let bad = |why: String| InvalidField::new(PRICES_VAR, why);
        let mut pairs = Vec::new();
        for item in value.split(',') {
            let Some((kind, price)) = item.split_once('=') else {
                return Err(bad(format!(
                    "expected `kind=USD` items separated by commas (kinds: all, viewer, host, \
                     replica), got {item:?}"
                )));
            };
            let micro = parse_usd(price.trim()).map_err(|why| bad(format!("{kind}: {why}")))?;
            pairs.push((kind.trim(), micro));
        }
        // `all` first, whatever its place, so `viewer=…,all=…` means what it says.
        pairs.sort_by_key(|(kind, _)| *kind != "all");
        for (kind, micro) in pairs {
            match kind {
                "all" => {
                    prices = Prices {
                        viewer: micro,
                        host: micro,
                        replica: micro,
                    }
                }
                "viewer" => prices.viewer = micro,
                "host" => prices.host = micro,
                "replica" => prices.replica = micro,
                other => {
                    return Err(bad(format!(
                        "unknown kind {other:?} (kinds: all, viewer, host, replica)"
                    )))
                }
            }
        }
        Ok(prices)
    }

    /// What `ms` participant-milliseconds of each kind cost, in micro-dollars (rounded down).
    pub fn cost(&self, ms: ByKind) -> u64 {
        let part = |ms: u64, price: u64| -> u64 {
            (u128::from(ms) * u128::from(price) / u128::from(HOUR_MS)).min(u128::from(u64::MAX))
                as u64
        };
        part(ms.viewers, self.viewer)
            .saturating_add(part(ms.hosts, self.host))
            .saturating_add(part(ms.replicas, self.replica))
    }

    /// What an hour of `participants` (counts of each kind) costs, in micro-dollars.
    pub fn per_hour(&self, participants: ByKind) -> u64 {
        participants
            .viewers
            .saturating_mul(self.viewer)
            .saturating_add(participants.hosts.saturating_mul(self.host))
            .saturating_add(participants.replicas.saturating_mul(self.replica))
    }
}

/// `0.072` → 72000 micro-dollars: digits, at most one point, at most six decimals.
fn parse_usd(text: &str) -> Result<u64, String> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(format!(
            "must be a price in USD such as 0.072, got {text:?}"
        ));
    }
    if frac.len() > 6 {
        return Err(format!(
            "at most six decimals (micro-dollars), got {text:?}"
        ));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| format!("too large, got {text:?}"))?
    };
    let frac: u64 = format!("{frac:0<6}").parse().unwrap_or(0);
    let micro = whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac))
        .filter(|m| *m <= MAX_PRICE_MICRO_USD)
        .ok_or_else(|| format!("at most 100 USD per participant-hour, got {text:?}"))?;
    Ok(micro)
}

/// The meter of a broadcast (or of one stage) at a moment: time so far, participants now,
/// and what both cost at the configured prices.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeterView {
    /// Participant-milliseconds so far, by kind.
    pub participant_ms: ByKind,
    /// Participants connected now, by kind.
    pub participants: ByKind,
    /// Estimated cost so far, micro-dollars.
    pub cost_micro_usd: u64,
    /// Estimated cost of an hour at the participants of now, micro-dollars.
    pub cost_micro_usd_per_hour: u64,
}

impl MeterView {
    /// The view of `ms` so far and `participants` now at `prices`.
    pub fn new(ms: ByKind, participants: ByKind, prices: &Prices) -> MeterView {
        MeterView {
            participant_ms: ms,
            participants,
            cost_micro_usd: prices.cost(ms),
            cost_micro_usd_per_hour: prices.per_hour(participants),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_usd_with_up_to_six_decimals() {
        let p = Prices::parse(Some("viewer=0.072, host=1.5,replica=.000001")).unwrap();
        assert_eq!((p.viewer, p.host, p.replica), (72_000, 1_500_000, 1));
        assert_eq!(Prices::parse(None).unwrap(), Prices::default());
        assert_eq!(Prices::parse(Some(" ")).unwrap(), Prices::default());
        let all = Prices::parse(Some("host=0.1,all=0.05")).unwrap();
        assert_eq!(
            (all.viewer, all.host, all.replica),
            (50_000, 100_000, 50_000)
        );
    }

    #[test]
    fn bad_prices_name_the_variable_and_the_item() {
        for bad in [
            "viewer",
            "viewer=",
            "viewer=abc",
            "viewer=-1",
            "viewer=0.0000001",
            "viewer=101",
            "guest=0.1",
            "viewer=1.2.3",
        ] {
            let err = Prices::parse(Some(bad)).unwrap_err();
            assert_eq!(err.field, PRICES_VAR, "{bad}");
        }
        assert!(Prices::parse(Some("guest=0.1"))
            .unwrap_err()
            .problem
            .contains("guest"));
    }

    #[test]
    fn cost_is_exact_in_micro_dollars() {
        let p = Prices::default();
        // 10 participant-hours of viewers, 1 of host: 11 × 0.072 USD.
        let ms = ByKind {
            viewers: 10 * HOUR_MS,
            hosts: HOUR_MS,
            replicas: 0,
        };
        assert_eq!(p.cost(ms), 792_000);
        let now = ByKind {
            viewers: 100,
            hosts: 2,
            replicas: 0,
        };
        assert_eq!(p.per_hour(now), 102 * 72_000);
    }
}
