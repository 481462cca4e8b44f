//! Several regions end to end: one broadcast in two regions (us-east-1, eu-west-1), each its
//! own ivs-local enforcing 12 concurrent subscriptions, stages of 5, through the real worker
//! on wrangler's dev server. The host gets tokens in both regions; a viewer's preferred
//! region is honoured; a join storm overflows into the second region before anybody is
//! refused, `503 region_quota` only once both are full, no stage over capacity and no region
//! over a quota (by each ivs-local's own counts, and by subscribing every token handed out);
//! a reconnect stays in its region; seats and grants intact across a worker restart; the end
//! reaches both regions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stagefan_tests::{Answer, Api, Stack, HOST_KEY};

const CAPACITY: u64 = 5;
const SUBSCRIPTIONS: u64 = 12;
const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
const BROADCAST: &str = "world";

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

/// Subscribes a seat's token with its region's ivs-local (WHEP-style): the status.
async fn subscribe(seat: &Value) -> (u16, Value) {
    let whip = seat["whipUrl"].as_str().unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{whip}/subscribe"))
        .bearer_auth(seat["token"].as_str().unwrap())
        .header("content-type", "application/sdp")
        .body(offer())
        .send()
        .await
        .expect("ivs-local answers");
    let status = resp.status().as_u16();
    let body = if status == 201 {
        json!({"location": resp.headers().get("location").and_then(|l| l.to_str().ok())})
    } else {
        resp.json().await.unwrap_or(Value::Null)
    };
    (status, body)
}

/// The name of the broadcast's pool in `region` (the admin routes take it).
fn pool(region: &str) -> String {
    if region == REGIONS[0] {
        BROADCAST.to_string()
    } else {
        format!("{BROADCAST}@{region}")
    }
}

/// Each region's ivs-local counts `(stages, publishers, subscriptions)`, each checked
/// against its limit.
async fn region_counts(stack: &Stack, region: &str) -> (u64, u64, u64) {
    let stats = stack.ivs_local_in(region).stats().await;
    assert_eq!(stats["region"], region, "{stats}");
    let q = &stats["quotas"];
    for name in ["stages", "publishers", "subscriptions"] {
        let (cur, limit) = (q[name]["current"].as_u64(), q[name]["limit"].as_u64());
        assert!(
            cur.unwrap() <= limit.unwrap(),
            "{region}: {name} over its quota: {q}"
        );
    }
    assert_eq!(q["subscriptions"]["limit"], SUBSCRIPTIONS, "{q}");
    (
        q["stages"]["current"].as_u64().unwrap(),
        q["publishers"]["current"].as_u64().unwrap(),
        q["subscriptions"]["current"].as_u64().unwrap(),
    )
}

/// Both pools' snapshots, checked: no stage over capacity, the pool's region named.
async fn snapshots(api: &Api) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for region in REGIONS {
        let snap = api.snapshot(&pool(region)).await;
        assert_eq!(snap["region"], region, "{snap}");
        assert_eq!(snap["broadcast"], BROADCAST, "{snap}");
        for st in snap["stages"].as_array().unwrap() {
            assert!(st["load"].as_u64().unwrap() <= CAPACITY, "{st}");
        }
        out.insert(region.to_string(), snap);
    }
    out
}

/// A viewer's seat: waits out `no_capacity` (stages being created); a `region_quota`
/// refusal is answered as `Err`.
async fn join(api: &Api, body: Value) -> Result<Answer, Answer> {
    let started = Instant::now();
    loop {
        let a = api.post("/api/token/viewer", &body, None).await;
        match (a.status, a.code()) {
            (200, _) => return Ok(a),
            (503, "no_capacity") => {}
            (503, "region_quota") => return Err(a),
            _ => panic!("{body}: {a:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no seat: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Checks a seat is where it says: its `region`, its stage's ARN and its WHIP URL (that
/// region's ivs-local) agree, and its lease routes to that region's pool.
fn region_of_seat(stack: &Stack, seat: &Answer) -> String {
    let region = seat.body["region"]
        .as_str()
        .expect("the answer names its region");
    let arn = seat.body["stageArn"].as_str().unwrap();
    assert!(arn.starts_with(&format!("arn:aws:ivs:{region}:")), "{arn}");
    let (_, base) = stack.regions.iter().find(|(r, _)| r == region).unwrap();
    assert!(seat.body["whipUrl"]
        .as_str()
        .unwrap()
        .starts_with(base.as_str()));
    let lease = seat.body["leaseId"].as_str().unwrap();
    assert!(lease.starts_with(&format!("{}.", pool(region))), "{lease}");
    region.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_regions_seat_a_storm_within_each_quota() {
    let stack = Stack::start_in(
        "regions",
        &REGIONS,
        &[
            ("STAGE_CAPACITY", &CAPACITY.to_string()),
            ("IVS_QUOTA_SUBSCRIPTIONS", &SUBSCRIPTIONS.to_string()),
            ("IVS_QUOTA_PUBLISHERS", "8"),
            ("IVS_QUOTA_STAGES", "8"),
            ("MIN_STAGES", "1"),
            ("MAX_STAGES", "4"),
            ("LEASE_TTL_SECONDS", "600"),
            ("IVS_LOCAL_ICE_SETUP_TIMEOUT", "900"),
        ],
    );
    let api = stack.api();
    let config = api.get("/api/config", None).await;
    assert_eq!(config.body["regions"], json!(REGIONS), "{config:?}");

    // 1. The host: tokens for the stages of both regions, each naming its region (the
    //    region's pool is made by the first call); its reports reach the stage's region.
    let started = Instant::now();
    let tokens = loop {
        let a = api
            .post(
                "/api/token/publisher-all",
                &json!({"broadcast": BROADCAST}),
                Some(HOST_KEY),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.body["regions"], json!(REGIONS));
        let tokens = a.body["tokens"].as_array().unwrap().clone();
        let has = |r: &str| tokens.iter().any(|t| t["region"] == r);
        if REGIONS.iter().all(|r| has(r)) {
            break tokens;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{a:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for t in &tokens {
        let region = t["region"].as_str().unwrap();
        let arn = t["stageArn"].as_str().unwrap();
        assert!(arn.starts_with(&format!("arn:aws:ivs:{region}:")), "{t}");
        let a = api
            .post(
                "/api/host/published",
                &json!({"broadcast": BROADCAST, "stageArn": arn,
                        "participantId": t["participantId"]}),
                Some(HOST_KEY),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    for (region, snap) in snapshots(&api).await {
        let live = snap["stages"].as_array().unwrap().iter().any(|s| {
            s["hostPublishing"] == true
                && tokens
                    .iter()
                    .any(|t| t["stageArn"] == s["stageArn"] && t["region"] == region.as_str())
        });
        assert!(
            live,
            "{region}: the host's report did not reach its pool: {snap}"
        );
    }
    let foreign = api
        .post(
            "/api/host/published",
            &json!({"broadcast": BROADCAST, "participantId": "p1",
                    "stageArn": "arn:aws:ivs:ap-south-1:123456789012:stage/abcd"}),
            Some(HOST_KEY),
        )
        .await;
    assert_eq!((foreign.status, foreign.code()), (400, "invalid_field"));
    assert_eq!(foreign.body["error"]["field"], "stageArn");

    // 2. A region the deployment does not run is a 400 naming `region`, and seats nobody.
    for bad in ["ap-south-1", "EU-WEST-1"] {
        let a = api
            .post(
                "/api/token/viewer",
                &json!({"userId": "x", "broadcast": BROADCAST, "region": bad}),
                None,
            )
            .await;
        assert_eq!((a.status, a.code()), (400, "invalid_field"), "{bad}: {a:?}");
        assert_eq!(a.body["error"]["field"], "region", "{a:?}");
    }

    // 3. The preferred region is honoured; without one, viewers go to the region placement
    //    puts first (the nearest to the request) while it has room.
    let mut seats: Vec<Answer> = Vec::new();
    let preferred = join(
        &api,
        json!({"userId": "pref", "broadcast": BROADCAST, "region": "eu-west-1"}),
    )
    .await
    .expect("a seat in the preferred region");
    assert_eq!(region_of_seat(&stack, &preferred), "eu-west-1");
    seats.push(preferred);
    let mut first_region = None;
    for i in 0..10 {
        let a = join(
            &api,
            json!({"userId": format!("s{i}"), "broadcast": BROADCAST}),
        )
        .await
        .expect("room in the first region");
        let region = region_of_seat(&stack, &a);
        assert_eq!(
            *first_region.get_or_insert_with(|| region.clone()),
            region,
            "a viewer left the first region while it had room"
        );
        seats.push(a);
    }
    let first_region = first_region.unwrap();

    // 4. The storm: 40 viewers at once. Both regions fill (12 each), every other viewer is
    //    refused with `region_quota` only (never `no_capacity` once stages stop coming).
    let storm: Vec<_> = (0..40)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                join(
                    &api,
                    json!({"userId": format!("storm{i}"), "broadcast": BROADCAST}),
                )
                .await
            })
        })
        .collect();
    let mut refused = Vec::new();
    for task in storm {
        match task.await.unwrap() {
            Ok(a) => seats.push(a),
            Err(a) => refused.push(a),
        }
    }
    let mut by_region: BTreeMap<String, u64> = BTreeMap::new();
    for s in &seats {
        *by_region.entry(region_of_seat(&stack, s)).or_default() += 1;
    }
    assert_eq!(
        by_region,
        REGIONS
            .iter()
            .map(|r| (r.to_string(), SUBSCRIPTIONS))
            .collect(),
        "both regions full, none over"
    );
    assert_eq!(refused.len(), 51 - 2 * SUBSCRIPTIONS as usize);
    for a in &refused {
        assert!(a.retry_after.is_some(), "{a:?}");
        let message = a.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("subscriptions"), "{message}");
    }
    // Every token handed out is one IVS takes: each subscribes in its own region (whose
    // ivs-local verifies it with the key imported there).
    for s in &seats {
        let (status, body) = subscribe(&s.body).await;
        assert_eq!(
            status, 201,
            "IVS refuses a token stagefan gave: {body} ({:?})",
            s.body
        );
    }
    for region in REGIONS {
        let (stages, publishers, subs) = region_counts(&stack, region).await;
        assert_eq!(subs, SUBSCRIPTIONS, "{region}");
        assert!(stages <= 8 && publishers <= 8, "{region}");
    }
    let snaps = snapshots(&api).await;
    for (region, snap) in &snaps {
        assert_eq!(snap["viewers"], SUBSCRIPTIONS, "{region}: {snap}");
        assert_eq!(
            snap["quota"]["held"]["subscriptions"], SUBSCRIPTIONS,
            "{region}"
        );
    }
    // The public summary covers both regions.
    let summary = api.get(&format!("/api/broadcasts/{BROADCAST}"), None).await;
    assert_eq!(summary.body["viewers"], 2 * SUBSCRIPTIONS, "{summary:?}");
    let stage_regions: Vec<&str> = summary.body["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["region"].as_str().unwrap())
        .collect();
    assert!(
        REGIONS.iter().all(|r| stage_regions.contains(r)),
        "{summary:?}"
    );

    // 5. Full everywhere: a preferred region refuses too; a reconnect keeps its seat in its
    //    region whatever it asks for.
    let late = join(
        &api,
        json!({"userId": "late", "broadcast": BROADCAST, "region": "eu-west-1"}),
    )
    .await
    .expect_err("both regions are full");
    assert_eq!(late.code(), "region_quota");
    let other_region = REGIONS.iter().find(|r| **r != first_region).unwrap();
    for s in [&seats[0], &seats[1]] {
        let again = api
            .post(
                "/api/token/viewer",
                &json!({"userId": s.body["userId"], "broadcast": BROADCAST,
                        "leaseId": s.body["leaseId"], "region": other_region}),
                None,
            )
            .await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(again.body["reconnected"], true);
        assert_eq!(again.body["region"], s.body["region"]);
        assert_eq!(again.body["stageArn"], s.body["stageArn"]);
        assert_eq!(again.body["participantId"], s.body["participantId"]);
    }
    // Leases of regions nobody runs, or of broadcasts nobody made, reach no pool.
    let secret = "abcdefghijABCDEFGHIJ-_";
    for forged in [
        format!("{BROADCAST}@ap-south-1.{secret}"),
        format!("{BROADCAST}@us-east-1.{secret}"),
        format!("nobody@eu-west-1.{secret}"),
        format!("{BROADCAST}@eu-west-1.{secret}"),
    ] {
        let hb = api.lease_call("heartbeat", &forged).await;
        assert_eq!(
            (hb.status, hb.code()),
            (404, "lease_not_found"),
            "{forged}: {hb:?}"
        );
    }

    // 6. A worker restart on the same storage: both pools' seats and grants as they were,
    //    both regions still full, every lease renews in its region, a reconnect stays.
    stack.restart_worker();
    let after = snapshots(&api).await;
    for (region, snap) in &after {
        assert_eq!(snap["viewers"], snaps[region]["viewers"], "{region}");
        assert_eq!(
            snap["quota"]["held"]["subscriptions"], snaps[region]["quota"]["held"]["subscriptions"],
            "{region}"
        );
    }
    let again = join(&api, json!({"userId": "after", "broadcast": BROADCAST}))
        .await
        .expect_err("still full after the restart");
    assert_eq!(again.code(), "region_quota");
    for s in &seats {
        let hb = api.lease_call("heartbeat", &s.body["leaseId"]).await;
        assert_eq!(hb.status, 200, "{hb:?}");
    }
    let back = api
        .post(
            "/api/token/viewer",
            &json!({"userId": "pref", "broadcast": BROADCAST, "leaseId": seats[0].body["leaseId"]}),
            None,
        )
        .await;
    assert_eq!(back.status, 200, "{back:?}");
    assert_eq!(back.body["region"], "eu-west-1");
    assert_eq!(back.body["reconnected"], true);
    for region in REGIONS {
        assert_eq!(region_counts(&stack, region).await.2, SUBSCRIPTIONS);
    }

    // 7. A seat given back in the second region is a seat there for the next viewer.
    let gone = seats
        .iter()
        .position(|s| s.body["region"] == *other_region)
        .unwrap();
    let gone = seats.remove(gone);
    let left = api.lease_call("leave", &gone.body["leaseId"]).await;
    assert_eq!(left.status, 200, "{left:?}");
    let moved = join(&api, json!({"userId": "moved", "broadcast": BROADCAST}))
        .await
        .expect("the seat given back");
    assert_eq!(region_of_seat(&stack, &moved), *other_region);

    // 8. The end reaches both regions: every seat freed, every lease ended.
    let ended = api
        .post(
            &format!("/api/broadcasts/{BROADCAST}/end"),
            &json!({}),
            Some(HOST_KEY),
        )
        .await;
    assert_eq!(ended.status, 200, "{ended:?}");
    assert_eq!(ended.body["seatsFreed"], 2 * SUBSCRIPTIONS, "{ended:?}");
    for region in REGIONS {
        let s = seats.iter().find(|s| s.body["region"] == region).unwrap();
        let hb = api.lease_call("heartbeat", &s.body["leaseId"]).await;
        assert_eq!(
            (hb.status, hb.code()),
            (410, "broadcast_ended"),
            "{region}: {hb:?}"
        );
    }
}
