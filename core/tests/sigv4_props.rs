//! Properties of `sigv4` on random requests: it agrees with AWS's own Rust signer
//! (`aws-sigv4`) on the signature, `verify` accepts what `sign` made, and any change to the
//! method, path, query, a signed header or the body is refused.

use std::time::{Duration, UNIX_EPOCH};

use aws_sigv4::http_request::{
    sign as aws_sign, SignableBody, SignableRequest, SigningSettings as AwsSettings,
};
use aws_sigv4::sign::v4;
use proptest::prelude::*;
use stagefan_core::sigv4::{
    self, uri_encode, Credentials, HttpRequest, SigningParams, SigningSettings, UtcDateTime,
    VerifyError, VerifyParams,
};

const NOW: i64 = 1_764_160_000;

fn text() -> impl Strategy<Value = String> {
    // Unreserved, reserved and non-ASCII characters alike.
    proptest::string::string_regex("[a-zA-Z0-9 ._~:/@!$&'()*+,;=%é✓-]{1,12}").unwrap()
}

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    query: String,
    header: (String, String),
    body: Vec<u8>,
}

fn request() -> impl Strategy<Value = Req> {
    (
        prop_oneof![Just("GET"), Just("POST"), Just("DELETE")],
        proptest::collection::vec(text(), 0..4),
        proptest::collection::vec((text(), text()), 0..4),
        (
            proptest::string::string_regex("x-[a-z]{1,8}").unwrap(),
            proptest::string::string_regex("[ -~]{0,20}").unwrap(),
        ),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(method, segments, params, header, body)| Req {
            method,
            // Wire form: each segment percent-encoded, as a client sends it.
            path: format!(
                "/{}",
                segments
                    .iter()
                    .map(|s| uri_encode(s, true))
                    .collect::<Vec<_>>()
                    .join("/")
            ),
            query: params
                .iter()
                .map(|(k, v)| format!("{}={}", uri_encode(k, true), uri_encode(v, true)))
                .collect::<Vec<_>>()
                .join("&"),
            header,
            body,
        })
}

fn ours(r: &Req, creds: &Credentials, at: i64) -> (Vec<(String, String)>, String) {
    let headers = [
        ("host", "127.0.0.1:8790"),
        (r.header.0.as_str(), r.header.1.as_str()),
    ];
    let s = sigv4::sign(
        &HttpRequest {
            method: r.method,
            path: &r.path,
            query: &r.query,
            headers: &headers,
            body: &r.body,
        },
        &SigningParams {
            credentials: creds,
            region: "us-east-1",
            service: "ivs",
            time: UtcDateTime::from_unix(at),
            settings: SigningSettings::default(),
        },
    );
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    all.extend(s.headers.into_iter().map(|(n, v)| (n.to_string(), v)));
    (all, s.signature)
}

fn check(r: &Req, headers: &[(String, String)]) -> Result<sigv4::VerifiedRequest, VerifyError> {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    sigv4::verify(
        &HttpRequest {
            method: r.method,
            path: &r.path,
            query: &r.query,
            headers: &h,
            body: &r.body,
        },
        &VerifyParams {
            region: "us-east-1",
            service: "ivs",
            now_unix: NOW,
            max_skew_secs: 900,
            normalize_path: true,
        },
        |id| (id == "AKID").then(|| Credentials::new("AKID", "secret", None)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn same_signature_as_aws_sigv4(r in request(), at in 1_000_000_000i64..4_000_000_000) {
        let creds = Credentials::new("AKID", "secret", None);
        let (_, signature) = ours(&r, &creds, at);
        let identity = aws_credential_types::Credentials::new("AKID", "secret", None, None, "p").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("ivs")
            .time(UNIX_EPOCH + Duration::from_secs(at as u64))
            .settings(AwsSettings::default())
            .build()
            .unwrap()
            .into();
        let uri = if r.query.is_empty() {
            format!("http://127.0.0.1:8790{}", r.path)
        } else {
            format!("http://127.0.0.1:8790{}?{}", r.path, r.query)
        };
        let headers = [("host", "127.0.0.1:8790"), (r.header.0.as_str(), r.header.1.as_str())];
        let signable = SignableRequest::new(r.method, uri, headers.iter().copied(), SignableBody::Bytes(&r.body)).unwrap();
        let (_, aws_signature) = aws_sign(signable, &params).unwrap().into_parts();
        prop_assert_eq!(signature, aws_signature);
    }

    #[test]
    fn verify_accepts_the_signed_request_and_refuses_any_change(r in request(), which in 0usize..5, byte in any::<u8>()) {
        let creds = Credentials::new("AKID", "secret", None);
        let (headers, _) = ours(&r, &creds, NOW);
        prop_assert!(check(&r, &headers).is_ok());
        let mut t = r.clone();
        let mut h = headers.clone();
        match which {
            0 => t.method = if r.method == "POST" { "PUT" } else { "POST" },
            1 => t.path = format!("{}x", r.path),
            2 => t.query = if r.query.is_empty() { "a=b".into() } else { format!("{}&z=1", r.query) },
            3 => h[1].1 = format!("{}!", h[1].1.trim()),
            _ => t.body.push(byte),
        }
        prop_assert_eq!(check(&t, &h), Err(VerifyError::SignatureMismatch));
    }

    #[test]
    fn utc_times_round_trip(secs in -10_000_000_000i64..100_000_000_000) {
        let t = UtcDateTime::from_unix(secs);
        prop_assert_eq!(t.to_unix(), secs);
        if t.year >= 1000 && t.year <= 9999 {
            prop_assert_eq!(UtcDateTime::parse_amz_date(&t.amz_date()), Some(t));
            prop_assert_eq!(UtcDateTime::parse_rfc3339(&t.rfc3339()), Some(t));
        }
    }
}
