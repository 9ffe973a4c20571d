//! OpenAI's wire format is the canonical one; only its error shape lives here.

use crate::error::{Error, ErrorKind};
use serde_json::{Value, json};

/// An error body in OpenAI's shape:
/// `{"error": {"message", "type", "param", "code"}}`.
pub fn error_body(kind: ErrorKind, message: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {
        "message": message,
        "type": kind.openai_type(),
        "param": param,
        "code": code.unwrap_or(kind.as_str()),
    }})
}

/// The body for an [`Error`].
pub fn error_body_for(e: &Error) -> Value {
    error_body(e.kind, &e.message, e.param.as_deref(), None)
}
