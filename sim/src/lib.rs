//! stagefan's simulator (issue #11): the real `stagefan_core` (pool, policy, budget, ledger,
//! the pool's quota and life, its rows) driven by a discrete-event model of the world (IVS
//! per region with its quotas, rates and error shapes; viewers along a crowd's curve, some
//! hostile; the host dropping and coming back; Durable Objects restarting from their rows),
//! on a virtual clock with a seeded random source, with named invariants checked as it runs.
//!
//! ```
//! use stagefan_sim::{run, Faults, Scenario};
//! let sc = Scenario::named("smoke").unwrap().scaled(300);
//! let report = run(sc, 1, Faults::default());
//! assert_eq!(report.violations(), 0, "{}", report.render());
//! ```

pub mod checks;
pub mod engine;
pub mod ivs;
pub mod report;
pub mod rng;
pub mod scenario;

pub use checks::{Check, Checks};
pub use engine::{Faults, Sim};
pub use report::Report;
pub use scenario::Scenario;

/// Runs `scenario` with `seed` and `faults` to its end.
pub fn run(scenario: Scenario, seed: u64, faults: Faults) -> Report {
    Sim::new(scenario, seed, faults).run()
}
