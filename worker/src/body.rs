//! Reading request bodies: a size limit, JSON that must be an object, and typed fields whose
//! errors name the field.

use futures_util::StreamExt;
use serde_json::{Map, Value};
use worker::Request;

use crate::error::{AppError, AppResult};

/// Larger bodies are refused before parsing; every body of this API is a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// A parsed JSON object body.
pub struct JsonBody(Map<String, Value>);

impl JsonBody {
    /// Reads the body (at most `MAX_BODY_BYTES`) and parses it as a JSON object. An empty body
    /// counts as `{}` so that `POST` routes whose fields are all optional accept it.
    ///
    /// The limit holds while the body streams in, whatever its framing: a declared length over
    /// it is refused before a byte is read, and a chunked (or lying) body is cut off as soon as
    /// it passes the limit, so a body that never ends costs at most one chunk more than the
    /// limit in memory.
    pub async fn read(req: &mut Request) -> AppResult<Self> {
        if let Ok(Some(length)) = req.headers().get("content-length") {
            if length
                .trim()
                .parse::<usize>()
                .map_or(true, |n| n > MAX_BODY_BYTES)
            {
                return Err(AppError::BodyTooLarge {
                    limit: MAX_BODY_BYTES,
                });
            }
            // A declared length within the limit: HTTP's framing holds the body to it, so it
            // is read in one piece (the common case, and cheaper than a stream of chunks).
            let bytes = req
                .bytes()
                .await
                .map_err(|e| AppError::bad_request("unreadable_body", format!("{e}")))?;
            return Self::parse(&bytes);
        }
        let mut stream = match req.stream() {
            Ok(stream) => stream,
            // No body at all.
            Err(worker::Error::RustError(_)) => return Self::parse(b""),
            Err(e) => return Err(AppError::bad_request("unreadable_body", format!("{e}"))),
        };
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| AppError::bad_request("unreadable_body", format!("{e}")))?;
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(AppError::BodyTooLarge {
                    limit: MAX_BODY_BYTES,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Self::parse(&bytes)
    }

    pub fn parse(bytes: &[u8]) -> AppResult<Self> {
        if bytes.len() > MAX_BODY_BYTES {
            return Err(AppError::BodyTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Map::new()));
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Ok(JsonBody(map)),
            Ok(_) => Err(AppError::bad_request(
                "invalid_json",
                "the body must be a JSON object",
            )),
            Err(e) => Err(AppError::bad_request(
                "invalid_json",
                format!("the body is not valid JSON: {e}"),
            )),
        }
    }

    /// A string field that must be present.
    pub fn required_str(&self, field: &'static str) -> AppResult<&str> {
        self.optional_str(field)?
            .ok_or_else(|| AppError::bad_field(field, format!("`{field}` is required")))
    }

    /// A string field that may be absent or null.
    pub fn optional_str(&self, field: &'static str) -> AppResult<Option<&str>> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(AppError::bad_field(
                field,
                format!("`{field}` must be a string"),
            )),
        }
    }

    pub fn optional_u64(&self, field: &'static str) -> AppResult<Option<u64>> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                AppError::bad_field(field, format!("`{field}` must be a non-negative integer"))
            }),
        }
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }
}

// The validators of ids that arrive in requests are core's (their errors name the field and
// say what was wrong); `?` turns their `InvalidField` into a 400 `invalid_field`.
pub use stagefan_core::ids::{validate_broadcast_field as validate_broadcast, validate_stage_arn};
pub use stagefan_core::regions::lease_route;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert!(JsonBody::parse(b"").is_ok());
        assert!(matches!(
            JsonBody::parse(b"not json"),
            Err(AppError::BadRequest {
                code: "invalid_json",
                ..
            })
        ));
        assert!(matches!(
            JsonBody::parse(b"[1]"),
            Err(AppError::BadRequest {
                code: "invalid_json",
                ..
            })
        ));
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(
            JsonBody::parse(&big),
            Err(AppError::BodyTooLarge { .. })
        ));
        let body = JsonBody::parse(br#"{"userId": 5}"#).unwrap();
        assert!(matches!(
            body.required_str("userId"),
            Err(AppError::BadRequest { field: Some(ref f), .. }) if f == "userId"
        ));
        assert!(matches!(
            body.required_str("leaseId"),
            Err(AppError::BadRequest { field: Some(ref f), .. }) if f == "leaseId"
        ));
    }
}
