//! The request controls of CONFIG.md (headers a client sends) and the
//! response headers breakwater adds.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use breakwater::cache::CacheControl;
use breakwater::client::CallMeta;
use breakwater::error::Error;
use breakwater::policy::ratelimit::Decision;
use std::sync::Arc;
use std::time::Duration;

/// What the client asked for in headers.
#[derive(Debug, Clone, Default)]
pub struct Controls {
    /// `x-request-id`, or a new one.
    pub request_id: Option<Arc<str>>,
    /// `Cache-Control`.
    pub cache_control: CacheControl,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// `x-breakwater-timeout-ms`.
    pub timeout: Option<Duration>,
}

/// Longest accepted `x-request-id` (longer ones are replaced).
const MAX_REQUEST_ID: usize = 128;

/// Reads the controls; a malformed timeout is an error naming the header.
pub fn parse(h: &HeaderMap) -> Result<Controls, Error> {
    // Looked up by `HeaderName`: a `&str` name is parsed and checked again
    // on every lookup.
    let s = |name: &HeaderName| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let request_id = s(&X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(Arc::from);
    let cache_control = CacheControl::parse_all(
        h.get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let idempotency_key = s(&IDEMPOTENCY_KEY).filter(|v| !v.is_empty()).map(str::to_string);
    let timeout = match s(&X_TIMEOUT_MS) {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(ms) if ms > 0 && ms <= 3_600_000 => Some(Duration::from_millis(ms)),
            _ => {
                return Err(Error::invalid_param(
                    "x-breakwater-timeout-ms",
                    format!("`{v}` is not a number of milliseconds between 1 and 3600000"),
                ));
            }
        },
    };
    Ok(Controls {
        request_id,
        cache_control,
        idempotency_key,
        timeout,
    })
}

// Names made with `from_static` borrow their text; a `&str` name would be
// copied into a new allocation on every insert.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_CACHE: HeaderName = HeaderName::from_static("x-breakwater-cache");
const X_TARGET: HeaderName = HeaderName::from_static("x-breakwater-target");
const X_ATTEMPTS: HeaderName = HeaderName::from_static("x-breakwater-attempts");
const X_DEGRADED: HeaderName = HeaderName::from_static("x-breakwater-degraded");
const X_HEDGED: HeaderName = HeaderName::from_static("x-breakwater-hedged");
const X_COALESCED: HeaderName = HeaderName::from_static("x-breakwater-coalesced");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const X_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-breakwater-timeout-ms");
const LIMIT_REQUESTS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const LIMIT_TOKENS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];
const TRUE: HeaderValue = HeaderValue::from_static("true");

fn put(h: &mut HeaderMap, name: HeaderName, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(name, v);
    }
}

fn fmt_secs(d: Duration) -> String {
    // OpenAI's style: "1s", "6m0s", "20ms".
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// `x-ratelimit-*-requests` (or `-tokens`) from a limiter decision.
pub fn ratelimit_headers(h: &mut HeaderMap, what: &str, d: &Decision) {
    let [limit, remaining, reset] = match what {
        "requests" => LIMIT_REQUESTS,
        _ => LIMIT_TOKENS,
    };
    h.insert(limit, HeaderValue::from(d.limit));
    h.insert(remaining, HeaderValue::from(d.remaining));
    put(h, reset, &fmt_secs(d.reset_after));
}

/// A count as a header value; the usual small ones without allocating.
fn count_value(n: usize) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    SMALL
        .get(n)
        .map_or_else(|| HeaderValue::from(n), |s| HeaderValue::from_static(s))
}

/// The `x-breakwater-*` headers of a call.
pub fn meta_headers(h: &mut HeaderMap, meta: &CallMeta) {
    put(h, X_REQUEST_ID, &meta.request_id);
    h.insert(X_CACHE, HeaderValue::from_static(meta.cache.as_str()));
    if let Some(t) = &meta.target {
        put(h, X_TARGET, t);
    }
    h.insert(X_ATTEMPTS, count_value(meta.upstream_attempts()));
    if let Some(d) = &meta.degraded {
        put(h, X_DEGRADED, &d.header_value());
    }
    if meta.hedged {
        h.insert(X_HEDGED, TRUE);
    }
    if meta.coalesced {
        h.insert(X_COALESCED, TRUE);
    }
    if meta.idempotent_replay {
        h.insert(IDEMPOTENT_REPLAYED, TRUE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_become_header_values() {
        for n in [0usize, 1, 9, 10, 123, usize::MAX] {
            assert_eq!(count_value(n).to_str().ok(), Some(n.to_string().as_str()));
        }
    }

    #[test]
    fn controls_parse_and_refuse_bad_timeouts() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-1"));
        h.insert("cache-control", HeaderValue::from_static("no-store"));
        h.insert("idempotency-key", HeaderValue::from_static("k1"));
        h.insert("x-breakwater-timeout-ms", HeaderValue::from_static("2500"));
        let c = parse(&h).unwrap();
        assert_eq!(c.request_id.as_deref(), Some("abc-1"));
        assert!(c.cache_control.no_store);
        assert_eq!(c.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        h.insert("x-breakwater-timeout-ms", HeaderValue::from_static("soon"));
        assert_eq!(parse(&h).unwrap_err().param.as_deref(), Some("x-breakwater-timeout-ms"));
    }

    #[test]
    fn reset_durations_look_like_openais() {
        assert_eq!(fmt_secs(Duration::from_millis(20)), "20ms");
        assert_eq!(fmt_secs(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_secs(Duration::from_secs(2)), "2s");
        assert_eq!(fmt_secs(Duration::from_secs(360)), "6m0s");
    }
}
