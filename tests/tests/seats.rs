//! One seat is one participant, tried the way an attacker or a bad day at AWS would try it,
//! through the real worker on wrangler's dev server and the real ivs-local.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stagefan_core::token;
use stagefan_tests::{Answer, Api, Stack, ADMIN_KEY, HOST_KEY};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CAPACITY: u32 = 3;
const PER_CLIENT: u32 = 4;
const TOKEN_TTL: u64 = 60;
const TICKET_SECRET: &str = "a-test-ticket-secret-of-32-bytes!";

/// A key pair made by Node's crypto (an implementation independent of the worker's WebCrypto)
/// for `alg` (`ES256`: P-256, `RS256`: RSA 2048), as `(public SPKI PEM, private PKCS#8 PEM)`.
fn key_pair(alg: &str) -> (String, String) {
    let out = std::process::Command::new("node")
        .args([
            "-e",
            "const c=require('crypto');const k=process.env.ALG==='ES256'\
             ?c.generateKeyPairSync('ec',{namedCurve:'P-256'})\
             :c.generateKeyPairSync('rsa',{modulusLength:2048});\
             process.stdout.write(JSON.stringify([k.publicKey.export({type:'spki',format:'pem'}),\
             k.privateKey.export({type:'pkcs8',format:'pem'})]))",
        ])
        .env("ALG", alg)
        .output()
        .expect("node (the ES256 and RS256 tickets are signed by Node's crypto)");
    assert!(out.status.success(), "{out:?}");
    let pair: (String, String) = serde_json::from_slice(&out.stdout).unwrap();
    pair
}

/// A ticket for `claims` whose header says `alg`, signed by Node with `private_pem` (ECDSA as
/// JWS has it, raw r || s; RSA with PKCS#1 v1.5).
fn signed_ticket(alg: &str, private_pem: &str, claims: &Value) -> String {
    let out = std::process::Command::new("node")
        .args([
            "-e",
            "const c=require('crypto');const b=(x)=>Buffer.from(x).toString('base64url');\
             const i=b(JSON.stringify({alg:process.env.ALG,typ:'JWT'}))+'.'+b(process.env.TICKET_CLAIMS);\
             const s=c.sign('sha256',Buffer.from(i),{key:process.env.TICKET_KEY,dsaEncoding:'ieee-p1363'});\
             process.stdout.write(i+'.'+s.toString('base64url'))",
        ])
        .env("ALG", alg)
        .env("TICKET_KEY", private_pem)
        .env("TICKET_CLAIMS", claims.to_string())
        .output()
        .expect("node");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The backend's key pairs: the public halves are configured (two PEM blocks in one
/// variable, as while a key is rotated), the private halves sign.
struct TicketKeys {
    es256_private: String,
    rs256_private: String,
    public: String,
}

fn ticket_keys() -> TicketKeys {
    let (es_public, es256_private) = key_pair("ES256");
    let (rs_public, rs256_private) = key_pair("RS256");
    TicketKeys {
        es256_private,
        rs256_private,
        public: format!("{es_public}{rs_public}")
            .trim()
            .replace('\n', "\\n"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seat_is_one_participant_against_hostile_clients() {
    let keys = ticket_keys();
    let stack = Stack::start(
        "seats",
        &[
            ("STAGE_CAPACITY", &CAPACITY.to_string()),
            ("MAX_STAGES", "20"),
            ("MAX_SEATS_PER_CLIENT", &PER_CLIENT.to_string()),
            ("TOKEN_TTL_SECONDS", &TOKEN_TTL.to_string()),
            ("LEASE_TTL_SECONDS", "300"),
            ("TICKET_BROADCASTS", "private"),
            ("VIEWER_TICKET_SECRET", TICKET_SECRET),
            ("VIEWER_TICKET_PUBLIC_KEY", &keys.public),
        ],
    );
    let api = stack.api();

    // Taken first: its lifetime runs out while the other checks run.
    let given_back = given_back_seat(&api).await;

    one_lease_many_asks_is_one_participant(&api).await;
    a_user_id_is_no_key_to_a_seat(&api).await;
    a_flood_from_one_address_holds_its_limit_and_no_more_stages(&api).await;
    unknown_broadcasts_leave_no_storage(&stack, &api).await;
    a_stage_deleted_behind_the_pools_back(&stack, &api).await;
    tickets_seat_only_their_holders(&api, &keys).await;
    smaller_holes(&api).await;
    strangers_are_disconnected(&stack, &api).await;
    // Last of the edge's checks: wrangler's local dev proxy (not the worker) may restart the
    // worker after a body it forwards is cut off.
    endless_chunked_bodies_are_cut_off(&stack).await;

    given_back_tokens_expire(&api, given_back).await;
}

/// A viewer takes a seat and gives it back; its token is kept for the end.
async fn given_back_seat(api: &Api) -> (Answer, Instant) {
    let b = "lifetime";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let seat = wait_for_seat(api, b, "leaver", "198.51.100.9").await;
    let (_, claims) = token::decode_unverified(seat.body["token"].as_str().unwrap()).unwrap();
    assert_eq!(
        (claims.exp - claims.iat) as u64,
        TOKEN_TTL,
        "viewer tokens live TOKEN_TTL_SECONDS"
    );
    let left = api.lease_call("leave", &seat.body["leaseId"]).await;
    assert_eq!(left.status, 200);
    (seat, Instant::now())
}

async fn given_back_tokens_expire(api: &Api, (seat, left_at): (Answer, Instant)) {
    let _ = api;
    let wait = Duration::from_secs(TOKEN_TTL + 2).saturating_sub(left_at.elapsed());
    tokio::time::sleep(wait).await;
    let url = format!("{}/subscribe", seat.body["whipUrl"].as_str().unwrap());
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(seat.body["token"].as_str().unwrap())
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .expect("ivs-local answers");
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 401, "an expired token still joins: {body}");
    assert_eq!(body["error"]["code"], "TOKEN_EXPIRED", "{body}");
}

/// Fifty token requests presenting one lease: fifty tokens for one participant on one stage,
/// and the pool counts one seat.
async fn one_lease_many_asks_is_one_participant(api: &Api) {
    let b = "onelease";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let first = wait_for_seat(api, b, "alice", "198.51.100.1").await;
    let lease = first.body["leaseId"].as_str().unwrap().to_string();
    let pid = first.body["participantId"].as_str().unwrap().to_string();
    // From fifty addresses (one address asking fifty times is rate-limited, below): the
    // lease is a bearer secret, whoever presents it.
    let asks = (0..50).map(|n| {
        let api = api.clone();
        let lease = lease.clone();
        async move {
            api.post_from(
                &format!("198.51.101.{n}"),
                "/api/token/viewer",
                &json!({"userId": "alice", "broadcast": "onelease", "leaseId": lease}),
            )
            .await
        }
    });
    let answers = futures_join(asks).await;
    let mut jtis = BTreeSet::new();
    for a in &answers {
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.body["reconnected"], true);
        assert_eq!(a.body["leaseId"], first.body["leaseId"]);
        assert_eq!(a.body["stageArn"], first.body["stageArn"]);
        let (_, claims) = token::decode_unverified(a.body["token"].as_str().unwrap()).unwrap();
        jtis.insert(claims.jti);
    }
    assert_eq!(
        jtis,
        BTreeSet::from([pid]),
        "every token is the seat's participant"
    );
    let snap = api.snapshot(b).await;
    assert_eq!(snap["viewers"], 1, "{snap}");
    assert_eq!(snap["stats"]["reconnects"], 50);
    // One address asking that often is told to slow down (Cloudflare's rate limiter).
    let mut limited = None;
    for _ in 0..40 {
        let a = api
            .post_from(
                "198.51.100.1",
                "/api/token/viewer",
                &json!({"userId": "alice", "broadcast": "onelease", "leaseId": lease}),
            )
            .await;
        if a.status == 429 {
            limited = Some(a);
            break;
        }
        assert_eq!(a.status, 200, "{a:?}");
    }
    let limited = limited.expect("40 asks in a burst from one address were all answered");
    assert_eq!(limited.code(), "rate_limited");
    assert_eq!(limited.retry_after.as_deref(), Some("10"));
}

/// Naming a viewer's userId (they travel in shared links) gets a seat of one's own, never
/// that viewer's lease; a made-up lease id is no way in either, nor a lease of another
/// broadcast.
async fn a_user_id_is_no_key_to_a_seat(api: &Api) {
    let b = "impostor";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let alice = wait_for_seat(api, b, "alice", "198.51.100.2").await;
    let lease = alice.body["leaseId"].as_str().unwrap();
    let impostor = api
        .post_from(
            "203.0.113.66",
            "/api/token/viewer",
            &json!({"userId": "alice", "broadcast": b}),
        )
        .await;
    assert_eq!(impostor.status, 200, "{impostor:?}");
    assert_eq!(impostor.body["reconnected"], false);
    assert_ne!(impostor.body["leaseId"], alice.body["leaseId"]);
    assert_ne!(impostor.body["participantId"], alice.body["participantId"]);
    let guessed = format!("{}AAAA", &lease[..lease.len() - 4]);
    let guess = api
        .post_from(
            "203.0.113.66",
            "/api/token/viewer",
            &json!({"userId": "alice", "broadcast": b, "leaseId": guessed}),
        )
        .await;
    assert_eq!(guess.status, 200);
    assert_eq!(guess.body["reconnected"], false);
    assert_ne!(guess.body["leaseId"], alice.body["leaseId"]);
    let cross = api
        .post(
            "/api/token/viewer",
            &json!({"userId": "alice", "broadcast": "onelease", "leaseId": lease}),
            None,
        )
        .await;
    assert_eq!(cross.status, 400);
    assert_eq!(cross.body["error"]["field"], "leaseId");
    // Alice still has her seat, and reconnects to it with her lease.
    let back = api
        .post_from(
            "198.51.100.2",
            "/api/token/viewer",
            &json!({"userId": "alice", "broadcast": b, "leaseId": lease}),
        )
        .await;
    assert_eq!(back.body["reconnected"], true);
    assert_eq!(back.body["participantId"], alice.body["participantId"]);
    assert_eq!(api.snapshot(b).await["viewers"], 3);
}

/// One address asks 200 times at once: it holds at most MAX_SEATS_PER_CLIENT seats, the rest
/// are 429 with Retry-After, and the pool makes only the stages the seats it granted need.
async fn a_flood_from_one_address_holds_its_limit_and_no_more_stages(api: &Api) {
    let b = "flood";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    // Six honest viewers, each from its own address.
    for n in 0..6 {
        let a = wait_for_seat(api, b, &format!("honest-{n}"), &format!("192.0.2.{n}")).await;
        assert_eq!(a.status, 200);
    }
    let flood = (0..200).map(|n| {
        let api = api.clone();
        async move {
            api.post_from(
                "203.0.113.99",
                "/api/token/viewer",
                &json!({"userId": format!("bot-{n}"), "broadcast": "flood"}),
            )
            .await
        }
    });
    let answers = futures_join(flood).await;
    let granted = answers.iter().filter(|a| a.status == 200).count() as u32;
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(granted <= PER_CLIENT, "one address got {granted} seats");
    assert_eq!(granted as usize + refused.len(), 200, "only 200s and 429s");
    for r in &refused {
        assert!(
            matches!(r.code(), "client_seat_limit" | "rate_limited"),
            "{r:?}"
        );
        assert!(r.retry_after.is_some(), "429 without Retry-After: {r:?}");
    }
    // Let the creates asked for settle, then count: honest 6 + at most 4 = 10 seats over
    // capacity 3 is 4 stages, plus one stage of headroom at most.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let snap = api.snapshot(b).await;
    let stages = snap["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] != "deleted")
        .count() as u32;
    let needed = (6 + PER_CLIENT).div_ceil(CAPACITY) + 1;
    assert!(
        stages <= needed,
        "the flood made {stages} stages (at most {needed}): {snap}"
    );
    assert_eq!(snap["viewers"].as_u64().unwrap() as u32, 6 + granted);
}

/// A thousand requests naming broadcasts nobody made: 404, and no pool object, no storage.
async fn unknown_broadcasts_leave_no_storage(stack: &Stack, api: &Api) {
    let pools = stack.state_dir.join("wrangler/v3/do/stagefan-StagePool");
    let count = || std::fs::read_dir(&pools).map(|d| d.count()).unwrap_or(0);
    let size = || {
        std::fs::read_dir(&pools)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    let (files, bytes) = (count(), size());
    let asks = (0..1000).map(|n| {
        let api = api.clone();
        async move {
            let name = format!("nobody-made-{n}");
            match n % 4 {
                0 => api.viewer(&name, "v").await,
                1 => api.get(&format!("/api/broadcasts/{name}"), None).await,
                2 => {
                    let lease = format!("{name}.AAAAAAAAAAAAAAAAAAAAAA");
                    api.lease_call("heartbeat", &lease).await
                }
                _ => {
                    let lease = format!("{name}.AAAAAAAAAAAAAAAAAAAAAA");
                    api.post(
                        "/api/viewer/stage-missing",
                        &json!({"leaseId": lease}),
                        None,
                    )
                    .await
                }
            }
        }
    });
    // Fifty at a time: wrangler's local dev proxy, not the worker, is what a thousand open
    // connections at once would measure.
    let asks: Vec<_> = asks.collect();
    let mut answers = Vec::new();
    let mut asks = asks.into_iter().peekable();
    while asks.peek().is_some() {
        answers.extend(futures_join(asks.by_ref().take(50)).await);
    }
    for (n, a) in answers.into_iter().enumerate() {
        assert_eq!(a.status, 404, "request {n} (kind {}): {a:?}", n % 4);
        assert!(
            matches!(a.code(), "broadcast_not_found" | "lease_not_found"),
            "{a:?}"
        );
    }
    assert_eq!(count(), files, "unknown broadcasts created pool objects");
    // Existing pools' files may grow by their own writes; a thousand new objects would add
    // megabytes.
    assert!(size() < bytes + 512 * 1024, "{} -> {} bytes", bytes, size());
}

/// A 100 MB chunked body that never says its length: refused while it streams, and the
/// worker's memory grows by no more than a few MB.
async fn endless_chunked_bodies_are_cut_off(stack: &Stack) {
    let workerd = stack.pids_named("workerd");
    assert!(!workerd.is_empty(), "no workerd under the stack");
    let rss = || workerd.iter().map(|p| Stack::rss_kib(*p)).sum::<u64>();
    let before = rss();
    let addr = stack.edge.trim_start_matches("http://").to_string();
    let conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (mut rd, mut wr) = conn.into_split();
    // The answer is read while the body is sent, as a client would: the sender stops when it
    // comes.
    let (tx, mut answered) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = rd.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Headers and the JSON error body (it ends the answer).
            if buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.ends_with(b"}") {
                break;
            }
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    wr.write_all(
        format!(
            "POST /api/token/viewer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0usize;
    let mut peak = before;
    let started = Instant::now();
    let answer = loop {
        if let Ok(answer) = answered.try_recv() {
            break answer;
        }
        assert!(sent < 100 * 1024 * 1024, "100 MB sent and no answer");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still sending"
        );
        let head = format!("{:x}\r\n", chunk.len());
        let wrote = async {
            wr.write_all(head.as_bytes()).await?;
            wr.write_all(&chunk).await?;
            wr.write_all(b"\r\n").await
        };
        match tokio::time::timeout(Duration::from_secs(5), wrote).await {
            Ok(Ok(())) => sent += chunk.len(),
            // The server stopped reading: wait for its answer.
            _ => {
                break tokio::time::timeout(Duration::from_secs(10), &mut answered)
                    .await
                    .expect("an answer")
                    .expect("the reader's answer")
            }
        }
        if sent.is_multiple_of(4 * 1024 * 1024) {
            peak = peak.max(rss());
        }
        // A steady sender (about 60 MB/s), so the answer can overtake the body: wrangler's
        // local dev proxy, which production does not have, answers 503 itself when the body
        // it forwards breaks before the worker's answer reached it.
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    peak = peak.max(rss());
    assert!(answer.starts_with("HTTP/1.1 413"), "answer: {answer:.300}");
    // The JSON body may be cut off with the connection (the server stops reading): when it
    // came, it names the error.
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(
        body.is_empty() || body.contains("body_too_large"),
        "{answer:.300}"
    );
    let grew_mb = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "chunked body: {} MB sent before the refusal, workerd RSS {} -> {} KiB (+{grew_mb:.1} MB)",
        sent / (1024 * 1024),
        before,
        peak
    );
    assert!(grew_mb < 8.0, "workerd grew by {grew_mb:.1} MB");
}

/// A stage deleted in IVS behind the pool's back: the viewer who finds it missing reports it,
/// the pool checks with IVS, marks it gone and seats the viewer elsewhere; the other viewers
/// of that stage learn it from their heartbeat; the broadcast stays up; the monitor's word
/// (an observation naming it missing) does the same for a second stage.
async fn a_stage_deleted_behind_the_pools_back(stack: &Stack, api: &Api) {
    let b = "ghost";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let mut seats = Vec::new();
    for n in 0..6 {
        seats.push(wait_for_seat(api, b, &format!("g{n}"), &format!("192.0.2.{}", 100 + n)).await);
    }
    let victim = seats[0].body["stageArn"].as_str().unwrap().to_string();
    let ivs = stack.ivs_local();
    let (status, body) = ivs.call("DeleteStage", &json!({"arn": victim})).await;
    assert_eq!(status, 200, "{body}");
    // The first viewer's join fails with STAGE_NOT_FOUND; its page reports it.
    let report = api
        .post(
            "/api/viewer/stage-missing",
            &json!({"leaseId": seats[0].body["leaseId"]}),
            None,
        )
        .await;
    assert_eq!(report.status, 200, "{report:?}");
    assert_eq!(report.body["stageGone"], true);
    let snap = api.snapshot(b).await;
    let st = snap["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stageArn"] == victim.as_str())
        .expect("still listed")
        .clone();
    assert_eq!(st["state"], "deleted", "{st}");
    // Everyone who sat there: heartbeat says the stage is gone; a new seat is elsewhere.
    for seat in seats
        .iter()
        .filter(|s| s.body["stageArn"] == victim.as_str())
    {
        let hb = api.lease_call("heartbeat", &seat.body["leaseId"]).await;
        assert_eq!(hb.status, 410, "{hb:?}");
        assert_eq!(hb.code(), "stage_gone");
        let again = api
            .post(
                "/api/token/viewer",
                &json!({"userId": "again", "broadcast": b, "leaseId": seat.body["leaseId"]}),
                None,
            )
            .await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_ne!(again.body["stageArn"], victim.as_str());
    }
    // The monitor's observation names a second stage missing: gone at once as well.
    let second = seats
        .iter()
        .map(|s| s.body["stageArn"].as_str().unwrap().to_string())
        .find(|a| *a != victim)
        .unwrap();
    let (status, _) = ivs.call("DeleteStage", &json!({"arn": second})).await;
    assert_eq!(status, 200);
    let obs = api
        .post(
            &format!("/api/admin/broadcasts/{b}/observations"),
            &json!({"observedAt": 0, "stages": [], "missing": [second]}),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(obs.status, 200, "{obs:?}");
    assert_eq!(obs.body["gone"], json!([second]));
    // The broadcast stays up: new viewers are seated on stages IVS has.
    let live_arns: BTreeSet<String> = ivs.stage_arns_of(b).await.into_iter().collect();
    for n in 0..3 {
        let a = wait_for_seat(api, b, &format!("late{n}"), &format!("192.0.2.{}", 150 + n)).await;
        let arn = a.body["stageArn"].as_str().unwrap();
        assert!(arn != victim && arn != second, "seated on a ghost: {a:?}");
        let now: BTreeSet<String> = ivs.stage_arns_of(b).await.into_iter().collect();
        assert!(
            now.contains(arn) || live_arns.contains(arn),
            "{arn} not in IVS"
        );
    }
}

/// A broadcast configured to require tickets seats only holders of a ticket the operator's
/// backend signed; the ticket's subject is the viewer.
async fn tickets_seat_only_their_holders(api: &Api, keys: &TicketKeys) {
    let b = "private";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ticket = |claims: Value| {
        stagefan_core::ticket::sign_hs256(TICKET_SECRET.as_bytes(), &claims.to_string())
    };
    let ask = |body: Value| {
        let api = api.clone();
        async move { api.post("/api/token/viewer", &body, None).await }
    };
    let none = ask(json!({"userId": "ann", "broadcast": b})).await;
    assert_eq!(none.status, 401, "{none:?}");
    assert_eq!(none.code(), "ticket_required");
    let forged = stagefan_core::ticket::sign_hs256(
        b"not the operator's secret, 32 b!",
        &json!({"sub": "ann", "exp": now + 60}).to_string(),
    );
    let bad = ask(json!({"broadcast": b, "ticket": forged})).await;
    assert_eq!(bad.code(), "invalid_ticket", "{bad:?}");
    let expired =
        ask(json!({"broadcast": b, "ticket": ticket(json!({"sub": "ann", "exp": now - 120}))}))
            .await;
    assert_eq!(expired.code(), "invalid_ticket", "{expired:?}");
    let elsewhere = ask(json!({"broadcast": b, "ticket": ticket(json!({"sub": "ann", "exp": now + 60, "aud": "other"}))})).await;
    assert_eq!(elsewhere.code(), "invalid_ticket", "{elsewhere:?}");
    let mut good = Answer {
        status: 0,
        body: Value::Null,
        retry_after: None,
        elapsed: Duration::ZERO,
    };
    for _ in 0..50 {
        good = ask(json!({"broadcast": b, "ticket": ticket(json!({"sub": "ann", "exp": now + 60, "aud": b}))})).await;
        if good.status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(good.status, 200, "{good:?}");
    assert_eq!(good.body["userId"], "ann");
    let (_, claims) = token::decode_unverified(good.body["token"].as_str().unwrap()).unwrap();
    assert_eq!(claims.user_id.as_deref(), Some("ann"));
    let mismatch = ask(json!({"userId": "eve", "broadcast": b, "ticket": ticket(json!({"sub": "ann", "exp": now + 60}))})).await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(mismatch.body["error"]["field"], "userId");
    // ES256 and RS256 with the backend's key pairs: verified by WebCrypto.
    for (alg, private, user) in [
        ("ES256", &keys.es256_private, "zoe"),
        ("RS256", &keys.rs256_private, "ron"),
    ] {
        let claims = json!({"sub": user, "exp": now + 60, "aud": b});
        let seated =
            ask(json!({"broadcast": b, "ticket": signed_ticket(alg, private, &claims)})).await;
        assert_eq!(seated.status, 200, "{alg}: {seated:?}");
        assert_eq!(seated.body["userId"], user);
        let (_, other_key) = key_pair(alg);
        let forged = signed_ticket(alg, &other_key, &claims);
        let bad = ask(json!({"broadcast": b, "ticket": forged})).await;
        assert_eq!(bad.status, 401, "{alg} signed by another key: {bad:?}");
        assert_eq!(bad.code(), "invalid_ticket", "{bad:?}");
    }
    // A ticket's `alg` never chooses how a key is used: an RSA signature sent as ES256 (and
    // the reverse) is checked with the P-256 key (the RSA key) and fails, as a refusal, never
    // a server error.
    let claims = json!({"sub": "ron", "exp": now + 60, "aud": b});
    for (claimed, private) in [
        ("ES256", &keys.rs256_private),
        ("RS256", &keys.es256_private),
    ] {
        let swapped = signed_ticket(claimed, private, &claims);
        let bad = ask(json!({"broadcast": b, "ticket": swapped})).await;
        assert_eq!(
            bad.status, 401,
            "signed otherwise, sent as {claimed}: {bad:?}"
        );
        assert_eq!(bad.code(), "invalid_ticket", "{bad:?}");
    }
    // Public broadcasts stay open.
    assert_eq!(api.viewer("onelease", "anyone").await.status, 200);
}

async fn smaller_holes(api: &Api) {
    // `host` is the host's name in tokens: no viewer may take it.
    for name in ["host", "HOST"] {
        let a = api.viewer("onelease", name).await;
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(a.body["error"]["field"], "userId");
    }
    // The pages may not be framed, nor their types sniffed.
    for page in ["/host", "/watch", "/status"] {
        let resp = reqwest::get(format!("{}{page}", api.base)).await.unwrap();
        let h = resp.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{page}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{page}");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{page}"
        );
    }
    // The public list is paged: bounded work per request whatever the number of broadcasts.
    let first = api.get("/api/broadcasts?limit=2", None).await;
    assert_eq!(first.status, 200, "{first:?}");
    let next = first.body["next"]
        .as_str()
        .expect("a next page")
        .to_string();
    let second = api
        .get(&format!("/api/broadcasts?limit=2&after={next}"), None)
        .await;
    assert_eq!(second.status, 200);
    let names = |a: &Answer| -> Vec<String> {
        a.body["broadcasts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["broadcast"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        names(&second).iter().all(|n| *n > next),
        "{:?}",
        names(&second)
    );
    let too_many = api.get("/api/broadcasts?limit=1000", None).await;
    assert_eq!(too_many.status, 400);
    assert_eq!(too_many.body["error"]["field"], "limit");
    let _ = HOST_KEY;
}

/// A subscriber IVS lists on a stage without a seat there (its lease lapsed or was given back,
/// or it never had one) is disconnected by the pool, within the budget; a seated one is not.
async fn strangers_are_disconnected(stack: &Stack, api: &Api) {
    let b = "strangers";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let seated = wait_for_seat(api, b, "seated", "192.0.2.210").await;
    let arn = seated.body["stageArn"].as_str().unwrap().to_string();
    let ivs = stack.ivs_local();
    let before = ivs.requests("DisconnectParticipant").await;
    let obs = api
        .post(
            &format!("/api/admin/broadcasts/{b}/observations"),
            &json!({"observedAt": 0, "stages": [{
                "stageArn": arn,
                "publishers": [],
                "subscribers": [seated.body["participantId"], "no-seat-here"],
            }]}),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(obs.status, 200, "{obs:?}");
    assert_eq!(
        obs.body["strangers"],
        json!([{"stageArn": arn, "participantId": "no-seat-here"}])
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while ivs.requests("DisconnectParticipant").await == before {
        assert!(
            Instant::now() < deadline,
            "the stranger was not disconnected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        ivs.requests("DisconnectParticipant").await - before,
        1,
        "only the stranger is disconnected"
    );
}

/// Waits until the broadcast's first stage exists, then takes a seat from `ip`.
async fn wait_for_seat(api: &Api, broadcast: &str, user: &str, ip: &str) -> Answer {
    for _ in 0..100 {
        let a = api
            .post_from(
                ip,
                "/api/token/viewer",
                &json!({"userId": user, "broadcast": broadcast}),
            )
            .await;
        if a.status != 503 {
            assert_eq!(a.status, 200, "{a:?}");
            return a;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no seat for {user} in {broadcast}");
}

/// A deployment with only `VIEWER_TICKET_SECRET` refuses ES256 and RS256 tickets as invalid
/// (401), not as a closed route (503 `not_configured` would tell a client to come back).
async fn only_the_configured_ticket_algorithms_are_taken(api: &Api) {
    assert_eq!(api.create_broadcast("hsonly").await.status, 200);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": "ann", "exp": now + 60});
    for alg in ["ES256", "RS256"] {
        let (_, private) = key_pair(alg);
        let ticket = signed_ticket(alg, &private, &claims);
        let a = api
            .post(
                "/api/token/viewer",
                &json!({"broadcast": "hsonly", "ticket": ticket}),
                None,
            )
            .await;
        assert_eq!(a.status, 401, "{alg}: {a:?}");
        assert_eq!(a.code(), "invalid_ticket", "{a:?}");
        assert!(
            a.body["error"]["message"].as_str().unwrap().contains(alg),
            "{a:?}"
        );
    }
}

async fn futures_join<F: std::future::Future<Output = Answer> + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<Answer> {
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

/// `api` token mode with IVS throttling `CreateParticipantToken` beyond the retries (scripted
/// throttles on top of ivs-local's own 50 per second): a seat is granted with its token or not
/// at all, so the pool's load equals the tokens handed out, and the calls stay paced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_mode_under_throttling_seats_only_with_a_token() {
    let stack = Stack::start(
        "seats-api",
        &[
            ("TOKEN_MODE", "api"),
            ("STAGE_CAPACITY", "500"),
            ("MAX_STAGES", "2"),
            ("LEASE_TTL_SECONDS", "600"),
            // Tickets with a shared secret only: no public key.
            ("TICKET_BROADCASTS", "hsonly"),
            ("VIEWER_TICKET_SECRET", TICKET_SECRET),
        ],
    );
    let (api, ivs) = (stack.api(), stack.ivs_local());
    only_the_configured_ticket_algorithms_are_taken(&api).await;
    let b = "apithrottle";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    wait_for_seat(&api, b, "first", "192.0.2.200").await;
    // A run of throttles longer than a mint's retries (so some seats cannot get a token),
    // then throttles here and there (retried within the budget).
    ivs.add_fault(
        &stagefan_tests::Fault::throttle("CreateParticipantToken")
            .after(60)
            .times(60),
    )
    .await;
    for n in 0..20 {
        ivs.add_fault(&stagefan_tests::Fault::throttle("CreateParticipantToken").after(5 * n))
            .await;
    }
    let before = ivs.requests("CreateParticipantToken").await;
    let started = Instant::now();
    let storm = (0..300).map(|n| {
        let api = api.clone();
        async move {
            api.post(
                "/api/token/viewer",
                &json!({"userId": format!("api-{n}"), "broadcast": "apithrottle"}),
                None,
            )
            .await
        }
    });
    let answers = futures_join(storm).await;
    let seconds = started.elapsed().as_secs_f64();
    let granted = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    for r in &refused {
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.code(), "rate_limited", "{r:?}");
        assert!(r.retry_after.is_some());
    }
    let calls = ivs.requests("CreateParticipantToken").await - before;
    let snap = api.snapshot(b).await;
    eprintln!(
        "api mode under throttling: {granted} seated, {} refused, {calls} CreateParticipantToken \
         in {seconds:.1} s ({:.1} per seat asked)",
        refused.len(),
        calls as f64 / 300.0
    );
    assert_eq!(
        snap["viewers"].as_u64().unwrap() as usize,
        granted + 1,
        "the pool's load is the tokens handed out: {snap}"
    );
    assert!(granted > 0, "nobody was seated");
    assert!(
        !refused.is_empty(),
        "the throttling never outlasted the retries"
    );
    // Paced at 50 per second account-wide, each attempt in its own slot.
    assert!(
        calls as f64 <= 50.0 * (seconds + 1.2) + 10.0,
        "{calls} calls in {seconds:.1} s"
    );
}
