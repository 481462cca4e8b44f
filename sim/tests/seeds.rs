//! The simulator's own tests: a short set of seeds keeps every invariant, one seed gives one
//! report byte for byte, and decisions broken on purpose (in the simulator, never in core)
//! are caught by the invariant they break.

use stagefan_sim::{run, Check, Faults, Scenario};

fn smoke(viewers: u32) -> Scenario {
    Scenario::named("smoke").expect("a preset").scaled(viewers)
}

#[test]
fn one_seed_gives_one_report_byte_for_byte() {
    let a = run(smoke(800), 7, Faults::default()).render();
    let b = run(smoke(800), 7, Faults::default()).render();
    assert_eq!(a, b);
    let c = run(smoke(800), 8, Faults::default()).render();
    assert_ne!(a, c, "another seed is another run");
    assert!(a.contains("seed: 7\n"));
    assert!(a.ends_with("sim: 800 viewers, 0 violations\n"), "{a}");
}

#[test]
fn a_short_set_of_seeds_keeps_every_invariant() {
    for seed in 1..=4 {
        let report = run(smoke(1_500), seed, Faults::default());
        assert_eq!(report.violations(), 0, "seed {seed}:\n{}", report.render());
        assert_eq!(report.arrived, 1_500);
        assert!(
            report.seated_viewers() > 1_200,
            "seed {seed}:\n{}",
            report.render()
        );
    }
}

#[test]
fn a_region_at_ivss_default_quotas_binds_without_a_violation() {
    let sc = Scenario::named("quota").expect("a preset").scaled(3_000);
    let report = run(sc, 11, Faults::default());
    assert_eq!(report.violations(), 0, "{}", report.render());
    assert!(
        report.refusals.get("region_quota").copied().unwrap_or(0) > 0,
        "the crowd is larger than the quota:\n{}",
        report.render()
    );
}

#[test]
fn an_assigner_that_ignores_capacity_is_caught() {
    let faults = Faults {
        ignore_capacity: true,
        ..Faults::default()
    };
    let report = run(smoke(3_000), 3, faults);
    let text = report.render();
    assert!(report.checks.count(Check::StageCapacity) > 0, "{text}");
    assert!(report.checks.count(Check::LoadsMatchIvs) > 0, "{text}");
    let first = report.checks.first(Check::StageCapacity).expect("reported");
    assert_eq!(first.seed, 3);
    assert!(text.contains("stage_capacity        BROKEN"), "{text}");
    assert!(text.contains("(t="), "{text}");
    assert!(!text.ends_with(" 0 violations\n"), "{text}");
}

#[test]
fn an_adapter_that_loses_lease_writes_is_caught_at_a_restart() {
    let faults = Faults {
        lose_lease_writes: true,
        ..Faults::default()
    };
    let report = run(smoke(1_500), 5, faults);
    assert!(
        report.checks.count(Check::SeatsAcrossRestart) > 0,
        "{}",
        report.render()
    );
}

#[test]
fn many_joins_from_one_address_are_refused_beyond_its_seat_limit() {
    let report = run(smoke(3_000), 2, Faults::default());
    assert_eq!(report.violations(), 0, "{}", report.render());
    let refused = report
        .refusals
        .get("client_seat_limit")
        .copied()
        .unwrap_or(0);
    // Two addresses make 30 joins each; 16 seats each at once at most.
    assert!(refused > 0, "{}", report.render());
    assert_eq!(report.hostile, 60);
}
