//! When a pool next needs to act, and when a viewer it refused should come back.
//!
//! Like `quinn-proto`'s `poll_timeout`, these are pure functions of the pool's state and
//! `now`: the Durable Object sets its alarm to [`next_wake`]'s instant after every change and
//! calls its maintenance (expired leases, scale-down, stale creates, registration) when it
//! fires; it never re-arms on a guess of its own.

use crate::pool::{Millis, Pool};

/// The longest a pool that has anything to tidy sleeps: the pace of scale-down, of resolving
/// stale creates and of retrying a lost registration.
pub const MAINTENANCE_INTERVAL_MS: Millis = 15_000;

/// The shortest a pool sleeps between two maintenance runs, however soon a lease lapses
/// (leases renewed by their heartbeats would otherwise wake it at every renewal).
pub const MIN_ALARM_GAP_MS: Millis = 1_000;

/// The `Retry-After` (seconds) of a viewer refused because the region's IVS quota is used
/// up: seats free as viewers leave, and idle grants of other pools come back within
/// [`TIGHT_TRIM_MS`].
pub const REGION_QUOTA_RETRY_AFTER_SECS: u32 = 5;

/// How soon a pool in a tight region gives idle subscriptions back (see
/// [`crate::ledger::subscription_target`]).
pub const TIGHT_TRIM_MS: Millis = 2_000;

/// When the pool next needs its maintenance, or `None` when nothing can change without a
/// request: no viewers, no create in flight, no stage beyond its minimum (none at all once
/// the broadcast ended: they are all to be deleted), the Registry lists it (`registered`),
/// and no grant of the region's quotas to renew.
///
/// The instant is at most [`MAINTENANCE_INTERVAL_MS`] away, earlier when a lease lapses
/// sooner (at least [`MIN_ALARM_GAP_MS`] away), when the quota grant is due for renewal, or
/// within [`TIGHT_TRIM_MS`] when the region is tight and the pool holds idle subscriptions.
pub fn next_wake(pool: &Pool, registered: bool, now: Millis) -> Option<Millis> {
    let load = pool.load_summary();
    let keep = if pool.is_ended() {
        0
    } else {
        pool.settings().min_stages
    };
    let hold = pool.quota_hold().filter(|h| !h.held.is_zero());
    let tidying = !registered
        || pool.viewers() > 0
        || load.creating > 0
        || load.warming + load.live + load.draining > keep
        || hold.is_some();
    if !tidying {
        return None;
    }
    let interval = now + MAINTENANCE_INTERVAL_MS;
    let mut at = match pool.next_expiry() {
        Some(lapse) => lapse.max(now + MIN_ALARM_GAP_MS).min(interval),
        None => interval,
    };
    if let Some(hold) = hold {
        at = at.min(hold.renew_at.max(now + MIN_ALARM_GAP_MS));
        if hold.tight && hold.held.subscriptions > pool.quota_in_use().subscriptions {
            at = at.min(now + TIGHT_TRIM_MS);
        }
    }
    Some(at)
}

/// When the next stage being created can come at the earliest: `None` when one of the
/// `creating` stages is already calling IVS (or asking for its slot), else the earliest of
/// the `slots` (in the account-wide budget) the creates wait for.
pub fn next_create_at(
    creating: u32,
    slots: impl IntoIterator<Item = Millis>,
    now: Millis,
) -> Option<Millis> {
    let mut waiting = 0usize;
    let mut earliest: Option<Millis> = None;
    for at in slots.into_iter().filter(|at| *at > now) {
        waiting += 1;
        earliest = Some(earliest.map_or(at, |e| e.min(at)));
    }
    if waiting < creating as usize {
        return None;
    }
    earliest
}

/// The `Retry-After` (seconds) for a viewer refused for want of a seat: when the next stage
/// being created may be made (`next_create_at`), at least a second; five when the pool is at
/// its maximum of stages with none coming.
pub fn retry_after_secs(pool: &Pool, next_create_at: Option<Millis>, now: Millis) -> u32 {
    let load = pool.load_summary();
    let at_max = load.creating == 0 && load.existing() >= pool.settings().max_stages;
    let mut retry_ms: Millis = if at_max { 5_000 } else { 1_000 };
    if let Some(at) = next_create_at {
        retry_ms = retry_ms.max(at.saturating_sub(now));
    }
    retry_ms.div_ceil(1000).max(1) as u32
}

/// The `Retry-After` (seconds) for a viewer whose client holds its limit of seats: by then
/// one of them has lapsed unless it was renewed (a lease's time to live).
pub fn seat_limit_retry_after_secs(pool: &Pool) -> u32 {
    (pool.settings().lease_ttl_ms / 1000).max(1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{JoinRequest, PoolSettings, StageEndpoints, LEASE_RANDOM_BYTES};

    const T0: Millis = 1_764_160_000_000;

    fn pool(min_stages: u32, max_stages: u32, lease_ttl_ms: Millis) -> Pool {
        let settings = PoolSettings {
            min_stages,
            max_stages,
            lease_ttl_ms,
            ..PoolSettings::default()
        };
        Pool::new("b", settings, T0).unwrap()
    }

    fn add_stage(pool: &mut Pool, n: u32) {
        let intent = pool.begin_create(T0).unwrap();
        let arn = format!("arn:aws:ivs:us-east-1:123456789012:stage/abcdEFGH{n:04}");
        pool.created(intent.stage, &arn, StageEndpoints::default(), T0)
            .unwrap();
    }

    /// A pool (at most 5 stages, one at least) with `stages` created stages.
    fn pool_of(stages: u32, lease_ttl_ms: Millis) -> Pool {
        let mut p = pool(1, 5, lease_ttl_ms);
        for n in 0..stages {
            add_stage(&mut p, n);
        }
        p
    }

    fn seat(pool: &mut Pool, user: &str, now: Millis) {
        let mut random = [7u8; LEASE_RANDOM_BYTES];
        random[..user.len()].copy_from_slice(user.as_bytes());
        let req = JoinRequest {
            user_id: user,
            lease_id: None,
            client: None,
            moving: false,
        };
        pool.join(&req, now, &random).unwrap();
    }

    #[test]
    fn an_idle_registered_pool_sleeps() {
        assert_eq!(next_wake(&pool_of(1, 60_000), true, T0), None);
    }

    #[test]
    fn an_unregistered_pool_retries_at_the_interval() {
        let p = pool_of(1, 60_000);
        assert_eq!(next_wake(&p, false, T0), Some(T0 + MAINTENANCE_INTERVAL_MS));
    }

    #[test]
    fn a_create_in_flight_or_a_stage_beyond_the_minimum_wakes_it() {
        let mut p = pool_of(1, 60_000);
        p.begin_create(T0).unwrap();
        assert_eq!(next_wake(&p, true, T0), Some(T0 + MAINTENANCE_INTERVAL_MS));
        let p = pool_of(2, 60_000);
        assert_eq!(next_wake(&p, true, T0), Some(T0 + MAINTENANCE_INTERVAL_MS));
    }

    #[test]
    fn viewers_wake_it_at_most_an_interval_away() {
        let mut p = pool_of(1, 60_000);
        seat(&mut p, "alice", T0);
        assert_eq!(next_wake(&p, true, T0), Some(T0 + MAINTENANCE_INTERVAL_MS));
    }

    #[test]
    fn a_short_lease_wakes_it_when_it_lapses() {
        let mut p = pool_of(1, 4_000);
        seat(&mut p, "alice", T0);
        assert_eq!(next_wake(&p, true, T0), Some(T0 + 4_000));
        // Never sooner than the minimum gap, even for a lease already lapsed.
        assert_eq!(
            next_wake(&p, true, T0 + 10_000),
            Some(T0 + 10_000 + MIN_ALARM_GAP_MS)
        );
    }

    #[test]
    fn the_wake_is_never_in_the_past() {
        let mut p = pool_of(1, 2_000);
        seat(&mut p, "alice", T0);
        seat(&mut p, "bob", T0 + 500);
        for now in (T0..T0 + 40_000).step_by(700) {
            if let Some(at) = next_wake(&p, false, now) {
                assert!(at >= now + MIN_ALARM_GAP_MS, "{at} at {now}");
                assert!(at <= now + MAINTENANCE_INTERVAL_MS, "{at} at {now}");
            }
        }
    }

    #[test]
    fn next_create_is_unknown_while_a_create_calls_ivs() {
        // Two creating, one waiting for its slot: the other is calling IVS now.
        assert_eq!(next_create_at(2, [T0 + 800], T0), None);
        // Both waiting: the earlier slot.
        assert_eq!(next_create_at(2, [T0 + 800, T0 + 300], T0), Some(T0 + 300));
        // A slot already passed counts as calling.
        assert_eq!(next_create_at(2, [T0 + 800, T0 - 1], T0), None);
        // Nothing being created.
        assert_eq!(next_create_at(0, [], T0), None);
    }

    #[test]
    fn retry_after_follows_the_next_slot() {
        let p = pool_of(1, 60_000);
        assert_eq!(retry_after_secs(&p, None, T0), 1);
        assert_eq!(retry_after_secs(&p, Some(T0 + 200), T0), 1);
        assert_eq!(retry_after_secs(&p, Some(T0 + 2_001), T0), 3);
        assert_eq!(retry_after_secs(&p, Some(T0 - 5_000), T0), 1);
    }

    #[test]
    fn a_client_at_its_limit_comes_back_after_a_lease_time() {
        assert_eq!(seat_limit_retry_after_secs(&pool_of(1, 60_000)), 60);
        assert_eq!(seat_limit_retry_after_secs(&pool_of(1, 300)), 1);
    }

    #[test]
    fn retry_after_is_longer_at_the_maximum_of_stages() {
        let mut p = pool(1, 2, 60_000);
        add_stage(&mut p, 0);
        add_stage(&mut p, 1);
        assert_eq!(retry_after_secs(&p, None, T0), 5);
        // A stage being created at the maximum: back when it may come.
        let mut p = pool(1, 2, 60_000);
        add_stage(&mut p, 0);
        p.begin_create(T0).unwrap();
        assert_eq!(retry_after_secs(&p, None, T0), 1);
        assert_eq!(retry_after_secs(&p, Some(T0 + 7_500), T0), 8);
    }
}
