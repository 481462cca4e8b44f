//! The viewer routes: a seat and its token, heartbeats, leaving, a stage found missing.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use worker::{Request, Response};

use stagefan_core::regions::{Location, PlacementRequest};

use crate::body::{self, JsonBody};
use crate::calls::{JoinGrant, PoolCall, Renewed, StageCall};
use crate::error::{AppError, AppResult};
use crate::runtime;

use super::mint::Minted;
use super::{
    json_response, mint, pool_call, pool_name, region_of_pool, require_broadcast,
    resolve_broadcast, rfc3339_ms, stage_call, Edge,
};

pub(super) async fn viewer_token(mut req: Request, edge: &Edge) -> AppResult<Response> {
    let client = client_of(&req).filter(|_| edge.settings.config.admission_control);
    let location = location_of(&req);
    let body = JsonBody::read(&mut req).await?;
    let broadcast = resolve_broadcast(edge, &body)?;
    // A reconnect presents its lease: the only way back to a seat. It must be a lease of
    // this broadcast (it is routed by its prefix), and it names its region's pool.
    let lease_id = body.optional_str("leaseId")?.map(str::to_string);
    let mut lease_region = None;
    if let Some(lease) = &lease_id {
        let pool = stagefan_core::regions::pool_of_lease(lease)?;
        if pool.broadcast != broadcast {
            return Err(AppError::bad_field(
                "leaseId",
                format!("`leaseId` is a lease of another broadcast than {broadcast:?}"),
            ));
        }
        lease_region = Some(region_of_pool(edge, pool.region).map_err(|r| {
            AppError::bad_field(
                "leaseId",
                format!("`leaseId` is a lease of region {r:?}, which this deployment does not run"),
            )
        })?);
    }
    let preferred = body.optional_str("region")?;
    if let Some(r) = preferred {
        stagefan_core::regions::validate_region(r)?;
    }
    let order = placement(edge, location, preferred, lease_region.as_deref())?;
    admit(edge, client.as_deref()).await?;
    require_broadcast(edge, &broadcast).await?;
    let user_id = viewer_identity(edge, &body, &broadcast).await?;
    // Each region in turn: a pool that cannot seat (full, or its region's quota used up)
    // sends the viewer on to the next; only when every region refuses is the answer a 503,
    // for the limit that bound (a region's quota if any refused for it).
    let mut refusals: Vec<(String, AppError)> = Vec::new();
    let mut seated = None;
    for region in &order {
        let pool = pool_name(edge, &broadcast, region);
        let join = PoolCall::Join {
            user_id: user_id.clone(),
            // The lease only in its own region's pool (elsewhere it is no lease).
            lease_id: lease_id
                .clone()
                .filter(|_| lease_region.as_deref() == Some(region.as_str())),
            client: client.clone(),
        };
        match pool_call::<JoinGrant>(edge, &pool, join).await {
            Ok(grant) => {
                seated = Some((region.clone(), pool, grant));
                break;
            }
            Err(e) => match refusal_of(&e) {
                Some(Refusal::Full { retry_after_secs }) => {
                    note_refusal(edge, region, retry_after_secs);
                    refusals.push((region.clone(), e));
                }
                // Another region's pool not made (yet): the host's `publisher-all` makes it.
                Some(Refusal::NoPool) if region != &edge.settings.config.ivs_region => {}
                _ => return Err(e),
            },
        }
    }
    let Some((region, pool, grant)) = seated else {
        return Err(
            bound_refusal(refusals).unwrap_or_else(|| AppError::NotFound {
                code: "broadcast_not_found",
                message: format!("no broadcast {broadcast:?}: the host has not started it"),
            }),
        );
    };
    let minted = seat_token(edge, &region, &pool, &grant).await;
    let minted = match minted {
        Ok(m) => m,
        Err(e) => {
            // A seat is granted together with its token or not at all: a new seat whose
            // token could not be made is given back at once (a reconnect keeps its seat).
            if !grant.reconnected {
                give_back(edge, &pool, &grant.lease_id).await;
            }
            return Err(e);
        }
    };
    json_response(&seat_answer(&minted, &grant, &region))
}

/// The token of a granted seat, bound to it (in `api` token mode IVS chooses the participant
/// id, and the seat follows its token).
async fn seat_token(edge: &Edge, region: &str, pool: &str, grant: &JoinGrant) -> AppResult<Minted> {
    let minted = mint(
        edge,
        region,
        &grant.stage_arn,
        &grant.whip_url,
        &grant.events_url,
        &grant.user_id,
        Some(&grant.participant_id),
        false,
    )
    .await?;
    if minted.participant_id != grant.participant_id {
        let bind = PoolCall::Bind {
            lease_id: grant.lease_id.clone(),
            participant_id: minted.participant_id.clone(),
        };
        let _: Value = pool_call(edge, pool, bind).await?;
    }
    Ok(minted)
}

/// Gives a seat back that its viewer never heard of (its token could not be made).
async fn give_back(edge: &Edge, pool: &str, lease_id: &str) {
    let leave = PoolCall::Leave {
        lease_id: lease_id.to_string(),
    };
    let freed: AppResult<Value> = pool_call(edge, pool, leave).await;
    if let Err(free) = freed {
        worker::console_error!("giving back {lease_id} after a failed mint: {free:?}");
    }
}

/// A seat as the viewer hears of it: from `POST /api/token/viewer`, and as the `move` of a
/// heartbeat answer.
fn seat_answer(minted: &Minted, grant: &JoinGrant, region: &str) -> Value {
    json!({
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
        "region": region,
        "stageState": grant.stage_state,
        "reconnected": grant.reconnected,
        "broadcastState": grant.broadcast_state,
        "broadcastStateSince": rfc3339_ms(grant.broadcast_state_since),
    })
}

/// Where the request comes from, as Cloudflare says (`request.cf`: `latitude`, `longitude`,
/// else `continent`); unknown without it.
fn location_of(req: &Request) -> Location {
    use worker::js_sys::Reflect;
    use worker::wasm_bindgen::JsValue;
    let cf = Reflect::get(req.inner(), &JsValue::from_str("cf"))
        .ok()
        .filter(JsValue::is_object);
    let field = |name: &str| {
        cf.as_ref()
            .and_then(|cf| Reflect::get(cf, &JsValue::from_str(name)).ok())
            .and_then(|v| v.as_string().or_else(|| v.as_f64().map(|n| n.to_string())))
    };
    Location::of_cf(
        field("latitude").as_deref(),
        field("longitude").as_deref(),
        field("continent").as_deref(),
    )
}

/// The order of the regions to try for this viewer (`stagefan_core::regions`), with the
/// regions that refused lately (this isolate's memory) last.
fn placement(
    edge: &Edge,
    location: Location,
    preferred: Option<&str>,
    lease_region: Option<&str>,
) -> AppResult<Vec<String>> {
    let config = &edge.settings.config;
    let regions = config.region_names();
    if regions.len() == 1 {
        if let Some(p) = preferred.filter(|p| *p != regions[0]) {
            return Err(AppError::bad_field(
                "region",
                format!(
                    "{p:?} is not a region of this deployment (it runs {})",
                    regions[0]
                ),
            ));
        }
        return Ok(vec![regions[0].to_string()]);
    }
    let now = runtime::now_ms();
    let refusing: Vec<String> = {
        let mut map = edge.isolate.refusing.borrow_mut();
        map.retain(|_, until| *until > now);
        map.keys().cloned().collect()
    };
    let refusing: Vec<&str> = refusing.iter().map(String::as_str).collect();
    let request = PlacementRequest {
        location,
        preferred,
        lease_region,
        refusing: &refusing,
    };
    Ok(stagefan_core::regions::placement_order(&regions, &request)?)
}

/// Longest time a refusing region is tried last.
const REFUSING_MAX_MS: u64 = 5_000;

fn note_refusal(edge: &Edge, region: &str, retry_after_secs: u64) {
    if !edge.settings.config.multi_region() {
        return;
    }
    let until = runtime::now_ms() + (retry_after_secs * 1000).clamp(1000, REFUSING_MAX_MS);
    edge.isolate
        .refusing
        .borrow_mut()
        .insert(region.to_string(), until);
}

/// What a pool's error answer to a join says of the region.
enum Refusal {
    /// `503 no_capacity` or `503 region_quota`: try the next region.
    Full { retry_after_secs: u64 },
    /// `404 broadcast_not_found`: this region's pool was never made.
    NoPool,
}

fn refusal_of(e: &AppError) -> Option<Refusal> {
    let AppError::Forwarded {
        status,
        body,
        retry_after,
    } = e
    else {
        return None;
    };
    let code = error_code(body);
    match (status, code.as_deref()) {
        (503, Some("no_capacity" | "region_quota")) => Some(Refusal::Full {
            retry_after_secs: retry_after
                .as_deref()
                .and_then(|r| r.trim().parse().ok())
                .unwrap_or(1),
        }),
        (404, Some("broadcast_not_found")) => Some(Refusal::NoPool),
        _ => None,
    }
}

fn error_code(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v["error"]["code"].as_str().map(str::to_string)
}

/// The refusal to answer when every region refused: a region's quota if any refused for it
/// (the limit that bound: more stages would not help), else the soonest `no_capacity`.
fn bound_refusal(refusals: Vec<(String, AppError)>) -> Option<AppError> {
    let secs = |e: &AppError| match refusal_of(e) {
        Some(Refusal::Full { retry_after_secs }) => retry_after_secs,
        _ => u64::MAX,
    };
    let is_quota = |e: &AppError| match e {
        AppError::Forwarded { body, .. } => error_code(body).as_deref() == Some("region_quota"),
        _ => false,
    };
    let quota = refusals.iter().any(|(_, e)| is_quota(e));
    refusals
        .into_iter()
        .filter(|(_, e)| !quota || is_quota(e))
        .min_by_key(|(_, e)| secs(e))
        .map(|(_, e)| e)
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
    let pool = lease_pool(edge, &lease_id)
        .await?
        .ok_or_else(AppError::lease_not_found)?;
    let answer = pool_call(edge, &pool, call(lease_id.clone())).await?;
    Ok((lease_id, answer))
}

/// The pool a lease id names (checked in form; `None`: a broadcast nobody made, or a region
/// this deployment does not run, so no pool holds it), without asking any pool.
async fn lease_pool(edge: &Edge, lease_id: &str) -> AppResult<Option<String>> {
    Ok(lease_home(edge, lease_id).await?.map(|home| home.pool))
}

/// Where a lease lives: its pool, its region, and in stage presence its stage.
struct LeaseHome {
    pool: String,
    region: String,
    stage: Option<stagefan_core::pool::StageId>,
}

/// The home of a lease id (checked in form; `None` as for [`lease_pool`]).
async fn lease_home(edge: &Edge, lease_id: &str) -> AppResult<Option<LeaseHome>> {
    let route = body::lease_route(lease_id)?;
    let Ok(region) = region_of_pool(edge, route.pool.region) else {
        return Ok(None);
    };
    if require_broadcast(edge, route.pool.broadcast).await.is_err() {
        return Ok(None);
    }
    Ok(Some(LeaseHome {
        pool: pool_name(edge, route.pool.broadcast, &region),
        region,
        stage: route.stage,
    }))
}

/// A call about a lease, where the lease lives: at its stage's object in stage presence (the
/// pool hears nothing of it), else at its pool.
async fn at_lease<T: DeserializeOwned>(
    edge: &Edge,
    home: &LeaseHome,
    at_stage: StageCall,
    at_pool: PoolCall,
) -> AppResult<T> {
    match home.stage {
        Some(stage) => stage_call(edge, &home.pool, stage, at_stage).await,
        None => pool_call(edge, &home.pool, at_pool).await,
    }
}

pub(super) async fn viewer_heartbeat(mut req: Request, edge: &Edge) -> AppResult<Response> {
    let body = JsonBody::read(&mut req).await?;
    let lease_id = body.required_str("leaseId")?.to_string();
    let Some(home) = lease_home(edge, &lease_id).await? else {
        return Err(AppError::lease_not_found());
    };
    let renewed: Renewed = at_lease(
        edge,
        &home,
        StageCall::Heartbeat {
            lease_id: lease_id.clone(),
        },
        PoolCall::Heartbeat {
            lease_id: lease_id.clone(),
        },
    )
    .await?;
    // A seat on a draining stage moves: the answer carries its new seat, and the viewer
    // gives this one back once the new stage plays (make-before-break).
    let moved = if renewed.moving {
        move_seat(edge, &home, &lease_id).await
    } else {
        None
    };
    json_response(&json!({
        "leaseId": lease_id,
        "expiresAt": rfc3339_ms(renewed.expires_at),
        "broadcastState": renewed.broadcast_state,
        "broadcastStateSince": rfc3339_ms(renewed.broadcast_state_since),
        "move": moved,
    }))
}

/// The new seat of a lease on a draining stage (the same one however often it is asked):
/// `None` when there is none to give now (every other stage full, the region's quota used
/// up, the stage no longer draining), and the viewer asks again at its next heartbeat; a
/// failure does not fail the heartbeat, whose lease was renewed.
async fn move_seat(edge: &Edge, home: &LeaseHome, lease_id: &str) -> Option<Value> {
    let call = PoolCall::Move {
        lease_id: lease_id.to_string(),
    };
    let grant: JoinGrant = match pool_call(edge, &home.pool, call).await {
        Ok(grant) => grant,
        Err(e) => {
            worker::console_log!("no move for {lease_id} yet: {e:?}");
            return None;
        }
    };
    if grant.lease_id == lease_id {
        return None;
    }
    match seat_token(edge, &home.region, &home.pool, &grant).await {
        Ok(minted) => Some(seat_answer(&minted, &grant, &home.region)),
        Err(e) => {
            // The next heartbeat asks again and gets the same new seat: it is kept.
            worker::console_error!("the token of {}'s move: {e:?}", grant.lease_id);
            None
        }
    }
}

pub(super) async fn viewer_leave(mut req: Request, edge: &Edge) -> AppResult<Response> {
    let body = JsonBody::read(&mut req).await?;
    let lease_id = body.required_str("leaseId")?.to_string();
    let Some(home) = lease_home(edge, &lease_id).await? else {
        // Nothing to give back; leaving is idempotent.
        return json_response(&json!({ "left": true }));
    };
    // At its stage, the seat is given back there, and reported to the pool before the answer.
    let _: Value = at_lease(
        edge,
        &home,
        StageCall::Leave {
            lease_id: lease_id.clone(),
        },
        PoolCall::Leave {
            lease_id: lease_id.clone(),
        },
    )
    .await?;
    json_response(&json!({ "left": true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str, retry_after: &str) -> AppError {
        AppError::Forwarded {
            status: 503,
            body: json!({"error": {"code": code, "message": code}}).to_string(),
            retry_after: Some(retry_after.to_string()),
        }
    }

    fn code(e: &AppError) -> String {
        match e {
            AppError::Forwarded { body, .. } => error_code(body).unwrap_or_default(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_full_region_or_a_missing_pool_sends_the_viewer_on_and_nothing_else_does() {
        assert!(matches!(
            refusal_of(&refused("no_capacity", "3")),
            Some(Refusal::Full {
                retry_after_secs: 3
            })
        ));
        assert!(matches!(
            refusal_of(&refused("region_quota", "x")),
            Some(Refusal::Full {
                retry_after_secs: 1
            })
        ));
        let missing = AppError::Forwarded {
            status: 404,
            body: json!({"error": {"code": "broadcast_not_found"}}).to_string(),
            retry_after: None,
        };
        assert!(matches!(refusal_of(&missing), Some(Refusal::NoPool)));
        let ended = AppError::Forwarded {
            status: 410,
            body: json!({"error": {"code": "broadcast_ended"}}).to_string(),
            retry_after: None,
        };
        assert!(refusal_of(&ended).is_none());
        assert!(refusal_of(&refused("rate_limited", "1")).is_none());
        assert!(refusal_of(&AppError::Internal("x".into())).is_none());
    }

    #[test]
    fn when_every_region_refuses_the_quota_that_bound_is_the_answer() {
        let all = |list: &[(&str, &str)]| -> Vec<(String, AppError)> {
            list.iter()
                .enumerate()
                .map(|(i, (c, r))| (format!("r{i}"), refused(c, r)))
                .collect()
        };
        // A region over its quota beats a full one, whatever the Retry-After.
        let e = bound_refusal(all(&[("no_capacity", "1"), ("region_quota", "5")])).unwrap();
        assert_eq!(code(&e), "region_quota");
        // Among the same kind, the soonest.
        let e = bound_refusal(all(&[("no_capacity", "4"), ("no_capacity", "2")])).unwrap();
        assert!(matches!(e, AppError::Forwarded { retry_after: Some(ref r), .. } if r == "2"));
        assert!(bound_refusal(Vec::new()).is_none());
    }
}
