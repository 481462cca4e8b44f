//! Assignments per second of the stage pool, natively, for 10, 100 and 1,000 stages.
//!
//! Run: `cargo run --release -p stagefan-core --example pool_bench`
//!
//! Two workloads per size: a join storm (every viewer new, until the pool is 90 % full) and a
//! steady churn (half full; each step one viewer leaves and one joins, so loads differ and the
//! least-loaded choice has work to do). Each assignment also pays for the change record the
//! Durable Object would write. Times come from `std::time::Instant`: this is an example, not
//! part of the pure core.

use std::time::Instant;

use stagefan_core::config::FanoutMode;
use stagefan_core::pool::{Pool, PoolSettings, StageEndpoints, LEASE_RANDOM_BYTES};

const T0: u64 = 1_764_160_000_000;

/// A small deterministic generator for lease-id bytes (xorshift64*), so no crate is needed.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> [u8; LEASE_RANDOM_BYTES] {
        let mut out = [0u8; LEASE_RANDOM_BYTES];
        for half in out.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            half.copy_from_slice(&self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out
    }
}

fn pool_with(stages: u32, capacity: u32) -> Pool {
    let settings = PoolSettings {
        capacity,
        min_stages: 1,
        max_stages: stages,
        lease_ttl_ms: 60_000,
        fanout: FanoutMode::MultiPublish,
        ..PoolSettings::default()
    };
    let mut pool = Pool::new("bench", settings, T0).expect("valid broadcast");
    for n in 0..stages {
        let id = pool.begin_create(T0).expect("below max").stage;
        let arn = format!("arn:aws:ivs:us-east-1:123456789012:stage/b{n:011}");
        pool.created(id, &arn, StageEndpoints::default(), T0)
            .expect("creating");
        pool.mark_live(id, "host", T0).expect("warming");
    }
    pool.take_changes();
    pool
}

/// Fills fresh pools to 90 % with new viewers, over and over until `total` joins are timed.
fn storm(stages: u32, capacity: u32, total: u64) -> (u64, f64) {
    let mut rng = Bytes(0x9E37_79B9_7F4A_7C15);
    let per_pool = u64::from(stages) * u64::from(capacity) * 9 / 10;
    let users: Vec<String> = (0..per_pool).map(|v| format!("viewer-{v}")).collect();
    let mut joins = 0;
    let mut secs = 0.0;
    while joins < total {
        let mut pool = pool_with(stages, capacity);
        let start = Instant::now();
        for (i, user) in users.iter().enumerate() {
            pool.assign(user, T0 + i as u64 / 1000, &rng.next())
                .expect("seat");
            std::hint::black_box(pool.take_changes());
        }
        secs += start.elapsed().as_secs_f64();
        joins += per_pool;
    }
    (joins, joins as f64 / secs)
}

fn churn(stages: u32, capacity: u32, steps: u64) -> f64 {
    let mut pool = pool_with(stages, capacity);
    let mut rng = Bytes(0xD1B5_4A32_D192_ED03);
    let half = u64::from(stages) * u64::from(capacity) / 2;
    let mut leases = Vec::with_capacity(half as usize);
    for v in 0..half {
        let a = pool
            .assign(&format!("warm-{v}"), T0, &rng.next())
            .expect("seat");
        leases.push(a.lease_id);
    }
    pool.take_changes();
    let users: Vec<String> = (0..steps).map(|v| format!("churn-{v}")).collect();
    let start = Instant::now();
    for (i, user) in users.iter().enumerate() {
        let now = T0 + 1 + i as u64 / 1000;
        let slot = (rng.0 % half) as usize;
        pool.leave(&leases[slot], now);
        leases[slot] = pool.assign(user, now, &rng.next()).expect("seat").lease_id;
        std::hint::black_box(pool.take_changes());
    }
    steps as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    println!("stage pool, native, one thread: assignments per second");
    println!(
        "{:>7} {:>9} {:>12} {:>15} {:>21}",
        "stages", "capacity", "storm joins", "storm assign/s", "churn (leave+join)/s"
    );
    let mut rates = Vec::new();
    for stages in [10u32, 100, 1000] {
        let capacity = 50;
        let (joins, storm_rate) = storm(stages, capacity, 300_000);
        let churn_rate = churn(stages, capacity, 300_000);
        rates.push(storm_rate);
        println!("{stages:>7} {capacity:>9} {joins:>12} {storm_rate:>15.0} {churn_rate:>21.0}");
    }
    println!(
        "storm rate, 10 stages / 1000 stages: {:.2}x",
        rates[0] / rates[rates.len() - 1]
    );
}
