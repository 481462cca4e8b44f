//! stagefan's edge: the Cloudflare Worker.
//!
//! The stateless front (`routes`) authenticates and validates requests and mints tokens; pool
//! operations go to one `StagePool` Durable Object per broadcast (`pool_object`), the single
//! writer of that broadcast's pool; a `Registry` Durable Object lists broadcasts and holds the
//! public key's ARN; an `IvsBudget` Durable Object per IVS endpoint and region hands every pool
//! its time slots for IVS's rate-limited stage operations; in stage presence a `StageSeats`
//! Durable Object per stage keeps that stage's leases alive (heartbeats, leaves, lapses) and
//! reports the frees to the pool in batches.

mod auth;
mod body;
mod budget;
mod calls;
mod error;
mod ivs_client;
mod pool_object;
mod registry;
mod routes;
mod runtime;
mod settings;
mod stage_seats;
mod tokens;

use worker::{event, Context, Env, Request, Response, Result};

pub use budget::IvsBudget;
pub use pool_object::StagePool;
pub use registry::Registry;
pub use stage_seats::StageSeats;

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    Ok(routes::handle(req, env).await)
}
