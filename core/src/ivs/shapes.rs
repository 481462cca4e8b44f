//! The request and response shapes of the operations.

use serde::{Deserialize, Serialize};

use super::{Attributes, Tags};
use crate::sigv4::uri_encode;

/// A participant capability in `CreateParticipantToken` / `ParticipantToken`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParticipantTokenCapability {
    /// May publish.
    Publish,
    /// May subscribe.
    Subscribe,
}

/// `ParticipantThumbnailConfiguration`.
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

/// `ParticipantRecordingHlsConfiguration`.
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
    /// Thumbnails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_configuration: Option<ParticipantThumbnailConfiguration>,
    /// 0–300 seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_reconnect_window_seconds: Option<u32>,
    /// HLS segment settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls_configuration: Option<ParticipantRecordingHlsConfiguration>,
    /// Whether replicas are recorded (model default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_participant_replicas: Option<bool>,
}

/// `StageEndpoints`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageEndpoints {
    /// Events (websocket) endpoint; goes into a token's `events_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<String>,
    /// WHIP endpoint; goes into a token's `whip_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whip: Option<String>,
    /// RTMP ingest endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp: Option<String>,
    /// RTMPS ingest endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmps: Option<String>,
}

/// `Stage`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// Stage ARN.
    pub arn: String,
    /// Stage name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `st-` + 13 characters while a session is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_session_id: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Recording settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_participant_recording_configuration: Option<AutoParticipantRecordingConfiguration>,
    /// Endpoints for clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<StageEndpoints>,
}

/// `StageSummary` (an item of `ListStages`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageSummary {
    /// Stage ARN.
    pub arn: String,
    /// Stage name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Active session id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_session_id: Option<String>,
    /// Tags.
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

/// `ParticipantToken`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantToken {
    /// The participant id (the token's `jti`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    /// The token (opaque to clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
    /// Minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    /// Capabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<ParticipantTokenCapability>>,
    /// ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<String>,
}

/// `CreateStageRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateStageRequest {
    /// `[a-zA-Z0-9-_]*`, up to 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Up to 12 tokens to create with the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_token_configurations: Option<Vec<ParticipantTokenConfiguration>>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Recording.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_participant_recording_configuration: Option<AutoParticipantRecordingConfiguration>,
}

/// `CreateStageResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateStageResponse {
    /// The new stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// The requested tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_tokens: Option<Vec<ParticipantToken>>,
}

/// `GetStageRequest`, and the same `{arn}` body of `DeleteStage`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetStageRequest {
    /// Stage ARN.
    pub arn: String,
}

/// `GetStageResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetStageResponse {
    /// The stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
}

/// `DeleteStageRequest`.
pub type DeleteStageRequest = GetStageRequest;

/// An empty response body `{}` (DeleteStage, DisconnectParticipant, DeletePublicKey,
/// TagResource, UntagResource, Start/StopParticipantReplication).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyResponse {}

/// `ListStagesRequest`.
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

/// `ListStagesResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListStagesResponse {
    /// This page.
    #[serde(default)]
    pub stages: Vec<StageSummary>,
    /// Present when there are more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `UpdateStageRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStageRequest {
    /// Stage ARN.
    pub arn: String,
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New recording settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_participant_recording_configuration: Option<AutoParticipantRecordingConfiguration>,
}

/// `UpdateStageResponse`.
pub type UpdateStageResponse = GetStageResponse;

/// `CreateParticipantTokenRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateParticipantTokenRequest {
    /// Stage ARN.
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

/// `CreateParticipantTokenResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateParticipantTokenResponse {
    /// The token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_token: Option<ParticipantToken>,
}

/// `ParticipantState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParticipantState {
    /// Connected now.
    Connected,
    /// Left.
    Disconnected,
}

/// `ParticipantProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ParticipantProtocol {
    /// Unknown.
    Unknown,
    /// WHIP (WebRTC).
    Whip,
    /// RTMP.
    Rtmp,
    /// RTMPS.
    Rtmps,
}

/// `ReplicationType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicationType {
    /// Replicated elsewhere.
    Source,
    /// A replica of another stage's participant.
    Replica,
    /// Not replicated.
    None,
}

/// `ReplicationState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplicationState {
    /// Replicating.
    Active,
    /// Stopped.
    Stopped,
}

/// `ListParticipantsRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantsRequest {
    /// Stage ARN.
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
    /// Recording state filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_by_recording_state: Option<String>,
    /// From a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1–100, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

/// `ParticipantSummary`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantSummary {
    /// Participant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    /// User id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// State.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ParticipantState>,
    /// ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_join_time: Option<String>,
    /// Whether it published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
    /// Recording state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_state: Option<String>,
    /// Replication type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_type: Option<ReplicationType>,
    /// Replication state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<ReplicationState>,
    /// For replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_stage_arn: Option<String>,
    /// For replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_session_id: Option<String>,
}

/// `ListParticipantsResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantsResponse {
    /// This page.
    #[serde(default)]
    pub participants: Vec<ParticipantSummary>,
    /// Present when there are more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `GetParticipantRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetParticipantRequest {
    /// Stage ARN.
    pub stage_arn: String,
    /// Session id.
    pub session_id: String,
    /// Participant id.
    pub participant_id: String,
}

/// `Participant`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// Participant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    /// User id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// State.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ParticipantState>,
    /// ISO 8601.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_join_time: Option<String>,
    /// The token's attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
    /// Whether it published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<bool>,
    /// Client ISP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isp_name: Option<String>,
    /// Client OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// Client OS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Client browser.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_name: Option<String>,
    /// Client browser version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser_version: Option<String>,
    /// Client SDK version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_version: Option<String>,
    /// Recording bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_s3_bucket_name: Option<String>,
    /// Recording prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_s3_prefix: Option<String>,
    /// Recording state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording_state: Option<String>,
    /// Protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<ParticipantProtocol>,
    /// Replication type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_type: Option<ReplicationType>,
    /// Replication state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<ReplicationState>,
    /// For replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_stage_arn: Option<String>,
    /// For replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_session_id: Option<String>,
}

/// `GetParticipantResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetParticipantResponse {
    /// The participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<Participant>,
}

/// `ListParticipantEventsRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantEventsRequest {
    /// Stage ARN.
    pub stage_arn: String,
    /// Session id.
    pub session_id: String,
    /// Participant id.
    pub participant_id: String,
    /// From a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1–100, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

/// `EventName`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventName {
    /// Joined the stage.
    Joined,
    /// Left the stage.
    Left,
    /// Started publishing.
    PublishStarted,
    /// Stopped publishing.
    PublishStopped,
    /// Started subscribing.
    SubscribeStarted,
    /// Stopped subscribing.
    SubscribeStopped,
    /// Publishing failed.
    PublishError,
    /// Subscribing failed.
    SubscribeError,
    /// Joining failed.
    JoinError,
    /// Replication started.
    ReplicationStarted,
    /// Replication stopped.
    ReplicationStopped,
    /// The participant exchanged its token.
    TokenExchanged,
}

/// `Event` (an item of `ListParticipantEvents`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// What happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<EventName>,
    /// Whose event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_id: Option<String>,
    /// ISO 8601.
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

/// `ListParticipantEventsResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantEventsResponse {
    /// This page.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Present when there are more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `DisconnectParticipantRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisconnectParticipantRequest {
    /// Stage ARN.
    pub stage_arn: String,
    /// Participant id.
    pub participant_id: String,
    /// Up to 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `ImportPublicKeyRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportPublicKeyRequest {
    /// SPKI PEM (`-----BEGIN PUBLIC KEY-----`) of a P-384 key.
    pub public_key_material: String,
    /// `[a-zA-Z0-9-_]*`, up to 128.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// `PublicKey`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKey {
    /// Public key ARN (a token's `kid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The PEM as imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_material: Option<String>,
    /// A short string identifying the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// `ImportPublicKeyResponse` / `GetPublicKeyResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeyResponse {
    /// The key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
}

/// `ImportPublicKeyResponse`.
pub type ImportPublicKeyResponse = PublicKeyResponse;
/// `GetPublicKeyResponse`.
pub type GetPublicKeyResponse = PublicKeyResponse;
/// `GetPublicKeyRequest` / `DeletePublicKeyRequest` (`{arn}`).
pub type GetPublicKeyRequest = GetStageRequest;
/// `DeletePublicKeyRequest`.
pub type DeletePublicKeyRequest = GetStageRequest;
/// `ListPublicKeysRequest` (`nextToken`, `maxResults`).
pub type ListPublicKeysRequest = ListStagesRequest;

/// `PublicKeySummary`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicKeySummary {
    /// ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// `ListPublicKeysResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPublicKeysResponse {
    /// This page.
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

/// `ListTagsForResourceResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTagsForResourceResponse {
    /// The resource's tags.
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

/// `StartParticipantReplicationRequest`.
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

/// `StopParticipantReplicationRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopParticipantReplicationRequest {
    /// Source stage.
    pub source_stage_arn: String,
    /// Destination stage.
    pub destination_stage_arn: String,
    /// The participant.
    pub participant_id: String,
}

/// `ListParticipantReplicasRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantReplicasRequest {
    /// Source stage.
    pub source_stage_arn: String,
    /// The participant.
    pub participant_id: String,
    /// From a previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// 1–50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
}

/// `ParticipantReplica`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantReplica {
    /// Source stage.
    pub source_stage_arn: String,
    /// The participant.
    pub participant_id: String,
    /// Source session.
    pub source_session_id: String,
    /// Destination stage.
    pub destination_stage_arn: String,
    /// Destination session.
    pub destination_session_id: String,
    /// `ACTIVE` or `STOPPED`.
    pub replication_state: String,
}

/// `ListParticipantReplicasResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParticipantReplicasResponse {
    /// This page.
    #[serde(default)]
    pub replicas: Vec<ParticipantReplica>,
    /// Present when there are more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}
