//! The stage pool of one broadcast: its stages, their states and loads, and the viewers'
//! leases.
//!
//! The worker's Durable Object owns one [`Pool`] per broadcast and is its single writer. The
//! Durable Object runs one request at a time between `await`s, but IVS calls are awaited, so
//! everything that is in flight with IVS is an explicit state of the pool: a stage being
//! created is a [`StageState::Creating`] row (its id is the create intent, handed out once),
//! a stage being deleted is a draining row with `delete_requested_at` set.
//!
//! Nothing here reads a clock or draws random numbers: `now` (unix milliseconds) and the
//! random bytes of lease ids are arguments.
//!
//! # Persistence
//! Every mutation records the rows it touched; [`Pool::take_changes`] hands them over so the
//! adapter writes only those rows ([`Stage`], [`Lease`] and the single [`PoolMeta`] row, all
//! serde) and deletes the removed ones. [`Pool::from_rows`] rebuilds the pool from the rows;
//! stage loads are derived from the leases and are not stored.
//!
//! # Example: what the Durable Object does
//! ```
//! use stagefan_core::pool::{Pool, PoolSettings, StageEndpoints, AssignError};
//!
//! let now = 1_764_160_000_000;
//! let settings = PoolSettings { capacity: 1, ..PoolSettings::default() };
//! let mut pool = Pool::new("default", settings, now).unwrap();
//! // Scale up: record the intent, call CreateStage once for it, report the answer.
//! let intent = pool.begin_create(now).unwrap();
//! let arn = "arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGH1234";
//! pool.created(intent.stage, arn, StageEndpoints::default(), now + 150).unwrap();
//! // The host page says it publishes there.
//! pool.mark_live(intent.stage, "host-participant", now + 900).unwrap();
//! // A viewer joins: random bytes come from the adapter (crypto.getRandomValues).
//! let seat = pool.assign("viewer-123", now + 1_000, &[7u8; 16]).unwrap();
//! assert_eq!(seat.stage_arn, arn);
//! assert!(seat.lease_id.starts_with("default."));
//! // Persist what changed, then answer.
//! let changes = pool.take_changes();
//! assert!(changes.leases_upserted.contains(&seat.lease_id));
//! // A full pool refuses with what the 503 needs.
//! match pool.assign("viewer-456", now + 1_100, &[8u8; 16]) {
//!     Err(AssignError::NoSeat(no)) => assert!(!no.stage_being_created() && no.can_create),
//!     other => panic!("{other:?}"),
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;

use crate::ids::{validate_broadcast_id, InvalidField};
use crate::meter::{ByKind, Prices};
use crate::modes::FanoutMode;
use crate::presence::Presence;
pub use crate::time::Millis;

/// Default seats per stage (the seed's example).
pub const DEFAULT_STAGE_CAPACITY: u32 = 50;
/// Largest seats per stage accepted: IVS's subscriber quota can be raised to 25,000.
pub const MAX_STAGE_CAPACITY: u32 = 25_000;
/// Default lowest number of stages a broadcast keeps.
pub const DEFAULT_MIN_STAGES: u32 = 1;
/// Default highest number of stages a broadcast may use.
pub const DEFAULT_MAX_STAGES: u32 = 100;
/// Largest `MAX_STAGES` accepted (IVS's default stage quota per region is 1,000; it can be raised).
pub const MAX_MAX_STAGES: u32 = 10_000;
/// Default lease time to live, in seconds.
pub const DEFAULT_LEASE_TTL_SECONDS: u32 = 60;
/// Default limit of seats one client address (IPv4, or IPv6 /64) holds per broadcast.
pub const DEFAULT_MAX_SEATS_PER_CLIENT: u32 = 16;
/// Default headroom, as a fraction of one stage's capacity.
pub const DEFAULT_HEADROOM: f64 = 0.5;
/// Default grace before an empty stage is drained, and before a drained stage is deleted.
pub const DEFAULT_SCALE_DOWN_GRACE_SECONDS: u32 = 300;
/// Default deployment id (`STAGEFAN_DEPLOYMENT`), the value of the `stagefan:deployment` tag.
pub const DEFAULT_DEPLOYMENT: &str = "local";

/// Free seats to keep ahead of need for a stage capacity and a headroom fraction: at least one.
pub fn headroom_seats(capacity: u32, headroom: f64) -> u32 {
    let seats = (f64::from(capacity) * headroom).ceil();
    if seats.is_nan() || seats < 1.0 {
        1
    } else if seats > f64::from(u32::MAX) {
        u32::MAX
    } else {
        seats as u32
    }
}

/// Replication destinations one participant may have at once (IVS quota, not adjustable):
/// one origin stage serves itself and this many replica stages.
pub const MAX_REPLICAS_PER_ORIGIN: usize = crate::ivs::MAX_REPLICATIONS_PER_PARTICIPANT;

/// How many deleted stage rows a pool keeps for its history before forgetting the oldest.
pub const DELETED_STAGES_RETAINED: usize = 32;

/// Random bytes that make a lease id: 16 bytes, 22 url-safe base64 characters.
pub const LEASE_RANDOM_BYTES: usize = 16;

pub use crate::tags::{TAG_BROADCAST, TAG_DEPLOYMENT, TAG_MANAGED};

mod life;
mod lifecycle;
mod meter;
mod moves;
mod observation;
mod presence;
mod quota;
mod rows;
mod seats;
mod types;
mod views;

pub use life::*;
pub use meter::*;
pub use moves::*;
pub use observation::*;
pub use quota::*;
pub use types::*;
pub use views::*;

/// The stage pool of one broadcast. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    settings: PoolSettings,
    meta: PoolMeta,
    stages: BTreeMap<StageId, Stage>,
    by_arn: BTreeMap<String, StageId>,
    leases: BTreeMap<String, Lease>,
    /// Participant id → lease id.
    by_participant: BTreeMap<String, String>,
    /// Client → seats it holds.
    by_client: BTreeMap<String, u32>,
    expiry: BTreeSet<(Millis, String)>,
    /// Stages that can take a viewer, ordered as assignment prefers them.
    open: BTreeSet<OpenKey>,
    changes: Changes,
}

/// Orders the stages that can take a viewer: live before warming, then lowest load, then
/// oldest. The first key is the assignment.
type OpenKey = (u8, u32, StageId);

fn open_key(st: &Stage) -> Option<OpenKey> {
    if st.load >= st.capacity {
        return None;
    }
    match st.state {
        StageState::Live => Some((0, st.load, st.id)),
        // A warming replica may never get the host (replication can fail): no viewers until
        // the host's replica is seen there. A warming origin gets the host directly.
        StageState::Warming if st.origin.is_none() => Some((1, st.load, st.id)),
        _ => None,
    }
}

/// The IVS participant id of a seat, derived from the random bytes that made its lease (or,
/// for rows stored before leases had one, from the lease id): 16 url-safe characters, so it
/// is a valid `jti`. One-way, so a participant id seen by others (IVS lists participants)
/// does not reveal the lease id that holds the seat.
pub fn derive_participant_id(seed: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(b"stagefan participant ");
    hasher.update(seed);
    let digest = hasher.finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..12])
}

/// The key that per-client limits count by: an IPv4 address as it is, an IPv6 address by its
/// /64 (one subscriber line usually holds a whole /64). `None` for what is not an address.
pub fn client_key(ip: &str) -> Option<String> {
    match ip.trim().parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(v4) => Some(v4.to_string()),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(v4.to_string()),
            None => {
                let s = v6.segments();
                Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
            }
        },
    }
}

#[cfg(test)]
impl Pool {
    /// A pool `b` made at `t0` with `n` stages IVS created (ARNs `…/abcdEFGH0000` on), for
    /// the crate's inline tests.
    pub(crate) fn with_created_stages(settings: PoolSettings, n: u64, t0: Millis) -> Pool {
        let mut pool = Pool::new("b", settings, t0).unwrap();
        for i in 0..n {
            let intent = pool.begin_create(t0).unwrap();
            let arn = format!("arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGH{i:04}");
            pool.created(intent.stage, &arn, StageEndpoints::default(), t0)
                .unwrap();
        }
        pool
    }
}
