//! The monitor across two regions, through the real stack: one ivs-local per region
//! (us-east-1, eu-west-1) enforcing small quotas, the real worker on wrangler's dev server,
//! and the real `stagefan-monitor` binary configured as the deployment is (`--regions`,
//! `--ivs-endpoints`). Viewers are seated in both regions and subscribe at their region's
//! ivs-local; then each region's series (pool seats, IVS subscribers, IVS stages) and its
//! quota gauges (`stagefan_region_quota_{used,usable,limit}`) must match that ivs-local's own
//! counts and that region's ledger. The admin routes the monitor uses are checked too: the
//! budget slot of a region (an unknown region is a 400 naming `region`) and the ledgers.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stagefan_tests::{bin_dir, free_tcp_port, Api, Stack, ADMIN_KEY, HOST_KEY};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
const BROADCAST: &str = "globe";
const SUBSCRIPTIONS: u64 = 12;
const PUBLISHERS: u64 = 8;
const STAGES: u64 = 6;
/// Viewers seated in each region (by their preferred region).
const SEATED: [(&str, u64); 2] = [("us-east-1", 4), ("eu-west-1", 3)];

struct Monitor(Child, u16);

impl Monitor {
    fn start(stack: &Stack) -> Monitor {
        let port = free_tcp_port();
        let endpoints: Vec<String> = stack
            .regions
            .iter()
            .map(|(r, url)| format!("{r}={url}"))
            .collect();
        let child = Command::new(bin_dir().join("stagefan-monitor"))
            .args(["--poll-interval", "1s", "--ivs-budget", "5"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--regions", &REGIONS.join(",")])
            .args(["--ivs-endpoints", &endpoints.join(",")])
            .env("STAGEFAN_EDGE_URL", &stack.edge)
            .env("STAGEFAN_ADMIN_KEY", ADMIN_KEY)
            .env("AWS_ACCESS_KEY_ID", "AKIDLOCALSTAGEFAN")
            .env("AWS_SECRET_ACCESS_KEY", "stagefan-local-secret")
            .env_remove("IVS_ENDPOINT")
            .env_remove("IVS_REGION")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the monitor starts (cargo build -p stagefan-monitor)");
        Monitor(child, port)
    }

    /// `/metrics`, once the monitor listens.
    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.1);
        let started = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                assert!(r.status().is_success(), "{}", r.status());
                return r.text().await.expect("/metrics body");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the monitor never listened"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sum of every sample of `name` whose labels include each of `labels` (`k="v"`).
fn sum_of(text: &str, name: &str, labels: &[String]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(rest) = rest.strip_prefix('{') else {
            continue;
        };
        let Some((set, value)) = rest.split_once("} ") else {
            continue;
        };
        let pairs: Vec<&str> = set.split(',').collect();
        if labels.iter().all(|l| pairs.contains(&l.as_str())) {
            *found.get_or_insert(0.0) += value.trim().parse::<f64>().unwrap();
        }
    }
    found
}

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

async fn subscribe(seat: &Value) -> u16 {
    let whip = seat["whipUrl"].as_str().unwrap();
    reqwest::Client::new()
        .post(format!("{whip}/subscribe"))
        .bearer_auth(seat["token"].as_str().unwrap())
        .header("content-type", "application/sdp")
        .body(offer())
        .send()
        .await
        .expect("ivs-local answers")
        .status()
        .as_u16()
}

/// A seat in `region`, waiting out `no_capacity` while its stages are being created.
async fn seat_in(api: &Api, user: &str, region: &str) -> Value {
    let started = Instant::now();
    loop {
        let a = api
            .post(
                "/api/token/viewer",
                &json!({"userId": user, "broadcast": BROADCAST, "region": region}),
                None,
            )
            .await;
        if a.status == 200 {
            assert_eq!(a.body["region"], region, "{a:?}");
            return a.body;
        }
        assert_eq!((a.status, a.code()), (503, "no_capacity"), "{a:?}");
        assert!(started.elapsed() < Duration::from_secs(90), "{a:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `(stages, publishers, subscriptions)` as a region's ivs-local counts them, with limits.
async fn ivs_counts(stack: &Stack, region: &str) -> ([u64; 3], [u64; 3]) {
    let stats = stack.ivs_local_in(region).stats().await;
    assert_eq!(stats["region"], region, "{stats}");
    let q = &stats["quotas"];
    let get = |name: &str, what: &str| q[name][what].as_u64().unwrap();
    (
        [
            get("stages", "current"),
            get("publishers", "current"),
            get("subscriptions", "current"),
        ],
        [
            get("stages", "limit"),
            get("publishers", "limit"),
            get("subscriptions", "limit"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monitor_polls_each_region_and_exports_its_quotas() {
    let stack = Stack::start_in(
        "regions-monitor",
        &REGIONS,
        &[
            ("STAGE_CAPACITY", "5"),
            ("IVS_QUOTA_SUBSCRIPTIONS", &SUBSCRIPTIONS.to_string()),
            ("IVS_QUOTA_PUBLISHERS", &PUBLISHERS.to_string()),
            ("IVS_QUOTA_STAGES", &STAGES.to_string()),
            ("MIN_STAGES", "1"),
            ("MAX_STAGES", "3"),
            ("LEASE_TTL_SECONDS", "600"),
            ("SCALE_DOWN_GRACE_SECONDS", "3600"),
            ("IVS_LOCAL_ICE_SETUP_TIMEOUT", "900"),
        ],
    );
    let api = stack.api();

    // 1. The admin routes the monitor reads: each region's ledger, and a budget slot per
    //    region (an unknown region is a 400 naming `region`).
    let regions = api.get("/api/admin/regions", Some(ADMIN_KEY)).await;
    assert_eq!(regions.status, 200, "{regions:?}");
    let names: Vec<&str> = regions.body["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["region"].as_str().unwrap())
        .collect();
    assert_eq!(names, REGIONS);
    for r in regions.body["regions"].as_array().unwrap() {
        assert_eq!(
            r["limits"],
            json!({"subscriptions": SUBSCRIPTIONS, "publishers": PUBLISHERS, "stages": STAGES}),
            "{r}"
        );
    }
    let unauthorized = api.get("/api/admin/regions", None).await;
    assert_eq!(unauthorized.status, 401, "{unauthorized:?}");
    let route = "/api/admin/ivs-budget/slots";
    for region in REGIONS {
        let slot = api
            .post(
                route,
                &json!({"operation": "DeleteStage", "region": region}),
                Some(ADMIN_KEY),
            )
            .await;
        assert_eq!(slot.status, 200, "{slot:?}");
        assert_eq!(slot.body["region"], region, "{slot:?}");
    }
    let primary = api
        .post(route, &json!({"operation": "DeleteStage"}), Some(ADMIN_KEY))
        .await;
    assert_eq!(primary.body["region"], REGIONS[0], "{primary:?}");
    for bad in [json!("ap-south-1"), json!("EU-WEST-1"), json!(7)] {
        let a = api
            .post(
                route,
                &json!({"operation": "DeleteStage", "region": bad}),
                Some(ADMIN_KEY),
            )
            .await;
        assert_eq!((a.status, a.code()), (400, "invalid_field"), "{bad}: {a:?}");
        assert_eq!(a.body["error"]["field"], "region", "{a:?}");
    }

    // 2. The broadcast in both regions, viewers seated in each and subscribed at their
    //    region's ivs-local.
    let made = api
        .post(
            &format!("/api/admin/broadcasts/{BROADCAST}"),
            &json!({}),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(made.status, 200, "{made:?}");
    let host = api
        .post(
            "/api/token/publisher-all",
            &json!({"broadcast": BROADCAST}),
            Some(HOST_KEY),
        )
        .await;
    assert_eq!(host.status, 200, "{host:?}");
    for (region, n) in SEATED {
        for i in 0..n {
            let seat = seat_in(&api, &format!("{region}-{i}"), region).await;
            assert_eq!(subscribe(&seat).await, 201, "{seat}");
        }
    }

    // 3. The monitor: within a few rounds every region's series match its ivs-local.
    let monitor = Monitor::start(&stack);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let text = monitor.metrics().await;
        let mut ok = true;
        for (region, seated) in SEATED {
            let (current, limits) = ivs_counts(&stack, region).await;
            let r = format!("region=\"{region}\"");
            let b = format!("broadcast=\"{BROADCAST}\"");
            let subs = sum_of(
                &text,
                "stagefan_ivs_stage_subscribers",
                &[b.clone(), r.clone()],
            );
            let viewers = sum_of(&text, "stagefan_broadcast_viewers", &[b.clone(), r.clone()]);
            let ivs_stages = sum_of(&text, "stagefan_ivs_stages", std::slice::from_ref(&r));
            let live = sum_of(
                &text,
                "stagefan_stages",
                &[b.clone(), r.clone(), "state=\"live\"".into()],
            );
            let warming = sum_of(
                &text,
                "stagefan_stages",
                &[b.clone(), r.clone(), "state=\"warming\"".into()],
            );
            let quota =
                |name: &str, q: &str| sum_of(&text, name, &[format!("quota=\"{q}\""), r.clone()]);
            let checks = [
                (
                    current[2],
                    seated,
                    "ivs-local subscriptions = viewers seated",
                ),
                (subs.unwrap_or(-1.0) as u64, current[2], "IVS subscribers"),
                (viewers.unwrap_or(-1.0) as u64, current[2], "pool seats"),
                (ivs_stages.unwrap_or(-1.0) as u64, current[0], "IVS stages"),
                (
                    (live.unwrap_or(0.0) + warming.unwrap_or(0.0)) as u64,
                    current[0],
                    "the pool's stages",
                ),
            ];
            for (got, want, what) in checks {
                if got != want {
                    ok = false;
                    last = format!("{region}: {what}: {got} != {want}");
                }
            }
            for (i, q) in ["stages", "publishers", "subscriptions"].iter().enumerate() {
                let limit = quota("stagefan_region_quota_limit", q);
                let usable = quota("stagefan_region_quota_usable", q);
                let used = quota("stagefan_region_quota_used", q);
                if limit != Some(limits[i] as f64) || usable != Some(limits[i] as f64) {
                    ok = false;
                    last = format!(
                        "{region} {q}: limit {limit:?} usable {usable:?} vs {}",
                        limits[i]
                    );
                }
                // What the ledger granted covers what IVS counts, within the limit.
                match used {
                    Some(u) if u as u64 >= current[i] && u as u64 <= limits[i] => {}
                    other => {
                        ok = false;
                        last = format!("{region} {q}: used {other:?} vs IVS {}", current[i]);
                    }
                }
            }
        }
        if ok {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the monitor's series never matched: {last}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // 4. Each region's quota gauges are its ledger exactly, as the admin route reads it, and
    //    the ledger is what the region's pool holds.
    let text = monitor.metrics().await;
    let ledgers = api.get("/api/admin/regions", Some(ADMIN_KEY)).await;
    for (region, _) in SEATED {
        let ledger = ledgers.body["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["region"] == region)
            .unwrap()
            .clone();
        let pool = if region == REGIONS[0] {
            BROADCAST.to_string()
        } else {
            format!("{BROADCAST}@{region}")
        };
        let snap = api.snapshot(&pool).await;
        for q in ["stages", "publishers", "subscriptions"] {
            let used = sum_of(
                &text,
                "stagefan_region_quota_used",
                &[format!("quota=\"{q}\""), format!("region=\"{region}\"")],
            );
            assert_eq!(used, ledger["held"][q].as_f64(), "{region} {q}: {ledger}");
            assert_eq!(
                ledger["held"][q], snap["quota"]["held"][q],
                "{region} {q}: {snap}"
            );
        }
        assert_eq!(
            sum_of(
                &text,
                "stagefan_orphan_stages",
                &[format!("region=\"{region}\"")]
            ),
            Some(0.0)
        );
    }

    // 5. The status page's view: each region's quota use on the public list's first page.
    let list = api.get("/api/broadcasts", None).await;
    assert_eq!(list.status, 200, "{list:?}");
    let public = list.body["regions"].as_array().expect("regions").clone();
    assert_eq!(public.len(), 2, "{list:?}");
    for entry in &public {
        let region = entry["region"].as_str().unwrap();
        let ledger = ledgers.body["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["region"] == region)
            .unwrap()
            .clone();
        for q in ["stages", "publishers", "subscriptions"] {
            assert_eq!(entry["quota"][q]["limit"], ledger["limits"][q], "{entry}");
            assert_eq!(entry["quota"][q]["usable"], ledger["usable"][q], "{entry}");
            assert!(entry["quota"][q]["used"].is_u64(), "{entry}");
        }
        assert!(entry.get("endpoint").is_none() && entry.get("holders").is_none());
    }
}
