//! Cross-check: the same IVS requests signed by `stagefan_core::sigv4` and by AWS's own Rust
//! signer (`aws-sigv4`) must carry the same signature and `Authorization` header.

use std::time::{Duration, UNIX_EPOCH};

use aws_sigv4::http_request::{
    sign as aws_sign, SignableBody, SignableRequest, SigningSettings as AwsSettings,
};
use aws_sigv4::sign::v4;
use stagefan_core::ivs::{tags_path, untag_query};
use stagefan_core::sigv4::{
    self, Credentials, HttpRequest, SigningParams, SigningSettings, UtcDateTime,
};

struct Case {
    method: &'static str,
    path: String,
    query: String,
    body: Vec<u8>,
    token: Option<&'static str>,
}

fn check(case: &Case, now: u64) {
    let headers: Vec<(&str, &str)> = vec![
        ("host", "127.0.0.1:8790"),
        ("content-type", "application/json"),
    ];
    let uri = if case.query.is_empty() {
        format!("http://127.0.0.1:8790{}", case.path)
    } else {
        format!("http://127.0.0.1:8790{}?{}", case.path, case.query)
    };
    let aws_creds = aws_credential_types::Credentials::new(
        "AKIDLOCALSTAGEFAN",
        "stagefan-local-secret",
        case.token.map(str::to_string),
        None,
        "test",
    );
    let identity = aws_creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("ivs")
        .time(UNIX_EPOCH + Duration::from_secs(now))
        .settings(AwsSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        case.method,
        uri,
        headers.iter().copied(),
        SignableBody::Bytes(&case.body),
    )
    .unwrap();
    let (instructions, aws_signature) = aws_sign(signable, &params).unwrap().into_parts();
    let aws_headers: Vec<(String, String)> = instructions
        .headers()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();

    let creds = Credentials::new(
        "AKIDLOCALSTAGEFAN",
        "stagefan-local-secret",
        case.token.map(str::to_string),
    );
    let ours = sigv4::sign(
        &HttpRequest {
            method: case.method,
            path: &case.path,
            query: &case.query,
            headers: &headers,
            body: &case.body,
        },
        &SigningParams {
            credentials: &creds,
            region: "us-east-1",
            service: "ivs",
            time: UtcDateTime::from_unix(now as i64),
            settings: SigningSettings::default(),
        },
    );
    assert_eq!(
        ours.signature, aws_signature,
        "{} {}",
        case.method, case.path
    );
    let get = |list: &[(String, String)], name: &str| {
        list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    let our_headers: Vec<(String, String)> = ours
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    for name in ["authorization", "x-amz-date", "x-amz-security-token"] {
        assert_eq!(get(&our_headers, name), get(&aws_headers, name), "{name}");
    }
}

#[test]
fn same_signature_as_aws_sigv4_crate_for_ivs_requests() {
    let stage = "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456";
    let cases = vec![
        Case {
            method: "POST",
            path: "/CreateStage".into(),
            query: String::new(),
            body: br#"{"name":"stagefan-default-1","tags":{"stagefan:broadcast":"default","stagefan:managed":"true"}}"#.to_vec(),
            token: None,
        },
        Case {
            method: "POST",
            path: "/ListStages".into(),
            query: String::new(),
            body: b"{}".to_vec(),
            token: Some("FwoGZXIvYXdzEJr//////////wEaDLocalSessionToken+/="),
        },
        Case {
            method: "GET",
            path: tags_path(stage),
            query: String::new(),
            body: Vec::new(),
            token: None,
        },
        Case {
            method: "DELETE",
            path: tags_path(stage),
            query: untag_query(&["stagefan:managed", "b key", "a"]),
            body: Vec::new(),
            token: None,
        },
        Case {
            method: "POST",
            path: "/CreateParticipantToken".into(),
            query: String::new(),
            body: "{\"stageArn\":\"x\",\"userId\":\"ユーザー\"}".as_bytes().to_vec(),
            token: None,
        },
    ];
    for now in [1_764_160_000u64, 1_440_938_160, 2_000_000_000] {
        for case in &cases {
            check(case, now);
        }
    }
}
