//! The host routes: the tokens of every stage, the host publishing to one, and the end.

use serde_json::{json, Value};
use stagefan_core::config::FanoutMode;
use worker::{Request, Response};

use crate::auth::{self, Role};
use crate::body::{self, JsonBody};
use crate::calls::{Ended, PoolCall, PublisherStages};
use crate::error::{AppError, AppResult};

use super::{
    json_response, mint, pool_call, require_broadcast, resolve_broadcast, rfc3339_ms, Edge,
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
    let published = PoolCall::Published {
        stage_arn,
        participant_id,
    };
    let result: Value = pool_call(edge, &broadcast, published).await?;
    json_response(&result)
}

/// `POST /api/broadcasts/{id}/end`: the host ends the broadcast. Every seat is freed (their
/// heartbeats then answer `410 broadcast_ended`), new seats are refused the same way, and
/// every stage is drained and deleted through the paced delete path. A later
/// `publisher-all` starts the broadcast afresh. Idempotent.
pub(super) async fn end_broadcast(req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
    auth::require(&req, Role::Host, edge.settings.host_key.as_deref())?;
    body::validate_broadcast("broadcast", id)?;
    // Ending a broadcast nobody made is a 404 that touches no pool.
    require_broadcast(edge, id).await?;
    let ended: Ended = pool_call(edge, id, PoolCall::End).await?;
    json_response(&json!({
        "broadcast": ended.broadcast,
        "broadcastState": "ended",
        "endedAt": rfc3339_ms(ended.ended_at),
        "seatsFreed": ended.seats_freed,
        "stagesDeleting": ended.stages_deleting,
    }))
}
