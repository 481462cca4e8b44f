//! Benchmark (not a test: `#[ignore]`d): cost of the crypto in `core` natively. Run:
//!   cargo test --release -p stagefan-core --test bench_crypto -- --ignored --nocapture

use std::time::Instant;

use stagefan_core::sigv4::{
    self, Credentials, HttpRequest, SigningParams, SigningSettings, UtcDateTime, VerifyParams,
};
use stagefan_core::token::{self, TokenBuilder};

fn per_op(label: &str, n: u32, mut f: impl FnMut(u32)) {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!("{label:36} {us:9.1} µs/op  {:9.0} ops/s", 1e6 / us);
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn crypto_costs() {
    let creds = Credentials::new("AKIDLOCALSTAGEFAN", "stagefan-local-secret", None);
    let body =
        br#"{"stageArn":"arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456","userId":"v"}"#;
    let base = [
        ("host", "127.0.0.1:8790"),
        ("content-type", "application/json"),
    ];
    let req = HttpRequest {
        method: "POST",
        path: "/CreateParticipantToken",
        query: "",
        headers: &base,
        body,
    };
    let now = 1_764_160_000;
    let params = SigningParams {
        credentials: &creds,
        region: "us-east-1",
        service: "ivs",
        time: UtcDateTime::from_unix(now),
        settings: SigningSettings::default(),
    };
    per_op("sigv4::sign", 20_000, |_| {
        std::hint::black_box(sigv4::sign(&req, &params));
    });
    let signed = sigv4::sign(&req, &params);
    let mut all: Vec<(&str, &str)> = base.to_vec();
    all.extend(signed.headers.iter().map(|(n, v)| (*n, v.as_str())));
    let vreq = HttpRequest {
        headers: &all,
        ..req
    };
    let vp = VerifyParams {
        region: "us-east-1",
        service: "ivs",
        now_unix: now,
        max_skew_secs: 900,
        normalize_path: true,
    };
    per_op("sigv4::verify", 20_000, |_| {
        sigv4::verify(&vreq, &vp, |_| Some(creds.clone())).unwrap();
    });
    let key = token::signing_key_from_bytes(&[7; 48]).unwrap();
    let vk = *key.verifying_key();
    let builder = TokenBuilder::new(
        "arn:aws:ivs:us-east-1:123456789012:public-key/KeyKeyKey123",
        "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456",
        "http://127.0.0.1:8790/whip",
        "ws://127.0.0.1:8790/events",
    )
    .user_id("viewer-123")
    .valid_for(now, 3600);
    per_op("token build + ES384 sign (p384)", 500, |i| {
        std::hint::black_box(
            builder
                .clone()
                .participant_id(format!("p{i}"))
                .build()
                .unwrap()
                .sign(&key),
        );
    });
    let jwt = builder
        .clone()
        .participant_id("p")
        .build()
        .unwrap()
        .sign(&key);
    per_op("token verify (ES384)", 500, |_| {
        token::verify(&jwt, now + 1, |_| Some(vk)).unwrap();
    });
}
