//! The account-quota ledger end to end: two broadcasts compete for a region of 12 concurrent
//! subscriptions (stages of 5) through the real worker on wrangler's dev server and
//! ivs-local enforcing the same quotas. No stage over capacity, the region never over a
//! quota (by ivs-local's own counts, and by subscribing every token handed out), `503
//! region_quota` only once the region's quota is all granted, a seat given back is a seat
//! for the other broadcast, and grants and seats intact across a worker restart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stagefan_tests::{next_client_ip, Answer, Api, Stack};

const CAPACITY: u32 = 5;
const SUBSCRIPTIONS: u32 = 12;
const BROADCASTS: [&str; 2] = ["quota-a", "quota-b"];

/// A receive-only offer made by str0m (ivs-local refuses what is not an offer).
fn offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::new(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// Subscribes a seat's token with ivs-local (WHEP-style): its status and session URL.
async fn subscribe(seat: &Answer) -> (u16, Option<String>, Value) {
    let whip = seat.body["whipUrl"].as_str().unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{whip}/subscribe"))
        .bearer_auth(seat.body["token"].as_str().unwrap())
        .header("content-type", "application/sdp")
        .body(offer())
        .send()
        .await
        .expect("ivs-local answers");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    let body = if status == 201 {
        Value::Null
    } else {
        resp.json().await.unwrap_or(Value::Null)
    };
    (status, location, body)
}

/// Ends a seat's WHEP session in ivs-local (the page's `DELETE` on leaving).
async fn unsubscribe(ivs: &str, seat: &Answer, location: &str) {
    let resp = reqwest::Client::new()
        .delete(format!("{ivs}{location}"))
        .bearer_auth(seat.body["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{resp:?}");
}

/// What both pools hold of the region's subscriptions, by their snapshots.
async fn held_subscriptions(api: &Api) -> u64 {
    let mut held = 0;
    for b in BROADCASTS {
        let snap = api.snapshot(b).await;
        held += snap["quota"]["held"]["subscriptions"].as_u64().unwrap_or(0);
        for st in snap["stages"].as_array().unwrap() {
            assert!(st["load"].as_u64().unwrap() <= u64::from(CAPACITY), "{st}");
        }
    }
    held
}

/// ivs-local's own quota counts: `(stages, publishers, subscriptions)` currents, checked
/// against their limits.
async fn region(stack: &Stack) -> (u64, u64, u64) {
    let stats = stack.ivs_local().stats().await;
    let q = &stats["quotas"];
    for name in ["stages", "publishers", "subscriptions"] {
        let (cur, limit) = (q[name]["current"].as_u64(), q[name]["limit"].as_u64());
        assert!(cur.unwrap() <= limit.unwrap(), "{name} over its quota: {q}");
    }
    assert_eq!(q["subscriptions"]["limit"], u64::from(SUBSCRIPTIONS), "{q}");
    (
        q["stages"]["current"].as_u64().unwrap(),
        q["publishers"]["current"].as_u64().unwrap(),
        q["subscriptions"]["current"].as_u64().unwrap(),
    )
}

/// A seat in `broadcast`, waiting out `no_capacity` (stages being created) and, up to
/// `patience`, `region_quota` (another pool's idle grant coming back). Every `region_quota`
/// refusal is checked to come only when the region's quota was all granted just before or
/// just after the ask.
async fn seat(api: &Api, broadcast: &str, user: &str, patience: Duration) -> Option<Answer> {
    let started = Instant::now();
    loop {
        // What the pools held just before the ask: a refusal is right if the region was all
        // granted before or after it (a pool may give an idle grant back meanwhile).
        let held_before = held_subscriptions(api).await;
        let a = api
            .post_from(
                &next_client_ip(),
                "/api/token/viewer",
                &json!({"userId": user, "broadcast": broadcast}),
            )
            .await;
        match (a.status, a.code()) {
            (200, _) => return Some(a),
            (503, "no_capacity") => {}
            (503, "region_quota") => {
                assert!(a.retry_after.is_some(), "{a:?}");
                let message = a.body["error"]["message"].as_str().unwrap();
                assert!(message.contains("subscriptions"), "{message}");
                let held_after = held_subscriptions(api).await;
                assert!(
                    held_before == u64::from(SUBSCRIPTIONS)
                        || held_after == u64::from(SUBSCRIPTIONS),
                    "refused for the region's quota while some of it was not granted (held \
                     {held_before} before, {held_after} after): {a:?}"
                );
                if started.elapsed() > patience {
                    return None;
                }
            }
            _ => panic!("{broadcast}/{user}: {a:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no seat for {user}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_region_quota_is_shared_and_never_exceeded() {
    let stack = Stack::start(
        "quota",
        &[
            ("STAGE_CAPACITY", &CAPACITY.to_string()),
            ("IVS_QUOTA_SUBSCRIPTIONS", &SUBSCRIPTIONS.to_string()),
            ("IVS_QUOTA_PUBLISHERS", "8"),
            ("IVS_QUOTA_STAGES", "8"),
            ("MIN_STAGES", "1"),
            ("MAX_STAGES", "4"),
            ("LEASE_TTL_SECONDS", "600"),
            // The test's subscriptions never bring ICE up: ivs-local keeps them for the
            // whole test instead of ending them after 30 s.
            ("IVS_LOCAL_ICE_SETUP_TIMEOUT", "900"),
        ],
    );
    let api = stack.api();
    for b in BROADCASTS {
        assert_eq!(api.create_broadcast(b).await.status, 200);
    }

    // 1. Six viewers for each broadcast, in turns: all twelve seated (a refusal meanwhile
    //    only while the other pool's idle grant comes back), every token subscribes.
    let mut seats: Vec<(usize, Answer, String)> = Vec::new();
    for i in 0..6 {
        for (n, b) in BROADCASTS.iter().enumerate() {
            let a = seat(&api, b, &format!("v{i}"), Duration::from_secs(60))
                .await
                .unwrap_or_else(|| panic!("{b}: viewer {i} never seated"));
            let (status, location, body) = subscribe(&a).await;
            assert_eq!(status, 201, "IVS refuses a token stagefan gave: {body}");
            seats.push((n, a, location.unwrap()));
        }
    }
    assert_eq!(region(&stack).await.2, u64::from(SUBSCRIPTIONS));

    // 2. The region is full: the next viewer of either broadcast is refused, with the quota
    //    named and Retry-After, and never given a token.
    for b in BROADCASTS {
        assert!(seat(&api, b, "late", Duration::from_secs(3))
            .await
            .is_none());
    }
    let (stages, _, subs) = region(&stack).await;
    assert_eq!(subs, u64::from(SUBSCRIPTIONS));
    assert!(stages <= 8);

    // 3. A viewer of quota-a leaves (seat and WHEP session): a quota-b viewer gets its
    //    subscription, once quota-a's alarm has given the idle grant back.
    let (_, gone, location) = seats.remove(0);
    let left = api.lease_call("leave", &gone.body["leaseId"]).await;
    assert_eq!(left.status, 200);
    unsubscribe(&stack.ivs, &gone, &location).await;
    let moved = seat(&api, BROADCASTS[1], "moved", Duration::from_secs(40))
        .await
        .expect("a seat given back is a seat for the other broadcast");
    let (status, location, body) = subscribe(&moved).await;
    assert_eq!(status, 201, "{body}");
    seats.push((1, moved, location.unwrap()));
    assert_eq!(region(&stack).await.2, u64::from(SUBSCRIPTIONS));

    // 4. A worker restart on the same storage: grants and seats are as they were, the
    //    region still full, every lease renews.
    let before: Vec<Value> = futures_snapshots(&api).await;
    stack.restart_worker();
    let after: Vec<Value> = futures_snapshots(&api).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b["viewers"], a["viewers"], "{a}");
        assert_eq!(
            b["quota"]["held"]["subscriptions"], a["quota"]["held"]["subscriptions"],
            "{a}"
        );
    }
    assert_eq!(held_subscriptions(&api).await, u64::from(SUBSCRIPTIONS));
    for b in BROADCASTS {
        assert!(seat(&api, b, "after", Duration::from_secs(3))
            .await
            .is_none());
    }
    for (_, s, _) in &seats {
        let hb = api.lease_call("heartbeat", &s.body["leaseId"]).await;
        assert_eq!(hb.status, 200, "{hb:?}");
    }
    let (stages, publishers, subs) = region(&stack).await;
    assert_eq!(subs, u64::from(SUBSCRIPTIONS));
    assert!(stages <= 8 && publishers <= 8);
}

async fn futures_snapshots(api: &Api) -> Vec<Value> {
    let mut out = Vec::new();
    for b in BROADCASTS {
        out.push(api.snapshot(b).await);
    }
    out
}
