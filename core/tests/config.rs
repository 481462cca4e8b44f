//! Tests of configuration parsing and identifier validation.

use std::collections::HashMap;

use proptest::prelude::*;
use stagefan_core::config::*;

fn parse(pairs: &[(&str, &str)]) -> Result<Config, InvalidField> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_map(&map)
}

fn err(pairs: &[(&str, &str)]) -> InvalidField {
    parse(pairs).expect_err("should be refused")
}

#[test]
fn every_variable_is_read() {
    let c = parse(&[
        ("STAGE_CAPACITY", "10000"),
        ("MIN_STAGES", "2"),
        ("MAX_STAGES", "7"),
        ("LEASE_TTL_SECONDS", "30"),
        ("TOKEN_TTL_SECONDS", "43200"),
        ("TOKEN_MODE", "api"),
        ("FANOUT_MODE", "replicate"),
        ("MEDIA_MODE", "local"),
        ("HEADROOM", "0.25"),
        ("SCALE_DOWN_GRACE_SECONDS", "0"),
        (
            "IVS_ENDPOINT",
            "https://ivsrealtime.eu-west-1.amazonaws.com/",
        ),
        ("IVS_REGION", "eu-west-1"),
        ("DEFAULT_BROADCAST", "main-show"),
    ])
    .unwrap();
    assert_eq!(c.stage_capacity, 10_000);
    assert_eq!(c.min_stages, 2);
    assert_eq!(c.max_stages, 7);
    assert_eq!(c.lease_ttl_seconds, 30);
    assert_eq!(c.token_ttl_seconds, 43_200);
    assert_eq!(c.token_mode, TokenMode::Api);
    assert_eq!(c.fanout_mode, FanoutMode::Replicate);
    assert_eq!(c.media_mode, MediaMode::Local);
    assert_eq!(c.headroom, 0.25);
    assert_eq!(c.scale_down_grace_seconds, 0);
    assert_eq!(
        c.ivs_endpoint, "https://ivsrealtime.eu-west-1.amazonaws.com",
        "trailing slash dropped"
    );
    assert_eq!(c.ivs_region, "eu-west-1");
    assert_eq!(c.default_broadcast.as_deref(), Some("main-show"));
}

#[test]
fn defaults_follow_the_contract() {
    let c = parse(&[]).unwrap();
    assert_eq!(c.stage_capacity, 50);
    assert_eq!(c.min_stages, 1);
    assert_eq!(c.max_stages, 100);
    assert_eq!(c.lease_ttl_seconds, 60);
    assert_eq!(c.token_mode, TokenMode::SelfSigned);
    assert_eq!(c.fanout_mode, FanoutMode::MultiPublish);
    assert_eq!(c.default_broadcast.as_deref(), Some("default"));
    // Blank values count as unset.
    assert_eq!(
        parse(&[("STAGE_CAPACITY", "  ")]).unwrap().stage_capacity,
        50
    );
}

#[test]
fn the_endpoint_follows_the_region_and_media_mode_follows_the_endpoint() {
    let c = parse(&[("IVS_REGION", "ap-northeast-1")]).unwrap();
    assert_eq!(
        c.ivs_endpoint,
        "https://ivsrealtime.ap-northeast-1.amazonaws.com"
    );
    assert_eq!(c.media_mode, MediaMode::Ivs);
    let local = parse(&[("IVS_ENDPOINT", "http://127.0.0.1:8790")]).unwrap();
    assert_eq!(local.media_mode, MediaMode::Local);
    let localhost = parse(&[("IVS_ENDPOINT", "http://localhost:8790")]).unwrap();
    assert_eq!(localhost.media_mode, MediaMode::Local);
    let forced = parse(&[
        ("IVS_ENDPOINT", "http://127.0.0.1:8790"),
        ("MEDIA_MODE", "ivs"),
    ])
    .unwrap();
    assert_eq!(forced.media_mode, MediaMode::Ivs);
}

#[test]
fn numbers_out_of_range_or_malformed_name_the_variable() {
    for (var, value, needle) in [
        ("STAGE_CAPACITY", "0", "between 1 and 25000"),
        ("STAGE_CAPACITY", "25001", "between 1 and 25000"),
        ("STAGE_CAPACITY", "fifty", "whole number"),
        ("STAGE_CAPACITY", "-3", "whole number"),
        ("STAGE_CAPACITY", "1.5", "whole number"),
        ("MIN_STAGES", "0", "between 1"),
        ("MAX_STAGES", "0", "between 1"),
        ("MAX_STAGES", "10001", "10000"),
        ("LEASE_TTL_SECONDS", "1", "between 5"),
        ("TOKEN_TTL_SECONDS", "1209601", "1209600"),
        ("SCALE_DOWN_GRACE_SECONDS", "x", "whole number"),
        ("IVS_QUOTA_SUBSCRIPTIONS", "0", "between 1"),
        ("IVS_QUOTA_PUBLISHERS", "many", "whole number"),
        ("IVS_QUOTA_STAGES", "0", "between 1"),
        ("IVS_QUOTA_RESERVE_PERCENT", "91", "between 0 and 90"),
        ("IVS_QUOTA_GRANT_TTL_SECONDS", "5", "between 10"),
        ("IVS_PARTICIPANT_HOUR_PRICES", "viewer=free", "\"free\""),
        ("IVS_PARTICIPANT_HOUR_PRICES", "guest=0.1", "unknown kind"),
    ] {
        let e = err(&[(var, value)]);
        assert_eq!(e.field, var);
        assert!(e.problem.contains(needle), "{var}={value}: {e}");
        assert!(e.to_string().starts_with(var), "{e}");
    }
    // The offending value is quoted back.
    assert!(err(&[("STAGE_CAPACITY", "fifty")])
        .problem
        .contains("\"fifty\""));
    assert!(err(&[("STAGE_CAPACITY", "0")]).problem.contains("got 0"));
}

#[test]
fn min_stages_may_not_exceed_max_stages() {
    let e = err(&[("MIN_STAGES", "5"), ("MAX_STAGES", "4")]);
    assert_eq!(e.field, "MIN_STAGES");
    assert!(e.problem.contains("MAX_STAGES (4)"), "{e}");
    assert!(parse(&[("MIN_STAGES", "4"), ("MAX_STAGES", "4")]).is_ok());
}

#[test]
fn modes_must_be_one_of_their_spellings() {
    for (var, bad) in [
        ("TOKEN_MODE", "jwt"),
        ("FANOUT_MODE", "multi_publish"),
        ("MEDIA_MODE", "IVS"),
    ] {
        let e = err(&[(var, bad)]);
        assert_eq!(e.field, var);
        assert!(e.problem.contains(bad), "{e}");
        assert!(e.problem.contains("must be one of"), "{e}");
    }
    assert!(err(&[("FANOUT_MODE", "x")])
        .problem
        .contains("`multi-publish` or `replicate`"));
    assert_eq!(
        FanoutMode::parse("replicate").unwrap(),
        FanoutMode::Replicate
    );
    assert_eq!(TokenMode::SelfSigned.as_str(), "self-signed");
    assert_eq!(MediaMode::Local.to_string(), "local");
    assert_eq!(
        serde_json::to_string(&FanoutMode::MultiPublish).unwrap(),
        "\"multi-publish\""
    );
}

#[test]
fn headroom_must_be_a_positive_fraction() {
    for bad in ["0", "-1", "abc", "NaN", "inf", "10.5"] {
        let e = err(&[("HEADROOM", bad)]);
        assert_eq!(e.field, "HEADROOM", "{bad}");
    }
    assert_eq!(parse(&[("HEADROOM", "2")]).unwrap().headroom, 2.0);
}

#[test]
fn endpoint_and_region_are_checked() {
    for bad in [
        "ftp://x",
        "ivsrealtime.us-east-1.amazonaws.com",
        "http://",
        "http://a b",
        "https://x/?q=1",
    ] {
        let e = err(&[("IVS_ENDPOINT", bad)]);
        assert_eq!(e.field, "IVS_ENDPOINT", "{bad}");
    }
    for bad in ["US-EAST-1", "us east 1", "-us-east-1", "us_east_1"] {
        let e = err(&[("IVS_REGION", bad)]);
        assert_eq!(e.field, "IVS_REGION", "{bad}");
    }
}

#[test]
fn default_broadcast_is_validated_and_can_be_turned_off() {
    let e = err(&[("DEFAULT_BROADCAST", "has space")]);
    assert_eq!(e.field, "DEFAULT_BROADCAST");
    let none = parse(&[("DEFAULT_BROADCAST", "")]).unwrap();
    assert_eq!(none.default_broadcast, None);
    let e = none.resolve_broadcast(None).unwrap_err();
    assert_eq!(e.field, "broadcast");
    assert_eq!(none.resolve_broadcast(Some("b1")).unwrap(), "b1");
    let dflt = parse(&[]).unwrap();
    assert_eq!(dflt.resolve_broadcast(None).unwrap(), "default");
    assert_eq!(
        dflt.resolve_broadcast(Some("x.y")).unwrap_err().field,
        "broadcast"
    );
}

#[test]
fn derived_pool_settings_and_policy() {
    let c = parse(&[
        ("STAGE_CAPACITY", "50"),
        ("HEADROOM", "0.5"),
        ("LEASE_TTL_SECONDS", "45"),
        ("SCALE_DOWN_GRACE_SECONDS", "120"),
        ("MIN_STAGES", "2"),
        ("MAX_STAGES", "9"),
        ("FANOUT_MODE", "replicate"),
    ])
    .unwrap();
    let s = c.pool_settings();
    assert_eq!((s.capacity, s.min_stages, s.max_stages), (50, 2, 9));
    assert_eq!(s.lease_ttl_ms, 45_000);
    assert_eq!(s.fanout, FanoutMode::Replicate);
    let p = c.policy();
    assert_eq!(p.headroom_seats, 25);
    assert_eq!(p.scale_down_grace_ms, 120_000);
    assert_eq!(p.delete_grace_ms, 120_000);
    assert_eq!((p.min_stages, p.max_stages), (2, 9));
    assert_eq!(p.max_creating, 5);
    assert_eq!(headroom_seats(3, 0.1), 1, "at least one seat");
    assert_eq!(headroom_seats(10_000, 0.5), 5_000);
    assert_eq!(headroom_seats(7, 1.5), 11, "rounded up");
    assert_eq!(s.deployment, "local");
}

#[test]
fn the_deployment_tags_every_stage_and_is_checked() {
    let c = parse(&[("STAGEFAN_DEPLOYMENT", "eu-prod.2")]).unwrap();
    assert_eq!(c.deployment, "eu-prod.2");
    assert_eq!(c.pool_settings().deployment, "eu-prod.2");
    for bad in ["a b", "a/b", "é", &"x".repeat(65)] {
        let e = parse(&[("STAGEFAN_DEPLOYMENT", bad)]).unwrap_err();
        assert_eq!(e.field, "STAGEFAN_DEPLOYMENT", "{bad}: {e}");
    }
    // Blank is the default, like every other variable.
    assert_eq!(
        parse(&[("STAGEFAN_DEPLOYMENT", " ")]).unwrap().deployment,
        "local"
    );
}

#[test]
fn broadcast_ids() {
    for ok in ["default", "a", "Show_2-b", &"x".repeat(64)] {
        assert!(validate_broadcast_id(ok).is_ok(), "{ok}");
    }
    let e = validate_broadcast_id("").unwrap_err();
    assert_eq!(e.field, "broadcast");
    assert!(e.problem.contains("empty"));
    let e = validate_broadcast_id(&"x".repeat(65)).unwrap_err();
    assert!(e.problem.contains("at most 64"), "{e}");
    for bad in ["a.b", "a b", "a/b", "é", "a\nb", "user@x"] {
        let e = validate_broadcast_id(bad).unwrap_err();
        assert_eq!(e.field, "broadcast", "{bad}");
    }
}

#[test]
fn user_ids() {
    for ok in ["viewer-123", "a@b.c", "x:y_z", "U", &"u".repeat(128)] {
        assert!(validate_user_id(ok).is_ok(), "{ok}");
    }
    let e = validate_user_id(&"u".repeat(129)).unwrap_err();
    assert_eq!(e.field, "userId");
    assert!(e.problem.contains("at most 128"), "{e}");
    let e = validate_user_id("bad\u{7}id").unwrap_err();
    assert!(e.problem.contains("control character (U+0007)"), "{e}");
    assert!(e.problem.contains("position 3"), "{e}");
    for bad in ["", "a b", "a/b", "ü", "tab\t", "a\u{202e}b", "quote\""] {
        assert_eq!(
            validate_user_id(bad).unwrap_err().field,
            "userId",
            "{bad:?}"
        );
    }
}

proptest! {
    #[test]
    fn user_id_validation_matches_its_pattern(s in "\\PC{0,140}|[A-Za-z0-9_.@:-]{0,140}") {
        let expected = (1..=128).contains(&s.chars().count())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.@:-".contains(c));
        prop_assert_eq!(validate_user_id(&s).is_ok(), expected);
    }

    #[test]
    fn broadcast_id_validation_matches_its_pattern(s in "\\PC{0,70}|[A-Za-z0-9_-]{0,70}") {
        let expected = (1..=64).contains(&s.chars().count())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        prop_assert_eq!(validate_broadcast_id(&s).is_ok(), expected);
    }

    #[test]
    fn any_capacity_in_range_parses_and_any_outside_is_refused(n in 0u64..40_000) {
        let r = parse(&[("STAGE_CAPACITY", &n.to_string())]);
        if (1..=25_000).contains(&n) {
            prop_assert_eq!(r.unwrap().stage_capacity as u64, n);
        } else {
            prop_assert_eq!(r.unwrap_err().field, "STAGE_CAPACITY");
        }
    }
}

#[test]
fn the_region_quotas_default_to_ivs_and_are_read() {
    use stagefan_core::ledger::{LedgerConfig, Quotas};
    assert_eq!(Config::default().quota, LedgerConfig::default());
    assert_eq!(
        Config::default().quota.limits,
        Quotas {
            subscriptions: 20_000,
            publishers: 1_000,
            stages: 1_000
        }
    );
    let c = parse(&[
        ("IVS_QUOTA_SUBSCRIPTIONS", "12"),
        ("IVS_QUOTA_PUBLISHERS", "4"),
        ("IVS_QUOTA_STAGES", "3"),
        ("IVS_QUOTA_RESERVE_PERCENT", "25"),
        ("IVS_QUOTA_GRANT_TTL_SECONDS", "30"),
    ])
    .unwrap();
    assert_eq!(
        c.quota.usable(),
        Quotas {
            subscriptions: 9,
            publishers: 3,
            stages: 2
        }
    );
    assert_eq!(c.quota.grant_ttl_ms, 30_000);
}

#[test]
fn one_region_by_default_as_before() {
    let c = parse(&[("IVS_REGION", "eu-west-1")]).unwrap();
    assert_eq!(c.region_names(), ["eu-west-1"]);
    assert!(!c.multi_region());
    assert_eq!(
        c.regions[0].endpoint,
        "https://ivsrealtime.eu-west-1.amazonaws.com"
    );
    let local = parse(&[("IVS_ENDPOINT", "http://127.0.0.1:8790")]).unwrap();
    assert_eq!(local.region_names(), ["us-east-1"]);
    assert_eq!(local.regions[0].endpoint, "http://127.0.0.1:8790");
    assert_eq!(local.ivs_endpoint, local.regions[0].endpoint);
}

#[test]
fn several_regions_each_with_its_endpoint() {
    let c = parse(&[
        ("IVS_REGIONS", " us-east-1, eu-west-1 ,ap-northeast-1"),
        (
            "IVS_ENDPOINTS",
            "us-east-1=http://127.0.0.1:8790,eu-west-1=http://127.0.0.1:8791/",
        ),
    ])
    .unwrap();
    assert_eq!(
        c.region_names(),
        ["us-east-1", "eu-west-1", "ap-northeast-1"]
    );
    assert!(c.multi_region());
    assert_eq!(c.ivs_region, "us-east-1");
    assert_eq!(c.ivs_endpoint, "http://127.0.0.1:8790");
    assert_eq!(
        c.region("eu-west-1").unwrap().endpoint,
        "http://127.0.0.1:8791"
    );
    // Not configured: IVS's own naming.
    assert_eq!(
        c.region("ap-northeast-1").unwrap().endpoint,
        "https://ivsrealtime.ap-northeast-1.amazonaws.com"
    );
    assert!(c.region("ap-south-1").is_none());
    // IVS_ENDPOINT is the primary's; IVS_REGION may repeat the primary.
    let c = parse(&[
        ("IVS_REGION", "eu-west-1"),
        ("IVS_REGIONS", "eu-west-1,us-east-1"),
        ("IVS_ENDPOINT", "http://127.0.0.1:9000"),
    ])
    .unwrap();
    assert_eq!(c.regions[0].endpoint, "http://127.0.0.1:9000");
    assert_eq!(
        c.regions[1].endpoint,
        "https://ivsrealtime.us-east-1.amazonaws.com"
    );
}

#[test]
fn other_processes_read_the_regions_as_the_worker_does() {
    // The monitor's reader: the same regions and endpoints as the whole configuration, and
    // the same errors, from the four variables alone (nothing else is required).
    for pairs in [
        &[][..],
        &[("IVS_REGION", "eu-west-1"), ("IVS_ENDPOINT", "http://x:1")][..],
        &[
            ("IVS_REGIONS", "us-east-1, eu-west-1,ap-south-1"),
            ("IVS_ENDPOINTS", "eu-west-1=http://127.0.0.1:8791/"),
            ("IVS_ENDPOINT", " "),
        ][..],
    ] {
        let lookup = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(
            regions_from_lookup(lookup).unwrap(),
            parse(pairs).unwrap().regions,
            "{pairs:?}"
        );
    }
    let bad = [("IVS_REGIONS", "us-east-1,us-east-1")];
    let lookup = |k: &str| {
        bad.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(regions_from_lookup(lookup).unwrap_err(), err(&bad));
}

#[test]
fn bad_regions_and_endpoints_name_their_variable() {
    for (pairs, field, says) in [
        (
            vec![("IVS_REGIONS", "us-east-1,US-WEST")],
            "IVS_REGIONS",
            "US-WEST",
        ),
        (
            vec![("IVS_REGIONS", "us-east-1,us-east-1")],
            "IVS_REGIONS",
            "twice",
        ),
        (vec![("IVS_REGIONS", ",,")], "IVS_REGIONS", "at least one"),
        (
            vec![
                ("IVS_REGIONS", "us-east-1,eu-west-1"),
                ("IVS_REGION", "eu-west-1"),
            ],
            "IVS_REGION",
            "primary",
        ),
        (
            vec![
                ("IVS_REGIONS", "us-east-1"),
                ("IVS_ENDPOINTS", "eu-west-1=http://x"),
            ],
            "IVS_ENDPOINTS",
            "not in IVS_REGIONS",
        ),
        (
            vec![("IVS_ENDPOINTS", "us-east-1")],
            "IVS_ENDPOINTS",
            "region=url",
        ),
        (
            vec![("IVS_ENDPOINTS", "us-east-1=ftp://x")],
            "IVS_ENDPOINTS",
            "http",
        ),
        (
            vec![("IVS_ENDPOINTS", "us-east-1=http://a,us-east-1=http://b")],
            "IVS_ENDPOINTS",
            "twice",
        ),
        (
            vec![
                ("IVS_ENDPOINTS", "us-east-1=http://a"),
                ("IVS_ENDPOINT", "http://b"),
            ],
            "IVS_ENDPOINT",
            "IVS_ENDPOINTS",
        ),
    ] {
        let e = err(&pairs);
        assert_eq!(e.field, field, "{pairs:?}: {e}");
        assert!(e.problem.contains(says), "{pairs:?}: {e}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("xx-test-{i}")).collect();
    let e = err(&[("IVS_REGIONS", &many.join(","))]);
    assert_eq!(e.field, "IVS_REGIONS");
}

#[test]
fn one_public_key_arn_per_region() {
    let c = parse(&[("IVS_REGIONS", "us-east-1,eu-west-1")]).unwrap();
    let arns = c
        .key_arns(Some(
            "arn:aws:ivs:us-east-1:1:public-key/a, arn:aws:ivs:eu-west-1:1:public-key/b",
        ))
        .unwrap();
    assert_eq!(arns["us-east-1"], "arn:aws:ivs:us-east-1:1:public-key/a");
    assert_eq!(arns["eu-west-1"], "arn:aws:ivs:eu-west-1:1:public-key/b");
    assert!(c.key_arns(None).unwrap().is_empty());
    // An ARN without a region is the primary's.
    let arns = c.key_arns(Some("arn:local:key")).unwrap();
    assert_eq!(arns["us-east-1"], "arn:local:key");
    for (bad, says) in [
        (
            "arn:aws:ivs:ap-south-1:1:public-key/a",
            "not in IVS_REGIONS",
        ),
        (
            "arn:aws:ivs:us-east-1:1:public-key/a,arn:aws:ivs:us-east-1:1:public-key/b",
            "two keys",
        ),
        ("not-an-arn", "not an ARN"),
    ] {
        let e = c.key_arns(Some(bad)).unwrap_err();
        assert_eq!(e.field, "TOKEN_PUBLIC_KEY_ARN");
        assert!(e.problem.contains(says), "{e}");
    }
}
