//! Error responses: OpenAI's JSON error shape (or Anthropic's on its
//! route), the status that matches the kind, the request id, and
//! `Retry-After` on every 429 and 503.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use breakwater::error::{Error, ErrorKind};
use breakwater::wire::{anthropic, openai};
use std::sync::Arc;

/// Which API's error shape to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`.
    Anthropic,
}

/// An error to send to a client.
#[derive(Debug)]
pub struct ApiError {
    /// The error.
    pub error: Error,
    /// The shape.
    pub flavor: Flavor,
    /// Extra headers (request id, rate limits, attempts).
    pub headers: HeaderMap,
}

impl ApiError {
    /// An error in `flavor` with the request id.
    pub fn new(error: Error, flavor: Flavor, request_id: &Arc<str>) -> Self {
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", v);
        }
        ApiError { error, flavor, headers }
    }

    /// Adds headers.
    pub fn with_headers(mut self, h: HeaderMap) -> Self {
        self.headers.extend(h);
        self
    }
}

/// The status for an error: the kind's, except that 499 (client gone) is
/// never seen and becomes 408.
pub fn status_of(e: &Error) -> StatusCode {
    let code = match e.kind {
        ErrorKind::Cancelled => 408,
        ErrorKind::InvalidRequest if e.code.as_deref() == Some("request_too_large") => 413,
        ErrorKind::InvalidRequest if e.code.as_deref() == Some("method_not_allowed") => 405,
        k => k.http_status(),
    };
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The body for an error in a flavor.
pub fn body_of(e: &Error, flavor: Flavor) -> serde_json::Value {
    match flavor {
        Flavor::OpenAi => {
            let code = e.code.clone().unwrap_or_else(|| e.kind.as_str().to_string());
            openai::error_body(e.kind, &e.message, e.param.as_deref(), Some(&code))
        }
        Flavor::Anthropic => anthropic::error_body(e.kind, &e.message),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.error);
        let body = body_of(&self.error, self.flavor);
        let mut resp = (status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.extend(self.headers);
        if (status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE)
            && !h.contains_key("retry-after")
        {
            // Whole seconds, rounded up, at least 1.
            let secs = self
                .error
                .retry_after
                .map_or(1, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
                .max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                h.insert("retry-after", v);
            }
        }
        h.insert("x-breakwater-error", HeaderValue::from_static(self.error.kind.as_str()));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limits_carry_retry_after_in_whole_seconds() {
        let e = Error::new(ErrorKind::RateLimited, "slow down").with_retry_after(Some(Duration::from_millis(1500)));
        let r = ApiError::new(e, Flavor::OpenAi, &Arc::from("req_1")).into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        assert_eq!(r.headers()["x-request-id"], "req_1");
        let e = Error::new(ErrorKind::Overloaded, "busy");
        let r = ApiError::new(e, Flavor::Anthropic, &Arc::from("r")).into_response();
        assert_eq!(
            (r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()),
            (503, "1")
        );
        let e = Error::invalid_param("messages", "required");
        assert_eq!(body_of(&e, Flavor::OpenAi)["error"]["param"], "messages");
        assert_eq!(body_of(&e, Flavor::Anthropic)["error"]["type"], "invalid_request_error");
    }
}
