//! The HTTP interface, as an axum `Router` the gateway mounts:
//!
//! | route | |
//! |---|---|
//! | `POST /iot/commands` `{text, user, idempotency_key?, wait_ms?}` | understand and act; the request with its status |
//! | `POST /iot/commands/{id}/confirm` `{user}` | confirm a pending request |
//! | `GET /iot/commands?user=&status=&since=&limit=` | requests, newest first |
//! | `GET /iot/commands/{id}` | one request with its commands |
//! | `GET /iot/devices` | devices with their live state |
//! | `GET /iot/audit?request_id=&user=&since=&limit=` | the audit log |
//!
//! Errors use OpenAI's error shape with the right status and the field at
//! fault; a rate-limited request gets 429 with `Retry-After`. `since` is
//! UTC milliseconds or an RFC 3339 time. The header `Idempotency-Key` may
//! stand for the body's `idempotency_key`.

use crate::error::IotError;
use crate::service::{IotService, Submit};
use crate::status::RequestStatus;
use crate::store::{AuditQuery, ListQuery};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// The longest `wait_ms` honoured.
const MAX_WAIT_MS: u64 = 30_000;

/// The routes.
pub fn router(svc: IotService) -> axum::Router {
    axum::Router::new()
        .route("/iot/commands", post(submit).get(list))
        .route("/iot/commands/{id}", get(get_one))
        .route("/iot/commands/{id}/confirm", post(confirm))
        .route("/iot/devices", get(devices))
        .route("/iot/audit", get(audit))
        .with_state(svc)
}

fn object(body: &Bytes) -> Result<Map<String, Value>, IotError> {
    if body.is_empty() {
        return Err(IotError::invalid("body", "the body must be a JSON object"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(IotError::invalid("body", "the body must be a JSON object")),
        Err(e) => Err(IotError::invalid("body", format!("the body is not valid JSON: {e}"))),
    }
}

fn string_field(m: &Map<String, Value>, key: &str, required: bool) -> Result<Option<String>, IotError> {
    match m.get(key) {
        None | Some(Value::Null) if required => Err(IotError::invalid(key, format!("`{key}` is required"))),
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(IotError::invalid(key, format!("`{key}` must be a string"))),
    }
}

fn check_keys(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), IotError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(IotError::invalid(
            k,
            format!("unknown field `{k}`; expected {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

fn with_headers(rec: &crate::store::RequestRecord) -> Response {
    let mut resp = Json(rec).into_response();
    if rec.parse.get("fallback").and_then(Value::as_bool) == Some(true) {
        resp.headers_mut()
            .insert("x-breakwater-degraded", HeaderValue::from_static("rule-based"));
    }
    resp
}

async fn submit(State(svc): State<IotService>, headers: HeaderMap, body: Bytes) -> Result<Response, IotError> {
    let m = object(&body)?;
    check_keys(&m, &["text", "user", "idempotency_key", "wait_ms"])?;
    let text = string_field(&m, "text", true)?.unwrap_or_default();
    let user = string_field(&m, "user", true)?.unwrap_or_default();
    let header_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let idempotency_key = string_field(&m, "idempotency_key", false)?.or(header_key);
    let wait_ms = match m.get("wait_ms") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| IotError::invalid("wait_ms", "`wait_ms` must be a non-negative integer"))?
            .min(MAX_WAIT_MS),
    };
    let rec = svc
        .submit(Submit {
            text,
            user,
            idempotency_key,
        })
        .await?;
    let rec = if wait_ms > 0 && rec.status == RequestStatus::Dispatched {
        svc.wait_settled(&rec.id, Duration::from_millis(wait_ms)).await?
    } else {
        rec
    };
    Ok(with_headers(&rec))
}

async fn confirm(State(svc): State<IotService>, Path(id): Path<String>, body: Bytes) -> Result<Response, IotError> {
    let m = object(&body)?;
    check_keys(&m, &["user"])?;
    let user = string_field(&m, "user", true)?.unwrap_or_default();
    let rec = svc.confirm(&id, &user).await?;
    Ok(with_headers(&rec))
}

async fn get_one(State(svc): State<IotService>, Path(id): Path<String>) -> Result<Response, IotError> {
    let rec = svc.get(&id).await?;
    Ok(with_headers(&rec))
}

/// `since`: UTC ms, or an RFC 3339 time.
fn parse_since(s: &str) -> Result<i64, IotError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| IotError::invalid("since", "`since` must be UTC milliseconds or an RFC 3339 time"))
}

fn parse_limit(s: &str) -> Result<i64, IotError> {
    s.parse::<i64>()
        .ok()
        .filter(|n| (1..=10_000).contains(n))
        .ok_or_else(|| IotError::invalid("limit", "`limit` must be an integer from 1 to 10000"))
}

async fn list(State(svc): State<IotService>, Query(q): Query<HashMap<String, String>>) -> Result<Response, IotError> {
    let mut query = ListQuery::default();
    for (k, v) in &q {
        match k.as_str() {
            "user" => query.user = Some(v.clone()),
            "status" => {
                query.status = Some(RequestStatus::parse(v).ok_or_else(|| {
                    IotError::invalid(
                        "status",
                        "`status` must be one of dispatched, pending_confirmation, scheduled, needs_clarification, \
                         not_understood, rate_limited, expired",
                    )
                })?)
            }
            "since" => query.since = Some(parse_since(v)?),
            "limit" => query.limit = Some(parse_limit(v)?.min(500)),
            other => {
                return Err(IotError::invalid(
                    other,
                    format!("unknown parameter `{other}`; expected user, status, since, limit"),
                ));
            }
        }
    }
    let recs = svc.list(&query).await?;
    Ok(Json(json!({"object": "list", "data": recs})).into_response())
}

async fn audit(State(svc): State<IotService>, Query(q): Query<HashMap<String, String>>) -> Result<Response, IotError> {
    let mut query = AuditQuery::default();
    for (k, v) in &q {
        match k.as_str() {
            "request_id" => query.request_id = Some(v.clone()),
            "user" => query.user = Some(v.clone()),
            "since" => query.since = Some(parse_since(v)?),
            "limit" => query.limit = Some(parse_limit(v)?),
            other => {
                return Err(IotError::invalid(
                    other,
                    format!("unknown parameter `{other}`; expected request_id, user, since, limit"),
                ));
            }
        }
    }
    let entries = svc.audit(&query).await?;
    Ok(Json(json!({"object": "list", "data": entries})).into_response())
}

async fn devices(State(svc): State<IotService>) -> Response {
    Json(json!({"object": "list", "registry_version": svc.registry().version(), "data": svc.devices()})).into_response()
}
