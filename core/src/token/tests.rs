use super::*;

const STAGE: &str = "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456";
const KID: &str = "arn:aws:ivs:us-east-1:123456789012:public-key/KeyKeyKey123";

fn key(seed: u8) -> SigningKey {
    signing_key_from_bytes(&[seed; 48]).unwrap()
}

fn builder() -> TokenBuilder {
    TokenBuilder::new(
        KID,
        STAGE,
        "http://127.0.0.1:8790/whip",
        "ws://127.0.0.1:8790/events",
    )
    .participant_id("p_1-A")
    .valid_for(1_000_000, 3600)
}

#[test]
fn builder_validates_ivs_rules() {
    assert!(builder().build().is_ok());
    let bad_jti = ["", "has space", "ü", &"a".repeat(65)];
    for j in bad_jti {
        assert!(matches!(
            builder().participant_id(j).build(),
            Err(TokenError::InvalidClaim { field: "jti", .. })
        ));
    }
    assert!(builder().participant_id("a".repeat(64)).build().is_ok());
    assert!(builder().user_id("u".repeat(128)).build().is_ok());
    assert!(builder().user_id("u".repeat(129)).build().is_err());
    let mut attrs = BTreeMap::new();
    attrs.insert("k".to_string(), "v".repeat(1023));
    assert!(builder().attributes(attrs.clone()).build().is_ok());
    attrs.insert("z".to_string(), "1".to_string());
    assert!(builder().attributes(attrs).build().is_err());
    assert!(builder().valid_for(0, MAX_LIFETIME_SECS).build().is_ok());
    assert!(builder()
        .valid_for(0, MAX_LIFETIME_SECS + 1)
        .build()
        .is_err());
    assert!(builder().valid_for(10, 0).build().is_err());
    let wrong_resource = TokenBuilder::new(KID, KID, "w", "e")
        .participant_id("p")
        .valid_for(0, 60);
    assert!(wrong_resource.build().is_err());
    let no_kid = TokenBuilder::new("", STAGE, "w", "e")
        .participant_id("p")
        .valid_for(0, 60);
    assert!(no_kid.build().is_err());
}

#[test]
fn claims_use_ivs_names() {
    let t = builder()
        .user_id("viewer-1")
        .capabilities(true, false)
        .build()
        .unwrap();
    let (h, c) = t.signing_input().split_once('.').unwrap();
    let h: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    let c: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).unwrap()).unwrap();
    assert_eq!(h, serde_json::json!({"alg":"ES384","typ":"JWT","kid":KID}));
    assert_eq!(
        c,
        serde_json::json!({"exp":1_003_600,"iat":1_000_000,"jti":"p_1-A","user_id":"viewer-1",
            "resource":STAGE,"topic":"AbCdEf123456","events_url":"ws://127.0.0.1:8790/events",
            "whip_url":"http://127.0.0.1:8790/whip",
            "capabilities":{"allow_publish":true,"allow_subscribe":false},"version":"1.0"})
    );
}

#[test]
fn round_trip_and_determinism() {
    let k = key(7);
    let a = builder().build().unwrap().sign(&k);
    let b = builder().build().unwrap().sign(&k);
    assert_eq!(a, b, "RFC 6979 signing is deterministic");
    let vk = *k.verifying_key();
    let v = verify(&a, 1_000_100, |kid| (kid == KID).then_some(vk)).unwrap();
    assert_eq!(v.claims.jti, "p_1-A");
    assert!(v.claims.capabilities.allow_subscribe);
}

#[test]
fn split_signing_matches_in_crate_signing() {
    let k = key(9);
    let unsigned = builder().build().unwrap();
    let sig: Signature = k.sign(unsigned.signing_input().as_bytes());
    let external = unsigned.clone().finish(&sig.to_bytes()).unwrap();
    assert_eq!(external, unsigned.clone().sign(&k));
    assert_eq!(
        unsigned.finish(&[0u8; 64]),
        Err(TokenError::SignatureLength(64))
    );
}

#[test]
fn refusals() {
    let k = key(7);
    let vk = *k.verifying_key();
    let other = *key(8).verifying_key();
    let token = builder().build().unwrap().sign(&k);
    let now = 1_000_100;
    // Wrong key.
    assert_eq!(
        verify(&token, now, |_| Some(other)),
        Err(TokenError::BadSignature)
    );
    // Unknown kid.
    assert!(matches!(
        verify(&token, now, |_| None),
        Err(TokenError::UnknownKey(_))
    ));
    // Expired, and exactly at exp.
    assert!(matches!(
        verify(&token, 1_003_600, |_| Some(vk)),
        Err(TokenError::Expired { .. })
    ));
    // Issued in the future.
    assert!(matches!(
        verify(&token, 1_000_000 - 61, |_| Some(vk)),
        Err(TokenError::NotYetValid { .. })
    ));
    // Tampered claims / header / signature.
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["capabilities"]["allow_publish"] = serde_json::Value::Bool(true);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        verify(&forged, now, |_| Some(vk)),
        Err(TokenError::BadSignature)
    );
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES384","typ":"JWT","kid":"other"}"#);
    let forged = format!("{header}.{}.{}", parts[1], parts[2]);
    assert_eq!(
        verify(&forged, now, |_| Some(vk)),
        Err(TokenError::BadSignature)
    );
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let forged = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(
        verify(&forged, now, |_| Some(vk)),
        Err(TokenError::BadSignature)
    );
    // alg none / HS256 refused before any key lookup.
    let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"x"}"#);
    assert!(matches!(
        verify(&format!("{none}.{}.", parts[1]), now, |_| Some(vk)),
        Err(TokenError::UnsupportedAlgorithm(_))
    ));
    assert!(matches!(
        verify("abc", now, |_| Some(vk)),
        Err(TokenError::Malformed(_))
    ));
    assert!(matches!(
        verify("a.b.c.d", now, |_| Some(vk)),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn keys_round_trip_through_pem() {
    let k = key(3);
    let pem = signing_key_to_pem(&k);
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(signing_key_from_pem(&pem).unwrap(), k);
    let pub_pem = public_key_pem(k.verifying_key());
    assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(
        &verifying_key_from_pem(&pub_pem).unwrap(),
        k.verifying_key()
    );
    assert_eq!(fingerprint(k.verifying_key()).len(), 64);
    assert_ne!(
        fingerprint(k.verifying_key()),
        fingerprint(key(4).verifying_key())
    );
    assert!(signing_key_from_pem("garbage").is_err());
    assert!(
        verifying_key_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
            .is_err()
    );
    assert!(signing_key_from_bytes(&[0u8; 48]).is_err());
    assert_eq!(participant_id(&[1; 12]).len(), 12);
}
