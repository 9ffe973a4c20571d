//! Prometheus metrics, all named `breakwater_*`, rendered on our own
//! `/metrics` route (no second listener). Per-request counters are recorded
//! as requests finish; state (breakers, cache, limiters) is read at scrape
//! time, so it costs nothing between scrapes.

use breakwater::client::CallMeta;
use breakwater::policy::breaker::BreakerState;
use handles::{count, observe};
use metrics::{counter, gauge};

mod handles;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets, seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The process-wide recorder (installed on first use; `None` if another
/// recorder was installed first).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .ok()
                .and_then(|b| b.install_recorder().ok())
        })
        .as_ref()
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds the histogram samples recorded since the last round into their
/// buckets every [`UPKEEP_EVERY`], until `stop`. Why: the recorder keeps
/// every sample in a growing list until upkeep runs, and it runs on its own
/// only at a scrape, so a gateway nobody scrapes would grow by every
/// latency it records (several samples per request, without bound). The
/// fold runs on a blocking thread so that a worker never waits for it.
pub async fn upkeep_until(stop: tokio_util::sync::CancellationToken) {
    let Some(h) = handle() else { return };
    crate::periodic::every(UPKEEP_EVERY, stop, || async move {
        let _ = tokio::task::spawn_blocking(move || h.run_upkeep()).await;
    })
    .await;
}

/// Records one finished request.
pub fn request(route: &'static str, model: &str, status: u16, meta: Option<&CallMeta>, latency: Duration) {
    let cache = meta.map_or("none", |m| m.cache.as_str());
    let code = status_digits(status);
    let status = std::str::from_utf8(&code).unwrap_or("000");
    count(
        "breakwater_requests_total",
        &[("route", route), ("model", model), ("status", status), ("cache", cache)],
        1,
    );
    observe(
        "breakwater_request_duration_seconds",
        &[("route", route), ("model", model)],
        latency.as_secs_f64(),
    );
    let Some(m) = meta else { return };
    for a in &m.attempts {
        let outcome = a.error.map_or("ok", |k| k.as_str());
        let local = if a.local { "true" } else { "false" };
        count(
            "breakwater_upstream_attempts_total",
            &[("target", &a.target), ("outcome", outcome), ("local", local)],
            1,
        );
    }
    let retries = m.retries() as u64;
    if retries > 0 {
        count("breakwater_retries_total", &[("model", model)], retries);
    }
    let failovers = m.failovers() as u64;
    if failovers > 0 {
        count("breakwater_failovers_total", &[("model", model)], failovers);
    }
    if m.hedged {
        count("breakwater_hedges_total", &[("model", model)], 1);
    }
    if let Some(d) = &m.degraded {
        let via = match d {
            breakwater::client::Degraded::StaleCache => "stale_cache",
            breakwater::client::Degraded::Fallback(_) => "fallback",
            breakwater::client::Degraded::RuleBased => "rule_based",
        };
        count("breakwater_degraded_total", &[("model", model), ("via", via)], 1);
    }
    if let Some(ms) = m.ttft_ms {
        observe(
            "breakwater_time_to_first_token_seconds",
            &[("model", model)],
            ms as f64 / 1000.0,
        );
    }
    tokens(model, m.target.as_deref(), m.usage.as_ref(), m.cost_usd);
}

/// An HTTP status (always three digits) as text, without allocating.
fn status_digits(code: u16) -> [u8; 3] {
    let code = code.min(999);
    [
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

/// Records tokens and cost (also called when a stream ends).
pub fn tokens(model: &str, target: Option<&str>, usage: Option<&breakwater::types::Usage>, cost_usd: f64) {
    let Some(u) = usage else { return };
    let target = target.unwrap_or("none");
    count(
        "breakwater_tokens_total",
        &[("model", model), ("target", target), ("kind", "prompt")],
        u64::from(u.prompt_tokens),
    );
    count(
        "breakwater_tokens_total",
        &[("model", model), ("target", target), ("kind", "completion")],
        u64::from(u.completion_tokens),
    );
    if cost_usd > 0.0 {
        // Counters are integers: cost in micro-dollars.
        count(
            "breakwater_cost_microusd_total",
            &[("model", model), ("target", target)],
            (cost_usd * 1e6).round() as u64,
        );
    }
}

/// A limiter or budget decision by a key.
pub fn limiter(scope: &'static str, name: &str, allowed: bool) {
    let decision = if allowed { "allowed" } else { "rejected" };
    count(
        "breakwater_limiter_decisions_total",
        &[("scope", scope), ("name", name), ("decision", decision)],
        1,
    );
}

/// Configuration reloads done and refused (a refused reload keeps the old
/// configuration running: alert on it, the file on disk is not what runs).
pub fn reloads(ok: u64, refused: u64) {
    counter!("breakwater_config_reloads_total", "outcome" => "ok").absolute(ok);
    counter!("breakwater_config_reloads_total", "outcome" => "refused").absolute(refused);
}

/// Reads the gateway's state into gauges, then renders.
pub fn render(gw: &crate::state::Gateway) -> String {
    // The recorder must be in place before the gauges below are set.
    let handle = handle();
    for t in gw.client.targets() {
        let state = match t.breaker.state {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        };
        gauge!("breakwater_breaker_state", "target" => t.id.to_string()).set(state);
        gauge!("breakwater_target_in_flight", "target" => t.id.to_string()).set(f64::from(t.stats.in_flight));
        counter!("breakwater_breaker_trips_total", "target" => t.id.to_string()).absolute(u64::from(t.breaker.trips));
        counter!("breakwater_breaker_rejected_total", "target" => t.id.to_string()).absolute(t.breaker.rejected_total);
    }
    if let Some(c) = gw.client.cache() {
        let s = c.stats();
        for (tier, n) in [
            ("l1", s.l1_hits),
            ("l2", s.l2_hits),
            ("semantic", s.semantic_hits),
            ("stale", s.stale_hits),
        ] {
            counter!("breakwater_cache_hits_total", "tier" => tier).absolute(n);
        }
        counter!("breakwater_cache_misses_total").absolute(s.misses);
        counter!("breakwater_cache_bypasses_total").absolute(s.bypasses);
        counter!("breakwater_cache_l2_errors_total").absolute(s.l2_errors);
        counter!("breakwater_cache_evictions_total").absolute(s.evictions);
        counter!("breakwater_cache_tokens_saved_total").absolute(s.tokens_saved);
        gauge!("breakwater_cache_usd_saved").set(s.usd_saved);
        gauge!("breakwater_cache_entries").set(s.entries as f64);
        gauge!("breakwater_cache_bytes").set(s.bytes as f64);
    }
    if let Some(r) = &gw.redis {
        let s = r.stats();
        gauge!("breakwater_redis_down").set(if s.down { 1.0 } else { 0.0 });
        counter!("breakwater_redis_calls_total", "outcome" => "ok").absolute(s.ok);
        counter!("breakwater_redis_calls_total", "outcome" => "failed").absolute(s.failed);
        counter!("breakwater_redis_calls_total", "outcome" => "skipped").absolute(s.skipped);
    }
    let st = gw.client.stats();
    gauge!("breakwater_retry_budget_allowed").set(st.retry_budget.allowed as f64);
    counter!("breakwater_retry_budget_refused_total").absolute(st.retry_budget.refused_total);
    match handle {
        // render folds the pending histogram samples itself
        Some(h) => h.render(),
        None => "# metrics recorder unavailable (another recorder is installed)\n".to_string(),
    }
}
