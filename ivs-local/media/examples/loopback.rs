//! The media plane on its own, without tokens or quotas: a tiny HTTP server in front of
//! `MediaPlane::accept`, and a test page that publishes or subscribes.
//!
//! ```text
//! cargo run -p ivs-local-media --example loopback -- [--http 127.0.0.1:8792] [--media 127.0.0.1:0]
//! open http://127.0.0.1:8792/?role=publish   and   http://127.0.0.1:8792/?role=subscribe
//! ```
//!
//! Routes: `GET /` (the page), `POST /publish?stage=` and `POST /subscribe?stage=` (SDP offer →
//! `201` + `Location` + SDP answer), `DELETE /session/{id}`, `GET /stats` (JSON), `GET /events`
//! (the media events seen so far, one per line). Prints `loopback listening on http://…` once
//! ready.
//!
//! Also the shape of ivs-local's signaling routes, for testing the pages without the control
//! plane: `POST /whip`, `POST /whip/subscribe`, `DELETE /whip/session/{id}`, with CORS, where the
//! Bearer "token" is just `<stage id>:<participant id>` (no verification at all).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ivs_local_media::{MediaConfig, MediaError, MediaEvent, MediaPlane, Role, Session};

#[derive(Clone)]
struct App {
    media: MediaPlane,
    next_id: Arc<AtomicU64>,
    events: Arc<Mutex<Vec<String>>>,
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ivs_local_media=info".into()),
        )
        .init();
    let http: SocketAddr = arg("--http", "127.0.0.1:8792").parse()?;
    let media_bind: SocketAddr = arg("--media", "127.0.0.1:0").parse()?;

    let (media, mut events) = MediaPlane::start(MediaConfig {
        udp_bind: media_bind,
        public_ip: media_bind.ip(),
    })
    .await?;
    let app = App {
        media,
        next_id: Arc::new(AtomicU64::new(1)),
        events: Arc::new(Mutex::new(Vec::new())),
    };
    let log = app.events.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let line = match ev {
                MediaEvent::Connected {
                    stage_id,
                    participant_id,
                    ..
                } => format!("connected {stage_id} {participant_id}"),
                MediaEvent::Published {
                    stage_id,
                    participant_id,
                    ..
                } => format!("published {stage_id} {participant_id}"),
                MediaEvent::Disconnected {
                    stage_id,
                    participant_id,
                    ..
                } => format!("disconnected {stage_id} {participant_id}"),
            };
            if let Ok(mut l) = log.lock() {
                l.push(line);
            }
        }
    });

    let router = Router::new()
        .route("/", get(|| async { Html(include_str!("loopback.html")) }))
        .route("/publish", post(publish))
        .route("/subscribe", post(subscribe))
        .route("/session/{id}", delete(end_session))
        .route("/whip", post(whip_publish).options(preflight))
        .route("/whip/subscribe", post(whip_subscribe).options(preflight))
        .route(
            "/whip/session/{id}",
            delete(whip_end_session).options(preflight),
        )
        .route("/stats", get(stats))
        .route("/events", get(list_events))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(http).await?;
    println!(
        "loopback listening on http://{} (media udp {})",
        listener.local_addr()?,
        app.media.local_addr()
    );
    axum::serve(listener, router).await?;
    Ok(())
}

async fn publish(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
    offer: String,
) -> Response {
    join(app, q, offer, Role::Publisher).await
}

async fn subscribe(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
    offer: String,
) -> Response {
    join(app, q, offer, Role::Subscriber).await
}

async fn join(app: App, q: HashMap<String, String>, offer: String, role: Role) -> Response {
    let stage_id = q.get("stage").cloned().unwrap_or_else(|| "loopback".into());
    let n = app.next_id.fetch_add(1, Ordering::Relaxed);
    let participant_id = match role {
        Role::Publisher => format!("pub-{n}"),
        Role::Subscriber => format!("sub-{n}"),
    };
    accept(app, stage_id, participant_id, offer, role, "/session").await
}

/// `Authorization: Bearer <stage>:<participant>` (the loopback's stand-in for a token).
fn fake_token(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (stage, participant) = v.strip_prefix("Bearer ")?.split_once(':')?;
    Some((stage.to_owned(), participant.to_owned()))
}

fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location"),
    );
    r
}

async fn preflight() -> Response {
    let mut r = cors(StatusCode::NO_CONTENT.into_response());
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type"),
    );
    r
}

async fn whip(app: App, headers: HeaderMap, offer: String, role: Role) -> Response {
    let Some((stage, participant)) = fake_token(&headers) else {
        let msg = "want Authorization: Bearer <stage>:<participant>";
        return cors((StatusCode::UNAUTHORIZED, msg).into_response());
    };
    cors(accept(app, stage, participant, offer, role, "/whip/session").await)
}

async fn whip_publish(State(app): State<App>, headers: HeaderMap, offer: String) -> Response {
    whip(app, headers, offer, Role::Publisher).await
}

async fn whip_subscribe(State(app): State<App>, headers: HeaderMap, offer: String) -> Response {
    whip(app, headers, offer, Role::Subscriber).await
}

async fn whip_end_session(State(app): State<App>, Path(id): Path<String>) -> Response {
    app.media.disconnect(&id, None);
    cors(StatusCode::OK.into_response())
}

async fn accept(
    app: App,
    stage_id: String,
    participant_id: String,
    offer: String,
    role: Role,
    location: &str,
) -> Response {
    let session = Session {
        stage_id,
        participant_id: participant_id.clone(),
        role,
        connection: app.next_id.fetch_add(1, Ordering::Relaxed),
    };
    match app.media.accept(session, offer).await {
        Ok(answer) => (
            StatusCode::CREATED,
            [
                (header::CONTENT_TYPE, "application/sdp".to_owned()),
                (header::LOCATION, format!("{location}/{participant_id}")),
            ],
            answer,
        )
            .into_response(),
        Err(e @ MediaError::InvalidOffer(_)) => {
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn end_session(State(app): State<App>, Path(id): Path<String>) -> StatusCode {
    app.media.disconnect(&id, None);
    StatusCode::OK
}

async fn stats(State(app): State<App>) -> impl IntoResponse {
    Json(app.media.stats())
}

async fn list_events(State(app): State<App>) -> String {
    app.events.lock().map(|l| l.join("\n")).unwrap_or_default()
}
