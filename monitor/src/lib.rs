//! stagefan-monitor: a tokio daemon beside the edge. It polls the pools (the edge's admin
//! API) and IVS (within a per-operation API budget), exports Prometheus metrics, asks the
//! pools to scale down as `stagefan_core::policy` decides, and collects orphan stages.
//!
//! The binary's `main` only wires these modules together.

pub mod admin;
pub mod budget;
pub mod config;
pub mod edge;
pub mod ivs;
pub mod metrics;
pub mod poller;
pub mod shutdown;

/// How long the monitor's clients keep an idle connection. Servers close idle connections
/// (ivs-local and Node's HTTP server after 5 s, the default poll interval), and a request
/// written on a connection the server is closing fails with `IncompleteMessage` although the
/// server never saw it: the client closes first.
pub const IDLE_CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
