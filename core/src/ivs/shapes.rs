//! The request and response shapes of the operations. They are AWS's model, named as it
//! names them (botocore's `ivs-realtime` `service-2.json` documents each member); only what
//! deviates from it, or what stagefan makes of a member, is documented here.

use serde::{Deserialize, Serialize};

use super::{Attributes, Tags};
use crate::sigv4::uri_encode;

/// A participant capability in `CreateParticipantToken` / `ParticipantToken`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParticipantTokenCapability {
    Publish,
    Subscribe,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantThumbnailConfiguration {
    /// 1–86400 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_interval_seconds: Option<u32>,
    /// `SEQUENTIAL` and/or `LATEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Vec<String>>,
    /// `INTERVAL` or `DISABLED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_mode: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantRecordingHlsConfiguration {
    /// 2–10 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_segment_duration_seconds: Option<u32>,
}

/// `AutoParticipantRecordingConfiguration` (stagefan does not record; carried for fidelity).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoParticipantRecordingConfiguration {
    /// Storage configuration ARN (required by the model; empty disables recording).
    pub storage_configuration_arn: String,
    /// `AUDIO_VIDEO`, `AUDIO_ONLY` or `NONE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_configuration: Option<ParticipantThumbnailConfiguration>,
    /// 0–300 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_reconnect_window_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls_configuration: Option<ParticipantRecordingHlsConfiguration>,
    /// Whether replicas are recorded (model default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_participant_replicas: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageEndpoints {
    /// Events (websocket) endpoint; goes into a token's `events_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    /// WHIP endpoint; goes into a token's `whip_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmps: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `st-` + 13 characters while a session is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_participant_recording_configuration: Option<AutoParticipantRecordingConfiguration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<StageEndpoints>,
}

/// `StageSummary` (an item of `ListStages`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageSummary {
    pub arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Active session id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// `ParticipantTokenConfiguration` (tokens requested with CreateStage).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantTokenConfiguration {
    /// Minutes, 1–20160; default 720.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    /// Up to 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// At most 1 KB in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
    /// Default `PUBLISH, SUBSCRIBE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<ParticipantTokenCapability>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantToken {
    /// The participant id (the token's `jti`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<ParticipantTokenCapability>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateStageRequest {
    /// `[a-zA-Z0-9-_]*`, up to 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Up to 12 tokens to create with the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_token_configurations: Option<Vec<ParticipantTokenConfiguration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_participant_recording_configuration: Option<AutoParticipantRecordingConfiguration>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateStageResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_tokens: Option<Vec<ParticipantToken>>,
}

/// `GetStageRequest`, and the same `{arn}` body of `DeleteStage`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetStageRequest {
    pub arn: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetStageResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
}

pub type DeleteStageRequest = GetStageRequest;

/// An empty response body `{}` (DeleteStage, DisconnectParticipant, DeletePublicKey,
/// TagResource, UntagResource, Start/StopParticipantReplication).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyResponse {}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListStagesRequest {
    /// From a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1–100, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListStagesResponse {
    #[serde(default)]
    pub stages: Vec<StageSummary>,
    /// Present when there are more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStageRequest {
    pub arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_participant_recording_configuration: Option<AutoParticipantRecordingConfiguration>,
}

pub type UpdateStageResponse = GetStageResponse;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateParticipantTokenRequest {
    pub stage_arn: String,
    /// Minutes, 1–20160; default 720.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    /// Up to 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// At most 1 KB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
    /// Default `PUBLISH, SUBSCRIBE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<ParticipantTokenCapability>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateParticipantTokenResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_token: Option<ParticipantToken>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParticipantState {
    Connected,
    Disconnected,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParticipantProtocol {
    Unknown,
    Whip,
    Rtmp,
    Rtmps,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicationType {
    Source,
    /// A replica of another stage's participant.
    Replica,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicationState {
    Active,
    Stopped,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantsRequest {
    pub stage_arn: String,
    /// Session id (from the stage's `activeSessionId`).
    pub session_id: String,
    /// Only this user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_by_user_id: Option<String>,
    /// Only (not) publishing participants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_by_published: Option<bool>,
    /// Only participants in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_by_state: Option<ParticipantState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_by_recording_state: Option<String>,
    /// From a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1–100, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ParticipantState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_join_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_type: Option<ReplicationType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<ReplicationState>,
    /// For replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_stage_arn: Option<String>,
    /// For replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_session_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantsResponse {
    #[serde(default)]
    pub participants: Vec<ParticipantSummary>,
    /// Present when there are more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetParticipantRequest {
    pub stage_arn: String,
    pub session_id: String,
    pub participant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ParticipantState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_join_time: Option<String>,
    /// The token's attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isp_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_s3_bucket_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_s3_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ParticipantProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_type: Option<ReplicationType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<ReplicationState>,
    /// For replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_stage_arn: Option<String>,
    /// For replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_session_id: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetParticipantResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<Participant>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantEventsRequest {
    pub stage_arn: String,
    pub session_id: String,
    pub participant_id: String,
    /// From a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1–100, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventName {
    Joined,
    Left,
    PublishStarted,
    PublishStopped,
    SubscribeStarted,
    SubscribeStopped,
    PublishError,
    SubscribeError,
    JoinError,
    ReplicationStarted,
    ReplicationStopped,
    /// The participant exchanged its token.
    TokenExchanged,
}

/// `Event` (an item of `ListParticipantEvents`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<EventName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// The publisher subscribed to, for subscribe events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_participant_id: Option<String>,
    /// For error events, e.g. `QUOTA_EXCEEDED`, `INSUFFICIENT_CAPABILITIES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// For replication events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_stage_arn: Option<String>,
    /// For replication events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_session_id: Option<String>,
    /// For replication events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantEventsResponse {
    #[serde(default)]
    pub events: Vec<Event>,
    /// Present when there are more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectParticipantRequest {
    pub stage_arn: String,
    pub participant_id: String,
    /// Up to 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportPublicKeyRequest {
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`) of a P-384 key.
    pub public_key_material: String,
    /// `[a-zA-Z0-9-_]*`, up to 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKey {
    /// Public key ARN (a token's `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_material: Option<String>,
    /// A short string identifying the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// `ImportPublicKeyResponse` / `GetPublicKeyResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
}

pub type ImportPublicKeyResponse = PublicKeyResponse;
pub type GetPublicKeyResponse = PublicKeyResponse;
/// `GetPublicKeyRequest` / `DeletePublicKeyRequest` (`{arn}`).
pub type GetPublicKeyRequest = GetStageRequest;
pub type DeletePublicKeyRequest = GetStageRequest;
/// `ListPublicKeysRequest` (`nextToken`, `maxResults`).
pub type ListPublicKeysRequest = ListStagesRequest;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeySummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPublicKeysResponse {
    #[serde(default)]
    pub public_keys: Vec<PublicKeySummary>,
    /// Present when there are more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `TagResourceRequest`'s body (the ARN is in the path).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagResourceBody {
    /// Tags to add or overwrite.
    pub tags: Tags,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTagsForResourceResponse {
    #[serde(default)]
    pub tags: Tags,
}

/// The query string of `UntagResource`: `tagKeys=a&tagKeys=b`, each key percent-encoded.
pub fn untag_query(tag_keys: &[&str]) -> String {
    tag_keys
        .iter()
        .map(|k| format!("tagKeys={}", uri_encode(k, true)))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartParticipantReplicationRequest {
    /// Where the participant publishes.
    pub source_stage_arn: String,
    /// Where it should appear too.
    pub destination_stage_arn: String,
    /// The publishing participant.
    pub participant_id: String,
    /// 0–300, default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_window_seconds: Option<u32>,
    /// Merged over the token's attributes in the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopParticipantReplicationRequest {
    pub source_stage_arn: String,
    pub destination_stage_arn: String,
    pub participant_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantReplicasRequest {
    pub source_stage_arn: String,
    pub participant_id: String,
    /// From a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1–50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantReplica {
    pub source_stage_arn: String,
    pub participant_id: String,
    pub source_session_id: String,
    pub destination_stage_arn: String,
    pub destination_session_id: String,
    /// `ACTIVE` or `STOPPED`.
    pub replication_state: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantReplicasResponse {
    #[serde(default)]
    pub replicas: Vec<ParticipantReplica>,
    /// Present when there are more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}
