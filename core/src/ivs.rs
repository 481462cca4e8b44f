//! The Amazon IVS Real-Time (`ivs-realtime`, API 2020-07-14) wire format that stagefan and
//! ivs-local speak: request and response bodies of the operations stagefan uses, the error
//! shape, ARNs, and the model's input limits.
//!
//! Names and shapes follow AWS's service model (botocore
//! `data/ivs-realtime/2020-07-14/service-2.json`): JSON members in camelCase, optional
//! members omitted when absent, timestamps as ISO 8601 strings (the model's `iso8601`
//! timestamp format). Unknown members are ignored when reading, so newer AWS responses parse.
//! Every operation is `POST /<OperationName>` with a JSON body, except the tag operations on
//! `/tags/{resourceArn}` (see [`Operation::http_method`] and [`tags_path`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sigv4::uri_encode;

/// The signing name of IVS Real-Time for SigV4 (not `ivsrealtime`).
pub const SIGNING_NAME: &str = "ivs";

/// Tags: at most 50 per resource, keys 1–128 characters, values up to 256.
pub type Tags = BTreeMap<String, String>;

/// Participant or token attributes (string to string, at most 1 KB in total).
pub type Attributes = BTreeMap<String, String>;

pub use crate::tags::{TAG_BROADCAST, TAG_DEPLOYMENT, TAG_MANAGED};

/// The operations of IVS Real-Time that stagefan and ivs-local use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `POST /CreateStage`
    CreateStage,
    /// `POST /GetStage`
    GetStage,
    /// `POST /ListStages`
    ListStages,
    /// `POST /DeleteStage`
    DeleteStage,
    /// `POST /UpdateStage`
    UpdateStage,
    /// `POST /CreateParticipantToken`
    CreateParticipantToken,
    /// `POST /ListParticipants`
    ListParticipants,
    /// `POST /GetParticipant`
    GetParticipant,
    /// `POST /ListParticipantEvents`
    ListParticipantEvents,
    /// `POST /DisconnectParticipant`
    DisconnectParticipant,
    /// `POST /ImportPublicKey`
    ImportPublicKey,
    /// `POST /GetPublicKey`
    GetPublicKey,
    /// `POST /ListPublicKeys`
    ListPublicKeys,
    /// `POST /DeletePublicKey`
    DeletePublicKey,
    /// `POST /tags/{resourceArn}`
    TagResource,
    /// `DELETE /tags/{resourceArn}?tagKeys=…`
    UntagResource,
    /// `GET /tags/{resourceArn}`
    ListTagsForResource,
    /// `POST /StartParticipantReplication`
    StartParticipantReplication,
    /// `POST /StopParticipantReplication`
    StopParticipantReplication,
    /// `POST /ListParticipantReplicas`
    ListParticipantReplicas,
}

impl Operation {
    /// Every operation, in declaration order.
    pub const ALL: [Operation; 20] = [
        Operation::CreateStage,
        Operation::GetStage,
        Operation::ListStages,
        Operation::DeleteStage,
        Operation::UpdateStage,
        Operation::CreateParticipantToken,
        Operation::ListParticipants,
        Operation::GetParticipant,
        Operation::ListParticipantEvents,
        Operation::DisconnectParticipant,
        Operation::ImportPublicKey,
        Operation::GetPublicKey,
        Operation::ListPublicKeys,
        Operation::DeletePublicKey,
        Operation::TagResource,
        Operation::UntagResource,
        Operation::ListTagsForResource,
        Operation::StartParticipantReplication,
        Operation::StopParticipantReplication,
        Operation::ListParticipantReplicas,
    ];

    /// The operation's name as in the model, e.g. `CreateStage`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateStage => "CreateStage",
            Operation::GetStage => "GetStage",
            Operation::ListStages => "ListStages",
            Operation::DeleteStage => "DeleteStage",
            Operation::UpdateStage => "UpdateStage",
            Operation::CreateParticipantToken => "CreateParticipantToken",
            Operation::ListParticipants => "ListParticipants",
            Operation::GetParticipant => "GetParticipant",
            Operation::ListParticipantEvents => "ListParticipantEvents",
            Operation::DisconnectParticipant => "DisconnectParticipant",
            Operation::ImportPublicKey => "ImportPublicKey",
            Operation::GetPublicKey => "GetPublicKey",
            Operation::ListPublicKeys => "ListPublicKeys",
            Operation::DeletePublicKey => "DeletePublicKey",
            Operation::TagResource => "TagResource",
            Operation::UntagResource => "UntagResource",
            Operation::ListTagsForResource => "ListTagsForResource",
            Operation::StartParticipantReplication => "StartParticipantReplication",
            Operation::StopParticipantReplication => "StopParticipantReplication",
            Operation::ListParticipantReplicas => "ListParticipantReplicas",
        }
    }

    /// The operation of a name, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|op| op.name() == name)
    }

    /// The HTTP method (`POST` for all but `UntagResource` (`DELETE`) and
    /// `ListTagsForResource` (`GET`)).
    pub fn http_method(self) -> &'static str {
        match self {
            Operation::UntagResource => "DELETE",
            Operation::ListTagsForResource => "GET",
            _ => "POST",
        }
    }

    /// The request rate IVS allows per account and region, in requests per second (the
    /// service-quotas page: 5 for stage and participant operations, 50 for
    /// CreateParticipantToken, 3 for public keys, 10 for tags). The replication operations are
    /// not in the published table; 5 is assumed like the other participant operations.
    pub const fn documented_tps(self) -> u32 {
        match self {
            Operation::CreateParticipantToken => 50,
            Operation::ImportPublicKey
            | Operation::GetPublicKey
            | Operation::ListPublicKeys
            | Operation::DeletePublicKey => 3,
            Operation::TagResource | Operation::UntagResource | Operation::ListTagsForResource => {
                10
            }
            _ => 5,
        }
    }

    /// The request path; `resource_arn` is used only by the tag operations.
    pub fn path(self, resource_arn: Option<&str>) -> String {
        match self {
            Operation::TagResource | Operation::UntagResource | Operation::ListTagsForResource => {
                tags_path(resource_arn.unwrap_or_default())
            }
            op => format!("/{}", op.name()),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `/tags/{resourceArn}` with the ARN percent-encoded as one path label (`:` → `%3A`,
/// `/` → `%2F`), as AWS's SDKs send it.
pub fn tags_path(resource_arn: &str) -> String {
    format!("/tags/{}", uri_encode(resource_arn, true))
}

// ---------------------------------------------------------------------------------------------
// Shapes

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

// ---------------------------------------------------------------------------------------------
// Errors

/// The error names IVS answers with (the model's errors plus the service-wide ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 400: the input is invalid.
    Validation,
    /// 403: not allowed.
    AccessDenied,
    /// 403: the account is not verified yet.
    PendingVerification,
    /// 404: no such resource.
    ResourceNotFound,
    /// 409: conflicting state.
    Conflict,
    /// 402: a quota would be exceeded.
    ServiceQuotaExceeded,
    /// 500: server fault.
    InternalServer,
    /// 429: over the operation's request rate.
    Throttling,
    /// 403: the SigV4 signature is wrong, stale or scoped wrongly.
    InvalidSignature,
    /// 403: the access key id is not known.
    UnrecognizedClient,
    /// 403: the request is not signed at all.
    MissingAuthenticationToken,
    /// Any other name (kept for clients that read unknown errors).
    Other,
}

impl ErrorKind {
    /// The exception name, as in `x-amzn-ErrorType`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Validation => "ValidationException",
            ErrorKind::AccessDenied => "AccessDeniedException",
            ErrorKind::PendingVerification => "PendingVerification",
            ErrorKind::ResourceNotFound => "ResourceNotFoundException",
            ErrorKind::Conflict => "ConflictException",
            ErrorKind::ServiceQuotaExceeded => "ServiceQuotaExceededException",
            ErrorKind::InternalServer => "InternalServerException",
            ErrorKind::Throttling => "ThrottlingException",
            ErrorKind::InvalidSignature => "InvalidSignatureException",
            ErrorKind::UnrecognizedClient => "UnrecognizedClientException",
            ErrorKind::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            ErrorKind::Other => "UnknownError",
        }
    }

    /// The HTTP status IVS uses for it.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Validation => 400,
            ErrorKind::AccessDenied
            | ErrorKind::PendingVerification
            | ErrorKind::InvalidSignature
            | ErrorKind::UnrecognizedClient
            | ErrorKind::MissingAuthenticationToken => 403,
            ErrorKind::ResourceNotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::ServiceQuotaExceeded => 402,
            ErrorKind::InternalServer | ErrorKind::Other => 500,
            ErrorKind::Throttling => 429,
        }
    }

    /// The kind of an `x-amzn-ErrorType` value (`Name` or `Name:http://…`).
    pub fn from_error_type(value: &str) -> ErrorKind {
        let name = value.split(':').next().unwrap_or_default().trim();
        let name = name.rsplit('#').next().unwrap_or(name);
        [
            ErrorKind::Validation,
            ErrorKind::AccessDenied,
            ErrorKind::PendingVerification,
            ErrorKind::ResourceNotFound,
            ErrorKind::Conflict,
            ErrorKind::ServiceQuotaExceeded,
            ErrorKind::InternalServer,
            ErrorKind::Throttling,
            ErrorKind::InvalidSignature,
            ErrorKind::UnrecognizedClient,
            ErrorKind::MissingAuthenticationToken,
        ]
        .into_iter()
        .find(|k| k.name() == name)
        .unwrap_or(ErrorKind::Other)
    }

    /// Whether a client should retry with backoff (throttling and server faults).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Throttling | ErrorKind::InternalServer)
    }
}

/// An IVS error: name, HTTP status and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} ({}): {message}", kind.name(), status)]
pub struct IvsError {
    /// What kind.
    pub kind: ErrorKind,
    /// The HTTP status received or to send.
    pub status: u16,
    /// The message.
    pub message: String,
}

/// The JSON body of an IVS error. AWS's model names the member `exceptionMessage`; SDKs read
/// `message`; servers here send both, clients accept either.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The message.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "Message")]
    pub message: Option<String>,
    /// The same message under the model's member name.
    #[serde(
        default,
        rename = "exceptionMessage",
        skip_serializing_if = "Option::is_none"
    )]
    pub exception_message: Option<String>,
}

impl IvsError {
    /// An error of a kind with its usual status.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: kind.http_status(),
            message: message.into(),
        }
    }

    /// The value of `x-amzn-ErrorType`.
    pub fn error_type(&self) -> &'static str {
        self.kind.name()
    }

    /// The JSON body to send.
    pub fn to_body(&self) -> String {
        serde_json::to_string(&ErrorBody {
            message: Some(self.message.clone()),
            exception_message: Some(self.message.clone()),
        })
        .expect("strings serialize")
    }

    /// Reads an error response: status, the `x-amzn-ErrorType` header if any, and the body.
    pub fn from_response(status: u16, error_type: Option<&str>, body: &[u8]) -> Self {
        let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let kind = match error_type {
            Some(t) => ErrorKind::from_error_type(t),
            None => {
                // Some AWS front ends put the name in the body as `__type` or `code`.
                let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
                v.get("__type")
                    .or_else(|| v.get("code"))
                    .and_then(|t| t.as_str())
                    .map_or(ErrorKind::Other, ErrorKind::from_error_type)
            }
        };
        let kind = if kind == ErrorKind::Other && status == 429 {
            ErrorKind::Throttling
        } else {
            kind
        };
        Self {
            kind,
            status,
            message: parsed
                .message
                .or(parsed.exception_message)
                .unwrap_or_default(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ARNs and ids

/// The resource types of IVS Real-Time ARNs that stagefan handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// `stage/…`
    Stage,
    /// `public-key/…`
    PublicKey,
}

impl ResourceType {
    /// The ARN's resource-type segment.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Stage => "stage",
            ResourceType::PublicKey => "public-key",
        }
    }
}

/// A parsed `arn:aws:ivs:{region}:{account}:{type}/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arn {
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// 12-digit account id.
    pub account_id: String,
    /// Stage or public key.
    pub resource_type: ResourceType,
    /// The id, `[a-zA-Z0-9-]+` (IVS makes 12 alphanumerics).
    pub resource_id: String,
}

/// Why a string is not an IVS ARN of ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid IVS ARN '{arn}': {reason}")]
pub struct ArnError {
    /// The input.
    pub arn: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl Arn {
    /// A stage ARN.
    pub fn stage(region: &str, account_id: &str, id: &str) -> Self {
        Self {
            region: region.into(),
            account_id: account_id.into(),
            resource_type: ResourceType::Stage,
            resource_id: id.into(),
        }
    }

    /// A public-key ARN.
    pub fn public_key(region: &str, account_id: &str, id: &str) -> Self {
        Self {
            region: region.into(),
            account_id: account_id.into(),
            resource_type: ResourceType::PublicKey,
            resource_id: id.into(),
        }
    }

    /// Parses `arn:aws:ivs:{region}:{account}:stage/{id}` or `…:public-key/{id}`.
    pub fn parse(arn: &str) -> Result<Arn, ArnError> {
        let err = |reason| ArnError {
            arn: arn.chars().take(256).collect(),
            reason,
        };
        let rest = arn
            .strip_prefix("arn:aws:ivs:")
            .ok_or_else(|| err("must start with arn:aws:ivs:"))?;
        let mut parts = rest.splitn(3, ':');
        let region = parts.next().unwrap_or_default();
        let account = parts.next().ok_or_else(|| err("missing account id"))?;
        let resource = parts.next().ok_or_else(|| err("missing resource"))?;
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err("bad region"));
        }
        if account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("bad account id"));
        }
        let (kind, id) = resource
            .split_once('/')
            .ok_or_else(|| err("resource must be type/id"))?;
        let resource_type = match kind {
            "stage" => ResourceType::Stage,
            "public-key" => ResourceType::PublicKey,
            _ => return Err(err("resource type must be stage or public-key")),
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(err("bad resource id"));
        }
        if arn.len() > 128 {
            return Err(err("longer than 128 characters"));
        }
        Ok(Arn {
            region: region.into(),
            account_id: account.into(),
            resource_type,
            resource_id: id.into(),
        })
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:aws:ivs:{}:{}:{}/{}",
            self.region,
            self.account_id,
            self.resource_type.as_str(),
            self.resource_id
        )
    }
}

/// The stage id (the token's `topic`) of a stage ARN: its last path segment.
pub fn stage_id_from_arn(arn: &str) -> Option<&str> {
    let (_, id) = arn.rsplit_once(":stage/")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then_some(id)
}

const ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Alphanumeric characters from caller-supplied random bytes, one per byte (`byte % 62`: a
/// slight bias, harmless for identifiers).
pub fn alphanumeric_id(random: &[u8]) -> String {
    random
        .iter()
        .map(|b| ALNUM[usize::from(*b) % ALNUM.len()] as char)
        .collect()
}

/// A resource id as IVS makes them: 12 alphanumerics.
pub fn resource_id(random: &[u8; 12]) -> String {
    alphanumeric_id(random)
}

/// A stage session id: `st-` + 13 alphanumerics (16 characters, as the model requires).
pub fn session_id(random: &[u8; 13]) -> String {
    format!("st-{}", alphanumeric_id(random))
}

// ---------------------------------------------------------------------------------------------
// Input limits of the model

/// Default token duration (minutes) when a request gives none.
pub const DEFAULT_TOKEN_DURATION_MINUTES: u32 = 720;
/// Longest token duration (minutes): 14 days.
pub const MAX_TOKEN_DURATION_MINUTES: u32 = 20_160;
/// Tags per resource.
pub const MAX_TAGS: usize = 50;
/// Token configurations in one CreateStage.
pub const MAX_TOKEN_CONFIGURATIONS: usize = 12;
/// Bytes of attributes (keys plus values).
pub const MAX_ATTRIBUTES_BYTES: usize = 1024;
/// Characters of a user id.
pub const MAX_USER_ID_CHARS: usize = 128;

/// Checks a stage or public-key name: `[a-zA-Z0-9-_]*`, at most 128.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.len() > 128 {
        return Err("name must be at most 128 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("name must match [a-zA-Z0-9-_]*".into());
    }
    Ok(())
}

/// Checks a tag map: at most 50, keys 1–128 characters, values at most 256.
pub fn validate_tags(tags: &Tags) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags are allowed per resource"));
    }
    for (k, v) in tags {
        let kc = k.chars().count();
        if kc == 0 || kc > 128 {
            return Err("tag keys must be 1 to 128 characters".into());
        }
        if v.chars().count() > 256 {
            return Err("tag values must be at most 256 characters".into());
        }
    }
    Ok(())
}

/// The size attributes count against the 1 KB limit: the bytes of every key and value.
pub fn attributes_size(attributes: &Attributes) -> usize {
    attributes.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Checks token inputs shared by CreateStage and CreateParticipantToken.
pub fn validate_token_request(
    duration: Option<u32>,
    user_id: Option<&str>,
    attributes: Option<&Attributes>,
    capabilities: Option<&[ParticipantTokenCapability]>,
) -> Result<(), String> {
    if let Some(d) = duration {
        if !(1..=MAX_TOKEN_DURATION_MINUTES).contains(&d) {
            return Err(format!(
                "duration must be between 1 and {MAX_TOKEN_DURATION_MINUTES} minutes"
            ));
        }
    }
    if let Some(u) = user_id {
        if u.chars().count() > MAX_USER_ID_CHARS {
            return Err(format!(
                "userId must be at most {MAX_USER_ID_CHARS} characters"
            ));
        }
    }
    if let Some(a) = attributes {
        if attributes_size(a) > MAX_ATTRIBUTES_BYTES {
            return Err("attributes must be at most 1 KB in total".into());
        }
    }
    if let Some(c) = capabilities {
        if c.len() > 2 {
            return Err("capabilities must have at most 2 members".into());
        }
    }
    Ok(())
}

/// Checks `maxResults` against a model's range (1..=max) and returns it or the default.
pub fn page_size(max_results: Option<u32>, default: u32, max: u32) -> Result<u32, String> {
    match max_results {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(format!("maxResults must be between 1 and {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_round_trip_and_reject_garbage() {
        let s = "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456";
        let arn = Arn::parse(s).unwrap();
        assert_eq!(arn, Arn::stage("us-east-1", "123456789012", "AbCdEf123456"));
        assert_eq!(arn.to_string(), s);
        assert_eq!(stage_id_from_arn(s), Some("AbCdEf123456"));
        let k = "arn:aws:ivs:eu-west-1:123456789012:public-key/abcdefABCDEF";
        assert_eq!(
            Arn::parse(k).unwrap().resource_type,
            ResourceType::PublicKey
        );
        assert_eq!(stage_id_from_arn(k), None);
        for bad in [
            "",
            "arn:aws:s3:us-east-1:123456789012:stage/x",
            "arn:aws:ivs:us-east-1:12345678901a:stage/x",
            "arn:aws:ivs:us-east-1:123456789012:channel/x",
            "arn:aws:ivs:us-east-1:123456789012:stage/",
            "arn:aws:ivs:us-east-1:123456789012:stage/a/b",
            "arn:aws:ivs:US:123456789012:stage/x",
        ] {
            assert!(Arn::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_have_ivs_shapes() {
        let id = resource_id(&[0, 61, 62, 255, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(id.len(), 12);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(&id[..3], "0z0");
        let s = session_id(&[7; 13]);
        assert_eq!(s.len(), 16);
        assert!(s.starts_with("st-"));
    }

    #[test]
    fn tags_path_encodes_the_arn_as_one_label() {
        assert_eq!(
            tags_path("arn:aws:ivs:us-east-1:123456789012:stage/abc"),
            "/tags/arn%3Aaws%3Aivs%3Aus-east-1%3A123456789012%3Astage%2Fabc"
        );
        assert_eq!(untag_query(&["a:b", "c"]), "tagKeys=a%3Ab&tagKeys=c");
        assert_eq!(Operation::UntagResource.http_method(), "DELETE");
        assert_eq!(Operation::CreateStage.path(None), "/CreateStage");
    }

    #[test]
    fn shapes_serialize_as_the_model_names_them() {
        let req = CreateParticipantTokenRequest {
            stage_arn: "arn:aws:ivs:us-east-1:123456789012:stage/abc".into(),
            duration: Some(60),
            user_id: Some("u1".into()),
            attributes: None,
            capabilities: Some(vec![ParticipantTokenCapability::Subscribe]),
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"stageArn":"arn:aws:ivs:us-east-1:123456789012:stage/abc",
                "duration":60,"userId":"u1","capabilities":["SUBSCRIBE"]})
        );
        let body = r#"{"stage":{"arn":"a","name":"n","activeSessionId":"st-ABCDEFGHIJKLM",
            "endpoints":{"whip":"http://w","events":"ws://e","rtmp":"r"},"tags":{},
            "newField":1},"participantTokens":[]}"#;
        let r: CreateStageResponse = serde_json::from_str(body).unwrap();
        let stage = r.stage.unwrap();
        assert_eq!(stage.active_session_id.as_deref(), Some("st-ABCDEFGHIJKLM"));
        assert_eq!(stage.endpoints.unwrap().whip.as_deref(), Some("http://w"));
        let p: ParticipantSummary = serde_json::from_str(
            r#"{"participantId":"p","state":"CONNECTED","published":true,"firstJoinTime":"2026-11-26T12:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(p.state, Some(ParticipantState::Connected));
        assert_eq!(
            serde_json::to_string(&EventName::PublishStarted).unwrap(),
            "\"PUBLISH_STARTED\""
        );
    }

    #[test]
    fn errors_read_and_write_the_aws_shape() {
        let e = IvsError::new(ErrorKind::ServiceQuotaExceeded, "too many stages");
        assert_eq!(e.status, 402);
        let back = IvsError::from_response(402, Some(e.error_type()), e.to_body().as_bytes());
        assert_eq!(back, e);
        let t = IvsError::from_response(
            429,
            Some("ThrottlingException:http://internal.amazon.com/coral/"),
            br#"{"message":"Rate exceeded"}"#,
        );
        assert_eq!(t.kind, ErrorKind::Throttling);
        assert!(t.kind.is_retryable());
        assert_eq!(t.message, "Rate exceeded");
        let u = IvsError::from_response(
            404,
            None,
            br#"{"__type":"ResourceNotFoundException","Message":"x"}"#,
        );
        assert_eq!(u.kind, ErrorKind::ResourceNotFound);
        assert_eq!(u.message, "x");
    }

    #[test]
    fn validation_limits() {
        assert!(validate_name("stage-1_a").is_ok());
        assert!(validate_name("bad name").is_err());
        let mut tags = Tags::new();
        for i in 0..50 {
            tags.insert(format!("k{i}"), "v".into());
        }
        assert!(validate_tags(&tags).is_ok());
        tags.insert("one-more".into(), "v".into());
        assert!(validate_tags(&tags).is_err());
        assert!(validate_token_request(Some(20_160), None, None, None).is_ok());
        assert!(validate_token_request(Some(20_161), None, None, None).is_err());
        assert!(validate_token_request(Some(0), None, None, None).is_err());
        let mut attrs = Attributes::new();
        attrs.insert("k".into(), "v".repeat(1023));
        assert!(validate_token_request(None, None, Some(&attrs), None).is_ok());
        attrs.insert("x".into(), String::new());
        assert!(validate_token_request(None, None, Some(&attrs), None).is_err());
        assert_eq!(page_size(None, 50, 100), Ok(50));
        assert!(page_size(Some(0), 50, 100).is_err());
        assert_eq!(
            Operation::from_name("ListStages"),
            Some(Operation::ListStages)
        );
        assert_eq!(Operation::CreateParticipantToken.documented_tps(), 50);
    }
}
