//! The region's concurrent-subscriptions and concurrent-publishers quotas in the real binary:
//! small quotas by flag or environment, joins by WHIP publish and WHEP-style subscribe
//! (offers made by str0m), refusals as a full stage's but with `QUOTA_EXCEEDED`, slots freed
//! the moment a participant leaves, and the counts in `/_local/stats` `quotas`.

mod common;

use common::{offer, unix_now, IvsLocal};
use serde_json::{json, Value};
use stagefan_core::ivs::Operation as Op;
use stagefan_core::token::{self, SigningKey, TokenBuilder};

/// One ivs-local, an imported key and two stages.
struct Region {
    ivs: IvsLocal,
    key: SigningKey,
    kid: String,
    stages: [String; 2],
    whip: String,
    http: reqwest::Client,
}

/// A WHIP answer: status, `Location` (empty when refused), body.
type Answer = (u16, String, String);

impl Region {
    async fn new(flags: &[&str]) -> Self {
        let mut args = vec!["--rate-scale", "0"];
        args.extend_from_slice(flags);
        let ivs = IvsLocal::start(&args);
        let c = ivs.client();
        let key = token::signing_key_from_bytes(&[42; 48]).unwrap();
        let pem = token::public_key_pem(key.verifying_key());
        let imported = c
            .call(Op::ImportPublicKey, json!({"publicKeyMaterial": pem}))
            .await
            .ok();
        let mut stages = Vec::new();
        let mut whip = String::new();
        for name in ["a", "b"] {
            let st = c.call(Op::CreateStage, json!({"name": name})).await.ok()["stage"].clone();
            stages.push(st["arn"].as_str().unwrap().to_string());
            whip = st["endpoints"]["whip"].as_str().unwrap().to_string();
        }
        Region {
            ivs,
            key,
            kid: imported["publicKey"]["arn"].as_str().unwrap().to_string(),
            stages: stages.try_into().unwrap(),
            whip,
            // ivs-local closes idle connections after 5 s: close ours first.
            http: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap(),
        }
    }

    /// A token of participant `pid` on stage `stage` (0 or 1), publish or subscribe only.
    fn token(&self, stage: usize, pid: &str, publish: bool) -> String {
        TokenBuilder::new(&self.kid, &self.stages[stage], &self.whip, "ws://unused")
            .participant_id(pid)
            .capabilities(publish, !publish)
            .valid_for(unix_now(), 600)
            .build()
            .unwrap()
            .sign(&self.key)
    }

    /// `POST {whip}{path}` with `pid`'s token on `stage`.
    async fn join(&self, stage: usize, pid: &str, path: &str, publish: bool) -> Answer {
        let r = self
            .http
            .post(format!("{}{path}", self.whip))
            .bearer_auth(self.token(stage, pid, publish))
            .header("content-type", "application/sdp")
            .body(offer(publish))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().trim_start_matches("/whip/session/"))
            .unwrap_or_default()
            .to_string();
        (status, location, r.text().await.unwrap())
    }

    async fn publish(&self, stage: usize, pid: &str) -> Answer {
        self.join(stage, pid, "", true).await
    }

    async fn subscribe(&self, stage: usize, pid: &str) -> Answer {
        self.join(stage, pid, "/subscribe", false).await
    }

    /// `DELETE` of a session, with its participant's subscribe token on `stage`.
    async fn leave(&self, stage: usize, pid: &str, location: &str) -> u16 {
        self.http
            .delete(format!("{}/session/{location}", self.whip))
            .bearer_auth(self.token(stage, pid, false))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `/_local/stats` `quotas.{which}`: (current, limit).
    async fn quota(&self, which: &str) -> (u64, u64) {
        let q = &self.ivs.stats().await["quotas"][which];
        (q["current"].as_u64().unwrap(), q["limit"].as_u64().unwrap())
    }
}

/// The local routes' refusal: status, `error.code`, `error.message`.
fn refusal(a: &Answer) -> (u16, String, String) {
    let v: Value = serde_json::from_str(&a.2).unwrap_or_else(|_| panic!("JSON body: {}", a.2));
    let text = |x: &Value| x.as_str().unwrap().to_string();
    (a.0, text(&v["error"]["code"]), text(&v["error"]["message"]))
}

#[tokio::test]
async fn the_fourth_subscription_in_the_region_is_refused_until_one_leaves() {
    let r = Region::new(&["--subscription-quota", "3"]).await;
    assert_eq!(r.publish(0, "host").await.0, 201);
    let first = r.subscribe(0, "v0").await;
    assert_eq!(first.0, 201);
    assert_eq!(r.subscribe(0, "v1").await.0, 201);
    assert_eq!(
        r.subscribe(1, "v2").await.0,
        201,
        "the quota is the region's"
    );
    assert_eq!(r.quota("subscriptions").await, (3, 3));
    let full = (
        429,
        "QUOTA_EXCEEDED".to_string(),
        "Concurrent subscriptions quota exceeded: at most 3 per region".to_string(),
    );
    assert_eq!(refusal(&r.subscribe(1, "v3").await), full);
    // The SDK's route answers as at a full stage: 403 with 2005, its STAGE_AT_CAPACITY.
    let sdk = r.join(0, "v3", "/subscribe/host", false).await;
    let body: Value = serde_json::from_str(&sdk.2).unwrap();
    assert_eq!(
        (sdk.0, &body["code"], &body["error"]),
        (403, &json!(2005), &json!("QUOTA_EXCEEDED"))
    );
    // A subscriber reconnecting keeps its own slot.
    assert_eq!(r.subscribe(0, "v1").await.0, 201);
    // One leaves: the next one joins at once.
    assert_eq!(r.leave(0, "v0", &first.1).await, 200);
    assert_eq!(r.quota("subscriptions").await, (2, 3));
    assert_eq!(r.subscribe(1, "v3").await.0, 201);
    assert_eq!(refusal(&r.subscribe(1, "v4").await).1, "QUOTA_EXCEEDED");
    let stats = r.ivs.stats().await;
    assert_eq!(stats["whip"]["QUOTA_EXCEEDED"], 3, "{stats}");
    assert_eq!(
        stats["quotas"]["publishers"],
        json!({"current": 1, "limit": 1000})
    );
}

#[tokio::test]
async fn the_third_publisher_across_two_stages_is_refused() {
    let r = Region::new(&["--publisher-quota", "2"]).await;
    assert_eq!(r.publish(0, "p0").await.0, 201);
    assert_eq!(r.publish(1, "p1").await.0, 201);
    assert_eq!(r.quota("publishers").await, (2, 2));
    let full = (
        429,
        "QUOTA_EXCEEDED".to_string(),
        "Concurrent publishers quota exceeded: at most 2 per region".to_string(),
    );
    assert_eq!(refusal(&r.publish(0, "p2").await), full);
    let sdk = r.join(0, "p2", "/publish/p2", true).await;
    let body: Value = serde_json::from_str(&sdk.2).unwrap();
    assert_eq!((sdk.0, &body["code"]), (403, &json!(2005)), "{}", sdk.2);
    // Subscribers take no publisher slot.
    assert_eq!(r.subscribe(0, "v0").await.0, 201);
    assert_eq!(r.quota("subscriptions").await, (1, 20_000));
    // DeleteStage frees its publishers' slots at once.
    let c = r.ivs.client();
    c.call(Op::DeleteStage, json!({"arn": r.stages[1]}))
        .await
        .ok();
    assert_eq!(r.quota("publishers").await, (1, 2));
    assert_eq!(r.quota("stages").await, (1, 1000));
    assert_eq!(r.publish(0, "p2").await.0, 201);
}

#[tokio::test]
async fn a_subscription_that_never_connects_frees_its_slot_at_the_setup_deadline() {
    let r = Region::new(&["--subscription-quota", "1", "--ice-setup-timeout-secs", "1"]).await;
    // An offer with no ICE behind it takes the region's only slot.
    assert_eq!(r.subscribe(0, "squatter").await.0, 201);
    assert_eq!(refusal(&r.subscribe(1, "honest").await).1, "QUOTA_EXCEEDED");
    let t0 = std::time::Instant::now();
    while r.quota("subscriptions").await.0 != 0 {
        assert!(
            t0.elapsed().as_secs() < 5,
            "the slot outlived the 1 s deadline"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(r.subscribe(1, "honest").await.0, 201);
}

#[tokio::test]
async fn quotas_are_read_from_the_environment_and_the_old_stage_variable_still_works() {
    let no_media = ["--no-media", "--rate-scale", "0"];
    let env = [
        ("IVS_QUOTA_STAGES", "1"),
        ("IVS_QUOTA_PUBLISHERS", "4"),
        ("IVS_QUOTA_SUBSCRIPTIONS", "5"),
        ("IVS_LOCAL_STAGE_QUOTA", "9"),
    ];
    for (env, stages) in [(&env[..], 1), (&[("IVS_LOCAL_STAGE_QUOTA", "2")][..], 2)] {
        let ivs = IvsLocal::start_with_env(&no_media, env);
        let c = ivs.client();
        for _ in 0..stages {
            c.call(Op::CreateStage, json!({})).await.ok();
        }
        let refused = c.call(Op::CreateStage, json!({})).await;
        let msg = refused.assert_error("ServiceQuotaExceededException", 402);
        assert!(msg.contains(&format!("at most {stages} stages")), "{msg}");
        let q = &ivs.stats().await["quotas"];
        assert_eq!(q["stages"], json!({"current": stages, "limit": stages}));
        if stages == 1 {
            assert_eq!(
                (&q["publishers"]["limit"], &q["subscriptions"]["limit"]),
                (&json!(4), &json!(5))
            );
        }
    }
}
