//! WHIP publish / WHEP-style subscribe signaling of the real ivs-local binary: token checks
//! (imported keys and ivs-local's own), capabilities, one token = one connection, the 12
//! publisher and subscriber caps, CORS, DELETE, DisconnectParticipant, DeleteStage, and the
//! participant registry (sessions, ListParticipants, ListParticipantEvents). SDP offers are
//! made by str0m, a real WebRTC stack.

mod common;

use common::{offer, unix_now, IvsLocal};
use serde_json::{json, Value};
use stagefan_core::ivs::{stage_id_from_arn, Operation as Op};
use stagefan_core::token::{self, SigningKey, TokenBuilder};
use str0m::media::{Direction, MediaKind};
use str0m::Rtc;

struct Fixture {
    ivs: IvsLocal,
    key: SigningKey,
    kid: String,
    stage_arn: String,
    whip: String,
    http: reqwest::Client,
}

impl Fixture {
    async fn new(extra: &[&str]) -> Self {
        let mut args = vec!["--rate-scale", "0"];
        args.extend_from_slice(extra);
        let ivs = IvsLocal::start(&args);
        let c = ivs.client();
        let key = token::signing_key_from_bytes(&[42; 48]).unwrap();
        let kid = c
            .call(
                Op::ImportPublicKey,
                json!({"publicKeyMaterial": token::public_key_pem(key.verifying_key())}),
            )
            .await
            .ok()["publicKey"]["arn"]
            .as_str()
            .unwrap()
            .to_string();
        let stage = c.call(Op::CreateStage, json!({"name": "whip"})).await.ok()["stage"].clone();
        Fixture {
            stage_arn: stage["arn"].as_str().unwrap().to_string(),
            whip: stage["endpoints"]["whip"].as_str().unwrap().to_string(),
            ivs,
            key,
            kid,
            // ivs-local closes idle connections after 5 s (its header-read timeout runs
            // between requests too): close ours first, or a request races the close.
            http: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .expect("http client"),
        }
    }

    fn token(&self, pid: &str, publish: bool, subscribe: bool) -> String {
        self.token_for(&self.stage_arn, pid, publish, subscribe, unix_now(), 600)
    }

    fn token_for(
        &self,
        arn: &str,
        pid: &str,
        publish: bool,
        subscribe: bool,
        iat: i64,
        ttl: i64,
    ) -> String {
        TokenBuilder::new(&self.kid, arn, &self.whip, "ws://unused")
            .participant_id(pid)
            .user_id(format!("user-{pid}"))
            .capabilities(publish, subscribe)
            .valid_for(iat, ttl)
            .build()
            .unwrap()
            .sign(&self.key)
    }

    async fn post(
        &self,
        path: &str,
        token: &str,
        sdp: String,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.whip))
            .bearer_auth(token)
            .header("content-type", "application/sdp")
            .body(sdp)
            .send()
            .await
            .unwrap();
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        (status, headers, r.text().await.unwrap())
    }

    /// `DELETE {whip}/session/{rest}` with `token` as Bearer (none when empty).
    async fn delete(&self, rest: &str, token: &str) -> (u16, String) {
        let mut req = self.http.delete(format!("{}/session/{rest}", self.whip));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// `GET {whip}/session/{rest}`: the status and the error code (empty for 204).
    async fn session(&self, rest: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}/session/{rest}", self.whip))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        (status, if body.is_empty() { body } else { code(&body) })
    }

    async fn publish(&self, token: &str) -> (u16, reqwest::header::HeaderMap, String) {
        self.post("", token, offer(true)).await
    }

    async fn subscribe(&self, token: &str) -> (u16, reqwest::header::HeaderMap, String) {
        self.post("/subscribe", token, offer(false)).await
    }

    async fn stage(&self) -> Value {
        self.ivs
            .client()
            .call(Op::GetStage, json!({"arn": self.stage_arn}))
            .await
            .ok()["stage"]
            .clone()
    }

    async fn participants(&self, session: &str) -> Vec<Value> {
        self.ivs
            .client()
            .call(
                Op::ListParticipants,
                json!({"stageArn": self.stage_arn, "sessionId": session}),
            )
            .await
            .ok()["participants"]
            .as_array()
            .unwrap()
            .clone()
    }
}

fn code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON error body: {body}"));
    v["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn publish_and_subscribe_register_participants_and_sessions() {
    let f = Fixture::new(&[]).await;
    assert!(f.stage().await.get("activeSessionId").is_none());

    let host_token = f.token("host1", true, true);
    let (status, headers, answer) = f.publish(&host_token).await;
    assert_eq!(status, 201, "{answer}");
    let host_location = headers["location"].to_str().unwrap().to_string();
    assert!(
        host_location.starts_with("/whip/session/host1/"),
        "{host_location}"
    );
    assert_eq!(headers["content-type"], "application/sdp");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(answer.starts_with("v=0"), "{answer}");

    let session = f.stage().await["activeSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        session.starts_with("st-") && session.len() == 16,
        "{session}"
    );

    let viewer_token = f.token("viewer1", false, true);
    let (status, _, body) = f.subscribe(&viewer_token).await;
    assert_eq!(status, 201, "{body}");
    // A token of ivs-local's own (CreateParticipantToken, `api` mode) is accepted too.
    let own = f
        .ivs
        .client()
        .call(
            Op::CreateParticipantToken,
            json!({"stageArn": f.stage_arn, "capabilities": ["SUBSCRIBE"]}),
        )
        .await
        .ok()["participantToken"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, body) = f.subscribe(&own).await;
    assert_eq!(status, 201, "{body}");

    let list = f.participants(&session).await;
    assert_eq!(list.len(), 3);
    let host = list.iter().find(|p| p["participantId"] == "host1").unwrap();
    assert_eq!(host["state"], "CONNECTED");
    assert_eq!(host["userId"], "user-host1");
    let got = f
        .ivs
        .client()
        .call(
            Op::GetParticipant,
            json!({"stageArn": f.stage_arn, "sessionId": session, "participantId": "host1"}),
        )
        .await
        .ok();
    assert_eq!(got["participant"]["protocol"], "WHIP");

    // GET tells whether a session exists (204), for a page whose connection went quiet.
    let r = f
        .http
        .get(format!("{}/session/host1", f.whip))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");

    let host_rest = host_location
        .trim_start_matches("/whip/session/")
        .to_string();
    assert_eq!(f.session(&host_rest).await, (204, String::new()));

    // DELETE (with the session's token) ends sessions; the stage's session ends with the last
    // participant. The older URL form without the connection id names the current one.
    assert_eq!(f.delete(&host_rest, &host_token).await.0, 200);
    assert_eq!(f.delete("viewer1", &viewer_token).await.0, 200);
    let (s, b) = f.delete(&host_rest, &host_token).await;
    assert_eq!((s, code(&b).as_str()), (404, "SESSION_ENDED"));
    assert_eq!(
        f.session(&host_rest).await,
        (404, "SESSION_ENDED".into()),
        "an ended session is gone, and says it ended"
    );
    assert_eq!(f.session("host1").await, (404, "SESSION_NOT_FOUND".into()));
    assert!(
        f.stage().await.get("activeSessionId").is_some(),
        "one subscriber is still there"
    );
    let own_pid = token::decode_unverified(&own).unwrap().1.jti;
    assert_eq!(f.delete(&own_pid, &own).await.0, 200);
    assert!(f.stage().await.get("activeSessionId").is_none());

    let list = f.participants(&session).await;
    assert!(
        list.iter().all(|p| p["state"] == "DISCONNECTED"),
        "{list:?}"
    );
    let events = f
        .ivs
        .client()
        .call(
            Op::ListParticipantEvents,
            json!({"stageArn": f.stage_arn, "sessionId": session, "participantId": "host1"}),
        )
        .await
        .ok();
    let names: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"JOINED"));
    assert_eq!(names.last(), Some(&"LEFT"));

    let stats = f.ivs.stats().await;
    assert_eq!(stats["whip"]["published"], 1);
    assert_eq!(stats["whip"]["subscribed"], 2);
}

#[tokio::test]
async fn tokens_are_checked() {
    let f = Fixture::new(&[]).await;
    // No token, garbage, another key, expired, unknown kid.
    let r = f.http.post(&f.whip).body(offer(true)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(code(&r.text().await.unwrap()), "MISSING_TOKEN");
    let (s, _, b) = f.publish("not.a.jwt").await;
    assert_eq!((s, code(&b).as_str()), (401, "INVALID_TOKEN"));
    let other = token::signing_key_from_bytes(&[43; 48]).unwrap();
    let forged = TokenBuilder::new(&f.kid, &f.stage_arn, &f.whip, "ws://x")
        .participant_id("forger")
        .capabilities(true, true)
        .valid_for(unix_now(), 600)
        .build()
        .unwrap()
        .sign(&other);
    let (s, _, b) = f.publish(&forged).await;
    assert_eq!((s, code(&b).as_str()), (401, "INVALID_TOKEN"));
    let expired = f.token_for(&f.stage_arn, "late", true, true, unix_now() - 700, 600);
    let (s, _, b) = f.publish(&expired).await;
    assert_eq!((s, code(&b).as_str()), (401, "TOKEN_EXPIRED"));
    let unknown_kid = TokenBuilder::new(
        "arn:aws:ivs:us-east-1:123456789012:public-key/NotImported1",
        &f.stage_arn,
        &f.whip,
        "ws://x",
    )
    .participant_id("nokey")
    .capabilities(true, true)
    .valid_for(unix_now(), 600)
    .build()
    .unwrap()
    .sign(&f.key);
    let (s, _, b) = f.publish(&unknown_kid).await;
    assert_eq!((s, code(&b).as_str()), (401, "UNKNOWN_KEY"));
    // Capabilities.
    let (s, _, b) = f.publish(&f.token("subonly", false, true)).await;
    assert_eq!((s, code(&b).as_str()), (403, "INSUFFICIENT_CAPABILITIES"));
    let (s, _, b) = f.subscribe(&f.token("pubonly", true, false)).await;
    assert_eq!((s, code(&b).as_str()), (403, "INSUFFICIENT_CAPABILITIES"));
    // A stage that does not exist.
    let ghost = "arn:aws:ivs:us-east-1:123456789012:stage/GhostStage12";
    let (s, _, b) = f
        .publish(&f.token_for(ghost, "ghost", true, true, unix_now(), 600))
        .await;
    assert_eq!((s, code(&b).as_str()), (404, "STAGE_NOT_FOUND"));
    // A bad offer is refused before anything changes, also for a participant that is
    // connected: its connection stays.
    let t = f.token("once", true, true);
    assert_eq!(f.publish(&t).await.0, 201);
    for bad in ["v=0\r\n", "garbage", &offer(false)] {
        let (s, _, b) = f.post("", &t, bad.to_string()).await;
        assert_eq!((s, code(&b).as_str()), (400, "BAD_OFFER"), "{bad}");
    }
    let (s, _, b) = f
        .post("", &f.token("badsdp", true, true), "v=0\r\n".into())
        .await;
    assert_eq!((s, code(&b).as_str()), (400, "BAD_OFFER"));
    let stats = f.ivs.stats().await;
    assert_eq!(stats["state"]["mediaConnections"], 1);
    assert_eq!(f.session("once").await.0, 204);
    // Deleting the public key invalidates its tokens.
    f.ivs
        .client()
        .call(Op::DeletePublicKey, json!({"arn": f.kid}))
        .await
        .ok();
    let (s, _, b) = f.publish(&f.token("afterdelete", true, true)).await;
    assert_eq!((s, code(&b).as_str()), (401, "UNKNOWN_KEY"));
}

#[tokio::test]
async fn stage_caps_answer_429() {
    let f = Fixture::new(&["--subscriber-cap", "3"]).await;
    for i in 0..12 {
        let (s, _, b) = f.publish(&f.token(&format!("pub{i}"), true, false)).await;
        assert_eq!(s, 201, "publisher {i}: {b}");
    }
    let (s, _, b) = f.publish(&f.token("pub12", true, false)).await;
    assert_eq!((s, code(&b).as_str()), (429, "STAGE_AT_CAPACITY"));
    for i in 0..3 {
        assert_eq!(
            f.subscribe(&f.token(&format!("sub{i}"), false, true))
                .await
                .0,
            201
        );
    }
    let (s, _, b) = f.subscribe(&f.token("sub3", false, true)).await;
    assert_eq!((s, code(&b).as_str()), (429, "STAGE_AT_CAPACITY"));
    // A seat freed is a seat to take.
    assert_eq!(f.delete("sub0", &f.token("sub0", false, true)).await.0, 200);
    assert_eq!(f.subscribe(&f.token("sub3", false, true)).await.0, 201);
    let stats = f.ivs.stats().await;
    assert_eq!(stats["state"]["connectedPublishers"], 12);
    assert_eq!(stats["state"]["connectedSubscribers"], 3);
    assert_eq!(stats["whip"]["STAGE_AT_CAPACITY"], 2);
}

#[tokio::test]
async fn disconnect_participant_and_delete_stage_end_sessions() {
    let f = Fixture::new(&[]).await;
    let c = f.ivs.client();
    let viewer = f.token("viewerX", false, true);
    assert_eq!(f.publish(&f.token("hostX", true, false)).await.0, 201);
    assert_eq!(f.subscribe(&viewer).await.0, 201);
    c.call(
        Op::DisconnectParticipant,
        json!({"stageArn": f.stage_arn, "participantId": "viewerX", "reason": "test"}),
    )
    .await
    .ok();
    // Revoked: the same token cannot come back.
    let (s, _, b) = f.subscribe(&viewer).await;
    assert_eq!((s, code(&b).as_str()), (409, "TOKEN_REVOKED"));
    let session = f.stage().await["activeSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let list = f.participants(&session).await;
    let v = list
        .iter()
        .find(|p| p["participantId"] == "viewerX")
        .unwrap();
    assert_eq!(v["state"], "DISCONNECTED");
    // Filters.
    let connected = c
        .call(
            Op::ListParticipants,
            json!({"stageArn": f.stage_arn, "sessionId": session, "filterByState": "CONNECTED"}),
        )
        .await
        .ok();
    assert_eq!(connected["participants"].as_array().unwrap().len(), 1);

    // Replication of the host into a second stage, then DeleteStage of the source ends all.
    let dest = c.call(Op::CreateStage, json!({})).await.ok()["stage"]["arn"]
        .as_str()
        .unwrap()
        .to_string();
    c.call(
        Op::StartParticipantReplication,
        json!({"sourceStageArn": f.stage_arn, "destinationStageArn": dest, "participantId": "hostX"}),
    )
    .await
    .ok();
    c.call(
        Op::StartParticipantReplication,
        json!({"sourceStageArn": f.stage_arn, "destinationStageArn": dest, "participantId": "hostX"}),
    )
    .await
    .assert_error("ConflictException", 409);
    let reps = c
        .call(
            Op::ListParticipantReplicas,
            json!({"sourceStageArn": f.stage_arn, "participantId": "hostX"}),
        )
        .await
        .ok();
    assert_eq!(reps["replicas"][0]["replicationState"], "ACTIVE");
    let dest_session = c.call(Op::GetStage, json!({"arn": dest})).await.ok()["stage"]
        ["activeSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let replica = c
        .call(
            Op::GetParticipant,
            json!({"stageArn": dest, "sessionId": dest_session, "participantId": "hostX"}),
        )
        .await
        .ok();
    assert_eq!(replica["participant"]["replicationType"], "REPLICA");

    c.call(Op::DeleteStage, json!({"arn": f.stage_arn}))
        .await
        .ok();
    let stats = f.ivs.stats().await;
    assert_eq!(stats["state"]["mediaConnections"], 0);
    assert_eq!(stats["state"]["activeReplications"], 0);
    let dest_stage = c.call(Op::GetStage, json!({"arn": dest})).await.ok();
    assert!(
        dest_stage["stage"].get("activeSessionId").is_none(),
        "{dest_stage}"
    );
    let (s, _, b) = f.publish(&f.token("late", true, false)).await;
    assert_eq!((s, code(&b).as_str()), (404, "STAGE_NOT_FOUND"));
    assert!(stage_id_from_arn(&dest).is_some());
}

#[tokio::test]
async fn cors_preflight_is_open() {
    let f = Fixture::new(&[]).await;
    for path in ["", "/subscribe", "/session/abc"] {
        let r = f
            .http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", f.whip))
            .header("origin", "http://127.0.0.1:8787")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        let allowed = r.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    }
}

#[tokio::test]
async fn without_media_the_routes_say_so() {
    let ivs = IvsLocal::start(&["--no-media"]);
    let r = reqwest::Client::new()
        .post(format!("{}/whip", ivs.base))
        .bearer_auth("x")
        .body(offer(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(code(&r.text().await.unwrap()), "MEDIA_DISABLED");
}

/// A str0m peer on a local UDP socket that joined ivs-local over WHIP; its ICE/DTLS loop runs
/// on a thread until `stop`, publishing 20 ms audio frames once connected when `publish`.
struct Peer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<bool>>,
    /// Media frames received (a subscriber's view of what the stage forwards).
    received: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Its session URL after `/whip/session/`.
    location: String,
}

impl Peer {
    async fn join(f: &Fixture, token: &str, publish: bool) -> Peer {
        match Self::try_join(f, token, publish).await {
            Ok(peer) => peer,
            Err((status, body)) => panic!("join refused: {status} {body}"),
        }
    }

    /// Joins, or the refusal's status and body.
    async fn try_join(f: &Fixture, token: &str, publish: bool) -> Result<Peer, (u16, String)> {
        Self::try_join_at(f, if publish { "" } else { "/subscribe" }, token, publish).await
    }

    /// Joins at `{whip}{path}` (the SDK's routes too).
    async fn try_join_at(
        f: &Fixture,
        path: &str,
        token: &str,
        publish: bool,
    ) -> Result<Peer, (u16, String)> {
        use str0m::change::SdpAnswer;
        use str0m::Candidate;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut rtc = Rtc::new(std::time::Instant::now());
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        let dir = if publish {
            Direction::SendOnly
        } else {
            Direction::RecvOnly
        };
        let mid = api.add_media(MediaKind::Audio, dir, None, None, None);
        let (offer, pending) = api.apply().unwrap();
        let (status, headers, answer) = f.post(path, token, offer.to_sdp_string()).await;
        if status != 201 {
            return Err((status, answer));
        }
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap())
            .unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = received.clone();
        let thread =
            std::thread::spawn(move || run_peer(rtc, socket, mid, publish, &stopped, &counter));
        Ok(Peer {
            stop,
            thread: Some(thread),
            received,
            location: rest_of(&headers),
        })
    }

    /// Stops the loop; returns whether ICE and DTLS connected.
    fn stop(mut self) -> bool {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn run_peer(
    mut rtc: Rtc,
    socket: std::net::UdpSocket,
    mid: str0m::media::Mid,
    publish: bool,
    stop: &std::sync::atomic::AtomicBool,
    received: &std::sync::atomic::AtomicUsize,
) -> bool {
    use std::time::{Duration, Instant};
    use str0m::media::{Frequency, MediaTime};
    use str0m::net::{Protocol, Receive};
    use str0m::{Event, Input, Output};
    let mut connected = false;
    let mut buf = vec![0u8; 2000];
    let started = Instant::now();
    let mut next_frame = Instant::now();
    let mut samples: u64 = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst)
        && started.elapsed() < Duration::from_secs(30)
    {
        if connected && publish && Instant::now() >= next_frame {
            if let Some(writer) = rtc.writer(mid) {
                let pt = writer.payload_params().next().map(|p| p.pt());
                if let Some(pt) = pt {
                    let _ = writer.write(
                        pt,
                        Instant::now(),
                        MediaTime::new(samples, Frequency::FORTY_EIGHT_KHZ),
                        vec![0xF8u8; 60],
                    );
                }
            }
            samples += 960;
            next_frame += Duration::from_millis(20);
        }
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => connected = true,
                Ok(Output::Event(Event::MediaData(_))) => {
                    received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return connected,
            }
        };
        let wait = timeout
            .min(next_frame.max(Instant::now()))
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(20));
        socket.set_read_timeout(Some(wait)).unwrap();
        buf.resize(2000, 0);
        let input = match socket.recv_from(&mut buf) {
            Ok((n, source)) => {
                buf.truncate(n);
                match buf.as_slice().try_into() {
                    Ok(contents) => Input::Receive(
                        Instant::now(),
                        Receive {
                            proto: Protocol::Udp,
                            source,
                            destination: socket.local_addr().unwrap(),
                            contents,
                        },
                    ),
                    Err(_) => continue,
                }
            }
            Err(_) => Input::Timeout(Instant::now()),
        };
        if rtc.handle_input(input).is_err() {
            return connected;
        }
    }
    connected
}

async fn wait_for<F: Fn(&Value) -> bool>(
    f: &Fixture,
    session: &str,
    pid: &str,
    what: &str,
    pred: F,
) -> Value {
    for _ in 0..100 {
        let list = f.participants(session).await;
        if let Some(p) = list.iter().find(|p| p["participantId"] == pid) {
            if pred(p) {
                return p.clone();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{pid} never became {what}");
}

#[tokio::test]
async fn media_events_feed_the_participant_registry() {
    let f = Fixture::new(&[]).await;
    let host = Peer::join(&f, &f.token("mediaHost", true, false), true).await;
    let session = f.stage().await["activeSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    let p = wait_for(&f, &session, "mediaHost", "published", |p| {
        p["published"] == true
    })
    .await;
    assert_eq!(p["state"], "CONNECTED");
    let viewer = Peer::join(&f, &f.token("mediaViewer", false, true), false).await;
    let c = f.ivs.client();
    let mut subscribed = None;
    for _ in 0..100 {
        let events = c
            .call(
                Op::ListParticipantEvents,
                json!({"stageArn": f.stage_arn, "sessionId": session, "participantId": "mediaViewer"}),
            )
            .await
            .ok();
        subscribed = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "SUBSCRIBE_STARTED")
            .cloned();
        if subscribed.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let subscribed = subscribed.expect("SUBSCRIBE_STARTED after the subscriber connected");
    assert_eq!(subscribed["remoteParticipantId"], "mediaHost");
    // Media flowed through the plane.
    let stats = f.ivs.stats().await;
    assert!(
        stats["media"]["packetsReceived"].as_u64().unwrap() > 0,
        "{stats}"
    );

    // The host leaves (DELETE); the media plane's Disconnected event and the registry agree.
    assert_eq!(
        f.delete("mediaHost", &f.token("mediaHost", true, false))
            .await
            .0,
        200
    );
    assert!(host.stop(), "the host's ICE/DTLS connected");
    let events = c
        .call(
            Op::ListParticipantEvents,
            json!({"stageArn": f.stage_arn, "sessionId": session, "participantId": "mediaHost"}),
        )
        .await
        .ok();
    let names: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["JOINED", "PUBLISH_STARTED", "PUBLISH_STOPPED", "LEFT"]
    );
    assert_eq!(
        f.delete("mediaViewer", &f.token("mediaViewer", false, true))
            .await
            .0,
        200
    );
    assert!(viewer.stop(), "the viewer's ICE/DTLS connected");
    assert!(f.stage().await.get("activeSessionId").is_none());
}

/// The participants of the active session of `arn` (empty without one).
async fn participants_of(f: &Fixture, arn: &str) -> Vec<Value> {
    let c = f.ivs.client();
    let stage = c.call(Op::GetStage, json!({"arn": arn})).await.ok()["stage"].clone();
    let Some(session) = stage["activeSessionId"].as_str() else {
        return Vec::new();
    };
    c.call(
        Op::ListParticipants,
        json!({"stageArn": arn, "sessionId": session}),
    )
    .await
    .ok()["participants"]
        .as_array()
        .unwrap()
        .clone()
}

/// Polls (10 s at most) until `pred` holds for `pid` in the active session of `arn`.
async fn wait_participant<F: Fn(&Value) -> bool>(
    f: &Fixture,
    arn: &str,
    pid: &str,
    what: &str,
    pred: F,
) -> Value {
    for _ in 0..100 {
        if let Some(p) = participants_of(f, arn)
            .await
            .into_iter()
            .find(|p| p["participantId"] == pid)
        {
            if pred(&p) {
                return p;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!(
        "{pid} never became {what} in {arn}: {:?}",
        participants_of(f, arn).await
    );
}

async fn replicas(f: &Fixture, pid: &str) -> Vec<Value> {
    f.ivs
        .client()
        .call(
            Op::ListParticipantReplicas,
            json!({"sourceStageArn": f.stage_arn, "participantId": pid}),
        )
        .await
        .ok()["replicas"]
        .as_array()
        .unwrap()
        .clone()
}

async fn frames_grow(peer: &Peer, within: std::time::Duration) -> bool {
    let before = peer.received.load(std::sync::atomic::Ordering::SeqCst);
    let end = std::time::Instant::now() + within;
    while std::time::Instant::now() < end {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if peer.received.load(std::sync::atomic::Ordering::SeqCst) > before + 10 {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn participant_replication_shows_and_forwards_the_host_in_other_stages() {
    let f = Fixture::new(&[]).await;
    let c = f.ivs.client();
    let mut dests = Vec::new();
    for i in 0..6 {
        let stage = c
            .call(Op::CreateStage, json!({"name": format!("dest-{i}")}))
            .await
            .ok();
        dests.push(stage["stage"]["arn"].as_str().unwrap().to_string());
    }
    let start = |dest: &str, window: u32| {
        json!({"sourceStageArn": f.stage_arn, "destinationStageArn": dest,
               "participantId": "replHost", "reconnectWindowSeconds": window})
    };

    // The source must be a connected publisher of the source stage.
    c.call(Op::StartParticipantReplication, start(&dests[0], 3))
        .await
        .assert_error("ResourceNotFoundException", 404);
    let host_token = f.token("replHost", true, false);
    let host = Peer::join(&f, &host_token, true).await;
    wait_participant(&f, &f.stage_arn, "replHost", "published", |p| {
        p["published"] == true
    })
    .await;
    // The destination must exist and differ from the source; the window is 0-300 s.
    let gone = f
        .stage_arn
        .replace(stage_id_from_arn(&f.stage_arn).unwrap(), "AAAAAAAAAAAA");
    c.call(Op::StartParticipantReplication, start(&gone, 0))
        .await
        .assert_error("ResourceNotFoundException", 404);
    c.call(Op::StartParticipantReplication, start(&f.stage_arn, 0))
        .await
        .assert_error("ValidationException", 400);
    c.call(Op::StartParticipantReplication, start(&dests[0], 301))
        .await
        .assert_error("ValidationException", 400);

    // A viewer of the destination stage, before the replica exists.
    let viewer_token = f.token_for(&dests[0], "replViewer", false, true, unix_now(), 600);
    let viewer = Peer::join(&f, &viewer_token, false).await;
    assert!(
        !frames_grow(&viewer, std::time::Duration::from_millis(800)).await,
        "no host yet"
    );

    c.call(Op::StartParticipantReplication, start(&dests[0], 3))
        .await
        .ok();
    c.call(Op::StartParticipantReplication, start(&dests[0], 3))
        .await
        .assert_error("ConflictException", 409);
    let replica = wait_participant(&f, &dests[0], "replHost", "a published replica", |p| {
        p["published"] == true && p["state"] == "CONNECTED"
    })
    .await;
    assert_eq!(replica["replicationType"], "REPLICA");
    assert_eq!(replica["replicationState"], "ACTIVE");
    assert_eq!(replica["sourceStageArn"], f.stage_arn.as_str());
    let source = wait_participant(&f, &f.stage_arn, "replHost", "a source", |p| {
        p["replicationType"] == "SOURCE"
    })
    .await;
    assert_eq!(source["replicationState"], "ACTIVE");
    // Its media really is forwarded into the destination stage.
    assert!(
        frames_grow(&viewer, std::time::Duration::from_secs(5)).await,
        "the viewer of the replica stage receives the host"
    );
    // The media plane's stats (refreshed every 250 ms) count the replica and its forwarding.
    let dest_id = stage_id_from_arn(&dests[0]).unwrap();
    let mut dest_stats = Value::Null;
    for _ in 0..40 {
        let stats = f.ivs.stats().await;
        dest_stats = stats["media"]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stageId"] == dest_id)
            .cloned()
            .unwrap_or_default();
        if dest_stats["packetsForwarded"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(dest_stats["replicas"], 1, "{dest_stats}");
    assert!(
        dest_stats["packetsForwarded"].as_u64().unwrap_or(0) > 0,
        "{dest_stats}"
    );

    // At most 5 replications per participant.
    for d in &dests[1..5] {
        c.call(Op::StartParticipantReplication, start(d, 0))
            .await
            .ok();
    }
    c.call(Op::StartParticipantReplication, start(&dests[5], 0))
        .await
        .assert_error("ServiceQuotaExceededException", 402);
    let listed = replicas(&f, "replHost").await;
    assert_eq!(
        listed
            .iter()
            .filter(|r| r["replicationState"] == "ACTIVE")
            .count(),
        5
    );
    assert!(listed.iter().all(|r| r["sourceSessionId"]
        .as_str()
        .is_some_and(|s| s.starts_with("st-"))));

    // Stop ends one (its replica leaves), a second Stop is a 404; deleting a destination stage
    // ends another.
    let stop = json!({"sourceStageArn": f.stage_arn, "destinationStageArn": dests[4], "participantId": "replHost"});
    c.call(Op::StopParticipantReplication, stop.clone())
        .await
        .ok();
    c.call(Op::StopParticipantReplication, stop)
        .await
        .assert_error("ResourceNotFoundException", 404);
    c.call(Op::DeleteStage, json!({"arn": dests[3]})).await.ok();
    let states: Vec<(String, String)> = replicas(&f, "replHost")
        .await
        .iter()
        .map(|r| {
            (
                r["destinationStageArn"].as_str().unwrap().to_string(),
                r["replicationState"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (i, d) in dests[..5].iter().enumerate() {
        let want = if i >= 3 { "STOPPED" } else { "ACTIVE" };
        assert!(
            states.contains(&(d.clone(), want.to_string())),
            "{d} {want}: {states:?}"
        );
    }
    // Now there is room for a fifth again.
    c.call(Op::StartParticipantReplication, start(&dests[5], 0))
        .await
        .ok();

    // The host drops and comes back within the 3 s window of dests[0] with the same
    // participant id: it is back in both stages, and its media reaches the replica's viewer.
    assert_eq!(f.delete("replHost", &host_token).await.0, 200);
    assert!(host.stop());
    wait_participant(&f, &dests[0], "replHost", "disconnected", |p| {
        p["state"] == "DISCONNECTED"
    })
    .await;
    // The window-less replications ended with the source.
    let states = replicas(&f, "replHost").await;
    for r in &states {
        let active = r["replicationState"] == "ACTIVE";
        assert_eq!(active, r["destinationStageArn"] == dests[0].as_str(), "{r}");
    }
    // The same token reconnects at once.
    let host = Peer::join(&f, &host_token, true).await;
    let back = wait_participant(&f, &dests[0], "replHost", "back and published", |p| {
        p["state"] == "CONNECTED" && p["published"] == true
    })
    .await;
    assert_eq!(back["replicationType"], "REPLICA");
    assert!(
        frames_grow(&viewer, std::time::Duration::from_secs(5)).await,
        "media resumes in the replica stage"
    );

    // It leaves for longer than the window: the replication ends.
    assert_eq!(f.delete("replHost", &host_token).await.0, 200);
    assert!(host.stop());
    let mut stopped = false;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let r = replicas(&f, "replHost").await;
        if r.iter().all(|r| r["replicationState"] == "STOPPED") {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "the replication ends after its reconnect window");
    let gone = participants_of(&f, &dests[0]).await;
    assert!(gone
        .iter()
        .all(|p| p["participantId"] != "replHost" || p["state"] == "DISCONNECTED"));
    viewer.stop();
}

/// The path after `/whip/session/` of a Location.
fn rest_of(headers: &reqwest::header::HeaderMap) -> String {
    headers["location"]
        .to_str()
        .unwrap()
        .trim_start_matches("/whip/session/")
        .to_string()
}

async fn event_names(f: &Fixture, session: &str, pid: &str) -> Vec<String> {
    let events = f
        .ivs
        .client()
        .call(
            Op::ListParticipantEvents,
            json!({"stageArn": f.stage_arn, "sessionId": session, "participantId": pid}),
        )
        .await
        .ok();
    events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_new_connection_of_a_participant_ends_the_older_one() {
    let f = Fixture::new(&[]).await;
    let host = Peer::join(&f, &f.token("rHost", true, false), true).await;
    // A viewer connects (real ICE/DTLS), then the same participant connects again with a
    // fresh token (a reconnect, or a second tab with the same lease): the newest wins.
    let first = Peer::join(&f, &f.token("rViewer", false, true), false).await;
    let session = f.stage().await["activeSessionId"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..100 {
        if event_names(&f, &session, "rViewer")
            .await
            .contains(&"SUBSCRIBE_STARTED".to_string())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let first_rest = first.location.clone();
    assert_eq!(f.session(&first_rest).await.0, 204);
    let fresh = f.token_for(&f.stage_arn, "rViewer", false, true, unix_now(), 300);
    let second = Peer::join(&f, &fresh, false).await;
    assert_ne!(
        second.location, first_rest,
        "each connection has its own URL"
    );
    // The older connection is told why it ended.
    assert_eq!(f.session(&first_rest).await, (404, "TOKEN_REUSED".into()));
    assert_eq!(f.session(&second.location).await, (204, String::new()));
    // Its DELETE (a page tearing down late, with its own token) ends nothing of the newer one.
    let (s, b) = f
        .delete(&first_rest, &f.token("rViewer", false, true))
        .await;
    assert_eq!((s, code(&b).as_str()), (404, "TOKEN_REUSED"));
    assert_eq!(f.session(&second.location).await.0, 204);
    let stats = f.ivs.stats().await;
    assert_eq!(stats["state"]["connectedSubscribers"], 1, "{stats}");
    assert_eq!(stats["media"]["subscribers"], 1, "{stats}");
    // One participant row, LEFT then JOINED again.
    let list = f.participants(&session).await;
    assert_eq!(
        list.iter()
            .filter(|p| p["participantId"] == "rViewer")
            .count(),
        1,
        "{list:?}"
    );
    let names = event_names(&f, &session, "rViewer").await;
    assert_eq!(
        &names[..5],
        [
            "JOINED",
            "SUBSCRIBE_STARTED",
            "SUBSCRIBE_STOPPED",
            "LEFT",
            "JOINED"
        ],
        "{names:?}"
    );
    // The newer connection receives the host; the older one's peer was closed by the server.
    assert!(
        frames_grow(&second, std::time::Duration::from_secs(5)).await,
        "the newer connection gets media"
    );
    assert!(
        !frames_grow(&first, std::time::Duration::from_secs(1)).await,
        "the replaced connection gets no more media"
    );
    assert!(second.stop());
    first.stop();
    assert!(host.stop());
}

#[tokio::test]
async fn fifty_subscriptions_of_one_participant_hold_one_seat() {
    // An attacker with one lease's token (or fifty fresh tokens of the same participant) fires
    // fifty subscriptions at once at a stage with 3 seats.
    let f = Fixture::new(&["--subscriber-cap", "3"]).await;
    let tokens: Vec<String> = (0..50)
        .map(|i| f.token_for(&f.stage_arn, "greedy", false, true, unix_now() - i, 600))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    for t in tokens.clone() {
        let (http, url) = (f.http.clone(), format!("{}/subscribe", f.whip));
        set.spawn(async move {
            http.post(url)
                .bearer_auth(t)
                .header("content-type", "application/sdp")
                .body(offer(false))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    let answers = set.join_all().await;
    let accepted = answers.iter().filter(|s| **s == 201).count();
    assert_eq!(accepted, 50, "every reconnect is taken, the older ones end");
    let stats = f.ivs.stats().await;
    assert_eq!(stats["state"]["connectedSubscribers"], 1, "{stats}");
    assert_eq!(stats["state"]["mediaConnections"], 1, "{stats}");
    assert_eq!(stats["media"]["subscribers"], 1, "{stats}");
    // The two other seats are still there for others.
    for v in ["other1", "other2"] {
        assert_eq!(f.subscribe(&f.token(v, false, true)).await.0, 201, "{v}");
    }
    let (s, _, b) = f.subscribe(&f.token("other3", false, true)).await;
    assert_eq!((s, code(&b).as_str()), (429, "STAGE_AT_CAPACITY"));
    // The participant reconnecting at capacity takes its own seat back, nobody else's.
    assert_eq!(f.subscribe(&tokens[0]).await.0, 201);
    assert_eq!(f.ivs.stats().await["state"]["connectedSubscribers"], 3);
}

#[tokio::test]
async fn deleting_a_session_needs_that_sessions_token() {
    let f = Fixture::new(&[]).await;
    let host_token = f.token("dHost", true, false);
    let (s, headers, _) = f.publish(&host_token).await;
    assert_eq!(s, 201);
    let rest = rest_of(&headers);
    let other_stage = f.ivs.client().call(Op::CreateStage, json!({})).await.ok()["stage"]["arn"]
        .as_str()
        .unwrap()
        .to_string();
    let forged = TokenBuilder::new(&f.kid, &f.stage_arn, &f.whip, "ws://x")
        .participant_id("dHost")
        .capabilities(true, true)
        .valid_for(unix_now(), 600)
        .build()
        .unwrap()
        .sign(&token::signing_key_from_bytes(&[7; 48]).unwrap());
    let attempts: [(&str, String, u16, &str); 6] = [
        ("no token", String::new(), 401, "MISSING_TOKEN"),
        ("garbage", "x.y.z".into(), 401, "INVALID_TOKEN"),
        ("forged with the host's id", forged, 401, "INVALID_TOKEN"),
        (
            "a viewer's valid token",
            f.token("dViewer", false, true),
            403,
            "NOT_YOUR_SESSION",
        ),
        (
            "the host's id on another stage",
            f.token_for(&other_stage, "dHost", true, false, unix_now(), 600),
            403,
            "NOT_YOUR_SESSION",
        ),
        (
            "a publisher token of another participant",
            f.token("dHost2", true, false),
            403,
            "NOT_YOUR_SESSION",
        ),
    ];
    for (what, token, status, want) in &attempts {
        for path in [rest.as_str(), "dHost"] {
            let (s, b) = f.delete(path, token).await;
            assert_eq!((s, code(&b).as_str()), (*status, *want), "{what} on {path}");
        }
    }
    // Nothing ended.
    assert_eq!(f.session(&rest).await.0, 204);
    assert_eq!(f.ivs.stats().await["state"]["connectedPublishers"], 1);
    // A malformed connection id is no session.
    let (s, b) = f.delete("dHost/notanumber", &host_token).await;
    assert_eq!((s, code(&b).as_str()), (404, "SESSION_NOT_FOUND"));
    // The session's own token, even past its lifetime (a page that tears down late), ends it.
    let expired = f.token_for(&f.stage_arn, "dHost", true, false, unix_now() - 700, 600);
    assert_eq!(
        f.publish(&expired).await.0,
        401,
        "an expired token joins nothing"
    );
    assert_eq!(f.delete(&rest, &expired).await.0, 200);
    assert_eq!(f.session(&rest).await, (404, "SESSION_ENDED".into()));
    assert_eq!(f.ivs.stats().await["state"]["connectedPublishers"], 0);
}

#[tokio::test]
async fn a_session_that_never_connects_is_ended_at_its_setup_deadline() {
    let f = Fixture::new(&["--subscriber-cap", "1", "--ice-setup-timeout-secs", "2"]).await;
    // An offer without any ICE behind it (a client that takes a seat and never connects).
    let (s, headers, _) = f.subscribe(&f.token("squatter", false, true)).await;
    assert_eq!(s, 201);
    let squat = rest_of(&headers);
    let (s, _, b) = f.subscribe(&f.token("honest", false, true)).await;
    assert_eq!((s, code(&b).as_str()), (429, "STAGE_AT_CAPACITY"));
    // A real peer that connects in time keeps its session past the deadline.
    let host = Peer::join(&f, &f.token("tHost", true, false), true).await;
    let t0 = std::time::Instant::now();
    loop {
        if f.session(&squat).await.0 == 404 {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(6),
            "the squatter outlived the 2 s deadline"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(f.session(&squat).await, (404, "ICE_SETUP_TIMEOUT".into()));
    let stats = f.ivs.stats().await;
    assert_eq!(stats["state"]["connectedSubscribers"], 0, "{stats}");
    assert_eq!(stats["media"]["subscribers"], 0, "{stats}");
    assert_eq!(stats["whip"]["ICE_SETUP_TIMEOUT"], 1);
    // Its seat is free.
    let viewer = Peer::join(&f, &f.token("honest", false, true), false).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(f.session("tHost").await.0, 204, "a connected host stays");
    assert_eq!(f.session("honest").await.0, 204, "a connected viewer stays");
    assert!(frames_grow(&viewer, std::time::Duration::from_secs(3)).await);
    assert!(viewer.stop());
    assert!(host.stop());
}

#[tokio::test]
async fn setup_deadline_flag_is_checked() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ivs-local"))
        .args(["--ice-setup-timeout-secs", "0", "--port", "0", "--no-media"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ice-setup-timeout-secs"));
}

// ---- the IVS Web Broadcast SDK's protocol: events WebSocket and WHIP routes ---------------

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Fixture {
    fn stage_id(&self) -> String {
        stage_id_from_arn(&self.stage_arn).unwrap().to_string()
    }

    /// Opens the events socket as the SDK does (token as the subprotocol, topic in the query)
    /// and checks that the token is echoed.
    async fn socket(&self, token: &str, stage_id: &str) -> Ws {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "ws://{}/events?error_over_ws=1&topic={stage_id}/publishers&traceid=test",
            self.ivs.host
        );
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("sec-websocket-protocol", token.parse().unwrap());
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], token);
        ws
    }
}

/// The next JSON text message (panics after 5 s or on close).
async fn next_json(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("the socket is open")
            .expect("a frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(_) => panic!("closed"),
            _ => continue,
        }
    }
}

/// The next STAGE_STATE whose participants satisfy `pred`.
async fn state_where(ws: &mut Ws, pred: impl Fn(&[Value]) -> bool) -> Value {
    for _ in 0..50 {
        let m = next_json(ws).await;
        if m["type"] == "STAGE_STATE" && pred(m["payload"]["participants"].as_array().unwrap()) {
            return m;
        }
    }
    panic!("no such STAGE_STATE");
}

/// Whether the server closes the socket within 5 s (after any messages).
async fn closes(ws: &mut Ws) -> bool {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn send_json(ws: &mut Ws, v: Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        v.to_string().into(),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn the_events_socket_speaks_the_sdk_protocol() {
    let f = Fixture::new(&["--subscriber-cap", "1"]).await;
    let sid = f.stage_id();
    let viewer_token = f.token("sdkViewer", false, true);
    let mut viewer = f.socket(&viewer_token, &sid).await;
    let first = next_json(&mut viewer).await;
    assert_eq!(first["type"], "STAGE_STATE");
    let seq0 = first["payload"]["sequenceNumber"].as_u64().unwrap();
    assert!(
        seq0 > 0,
        "the SDK ignores a first state with sequenceNumber 0"
    );
    assert_eq!(first["payload"]["participants"], json!([]));
    assert_eq!(first["payload"]["serverFeatures"], json!([]), "no xdp");
    send_json(&mut viewer, json!({"type": "PING"})).await;
    assert_eq!(next_json(&mut viewer).await, json!({"type": "PONG"}));
    // The socket is the participant's connection: it is JOINED and the stage has a session,
    // though it holds no seat until it subscribes.
    let session = f.stage().await["activeSessionId"]
        .as_str()
        .expect("a session opens with the first socket")
        .to_string();
    let list = f.participants(&session).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(
        (&list[0]["participantId"], &list[0]["state"]),
        (&json!("sdkViewer"), &json!("CONNECTED"))
    );
    assert_eq!(f.ivs.stats().await["state"]["connectedSubscribers"], 0);

    // The host publishes on the SDK's route: the viewer's snapshot shows it publishing.
    let host_token = f.token("sdkHost", true, false);
    let mut host_ws = f.socket(&host_token, &sid).await;
    let (s, _, b) = f
        .post("/publish/someoneElse", &host_token, offer(true))
        .await;
    assert_eq!(s, 403, "{b}");
    let err: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(err["code"], 2003, "{b}");
    let host = Peer::try_join_at(&f, "/publish/sdkHost", &host_token, true)
        .await
        .unwrap();
    let st = state_where(&mut viewer, |p| {
        p.len() == 1 && p[0]["id"] == "sdkHost" && p[0]["isPublishing"] == true
    })
    .await;
    assert!(st["payload"]["sequenceNumber"].as_u64().unwrap() > seq0);
    assert_eq!(st["payload"]["participants"][0]["userId"], "user-sdkHost");
    send_json(
        &mut host_ws,
        json!({"type": "SET_STATE", "version": "0", "audioMuted": true, "videoStopped": false}),
    )
    .await;
    state_where(&mut viewer, |p| {
        p.first().is_some_and(|h| h["audioMuted"] == true)
    })
    .await;

    // Subscribing names a connected publisher; the stage's cap is a 403 with 2005.
    let (s, _, b) = f
        .post("/subscribe/nobody", &viewer_token, offer(false))
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(serde_json::from_str::<Value>(&b).unwrap()["code"], 2004);
    let (s, headers, b) = f
        .post("/subscribe/sdkHost", &viewer_token, offer(false))
        .await;
    assert_eq!(s, 201, "{b}");
    assert!(rest_of(&headers).starts_with("sdkViewer/"));
    let (s, headers, b) = f
        .post(
            "/subscribe/sdkHost",
            &f.token("late", false, true),
            offer(false),
        )
        .await;
    assert_eq!(
        (s, headers["content-type"].to_str().unwrap()),
        (403, "application/json")
    );
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["code"],
        2005,
        "{b}"
    );
    let expired = f.token_for(&f.stage_arn, "old", false, true, unix_now() - 700, 600);
    let (s, _, b) = f.post("/subscribe/sdkHost", &expired, offer(false)).await;
    assert_eq!(
        (
            s,
            serde_json::from_str::<Value>(&b).unwrap()["code"].clone()
        ),
        (401, json!(2002))
    );

    // The socket closing is the participant leaving: its media session ends with it.
    viewer.close(None).await.unwrap();
    for _ in 0..50 {
        if f.session("sdkViewer").await.0 == 404 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(f.session("sdkViewer").await.0, 404);
    assert_eq!(f.ivs.stats().await["state"]["connectedSubscribers"], 0);
    // One JOINED (at the socket), one LEFT (its close).
    let names = event_names(&f, &session, "sdkViewer").await;
    assert_eq!(
        names.first().map(String::as_str),
        Some("JOINED"),
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| *n == "JOINED").count(),
        1,
        "{names:?}"
    );
    assert_eq!(names.last().map(String::as_str), Some("LEFT"), "{names:?}");
    // A participant joined by its socket only leaves when it closes.
    let mut idle = f.socket(&f.token("idle", false, true), &sid).await;
    next_json(&mut idle).await;
    let p = |list: Vec<Value>| list.into_iter().find(|p| p["participantId"] == "idle");
    assert_eq!(
        p(f.participants(&session).await).unwrap()["state"],
        "CONNECTED"
    );
    idle.close(None).await.unwrap();
    for _ in 0..50 {
        if p(f.participants(&session).await).unwrap()["state"] == "DISCONNECTED" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        p(f.participants(&session).await).unwrap()["state"],
        "DISCONNECTED"
    );

    // CORS: the SDK's X-Stages-* headers are allowed, Location exposed.
    let r = f
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/publish/x", f.whip))
        .header("origin", "http://127.0.0.1:8787")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-stages-sdk,x-stages-options",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let allowed = r.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    for h in [
        "x-stages-sdk",
        "x-stages-options",
        "x-stages-trace-id",
        "x-stages-whip-version",
    ] {
        assert!(allowed.contains(h), "{h} in {allowed}");
    }
    host.stop();
}

#[tokio::test]
async fn the_events_socket_refuses_bad_tokens_and_carries_disconnects() {
    let f = Fixture::new(&[]).await;
    let sid = f.stage_id();
    let forged = TokenBuilder::new(&f.kid, &f.stage_arn, &f.whip, "ws://x")
        .participant_id("forger")
        .capabilities(true, true)
        .valid_for(unix_now(), 600)
        .build()
        .unwrap()
        .sign(&token::signing_key_from_bytes(&[9; 48]).unwrap());
    let ghost = "arn:aws:ivs:us-east-1:123456789012:stage/GhostStage12";
    let other = f.ivs.client().call(Op::CreateStage, json!({})).await.ok()["stage"]["arn"]
        .as_str()
        .unwrap()
        .to_string();
    let cases: [(&str, String, String); 5] = [
        (
            "TOKEN_EXPIRED",
            f.token_for(&f.stage_arn, "x1", false, true, unix_now() - 700, 600),
            sid.clone(),
        ),
        ("TOKEN_INVALID_SIGNATURE", forged, sid.clone()),
        ("TOKEN_INVALID", "a.b.c".into(), sid.clone()),
        (
            "STAGE_DELETED",
            f.token_for(ghost, "x2", false, true, unix_now(), 600),
            "GhostStage12".into(),
        ),
        (
            "BAD_REQUEST",
            f.token_for(&other, "x3", false, true, unix_now(), 600),
            sid.clone(),
        ),
    ];
    for (want, token, topic) in &cases {
        let mut ws = f.socket(token, topic).await;
        let m = next_json(&mut ws).await;
        assert_eq!(m["type"], "aws:ivs:JOIN_ERROR", "{want}: {m}");
        assert_eq!(m["payload"]["code"], *want, "{m}");
        assert!(closes(&mut ws).await, "{want}: closed after the JOIN_ERROR");
    }

    // One socket per participant: the newest wins, the older is told TOKEN_REUSED.
    let t = f.token("twice", false, true);
    let mut older = f.socket(&t, &sid).await;
    next_json(&mut older).await;
    let fresh = f.token_for(&f.stage_arn, "twice", false, true, unix_now(), 300);
    let mut newer = f.socket(&fresh, &sid).await;
    let m = state_or_disconnect(&mut older).await;
    assert_eq!(
        m,
        json!({"type": "aws:ivs:DISCONNECT", "payload": {"code": "TOKEN_REUSED",
               "reason": "a newer connection of this participant replaced this one"}})
    );
    assert!(closes(&mut older).await);
    next_json(&mut newer).await;
    send_json(&mut newer, json!({"type": "PING"})).await;
    assert_eq!(
        next_json(&mut newer).await["type"],
        "PONG",
        "the newer socket lives on"
    );
    assert_eq!(f.ivs.stats().await["events"]["outcomes"]["replaced"], 1);

    // DisconnectParticipant reaches the participant's socket, with the reason; it is revoked.
    let viewer = Peer::join(&f, &fresh, false).await;
    f.ivs
        .client()
        .call(
            Op::DisconnectParticipant,
            json!({"stageArn": f.stage_arn, "participantId": "twice", "reason": "abuse"}),
        )
        .await
        .ok();
    let m = state_or_disconnect(&mut newer).await;
    assert_eq!(m["type"], "aws:ivs:DISCONNECT");
    assert_eq!(
        m["payload"],
        json!({"code": "PARTICIPANT_DISCONNECTED", "reason": "abuse"})
    );
    assert!(closes(&mut newer).await);
    let mut again = f.socket(&fresh, &sid).await;
    assert_eq!(
        next_json(&mut again).await["payload"]["code"],
        "PARTICIPANT_DISCONNECTED"
    );
    viewer.stop();

    // DeleteStage reaches every socket of the stage.
    let mut a = f.socket(&f.token("a", false, true), &sid).await;
    let mut b = f.socket(&f.token("b", true, false), &sid).await;
    next_json(&mut a).await;
    next_json(&mut b).await;
    f.ivs
        .client()
        .call(Op::DeleteStage, json!({"arn": f.stage_arn}))
        .await
        .ok();
    for ws in [&mut a, &mut b] {
        let m = state_or_disconnect(ws).await;
        assert_eq!(m["payload"]["code"], "STAGE_DELETED", "{m}");
        assert!(closes(ws).await);
    }
    assert_eq!(f.ivs.stats().await["events"]["sockets"], 0);
}

/// The next message that is not a STAGE_STATE.
async fn state_or_disconnect(ws: &mut Ws) -> Value {
    loop {
        let m = next_json(ws).await;
        if m["type"] != "STAGE_STATE" {
            return m;
        }
    }
}
