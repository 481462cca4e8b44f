//! The control plane over HTTP: routes IVS Real-Time requests to operations, verifies SigV4,
//! applies the rate limits, parses the JSON bodies, and answers in IVS's shapes and errors.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use stagefan_core::ivs::{
    self, CreateParticipantTokenRequest, CreateParticipantTokenResponse, CreateStageRequest,
    CreateStageResponse, DeleteStageRequest, DisconnectParticipantRequest, EmptyResponse,
    ErrorKind, IvsError, Operation, ParticipantToken, ParticipantTokenCapability,
};
use stagefan_core::sigv4::{self, HttpRequest, UtcDateTime, VerifyError, VerifyParams};
use stagefan_core::token::TokenBuilder;

use crate::app::{unix_now, App};
use crate::state::capabilities_of;

/// Largest control-plane body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// An answer of the control plane: a JSON body or an IVS error.
type OpResult = Result<serde_json::Value, IvsError>;

fn to_json<T: Serialize>(v: T) -> OpResult {
    serde_json::to_value(v).map_err(|e| IvsError::new(ErrorKind::InternalServer, e.to_string()))
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, IvsError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| IvsError::new(ErrorKind::Validation, format!("Invalid request body: {e}")))
}

/// The operation (and the tag operations' resource ARN) of a method and raw path.
pub fn route(method: &Method, path: &str) -> Option<(Operation, Option<String>)> {
    if let Some(encoded) = path.strip_prefix("/tags/") {
        let arn = String::from_utf8(sigv4::percent_decode(encoded)).ok()?;
        let op = match *method {
            Method::GET => Operation::ListTagsForResource,
            Method::POST => Operation::TagResource,
            Method::DELETE => Operation::UntagResource,
            _ => return None,
        };
        return Some((op, Some(arn)));
    }
    let op = Operation::from_name(path.strip_prefix('/')?)?;
    (*method == Method::POST && op.http_method() == "POST").then_some((op, None))
}

fn request_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An IVS error as an HTTP response: status, `x-amzn-ErrorType`, JSON body.
pub fn error_response(e: &IvsError) -> Response {
    let mut resp = (
        StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        e.to_body(),
    )
        .into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("x-amzn-ErrorType", HeaderValue::from_static(e.error_type()));
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-RequestId", v);
    }
    resp
}

fn ok_response(v: serde_json::Value) -> Response {
    let mut resp = (StatusCode::OK, v.to_string()).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id()) {
        h.insert("x-amzn-RequestId", v);
    }
    resp
}

/// SigV4 refusals in AWS's words.
fn auth_error(e: &VerifyError, now: i64) -> IvsError {
    match e {
        VerifyError::MissingAuthorization => IvsError::new(
            ErrorKind::MissingAuthenticationToken,
            "Missing Authentication Token",
        ),
        VerifyError::UnknownAccessKey(_) => IvsError::new(
            ErrorKind::UnrecognizedClient,
            "The security token included in the request is invalid.",
        ),
        VerifyError::SignatureMismatch | VerifyError::PayloadHashMismatch => IvsError::new(
            ErrorKind::InvalidSignature,
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        ),
        VerifyError::RequestTimeSkewed {
            request_time,
            skew_secs,
            ..
        } => {
            let msg = if *skew_secs < 0 {
                format!(
                    "Signature expired: {request_time} is now earlier than {} ({} - 15 min.)",
                    UtcDateTime::from_unix(now - sigv4::MAX_CLOCK_SKEW_SECS).amz_date(),
                    UtcDateTime::from_unix(now).amz_date()
                )
            } else {
                format!(
                    "Signature not yet current: {request_time} is still later than {} ({} + 15 min.)",
                    UtcDateTime::from_unix(now + sigv4::MAX_CLOCK_SKEW_SECS).amz_date(),
                    UtcDateTime::from_unix(now).amz_date()
                )
            };
            IvsError::new(ErrorKind::InvalidSignature, msg)
        }
        other => IvsError::new(ErrorKind::InvalidSignature, other.to_string()),
    }
}

fn authenticate(
    app: &App,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), IvsError> {
    let owned: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(n, v)| {
            v.to_str()
                .ok()
                .map(|v| (n.as_str().to_string(), v.to_string()))
        })
        .collect();
    let pairs: Vec<(&str, &str)> = owned
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let request = HttpRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or(""),
        headers: &pairs,
        body,
    };
    let params = VerifyParams {
        region: &app.region,
        service: ivs::SIGNING_NAME,
        now_unix: now,
        max_skew_secs: sigv4::MAX_CLOCK_SKEW_SECS,
        normalize_path: true,
    };
    sigv4::verify(&request, &params, |id| {
        (id == app.credentials.access_key_id).then(|| app.credentials.clone())
    })
    .map(|_| ())
    .map_err(|e| auth_error(&e, now))
}

/// Every control-plane request comes here (the router's fallback).
pub async fn control_plane(State(app): State<Arc<App>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some((op, arn)) = route(&parts.method, parts.uri.path()) else {
        let mut resp = error_response(&IvsError::new(
            ErrorKind::Other,
            format!("No operation at {} {}", parts.method, parts.uri.path()),
        ));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        resp.headers_mut().insert(
            "x-amzn-ErrorType",
            HeaderValue::from_static("UnknownOperationException"),
        );
        return resp;
    };
    app.limits.arrived(op, Instant::now());
    let mut fault = crate::faults::Injection::default();
    let result = match to_bytes(body, MAX_BODY).await {
        Err(_) => Err(IvsError::new(
            ErrorKind::Validation,
            "Request body too large",
        )),
        Ok(bytes) => {
            let now = unix_now();
            match authenticate(&app, &parts.method, &parts.uri, &parts.headers, &bytes, now) {
                Err(e) => {
                    app.limits.refused_auth(op);
                    tracing::info!(operation = %op, error = %e, "refused: signature");
                    Err(e)
                }
                Ok(()) => {
                    if app.limits.admit(op, Instant::now()) == crate::limits::Verdict::Throttled {
                        Err(IvsError::new(ErrorKind::Throttling, "Rate exceeded"))
                    } else {
                        // Scripted faults (`/_local/faults`) act on admitted requests only.
                        fault = app.faults.take(op);
                        fault.wait().await;
                        match fault.refusal() {
                            Some(e) => Err(e),
                            None => {
                                let r = dispatch(
                                    &app,
                                    op,
                                    arn.as_deref(),
                                    parts.uri.query().unwrap_or(""),
                                    &bytes,
                                    now,
                                );
                                app.sync_media();
                                fault.after_effect(r)
                            }
                        }
                    }
                }
            }
        }
    };
    let resp = match result {
        Ok(v) => ok_response(v),
        Err(e) => {
            if e.kind != ErrorKind::Throttling {
                tracing::debug!(operation = %op, error = %e, "error answer");
            }
            error_response(&e)
        }
    };
    app.limits.answered(op, resp.status().as_u16());
    fault.deliver(resp)
}

fn mint_token(
    app: &App,
    stage_arn: &str,
    duration: Option<u32>,
    user_id: Option<String>,
    attributes: Option<ivs::Attributes>,
    capabilities: Option<Vec<ParticipantTokenCapability>>,
    now: i64,
) -> Result<ParticipantToken, IvsError> {
    ivs::validate_token_request(
        duration,
        user_id.as_deref(),
        attributes.as_ref(),
        capabilities.as_deref(),
    )
    .map_err(|m| IvsError::new(ErrorKind::Validation, m))?;
    let duration = duration.unwrap_or(ivs::DEFAULT_TOKEN_DURATION_MINUTES);
    let (publish, subscribe) = capabilities_of(capabilities.as_deref());
    let caps: Vec<ParticipantTokenCapability> = [
        (publish, ParticipantTokenCapability::Publish),
        (subscribe, ParticipantTokenCapability::Subscribe),
    ]
    .into_iter()
    .filter_map(|(on, c)| on.then_some(c))
    .collect();
    let participant_id = stagefan_core::token::participant_id(&rand::random());
    let (whip, events) = (app.whip_url.clone(), app.events_url.clone());
    let mut builder = TokenBuilder::new(&app.own_kid, stage_arn, &whip, &events)
        .participant_id(participant_id.clone())
        .capabilities(publish, subscribe)
        .valid_for(now, i64::from(duration) * 60);
    if let Some(u) = &user_id {
        builder = builder.user_id(u.clone());
    }
    if let Some(a) = &attributes {
        builder = builder.attributes(a.clone());
    }
    let token = builder
        .build()
        .map_err(|e| IvsError::new(ErrorKind::Validation, e.to_string()))?
        .sign(&app.own_key);
    Ok(ParticipantToken {
        participant_id: Some(participant_id),
        token: Some(token),
        user_id,
        attributes,
        duration: Some(duration),
        capabilities: Some(caps),
        expiration_time: Some(UtcDateTime::from_unix(now + i64::from(duration) * 60).rfc3339()),
    })
}

fn untag_keys(query: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| *k == "tagKeys")
        .map(|(_, v)| {
            String::from_utf8_lossy(&sigv4::percent_decode(&v.replace('+', "%20"))).into_owned()
        })
        .collect()
}

fn dispatch(
    app: &App,
    op: Operation,
    arn: Option<&str>,
    query: &str,
    body: &[u8],
    now: i64,
) -> OpResult {
    use Operation as O;
    let arn = arn.unwrap_or_default();
    match op {
        O::CreateStage => create_stage(app, parse(body)?, now),
        O::GetStage => to_json(app.store().get_stage_op(parse(body)?)?),
        O::UpdateStage => to_json(app.store().update_stage_op(parse(body)?)?),
        O::ListStages => to_json(app.store().list_stages_op(parse(body)?)?),
        O::DeleteStage => delete_stage(app, parse(body)?, now),
        O::CreateParticipantToken => create_participant_token(app, parse(body)?, now),
        O::ListParticipants => to_json(app.store().list_participants_op(parse(body)?)?),
        O::GetParticipant => to_json(app.store().get_participant_op(parse(body)?)?),
        O::ListParticipantEvents => to_json(app.store().list_participant_events_op(parse(body)?)?),
        O::DisconnectParticipant => disconnect_participant(app, parse(body)?, now),
        O::ImportPublicKey => to_json(
            app.store()
                .import_public_key_op(parse(body)?, &rand::random())?,
        ),
        O::GetPublicKey => to_json(app.store().get_public_key_op(parse(body)?)?),
        O::ListPublicKeys => to_json(app.store().list_public_keys_op(parse(body)?)?),
        O::DeletePublicKey => to_json(app.store().delete_public_key_op(parse(body)?)?),
        O::TagResource => to_json(app.store().tag_resource_op(arn, parse(body)?)?),
        O::UntagResource => to_json(app.store().untag_resource_op(arn, &untag_keys(query))?),
        O::ListTagsForResource => to_json(app.store().list_tags_op(arn)?),
        O::StartParticipantReplication => to_json(app.store().start_replication_op(
            parse(body)?,
            now,
            &rand::random(),
        )?),
        O::StopParticipantReplication => {
            to_json(app.store().stop_replication_op(parse(body)?, now)?)
        }
        O::ListParticipantReplicas => to_json(app.store().list_replicas_op(parse(body)?, now)?),
    }
}

/// CreateStage: the stage, then the tokens it was asked for, signed with ivs-local's key.
fn create_stage(app: &App, r: CreateStageRequest, now: i64) -> OpResult {
    let (stage, configs) = app.store().create_stage_op(r, &rand::random())?;
    let tokens = configs
        .into_iter()
        .map(|c| {
            mint_token(
                app,
                &stage.arn,
                c.duration,
                c.user_id,
                c.attributes,
                c.capabilities,
                now,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    tracing::info!(stage = %stage.arn, "stage created");
    to_json(CreateStageResponse {
        stage: Some(stage),
        participant_tokens: Some(tokens),
    })
}

/// DeleteStage: the stage goes, and with it its events sockets and media connections.
fn delete_stage(app: &App, r: DeleteStageRequest, now: i64) -> OpResult {
    let (stage_id, _closed) = app.store().delete_stage(&r.arn, now)?;
    app.events
        .close_stage(&stage_id, "STAGE_DELETED", "the stage was deleted");
    if let Some(media) = &app.media {
        media.close_stage(&stage_id);
    }
    tracing::info!(stage = %r.arn, "stage deleted");
    to_json(EmptyResponse {})
}

/// CreateParticipantToken for an existing stage.
fn create_participant_token(app: &App, r: CreateParticipantTokenRequest, now: i64) -> OpResult {
    app.store().get_stage(&r.stage_arn)?;
    let token = mint_token(
        app,
        &r.stage_arn,
        r.duration,
        r.user_id,
        r.attributes,
        r.capabilities,
        now,
    )?;
    to_json(CreateParticipantTokenResponse {
        participant_token: Some(token),
    })
}

/// DisconnectParticipant: the participant's events socket and media connection close.
fn disconnect_participant(app: &App, r: DisconnectParticipantRequest, now: i64) -> OpResult {
    let had_media = app.store().disconnect_participant_op(&r, now)?;
    app.events.disconnect(
        &r.participant_id,
        "PARTICIPANT_DISCONNECTED",
        r.reason.as_deref().unwrap_or(""),
    );
    if let Some(connection) = had_media {
        if let Some(media) = &app.media {
            media.disconnect(&r.participant_id, Some(connection));
        }
    }
    to_json(EmptyResponse {})
}

/// `GET /_local/stats`: request counters per operation, state counts, the region's quotas
/// (current and limit) and media figures (unsigned, for tests).
pub async fn stats(State(app): State<Arc<App>>) -> Response {
    let media = app
        .media
        .as_ref()
        .map(|m| serde_json::to_value(m.stats()).unwrap_or_default());
    let body = json!({
        "rateScale": app.limits.scale(),
        "region": app.region,
        "ownKey": {
            "arn": app.own_kid,
            "publicKeyPem": stagefan_core::token::public_key_pem(app.own_key.verifying_key()),
        },
        "uptimeSeconds": app.started.elapsed().as_secs_f64(),
        "operations": app.limits.snapshot(),
        "state": app.store().counts(),
        "quotas": app.store().quota_usage().to_json(),
        "whip": app.whip_counters(),
        "events": {"sockets": app.events.sockets(), "outcomes": app.events_counters()},
        "media": media,
    });
    let mut resp = Response::new(Body::from(body.to_string()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_of_core_is_routed() {
        let arn = "arn:aws:ivs:us-east-1:123456789012:stage/abc";
        for op in Operation::ALL {
            let method: Method = op.http_method().parse().unwrap();
            let path = op.path(Some(arn));
            let routed = route(&method, &path);
            assert_eq!(routed.as_ref().map(|r| r.0), Some(op), "{op} {path}");
        }
    }

    #[test]
    fn routes_match_ivs_paths() {
        assert_eq!(
            route(&Method::POST, "/CreateStage"),
            Some((Operation::CreateStage, None))
        );
        assert_eq!(route(&Method::GET, "/CreateStage"), None);
        assert_eq!(route(&Method::POST, "/Nope"), None);
        assert_eq!(
            route(
                &Method::DELETE,
                "/tags/arn%3Aaws%3Aivs%3Aus-east-1%3A123456789012%3Astage%2Fabc"
            ),
            Some((
                Operation::UntagResource,
                Some("arn:aws:ivs:us-east-1:123456789012:stage/abc".into())
            ))
        );
        assert_eq!(
            route(
                &Method::GET,
                "/tags/arn:aws:ivs:us-east-1:123456789012:stage/abc"
            )
            .map(|r| r.0),
            Some(Operation::ListTagsForResource)
        );
        assert_eq!(
            route(&Method::POST, "/tags/x").map(|r| r.0),
            Some(Operation::TagResource)
        );
        assert_eq!(untag_keys("tagKeys=a%3Ab&tagKeys=c&x=1"), vec!["a:b", "c"]);
    }
}
