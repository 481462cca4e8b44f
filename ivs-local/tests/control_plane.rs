//! The control plane of the real ivs-local binary, called with requests signed by
//! `stagefan_core::sigv4`: every operation, IVS's error shapes, SigV4 refusals, throttling at
//! IVS's rates and the quotas.

mod common;

use std::time::Duration;

use common::{IvsLocal, Sign};
use serde_json::{json, Value};
use stagefan_core::ivs::{tags_path, untag_query, Arn, Operation as Op};
use stagefan_core::token;

fn stage_arn_ok(arn: &str) -> bool {
    let a = Arn::parse(arn).unwrap();
    a.region == "us-east-1" && a.account_id == "123456789012" && a.resource_id.len() == 12
}

fn p384_public_pem(seed: u8) -> String {
    let key = token::signing_key_from_bytes(&[seed; 48]).unwrap();
    token::public_key_pem(key.verifying_key())
}

#[tokio::test]
async fn every_operation_answers_in_ivs_shapes() {
    let ivs = IvsLocal::start(&["--rate-scale", "0"]);
    let c = ivs.client();

    // CreateStage with tags and two tokens.
    let created = c
        .call(
            Op::CreateStage,
            json!({"name": "s-1", "tags": {"stagefan:broadcast": "default", "stagefan:managed": "true"},
                   "participantTokenConfigurations": [
                       {"userId": "host", "capabilities": ["PUBLISH"], "duration": 60},
                       {"attributes": {"a": "b"}}]}),
        )
        .await
        .ok();
    let stage = &created["stage"];
    let arn = stage["arn"].as_str().unwrap().to_string();
    assert!(stage_arn_ok(&arn), "{arn}");
    assert_eq!(stage["name"], "s-1");
    assert_eq!(stage["endpoints"]["whip"], format!("{}/whip", ivs.base));
    assert_eq!(
        stage["endpoints"]["events"],
        format!("ws://{}/events", ivs.host)
    );
    assert!(stage.get("activeSessionId").is_none());
    let tokens = created["participantTokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0]["capabilities"], json!(["PUBLISH"]));
    assert_eq!(tokens[1]["capabilities"], json!(["PUBLISH", "SUBSCRIBE"]));
    assert_eq!(tokens[1]["duration"], 720);

    // The tokens are ES384 JWTs in IVS's claims format, signed with ivs-local's own key.
    let stats = ivs.stats().await;
    let own =
        token::verifying_key_from_pem(stats["ownKey"]["publicKeyPem"].as_str().unwrap()).unwrap();
    let own_arn = stats["ownKey"]["arn"].as_str().unwrap().to_string();
    let t = token::verify(
        tokens[0]["token"].as_str().unwrap(),
        common::unix_now(),
        |kid| (kid == own_arn).then_some(own),
    )
    .unwrap();
    assert_eq!(t.claims.resource, arn);
    assert_eq!(t.claims.jti, tokens[0]["participantId"].as_str().unwrap());
    assert_eq!(t.claims.user_id.as_deref(), Some("host"));
    assert_eq!(t.claims.exp - t.claims.iat, 3600);
    assert!(t.claims.capabilities.allow_publish && !t.claims.capabilities.allow_subscribe);
    assert_eq!(t.claims.whip_url, format!("{}/whip", ivs.base));

    // GetStage, UpdateStage, ListStages with pagination.
    assert_eq!(
        c.call(Op::GetStage, json!({"arn": arn})).await.ok()["stage"]["arn"],
        arn
    );
    let updated = c
        .call(Op::UpdateStage, json!({"arn": arn, "name": "renamed"}))
        .await
        .ok();
    assert_eq!(updated["stage"]["name"], "renamed");
    let mut arns = vec![arn.clone()];
    for i in 0..3 {
        let r = c
            .call(Op::CreateStage, json!({"name": format!("p{i}")}))
            .await
            .ok();
        arns.push(r["stage"]["arn"].as_str().unwrap().to_string());
    }
    let mut listed = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut body = json!({"maxResults": 3});
        if let Some(t) = &next {
            body["nextToken"] = json!(t);
        }
        let page = c.call(Op::ListStages, body).await.ok();
        let stages = page["stages"].as_array().unwrap();
        assert!(stages.len() <= 3);
        listed.extend(
            stages
                .iter()
                .map(|s| s["arn"].as_str().unwrap().to_string()),
        );
        match page["nextToken"].as_str() {
            Some(t) => next = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(
        listed, arns,
        "ListStages lists every stage once, in creation order"
    );

    // CreateParticipantToken.
    let pt = c
        .call(
            Op::CreateParticipantToken,
            json!({"stageArn": arn, "userId": "v1", "capabilities": ["SUBSCRIBE"], "duration": 5}),
        )
        .await
        .ok()["participantToken"]
        .clone();
    assert_eq!(pt["userId"], "v1");
    assert_eq!(pt["participantId"].as_str().unwrap().len(), 12);
    assert!(pt["expirationTime"].as_str().unwrap().ends_with('Z'));

    // Tags: list, add, remove (the ARN URL-encoded in the path).
    let path = tags_path(&arn);
    let tags = c
        .send("GET", &path, "", Vec::new(), &Sign::default())
        .await
        .ok();
    assert_eq!(
        tags["tags"],
        json!({"stagefan:broadcast": "default", "stagefan:managed": "true"})
    );
    c.send(
        "POST",
        &path,
        "",
        json!({"tags": {"x": "1", "y z": "2"}})
            .to_string()
            .into_bytes(),
        &Sign::default(),
    )
    .await
    .ok();
    c.send(
        "DELETE",
        &path,
        &untag_query(&["stagefan:managed", "y z"]),
        Vec::new(),
        &Sign::default(),
    )
    .await
    .ok();
    let tags = c
        .send("GET", &path, "", Vec::new(), &Sign::default())
        .await
        .ok();
    assert_eq!(
        tags["tags"],
        json!({"stagefan:broadcast": "default", "x": "1"})
    );

    // Public keys: import, get, list, delete; tags on a key too.
    let pem = p384_public_pem(7);
    let key = c
        .call(
            Op::ImportPublicKey,
            json!({"publicKeyMaterial": pem, "name": "k1"}),
        )
        .await
        .ok()["publicKey"]
        .clone();
    let key_arn = key["arn"].as_str().unwrap().to_string();
    assert!(key_arn.contains(":public-key/"));
    assert_eq!(key["fingerprint"].as_str().unwrap().len(), 64);
    assert_eq!(
        c.call(Op::GetPublicKey, json!({"arn": key_arn})).await.ok()["publicKey"]["name"],
        "k1"
    );
    let listed = c.call(Op::ListPublicKeys, json!({})).await.ok();
    assert_eq!(listed["publicKeys"][0]["arn"], key_arn);
    let kpath = tags_path(&key_arn);
    c.send(
        "POST",
        &kpath,
        "",
        json!({"tags": {"k": "v"}}).to_string().into_bytes(),
        &Sign::default(),
    )
    .await
    .ok();
    c.call(Op::DeletePublicKey, json!({"arn": key_arn}))
        .await
        .ok();
    c.call(Op::GetPublicKey, json!({"arn": key_arn}))
        .await
        .assert_error("ResourceNotFoundException", 404);

    // Participants of a stage nobody joined; replication needs a publisher.
    let lp = c
        .call(
            Op::ListParticipants,
            json!({"stageArn": arn, "sessionId": "st-AAAAAAAAAAAAA"}),
        )
        .await
        .ok();
    assert_eq!(lp["participants"], json!([]));
    c.call(
        Op::GetParticipant,
        json!({"stageArn": arn, "sessionId": "st-AAAAAAAAAAAAA", "participantId": "x"}),
    )
    .await
    .assert_error("ResourceNotFoundException", 404);
    let ev = c
        .call(
            Op::ListParticipantEvents,
            json!({"stageArn": arn, "sessionId": "st-AAAAAAAAAAAAA", "participantId": "x"}),
        )
        .await
        .ok();
    assert_eq!(ev["events"], json!([]));
    c.call(
        Op::DisconnectParticipant,
        json!({"stageArn": arn, "participantId": "x"}),
    )
    .await
    .assert_error("ResourceNotFoundException", 404);
    c.call(
        Op::StartParticipantReplication,
        json!({"sourceStageArn": arn, "destinationStageArn": arns[1], "participantId": "x"}),
    )
    .await
    .assert_error("ResourceNotFoundException", 404);
    c.call(
        Op::StopParticipantReplication,
        json!({"sourceStageArn": arn, "destinationStageArn": arns[1], "participantId": "x"}),
    )
    .await
    .assert_error("ResourceNotFoundException", 404);
    let reps = c
        .call(
            Op::ListParticipantReplicas,
            json!({"sourceStageArn": arn, "participantId": "x"}),
        )
        .await
        .ok();
    assert_eq!(reps["replicas"], json!([]));

    // DeleteStage.
    assert_eq!(
        c.call(Op::DeleteStage, json!({"arn": arn})).await.ok(),
        json!({})
    );
    c.call(Op::GetStage, json!({"arn": arn}))
        .await
        .assert_error("ResourceNotFoundException", 404);
    c.call(Op::DeleteStage, json!({"arn": arn}))
        .await
        .assert_error("ResourceNotFoundException", 404);

    // Every call was counted.
    let stats = ivs.stats().await;
    assert_eq!(stats["operations"]["CreateStage"]["requests"], 4);
    assert_eq!(stats["operations"]["CreateStage"]["statuses"]["200"], 4);
    assert_eq!(stats["state"]["stages"], 3);
}

#[tokio::test]
async fn errors_have_ivs_shapes() {
    let ivs = IvsLocal::start(&["--rate-scale", "0"]);
    let c = ivs.client();
    let s = Sign::default();
    // Not JSON, wrong types, missing required members.
    c.send("POST", "/CreateStage", "", b"{not json".to_vec(), &s)
        .await
        .assert_error("ValidationException", 400);
    c.call(Op::CreateStage, json!({"name": 5}))
        .await
        .assert_error("ValidationException", 400);
    c.call(Op::GetStage, json!({}))
        .await
        .assert_error("ValidationException", 400);
    c.call(Op::GetStage, json!({"arn": "arn:aws:s3:::bucket"}))
        .await
        .assert_error("ValidationException", 400);
    c.call(Op::CreateStage, json!({"name": "has space"}))
        .await
        .assert_error("ValidationException", 400);
    let configs: Vec<Value> = (0..13).map(|_| json!({})).collect();
    c.call(
        Op::CreateStage,
        json!({"participantTokenConfigurations": configs}),
    )
    .await
    .assert_error("ValidationException", 400);
    let tags: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    c.call(Op::CreateStage, json!({"tags": tags}))
        .await
        .assert_error("ValidationException", 400);
    let arn = c.call(Op::CreateStage, json!({})).await.ok()["stage"]["arn"]
        .as_str()
        .unwrap()
        .to_string();
    for bad in [
        json!({"stageArn": arn, "duration": 0}),
        json!({"stageArn": arn, "duration": 20161}),
        json!({"stageArn": arn, "userId": "u".repeat(129)}),
        json!({"stageArn": arn, "attributes": {"k": "v".repeat(1024)}}),
        json!({"stageArn": arn, "capabilities": ["ADMIN"]}),
    ] {
        c.call(Op::CreateParticipantToken, bad)
            .await
            .assert_error("ValidationException", 400);
    }
    c.call(
        Op::CreateParticipantToken,
        json!({"stageArn": "arn:aws:ivs:us-east-1:123456789012:stage/nope"}),
    )
    .await
    .assert_error("ResourceNotFoundException", 404);
    // 50 tags in all at most: adding the 51st through TagResource is refused.
    let many: serde_json::Map<String, Value> =
        (0..50).map(|i| (format!("k{i}"), json!("v"))).collect();
    let path = tags_path(&arn);
    c.send(
        "POST",
        &path,
        "",
        json!({"tags": many}).to_string().into_bytes(),
        &s,
    )
    .await
    .ok();
    c.send(
        "POST",
        &path,
        "",
        json!({"tags": {"one-more": "v"}}).to_string().into_bytes(),
        &s,
    )
    .await
    .assert_error("ValidationException", 400);
    c.send("DELETE", &path, "", Vec::new(), &s)
        .await
        .assert_error("ValidationException", 400);
    // Unknown operation.
    let r = c
        .send("POST", "/CreateChannel", "", b"{}".to_vec(), &s)
        .await;
    assert_eq!(
        (r.status, r.error_type.as_deref()),
        (404, Some("UnknownOperationException"))
    );
    // Filters are exclusive.
    c.call(
        Op::ListParticipants,
        json!({"stageArn": arn, "sessionId": "st-AAAAAAAAAAAAA", "filterByUserId": "a", "filterByPublished": true}),
    )
    .await
    .assert_error("ValidationException", 400);
    c.call(Op::ListStages, json!({"maxResults": 101}))
        .await
        .assert_error("ValidationException", 400);
    c.call(Op::ListStages, json!({"nextToken": "bogus"}))
        .await
        .assert_error("ValidationException", 400);
}

#[tokio::test]
async fn sigv4_refusals_use_aws_error_shapes() {
    let ivs = IvsLocal::start(&["--rate-scale", "0"]);
    let c = ivs.client();
    let body = br#"{"name":"signed"}"#.to_vec();
    let send = |sign: Sign| {
        let body = body.clone();
        let c = &c;
        async move { c.send("POST", "/CreateStage", "", body, &sign).await }
    };
    // Correct.
    send(Sign::default()).await.ok();
    // Wrong secret.
    let m = send(Sign {
        secret: "wrong".into(),
        ..Sign::default()
    })
    .await
    .assert_error("InvalidSignatureException", 403);
    assert!(m.contains("does not match"), "{m}");
    // Tampered body: signed one thing, sent another.
    send(Sign {
        signed_body: Some(br#"{"name":"other"}"#.to_vec()),
        ..Sign::default()
    })
    .await
    .assert_error("InvalidSignatureException", 403);
    // Stale and future dates (more than 15 minutes away).
    let m = send(Sign {
        clock_offset_secs: -16 * 60,
        ..Sign::default()
    })
    .await
    .assert_error("InvalidSignatureException", 403);
    assert!(m.starts_with("Signature expired"), "{m}");
    let m = send(Sign {
        clock_offset_secs: 16 * 60,
        ..Sign::default()
    })
    .await
    .assert_error("InvalidSignatureException", 403);
    assert!(m.starts_with("Signature not yet current"), "{m}");
    // Within the window is fine.
    send(Sign {
        clock_offset_secs: -14 * 60,
        ..Sign::default()
    })
    .await
    .ok();
    // Wrong region, wrong service, unknown key, no signature.
    send(Sign {
        region: "eu-west-1".into(),
        ..Sign::default()
    })
    .await
    .assert_error("InvalidSignatureException", 403);
    send(Sign {
        service: "ivsrealtime".into(),
        ..Sign::default()
    })
    .await
    .assert_error("InvalidSignatureException", 403);
    send(Sign {
        access_key: "AKIDUNKNOWN".into(),
        ..Sign::default()
    })
    .await
    .assert_error("UnrecognizedClientException", 403);
    send(Sign {
        unsigned: true,
        ..Sign::default()
    })
    .await
    .assert_error("MissingAuthenticationTokenException", 403);
    // Only the two correct requests created stages; the refusals are counted.
    let stats = ivs.stats().await;
    assert_eq!(stats["state"]["stages"], 2);
    assert_eq!(stats["operations"]["CreateStage"]["refusedAuth"], 8);
    assert_eq!(stats["operations"]["CreateStage"]["statuses"]["403"], 8);
}

#[tokio::test]
async fn ivs_request_rates_are_enforced_with_throttling_exception() {
    let ivs = IvsLocal::start(&[]);
    let c = ivs.client();
    // 12 ListStages at once: IVS allows 5 per second. They are sent together, so that even a
    // slow machine gets them to ivs-local within a fraction of a second (sent one after the
    // other, a machine taking over 1.4 s for them would see nothing throttled, and the check
    // would pass without checking). The bucket refills continuously: the bound is 5 plus what
    // the elapsed time refilled.
    let started = std::time::Instant::now();
    let answers = futures_join_all((0..12).map(|_| c.call(Op::ListStages, json!({})))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut ok = 0;
    let mut throttled = 0;
    for r in &answers {
        match r.status {
            200 => ok += 1,
            429 => {
                assert_eq!(r.assert_error("ThrottlingException", 429), "Rate exceeded");
                throttled += 1;
            }
            s => panic!("unexpected {s}: {r:?}"),
        }
    }
    let bound = 5 + (elapsed * 5.0).ceil() as usize;
    assert!(ok >= 5 && ok <= bound, "{ok} allowed in {elapsed:.3} s");
    assert_eq!(ok + throttled, 12);
    assert!(
        throttled > 0,
        "nothing throttled of 12 requests sent at once ({elapsed:.3} s)"
    );
    // Another operation has its own budget.
    c.call(Op::ListPublicKeys, json!({})).await.ok();
    // A second later the budget is back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.call(Op::ListStages, json!({})).await.ok();

    // CreateParticipantToken: 50 per second, 70 sent at once. They name a stage that does not
    // exist, so each admitted one is answered at once (404) and the debug build's ES384
    // signing time does not spread them over more than a second.
    let missing = "arn:aws:ivs:us-east-1:123456789012:stage/NotThere1234";
    let calls = (0..70).map(|_| c.call(Op::CreateParticipantToken, json!({"stageArn": missing})));
    let started = std::time::Instant::now();
    let results = futures_join_all(calls).await;
    let elapsed = started.elapsed().as_secs_f64();
    let granted = results.iter().filter(|r| r.status == 404).count();
    let refused = results.iter().filter(|r| r.status == 429).count();
    assert_eq!(granted + refused, 70);
    let bound = 50 + (elapsed * 50.0).ceil() as usize;
    assert!(
        granted >= 50 && granted <= bound,
        "{granted} admitted in {elapsed:.3} s"
    );

    let stats = ivs.stats().await;
    let ls = &stats["operations"]["ListStages"];
    assert_eq!(ls["throttled"], throttled);
    assert_eq!(ls["requests"], 13);
    // Within any one second: the burst of 5 plus at most 5 refilled.
    assert!(ls["maxAcceptedPerSecond"].as_u64().unwrap() <= 10, "{ls}");
    assert!(ls["maxAcceptedPerSecond"].as_u64().unwrap() >= 5, "{ls}");
    assert!(ls["maxRequestsPerSecond"].as_u64().unwrap() >= 12, "{ls}");
    assert_eq!(
        stats["operations"]["CreateParticipantToken"]["limitPerSecond"],
        50.0
    );
    assert_eq!(
        stats["operations"]["CreateParticipantToken"]["throttled"],
        refused
    );
}

/// Joins futures without pulling in the `futures` crate.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let set: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(set.len());
    // Poll them concurrently: spawn-free, all sharing one task.
    let mut pending: Vec<_> = set.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all_done = false,
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(
        results
            .into_iter()
            .map(|r| r.expect("every future completed")),
    );
    out
}

#[tokio::test]
async fn rate_scale_flag_scales_the_budget() {
    let ivs = IvsLocal::start(&["--rate-scale", "0.4"]);
    let c = ivs.client();
    // 5 TPS × 0.4 = 2 per second.
    let mut ok = 0;
    for _ in 0..6 {
        if c.call(Op::ListStages, json!({})).await.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(
        ivs.stats().await["operations"]["ListStages"]["limitPerSecond"],
        2.0
    );
}

#[tokio::test]
async fn quotas_of_stages_and_public_keys() {
    let ivs = IvsLocal::start(&["--rate-scale", "0", "--stage-quota", "2"]);
    let c = ivs.client();
    c.call(Op::CreateStage, json!({})).await.ok();
    c.call(Op::CreateStage, json!({})).await.ok();
    c.call(Op::CreateStage, json!({}))
        .await
        .assert_error("ServiceQuotaExceededException", 402);
    for seed in 1..=3 {
        c.call(
            Op::ImportPublicKey,
            json!({"publicKeyMaterial": p384_public_pem(seed)}),
        )
        .await
        .ok();
    }
    c.call(
        Op::ImportPublicKey,
        json!({"publicKeyMaterial": p384_public_pem(4)}),
    )
    .await
    .assert_error("ServiceQuotaExceededException", 402);
    c.call(
        Op::ImportPublicKey,
        json!({"publicKeyMaterial": p384_public_pem(1)}),
    )
    .await
    .assert_error("ConflictException", 409);
    // A P-256 key is not a P-384 key.
    let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\nq9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n-----END PUBLIC KEY-----\n";
    c.call(Op::ImportPublicKey, json!({"publicKeyMaterial": p256}))
        .await
        .assert_error("ValidationException", 400);
}

#[tokio::test]
async fn sigint_shuts_it_down_cleanly() {
    let mut ivs = IvsLocal::start(&[]);
    ivs.client().call(Op::ListStages, json!({})).await.ok();
    // The shell's own `kill`, so no procps is needed.
    let killed = std::process::Command::new("sh")
        .args(["-c", &format!("kill -INT {}", ivs.pid())])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = ivs
        .wait_exit(Duration::from_secs(10))
        .expect("ivs-local exits after SIGINT");
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_flags_are_refused() {
    for args in [
        ["--rate-scale=-1"],
        ["--account-id=12"],
        ["--region=US_EAST"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ivs-local"))
            .args(["--port", "0", "--no-media"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("ivs-local:"),
            "{args:?}"
        );
    }
}
