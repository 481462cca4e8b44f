use super::*;

fn spec(v: Value) -> FaultSpec {
    FaultSpec::from_json(&v).unwrap()
}

fn refused(v: Value) -> String {
    FaultSpec::from_json(&v).unwrap_err().field
}

#[test]
fn specs_are_read_with_their_defaults() {
    let s = spec(json!({"operation": "CreateStage", "kind": "error"}));
    assert_eq!(s.operation, Operation::CreateStage);
    assert_eq!(
        (s.kind, s.status, s.count, s.skip),
        (FaultKind::Error, Some(500), 1, 0)
    );
    let s = spec(json!({"operation": "ListStages", "kind": "delay", "delayMs": 250, "count": 3}));
    assert_eq!(
        (s.delay, s.count, s.status),
        (Duration::from_millis(250), 3, None)
    );
    let s = spec(json!({"operation": "CreateStage", "kind": "lost_after_effect", "status": 503}));
    assert_eq!(s.status, Some(503));
    let s = spec(json!({"operation": "CreateStage", "kind": "lost_after_effect", "cut": true}));
    assert!(s.cut && s.status.is_none());
}

#[test]
fn bad_specs_name_their_field() {
    assert_eq!(refused(json!([1])), "");
    assert_eq!(refused(json!({"kind": "error"})), "operation");
    assert_eq!(
        refused(json!({"operation": "Nope", "kind": "error"})),
        "operation"
    );
    assert_eq!(
        refused(json!({"operation": 5, "kind": "error"})),
        "operation"
    );
    assert_eq!(refused(json!({"operation": "CreateStage"})), "kind");
    assert_eq!(
        refused(json!({"operation": "CreateStage", "kind": "boom"})),
        "kind"
    );
    let op = "CreateStage";
    assert_eq!(
        refused(json!({"operation": op, "kind": "error", "status": 200})),
        "status"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "error", "status": 70000})),
        "status"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "lost_after_effect", "status": 404})),
        "status"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "lost_after_effect", "cut": true, "status": 500})),
        "status"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "throttle", "status": 429})),
        "status"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "delay"})),
        "delayMs"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "delay", "delayMs": 0})),
        "delayMs"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "delay", "delayMs": 600_001})),
        "delayMs"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "error", "count": 0})),
        "count"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "error", "count": -1})),
        "count"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "error", "count": 1.5})),
        "count"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "error", "skip": "2"})),
        "skip"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "error", "cut": true})),
        "cut"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "lost_after_effect", "cut": 1})),
        "cut"
    );
    assert_eq!(
        refused(json!({"operation": op, "kind": "error", "times": 2})),
        "times"
    );
}

#[test]
fn rules_skip_then_act_count_times_then_go() {
    let faults = Faults::default();
    faults
        .add(spec(
            json!({"operation": "CreateStage", "kind": "throttle", "skip": 1, "count": 2}),
        ))
        .unwrap();
    faults
        .add(spec(
            json!({"operation": "CreateStage", "kind": "error", "status": 503}),
        ))
        .unwrap();
    // Another operation is never touched.
    assert!(!faults.take(Operation::GetStage).is_some());
    // Call 1: the throttle rule lets it through, the error rule acts.
    let first = faults.take(Operation::CreateStage);
    assert_eq!(first.refusal().map(|e| e.status), Some(503));
    // Calls 2 and 3: throttled; then nothing is left.
    for _ in 0..2 {
        let e = faults.take(Operation::CreateStage).refusal().unwrap();
        assert_eq!((e.kind, e.status), (ErrorKind::Throttling, 429));
    }
    assert!(faults.rules().is_empty());
    assert!(!faults.take(Operation::CreateStage).is_some());
    assert_eq!(faults.fired()["CreateStage"]["throttle"], 2);
    assert_eq!(faults.fired()["CreateStage"]["error"], 1);
}

#[test]
fn a_lost_answer_replaces_the_result_and_clear_empties() {
    let faults = Faults::default();
    faults
        .add(spec(
            json!({"operation": "DeleteStage", "kind": "lost_after_effect", "count": 5}),
        ))
        .unwrap();
    let lost = faults.take(Operation::DeleteStage);
    assert!(lost.refusal().is_none(), "the operation still runs");
    let e = lost.after_effect(Ok::<_, IvsError>(7)).unwrap_err();
    assert_eq!((e.kind, e.status), (ErrorKind::InternalServer, 500));
    assert_eq!(faults.rules()[0].remaining, 4);
    assert_eq!(faults.clear(), 1);
    assert!(faults.rules().is_empty());
    // Without a rule the result passes unchanged.
    assert_eq!(
        Injection::default().after_effect(Ok::<_, IvsError>(7)),
        Ok(7)
    );
}

#[test]
fn rules_are_bounded() {
    let faults = Faults::default();
    let s = spec(json!({"operation": "GetStage", "kind": "error"}));
    for _ in 0..MAX_RULES {
        faults.add(s.clone()).unwrap();
    }
    assert_eq!(faults.add(s), Err(AddError::TooMany));
}
