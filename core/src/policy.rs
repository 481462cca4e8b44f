//! The scaling policy of a pool, pure: when to create stages (ahead of need, a bounded number
//! in flight; their calls are paced by the account-wide budget, [`crate::budget`]), when to
//! drain and delete them, which IVS stages are orphans.
//!
//! The policy only decides. The pool carries decisions out (it alone writes), so the same
//! functions serve the worker's Durable Object (which has the [`Pool`](crate::pool::Pool))
//! and the monitor (which has the admin [`Snapshot`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::budget::IVS_STAGE_OPERATION_TPS;
use crate::pool::{
    headroom_seats, CreateIntent, LoadSummary, Pool, PoolSettings, Snapshot, StageId, StageState,
    StageView, DEFAULT_HEADROOM, DEFAULT_MAX_STAGES, DEFAULT_MIN_STAGES,
    DEFAULT_SCALE_DOWN_GRACE_SECONDS, DEFAULT_STAGE_CAPACITY,
};
use crate::tags::{TAG_BROADCAST, TAG_DEPLOYMENT, TAG_MANAGED};

/// Moved to [`crate::pacing`]; this path stays for the adapters.
pub use crate::pacing::TokenBucket;
use crate::time::Millis;

/// The knobs of the policy (see [`Config::policy`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyConfig {
    /// Free seats (live + warming + being created) to keep ahead of need.
    pub headroom_seats: u32,
    /// Stages (warming or live) always kept.
    pub min_stages: u32,
    /// Stages (not deleted) at most.
    pub max_stages: u32,
    /// How long a stage is empty before it is drained.
    pub scale_down_grace_ms: u64,
    /// How long a stage drains before it is deleted (once empty and without the host).
    pub delete_grace_ms: u64,
    /// Creates a pool has in flight at most (waiting for their slot in the account-wide
    /// `CreateStage` budget, or calling IVS): one pool never queues more than about a second
    /// of the account's budget ahead of the other broadcasts.
    pub max_creating: u32,
    /// A create intent older than this is stale (its adapter likely died mid-call): resolve it
    /// by looking the stage up by name in IVS, never by creating again.
    pub creating_timeout_ms: u64,
    /// A stagefan-tagged stage unknown to every pool is an orphan once this old.
    pub orphan_grace_ms: u64,
    /// Whether under-filled stages are consolidated (see [`scale_down`]).
    pub consolidate: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let capacity = DEFAULT_STAGE_CAPACITY;
        let grace = u64::from(DEFAULT_SCALE_DOWN_GRACE_SECONDS) * 1000;
        PolicyConfig {
            headroom_seats: headroom_seats(capacity, DEFAULT_HEADROOM),
            min_stages: DEFAULT_MIN_STAGES,
            max_stages: DEFAULT_MAX_STAGES,
            scale_down_grace_ms: grace,
            delete_grace_ms: grace,
            max_creating: IVS_STAGE_OPERATION_TPS,
            creating_timeout_ms: 60_000,
            orphan_grace_ms: 10 * 60_000,
            consolidate: true,
        }
    }
}

impl PolicyConfig {
    /// The policy of a pool with these settings: its headroom, stage bounds and graces; the
    /// rest at the defaults. The pool's alarm decides with it.
    pub fn for_pool(settings: &PoolSettings) -> PolicyConfig {
        PolicyConfig {
            headroom_seats: settings.headroom_seats,
            min_stages: settings.min_stages,
            max_stages: settings.max_stages,
            scale_down_grace_ms: settings.scale_down_grace_ms,
            delete_grace_ms: settings.delete_grace_ms,
            consolidate: settings.consolidate,
            ..PolicyConfig::default()
        }
    }

    /// The same policy as [`PolicyConfig::for_pool`], from the knobs the pool's admin snapshot
    /// carries: what the monitor decides with, so that a pool is scaled by one policy with one
    /// configuration whoever asks.
    pub fn of_snapshot(snap: &Snapshot) -> PolicyConfig {
        PolicyConfig {
            headroom_seats: snap.headroom_seats,
            min_stages: snap.min_stages,
            max_stages: snap.max_stages,
            scale_down_grace_ms: snap.scale_down_grace_ms,
            delete_grace_ms: snap.delete_grace_ms,
            consolidate: snap.consolidate,
            ..PolicyConfig::default()
        }
    }
}

/// What held scale-up back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ScaleLimit {
    /// `max_stages` reached.
    MaxStages,
    /// `max_creating` creates are in flight already.
    InFlight,
}

/// A scale-up decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleUp {
    /// Stages to create now: call `begin_create` this many times (each create then waits
    /// for its slot in the account-wide `CreateStage` budget).
    pub create: u32,
    /// Stages that would be needed without limits.
    pub wanted: u32,
    /// What held it back, if `create < wanted`.
    pub limited_by: Option<ScaleLimit>,
}

/// Decides how many stages to create now: enough that free seats on live and warming stages
/// plus the seats of stages being created reach `headroom_seats` (and that `min_stages`
/// stages exist), bounded by `max_stages` and by `max_creating` creates in flight. The rate
/// of the calls is not decided here: each create waits for its slot in the account-wide
/// budget ([`crate::budget`]).
pub fn scale_up(cfg: &PolicyConfig, load: &LoadSummary) -> ScaleUp {
    let capacity = u64::from(load.capacity.max(1));
    let free = load.free_live_seats + load.free_warming_seats + load.creating_seats;
    let headroom = u64::from(cfg.headroom_seats);
    let for_headroom = if free >= headroom {
        0
    } else {
        (headroom - free).div_ceil(capacity)
    };
    let serving = load.creating + load.warming + load.live;
    let for_minimum = u64::from(cfg.min_stages.saturating_sub(serving));
    let wanted = for_headroom.max(for_minimum).min(u64::from(u32::MAX)) as u32;
    if wanted == 0 {
        return ScaleUp {
            create: 0,
            wanted: 0,
            limited_by: None,
        };
    }
    let room = cfg.max_stages.saturating_sub(load.existing());
    let in_flight_room = cfg.max_creating.saturating_sub(load.creating);
    let (create, limited_by) = if wanted > room && room <= in_flight_room {
        (room, Some(ScaleLimit::MaxStages))
    } else if wanted > in_flight_room {
        (in_flight_room, Some(ScaleLimit::InFlight))
    } else {
        (wanted, None)
    };
    ScaleUp {
        create,
        wanted,
        limited_by,
    }
}

/// Carries a scale-up out on the pool: asks [`scale_up`] how many stages to create and
/// records that many create intents ([`Pool::begin_create`]), stopping at the first refusal
/// (`max_stages`, the region-quota grant, an ended broadcast). The adapter then calls
/// `CreateStage` once for each intent returned, in its slot of the account-wide budget.
pub fn plan_creates(cfg: &PolicyConfig, pool: &mut Pool, now: Millis) -> Vec<CreateIntent> {
    let decision = scale_up(cfg, &pool.load_summary());
    (0..decision.create)
        .map_while(|_| pool.begin_create(now).ok())
        .collect()
}

/// The stages [`scale_up`] wants now beyond those the pool's region-quota grant has room for
/// (stages and publishers): what the pool must ask the ledger for before it can create them.
/// 0 when the quota is not enforced.
pub fn stages_beyond_grant(cfg: &PolicyConfig, pool: &Pool, now: Millis) -> u32 {
    let Some(granted) = pool.quota_granted(now) else {
        return 0;
    };
    let wanted = scale_up(cfg, &pool.load_summary()).create;
    let used = pool.quota_in_use();
    let room = granted
        .stages
        .saturating_sub(used.stages)
        .min(granted.publishers.saturating_sub(used.publishers));
    wanted.saturating_sub(room)
}

/// A scaling action, serialized as the body of the admin actions route
/// (`{"action":"drain","stageArn":"..."}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum ScaleAction {
    /// Create one stage.
    Create,
    /// Stop sending viewers to a stage.
    Drain {
        /// The stage.
        #[serde(rename = "stageArn")]
        stage_arn: String,
    },
    /// Drain an under-filled stage whose viewers the other stages can take: they are moved
    /// there (make-before-break), then the stage is deleted.
    Consolidate {
        /// The stage.
        #[serde(rename = "stageArn")]
        stage_arn: String,
    },
    /// Delete a drained, empty stage.
    Delete {
        /// The stage.
        #[serde(rename = "stageArn")]
        stage_arn: String,
    },
}

/// Decides scale-down on a snapshot: empty warming/live stages beyond `min_stages`, empty for
/// `scale_down_grace_ms`, are drained (newest first, never the last live stage, never an
/// origin that still feeds replicas, and only while the remaining free seats still cover the
/// headroom, so scaling does not oscillate); then under-filled stages are consolidated
/// ([`consolidations`]); draining stages that are empty and drained for `delete_grace_ms` are
/// deleted (the host publishing to one only holds an upload nobody watches: the host page
/// leaves a stage the pool no longer lists). A stage with viewers is never deleted.
pub fn scale_down(cfg: &PolicyConfig, snap: &Snapshot, now: Millis) -> Vec<ScaleAction> {
    let mut actions = Vec::new();
    for st in &snap.stages {
        if st.state == StageState::Draining
            && st.load == 0
            && st
                .draining_since
                .is_some_and(|t| now.saturating_sub(t) >= cfg.delete_grace_ms)
        {
            if let Some(arn) = &st.stage_arn {
                actions.push(ScaleAction::Delete {
                    stage_arn: arn.clone(),
                });
            }
        }
    }

    let load = LoadSummary::from_snapshot(snap);
    let mut room = Room {
        active: load.warming + load.live,
        live: load.live,
        free: load.free_live_seats + load.free_warming_seats + load.creating_seats,
        drained: BTreeSet::new(),
    };
    let headroom = u64::from(cfg.headroom_seats);
    for st in snap.stages.iter().rev() {
        if !matches!(st.state, StageState::Warming | StageState::Live) || st.load > 0 {
            continue;
        }
        let Some(arn) = st.stage_arn.as_deref() else {
            continue;
        };
        if st
            .empty_since
            .is_none_or(|t| now.saturating_sub(t) < cfg.scale_down_grace_ms)
        {
            continue;
        }
        if room.free.saturating_sub(u64::from(st.capacity)) < headroom {
            continue;
        }
        if !room.may_drain(cfg, snap, st, arn) {
            continue;
        }
        room.drain(st, arn);
        actions.push(ScaleAction::Drain {
            stage_arn: arn.to_string(),
        });
    }
    actions.extend(consolidations(cfg, snap, &mut room));
    actions
}

/// What scale-down leaves of the pool, as it decides stage by stage.
struct Room<'a> {
    /// Warming and live stages.
    active: u32,
    /// Live stages.
    live: u32,
    /// Free seats on warming and live stages, and seats of stages being created.
    free: u64,
    /// Stages drained by this decision.
    drained: BTreeSet<&'a str>,
}

impl<'a> Room<'a> {
    /// Whether `st` may stop taking viewers: never below `min_stages`, never the last live
    /// stage, never an origin that still feeds replicas this decision keeps.
    fn may_drain(&self, cfg: &PolicyConfig, snap: &Snapshot, st: &StageView, arn: &str) -> bool {
        if self.active <= cfg.min_stages || (st.state == StageState::Live && self.live <= 1) {
            return false;
        }
        let feeds_replicas = st.origin_arn.is_none()
            && snap.stages.iter().any(|r| {
                r.origin_arn.as_deref() == Some(arn)
                    && matches!(r.state, StageState::Warming | StageState::Live)
                    && !r
                        .stage_arn
                        .as_deref()
                        .is_some_and(|a| self.drained.contains(a))
            });
        !feeds_replicas
    }

    fn drain(&mut self, st: &StageView, arn: &'a str) {
        self.active -= 1;
        if st.state == StageState::Live {
            self.live -= 1;
        }
        self.free -= u64::from(st.capacity);
        self.drained.insert(arn);
    }
}

/// Seats beyond the headroom consolidation leaves free, so that the next few arrivals do not
/// make a stage again at once: a tenth of a stage, at least one seat.
pub fn consolidation_margin(capacity: u32) -> u64 {
    u64::from(capacity).div_ceil(10).max(1)
}

/// Consolidation: when the audience has shrunk, under-filled warming or live stages are
/// drained so that their viewers move into the other stages' free seats; each moved viewer
/// holds its old seat until its new stage plays, then the emptied stage is deleted. Least
/// filled first (fewest moves), ties to the newest. A stage is consolidated only when the
/// free seats left on the other stages still cover the headroom plus a margin
/// ([`consolidation_margin`]: the hysteresis against making a stage again at once; scale-up
/// starts below the headroom), under the rules of draining (never below `min_stages`, never
/// the last live stage, never an origin that feeds replicas), never while an empty stage
/// stays (it would draw the moved viewers), and never while viewers are still arriving: no
/// more new seats within the scale-down grace than half the headroom. Off when
/// `cfg.consolidate` is.
fn consolidations<'a>(
    cfg: &PolicyConfig,
    snap: &'a Snapshot,
    room: &mut Room<'a>,
) -> Vec<ScaleAction> {
    let mut actions = Vec::new();
    if !cfg.consolidate || snap.recent_arrivals > u64::from(cfg.headroom_seats / 2) {
        return actions;
    }
    // An empty stage that stays would only draw the moved viewers (they are seated least
    // loaded first): it is drained after its grace first, or it fills.
    let empty_stays = snap.stages.iter().any(|st| {
        matches!(st.state, StageState::Warming | StageState::Live)
            && st.load == 0
            && !st
                .stage_arn
                .as_deref()
                .is_some_and(|a| room.drained.contains(a))
    });
    if empty_stays {
        return actions;
    }
    let headroom = u64::from(cfg.headroom_seats);
    let mut candidates: Vec<&StageView> = snap
        .stages
        .iter()
        .filter(|st| matches!(st.state, StageState::Warming | StageState::Live) && st.load > 0)
        .collect();
    candidates.sort_by(|a, b| a.load.cmp(&b.load).then(b.id.cmp(&a.id)));
    for st in candidates {
        let Some(arn) = st.stage_arn.as_deref() else {
            continue;
        };
        let margin = consolidation_margin(st.capacity);
        if room.free.saturating_sub(u64::from(st.capacity)) < headroom + margin {
            continue;
        }
        if !room.may_drain(cfg, snap, st, arn) {
            continue;
        }
        room.drain(st, arn);
        actions.push(ScaleAction::Consolidate {
            stage_arn: arn.to_string(),
        });
    }
    actions
}

/// Create intents older than `creating_timeout_ms` (the adapter likely died during
/// `CreateStage`): look each up in IVS by name, then call `created` or `create_failed`.
pub fn stale_creates(cfg: &PolicyConfig, snap: &Snapshot, now: Millis) -> Vec<StageId> {
    snap.stages
        .iter()
        .filter(|s| {
            s.state == StageState::Creating
                && now.saturating_sub(s.created_at) >= cfg.creating_timeout_ms
        })
        .map(|s| s.id)
        .collect()
}

/// How long a create intent nobody is calling IVS for is left before it is looked up by
/// name: long enough for a request a dead instance already sent to have reached IVS.
pub const ABANDONED_CREATE_SETTLE_MS: Millis = 10_000;

/// Create intents that no call of this instance will resolve, looked up by name (then
/// `created` or `create_failed`) [`ABANDONED_CREATE_SETTLE_MS`] after they were abandoned
/// instead of after `creating_timeout_ms`: intents made before this instance loaded the pool
/// at `loaded_at` (the instance that was calling IVS for them is gone), and those whose
/// outcome-unknown lookup failed at the time `failed_lookups` gives. Each such intent counts
/// its seats toward the headroom, so while it waits the pool creates nothing for them: in
/// simulation (`sim/`, a restart during a create) a pool at its headroom refused every new
/// viewer for the whole `creating_timeout_ms`.
pub fn abandoned_creates(
    snap: &Snapshot,
    loaded_at: Millis,
    failed_lookups: &BTreeMap<StageId, Millis>,
    now: Millis,
) -> Vec<StageId> {
    snap.stages
        .iter()
        .filter(|s| s.state == StageState::Creating)
        .filter(|s| {
            let orphaned_at = if s.created_at < loaded_at {
                Some(loaded_at)
            } else {
                failed_lookups.get(&s.id).copied()
            };
            orphaned_at.is_some_and(|t| now.saturating_sub(t) >= ABANDONED_CREATE_SETTLE_MS)
        })
        .map(|s| s.id)
        .collect()
}

/// A stage as IVS's `ListStages` (and `ListTagsForResource`) show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct IvsStage {
    /// ARN.
    pub arn: String,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Creation time, if known.
    #[serde(default)]
    pub created_at: Option<Millis>,
}

impl IvsStage {
    /// Whether stagefan created it (tag `stagefan:managed` = `true`).
    pub fn is_managed(&self) -> bool {
        self.tags.get(TAG_MANAGED).map(String::as_str) == Some("true")
    }

    /// Whether `deployment`'s pools created it: managed, and tagged `stagefan:deployment` =
    /// `deployment`. Only these are orphan candidates for that deployment's collector; a stage
    /// of another deployment on the same account (or one made before the tag existed) is
    /// never one.
    pub fn belongs_to(&self, deployment: &str) -> bool {
        self.is_managed() && self.tags.get(TAG_DEPLOYMENT).map(String::as_str) == Some(deployment)
    }
}

/// What every pool knows: stage ARNs and the names of stages (including those being created,
/// which IVS may already list before the pool hears back).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KnownStages {
    /// ARNs.
    pub arns: BTreeSet<String>,
    /// Stage names.
    pub names: BTreeSet<String>,
}

impl KnownStages {
    /// Collects what a set of admin snapshots know.
    pub fn from_snapshots<'a>(snaps: impl IntoIterator<Item = &'a Snapshot>) -> KnownStages {
        let mut known = KnownStages::default();
        for snap in snaps {
            known.add_snapshot(snap);
        }
        known
    }

    /// Adds one snapshot's stages.
    pub fn add_snapshot(&mut self, snap: &Snapshot) {
        for st in &snap.stages {
            if let Some(arn) = &st.stage_arn {
                self.arns.insert(arn.clone());
            }
            self.names.insert(st.name.clone());
        }
    }

    fn knows(&self, st: &IvsStage) -> bool {
        self.arns.contains(&st.arn) || st.name.as_ref().is_some_and(|n| self.names.contains(n))
    }
}

/// A stage to collect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Orphan {
    /// ARN for `DeleteStage`.
    pub arn: String,
    /// The broadcast its tag names, if any.
    pub broadcast: Option<String>,
    /// How long it has been known to exist, in milliseconds.
    pub age_ms: u64,
}

/// Finds orphan candidates across rounds: stages of this deployment
/// ([`IvsStage::belongs_to`]) that no pool knows, older than the grace. A stage's age is from
/// its creation time when IVS gives one, otherwise from when this tracker first saw it unknown.
/// A candidate is still only deleted once IVS lists no connected participant in it (the
/// adapter checks, right before `DeleteStage`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrphanTracker {
    first_seen: BTreeMap<String, Millis>,
}

impl OrphanTracker {
    /// An empty tracker.
    pub fn new() -> OrphanTracker {
        OrphanTracker::default()
    }

    /// One round over IVS's complete stage list; returns `deployment`'s orphan candidates,
    /// oldest first.
    pub fn find(
        &mut self,
        ivs: &[IvsStage],
        known: &KnownStages,
        deployment: &str,
        now: Millis,
        grace_ms: u64,
    ) -> Vec<Orphan> {
        let mut still: BTreeMap<String, Millis> = BTreeMap::new();
        let mut orphans = Vec::new();
        for st in ivs {
            if !st.belongs_to(deployment) || known.knows(st) {
                continue;
            }
            let seen = *self.first_seen.get(&st.arn).unwrap_or(&now);
            still.insert(st.arn.clone(), seen);
            let since = st.created_at.map_or(seen, |c| c.min(seen));
            let age_ms = now.saturating_sub(since);
            if age_ms >= grace_ms {
                orphans.push(Orphan {
                    arn: st.arn.clone(),
                    broadcast: st.tags.get(TAG_BROADCAST).cloned(),
                    age_ms,
                });
            }
        }
        self.first_seen = still;
        orphans.sort_by(|a, b| b.age_ms.cmp(&a.age_ms).then(a.arn.cmp(&b.arn)));
        orphans
    }
}

/// Stateless orphan check for stages whose creation time IVS gives: `deployment`'s, unknown,
/// and created at least `grace_ms` before `now`. Stages without a creation time are left alone
/// (use [`OrphanTracker`] for those).
pub fn find_orphans(
    ivs: &[IvsStage],
    known: &KnownStages,
    deployment: &str,
    now: Millis,
    grace_ms: u64,
) -> Vec<Orphan> {
    ivs.iter()
        .filter(|st| st.belongs_to(deployment) && !known.knows(st))
        .filter_map(|st| {
            let age_ms = now.saturating_sub(st.created_at?);
            (age_ms >= grace_ms).then(|| Orphan {
                arn: st.arn.clone(),
                broadcast: st.tags.get(TAG_BROADCAST).cloned(),
                age_ms,
            })
        })
        .collect()
}
