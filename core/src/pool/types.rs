//! The pool's words: stages and their states, leases, settings, the rows it persists and
//! the changes it records, what a join asks and gets, and its errors.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::*;

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

spelled!(
    StageState,
    "The lower-case spelling used in JSON and metrics labels.",
    StageState::Creating => "creating",
    StageState::Warming => "warming",
    StageState::Live => "live",
    StageState::Draining => "draining",
    StageState::Deleted => "deleted",
);

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
    /// Participant time on this stage (the cost meter).
    #[serde(default)]
    pub meter: StageMeter,
    /// Drained by consolidation (its viewers moved into fewer stages), not for being empty.
    #[serde(default)]
    pub consolidated: bool,
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
    /// `{broadcast}.{22 url-safe chars}`, or in stage presence `{broadcast}.{stage}.{22 url-safe
    /// chars}` (see `crate::regions::lease_route`).
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
    /// The lease a make-before-break move gave this seat's viewer on another stage: asked
    /// again, the move answers that seat (one move per seat, however often it is asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
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
    /// Make-before-break moves: seats granted on another stage to viewers of a draining one.
    pub moves: u64,
    /// Stages drained by consolidation (their viewers moved into fewer stages).
    pub consolidations: u64,
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
    /// The broadcast's life: when the host came on air, left, and whether it ended.
    #[serde(default)]
    pub life: LifeRecord,
    /// The pool's grant of the region's IVS quotas, when they are enforced (see
    /// [`Pool::enforce_quota`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaHold>,
    /// Publisher time of the stages the pool no longer keeps (the cost meter; viewers' time
    /// is `viewer_ms`).
    #[serde(default)]
    pub forgotten: ByKind,
    /// The region of a pool outside the deployment's primary region (its name is
    /// `{broadcast}@{region}`, and so are its leases' prefixes); `None` for the primary's
    /// pool, named by its broadcast alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Recent new seats, for consolidation's "never while viewers are still arriving".
    #[serde(default)]
    pub arrivals: Arrivals,
    /// Publisher time consolidation saved (the cost meter).
    #[serde(default)]
    pub saved: Saved,
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
    /// The cost meter's price table.
    #[serde(default)]
    pub prices: Prices,
    /// Where viewers keep their seats alive: in the pool, or at their stage's object (then
    /// the pool's leases never lapse by themselves: their stage reports the frees).
    pub presence: Presence,
    /// Whether under-filled stages are consolidated (`CONSOLIDATE`).
    #[serde(default = "consolidate_by_default")]
    pub consolidate: bool,
}

fn consolidate_by_default() -> bool {
    true
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
            prices: Prices::default(),
            presence: Presence::Pool,
            consolidate: true,
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

    pub(super) fn stage(&mut self, id: StageId) {
        self.stages_removed.remove(&id);
        self.stages.insert(id);
    }

    pub(super) fn stage_removed(&mut self, id: StageId) {
        self.stages.remove(&id);
        self.stages_removed.insert(id);
    }

    pub(super) fn lease(&mut self, id: &str) {
        self.leases_removed.remove(id);
        self.leases_upserted.insert(id.to_string());
    }

    pub(super) fn lease_removed(&mut self, id: &str) {
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
    /// A make-before-break move of the lease off its draining stage (see [`Pool::join`]):
    /// the new seat is granted while the old one is kept until its viewer gives it back
    /// (once the new stage plays) or it lapses. Without it, a lease on a draining stage is
    /// moved by giving the old seat back first (a viewer whose connection dropped).
    pub moving: bool,
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
    /// The region quota that keeps this viewer out: `subscriptions` when the pool's grant is
    /// used up and the region has none left; `stages` or `publishers` when every stage is
    /// full and the region lets the pool create no more. `None`: only this pool is full.
    #[serde(default)]
    pub region_quota: Option<crate::ledger::Quota>,
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
    /// The host ended the broadcast (answered 410 `broadcast_ended`).
    #[error("the broadcast has ended")]
    Ended,
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
    /// The region's quota of stages or publishers, as granted to this pool, is used up.
    #[error("the region's {} quota granted to this pool is used up", .0.ivs_name())]
    RegionQuota(crate::ledger::Quota),
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
    /// The host ended the broadcast: no seats, heartbeats, creates or host reports until it
    /// starts afresh.
    #[error("the broadcast has ended")]
    Ended,
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
            PoolError::RegionQuota(_) => "region_quota",
            PoolError::WrongState { .. } => "wrong_state",
            PoolError::ArnInUse(_) => "arn_in_use",
            PoolError::BelowMinStages { .. } => "below_min_stages",
            PoolError::LastLiveStage(_) => "last_live_stage",
            PoolError::OriginHasReplicas(_) => "origin_has_replicas",
            PoolError::HasViewers { .. } => "has_viewers",
            PoolError::HostPublishing(_) => "host_publishing",
            PoolError::ReplicaStage(_) => "replica_stage",
            PoolError::Ended => "broadcast_ended",
            PoolError::Invalid(_) => "invalid",
            PoolError::Corrupt(_) => "corrupt",
        }
    }
}
