//! The operations of IVS Real-Time that stagefan and ivs-local use, and their HTTP routes.

use std::fmt;

use crate::sigv4::uri_encode;

/// The operations of IVS Real-Time that stagefan and ivs-local use: each is
/// `POST /{OperationName}` but the tag operations, whose routes are documented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    CreateStage,
    GetStage,
    ListStages,
    DeleteStage,
    UpdateStage,
    CreateParticipantToken,
    ListParticipants,
    GetParticipant,
    ListParticipantEvents,
    DisconnectParticipant,
    ImportPublicKey,
    GetPublicKey,
    ListPublicKeys,
    DeletePublicKey,
    /// `POST /tags/{resourceArn}`
    TagResource,
    /// `DELETE /tags/{resourceArn}?tagKeys=…`
    UntagResource,
    /// `GET /tags/{resourceArn}`
    ListTagsForResource,
    StartParticipantReplication,
    StopParticipantReplication,
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
