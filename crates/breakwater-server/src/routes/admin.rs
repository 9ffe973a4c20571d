//! Health, readiness, metrics and the admin routes (stats, cache
//! invalidation, reload). Admin routes need the admin key when one is
//! configured, and come only from loopback when none is.

use super::common::Peer;
use crate::errors::{ApiError, Flavor};
use crate::state::{AppState, Gateway};
use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use breakwater::error::{Error, ErrorKind};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Checks admin access.
pub fn admin_allowed(gw: &Gateway, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Error> {
    match &gw.admin_digest {
        None if peer.ip().is_loopback() => Ok(()),
        None => Err(Error::new(
            ErrorKind::PermissionDenied,
            "admin routes are served only to loopback clients unless server.admin_key is set",
        )),
        Some(d) => {
            let presented = crate::auth::presented(headers)
                .or_else(|| headers.get("x-admin-key").and_then(|v| v.to_str().ok()))
                .unwrap_or("");
            if bool::from(crate::auth::digest(presented).ct_eq(d)) {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::Authentication,
                    "admin routes need the admin key (Authorization: Bearer …)",
                ))
            }
        }
    }
}

fn deny(e: Error) -> Response {
    ApiError::new(e, Flavor::OpenAi, &Arc::from("admin")).into_response()
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: at least one target can take calls.
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let gw = app.gateway.load_full();
    let targets = gw.client.targets();
    let up = targets.iter().filter(|t| t.breaker.state.as_str() != "open").count();
    let body = serde_json::json!({
        "ready": up > 0,
        "targets_up": up,
        "targets": targets.len(),
        "redis_down": gw.redis.as_ref().map(|r| r.stats().down),
    });
    let status = if up > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let gw = app.gateway.load_full();
    if let Err(e) = admin_allowed(&gw, &headers, peer) {
        return deny(e);
    }
    crate::metrics::reloads(
        app.reloads.load(std::sync::atomic::Ordering::Relaxed),
        app.reload_failures.load(std::sync::atomic::Ordering::Relaxed),
    );
    let text = crate::metrics::render(&gw);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The JSON of `/admin/stats` (the dashboard streams its own, smaller
/// snapshot: [`crate::dashboard::snapshot`]).
pub fn stats_json(app: &AppState) -> serde_json::Value {
    let gw = app.gateway.load_full();
    let keys: Vec<serde_json::Value> = gw
        .keys
        .entries()
        .map(|k| {
            let rpm = k.limits.requests().map(|l| l.stats());
            let tpm = k.limits.tokens().map(|l| l.stats());
            serde_json::json!({
                "name": &*k.name,
                "requests_limiter": rpm,
                "tokens_limiter": tpm,
                "budget": k.spend.as_ref().map(|s| s.stats()),
            })
        })
        .collect();
    serde_json::json!({
        "uptime_s": app.started.elapsed().as_secs(),
        "providers": gw.origin,
        "now": app.live.summary(1),
        "last_10s": app.live.summary(10),
        "last_60s": app.live.summary(60),
        "last_300s": app.live.summary(300),
        "series": app.live.series(120),
        "targets": gw.client.targets(),
        "client": gw.client.stats(),
        "cache": gw.client.cache().map(|c| c.stats()),
        "keys": keys,
        "redis": gw.redis.as_ref().map(|r| r.stats()),
        "reloads": app.reloads.load(std::sync::atomic::Ordering::Relaxed),
        "reload_failures": app.reload_failures.load(std::sync::atomic::Ordering::Relaxed),
        "workers": {
            "count": app.connections.len(),
            "connections": app.connections.iter().map(|n| n.load(std::sync::atomic::Ordering::Relaxed)).collect::<Vec<_>>(),
        },
    })
}

/// The keys' budgets as the spend store sees them — with `redis:` the
/// shared figures, the same on every instance: spent and remaining in the
/// current period.
pub async fn budgets_json(gw: &Gateway) -> serde_json::Value {
    let mut out = Vec::new();
    for k in gw.keys.entries() {
        let Some(s) = &k.spend else { continue };
        let cfg = s.config();
        let v = match s.spent(&k.name).await {
            Ok(sp) => serde_json::json!({
                "name": &*k.name,
                "period": cfg.period,
                "spent_tokens": sp.tokens,
                "spent_usd": sp.usd(),
                "remaining_tokens": cfg.tokens.map(|t| t.saturating_sub(sp.tokens)),
                "remaining_usd": cfg.usd.map(|u| (u - sp.usd()).max(0.0)),
            }),
            Err(e) => serde_json::json!({ "name": &*k.name, "error": e.to_string() }),
        };
        out.push(v);
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    serde_json::Value::Array(out)
}

/// `GET /admin/stats`.
pub async fn stats(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let gw = app.gateway.load_full();
    if let Err(e) = admin_allowed(&gw, &headers, peer) {
        return deny(e);
    }
    let mut v = stats_json(&app);
    v["budgets"] = budgets_json(&gw).await;
    axum::Json(v).into_response()
}

/// What to invalidate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invalidate {
    /// A cache key (hex).
    pub key: Option<String>,
    /// A model alias.
    pub model: Option<String>,
    /// A tenant (key name).
    pub tenant: Option<String>,
    /// Everything.
    pub all: Option<bool>,
}

/// `DELETE /admin/cache?key=…|model=…|tenant=…|all=true`.
pub async fn invalidate(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    q: Result<Query<Invalidate>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let gw = app.gateway.load_full();
    if let Err(e) = admin_allowed(&gw, &headers, peer) {
        return deny(e);
    }
    let Ok(Query(q)) = q else {
        return deny(Error::invalid_param(
            "query",
            "use one of key=, model=, tenant=, all=true",
        ));
    };
    let Some(cache) = gw.client.cache() else {
        return deny(Error::new(ErrorKind::NotFound, "no cache is configured"));
    };
    let given = [
        q.key.is_some(),
        q.model.is_some(),
        q.tenant.is_some(),
        q.all == Some(true),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return deny(Error::invalid_param(
            "query",
            "give exactly one of key=, model=, tenant=, all=true",
        ));
    }
    let what = if let Some(k) = q.key {
        match breakwater::cache::CacheKey::from_hex(&k) {
            Some(key) => {
                cache.invalidate_key(&key).await;
                format!("key {k}")
            }
            None => return deny(Error::invalid_param("key", "a cache key is 64 hexadecimal characters")),
        }
    } else if let Some(m) = q.model {
        cache.invalidate_model(&m).await;
        format!("model {m}")
    } else if let Some(t) = q.tenant {
        cache.invalidate_tenant(&t).await;
        format!("tenant {t}")
    } else {
        cache.flush_all().await;
        "everything".to_string()
    };
    axum::Json(serde_json::json!({"invalidated": what})).into_response()
}

/// `POST /admin/reload`: re-reads the config file (as SIGHUP does).
pub async fn reload(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let gw = app.gateway.load_full();
    if let Err(e) = admin_allowed(&gw, &headers, peer) {
        return deny(e);
    }
    match crate::serve::reload(&app).await {
        Ok(()) => axum::Json(serde_json::json!({"reloaded": true})).into_response(),
        Err(msg) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"reloaded": false, "error": msg})),
        )
            .into_response(),
    }
}
