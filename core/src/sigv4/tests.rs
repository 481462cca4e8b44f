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
