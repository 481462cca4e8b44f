//! The monitor over two regions, against a scripted IVS per region (each accepting only
//! requests signed for its own region) and one scripted edge with a pool per region: each
//! region is sampled by its own client within its own budget, its series carry `region`, its
//! orphans are collected there with that region's budget slot, and each region's ledger
//! becomes the quota gauges.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use stagefan_core::pool::StageState;
use stagefan_core::sigv4::Credentials;
use stagefan_monitor::budget::Budget;
use stagefan_monitor::edge::EdgeClient;
use stagefan_monitor::ivs::{IvsClient, IvsSettings};
use stagefan_monitor::metrics::Metrics;
use stagefan_monitor::poller::Poller;
use tokio::time::Instant;

fn arn_in(region: &str, id: &str) -> String {
    format!("arn:aws:ivs:{region}:123456789012:stage/{id}")
}

fn ledger(region: &str, held: [u32; 3], limits: [u32; 3]) -> serde_json::Value {
    let q = |v: [u32; 3]| json!({"subscriptions": v[0], "publishers": v[1], "stages": v[2]});
    json!({"region": region, "limits": q(limits), "usable": q(limits), "held": q(held), "holders": 1})
}

#[tokio::test(start_paused = true)]
async fn each_region_is_polled_by_its_own_client_and_budget_and_labelled() {
    const US: &str = "us-east-1";
    const EU: &str = "eu-west-1";
    let us = ScriptedIvs::in_region(US);
    let eu = ScriptedIvs::in_region(EU);
    let edge = ScriptedEdge::default();
    let (us_stage, eu_stage) = (arn_in(US, "usstage00001"), arn_in(EU, "eustage00001"));
    let eu_orphan = arn_in(EU, "euorphan0001");
    us.add_stage(&us_stage, true, Some("b"));
    us.set_participants(&us_stage, 1, 3);
    eu.add_stage(&eu_stage, true, Some("b"));
    eu.set_participants(&eu_stage, 1, 2);
    // Tagged for broadcast b, but b's eu-west-1 pool does not know it: an orphan there.
    eu.add_stage(&eu_orphan, true, Some("b"));
    let mut us_view = stage(1, &us_stage, StageState::Live, 3, 50);
    let mut eu_view = stage(1, &eu_stage, StageState::Live, 2, 50);
    us_view.empty_since = None;
    eu_view.empty_since = None;
    edge.put_pool(snapshot("b", 1, vec![us_view]));
    edge.put_pool_in(EU, snapshot("b", 1, vec![eu_view]));
    edge.0.lock().unwrap().regions = json!({"regions": [
        ledger(US, [50, 1, 1], [12_000, 100, 100]),
        ledger(EU, [20, 1, 2], [20_000, 1_000, 1_000]),
    ]});

    let us_addr = us.start().await;
    let eu_addr = eu.start().await;
    let edge_addr = edge.start().await;
    let metrics = Arc::new(Metrics::new().unwrap());
    let client = |region: &str, addr| {
        IvsClient::new(
            IvsSettings {
                endpoint: format!("http://{addr}"),
                region: region.into(),
                credentials: Credentials::new(ACCESS_KEY, SECRET, None),
                timeout: Duration::from_secs(3600),
            },
            Arc::new(Budget::new(2.0)),
            metrics.clone(),
        )
        .unwrap()
    };
    let clients = vec![client(US, us_addr), client(EU, eu_addr)];
    let edge_client = EdgeClient::new(
        &format!("http://{edge_addr}"),
        ADMIN_KEY.into(),
        Duration::from_secs(3600),
        metrics.clone(),
    )
    .unwrap();
    let poll = Duration::from_secs(5);
    let mut s = settings(poll);
    s.orphan_grace = Duration::from_secs(10);
    let mut poller = Poller::regions(edge_client, clients, metrics.clone(), s);
    let end = Instant::now() + Duration::from_secs(40);
    while Instant::now() < end {
        let next = Instant::now() + poll;
        assert!(poller.round().await.ok);
        tokio::time::sleep_until(next).await;
    }

    // Each IVS saw only requests signed for its region, each about its own stages.
    for (ivs, own) in [(&us, [&us_stage]), (&eu, [&eu_stage])] {
        assert_eq!(ivs.0.lock().unwrap().bad_signatures, 0);
        let calls = ivs.calls();
        assert!(calls.iter().all(|c| c.status == 200), "{calls:?}");
        let lp = ivs.calls_of("ListParticipants");
        assert!(!lp.is_empty());
        assert!(lp.iter().all(|c| c.arn.as_deref() == Some(own[0].as_str())));
        // Its own budget of 2 per second, whatever the other region does.
        for op in ["ListStages", "ListParticipants"] {
            let times: Vec<Instant> = ivs.calls_of(op).iter().map(|c| c.at).collect();
            assert!(max_per_second(&times) <= 2, "{op}");
        }
    }
    // Observations went to each region's pool.
    let observed: Vec<(String, String)> = edge
        .observations()
        .into_iter()
        .flat_map(|(pool, o)| {
            o.stages
                .into_iter()
                .map(move |s| (pool.clone(), s.stage_arn))
        })
        .collect();
    assert!(observed.contains(&("b".into(), us_stage.clone())));
    assert!(observed.contains(&("b@eu-west-1".into(), eu_stage.clone())));
    assert!(observed.iter().all(|(pool, arn)| {
        (pool == "b" && *arn == us_stage) || (pool == "b@eu-west-1" && *arn == eu_stage)
    }));
    // The orphan was collected in eu-west-1, with a slot of eu-west-1's budget.
    assert!(!eu.has_stage(&eu_orphan));
    assert!(us.calls_of("DeleteStage").is_empty());
    let slots = edge.0.lock().unwrap().slots.clone();
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert_eq!(slots[0].region.as_deref(), Some(EU));

    let text = metrics.encode();
    let get = |s: &str| series(&text, s);
    for (region, stage, subs) in [(US, "usstage00001", 3.0), (EU, "eustage00001", 2.0)] {
        let l = format!("broadcast=\"b\",region=\"{region}\"");
        assert_eq!(
            get(&format!("stagefan_broadcast_viewers{{{l}}}")),
            Some(subs)
        );
        assert_eq!(
            get(&format!("stagefan_stages{{{l},state=\"live\"}}")),
            Some(1.0)
        );
        assert_eq!(
            get(&format!("stagefan_stage_viewers{{{l},stage=\"{stage}\"}}")),
            Some(subs)
        );
        assert_eq!(
            get(&format!(
                "stagefan_ivs_stage_subscribers{{{l},stage=\"{stage}\"}}"
            )),
            Some(subs)
        );
        assert_eq!(
            get(&format!(
                "stagefan_ivs_budget_requests_per_second{{operation=\"ListStages\",region=\"{region}\"}}"
            )),
            Some(2.0)
        );
        assert_eq!(
            get(&format!("stagefan_orphan_stages{{region=\"{region}\"}}")),
            Some(0.0)
        );
    }
    assert_eq!(get("stagefan_ivs_stages{region=\"us-east-1\"}"), Some(1.0));
    assert_eq!(get("stagefan_ivs_stages{region=\"eu-west-1\"}"), Some(1.0));
    // The ledgers as gauges.
    for (quota, region, used, limit) in [
        ("subscriptions", US, 50.0, 12_000.0),
        ("publishers", US, 1.0, 100.0),
        ("stages", EU, 2.0, 1_000.0),
    ] {
        let l = format!("quota=\"{quota}\",region=\"{region}\"");
        assert_eq!(
            get(&format!("stagefan_region_quota_used{{{l}}}")),
            Some(used)
        );
        assert_eq!(
            get(&format!("stagefan_region_quota_limit{{{l}}}")),
            Some(limit)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_signing_for_another_region_is_refused_by_that_regions_ivs() {
    // The SigV4 scope is what ties a client to its region: eu-west-1's IVS refuses a
    // us-east-1 signature, which the harness above would have counted.
    let eu = ScriptedIvs::in_region("eu-west-1");
    let edge = ScriptedEdge::default();
    let addr = eu.start().await;
    let edge_addr = edge.start().await;
    let metrics = Arc::new(Metrics::new().unwrap());
    let wrong = IvsClient::new(
        IvsSettings {
            endpoint: format!("http://{addr}"),
            region: "us-east-1".into(),
            credentials: Credentials::new(ACCESS_KEY, SECRET, None),
            timeout: Duration::from_secs(3600),
        },
        Arc::new(Budget::new(2.0)),
        metrics.clone(),
    )
    .unwrap();
    let edge_client = EdgeClient::new(
        &format!("http://{edge_addr}"),
        ADMIN_KEY.into(),
        Duration::from_secs(3600),
        metrics.clone(),
    )
    .unwrap();
    let mut poller = Poller::regions(
        edge_client,
        vec![wrong],
        metrics.clone(),
        settings(Duration::from_secs(5)),
    );
    poller.round().await;
    assert!(eu.0.lock().unwrap().bad_signatures >= 1);
    assert!(series(
        &metrics.encode(),
        "stagefan_ivs_requests_total{operation=\"ListStages\",region=\"us-east-1\",status=\"403\"}"
    )
    .is_some());
}
