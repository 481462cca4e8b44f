//! Participant tokens, minted at the edge: self-signed (ES384) or from IVS's
//! `CreateParticipantToken`.

use stagefan_core::config::TokenMode;
use stagefan_core::ivs::{
    CreateParticipantTokenRequest, CreateParticipantTokenResponse, Operation,
    ParticipantTokenCapability,
};
use stagefan_core::sigv4::UtcDateTime;
use stagefan_core::token::{participant_id, TokenBuilder};

use crate::error::{AppError, AppResult};
use crate::ivs_client::{CallError, IvsClient, Retry};
use crate::registry;
use crate::runtime;
use crate::tokens::TokenKey;

use super::Edge;

/// Attempts of one `CreateParticipantToken` (each in its own budget slot).
const TOKEN_ATTEMPTS: u32 = 3;
/// A viewer whose token slot is further away than this is told to come back (503).
const TOKEN_SLOT_MAX_WAIT_MS: u64 = 3_000;

/// A participant token and what the answer says of it.
pub(super) struct Minted {
    pub token: String,
    pub participant_id: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// A participant token for one stage of `region`: self-signed (ES384, with the key's ARN in
/// that region) or from that region's `CreateParticipantToken`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn mint(
    edge: &Edge,
    region: &str,
    stage_arn: &str,
    whip_url: &str,
    events_url: &str,
    user_id: &str,
    participant: Option<&str>,
    publish: bool,
) -> AppResult<Minted> {
    let config = &edge.settings.config;
    let ttl = i64::from(config.token_ttl_seconds);
    match config.token_mode {
        TokenMode::SelfSigned => {
            let key = edge
                .key
                .as_ref()
                .ok_or(AppError::NotConfigured("TOKEN_PRIVATE_KEY"))?;
            let kid = key_arn(edge, key, region).await?;
            let now = runtime::now_secs();
            let pid = match participant {
                Some(p) => p.to_string(),
                None => participant_id(&runtime::random::<12>()),
            };
            let unsigned = TokenBuilder::new(&kid, stage_arn, whip_url, events_url)
                .participant_id(pid.clone())
                .user_id(user_id)
                .capabilities(publish, true)
                .valid_for(now, ttl)
                .build()
                .map_err(|e| AppError::Internal(format!("token claims: {e}")))?;
            let token = key.sign(unsigned, edge.signer).await?;
            Ok(Minted {
                token,
                participant_id: pid,
                expires_at: UtcDateTime::from_unix(now + ttl).rfc3339(),
            })
        }
        TokenMode::Api => {
            let endpoint = config
                .region(region)
                .map(|r| r.endpoint.clone())
                .ok_or_else(|| AppError::Internal(format!("no region {region:?}")))?;
            let client = IvsClient::new(&endpoint, region, edge.settings.credentials()?.clone());
            let mut capabilities = vec![ParticipantTokenCapability::Subscribe];
            if publish {
                capabilities.insert(0, ParticipantTokenCapability::Publish);
            }
            let request = CreateParticipantTokenRequest {
                stage_arn: stage_arn.to_string(),
                duration: Some((config.token_ttl_seconds / 60).max(1)),
                user_id: Some(user_id.to_string()),
                capabilities: Some(capabilities),
                ..Default::default()
            };
            // Paced account-wide at IVS's rate (50 per second) by the IVS budget: every
            // attempt takes its slot, a throttled one tells the budget.
            let mut throttled = false;
            let mut attempt = 1;
            let answer: CreateParticipantTokenResponse = loop {
                let op = Operation::CreateParticipantToken;
                match crate::budget::reserve(&edge.env, &endpoint, region, op, throttled).await {
                    Ok(slot) => {
                        let wait = slot.at.saturating_sub(runtime::now_ms());
                        if wait > TOKEN_SLOT_MAX_WAIT_MS {
                            return Err(AppError::Throttled);
                        }
                        if wait > 0 {
                            worker::Delay::from(std::time::Duration::from_millis(wait)).await;
                        }
                    }
                    Err(e) => worker::console_error!("IVS budget unreachable for a token: {e:?}"),
                }
                match client.call(op, &request, Retry::NONE).await {
                    Ok(answer) => break answer,
                    Err(e) if e.is_retryable() && attempt < TOKEN_ATTEMPTS => {
                        throttled = e.is_throttling();
                        attempt += 1;
                    }
                    Err(e) if e.is_throttling() => return Err(AppError::Throttled),
                    Err(CallError::Ivs(e)) => return Err(AppError::Upstream(e.to_string())),
                    Err(e) => return Err(AppError::Upstream(e.to_string())),
                }
            };
            let token = answer
                .participant_token
                .ok_or_else(|| AppError::Upstream("CreateParticipantToken: no token".into()))?;
            Ok(Minted {
                token: token.token.unwrap_or_default(),
                participant_id: token.participant_id.unwrap_or_default(),
                expires_at: token.expiration_time.unwrap_or_default(),
            })
        }
    }
}

/// The ARN of our public key in IVS in `region`, imported on first use (once per region and
/// isolate, by the registry).
pub(super) async fn key_arn(edge: &Edge, key: &TokenKey, region: &str) -> AppResult<String> {
    if let Some(arn) = edge.isolate.key_arn.borrow().get(region).cloned() {
        return Ok(arn);
    }
    let arn = registry::public_key_arn(&edge.env, &key.public_pem, Some(region)).await?;
    edge.isolate
        .key_arn
        .borrow_mut()
        .insert(region.to_string(), arn.clone());
    Ok(arn)
}
