//! The viewer routes: a seat and its token, heartbeats, leaving, a stage found missing.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use worker::{Request, Response};

use crate::body::{self, JsonBody};
use crate::calls::{JoinGrant, PoolCall, Renewed, StageCall};
use crate::error::{AppError, AppResult};
use crate::runtime;

use super::{
    json_response, mint, pool_call, require_broadcast, resolve_broadcast, rfc3339_ms, stage_call,
    Edge,
};

pub(super) async fn viewer_token(mut req: Request, edge: &Edge) -> AppResult<Response> {
    let client = client_of(&req).filter(|_| edge.settings.config.admission_control);
    let body = JsonBody::read(&mut req).await?;
    let broadcast = resolve_broadcast(edge, &body)?;
    // A reconnect presents its lease: the only way back to a seat. It must be a lease of
    // this broadcast (it is routed by its prefix).
    let lease_id = body.optional_str("leaseId")?.map(str::to_string);
    if let Some(lease) = &lease_id {
        if body::broadcast_of_lease(lease)? != broadcast {
            return Err(AppError::bad_field(
                "leaseId",
                format!("`leaseId` is a lease of another broadcast than {broadcast:?}"),
            ));
        }
    }
    admit(edge, client.as_deref()).await?;
    require_broadcast(edge, &broadcast).await?;
    let user_id = viewer_identity(edge, &body, &broadcast).await?;
    let join = PoolCall::Join {
        user_id,
        lease_id,
        client,
    };
    let grant: JoinGrant = pool_call(edge, &broadcast, join).await?;
    let minted = mint(
        edge,
        &grant.stage_arn,
        &grant.whip_url,
        &grant.events_url,
        &grant.user_id,
        Some(&grant.participant_id),
        false,
    )
    .await;
    let minted = match minted {
        Ok(m) => m,
        Err(e) => {
            // A seat is granted together with its token or not at all: a new seat whose
            // token could not be made is given back at once (a reconnect keeps its seat).
            if !grant.reconnected {
                let leave = PoolCall::Leave {
                    lease_id: grant.lease_id.clone(),
                };
                let freed: AppResult<Value> = pool_call(edge, &broadcast, leave).await;
                if let Err(free) = freed {
                    worker::console_error!(
                        "giving back {} after a failed mint: {free:?}",
                        grant.lease_id
                    );
                }
            }
            return Err(e);
        }
    };
    if minted.participant_id != grant.participant_id {
        // `api` token mode: IVS chose the participant id; the seat follows its token.
        let bind = PoolCall::Bind {
            lease_id: grant.lease_id.clone(),
            participant_id: minted.participant_id.clone(),
        };
        let _: Value = pool_call(edge, &broadcast, bind).await?;
    }
    json_response(&json!({
        "token": minted.token,
        "stageArn": grant.stage_arn,
        "participantId": minted.participant_id,
        "userId": grant.user_id,
        "expiresAt": minted.expires_at,
        "leaseId": grant.lease_id,
        "leaseTtlSeconds": grant.lease_ttl_seconds,
        "leaseExpiresAt": rfc3339_ms(grant.lease_expires_at),
        "whipUrl": grant.whip_url,
        "broadcast": grant.broadcast,
        "stageState": grant.stage_state,
        "reconnected": grant.reconnected,
        "broadcastState": grant.broadcast_state,
        "broadcastStateSince": rfc3339_ms(grant.broadcast_state_since),
    }))
}

/// The viewer's user id: the ticket's subject on a broadcast that requires tickets, else the
/// `userId` it gives (a display name, validated; `host` is reserved).
pub(super) async fn viewer_identity(
    edge: &Edge,
    body: &JsonBody,
    broadcast: &str,
) -> AppResult<String> {
    let given = body.optional_str("userId")?;
    if !edge.settings.config.ticket_broadcasts.requires(broadcast) {
        let user_id = given.ok_or_else(|| AppError::bad_field("userId", "`userId` is required"))?;
        stagefan_core::config::validate_user_id(user_id)?;
        return Ok(user_id.to_string());
    }
    let Some(raw) = body.optional_str("ticket")? else {
        return Err(AppError::TicketRequired(format!(
            "broadcast {broadcast:?} seats ticket holders only: send the `ticket` your \
             provider gave you"
        )));
    };
    let invalid = |why: String| AppError::InvalidTicket(why);
    let ticket = stagefan_core::ticket::parse(raw).map_err(|e| invalid(e.0))?;
    let (secret, public) = (
        edge.settings.ticket_secret.as_deref(),
        edge.settings.ticket_public_key.as_deref(),
    );
    if secret.is_none() && public.is_none() {
        return Err(AppError::NotConfigured(
            "VIEWER_TICKET_SECRET or VIEWER_TICKET_PUBLIC_KEY",
        ));
    }
    // The algorithm is the ticket's claim; what is configured decides whether it is taken.
    let not_taken = || {
        invalid(format!(
            "this deployment does not take {} tickets",
            ticket.alg.name()
        ))
    };
    let verified = match ticket.alg {
        stagefan_core::ticket::TicketAlg::Hs256 => {
            let secret = secret.ok_or_else(not_taken)?;
            stagefan_core::ticket::verify_hs256(secret.as_bytes(), &ticket)
        }
        alg => {
            let keys = stagefan_core::ticket::parse_public_keys(public.ok_or_else(not_taken)?)
                .map_err(|e| AppError::Internal(format!("VIEWER_TICKET_PUBLIC_KEY {e}")))?;
            let keys: Vec<_> = keys.into_iter().filter(|k| k.alg == alg).collect();
            if keys.is_empty() {
                return Err(not_taken());
            }
            crate::tokens::verify_ticket(&keys, &ticket).await?
        }
    };
    if !verified {
        return Err(invalid("the ticket's signature does not verify".into()));
    }
    let subject = ticket
        .claims
        .check(broadcast, runtime::now_secs())
        .map_err(|e| invalid(e.0))?;
    if given.is_some_and(|g| g != subject) {
        return Err(AppError::bad_field(
            "userId",
            "`userId` differs from the ticket's subject (leave it out: the ticket names you)",
        ));
    }
    Ok(subject.to_string())
}

/// The client address Cloudflare saw (`CF-Connecting-IP`, which Cloudflare sets and clients
/// cannot), as the key of per-client limits; `None` when absent or not an address.
pub(super) fn client_of(req: &Request) -> Option<String> {
    let ip = req.headers().get("cf-connecting-ip").ok().flatten()?;
    stagefan_core::pool::client_key(&ip)
}

/// Seconds a client refused by the join-rate limiter waits: the limiter's period
/// (`[[ratelimits]]` in wrangler.toml).
const JOIN_LIMIT_PERIOD_SECS: u32 = 10;

/// Per-client admission on the viewer route: Cloudflare's rate-limiting binding
/// (`VIEWER_JOIN_LIMITER`), keyed by the client's address. Without the binding, or without a
/// client address, nothing is limited here (the pool's seats-per-client limit still holds).
pub(super) async fn admit(edge: &Edge, client: Option<&str>) -> AppResult<()> {
    let Some(client) = client else {
        return Ok(());
    };
    let Ok(limiter) = edge.env.rate_limiter("VIEWER_JOIN_LIMITER") else {
        return Ok(());
    };
    match limiter.limit(client.to_string()).await {
        Ok(outcome) if !outcome.success => Err(AppError::TooManyRequests {
            code: "rate_limited",
            message: format!(
                "this address asks for seats too often; retry in {JOIN_LIMIT_PERIOD_SECS} s"
            ),
            retry_after_secs: JOIN_LIMIT_PERIOD_SECS,
        }),
        Ok(_) => Ok(()),
        Err(e) => {
            // The limiter failing must not close the route.
            worker::console_error!("rate limiter: {e:?}");
            Ok(())
        }
    }
}

/// A viewer whose join found its stage missing (`STAGE_NOT_FOUND`) says so; the pool asks
/// IVS and, if the stage is gone, marks it and evicts its seats (the answer says whether).
pub(super) async fn viewer_stage_missing(req: Request, edge: &Edge) -> AppResult<Response> {
    let (_, answer): (_, Value) =
        lease_call(req, edge, |lease_id| PoolCall::StageMissing { lease_id }).await?;
    json_response(&answer)
}

/// A viewer route that names its lease only: reads `leaseId`, finds its broadcast (a lease of
/// a broadcast nobody made is `lease_not_found`, without touching a pool) and asks the pool.
pub(super) async fn lease_call<T: DeserializeOwned>(
    mut req: Request,
    edge: &Edge,
    call: impl FnOnce(String) -> PoolCall,
) -> AppResult<(String, T)> {
    let body = JsonBody::read(&mut req).await?;
    let lease_id = body.required_str("leaseId")?.to_string();
    let broadcast = body::broadcast_of_lease(&lease_id)?.to_string();
    require_broadcast(edge, &broadcast)
        .await
        .map_err(|_| AppError::lease_not_found())?;
    let answer = pool_call(edge, &broadcast, call(lease_id.clone())).await?;
    Ok((lease_id, answer))
}

pub(super) async fn viewer_heartbeat(mut req: Request, edge: &Edge) -> AppResult<Response> {
    let body = JsonBody::read(&mut req).await?;
    let lease_id = body.required_str("leaseId")?.to_string();
    let route = body::lease_route(&lease_id)?;
    require_broadcast(edge, route.broadcast)
        .await
        .map_err(|_| AppError::lease_not_found())?;
    // A lease of stage presence is renewed at its stage's object, named by the lease id: the
    // pool hears nothing of it.
    let renewed: Renewed = match route.stage {
        Some(stage) => {
            let call = StageCall::Heartbeat {
                lease_id: lease_id.clone(),
            };
            stage_call(edge, route.broadcast, stage, call).await?
        }
        None => {
            let call = PoolCall::Heartbeat {
                lease_id: lease_id.clone(),
            };
            pool_call(edge, route.broadcast, call).await?
        }
    };
    json_response(&json!({
        "leaseId": lease_id,
        "expiresAt": rfc3339_ms(renewed.expires_at),
        "broadcastState": renewed.broadcast_state,
        "broadcastStateSince": rfc3339_ms(renewed.broadcast_state_since),
    }))
}

pub(super) async fn viewer_leave(mut req: Request, edge: &Edge) -> AppResult<Response> {
    let body = JsonBody::read(&mut req).await?;
    let lease_id = body.required_str("leaseId")?.to_string();
    let route = body::lease_route(&lease_id)?;
    if require_broadcast(edge, route.broadcast).await.is_err() {
        // Nothing to give back; leaving is idempotent.
        return json_response(&json!({ "left": true }));
    }
    let _: Value = match route.stage {
        // Given back at its stage, which reports it to the pool before it answers.
        Some(stage) => {
            let call = StageCall::Leave {
                lease_id: lease_id.clone(),
            };
            stage_call(edge, route.broadcast, stage, call).await?
        }
        None => {
            let call = PoolCall::Leave {
                lease_id: lease_id.clone(),
            };
            pool_call(edge, route.broadcast, call).await?
        }
    };
    json_response(&json!({ "left": true }))
}
