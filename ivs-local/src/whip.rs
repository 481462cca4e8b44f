//! WHIP publish and WHEP-style subscribe signaling (docs/contract.md, "Local media
//! signaling"): the token and quota checks, then the media plane's SDP answer.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ivs_local_media::{MediaError, MediaPlane, Session};
use serde_json::json;
use stagefan_core::token::{self, TokenError};

use crate::app::{unix_now, App};
use crate::state::{AdmitError, EndReason, Role};

fn cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Link, Content-Type"),
    );
    resp
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"code": code, "message": message.into()}});
    cors(
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}

/// The request headers a browser may send: the pages' and the IVS Web Broadcast SDK's
/// (`X-Stages-*`; a preflight that does not allow one makes the SDK's POST a network failure).
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, X-Stages-Options, X-Stages-Platform, \
     X-Stages-Request-ID, X-Stages-SDK, X-Stages-Session-ID, X-Stages-Trace-ID, \
     X-Stages-WHIP-Version";

/// `OPTIONS` on the signaling routes: CORS preflight.
pub async fn preflight() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    cors(resp)
}

/// `POST /whip`: publish.
pub async fn publish(State(app): State<Arc<App>>, headers: HeaderMap, body: String) -> Response {
    join(app, headers, body, Role::Publisher, None).await
}

/// `POST /whip/subscribe`: subscribe to the stage's host.
pub async fn subscribe(State(app): State<Arc<App>>, headers: HeaderMap, body: String) -> Response {
    join(app, headers, body, Role::Subscriber, None).await
}

/// What the IVS Web Broadcast SDK's routes name in their path.
#[derive(Clone, Debug)]
enum SdkTarget {
    /// `POST {whip}/publish/{participantId}`: the token's own participant id.
    Publish(String),
    /// `POST {whip}/subscribe/{publisherId}`: a connected publisher of the token's stage.
    Subscribe(String),
}

/// `POST /whip/publish/{participantId}` (the SDK's publish).
pub async fn sdk_publish(
    State(app): State<Arc<App>>,
    Path(pid): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    join(
        app,
        headers,
        body,
        Role::Publisher,
        Some(SdkTarget::Publish(pid)),
    )
    .await
}

/// `POST /whip/subscribe/{publisherId}` (the SDK's subscribe). ivs-local forwards a stage's
/// host (its first publisher with media) to every subscriber, which is the one stagefan's
/// viewers subscribe to; the path must name a connected publisher of the stage.
pub async fn sdk_subscribe(
    State(app): State<Arc<App>>,
    Path(publisher): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let target = Some(SdkTarget::Subscribe(publisher));
    join(app, headers, body, Role::Subscriber, target).await
}

/// The SDK's error body: a numeric `code` in JSON, with the statuses it maps (400–403 with
/// 2002 expired, 2003 not allowed, 2005 at capacity or a region quota; 404 with 2004 no such
/// publisher).
fn sdk_error(status: StatusCode, code: &'static str, message: String) -> Response {
    let (status, numeric) = match code {
        "TOKEN_EXPIRED" => (StatusCode::UNAUTHORIZED, 2002),
        "INSUFFICIENT_CAPABILITIES" | "WRONG_PARTICIPANT" | "TOKEN_REVOKED" => {
            (StatusCode::FORBIDDEN, 2003)
        }
        // The SDK knows one capacity code, STAGE_AT_CAPACITY ("stage or account", IVS's docs
        // say): the region's quotas answer it too, `error` naming which.
        "STAGE_AT_CAPACITY" | "QUOTA_EXCEEDED" => (StatusCode::FORBIDDEN, 2005),
        "STAGE_NOT_FOUND" | "PUBLISHER_NOT_FOUND" => (StatusCode::NOT_FOUND, 2004),
        _ => (status, 2001),
    };
    let body = json!({"code": numeric, "message": message, "error": code});
    cors(
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
    )
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn join(
    app: Arc<App>,
    headers: HeaderMap,
    offer: String,
    role: Role,
    sdk: Option<SdkTarget>,
) -> Response {
    let is_sdk = sdk.is_some();
    let outcome = try_join(&app, &headers, offer, role, sdk).await;
    match outcome {
        Ok(resp) => {
            app.count_whip(match role {
                Role::Publisher => "published",
                Role::Subscriber => "subscribed",
            });
            resp
        }
        Err((status, code, message)) => {
            app.count_whip(code);
            tracing::info!(?role, code, %message, "WHIP refused");
            if is_sdk {
                sdk_error(status, code, message)
            } else {
                error(status, code, message)
            }
        }
    }
}

type Refusal = (StatusCode, &'static str, String);

async fn try_join(
    app: &Arc<App>,
    headers: &HeaderMap,
    offer: String,
    role: Role,
    sdk: Option<SdkTarget>,
) -> Result<Response, Refusal> {
    let Some(media) = app.media.clone() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "MEDIA_DISABLED",
            "ivs-local runs without its media plane (--no-media)".into(),
        ));
    };
    let now = unix_now();
    let claims = verify_bearer(app, headers, now, false)?;
    let allowed = match role {
        Role::Publisher => claims.capabilities.allow_publish,
        Role::Subscriber => claims.capabilities.allow_subscribe,
    };
    if !allowed {
        return Err((
            StatusCode::FORBIDDEN,
            "INSUFFICIENT_CAPABILITIES",
            format!(
                "the token does not allow {}",
                if role == Role::Publisher {
                    "publishing"
                } else {
                    "subscribing"
                }
            ),
        ));
    }
    match &sdk {
        Some(SdkTarget::Publish(pid)) if *pid != claims.jti => {
            return Err((
                StatusCode::FORBIDDEN,
                "WRONG_PARTICIPANT",
                "the path names another participant than the token's".into(),
            ));
        }
        Some(SdkTarget::Subscribe(publisher)) => {
            let found = app
                .store()
                .stage_publishers(&claims.topic)
                .iter()
                .any(|p| p.id == *publisher);
            if !found {
                return Err((
                    StatusCode::NOT_FOUND,
                    "PUBLISHER_NOT_FOUND",
                    format!("{publisher} is not a connected publisher of this stage"),
                ));
            }
        }
        _ => {}
    }
    if offer.trim().is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "BAD_OFFER",
            "the body must be an SDP offer".into(),
        ));
    }
    // Before anything changes: a bad offer must not end the participant's live connection.
    MediaPlane::check_offer(&offer, media_role(role))
        .map_err(|e| (StatusCode::BAD_REQUEST, "BAD_OFFER", e.to_string()))?;
    let admitted = app.store().admit(&claims, role, now, &rand::random());
    // A source back within its reconnect window resumes its replicas.
    app.sync_media();
    let admitted = match admitted {
        Ok(a) => a,
        Err(e) => {
            return Err(match e {
                AdmitError::StageNotFound => (
                    StatusCode::NOT_FOUND,
                    "STAGE_NOT_FOUND",
                    format!("stage {} does not exist", claims.resource),
                ),
                AdmitError::Revoked => (
                    StatusCode::CONFLICT,
                    "TOKEN_REVOKED",
                    "this participant was disconnected from the stage; its token cannot rejoin"
                        .into(),
                ),
                AdmitError::AtCapacity { role, cap } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "STAGE_AT_CAPACITY",
                    format!(
                        "the stage already has {cap} {}",
                        if role == Role::Publisher {
                            "publishers"
                        } else {
                            "subscribers"
                        }
                    ),
                ),
                // Refused like a full stage, with the quota's code and which quota it is.
                AdmitError::QuotaExceeded { quota, limit } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "QUOTA_EXCEEDED",
                    quota.message(limit),
                ),
            });
        }
    };
    if let Some(old) = admitted.replaced {
        tracing::info!(participant = %claims.jti, old, "a newer connection replaces the participant's older one (TOKEN_REUSED)");
        media.disconnect(&claims.jti, Some(old));
    }
    let session = Session {
        stage_id: claims.topic.clone(),
        participant_id: claims.jti.clone(),
        role: media_role(role),
        connection: admitted.connection,
    };
    match media.accept(session, offer).await {
        Ok(answer) => {
            tracing::info!(stage = %claims.topic, participant = %claims.jti, ?role, "joined");
            app.watch_setup(&claims.jti, admitted.connection);
            let location = format!("/whip/session/{}/{}", claims.jti, admitted.connection);
            let mut resp = (
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/sdp")],
                answer,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(cors(resp))
        }
        Err(e) => {
            app.store()
                .join_failed(&claims.topic, &claims.jti, admitted.connection, unix_now());
            app.sync_media();
            Err(match e {
                MediaError::InvalidOffer(m) => (StatusCode::BAD_REQUEST, "BAD_OFFER", m),
                other => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "MEDIA_UNAVAILABLE",
                    other.to_string(),
                ),
            })
        }
    }
}

fn media_role(role: Role) -> ivs_local_media::Role {
    match role {
        Role::Publisher => ivs_local_media::Role::Publisher,
        Role::Subscriber => ivs_local_media::Role::Subscriber,
    }
}

/// The Bearer token of a request, verified (signature, key, claims). `allow_expired` lets a
/// participant end its own session with the token it joined with after that token's lifetime
/// (a page tearing down late); the signature is still checked.
fn verify_bearer(
    app: &App,
    headers: &HeaderMap,
    now: i64,
    allow_expired: bool,
) -> Result<token::Claims, Refusal> {
    let jwt = bearer(headers).ok_or_else(|| {
        (
            StatusCode::UNAUTHORIZED,
            "MISSING_TOKEN",
            "Authorization: Bearer <participant token> is required".to_string(),
        )
    })?;
    let at = match token::decode_unverified(jwt) {
        Ok((_, c)) if allow_expired && c.exp <= now => c.exp - 1,
        _ => now,
    };
    let verified = {
        let store = app.store();
        token::verify(jwt, at, |kid| {
            if kid == app.own_kid {
                Some(*app.own_key.verifying_key())
            } else {
                store.imported_key(kid)
            }
        })
    }
    .map_err(|e| {
        let code = match e {
            TokenError::Expired { .. } => "TOKEN_EXPIRED",
            TokenError::UnknownKey(_) => "UNKNOWN_KEY",
            _ => "INVALID_TOKEN",
        };
        (StatusCode::UNAUTHORIZED, code, e.to_string())
    })?;
    Ok(verified.claims)
}

/// The connection a session URL names: `{participantId}/{connection}`, or `{participantId}`
/// alone (the participant's current connection, for clients of the older URL form).
fn parse_session(path: &str) -> Option<(&str, Option<u64>)> {
    match path.split_once('/') {
        None => Some((path, None)),
        Some((pid, conn)) => Some((pid, Some(conn.parse().ok()?))),
    }
}

fn session_gone(pid: &str, reason: Option<EndReason>) -> Response {
    let code = reason.map_or("SESSION_NOT_FOUND", EndReason::code);
    error(
        StatusCode::NOT_FOUND,
        code,
        format!("no live session at this URL for participant {pid}"),
    )
}

/// `GET /whip/session/{participantId}/{connection}`: `204` while that connection is live,
/// `404` once it ended, with why as the code (`TOKEN_REUSED`, `PARTICIPANT_DISCONNECTED`,
/// `STAGE_DELETED`, `ICE_SETUP_TIMEOUT`, `SESSION_ENDED`; `SESSION_NOT_FOUND` when unknown). A
/// page whose connection went quiet asks, to tell a session the server ended (a browser
/// notices that only from missing ICE responses, seconds later) from a passing network gap,
/// and a replaced one from the others.
pub async fn session_status(State(app): State<Arc<App>>, Path(path): Path<String>) -> Response {
    let Some((pid, conn)) = parse_session(&path) else {
        return session_gone(&path, None);
    };
    let store = app.store();
    let status = match conn {
        Some(c) => store.connection_status(pid, c),
        None => store.connection(pid).map(|_| ()).ok_or(None),
    };
    drop(store);
    match status {
        Ok(()) => cors(StatusCode::NO_CONTENT.into_response()),
        Err(reason) => session_gone(pid, reason),
    }
}

/// `DELETE /whip/session/{participantId}/{connection}`: ends a publish or subscribe session.
/// Needs a token of that participant (Bearer; `401` without a valid one, `403` for another
/// participant's or another stage's); a connection that was already replaced is `404` and the
/// newer one is left alone.
pub async fn delete_session(
    State(app): State<Arc<App>>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let now = unix_now();
    let claims = match verify_bearer(&app, &headers, now, true) {
        Ok(c) => c,
        Err((status, code, message)) => return error(status, code, message),
    };
    let Some((pid, only)) = parse_session(&path) else {
        return session_gone(&path, None);
    };
    if claims.jti != pid {
        return error(
            StatusCode::FORBIDDEN,
            "NOT_YOUR_SESSION",
            "the token is another participant's: a session is ended with its own token",
        );
    }
    let mut store = app.store();
    let current = store.connection(pid).cloned();
    let ended = match &current {
        Some(c) if c.stage_id != claims.topic => {
            drop(store);
            return error(
                StatusCode::FORBIDDEN,
                "NOT_YOUR_SESSION",
                "the token is for another stage than this session's",
            );
        }
        Some(c) => store.end_connection(&c.stage_id, pid, only, EndReason::Left, now),
        None => None,
    };
    let reason = only.and_then(|c| store.connection_status(pid, c).err().flatten());
    drop(store);
    let Some(conn) = ended else {
        return session_gone(pid, reason);
    };
    // The registry does not wait for the media thread's Disconnected event.
    app.sync_media();
    if let Some(media) = &app.media {
        media.disconnect(pid, Some(conn));
    }
    cors(StatusCode::OK.into_response())
}
