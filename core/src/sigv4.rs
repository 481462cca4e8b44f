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

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub use crate::time::UtcDateTime;

type HmacSha256 = Hmac<Sha256>;

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

/// The parts of an HTTP request that SigV4 covers, as they are (or will be) on the wire.
#[derive(Clone, Copy, Debug)]
pub struct HttpRequest<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// The path as sent on the wire (already percent-encoded where needed), e.g.
    /// `/tags/arn%3Aaws%3Aivs%3A...`. An empty path means `/`.
    pub path: &'a str,
    /// The raw query string without `?`, or empty.
    pub query: &'a str,
    /// Every header of the request, names in any case; repeated names allowed.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body bytes.
    pub body: &'a [u8],
}

/// Choices that differ between the test suite, S3-like services and ordinary services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigningSettings {
    /// Add (and sign) `x-amz-content-sha256` with the body's hash.
    pub add_content_sha256: bool,
    /// Remove dot segments and merge repeated slashes before encoding the path (true for
    /// every service except S3).
    pub normalize_path: bool,
    /// Send the session token but leave it out of the signature (a few services want this).
    pub omit_session_token_from_signature: bool,
}

impl Default for SigningSettings {
    /// The settings of an ordinary JSON service such as IVS.
    fn default() -> Self {
        Self {
            add_content_sha256: false,
            normalize_path: true,
            omit_session_token_from_signature: false,
        }
    }
}

/// Who signs, for which region and service, and when.
#[derive(Clone, Copy, Debug)]
pub struct SigningParams<'a> {
    /// The credentials to sign with.
    pub credentials: &'a Credentials,
    /// The region, e.g. `us-east-1`.
    pub region: &'a str,
    /// The signing name of the service: `ivs` for IVS Real-Time.
    pub service: &'a str,
    /// The signing time (the caller's clock).
    pub time: UtcDateTime,
    /// Variants of the algorithm.
    pub settings: SigningSettings,
}

/// The result of [`sign`]: the headers to add to the request, plus every intermediate value
/// (for tests and debugging).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    /// Headers to add, lowercase names: `x-amz-date`, optionally `x-amz-content-sha256` and
    /// `x-amz-security-token`, and `authorization`.
    pub headers: Vec<(&'static str, String)>,
    /// The canonical request that was signed.
    pub canonical_request: String,
    /// The string to sign.
    pub string_to_sign: String,
    /// The hex signature.
    pub signature: String,
}

/// The canonical headers block and the matching `SignedHeaders` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CanonicalHeaders {
    /// `name:value\n` lines, names lowercase and sorted, values trimmed, repeated names joined
    /// with commas.
    pub canonical: String,
    /// The lowercase names joined with `;`.
    pub signed_headers: String,
}

/// Lowercase hex of the SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SigV4's percent-encoding: every byte except `A-Z a-z 0-9 - _ . ~` becomes `%XX` (upper
/// case); `/` is kept when `encode_slash` is false (paths).
pub fn uri_encode(input: &str, encode_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && !encode_slash)
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` sequences; a `%` not followed by two hex digits is kept as it is.
pub fn percent_decode(input: &str) -> Vec<u8> {
    let b = input.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hi = (b[i + 1] as char).to_digit(16);
            let lo = (b[i + 2] as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Removes `.` and `..` segments and merges repeated slashes; a trailing slash is kept (and
/// added after a final `.` or `..`).
fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    out.push('/');
    out.push_str(&segments.join("/"));
    // As RFC 3986 `remove_dot_segments`: a path ending in `/`, `/.` or `/..` keeps a slash.
    let last = path.rsplit('/').next().unwrap_or_default();
    if !segments.is_empty() && matches!(last, "" | "." | "..") {
        out.push('/');
    }
    out
}

/// The canonical URI: the wire path, normalized if asked, then percent-encoded once more
/// (slashes kept). An empty path is `/`.
pub fn canonical_uri(path: &str, normalize: bool) -> String {
    let path = if path.is_empty() { "/" } else { path };
    if normalize {
        uri_encode(&normalize_path(path), false)
    } else {
        uri_encode(path, false)
    }
}

/// The canonical query string: each `name=value` pair decoded and re-encoded with
/// [`uri_encode`], a missing `=` meaning an empty value, sorted by name then value.
pub fn canonical_query_string(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let enc = |s: &str| uri_encode(&String::from_utf8_lossy(&percent_decode(s)), true);
            (enc(name), enc(value))
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trims a header value and turns every run of whitespace inside it into one space.
fn trim_header_value(value: &str) -> String {
    value.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical headers of exactly the given headers (callers choose which to sign).
pub fn canonical_headers(headers: &[(&str, &str)]) -> CanonicalHeaders {
    let mut entries: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), trim_header_value(v)))
        .collect();
    // Stable: repeated names keep their order of appearance when joined.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical = String::new();
    let mut names: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let name = &entries[i].0;
        let mut values = vec![entries[i].1.as_str()];
        let mut j = i + 1;
        while j < entries.len() && entries[j].0 == *name {
            values.push(&entries[j].1);
            j += 1;
        }
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(&values.join(","));
        canonical.push('\n');
        names.push(name);
        i = j;
    }
    CanonicalHeaders {
        canonical,
        signed_headers: names.join(";"),
    }
}

/// The canonical request: method, canonical URI, canonical query, canonical headers, signed
/// header names and payload hash, one per line.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &CanonicalHeaders,
    payload_sha256: &str,
) -> String {
    format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{}\n{}\n{payload_sha256}",
        headers.canonical, headers.signed_headers
    )
}

/// `YYYYMMDD/region/service/aws4_request`.
pub fn credential_scope(date_stamp: &str, region: &str, service: &str) -> String {
    format!("{date_stamp}/{region}/{service}/{SCOPE_TERMINATOR}")
}

/// The string to sign: algorithm, `x-amz-date`, scope and the hash of the canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The signing key: HMAC chain of `"AWS4" + secret` over date, region, service, terminator.
pub fn signing_key(
    secret_access_key: &str,
    date_stamp: &str,
    region: &str,
    service: &str,
) -> [u8; 32] {
    let k_date = hmac_sha256(
        format!("AWS4{secret_access_key}").as_bytes(),
        date_stamp.as_bytes(),
    );
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, SCOPE_TERMINATOR.as_bytes())
}

/// The hex HMAC-SHA256 of the string to sign under the signing key.
pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(signing_key, string_to_sign.as_bytes()))
}

/// The `Authorization` header value.
pub fn authorization_header(
    access_key_id: &str,
    scope: &str,
    signed_headers: &str,
    signature: &str,
) -> String {
    format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
    )
}

/// Signs a request: returns the headers to add (`x-amz-date`, `x-amz-content-sha256` if
/// asked, `x-amz-security-token` if the credentials carry one, `authorization`).
///
/// Every header in `request.headers` is signed except hop-by-hop or rewritable ones
/// (`authorization`, `user-agent`, `expect`, `transfer-encoding`, `connection`,
/// `x-amzn-trace-id`) and the ones this function sets itself. Include `host` (and for JSON
/// bodies `content-type`) in `request.headers`, and send exactly those values.
pub fn sign(request: &HttpRequest<'_>, params: &SigningParams<'_>) -> SignedRequest {
    let amz_date = params.time.amz_date();
    let date_stamp = params.time.date_stamp();
    let payload_hash = sha256_hex(request.body);
    let own = ["x-amz-date", "x-amz-content-sha256", "x-amz-security-token"];
    let mut to_sign: Vec<(&str, &str)> = request
        .headers
        .iter()
        .filter(|(n, _)| {
            let n = n.trim().to_ascii_lowercase();
            !UNSIGNABLE_HEADERS.contains(&n.as_str()) && !own.contains(&n.as_str())
        })
        .copied()
        .collect();
    let mut added: Vec<(&'static str, String)> = vec![("x-amz-date", amz_date.clone())];
    if params.settings.add_content_sha256 {
        added.push(("x-amz-content-sha256", payload_hash.clone()));
    }
    let token = params.credentials.session_token.as_deref();
    if let Some(token) = token {
        if !params.settings.omit_session_token_from_signature {
            added.push(("x-amz-security-token", token.to_string()));
        }
    }
    to_sign.extend(added.iter().map(|(n, v)| (*n, v.as_str())));
    let headers = canonical_headers(&to_sign);
    let creq = canonical_request(
        request.method,
        &canonical_uri(request.path, params.settings.normalize_path),
        &canonical_query_string(request.query),
        &headers,
        &payload_hash,
    );
    let scope = credential_scope(&date_stamp, params.region, params.service);
    let sts = string_to_sign(&amz_date, &scope, &creq);
    let key = signing_key(
        params.credentials.secret_access_key(),
        &date_stamp,
        params.region,
        params.service,
    );
    let sig = signature(&key, &sts);
    if let (Some(token), true) = (token, params.settings.omit_session_token_from_signature) {
        added.push(("x-amz-security-token", token.to_string()));
    }
    added.push((
        "authorization",
        authorization_header(
            &params.credentials.access_key_id,
            &scope,
            &headers.signed_headers,
            &sig,
        ),
    ));
    SignedRequest {
        headers: added,
        canonical_request: creq,
        string_to_sign: sts,
        signature: sig,
    }
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedAuthorization {
    /// The access key id of the credential.
    pub access_key_id: String,
    /// The scope's date, `YYYYMMDD`.
    pub date_stamp: String,
    /// The scope's region.
    pub region: String,
    /// The scope's service.
    pub service: String,
    /// The scope's terminator (must be `aws4_request`).
    pub terminator: String,
    /// The signed header names, as listed.
    pub signed_headers: Vec<String>,
    /// The hex signature.
    pub signature: String,
}

/// Why a request's signature was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `Authorization` header.
    #[error("missing Authorization header")]
    MissingAuthorization,
    /// The header is not `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
    #[error("malformed Authorization header: {0}")]
    MalformedAuthorization(&'static str),
    /// Another algorithm than `AWS4-HMAC-SHA256`.
    #[error("unsupported signing algorithm")]
    UnsupportedAlgorithm,
    /// No `x-amz-date` header.
    #[error("missing x-amz-date header")]
    MissingDate,
    /// `x-amz-date` is not `YYYYMMDDTHHMMSSZ`.
    #[error("malformed x-amz-date header")]
    MalformedDate,
    /// The credential scope's date is not the day of `x-amz-date`.
    #[error("credential scope date {scope} does not match x-amz-date {date}")]
    ScopeDateMismatch {
        /// The date in the scope.
        scope: String,
        /// The date of `x-amz-date`.
        date: String,
    },
    /// The credential is scoped to another region.
    #[error("credential should be scoped to a valid region, not '{got}' (expected '{expected}')")]
    WrongRegion {
        /// The server's region.
        expected: String,
        /// The region in the scope.
        got: String,
    },
    /// The credential is scoped to another service.
    #[error("credential should be scoped to correct service: '{expected}' (got '{got}')")]
    WrongService {
        /// The server's signing name.
        expected: String,
        /// The service in the scope.
        got: String,
    },
    /// The scope does not end with `aws4_request`.
    #[error("credential scope must end with aws4_request")]
    WrongTerminator,
    /// The request's time is more than the allowed skew away from the server's `now`.
    #[error("signature expired or not yet valid: request time {request_time} is {skew_secs} s away from server time {server_time}")]
    RequestTimeSkewed {
        /// The request's `x-amz-date`.
        request_time: String,
        /// The server's time, same format.
        server_time: String,
        /// `request - server`, seconds.
        skew_secs: i64,
    },
    /// `host` (or `x-amz-date`) is not among the signed headers.
    #[error("header '{0}' must be signed")]
    RequiredHeaderNotSigned(&'static str),
    /// A header listed in `SignedHeaders` is not in the request.
    #[error("signed header '{0}' is missing from the request")]
    MissingSignedHeader(String),
    /// `x-amz-content-sha256` does not match the body.
    #[error("x-amz-content-sha256 does not match the request body")]
    PayloadHashMismatch,
    /// No secret is known for the access key id.
    #[error("unknown access key id '{0}'")]
    UnknownAccessKey(String),
    /// The signature differs from the one the server computed.
    #[error("the request signature does not match the signature computed by the server")]
    SignatureMismatch,
}

/// Parses an `Authorization` header of SigV4.
pub fn parse_authorization(value: &str) -> Result<ParsedAuthorization, VerifyError> {
    let value = value.trim();
    let (algorithm, rest) = value
        .split_once(' ')
        .ok_or(VerifyError::MalformedAuthorization(
            "no space after the algorithm",
        ))?;
    if algorithm != ALGORITHM {
        return Err(VerifyError::UnsupportedAlgorithm);
    }
    let (mut credential, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(VerifyError::MalformedAuthorization(
                "a component is not key=value",
            ))?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => return Err(VerifyError::MalformedAuthorization("unknown component")),
        };
        if slot.replace(v).is_some() {
            return Err(VerifyError::MalformedAuthorization("repeated component"));
        }
    }
    let credential = credential.ok_or(VerifyError::MalformedAuthorization("missing Credential"))?;
    let signed = signed.ok_or(VerifyError::MalformedAuthorization("missing SignedHeaders"))?;
    let sig = sig.ok_or(VerifyError::MalformedAuthorization("missing Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    if parts.len() != 5 || parts.iter().any(|p| p.is_empty()) {
        return Err(VerifyError::MalformedAuthorization(
            "Credential must be keyid/date/region/service/aws4_request",
        ));
    }
    if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(VerifyError::MalformedAuthorization(
            "Signature must be 64 hex digits",
        ));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    if signed_headers.iter().any(|h| h.is_empty()) {
        return Err(VerifyError::MalformedAuthorization(
            "empty name in SignedHeaders",
        ));
    }
    Ok(ParsedAuthorization {
        access_key_id: parts[0].to_string(),
        date_stamp: parts[1].to_string(),
        region: parts[2].to_string(),
        service: parts[3].to_string(),
        terminator: parts[4].to_string(),
        signed_headers,
        signature: sig.to_ascii_lowercase(),
    })
}

/// What the server expects of a request.
#[derive(Clone, Copy, Debug)]
pub struct VerifyParams<'a> {
    /// The server's region.
    pub region: &'a str,
    /// The service's signing name (`ivs`).
    pub service: &'a str,
    /// The server's clock, unix seconds.
    pub now_unix: i64,
    /// Allowed distance between `x-amz-date` and `now_unix` (normally [`MAX_CLOCK_SKEW_SECS`]).
    pub max_skew_secs: i64,
    /// Whether the path is normalized before encoding (true for IVS).
    pub normalize_path: bool,
}

/// A request whose signature was accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRequest {
    /// The access key id that signed it.
    pub access_key_id: String,
    /// Its signing time.
    pub signed_at: UtcDateTime,
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header_values<'a>(headers: &'a [(&'a str, &'a str)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .collect()
}

/// Verifies a received request: parses its `Authorization`, checks the scope against
/// `params`, the clock skew against `params.now_unix`, looks the key id up with
/// `lookup_secret`, rebuilds the canonical request from the request's own `SignedHeaders`
/// and compares signatures in constant time.
pub fn verify<F>(
    request: &HttpRequest<'_>,
    params: &VerifyParams<'_>,
    lookup_secret: F,
) -> Result<VerifiedRequest, VerifyError>
where
    F: FnOnce(&str) -> Option<Credentials>,
{
    let auth = header_values(request.headers, "authorization");
    let auth = match auth.as_slice() {
        [] => return Err(VerifyError::MissingAuthorization),
        [one] => parse_authorization(one)?,
        _ => {
            return Err(VerifyError::MalformedAuthorization(
                "repeated Authorization header",
            ))
        }
    };
    let date_value = header_values(request.headers, "x-amz-date")
        .first()
        .copied()
        .ok_or(VerifyError::MissingDate)?;
    let signed_at =
        UtcDateTime::parse_amz_date(date_value.trim()).ok_or(VerifyError::MalformedDate)?;
    if auth.date_stamp != signed_at.date_stamp() {
        return Err(VerifyError::ScopeDateMismatch {
            scope: auth.date_stamp,
            date: signed_at.date_stamp(),
        });
    }
    if auth.region != params.region {
        return Err(VerifyError::WrongRegion {
            expected: params.region.to_string(),
            got: auth.region,
        });
    }
    if auth.service != params.service {
        return Err(VerifyError::WrongService {
            expected: params.service.to_string(),
            got: auth.service,
        });
    }
    if auth.terminator != SCOPE_TERMINATOR {
        return Err(VerifyError::WrongTerminator);
    }
    let skew = signed_at.to_unix() - params.now_unix;
    if skew.abs() > params.max_skew_secs {
        return Err(VerifyError::RequestTimeSkewed {
            request_time: signed_at.amz_date(),
            server_time: UtcDateTime::from_unix(params.now_unix).amz_date(),
            skew_secs: skew,
        });
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(VerifyError::RequiredHeaderNotSigned(required));
        }
    }
    let mut signed: Vec<(&str, &str)> = Vec::new();
    for name in &auth.signed_headers {
        let values = header_values(request.headers, name);
        if values.is_empty() {
            return Err(VerifyError::MissingSignedHeader(name.clone()));
        }
        signed.extend(values.into_iter().map(|v| (name.as_str(), v)));
    }
    let payload_hash = sha256_hex(request.body);
    if let Some(declared) = header_values(request.headers, "x-amz-content-sha256").first() {
        let declared = declared.trim();
        if declared != "UNSIGNED-PAYLOAD" && !declared.eq_ignore_ascii_case(&payload_hash) {
            return Err(VerifyError::PayloadHashMismatch);
        }
    }
    let credentials = lookup_secret(&auth.access_key_id)
        .ok_or_else(|| VerifyError::UnknownAccessKey(auth.access_key_id.clone()))?;
    let mut headers = canonical_headers(&signed);
    // The client's own list, as sent, is what it signed.
    headers.signed_headers = auth.signed_headers.join(";");
    let creq = canonical_request(
        request.method,
        &canonical_uri(request.path, params.normalize_path),
        &canonical_query_string(request.query),
        &headers,
        &payload_hash,
    );
    let scope = credential_scope(&auth.date_stamp, &auth.region, &auth.service);
    let sts = string_to_sign(&signed_at.amz_date(), &scope, &creq);
    let key = signing_key(
        credentials.secret_access_key(),
        &auth.date_stamp,
        &auth.region,
        &auth.service,
    );
    let expected = signature(&key, &sts);
    if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        return Err(VerifyError::SignatureMismatch);
    }
    Ok(VerifiedRequest {
        access_key_id: auth.access_key_id,
        signed_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = Credentials::new("AKID", "very-secret", Some("tok-secret".into()));
        let s = format!("{c:?}");
        assert!(s.contains("AKID"));
        assert!(!s.contains("very-secret"));
        assert!(!s.contains("tok-secret"));
    }

    #[test]
    fn percent_decode_keeps_broken_escapes() {
        assert_eq!(percent_decode("a%3Ab"), b"a:b");
        assert_eq!(percent_decode("a%3"), b"a%3");
        assert_eq!(percent_decode("%zz%"), b"%zz%");
    }

    #[test]
    fn paths_are_double_encoded_for_ivs_tags() {
        assert_eq!(
            canonical_uri(
                "/tags/arn%3Aaws%3Aivs%3Aus-east-1%3A123456789012%3Astage%2FabcDEF123456",
                true
            ),
            "/tags/arn%253Aaws%253Aivs%253Aus-east-1%253A123456789012%253Astage%252FabcDEF123456"
        );
    }

    #[test]
    fn normalization_keeps_a_slash_after_final_dot_segments() {
        // Found by the property test against aws-sigv4 (RFC 3986 remove_dot_segments).
        assert_eq!(canonical_uri("/0/.", true), "/0/");
        assert_eq!(canonical_uri("/a/b/..", true), "/a/");
        assert_eq!(canonical_uri("/a/..", true), "/");
        assert_eq!(canonical_uri("//a//b", true), "/a/b");
        assert_eq!(canonical_uri("/0/.", false), "/0/.");
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
