//! Call accounting: what a call did (attempts, cache outcome, target,
//! degradation, tokens and cost), for logs, response headers and metrics,
//! and the explainable error when everything failed.

use crate::cache::CacheOutcome;
use crate::error::{Error, ErrorKind};
use crate::mode::UpstreamMode;
use crate::types::Usage;
use serde::Serialize;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// One attempt at one target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// `provider/model`.
    pub target: Arc<str>,
    /// `None` for success, else the error's kind.
    pub error: Option<ErrorKind>,
    /// The upstream's HTTP status, when there was one.
    pub status: Option<u16>,
    /// The error message (for the explanation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How long it took.
    pub latency_ms: u64,
    /// Whether it was a hedge.
    pub hedge: bool,
    /// Whether breakwater refused it locally (limiter, bulkhead, breaker)
    /// without calling the upstream.
    pub local: bool,
}

impl AttemptRecord {
    pub(crate) fn ok(target: &Arc<str>, latency: Duration, hedge: bool) -> Self {
        AttemptRecord {
            target: target.clone(),
            error: None,
            status: None,
            message: None,
            latency_ms: latency.as_millis() as u64,
            hedge,
            local: false,
        }
    }

    pub(crate) fn failed(target: &Arc<str>, e: &Error, latency: Duration, hedge: bool, local: bool) -> Self {
        AttemptRecord {
            target: target.clone(),
            error: Some(e.kind),
            status: e.status,
            message: Some(e.message.clone()),
            latency_ms: latency.as_millis() as u64,
            hedge,
            local,
        }
    }
}

/// How a degraded answer was produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "via", content = "detail")]
pub enum Degraded {
    /// A cached answer past its TTL.
    StaleCache,
    /// The alias's `fallback` alias answered.
    Fallback(String),
    /// The application's rule-based responder answered.
    RuleBased,
}

impl Degraded {
    /// The `x-breakwater-degraded` header value.
    pub fn header_value(&self) -> String {
        match self {
            Degraded::StaleCache => "stale-cache".into(),
            Degraded::Fallback(a) => format!("fallback={a}"),
            Degraded::RuleBased => "rule-based".into(),
        }
    }
}

/// What one call did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallMeta {
    /// Correlation id.
    pub request_id: Arc<str>,
    /// The alias asked for.
    pub alias: String,
    /// `provider/model` that answered.
    pub target: Option<Arc<str>>,
    /// Every attempt, in order (empty for cache hits and replays).
    pub attempts: Vec<AttemptRecord>,
    /// Cache outcome.
    pub cache: CacheOutcome,
    /// Set when a degraded path answered.
    pub degraded: Option<Degraded>,
    /// A hedge was started.
    pub hedged: bool,
    /// A broken stream was continued on another target.
    pub stitched: bool,
    /// The answer was a replay for a repeated `Idempotency-Key`.
    pub idempotent_replay: bool,
    /// The answer came from an identical request in flight.
    pub coalesced: bool,
    /// How the upstream was called.
    pub upstream_mode: Option<UpstreamMode>,
    /// Tokens used (for streams: known when the stream ends).
    pub usage: Option<Usage>,
    /// Cost in US dollars (0 for cache hits).
    pub cost_usd: f64,
    /// Total time.
    pub latency_ms: u64,
    /// Time to the first token (streams).
    pub ttft_ms: Option<u64>,
}

impl CallMeta {
    pub(crate) fn new(request_id: Arc<str>, alias: &str) -> Self {
        CallMeta {
            request_id,
            alias: alias.to_string(),
            target: None,
            attempts: Vec::new(),
            cache: CacheOutcome::Bypass,
            degraded: None,
            hedged: false,
            stitched: false,
            idempotent_replay: false,
            coalesced: false,
            upstream_mode: None,
            usage: None,
            cost_usd: 0.0,
            latency_ms: 0,
            ttft_ms: None,
        }
    }

    /// Upstream attempts made (local refusals not counted).
    pub fn upstream_attempts(&self) -> usize {
        self.attempts.iter().filter(|a| !a.local).count()
    }

    /// Retries: attempts beyond the first at each target.
    pub fn retries(&self) -> usize {
        // Attempts are few: compare with the earlier ones in place rather
        // than collect them (this runs for every request).
        let counted = |a: &&AttemptRecord| !a.local && !a.hedge;
        self.attempts
            .iter()
            .enumerate()
            .filter(|(_, a)| counted(a))
            .filter(|(i, a)| self.attempts[..*i].iter().filter(counted).any(|b| b.target == a.target))
            .count()
    }

    /// Failovers: how many times a further target was tried.
    pub fn failovers(&self) -> usize {
        let counted = |a: &&AttemptRecord| !a.hedge;
        let targets = self
            .attempts
            .iter()
            .enumerate()
            .filter(|(_, a)| counted(a))
            .filter(|(i, a)| !self.attempts[..*i].iter().filter(counted).any(|b| b.target == a.target))
            .count();
        targets.saturating_sub(1)
    }
}

/// A call that failed: the error (its kind decides the HTTP status) and
/// what was tried.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The error to report.
    pub error: Error,
    /// What the call did.
    pub meta: Box<CallMeta>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for Failure {}

impl From<Failure> for Error {
    fn from(f: Failure) -> Error {
        f.error
    }
}

/// The explainable error when every route failed: the last error's kind
/// (so the caller sees e.g. 429 if the last target was rate limited),
/// the shortest retry-after seen, and a message listing what was tried.
pub fn explain(attempts: &[AttemptRecord], last: &Error, alias: &str) -> Error {
    if attempts.is_empty() {
        return last.clone();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < attempts.len() {
        let a = &attempts[i];
        let mut n = 1;
        while i + n < attempts.len() && attempts[i + n].target == a.target && attempts[i + n].error == a.error {
            n += 1;
        }
        let what = match (a.error, a.status) {
            (None, _) => "ok".to_string(),
            (Some(k), Some(s)) => format!("{k} (HTTP {s})"),
            (Some(k), None) => k.to_string(),
        };
        let times = if n > 1 { format!(" ×{n}") } else { String::new() };
        let local = if a.local { " [not sent]" } else { "" };
        parts.push(format!("{}: {what}{times}{local}", a.target));
        i += n;
    }
    let mut e = last.clone();
    e.message = format!(
        "every route for `{alias}` failed — tried {}. Last error: {}",
        parts.join("; "),
        last.message
    );
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explanation_lists_targets_and_counts() {
        let a: Arc<str> = Arc::from("openai/gpt");
        let b: Arc<str> = Arc::from("sim/sim-1");
        let e500 = Error::new(ErrorKind::ServerError, "boom").with_status(500);
        let e429 = Error::new(ErrorKind::RateLimited, "slow").with_status(429);
        let attempts = vec![
            AttemptRecord::failed(&a, &e500, Duration::from_millis(5), false, false),
            AttemptRecord::failed(&a, &e500, Duration::from_millis(5), false, false),
            AttemptRecord::failed(&b, &e429, Duration::from_millis(5), false, false),
        ];
        let e = explain(&attempts, &e429, "fast");
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert!(
            e.message.contains("openai/gpt: server_error (HTTP 500) ×2"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("sim/sim-1: rate_limited (HTTP 429)"),
            "{}",
            e.message
        );
        let mut m = CallMeta::new(Arc::from("r"), "fast");
        m.attempts = attempts;
        assert_eq!((m.retries(), m.failovers(), m.upstream_attempts()), (1, 1, 3));
    }

    #[test]
    fn hedges_and_local_refusals_are_not_retries() {
        let t = |s: &str| -> Arc<str> { Arc::from(s) };
        let (a, b, c) = (t("a"), t("b"), t("c"));
        let e = Error::new(ErrorKind::ServerError, "boom");
        let d = Duration::from_millis(1);
        let mut m = CallMeta::new(Arc::from("r"), "m");
        m.attempts = vec![
            AttemptRecord::failed(&a, &e, d, false, false),
            AttemptRecord::failed(&a, &e, d, true, false), // a hedge at a
            AttemptRecord::failed(&b, &e, d, false, false),
            AttemptRecord::failed(&a, &e, d, false, false), // a retry at a
            AttemptRecord::failed(&b, &e, d, false, true),  // refused locally at b
            AttemptRecord::ok(&c, d, false),
        ];
        assert_eq!(m.retries(), 1);
        assert_eq!(m.failovers(), 2, "a, then b, then c");
        m.attempts.truncate(1);
        assert_eq!((m.retries(), m.failovers()), (0, 0));
        m.attempts.clear();
        assert_eq!((m.retries(), m.failovers()), (0, 0));
    }
}
