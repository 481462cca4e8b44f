//! The edge's HTTP API (docs/contract.md): a flat route table, one named `async fn` per route.
//!
//! Handlers authenticate and validate, hand pool operations to the broadcast's `StagePool`
//! Durable Object, and mint tokens here at the edge (stateless, so minting scales out while
//! the pool stays the single writer of its counts).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use stagefan_core::config::{FanoutMode, TokenMode};
use stagefan_core::ivs::{
    CreateParticipantTokenRequest, CreateParticipantTokenResponse, Operation,
    ParticipantTokenCapability,
};
use stagefan_core::policy::ScaleAction;
use stagefan_core::pool::Observation;
use stagefan_core::sigv4::UtcDateTime;
use stagefan_core::token::{participant_id, TokenBuilder};
use worker::{Env, Method, Request, Response};

use crate::auth::{self, Role};
use crate::body::{self, JsonBody};
use crate::budget;
use crate::calls::{self, JoinGrant, PoolCall, PublisherStages, Renewed};
use crate::error::{AppError, AppResult};
use crate::ivs_client::{CallError, IvsClient, Retry};
use crate::registry;
use crate::runtime;
use crate::settings::Settings;
use crate::tokens::{SignerKind, TokenKey};

/// What an isolate keeps between requests: parsed settings, the token key, the key's ARN.
struct Isolate {
    settings: Rc<Settings>,
    key: Option<Rc<TokenKey>>,
    signer: SignerKind,
    key_arn: RefCell<Option<String>>,
    /// Broadcasts the registry said exist (they are never unmade while an isolate lives).
    known: RefCell<BTreeSet<String>>,
    /// Broadcasts the registry said do not exist, and when it said so.
    unknown: RefCell<BTreeMap<String, u64>>,
    /// Pages of the public broadcast list, by (after, limit), with when they were made.
    list_cache: RefCell<BTreeMap<(String, u32), (u64, Value)>>,
}

/// How long an isolate believes "no such broadcast" before asking the registry again.
const UNKNOWN_TTL_MS: u64 = 5_000;
/// How many unknown names an isolate remembers (a flood of made-up names cycles through it).
const UNKNOWN_MAX: usize = 10_000;
/// How long a page of the public broadcast list is served from the isolate's cache.
const LIST_CACHE_MS: u64 = 2_000;
/// Broadcasts per page of `GET /api/broadcasts` (default and most).
const LIST_PAGE_DEFAULT: u32 = 20;
const LIST_PAGE_MAX: u32 = 50;

thread_local! {
    static ISOLATE: RefCell<Option<Rc<Isolate>>> = const { RefCell::new(None) };
}

/// One request's view: the bindings and the isolate's cache.
pub struct Edge {
    env: Env,
    settings: Rc<Settings>,
    key: Option<Rc<TokenKey>>,
    signer: SignerKind,
    isolate: Rc<Isolate>,
}

impl Edge {
    fn new(env: Env) -> AppResult<Edge> {
        let isolate = match ISOLATE.with(|c| c.borrow().clone()) {
            Some(isolate) => isolate,
            None => {
                let settings = Rc::new(Settings::from_env(&env)?);
                let key = match settings.token_private_key.as_deref() {
                    Some(pem) => Some(TokenKey::from_pem(pem)?),
                    None => None,
                };
                let isolate = Rc::new(Isolate {
                    signer: SignerKind::parse(settings.token_signer.as_deref())?,
                    key_arn: RefCell::new(settings.token_public_key_arn.clone()),
                    known: RefCell::default(),
                    unknown: RefCell::default(),
                    list_cache: RefCell::default(),
                    settings,
                    key,
                });
                ISOLATE.with(|slot| *slot.borrow_mut() = Some(isolate.clone()));
                isolate
            }
        };
        Ok(Edge {
            env,
            settings: isolate.settings.clone(),
            key: isolate.key.clone(),
            signer: isolate.signer,
            isolate,
        })
    }
}

/// Every request enters here; the only place errors become responses, and CORS is added.
pub async fn handle(req: Request, env: Env) -> Response {
    let method = req.method();
    let path = req.path();
    let response = if method == Method::Options {
        Response::empty()
            .map(|r| r.with_status(204))
            .map_err(AppError::from)
    } else {
        match Edge::new(env) {
            Ok(edge) => dispatch(req, &edge, method, &path).await,
            Err(e) => Err(e),
        }
    };
    let response = response.unwrap_or_else(AppError::into_response);
    with_cors(response)
}

/// The route table.
async fn dispatch(req: Request, edge: &Edge, method: Method, path: &str) -> AppResult<Response> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    use Method::{Get, Post};
    match (method, segments.as_slice()) {
        (Get, ["api", "config"]) => get_config(edge).await,
        (Post, ["api", "token", "viewer"]) => viewer_token(req, edge).await,
        (Post, ["api", "viewer", "heartbeat"]) => viewer_heartbeat(req, edge).await,
        (Post, ["api", "viewer", "leave"]) => viewer_leave(req, edge).await,
        (Post, ["api", "viewer", "stage-missing"]) => viewer_stage_missing(req, edge).await,
        (Get, ["api", "broadcasts"]) => list_broadcasts(req, edge).await,
        (Get, ["api", "broadcasts", id]) => get_broadcast(req, edge, id).await,
        (Post, ["api", "token", "publisher-all"]) => publisher_all(req, edge).await,
        (Post, ["api", "host", "published"]) => host_published(req, edge).await,
        (Get, ["api", "admin", "broadcasts"]) => admin_list(req, edge).await,
        (Get, ["api", "admin", "broadcasts", id]) => admin_snapshot(req, edge, id).await,
        (Post, ["api", "admin", "broadcasts", id]) => admin_create(req, edge, id).await,
        (Post, ["api", "admin", "broadcasts", id, "actions"]) => admin_action(req, edge, id).await,
        (Post, ["api", "admin", "broadcasts", id, "observations"]) => {
            admin_observations(req, edge, id).await
        }
        (Post, ["api", "admin", "ivs-budget", "slots"]) => admin_budget_slot(req, edge).await,
        (_, ["api", "config" | "broadcasts" | "admin", ..])
        | (_, ["api", "token" | "viewer" | "host", _]) => Err(AppError::MethodNotAllowed),
        _ => Err(AppError::NotFound {
            code: "not_found",
            message: format!("no route {path}"),
        }),
    }
}

// ----- public routes ---------------------------------------------------------------------

async fn get_config(edge: &Edge) -> AppResult<Response> {
    let c = &edge.settings.config;
    json_response(&json!({
        "mediaMode": c.media_mode.as_str(),
        "fanoutMode": c.fanout_mode.as_str(),
        "tokenMode": c.token_mode.as_str(),
        "defaultBroadcast": c.default_broadcast,
    }))
}

async fn viewer_token(mut req: Request, edge: &Edge) -> AppResult<Response> {
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
    }))
}

/// The viewer's user id: the ticket's subject on a broadcast that requires tickets, else the
/// `userId` it gives (a display name, validated; `host` is reserved).
async fn viewer_identity(edge: &Edge, body: &JsonBody, broadcast: &str) -> AppResult<String> {
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
    let verified = match ticket.alg {
        stagefan_core::ticket::TicketAlg::Hs256 => {
            let secret = edge
                .settings
                .ticket_secret
                .as_deref()
                .ok_or(AppError::NotConfigured("VIEWER_TICKET_SECRET"))?;
            stagefan_core::ticket::verify_hs256(secret.as_bytes(), &ticket)
        }
        _ => {
            let key = edge
                .settings
                .ticket_public_key
                .as_deref()
                .ok_or(AppError::NotConfigured("VIEWER_TICKET_PUBLIC_KEY"))?;
            crate::tokens::verify_ticket(key, &ticket).await?
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
fn client_of(req: &Request) -> Option<String> {
    let ip = req.headers().get("cf-connecting-ip").ok().flatten()?;
    stagefan_core::pool::client_key(&ip)
}

/// Attempts of one `CreateParticipantToken` (each in its own budget slot).
const TOKEN_ATTEMPTS: u32 = 3;
/// A viewer whose token slot is further away than this is told to come back (503).
const TOKEN_SLOT_MAX_WAIT_MS: u64 = 3_000;

/// Seconds a client refused by the join-rate limiter waits: the limiter's period
/// (`[[ratelimits]]` in wrangler.toml).
const JOIN_LIMIT_PERIOD_SECS: u32 = 10;

/// Per-client admission on the viewer route: Cloudflare's rate-limiting binding
/// (`VIEWER_JOIN_LIMITER`), keyed by the client's address. Without the binding, or without a
/// client address, nothing is limited here (the pool's seats-per-client limit still holds).
async fn admit(edge: &Edge, client: Option<&str>) -> AppResult<()> {
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
async fn viewer_stage_missing(req: Request, edge: &Edge) -> AppResult<Response> {
    let (_, answer): (_, Value) =
        lease_call(req, edge, |lease_id| PoolCall::StageMissing { lease_id }).await?;
    json_response(&answer)
}

/// A viewer route that names its lease only: reads `leaseId`, finds its broadcast (a lease of
/// a broadcast nobody made is `lease_not_found`, without touching a pool) and asks the pool.
async fn lease_call<T: DeserializeOwned>(
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

async fn viewer_heartbeat(req: Request, edge: &Edge) -> AppResult<Response> {
    let (lease_id, renewed): (_, Renewed) =
        lease_call(req, edge, |lease_id| PoolCall::Heartbeat { lease_id }).await?;
    json_response(&json!({ "leaseId": lease_id, "expiresAt": rfc3339_ms(renewed.expires_at) }))
}

async fn viewer_leave(mut req: Request, edge: &Edge) -> AppResult<Response> {
    let body = JsonBody::read(&mut req).await?;
    let lease_id = body.required_str("leaseId")?.to_string();
    let broadcast = body::broadcast_of_lease(&lease_id)?.to_string();
    if require_broadcast(edge, &broadcast).await.is_err() {
        // Nothing to give back; leaving is idempotent.
        return json_response(&json!({ "left": true }));
    }
    let _: Value = pool_call(edge, &broadcast, PoolCall::Leave { lease_id }).await?;
    json_response(&json!({ "left": true }))
}

async fn list_broadcasts(req: Request, edge: &Edge) -> AppResult<Response> {
    // Bounded in cost: a page at a time (`?limit=` up to 50, `?after=` the last id of the
    // previous page), each page served from the isolate's cache for 2 s.
    let url = req.url()?;
    let mut after = String::new();
    let mut limit = LIST_PAGE_DEFAULT;
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "after" => {
                body::validate_broadcast("after", &v)?;
                after = v.to_string();
            }
            "limit" => {
                limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=LIST_PAGE_MAX).contains(n))
                    .ok_or_else(|| {
                        AppError::bad_field("limit", format!("`limit` must be 1-{LIST_PAGE_MAX}"))
                    })?;
            }
            _ => {}
        }
    }
    let now = runtime::now_ms();
    let key = (after.clone(), limit);
    if let Some((at, page)) = edge.isolate.list_cache.borrow().get(&key) {
        if now.saturating_sub(*at) < LIST_CACHE_MS {
            return json_response(page);
        }
    }
    let mut ids = registry::page(&edge.env, &after, limit).await?;
    let full = ids.len() as u32 == limit;
    let next = if full { ids.last().cloned() } else { None };
    if let Some(default) = &edge.settings.config.default_broadcast {
        if after.is_empty() && !ids.contains(default) {
            ids.insert(0, default.clone());
        }
    }
    let mut summaries = Vec::new();
    for id in ids {
        match pool_call::<Value>(edge, &id, PoolCall::Summary).await {
            Ok(summary) => summaries.push(summary),
            Err(AppError::Forwarded { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let page = json!({ "broadcasts": summaries, "next": next });
    let mut cache = edge.isolate.list_cache.borrow_mut();
    cache.retain(|_, (at, _)| now.saturating_sub(*at) < LIST_CACHE_MS);
    cache.insert(key, (now, page.clone()));
    json_response(&page)
}

/// A public request names a broadcast: it must exist (its pool was made, or it is the
/// configured default), else 404 without touching any pool, so that requests for made-up
/// names create no Durable Object and no storage. The registry is asked once per name per
/// isolate (a negative answer is believed for 5 s).
async fn require_broadcast(edge: &Edge, broadcast: &str) -> AppResult<()> {
    if edge.settings.config.default_broadcast.as_deref() == Some(broadcast)
        || edge.isolate.known.borrow().contains(broadcast)
    {
        return Ok(());
    }
    let now = runtime::now_ms();
    let not_found = || AppError::NotFound {
        code: "broadcast_not_found",
        message: format!("no broadcast {broadcast:?}: the host has not started it"),
    };
    if let Some(at) = edge.isolate.unknown.borrow().get(broadcast) {
        if now.saturating_sub(*at) < UNKNOWN_TTL_MS {
            return Err(not_found());
        }
    }
    if registry::has(&edge.env, broadcast).await? {
        edge.isolate
            .known
            .borrow_mut()
            .insert(broadcast.to_string());
        edge.isolate.unknown.borrow_mut().remove(broadcast);
        return Ok(());
    }
    let mut unknown = edge.isolate.unknown.borrow_mut();
    if unknown.len() >= UNKNOWN_MAX {
        unknown.retain(|_, at| now.saturating_sub(*at) < UNKNOWN_TTL_MS);
        if unknown.len() >= UNKNOWN_MAX {
            unknown.clear();
        }
    }
    unknown.insert(broadcast.to_string(), now);
    Err(not_found())
}

async fn get_broadcast(req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
    body::validate_broadcast("broadcast", id)?;
    if auth::has(&req, edge.settings.admin_key.as_deref()) {
        let snapshot: Value = pool_call(edge, id, PoolCall::Snapshot).await?;
        return json_response(&snapshot);
    }
    require_broadcast(edge, id).await?;
    let summary: Value = pool_call(edge, id, PoolCall::Summary).await?;
    json_response(&summary)
}

// ----- host routes -----------------------------------------------------------------------

async fn publisher_all(mut req: Request, edge: &Edge) -> AppResult<Response> {
    auth::require(&req, Role::Host, edge.settings.host_key.as_deref())?;
    let body = JsonBody::read(&mut req).await?;
    let broadcast = resolve_broadcast(edge, &body)?;
    // A host may name the mode it expects; a pool in the other mode refuses (409).
    let fanout_mode = body
        .optional_str("fanoutMode")?
        .map(FanoutMode::parse)
        .transpose()
        .map_err(|e| AppError::bad_field("fanoutMode", e.to_string()))?;
    let publisher = PoolCall::Publisher { fanout_mode };
    let stages: PublisherStages = pool_call(edge, &broadcast, publisher).await?;
    let mut tokens = Vec::with_capacity(stages.stages.len());
    for stage in &stages.stages {
        let minted = mint(
            edge,
            &stage.stage_arn,
            &stage.whip_url,
            &stage.events_url,
            stagefan_core::config::HOST_USER_ID,
            None,
            true,
        )
        .await?;
        tokens.push(json!({
            "stageArn": stage.stage_arn,
            "token": minted.token,
            "participantId": minted.participant_id,
            "expiresAt": minted.expires_at,
            "whipUrl": stage.whip_url,
            "state": stage.state,
        }));
    }
    json_response(&json!({
        "broadcast": stages.broadcast,
        "fanoutMode": stages.fanout_mode.as_str(),
        "tokens": tokens,
        "creating": stages.creating,
        "replicas": stages.replicas,
    }))
}

async fn host_published(mut req: Request, edge: &Edge) -> AppResult<Response> {
    auth::require(&req, Role::Host, edge.settings.host_key.as_deref())?;
    let body = JsonBody::read(&mut req).await?;
    let broadcast = resolve_broadcast(edge, &body)?;
    let stage_arn = body.required_str("stageArn")?.to_string();
    body::validate_stage_arn(&stage_arn)?;
    let participant_id = body.required_str("participantId")?.to_string();
    if !stagefan_core::token::is_valid_jti(&participant_id) {
        return Err(AppError::bad_field(
            "participantId",
            "`participantId` must be 1-64 characters of A-Z a-z 0-9 _ -",
        ));
    }
    let published = PoolCall::Published {
        stage_arn,
        participant_id,
    };
    let result: Value = pool_call(edge, &broadcast, published).await?;
    json_response(&result)
}

// ----- admin routes (the monitor) --------------------------------------------------------

async fn admin_list(req: Request, edge: &Edge) -> AppResult<Response> {
    auth::require(&req, Role::Admin, edge.settings.admin_key.as_deref())?;
    let ids = registry::list(&edge.env).await?;
    json_response(&json!({ "broadcasts": ids }))
}

/// An admin route on one broadcast's pool: the admin key, and a valid broadcast id.
fn admin_pool(req: &Request, edge: &Edge, id: &str) -> AppResult<()> {
    auth::require(req, Role::Admin, edge.settings.admin_key.as_deref())?;
    body::validate_broadcast("broadcast", id)
}

async fn admin_snapshot(req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
    admin_pool(&req, edge, id)?;
    let snapshot: Value = pool_call(edge, id, PoolCall::Snapshot).await?;
    json_response(&snapshot)
}

async fn admin_create(mut req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
    admin_pool(&req, edge, id)?;
    let _ = JsonBody::read(&mut req).await?;
    let snapshot: Value = pool_call(edge, id, PoolCall::Ensure).await?;
    json_response(&snapshot)
}

async fn admin_action(mut req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
    admin_pool(&req, edge, id)?;
    let body = JsonBody::read(&mut req).await?;
    let action = body.required_str("action")?;
    let stage_arn = || -> AppResult<String> {
        let arn = body.required_str("stageArn")?.to_string();
        body::validate_stage_arn(&arn)?;
        Ok(arn)
    };
    let action = match action {
        "create" => ScaleAction::Create,
        "drain" => ScaleAction::Drain {
            stage_arn: stage_arn()?,
        },
        "delete" => ScaleAction::Delete {
            stage_arn: stage_arn()?,
        },
        _ => {
            return Err(AppError::bad_field(
                "action",
                "`action` must be one of create, drain, delete",
            ))
        }
    };
    let result: Value = pool_call(edge, id, PoolCall::Action { action }).await?;
    json_response(&result)
}

async fn admin_observations(mut req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
    admin_pool(&req, edge, id)?;
    let body = JsonBody::read(&mut req).await?;
    body.optional_u64("observedAt")?;
    match body.get("stages") {
        Some(Value::Array(_)) => {}
        _ => {
            return Err(AppError::bad_field(
                "stages",
                "`stages` must be an array of {stageArn, publishers, subscribers}",
            ))
        }
    }
    let value = Value::Object(
        ["observedAt", "stages", "missing"]
            .iter()
            .filter_map(|k| body.get(k).map(|v| (k.to_string(), v.clone())))
            .collect(),
    );
    let observation: Observation = serde_json::from_value(value)
        .map_err(|e| AppError::bad_request("invalid_json", format!("observations: {e}")))?;
    let report: Value = pool_call(edge, id, PoolCall::Observations { observation }).await?;
    json_response(&report)
}

/// A slot of the account-wide IVS budget for a caller outside the worker (the monitor's
/// orphan deletes): the same `IvsBudget` schedule the pools take theirs from, so that IVS
/// sees at most its rate of each stage operation from stagefan as a whole.
async fn admin_budget_slot(mut req: Request, edge: &Edge) -> AppResult<Response> {
    auth::require(&req, Role::Admin, edge.settings.admin_key.as_deref())?;
    let body = JsonBody::read(&mut req).await?;
    let name = body.required_str("operation")?;
    let config = &edge.settings.config;
    let op = Operation::from_name(name)
        .filter(|op| config.budget.rate(*op).is_some())
        .ok_or_else(|| {
            AppError::bad_field(
                "operation",
                "`operation` must be one of CreateStage, DeleteStage, \
                 StartParticipantReplication, StopParticipantReplication",
            )
        })?;
    let throttled = match body.get("throttled") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(AppError::bad_field(
                "throttled",
                "`throttled` must be true or false",
            ))
        }
    };
    let slot = budget::reserve(
        &edge.env,
        &config.ivs_endpoint,
        &config.ivs_region,
        op,
        throttled,
    )
    .await?;
    json_response(&json!({ "operation": op.name(), "at": slot.at, "waitMs": slot.wait_ms }))
}

// ----- helpers -----------------------------------------------------------------------------

fn resolve_broadcast(edge: &Edge, body: &JsonBody) -> AppResult<String> {
    let named = body.optional_str("broadcast")?;
    if let Some(b) = named {
        body::validate_broadcast("broadcast", b)?;
    }
    Ok(edge.settings.config.resolve_broadcast(named)?)
}

/// Calls the broadcast's pool; an error answer is sent on to the client unchanged.
async fn pool_call<T: DeserializeOwned>(
    edge: &Edge,
    broadcast: &str,
    call: PoolCall,
) -> AppResult<T> {
    let url = format!("https://pool/{}/{broadcast}", call.name());
    let mut response = calls::send(&edge.env, "STAGE_POOL", broadcast, &url, &call).await?;
    let status = response.status_code();
    if status >= 400 {
        let retry_after = response.headers().get("retry-after").ok().flatten();
        return Err(AppError::Forwarded {
            status,
            body: response.text().await?,
            retry_after,
        });
    }
    Ok(response.json().await?)
}

struct Minted {
    token: String,
    participant_id: String,
    expires_at: String,
}

/// A participant token for one stage: self-signed (ES384) or from `CreateParticipantToken`.
async fn mint(
    edge: &Edge,
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
            let kid = key_arn(edge, key).await?;
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
            let client = IvsClient::new(
                &config.ivs_endpoint,
                &config.ivs_region,
                edge.settings.credentials()?.clone(),
            );
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
                match crate::budget::reserve(
                    &edge.env,
                    &config.ivs_endpoint,
                    &config.ivs_region,
                    op,
                    throttled,
                )
                .await
                {
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

/// The ARN of our public key in IVS, imported on first use (once per isolate, by the registry).
async fn key_arn(edge: &Edge, key: &TokenKey) -> AppResult<String> {
    if let Some(arn) = edge.isolate.key_arn.borrow().clone() {
        return Ok(arn);
    }
    let arn = registry::public_key_arn(&edge.env, &key.public_pem).await?;
    *edge.isolate.key_arn.borrow_mut() = Some(arn.clone());
    Ok(arn)
}

fn rfc3339_ms(ms: u64) -> String {
    UtcDateTime::from_unix((ms / 1000) as i64).rfc3339()
}

fn json_response(value: &Value) -> AppResult<Response> {
    Ok(Response::from_json(value)?)
}

fn with_cors(mut response: Response) -> Response {
    const CORS: [(&str, &str); 5] = [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "GET, POST, OPTIONS"),
        (
            "access-control-allow-headers",
            "authorization, content-type",
        ),
        ("access-control-expose-headers", "retry-after"),
        ("access-control-max-age", "86400"),
    ];
    // Every response here is built by this worker (none is a fetched one passed through), so
    // its headers are mutable: set in place, no copy per request.
    let headers = response.headers_mut();
    for (name, value) in CORS {
        let _ = headers.set(name, value);
    }
    response
}
