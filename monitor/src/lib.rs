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
