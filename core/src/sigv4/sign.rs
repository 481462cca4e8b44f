//! Signing a client's request.

use super::*;

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
