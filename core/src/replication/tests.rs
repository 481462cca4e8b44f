use super::*;
use crate::modes::FanoutMode;
use crate::pool::{Observation, PoolSettings, StageEndpoints, StageObservation, StageState};

const T0: Millis = 1_764_160_000_000;

fn arn(n: u64) -> String {
    format!("arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGH{n:04}")
}

/// A replicate-mode pool with `n` warming stages (one origin per six).
fn pool(n: u64) -> Pool {
    let settings = PoolSettings {
        fanout: FanoutMode::Replicate,
        max_stages: 100,
        ..PoolSettings::default()
    };
    let mut pool = Pool::new("b", settings, T0).unwrap();
    for i in 0..n {
        let intent = pool.begin_create(T0).unwrap();
        pool.created(intent.stage, &arn(i), StageEndpoints::default(), T0)
            .unwrap();
    }
    pool
}

fn see(pool: &mut Pool, replica: StageId, pid: &str, at: Millis) {
    let stage_arn = pool.stage(replica).unwrap().arn.clone().unwrap();
    pool.observe(
        &Observation {
            observed_at: at,
            stages: vec![StageObservation {
                stage_arn,
                publishers: vec![pid.into()],
                subscribers: vec![],
            }],
            ..Default::default()
        },
        at,
    );
}

#[test]
fn nothing_is_started_before_the_host_publishes_on_the_origin() {
    let p = pool(3);
    let mut t = ReplicationTracker::default();
    assert_eq!(t.plan(&p, T0), Plan::default());
    assert!(t.is_idle());
}

#[test]
fn start_then_verify_until_the_replica_is_seen() {
    let mut p = pool(3);
    let origin = p.publisher_stages()[0].id;
    p.mark_live(origin, "host", T0).unwrap();
    let mut t = ReplicationTracker::default();
    let plan = t.plan(&p, T0);
    assert_eq!(plan.steps.len(), 2, "both replicas of the origin");
    for s in &plan.steps {
        assert!(matches!(s, Step::Start(r) if r.origin == origin));
        t.started(s.replication().replica, T0);
    }
    // Not due before the check interval.
    let plan = t.plan(&p, T0 + 100);
    assert!(plan.steps.is_empty());
    assert_eq!(plan.next_at, Some(T0 + VERIFY_INTERVAL_MS));
    let plan = t.plan(&p, T0 + VERIFY_INTERVAL_MS);
    assert!(plan.steps.iter().all(|s| matches!(s, Step::Verify(_))));
    let first = plan.steps[0].replication().replica;
    let second = plan.steps[1].replication().replica;
    // The first replica shows up; it goes live and needs nothing more.
    see(&mut p, first, "host", T0 + 400);
    assert_eq!(p.stage(first).unwrap().state, StageState::Live);
    t.not_seen(second, T0 + 400);
    let plan = t.plan(&p, T0 + 400 + VERIFY_INTERVAL_MS);
    assert_eq!(plan.steps, vec![Step::Verify(p.replications()[1].clone())]);
    assert_eq!(plan.steps[0].replication().replica, second);
    see(&mut p, second, "host", T0 + 800);
    assert_eq!(t.plan(&p, T0 + 900), Plan::default());
    assert!(t.is_idle());
}

#[test]
fn failed_starts_back_off_exponentially_up_to_the_cap() {
    let mut p = pool(2);
    let origin = p.publisher_stages()[0].id;
    p.mark_live(origin, "host", T0).unwrap();
    let mut t = ReplicationTracker::default();
    let mut now = T0;
    let mut waits = Vec::new();
    for _ in 0..10 {
        let plan = t.plan(&p, now);
        assert_eq!(plan.steps.len(), 1);
        let replica = plan.steps[0].replication().replica;
        t.start_failed(replica, now, None);
        let next = t.plan(&p, now).next_at.unwrap();
        waits.push(next - now);
        now = next;
    }
    assert_eq!(&waits[..4], &[500, 1_000, 2_000, 4_000]);
    assert!(waits.iter().all(|&w| w <= MAX_BACKOFF_MS));
    assert_eq!(*waits.last().unwrap(), MAX_BACKOFF_MS);
    // Throttling says when: never sooner than the backoff, later if IVS asks.
    let replica = t.plan(&p, now).steps[0].replication().replica;
    t.start_failed(replica, now, Some(45_000));
    assert_eq!(t.plan(&p, now).next_at, Some(now + 45_000));
    assert_eq!(t.failures(replica), 11);
}

#[test]
fn a_replica_never_seen_is_started_again_and_a_new_host_id_starts_over() {
    let mut p = pool(2);
    let origin = p.publisher_stages()[0].id;
    p.mark_live(origin, "host-1", T0).unwrap();
    let mut t = ReplicationTracker::default();
    let replica = t.plan(&p, T0).steps[0].replication().replica;
    t.started(replica, T0);
    let mut now = T0;
    for _ in 0..MAX_CHECKS {
        now += VERIFY_INTERVAL_MS;
        assert!(matches!(t.plan(&p, now).steps[..], [Step::Verify(_)]));
        t.not_seen(replica, now);
    }
    assert!(matches!(t.plan(&p, now).steps[..], [Step::Start(_)]));
    t.started(replica, now);
    // The host reconnects with another participant id: start again at once, for it.
    p.mark_live(origin, "host-2", now + 1).unwrap();
    let plan = t.plan(&p, now + 1);
    assert!(matches!(&plan.steps[..],
        [Step::Start(r)] if r.host_participant_id.as_deref() == Some("host-2")));
}

#[test]
fn the_host_stopping_on_the_origin_or_a_drained_replica_cancels_pending_work() {
    let mut p = pool(3);
    let origin = p.publisher_stages()[0].id;
    p.mark_live(origin, "host", T0).unwrap();
    let mut t = ReplicationTracker::default();
    assert_eq!(t.plan(&p, T0).steps.len(), 2);
    let replicas: Vec<StageId> = p.replications().iter().map(|r| r.replica).collect();
    p.drain(replicas[1], T0 + 1).unwrap();
    assert_eq!(t.plan(&p, T0 + 2).steps.len(), 1);
    p.host_unpublished(origin, T0 + 3).unwrap();
    assert_eq!(t.plan(&p, T0 + 4), Plan::default());
    assert!(t.is_idle());
}

#[test]
fn a_new_origin_every_sixth_stage_gets_its_own_replications() {
    let mut p = pool(12);
    let origins: Vec<StageId> = p.publisher_stages().iter().map(|s| s.id).collect();
    assert_eq!(origins.len(), 2);
    p.mark_live(origins[0], "h1", T0).unwrap();
    p.mark_live(origins[1], "h2", T0).unwrap();
    let plan = ReplicationTracker::default().plan(&p, T0);
    assert_eq!(plan.steps.len(), 10);
    for o in &origins {
        let n = plan
            .steps
            .iter()
            .filter(|s| s.replication().origin == *o)
            .count();
        assert_eq!(
            n, 5,
            "at most 5 replicas per origin (IVS's per-participant limit)"
        );
    }
}

/// What a Durable Object restart does: only the stored rows survive (through JSON).
fn restart(
    t: &mut ReplicationTracker,
    stored: &mut BTreeMap<StageId, String>,
) -> ReplicationTracker {
    let changes = t.take_changes();
    for row in changes.upserted {
        stored.insert(row.replica, serde_json::to_string(&row).unwrap());
    }
    for id in changes.removed {
        stored.remove(&id);
    }
    ReplicationTracker::from_rows(
        stored
            .values()
            .map(|json| serde_json::from_str::<TrackedReplication>(json).unwrap()),
    )
}

#[test]
fn a_rebuilt_tracker_checks_the_replications_it_had_started_instead_of_starting_them_again() {
    let mut p = pool(3);
    let origin = p.publisher_stages()[0].id;
    p.mark_live(origin, "host", T0).unwrap();
    let mut t = ReplicationTracker::default();
    let plan = t.plan(&p, T0);
    let (first, second) = (
        plan.steps[0].replication().replica,
        plan.steps[1].replication().replica,
    );
    t.started(first, T0 + 10);
    t.start_failed(second, T0 + 10, None);
    let mut stored = BTreeMap::new();
    let mut rebuilt = restart(&mut t, &mut stored);
    assert_eq!(rebuilt.rows(), t.rows(), "every row survives");
    assert_eq!(rebuilt.started_at(first), Some(T0 + 10));
    assert_eq!(rebuilt.take_changes(), TrackerChanges::default());
    // Both due a while later: the started one is checked, the failed one started again.
    let plan = rebuilt.plan(&p, T0 + 5_000);
    assert_eq!(
        plan.steps,
        vec![
            Step::Verify(p.replications()[0].clone()),
            Step::Start(p.replications()[1].clone()),
        ]
    );
    // Without the rows (the tracker in memory only) both would be started again.
    let plan = ReplicationTracker::default().plan(&p, T0 + 5_000);
    assert!(plan.steps.iter().all(|s| matches!(s, Step::Start(_))));
}

#[test]
fn a_failed_start_keeps_its_backoff_across_a_restart() {
    let mut p = pool(2);
    let origin = p.publisher_stages()[0].id;
    p.mark_live(origin, "host", T0).unwrap();
    let mut t = ReplicationTracker::default();
    let replica = t.plan(&p, T0).steps[0].replication().replica;
    let mut now = T0;
    for _ in 0..3 {
        t.start_failed(replica, now, None);
        now = t.plan(&p, now).next_at.unwrap();
    }
    t.start_failed(replica, now, None);
    let due = t.plan(&p, now).next_at.unwrap();
    assert_eq!(due - now, 4_000);
    let mut rebuilt = restart(&mut t, &mut BTreeMap::new());
    assert_eq!(rebuilt.failures(replica), 4);
    // Not due again before the backoff that was running, after the restart too.
    let plan = rebuilt.plan(&p, now + 1);
    assert!(plan.steps.is_empty());
    assert_eq!(plan.next_at, Some(due));
    let plan = rebuilt.plan(&p, due);
    assert!(matches!(plan.steps[..], [Step::Start(_)]));
    rebuilt.start_failed(replica, due, None);
    assert_eq!(
        rebuilt.plan(&p, due).next_at,
        Some(due + 8_000),
        "the backoff goes on doubling"
    );
}

#[test]
fn a_row_for_an_earlier_host_connection_is_started_over_for_the_current_one() {
    let mut p = pool(2);
    let origin = p.publisher_stages()[0].id;
    p.mark_live(origin, "host-1", T0).unwrap();
    let mut t = ReplicationTracker::default();
    let replica = t.plan(&p, T0).steps[0].replication().replica;
    t.started(replica, T0);
    let mut stored = BTreeMap::new();
    let mut rebuilt = restart(&mut t, &mut stored);
    // While the Durable Object was gone the host page reconnected.
    p.mark_live(origin, "host-2", T0 + 1_000).unwrap();
    let plan = rebuilt.plan(&p, T0 + 1_000);
    assert!(matches!(&plan.steps[..],
        [Step::Start(r)] if r.host_participant_id.as_deref() == Some("host-2")));
    let changes = rebuilt.take_changes();
    assert_eq!(changes.upserted.len(), 1);
    assert_eq!(changes.upserted[0].participant, "host-2");
    assert_eq!(changes.upserted[0].started_at, None);
}

#[test]
fn changes_name_exactly_the_rows_to_write_and_to_delete() {
    let mut p = pool(3);
    let origin = p.publisher_stages()[0].id;
    p.mark_live(origin, "host", T0).unwrap();
    let mut t = ReplicationTracker::default();
    assert!(t.take_changes().is_empty());
    let plan = t.plan(&p, T0);
    let replicas: Vec<StageId> = plan.steps.iter().map(|s| s.replication().replica).collect();
    let changes = t.take_changes();
    assert_eq!(
        changes
            .upserted
            .iter()
            .map(|r| r.replica)
            .collect::<Vec<_>>(),
        replicas,
        "new rows: to be started"
    );
    assert!(changes
        .upserted
        .iter()
        .all(|r| r.started_at.is_none() && r.participant == "host"));
    // Planning again changes nothing stored.
    t.plan(&p, T0 + 1);
    assert!(t.take_changes().is_empty());
    t.started(replicas[0], T0 + 2);
    t.started(replicas[1], T0 + 2);
    assert_eq!(t.take_changes().upserted.len(), 2);
    // A check that misses is not worth a write; giving up on the checks is.
    t.not_seen(replicas[0], T0 + 300);
    assert!(t.take_changes().is_empty());
    for i in 1..MAX_CHECKS {
        t.not_seen(replicas[0], T0 + 300 + u64::from(i) * VERIFY_INTERVAL_MS);
    }
    let changes = t.take_changes();
    assert_eq!(changes.upserted.len(), 1);
    assert_eq!(changes.upserted[0].started_at, None, "to be started again");
    // The second replica shows up live: its row goes.
    see(&mut p, replicas[1], "host", T0 + 20_000);
    t.plan(&p, T0 + 20_000);
    assert_eq!(
        t.take_changes(),
        TrackerChanges {
            upserted: vec![],
            removed: vec![replicas[1]]
        }
    );
    // The host stops: every row goes.
    p.host_unpublished(origin, T0 + 21_000).unwrap();
    t.plan(&p, T0 + 21_000);
    assert_eq!(t.take_changes().removed, vec![replicas[0]]);
    assert!(t.is_idle());
}

#[test]
fn the_stored_row_is_camel_case_json() {
    let row = TrackedReplication {
        replica: StageId(7),
        participant: "host".into(),
        started_at: Some(T0),
        failures: 2,
        due_at: T0 + 300,
    };
    let json = serde_json::to_value(&row).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"replica": 7, "participant": "host", "startedAt": T0,
                           "failures": 2, "dueAt": T0 + 300})
    );
    assert_eq!(
        serde_json::from_value::<TrackedReplication>(json).unwrap(),
        row
    );
}
