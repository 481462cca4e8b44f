use super::*;

#[test]
fn arns_round_trip_and_reject_garbage() {
    let s = "arn:aws:ivs:us-east-1:123456789012:stage/AbCdEf123456";
    let arn = Arn::parse(s).unwrap();
    assert_eq!(arn, Arn::stage("us-east-1", "123456789012", "AbCdEf123456"));
    assert_eq!(arn.to_string(), s);
    assert_eq!(stage_id_from_arn(s), Some("AbCdEf123456"));
    let k = "arn:aws:ivs:eu-west-1:123456789012:public-key/abcdefABCDEF";
    assert_eq!(
        Arn::parse(k).unwrap().resource_type,
        ResourceType::PublicKey
    );
    assert_eq!(stage_id_from_arn(k), None);
    for bad in [
        "",
        "arn:aws:s3:us-east-1:123456789012:stage/x",
        "arn:aws:ivs:us-east-1:12345678901a:stage/x",
        "arn:aws:ivs:us-east-1:123456789012:channel/x",
        "arn:aws:ivs:us-east-1:123456789012:stage/",
        "arn:aws:ivs:us-east-1:123456789012:stage/a/b",
        "arn:aws:ivs:US:123456789012:stage/x",
    ] {
        assert!(Arn::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn ids_have_ivs_shapes() {
    let id = resource_id(&[0, 61, 62, 255, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(id.len(), 12);
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(&id[..3], "0z0");
    let s = session_id(&[7; 13]);
    assert_eq!(s.len(), 16);
    assert!(s.starts_with("st-"));
}

#[test]
fn tags_path_encodes_the_arn_as_one_label() {
    assert_eq!(
        tags_path("arn:aws:ivs:us-east-1:123456789012:stage/abc"),
        "/tags/arn%3Aaws%3Aivs%3Aus-east-1%3A123456789012%3Astage%2Fabc"
    );
    assert_eq!(untag_query(&["a:b", "c"]), "tagKeys=a%3Ab&tagKeys=c");
    assert_eq!(Operation::UntagResource.http_method(), "DELETE");
    assert_eq!(Operation::CreateStage.path(None), "/CreateStage");
}

#[test]
fn shapes_serialize_as_the_model_names_them() {
    let req = CreateParticipantTokenRequest {
        stage_arn: "arn:aws:ivs:us-east-1:123456789012:stage/abc".into(),
        duration: Some(60),
        user_id: Some("u1".into()),
        attributes: None,
        capabilities: Some(vec![ParticipantTokenCapability::Subscribe]),
    };
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        serde_json::json!({"stageArn":"arn:aws:ivs:us-east-1:123456789012:stage/abc",
            "duration":60,"userId":"u1","capabilities":["SUBSCRIBE"]})
    );
    let body = r#"{"stage":{"arn":"a","name":"n","activeSessionId":"st-ABCDEFGHIJKLM",
            "endpoints":{"whip":"http://w","events":"ws://e","rtmp":"r"},"tags":{},
            "newField":1},"participantTokens":[]}"#;
    let r: CreateStageResponse = serde_json::from_str(body).unwrap();
    let stage = r.stage.unwrap();
    assert_eq!(stage.active_session_id.as_deref(), Some("st-ABCDEFGHIJKLM"));
    assert_eq!(stage.endpoints.unwrap().whip.as_deref(), Some("http://w"));
    let p: ParticipantSummary = serde_json::from_str(
        r#"{"participantId":"p","state":"CONNECTED","published":true,"firstJoinTime":"2026-11-26T12:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(p.state, Some(ParticipantState::Connected));
    assert_eq!(
        serde_json::to_string(&EventName::PublishStarted).unwrap(),
        "\"PUBLISH_STARTED\""
    );
}

#[test]
fn errors_read_and_write_the_aws_shape() {
    let e = IvsError::new(ErrorKind::ServiceQuotaExceeded, "too many stages");
    assert_eq!(e.status, 402);
    let back = IvsError::from_response(402, Some(e.error_type()), e.to_body().as_bytes());
    assert_eq!(back, e);
    let t = IvsError::from_response(
        429,
        Some("ThrottlingException:http://internal.amazon.com/coral/"),
        br#"{"message":"Rate exceeded"}"#,
    );
    assert_eq!(t.kind, ErrorKind::Throttling);
    assert!(t.kind.is_retryable());
    assert_eq!(t.message, "Rate exceeded");
    let u = IvsError::from_response(
        404,
        None,
        br#"{"__type":"ResourceNotFoundException","Message":"x"}"#,
    );
    assert_eq!(u.kind, ErrorKind::ResourceNotFound);
    assert_eq!(u.message, "x");
}

#[test]
fn validation_limits() {
    assert!(validate_name("stage-1_a").is_ok());
    assert!(validate_name("bad name").is_err());
    let mut tags = Tags::new();
    for i in 0..50 {
        tags.insert(format!("k{i}"), "v".into());
    }
    assert!(validate_tags(&tags).is_ok());
    tags.insert("one-more".into(), "v".into());
    assert!(validate_tags(&tags).is_err());
    assert!(validate_token_request(Some(20_160), None, None, None).is_ok());
    assert!(validate_token_request(Some(20_161), None, None, None).is_err());
    assert!(validate_token_request(Some(0), None, None, None).is_err());
    let mut attrs = Attributes::new();
    attrs.insert("k".into(), "v".repeat(1023));
    assert!(validate_token_request(None, None, Some(&attrs), None).is_ok());
    attrs.insert("x".into(), String::new());
    assert!(validate_token_request(None, None, Some(&attrs), None).is_err());
    assert_eq!(page_size(None, 50, 100), Ok(50));
    assert!(page_size(Some(0), 50, 100).is_err());
    assert_eq!(
        Operation::from_name("ListStages"),
        Some(Operation::ListStages)
    );
    assert_eq!(Operation::CreateParticipantToken.documented_tps(), 50);
}
