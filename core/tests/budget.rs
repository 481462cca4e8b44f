//! The slot schedule of the account-wide IVS budget: unit and property tests.

use proptest::prelude::*;
use stagefan_core::budget::*;
use stagefan_core::config::Config;
use stagefan_core::ivs::Operation;

const T0: u64 = 1_764_160_000_000;

/// Most slots in any half-open window `[t, t + len)`.
fn max_in_window(slots: &[u64], len: u64) -> usize {
    let mut sorted = slots.to_vec();
    sorted.sort_unstable();
    (0..sorted.len())
        .map(|i| {
            sorted[i..]
                .iter()
                .take_while(|s| **s < sorted[i] + len)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn ivs_rate_burst_then_a_window_later() {
    let rate = SlotRate::new(5, 5, 100);
    let mut s = SlotSchedule::new();
    let slots: Vec<u64> = (0..12).map(|_| s.reserve(&rate, T0)).collect();
    // A burst of 5 (1 ms apart), the next 5 one window (1.1 s) later, and so on.
    assert_eq!(&slots[..5], &[T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]);
    assert_eq!(
        &slots[5..10],
        &[T0 + 1100, T0 + 1101, T0 + 1102, T0 + 1103, T0 + 1104]
    );
    assert_eq!(slots[10], T0 + 2200);
    assert_eq!(max_in_window(&slots, 1_000), 5);
    assert_eq!(max_in_window(&slots, 1_100), 5);
}

#[test]
fn without_burst_slots_are_spread_at_one_over_the_rate() {
    let rate = SlotRate::new(5, 1, 0);
    let mut s = SlotSchedule::new();
    let slots: Vec<u64> = (0..6).map(|_| s.reserve(&rate, T0)).collect();
    assert_eq!(
        slots,
        [T0, T0 + 200, T0 + 400, T0 + 600, T0 + 800, T0 + 1000]
    );
}

#[test]
fn callers_get_distinct_ordered_slots() {
    let rate = SlotRate::new(5, 5, 100);
    let mut s = SlotSchedule::new();
    // Callers asking with clocks that disagree (or go backwards) still get ordered slots.
    let a = s.reserve(&rate, T0 + 50);
    let b = s.reserve(&rate, T0);
    let c = s.reserve(&rate, T0 + 10);
    assert!(a < b && b < c, "{a} {b} {c}");
}

#[test]
fn idle_time_resets_and_unused_slots_expire() {
    let rate = SlotRate::new(5, 5, 100);
    let mut s = SlotSchedule::new();
    for _ in 0..20 {
        s.reserve(&rate, T0);
    }
    // 20 slots reserved (and perhaps never used) reach 3.3 s ahead; they constrain the
    // schedule only until their windows have passed.
    let last = s.recent().last().unwrap();
    assert_eq!(last, T0 + 3 * 1100 + 4);
    let later = last + 1100;
    assert_eq!(s.next_slot(&rate, later), later);
    let burst: Vec<u64> = (0..5).map(|_| s.reserve(&rate, later)).collect();
    assert_eq!(burst, [later, later + 1, later + 2, later + 3, later + 4]);
    // A caller during the tail of an old window waits only for that window.
    let mut t = SlotSchedule::new();
    let first = t.reserve(&rate, T0);
    assert_eq!(t.next_slot(&rate, T0 + 5_000), T0 + 5_000);
    assert_eq!(first, T0);
}

#[test]
fn a_throttle_pushes_the_schedule_one_window_back() {
    let rate = SlotRate::new(5, 5, 100);
    let mut s = SlotSchedule::new();
    s.reserve(&rate, T0);
    s.throttled(&rate, T0 + 300);
    assert_eq!(s.next_slot(&rate, T0 + 300), T0 + 300 + 1100);
    assert_eq!(s.reserve(&rate, T0 + 400), T0 + 1400);
}

#[test]
fn a_schedule_survives_serialization() {
    let rate = SlotRate::new(5, 5, 100);
    let mut s = SlotSchedule::new();
    for _ in 0..7 {
        s.reserve(&rate, T0);
    }
    let back: SlotSchedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.next_slot(&rate, T0), s.next_slot(&rate, T0));
}

#[test]
fn rates_come_from_the_configuration() {
    let c = Config::default();
    assert_eq!(c.budget, BudgetConfig::default());
    let create = c.budget.rate(Operation::CreateStage).unwrap();
    assert_eq!(
        (create.per_second, create.burst, create.guard_ms),
        (5, 5, 100)
    );
    // IVS's documented rates: 50 CreateParticipantToken per second, 5 for the others.
    for op in BudgetConfig::OPERATIONS {
        let expected = if op == Operation::CreateParticipantToken {
            50
        } else {
            5
        };
        assert_eq!(c.budget.rate(op).unwrap().per_second, expected, "{op}");
    }
    // A create's lookup by name pages ListStages within the budget (found by `sim/`).
    assert!(BudgetConfig::OPERATIONS.contains(&Operation::ListStages));
    assert_eq!(c.budget.rate(Operation::ListParticipants), None);

    let vars = |pairs: &[(&str, &str)]| {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&map)
    };
    let c = vars(&[
        ("IVS_CREATE_STAGE_TPS", "3"),
        ("IVS_DELETE_STAGE_TPS", "4"),
        ("IVS_REPLICATION_TPS", "2"),
        ("IVS_BUDGET_GUARD_MS", "0"),
    ])
    .unwrap();
    assert_eq!(c.budget.rate(Operation::CreateStage).unwrap().per_second, 3);
    assert_eq!(c.budget.rate(Operation::DeleteStage).unwrap().per_second, 4);
    assert_eq!(
        c.budget
            .rate(Operation::StopParticipantReplication)
            .unwrap()
            .per_second,
        2
    );
    assert_eq!(c.budget.guard_ms, 0);
    for (name, value, says) in [
        ("IVS_CREATE_STAGE_TPS", "0", "between 1 and 100, got 0"),
        ("IVS_DELETE_STAGE_TPS", "five", "whole number"),
        ("IVS_REPLICATION_TPS", "101", "between 1 and 100"),
        (
            "IVS_BUDGET_GUARD_MS",
            "-5",
            "whole number between 0 and 1000",
        ),
        ("IVS_BUDGET_GUARD_MS", "1001", "between 0 and 1000"),
    ] {
        let e = vars(&[(name, value)]).unwrap_err();
        assert_eq!(e.field, name);
        assert!(e.problem.contains(says), "{name}={value}: {e}");
    }
}

proptest! {
    /// However callers interleave (each with its own `now`, not always increasing), slots are
    /// distinct and ordered, never before the caller's `now`, at most `per_second` in any
    /// window of 1 s + guard, and any `burst + 1` consecutive slots span at least
    /// `burst / rate` (+ guard share).
    #[test]
    fn slots_never_exceed_the_rate(
        per_second in 1u32..12,
        burst in 1u32..12,
        guard_ms in 0u64..300,
        steps in prop::collection::vec((0u64..600, 0u64..50), 1..150),
    ) {
        let rate = SlotRate::new(per_second, burst, guard_ms);
        let mut s = SlotSchedule::new();
        let mut clock = T0;
        let mut slots: Vec<u64> = Vec::new();
        for (advance, skew) in steps {
            clock += advance;
            // A caller whose clock is a little behind.
            let now = clock.saturating_sub(skew);
            let slot = s.reserve(&rate, now);
            prop_assert!(slot >= now, "slot {} before now {}", slot, now);
            if let Some(&prev) = slots.last() {
                prop_assert!(slot > prev, "slot {} not after {}", slot, prev);
            }
            slots.push(slot);
        }
        let n = rate.per_second as usize;
        prop_assert!(max_in_window(&slots, rate.window_ms()) <= n);
        prop_assert!(max_in_window(&slots, 1_000) <= n);
        let b = rate.burst as usize;
        for w in slots.windows(b + 1) {
            let span = w[b] - w[0];
            prop_assert!(span >= rate.burst_span_ms(), "{} slots in {} ms", b + 1, span);
            prop_assert!(span * u64::from(rate.per_second) >= u64::from(rate.burst) * 1_000);
        }
    }

    /// Under steady demand the schedule hands out its whole rate: n slots asked at once take
    /// no longer than the windows they need.
    #[test]
    fn slots_are_not_wasted(per_second in 1u32..12, guard_ms in 0u64..300, n in 1usize..60) {
        let rate = SlotRate::new(per_second, per_second, guard_ms);
        let mut s = SlotSchedule::new();
        let slots: Vec<u64> = (0..n).map(|_| s.reserve(&rate, T0)).collect();
        let windows = ((n - 1) / per_second as usize) as u64;
        let last = *slots.last().unwrap();
        prop_assert!(last <= T0 + windows * rate.window_ms() + per_second as u64, "last slot {} ms after", last - T0);
    }
}
