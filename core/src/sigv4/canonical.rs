//! The canonical request and the signing chain built on it, one small pure function per
//! step: what a client signs and what a server checks are the same bytes.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{ALGORITHM, SCOPE_TERMINATOR};

type HmacSha256 = Hmac<Sha256>;

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
