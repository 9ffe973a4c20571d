//! Live statistics of one target: calls in flight, peak-EWMA latencies
//! (time to first token and total), a window of recent first-token times
//! for the p95 used by hedging, error counts by kind, and cool-downs.
//!
//! Updates are lock-free except the small latency window. Races between
//! concurrent updates may lose a sample, which statistics tolerate.

use crate::error::ErrorKind;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Time constant of the latency EWMAs.
const TAU: Duration = Duration::from_secs(10);
/// First-token samples kept for the p95.
const WINDOW: usize = 128;

/// A lock-free f64 in an `AtomicU64`.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn load(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    fn store(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// A peak-EWMA (as in Finagle's load balancer): jumps up to a slow sample
/// at once, decays towards faster ones over [`TAU`].
#[derive(Debug, Default)]
struct PeakEwma {
    value_ms: AtomicF64,
    stamp_ms: AtomicU64,
    samples: AtomicU64,
}

impl PeakEwma {
    fn observe(&self, now_ms: u64, sample_ms: f64) {
        let prev = self.value_ms.load();
        let n = self.samples.fetch_add(1, Ordering::Relaxed);
        let next = if n == 0 || sample_ms > prev {
            sample_ms
        } else {
            let elapsed = now_ms.saturating_sub(self.stamp_ms.load(Ordering::Relaxed)) as f64;
            let w = (-elapsed / TAU.as_millis() as f64).exp();
            prev * w + sample_ms * (1.0 - w)
        };
        self.value_ms.store(next);
        self.stamp_ms.store(now_ms, Ordering::Relaxed);
    }

    fn get(&self) -> Option<f64> {
        (self.samples.load(Ordering::Relaxed) > 0).then(|| self.value_ms.load())
    }
}

/// The statistics of one target.
#[derive(Debug)]
pub struct TargetStats {
    epoch: Instant,
    in_flight: AtomicU32,
    ttft: PeakEwma,
    total: PeakEwma,
    recent_ttft: Mutex<VecDeque<u32>>,
    successes: AtomicU64,
    failures: AtomicU64,
    by_kind: [AtomicU64; ErrorKind::ALL.len()],
    last_failure_ms: AtomicU64,
    cooldown_until_ms: AtomicU64,
    last_forced_ms: AtomicU64,
}

impl Default for TargetStats {
    fn default() -> Self {
        Self::new()
    }
}

/// A snapshot for metrics and the dashboard.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TargetStatsSnapshot {
    /// Calls in flight.
    pub in_flight: u32,
    /// Peak-EWMA time to first token, ms.
    pub ttft_ms: Option<f64>,
    /// Peak-EWMA total latency, ms.
    pub total_ms: Option<f64>,
    /// p95 of recent first-token times, ms.
    pub ttft_p95_ms: Option<u32>,
    /// Successful calls.
    pub successes: u64,
    /// Failed calls.
    pub failures: u64,
    /// Failures by kind (only kinds seen).
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Remaining cool-down, ms (0 when none).
    pub cooldown_ms: u64,
}

impl TargetStats {
    /// Empty statistics.
    pub fn new() -> Self {
        TargetStats {
            epoch: Instant::now(),
            in_flight: AtomicU32::new(0),
            ttft: PeakEwma::default(),
            total: PeakEwma::default(),
            recent_ttft: Mutex::new(VecDeque::with_capacity(WINDOW)),
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            by_kind: std::array::from_fn(|_| AtomicU64::new(0)),
            last_failure_ms: AtomicU64::new(0),
            cooldown_until_ms: AtomicU64::new(0),
            last_forced_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Counts a call in flight until the guard drops.
    pub fn start(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self)
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records a first token after `ttft`.
    pub fn observe_ttft(&self, ttft: Duration) {
        let ms = ttft.as_secs_f64() * 1000.0;
        self.ttft.observe(self.now_ms(), ms);
        if let Ok(mut w) = self.recent_ttft.lock() {
            if w.len() == WINDOW {
                w.pop_front();
            }
            w.push_back(ms.min(u32::MAX as f64) as u32);
        }
    }

    /// Records a success that took `total`.
    pub fn observe_success(&self, total: Duration) {
        self.successes.fetch_add(1, Ordering::Relaxed);
        self.total.observe(self.now_ms(), total.as_secs_f64() * 1000.0);
    }

    /// Records a failure of `kind`; with `cooldown`, the target is skipped
    /// by the router until it passes (a 429's Retry-After).
    pub fn observe_failure(&self, kind: ErrorKind, cooldown: Option<Duration>) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = ErrorKind::ALL.iter().position(|k| *k == kind) {
            self.by_kind[i].fetch_add(1, Ordering::Relaxed);
        }
        let now = self.now_ms();
        self.last_failure_ms.store(now.max(1), Ordering::Relaxed);
        if let Some(c) = cooldown {
            let until = now + c.as_millis() as u64;
            self.cooldown_until_ms.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Peak-EWMA time to first token, ms.
    pub fn ttft_ms(&self) -> Option<f64> {
        self.ttft.get()
    }

    /// Peak-EWMA total latency, ms.
    pub fn total_ms(&self) -> Option<f64> {
        self.total.get()
    }

    /// p95 of recent first-token times (needs 20 samples).
    pub fn ttft_p95(&self) -> Option<Duration> {
        let w = self.recent_ttft.lock().ok()?;
        if w.len() < 20 {
            return None;
        }
        let mut v: Vec<u32> = w.iter().copied().collect();
        let last = v.len() - 1;
        let idx = (((v.len() as f64) * 0.95).ceil() as usize).saturating_sub(1).min(last);
        let (_, p, _) = v.select_nth_unstable(idx);
        Some(Duration::from_millis(u64::from(*p)))
    }

    /// Whether the target is cooling down (after a 429 with Retry-After).
    pub fn cooling_down(&self) -> bool {
        self.now_ms() < self.cooldown_until_ms.load(Ordering::Relaxed)
    }

    /// Claims the right to force a probe through an open breaker, at most
    /// once per `every` (so a dead target sees a trickle, not every request).
    pub fn try_force_probe(&self, every: Duration) -> bool {
        let now = self.now_ms().max(1);
        let last = self.last_forced_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < every.as_millis() as u64 {
            return false;
        }
        self.last_forced_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Ends a cool-down early (an active probe found the target answering).
    pub fn clear_cooldown(&self) {
        self.cooldown_until_ms.store(0, Ordering::Relaxed);
    }

    /// How long ago the last failure was (`None` if never).
    pub fn since_last_failure(&self) -> Option<Duration> {
        match self.last_failure_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_millis(self.now_ms().saturating_sub(t))),
        }
    }

    /// The p2c / least-latency cost: latency × (in flight + 1).
    pub fn cost(&self, stream: bool) -> f64 {
        let lat = if stream { self.ttft_ms() } else { self.total_ms() };
        lat.unwrap_or(0.0) * f64::from(self.in_flight() + 1)
    }

    /// A snapshot.
    pub fn snapshot(&self) -> TargetStatsSnapshot {
        let mut errors = std::collections::BTreeMap::new();
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            let n = self.by_kind[i].load(Ordering::Relaxed);
            if n > 0 {
                errors.insert(k.as_str().to_string(), n);
            }
        }
        TargetStatsSnapshot {
            in_flight: self.in_flight(),
            ttft_ms: self.ttft_ms(),
            total_ms: self.total_ms(),
            ttft_p95_ms: self.ttft_p95().map(|d| d.as_millis() as u32),
            successes: self.successes.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            errors,
            cooldown_ms: self
                .cooldown_until_ms
                .load(Ordering::Relaxed)
                .saturating_sub(self.now_ms()),
        }
    }
}

/// Decrements the in-flight count when dropped.
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a TargetStats);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let s = TargetStats::new();
        assert_eq!(s.total_ms(), None);
        s.observe_success(Duration::from_millis(100));
        s.observe_success(Duration::from_millis(500));
        assert_eq!(s.total_ms(), Some(500.0), "a slow sample is taken at once");
        tokio::time::advance(Duration::from_secs(10)).await;
        s.observe_success(Duration::from_millis(100));
        let v = s.total_ms().unwrap();
        // One time constant later the old peak weighs e^-1.
        assert!(
            (v - (500.0 * (-1f64).exp() + 100.0 * (1.0 - (-1f64).exp()))).abs() < 1.0,
            "{v}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn p95_cooldown_and_in_flight() {
        let s = TargetStats::new();
        assert!(s.ttft_p95().is_none());
        for i in 1..=100 {
            s.observe_ttft(Duration::from_millis(i));
        }
        assert_eq!(s.ttft_p95(), Some(Duration::from_millis(95)));
        s.observe_failure(ErrorKind::RateLimited, Some(Duration::from_secs(2)));
        assert!(s.cooling_down());
        tokio::time::advance(Duration::from_millis(2001)).await;
        assert!(!s.cooling_down());
        {
            let _a = s.start();
            let _b = s.start();
            assert_eq!(s.in_flight(), 2);
        }
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.snapshot().errors.get("rate_limited"), Some(&1));
    }
}
