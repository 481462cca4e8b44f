//! The model's input limits, checked the way IVS checks them.

use super::{Attributes, ParticipantTokenCapability, Tags};

/// Default token duration (minutes) when a request gives none.
pub const DEFAULT_TOKEN_DURATION_MINUTES: u32 = 720;
/// Longest token duration (minutes): 14 days.
pub const MAX_TOKEN_DURATION_MINUTES: u32 = 20_160;
/// Tags per resource.
pub const MAX_TAGS: usize = 50;
/// Token configurations in one CreateStage.
pub const MAX_TOKEN_CONFIGURATIONS: usize = 12;
/// Bytes of attributes (keys plus values).
pub const MAX_ATTRIBUTES_BYTES: usize = 1024;
/// Characters of a user id.
pub const MAX_USER_ID_CHARS: usize = 128;
/// Replications one participant may have at once (an IVS quota, not adjustable).
pub const MAX_REPLICATIONS_PER_PARTICIPANT: usize = 5;

/// Checks a stage or public-key name: `[a-zA-Z0-9-_]*`, at most 128.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.len() > 128 {
        return Err("name must be at most 128 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("name must match [a-zA-Z0-9-_]*".into());
    }
    Ok(())
}

/// Checks a tag map: at most 50, keys 1–128 characters, values at most 256.
pub fn validate_tags(tags: &Tags) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags are allowed per resource"));
    }
    for (k, v) in tags {
        let kc = k.chars().count();
        if kc == 0 || kc > 128 {
            return Err("tag keys must be 1 to 128 characters".into());
        }
        if v.chars().count() > 256 {
            return Err("tag values must be at most 256 characters".into());
        }
    }
    Ok(())
}

/// The size attributes count against the 1 KB limit: the bytes of every key and value.
pub fn attributes_size(attributes: &Attributes) -> usize {
    attributes.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// Checks token inputs shared by CreateStage and CreateParticipantToken.
pub fn validate_token_request(
    duration: Option<u32>,
    user_id: Option<&str>,
    attributes: Option<&Attributes>,
    capabilities: Option<&[ParticipantTokenCapability]>,
) -> Result<(), String> {
    if let Some(d) = duration {
        if !(1..=MAX_TOKEN_DURATION_MINUTES).contains(&d) {
            return Err(format!(
                "duration must be between 1 and {MAX_TOKEN_DURATION_MINUTES} minutes"
            ));
        }
    }
    if let Some(u) = user_id {
        if u.chars().count() > MAX_USER_ID_CHARS {
            return Err(format!(
                "userId must be at most {MAX_USER_ID_CHARS} characters"
            ));
        }
    }
    if let Some(a) = attributes {
        if attributes_size(a) > MAX_ATTRIBUTES_BYTES {
            return Err("attributes must be at most 1 KB in total".into());
        }
    }
    if let Some(c) = capabilities {
        if c.len() > 2 {
            return Err("capabilities must have at most 2 members".into());
        }
    }
    Ok(())
}

/// Checks `maxResults` against a model's range (1..=max) and returns it or the default.
pub fn page_size(max_results: Option<u32>, default: u32, max: u32) -> Result<u32, String> {
    match max_results {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(format!("maxResults must be between 1 and {max}")),
    }
}
