//! stagefan-core: the pure logic of stagefan.
//!
//! Nothing here performs I/O, reads a clock or draws random numbers: the current time and
//! random bytes are always arguments, so every function is deterministic and runs the same
//! natively (tests) and on wasm32 (the Cloudflare Worker).

pub mod alarm;
pub mod budget;
pub mod config;
pub mod ids;
pub mod ivs;
pub mod ledger;
pub mod modes;
pub mod pacing;
pub mod policy;
pub mod pool;
pub mod replication;
pub mod sigv4;
pub mod summary;
pub mod tags;
pub mod ticket;
pub mod time;
pub mod token;
