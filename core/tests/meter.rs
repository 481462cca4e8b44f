//! The cost meter against hand computations over scripted broadcasts: viewers joining and
//! leaving at known times, the host on and off stages, a restart from the stored rows, and
//! stages deleted and forgotten.

mod common;

use common::Store;
use stagefan_core::meter::{ByKind, Prices, HOUR_MS};
use stagefan_core::modes::FanoutMode;
use stagefan_core::pool::*;

const T0: Millis = 1_764_160_000_000;
const S: u64 = 1_000;

fn settings(capacity: u32) -> PoolSettings {
    PoolSettings {
        capacity,
        min_stages: 1,
        max_stages: 100,
        lease_ttl_ms: 60 * S,
        fanout: FanoutMode::MultiPublish,
        ..PoolSettings::default()
    }
}

fn rnd(n: u64) -> [u8; LEASE_RANDOM_BYTES] {
    let mut b = [0u8; LEASE_RANDOM_BYTES];
    b[..8].copy_from_slice(&n.to_le_bytes());
    b[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    b
}

fn live(pool: &mut Pool, now: Millis) -> StageId {
    let intent = pool.begin_create(now).unwrap();
    let arn = format!(
        "arn:aws:ivs:us-east-1:123456789012:stage/st{:07}",
        intent.stage.0
    );
    let endpoints = StageEndpoints {
        whip: "http://127.0.0.1:8790/whip".into(),
        events: "ws://127.0.0.1:8790/events".into(),
    };
    pool.created(intent.stage, &arn, endpoints, now).unwrap();
    pool.mark_live(intent.stage, &format!("host-{}", intent.stage), now)
        .unwrap();
    intent.stage
}

fn secs(kind: ByKind) -> (u64, u64, u64) {
    (kind.viewers / S, kind.hosts / S, kind.replicas / S)
}

/// Two seats per stage, leases of 60 s. By hand, read at T0 + 100 s:
///
/// | who | on | from | to | seconds |
/// |---|---|---|---|---|
/// | viewer a | stage 1 | 0 | 60 (lapses, never renewed) | 60 |
/// | viewer b | stage 1 | 10 | 40 (leaves) | 30 |
/// | viewer c | stage 2 | 30 | still seated (renewed at 80) | 70 |
/// | host | stage 1 | 0 | still on | 100 |
/// | host | stage 2 | 20 | 70 (stops publishing) | 50 |
///
/// Viewers 160 s, host 150 s: 310 participant-seconds, at 0.072 USD per participant-hour
/// 310 × 20 = 6,200 micro-dollars; now one viewer and one host: 144,000 micro-dollars an hour.
#[test]
fn participant_time_and_cost_match_a_hand_computation() {
    let mut pool = Pool::new("show", settings(2), T0).unwrap();
    let mut store = Store::default();
    let one = live(&mut pool, T0);
    pool.assign("a", T0, &rnd(1)).unwrap();
    let b = pool.assign("b", T0 + 10 * S, &rnd(2)).unwrap();
    let two = live(&mut pool, T0 + 20 * S);
    let c = pool.assign("c", T0 + 30 * S, &rnd(3)).unwrap();
    assert_eq!(c.stage, two, "stage 1 is full");
    assert!(pool.leave(&b.lease_id, T0 + 40 * S));
    pool.host_unpublished(two, T0 + 70 * S).unwrap();
    pool.heartbeat(&c.lease_id, T0 + 80 * S).unwrap();
    store.apply(&mut pool);

    let now = T0 + 100 * S;
    let meter = pool.meter(now);
    assert_eq!(secs(meter.participant_ms), (160, 150, 0));
    assert_eq!(
        meter.participants,
        ByKind {
            viewers: 1,
            hosts: 1,
            replicas: 0
        }
    );
    assert_eq!(meter.cost_micro_usd, 6_200);
    assert_eq!(meter.cost_micro_usd_per_hour, 144_000);

    let stages = pool.stage_meters(now);
    assert_eq!(secs(stages[&one].participant_ms), (90, 100, 0));
    assert_eq!(secs(stages[&two].participant_ms), (70, 50, 0));
    assert_eq!(stages[&one].participants.total(), 1, "the host alone");
    assert_eq!(stages[&two].participants.total(), 1, "c alone");

    // The snapshot carries the same figures, and the prices.
    let snap = pool.snapshot_view(now);
    assert_eq!(snap.meter, meter);
    assert_eq!(snap.prices, Prices::default());

    // Restarted from its stored rows, the pool meters the same, and goes on from there.
    let rebuilt = store.rebuild(settings(2));
    assert_eq!(rebuilt.meter(now), meter);
    assert_eq!(rebuilt.stage_meters(now), stages);
    let later = rebuilt.meter(now + 10 * S);
    // +10 s of c and +10 s of the host on stage 1.
    assert_eq!(secs(later.participant_ms), (170, 160, 0));
}

#[test]
fn a_stage_deleted_and_forgotten_keeps_its_time_in_the_total() {
    let mut pool = Pool::new("show", settings(1), T0).unwrap();
    let first = live(&mut pool, T0);
    let mut stages = Vec::new();
    for i in 0..40u64 {
        stages.push(live(&mut pool, T0 + i * S));
    }
    // Every extra stage: host from its creation (i s) until it leaves to let the stage be
    // deleted (100 + i s): 100 s each.
    for (i, id) in stages.iter().enumerate() {
        let at = T0 + (100 + i as u64) * S;
        pool.drain(*id, at).unwrap();
        pool.host_unpublished(*id, at).unwrap();
        pool.request_delete(*id, at).unwrap();
        pool.deleted(*id, at).unwrap();
    }
    let now = T0 + 200 * S;
    assert!(
        pool.stage(stages[0]).is_none(),
        "the oldest deleted stages are forgotten"
    );
    let meter = pool.meter(now);
    // 40 stages × 100 s, and the first stage's 200 s.
    assert_eq!(secs(meter.participant_ms), (0, 4_200, 0));
    assert_eq!(meter.participants.hosts, 1);
    assert!(pool.stage(first).is_some());
}

#[test]
fn custom_prices_price_each_kind() {
    let prices = Prices::parse(Some("viewer=0.01,host=1")).unwrap();
    let mut pool = Pool::new(
        "show",
        PoolSettings {
            prices,
            ..settings(10)
        },
        T0,
    )
    .unwrap();
    live(&mut pool, T0);
    for i in 0..3 {
        pool.assign(&format!("v{i}"), T0, &rnd(i)).unwrap();
    }
    // Half an hour: 3 × 0.5 viewer-hours at 0.01, 0.5 host-hours at 1 USD.
    let meter = pool.meter(T0 + HOUR_MS / 2);
    assert_eq!(meter.cost_micro_usd, 15_000 + 500_000);
    assert_eq!(meter.cost_micro_usd_per_hour, 3 * 10_000 + 1_000_000);
}
