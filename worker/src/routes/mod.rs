//! The edge's HTTP API (docs/contract.md): a flat route table, one named `async fn` per route.
//!
//! Handlers authenticate and validate, hand pool operations to the broadcast's `StagePool`
//! Durable Object, and mint tokens here at the edge (stateless, so minting scales out while
//! the pool stays the single writer of its counts). The routes by who calls them: `viewer`,
//! `host`, `admin` (the monitor); the tokens they mint, `mint`.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use stagefan_core::ledger::{LedgerUsage, Quota};
use stagefan_core::sigv4::UtcDateTime;
use worker::{Env, Method, Request, Response};

use crate::auth;
use crate::body::{self, JsonBody};
use crate::calls::{self, PoolCall};
use crate::error::{AppError, AppResult};
use crate::registry;
use crate::runtime;
use crate::settings::Settings;
use crate::tokens::{SignerKind, TokenKey};

mod admin;
mod host;
mod mint;
mod viewer;

use admin::{
    admin_action, admin_budget_slot, admin_create, admin_list, admin_observations, admin_presence,
    admin_regions, admin_snapshot,
};
use host::{end_broadcast, host_published, publisher_all};
use mint::mint;
use viewer::{viewer_heartbeat, viewer_leave, viewer_stage_missing, viewer_token};

/// What an isolate keeps between requests: parsed settings, the token key, the key's ARN.
struct Isolate {
    settings: Rc<Settings>,
    key: Option<Rc<TokenKey>>,
    signer: SignerKind,
    /// The token key's ARN in each region (configured, or as the registry imported it).
    key_arn: RefCell<BTreeMap<String, String>>,
    /// Regions whose pools refused a viewer lately (full or over a quota), and until when
    /// (unix ms): placement tries them last.
    refusing: RefCell<BTreeMap<String, u64>>,
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
                    key_arn: RefCell::new(settings.token_public_key_arns.clone()),
                    refusing: RefCell::default(),
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
    // Ids may arrive percent-encoded (`b%40eu-west-1`): routes see them decoded.
    let decoded = path
        .trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(stagefan_core::ids::percent_decode_segment)
        .collect::<Result<Vec<_>, _>>()?;
    let segments: Vec<&str> = decoded.iter().map(AsRef::as_ref).collect();
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
        (Post, ["api", "broadcasts", id, "end"]) => end_broadcast(req, edge, id).await,
        (Get, ["api", "admin", "broadcasts"]) => admin_list(req, edge).await,
        (Get, ["api", "admin", "broadcasts", id]) => admin_snapshot(req, edge, id).await,
        (Post, ["api", "admin", "broadcasts", id]) => admin_create(req, edge, id).await,
        (Post, ["api", "admin", "broadcasts", id, "actions"]) => admin_action(req, edge, id).await,
        (Get, ["api", "admin", "broadcasts", id, "presence"]) => {
            admin_presence(req, edge, id).await
        }
        (Post, ["api", "admin", "broadcasts", id, "observations"]) => {
            admin_observations(req, edge, id).await
        }
        (Post, ["api", "admin", "ivs-budget", "slots"]) => admin_budget_slot(req, edge).await,
        (Get, ["api", "admin", "regions"]) => admin_regions(req, edge).await,
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
        "regions": c.region_names(),
    }))
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
        match summary_all(edge, &id).await {
            Ok(summary) => summaries.push(summary),
            Err(AppError::Forwarded { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut page = json!({ "broadcasts": summaries, "next": next });
    if after.is_empty() {
        // Each region's quota use, on the first page (the status page's region quotas).
        page["regions"] = public_region_quotas(&region_usages(edge).await?);
    }
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
    json_response(&summary_all(edge, id).await?)
}

/// A broadcast's public summary over every region: the primary pool's, with each other
/// region's stages added to `stages` and its viewers to `viewers`; every stage names its
/// `region`, and `regions` lists each region's `{region, viewers, broadcastState}`.
async fn summary_all(edge: &Edge, id: &str) -> AppResult<Value> {
    let mut summary: Value = pool_call(edge, id, PoolCall::Summary).await?;
    let config = &edge.settings.config;
    if !config.multi_region() {
        return Ok(summary);
    }
    let tag = |s: &mut Value, region: &str| {
        if let Some(stages) = s["stages"].as_array_mut() {
            for st in stages {
                st["region"] = json!(region);
            }
        }
    };
    let entry = |s: &Value, region: &str| json!({"region": region, "viewers": s["viewers"], "broadcastState": s["broadcastState"]});
    tag(&mut summary, &config.ivs_region);
    let mut regions = vec![entry(&summary, &config.ivs_region)];
    for region in config.region_names().into_iter().skip(1) {
        let pool = pool_name(edge, id, region);
        let mut other: Value = match pool_call(edge, &pool, PoolCall::Summary).await {
            Ok(other) => other,
            Err(AppError::Forwarded { status: 404, .. }) => continue,
            Err(e) => return Err(e),
        };
        tag(&mut other, region);
        regions.push(entry(&other, region));
        let viewers =
            summary["viewers"].as_u64().unwrap_or(0) + other["viewers"].as_u64().unwrap_or(0);
        summary["viewers"] = json!(viewers);
        if let (Some(stages), Some(more)) = (
            summary["stages"].as_array_mut(),
            other["stages"].as_array().cloned(),
        ) {
            stages.extend(more);
        }
    }
    summary["regions"] = json!(regions);
    Ok(summary)
}

// ----- helpers -----------------------------------------------------------------------------

fn resolve_broadcast(edge: &Edge, body: &JsonBody) -> AppResult<String> {
    let named = body.optional_str("broadcast")?;
    if let Some(b) = named {
        body::validate_broadcast("broadcast", b)?;
    }
    Ok(edge.settings.config.resolve_broadcast(named)?)
}

/// The name of `broadcast`'s pool in `region`: the broadcast in the primary region (as
/// before there were several), `{broadcast}@{region}` in another.
fn pool_name(edge: &Edge, broadcast: &str, region: &str) -> String {
    stagefan_core::regions::pool_name(broadcast, region, &edge.settings.config.ivs_region)
}

/// The region of a pool name's region part (`None`: the primary); a region this deployment
/// does not run, or the primary named explicitly, is `None` from `Err`.
fn region_of_pool(edge: &Edge, region: Option<&str>) -> Result<String, String> {
    let config = &edge.settings.config;
    match region {
        None => Ok(config.ivs_region.clone()),
        Some(r) if r != config.ivs_region && config.region(r).is_some() => Ok(r.to_string()),
        Some(r) => Err(r.to_string()),
    }
}

/// Each region's quota ledger (`stagefan_core::ledger::LedgerUsage`), primary first.
async fn region_usages(edge: &Edge) -> AppResult<Vec<(String, LedgerUsage)>> {
    let mut out = Vec::new();
    for region in &edge.settings.config.regions {
        let usage = crate::budget::usage(&edge.env, &region.endpoint, &region.name).await?;
        out.push((region.name.clone(), usage));
    }
    Ok(out)
}

/// The public view of each region's quota use, for the status page: per quota, what
/// stagefan's pools hold (`used`), what stagefan may hold (`usable`: the limit minus the
/// reserve) and the account's `limit`. No more than the public list already tells in sum
/// (every broadcast's viewers and stages), and no endpoint, holder or secret.
fn public_region_quotas(usages: &[(String, LedgerUsage)]) -> Value {
    let regions: Vec<Value> = usages
        .iter()
        .map(|(region, u)| {
            let mut quota = serde_json::Map::new();
            for q in Quota::ALL {
                quota.insert(
                    q.as_str().to_string(),
                    json!({"used": u.held.get(q), "usable": u.usable.get(q), "limit": u.limits.get(q)}),
                );
            }
            json!({"region": region, "quota": quota})
        })
        .collect();
    json!(regions)
}

/// Calls the pool named `pool` (a broadcast, or `{broadcast}@{region}`: [`pool_name`]); an
/// error answer is sent on to the client unchanged.
async fn pool_call<T: DeserializeOwned>(edge: &Edge, pool: &str, call: PoolCall) -> AppResult<T> {
    let url = format!("https://pool/{}/{pool}", call.name());
    let mut response = calls::send(&edge.env, "STAGE_POOL", pool, &url, &call).await?;
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

/// Calls the `StageSeats` of stage `stage` of pool `pool` (`{broadcast}` or
/// `{broadcast}@{region}`; stage presence); an error answer is sent on to the client
/// unchanged.
async fn stage_call<T: DeserializeOwned>(
    edge: &Edge,
    pool: &str,
    stage: stagefan_core::pool::StageId,
    call: calls::StageCall,
) -> AppResult<T> {
    let url = format!("https://stage-seats/{}/{pool}/{stage}", call.name());
    let name = calls::stage_seats_name(pool, stage);
    let mut response = calls::send(&edge.env, "STAGE_SEATS", &name, &url, &call).await?;
    let status = response.status_code();
    if status >= 400 {
        return Err(AppError::Forwarded {
            status,
            body: response.text().await?,
            retry_after: None,
        });
    }
    Ok(response.json().await?)
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
