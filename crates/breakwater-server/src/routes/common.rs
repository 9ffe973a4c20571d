//! What every API route does before and after the client: read the body
//! within its limit, parse JSON with errors that name the position or the
//! field, authenticate, check the key's model allowlist, take the key's rate
//! limits and budget (reserve), and settle them with the real usage.

use crate::auth::{self, KeyEntry};
use crate::controls::ratelimit_headers;
use crate::state::Gateway;
use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use breakwater::error::{Error, ErrorKind};
use breakwater::policy::ratelimit::PairReservation;
use breakwater::policy::spend::{Spend, SpendReservation};
use breakwater::types::Usage;
use std::net::SocketAddr;
use std::sync::Arc;

/// The peer address of a connection (set by the accept loop).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Reads the body, refusing more than `limit` bytes with 413.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, Error> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
            || e.to_string().contains("length limit");
        if too_large {
            Error::new(
                ErrorKind::InvalidRequest,
                format!("the request body is larger than {limit} bytes (server.max_body_bytes)"),
            )
            .with_code("request_too_large")
            .with_status(413)
        } else {
            Error::new(
                ErrorKind::InvalidRequest,
                format!("could not read the request body: {e}"),
            )
        }
    })
}

/// Parses JSON into `T`; the error names the field (`messages[0].role`) or
/// the position of a syntax error.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::new(
            ErrorKind::InvalidRequest,
            "the request body is empty: send a JSON object",
        ));
    }
    // The plain parser is several times faster than the path-tracking one,
    // which runs again only to name the field of an error.
    if let Ok(v) = breakwater::types::from_json_bytes(bytes) {
        return Ok(v);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => Error::new(
                ErrorKind::InvalidRequest,
                format!(
                    "invalid JSON at line {} column {}: {inner}",
                    inner.line(),
                    inner.column()
                ),
            ),
            serde_json::error::Category::Data => {
                let (param, msg) = if path == "." || path.is_empty() {
                    (None, inner.to_string())
                } else {
                    (Some(path.clone()), format!("{path}: {inner}"))
                };
                let mut err = Error::new(ErrorKind::InvalidRequest, msg);
                err.param = param;
                err
            }
        }
    })
}

/// Authentication and the model allowlist: the key (or `None` in open
/// mode, which only serves loopback unless allowed).
pub fn authorize(
    gw: &Gateway,
    headers: &HeaderMap,
    peer: SocketAddr,
    model: &str,
) -> Result<Option<Arc<KeyEntry>>, Error> {
    if !gw.keys.enabled {
        if !peer.ip().is_loopback() && !gw.config.server.allow_open_non_loopback {
            return Err(Error::new(
                ErrorKind::Authentication,
                "this gateway has no keys configured and serves only loopback clients (configure `keys:` or server.allow_open_non_loopback)",
            )
            .with_code("open_mode_loopback_only"));
        }
        return Ok(None);
    }
    let key = gw.keys.authenticate(auth::presented(headers))?;
    if !model.is_empty() && !key.allows(model) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!("the key `{}` may not use the model `{model}`", key.name),
        )
        .with_code("model_not_allowed"));
    }
    Ok(Some(key))
}

/// A key's hold on its limits and budget for one request.
#[derive(Default)]
pub struct Hold {
    key: Option<Arc<KeyEntry>>,
    // Boxed: a hold lives in every request's future and every open stream,
    // and most keys have no limits.
    limits: Option<Box<PairReservation>>,
    spend: Option<SpendReservation>,
    /// `x-ratelimit-*` headers.
    pub headers: HeaderMap,
}

/// Takes the key's rate limits (one request, `tokens` estimated) and
/// reserves `cost` from its budget. A refusal carries the headers too.
pub async fn admit(key: Option<&Arc<KeyEntry>>, tokens: u64, cost: Spend) -> Result<Hold, (Error, HeaderMap)> {
    let Some(key) = key else { return Ok(Hold::default()) };
    let mut hold = Hold {
        key: Some(key.clone()),
        ..Default::default()
    };
    if !key.limits.is_unlimited() {
        // Boxed here and below: a limiter or budget call (Redis-backed
        // ones especially) is large, and inline it would sit in every
        // handler's future whether the key has limits or not
        // (routes/future_sizes.rs).
        match Box::pin(key.limits.try_acquire(&key.name, tokens)).await {
            Ok(r) => {
                if let Some(d) = r.requests() {
                    ratelimit_headers(&mut hold.headers, "requests", d.decision());
                }
                if let Some(d) = r.tokens() {
                    ratelimit_headers(&mut hold.headers, "tokens", d.decision());
                }
                crate::metrics::limiter("key", &key.name, true);
                hold.limits = Some(Box::new(r));
            }
            Err(rej) => {
                crate::metrics::limiter("key", &key.name, false);
                let mut h = HeaderMap::new();
                if let Some(d) = &rej.decision {
                    let what = if rej.error.message.contains("token") {
                        "tokens"
                    } else {
                        "requests"
                    };
                    ratelimit_headers(&mut h, what, d);
                }
                return Err((*rej.error, h));
            }
        }
    }
    if let Some(s) = &key.spend {
        match Box::pin(s.reserve(&key.name, cost)).await {
            Ok(r) => hold.spend = Some(r),
            Err(e) => {
                crate::metrics::limiter("budget", &key.name, false);
                let h = std::mem::take(&mut hold.headers);
                Box::pin(hold.settle(None, 0.0)).await;
                return Err((e, h));
            }
        }
    }
    Ok(hold)
}

impl Hold {
    /// Settles with the real usage and cost (`None`: nothing was used).
    ///
    /// Not an `async fn`: the future holds only what settling needs, not
    /// the whole hold twice (its headers included).
    pub fn settle(self, usage: Option<&Usage>, cost_usd: f64) -> impl Future<Output = ()> + Send + use<> {
        let tokens = usage.map_or(0, |u| u64::from(u.total_tokens));
        let Hold { key, limits, spend, .. } = self;
        async move {
            let Some(key) = key else { return };
            if let Some(r) = limits {
                Box::pin(key.limits.settle(&key.name, *r, tokens)).await;
            }
            if let (Some(s), Some(r)) = (&key.spend, spend) {
                let actual = Spend {
                    tokens,
                    nano_usd: (cost_usd * 1e9).round() as u64,
                };
                Box::pin(s.settle(&key.name, r, actual)).await;
            }
        }
    }

    /// The tenant for the cache and idempotency scopes.
    pub fn tenant(&self) -> Option<Arc<str>> {
        self.key.as_ref().map(|k| k.name.clone())
    }
}

/// The cost to reserve before a call: the alias's first target's price
/// applied to the estimate.
pub fn estimate_cost(gw: &Gateway, alias: &str, prompt: u64, completion: u64) -> Spend {
    let model = gw
        .client
        .alias_config(alias)
        .and_then(|m| m.targets.first())
        .map_or("", |t| t.model.as_str());
    gw.config.prices.cost(model, prompt, completion)
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater::types::ChatRequest;

    #[test]
    fn json_errors_name_positions_and_fields() {
        let e = parse_json::<ChatRequest>(b"{\"model\": \"m\", ").unwrap_err();
        assert!(e.message.contains("line 1 column"), "{}", e.message);
        let e = parse_json::<ChatRequest>(br#"{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"), "{}", e.message);
        let e = parse_json::<ChatRequest>(br#"{"messages": []}"#).unwrap_err();
        assert!(e.message.contains("model"), "{}", e.message);
        let e = parse_json::<ChatRequest>(b"   ").unwrap_err();
        assert!(e.message.contains("empty"));
        let e = parse_json::<ChatRequest>(br#"{"model": "m", "messages": [], "temperature": "hot"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("temperature"));
    }
}
