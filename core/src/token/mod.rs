//! IVS Real-Time participant tokens: ES384 JWTs in the claims format IVS documents for
//! self-signed tokens ("Generate Participant Tokens with a Key Pair").
//!
//! - Header: `{"alg":"ES384","typ":"JWT","kid":"<public-key ARN>"}`.
//! - Claims: `exp`, `iat`, `jti` (= participant id), `user_id` (optional), `resource` (stage
//!   ARN), `topic` (stage id), `events_url`, `whip_url`, `capabilities{allow_publish,
//!   allow_subscribe}`, `attributes` (optional), `version` `"1.0"`.
//!
//! [`TokenBuilder`] validates the claims and yields an [`UnsignedToken`], which is signed
//! either here with the `p384` crate (RFC 6979 deterministic ECDSA: no random source needed)
//! through [`UnsignedToken::sign`], or elsewhere (WebCrypto in the worker) by signing
//! [`UnsignedToken::signing_input`] and passing the 96-byte `r‖s` to [`UnsignedToken::finish`].
//! [`verify`] checks a token's signature against a key found by `kid`, then its claims against
//! `now`. Time and random bytes are arguments.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p384::ecdsa::signature::{Signer, Verifier};
use p384::ecdsa::Signature;
use p384::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ivs;

pub use p384::ecdsa::{SigningKey, VerifyingKey};

/// The JWT algorithm IVS accepts for self-signed tokens.
pub const ALG: &str = "ES384";
/// The claims format version.
pub const VERSION: &str = "1.0";
/// The longest allowed lifetime, `exp - iat`: 14 days.
pub const MAX_LIFETIME_SECS: i64 = 14 * 24 * 3600;
/// The longest `jti` (participant id).
pub const MAX_JTI_LEN: usize = 64;
/// How far in the future `iat` may be (clock differences between minting and checking).
pub const IAT_LEEWAY_SECS: i64 = 60;
/// Length of a raw ES384 signature (`r‖s`, 48 bytes each).
pub const SIGNATURE_LEN: usize = 96;

/// The JOSE header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Always `ES384`.
    pub alg: String,
    /// `JWT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// The public key's ARN, used to find the key that verifies the token.
    #[serde(default)]
    pub kid: String,
}

/// What the participant may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// May publish audio/video.
    #[serde(default)]
    pub allow_publish: bool,
    /// May subscribe to others.
    #[serde(default)]
    pub allow_subscribe: bool,
}

/// The token's claims, in IVS's names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Issue time, unix seconds.
    pub iat: i64,
    /// The participant id, `[A-Za-z0-9_-]{1,64}`.
    pub jti: String,
    /// Optional user id (≤ 128 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The stage ARN.
    pub resource: String,
    /// The stage id (last part of the ARN).
    pub topic: String,
    /// The stage's `endpoints.events`.
    pub events_url: String,
    /// The stage's `endpoints.whip`.
    pub whip_url: String,
    /// Publish / subscribe rights.
    pub capabilities: Capabilities,
    /// Optional attributes (≤ 1 KB in total).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    /// `"1.0"`.
    pub version: String,
}

/// Why a token could not be made or was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// A claim does not meet IVS's rules.
    #[error("invalid claim '{field}': {reason}")]
    InvalidClaim {
        /// The claim.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Not three base64url parts, or bad JSON.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is not ES384.
    #[error("unsupported algorithm '{0}'")]
    UnsupportedAlgorithm(String),
    /// No key is known for the `kid`.
    #[error("unknown key id '{0}'")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// A signature is not 96 bytes.
    #[error("ES384 signature must be 96 bytes, got {0}")]
    SignatureLength(usize),
    /// `exp` is not after `now`.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// `exp`.
        exp: i64,
        /// The checking time.
        now: i64,
    },
    /// `iat` is in the future.
    #[error("token issued in the future at {iat} (now {now})")]
    NotYetValid {
        /// `iat`.
        iat: i64,
        /// The checking time.
        now: i64,
    },
    /// A key could not be read.
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

fn claim_error(field: &'static str, reason: impl Into<String>) -> TokenError {
    TokenError::InvalidClaim {
        field,
        reason: reason.into(),
    }
}

/// Whether `s` is a valid participant id / `jti`: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_jti(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_JTI_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A participant id from caller-supplied random bytes: 12 alphanumerics, like IVS's.
pub fn participant_id(random: &[u8; 12]) -> String {
    ivs::alphanumeric_id(random)
}

impl Claims {
    /// Checks every rule of IVS's self-signed tokens (see the module docs).
    pub fn validate(&self) -> Result<(), TokenError> {
        if !is_valid_jti(&self.jti) {
            return Err(claim_error("jti", "must match [A-Za-z0-9_-]{1,64}"));
        }
        if let Some(u) = &self.user_id {
            if u.chars().count() > ivs::MAX_USER_ID_CHARS {
                return Err(claim_error("user_id", "must be at most 128 characters"));
            }
        }
        if let Some(a) = &self.attributes {
            if ivs::attributes_size(a) > ivs::MAX_ATTRIBUTES_BYTES {
                return Err(claim_error("attributes", "must be at most 1 KB in total"));
            }
        }
        let arn =
            ivs::Arn::parse(&self.resource).map_err(|e| claim_error("resource", e.to_string()))?;
        if arn.resource_type != ivs::ResourceType::Stage {
            return Err(claim_error("resource", "must be a stage ARN"));
        }
        if self.topic != arn.resource_id {
            return Err(claim_error("topic", "must be the stage id of resource"));
        }
        if self.events_url.is_empty() {
            return Err(claim_error(
                "events_url",
                "must be the stage's events endpoint",
            ));
        }
        if self.whip_url.is_empty() {
            return Err(claim_error("whip_url", "must be the stage's whip endpoint"));
        }
        if self.exp <= self.iat {
            return Err(claim_error("exp", "must be after iat"));
        }
        if self.exp - self.iat > MAX_LIFETIME_SECS {
            return Err(claim_error("exp", "must be at most 14 days after iat"));
        }
        if self.version != VERSION {
            return Err(claim_error("version", "must be \"1.0\""));
        }
        Ok(())
    }
}

/// Builds and validates the claims of one token.
#[derive(Clone, Debug)]
pub struct TokenBuilder {
    kid: String,
    claims: Claims,
}

impl TokenBuilder {
    /// A token for `stage_arn` with the stage's endpoints, signed by the key `kid` (its
    /// public-key ARN). Defaults: subscribe only, no user id or attributes; set the
    /// participant id and the times before [`build`](Self::build).
    pub fn new(kid: &str, stage_arn: &str, whip_url: &str, events_url: &str) -> Self {
        Self {
            kid: kid.to_string(),
            claims: Claims {
                exp: 0,
                iat: 0,
                jti: String::new(),
                user_id: None,
                resource: stage_arn.to_string(),
                topic: ivs::stage_id_from_arn(stage_arn)
                    .unwrap_or_default()
                    .to_string(),
                events_url: events_url.to_string(),
                whip_url: whip_url.to_string(),
                capabilities: Capabilities {
                    allow_publish: false,
                    allow_subscribe: true,
                },
                attributes: None,
                version: VERSION.to_string(),
            },
        }
    }

    /// The participant id (`jti`).
    pub fn participant_id(mut self, id: impl Into<String>) -> Self {
        self.claims.jti = id.into();
        self
    }

    /// The user id.
    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.claims.user_id = Some(user_id.into());
        self
    }

    /// Attributes.
    pub fn attributes(mut self, attributes: BTreeMap<String, String>) -> Self {
        self.claims.attributes = Some(attributes);
        self
    }

    /// Publish / subscribe rights.
    pub fn capabilities(mut self, allow_publish: bool, allow_subscribe: bool) -> Self {
        self.claims.capabilities = Capabilities {
            allow_publish,
            allow_subscribe,
        };
        self
    }

    /// Issued at `now` (unix seconds), valid for `ttl_secs`.
    pub fn valid_for(mut self, now: i64, ttl_secs: i64) -> Self {
        self.claims.iat = now;
        self.claims.exp = now.saturating_add(ttl_secs);
        self
    }

    /// Validates and returns the token to sign.
    pub fn build(self) -> Result<UnsignedToken, TokenError> {
        if self.kid.is_empty() {
            return Err(claim_error("kid", "must be the public key ARN"));
        }
        self.claims.validate()?;
        let header = Header {
            alg: ALG.to_string(),
            typ: Some("JWT".to_string()),
            kid: self.kid,
        };
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header serializes")),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&self.claims).expect("claims serialize"))
        );
        Ok(UnsignedToken {
            header,
            claims: self.claims,
            signing_input,
        })
    }
}

/// A validated token waiting for its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsignedToken {
    /// The header.
    pub header: Header,
    /// The claims.
    pub claims: Claims,
    signing_input: String,
}

impl UnsignedToken {
    /// `base64url(header) "." base64url(claims)`: the bytes to sign with ECDSA P-384/SHA-384.
    pub fn signing_input(&self) -> &str {
        &self.signing_input
    }

    /// Appends a raw 96-byte `r‖s` signature made elsewhere (e.g. WebCrypto
    /// `sign({name:"ECDSA",hash:"SHA-384"}, …)`) and returns the JWT.
    pub fn finish(self, signature: &[u8]) -> Result<String, TokenError> {
        if signature.len() != SIGNATURE_LEN {
            return Err(TokenError::SignatureLength(signature.len()));
        }
        Ok(format!(
            "{}.{}",
            self.signing_input,
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// Signs with `key` (deterministic, RFC 6979) and returns the JWT.
    pub fn sign(self, key: &SigningKey) -> String {
        let signature: Signature = key.sign(self.signing_input.as_bytes());
        let bytes = signature.to_bytes();
        self.finish(&bytes).expect("p384 signatures are 96 bytes")
    }
}

/// A token whose signature and times were accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The header.
    pub header: Header,
    /// The claims.
    pub claims: Claims,
}

fn decode_part<T: for<'de> Deserialize<'de>>(
    part: &str,
    what: &'static str,
) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed(what))
}

/// Splits a token and decodes its header and claims WITHOUT checking the signature (for
/// routing and logs only; never trust the result).
pub fn decode_unverified(token: &str) -> Result<(Header, Claims), TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("a JWT has three parts"));
    };
    Ok((
        decode_part(h, "header is not base64url JSON")?,
        decode_part(c, "claims are not base64url JSON")?,
    ))
}

/// Verifies a token: `alg` ES384, a key found for `kid` by `lookup`, the signature over
/// `header.claims`, then `exp > now`, `iat <= now + 60 s`, and IVS's claim rules.
pub fn verify<F>(token: &str, now: i64, lookup: F) -> Result<VerifiedToken, TokenError>
where
    F: FnOnce(&str) -> Option<VerifyingKey>,
{
    let (signing_input, sig_part) = token
        .rsplit_once('.')
        .ok_or(TokenError::Malformed("a JWT has three parts"))?;
    let (header, claims) = decode_unverified(token)?;
    if header.alg != ALG {
        return Err(TokenError::UnsupportedAlgorithm(header.alg));
    }
    let key = lookup(&header.kid).ok_or_else(|| TokenError::UnknownKey(header.kid.clone()))?;
    let sig_bytes = URL_SAFE_NO_PAD
        .decode(sig_part)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    if sig_bytes.len() != SIGNATURE_LEN {
        return Err(TokenError::SignatureLength(sig_bytes.len()));
    }
    let signature = Signature::from_slice(&sig_bytes).map_err(|_| TokenError::BadSignature)?;
    key.verify(signing_input.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;
    if claims.exp <= now {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now,
        });
    }
    if claims.iat > now + IAT_LEEWAY_SECS {
        return Err(TokenError::NotYetValid {
            iat: claims.iat,
            now,
        });
    }
    claims.validate()?;
    Ok(VerifiedToken { header, claims })
}

/// A private key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`, as `openssl genpkey` and WebCrypto
/// export it) or SEC1 (`BEGIN EC PRIVATE KEY`, as `openssl ecparam -genkey` writes it).
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, TokenError> {
    let pem = pem.trim();
    if pem.contains("BEGIN EC PRIVATE KEY") {
        let block = pem
            .find("-----BEGIN EC PRIVATE KEY-----")
            .map(|i| &pem[i..])
            .unwrap_or(pem);
        return p384::SecretKey::from_sec1_pem(block)
            .map(SigningKey::from)
            .map_err(|e| TokenError::InvalidKey(e.to_string()));
    }
    SigningKey::from_pkcs8_pem(pem).map_err(|e| TokenError::InvalidKey(e.to_string()))
}

/// A private key from its 48-byte scalar (e.g. random bytes drawn by the caller); fails for
/// the rare values that are not a valid scalar (zero or ≥ the group order).
pub fn signing_key_from_bytes(scalar: &[u8; 48]) -> Result<SigningKey, TokenError> {
    SigningKey::from_slice(scalar).map_err(|e| TokenError::InvalidKey(e.to_string()))
}

/// The private key as PKCS#8 PEM.
pub fn signing_key_to_pem(key: &SigningKey) -> String {
    key.to_pkcs8_pem(LineEnding::LF)
        .expect("P-384 keys encode")
        .to_string()
}

/// The public key as SPKI PEM (`BEGIN PUBLIC KEY`), the form `ImportPublicKey` takes.
pub fn public_key_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .expect("P-384 keys encode")
}

/// A public key from SPKI PEM; must be a P-384 key.
pub fn verifying_key_from_pem(pem: &str) -> Result<VerifyingKey, TokenError> {
    VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| TokenError::InvalidKey(e.to_string()))
}

/// A fingerprint of a public key: hex SHA-256 of its SPKI DER encoding.
pub fn fingerprint(key: &VerifyingKey) -> String {
    let der = key.to_public_key_der().expect("P-384 keys encode");
    hex::encode(Sha256::digest(der.as_bytes()))
}

#[cfg(test)]
mod tests;
