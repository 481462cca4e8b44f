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

/// Past sessions kept per stage (for ListParticipants / GetParticipant on ended sessions).
const PAST_SESSIONS_KEPT: usize = 20;
/// Events kept per participant.
const EVENTS_KEPT: usize = 200;
/// Replications per participant (IVS: 5, not adjustable).
pub const MAX_REPLICATIONS_PER_PARTICIPANT: usize = 5;

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

/// What the media plane must do after a registry change (stage ids, not ARNs). The HTTP layer
/// takes these with [`Store::take_media_actions`] after every operation and applies them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaAction {
    /// Forward `participant_id`'s media from `source_stage` to `dest_stage`'s subscribers.
    Replicate {
        /// The replicated publisher.
        participant_id: String,
        /// Its stage id.
        source_stage: String,
        /// The destination stage id.
        dest_stage: String,
    },
    /// Stop forwarding it there.
    StopReplication {
        /// The replicated publisher.
        participant_id: String,
        /// The destination stage id.
        dest_stage: String,
    },
}

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

impl Store {
    /// An empty region.
    pub fn new(cfg: RegionConfig) -> Self {
        Self {
            cfg,
            stages: HashMap::new(),
            order: Vec::new(),
            keys: Vec::new(),
            replications: Vec::new(),
            connections: HashMap::new(),
            next_connection: 1,
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            revoked: HashSet::new(),
            media_actions: Vec::new(),
        }
    }

    /// The media-plane work decided since the last call (see [`MediaAction`]).
    pub fn take_media_actions(&mut self) -> Vec<MediaAction> {
        std::mem::take(&mut self.media_actions)
    }

    fn endpoints(&self) -> StageEndpoints {
        StageEndpoints {
            events: Some(self.cfg.events_url.clone()),
            whip: Some(self.cfg.whip_url.clone()),
            rtmp: None,
            rtmps: None,
        }
    }

    fn stage_view(&self, s: &StageRec) -> Stage {
        Stage {
            arn: s.arn.clone(),
            name: Some(s.name.clone()),
            active_session_id: s.session.as_ref().map(|x| x.id.clone()),
            tags: Some(s.tags.clone()),
            auto_participant_recording_configuration: s.auto_recording.clone(),
            endpoints: Some(self.endpoints()),
        }
    }

    /// The stage id of a stage ARN of this region and account, if it exists.
    fn stage_id_of(&self, arn: &str) -> Result<String, IvsError> {
        let parsed = Arn::parse(arn).map_err(|e| validation(e.to_string()))?;
        if parsed.resource_type != ResourceType::Stage {
            return Err(validation(format!("not a stage ARN: {arn}")));
        }
        if parsed.region != self.cfg.region || parsed.account_id != self.cfg.account_id {
            return Err(not_found("Stage", arn));
        }
        if self.stages.contains_key(&parsed.resource_id) {
            Ok(parsed.resource_id)
        } else {
            Err(not_found("Stage", arn))
        }
    }

    fn stage(&self, arn: &str) -> Result<&StageRec, IvsError> {
        let id = self.stage_id_of(arn)?;
        Ok(&self.stages[&id])
    }

    /// CreateStage (tokens are minted by the caller, which holds the key).
    pub fn create_stage(
        &mut self,
        name: Option<String>,
        tags: Option<Tags>,
        auto_recording: Option<ivs::AutoParticipantRecordingConfiguration>,
        random_id: &[u8; 12],
    ) -> Result<Stage, IvsError> {
        let name = name.unwrap_or_default();
        ivs::validate_name(&name).map_err(validation)?;
        let tags = tags.unwrap_or_default();
        ivs::validate_tags(&tags).map_err(validation)?;
        if self.stages.len() >= self.cfg.stage_quota {
            return Err(IvsError::new(
                ErrorKind::ServiceQuotaExceeded,
                format!(
                    "Stage quota exceeded: at most {} stages per region",
                    self.cfg.stage_quota
                ),
            ));
        }
        let mut id = ivs::resource_id(random_id);
        while self.stages.contains_key(&id) {
            id.push('0');
        }
        let arn = Arn::stage(&self.cfg.region, &self.cfg.account_id, &id).to_string();
        let rec = StageRec {
            arn,
            name,
            tags,
            auto_recording,
            session: None,
            past_sessions: VecDeque::new(),
        };
        let view = self.stage_view(&rec);
        self.stages.insert(id.clone(), rec);
        self.order.push(id);
        Ok(view)
    }

    /// GetStage.
    pub fn get_stage(&self, arn: &str) -> Result<Stage, IvsError> {
        Ok(self.stage_view(self.stage(arn)?))
    }

    /// UpdateStage.
    pub fn update_stage(
        &mut self,
        arn: &str,
        name: Option<String>,
        auto_recording: Option<ivs::AutoParticipantRecordingConfiguration>,
    ) -> Result<Stage, IvsError> {
        if let Some(n) = &name {
            ivs::validate_name(n).map_err(validation)?;
        }
        let id = self.stage_id_of(arn)?;
        let s = self.stages.get_mut(&id).expect("checked");
        if let Some(n) = name {
            s.name = n;
        }
        if auto_recording.is_some() {
            s.auto_recording = auto_recording;
        }
        let s = self.stages[&id].clone();
        Ok(self.stage_view(&s))
    }

    /// ListStages.
    pub fn list_stages(
        &self,
        next_token: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<StageSummary>, Option<String>), IvsError> {
        let page = ivs::page_size(max_results, 50, 100).map_err(validation)? as usize;
        let all: Vec<StageSummary> = self
            .order
            .iter()
            .map(|id| {
                let s = &self.stages[id];
                StageSummary {
                    arn: s.arn.clone(),
                    name: Some(s.name.clone()),
                    active_session_id: s.session.as_ref().map(|x| x.id.clone()),
                    tags: Some(s.tags.clone()),
                }
            })
            .collect();
        paginate(&all, next_token, page)
    }

    /// DeleteStage: ends its session (participants leave) and stops its replications. Returns
    /// the stage id and the (participant id, connection id) whose media must be closed.
    pub fn delete_stage(
        &mut self,
        arn: &str,
        now: i64,
    ) -> Result<(String, Vec<(String, u64)>), IvsError> {
        let id = self.stage_id_of(arn)?;
        let stage_arn = self.stages[&id].arn.clone();
        // Replications from or into this stage stop.
        self.stop_active_replications(
            |r| r.source_stage_arn == stage_arn || r.destination_stage_arn == stage_arn,
            now,
        );
        let mut stage = self.stages.remove(&id).expect("checked");
        self.order.retain(|x| x != &id);
        let mut to_close = Vec::new();
        if let Some(session) = stage.session.as_mut() {
            for p in session.participants.iter_mut() {
                if p.state == ParticipantState::Connected {
                    Self::mark_left(p, now);
                    if let Some(c) = self.connections.remove(&p.id) {
                        to_close.push((p.id.clone(), c.id));
                    }
                }
            }
        }
        self.revoked.retain(|(sid, _)| sid != &id);
        for (_, c) in &to_close {
            self.record_end(*c, EndReason::StageDeleted);
        }
        Ok((id, to_close))
    }

    fn record_end(&mut self, connection: u64, reason: EndReason) {
        if self.ended.insert(connection, reason).is_none() {
            self.ended_order.push_back(connection);
        }
        while self.ended_order.len() > ENDED_KEPT {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    /// Whether connection `connection` of `pid` is live; if not, why it ended, when that is
    /// still remembered.
    pub fn connection_status(&self, pid: &str, connection: u64) -> Result<(), Option<EndReason>> {
        match self.connections.get(pid) {
            Some(c) if c.id == connection => Ok(()),
            _ => Err(self.ended.get(&connection).copied()),
        }
    }

    /// The participant `pid` of `stage_id`'s current session, if both exist.
    fn participant_mut(&mut self, stage_id: &str, pid: &str) -> Option<&mut ParticipantRec> {
        self.stages
            .get_mut(stage_id)
            .and_then(|s| s.session.as_mut())
            .and_then(|s| s.find_mut(pid))
    }

    fn mark_left(p: &mut ParticipantRec, now: i64) {
        if p.published {
            push_event(p, event(EventName::PublishStopped, &p.id.clone(), now));
        } else if p.role == Role::Subscriber {
            push_event(p, event(EventName::SubscribeStopped, &p.id.clone(), now));
        }
        p.state = ParticipantState::Disconnected;
        push_event(p, event(EventName::Left, &p.id.clone(), now));
    }

    /// Ends a stage's session when nobody is connected any more.
    fn maybe_end_session(&mut self, stage_id: &str) {
        if let Some(s) = self.stages.get_mut(stage_id) {
            if s.session.as_ref().is_some_and(|x| !x.any_connected()) {
                let ended = s.session.take().expect("checked");
                s.past_sessions.push_front(ended);
                s.past_sessions.truncate(PAST_SESSIONS_KEPT);
            }
        }
    }

    fn session_of<'a>(s: &'a StageRec, session_id: &str) -> Option<&'a SessionRec> {
        s.session
            .iter()
            .chain(s.past_sessions.iter())
            .find(|x| x.id == session_id)
    }

    // ---- public keys ------------------------------------------------------------------------

    /// ImportPublicKey.
    pub fn import_public_key(
        &mut self,
        pem: &str,
        name: Option<String>,
        tags: Option<Tags>,
        random_id: &[u8; 12],
    ) -> Result<PublicKey, IvsError> {
        let name = name.unwrap_or_default();
        ivs::validate_name(&name).map_err(validation)?;
        let tags = tags.unwrap_or_default();
        ivs::validate_tags(&tags).map_err(validation)?;
        if !pem.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(validation(
                "publicKeyMaterial must be a PEM-encoded public key (BEGIN PUBLIC KEY)",
            ));
        }
        let key = token::verifying_key_from_pem(pem).map_err(|_| {
            validation("publicKeyMaterial must be an ECDSA public key on curve P-384")
        })?;
        let fingerprint = token::fingerprint(&key);
        if self.keys.iter().any(|k| k.fingerprint == fingerprint) {
            return Err(IvsError::new(
                ErrorKind::Conflict,
                "This public key has already been imported",
            ));
        }
        if self.keys.len() >= 3 {
            return Err(IvsError::new(
                ErrorKind::ServiceQuotaExceeded,
                "Public key quota exceeded: at most 3 public keys per region",
            ));
        }
        let id = ivs::resource_id(random_id);
        let arn = Arn::public_key(&self.cfg.region, &self.cfg.account_id, &id).to_string();
        let rec = KeyRec {
            arn,
            name,
            pem: pem.to_string(),
            fingerprint,
            key,
            tags,
        };
        let view = Self::key_view(&rec);
        self.keys.push(rec);
        Ok(view)
    }

    fn key_view(k: &KeyRec) -> PublicKey {
        PublicKey {
            arn: Some(k.arn.clone()),
            name: Some(k.name.clone()),
            public_key_material: Some(k.pem.clone()),
            fingerprint: Some(k.fingerprint.clone()),
            tags: Some(k.tags.clone()),
        }
    }

    fn key_index(&self, arn: &str) -> Result<usize, IvsError> {
        let parsed = Arn::parse(arn).map_err(|e| validation(e.to_string()))?;
        if parsed.resource_type != ResourceType::PublicKey {
            return Err(validation(format!("not a public-key ARN: {arn}")));
        }
        self.keys
            .iter()
            .position(|k| k.arn == arn)
            .ok_or_else(|| not_found("PublicKey", arn))
    }

    /// GetPublicKey.
    pub fn get_public_key(&self, arn: &str) -> Result<PublicKey, IvsError> {
        Ok(Self::key_view(&self.keys[self.key_index(arn)?]))
    }

    /// DeletePublicKey.
    pub fn delete_public_key(&mut self, arn: &str) -> Result<(), IvsError> {
        let i = self.key_index(arn)?;
        self.keys.remove(i);
        Ok(())
    }

    /// ListPublicKeys.
    pub fn list_public_keys(
        &self,
        next_token: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<PublicKeySummary>, Option<String>), IvsError> {
        let page = ivs::page_size(max_results, 50, 100).map_err(validation)? as usize;
        let all: Vec<PublicKeySummary> = self
            .keys
            .iter()
            .map(|k| PublicKeySummary {
                arn: Some(k.arn.clone()),
                name: Some(k.name.clone()),
                tags: Some(k.tags.clone()),
            })
            .collect();
        paginate(&all, next_token, page)
    }

    /// The imported key whose ARN is `kid`.
    pub fn imported_key(&self, kid: &str) -> Option<VerifyingKey> {
        self.keys.iter().find(|k| k.arn == kid).map(|k| k.key)
    }

    // ---- tags -------------------------------------------------------------------------------

    fn tags_mut(&mut self, arn: &str) -> Result<&mut Tags, IvsError> {
        let parsed = Arn::parse(arn).map_err(|e| validation(e.to_string()))?;
        match parsed.resource_type {
            ResourceType::Stage => {
                let id = self.stage_id_of(arn)?;
                Ok(&mut self.stages.get_mut(&id).expect("checked").tags)
            }
            ResourceType::PublicKey => {
                let i = self.key_index(arn)?;
                Ok(&mut self.keys[i].tags)
            }
        }
    }

    /// TagResource.
    pub fn tag_resource(&mut self, arn: &str, tags: Tags) -> Result<(), IvsError> {
        ivs::validate_tags(&tags).map_err(validation)?;
        let current = self.tags_mut(arn)?;
        let mut merged = current.clone();
        merged.extend(tags);
        ivs::validate_tags(&merged).map_err(validation)?;
        *current = merged;
        Ok(())
    }

    /// UntagResource.
    pub fn untag_resource(&mut self, arn: &str, keys: &[String]) -> Result<(), IvsError> {
        if keys.is_empty() || keys.len() > ivs::MAX_TAGS {
            return Err(validation("tagKeys must have 1 to 50 members"));
        }
        let current = self.tags_mut(arn)?;
        for k in keys {
            current.remove(k);
        }
        Ok(())
    }

    /// ListTagsForResource.
    pub fn list_tags(&mut self, arn: &str) -> Result<Tags, IvsError> {
        Ok(self.tags_mut(arn)?.clone())
    }

    // ---- participants -----------------------------------------------------------------------

    /// Admits a verified token to a stage's media (before the media plane answers): checks
    /// revocation and the caps, ends the participant's older connection if it has one (one
    /// connection per participant id, the newest wins, as IVS does), opens a session if none
    /// is active, and records the participant as CONNECTED with a JOINED event.
    pub fn admit(
        &mut self,
        claims: &Claims,
        role: Role,
        now: i64,
        random_session: &[u8; 13],
    ) -> Result<Admitted, AdmitError> {
        let stage_id = claims.topic.clone();
        let Some(stage) = self.stages.get(&stage_id) else {
            return Err(AdmitError::StageNotFound);
        };
        if stage.arn != claims.resource {
            return Err(AdmitError::StageNotFound);
        }
        if self
            .revoked
            .contains(&(stage_id.clone(), claims.jti.clone()))
        {
            return Err(AdmitError::Revoked);
        }
        let older = self.connections.get(&claims.jti).cloned();
        let cap = match role {
            Role::Publisher => self.cfg.publisher_cap,
            Role::Subscriber => self.cfg.subscriber_cap,
        };
        // The older connection's seat is the new one's when it has the same role here.
        let reused_seat = older
            .as_ref()
            .is_some_and(|c| c.stage_id == stage_id && c.role == role);
        let now_connected = stage
            .session
            .as_ref()
            .map_or(0, |s| s.connected(role))
            .saturating_sub(usize::from(reused_seat));
        if now_connected >= cap {
            if let Some(session) = self
                .stages
                .get_mut(&stage_id)
                .and_then(|s| s.session.as_mut())
            {
                if let Some(p) = session.find_mut(&claims.jti) {
                    let mut e = event(EventName::JoinError, &claims.jti, now);
                    e.error_code = Some("QUOTA_EXCEEDED".into());
                    push_event(p, e);
                }
            }
            return Err(AdmitError::AtCapacity { role, cap });
        }
        if let Some(old) = &older {
            // Same stage: the session goes on with the new connection.
            self.leave(&old.stage_id, &claims.jti, now, old.stage_id != stage_id);
            self.record_end(old.id, EndReason::TokenReused);
        }
        let stage = self.stages.get_mut(&stage_id).expect("checked");
        let session = stage.session.get_or_insert_with(|| SessionRec {
            id: ivs::session_id(random_session),
            participants: Vec::new(),
        });
        let mut rec = ParticipantRec {
            id: claims.jti.clone(),
            user_id: claims.user_id.clone(),
            attributes: claims.attributes.clone(),
            role,
            state: ParticipantState::Connected,
            media: true,
            first_join_time: now,
            published: false,
            events: Vec::new(),
            replication_type: ReplicationType::None,
            replication_state: None,
            source_stage_arn: None,
            source_session_id: None,
        };
        // A token that connects again (after leaving) is the same participant: keep its
        // first join time and history. One that joined by its events socket already has its
        // JOINED event.
        let mut joined = false;
        if let Some(old) = session.participants.iter().position(|p| p.id == claims.jti) {
            let old = session.participants.remove(old);
            joined = old.state == ParticipantState::Connected && !old.media;
            rec.first_join_time = old.first_join_time;
            rec.events = old.events;
            rec.published = old.published;
        }
        if !joined {
            push_event(&mut rec, event(EventName::Joined, &claims.jti, now));
        }
        session.participants.push(rec);
        let session_id = session.id.clone();
        let stage_arn = stage.arn.clone();
        let connection = self.next_connection;
        self.next_connection += 1;
        self.connections.insert(
            claims.jti.clone(),
            Connection {
                stage_id,
                role,
                id: connection,
                connected: false,
            },
        );
        if role == Role::Publisher {
            self.source_came_back(&stage_arn, &claims.jti, &session_id, now, random_session);
        }
        Ok(Admitted {
            session_id,
            connection,
            replaced: older.map(|c| c.id),
        })
    }

    /// The media plane refused the offer after [`admit`](Self::admit): the join failed.
    pub fn join_failed(&mut self, stage_id: &str, pid: &str, connection: u64, now: i64) {
        if self.connections.get(pid).is_none_or(|c| c.id != connection) {
            return;
        }
        self.connections.remove(pid);
        self.record_end(connection, EndReason::JoinFailed);
        if let Some(session) = self
            .stages
            .get_mut(stage_id)
            .and_then(|s| s.session.as_mut())
        {
            if let Some(p) = session.find_mut(pid) {
                let mut e = event(EventName::JoinError, pid, now);
                e.error_code = Some("INVALID_INPUT".into());
                push_event(p, e);
                p.state = ParticipantState::Disconnected;
                push_event(p, event(EventName::Left, pid, now));
            }
        }
        self.maybe_end_session(stage_id);
    }

    /// The active connection of a participant id.
    pub fn connection(&self, pid: &str) -> Option<&Connection> {
        self.connections.get(pid)
    }

    /// The events socket of a verified token opened: the participant joins the stage (its
    /// session opens if none is active) without a media session yet, unless it is already
    /// connected. It counts against no cap until it publishes or subscribes (IVS refuses at
    /// capacity on WHIP, not on the socket).
    pub fn socket_joined(&mut self, claims: &Claims, now: i64, random_session: &[u8; 13]) {
        let Some(stage) = self.stages.get_mut(&claims.topic) else {
            return;
        };
        if stage.arn != claims.resource {
            return;
        }
        let session = stage.session.get_or_insert_with(|| SessionRec {
            id: ivs::session_id(random_session),
            participants: Vec::new(),
        });
        let mut rec = ParticipantRec {
            id: claims.jti.clone(),
            user_id: claims.user_id.clone(),
            attributes: claims.attributes.clone(),
            role: if claims.capabilities.allow_publish {
                Role::Publisher
            } else {
                Role::Subscriber
            },
            state: ParticipantState::Connected,
            media: false,
            first_join_time: now,
            published: false,
            events: Vec::new(),
            replication_type: ReplicationType::None,
            replication_state: None,
            source_stage_arn: None,
            source_session_id: None,
        };
        if let Some(i) = session.participants.iter().position(|p| p.id == claims.jti) {
            if session.participants[i].state == ParticipantState::Connected {
                return;
            }
            let old = session.participants.remove(i);
            rec.first_join_time = old.first_join_time;
            rec.events = old.events;
        }
        push_event(&mut rec, event(EventName::Joined, &claims.jti, now));
        session.participants.push(rec);
    }

    /// The events socket of `pid` closed and it has no media session (the caller ended that
    /// first): if it was joined by its socket only, it leaves. Returns whether it did.
    pub fn socket_left(&mut self, stage_id: &str, pid: &str, now: i64) -> bool {
        let left = match self.participant_mut(stage_id, pid) {
            Some(p) if p.state == ParticipantState::Connected && !p.media => {
                p.state = ParticipantState::Disconnected;
                push_event(p, event(EventName::Left, pid, now));
                true
            }
            _ => false,
        };
        if left {
            self.maybe_end_session(stage_id);
        }
        left
    }

    /// Whether DisconnectParticipant revoked `pid` on `stage_id`.
    pub fn is_revoked(&self, stage_id: &str, pid: &str) -> bool {
        self.revoked
            .contains(&(stage_id.to_string(), pid.to_string()))
    }

    /// Whether stage `stage_id` exists with ARN `arn`.
    pub fn stage_exists(&self, stage_id: &str, arn: &str) -> bool {
        self.stages.get(stage_id).is_some_and(|s| s.arn == arn)
    }

    /// The connected publishers of a stage's active session (its own and replicas), in join
    /// order: what the events WebSocket's STAGE_STATE lists.
    pub fn stage_publishers(&self, stage_id: &str) -> Vec<StagePublisher> {
        let Some(session) = self.stages.get(stage_id).and_then(|s| s.session.as_ref()) else {
            return Vec::new();
        };
        session
            .participants
            .iter()
            .filter(|p| p.state == ParticipantState::Connected && p.role == Role::Publisher)
            .map(|p| StagePublisher {
                id: p.id.clone(),
                user_id: p.user_id.clone(),
                attributes: p.attributes.clone().unwrap_or_default(),
                published: p.published,
            })
            .collect()
    }

    /// Media event: ICE/DTLS up. A subscriber starts receiving the stage's first publisher.
    pub fn on_connected(&mut self, stage_id: &str, pid: &str, connection: u64, now: i64) {
        match self.connections.get_mut(pid) {
            Some(c) if c.id == connection => c.connected = true,
            // A replaced connection's late event.
            _ => return,
        }
        let Some(session) = self
            .stages
            .get_mut(stage_id)
            .and_then(|s| s.session.as_mut())
        else {
            return;
        };
        let host = session
            .participants
            .iter()
            .find(|p| p.role == Role::Publisher && p.state == ParticipantState::Connected)
            .map(|p| p.id.clone());
        if let Some(p) = session.find_mut(pid) {
            if p.role == Role::Subscriber && p.state == ParticipantState::Connected {
                let mut e = event(EventName::SubscribeStarted, pid, now);
                e.remote_participant_id = host;
                push_event(p, e);
            }
        }
    }

    /// Media event: the first media from a publisher.
    pub fn on_published(&mut self, stage_id: &str, pid: &str, connection: u64, now: i64) {
        if self.connections.get(pid).is_none_or(|c| c.id != connection) {
            return;
        }
        let Some(stage) = self.stages.get_mut(stage_id) else {
            return;
        };
        let stage_arn = stage.arn.clone();
        if let Some(p) = stage.session.as_mut().and_then(|s| s.find_mut(pid)) {
            if p.state == ParticipantState::Connected {
                p.published = true;
                push_event(p, event(EventName::PublishStarted, pid, now));
            }
        }
        // Replicas of this participant publish too.
        let dests: Vec<String> = self
            .replications
            .iter()
            .filter(|r| {
                r.state == ReplicationState::Active
                    && r.source_stage_arn == stage_arn
                    && r.participant_id == pid
            })
            .map(|r| r.destination_stage_arn.clone())
            .collect();
        for d in dests {
            if let Some(id) = ivs::stage_id_from_arn(&d).map(str::to_string) {
                if let Some(p) = self.participant_mut(&id, pid) {
                    p.published = true;
                    push_event(p, event(EventName::PublishStarted, pid, now));
                }
            }
        }
    }

    /// Media event: the media plane ended a session (peer gone, ICE timeout, or after one of
    /// the closes below, which the registry already recorded: then it is not the current
    /// connection any more and nothing happens).
    pub fn media_disconnected(&mut self, stage_id: &str, pid: &str, connection: u64, now: i64) {
        if self
            .connections
            .get(pid)
            .is_some_and(|c| c.id == connection && c.stage_id == stage_id)
        {
            self.on_disconnected(stage_id, pid, now);
            self.record_end(connection, EndReason::Left);
        }
    }

    /// The registry ends a participant's connection on `stage_id` now (and only connection
    /// `only` when given), for `reason`; the caller tells the media plane to close it. Returns
    /// the ended connection's id, or None if there was no such connection.
    pub fn end_connection(
        &mut self,
        stage_id: &str,
        pid: &str,
        only: Option<u64>,
        reason: EndReason,
        now: i64,
    ) -> Option<u64> {
        let c = self.connections.get(pid)?;
        if c.stage_id != stage_id || only.is_some_and(|id| id != c.id) {
            return None;
        }
        let id = c.id;
        self.on_disconnected(stage_id, pid, now);
        self.record_end(id, reason);
        Some(id)
    }

    /// The ICE setup deadline of connection `connection` passed: if it is still current and
    /// never connected, it ends (its seat is free). Returns whether it did.
    pub fn expire_setup(&mut self, pid: &str, connection: u64, now: i64) -> bool {
        let Some(c) = self.connections.get(pid) else {
            return false;
        };
        if c.id != connection || c.connected {
            return false;
        }
        let stage_id = c.stage_id.clone();
        self.end_connection(
            &stage_id,
            pid,
            Some(connection),
            EndReason::IceSetupTimeout,
            now,
        )
        .is_some()
    }

    fn on_disconnected(&mut self, stage_id: &str, pid: &str, now: i64) {
        self.leave(stage_id, pid, now, true);
    }

    /// The participant's connection ends: it leaves (and its replicas with it). Its stage's
    /// session ends with its last participant, unless `end_session` is false (a newer
    /// connection of the same participant is joining it at once).
    fn leave(&mut self, stage_id: &str, pid: &str, now: i64, end_session: bool) {
        let Some(conn) = self.connections.get(pid) else {
            return;
        };
        if conn.stage_id != stage_id {
            return;
        }
        self.connections.remove(pid);
        let stage_arn = match self.stages.get_mut(stage_id) {
            Some(stage) => {
                if let Some(p) = stage.session.as_mut().and_then(|s| s.find_mut(pid)) {
                    if p.state == ParticipantState::Connected {
                        Self::mark_left(p, now);
                    }
                }
                stage.arn.clone()
            }
            None => return,
        };
        // Its replicas leave their stages with it. A replication without a reconnect window
        // ends now; one with a window waits for the source (see `expire_replications`).
        let reps: Vec<(String, i64)> = self
            .replications
            .iter()
            .filter(|r| {
                r.state == ReplicationState::Active
                    && r.source_stage_arn == stage_arn
                    && r.participant_id == pid
                    && r.source_left_at.is_none()
            })
            .map(|r| (r.destination_stage_arn.clone(), r.reconnect_window_seconds))
            .collect();
        for (dst, window) in reps {
            if window == 0 {
                self.stop_replication_inner(&stage_arn, &dst, pid, now);
                continue;
            }
            if let Some(r) = self.replications.iter_mut().find(|r| {
                r.state == ReplicationState::Active
                    && r.source_stage_arn == stage_arn
                    && r.destination_stage_arn == dst
                    && r.participant_id == pid
            }) {
                r.source_left_at = Some(now);
            }
            if let Some(id) = ivs::stage_id_from_arn(&dst).map(str::to_string) {
                if let Some(p) = self.participant_mut(&id, pid) {
                    if p.state == ParticipantState::Connected {
                        Self::mark_left(p, now);
                    }
                }
                self.maybe_end_session(&id);
            }
        }
        if end_session {
            self.maybe_end_session(stage_id);
        }
    }

    /// DisconnectParticipant: revokes the participant's token on this stage and returns its
    /// media connection to close, if it had one.
    pub fn disconnect_participant(
        &mut self,
        stage_arn: &str,
        pid: &str,
        now: i64,
    ) -> Result<Option<u64>, IvsError> {
        let stage_id = self.stage_id_of(stage_arn)?;
        let connected = self.stages[&stage_id]
            .session
            .as_ref()
            .and_then(|s| s.find(pid))
            .is_some_and(|p| p.state == ParticipantState::Connected);
        if !connected {
            return Err(IvsError::new(
                ErrorKind::ResourceNotFound,
                format!("Participant not found: {pid}"),
            ));
        }
        self.revoked.insert((stage_id.clone(), pid.to_string()));
        let had_media = self.end_connection(
            &stage_id,
            pid,
            None,
            EndReason::ParticipantDisconnected,
            now,
        );
        // Joined by its events socket only, it just leaves; a replica's replication stops.
        if had_media.is_none() && !self.socket_left(&stage_id, pid, now) {
            let src = self.stages[&stage_id]
                .session
                .as_ref()
                .and_then(|s| s.find(pid))
                .and_then(|p| p.source_stage_arn.clone());
            if let Some(src) = src {
                let arn = self.stages[&stage_id].arn.clone();
                self.stop_replication_inner(&src, &arn, pid, now);
            }
        }
        Ok(had_media)
    }

    fn summary(p: &ParticipantRec) -> ParticipantSummary {
        ParticipantSummary {
            participant_id: Some(p.id.clone()),
            user_id: p.user_id.clone(),
            state: Some(p.state),
            first_join_time: Some(iso(p.first_join_time)),
            published: Some(p.published),
            recording_state: Some("DISABLED".into()),
            replication_type: Some(p.replication_type),
            replication_state: p.replication_state,
            source_stage_arn: p.source_stage_arn.clone(),
            source_session_id: p.source_session_id.clone(),
        }
    }

    /// ListParticipants (an unknown stage or session lists nothing, as the model has no
    /// not-found error for it).
    #[allow(clippy::too_many_arguments)]
    pub fn list_participants(
        &self,
        stage_arn: &str,
        session_id: &str,
        user_id: Option<&str>,
        published: Option<bool>,
        state: Option<ParticipantState>,
        next_token: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<ParticipantSummary>, Option<String>), IvsError> {
        Arn::parse(stage_arn).map_err(|e| validation(e.to_string()))?;
        let filters = [user_id.is_some(), published.is_some(), state.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if filters > 1 {
            return Err(validation(
                "Only one of filterByUserId, filterByPublished, filterByState can be provided",
            ));
        }
        let page = ivs::page_size(max_results, 50, 100).map_err(validation)? as usize;
        let all: Vec<ParticipantSummary> = self
            .stage(stage_arn)
            .ok()
            .and_then(|s| Self::session_of(s, session_id))
            .map(|session| {
                session
                    .participants
                    .iter()
                    .filter(|p| user_id.is_none_or(|u| p.user_id.as_deref() == Some(u)))
                    .filter(|p| published.is_none_or(|b| p.published == b))
                    .filter(|p| state.is_none_or(|st| p.state == st))
                    .map(Self::summary)
                    .collect()
            })
            .unwrap_or_default();
        paginate(&all, next_token, page)
    }

    /// GetParticipant.
    pub fn get_participant(
        &self,
        stage_arn: &str,
        session_id: &str,
        pid: &str,
    ) -> Result<Participant, IvsError> {
        let stage = self.stage(stage_arn)?;
        let session =
            Self::session_of(stage, session_id).ok_or_else(|| not_found("Session", session_id))?;
        let p = session
            .find(pid)
            .ok_or_else(|| not_found("Participant", pid))?;
        Ok(Participant {
            participant_id: Some(p.id.clone()),
            user_id: p.user_id.clone(),
            state: Some(p.state),
            first_join_time: Some(iso(p.first_join_time)),
            attributes: Some(p.attributes.clone().unwrap_or_default()),
            published: Some(p.published),
            sdk_version: Some("ivs-local".into()),
            recording_state: Some("DISABLED".into()),
            protocol: Some(ParticipantProtocol::Whip),
            replication_type: Some(p.replication_type),
            replication_state: p.replication_state,
            source_stage_arn: p.source_stage_arn.clone(),
            source_session_id: p.source_session_id.clone(),
            ..Participant::default()
        })
    }

    /// ListParticipantEvents.
    pub fn list_participant_events(
        &self,
        stage_arn: &str,
        session_id: &str,
        pid: &str,
        next_token: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<Event>, Option<String>), IvsError> {
        Arn::parse(stage_arn).map_err(|e| validation(e.to_string()))?;
        let page = ivs::page_size(max_results, 50, 100).map_err(validation)? as usize;
        let all = self
            .stage(stage_arn)
            .ok()
            .and_then(|s| Self::session_of(s, session_id))
            .and_then(|s| s.find(pid))
            .map(|p| p.events.clone())
            .unwrap_or_default();
        paginate(&all, next_token, page)
    }

    // ---- replication ------------------------------------------------------------------------

    /// StartParticipantReplication: the participant (a connected publisher of the source)
    /// appears in the destination as a REPLICA publisher (and is SOURCE in its own stage).
    #[allow(clippy::too_many_arguments)]
    pub fn start_replication(
        &mut self,
        source_arn: &str,
        dest_arn: &str,
        pid: &str,
        reconnect_window_seconds: u32,
        attributes: Option<Attributes>,
        now: i64,
        random_session: &[u8; 13],
    ) -> Result<(), IvsError> {
        self.expire_replications(now);
        if let Some(a) = &attributes {
            if ivs::attributes_size(a) > ivs::MAX_ATTRIBUTES_BYTES {
                return Err(validation("attributes must be at most 1 KB in total"));
            }
        }
        let src_id = self.stage_id_of(source_arn)?;
        let dst_id = self.stage_id_of(dest_arn)?;
        if src_id == dst_id {
            return Err(validation(
                "sourceStageArn and destinationStageArn must differ",
            ));
        }
        let (source_session_id, source_p) = {
            let s = &self.stages[&src_id];
            let session = s.session.as_ref();
            let p = session
                .and_then(|x| x.find(pid))
                .filter(|p| p.state == ParticipantState::Connected && p.role == Role::Publisher)
                .ok_or_else(|| not_found("Publishing participant in the source stage", pid))?;
            (session.expect("found in it").id.clone(), p.clone())
        };
        if source_p.replication_type == ReplicationType::Replica {
            return Err(validation("A replica cannot be replicated"));
        }
        let active =
            |r: &&ReplicationRec| r.state == ReplicationState::Active && r.participant_id == pid;
        if self
            .replications
            .iter()
            .filter(active)
            .any(|r| r.source_stage_arn == source_arn && r.destination_stage_arn == dest_arn)
        {
            return Err(IvsError::new(
                ErrorKind::Conflict,
                "This participant is already replicated to the destination stage",
            ));
        }
        if self.replications.iter().filter(active).count() >= MAX_REPLICATIONS_PER_PARTICIPANT {
            return Err(IvsError::new(
                ErrorKind::ServiceQuotaExceeded,
                "A participant can be replicated to at most 5 stages",
            ));
        }
        let cap = self.cfg.publisher_cap;
        if self.stages[&dst_id]
            .session
            .as_ref()
            .map_or(0, |s| s.connected(Role::Publisher))
            >= cap
        {
            return Err(IvsError::new(
                ErrorKind::ServiceQuotaExceeded,
                format!("The destination stage already has {cap} publishers"),
            ));
        }
        let mut merged = source_p.attributes.clone().unwrap_or_default();
        merged.extend(attributes.unwrap_or_default());
        self.replications.push(ReplicationRec {
            source_stage_arn: source_arn.to_string(),
            source_session_id,
            destination_stage_arn: dest_arn.to_string(),
            destination_session_id: String::new(),
            participant_id: pid.to_string(),
            state: ReplicationState::Active,
            reconnect_window_seconds: i64::from(reconnect_window_seconds),
            source_left_at: None,
            attributes: merged,
        });
        let index = self.replications.len() - 1;
        self.enter_replica(index, &source_p, now, random_session);
        self.media_actions.push(MediaAction::Replicate {
            participant_id: pid.to_string(),
            source_stage: src_id,
            dest_stage: dst_id,
        });
        Ok(())
    }

    /// Puts the replica of replication `index` into its destination stage as a connected
    /// REPLICA publisher (opening a session there if none is active), with the source's
    /// `published` flag, and records REPLICATION_STARTED on both sides.
    fn enter_replica(
        &mut self,
        index: usize,
        source_p: &ParticipantRec,
        now: i64,
        random_session: &[u8; 13],
    ) {
        let rep = self.replications[index].clone();
        let pid = rep.participant_id.as_str();
        let Some(dst_id) = ivs::stage_id_from_arn(&rep.destination_stage_arn).map(str::to_string)
        else {
            return;
        };
        let Some(dst) = self.stages.get_mut(&dst_id) else {
            return;
        };
        let session = dst.session.get_or_insert_with(|| SessionRec {
            id: ivs::session_id(random_session),
            participants: Vec::new(),
        });
        let destination_session_id = session.id.clone();
        let mut replica = ParticipantRec {
            id: pid.to_string(),
            user_id: source_p.user_id.clone(),
            attributes: Some(rep.attributes.clone()),
            role: Role::Publisher,
            state: ParticipantState::Connected,
            media: true,
            first_join_time: now,
            published: source_p.published,
            events: Vec::new(),
            replication_type: ReplicationType::Replica,
            replication_state: Some(ReplicationState::Active),
            source_stage_arn: Some(rep.source_stage_arn.clone()),
            source_session_id: Some(rep.source_session_id.clone()),
        };
        // The same participant in the same session again (a source that came back): one row,
        // its history kept.
        if let Some(old) = session.participants.iter().position(|p| p.id == pid) {
            let old = session.participants.remove(old);
            replica.first_join_time = old.first_join_time;
            replica.events = old.events;
        }
        push_event(&mut replica, event(EventName::Joined, pid, now));
        let mut started = event(EventName::ReplicationStarted, pid, now);
        started.destination_stage_arn = Some(rep.destination_stage_arn.clone());
        started.destination_session_id = Some(destination_session_id.clone());
        started.replica = Some(true);
        push_event(&mut replica, started.clone());
        if replica.published {
            push_event(&mut replica, event(EventName::PublishStarted, pid, now));
        }
        session.participants.push(replica);
        self.replications[index].destination_session_id = destination_session_id;
        if let Some(p) = ivs::stage_id_from_arn(&rep.source_stage_arn)
            .and_then(|id| self.participant_mut(id, pid))
        {
            p.replication_type = ReplicationType::Source;
            p.replication_state = Some(ReplicationState::Active);
            started.replica = Some(false);
            push_event(p, started);
        }
    }

    /// A publisher connected to `stage_arn` as `pid`: replications waiting for it (it left
    /// within their reconnect window) resume, and it appears again in their destinations.
    fn source_came_back(
        &mut self,
        stage_arn: &str,
        pid: &str,
        session_id: &str,
        now: i64,
        random_session: &[u8; 13],
    ) {
        self.expire_replications(now);
        let waiting: Vec<usize> = (0..self.replications.len())
            .filter(|&i| {
                let r = &self.replications[i];
                r.state == ReplicationState::Active
                    && r.source_stage_arn == stage_arn
                    && r.participant_id == pid
                    && r.source_left_at.is_some()
            })
            .collect();
        if waiting.is_empty() {
            return;
        }
        let Some(source_p) = ivs::stage_id_from_arn(stage_arn)
            .and_then(|id| self.stages.get(id))
            .and_then(|s| s.session.as_ref())
            .and_then(|s| s.find(pid))
            .cloned()
        else {
            return;
        };
        for i in waiting {
            let r = &mut self.replications[i];
            r.source_left_at = None;
            r.source_session_id = session_id.to_string();
            // It publishes again once its media flows (PUBLISH_STARTED in both stages).
            let mut fresh = source_p.clone();
            fresh.published = false;
            self.enter_replica(i, &fresh, now, random_session);
        }
    }

    /// Ends the replications whose source left more than their reconnect window ago. Called
    /// by the operations that read or change replications, and by ivs-local's clock tick.
    pub fn expire_replications(&mut self, now: i64) {
        self.stop_active_replications(
            |r| {
                r.source_left_at
                    .is_some_and(|t| now >= t + r.reconnect_window_seconds)
            },
            now,
        );
    }

    /// Stops every active replication that `which` selects.
    fn stop_active_replications(&mut self, which: impl Fn(&ReplicationRec) -> bool, now: i64) {
        let selected: Vec<(String, String, String)> = self
            .replications
            .iter()
            .filter(|r| r.state == ReplicationState::Active && which(r))
            .map(|r| {
                (
                    r.source_stage_arn.clone(),
                    r.destination_stage_arn.clone(),
                    r.participant_id.clone(),
                )
            })
            .collect();
        for (src, dst, pid) in selected {
            self.stop_replication_inner(&src, &dst, &pid, now);
        }
    }

    fn stop_replication_inner(&mut self, src: &str, dst: &str, pid: &str, now: i64) -> bool {
        let Some(rep) = self.replications.iter_mut().find(|r| {
            r.state == ReplicationState::Active
                && r.source_stage_arn == src
                && r.destination_stage_arn == dst
                && r.participant_id == pid
        }) else {
            return false;
        };
        rep.state = ReplicationState::Stopped;
        rep.source_left_at = None;
        let dest_session = rep.destination_session_id.clone();
        if let Some(dst_id) = ivs::stage_id_from_arn(dst) {
            self.media_actions.push(MediaAction::StopReplication {
                participant_id: pid.to_string(),
                dest_stage: dst_id.to_string(),
            });
        }
        let mut stopped = event(EventName::ReplicationStopped, pid, now);
        stopped.destination_stage_arn = Some(dst.to_string());
        stopped.destination_session_id = Some(dest_session);
        if let Some(id) = ivs::stage_id_from_arn(dst).map(str::to_string) {
            if let Some(p) = self.participant_mut(&id, pid) {
                if p.state == ParticipantState::Connected {
                    p.replication_state = Some(ReplicationState::Stopped);
                    let mut e = stopped.clone();
                    e.replica = Some(true);
                    push_event(p, e);
                    Self::mark_left(p, now);
                }
            }
            self.maybe_end_session(&id);
        }
        let still_active = self.replications.iter().any(|r| {
            r.state == ReplicationState::Active
                && r.source_stage_arn == src
                && r.participant_id == pid
        });
        if let Some(id) = ivs::stage_id_from_arn(src).map(str::to_string) {
            if let Some(p) = self.participant_mut(&id, pid) {
                stopped.replica = Some(false);
                push_event(p, stopped);
                if !still_active {
                    p.replication_state = Some(ReplicationState::Stopped);
                }
            }
        }
        true
    }

    /// StopParticipantReplication.
    pub fn stop_replication(
        &mut self,
        source_arn: &str,
        dest_arn: &str,
        pid: &str,
        now: i64,
    ) -> Result<(), IvsError> {
        self.expire_replications(now);
        self.stage_id_of(source_arn)?;
        self.stage_id_of(dest_arn)?;
        if self.stop_replication_inner(source_arn, dest_arn, pid, now) {
            Ok(())
        } else {
            Err(not_found("Active replication of participant", pid))
        }
    }

    /// ListParticipantReplicas.
    pub fn list_replicas(
        &self,
        source_arn: &str,
        pid: &str,
        next_token: Option<&str>,
        max_results: Option<u32>,
    ) -> Result<(Vec<ParticipantReplica>, Option<String>), IvsError> {
        Arn::parse(source_arn).map_err(|e| validation(e.to_string()))?;
        let page = ivs::page_size(max_results, 50, 50).map_err(validation)? as usize;
        let all: Vec<ParticipantReplica> = self
            .replications
            .iter()
            .filter(|r| r.source_stage_arn == source_arn && r.participant_id == pid)
            .map(|r| ParticipantReplica {
                source_stage_arn: r.source_stage_arn.clone(),
                participant_id: r.participant_id.clone(),
                source_session_id: r.source_session_id.clone(),
                destination_stage_arn: r.destination_stage_arn.clone(),
                destination_session_id: r.destination_session_id.clone(),
                replication_state: match r.state {
                    ReplicationState::Active => "ACTIVE".into(),
                    ReplicationState::Stopped => "STOPPED".into(),
                },
            })
            .collect();
        paginate(&all, next_token, page)
    }

    /// Counts for `/_local/stats`.
    pub fn counts(&self) -> serde_json::Value {
        let sessions = self.stages.values().filter(|s| s.session.is_some()).count();
        let (mut publishers, mut subscribers) = (0, 0);
        for s in self.stages.values().filter_map(|s| s.session.as_ref()) {
            publishers += s.connected(Role::Publisher);
            subscribers += s.connected(Role::Subscriber);
        }
        serde_json::json!({
            "stages": self.stages.len(),
            "activeSessions": sessions,
            "publicKeys": self.keys.len(),
            "connectedPublishers": publishers,
            "connectedSubscribers": subscribers,
            "mediaConnections": self.connections.len(),
            "activeReplications": self.replications.iter().filter(|r| r.state == ReplicationState::Active).count(),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(RegionConfig {
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            whip_url: "http://127.0.0.1:1/whip".into(),
            events_url: "ws://127.0.0.1:1/events".into(),
            stage_quota: 3,
            publisher_cap: 2,
            subscriber_cap: 1,
        })
    }

    fn claims(stage: &Stage, jti: &str) -> Claims {
        Claims {
            exp: 10_000,
            iat: 0,
            jti: jti.into(),
            user_id: Some(format!("u-{jti}")),
            resource: stage.arn.clone(),
            topic: ivs::stage_id_from_arn(&stage.arn).unwrap().into(),
            events_url: "e".into(),
            whip_url: "w".into(),
            capabilities: token::Capabilities {
                allow_publish: true,
                allow_subscribe: true,
            },
            attributes: None,
            version: "1.0".into(),
        }
    }

    #[test]
    fn sessions_open_with_the_first_participant_and_close_with_the_last() {
        let mut s = store();
        let stage = s
            .create_stage(Some("a".into()), None, None, &[1; 12])
            .unwrap();
        assert_eq!(stage.active_session_id, None);
        let first = s
            .admit(&claims(&stage, "host"), Role::Publisher, 100, &[2; 13])
            .unwrap();
        let sid = first.session_id.clone();
        assert_eq!(sid.len(), 16);
        assert_eq!(
            s.get_stage(&stage.arn).unwrap().active_session_id,
            Some(sid.clone())
        );
        let stage_id = ivs::stage_id_from_arn(&stage.arn).unwrap().to_string();
        // One participant, one connection: the newest replaces the older (TOKEN_REUSED).
        let host = s
            .admit(&claims(&stage, "host"), Role::Publisher, 101, &[3; 13])
            .unwrap();
        assert_eq!(host.replaced, Some(first.connection));
        assert_eq!(
            s.connection_status("host", first.connection),
            Err(Some(EndReason::TokenReused))
        );
        // The replaced connection's late media events change nothing.
        s.media_disconnected(&stage_id, "host", first.connection, 101);
        assert_eq!(s.connection_status("host", host.connection), Ok(()));
        let v1 = s
            .admit(&claims(&stage, "v1"), Role::Subscriber, 102, &[3; 13])
            .unwrap();
        assert_eq!(
            s.admit(&claims(&stage, "v2"), Role::Subscriber, 103, &[3; 13]),
            Err(AdmitError::AtCapacity {
                role: Role::Subscriber,
                cap: 1
            })
        );
        // At capacity, the seat's own participant may still reconnect into it.
        let again = s
            .admit(&claims(&stage, "v1"), Role::Subscriber, 103, &[3; 13])
            .unwrap();
        assert_eq!(again.replaced, Some(v1.connection));
        let v1 = again;
        s.on_published(&stage_id, "host", host.connection, 104);
        s.media_disconnected(&stage_id, "host", host.connection, 110);
        assert!(s.get_stage(&stage.arn).unwrap().active_session_id.is_some());
        assert_eq!(
            s.end_connection(&stage_id, "v1", None, EndReason::Left, 111),
            Some(v1.connection)
        );
        // Its late event is not taken for a newer connection.
        let v1b = s
            .admit(&claims(&stage, "v1"), Role::Subscriber, 112, &[4; 13])
            .unwrap();
        assert_eq!(v1b.replaced, None);
        s.media_disconnected(&stage_id, "v1", v1.connection, 113);
        assert_eq!(s.connection_status("v1", v1b.connection), Ok(()));
        // A setup deadline ends a connection that never connected, and only that one.
        assert!(!s.expire_setup("v1", v1.connection, 114));
        assert!(s.expire_setup("v1", v1b.connection, 115));
        assert_eq!(
            s.connection_status("v1", v1b.connection),
            Err(Some(EndReason::IceSetupTimeout))
        );
        assert_eq!(s.get_stage(&stage.arn).unwrap().active_session_id, None);
        let (list, _) = s
            .list_participants(&stage.arn, &sid, None, None, None, None, None)
            .unwrap();
        assert_eq!(list.len(), 2);
        assert!(list
            .iter()
            .all(|p| p.state == Some(ParticipantState::Disconnected)));
        let (events, _) = s
            .list_participant_events(&stage.arn, &sid, "host", None, None)
            .unwrap();
        let names: Vec<EventName> = events.iter().filter_map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                EventName::Joined,
                EventName::Left,
                EventName::Joined,
                EventName::PublishStarted,
                EventName::PublishStopped,
                EventName::Left
            ]
        );
    }

    #[test]
    fn quotas_of_stages_and_keys() {
        let mut s = store();
        for i in 0..3u8 {
            s.create_stage(None, None, None, &[i; 12]).unwrap();
        }
        let e = s.create_stage(None, None, None, &[9; 12]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ServiceQuotaExceeded);
        assert_eq!(e.status, 402);
    }

    #[test]
    fn pagination_walks_every_item_once() {
        let items: Vec<u32> = (0..7).collect();
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = paginate(&items, token.as_deref(), 3).unwrap();
            seen.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, items);
        assert!(paginate(&items, Some("garbage!"), 3).is_err());
    }
}
