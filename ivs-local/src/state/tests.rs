use super::*;

/// The region these tests run in: 3 stages, 2 publishers and 1 subscriber per stage.
pub(super) fn region() -> RegionConfig {
    RegionConfig {
        region: "us-east-1".into(),
        account_id: "123456789012".into(),
        whip_url: "http://127.0.0.1:1/whip".into(),
        events_url: "ws://127.0.0.1:1/events".into(),
        stage_quota: 3,
        publisher_cap: 2,
        subscriber_cap: 1,
        publisher_quota: 1_000,
        subscription_quota: 20_000,
    }
}

fn store() -> Store {
    Store::new(region())
}

/// A token's claims for participant `jti` on `stage`, with both capabilities.
pub(super) fn claims(stage: &Stage, jti: &str) -> Claims {
    Claims {
        exp: 10_000,
        iat: 0,
        jti: jti.into(),
        user_id: Some(format!("u-{jti}")),
        resource: stage.arn.clone(),
        topic: ivs::stage_id_from_arn(&stage.arn).unwrap().into(),
        events_url: "e".into(),
        whip_url: "w".into(),
        capabilities: token::Capabilities {
            allow_publish: true,
            allow_subscribe: true,
        },
        attributes: None,
        version: "1.0".into(),
    }
}

#[test]
fn sessions_open_with_the_first_participant_and_close_with_the_last() {
    let mut s = store();
    let stage = s
        .create_stage(Some("a".into()), None, None, &[1; 12])
        .unwrap();
    assert_eq!(stage.active_session_id, None);
    let first = s
        .admit(&claims(&stage, "host"), Role::Publisher, 100, &[2; 13])
        .unwrap();
    let sid = first.session_id.clone();
    assert_eq!(sid.len(), 16);
    assert_eq!(
        s.get_stage(&stage.arn).unwrap().active_session_id,
        Some(sid.clone())
    );
    let stage_id = ivs::stage_id_from_arn(&stage.arn).unwrap().to_string();
    // One participant, one connection: the newest replaces the older (TOKEN_REUSED).
    let host = s
        .admit(&claims(&stage, "host"), Role::Publisher, 101, &[3; 13])
        .unwrap();
    assert_eq!(host.replaced, Some(first.connection));
    assert_eq!(
        s.connection_status("host", first.connection),
        Err(Some(EndReason::TokenReused))
    );
    // The replaced connection's late media events change nothing.
    s.media_disconnected(&stage_id, "host", first.connection, 101);
    assert_eq!(s.connection_status("host", host.connection), Ok(()));
    let v1 = s
        .admit(&claims(&stage, "v1"), Role::Subscriber, 102, &[3; 13])
        .unwrap();
    assert_eq!(
        s.admit(&claims(&stage, "v2"), Role::Subscriber, 103, &[3; 13]),
        Err(AdmitError::AtCapacity {
            role: Role::Subscriber,
            cap: 1
        })
    );
    // At capacity, the seat's own participant may still reconnect into it.
    let again = s
        .admit(&claims(&stage, "v1"), Role::Subscriber, 103, &[3; 13])
        .unwrap();
    assert_eq!(again.replaced, Some(v1.connection));
    let v1 = again;
    s.on_published(&stage_id, "host", host.connection, 104);
    s.media_disconnected(&stage_id, "host", host.connection, 110);
    assert!(s.get_stage(&stage.arn).unwrap().active_session_id.is_some());
    assert_eq!(
        s.end_connection(&stage_id, "v1", None, EndReason::Left, 111),
        Some(v1.connection)
    );
    // Its late event is not taken for a newer connection.
    let v1b = s
        .admit(&claims(&stage, "v1"), Role::Subscriber, 112, &[4; 13])
        .unwrap();
    assert_eq!(v1b.replaced, None);
    s.media_disconnected(&stage_id, "v1", v1.connection, 113);
    assert_eq!(s.connection_status("v1", v1b.connection), Ok(()));
    // A setup deadline ends a connection that never connected, and only that one.
    assert!(!s.expire_setup("v1", v1.connection, 114));
    assert!(s.expire_setup("v1", v1b.connection, 115));
    assert_eq!(
        s.connection_status("v1", v1b.connection),
        Err(Some(EndReason::IceSetupTimeout))
    );
    assert_eq!(s.get_stage(&stage.arn).unwrap().active_session_id, None);
    let (list, _) = s
        .list_participants(&stage.arn, &sid, None, None, None, None, None)
        .unwrap();
    assert_eq!(list.len(), 2);
    assert!(list
        .iter()
        .all(|p| p.state == Some(ParticipantState::Disconnected)));
    let (events, _) = s
        .list_participant_events(&stage.arn, &sid, "host", None, None)
        .unwrap();
    let names: Vec<EventName> = events.iter().filter_map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            EventName::Joined,
            EventName::Left,
            EventName::Joined,
            EventName::PublishStarted,
            EventName::PublishStopped,
            EventName::Left
        ]
    );
}

#[test]
fn quotas_of_stages_and_keys() {
    let mut s = store();
    for i in 0..3u8 {
        s.create_stage(None, None, None, &[i; 12]).unwrap();
    }
    let e = s.create_stage(None, None, None, &[9; 12]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ServiceQuotaExceeded);
    assert_eq!(e.status, 402);
}

#[test]
fn pagination_walks_every_item_once() {
    let items: Vec<u32> = (0..7).collect();
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let (page, next) = paginate(&items, token.as_deref(), 3).unwrap();
        seen.extend(page);
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, items);
    assert!(paginate(&items, Some("garbage!"), 3).is_err());
}
