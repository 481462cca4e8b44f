//! IVS's error names, statuses and JSON error body.

use serde::{Deserialize, Serialize};

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
    pub kind: ErrorKind,
    /// The HTTP status received or to send.
    pub status: u16,
    pub message: String,
}

/// The JSON body of an IVS error. AWS's model names the member `exceptionMessage`; SDKs read
/// `message`; servers here send both, clients accept either.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
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
