//! WHIP publish and WHEP-style subscribe signaling (docs/contract.md, "Local media
//! signaling"): the token and quota checks, then the media plane's SDP answer.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ivs_local_media::{MediaError, Session};
use serde_json::json;
use stagefan_core::token::{self, TokenError};

use crate::app::{unix_now, App};
use crate::state::{AdmitError, Role};

fn cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, Content-Type"),
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
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    cors(resp)
}

/// `POST /whip`: publish.
pub async fn publish(State(app): State<Arc<App>>, headers: HeaderMap, body: String) -> Response {
    join(app, headers, body, Role::Publisher).await
}

/// `POST /whip/subscribe`: subscribe to the stage's host.
pub async fn subscribe(State(app): State<Arc<App>>, headers: HeaderMap, body: String) -> Response {
    join(app, headers, body, Role::Subscriber).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn join(app: Arc<App>, headers: HeaderMap, offer: String, role: Role) -> Response {
    let outcome = try_join(&app, &headers, offer, role).await;
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
            error(status, code, message)
        }
    }
}

type Refusal = (StatusCode, &'static str, String);

async fn try_join(
    app: &App,
    headers: &HeaderMap,
    offer: String,
    role: Role,
) -> Result<Response, Refusal> {
    let Some(media) = app.media.clone() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "MEDIA_DISABLED",
            "ivs-local runs without its media plane (--no-media)".into(),
        ));
    };
    let jwt = bearer(headers).ok_or((
        StatusCode::UNAUTHORIZED,
        "MISSING_TOKEN",
        "Authorization: Bearer <participant token> is required".to_string(),
    ))?;
    let now = unix_now();
    let verified = {
        let store = app.store();
        token::verify(jwt, now, |kid| {
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
    let claims = verified.claims;
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
    if offer.trim().is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "BAD_OFFER",
            "the body must be an SDP offer".into(),
        ));
    }
    let admitted = app.store().admit(&claims, role, now, &rand::random());
    // A source back within its reconnect window resumes its replicas.
    app.sync_media();
    if let Err(e) = admitted {
        return Err(match e {
            AdmitError::StageNotFound => (
                StatusCode::NOT_FOUND,
                "STAGE_NOT_FOUND",
                format!("stage {} does not exist", claims.resource),
            ),
            AdmitError::TokenInUse => (
                StatusCode::CONFLICT,
                "TOKEN_IN_USE",
                "this token already has a connection (one token = one connection)".into(),
            ),
            AdmitError::Revoked => (
                StatusCode::CONFLICT,
                "TOKEN_REVOKED",
                "this participant was disconnected from the stage; its token cannot rejoin".into(),
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
        });
    }
    let session = Session {
        stage_id: claims.topic.clone(),
        participant_id: claims.jti.clone(),
        role: match role {
            Role::Publisher => ivs_local_media::Role::Publisher,
            Role::Subscriber => ivs_local_media::Role::Subscriber,
        },
    };
    match media.accept(session, offer).await {
        Ok(answer) => {
            tracing::info!(stage = %claims.topic, participant = %claims.jti, ?role, "joined");
            let location = format!("/whip/session/{}", claims.jti);
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
                .join_failed(&claims.topic, &claims.jti, unix_now());
            app.sync_media();
            Err(match e {
                MediaError::InvalidOffer(m) => (StatusCode::BAD_REQUEST, "BAD_OFFER", m),
                MediaError::DuplicateParticipant(m) => (
                    StatusCode::CONFLICT,
                    "TOKEN_IN_USE",
                    format!("participant {m} already has a media session"),
                ),
                other => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "MEDIA_UNAVAILABLE",
                    other.to_string(),
                ),
            })
        }
    }
}

/// `GET /whip/session/{participantId}`: `204` while the session exists, `404` once it ended.
/// A page whose connection went quiet asks, to tell a session the server ended (a browser
/// notices that only from missing ICE responses, seconds later) from a passing network gap.
pub async fn session_status(State(app): State<Arc<App>>, Path(pid): Path<String>) -> Response {
    if app.store().connection(&pid).is_some() {
        return cors(StatusCode::NO_CONTENT.into_response());
    }
    error(
        StatusCode::NOT_FOUND,
        "SESSION_NOT_FOUND",
        format!("no session for participant {pid}"),
    )
}

/// `DELETE /whip/session/{participantId}`: ends a publish or subscribe session.
pub async fn delete_session(State(app): State<Arc<App>>, Path(pid): Path<String>) -> Response {
    let known = app.store().connection(&pid).cloned();
    let Some(conn) = known else {
        return error(
            StatusCode::NOT_FOUND,
            "SESSION_NOT_FOUND",
            format!("no session for participant {pid}"),
        );
    };
    // The registry does not wait for the media thread's Disconnected event.
    app.store().end_connection(&conn.stage_id, &pid, unix_now());
    app.sync_media();
    if let Some(media) = &app.media {
        media.disconnect(&pid);
    }
    cors(StatusCode::OK.into_response())
}
