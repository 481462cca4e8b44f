use super::*;

#[test]
fn credentials_debug_hides_secrets() {
    let c = Credentials::new("AKID", "very-secret", Some("tok-secret".into()));
    let s = format!("{c:?}");
    assert!(s.contains("AKID"));
    assert!(!s.contains("very-secret"));
    assert!(!s.contains("tok-secret"));
}

#[test]
fn percent_decode_keeps_broken_escapes() {
    assert_eq!(percent_decode("a%3Ab"), b"a:b");
    assert_eq!(percent_decode("a%3"), b"a%3");
    assert_eq!(percent_decode("%zz%"), b"%zz%");
}

#[test]
fn paths_are_double_encoded_for_ivs_tags() {
    assert_eq!(
        canonical_uri(
            "/tags/arn%3Aaws%3Aivs%3Aus-east-1%3A123456789012%3Astage%2FabcDEF123456",
            true
        ),
        "/tags/arn%253Aaws%253Aivs%253Aus-east-1%253A123456789012%253Astage%252FabcDEF123456"
    );
}

#[test]
fn normalization_keeps_a_slash_after_final_dot_segments() {
    // Found by the property test against aws-sigv4 (RFC 3986 remove_dot_segments).
    assert_eq!(canonical_uri("/0/.", true), "/0/");
    assert_eq!(canonical_uri("/a/b/..", true), "/a/");
    assert_eq!(canonical_uri("/a/..", true), "/");
    assert_eq!(canonical_uri("//a//b", true), "/a/b");
    assert_eq!(canonical_uri("/0/.", false), "/0/.");
}

#[test]
fn constant_time_eq_works() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
}

/// Method, path, query, body, session token, settings.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a [u8],
    Option<&'a str>,
    SigningSettings,
);

#[test]
fn aws_sigv4_signs_as_the_hand_chain_does() {
    let tags = "/tags/arn%3Aaws%3Aivs%3Aus-east-1%3A123456789012%3Astage%2FAbCd";
    let cases: [Case<'_>; 4] = [
        (
            "POST",
            "/CreateStage",
            "",
            br#"{"name":"s1"}"#,
            None,
            SigningSettings::default(),
        ),
        (
            "DELETE",
            tags,
            "tagKeys=a&tagKeys=b%3Ac",
            b"",
            Some("session"),
            SigningSettings::default(),
        ),
        (
            "GET",
            tags,
            "",
            b"",
            None,
            SigningSettings {
                add_content_sha256: true,
                ..SigningSettings::default()
            },
        ),
        (
            "POST",
            "/a/./b/../c",
            "",
            b"{}",
            Some("tok"),
            SigningSettings {
                omit_session_token_from_signature: true,
                ..SigningSettings::default()
            },
        ),
    ];
    for (method, path, query, body, token, settings) in cases {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", token.map(str::to_string));
        let headers = [
            ("host", "127.0.0.1:8790"),
            ("content-type", "application/json"),
        ];
        let request = HttpRequest {
            method,
            path,
            query,
            headers: &headers,
            body,
        };
        let params = SigningParams {
            credentials: &creds,
            region: "us-east-1",
            service: "ivs",
            time: UtcDateTime::from_unix(1_764_000_000),
            settings,
        };
        let ours = sign(&request, &params);
        let theirs = sign_request(&request, &params).unwrap();
        assert_eq!(theirs.signature, ours.signature, "{method} {path}");
        let mut a = theirs.headers.clone();
        let mut b = ours.headers.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{method} {path}");
    }
}
