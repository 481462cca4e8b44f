//! Viewer tickets: short JWTs that the operator's own backend signs for a viewer of a private
//! or paid broadcast (`TICKET_BROADCASTS`). A broadcast that requires tickets seats only their
//! holders; the ticket's subject (`sub`) is the viewer's `userId`.
//!
//! Three algorithms: `HS256` with a shared secret (verified here), `ES256` (P-256) and
//! `RS256` with the backend's public key (the signature is checked by the adapter, WebCrypto in
//! the worker, over [`Ticket::signing_input`]). Claims: `sub` (required, a valid user id),
//! `exp` (required, at most [`MAX_TICKET_LIFETIME_SECS`] after `iat`/now), `nbf` (optional),
//! `aud` (optional: when present it must name the broadcast, as a string or in an array).
//! Times allow [`CLOCK_LEEWAY_SECS`] of clock skew.
//!
//! ```
//! use stagefan_core::ticket::{self, TicketAlg};
//! // Made by the operator's backend: {"alg":"HS256","typ":"JWT"} . {"sub":"ann","exp":1764160300,"aud":"show"}
//! let secret = b"a shared secret of at least 32 bytes!!";
//! let token = ticket::sign_hs256(secret, r#"{"sub":"ann","exp":1764160300,"aud":"show"}"#);
//! let t = ticket::parse(&token).unwrap();
//! assert_eq!(t.alg, TicketAlg::Hs256);
//! assert!(ticket::verify_hs256(secret, &t));
//! assert_eq!(t.claims.check("show", 1_764_160_000).unwrap(), "ann");
//! assert!(t.claims.check("other-show", 1_764_160_000).is_err());
//! ```

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Clock skew allowed on `exp` and `nbf`.
pub const CLOCK_LEEWAY_SECS: i64 = 30;
/// The longest a ticket may be valid from now: tickets are meant to be short-lived.
pub const MAX_TICKET_LIFETIME_SECS: i64 = 24 * 3600;
/// Longest ticket accepted, in bytes.
pub const MAX_TICKET_BYTES: usize = 4096;

/// The signature algorithm of a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketAlg {
    /// HMAC-SHA256 with `VIEWER_TICKET_SECRET`.
    Hs256,
    /// ECDSA P-256 with SHA-256, with `VIEWER_TICKET_PUBLIC_KEY`.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, with `VIEWER_TICKET_PUBLIC_KEY`.
    Rs256,
}

/// Why a ticket was refused (answered 401 `invalid_ticket` with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TicketError(pub String);

fn refuse(why: impl Into<String>) -> TicketError {
    TicketError(why.into())
}

/// The claims stagefan reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TicketClaims {
    /// The viewer (its `userId`).
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Not before, unix seconds.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// The broadcast(s) it is for.
    #[serde(default)]
    pub aud: Option<Audience>,
}

/// `aud` as a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One broadcast.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A parsed, not yet verified ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// From the header.
    pub alg: TicketAlg,
    /// `header.payload`, what the signature covers.
    pub signing_input: String,
    /// The signature bytes (ES256: `r || s`, 64 bytes, as JWS and WebCrypto both have it).
    pub signature: Vec<u8>,
    /// The claims.
    pub claims: TicketClaims,
}

fn b64(part: &str, what: &str) -> Result<Vec<u8>, TicketError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| refuse(format!("the ticket's {what} is not base64url")))
}

/// Parses a compact JWS ticket. Only the three algorithms above are accepted (never `none`).
pub fn parse(token: &str) -> Result<Ticket, TicketError> {
    if token.len() > MAX_TICKET_BYTES {
        return Err(refuse(format!(
            "the ticket is longer than {MAX_TICKET_BYTES} bytes"
        )));
    }
    let mut parts = token.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refuse("the ticket is not a JWT (header.payload.signature)"));
    };
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    let header: Header = serde_json::from_slice(&b64(h, "header")?)
        .map_err(|_| refuse("the ticket's header is not JSON with `alg`"))?;
    let alg = match header.alg.as_str() {
        "HS256" => TicketAlg::Hs256,
        "ES256" => TicketAlg::Es256,
        "RS256" => TicketAlg::Rs256,
        other => {
            return Err(refuse(format!(
                "the ticket's alg {other:?} is not HS256, ES256 or RS256"
            )))
        }
    };
    let claims: TicketClaims = serde_json::from_slice(&b64(p, "payload")?).map_err(|e| {
        refuse(format!(
            "the ticket's claims need `sub` (string) and `exp` (seconds): {e}"
        ))
    })?;
    let signature = b64(s, "signature")?;
    Ok(Ticket {
        alg,
        signing_input: format!("{h}.{p}"),
        signature,
        claims,
    })
}

/// Checks an `HS256` ticket's signature with the shared secret, in constant time.
pub fn verify_hs256(secret: &[u8], ticket: &Ticket) -> bool {
    if ticket.alg != TicketAlg::Hs256 {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(ticket.signing_input.as_bytes());
    mac.verify_slice(&ticket.signature).is_ok()
}

/// Signs claims as an `HS256` ticket (what an operator's backend does; for tests and tools).
pub fn sign_hs256(secret: &[u8], claims_json: &str) -> String {
    let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        enc(br#"{"alg":"HS256","typ":"JWT"}"#),
        enc(claims_json.as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", enc(&mac.finalize().into_bytes()))
}

impl TicketAlg {
    /// The name JWS gives it (`alg`).
    pub fn name(self) -> &'static str {
        match self {
            TicketAlg::Hs256 => "HS256",
            TicketAlg::Es256 => "ES256",
            TicketAlg::Rs256 => "RS256",
        }
    }
}

/// One of the operator's public keys for `ES256` or `RS256` tickets: the SubjectPublicKeyInfo
/// (DER, what WebCrypto imports as `spki`) and the algorithm its key type serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub alg: TicketAlg,
    pub spki: Vec<u8>,
}

/// Reads `VIEWER_TICKET_PUBLIC_KEY`: one or more PEM `PUBLIC KEY` blocks. Several while a key
/// is rotated: a ticket verifies if any key of its algorithm accepts it. Each key is P-256
/// (for `ES256`) or RSA (for `RS256`), as its algorithm identifier says, so a ticket can
/// never choose how a key is used. Escaped line breaks (`\n` as two characters, as one-line
/// environment variables carry them) count as line breaks.
pub fn parse_public_keys(pem: &str) -> Result<Vec<PublicKey>, String> {
    let text = pem.replace("\\n", "\n");
    let mut keys = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines().map(str::trim) {
        let n = keys.len() + 1;
        match (line, body.as_mut()) {
            ("", _) => {}
            ("-----BEGIN PUBLIC KEY-----", None) => body = Some(String::new()),
            ("-----END PUBLIC KEY-----", Some(b64)) => {
                let spki = base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|_| format!("key {n}: its body is not base64"))?;
                let alg = spki_alg(&spki).map_err(|e| format!("key {n} {e}"))?;
                keys.push(PublicKey { alg, spki });
                body = None;
            }
            (l, _) if l.starts_with("-----") => {
                return Err(format!(
                    "key {n}: {l:?} where a PEM `PUBLIC KEY` block (SPKI) was expected"
                ))
            }
            (l, Some(b64)) => b64.push_str(l),
            (_, None) => {
                return Err(format!(
                    "key {n}: text outside a -----BEGIN PUBLIC KEY----- block"
                ))
            }
        }
    }
    if body.is_some() {
        return Err(format!(
            "key {}: no -----END PUBLIC KEY----- line",
            keys.len() + 1
        ));
    }
    if keys.is_empty() {
        return Err("holds no -----BEGIN PUBLIC KEY----- block".into());
    }
    Ok(keys)
}

/// A DER element: its tag, its content and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| len << 8 | usize::from(b));
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The ticket algorithm a SubjectPublicKeyInfo's key serves: RSA keys `RS256`, P-256 keys
/// `ES256`; anything else is refused.
pub fn spki_alg(spki: &[u8]) -> Result<TicketAlg, String> {
    const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let malformed = || "is not a DER SubjectPublicKeyInfo".to_string();
    let Some((0x30, info, _)) = der_element(spki) else {
        return Err(malformed());
    };
    let Some((0x30, algorithm, _)) = der_element(info) else {
        return Err(malformed());
    };
    let Some((0x06, oid, params)) = der_element(algorithm) else {
        return Err(malformed());
    };
    if oid == RSA_ENCRYPTION {
        Ok(TicketAlg::Rs256)
    } else if oid == EC_PUBLIC_KEY {
        match der_element(params) {
            Some((0x06, curve, _)) if curve == P256 => Ok(TicketAlg::Es256),
            _ => Err("is an EC key on a curve other than P-256 (ES256 is P-256)".into()),
        }
    } else {
        Err("is neither an RSA nor a P-256 key (tickets are ES256 or RS256)".into())
    }
}

impl TicketClaims {
    /// Checks the claims for `broadcast` at `now` (unix seconds); returns the viewer's user id.
    pub fn check(&self, broadcast: &str, now: i64) -> Result<&str, TicketError> {
        crate::ids::validate_user_id(&self.sub)
            .map_err(|e| refuse(format!("the ticket's `sub` {}", e.problem)))?;
        if self.exp + CLOCK_LEEWAY_SECS <= now {
            return Err(refuse("the ticket has expired"));
        }
        if self.exp > now + MAX_TICKET_LIFETIME_SECS {
            return Err(refuse(format!(
                "the ticket is valid for longer than {MAX_TICKET_LIFETIME_SECS} s; tickets \
                 must be short-lived"
            )));
        }
        if self.nbf.is_some_and(|nbf| nbf > now + CLOCK_LEEWAY_SECS) {
            return Err(refuse("the ticket is not valid yet (nbf)"));
        }
        let for_us = match &self.aud {
            None => true,
            Some(Audience::One(a)) => a == broadcast,
            Some(Audience::Many(list)) => list.iter().any(|a| a == broadcast),
        };
        if !for_us {
            return Err(refuse(format!(
                "the ticket is not for broadcast {broadcast:?} (aud)"
            )));
        }
        Ok(&self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_160_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn hs(claims: &str) -> Ticket {
        parse(&sign_hs256(SECRET, claims)).unwrap()
    }

    const P256_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvvQ4ZPv4aSWmct4x+8Oyg6UTh2QG
dJwiQvyQgfRYmb4ZEekftEJ5sSjUfVYPTA+U2vsyj08OpX9ZGYBL7D8fGA==
-----END PUBLIC KEY-----
";
    const RSA_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEApX37eHWHAoTMlcAMmQl+
haWuiXj9pRDqGXFFV3Gc8CrgRCv1XShm1tck990gLESWLmLLz6961QnIyvF+P7Cv
KKK/5Qc+V4ZP4WzJOIRsPuy5Ii/l5mnF2FsnPu6c3btllneFOS2MAopwA9didNXl
KKAuB9SzrDRlbe5WprVttOH4oKOo1dnhk0UJQlPavS9e6UynAfsV5tnXq8r2mnUl
gXqPvSm9CC53U3mcYGdbMJGGoFoVK4sJfVxSP3MGZs9+MMh/eqVcEgg1awmDUpNw
H0jEB2WVMbVvPQRjmsI8kwg+MoFPhN9sG1EJbafeK1iS9R3ka+Eal6olr0BUgTbz
lwIDAQAB
-----END PUBLIC KEY-----
";
    const P384_PEM: &str = "-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEBzA+t6FGY6g2sRfCyZWAqE20NmqmYq5N
qMvj8KBX0MODDtmzA1eVjbRTgJu1mawZk9rlZ6L6Th9fSF0xxWLlzDiEQAP5RRDR
5hFsKkfBddoYWFAw3JPUCVN+PoDNFOF0
-----END PUBLIC KEY-----
";
    const ED25519_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA9NCwbQIAR0aYC6mfs4UIN/j1jP7EO2gT5e/zAmcc63U=
-----END PUBLIC KEY-----
";

    #[test]
    fn public_keys_serve_the_algorithm_of_their_key_type() {
        let keys = parse_public_keys(&format!("{P256_PEM}\n{RSA_PEM}")).unwrap();
        let algs: Vec<TicketAlg> = keys.iter().map(|k| k.alg).collect();
        assert_eq!(algs, [TicketAlg::Es256, TicketAlg::Rs256]);
        assert_eq!(keys[0].spki.len(), 91, "a P-256 SPKI is 91 bytes");
        // One line, as an environment variable carries it.
        let one_line = RSA_PEM.trim().replace('\n', "\\n");
        assert_eq!(
            parse_public_keys(&one_line).unwrap()[0].alg,
            TicketAlg::Rs256
        );
    }

    #[test]
    fn public_keys_of_other_kinds_or_shapes_are_refused_by_position() {
        let p384 = parse_public_keys(&format!("{P256_PEM}{P384_PEM}")).unwrap_err();
        assert!(
            p384.starts_with("key 2 is an EC key on a curve other than P-256"),
            "{p384}"
        );
        let ed = parse_public_keys(ED25519_PEM).unwrap_err();
        assert!(ed.contains("neither an RSA nor a P-256 key"), "{ed}");
        assert!(parse_public_keys("").unwrap_err().contains("no -----BEGIN"));
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(parse_public_keys(private)
            .unwrap_err()
            .contains("PUBLIC KEY"));
        let cut = &RSA_PEM[..RSA_PEM.len() - 30];
        assert!(parse_public_keys(cut).unwrap_err().contains("no -----END"));
        let garbled = P256_PEM.replace("MFkw", "MFk!");
        assert!(parse_public_keys(&garbled)
            .unwrap_err()
            .contains("not base64"));
        assert!(parse_public_keys("MFkw").unwrap_err().contains("outside"));
    }

    #[test]
    fn a_truncated_or_lying_der_is_malformed_not_a_panic() {
        let spki = &parse_public_keys(P256_PEM).unwrap()[0].spki;
        for cut in 0..spki.len() {
            assert!(spki_alg(&spki[..cut]).is_err(), "prefix {cut}");
        }
        // The outer length is true, an inner one points past it.
        assert!(spki_alg(&[0x30, 0x03, 0x30, 0x05, 0x06]).is_err());
        let mut long = spki.clone();
        long[1] = 0x84; // a four-byte length that points past the end
        assert!(spki_alg(&long).is_err());
        assert!(spki_alg(&[0x30, 0x80]).is_err(), "indefinite length");
    }

    #[test]
    fn a_good_ticket_names_its_viewer() {
        let t = hs(&format!(
            r#"{{"sub":"ann","exp":{},"aud":["a","b"]}}"#,
            NOW + 60
        ));
        assert!(verify_hs256(SECRET, &t));
        assert_eq!(t.claims.check("b", NOW).unwrap(), "ann");
    }

    #[test]
    fn a_forged_or_altered_ticket_fails_verification() {
        let token = sign_hs256(SECRET, &format!(r#"{{"sub":"ann","exp":{}}}"#, NOW + 60));
        assert!(!verify_hs256(
            b"another secret of 32 bytes......",
            &parse(&token).unwrap()
        ));
        // Swap the payload for one naming somebody else, keep the signature.
        let other = sign_hs256(SECRET, &format!(r#"{{"sub":"eve","exp":{}}}"#, NOW + 60));
        let (h, rest) = token.split_once('.').unwrap();
        let sig = rest.split_once('.').unwrap().1;
        let payload = other.split('.').nth(1).unwrap();
        let forged = parse(&format!("{h}.{payload}.{sig}")).unwrap();
        assert!(!verify_hs256(SECRET, &forged));
    }

    #[test]
    fn claims_are_checked() {
        let check = |claims: String| hs(&claims).claims.check("show", NOW).map(str::to_string);
        assert!(check(format!(r#"{{"sub":"ann","exp":{}}}"#, NOW - 31)).is_err());
        assert!(check(format!(r#"{{"sub":"ann","exp":{}}}"#, NOW - 10)).is_ok());
        assert!(check(format!(r#"{{"sub":"ann","exp":{}}}"#, NOW + 2 * 86_400)).is_err());
        assert!(check(format!(
            r#"{{"sub":"ann","exp":{},"nbf":{}}}"#,
            NOW + 60,
            NOW + 120
        ))
        .is_err());
        assert!(check(format!(
            r#"{{"sub":"ann","exp":{},"aud":"other"}}"#,
            NOW + 60
        ))
        .is_err());
        assert!(check(format!(r#"{{"sub":"host","exp":{}}}"#, NOW + 60)).is_err());
        assert!(check(format!(r#"{{"sub":"a b","exp":{}}}"#, NOW + 60)).is_err());
    }

    #[test]
    fn malformed_tickets_are_refused_with_a_reason() {
        for bad in ["", "a.b", "a.b.c.d", "!!.e30.AA", &"x".repeat(5000)] {
            assert!(parse(bad).is_err(), "{bad:.20}");
        }
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let none = format!(
            "{}.{}.",
            enc(br#"{"alg":"none"}"#),
            enc(br#"{"sub":"a","exp":1}"#)
        );
        assert!(parse(&none).unwrap_err().0.contains("none"));
        let no_exp = format!(
            "{}.{}.AA",
            enc(br#"{"alg":"HS256"}"#),
            enc(br#"{"sub":"a"}"#)
        );
        assert!(parse(&no_exp).is_err());
        let es = format!(
            "{}.{}.AA",
            enc(br#"{"alg":"ES256"}"#),
            enc(br#"{"sub":"a","exp":1}"#)
        );
        let t = parse(&es).unwrap();
        assert_eq!(t.alg, TicketAlg::Es256);
        assert!(
            !verify_hs256(SECRET, &t),
            "an ES256 ticket never passes as HS256"
        );
    }
}
