//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`): signing for clients and verification for
//! servers, on `hmac` and `sha2` only.
//!
//! Each step of the algorithm is a small pure function ([`canonical_uri`],
//! [`canonical_query_string`], [`canonical_headers`], [`canonical_request`],
//! [`string_to_sign`], [`signing_key`], [`signature`]) so that each can be checked against
//! AWS's published test-suite files on its own. [`sign`] chains them for a client (the worker,
//! the monitor, tests) and [`verify`] rebuilds the same chain from a received request for a
//! server (ivs-local). The time is always an argument: nothing here reads a clock.
//!
//! The rules are those of non-S3 services (IVS among them): the path is normalized (dot
//! segments removed, repeated slashes merged) and then percent-encoded once more on top of its
//! wire encoding ("double encoding"); the payload hash is the SHA-256 of the body.

use std::fmt;

mod canonical;
mod client;
mod sign;
#[cfg(test)]
mod tests;
mod verify;

pub use canonical::*;
pub use client::*;
pub use sign::*;
pub use verify::*;

pub use crate::time::UtcDateTime;

/// The algorithm name that starts an `Authorization` header and a string to sign.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The last part of every credential scope.
pub const SCOPE_TERMINATOR: &str = "aws4_request";

/// How far a request's `x-amz-date` may be from the server's clock, either way (AWS: 15 min).
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;

/// Hex SHA-256 of the empty string: the payload hash of a request without a body.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Headers a client must not sign because proxies and HTTP stacks may rewrite them.
const UNSIGNABLE_HEADERS: &[&str] = &[
    "authorization",
    "user-agent",
    "x-amzn-trace-id",
    "expect",
    "transfer-encoding",
    "connection",
];

/// AWS credentials. `Debug` never shows the secret key or the session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id, e.g. `AKIDLOCALSTAGEFAN`; public, it travels in every request.
    pub access_key_id: String,
    secret_access_key: String,
    /// A temporary session token (STS), sent as `x-amz-security-token` when present.
    pub session_token: Option<String>,
}

impl Credentials {
    /// Credentials from an access key id, its secret, and an optional session token.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        }
    }

    /// The secret access key (kept out of `Debug`).
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .finish()
    }
}
