//! The stage's events WebSocket, as the Amazon IVS Web Broadcast SDK (1.41.0) speaks it
//! (`../shared/reference/ivs-sdk-protocol.md`, checked against the SDK's shipped code): the
//! token is the subprotocol (echoed), full `STAGE_STATE` snapshots with a growing
//! `sequenceNumber`, `PING`/`PONG`, `SET_STATE`, `aws:ivs:JOIN_ERROR` for a refused token and
//! `aws:ivs:DISCONNECT` for DisconnectParticipant, DeleteStage and a newer socket of the same
//! participant (`TOKEN_REUSED`).
//!
//! One socket per participant id: the newest wins. The socket closing is the participant
//! leaving: its media session ends with it. Snapshots list the stage's connected publishers
//! (the SDK subscribes to those with `isPublishing`); they are sent on connect and whenever
//! they change (checked every [`SNAPSHOT_EVERY`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use stagefan_core::token::{self, Claims, TokenError};
use tokio::sync::mpsc;

use crate::app::{unix_now, App};
use crate::state::EndReason;

/// How often the snapshots are compared with what each stage's sockets last got.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(200);

enum Outbound {
    Text(String),
    /// Send this text, then close the socket (DISCONNECT).
    Last(String),
}

struct SocketRec {
    id: u64,
    stage_id: String,
    tx: mpsc::UnboundedSender<Outbound>,
    audio_muted: bool,
    video_stopped: bool,
}

#[derive(Default)]
struct Feed {
    sequence: u64,
    last: String,
}

#[derive(Default)]
struct HubState {
    /// Participant id → its socket.
    sockets: HashMap<String, SocketRec>,
    /// Stage id → its snapshot sequence.
    feeds: HashMap<String, Feed>,
    next_id: u64,
}

/// Every open events socket.
#[derive(Default)]
pub struct Hub {
    state: Mutex<HubState>,
}

fn disconnect_message(code: &str, reason: &str) -> String {
    json!({"type": "aws:ivs:DISCONNECT", "payload": {"code": code, "reason": reason}}).to_string()
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open sockets (for the stats).
    pub fn sockets(&self) -> usize {
        self.lock().sockets.len()
    }

    fn register(
        &self,
        pid: &str,
        stage_id: &str,
        tx: mpsc::UnboundedSender<Outbound>,
    ) -> (u64, bool) {
        let mut h = self.lock();
        h.next_id += 1;
        let id = h.next_id;
        let old = h.sockets.insert(
            pid.to_string(),
            SocketRec {
                id,
                stage_id: stage_id.to_string(),
                tx,
                audio_muted: false,
                video_stopped: false,
            },
        );
        let replaced = old.is_some();
        if let Some(old) = old {
            let _ = old.tx.send(Outbound::Last(disconnect_message(
                "TOKEN_REUSED",
                "a newer connection of this participant replaced this one",
            )));
        }
        (id, replaced)
    }

    /// Removes socket `id` of `pid`; whether it was still the participant's socket.
    fn unregister(&self, pid: &str, id: u64) -> bool {
        let mut h = self.lock();
        if h.sockets.get(pid).is_some_and(|s| s.id == id) {
            h.sockets.remove(pid);
            true
        } else {
            false
        }
    }

    fn set_state(&self, pid: &str, id: u64, audio_muted: bool, video_stopped: bool) {
        if let Some(s) = self.lock().sockets.get_mut(pid).filter(|s| s.id == id) {
            s.audio_muted = audio_muted;
            s.video_stopped = video_stopped;
        }
    }

    /// Sends `DISCONNECT {code, reason}` to `pid`'s socket and closes it (DisconnectParticipant).
    pub fn disconnect(&self, pid: &str, code: &str, reason: &str) {
        if let Some(s) = self.lock().sockets.remove(pid) {
            let _ = s.tx.send(Outbound::Last(disconnect_message(code, reason)));
        }
    }

    /// Sends `DISCONNECT {code}` to every socket of a stage and closes them (DeleteStage).
    pub fn close_stage(&self, stage_id: &str, code: &str, reason: &str) {
        let mut h = self.lock();
        let pids: Vec<String> = h
            .sockets
            .iter()
            .filter(|(_, s)| s.stage_id == stage_id)
            .map(|(p, _)| p.clone())
            .collect();
        for pid in pids {
            if let Some(s) = h.sockets.remove(&pid) {
                let _ = s.tx.send(Outbound::Last(disconnect_message(code, reason)));
            }
        }
        h.feeds.remove(stage_id);
    }
}

/// The snapshot of a stage (without its sequence number), as the JSON the sockets get.
fn snapshot_participants(app: &App, h: &HubState, stage_id: &str) -> serde_json::Value {
    let publishers = app.store().stage_publishers(stage_id);
    serde_json::Value::Array(
        publishers
            .into_iter()
            .map(|p| {
                let sock = h.sockets.get(&p.id);
                json!({
                    "id": p.id,
                    "userId": p.user_id.unwrap_or_default(),
                    "attributes": p.attributes,
                    "isPublishing": p.published,
                    "audioMuted": sock.is_some_and(|s| s.audio_muted),
                    "videoStopped": sock.is_some_and(|s| s.video_stopped),
                })
            })
            .collect(),
    )
}

fn state_message(stage_id: &str, sequence: u64, participants: &serde_json::Value) -> String {
    json!({
        "type": "STAGE_STATE",
        "payload": {
            "sequenceNumber": sequence,
            "stageId": stage_id,
            "participants": participants,
            "disconnected": [],
            "serverFeatures": [],
        }
    })
    .to_string()
}

/// Sends every stage's snapshot to its sockets when it changed (or `force_stage`'s at once).
fn publish_snapshots(app: &App, force_stage: Option<&str>) {
    let hub = &app.events;
    let mut h = hub.lock();
    let mut stages: Vec<String> = h.sockets.values().map(|s| s.stage_id.clone()).collect();
    stages.sort();
    stages.dedup();
    for stage_id in stages {
        let participants = snapshot_participants(app, &h, &stage_id);
        let text = participants.to_string();
        let feed = h.feeds.entry(stage_id.clone()).or_default();
        let changed = feed.last != text || feed.sequence == 0;
        if changed {
            feed.sequence += 1;
            feed.last = text;
        }
        if !changed && force_stage != Some(stage_id.as_str()) {
            continue;
        }
        let msg = state_message(&stage_id, feed.sequence, &participants);
        for s in h.sockets.values().filter(|s| s.stage_id == stage_id) {
            let _ = s.tx.send(Outbound::Text(msg.clone()));
        }
    }
    let HubState { sockets, feeds, .. } = &mut *h;
    feeds.retain(|stage, _| sockets.values().any(|s| &s.stage_id == stage));
}

/// Sends the snapshots that changed, every [`SNAPSHOT_EVERY`].
pub async fn snapshot_loop(app: Arc<App>) {
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    loop {
        tick.tick().await;
        publish_snapshots(&app, None);
    }
}

/// Query of `GET /events`.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// `<stageId>/publishers`.
    topic: Option<String>,
    /// The SDK's trace id (logged).
    traceid: Option<String>,
}

/// Why a socket is refused, as the SDK's JOIN_ERROR codes.
fn refusal(app: &App, jwt: Option<&str>, topic: Option<&str>) -> Result<Claims, &'static str> {
    let jwt = jwt.ok_or("TOKEN_MISSING")?;
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
    };
    let claims = match verified {
        Ok(v) => v.claims,
        Err(TokenError::Expired { .. }) => return Err("TOKEN_EXPIRED"),
        Err(TokenError::UnknownKey(_) | TokenError::BadSignature) => {
            return Err("TOKEN_INVALID_SIGNATURE")
        }
        Err(_) => return Err("TOKEN_INVALID"),
    };
    if let Some(t) = topic {
        let stage = t.split('/').next().unwrap_or_default();
        if stage != claims.topic {
            return Err("BAD_REQUEST");
        }
    }
    let store = app.store();
    if !store.stage_exists(&claims.topic, &claims.resource) {
        return Err("STAGE_DELETED");
    }
    if store.is_revoked(&claims.topic, &claims.jti) {
        return Err("PARTICIPANT_DISCONNECTED");
    }
    Ok(claims)
}

/// `GET /events?topic=<stage>/publishers`: the stage's events socket.
pub async fn socket(
    State(app): State<Arc<App>>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(app, q, None, headers, ws)
}

/// `GET /events/<stage>` (the AWS samples' form).
pub async fn socket_at(
    State(app): State<Arc<App>>,
    Path(topic): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(app, q, Some(topic), headers, ws)
}

fn upgrade(
    app: Arc<App>,
    q: EventsQuery,
    path: Option<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let jwt = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let topic = q.topic.clone().or(path);
    let verdict = refusal(&app, jwt.as_deref(), topic.as_deref());
    tracing::debug!(traceid = ?q.traceid, ok = verdict.is_ok(), "events socket");
    let ws = match jwt {
        Some(t) => ws.protocols([t]),
        None => ws,
    };
    ws.on_upgrade(move |socket| run(app, socket, verdict))
}

async fn run(app: Arc<App>, mut socket: WebSocket, verdict: Result<Claims, &'static str>) {
    let claims = match verdict {
        Ok(c) => c,
        Err(code) => {
            app.count_events(code);
            let msg = json!({
                "type": "aws:ivs:JOIN_ERROR",
                "payload": {"code": code, "message": format!("join refused: {code}"), "fatal": true}
            });
            let _ = socket.send(Message::Text(msg.to_string().into())).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (pid, stage_id) = (claims.jti.clone(), claims.topic.clone());
    let (id, replaced) = app.events.register(&pid, &stage_id, tx);
    // The socket is the participant's connection: it is JOINED from now on.
    app.store()
        .socket_joined(&claims, unix_now(), &rand::random());
    app.count_events(if replaced { "replaced" } else { "opened" });
    tracing::info!(stage = %stage_id, participant = %pid, replaced, "events socket open");
    publish_snapshots(&app, Some(&stage_id));
    let mut kicked = false;
    loop {
        tokio::select! {
            incoming = socket.recv() => {
                let Some(Ok(msg)) = incoming else { break };
                match msg {
                    Message::Text(t) => {
                        if let Some(reply) = on_text(&app, &pid, id, t.as_str()) {
                            if socket.send(Message::Text(reply.into())).await.is_err() {
                                break;
                            }
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            out = rx.recv() => match out {
                Some(Outbound::Text(t)) => {
                    if socket.send(Message::Text(t.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outbound::Last(t)) => {
                    kicked = true;
                    let _ = socket.send(Message::Text(t.into())).await;
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
                None => break,
            },
        }
    }
    let current = app.events.unregister(&pid, id);
    tracing::info!(stage = %stage_id, participant = %pid, kicked, "events socket closed");
    if current && !kicked {
        // The participant left: its media session ends with its connection.
        let now = unix_now();
        let ended = {
            let mut store = app.store();
            let ended = store.end_connection(&stage_id, &pid, None, EndReason::Left, now);
            if ended.is_none() {
                store.socket_left(&stage_id, &pid, now);
            }
            ended
        };
        app.sync_media();
        if let (Some(conn), Some(media)) = (ended, &app.media) {
            media.disconnect(&pid, Some(conn));
        }
    }
}

/// Handles a client message; the reply to send, if any.
fn on_text(app: &App, pid: &str, id: u64, text: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    match v.get("type")?.as_str()? {
        "PING" => Some(json!({"type": "PONG"}).to_string()),
        "SET_STATE" => {
            let flag = |k: &str| v.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
            app.events
                .set_state(pid, id, flag("audioMuted"), flag("videoStopped"));
            None
        }
        "aws:ivs:EXCHANGE_TOKEN" => Some(
            json!({
                "type": "aws:ivs:EXCHANGE_TOKEN",
                "payload": {
                    "requestId": v.pointer("/payload/requestId").or_else(|| v.get("requestId")),
                    "error": "token exchange is not implemented by ivs-local",
                }
            })
            .to_string(),
        ),
        _ => None,
    }
}
