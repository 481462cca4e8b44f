//! The Amazon IVS Real-Time (`ivs-realtime`, API 2020-07-14) wire format that stagefan and
//! ivs-local speak: request and response bodies of the operations stagefan uses, the error
//! shape, ARNs, and the model's input limits.
//!
//! Names and shapes follow AWS's service model (botocore
//! `data/ivs-realtime/2020-07-14/service-2.json`): JSON members in camelCase, optional
//! members omitted when absent, timestamps as ISO 8601 strings (the model's `iso8601`
//! timestamp format). Unknown members are ignored when reading, so newer AWS responses parse.
//! Every operation is `POST /<OperationName>` with a JSON body, except the tag operations on
//! `/tags/{resourceArn}` (see [`Operation::http_method`] and [`tags_path`]).

use std::collections::BTreeMap;

/// The signing name of IVS Real-Time for SigV4 (not `ivsrealtime`).
pub const SIGNING_NAME: &str = "ivs";

/// Tags: at most 50 per resource, keys 1–128 characters, values up to 256.
pub type Tags = BTreeMap<String, String>;

/// Participant or token attributes (string to string, at most 1 KB in total).
pub type Attributes = BTreeMap<String, String>;

pub use crate::tags::{TAG_BROADCAST, TAG_DEPLOYMENT, TAG_MANAGED};

mod arn;
mod errors;
mod limits;
mod operations;
mod shapes;
#[cfg(test)]
mod tests;

pub use arn::*;
pub use errors::*;
pub use limits::*;
pub use operations::*;
pub use shapes::*;
