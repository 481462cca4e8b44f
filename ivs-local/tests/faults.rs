//! Scripted faults (`/_local/faults`) of the real ivs-local binary: each kind as a client sees
//! it on the wire, what happened behind it (a lost answer still created the stage), counts and
//! skips, clearing, and bad rules refused without touching the rules in force.

mod common;

use std::time::{Duration, Instant};

use common::{IvsLocal, Sign};
use serde_json::{json, Value};
use stagefan_core::ivs::Operation as Op;

async fn faults(ivs: &IvsLocal) -> Value {
    let resp = reqwest::get(format!("{}/_local/faults", ivs.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn add(ivs: &IvsLocal, rule: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/_local/faults", ivs.base))
        .body(rule.to_string())
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn clear(ivs: &IvsLocal) -> Value {
    let resp = reqwest::Client::new()
        .delete(format!("{}/_local/faults", ivs.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn stage_names(ivs: &IvsLocal) -> Vec<String> {
    let page = ivs
        .client()
        .call(Op::ListStages, json!({"maxResults": 100}))
        .await
        .ok();
    page["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn each_fault_kind_as_the_client_sees_it() {
    let ivs = IvsLocal::start(&["--rate-scale", "0", "--no-media"]);
    let c = ivs.client();

    // error: the status asked for, IVS's error shape, and no stage behind it.
    let (status, rule) = add(
        &ivs,
        json!({"operation": "CreateStage", "kind": "error", "status": 503}),
    )
    .await;
    assert_eq!(status, 201, "{rule}");
    assert_eq!(rule["remaining"], 1);
    let r = c.call(Op::CreateStage, json!({"name": "e1"})).await;
    r.assert_error("InternalServerException", 503);
    assert!(
        stage_names(&ivs).await.is_empty(),
        "an error creates nothing"
    );
    // The rule was used up: the next create goes through.
    c.call(Op::CreateStage, json!({"name": "e2"})).await.ok();
    assert_eq!(stage_names(&ivs).await, ["e2"]);

    // throttle: 429 ThrottlingException, nothing done.
    add(
        &ivs,
        json!({"operation": "CreateStage", "kind": "throttle"}),
    )
    .await;
    c.call(Op::CreateStage, json!({"name": "t1"}))
        .await
        .assert_error("ThrottlingException", 429);
    assert_eq!(stage_names(&ivs).await, ["e2"]);

    // lost_after_effect: the stage exists, the client got a 500.
    add(
        &ivs,
        json!({"operation": "CreateStage", "kind": "lost_after_effect"}),
    )
    .await;
    c.call(Op::CreateStage, json!({"name": "lost"}))
        .await
        .assert_error("InternalServerException", 500);
    assert_eq!(stage_names(&ivs).await, ["e2", "lost"]);

    // lost_after_effect with a cut connection: no complete answer at all, the stage exists.
    add(
        &ivs,
        json!({"operation": "CreateStage", "kind": "lost_after_effect", "cut": true}),
    )
    .await;
    let cut = raw_create(&ivs, "cut").await;
    assert!(cut.is_err(), "a cut answer cannot be read whole: {cut:?}");
    assert_eq!(stage_names(&ivs).await, ["e2", "lost", "cut"]);

    // delay: the operation happens, after the delay.
    add(
        &ivs,
        json!({"operation": "GetStage", "kind": "delay", "delayMs": 400}),
    )
    .await;
    let arn = c.call(Op::ListStages, json!({})).await.ok()["stages"][0]["arn"]
        .as_str()
        .unwrap()
        .to_string();
    let started = Instant::now();
    let got = c.call(Op::GetStage, json!({"arn": arn})).await.ok();
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(got["stage"]["name"], "e2");

    // Every rule fired once and is gone; the counters say which kinds fired.
    let listed = faults(&ivs).await;
    assert_eq!(listed["faults"], json!([]));
    assert_eq!(
        listed["fired"],
        json!({"CreateStage": {"error": 1, "throttle": 1, "lost_after_effect": 2},
               "GetStage": {"delay": 1}})
    );
    let stats = ivs.stats().await;
    assert_eq!(stats["operations"]["CreateStage"]["requests"], 5);
    assert_eq!(
        stats["operations"]["CreateStage"]["statuses"],
        json!({"200": 2, "429": 1, "500": 1, "503": 1})
    );
}

/// A CreateStage whose answer is read to the end by hand (the harness's client would panic).
async fn raw_create(ivs: &IvsLocal, name: &str) -> Result<Value, String> {
    let body = json!({ "name": name }).to_string().into_bytes();
    let headers = [
        ("host", ivs.host.as_str()),
        ("content-type", "application/json"),
    ];
    let creds = stagefan_core::sigv4::Credentials::new(common::ACCESS_KEY, common::SECRET, None);
    let signed = stagefan_core::sigv4::sign_request(
        &stagefan_core::sigv4::HttpRequest {
            method: "POST",
            path: "/CreateStage",
            query: "",
            headers: &headers,
            body: &body,
        },
        &stagefan_core::sigv4::SigningParams {
            credentials: &creds,
            region: "us-east-1",
            service: "ivs",
            time: stagefan_core::sigv4::UtcDateTime::from_unix(common::unix_now()),
            settings: Default::default(),
        },
    )
    .expect("signs");
    let mut req = reqwest::Client::new()
        .post(format!("{}/CreateStage", ivs.base))
        .header("content-type", "application/json")
        .body(body);
    for (n, v) in &signed.headers {
        req = req.header(*n, v);
    }
    let resp = req.send().await.map_err(|e| format!("send: {e}"))?;
    let bytes = resp.bytes().await.map_err(|e| format!("body: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("json: {e}"))
}

#[tokio::test]
async fn counts_skips_order_and_clear() {
    let ivs = IvsLocal::start(&["--rate-scale", "0", "--no-media"]);
    let c = ivs.client();
    // The 2nd and 3rd ListStages fail; a later rule for the same operation waits its turn.
    add(
        &ivs,
        json!({"operation": "ListStages", "kind": "error", "status": 500, "skip": 1, "count": 2}),
    )
    .await;
    add(&ivs, json!({"operation": "ListStages", "kind": "throttle"})).await;
    let listed = faults(&ivs).await;
    assert_eq!(listed["faults"][0]["skip"], 1);
    assert_eq!(listed["faults"][0]["remaining"], 2);
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(c.call(Op::ListStages, json!({})).await.status);
        }
        v
    };
    // Call 1 passes the first rule's skip and meets the throttle rule behind it; calls 2 and 3
    // meet the error; then nothing is left.
    assert_eq!(statuses, [429, 500, 500, 200, 200]);

    // Unsigned requests and other operations do not use up a rule.
    add(
        &ivs,
        json!({"operation": "CreateStage", "kind": "error", "count": 3}),
    )
    .await;
    let unsigned = Sign {
        unsigned: true,
        ..Sign::default()
    };
    c.send("POST", "/CreateStage", "", b"{}".to_vec(), &unsigned)
        .await
        .assert_error("MissingAuthenticationTokenException", 403);
    c.call(Op::ListStages, json!({})).await.ok();
    assert_eq!(faults(&ivs).await["faults"][0]["remaining"], 3);

    // DELETE removes the rules, keeps the fired counters.
    assert_eq!(clear(&ivs).await, json!({"cleared": 1}));
    c.call(Op::CreateStage, json!({"name": "after-clear"}))
        .await
        .ok();
    let listed = faults(&ivs).await;
    assert_eq!(listed["faults"], json!([]));
    assert_eq!(
        listed["fired"]["ListStages"],
        json!({"error": 2, "throttle": 1})
    );
}

#[tokio::test]
async fn a_throttled_request_does_not_use_up_a_rule() {
    // IVS's own rate limiter comes first: a request it refuses never reaches the rule. The
    // bucket refills 5 per second, so a refill between emptying it and the call is possible on
    // a slow machine: then the rule fires (500) and the round is tried again.
    let ivs = IvsLocal::start(&["--no-media"]);
    let c = ivs.client();
    let mut seen_throttle = false;
    for _ in 0..20 {
        while c.call(Op::ListStages, json!({})).await.status == 200 {}
        if faults(&ivs).await["faults"] == json!([]) {
            add(&ivs, json!({"operation": "ListStages", "kind": "error"})).await;
        }
        let r = c.call(Op::ListStages, json!({})).await;
        if r.status == 429 {
            r.assert_error("ThrottlingException", 429);
            assert_eq!(faults(&ivs).await["faults"][0]["remaining"], 1);
            seen_throttle = true;
            break;
        }
        r.assert_error("InternalServerException", 500);
    }
    assert!(
        seen_throttle,
        "never met the rate limiter with a rule in place"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.call(Op::ListStages, json!({}))
        .await
        .assert_error("InternalServerException", 500);
    assert_eq!(faults(&ivs).await["faults"], json!([]));
}

#[tokio::test]
async fn bad_rules_are_refused_naming_the_field() {
    let ivs = IvsLocal::start(&["--rate-scale", "0", "--no-media"]);
    add(
        &ivs,
        json!({"operation": "GetStage", "kind": "throttle", "count": 2}),
    )
    .await;
    let before = faults(&ivs).await;
    for (rule, field) in [
        (json!({"kind": "error"}), "operation"),
        (
            json!({"operation": "MakeCoffee", "kind": "error"}),
            "operation",
        ),
        (
            json!({"operation": "CreateStage", "kind": "explode"}),
            "kind",
        ),
        (
            json!({"operation": "CreateStage", "kind": "error", "status": 302}),
            "status",
        ),
        (
            json!({"operation": "CreateStage", "kind": "lost_after_effect", "status": 409}),
            "status",
        ),
        (
            json!({"operation": "CreateStage", "kind": "delay"}),
            "delayMs",
        ),
        (
            json!({"operation": "CreateStage", "kind": "error", "count": 0}),
            "count",
        ),
        (
            json!({"operation": "CreateStage", "kind": "error", "cut": true}),
            "cut",
        ),
        (
            json!({"operation": "CreateStage", "kind": "error", "extra": 1}),
            "extra",
        ),
    ] {
        let (status, body) = add(&ivs, rule.clone()).await;
        assert_eq!(status, 400, "{rule}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{rule}: {body}");
        assert_eq!(body["error"]["field"], field, "{rule}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/_local/faults", ivs.base))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    assert_eq!(faults(&ivs).await, before, "refused rules change nothing");
}
