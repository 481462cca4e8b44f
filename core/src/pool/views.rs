//! What a pool shows: its stages, leases and loads, and the admin snapshot.

use serde::{Deserialize, Serialize};

use super::*;
use crate::meter::MeterView;

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
    /// The stage's participant time and estimated cost.
    #[serde(default)]
    pub meter: MeterView,
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
    /// The pool's grant of the region's IVS quotas and its use of it (when enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaView>,
    /// The broadcast's participant time and estimated cost (the cost meter), with the
    /// prices it was computed at.
    #[serde(default)]
    pub meter: MeterView,
    /// The price table, micro-dollars per participant-hour.
    #[serde(default)]
    pub prices: Prices,
    /// New seats within the scale-down grace (moves not counted): consolidation waits while
    /// viewers are still arriving.
    #[serde(default)]
    pub recent_arrivals: u64,
    /// Whether under-filled stages are consolidated (`CONSOLIDATE`).
    #[serde(default)]
    pub consolidate: bool,
    /// What consolidation saved: the publisher time of the stages it closed, since they
    /// closed, and its estimated cost (an upper bound: see [`crate::pool::Saved`]).
    #[serde(default)]
    pub saved: MeterView,
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
            sum.count(st.state, st.capacity, st.capacity.saturating_sub(st.load));
        }
        sum
    }

    /// Counts one stage of `state` with `capacity` seats, `free` of them free.
    fn count(&mut self, state: StageState, capacity: u32, free: u32) {
        match state {
            StageState::Creating => {
                self.creating += 1;
                self.creating_seats += u64::from(capacity);
            }
            StageState::Warming => {
                self.warming += 1;
                self.free_warming_seats += u64::from(free);
            }
            StageState::Live => {
                self.live += 1;
                self.free_live_seats += u64::from(free);
            }
            StageState::Draining => self.draining += 1,
            StageState::Deleted => {}
        }
    }
}

impl Pool {
    /// The broadcast id.
    pub fn broadcast(&self) -> &str {
        &self.meta.broadcast
    }

    /// The region of a pool outside the primary region (see [`Pool::new_in_region`]).
    pub fn region(&self) -> Option<&str> {
        self.meta.region.as_deref()
    }

    /// The pool's name: the broadcast, or `{broadcast}@{region}` outside the primary region;
    /// every lease id of the pool starts with it.
    pub fn name(&self) -> String {
        match &self.meta.region {
            None => self.meta.broadcast.clone(),
            Some(region) => format!("{}@{region}", self.meta.broadcast),
        }
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
            sum.count(st.state, st.capacity, st.free());
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
        let mut meters = self.stage_meters(now);
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
                meter: meters.remove(&st.id).unwrap_or_default(),
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
            quota: self.quota_view(now),
            meter: self.meter(now),
            prices: self.settings.prices,
            recent_arrivals: self.recent_arrivals(now),
            consolidate: self.settings.consolidate,
            saved: self.saved(now),
        }
    }
}
