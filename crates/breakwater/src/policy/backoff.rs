//! Exponential backoff with a cap and jitter.
//!
//! The strategies are the ones of the AWS Architecture Blog post
//! "Exponential Backoff and Jitter" (Marc Brooker, 2015). For the `n`-th
//! retry (`n` = 1 for the first retry), with `exp = min(cap, base · 2^(n-1))`:
//!
//! | jitter         | delay                                             |
//! |----------------|---------------------------------------------------|
//! | `none`         | `exp`                                             |
//! | `full`         | uniform in `[0, exp]`                             |
//! | `equal`        | `exp/2 + uniform in [0, exp/2]`                   |
//! | `decorrelated` | `min(cap, uniform in [base, 3 · previous delay])` |
//!
//! Jitter spreads the retries of many clients that failed together, so they
//! do not hit a recovering upstream in synchronised waves. `full` spreads
//! most and is the default; `decorrelated` needs the previous delay, which
//! the caller carries (see [`crate::policy::retry::RetryState`]).
//!
//! Randomness comes from the caller's RNG so tests are deterministic.

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How a delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Uniform between zero and the exponential delay.
    #[default]
    Full,
    /// Half the exponential delay plus a uniform half.
    Equal,
    /// Uniform between the base and three times the previous delay.
    Decorrelated,
    /// The exponential delay itself.
    None,
}

/// The `backoff:` section (`retry.backoff` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// Delay of the first retry before jitter, in milliseconds.
    #[serde(default = "d_base_ms")]
    pub base_ms: u64,
    /// Longest delay, in milliseconds.
    #[serde(default = "d_max_ms")]
    pub max_ms: u64,
    /// How delays are randomised.
    #[serde(default)]
    pub jitter: Jitter,
}

fn d_base_ms() -> u64 {
    250
}
fn d_max_ms() -> u64 {
    10_000
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            base_ms: d_base_ms(),
            max_ms: d_max_ms(),
            jitter: Jitter::Full,
        }
    }
}

/// A backoff schedule: base, cap and jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// A schedule; a cap below the base is raised to the base.
    pub fn new(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            jitter,
        }
    }

    /// The schedule of a config section.
    pub fn from_config(cfg: &BackoffConfig) -> Self {
        Backoff::new(
            Duration::from_millis(cfg.base_ms),
            Duration::from_millis(cfg.max_ms),
            cfg.jitter,
        )
    }

    /// The base delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter strategy.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// `min(cap, base · 2^(retry-1))`, without overflow for any `retry`.
    pub fn exponential(&self, retry: u32) -> Duration {
        let shift = retry.saturating_sub(1).min(63);
        let factor = 1u64 << shift;
        let nanos = (self.base.as_nanos()).saturating_mul(u128::from(factor));
        if nanos >= self.cap.as_nanos() {
            self.cap
        } else {
            // Below the cap, so it fits in a Duration.
            Duration::from_nanos(nanos as u64)
        }
    }

    /// The smallest and largest delay the strategy can produce for the
    /// `retry`-th retry, given the previous delay (for `decorrelated`).
    pub fn bounds(&self, retry: u32, previous: Option<Duration>) -> (Duration, Duration) {
        let exp = self.exponential(retry);
        match self.jitter {
            Jitter::None => (exp, exp),
            Jitter::Full => (Duration::ZERO, exp),
            Jitter::Equal => (exp / 2, exp),
            Jitter::Decorrelated => {
                let prev = previous.unwrap_or(self.base).max(self.base);
                let hi = prev.saturating_mul(3).min(self.cap);
                (self.base.min(hi), hi)
            }
        }
    }

    /// The delay before the `retry`-th retry (1 for the first), given the
    /// previous delay (only `decorrelated` uses it; `None` on the first).
    pub fn delay<R: Rng + ?Sized>(&self, retry: u32, previous: Option<Duration>, rng: &mut R) -> Duration {
        let (lo, hi) = self.bounds(retry, previous);
        match self.jitter {
            Jitter::None => hi,
            Jitter::Full | Jitter::Decorrelated => uniform(lo, hi, rng),
            Jitter::Equal => {
                // lo = exp/2; the random half is [0, exp - exp/2] so odd
                // nanoseconds are not lost.
                lo + uniform(Duration::ZERO, hi - lo, rng)
            }
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::from_config(&BackoffConfig::default())
    }
}

/// Uniform in `[lo, hi]` at nanosecond resolution.
fn uniform<R: Rng + ?Sized>(lo: Duration, hi: Duration, rng: &mut R) -> Duration {
    if hi <= lo {
        return lo;
    }
    // Durations of backoff fit in u64 nanoseconds (584 years).
    let lo_n = u64::try_from(lo.as_nanos()).unwrap_or(u64::MAX);
    let hi_n = u64::try_from(hi.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(lo_n..=hi_n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn exponential_doubles_up_to_the_cap() {
        let b = Backoff::new(ms(100), ms(1000), Jitter::None);
        let mut rng = SmallRng::seed_from_u64(1);
        let got: Vec<_> = (1..=6).map(|n| b.delay(n, None, &mut rng)).collect();
        assert_eq!(got, [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
        assert_eq!(b.exponential(0), ms(100));
        assert_eq!(b.exponential(u32::MAX), ms(1000));
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let b = Backoff::new(ms(1000), ms(60_000), Jitter::Full);
        let mut rng = SmallRng::seed_from_u64(7);
        let d: Vec<_> = (0..1000).map(|_| b.delay(1, None, &mut rng)).collect();
        assert!(d.iter().any(|d| *d < ms(100)), "some delays near zero");
        assert!(d.iter().any(|d| *d > ms(900)), "some delays near the top");
    }

    #[test]
    fn same_seed_same_delays() {
        let b = Backoff::new(ms(10), ms(10_000), Jitter::Decorrelated);
        let run = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut prev = None;
            (1..10)
                .map(|n| {
                    let d = b.delay(n, prev, &mut rng);
                    prev = Some(d);
                    d
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn config_defaults_and_names() {
        let c: BackoffConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, BackoffConfig::default());
        assert_eq!((c.base_ms, c.max_ms, c.jitter), (250, 10_000, Jitter::Full));
        for (name, j) in [
            ("full", Jitter::Full),
            ("equal", Jitter::Equal),
            ("decorrelated", Jitter::Decorrelated),
            ("none", Jitter::None),
        ] {
            let c: BackoffConfig = serde_json::from_str(&format!(r#"{{"jitter":"{name}"}}"#)).unwrap();
            assert_eq!(c.jitter, j);
        }
        assert!(serde_json::from_str::<BackoffConfig>(r#"{"base":1}"#).is_err());
        assert!(serde_json::from_str::<BackoffConfig>(r#"{"jitter":"random"}"#).is_err());
    }

    fn jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
            Just(Jitter::None)
        ]
    }

    proptest! {
        /// Every delay lies within its strategy's bounds, and never above the cap.
        #[test]
        fn delays_lie_within_bounds_and_cap(
            base_ms in 0u64..5_000,
            cap_ms in 0u64..120_000,
            jitter in jitter(),
            seed in any::<u64>(),
            retries in 1u32..40,
        ) {
            let b = Backoff::new(ms(base_ms), ms(cap_ms), jitter);
            let cap = b.cap();
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut prev = None;
            for n in 1..=retries {
                let d = b.delay(n, prev, &mut rng);
                let exp = b.exponential(n);
                prop_assert!(d <= cap);
                match jitter {
                    Jitter::None => prop_assert_eq!(d, exp),
                    Jitter::Full => prop_assert!(d <= exp),
                    Jitter::Equal => prop_assert!(d >= exp / 2 && d <= exp),
                    Jitter::Decorrelated => {
                        let p = prev.unwrap_or(b.base()).max(b.base());
                        prop_assert!(d >= b.base().min(cap));
                        prop_assert!(d <= p * 3);
                    }
                }
                prev = Some(d);
            }
        }
    }
}
