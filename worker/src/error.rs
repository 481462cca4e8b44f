//! The one error type of the worker, mapped to HTTP in one place (`AppError::into_response`).
//! Internal details (IVS messages, storage errors) are logged, never sent to clients.

use serde_json::json;
use worker::{Headers, Response};

/// Every way a request can fail, from the client's point of view.
#[derive(Debug)]
pub enum AppError {
    /// The body is not JSON, or a field is missing, has the wrong type or a bad value.
    BadRequest {
        code: &'static str,
        message: String,
        field: Option<String>,
    },
    /// The body is larger than the route accepts.
    BodyTooLarge {
        limit: usize,
    },
    /// The route needs a key and the request has none, or the wrong one.
    Unauthorized,
    /// The host or admin key is not configured on this deploy: those routes stay closed.
    NotConfigured(&'static str),
    NotFound {
        code: &'static str,
        message: String,
    },
    MethodNotAllowed,
    /// The pool refused, e.g. an admin action that would delete a stage with viewers.
    Conflict {
        code: &'static str,
        message: String,
    },
    /// The broadcast seats ticket holders only and the request has no ticket.
    TicketRequired(String),
    /// The ticket does not verify, has expired, or is not for this broadcast.
    InvalidTicket(String),
    /// The thing asked about existed and is gone (a seat whose stage IVS no longer has).
    Gone {
        code: &'static str,
        message: String,
    },
    /// This client asks too often, or holds too much (per-client admission control).
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after_secs: u32,
    },
    /// Every stage is full and none can be made in time.
    NoCapacity {
        retry_after_secs: u32,
    },
    /// The region's IVS quota (`quota`) is used up: IVS would refuse the seat's join.
    RegionQuota {
        quota: stagefan_core::ledger::Quota,
        retry_after_secs: u32,
    },
    /// IVS (or ivs-local) failed or throttled beyond our retries.
    Upstream(String),
    /// Anything else: a bug or a platform failure.
    Internal(String),
    /// An error answer of a Durable Object, already in the API's shape: sent on unchanged.
    Forwarded {
        status: u16,
        body: String,
        retry_after: Option<String>,
    },
    /// The video service throttles token requests (`api` mode) beyond our retries.
    Throttled,
}

impl AppError {
    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code: "invalid_field",
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// No live lease with that id: it lapsed, was given back, or never was.
    pub fn lease_not_found() -> Self {
        AppError::NotFound {
            code: "lease_not_found",
            message: "no live lease with that id (it expired or was given back)".into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            AppError::BadRequest { .. } => 400,
            AppError::BodyTooLarge { .. } => 413,
            AppError::Unauthorized => 401,
            AppError::TicketRequired(_) | AppError::InvalidTicket(_) => 401,
            AppError::NotConfigured(_) => 503,
            AppError::NotFound { .. } => 404,
            AppError::MethodNotAllowed => 405,
            AppError::Conflict { .. } => 409,
            AppError::Gone { .. } => 410,
            AppError::TooManyRequests { .. } => 429,
            AppError::NoCapacity { .. } | AppError::RegionQuota { .. } => 503,
            AppError::Upstream(_) => 502,
            AppError::Internal(_) => 500,
            AppError::Forwarded { status, .. } => *status,
            AppError::Throttled => 503,
        }
    }

    /// The JSON error body and status; the only place errors become responses.
    pub fn into_response(self) -> Response {
        let status = self.status();
        if let AppError::Forwarded {
            body, retry_after, ..
        } = &self
        {
            let headers = Headers::new();
            let _ = headers.set("content-type", "application/json");
            if let Some(r) = retry_after {
                let _ = headers.set("retry-after", r);
            }
            return Response::ok(body.clone())
                .map(|r| r.with_status(status).with_headers(headers))
                .unwrap_or_else(|_| Response::empty().expect("empty response").with_status(500));
        }
        let (code, message, field): (&str, String, Option<String>) = match &self {
            AppError::BadRequest {
                code,
                message,
                field,
            } => (code, message.clone(), field.clone()),
            AppError::BodyTooLarge { limit } => (
                "body_too_large",
                format!("the request body is larger than {limit} bytes"),
                None,
            ),
            AppError::Unauthorized => (
                "unauthorized",
                "missing or wrong key in the Authorization header (Bearer <key>)".into(),
                None,
            ),
            AppError::NotConfigured(what) => (
                "not_configured",
                format!("{what} is not configured on this deploy, so this route is closed"),
                None,
            ),
            AppError::NotFound { code, message } => (code, message.clone(), None),
            AppError::MethodNotAllowed => (
                "method_not_allowed",
                "this method is not allowed on this route".into(),
                None,
            ),
            AppError::Conflict { code, message } => (code, message.clone(), None),
            AppError::Gone { code, message } => (code, message.clone(), None),
            AppError::TicketRequired(message) => {
                ("ticket_required", message.clone(), Some("ticket".into()))
            }
            AppError::InvalidTicket(message) => {
                ("invalid_ticket", message.clone(), Some("ticket".into()))
            }
            AppError::TooManyRequests { code, message, .. } => (code, message.clone(), None),
            AppError::NoCapacity { .. } => (
                "no_capacity",
                "every stage of this broadcast is full; retry later".into(),
                None,
            ),
            AppError::RegionQuota { quota, .. } => (
                "region_quota",
                format!(
                    "the region's IVS quota of {} is used up (every broadcast together); \
                     retry later",
                    quota.ivs_name()
                ),
                None,
            ),
            AppError::Upstream(detail) => {
                worker::console_error!("upstream error: {detail}");
                (
                    "upstream_unavailable",
                    "the video service did not answer; retry later".into(),
                    None,
                )
            }
            AppError::Throttled => (
                "rate_limited",
                "the video service is throttling token requests; retry shortly".into(),
                None,
            ),
            AppError::Forwarded { .. } => unreachable!("answered above"),
            AppError::Internal(detail) => {
                worker::console_error!("internal error: {detail}");
                ("internal", "internal error".into(), None)
            }
        };
        let mut error = json!({ "code": code, "message": message });
        if let Some(field) = field {
            error["field"] = json!(field);
        }
        let headers = Headers::new();
        let _ = headers.set("content-type", "application/json");
        match &self {
            AppError::NoCapacity { retry_after_secs }
            | AppError::RegionQuota {
                retry_after_secs, ..
            }
            | AppError::TooManyRequests {
                retry_after_secs, ..
            } => {
                let _ = headers.set("retry-after", &retry_after_secs.to_string());
            }
            AppError::Throttled => {
                let _ = headers.set("retry-after", "1");
            }
            AppError::NotConfigured(_) | AppError::Upstream(_) => {
                let _ = headers.set("retry-after", "5");
            }
            _ => {}
        }
        let body = json!({ "error": error }).to_string();
        Response::ok(body)
            .map(|r| r.with_status(status).with_headers(headers))
            .unwrap_or_else(|_| Response::empty().expect("empty response").with_status(500))
    }
}

impl From<worker::Error> for AppError {
    fn from(err: worker::Error) -> Self {
        AppError::Internal(err.to_string())
    }
}

impl From<stagefan_core::config::InvalidField> for AppError {
    fn from(err: stagefan_core::config::InvalidField) -> Self {
        let message = format!("`{}` {}", err.field, err.problem);
        AppError::bad_field(err.field, message)
    }
}

impl From<serde_json::Error> for AppError {
    fn from(err: serde_json::Error) -> Self {
        AppError::Internal(format!("json: {err}"))
    }
}

pub type AppResult<T> = Result<T, AppError>;
