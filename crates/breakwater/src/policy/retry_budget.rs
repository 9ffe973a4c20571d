//! A retry budget: retries may add at most a fraction of the first attempts.
//!
//! Per-request retry limits alone multiply load during an outage: with 3
//! attempts each, a failing upstream receives three times the traffic just
//! when it can least take it. A budget (Finagle's `RetryBudget`, Envoy's
//! retry budgets) bounds retries across all requests instead: over a sliding
//! window of `window_s`, retries may be at most `ratio` × first attempts,
//! plus `min_per_s` retries per second that are always allowed so that a
//! quiet service can still retry at all.
//!
//! So over any window, `attempts ≤ (1 + ratio) × requests + min_per_s × window_s`.
//!
//! The counters are lock-free (slots of packed atomics): two atomic updates
//! per request on the hot path.

use super::window::WindowCounter;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The `retry.budget` section of the config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// Retries allowed per first attempt, over the window.
    #[serde(default = "d_ratio")]
    pub ratio: f64,
    /// Retries per second allowed regardless of the ratio.
    #[serde(default = "d_min_per_s")]
    pub min_per_s: u32,
    /// Length of the sliding window, in seconds.
    #[serde(default = "d_window_s")]
    pub window_s: u64,
}

fn d_ratio() -> f64 {
    0.2
}
fn d_min_per_s() -> u32 {
    10
}
fn d_window_s() -> u64 {
    10
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: d_ratio(),
            min_per_s: d_min_per_s(),
            window_s: d_window_s(),
        }
    }
}

impl RetryBudgetConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<(), super::config::InvalidConfig> {
        use super::config::InvalidConfig;
        if !(self.ratio.is_finite() && self.ratio >= 0.0) {
            return Err(InvalidConfig::new("retry.budget.ratio", "must be a number ≥ 0"));
        }
        if self.window_s == 0 {
            return Err(InvalidConfig::new("retry.budget.window_s", "must be ≥ 1"));
        }
        Ok(())
    }
}

/// What the budget has seen over the current window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryBudgetSnapshot {
    /// First attempts in the window.
    pub requests: u64,
    /// Retries granted in the window.
    pub retries: u64,
    /// Retries the window allows in total.
    pub allowed: u64,
    /// Retries refused since the budget was made.
    pub refused_total: u64,
}

/// A shared retry budget (wrap in an `Arc` to share between tasks).
#[derive(Debug)]
pub struct RetryBudget {
    requests: WindowCounter,
    retries: WindowCounter,
    ratio: f64,
    reserve: u64,
    refused: AtomicU64,
    epoch: Instant,
}

impl RetryBudget {
    /// A budget from its config section.
    pub fn new(cfg: &RetryBudgetConfig) -> Self {
        let window = Duration::from_secs(cfg.window_s.max(1));
        RetryBudget {
            requests: WindowCounter::new(window, 10),
            retries: WindowCounter::new(window, 10),
            ratio: if cfg.ratio.is_finite() { cfg.ratio.max(0.0) } else { 0.0 },
            reserve: u64::from(cfg.min_per_s).saturating_mul(cfg.window_s.max(1)),
            refused: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn allowed(&self, requests: u64) -> u64 {
        (requests as f64 * self.ratio) as u64 + self.reserve
    }

    /// Records a first attempt (a deposit).
    pub fn record_request(&self) {
        self.requests.add(self.now(), 1);
    }

    /// Takes one retry from the budget; false when the budget is spent (the
    /// caller then gives up instead of retrying).
    pub fn try_withdraw(&self) -> bool {
        let now = self.now();
        // Optimistic: count the retry first, so two racing callers cannot
        // both take the last one; undo if it was over.
        self.retries.add(now, 1);
        let retries = self.retries.sum(now);
        if retries <= self.allowed(self.requests.sum(now)) {
            return true;
        }
        self.retries.sub(now, 1);
        self.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The current counts.
    pub fn snapshot(&self) -> RetryBudgetSnapshot {
        let now = self.now();
        let requests = self.requests.sum(now);
        RetryBudgetSnapshot {
            requests,
            retries: self.retries.sum(now),
            allowed: self.allowed(requests),
            refused_total: self.refused.load(Ordering::Relaxed),
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(&RetryBudgetConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_s: u32, window_s: u64) -> RetryBudget {
        RetryBudget::new(&RetryBudgetConfig {
            ratio,
            min_per_s,
            window_s,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_fraction_of_requests_plus_the_reserve() {
        let b = budget(0.2, 1, 10);
        for _ in 0..100 {
            b.record_request();
        }
        let granted = (0..1000).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 20 + 10);
        let s = b.snapshot();
        assert_eq!((s.requests, s.retries, s.allowed, s.refused_total), (100, 30, 30, 970));
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides() {
        let b = budget(0.5, 0, 10);
        for _ in 0..10 {
            b.record_request();
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw()).count(), 5);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!b.try_withdraw(), "old requests no longer fund retries");
        b.record_request();
        b.record_request();
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }

    /// Under 100% failure, with every request wanting 3 attempts, total
    /// attempts stay within (1 + ratio) × requests + the reserve of every
    /// window the run touches, for a run within one window and a longer one.
    #[tokio::test(start_paused = true)]
    async fn total_failure_is_bounded() {
        for seconds in [10u64, 35] {
            let cfg = RetryBudgetConfig::default();
            let b = budget(cfg.ratio, cfg.min_per_s, cfg.window_s);
            let mut attempts = 0u64;
            // 500 requests per second, in batches of 50 every 100 ms.
            let requests = 500 * seconds;
            for i in 0..requests {
                if i > 0 && i % 50 == 0 {
                    tokio::time::advance(Duration::from_millis(100)).await;
                }
                b.record_request();
                attempts += 1;
                for _retry in 0..2 {
                    if !b.try_withdraw() {
                        break;
                    }
                    attempts += 1;
                }
            }
            let reserve = u64::from(cfg.min_per_s) * cfg.window_s * seconds.div_ceil(cfg.window_s);
            let bound = ((1.0 + cfg.ratio) * requests as f64) as u64 + reserve;
            assert!(attempts <= bound, "{seconds} s: {attempts} attempts > {bound}");
            // And the budget is used, not just refusing everything.
            let floor = requests + (requests as f64 * cfg.ratio * 0.9) as u64;
            assert!(attempts >= floor, "{seconds} s: {attempts} attempts < {floor}");
        }
    }

    #[test]
    fn config_defaults_and_validation() {
        let c: RetryBudgetConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, RetryBudgetConfig::default());
        assert_eq!((c.ratio, c.min_per_s, c.window_s), (0.2, 10, 10));
        assert!(c.validate().is_ok());
        let bad = RetryBudgetConfig { ratio: -1.0, ..c };
        assert_eq!(bad.validate().unwrap_err().path, "retry.budget.ratio");
        assert!(serde_json::from_str::<RetryBudgetConfig>(r#"{"ratoi":1}"#).is_err());
    }
}
