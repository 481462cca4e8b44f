//! ARNs of IVS Real-Time resources, and the ids IVS makes for them.

use std::fmt;

/// The resource types of IVS Real-Time ARNs that stagefan handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceType {
    /// `stage/…`
    Stage,
    /// `public-key/…`
    PublicKey,
}

impl ResourceType {
    /// The ARN's resource-type segment.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Stage => "stage",
            ResourceType::PublicKey => "public-key",
        }
    }
}

/// A parsed `arn:aws:ivs:{region}:{account}:{type}/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Arn {
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// 12-digit account id.
    pub account_id: String,
    /// Stage or public key.
    pub resource_type: ResourceType,
    /// The id, `[a-zA-Z0-9-]+` (IVS makes 12 alphanumerics).
    pub resource_id: String,
}

/// Why a string is not an IVS ARN of ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid IVS ARN '{arn}': {reason}")]
pub struct ArnError {
    /// The input.
    pub arn: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl Arn {
    /// A stage ARN.
    pub fn stage(region: &str, account_id: &str, id: &str) -> Self {
        Self {
            region: region.into(),
            account_id: account_id.into(),
            resource_type: ResourceType::Stage,
            resource_id: id.into(),
        }
    }

    /// A public-key ARN.
    pub fn public_key(region: &str, account_id: &str, id: &str) -> Self {
        Self {
            region: region.into(),
            account_id: account_id.into(),
            resource_type: ResourceType::PublicKey,
            resource_id: id.into(),
        }
    }

    /// Parses `arn:aws:ivs:{region}:{account}:stage/{id}` or `…:public-key/{id}`.
    pub fn parse(arn: &str) -> Result<Arn, ArnError> {
        let err = |reason| ArnError {
            arn: arn.chars().take(256).collect(),
            reason,
        };
        let rest = arn
            .strip_prefix("arn:aws:ivs:")
            .ok_or_else(|| err("must start with arn:aws:ivs:"))?;
        let mut parts = rest.splitn(3, ':');
        let region = parts.next().unwrap_or_default();
        let account = parts.next().ok_or_else(|| err("missing account id"))?;
        let resource = parts.next().ok_or_else(|| err("missing resource"))?;
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err("bad region"));
        }
        if account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("bad account id"));
        }
        let (kind, id) = resource
            .split_once('/')
            .ok_or_else(|| err("resource must be type/id"))?;
        let resource_type = match kind {
            "stage" => ResourceType::Stage,
            "public-key" => ResourceType::PublicKey,
            _ => return Err(err("resource type must be stage or public-key")),
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(err("bad resource id"));
        }
        if arn.len() > 128 {
            return Err(err("longer than 128 characters"));
        }
        Ok(Arn {
            region: region.into(),
            account_id: account.into(),
            resource_type,
            resource_id: id.into(),
        })
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:aws:ivs:{}:{}:{}/{}",
            self.region,
            self.account_id,
            self.resource_type.as_str(),
            self.resource_id
        )
    }
}

/// The stage id (the token's `topic`) of a stage ARN: its last path segment.
pub fn stage_id_from_arn(arn: &str) -> Option<&str> {
    let (_, id) = arn.rsplit_once(":stage/")?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')).then_some(id)
}

const ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Alphanumeric characters from caller-supplied random bytes, one per byte (`byte % 62`: a
/// slight bias, harmless for identifiers).
pub fn alphanumeric_id(random: &[u8]) -> String {
    random
        .iter()
        .map(|b| ALNUM[usize::from(*b) % ALNUM.len()] as char)
        .collect()
}

/// A resource id as IVS makes them: 12 alphanumerics.
pub fn resource_id(random: &[u8; 12]) -> String {
    alphanumeric_id(random)
}

/// A stage session id: `st-` + 13 alphanumerics (16 characters, as the model requires).
pub fn session_id(random: &[u8; 13]) -> String {
    format!("st-{}", alphanumeric_id(random))
}
