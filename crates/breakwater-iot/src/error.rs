//! Errors of the IoT API, in OpenAI's error shape with the right HTTP status
//! and the field at fault.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use breakwater::ErrorKind;
use std::time::Duration;

/// A failed IoT call.
#[derive(Debug, Clone, PartialEq)]
pub struct IotError {
    /// The kind (decides the status and `error.type`).
    pub kind: ErrorKind,
    /// For people.
    pub message: String,
    /// The request field at fault.
    pub param: Option<String>,
    /// A specific code (`confirmation_expired`, …); default: the kind.
    pub code: Option<String>,
    /// When to retry (rate limits).
    pub retry_after: Option<Duration>,
    /// The request it concerns, when one was recorded.
    pub request_id: Option<String>,
    /// The HTTP status, when it differs from the kind's.
    pub status: Option<u16>,
}

impl IotError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        IotError {
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
            request_id: None,
            status: None,
        }
    }

    /// Bad input in `param`.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        IotError {
            param: Some(param.to_string()),
            ..Self::new(ErrorKind::InvalidRequest, message)
        }
    }

    /// Something that does not exist.
    pub fn not_found(param: &str, message: impl Into<String>) -> Self {
        IotError {
            param: Some(param.to_string()),
            ..Self::new(ErrorKind::NotFound, message)
        }
    }

    /// A state conflict (409) with a code.
    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        IotError {
            code: Some(code.to_string()),
            status: Some(409),
            ..Self::new(ErrorKind::InvalidRequest, message)
        }
    }

    /// The store or broker failed.
    pub fn internal(message: impl Into<String>) -> Self {
        IotError {
            status: Some(500),
            ..Self::new(ErrorKind::ServerError, message)
        }
    }

    /// The HTTP status.
    pub fn http_status(&self) -> u16 {
        self.status.unwrap_or_else(|| self.kind.http_status())
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut b =
            breakwater::wire::openai::error_body(self.kind, &self.message, self.param.as_deref(), self.code.as_deref());
        if let Some(id) = &self.request_id {
            b["id"] = serde_json::json!(id);
        }
        if self.kind == ErrorKind::RateLimited {
            b["status"] = serde_json::json!("rate_limited");
        }
        b
    }
}

impl std::fmt::Display for IotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(p) = &self.param {
            write!(f, " (field `{p}`)")?;
        }
        Ok(())
    }
}

impl std::error::Error for IotError {}

impl From<crate::store::StoreError> for IotError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::error!(error = %e, "iot: store failure");
        IotError::internal(format!("the IoT store failed: {e}"))
    }
}

impl IntoResponse for IotError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, axum::Json(self.body())).into_response();
        if let Some(d) = self.retry_after {
            let secs = d.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert("retry-after", v);
            }
        }
        resp
    }
}
