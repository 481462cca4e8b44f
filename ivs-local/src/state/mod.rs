//! The in-memory state of the emulated region: stages and their sessions and participants,
//! imported public keys, replications. Every method takes `now` (unix seconds) and random bytes
//! where it needs them, and answers with IVS's errors; the HTTP layer only parses and formats.

use std::collections::{HashMap, HashSet, VecDeque};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use stagefan_core::ivs::{
    self, Arn, Attributes, ErrorKind, Event, EventName, IvsError, Participant, ParticipantProtocol,
    ParticipantReplica, ParticipantState, ParticipantSummary, ParticipantTokenCapability,
    PublicKey, PublicKeySummary, ReplicationState, ReplicationType, ResourceType, Stage,
    StageEndpoints, StageSummary, Tags,
};
use stagefan_core::sigv4::UtcDateTime;
use stagefan_core::token::{self, Claims, VerifyingKey};

mod keys;
mod ops;
mod participants;
#[cfg(test)]
mod quota_tests;
mod quotas;
mod replication;
mod stages;
mod tags;
#[cfg(test)]
mod tests;

pub use quotas::RegionQuota;

/// Past sessions kept per stage (for ListParticipants / GetParticipant on ended sessions).
const PAST_SESSIONS_KEPT: usize = 20;
/// Events kept per participant.
const EVENTS_KEPT: usize = 200;
pub use stagefan_core::ivs::MAX_REPLICATIONS_PER_PARTICIPANT;

/// The region's fixed facts and quotas.
#[derive(Clone, Debug)]
pub struct RegionConfig {
    /// e.g. `us-east-1`.
    pub region: String,
    /// 12 digits.
    pub account_id: String,
    /// Stage `endpoints.whip`.
    pub whip_url: String,
    /// Stage `endpoints.events`.
    pub events_url: String,
    /// Stages in the region.
    pub stage_quota: usize,
    /// Publishers per stage.
    pub publisher_cap: usize,
    /// Subscribers per stage.
    pub subscriber_cap: usize,
    /// Concurrent publishers across every stage of the region (see [`RegionQuota`]).
    pub publisher_quota: usize,
    /// Concurrent subscriptions across every stage of the region (see [`RegionQuota`]).
    pub subscription_quota: usize,
}

/// Publisher or subscriber (what the WHIP route admitted it as).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Publishes (WHIP).
    Publisher,
    /// Subscribes (WHEP-style).
    Subscriber,
}

#[derive(Clone, Debug)]
struct ParticipantRec {
    id: String,
    user_id: Option<String>,
    attributes: Option<Attributes>,
    role: Role,
    state: ParticipantState,
    /// It has a media session (WHIP) or is a replica: counted against the stage's caps. A
    /// participant joined only by its events socket (the SDK before it publishes or
    /// subscribes) is CONNECTED without one.
    media: bool,
    first_join_time: i64,
    published: bool,
    events: Vec<Event>,
    replication_type: ReplicationType,
    replication_state: Option<ReplicationState>,
    source_stage_arn: Option<String>,
    source_session_id: Option<String>,
}

#[derive(Clone, Debug)]
struct SessionRec {
    id: String,
    /// Insertion order = join order.
    participants: Vec<ParticipantRec>,
}

impl SessionRec {
    fn find_mut(&mut self, pid: &str) -> Option<&mut ParticipantRec> {
        self.participants.iter_mut().rev().find(|p| p.id == pid)
    }

    fn find(&self, pid: &str) -> Option<&ParticipantRec> {
        self.participants.iter().rev().find(|p| p.id == pid)
    }

    fn connected(&self, role: Role) -> usize {
        self.participants
            .iter()
            .filter(|p| p.state == ParticipantState::Connected && p.media && p.role == role)
            .count()
    }

    fn any_connected(&self) -> bool {
        self.participants
            .iter()
            .any(|p| p.state == ParticipantState::Connected)
    }
}

#[derive(Clone, Debug)]
struct StageRec {
    arn: String,
    name: String,
    tags: Tags,
    auto_recording: Option<ivs::AutoParticipantRecordingConfiguration>,
    session: Option<SessionRec>,
    past_sessions: VecDeque<SessionRec>,
}

#[derive(Clone, Debug)]
struct KeyRec {
    arn: String,
    name: String,
    pem: String,
    fingerprint: String,
    key: VerifyingKey,
    tags: Tags,
}

#[derive(Clone, Debug)]
struct ReplicationRec {
    source_stage_arn: String,
    source_session_id: String,
    destination_stage_arn: String,
    destination_session_id: String,
    participant_id: String,
    state: ReplicationState,
    /// How long the replication waits for a source that left to come back (0–300 s).
    reconnect_window_seconds: i64,
    /// When the source left, while the replication waits for it.
    source_left_at: Option<i64>,
    /// The replica's attributes in the destination (the token's, merged with the request's).
    attributes: Attributes,
}

/// What the media plane must do after a registry change: the media crate's own instruction.
/// The HTTP layer takes these with [`Store::take_media_actions`] after every operation and
/// applies them.
pub use ivs_local_media::Replication as MediaAction;

/// A live media connection (one per participant id, the token's `jti`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Stage id.
    pub stage_id: String,
    /// Its role.
    pub role: Role,
    /// This connection's id (unique in this process): the media plane's events name it, and
    /// the WHIP session URL carries it, so a replaced connection's late events or requests
    /// never reach its successor.
    pub id: u64,
    /// ICE and DTLS came up (the media plane said so).
    pub connected: bool,
}

/// Why a connection ended: `GET` on its session URL answers it as the error code, so a page
/// can tell "another connection took over" from "the server ended it".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// DELETE, the peer closed, or ICE consent timed out.
    Left,
    /// A newer connection of the same participant id replaced it (IVS:
    /// `StageLeftReason.TOKEN_REUSED`).
    TokenReused,
    /// DisconnectParticipant.
    ParticipantDisconnected,
    /// DeleteStage.
    StageDeleted,
    /// ICE never completed within the setup deadline.
    IceSetupTimeout,
    /// The media plane refused the offer.
    JoinFailed,
}

impl EndReason {
    /// The error code a page sees.
    pub fn code(self) -> &'static str {
        match self {
            EndReason::Left => "SESSION_ENDED",
            EndReason::TokenReused => "TOKEN_REUSED",
            EndReason::ParticipantDisconnected => "PARTICIPANT_DISCONNECTED",
            EndReason::StageDeleted => "STAGE_DELETED",
            EndReason::IceSetupTimeout => "ICE_SETUP_TIMEOUT",
            EndReason::JoinFailed => "JOIN_FAILED",
        }
    }
}

/// Ended connections remembered for their reason.
const ENDED_KEPT: usize = 10_000;

/// A join the registry admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The stage's session id.
    pub session_id: String,
    /// The new connection's id.
    pub connection: u64,
    /// The participant's older connection that this one replaced (to be closed in the media
    /// plane), if there was one.
    pub replaced: Option<u64>,
}

/// A connected publisher of a stage, as the events WebSocket shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePublisher {
    /// Participant id.
    pub id: String,
    /// The token's `user_id`.
    pub user_id: Option<String>,
    /// The token's attributes (a replica's, merged).
    pub attributes: Attributes,
    /// Media arrived from it.
    pub published: bool,
}

/// Why a WHIP join was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdmitError {
    /// The token's stage does not exist.
    StageNotFound,
    /// Revoked by DisconnectParticipant.
    Revoked,
    /// 12 publishers, or the subscriber cap.
    AtCapacity {
        /// Which cap.
        role: Role,
        /// The cap.
        cap: usize,
    },
    /// The region's concurrent publishers or subscriptions are at their quota.
    QuotaExceeded {
        /// Which quota.
        quota: RegionQuota,
        /// Its limit.
        limit: usize,
    },
}

/// The whole region.
pub struct Store {
    cfg: RegionConfig,
    /// Stage id → stage, in creation order via `order`.
    stages: HashMap<String, StageRec>,
    order: Vec<String>,
    keys: Vec<KeyRec>,
    replications: Vec<ReplicationRec>,
    /// Active media connections by participant id (= token `jti`).
    connections: HashMap<String, Connection>,
    /// The id of the next connection.
    next_connection: u64,
    /// Why recent connections ended (bounded, oldest forgotten first).
    ended: HashMap<u64, EndReason>,
    ended_order: VecDeque<u64>,
    /// (stage id, participant id) revoked by DisconnectParticipant.
    revoked: HashSet<(String, String)>,
    /// Media-plane work decided by the registry, not yet applied.
    media_actions: Vec<MediaAction>,
}

fn not_found(what: &str, arn: &str) -> IvsError {
    IvsError::new(
        ErrorKind::ResourceNotFound,
        format!("{what} not found: {arn}"),
    )
}

fn validation(message: impl Into<String>) -> IvsError {
    IvsError::new(ErrorKind::Validation, message)
}

fn iso(t: i64) -> String {
    UtcDateTime::from_unix(t).rfc3339()
}

fn event(name: EventName, pid: &str, now: i64) -> Event {
    Event {
        name: Some(name),
        participant_id: Some(pid.to_string()),
        event_time: Some(iso(now)),
        ..Event::default()
    }
}

fn push_event(p: &mut ParticipantRec, e: Event) {
    if p.events.len() >= EVENTS_KEPT {
        p.events.remove(0);
    }
    p.events.push(e);
}

/// Pages through `items` with an opaque token holding the offset.
pub fn paginate<T: Clone>(
    items: &[T],
    next_token: Option<&str>,
    page: usize,
) -> Result<(Vec<T>, Option<String>), IvsError> {
    let start = match next_token.filter(|t| !t.is_empty()) {
        None => 0,
        Some(t) => URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.strip_prefix("offset:")
                    .and_then(|n| n.parse::<usize>().ok())
            })
            .ok_or_else(|| validation("nextToken is not valid"))?,
    };
    let start = start.min(items.len());
    let end = (start + page).min(items.len());
    let next = (end < items.len()).then(|| URL_SAFE_NO_PAD.encode(format!("offset:{end}")));
    Ok((items[start..end].to_vec(), next))
}

/// The capabilities a CreateParticipantToken request asks for (default both).
pub fn capabilities_of(caps: Option<&[ParticipantTokenCapability]>) -> (bool, bool) {
    match caps {
        None => (true, true),
        Some(c) => (
            c.contains(&ParticipantTokenCapability::Publish),
            c.contains(&ParticipantTokenCapability::Subscribe),
        ),
    }
}
