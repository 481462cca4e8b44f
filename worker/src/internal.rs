//! Requests from the worker to its Durable Objects: `POST` with a JSON body and no headers.
//! The objects read the body whatever its content type, and a headers object costs
//! measurably more to build in workerd — on the pool's path, once per viewer
//! (docs/benchmarks.md).

use serde_json::Value;
use worker::{Env, Method, Request, RequestInit, Response};

use crate::error::{AppError, AppResult};

/// Sends `body` to `url` on the object named `name` of the namespace bound as `binding`, and
/// returns its answer whatever the status.
pub async fn post(
    env: &Env,
    binding: &str,
    name: &str,
    url: &str,
    body: &Value,
) -> AppResult<Response> {
    let stub = env
        .durable_object(binding)?
        .id_from_name(name)?
        .get_stub()?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(body.to_string().into()));
    Ok(stub
        .fetch_with_request(Request::new_with_init(url, &init)?)
        .await?)
}

/// [`post`] for objects whose errors are ours to report, not the client's: an error status is
/// an internal error naming `what`.
pub async fn post_json(
    env: &Env,
    binding: &str,
    name: &str,
    url: &str,
    body: &Value,
    what: &str,
) -> AppResult<Value> {
    let mut resp = post(env, binding, name, url, body).await?;
    let status = resp.status_code();
    let value: Value = resp.json().await?;
    if status >= 400 {
        return Err(AppError::Internal(format!("{what}: {status} {value}")));
    }
    Ok(value)
}
