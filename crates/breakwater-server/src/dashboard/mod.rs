//! The live dashboard: `GET /dashboard` serves one page (HTML, JS and CSS
//! compiled into the binary, no CDN, charts on plain canvas) that follows
//! `GET /dashboard/events`, a server-sent-event stream of one aggregated
//! JSON snapshot per second. The page never sees per-request events, so a
//! gateway at thousands of requests per second costs it nothing more.
//!
//! Access follows the admin routes: the admin key when one is configured,
//! loopback only when none is. A browser's `EventSource` cannot send
//! headers, so the key is presented once (`/dashboard?key=…` or the form
//! the page shows) and exchanged for an `HttpOnly`, `SameSite=Strict`
//! cookie holding a digest derived from the admin key, never the key.

pub mod history;

pub use history::History;

use crate::routes::admin::admin_allowed;
use crate::routes::common::Peer;
use crate::state::{AppState, Gateway};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use breakwater::error::{Error, ErrorKind};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The name of the session cookie.
pub const COOKIE: &str = "bw_dashboard";
/// Version of the snapshot's shape (the page checks it).
pub const SNAPSHOT_VERSION: u64 = 1;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("dashboard.js");
const STYLE: &str = include_str!("dashboard.css");
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// The cookie value for an admin-key digest: a digest of it, so the cookie
/// never holds the key and changes when the key does.
fn session_token(admin_digest: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(b"breakwater-dashboard-session\0");
    h.update(admin_digest);
    hex::encode(h.finalize())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Checks dashboard access: the session cookie, else what the admin routes
/// accept (the admin key in a header; loopback when no key is configured).
pub fn dashboard_allowed(gw: &Gateway, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Error> {
    if let (Some(d), Some(c)) = (&gw.admin_digest, cookie(headers, COOKIE))
        && bool::from(session_token(d).as_bytes().ct_eq(c.as_bytes()))
    {
        return Ok(());
    }
    admin_allowed(gw, headers, peer)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The page shown instead of the dashboard: why, and the key form when a
/// key would help.
fn refusal(status: StatusCode, why: &str, form: bool) -> Response {
    let form = if form {
        r#"<form method="post" action="/dashboard"><label>Admin key <input type="password" name="key" autocomplete="current-password" autofocus></label> <button type="submit">Open the dashboard</button></form>"#
    } else {
        ""
    };
    html(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>breakwater dashboard</title><link rel=\"stylesheet\" href=\"/dashboard/app.css\"></head><body><main class=\"login\"><h1>breakwater dashboard</h1><p class=\"why\" data-testid=\"refusal\">{}</p>{form}</main></body></html>",
            escape(why)
        ),
    )
}

fn refuse(e: &Error) -> Response {
    if e.kind == ErrorKind::Authentication {
        refusal(
            StatusCode::UNAUTHORIZED,
            "The dashboard needs the admin key (server.admin_key). Enter it once: the browser keeps an HttpOnly session cookie.",
            true,
        )
    } else {
        refusal(
            StatusCode::FORBIDDEN,
            "No admin key is configured, so the dashboard is served only to loopback clients. Set server.admin_key to open it to other hosts.",
            false,
        )
    }
}

/// `?key=` or the form's `key`.
#[derive(Debug, Default, Deserialize)]
pub struct KeyForm {
    /// The admin key.
    pub key: Option<String>,
}

fn sign_in(gw: &Gateway, peer: SocketAddr, key: &str) -> Response {
    let to_page = |cookie: Option<String>| {
        let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/dashboard")]).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            r.headers_mut().insert(header::SET_COOKIE, c);
        }
        r
    };
    match &gw.admin_digest {
        Some(d) if bool::from(crate::auth::digest(key).ct_eq(d)) => to_page(Some(format!(
            "{COOKIE}={}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=43200",
            session_token(d)
        ))),
        Some(_) => refusal(StatusCode::UNAUTHORIZED, "That is not the admin key. Try again.", true),
        None if peer.ip().is_loopback() => to_page(None),
        None => refuse(&Error::new(ErrorKind::PermissionDenied, "loopback only")),
    }
}

/// `GET /dashboard[?key=…]`: the page, or the sign-in form.
pub async fn page(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Query(q): Query<KeyForm>,
) -> Response {
    let gw = app.gateway.load_full();
    if let Some(key) = q.key.as_deref().filter(|k| !k.is_empty()) {
        return sign_in(&gw, peer, key);
    }
    match dashboard_allowed(&gw, &headers, peer) {
        Ok(()) => html(StatusCode::OK, PAGE.to_string()),
        Err(e) => refuse(&e),
    }
}

/// `POST /dashboard` (the sign-in form).
pub async fn sign_in_form(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    Form(f): Form<KeyForm>,
) -> Response {
    let gw = app.gateway.load_full();
    sign_in(&gw, peer, f.key.as_deref().unwrap_or(""))
}

/// `GET /dashboard/app.js`: the page's script (public: it holds no data).
pub async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// `GET /dashboard/app.css`: the page's style (public).
pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE,
    )
        .into_response()
}

/// `GET /dashboard/events`: one snapshot per second as server-sent events
/// (`event: snapshot`), until the client leaves or the server shuts down.
pub async fn events(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let gw = app.gateway.load_full();
    if let Err(e) = dashboard_allowed(&gw, &headers, peer) {
        return crate::errors::ApiError::new(e, crate::errors::Flavor::OpenAi, &Arc::from("dashboard")).into_response();
    }
    drop(gw);
    let stop = app.shutdown.clone().cancelled_owned();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = futures::stream::unfold((app, tick), |(app, mut tick)| async move {
        tick.tick().await;
        let snap = snapshot(&app).await;
        let ev = Event::default()
            .event("snapshot")
            .retry(Duration::from_secs(1))
            .data(snap.to_string());
        Some((Ok::<_, std::convert::Infallible>(ev), (app, tick)))
    })
    .take_until(stop);
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 1e4).round() / 1e4)
}

/// The aggregated snapshot the page draws (also handy for scripts).
pub async fn snapshot(app: &AppState) -> Value {
    let gw = app.gateway.load_full();
    let s10 = app.live.summary(10);
    let s5 = app.live.summary(5);
    let s300 = app.live.summary(300);
    let changes = app.dash.changes();
    let span = app.dash.span();
    let delta = |pick: fn(&history::Sample) -> &BTreeMap<String, u64>, name: &str| -> Option<u64> {
        let (new, old, _) = span.as_ref()?;
        Some(
            pick(new)
                .get(name)?
                .saturating_sub(pick(old).get(name).copied().unwrap_or(0)),
        )
    };
    let window_s = span.as_ref().map(|(_, _, s)| *s).unwrap_or(0);

    let targets: Vec<Value> = gw
        .client
        .targets()
        .into_iter()
        .map(|t| {
            let id = t.id.to_string();
            let total = t.stats.successes + t.stats.failures;
            let calls = delta(|s| &s.target_calls, &id);
            let fails = delta(|s| &s.target_failures, &id);
            let mut history: Vec<_> = changes.iter().filter(|c| c.target == id).collect();
            history.drain(..history.len().saturating_sub(20));
            json!({
                "id": id,
                "provider": id.split('/').next().unwrap_or(""),
                "state": t.breaker.state.as_str(),
                "open_remaining_ms": t.breaker.open_remaining.map(|d| d.as_millis() as u64),
                "trips": t.breaker.trips,
                "consecutive_failures": t.breaker.consecutive_failures,
                "rejected": t.breaker.rejected_total,
                "successes": t.stats.successes,
                "failures": t.stats.failures,
                "error_rate": ratio(t.stats.failures, total),
                "calls_recent": calls,
                "error_rate_recent": calls.and_then(|c| ratio(fails.unwrap_or(0), c)),
                "errors_by_kind": t.stats.errors,
                "in_flight": t.stats.in_flight,
                "ttft_ms": t.stats.ttft_ms,
                "latency_ms": t.stats.total_ms,
                "cooldown_ms": t.stats.cooldown_ms,
                "history": history,
            })
        })
        .collect();

    let keys: Vec<Value> = {
        let mut v: Vec<Value> = gw
            .keys
            .entries()
            .map(|k| {
                let req = k.limits.requests();
                let limit = req.map(|l| l.quota().limit());
                let used = delta(|s| &s.keys, &k.name);
                json!({
                    "name": &*k.name,
                    "rpm": limit,
                    "used_recent": used,
                    "headroom": limit.zip(used).map(|(l, u)| l.saturating_sub(u)),
                    "headroom_ratio": limit.zip(used).and_then(|(l, u)| ratio(l.saturating_sub(u), l)),
                    "rejected": req.map(|l| l.stats().rejected),
                    "tpm": k.limits.tokens().map(|l| l.quota().limit()),
                    "budget": k.spend.as_ref().map(|s| s.stats()),
                })
            })
            .collect();
        v.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        v
    };

    let cfg = &gw.config;
    let mut limiters: Vec<Value> = Vec::new();
    for (name, p) in &cfg.providers {
        if p.limits.rpm.is_none() && p.limits.max_in_flight.is_none() && p.limits.tpm.is_none() {
            continue;
        }
        let prefix = format!("{name}/");
        let mut used: Option<u64> = None;
        let mut in_flight = 0u64;
        for t in &targets {
            let id = t["id"].as_str().unwrap_or("");
            if id.starts_with(&prefix) {
                in_flight += t["in_flight"].as_u64().unwrap_or(0);
                if let Some(c) = t["calls_recent"].as_u64() {
                    used = Some(used.unwrap_or(0) + c);
                }
            }
        }
        limiters.push(limiter_row(
            "provider",
            name,
            p.limits.rpm,
            p.limits.tpm,
            p.limits.max_in_flight,
            used,
            in_flight,
        ));
    }
    for m in cfg.models.values() {
        for t in &m.targets {
            let Some(l) = &t.limits else { continue };
            let id = format!("{}/{}", t.provider, t.model);
            if limiters
                .iter()
                .any(|r| r["scope"] == "target" && r["name"] == id.as_str())
            {
                continue;
            }
            let in_flight = targets
                .iter()
                .find(|x| x["id"] == id.as_str())
                .and_then(|x| x["in_flight"].as_u64())
                .unwrap_or(0);
            let used = delta(|s| &s.target_calls, &id);
            limiters.push(limiter_row(
                "target",
                &id,
                l.rpm,
                l.tpm,
                l.max_in_flight,
                used,
                in_flight,
            ));
        }
    }

    let iot = match app.iot.get() {
        None => Value::Null,
        Some(iot) => iot_view(iot).await,
    };

    let cache_tiers = gw.client.cache().map(|c| {
        let s = c.stats();
        json!({
            "l1_hits": s.l1_hits,
            "l2_hits": s.l2_hits,
            "semantic_hits": s.semantic_hits,
            "stale_hits": s.stale_hits,
            "misses": s.misses,
            "bypasses": s.bypasses,
            "entries": s.entries,
            "tokens_saved": s.tokens_saved,
            "usd_saved": s.usd_saved,
        })
    });

    json!({
        "version": SNAPSHOT_VERSION,
        "at_ms": history::unix_ms(),
        "uptime_s": app.started.elapsed().as_secs(),
        "providers": gw.origin,
        "admin_key": gw.admin_digest.is_some(),
        "traffic": {
            "rps": s5.rps,
            "requests_10s": s10.requests,
            "requests_300s": s300.requests,
            "errors_10s": s10.errors,
            "latency_ms": s10.latency_ms,
            "ttft_ms": s10.ttft_ms,
            "retries_300s": s300.retries,
            "failovers_300s": s300.failovers,
            "hedges_300s": s300.hedges,
            "degraded_300s": s300.degraded,
            "errors_by_kind_300s": s300.errors_by_kind,
            "cost_usd_300s": s300.cost_usd,
        },
        "totals": gw.client.stats(),
        "series": app.live.series(120),
        "cache": {
            "window_300s": s300.cache,
            "tiers": cache_tiers,
        },
        "targets": targets,
        "breaker_changes": changes.iter().rev().take(30).collect::<Vec<_>>(),
        "limits": {
            "window_s": window_s,
            "keys": keys,
            "upstream": limiters,
        },
        "iot": iot,
    })
}

fn limiter_row(
    scope: &str,
    name: &str,
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_in_flight: Option<u32>,
    used: Option<u64>,
    in_flight: u64,
) -> Value {
    json!({
        "scope": scope,
        "name": name,
        "rpm": rpm,
        "tpm": tpm,
        "used_recent": used,
        "headroom": rpm.zip(used).map(|(l, u)| l.saturating_sub(u)),
        "headroom_ratio": rpm.zip(used).and_then(|(l, u)| ratio(l.saturating_sub(u), l)),
        "max_in_flight": max_in_flight,
        "in_flight": in_flight,
    })
}

async fn iot_view(iot: &breakwater_iot::IotService) -> Value {
    use breakwater_iot::status::RequestStatus;
    use breakwater_iot::store::ListQuery;
    let strip = |r: breakwater_iot::store::RequestRecord| {
        let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("parse");
        }
        v
    };
    let recent = iot
        .list(&ListQuery {
            limit: Some(15),
            ..Default::default()
        })
        .await;
    let pending = iot
        .list(&ListQuery {
            status: Some(RequestStatus::PendingConfirmation),
            limit: Some(20),
            ..Default::default()
        })
        .await;
    let error = match (&recent, &pending) {
        (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
        _ => None,
    };
    let devices: Vec<Value> = iot
        .devices()
        .into_iter()
        .map(|d| json!({"id": d.id, "name": d.name, "room": d.room, "type": d.kind, "state": d.state}))
        .collect();
    json!({
        "connected": iot.is_connected(),
        "error": error,
        "recent": recent.map(|v| v.into_iter().map(strip).collect::<Vec<_>>()).unwrap_or_default(),
        "pending": pending.map(|v| v.into_iter().map(strip).collect::<Vec<_>>()).unwrap_or_default(),
        "devices": devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; bw_dashboard=abc ;b=2"));
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("x=1"));
        h.append(header::COOKIE, HeaderValue::from_static("bw_dashboard=def"));
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("def"));
        assert_eq!(cookie(&HeaderMap::new(), COOKIE), None);
    }

    #[test]
    fn the_session_token_is_neither_the_key_nor_its_digest() {
        let d = crate::auth::digest("admin-fake-key");
        let t = session_token(&d);
        assert_eq!(t.len(), 64);
        assert_ne!(t, hex::encode(d));
        assert!(!t.contains("admin-fake-key"));
        assert_ne!(t, session_token(&crate::auth::digest("other-fake-key")));
    }

    #[test]
    fn refusals_escape_their_text() {
        assert_eq!(escape("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }
}
