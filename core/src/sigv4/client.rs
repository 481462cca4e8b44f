//! Signing a client's request with AWS's own signer, the `aws-sigv4` crate: what the worker,
//! the monitor and the test harnesses send to IVS. It takes the signing time as an argument
//! like the rest of `core`, and builds for wasm32.
//!
//! [`sign`](super::sign) computes the same signature by hand from the canonicalization that
//! [`verify`](super::verify) rests on (ivs-local's side, which no library provides); the
//! tests hold the two to AWS's test suite and to each other.

use std::time::{Duration, UNIX_EPOCH};

use aws_sigv4::http_request::{
    self, PayloadChecksumKind, SessionTokenMode, SignableBody, SignableRequest,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;

use super::{HttpRequest, SigningParams};

/// The headers [`sign_request`] adds to a request, lowercase names, and its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `x-amz-date`, `authorization`, and `x-amz-security-token` / `x-amz-content-sha256`
    /// when the credentials or the settings call for them.
    pub headers: Vec<(&'static str, String)>,
    /// The hex signature.
    pub signature: String,
}

/// Why `aws-sigv4` refused to sign (a header value it cannot carry, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SigV4 signing failed: {0}")]
pub struct SignError(String);

/// The headers `aws-sigv4` sets, by the names they are added under.
const SIGNER_HEADERS: [&str; 4] = [
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "authorization",
];

/// Signs `request` as [`sign`](super::sign) does (same headers signed, same settings), with
/// `aws-sigv4`. The request's `host` header names the authority; its path and query are
/// used as they go on the wire.
pub fn sign_request(
    request: &HttpRequest<'_>,
    params: &SigningParams<'_>,
) -> Result<SignedHeaders, SignError> {
    let fail = |e: &dyn std::fmt::Display| SignError(e.to_string());
    let identity = aws_credential_types::Credentials::new(
        params.credentials.access_key_id.clone(),
        params.credentials.secret_access_key().to_string(),
        params.credentials.session_token.clone(),
        None,
        "stagefan",
    )
    .into();
    let mut settings = http_request::SigningSettings::default();
    settings.payload_checksum_kind = if params.settings.add_content_sha256 {
        PayloadChecksumKind::XAmzSha256
    } else {
        PayloadChecksumKind::NoHeader
    };
    settings.uri_path_normalization_mode =
        UriPathNormalizationMode::from(params.settings.normalize_path);
    settings.session_token_mode = if params.settings.omit_session_token_from_signature {
        SessionTokenMode::Exclude
    } else {
        SessionTokenMode::Include
    };
    // Seconds before the epoch cannot be signing times of a running client.
    let secs = u64::try_from(params.time.to_unix()).unwrap_or(0);
    let signing_params = v4::SigningParams::builder()
        .identity(&identity)
        .region(params.region)
        .name(params.service)
        .time(UNIX_EPOCH + Duration::from_secs(secs))
        .settings(settings)
        .build()
        .map_err(|e| fail(&e))?
        .into();
    let host = request
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map_or("localhost", |(_, v)| v.trim());
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    let uri = if request.query.is_empty() {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}{path}?{}", request.query)
    };
    let signable = SignableRequest::new(
        request.method,
        uri,
        request.headers.iter().copied(),
        SignableBody::Bytes(request.body),
    )
    .map_err(|e| fail(&e))?;
    let (instructions, signature) = http_request::sign(signable, &signing_params)
        .map_err(|e| fail(&e))?
        .into_parts();
    let mut headers = Vec::new();
    for (name, value) in instructions.headers() {
        let name = SIGNER_HEADERS
            .into_iter()
            .find(|known| name.eq_ignore_ascii_case(known))
            .ok_or_else(|| SignError(format!("unexpected header {name:?} from aws-sigv4")))?;
        headers.push((name, value.to_string()));
    }
    Ok(SignedHeaders { headers, signature })
}
