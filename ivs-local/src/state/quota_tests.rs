//! The region's concurrent-publishers and concurrent-subscriptions quotas (`quotas.rs`).

use super::tests::claims;
use super::*;

/// A region of 2 publishers and 3 subscriptions, with stage caps that never bind first.
fn store() -> Store {
    Store::new(RegionConfig {
        stage_quota: 10,
        publisher_cap: 12,
        subscriber_cap: 100,
        publisher_quota: 2,
        subscription_quota: 3,
        ..tests::region()
    })
}

fn stage(s: &mut Store, n: u8) -> (String, Stage) {
    let st = s.create_stage(None, None, None, &[n; 12]).unwrap();
    (ivs::stage_id_from_arn(&st.arn).unwrap().to_string(), st)
}

fn join(s: &mut Store, st: &Stage, pid: &str, role: Role) -> Result<Admitted, AdmitError> {
    s.admit(&claims(st, pid), role, 100, &[7; 13])
}

/// (publishers, subscriptions) now.
fn used(s: &Store) -> (usize, usize) {
    let u = s.quota_usage();
    (u.publishers, u.subscriptions)
}

const PUBLISHERS_FULL: AdmitError = AdmitError::QuotaExceeded {
    quota: RegionQuota::Publishers,
    limit: 2,
};
const SUBSCRIPTIONS_FULL: AdmitError = AdmitError::QuotaExceeded {
    quota: RegionQuota::Subscriptions,
    limit: 3,
};

#[test]
fn counts_span_the_region_and_refuse_at_the_limit() {
    let mut s = store();
    let (id1, s1) = stage(&mut s, 1);
    let (_, s2) = stage(&mut s, 2);
    assert_eq!(used(&s), (0, 0));
    join(&mut s, &s1, "a", Role::Publisher).unwrap();
    join(&mut s, &s2, "b", Role::Publisher).unwrap();
    assert_eq!(used(&s), (2, 0));
    assert_eq!(
        join(&mut s, &s1, "c", Role::Publisher),
        Err(PUBLISHERS_FULL)
    );
    for (st, pid) in [(&s1, "v1"), (&s2, "v2"), (&s2, "v3")] {
        join(&mut s, st, pid, Role::Subscriber).unwrap();
    }
    assert_eq!(used(&s), (2, 3));
    assert_eq!(
        join(&mut s, &s1, "v4", Role::Subscriber),
        Err(SUBSCRIPTIONS_FULL)
    );
    // A participant reconnecting in the same role keeps its own slot, in any stage.
    join(&mut s, &s1, "v3", Role::Subscriber).unwrap();
    join(&mut s, &s2, "a", Role::Publisher).unwrap();
    assert_eq!(used(&s), (2, 3));
    // A slot freed is a slot to take: v1 leaves (DELETE), v4 joins.
    s.end_connection(&id1, "v1", None, EndReason::Left, 101)
        .unwrap();
    assert_eq!(used(&s), (2, 2));
    join(&mut s, &s1, "v4", Role::Subscriber).unwrap();
    assert_eq!(used(&s), (2, 3));
    let usage = s.quota_usage();
    assert_eq!(
        (usage.stages, usage.stage_quota, usage.publisher_quota),
        (2, 10, 2)
    );
    assert_eq!(
        usage.to_json()["subscriptions"],
        serde_json::json!({"current": 3, "limit": 3})
    );
    assert_eq!(
        RegionQuota::Subscriptions.message(3),
        "Concurrent subscriptions quota exceeded: at most 3 per region"
    );
}

#[test]
fn the_stage_cap_is_checked_before_the_region_quota() {
    let mut s = store();
    s.cfg.subscriber_cap = 1;
    let (_, s1) = stage(&mut s, 1);
    let (_, s2) = stage(&mut s, 2);
    join(&mut s, &s1, "v1", Role::Subscriber).unwrap();
    let full = AdmitError::AtCapacity {
        role: Role::Subscriber,
        cap: 1,
    };
    assert_eq!(join(&mut s, &s1, "v2", Role::Subscriber), Err(full));
    join(&mut s, &s2, "v2", Role::Subscriber).unwrap();
    assert_eq!(used(&s), (0, 2));
}

#[test]
fn every_way_of_leaving_frees_its_slot_at_once() {
    let mut s = store();
    let (id, st) = stage(&mut s, 1);
    let fill = |s: &mut Store| {
        for pid in ["x1", "x2", "x3"] {
            if s.connection(pid).is_none() {
                join(s, &st, pid, Role::Subscriber).unwrap();
            }
        }
        assert_eq!(used(s).1, 3);
        assert_eq!(
            join(s, &st, "extra", Role::Subscriber),
            Err(SUBSCRIPTIONS_FULL)
        );
    };
    let conn = |s: &Store, pid: &str| s.connection(pid).unwrap().id;
    // DELETE on the session URL, or the events socket closing (the same call).
    fill(&mut s);
    s.end_connection(&id, "x1", None, EndReason::Left, 101)
        .unwrap();
    assert_eq!(used(&s).1, 2);
    // The media plane: the peer closed, or ICE consent was lost.
    fill(&mut s);
    let c = conn(&s, "x2");
    s.media_disconnected(&id, "x2", c, 102);
    assert_eq!(used(&s).1, 2);
    // ICE never came up within the setup deadline.
    fill(&mut s);
    let c = conn(&s, "x3");
    assert!(s.expire_setup("x3", c, 103));
    assert_eq!(used(&s).1, 2);
    // The media plane refused the offer after admission.
    fill(&mut s);
    let c = conn(&s, "x3");
    s.join_failed(&id, "x3", c, 104);
    assert_eq!(used(&s).1, 2);
    // DisconnectParticipant.
    fill(&mut s);
    assert!(s
        .disconnect_participant(&st.arn, "x1", 105)
        .unwrap()
        .is_some());
    assert_eq!(used(&s).1, 2);
    // The same participant id comes back as a publisher: its subscription goes with it.
    join(&mut s, &st, "x1b", Role::Subscriber).unwrap();
    join(&mut s, &st, "x2", Role::Publisher).unwrap();
    assert_eq!(used(&s), (1, 2));
    // DeleteStage: everyone in it.
    let (_, other) = stage(&mut s, 2);
    join(&mut s, &other, "elsewhere", Role::Subscriber).unwrap();
    assert_eq!(used(&s), (1, 3));
    s.delete_stage(&st.arn, 106).unwrap();
    assert_eq!(used(&s), (0, 1));
    assert_eq!(s.connection("x3"), None);
}

#[test]
fn a_socket_only_participant_counts_for_nothing_and_sees_the_refusal() {
    let mut s = store();
    let (id, st) = stage(&mut s, 1);
    for pid in ["x1", "x2", "x3"] {
        join(&mut s, &st, pid, Role::Subscriber).unwrap();
    }
    // A viewer's token (subscribe only), joined by its events socket.
    let mut viewer = claims(&st, "sdk");
    viewer.capabilities.allow_publish = false;
    s.socket_joined(&viewer, 100, &[7; 13]);
    assert_eq!(used(&s), (0, 3));
    assert_eq!(
        join(&mut s, &st, "sdk", Role::Subscriber),
        Err(SUBSCRIPTIONS_FULL)
    );
    let session = s.get_stage(&st.arn).unwrap().active_session_id.unwrap();
    let (events, _) = s
        .list_participant_events(&st.arn, &session, "sdk", None, None)
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.name, Some(EventName::JoinError));
    assert_eq!(last.error_code.as_deref(), Some("QUOTA_EXCEEDED"));
    // Still connected by its socket, and still not counted; its socket closing changes nothing.
    assert!(s.socket_left(&id, "sdk", 101));
    assert_eq!(used(&s).1, 3);
}

#[test]
fn replicas_are_publishers_of_their_destination() {
    let mut s = store();
    let (_, s1) = stage(&mut s, 1);
    let (_, s2) = stage(&mut s, 2);
    let (_, s3) = stage(&mut s, 3);
    let host = join(&mut s, &s1, "host", Role::Publisher).unwrap();
    s.start_replication(&s1.arn, &s2.arn, "host", 30, None, 100, &[8; 13])
        .unwrap();
    assert_eq!(used(&s).0, 2);
    let e = s
        .start_replication(&s1.arn, &s3.arn, "host", 0, None, 100, &[8; 13])
        .unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::ServiceQuotaExceeded, 402));
    assert_eq!(
        e.message,
        "Concurrent publishers quota exceeded: at most 2 per region"
    );
    assert_eq!(
        join(&mut s, &s3, "p", Role::Publisher),
        Err(PUBLISHERS_FULL)
    );
    // The host leaves: its replica waits for it (30 s window) and counts for nothing.
    let id1 = ivs::stage_id_from_arn(&s1.arn).unwrap().to_string();
    s.media_disconnected(&id1, "host", host.connection, 101);
    assert_eq!(used(&s).0, 0);
    join(&mut s, &s3, "p", Role::Publisher).unwrap();
    // Coming back brings its replica back: two slots, and only one is free.
    assert_eq!(
        s.admit(&claims(&s1, "host"), Role::Publisher, 102, &[7; 13]),
        Err(PUBLISHERS_FULL)
    );
    let id3 = ivs::stage_id_from_arn(&s3.arn).unwrap().to_string();
    s.end_connection(&id3, "p", None, EndReason::Left, 103)
        .unwrap();
    s.admit(&claims(&s1, "host"), Role::Publisher, 103, &[7; 13])
        .unwrap();
    assert_eq!(used(&s).0, 2);
    // Past the window, a replica no longer holds anything against its source's return.
    let host = s.connection("host").unwrap().id;
    s.media_disconnected(&id1, "host", host, 104);
    assert_eq!(s.waiting_replicas(&s1.arn, "host", 104 + 30), 0);
    s.stop_replication(&s1.arn, &s2.arn, "host", 105).unwrap();
    assert_eq!(used(&s).0, 0);
}
