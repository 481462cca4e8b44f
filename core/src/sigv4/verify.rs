//! Verifying a received request, for servers (ivs-local).

use super::*;

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
