//! Stage presence end to end (`PRESENCE=stages`, docs/presence.md): heartbeats and leaves go
//! to each stage's `StageSeats`, the pool learns frees in batches. The pool never seats more
//! than a stage holds while frees arrive late; a lapse frees its seat within the documented
//! bound (`LEASE_TTL_SECONDS` + the 2 s report interval); a lease id with another stage
//! written into it is unknown; a worker restart in the middle of a storm (every object
//! restarted on its stored state) loses and doubles no seat.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stagefan_tests::{Answer, Api, Stack, ADMIN_KEY};

/// The pool learns of a lapse within this after it (core's `REPORT_INTERVAL_MS`), plus the
/// slack of a loaded test machine.
const REPORT_BOUND: Duration = Duration::from_millis(2_000 + 1_500);

async fn wait_for_seat(api: &Api, b: &str, user: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = api.viewer(b, user).await;
        if a.status == 200 {
            return a;
        }
        assert!(Instant::now() < deadline, "no seat for {user}: {a:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The broadcast's objects' counters: the pool's viewers, and the leases each stage's
/// object holds.
async fn presence(api: &Api, b: &str) -> (u64, Vec<(u64, u64)>) {
    let a = api
        .get(
            &format!("/api/admin/broadcasts/{b}/presence"),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(a.status, 200, "{a:?}");
    let stages = a.body["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["stage"].as_u64().unwrap(),
                s["counters"]["leases"].as_u64().unwrap(),
            )
        })
        .collect();
    (a.body["pool"]["leases"].as_u64().unwrap(), stages)
}

fn loads_within_capacity(snap: &Value) {
    for st in snap["stages"].as_array().unwrap() {
        assert!(
            st["load"].as_u64() <= st["capacity"].as_u64(),
            "a stage over capacity: {st}"
        );
    }
}

/// One stage of 3. Two viewers heartbeat, one goes silent; a new viewer asks every 100 ms.
/// It gets a seat only after the silent lease lapsed (never before: the pool counts the seat
/// until the stage reports it), and within the report bound after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_stays_exact_while_frees_arrive_late() {
    const TTL: u64 = 5;
    let stack = Stack::start(
        "presence-capacity",
        &[
            ("STAGE_CAPACITY", "3"),
            ("MIN_STAGES", "1"),
            ("MAX_STAGES", "1"),
            ("LEASE_TTL_SECONDS", "5"),
        ],
    );
    let api = stack.api();
    let b = "exact";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let silent = wait_for_seat(&api, b, "silent").await;
    let silent_at = Instant::now();
    let kept: Vec<Answer> = vec![
        wait_for_seat(&api, b, "kept-1").await,
        wait_for_seat(&api, b, "kept-2").await,
    ];
    let lease = silent.body["leaseId"].as_str().unwrap().to_string();
    let parts: Vec<&str> = lease.split('.').collect();
    assert_eq!(
        parts.len(),
        3,
        "a lease of stage presence names its stage: {lease}"
    );
    assert_eq!(parts[0], b);

    // The lease is the secret: the same id with another stage written in is unknown there,
    // and a stage that is no number is a bad field.
    for forged in [
        format!("{b}.{}.{}", parts[1].parse::<u64>().unwrap() + 1, parts[2]),
        format!("{b}.999999.{}", parts[2]),
    ] {
        let hb = api.lease_call("heartbeat", &forged).await;
        assert_eq!((hb.status, hb.code()), (404, "lease_not_found"), "{hb:?}");
        let left = api.lease_call("leave", &forged).await;
        assert_eq!(left.status, 200, "leaving is idempotent: {left:?}");
    }
    let bad = api
        .lease_call("heartbeat", format!("{b}.x.{}", parts[2]))
        .await;
    assert_eq!((bad.status, bad.code()), (400, "invalid_field"), "{bad:?}");
    assert_eq!(bad.body["error"]["field"], "leaseId");

    // Full: the fourth is refused while the silent lease lives.
    let full = api.viewer(b, "newcomer").await;
    assert_eq!((full.status, full.code()), (503, "no_capacity"), "{full:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let beating = tokio::spawn({
        let (api, stop) = (api.clone(), stop.clone());
        let leases: Vec<String> = kept
            .iter()
            .map(|k| k.body["leaseId"].as_str().unwrap().to_string())
            .collect();
        async move {
            while !stop.load(Ordering::Relaxed) {
                for l in &leases {
                    let hb = api.lease_call("heartbeat", l).await;
                    assert_eq!(hb.status, 200, "a kept lease: {hb:?}");
                }
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        }
    });
    let seated = loop {
        let a = api.viewer(b, "newcomer").await;
        let snap = api.snapshot(b).await;
        loads_within_capacity(&snap);
        assert!(snap["viewers"].as_u64().unwrap() <= 3, "{snap}");
        if a.status == 200 {
            break a;
        }
        assert_eq!((a.status, a.code()), (503, "no_capacity"), "{a:?}");
        assert!(
            silent_at.elapsed() < Duration::from_secs(TTL) + REPORT_BOUND,
            "the lapse was not reported within the bound"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let waited = silent_at.elapsed();
    assert!(
        waited >= Duration::from_secs(TTL),
        "a seat was granted {waited:?} after the silent lease began, before it lapsed"
    );
    println!("the lapsed seat was given again {waited:?} after the lease began (TTL {TTL} s)");
    stop.store(true, Ordering::Relaxed);
    beating.await.unwrap();
    let hb = api.lease_call("heartbeat", &lease).await;
    assert_eq!((hb.status, hb.code()), (404, "lease_not_found"), "{hb:?}");
    let snap = api.snapshot(b).await;
    assert_eq!(snap["viewers"], 3, "{snap}");
    assert!(
        snap["stats"]["leaseExpiries"].as_u64().unwrap() >= 1,
        "{snap}"
    );

    // A leave is reported at once: its seat is the next viewer's without a wait.
    let left = api.lease_call("leave", &seated.body["leaseId"]).await;
    assert_eq!(left.status, 200, "{left:?}");
    let next = api.viewer(b, "next").await;
    assert_eq!(next.status, 200, "a left seat is free at once: {next:?}");
    // A reconnect by the left lease is a new seat of its own, not the old one (full: 503).
    let again = api
        .post(
            "/api/token/viewer",
            &json!({"userId": "newcomer", "broadcast": b, "leaseId": seated.body["leaseId"]}),
            None,
        )
        .await;
    assert_eq!(
        (again.status, again.code()),
        (503, "no_capacity"),
        "{again:?}"
    );
    // Every object agrees on who holds a seat.
    let (pool, stages) = presence(&api, b).await;
    assert_eq!(pool, 3);
    assert_eq!(stages.iter().map(|(_, n)| n).sum::<u64>(), 3, "{stages:?}");
}

/// Three stages of 20. Seated viewers heartbeat, some leave, new viewers storm in; the worker
/// restarts in the middle (a new workerd on the same storage: the pool and every stage's
/// object restart). Afterwards every seat granted and not given back renews, the pool counts
/// exactly the leases the stages hold (none lost, none doubled, none over capacity), a
/// reconnect by lease is the same participant, and a lease left silent across the restart
/// still lapses and frees its seat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_storm_loses_and_doubles_no_seat() {
    const TTL: u64 = 20;
    let stack = Stack::start(
        "presence-restart",
        &[
            ("STAGE_CAPACITY", "20"),
            ("MIN_STAGES", "3"),
            ("MAX_STAGES", "3"),
            ("LEASE_TTL_SECONDS", "20"),
        ],
    );
    let api = stack.api();
    let b = "storm";
    assert_eq!(api.create_broadcast(b).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while api.snapshot(b).await["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "warming" || s["state"] == "live")
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "three stages");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let silent = wait_for_seat(&api, b, "silent").await;
    let silent_at = Instant::now();
    let mut seated = Vec::new();
    for n in 0..24 {
        seated.push(wait_for_seat(&api, b, &format!("seated-{n}")).await);
    }
    let stages: BTreeSet<&str> = seated
        .iter()
        .map(|s| s.body["stageArn"].as_str().unwrap())
        .collect();
    assert_eq!(stages.len(), 3, "spread over every stage");
    let leases: Vec<String> = seated
        .iter()
        .map(|s| s.body["leaseId"].as_str().unwrap().to_string())
        .collect();
    let (leaving, staying) = leases.split_at(6);

    // The storm: heartbeats of those who stay, leaves of six, forty newcomers for 35 seats.
    let stop = Arc::new(AtomicBool::new(false));
    let beats = tokio::spawn({
        let (api, stop, staying) = (api.clone(), stop.clone(), staying.to_vec());
        async move {
            let mut ok = 0u32;
            while !stop.load(Ordering::Relaxed) {
                for l in &staying {
                    let hb = api.lease_call("heartbeat", l).await;
                    // During the restart there is no answer (0); never a lost lease.
                    assert!(matches!(hb.status, 0 | 200 | 500 | 503), "{hb:?}");
                    assert_ne!(hb.status, 404, "a lease lost: {hb:?}");
                    ok += u32::from(hb.status == 200);
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            ok
        }
    });
    let joins = tokio::spawn({
        let api = api.clone();
        async move {
            let mut granted = Vec::new();
            for n in 0..40 {
                let a = api.viewer(b, &format!("storm-{n}")).await;
                if a.status == 200 {
                    granted.push(a.body["leaseId"].as_str().unwrap().to_string());
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            granted
        }
    });
    let leaves = tokio::spawn({
        let (api, leaving) = (api.clone(), leaving.to_vec());
        async move {
            let mut given_back = Vec::new();
            for l in leaving {
                tokio::time::sleep(Duration::from_millis(400)).await;
                let a = api.lease_call("leave", &l).await;
                if a.status == 200 {
                    given_back.push(l);
                }
            }
            given_back
        }
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let restarting = std::thread::scope(|s| s.spawn(|| stack.restart_worker()).join());
    restarting.expect("the worker restarts");
    let granted = joins.await.unwrap();
    let given_back = leaves.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(beats.await.unwrap() > 0);
    println!(
        "storm: {} newcomers seated, {} leaves answered",
        granted.len(),
        given_back.len()
    );

    // Every seat granted and not given back renews; those given back are gone.
    let held: Vec<&String> = staying
        .iter()
        .chain(granted.iter())
        .chain(leaving.iter().filter(|l| !given_back.contains(l)))
        .collect();
    for l in &held {
        let hb = api.lease_call("heartbeat", l).await;
        assert_eq!(hb.status, 200, "a seat lost across the restart: {hb:?}");
    }
    for l in &given_back {
        let hb = api.lease_call("heartbeat", l).await;
        assert_eq!(hb.code(), "lease_not_found", "{hb:?}");
    }
    // A reconnect by lease is the same seat.
    let first = &seated[10];
    let again = api
        .post(
            "/api/token/viewer",
            &json!({"userId": "seated-10", "broadcast": b, "leaseId": first.body["leaseId"]}),
            None,
        )
        .await;
    assert_eq!(again.status, 200, "{again:?}");
    assert_eq!(again.body["reconnected"], true);
    assert_eq!(again.body["participantId"], first.body["participantId"]);

    // The silent lease lapses after the restart (it is not touched: a heartbeat would renew
    // it) and is reported within the bound.
    let lapse_by = Duration::from_secs(TTL) + REPORT_BOUND;
    tokio::time::sleep(lapse_by.saturating_sub(silent_at.elapsed())).await;
    let hb = api.lease_call("heartbeat", &silent.body["leaseId"]).await;
    assert_eq!(
        hb.code(),
        "lease_not_found",
        "the silent lease outlived its TTL: {hb:?}"
    );
    let deadline = Instant::now() + REPORT_BOUND;
    loop {
        let (pool, stages) = presence(&api, b).await;
        let at_stages: u64 = stages.iter().map(|(_, n)| n).sum();
        let snap = api.snapshot(b).await;
        loads_within_capacity(&snap);
        // Nobody else lapses (TTL 20 s, heartbeats every 300 ms until just now).
        if pool == at_stages {
            assert!(
                pool as usize >= held.len(),
                "the pool lost seats: {pool} < {}",
                held.len()
            );
            assert_eq!(snap["viewers"].as_u64().unwrap(), pool);
            assert!(pool <= 60);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pool counts {pool} seats, the stages hold {at_stages}: {stages:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
