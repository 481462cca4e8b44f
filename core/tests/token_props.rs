//! Properties of participant tokens on random claims: what the builder accepts verifies with
//! the right key and carries the same claims; the builder refuses what breaks IVS's rules; any
//! changed byte of the token is refused.

use std::collections::BTreeMap;

use proptest::prelude::*;
use stagefan_core::token::{self, TokenBuilder, TokenError};

const KID: &str = "arn:aws:ivs:us-east-1:123456789012:public-key/KeyKeyKey123";
const STAGE: &str = "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456";

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn random_tokens_round_trip_and_resist_tampering(
        jti in "[A-Za-z0-9_-]{1,64}",
        user in proptest::option::of("\\PC{0,128}"),
        attrs in proptest::collection::btree_map("[a-z]{1,8}", "\\PC{0,40}", 0..6),
        publish in any::<bool>(),
        subscribe in any::<bool>(),
        iat in 1_600_000_000i64..2_000_000_000,
        ttl in 1i64..=14 * 24 * 3600,
        seed in 1u8..=200,
        flip in any::<prop::sample::Index>(),
    ) {
        let key = token::signing_key_from_bytes(&[seed; 48]).unwrap();
        let mut b = TokenBuilder::new(KID, STAGE, "http://w/whip", "ws://w/events")
            .participant_id(jti.clone())
            .capabilities(publish, subscribe)
            .valid_for(iat, ttl)
            .attributes(attrs.clone());
        if let Some(u) = &user {
            b = b.user_id(u.clone());
        }
        let size: usize = attrs.iter().map(|(k, v)| k.len() + v.len()).sum();
        let built = b.build();
        if user.as_ref().is_some_and(|u| u.chars().count() > 128) || size > 1024 {
            let refused = matches!(built, Err(TokenError::InvalidClaim { .. }));
            prop_assert!(refused, "accepted invalid claims");
            return Ok(());
        }
        let jwt = built.unwrap().sign(&key);
        let vk = *key.verifying_key();
        let v = token::verify(&jwt, iat, |k| (k == KID).then_some(vk)).unwrap();
        prop_assert_eq!(&v.claims.jti, &jti);
        prop_assert_eq!(&v.claims.user_id, &user);
        prop_assert_eq!(v.claims.attributes.unwrap_or_default(), attrs);
        prop_assert_eq!((v.claims.capabilities.allow_publish, v.claims.capabilities.allow_subscribe), (publish, subscribe));
        prop_assert_eq!(v.claims.exp - v.claims.iat, ttl);
        let expired = matches!(token::verify(&jwt, iat + ttl, |_| Some(vk)), Err(TokenError::Expired { .. }));
        prop_assert!(expired, "not expired at exp");
        // Change one character of the token to another base64url character.
        let mut bytes = jwt.clone().into_bytes();
        let i = flip.index(bytes.len());
        if bytes[i] != b'.' {
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            prop_assert!(token::verify(&tampered, iat, |_| Some(vk)).is_err());
        }
    }
}

#[test]
fn attributes_of_exactly_one_kilobyte_are_allowed() {
    let mut attrs = BTreeMap::new();
    attrs.insert("k".to_string(), "v".repeat(1023));
    assert!(TokenBuilder::new(KID, STAGE, "w", "e")
        .participant_id("p")
        .valid_for(0, 60)
        .attributes(attrs)
        .build()
        .is_ok());
}
