//! The host routes: the tokens of every stage, the host publishing to one, and the end.

use serde_json::{json, Value};
use stagefan_core::config::FanoutMode;
use worker::{Request, Response};

use crate::auth::{self, Role};
use crate::body::{self, JsonBody};
use crate::calls::{Ended, PoolCall, PublisherStages};
use crate::error::{AppError, AppResult};

use super::{
    json_response, mint, pool_call, pool_name, require_broadcast, resolve_broadcast, rfc3339_ms,
    Edge,
};

pub(super) async fn publisher_all(mut req: Request, edge: &Edge) -> AppResult<Response> {
    auth::require(&req, Role::Host, edge.settings.host_key.as_deref())?;
    let body = JsonBody::read(&mut req).await?;
    let broadcast = resolve_broadcast(edge, &body)?;
    // A host may name the mode it expects; a pool in the other mode refuses (409).
    let fanout_mode = body
        .optional_str("fanoutMode")?
        .map(FanoutMode::parse)
        .transpose()
        .map_err(|e| AppError::bad_field("fanoutMode", e.to_string()))?;
    // The host publishes in every region: each region's pool (made on first use) and the
    // tokens of its stages, each naming its region. The primary's answer decides (a refusal
    // there is the answer); another region that fails is listed in `unavailable` and asked
    // again at the host's next call.
    let config = &edge.settings.config;
    let mut tokens = Vec::new();
    let mut replicas = Vec::new();
    let mut unavailable = Vec::new();
    let mut creating = 0;
    let mut primary: Option<PublisherStages> = None;
    for region in config.region_names() {
        let publisher = PoolCall::Publisher { fanout_mode };
        let pool = pool_name(edge, &broadcast, region);
        let stages: PublisherStages = match pool_call(edge, &pool, publisher).await {
            Ok(stages) => stages,
            Err(e) if region != config.ivs_region => {
                worker::console_error!("publisher-all: region {region}: {e:?}");
                unavailable.push(json!({"region": region, "status": e.status()}));
                continue;
            }
            Err(e) => return Err(e),
        };
        for stage in &stages.stages {
            let minted = mint(
                edge,
                region,
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
                "region": region,
            }));
        }
        for replica in &stages.replicas {
            let mut r = serde_json::to_value(replica)?;
            r["region"] = json!(region);
            replicas.push(r);
        }
        creating += stages.creating;
        if primary.is_none() {
            primary = Some(stages);
        }
    }
    let primary = primary.ok_or_else(|| AppError::Internal("no primary region".into()))?;
    json_response(&json!({
        "broadcast": primary.broadcast,
        "fanoutMode": primary.fanout_mode.as_str(),
        "tokens": tokens,
        "creating": creating,
        "replicas": replicas,
        "regions": config.region_names(),
        "unavailable": unavailable,
    }))
}

/// The pool of a stage the host names: that of the region in its ARN
/// (`arn:aws:ivs:{region}:…`); an ARN of a region this deployment does not run is a 400
/// naming `stageArn`, one without a region is the primary's.
fn pool_of_stage(edge: &Edge, broadcast: &str, stage_arn: &str) -> AppResult<String> {
    let config = &edge.settings.config;
    let region = stagefan_core::regions::region_of_arn(stage_arn).unwrap_or(&config.ivs_region);
    if config.region(region).is_none() {
        return Err(AppError::bad_field(
            "stageArn",
            format!(
                "`stageArn` is a stage of region {region:?}, which this deployment does not run"
            ),
        ));
    }
    Ok(pool_name(edge, broadcast, region))
}

pub(super) async fn host_published(mut req: Request, edge: &Edge) -> AppResult<Response> {
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
    let pool = pool_of_stage(edge, &broadcast, &stage_arn)?;
    let published = PoolCall::Published {
        stage_arn,
        participant_id,
    };
    let result: Value = pool_call(edge, &pool, published).await?;
    json_response(&result)
}

/// `POST /api/broadcasts/{id}/end`: the host ends the broadcast. Every seat is freed (their
/// heartbeats then answer `410 broadcast_ended`), new seats are refused the same way, and
/// every stage is drained and deleted through the paced delete path, in every region. A
/// later `publisher-all` starts the broadcast afresh. Idempotent.
pub(super) async fn end_broadcast(req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
    auth::require(&req, Role::Host, edge.settings.host_key.as_deref())?;
    body::validate_broadcast("broadcast", id)?;
    // Ending a broadcast nobody made is a 404 that touches no pool.
    require_broadcast(edge, id).await?;
    let config = &edge.settings.config;
    let mut ended: Option<Ended> = None;
    let (mut seats_freed, mut stages_deleting) = (0, 0);
    for region in config.region_names() {
        let pool = pool_name(edge, id, region);
        match pool_call::<Ended>(edge, &pool, PoolCall::End).await {
            Ok(e) => {
                seats_freed += e.seats_freed;
                stages_deleting += e.stages_deleting;
                ended.get_or_insert(e);
            }
            // Another region's pool that was never made has nothing to end.
            Err(AppError::Forwarded { status: 404, .. }) if region != config.ivs_region => {}
            Err(e) => return Err(e),
        }
    }
    let ended = ended.ok_or_else(|| AppError::Internal("no primary region".into()))?;
    json_response(&json!({
        "broadcast": ended.broadcast,
        "broadcastState": "ended",
        "endedAt": rfc3339_ms(ended.ended_at),
        "seatsFreed": seats_freed,
        "stagesDeleting": stages_deleting,
    }))
}
