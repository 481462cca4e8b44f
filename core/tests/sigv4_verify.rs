//! `sigv4::verify` accepts what `sigv4::sign` produced and refuses every kind of forgery with
//! its own error kind.

use stagefan_core::sigv4::{
    self, Credentials, HttpRequest, SigningParams, SigningSettings, UtcDateTime, VerifyError,
    VerifyParams,
};

const NOW: i64 = 1_764_160_000;
const BODY: &[u8] = br#"{"name":"s1","tags":{"stagefan:managed":"true"}}"#;

fn creds() -> Credentials {
    Credentials::new("AKIDLOCALSTAGEFAN", "stagefan-local-secret", None)
}

/// A signed CreateStage request's headers (the request's own plus the signature's).
fn signed_headers(
    settings: SigningSettings,
    region: &str,
    service: &str,
    at: i64,
) -> Vec<(String, String)> {
    let base = [
        ("host", "127.0.0.1:8790"),
        ("content-type", "application/json"),
    ];
    let c = creds();
    let s = sigv4::sign(
        &HttpRequest {
            method: "POST",
            path: "/CreateStage",
            query: "",
            headers: &base,
            body: BODY,
        },
        &SigningParams {
            credentials: &c,
            region,
            service,
            time: UtcDateTime::from_unix(at),
            settings,
        },
    );
    base.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .chain(s.headers.into_iter().map(|(n, v)| (n.to_string(), v)))
        .collect()
}

fn check(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
    now: i64,
    secret: &str,
) -> Result<sigv4::VerifiedRequest, VerifyError> {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    sigv4::verify(
        &HttpRequest {
            method,
            path,
            query,
            headers: &h,
            body,
        },
        &VerifyParams {
            region: "us-east-1",
            service: "ivs",
            now_unix: now,
            max_skew_secs: sigv4::MAX_CLOCK_SKEW_SECS,
            normalize_path: true,
        },
        |id| (id == "AKIDLOCALSTAGEFAN").then(|| Credentials::new(id, secret, None)),
    )
}

const SECRET: &str = "stagefan-local-secret";

fn ok_headers() -> Vec<(String, String)> {
    signed_headers(SigningSettings::default(), "us-east-1", "ivs", NOW)
}

fn replace(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                if n == name {
                    value.to_string()
                } else {
                    v.clone()
                },
            )
        })
        .collect()
}

#[test]
fn accepts_a_good_signature_within_the_skew_window() {
    let h = ok_headers();
    let v = check("POST", "/CreateStage", "", &h, BODY, NOW, SECRET).unwrap();
    assert_eq!(v.access_key_id, "AKIDLOCALSTAGEFAN");
    assert_eq!(v.signed_at.to_unix(), NOW);
    for skew in [-900, 900, 899, -1] {
        assert!(
            check("POST", "/CreateStage", "", &h, BODY, NOW + skew, SECRET).is_ok(),
            "{skew}"
        );
    }
    // Header names arrive in any case.
    let upper: Vec<(String, String)> = h
        .iter()
        .map(|(n, v)| (n.to_ascii_uppercase(), v.clone()))
        .collect();
    assert!(check("POST", "/CreateStage", "", &upper, BODY, NOW, SECRET).is_ok());
}

#[test]
fn refuses_a_wrong_secret() {
    assert_eq!(
        check(
            "POST",
            "/CreateStage",
            "",
            &ok_headers(),
            BODY,
            NOW,
            "another-secret"
        ),
        Err(VerifyError::SignatureMismatch)
    );
}

#[test]
fn refuses_a_tampered_body_path_query_or_header() {
    let h = ok_headers();
    let tampered = br#"{"name":"s2","tags":{"stagefan:managed":"true"}}"#;
    assert_eq!(
        check("POST", "/CreateStage", "", &h, tampered, NOW, SECRET),
        Err(VerifyError::SignatureMismatch)
    );
    assert_eq!(
        check("POST", "/DeleteStage", "", &h, BODY, NOW, SECRET),
        Err(VerifyError::SignatureMismatch)
    );
    assert_eq!(
        check("POST", "/CreateStage", "a=b", &h, BODY, NOW, SECRET),
        Err(VerifyError::SignatureMismatch)
    );
    assert_eq!(
        check("PUT", "/CreateStage", "", &h, BODY, NOW, SECRET),
        Err(VerifyError::SignatureMismatch)
    );
    let h2 = replace(&h, "content-type", "text/plain");
    assert_eq!(
        check("POST", "/CreateStage", "", &h2, BODY, NOW, SECRET),
        Err(VerifyError::SignatureMismatch)
    );
    // With x-amz-content-sha256 signed, a changed body is caught by the hash check first.
    let with_hash = signed_headers(
        SigningSettings {
            add_content_sha256: true,
            ..SigningSettings::default()
        },
        "us-east-1",
        "ivs",
        NOW,
    );
    assert!(check("POST", "/CreateStage", "", &with_hash, BODY, NOW, SECRET).is_ok());
    assert_eq!(
        check(
            "POST",
            "/CreateStage",
            "",
            &with_hash,
            tampered,
            NOW,
            SECRET
        ),
        Err(VerifyError::PayloadHashMismatch)
    );
}

#[test]
fn refuses_stale_and_future_dates() {
    let h = ok_headers();
    for skew in [901, -901, 3600] {
        assert!(matches!(
            check("POST", "/CreateStage", "", &h, BODY, NOW + skew, SECRET),
            Err(VerifyError::RequestTimeSkewed { .. })
        ));
    }
    // Moving x-amz-date to now breaks the scope or the signature, never passes.
    let later = UtcDateTime::from_unix(NOW + 2 * 86_400).amz_date();
    assert!(matches!(
        check(
            "POST",
            "/CreateStage",
            "",
            &replace(&h, "x-amz-date", &later),
            BODY,
            NOW + 2 * 86_400,
            SECRET
        ),
        Err(VerifyError::ScopeDateMismatch { .. })
    ));
    let minute_later = UtcDateTime::from_unix(NOW + 60).amz_date();
    assert_eq!(
        check(
            "POST",
            "/CreateStage",
            "",
            &replace(&h, "x-amz-date", &minute_later),
            BODY,
            NOW,
            SECRET
        ),
        Err(VerifyError::SignatureMismatch)
    );
    assert_eq!(
        check(
            "POST",
            "/CreateStage",
            "",
            &replace(&h, "x-amz-date", "yesterday"),
            BODY,
            NOW,
            SECRET
        ),
        Err(VerifyError::MalformedDate)
    );
}

#[test]
fn refuses_wrong_region_service_and_unknown_key() {
    let h = signed_headers(SigningSettings::default(), "eu-west-1", "ivs", NOW);
    assert!(matches!(
        check("POST", "/CreateStage", "", &h, BODY, NOW, SECRET),
        Err(VerifyError::WrongRegion { .. })
    ));
    let h = signed_headers(SigningSettings::default(), "us-east-1", "ivsrealtime", NOW);
    assert!(matches!(
        check("POST", "/CreateStage", "", &h, BODY, NOW, SECRET),
        Err(VerifyError::WrongService { .. })
    ));
    let h = ok_headers();
    let auth = h
        .iter()
        .find(|(n, _)| n == "authorization")
        .unwrap()
        .1
        .replace("AKIDLOCALSTAGEFAN", "AKIDSOMEONEELSE");
    assert_eq!(
        check(
            "POST",
            "/CreateStage",
            "",
            &replace(&h, "authorization", &auth),
            BODY,
            NOW,
            SECRET
        ),
        Err(VerifyError::UnknownAccessKey("AKIDSOMEONEELSE".into()))
    );
}

#[test]
fn refuses_missing_or_malformed_authorization() {
    let h = ok_headers();
    let without: Vec<(String, String)> = h
        .iter()
        .filter(|(n, _)| n != "authorization")
        .cloned()
        .collect();
    assert_eq!(
        check("POST", "/CreateStage", "", &without, BODY, NOW, SECRET),
        Err(VerifyError::MissingAuthorization)
    );
    let auth = h
        .iter()
        .find(|(n, _)| n == "authorization")
        .unwrap()
        .1
        .clone();
    for (bad, want_malformed) in [
        (auth.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"), false),
        (auth.replace("Credential=", "Cred="), true),
        (auth.replace("/aws4_request", ""), true),
        (auth[..auth.len() - 2].to_string(), true),
        ("Bearer abc".to_string(), false),
    ] {
        let r = check(
            "POST",
            "/CreateStage",
            "",
            &replace(&h, "authorization", &bad),
            BODY,
            NOW,
            SECRET,
        );
        if want_malformed {
            assert!(
                matches!(r, Err(VerifyError::MalformedAuthorization(_))),
                "{bad}: {r:?}"
            );
        } else {
            assert_eq!(r, Err(VerifyError::UnsupportedAlgorithm), "{bad}");
        }
    }
    // Host must be signed; a signed header must be present.
    let no_host = auth.replace(
        "SignedHeaders=content-type;host;x-amz-date",
        "SignedHeaders=content-type;x-amz-date",
    );
    assert_eq!(
        check(
            "POST",
            "/CreateStage",
            "",
            &replace(&h, "authorization", &no_host),
            BODY,
            NOW,
            SECRET
        ),
        Err(VerifyError::RequiredHeaderNotSigned("host"))
    );
    let without_ct: Vec<(String, String)> = h
        .iter()
        .filter(|(n, _)| n != "content-type")
        .cloned()
        .collect();
    assert_eq!(
        check("POST", "/CreateStage", "", &without_ct, BODY, NOW, SECRET),
        Err(VerifyError::MissingSignedHeader("content-type".into()))
    );
}
