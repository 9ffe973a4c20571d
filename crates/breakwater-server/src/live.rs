//! Live statistics for `/admin/stats` and the dashboard: a ring of
//! per-second buckets (the last five minutes) of counters and log-scale
//! latency histograms, all atomics — recording a request takes no lock.
//! Aggregation happens when someone asks, so a busy gateway pays nothing
//! for an idle dashboard, and a dashboard never receives per-request events.

use breakwater::cache::CacheOutcome;
use breakwater::error::ErrorKind;
use serde::Serialize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Seconds of history kept.
pub const HISTORY_S: usize = 300;
/// Latency histogram buckets: 1.15× apart from 0.1 ms, to about 70 s.
const BUCKETS: usize = 96;
const BASE_US: f64 = 100.0;
const GROWTH: f64 = 1.15;

/// What is counted per second.
#[derive(Debug, Clone, Copy)]
#[repr(usize)]
enum C {
    Requests,
    Errors,
    Retries,
    Failovers,
    Hedges,
    Degraded,
    CacheHit,
    CacheSemantic,
    CacheStale,
    CacheMiss,
    CacheBypass,
    PromptTokens,
    CompletionTokens,
    /// Nano-dollars spent.
    CostNano,
    /// Tokens answered from the cache instead of upstream.
    SavedTokens,
    /// Nano-dollars not spent thanks to the cache.
    SavedNano,
    Streams,
    Count,
}

const N: usize = C::Count as usize;

struct Slot {
    second: AtomicU64,
    counters: [AtomicU64; N],
    errors_by_kind: [AtomicU64; ErrorKind::ALL.len()],
    latency: [AtomicU32; BUCKETS],
    ttft: [AtomicU32; BUCKETS],
}

impl Slot {
    fn new() -> Self {
        Slot {
            second: AtomicU64::new(u64::MAX),
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            errors_by_kind: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
            ttft: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    fn clear(&self) {
        self.counters.iter().for_each(|c| c.store(0, Ordering::Relaxed));
        self.errors_by_kind.iter().for_each(|c| c.store(0, Ordering::Relaxed));
        self.latency.iter().for_each(|c| c.store(0, Ordering::Relaxed));
        self.ttft.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    }
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_micros() as f64;
    if us <= BASE_US {
        return 0;
    }
    (((us / BASE_US).ln() / GROWTH.ln()).ceil() as usize).min(BUCKETS - 1)
}

fn bucket_upper_ms(i: usize) -> f64 {
    BASE_US * GROWTH.powi(i as i32) / 1000.0
}

/// One finished request, as the statistics see it.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// Total time.
    pub latency: Duration,
    /// Time to first token (streams).
    pub ttft: Option<Duration>,
    /// The error kind, when it failed.
    pub error: Option<ErrorKind>,
    /// Retries made.
    pub retries: u32,
    /// Failovers made.
    pub failovers: u32,
    /// Whether it hedged.
    pub hedged: bool,
    /// Whether a degraded path answered.
    pub degraded: bool,
    /// The cache outcome.
    pub cache: Option<CacheOutcome>,
    /// Prompt tokens billed.
    pub prompt_tokens: u64,
    /// Completion tokens billed.
    pub completion_tokens: u64,
    /// Dollars spent.
    pub cost_usd: f64,
    /// Tokens served from the cache.
    pub saved_tokens: u64,
    /// Dollars saved by the cache.
    pub saved_usd: f64,
    /// Whether it was a stream.
    pub stream: bool,
}

/// The statistics.
pub struct Live {
    epoch: Instant,
    slots: Vec<Slot>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

/// One second of the history, for charts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Point {
    /// Seconds ago (0 = the current second).
    pub ago_s: u64,
    /// Requests finished.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Retries.
    pub retries: u64,
    /// Failovers.
    pub failovers: u64,
    /// Hedges.
    pub hedges: u64,
    /// p50 latency, ms.
    pub p50_ms: Option<f64>,
    /// p99 latency, ms.
    pub p99_ms: Option<f64>,
}

/// Aggregates over a window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The window, seconds.
    pub window_s: u64,
    /// Requests.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Failed requests.
    pub errors: u64,
    /// Failures by kind.
    pub errors_by_kind: std::collections::BTreeMap<String, u64>,
    /// Retries.
    pub retries: u64,
    /// Failovers.
    pub failovers: u64,
    /// Hedges.
    pub hedges: u64,
    /// Degraded answers.
    pub degraded: u64,
    /// Streams.
    pub streams: u64,
    /// Latency percentiles, ms.
    pub latency_ms: Percentiles,
    /// Time-to-first-token percentiles, ms.
    pub ttft_ms: Percentiles,
    /// Cache outcomes.
    pub cache: CacheView,
    /// Tokens billed.
    pub prompt_tokens: u64,
    /// Tokens billed.
    pub completion_tokens: u64,
    /// Dollars spent.
    pub cost_usd: f64,
}

/// p50 / p90 / p99.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th.
    pub p90: Option<f64>,
    /// 99th.
    pub p99: Option<f64>,
}

/// Cache outcomes and savings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheView {
    /// Exact hits.
    pub hit: u64,
    /// Semantic hits.
    pub semantic: u64,
    /// Stale answers.
    pub stale: u64,
    /// Misses.
    pub miss: u64,
    /// Bypasses.
    pub bypass: u64,
    /// (hit + semantic) / (hit + semantic + miss).
    pub hit_rate: Option<f64>,
    /// Tokens not sent upstream.
    pub tokens_saved: u64,
    /// Dollars not spent.
    pub usd_saved: f64,
}

fn percentile(hist: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some((bucket_upper_ms(i) * 100.0).round() / 100.0);
        }
    }
    None
}

impl Live {
    /// Empty statistics.
    pub fn new() -> Self {
        Live {
            epoch: Instant::now(),
            slots: (0..HISTORY_S).map(|_| Slot::new()).collect(),
        }
    }

    fn second(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    fn slot(&self, sec: u64) -> &Slot {
        let s = &self.slots[(sec % HISTORY_S as u64) as usize];
        let old = s.second.load(Ordering::Acquire);
        if old != sec
            && s.second
                .compare_exchange(old, sec, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // The first recorder of a new second clears what it held five
            // minutes ago; a concurrent write may be lost, which stats tolerate.
            s.clear();
        }
        s
    }

    /// Records a finished request.
    pub fn record(&self, e: &Event) {
        let s = self.slot(self.second());
        let add = |c: C, v: u64| {
            if v > 0 {
                s.counters[c as usize].fetch_add(v, Ordering::Relaxed);
            }
        };
        add(C::Requests, 1);
        add(C::Retries, u64::from(e.retries));
        add(C::Failovers, u64::from(e.failovers));
        add(C::Hedges, u64::from(e.hedged));
        add(C::Degraded, u64::from(e.degraded));
        add(C::Streams, u64::from(e.stream));
        add(C::PromptTokens, e.prompt_tokens);
        add(C::CompletionTokens, e.completion_tokens);
        add(C::CostNano, (e.cost_usd * 1e9) as u64);
        add(C::SavedTokens, e.saved_tokens);
        add(C::SavedNano, (e.saved_usd * 1e9) as u64);
        if let Some(k) = e.error {
            add(C::Errors, 1);
            s.errors_by_kind[k as usize].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = e.cache {
            add(
                match c {
                    CacheOutcome::Hit => C::CacheHit,
                    CacheOutcome::Semantic => C::CacheSemantic,
                    CacheOutcome::Stale => C::CacheStale,
                    CacheOutcome::Miss => C::CacheMiss,
                    CacheOutcome::Bypass => C::CacheBypass,
                },
                1,
            );
        }
        s.latency[bucket_of(e.latency)].fetch_add(1, Ordering::Relaxed);
        if let Some(t) = e.ttft {
            s.ttft[bucket_of(t)].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn valid(&self, now: u64, ago: u64) -> Option<&Slot> {
        let sec = now.checked_sub(ago)?;
        let s = &self.slots[(sec % HISTORY_S as u64) as usize];
        (s.second.load(Ordering::Acquire) == sec).then_some(s)
    }

    /// Aggregates over the last `window_s` seconds (the current one included).
    pub fn summary(&self, window_s: u64) -> Summary {
        let window_s = window_s.clamp(1, HISTORY_S as u64);
        let now = self.second();
        let mut c = [0u64; N];
        let mut kinds = [0u64; ErrorKind::ALL.len()];
        let mut lat = [0u64; BUCKETS];
        let mut ttft = [0u64; BUCKETS];
        for ago in 0..window_s {
            let Some(s) = self.valid(now, ago) else { continue };
            for (sum, v) in c.iter_mut().zip(&s.counters) {
                *sum += v.load(Ordering::Relaxed);
            }
            for (sum, v) in kinds.iter_mut().zip(&s.errors_by_kind) {
                *sum += v.load(Ordering::Relaxed);
            }
            for (sum, v) in lat.iter_mut().zip(&s.latency) {
                *sum += u64::from(v.load(Ordering::Relaxed));
            }
            for (sum, v) in ttft.iter_mut().zip(&s.ttft) {
                *sum += u64::from(v.load(Ordering::Relaxed));
            }
        }
        // The current second is partial: rates use the elapsed time.
        let elapsed = self.epoch.elapsed().as_secs_f64();
        let span = (window_s as f64 - 1.0 + elapsed.fract()).clamp(1e-3, elapsed.max(1e-3));
        let g = |k: C| c[k as usize];
        let looked = g(C::CacheHit) + g(C::CacheSemantic) + g(C::CacheMiss);
        Summary {
            window_s,
            requests: g(C::Requests),
            rps: (g(C::Requests) as f64 / span * 100.0).round() / 100.0,
            errors: g(C::Errors),
            errors_by_kind: ErrorKind::ALL
                .iter()
                .zip(kinds)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.as_str().to_string(), n))
                .collect(),
            retries: g(C::Retries),
            failovers: g(C::Failovers),
            hedges: g(C::Hedges),
            degraded: g(C::Degraded),
            streams: g(C::Streams),
            latency_ms: Percentiles {
                p50: percentile(&lat, 0.5),
                p90: percentile(&lat, 0.9),
                p99: percentile(&lat, 0.99),
            },
            ttft_ms: Percentiles {
                p50: percentile(&ttft, 0.5),
                p90: percentile(&ttft, 0.9),
                p99: percentile(&ttft, 0.99),
            },
            cache: CacheView {
                hit: g(C::CacheHit),
                semantic: g(C::CacheSemantic),
                stale: g(C::CacheStale),
                miss: g(C::CacheMiss),
                bypass: g(C::CacheBypass),
                hit_rate: (looked > 0).then(|| (g(C::CacheHit) + g(C::CacheSemantic)) as f64 / looked as f64),
                tokens_saved: g(C::SavedTokens),
                usd_saved: g(C::SavedNano) as f64 / 1e9,
            },
            prompt_tokens: g(C::PromptTokens),
            completion_tokens: g(C::CompletionTokens),
            cost_usd: g(C::CostNano) as f64 / 1e9,
        }
    }

    /// The last `n` seconds, oldest first, for charts.
    pub fn series(&self, n: usize) -> Vec<Point> {
        let now = self.second();
        let n = n.clamp(1, HISTORY_S);
        (0..n as u64)
            .rev()
            .map(|ago| match self.valid(now, ago) {
                None => Point {
                    ago_s: ago,
                    ..Default::default()
                },
                Some(s) => {
                    let g = |k: C| s.counters[k as usize].load(Ordering::Relaxed);
                    let mut lat = [0u64; BUCKETS];
                    for (i, b) in s.latency.iter().enumerate() {
                        lat[i] = u64::from(b.load(Ordering::Relaxed));
                    }
                    Point {
                        ago_s: ago,
                        requests: g(C::Requests),
                        errors: g(C::Errors),
                        retries: g(C::Retries),
                        failovers: g(C::Failovers),
                        hedges: g(C::Hedges),
                        p50_ms: percentile(&lat, 0.5),
                        p99_ms: percentile(&lat, 0.99),
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn summaries_and_series() {
        let live = Live::new();
        for i in 0..100u64 {
            live.record(&Event {
                latency: Duration::from_millis(10 + i),
                error: (i % 10 == 0).then_some(ErrorKind::RateLimited),
                retries: u32::from(i % 4 == 0),
                cache: Some(if i < 30 { CacheOutcome::Hit } else { CacheOutcome::Miss }),
                saved_tokens: if i < 30 { 10 } else { 0 },
                ..Default::default()
            });
        }
        tokio::time::advance(Duration::from_millis(1500)).await;
        live.record(&Event {
            latency: Duration::from_secs(2),
            ..Default::default()
        });
        let s = live.summary(10);
        assert_eq!(s.requests, 101);
        assert_eq!(s.errors, 10);
        assert_eq!(s.errors_by_kind.get("rate_limited"), Some(&10));
        assert_eq!(s.retries, 25);
        assert_eq!(s.cache.hit_rate, Some(0.3));
        assert_eq!(s.cache.tokens_saved, 300);
        let p50 = s.latency_ms.p50.unwrap();
        assert!((55.0..70.0).contains(&p50), "{p50}");
        assert!(s.latency_ms.p99.unwrap() >= 100.0);
        let series = live.series(3);
        assert_eq!(series.len(), 3);
        assert_eq!((series[1].requests, series[2].requests), (100, 1));
        // Five minutes later the old buckets no longer count.
        tokio::time::advance(Duration::from_secs(400)).await;
        assert_eq!(live.summary(300).requests, 0);
    }

    #[test]
    fn buckets_are_monotonic_and_bounded() {
        let mut last = 0;
        for ms in [0, 1, 2, 5, 10, 100, 1000, 10_000, 100_000, 10_000_000] {
            let b = bucket_of(Duration::from_millis(ms));
            assert!(b >= last && b < BUCKETS);
            last = b;
        }
        assert!(bucket_upper_ms(bucket_of(Duration::from_millis(100))) >= 100.0);
    }
}
