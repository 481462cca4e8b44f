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
use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::ids::{validate_broadcast_id, InvalidField};
use crate::modes::FanoutMode;
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
pub const MAX_REPLICAS_PER_ORIGIN: usize = 5;

/// How many deleted stage rows a pool keeps for its history before forgetting the oldest.
pub const DELETED_STAGES_RETAINED: usize = 32;

/// Random bytes that make a lease id: 16 bytes, 22 url-safe base64 characters.
pub const LEASE_RANDOM_BYTES: usize = 16;

pub use crate::tags::{TAG_BROADCAST, TAG_DEPLOYMENT, TAG_MANAGED};

/// The identity of a stage inside its pool: a sequence number, so a smaller id is an older
/// stage. It is also the id of the create intent that made the stage.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct StageId(pub u64);

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The life of a stage: `creating → warming → live → draining → deleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    /// `CreateStage` has been decided (the intent exists) but IVS has not answered yet.
    Creating,
    /// The stage exists; the host is not yet known to publish on it. Viewers are placed here
    /// only when no live stage has room; they wait for the host.
    Warming,
    /// The host publishes there (reported by the host page or observed in IVS).
    Live,
    /// No new viewers; the host leaves it; deleted once empty.
    Draining,
    /// Gone from IVS (or its create failed). Kept a while as history.
    Deleted,
}

impl StageState {
    /// The lower-case spelling used in JSON and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            StageState::Creating => "creating",
            StageState::Warming => "warming",
            StageState::Live => "live",
            StageState::Draining => "draining",
            StageState::Deleted => "deleted",
        }
    }
}

impl fmt::Display for StageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The endpoints IVS returns for a stage (cache them at creation, as AWS recommends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StageEndpoints {
    /// The WHIP URL (`whip_url` claim of tokens).
    pub whip: String,
    /// The events URL (`events_url` claim of tokens).
    pub events: String,
}

/// One stage of a pool: also the persisted row (serde, camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// Pool-local id (and create-intent id); smaller is older.
    pub id: StageId,
    /// The IVS stage name used for `CreateStage`: `{broadcast}-{id}`.
    pub name: String,
    /// The stage ARN, known once IVS has created it.
    pub arn: Option<String>,
    /// Where the stage is in its life.
    pub state: StageState,
    /// Viewer seats of this stage (fixed when it was created).
    pub capacity: u32,
    /// Seats taken: derived from the leases, never persisted.
    #[serde(skip)]
    pub load: u32,
    /// IVS endpoints, known once created.
    pub endpoints: Option<StageEndpoints>,
    /// Replicate mode: the origin stage whose host this stage receives by replication;
    /// `None` for an origin (and for every stage in multi-publish mode).
    pub origin: Option<StageId>,
    /// When the create intent was made.
    pub created_at: Millis,
    /// When IVS confirmed the stage (warming).
    pub warm_at: Option<Millis>,
    /// When it first went live.
    pub live_at: Option<Millis>,
    /// Since when it has had no viewers (`None` while it has some, and once deleted).
    pub empty_since: Option<Millis>,
    /// When draining began.
    pub draining_since: Option<Millis>,
    /// When the adapter was told to call `DeleteStage` (the delete intent).
    pub delete_requested_at: Option<Millis>,
    /// When it was deleted (or its create failed).
    pub deleted_at: Option<Millis>,
    /// Whether it went to `deleted` because its create failed.
    pub create_failed: bool,
    /// Whether it went to `deleted` because IVS no longer had it (deleted behind the pool's
    /// back): its viewers were evicted to be seated elsewhere.
    #[serde(default)]
    pub gone: bool,
    /// The host's (or its replica's) participant id on this stage, when known.
    pub host_participant_id: Option<String>,
    /// Whether the host was last known to publish here.
    pub host_publishing: bool,
    /// When `host_publishing` was last set; older observations do not override it.
    pub host_changed_at: Option<Millis>,
}

impl Stage {
    /// Free seats (0 when full).
    pub fn free(&self) -> u32 {
        self.capacity.saturating_sub(self.load)
    }

    /// Whether the stage exists in IVS and is neither draining nor deleted.
    pub fn is_active(&self) -> bool {
        matches!(self.state, StageState::Warming | StageState::Live)
    }
}

/// A viewer's seat: also the persisted row (serde, camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// `{broadcast}.{22 url-safe chars}`.
    pub id: String,
    /// What the viewer calls itself (IVS's `user_id`): a display name, never a key.
    pub user_id: String,
    /// The IVS participant id of this seat: every token minted for the lease carries it
    /// (`jti`), so one seat is one participant however often the viewer asks. Rows stored
    /// before it existed get one derived from the lease id.
    #[serde(default)]
    pub participant_id: String,
    /// The client that holds the seat (the key of [`PoolSettings::max_seats_per_client`]:
    /// an IPv4 address or an IPv6 /64), when the edge knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The stage the seat is on.
    pub stage: StageId,
    /// When the lease was first granted.
    pub joined_at: Millis,
    /// When it was last renewed (join, reconnect or heartbeat).
    pub renewed_at: Millis,
    /// When it lapses unless renewed; a lease is live while `now < expires_at`.
    pub expires_at: Millis,
}

/// Counters of one broadcast, in the admin snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Stats {
    /// Seats granted to viewers without a live lease.
    pub joins: u64,
    /// Sticky reconnects: a viewer with a live lease asked again and kept its seat.
    pub reconnects: u64,
    /// Viewers refused for want of a seat.
    pub refusals: u64,
    /// New seats refused because their client already held its limit of seats.
    pub client_refusals: u64,
    /// Leases given back by the viewer (or moved off a draining stage on reconnect).
    pub leaves: u64,
    /// Leases that lapsed.
    pub lease_expiries: u64,
    /// Leases dropped because their stage was deleted under them.
    pub evictions: u64,
    /// Highest number of viewers at once.
    pub peak_viewers: u64,
    /// Viewer-seconds, integrated over the `now` arguments (whole seconds).
    pub viewer_seconds: u64,
    /// Stages IVS confirmed as created.
    pub stages_created: u64,
    /// Stages deleted.
    pub stages_deleted: u64,
    /// Create intents that failed.
    pub create_failures: u64,
}

/// The pool's own row: identity, sequence, counters and the viewer-time integrator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolMeta {
    /// The broadcast id.
    pub broadcast: String,
    /// The fan-out mode, fixed when the pool was made.
    pub fanout: FanoutMode,
    /// When the pool was made.
    pub created_at: Millis,
    /// The id the next stage will get.
    pub next_stage_id: u64,
    /// Counters.
    pub stats: Stats,
    /// Viewer-milliseconds integrated so far (the precise form of `stats.viewerSeconds`).
    pub viewer_ms: u64,
    /// The time up to which `viewer_ms` is integrated.
    pub integrated_at: Millis,
}

/// The settings a pool runs with (from [`Config::pool_settings`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolSettings {
    /// Seats of stages created from now on.
    pub capacity: u32,
    /// Stages (warming or live) the pool keeps: drains below it are refused.
    pub min_stages: u32,
    /// Stages (not deleted) the pool may have at once.
    pub max_stages: u32,
    /// Lease time to live in milliseconds.
    pub lease_ttl_ms: u64,
    /// Fan-out mode of new pools (an existing pool keeps the mode it was made with).
    pub fanout: FanoutMode,
    /// Seats one client (see [`Lease::client`]) may hold at once in this pool; 0: no limit.
    /// Reconnects to a held seat are never refused by it.
    pub max_seats_per_client: u32,
    /// The deployment the pool belongs to (tag `stagefan:deployment` of its stages).
    pub deployment: String,
    /// Free seats to keep ahead of need (the scaling policy's headroom, in seats).
    pub headroom_seats: u32,
    /// How long a stage stays empty before it is drained.
    pub scale_down_grace_ms: u64,
    /// How long a drained stage stays (empty, without the host) before it is deleted.
    pub delete_grace_ms: u64,
}

impl Default for PoolSettings {
    fn default() -> Self {
        let grace_ms = u64::from(DEFAULT_SCALE_DOWN_GRACE_SECONDS) * 1000;
        PoolSettings {
            capacity: DEFAULT_STAGE_CAPACITY,
            min_stages: DEFAULT_MIN_STAGES,
            max_stages: DEFAULT_MAX_STAGES,
            lease_ttl_ms: u64::from(DEFAULT_LEASE_TTL_SECONDS) * 1000,
            fanout: FanoutMode::MultiPublish,
            max_seats_per_client: 0,
            deployment: DEFAULT_DEPLOYMENT.to_string(),
            headroom_seats: headroom_seats(DEFAULT_STAGE_CAPACITY, DEFAULT_HEADROOM),
            scale_down_grace_ms: grace_ms,
            delete_grace_ms: grace_ms,
        }
    }
}

/// The rows touched since the last [`Pool::take_changes`]: write these, delete the removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Stage rows to upsert (read them with [`Pool::stage`]).
    pub stages: BTreeSet<StageId>,
    /// Stage rows to delete (forgotten history).
    pub stages_removed: BTreeSet<StageId>,
    /// Lease rows to upsert (read them with [`Pool::lease`]).
    pub leases_upserted: BTreeSet<String>,
    /// Lease rows to delete.
    pub leases_removed: BTreeSet<String>,
    /// Whether the [`PoolMeta`] row changed (read it with [`Pool::meta`]).
    pub meta: bool,
}

impl Changes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
            && self.stages_removed.is_empty()
            && self.leases_upserted.is_empty()
            && self.leases_removed.is_empty()
            && !self.meta
    }

    fn stage(&mut self, id: StageId) {
        self.stages_removed.remove(&id);
        self.stages.insert(id);
    }

    fn stage_removed(&mut self, id: StageId) {
        self.stages.remove(&id);
        self.stages_removed.insert(id);
    }

    fn lease(&mut self, id: &str) {
        self.leases_removed.remove(id);
        self.leases_upserted.insert(id.to_string());
    }

    fn lease_removed(&mut self, id: &str) {
        self.leases_upserted.remove(id);
        self.leases_removed.insert(id.to_string());
    }
}

/// Every row of a pool, for a full write or a rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolRows {
    /// The pool's own row.
    pub meta: PoolMeta,
    /// Stage rows, by id.
    pub stages: Vec<Stage>,
    /// Lease rows, by id.
    pub leases: Vec<Lease>,
}

/// A seat granted by [`Pool::assign`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// The lease (new, or the viewer's existing one on a sticky reconnect).
    pub lease_id: String,
    /// The stage.
    pub stage: StageId,
    /// The stage's ARN (to mint the token for).
    pub stage_arn: String,
    /// `live` or `warming` (the viewer waits for the host).
    pub stage_state: StageState,
    /// When the lease lapses unless renewed.
    pub expires_at: Millis,
    /// Whether this was a sticky reconnect (same lease, same stage).
    pub reconnected: bool,
    /// The seat's IVS participant id: the token minted for it must carry this one.
    pub participant_id: String,
    /// The display name the viewer gave (on a reconnect: the one the lease was made with).
    pub user_id: String,
}

/// A viewer asking for a seat (see [`Pool::join`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JoinRequest<'a> {
    /// What the viewer calls itself (already validated by the adapter).
    pub user_id: &'a str,
    /// The lease the viewer holds, if it says it holds one: the only way back to a seat.
    pub lease_id: Option<&'a str>,
    /// The client asking (an IPv4 address or IPv6 /64, see [`client_key`]), if known.
    pub client: Option<&'a str>,
}

/// Why no seat was given: the adapter answers 503 with `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NoSeat {
    /// Stages being created right now: a seat is likely within seconds.
    pub stages_creating: u32,
    /// Replicate mode: warming replica stages with room, waiting for the host's replica to be
    /// seen there before they take viewers.
    pub replicas_waiting: u32,
    /// Whether the pool may still create stages (below `max_stages`).
    pub can_create: bool,
}

impl NoSeat {
    /// Whether a stage is being created (retry soon).
    pub fn stage_being_created(&self) -> bool {
        self.stages_creating > 0
    }

    /// Whether seats are on their way: a stage being created or a replica waiting for the host.
    pub fn seat_coming(&self) -> bool {
        self.stages_creating > 0 || self.replicas_waiting > 0
    }
}

/// A refused assignment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// Every eligible stage is full (or there is none).
    #[error("no seat: every stage is full ({} being created)", .0.stages_creating)]
    NoSeat(NoSeat),
    /// The random bytes gave a lease id that exists: call again with fresh bytes.
    #[error("lease id {0} already exists; draw new random bytes")]
    LeaseIdTaken(String),
    /// The client already holds `limit` seats of this broadcast (answered 429).
    #[error("this client already holds {held} seats of this broadcast (limit {limit})")]
    ClientLimit {
        /// Seats the client holds.
        held: u32,
        /// The limit.
        limit: u32,
    },
}

/// A stage the adapter must now create in IVS: exactly once per intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateIntent {
    /// The intent id: pass it back to [`Pool::created`] or [`Pool::create_failed`].
    pub stage: StageId,
    /// The IVS stage name.
    pub name: String,
    /// The tags to create it with (`stagefan:managed`, `stagefan:broadcast`,
    /// `stagefan:deployment`).
    pub tags: BTreeMap<String, String>,
    /// Replicate mode: the origin it will receive the host from (`None`: an origin, the host
    /// publishes to it and needs a publisher token for it).
    pub origin: Option<StageId>,
}

/// A stage the adapter must now delete in IVS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteIntent {
    /// The stage.
    pub stage: StageId,
    /// Its ARN for `DeleteStage`.
    pub arn: String,
}

/// A replication the adapter must keep running (replicate mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    /// The origin stage.
    pub origin: StageId,
    /// Its ARN (`sourceStageArn`).
    pub origin_arn: String,
    /// The replica stage.
    pub replica: StageId,
    /// Its ARN (`destinationStageArn`).
    pub replica_arn: String,
    /// The host's participant id on the origin, when known (`participantId`).
    pub host_participant_id: Option<String>,
}

/// A refused stage operation (or a bad argument). Nothing changed when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// No stage with that id (or ARN).
    #[error("unknown stage {0}")]
    UnknownStage(String),
    /// No live lease with that id.
    #[error("lease not found")]
    LeaseNotFound,
    /// `max_stages` stages exist already.
    #[error("the pool already has its maximum of {max} stages")]
    MaxStages {
        /// The limit.
        max: u32,
    },
    /// The operation needs another state.
    #[error("stage {stage} is {state}: {needed}")]
    WrongState {
        /// The stage.
        stage: StageId,
        /// Its state.
        state: StageState,
        /// What the operation needed.
        needed: &'static str,
    },
    /// Another stage already has that ARN.
    #[error("ARN {0} already belongs to another stage")]
    ArnInUse(String),
    /// Draining would leave fewer than `min_stages` stages.
    #[error("draining would leave fewer than the minimum of {min} stages")]
    BelowMinStages {
        /// The minimum.
        min: u32,
    },
    /// The stage is the last live one.
    #[error("stage {0} is the last live stage")]
    LastLiveStage(StageId),
    /// Replicate mode: the origin still feeds replicas that are not draining.
    #[error("stage {0} is the origin of replica stages that are not draining")]
    OriginHasReplicas(StageId),
    /// Viewers hold seats on the stage.
    #[error("stage {stage} has {viewers} viewers")]
    HasViewers {
        /// The stage.
        stage: StageId,
        /// How many.
        viewers: u32,
    },
    /// The host publishes on the stage.
    #[error("the host publishes on stage {0}")]
    HostPublishing(StageId),
    /// Replicate mode: a replica stage goes live only when its replica is observed in IVS.
    #[error("stage {0} is a replica: it goes live when IVS shows the host's replica there")]
    ReplicaStage(StageId),
    /// The broadcast id is not valid.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// Rows given to [`Pool::from_rows`] do not make a consistent pool.
    #[error("inconsistent pool rows: {0}")]
    Corrupt(String),
}

impl PoolError {
    /// A short machine-readable reason (`snake_case`), for the actions API's `reason`.
    pub fn code(&self) -> &'static str {
        match self {
            PoolError::UnknownStage(_) => "unknown_stage",
            PoolError::LeaseNotFound => "lease_not_found",
            PoolError::MaxStages { .. } => "max_stages",
            PoolError::WrongState { .. } => "wrong_state",
            PoolError::ArnInUse(_) => "arn_in_use",
            PoolError::BelowMinStages { .. } => "below_min_stages",
            PoolError::LastLiveStage(_) => "last_live_stage",
            PoolError::OriginHasReplicas(_) => "origin_has_replicas",
            PoolError::HasViewers { .. } => "has_viewers",
            PoolError::HostPublishing(_) => "host_publishing",
            PoolError::ReplicaStage(_) => "replica_stage",
            PoolError::Invalid(_) => "invalid",
            PoolError::Corrupt(_) => "corrupt",
        }
    }
}

/// What IVS showed for one stage (participant lists), as the monitor posts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StageObservation {
    /// The stage.
    pub stage_arn: String,
    /// Connected participants that publish (the host, or its replica).
    #[serde(default)]
    pub publishers: Vec<String>,
    /// Connected participants that subscribe (viewers).
    #[serde(default)]
    pub subscribers: Vec<String>,
}

/// A round of observations of IVS (`POST .../observations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// When IVS was read (older than a host report, it does not override it).
    pub observed_at: Millis,
    /// The stages read.
    pub stages: Vec<StageObservation>,
    /// Stages of this pool that IVS no longer has (`GetStage` or `ListStages` said so): they
    /// are marked gone at once and their viewers re-seated.
    #[serde(default)]
    pub missing: Vec<String>,
}

/// A participant connected to a stage without a seat there: its lease lapsed or was given
/// back, or it never had one. The adapter disconnects it (`DisconnectParticipant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stranger {
    /// The stage.
    pub stage_arn: String,
    /// The participant IVS listed.
    pub participant_id: String,
}

/// A stage whose pool load differs from IVS's subscriber count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// The stage.
    pub stage_arn: String,
    /// Seats held in the pool.
    pub pool: u32,
    /// Subscribers IVS listed.
    pub ivs: u32,
}

/// The answer to an observation round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObservationReport {
    /// Observed stages whose counts differ (only those).
    pub drift: Vec<Drift>,
    /// Stages that went live because of this observation.
    pub became_live: Vec<String>,
    /// Observed ARNs this pool does not know.
    pub unknown_stages: Vec<String>,
    /// Subscribers connected without a seat on their stage (to disconnect).
    #[serde(default)]
    pub strangers: Vec<Stranger>,
    /// Stages marked gone by this observation (IVS no longer has them).
    #[serde(default)]
    pub gone: Vec<String>,
    /// Leases dropped with those stages: their viewers are told to take a new seat.
    #[serde(default)]
    pub evicted: Vec<String>,
}

/// One stage in the admin snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageView {
    /// ARN (`null` while creating).
    pub stage_arn: Option<String>,
    /// Pool-local id.
    pub id: StageId,
    /// IVS stage name.
    pub name: String,
    /// State.
    pub state: StageState,
    /// Seats taken.
    pub load: u32,
    /// Seats.
    pub capacity: u32,
    /// When the create intent was made.
    pub created_at: Millis,
    /// When it first went live.
    pub live_at: Option<Millis>,
    /// Since when it has been empty.
    pub empty_since: Option<Millis>,
    /// When draining began.
    pub draining_since: Option<Millis>,
    /// Whether `DeleteStage` has been requested.
    pub delete_requested: bool,
    /// The host's participant id there.
    pub host_participant_id: Option<String>,
    /// Whether the host was last known to publish there.
    pub host_publishing: bool,
    /// Replicate mode: the origin stage's ARN (`null` for origins).
    pub origin_arn: Option<String>,
}

/// The admin snapshot of a pool (the contract's JSON, camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Broadcast id.
    pub broadcast: String,
    /// Seats per new stage.
    pub capacity: u32,
    /// Fan-out mode.
    pub fanout_mode: FanoutMode,
    /// Minimum stages.
    pub min_stages: u32,
    /// Maximum stages.
    pub max_stages: u32,
    /// The deployment the pool belongs to (`STAGEFAN_DEPLOYMENT`).
    pub deployment: String,
    /// The pool's scaling knobs, so that whoever decides for it (its own alarm, the monitor)
    /// decides with the pool's settings: free seats to keep ahead of need.
    pub headroom_seats: u32,
    /// How long a stage stays empty before it is drained.
    pub scale_down_grace_ms: u64,
    /// How long a drained stage stays before it is deleted.
    pub delete_grace_ms: u64,
    /// Viewers holding a seat.
    pub viewers: u32,
    /// The `now` the snapshot was taken at.
    pub now: Millis,
    /// Every stage, oldest first (recently deleted ones included).
    pub stages: Vec<StageView>,
    /// Counters.
    pub stats: Stats,
}

/// Seats and stages in a pool, as the scaling policy needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadSummary {
    /// Viewers holding seats.
    pub viewers: u32,
    /// Seats per new stage.
    pub capacity: u32,
    /// Stages in each state.
    pub creating: u32,
    /// Warming stages.
    pub warming: u32,
    /// Live stages.
    pub live: u32,
    /// Draining stages.
    pub draining: u32,
    /// Free seats on live stages.
    pub free_live_seats: u64,
    /// Free seats on warming stages.
    pub free_warming_seats: u64,
    /// Seats that stages being created will bring.
    pub creating_seats: u64,
}

impl LoadSummary {
    /// Stages that count toward `max_stages` (every state but deleted).
    pub fn existing(&self) -> u32 {
        self.creating + self.warming + self.live + self.draining
    }

    /// Summarises an admin snapshot (what the monitor has).
    pub fn from_snapshot(s: &Snapshot) -> LoadSummary {
        let mut sum = LoadSummary {
            viewers: s.viewers,
            capacity: s.capacity,
            ..LoadSummary::default()
        };
        for st in &s.stages {
            let free = u64::from(st.capacity.saturating_sub(st.load));
            match st.state {
                StageState::Creating => {
                    sum.creating += 1;
                    sum.creating_seats += u64::from(st.capacity);
                }
                StageState::Warming => {
                    sum.warming += 1;
                    sum.free_warming_seats += free;
                }
                StageState::Live => {
                    sum.live += 1;
                    sum.free_live_seats += free;
                }
                StageState::Draining => sum.draining += 1,
                StageState::Deleted => {}
            }
        }
        sum
    }
}

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

impl Pool {
    /// A new, empty pool for `broadcast` (validated as a broadcast id). It has no stages: the
    /// adapter (or the policy) calls [`Pool::begin_create`] for `min_stages` of them.
    pub fn new(broadcast: &str, settings: PoolSettings, now: Millis) -> Result<Pool, PoolError> {
        validate_broadcast_id(broadcast)?;
        let meta = PoolMeta {
            broadcast: broadcast.to_string(),
            fanout: settings.fanout,
            created_at: now,
            next_stage_id: 1,
            stats: Stats::default(),
            viewer_ms: 0,
            integrated_at: now,
        };
        let mut pool = Pool {
            settings,
            meta,
            stages: BTreeMap::new(),
            by_arn: BTreeMap::new(),
            leases: BTreeMap::new(),
            by_participant: BTreeMap::new(),
            by_client: BTreeMap::new(),
            expiry: BTreeSet::new(),
            open: BTreeSet::new(),
            changes: Changes::default(),
        };
        pool.changes.meta = true;
        Ok(pool)
    }

    /// Rebuilds a pool from its rows. Loads are recomputed from the leases; the fan-out mode
    /// is the one stored in `meta` (a pool keeps its mode); the other settings are the ones
    /// given. Inconsistent rows are refused with [`PoolError::Corrupt`].
    pub fn from_rows(settings: PoolSettings, rows: PoolRows) -> Result<Pool, PoolError> {
        let PoolRows {
            meta,
            stages,
            leases,
        } = rows;
        validate_broadcast_id(&meta.broadcast)?;
        let mut pool = Pool {
            settings: PoolSettings {
                fanout: meta.fanout,
                ..settings
            },
            meta,
            stages: BTreeMap::new(),
            by_arn: BTreeMap::new(),
            leases: BTreeMap::new(),
            by_participant: BTreeMap::new(),
            by_client: BTreeMap::new(),
            expiry: BTreeSet::new(),
            open: BTreeSet::new(),
            changes: Changes::default(),
        };
        for mut st in stages {
            if st.id.0 >= pool.meta.next_stage_id {
                return Err(PoolError::Corrupt(format!(
                    "stage {} is not below nextStageId {}",
                    st.id, pool.meta.next_stage_id
                )));
            }
            if st.state != StageState::Creating
                && st.state != StageState::Deleted
                && st.arn.is_none()
            {
                return Err(PoolError::Corrupt(format!(
                    "stage {} is {} without an ARN",
                    st.id, st.state
                )));
            }
            st.load = 0;
            if let Some(arn) = &st.arn {
                if pool.by_arn.insert(arn.clone(), st.id).is_some() {
                    return Err(PoolError::Corrupt(format!("ARN {arn} appears twice")));
                }
            }
            if pool.stages.insert(st.id, st).is_some() {
                return Err(PoolError::Corrupt("a stage id appears twice".into()));
            }
        }
        let prefix = format!("{}.", pool.meta.broadcast);
        for mut lease in leases {
            if lease.participant_id.is_empty() {
                lease.participant_id = derive_participant_id(lease.id.as_bytes());
            }
            if !lease.id.starts_with(&prefix) {
                return Err(PoolError::Corrupt(format!(
                    "lease {} does not belong to broadcast {}",
                    lease.id, pool.meta.broadcast
                )));
            }
            let Some(st) = pool.stages.get_mut(&lease.stage) else {
                return Err(PoolError::Corrupt(format!(
                    "lease {} is on unknown stage {}",
                    lease.id, lease.stage
                )));
            };
            if matches!(st.state, StageState::Creating | StageState::Deleted) {
                return Err(PoolError::Corrupt(format!(
                    "lease {} is on {} stage {}",
                    lease.id, st.state, st.id
                )));
            }
            st.load += 1;
            if pool
                .by_participant
                .insert(lease.participant_id.clone(), lease.id.clone())
                .is_some()
            {
                return Err(PoolError::Corrupt(format!(
                    "participant {} holds two leases",
                    lease.participant_id
                )));
            }
            if let Some(client) = &lease.client {
                *pool.by_client.entry(client.clone()).or_default() += 1;
            }
            pool.expiry.insert((lease.expires_at, lease.id.clone()));
            if pool.leases.insert(lease.id.clone(), lease).is_some() {
                return Err(PoolError::Corrupt("a lease id appears twice".into()));
            }
        }
        for st in pool.stages.values() {
            if st.load > st.capacity {
                return Err(PoolError::Corrupt(format!(
                    "stage {} holds {} leases for {} seats",
                    st.id, st.load, st.capacity
                )));
            }
        }
        pool.open = pool.stages.values().filter_map(open_key).collect();
        Ok(pool)
    }

    /// Checks every internal index against the rows: loads equal the leases on each stage and
    /// stay within capacity, one lease per user, the expiry, ARN and open-stage indexes match,
    /// no lease on a creating or deleted stage. O(stages + leases); for tests and for an
    /// adapter that wants to verify a rebuilt pool.
    pub fn check_consistency(&self) -> Result<(), PoolError> {
        let bad = |m: String| Err(PoolError::Corrupt(m));
        let mut loads: BTreeMap<StageId, u32> = BTreeMap::new();
        let mut participants = BTreeSet::new();
        let mut clients: BTreeMap<&str, u32> = BTreeMap::new();
        for lease in self.leases.values() {
            let Some(st) = self.stages.get(&lease.stage) else {
                return bad(format!("lease {} on a missing stage", lease.id));
            };
            if matches!(st.state, StageState::Creating | StageState::Deleted) {
                return bad(format!(
                    "lease {} on {} stage {}",
                    lease.id, st.state, st.id
                ));
            }
            *loads.entry(lease.stage).or_default() += 1;
            if !participants.insert(lease.participant_id.as_str()) {
                return bad(format!(
                    "participant {} holds two leases",
                    lease.participant_id
                ));
            }
            if self.by_participant.get(&lease.participant_id) != Some(&lease.id) {
                return bad(format!("participant index misses lease {}", lease.id));
            }
            if let Some(client) = &lease.client {
                *clients.entry(client.as_str()).or_default() += 1;
            }
            if !self.expiry.contains(&(lease.expires_at, lease.id.clone())) {
                return bad(format!("expiry index misses lease {}", lease.id));
            }
        }
        if self.by_participant.len() != self.leases.len() || self.expiry.len() != self.leases.len()
        {
            return bad("lease indexes hold stale entries".into());
        }
        let indexed: BTreeMap<&str, u32> = self
            .by_client
            .iter()
            .map(|(c, n)| (c.as_str(), *n))
            .collect();
        if indexed != clients {
            return bad("client index out of step with the leases".into());
        }
        for st in self.stages.values() {
            let held = loads.get(&st.id).copied().unwrap_or(0);
            if st.load != held || st.load > st.capacity {
                return bad(format!(
                    "stage {} load {} with {} leases and {} seats",
                    st.id, st.load, held, st.capacity
                ));
            }
            if let Some(arn) = &st.arn {
                if self.by_arn.get(arn) != Some(&st.id) {
                    return bad(format!("ARN index misses stage {}", st.id));
                }
            }
        }
        if self.by_arn.len() != self.stages.values().filter(|s| s.arn.is_some()).count() {
            return bad("ARN index holds stale entries".into());
        }
        let open: BTreeSet<OpenKey> = self.stages.values().filter_map(open_key).collect();
        if open != self.open {
            return bad("open-stage index out of step".into());
        }
        Ok(())
    }

    /// Every row of the pool (for a first full write, or tests).
    pub fn export(&self) -> PoolRows {
        PoolRows {
            meta: self.meta.clone(),
            stages: self.stages.values().cloned().collect(),
            leases: self.leases.values().cloned().collect(),
        }
    }

    /// The rows touched since the last call; the adapter writes them (see the module docs).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// The rows touched since the last [`Pool::take_changes`], without taking them.
    pub fn pending_changes(&self) -> &Changes {
        &self.changes
    }

    /// The broadcast id.
    pub fn broadcast(&self) -> &str {
        &self.meta.broadcast
    }

    /// The settings in force.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Replaces the settings (capacity of future stages, min/max, lease TTL); the fan-out mode
    /// of an existing pool does not change.
    pub fn set_settings(&mut self, settings: PoolSettings) {
        self.settings = PoolSettings {
            fanout: self.meta.fanout,
            ..settings
        };
    }

    /// The fan-out mode of this pool.
    pub fn fanout(&self) -> FanoutMode {
        self.meta.fanout
    }

    /// The pool's own row.
    pub fn meta(&self) -> &PoolMeta {
        &self.meta
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.meta.stats
    }

    /// Viewers holding a seat.
    pub fn viewers(&self) -> u32 {
        self.leases.len() as u32
    }

    /// A stage by id.
    pub fn stage(&self, id: StageId) -> Option<&Stage> {
        self.stages.get(&id)
    }

    /// A stage by ARN.
    pub fn stage_by_arn(&self, arn: &str) -> Option<&Stage> {
        self.by_arn.get(arn).and_then(|id| self.stages.get(id))
    }

    /// Every stage, oldest first (recently deleted ones included).
    pub fn stages(&self) -> impl Iterator<Item = &Stage> {
        self.stages.values()
    }

    /// The ARNs of every stage the pool knows (deleted ones included), for orphan detection.
    pub fn known_arns(&self) -> impl Iterator<Item = &str> {
        self.by_arn.keys().map(String::as_str)
    }

    /// A lease by id (lapsed leases stay until the next call with `now` sweeps them).
    pub fn lease(&self, id: &str) -> Option<&Lease> {
        self.leases.get(id)
    }

    /// The lease whose seat is this IVS participant.
    pub fn lease_of_participant(&self, participant_id: &str) -> Option<&Lease> {
        self.by_participant
            .get(participant_id)
            .and_then(|id| self.leases.get(id))
    }

    /// Whether [`Pool::join`] would refuse `req` for its client's limit of seats: it presents
    /// no live lease, and its client already holds [`PoolSettings::max_seats_per_client`].
    pub fn client_at_limit(&self, req: &JoinRequest<'_>) -> bool {
        let limit = self.settings.max_seats_per_client;
        let holds_lease = req.lease_id.is_some_and(|id| self.leases.contains_key(id));
        limit > 0 && !holds_lease && req.client.is_some_and(|c| self.seats_of_client(c) >= limit)
    }

    /// Seats `client` holds in this pool.
    pub fn seats_of_client(&self, client: &str) -> u32 {
        self.by_client.get(client).copied().unwrap_or(0)
    }

    /// Every lease, by id.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// The earliest time a lease lapses (for the Durable Object's alarm).
    pub fn next_expiry(&self) -> Option<Millis> {
        self.expiry.first().map(|(t, _)| *t)
    }

    /// Seats and stages for the scaling policy, O(stages).
    pub fn load_summary(&self) -> LoadSummary {
        let mut sum = LoadSummary {
            viewers: self.viewers(),
            capacity: self.settings.capacity,
            ..LoadSummary::default()
        };
        for st in self.stages.values() {
            match st.state {
                StageState::Creating => {
                    sum.creating += 1;
                    sum.creating_seats += u64::from(st.capacity);
                }
                StageState::Warming => {
                    sum.warming += 1;
                    sum.free_warming_seats += u64::from(st.free());
                }
                StageState::Live => {
                    sum.live += 1;
                    sum.free_live_seats += u64::from(st.free());
                }
                StageState::Draining => sum.draining += 1,
                StageState::Deleted => {}
            }
        }
        sum
    }

    /// The admin snapshot at `now` (after sweeping lapsed leases, so call it on `&mut`).
    pub fn snapshot(&mut self, now: Millis) -> Snapshot {
        self.advance(now);
        self.snapshot_view(now)
    }

    /// The admin snapshot without sweeping lapsed leases or integrating viewer time.
    pub fn snapshot_view(&self, now: Millis) -> Snapshot {
        let stages = self
            .stages
            .values()
            .map(|st| StageView {
                stage_arn: st.arn.clone(),
                id: st.id,
                name: st.name.clone(),
                state: st.state,
                load: st.load,
                capacity: st.capacity,
                created_at: st.created_at,
                live_at: st.live_at,
                empty_since: st.empty_since,
                draining_since: st.draining_since,
                delete_requested: st.delete_requested_at.is_some(),
                host_participant_id: st.host_participant_id.clone(),
                host_publishing: st.host_publishing,
                origin_arn: st
                    .origin
                    .and_then(|o| self.stages.get(&o))
                    .and_then(|o| o.arn.clone()),
            })
            .collect();
        Snapshot {
            broadcast: self.meta.broadcast.clone(),
            capacity: self.settings.capacity,
            fanout_mode: self.meta.fanout,
            min_stages: self.settings.min_stages,
            max_stages: self.settings.max_stages,
            deployment: self.settings.deployment.clone(),
            headroom_seats: self.settings.headroom_seats,
            scale_down_grace_ms: self.settings.scale_down_grace_ms,
            delete_grace_ms: self.settings.delete_grace_ms,
            viewers: self.viewers(),
            now,
            stages,
            stats: self.meta.stats.clone(),
        }
    }

    // ----- viewers -----

    /// Gives `user_id` a new seat, as [`Pool::join`] does for a request without a lease or a
    /// client.
    pub fn assign(
        &mut self,
        user_id: &str,
        now: Millis,
        random: &[u8; LEASE_RANDOM_BYTES],
    ) -> Result<Assignment, AssignError> {
        self.join(
            &JoinRequest {
                user_id,
                ..JoinRequest::default()
            },
            now,
            random,
        )
    }

    /// Gives a viewer a seat. A request that presents a live lease of this pool gets that
    /// seat again (sticky reconnect: same lease, same stage, same participant, renewed even if
    /// its stage is now the fullest); a lease on a draining stage is moved to a new seat. A
    /// request without a live lease is a new seat, never anybody else's: the live stage with
    /// the lowest load below capacity, else the warming one, ties to the oldest (in replicate
    /// mode a warming replica is skipped: it gets viewers once the host's replica is observed
    /// there). A new seat is refused when its client already holds
    /// [`PoolSettings::max_seats_per_client`] seats (before a stage is looked for, so a
    /// flood's refusals ask for no stage). `random` makes the lease and participant ids. The
    /// user id is not validated here (see [`validate_user_id`]).
    /// O(log stages + log leases).
    pub fn join(
        &mut self,
        req: &JoinRequest<'_>,
        now: Millis,
        random: &[u8; LEASE_RANDOM_BYTES],
    ) -> Result<Assignment, AssignError> {
        self.advance(now);
        let ttl = self.settings.lease_ttl_ms;

        let held = req.lease_id.filter(|id| self.leases.contains_key(*id));
        if let Some(lease_id) = held {
            let lease = &self.leases[lease_id];
            let stage = &self.stages[&lease.stage];
            if stage.is_active() {
                let (arn, state) = (stage.arn.clone().unwrap_or_default(), stage.state);
                let (stage_id, participant_id, user_id) = (
                    lease.stage,
                    lease.participant_id.clone(),
                    lease.user_id.clone(),
                );
                let lease_id = lease_id.to_string();
                let expires_at = self.renew(&lease_id, now, ttl);
                self.meta.stats.reconnects += 1;
                self.changes.meta = true;
                return Ok(Assignment {
                    lease_id,
                    stage: stage_id,
                    stage_arn: arn,
                    stage_state: state,
                    expires_at,
                    reconnected: true,
                    participant_id,
                    user_id,
                });
            }
        }

        // A seat moved off a draining stage is the same client's: it does not count twice.
        let moving = held.map(str::to_string);
        if self.client_at_limit(req) {
            let limit = self.settings.max_seats_per_client;
            let holds = req.client.map_or(0, |c| self.seats_of_client(c));
            self.meta.stats.client_refusals += 1;
            self.changes.meta = true;
            return Err(AssignError::ClientLimit { held: holds, limit });
        }

        let lease_id = format!(
            "{}.{}",
            self.meta.broadcast,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        );
        let participant_id = derive_participant_id(random);
        if self.leases.contains_key(&lease_id) || self.by_participant.contains_key(&participant_id)
        {
            return Err(AssignError::LeaseIdTaken(lease_id));
        }
        let Some(stage_id) = self.pick_stage() else {
            self.meta.stats.refusals += 1;
            self.changes.meta = true;
            let count = |f: &dyn Fn(&Stage) -> bool| self.stages.values().filter(|s| f(s)).count();
            let creating = count(&|s| s.state == StageState::Creating) as u32;
            let replicas_waiting = count(&|s| {
                s.state == StageState::Warming && s.origin.is_some() && s.load < s.capacity
            }) as u32;
            return Err(AssignError::NoSeat(NoSeat {
                stages_creating: creating,
                replicas_waiting,
                can_create: self.existing_stages() < self.settings.max_stages,
            }));
        };
        // Moving off a draining stage: give the old seat back first.
        let mut client = req.client.map(str::to_string);
        if let Some(old) = moving {
            client = self.leases[&old].client.clone().or(client);
            self.remove_lease(&old);
            self.meta.stats.leaves += 1;
        }

        let expires_at = now.saturating_add(ttl);
        let lease = Lease {
            id: lease_id.clone(),
            user_id: req.user_id.to_string(),
            participant_id: participant_id.clone(),
            client: client.clone(),
            stage: stage_id,
            joined_at: now,
            renewed_at: now,
            expires_at,
        };
        self.expiry.insert((expires_at, lease_id.clone()));
        self.by_participant
            .insert(participant_id.clone(), lease_id.clone());
        if let Some(client) = client {
            *self.by_client.entry(client).or_default() += 1;
        }
        self.leases.insert(lease_id.clone(), lease);
        self.changes.lease(&lease_id);
        let (was_empty, arn, state) = self.update_stage(stage_id, |stage| {
            stage.load += 1;
            (
                stage.empty_since.take().is_some(),
                stage.arn.clone().unwrap_or_default(),
                stage.state,
            )
        });
        if was_empty {
            self.changes.stage(stage_id);
        }
        let stats = &mut self.meta.stats;
        stats.joins += 1;
        stats.peak_viewers = stats.peak_viewers.max(self.leases.len() as u64);
        self.changes.meta = true;
        Ok(Assignment {
            lease_id,
            stage: stage_id,
            stage_arn: arn,
            stage_state: state,
            expires_at,
            reconnected: false,
            participant_id,
            user_id: req.user_id.to_string(),
        })
    }

    /// The stage the next new viewer would get, without assigning.
    pub fn peek_assignment(&self) -> Option<StageId> {
        self.pick_stage()
    }

    /// O(log stages): the first of the ordered set of stages with room.
    fn pick_stage(&self) -> Option<StageId> {
        self.open.first().map(|&(_, _, id)| id)
    }

    /// Mutates a stage and keeps the index of stages with room in step with its state and load.
    fn update_stage<R>(&mut self, id: StageId, f: impl FnOnce(&mut Stage) -> R) -> R {
        let st = self.stages.get_mut(&id).expect("stage exists");
        let before = open_key(st);
        let out = f(st);
        let after = open_key(st);
        if before != after {
            if let Some(k) = before {
                self.open.remove(&k);
            }
            if let Some(k) = after {
                self.open.insert(k);
            }
        }
        out
    }

    /// Renews a live lease for another TTL. Returns the renewed lease.
    pub fn heartbeat(&mut self, lease_id: &str, now: Millis) -> Result<Lease, PoolError> {
        self.advance(now);
        if !self.leases.contains_key(lease_id) {
            return Err(PoolError::LeaseNotFound);
        }
        self.renew(lease_id, now, self.settings.lease_ttl_ms);
        Ok(self.leases[lease_id].clone())
    }

    /// Gives a seat back. Idempotent: `false` when there was no such live lease.
    pub fn leave(&mut self, lease_id: &str, now: Millis) -> bool {
        self.advance(now);
        if !self.leases.contains_key(lease_id) {
            return false;
        }
        self.remove_lease(lease_id);
        self.meta.stats.leaves += 1;
        self.changes.meta = true;
        true
    }

    /// Frees every lease that lapsed by `now` and integrates viewer time; returns how many
    /// lapsed. (Every method taking `now` does this first.)
    pub fn expire(&mut self, now: Millis) -> u32 {
        let before = self.meta.stats.lease_expiries;
        self.advance(now);
        (self.meta.stats.lease_expiries - before) as u32
    }

    fn renew(&mut self, lease_id: &str, now: Millis, ttl: u64) -> Millis {
        let lease = self.leases.get_mut(lease_id).expect("lease exists");
        self.expiry.remove(&(lease.expires_at, lease.id.clone()));
        // Never shorten a lease (a `now` from a skewed clock must not cut a seat short).
        lease.expires_at = lease.expires_at.max(now.saturating_add(ttl));
        lease.renewed_at = lease.renewed_at.max(now);
        self.expiry.insert((lease.expires_at, lease.id.clone()));
        self.changes.lease(lease_id);
        lease.expires_at
    }

    fn remove_lease(&mut self, lease_id: &str) {
        let Some(lease) = self.leases.remove(lease_id) else {
            return;
        };
        self.expiry.remove(&(lease.expires_at, lease.id.clone()));
        if self.by_participant.get(&lease.participant_id) == Some(&lease.id) {
            self.by_participant.remove(&lease.participant_id);
        }
        if let Some(client) = &lease.client {
            if let Some(n) = self.by_client.get_mut(client) {
                *n -= 1;
                if *n == 0 {
                    self.by_client.remove(client);
                }
            }
        }
        self.changes.lease_removed(lease_id);
        if self.stages.contains_key(&lease.stage) {
            let at = self.meta.integrated_at;
            let emptied = self.update_stage(lease.stage, |st| {
                st.load -= 1;
                let emptied = st.load == 0 && st.state != StageState::Deleted;
                if emptied {
                    st.empty_since = Some(at);
                }
                emptied
            });
            if emptied {
                self.changes.stage(lease.stage);
            }
        }
    }

    /// Integrates viewer time up to `t` (never backwards).
    fn integrate(&mut self, t: Millis) {
        if t > self.meta.integrated_at {
            let dt = t - self.meta.integrated_at;
            self.meta.viewer_ms = self
                .meta
                .viewer_ms
                .saturating_add(dt.saturating_mul(self.leases.len() as u64));
            self.meta.integrated_at = t;
            self.meta.stats.viewer_seconds = self.meta.viewer_ms / 1000;
            self.changes.meta = true;
        }
    }

    /// Sweeps lapsed leases in expiry order, integrating viewer time exactly up to each
    /// expiry, then up to `now`.
    fn advance(&mut self, now: Millis) {
        while let Some((t, id)) = self.expiry.first().cloned() {
            if t > now {
                break;
            }
            self.integrate(t);
            self.remove_lease(&id);
            self.meta.stats.lease_expiries += 1;
            self.changes.meta = true;
        }
        self.integrate(now);
    }

    // ----- stage lifecycle -----

    fn existing_stages(&self) -> u32 {
        self.stages
            .values()
            .filter(|s| s.state != StageState::Deleted)
            .count() as u32
    }

    fn get(&self, id: StageId) -> Result<&Stage, PoolError> {
        self.stages
            .get(&id)
            .ok_or_else(|| PoolError::UnknownStage(id.to_string()))
    }

    /// The id of the stage with this ARN.
    pub fn stage_id(&self, arn: &str) -> Result<StageId, PoolError> {
        self.by_arn
            .get(arn)
            .copied()
            .ok_or_else(|| PoolError::UnknownStage(arn.to_string()))
    }

    /// Decides to create one stage: a `creating` row whose id is the intent. The adapter calls
    /// `CreateStage` once for it, then [`Pool::created`] or [`Pool::create_failed`]. Refused at
    /// `max_stages`. In replicate mode the new stage becomes a replica of the oldest origin with
    /// fewer than 5 replicas, or a new origin.
    pub fn begin_create(&mut self, now: Millis) -> Result<CreateIntent, PoolError> {
        self.advance(now);
        if self.existing_stages() >= self.settings.max_stages {
            return Err(PoolError::MaxStages {
                max: self.settings.max_stages,
            });
        }
        let origin = match self.meta.fanout {
            FanoutMode::MultiPublish => None,
            FanoutMode::Replicate => self.origin_with_room(),
        };
        let id = StageId(self.meta.next_stage_id);
        self.meta.next_stage_id += 1;
        let name = format!("{}-{}", self.meta.broadcast, id.0);
        let stage = Stage {
            id,
            name: name.clone(),
            arn: None,
            state: StageState::Creating,
            capacity: self.settings.capacity,
            load: 0,
            endpoints: None,
            origin,
            created_at: now,
            warm_at: None,
            live_at: None,
            empty_since: Some(now),
            draining_since: None,
            delete_requested_at: None,
            deleted_at: None,
            create_failed: false,
            gone: false,
            host_participant_id: None,
            host_publishing: false,
            host_changed_at: None,
        };
        self.stages.insert(id, stage);
        self.changes.stage(id);
        self.changes.meta = true;
        Ok(CreateIntent {
            stage: id,
            name,
            tags: self.tags(),
            origin,
        })
    }

    /// The tags stagefan puts on this broadcast's stages.
    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (TAG_MANAGED.to_string(), "true".to_string()),
            (TAG_BROADCAST.to_string(), self.meta.broadcast.clone()),
            (TAG_DEPLOYMENT.to_string(), self.settings.deployment.clone()),
        ])
    }

    fn replica_count(&self, origin: StageId) -> usize {
        self.stages
            .values()
            .filter(|s| s.origin == Some(origin) && s.state != StageState::Deleted)
            .count()
    }

    fn origin_with_room(&self) -> Option<StageId> {
        self.stages
            .values()
            .filter(|s| {
                s.origin.is_none()
                    && matches!(
                        s.state,
                        StageState::Creating | StageState::Warming | StageState::Live
                    )
            })
            .map(|s| s.id)
            .find(|id| self.replica_count(*id) < MAX_REPLICAS_PER_ORIGIN)
    }

    /// IVS created the stage of intent `stage`: it becomes `warming` with its ARN and
    /// endpoints. Repeating it with the same ARN is a no-op; any other state is refused.
    pub fn created(
        &mut self,
        stage: StageId,
        arn: &str,
        endpoints: StageEndpoints,
        now: Millis,
    ) -> Result<(), PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        if st.state != StageState::Creating {
            if st.arn.as_deref() == Some(arn) {
                return Ok(());
            }
            return Err(PoolError::WrongState {
                stage,
                state: st.state,
                needed: "only a creating stage can be created",
            });
        }
        if self.by_arn.contains_key(arn) {
            return Err(PoolError::ArnInUse(arn.to_string()));
        }
        self.update_stage(stage, |st| {
            st.arn = Some(arn.to_string());
            st.endpoints = Some(endpoints);
            st.state = StageState::Warming;
            st.warm_at = Some(now);
            st.empty_since = Some(now);
        });
        self.by_arn.insert(arn.to_string(), stage);
        self.meta.stats.stages_created += 1;
        self.changes.stage(stage);
        self.changes.meta = true;
        Ok(())
    }

    /// The create of intent `stage` failed: the row becomes `deleted` (flagged as a failed
    /// create). A new attempt is a new intent.
    pub fn create_failed(&mut self, stage: StageId, now: Millis) -> Result<(), PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        if st.state != StageState::Creating {
            return Err(PoolError::WrongState {
                stage,
                state: st.state,
                needed: "only a creating stage can fail to be created",
            });
        }
        let st = self.stages.get_mut(&stage).expect("checked");
        st.create_failed = true;
        self.meta.stats.create_failures += 1;
        self.finish_delete(stage, now);
        Ok(())
    }

    /// The host page reports it publishes on `stage` as `participant_id`: a warming stage goes
    /// live; a draining one stays draining but is marked as having the host (so it is not
    /// deleted under it). In replicate mode, refused for replica stages (they go live only
    /// when an observation shows the host's replica there).
    pub fn mark_live(
        &mut self,
        stage: StageId,
        participant_id: &str,
        now: Millis,
    ) -> Result<(), PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        if st.origin.is_some() {
            return Err(PoolError::ReplicaStage(stage));
        }
        if matches!(st.state, StageState::Creating | StageState::Deleted) {
            return Err(PoolError::WrongState {
                stage,
                state: st.state,
                needed: "the host can publish only on a stage that exists",
            });
        }
        self.set_host(stage, Some(participant_id), now);
        Ok(())
    }

    /// The host stopped publishing on `stage` (reported by the host page or the adapter).
    pub fn host_unpublished(&mut self, stage: StageId, now: Millis) -> Result<(), PoolError> {
        self.advance(now);
        self.get(stage)?;
        self.set_host(stage, None, now);
        Ok(())
    }

    fn set_host(&mut self, stage: StageId, publisher: Option<&str>, at: Millis) -> bool {
        let went_live = self.update_stage(stage, |st| {
            let mut went_live = false;
            match publisher {
                Some(pid) => {
                    st.host_publishing = true;
                    if st.host_participant_id.as_deref() != Some(pid) {
                        st.host_participant_id = Some(pid.to_string());
                    }
                    if st.state == StageState::Warming {
                        st.state = StageState::Live;
                        st.live_at = Some(at);
                        went_live = true;
                    }
                }
                None => st.host_publishing = false,
            }
            st.host_changed_at = Some(st.host_changed_at.map_or(at, |t| t.max(at)));
            went_live
        });
        self.changes.stage(stage);
        went_live
    }

    /// Stops sending viewers to `stage` (warming or live → draining; idempotent on draining).
    /// Refused when fewer than `min_stages` warming/live stages would remain, for the last live
    /// stage, and (replicate mode) for an origin whose replicas are not all draining.
    pub fn drain(&mut self, stage: StageId, now: Millis) -> Result<(), PoolError> {
        self.advance(now);
        self.check_drain(stage)?;
        self.start_draining(stage, now);
        Ok(())
    }

    fn check_drain(&self, stage: StageId) -> Result<(), PoolError> {
        let st = self.get(stage)?;
        match st.state {
            StageState::Draining => return Ok(()),
            StageState::Warming | StageState::Live => {}
            state => {
                return Err(PoolError::WrongState {
                    stage,
                    state,
                    needed: "only a warming or live stage can be drained",
                })
            }
        }
        let active = self.stages.values().filter(|s| s.is_active()).count() as u32;
        if active <= self.settings.min_stages {
            return Err(PoolError::BelowMinStages {
                min: self.settings.min_stages,
            });
        }
        if st.state == StageState::Live {
            let live = self
                .stages
                .values()
                .filter(|s| s.state == StageState::Live)
                .count();
            if live <= 1 {
                return Err(PoolError::LastLiveStage(stage));
            }
        }
        if st.origin.is_none()
            && self
                .stages
                .values()
                .any(|s| s.origin == Some(stage) && s.is_active())
        {
            return Err(PoolError::OriginHasReplicas(stage));
        }
        Ok(())
    }

    fn start_draining(&mut self, stage: StageId, now: Millis) {
        let started = self.update_stage(stage, |st| {
            let started = st.state != StageState::Draining;
            if started {
                st.state = StageState::Draining;
                st.draining_since = Some(now);
            }
            started
        });
        if started {
            self.changes.stage(stage);
        }
    }

    /// Decides to delete `stage` (draining it first if it is not, under the rules of
    /// [`Pool::drain`]). Refused while viewers hold seats on it or the host publishes there.
    /// The adapter then calls `DeleteStage` and [`Pool::deleted`]. Repeating it returns the
    /// same intent.
    pub fn request_delete(
        &mut self,
        stage: StageId,
        now: Millis,
    ) -> Result<DeleteIntent, PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        if matches!(st.state, StageState::Creating | StageState::Deleted) {
            return Err(PoolError::WrongState {
                stage,
                state: st.state,
                needed: "only a stage that exists can be deleted",
            });
        }
        if st.load > 0 {
            return Err(PoolError::HasViewers {
                stage,
                viewers: st.load,
            });
        }
        if st.host_publishing {
            return Err(PoolError::HostPublishing(stage));
        }
        let arn = st.arn.clone().expect("an existing stage has an ARN");
        self.check_drain(stage)?;
        self.start_draining(stage, now);
        let st = self.stages.get_mut(&stage).expect("checked");
        if st.delete_requested_at.is_none() {
            st.delete_requested_at = Some(now);
            self.changes.stage(stage);
        }
        Ok(DeleteIntent { stage, arn })
    }

    /// The stage is gone from IVS (after `DeleteStage`, or found missing). Any leases still on
    /// it are dropped (counted as evictions) and returned as their ids; in replicate mode its
    /// replicas are re-homed. Idempotent on a deleted stage; a creating stage is refused (use
    /// [`Pool::create_failed`]).
    pub fn deleted(&mut self, stage: StageId, now: Millis) -> Result<Vec<String>, PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        match st.state {
            StageState::Deleted => return Ok(Vec::new()),
            StageState::Creating => {
                return Err(PoolError::WrongState {
                    stage,
                    state: st.state,
                    needed: "a creating stage fails (create_failed), it is not deleted",
                })
            }
            _ => {}
        }
        let evicted: Vec<String> = self
            .leases
            .values()
            .filter(|l| l.stage == stage)
            .map(|l| l.id.clone())
            .collect();
        for id in &evicted {
            self.remove_lease(id);
        }
        self.meta.stats.evictions += evicted.len() as u64;
        self.meta.stats.stages_deleted += 1;
        self.finish_delete(stage, now);
        Ok(evicted)
    }

    /// IVS no longer has `stage` (a `GetStage`/`ListStages` answer, a join that found it
    /// missing, the monitor): it is marked deleted at once, whatever it held, so that no
    /// viewer is seated there again and scale-down never counts it; its leases are dropped
    /// (evictions, returned) so their viewers take new seats, and the policy replaces it if
    /// the audience needs it. A creating stage is left to its create; idempotent.
    pub fn gone(&mut self, stage: StageId, now: Millis) -> Result<Vec<String>, PoolError> {
        self.advance(now);
        let st = self.get(stage)?;
        if matches!(st.state, StageState::Deleted | StageState::Creating) {
            return Ok(Vec::new());
        }
        self.update_stage(stage, |st| st.gone = true);
        self.deleted(stage, now)
    }

    /// Records the participant id IVS gave a seat's token (`api` token mode: IVS picks the
    /// participant id, so a lease's id is the one of its last token). Returns whether the
    /// lease is live; an id that another lease holds is refused.
    pub fn bind_participant(
        &mut self,
        lease_id: &str,
        participant_id: &str,
        now: Millis,
    ) -> Result<(), PoolError> {
        self.advance(now);
        let Some(lease) = self.leases.get(lease_id) else {
            return Err(PoolError::LeaseNotFound);
        };
        if lease.participant_id == participant_id {
            return Ok(());
        }
        if self.by_participant.contains_key(participant_id) {
            return Err(PoolError::Corrupt(format!(
                "participant {participant_id} already holds a seat"
            )));
        }
        let old = lease.participant_id.clone();
        self.by_participant.remove(&old);
        self.by_participant
            .insert(participant_id.to_string(), lease_id.to_string());
        self.leases
            .get_mut(lease_id)
            .expect("checked")
            .participant_id = participant_id.to_string();
        self.changes.lease(lease_id);
        Ok(())
    }

    fn finish_delete(&mut self, stage: StageId, now: Millis) {
        let was_origin = self.update_stage(stage, |st| {
            st.state = StageState::Deleted;
            st.deleted_at = Some(now);
            st.empty_since = None;
            st.host_publishing = false;
            st.origin.is_none()
        });
        self.changes.stage(stage);
        self.changes.meta = true;
        if was_origin {
            self.rehome_replicas(stage);
        }
        self.forget_old_deleted();
    }

    /// An origin is gone: its oldest surviving replica becomes an origin (the host must now
    /// publish there) and the others (at most 4 more) follow it.
    fn rehome_replicas(&mut self, origin: StageId) {
        let orphans: Vec<StageId> = self
            .stages
            .values()
            .filter(|s| s.origin == Some(origin) && s.state != StageState::Deleted)
            .map(|s| s.id)
            .collect();
        let Some((&first, rest)) = orphans.split_first() else {
            return;
        };
        // The origin link decides whether a warming stage takes viewers: keep the index in step.
        self.update_stage(first, |st| st.origin = None);
        self.changes.stage(first);
        for &id in rest {
            self.update_stage(id, |st| st.origin = Some(first));
            self.changes.stage(id);
        }
    }

    fn forget_old_deleted(&mut self) {
        let mut deleted: Vec<(Millis, StageId)> = self
            .stages
            .values()
            .filter(|s| s.state == StageState::Deleted)
            .map(|s| (s.deleted_at.unwrap_or(0), s.id))
            .collect();
        if deleted.len() <= DELETED_STAGES_RETAINED {
            return;
        }
        deleted.sort();
        let excess = deleted.len() - DELETED_STAGES_RETAINED;
        for (_, id) in deleted.into_iter().take(excess) {
            // A deleted origin's id may still be named by nobody (replicas were re-homed).
            if let Some(st) = self.stages.remove(&id) {
                if let Some(arn) = st.arn {
                    self.by_arn.remove(&arn);
                }
                self.changes.stage_removed(id);
            }
        }
    }

    // ----- fan-out -----

    /// The stages the host must publish to (and needs publisher tokens for): warming or live
    /// stages, and in replicate mode only the origins among them. Oldest first.
    pub fn publisher_stages(&self) -> Vec<&Stage> {
        self.stages
            .values()
            .filter(|s| s.is_active() && s.arn.is_some() && s.origin.is_none())
            .collect()
    }

    /// Replicate mode: the replications that should run (origin and replica both warming or
    /// live, with ARNs). Empty in multi-publish mode.
    pub fn replications(&self) -> Vec<Replication> {
        self.stages
            .values()
            .filter(|s| s.is_active())
            .filter_map(|replica| {
                let origin = self.stages.get(&replica.origin?)?;
                if !origin.is_active() {
                    return None;
                }
                Some(Replication {
                    origin: origin.id,
                    origin_arn: origin.arn.clone()?,
                    replica: replica.id,
                    replica_arn: replica.arn.clone()?,
                    host_participant_id: origin.host_participant_id.clone(),
                })
            })
            .collect()
    }

    // ----- observations -----

    /// Applies what IVS showed: a stage with a publisher has the host (a warming one goes
    /// live, replicas included), one without has not (unless a host report is newer than the
    /// observation). Returns the drift between loads and subscriber counts.
    pub fn observe(&mut self, obs: &Observation, now: Millis) -> ObservationReport {
        self.advance(now);
        let mut report = ObservationReport::default();
        for arn in &obs.missing {
            if let Some(&id) = self.by_arn.get(arn) {
                if let Ok(evicted) = self.gone(id, now) {
                    if self.stages[&id].gone {
                        report.gone.push(arn.clone());
                    }
                    report.evicted.extend(evicted);
                }
            }
        }
        for o in &obs.stages {
            let Some(&id) = self.by_arn.get(&o.stage_arn) else {
                report.unknown_stages.push(o.stage_arn.clone());
                continue;
            };
            let st = &self.stages[&id];
            if st.state == StageState::Deleted {
                report.unknown_stages.push(o.stage_arn.clone());
                continue;
            }
            for participant in &o.subscribers {
                let seated = self
                    .lease_of_participant(participant)
                    .is_some_and(|l| l.stage == id);
                if !seated && st.host_participant_id.as_deref() != Some(participant.as_str()) {
                    report.strangers.push(Stranger {
                        stage_arn: o.stage_arn.clone(),
                        participant_id: participant.clone(),
                    });
                }
            }
            let ivs = o.subscribers.len() as u32;
            if ivs != st.load {
                report.drift.push(Drift {
                    stage_arn: o.stage_arn.clone(),
                    pool: st.load,
                    ivs,
                });
            }
            if st.host_changed_at.is_some_and(|t| t > obs.observed_at) {
                continue;
            }
            let publisher = match &st.host_participant_id {
                Some(known) if o.publishers.contains(known) => Some(known.clone()),
                _ => o.publishers.first().cloned(),
            };
            let unchanged = st.host_publishing == publisher.is_some()
                && (publisher.is_none() || publisher == st.host_participant_id);
            if unchanged {
                continue;
            }
            if self.set_host(id, publisher.as_deref(), obs.observed_at) {
                report.became_live.push(o.stage_arn.clone());
            }
        }
        report
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
