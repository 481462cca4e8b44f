//! The admin routes (the monitor): broadcasts, snapshots, scaling actions, observations, and
//! slots of the account-wide IVS budget.

use serde_json::{json, Value};
use stagefan_core::config::RegionConfig;
use stagefan_core::ivs::Operation;
use stagefan_core::policy::ScaleAction;
use stagefan_core::pool::Observation;
use worker::{Request, Response};

use crate::auth::{self, Role};
use crate::body::{self, JsonBody};
use crate::budget;
use crate::calls::{ObjectCounters, PoolCall, StageCall};
use crate::error::{AppError, AppResult};
use crate::registry;

use super::{json_response, pool_call, pool_name, region_of_pool, region_usages, stage_call, Edge};

pub(super) async fn admin_list(req: Request, edge: &Edge) -> AppResult<Response> {
    auth::require(&req, Role::Admin, edge.settings.admin_key.as_deref())?;
    let ids = registry::list(&edge.env).await?;
    json_response(&json!({ "broadcasts": ids }))
}

/// An admin route on one pool: the admin key, and a valid pool name: a broadcast id (its
/// primary region's pool) or `{broadcast}@{region}` for another region of the deployment.
pub(super) fn admin_pool(req: &Request, edge: &Edge, id: &str) -> AppResult<()> {
    auth::require(req, Role::Admin, edge.settings.admin_key.as_deref())?;
    let pool = stagefan_core::regions::parse_pool_name("broadcast", id)?;
    region_of_pool(edge, pool.region).map_err(|r| {
        AppError::bad_field(
            "broadcast",
            format!("{r:?} is not another region of this deployment"),
        )
    })?;
    Ok(())
}

pub(super) async fn admin_snapshot(req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
    admin_pool(&req, edge, id)?;
    let snapshot: Value = pool_call(edge, id, PoolCall::Snapshot).await?;
    json_response(&snapshot)
}

/// The request counters of a broadcast's objects since they started: its pool's and each of
/// its stages' `StageSeats` (stage presence), so a benchmark counts what each object took
/// rather than estimating it. A broadcast nobody made is `404 broadcast_not_found`.
pub(super) async fn admin_presence(req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
    admin_pool(&req, edge, id)?;
    let broadcast = stagefan_core::regions::parse_pool_name("broadcast", id)?.broadcast;
    if !registry::has(&edge.env, broadcast).await? {
        return Err(AppError::NotFound {
            code: "broadcast_not_found",
            message: format!("no broadcast {id:?}"),
        });
    }
    let pool: ObjectCounters = pool_call(edge, id, PoolCall::Counters).await?;
    let mut stages = Vec::new();
    for stage in &pool.stages {
        let counters: ObjectCounters = stage_call(edge, id, *stage, StageCall::Stats).await?;
        stages.push(json!({"stage": stage, "counters": counters}));
    }
    json_response(&json!({ "broadcast": id, "pool": pool, "stages": stages }))
}

pub(super) async fn admin_create(mut req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
    admin_pool(&req, edge, id)?;
    let _ = JsonBody::read(&mut req).await?;
    let snapshot: Value = pool_call(edge, id, PoolCall::Ensure).await?;
    if !id.contains('@') {
        // A broadcast is made in every region (the answer is the primary's snapshot).
        let config = &edge.settings.config;
        for region in config.region_names().into_iter().skip(1) {
            let _: Value = pool_call(edge, &pool_name(edge, id, region), PoolCall::Ensure).await?;
        }
    }
    json_response(&snapshot)
}

pub(super) async fn admin_action(mut req: Request, edge: &Edge, id: &str) -> AppResult<Response> {
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
        "consolidate" => ScaleAction::Consolidate {
            stage_arn: stage_arn()?,
        },
        "delete" => ScaleAction::Delete {
            stage_arn: stage_arn()?,
        },
        _ => {
            return Err(AppError::bad_field(
                "action",
                "`action` must be one of create, drain, consolidate, delete",
            ))
        }
    };
    let result: Value = pool_call(edge, id, PoolCall::Action { action }).await?;
    json_response(&result)
}

pub(super) async fn admin_observations(
    mut req: Request,
    edge: &Edge,
    id: &str,
) -> AppResult<Response> {
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
/// orphan deletes): the same `IvsBudget` schedule the pools of that region take theirs from,
/// so that IVS sees at most its rate of each stage operation from stagefan as a whole, in
/// each region. `region` names the region (default: the primary).
pub(super) async fn admin_budget_slot(mut req: Request, edge: &Edge) -> AppResult<Response> {
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
    let region = deployment_region(edge, body.optional_str("region")?)?;
    let slot = budget::reserve(&edge.env, &region.endpoint, &region.name, op, throttled).await?;
    json_response(&json!({
        "operation": op.name(),
        "region": region.name,
        "at": slot.at,
        "waitMs": slot.wait_ms,
    }))
}

/// The region a caller names (`region`, a region of this deployment; none: the primary),
/// else `400 invalid_field` naming `region`.
fn deployment_region<'a>(edge: &'a Edge, named: Option<&str>) -> AppResult<&'a RegionConfig> {
    let config = &edge.settings.config;
    let name = named.unwrap_or(&config.ivs_region);
    config.region(name).ok_or_else(|| {
        AppError::bad_field(
            "region",
            format!(
                "{name:?} is not a region of this deployment (it runs {})",
                config.region_names().join(", ")
            ),
        )
    })
}

/// Every region's account-quota ledger (`GET /api/admin/regions`): the account's limits,
/// what stagefan may hold (the limits minus the reserve), what its pools hold and how many
/// pools hold a grant, primary region first. The monitor exports it as
/// `stagefan_region_quota_*`.
pub(super) async fn admin_regions(req: Request, edge: &Edge) -> AppResult<Response> {
    auth::require(&req, Role::Admin, edge.settings.admin_key.as_deref())?;
    let mut regions = Vec::new();
    for (region, usage) in region_usages(edge).await? {
        let mut entry = serde_json::to_value(usage)?;
        entry["region"] = json!(region);
        regions.push(entry);
    }
    json_response(&json!({ "regions": regions }))
}
