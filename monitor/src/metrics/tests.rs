use prometheus::IntCounter;

use super::pool::{advance_counter, ratio};
use super::*;

#[test]
fn a_pool_counter_is_mirrored_by_differences_and_a_recreated_pool_resets_it() {
    let c = IntCounter::new("c_total", "c").unwrap();
    let mut prev = 0;
    advance_counter(&c, &mut prev, 7);
    assert_eq!(c.get(), 7);
    advance_counter(&c, &mut prev, 7);
    advance_counter(&c, &mut prev, 12);
    assert_eq!(c.get(), 12);
    // The pool was recreated and counts from zero again.
    advance_counter(&c, &mut prev, 3);
    assert_eq!(c.get(), 3);
    assert_eq!(prev, 3);
}

#[test]
fn stage_labels_are_the_stage_id() {
    assert_eq!(
        stage_label("arn:aws:ivs:us-east-1:123456789012:stage/AbCdEfGhIjKl"),
        "AbCdEfGhIjKl"
    );
    assert_eq!(stage_label("no-slash"), "no-slash");
    assert_eq!(ratio(3, 0), 0.0);
    assert_eq!(ratio(25, 50), 0.5);
}

#[test]
fn every_family_has_help_and_the_prefix() {
    let m = Metrics::new().unwrap();
    m.rounds.finished(true, 0.1, 1.0);
    m.actions.set_orphans("us-east-1", 0);
    let text = m.encode();
    let mut families = 0;
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        families += 1;
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(name.starts_with("stagefan_"), "{name}");
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has HELP");
        if line.ends_with(" counter") {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
    assert!(families >= 5);
}
