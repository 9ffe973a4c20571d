//! When to try the same target again, and after how long.
//!
//! [`RetryPolicy::decide`] is a pure decision: given the error of the attempt
//! that just failed, how many attempts were made, the request's deadline and
//! an RNG, it answers [`RetryDecision::Retry`] with a wait or
//! [`RetryDecision::GiveUp`] with a reason. [`RetryState`] carries what one
//! request needs between attempts at one target (the count, the previous
//! delay for decorrelated jitter) and takes retries from a [`RetryBudget`];
//! [`retry`] runs a whole operation with all of it.
//!
//! The rules, in order:
//! 1. kinds that are not [`ErrorKind::is_retryable`] are never retried,
//!    whatever the config says (a 400 stays a 400);
//! 2. each kind has its own attempt limit and backoff (`per_kind`, over the
//!    built-in table of [`RetryConfig`], over the top-level values); the
//!    limit applies to the attempts made so far at this target, whatever
//!    their kinds;
//! 3. a `Retry-After` is honoured on every attempt: the wait is
//!    `max(backoff, retry_after)`; a `Retry-After` longer than
//!    `max_retry_after_s` gives up at once (waiting less than the upstream
//!    asked would only earn another 429, and waiting longer than the cap is
//!    what the cap forbids), so the caller can fail over or pass the
//!    `Retry-After` on;
//! 4. if the wait would end at or past the deadline, give up now: the error
//!    comes back at once instead of after a pointless sleep;
//! 5. a retry must be granted by the retry budget, if there is one.
//!
//! **Streams** may be retried only until the first token has reached the
//! caller: once any output was forwarded, a retry would repeat or contradict
//! it. The client therefore consults the policy only for errors raised
//! before the first forwarded token (connect, headers, first-token timeout,
//! a stream that broke before any output); after that the error is final and
//! ends the stream as an error event.

use super::backoff::{Backoff, BackoffConfig, Jitter};
use super::config::InvalidConfig;
use super::retry_budget::{RetryBudget, RetryBudgetConfig};
use super::timeout::run_until;
use crate::error::{Error, ErrorKind, Result, TimeoutPhase};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// Overrides for one error kind (`retry.per_kind.<kind>`); a missing field
/// falls back to the built-in entry for the kind, then to the top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindOverride {
    /// Attempts at one target, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Backoff base, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ms: Option<u64>,
    /// Backoff cap, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<u64>,
    /// Jitter strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
}

impl KindOverride {
    fn over(self, below: KindOverride) -> KindOverride {
        KindOverride {
            max_attempts: self.max_attempts.or(below.max_attempts),
            base_ms: self.base_ms.or(below.base_ms),
            max_ms: self.max_ms.or(below.max_ms),
            jitter: self.jitter.or(below.jitter),
        }
    }
}

/// The built-in per-kind table: rate limits wait longer and try more,
/// overload backs off harder, network errors retry quickly.
pub fn default_per_kind() -> BTreeMap<ErrorKind, KindOverride> {
    let entry = |n, base, max| KindOverride {
        max_attempts: Some(n),
        base_ms: Some(base),
        max_ms: Some(max),
        jitter: None,
    };
    BTreeMap::from([
        (ErrorKind::RateLimited, entry(5, 1_000, 60_000)),
        (ErrorKind::Overloaded, entry(4, 2_000, 30_000)),
        (ErrorKind::Network, entry(3, 500, 10_000)),
    ])
}

/// The `retry:` section of the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts at one target, the first included.
    #[serde(default = "d_max_attempts")]
    pub max_attempts: u32,
    /// Backoff for kinds without their own.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// The retry budget shared by all requests.
    #[serde(default)]
    pub budget: RetryBudgetConfig,
    /// Overrides by error kind, merged over [`default_per_kind`].
    #[serde(default = "default_per_kind")]
    pub per_kind: BTreeMap<ErrorKind, KindOverride>,
    /// Longest `Retry-After` that is waited for, in seconds.
    #[serde(default = "d_max_retry_after_s")]
    pub max_retry_after_s: u64,
}

fn d_max_attempts() -> u32 {
    3
}
fn d_max_retry_after_s() -> u64 {
    60
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: d_max_attempts(),
            backoff: BackoffConfig::default(),
            budget: RetryBudgetConfig::default(),
            per_kind: default_per_kind(),
            max_retry_after_s: d_max_retry_after_s(),
        }
    }
}

impl RetryConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> std::result::Result<(), InvalidConfig> {
        if self.max_attempts == 0 {
            return Err(InvalidConfig::new(
                "retry.max_attempts",
                "must be ≥ 1 (it counts the first attempt)",
            ));
        }
        for (kind, o) in &self.per_kind {
            let path = format!("retry.per_kind.{kind}");
            if !kind.is_retryable() {
                return Err(InvalidConfig::new(
                    path,
                    format!("{kind} errors are never retried; remove this entry"),
                ));
            }
            if o.max_attempts == Some(0) {
                return Err(InvalidConfig::new(format!("{path}.max_attempts"), "must be ≥ 1"));
            }
        }
        self.budget.validate()
    }
}

/// Why no retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The kind is never retried (the request or the account is at fault).
    NotRetryable(ErrorKind),
    /// The attempt limit for the kind is reached.
    AttemptsExhausted {
        /// Attempts made.
        attempts: u32,
    },
    /// The upstream asked for a longer wait than `max_retry_after_s`.
    RetryAfterTooLong {
        /// What it asked for.
        retry_after: Duration,
    },
    /// The wait would end at or past the deadline.
    DeadlineTooClose {
        /// The wait that did not fit.
        wait: Duration,
    },
    /// The retry budget is spent.
    BudgetExhausted,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GiveUp::NotRetryable(k) => write!(f, "{k} errors are not retried"),
            GiveUp::AttemptsExhausted { attempts } => write!(f, "gave up after {attempts} attempts"),
            GiveUp::RetryAfterTooLong { retry_after } => {
                write!(
                    f,
                    "the upstream asked to wait {:.1}s, longer than allowed",
                    retry_after.as_secs_f64()
                )
            }
            GiveUp::DeadlineTooClose { wait } => {
                write!(f, "a retry after {:.3}s would pass the deadline", wait.as_secs_f64())
            }
            GiveUp::BudgetExhausted => f.write_str("the retry budget is spent"),
        }
    }
}

/// The answer of [`RetryPolicy::decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this wait.
    Retry {
        /// How long to wait first.
        after: Duration,
    },
    /// Do not try this target again.
    GiveUp(GiveUp),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    max_attempts: u32,
    backoff: Backoff,
}

/// Retry rules built from a [`RetryConfig`]; cheap to share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    rules: [Rule; ErrorKind::ALL.len()],
    max_retry_after: Duration,
}

impl RetryPolicy {
    /// The policy of a config section (per-kind entries merged over the
    /// built-in table, then over the top level).
    pub fn new(cfg: &RetryConfig) -> Self {
        let builtin = default_per_kind();
        let top = KindOverride {
            max_attempts: Some(cfg.max_attempts),
            base_ms: Some(cfg.backoff.base_ms),
            max_ms: Some(cfg.backoff.max_ms),
            jitter: Some(cfg.backoff.jitter),
        };
        let rules = ErrorKind::ALL.map(|kind| {
            let o = cfg.per_kind.get(&kind).copied().unwrap_or_default();
            let o = o.over(builtin.get(&kind).copied().unwrap_or_default()).over(top);
            let backoff = BackoffConfig {
                base_ms: o.base_ms.unwrap_or(cfg.backoff.base_ms),
                max_ms: o.max_ms.unwrap_or(cfg.backoff.max_ms),
                jitter: o.jitter.unwrap_or(cfg.backoff.jitter),
            };
            Rule {
                max_attempts: if kind.is_retryable() {
                    o.max_attempts.unwrap_or(cfg.max_attempts).max(1)
                } else {
                    1
                },
                backoff: Backoff::from_config(&backoff),
            }
        });
        RetryPolicy {
            rules,
            max_retry_after: Duration::from_secs(cfg.max_retry_after_s),
        }
    }

    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy::new(&RetryConfig {
            max_attempts: 1,
            per_kind: BTreeMap::from(ErrorKind::ALL.map(|k| {
                (
                    k,
                    KindOverride {
                        max_attempts: Some(1),
                        ..Default::default()
                    },
                )
            })),
            ..Default::default()
        })
    }

    /// Attempts allowed at one target when the last error is of `kind`.
    pub fn max_attempts(&self, kind: ErrorKind) -> u32 {
        self.rules[kind as usize].max_attempts
    }

    /// The backoff used after an error of `kind`.
    pub fn backoff(&self, kind: ErrorKind) -> Backoff {
        self.rules[kind as usize].backoff
    }

    /// Whether and when to try again after `err`, the error of attempt
    /// number `attempts` (1 for the first), given the previous wait (for
    /// decorrelated jitter) and the request's deadline. Does not consult a
    /// retry budget (see [`RetryState::on_error`]).
    pub fn decide<R: Rng + ?Sized>(
        &self,
        err: &Error,
        attempts: u32,
        previous_wait: Option<Duration>,
        deadline: Option<Instant>,
        rng: &mut R,
    ) -> RetryDecision {
        if !err.kind.is_retryable() {
            return RetryDecision::GiveUp(GiveUp::NotRetryable(err.kind));
        }
        let rule = &self.rules[err.kind as usize];
        if attempts >= rule.max_attempts {
            return RetryDecision::GiveUp(GiveUp::AttemptsExhausted { attempts });
        }
        let mut wait = rule.backoff.delay(attempts.max(1), previous_wait, rng);
        if let Some(ra) = err.retry_after {
            if ra > self.max_retry_after {
                return RetryDecision::GiveUp(GiveUp::RetryAfterTooLong { retry_after: ra });
            }
            wait = wait.max(ra);
        }
        if let Some(d) = deadline
            && Instant::now().checked_add(wait).is_none_or(|end| end >= d)
        {
            return RetryDecision::GiveUp(GiveUp::DeadlineTooClose { wait });
        }
        RetryDecision::Retry { after: wait }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new(&RetryConfig::default())
    }
}

/// What one request carries between its attempts at one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryState {
    attempts: u32,
    previous_wait: Option<Duration>,
}

impl RetryState {
    /// Before the first attempt.
    pub fn new() -> Self {
        RetryState::default()
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Marks the start of an attempt and returns its number (1 for the
    /// first). The first attempt is a deposit into `budget`.
    pub fn begin_attempt(&mut self, budget: Option<&RetryBudget>) -> u32 {
        self.attempts += 1;
        if self.attempts == 1
            && let Some(b) = budget
        {
            b.record_request();
        }
        self.attempts
    }

    /// Decides after the current attempt failed with `err`, taking the retry
    /// from `budget` when the policy says retry.
    pub fn on_error<R: Rng + ?Sized>(
        &mut self,
        policy: &RetryPolicy,
        err: &Error,
        deadline: Option<Instant>,
        budget: Option<&RetryBudget>,
        rng: &mut R,
    ) -> RetryDecision {
        let d = policy.decide(err, self.attempts.max(1), self.previous_wait, deadline, rng);
        if let RetryDecision::Retry { after } = d {
            if let Some(b) = budget
                && !b.try_withdraw()
            {
                return RetryDecision::GiveUp(GiveUp::BudgetExhausted);
            }
            self.previous_wait = Some(after);
        }
        d
    }
}

/// Runs `op` (given the attempt number, from 1) until it succeeds or the
/// policy gives up, and returns its last result. Each attempt is bounded by
/// `deadline`, and no wait ends past it. On giving up, the last error comes
/// back unchanged.
pub async fn retry<T, F, Fut, R>(
    policy: &RetryPolicy,
    budget: Option<&RetryBudget>,
    deadline: Option<Instant>,
    rng: &mut R,
    mut op: F,
) -> Result<T>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T>>,
    R: Rng + ?Sized,
{
    let mut state = RetryState::new();
    loop {
        let n = state.begin_attempt(budget);
        let err = match run_until(deadline, TimeoutPhase::Total, op(n)).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        match state.on_error(policy, &err, deadline, budget, rng) {
            RetryDecision::Retry { after } => {
                tracing::debug!(attempt = n, kind = %err.kind, wait_ms = after.as_millis() as u64, "retrying");
                tokio::time::sleep(after).await;
            }
            RetryDecision::GiveUp(why) => {
                tracing::debug!(attempt = n, kind = %err.kind, reason = %why, "not retrying");
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(42)
    }

    fn err(kind: ErrorKind) -> Error {
        Error::new(kind, "boom")
    }

    #[test]
    fn defaults_follow_the_table() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_attempts(ErrorKind::RateLimited), 5);
        assert_eq!(p.max_attempts(ErrorKind::Overloaded), 4);
        assert_eq!(p.max_attempts(ErrorKind::Network), 3);
        assert_eq!(p.max_attempts(ErrorKind::ServerError), 3);
        assert_eq!(p.max_attempts(ErrorKind::Timeout), 3);
        let b = p.backoff(ErrorKind::RateLimited);
        assert_eq!((b.base(), b.cap()), (Duration::from_secs(1), Duration::from_secs(60)));
        let b = p.backoff(ErrorKind::Overloaded);
        assert_eq!((b.base(), b.cap()), (Duration::from_secs(2), Duration::from_secs(30)));
        let b = p.backoff(ErrorKind::Network);
        assert_eq!(
            (b.base(), b.cap()),
            (Duration::from_millis(500), Duration::from_secs(10))
        );
        let b = p.backoff(ErrorKind::ServerError);
        assert_eq!(
            (b.base(), b.cap()),
            (Duration::from_millis(250), Duration::from_secs(10))
        );
    }

    #[test]
    fn non_retryable_kinds_are_never_retried_whatever_the_config() {
        let mut cfg = RetryConfig {
            max_attempts: 10,
            ..Default::default()
        };
        for k in ErrorKind::ALL {
            cfg.per_kind.insert(
                k,
                KindOverride {
                    max_attempts: Some(10),
                    ..Default::default()
                },
            );
        }
        let p = RetryPolicy::new(&cfg);
        for k in ErrorKind::ALL.into_iter().filter(|k| !k.is_retryable()) {
            assert_eq!(
                p.decide(&err(k), 1, None, None, &mut rng()),
                RetryDecision::GiveUp(GiveUp::NotRetryable(k)),
                "{k}"
            );
        }
        for k in ErrorKind::ALL.into_iter().filter(|k| k.is_retryable()) {
            assert!(matches!(
                p.decide(&err(k), 1, None, None, &mut rng()),
                RetryDecision::Retry { .. }
            ));
        }
        assert!(cfg.validate().is_err(), "the config loader refuses such entries");
    }

    #[test]
    fn attempt_limits_are_per_kind() {
        let p = RetryPolicy::default();
        let e = err(ErrorKind::RateLimited);
        assert!(matches!(
            p.decide(&e, 4, None, None, &mut rng()),
            RetryDecision::Retry { .. }
        ));
        assert_eq!(
            p.decide(&e, 5, None, None, &mut rng()),
            RetryDecision::GiveUp(GiveUp::AttemptsExhausted { attempts: 5 })
        );
        let e = err(ErrorKind::ServerError);
        assert!(matches!(
            p.decide(&e, 2, None, None, &mut rng()),
            RetryDecision::Retry { .. }
        ));
        assert!(matches!(
            p.decide(&e, 3, None, None, &mut rng()),
            RetryDecision::GiveUp(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_on_every_attempt() {
        let p = RetryPolicy::default();
        let mut r = rng();
        for attempt in 1..3 {
            let e = err(ErrorKind::ServerError).with_retry_after(Some(Duration::from_secs(7)));
            // The backoff alone is ≤ 250 ms · 2^(n-1): the Retry-After wins.
            assert_eq!(
                p.decide(&e, attempt, None, None, &mut r),
                RetryDecision::Retry {
                    after: Duration::from_secs(7)
                }
            );
        }
        // A longer backoff wins over a short Retry-After.
        let cfg = RetryConfig {
            backoff: BackoffConfig {
                base_ms: 5_000,
                max_ms: 60_000,
                jitter: Jitter::None,
            },
            ..Default::default()
        };
        let e = err(ErrorKind::ServerError).with_retry_after(Some(Duration::from_secs(1)));
        assert_eq!(
            RetryPolicy::new(&cfg).decide(&e, 2, None, None, &mut r),
            RetryDecision::Retry {
                after: Duration::from_secs(10)
            }
        );
    }

    #[test]
    fn too_long_a_retry_after_gives_up() {
        let p = RetryPolicy::default();
        let e = err(ErrorKind::RateLimited).with_retry_after(Some(Duration::from_secs(61)));
        assert_eq!(
            p.decide(&e, 1, None, None, &mut rng()),
            RetryDecision::GiveUp(GiveUp::RetryAfterTooLong {
                retry_after: Duration::from_secs(61)
            })
        );
        let e = err(ErrorKind::RateLimited).with_retry_after(Some(Duration::from_secs(60)));
        assert!(matches!(
            p.decide(&e, 1, None, None, &mut rng()),
            RetryDecision::Retry { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_gives_up_at_once() {
        let p = RetryPolicy::default();
        let e = err(ErrorKind::RateLimited).with_retry_after(Some(Duration::from_secs(2)));
        let deadline = Some(Instant::now() + Duration::from_secs(2));
        assert_eq!(
            p.decide(&e, 1, None, deadline, &mut rng()),
            RetryDecision::GiveUp(GiveUp::DeadlineTooClose {
                wait: Duration::from_secs(2)
            })
        );
        let deadline = Some(Instant::now() + Duration::from_millis(2001));
        assert!(matches!(
            p.decide(&e, 1, None, deadline, &mut rng()),
            RetryDecision::Retry { .. }
        ));
    }

    /// The acceptance case: a 429 with `Retry-After: 2` waits 2 s (paused time).
    #[tokio::test(start_paused = true)]
    async fn a_429_with_retry_after_2_waits_2_seconds() {
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let out = retry(&RetryPolicy::default(), None, None, &mut rng(), |n| {
            calls.fetch_add(1, Ordering::Relaxed);
            let at = start.elapsed();
            async move {
                if n == 1 {
                    Err(Error::new(ErrorKind::RateLimited, "slow down")
                        .with_status(429)
                        .with_retry_after(Some(Duration::from_secs(2))))
                } else {
                    Ok(at)
                }
            }
        })
        .await;
        assert_eq!(out.unwrap(), Duration::from_secs(2), "the second attempt starts at 2 s");
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    /// Under a deadline, no wait passes it and the last error comes back
    /// as soon as the next wait would not fit.
    #[tokio::test(start_paused = true)]
    async fn retries_respect_the_deadline() {
        let cfg = RetryConfig {
            max_attempts: 10,
            backoff: BackoffConfig {
                base_ms: 400,
                max_ms: 10_000,
                jitter: Jitter::None,
            },
            ..Default::default()
        };
        let start = Instant::now();
        let deadline = start + Duration::from_secs(1);
        let mut starts = vec![];
        let out: Result<()> = retry(&RetryPolicy::new(&cfg), None, Some(deadline), &mut rng(), |_| {
            starts.push(start.elapsed());
            async { Err(err(ErrorKind::ServerError)) }
        })
        .await;
        assert_eq!(out.unwrap_err().kind, ErrorKind::ServerError);
        // 0 s, then 0.4 s; the next wait (0.8 s) would end at 1.2 s.
        assert_eq!(starts, [Duration::ZERO, Duration::from_millis(400)]);
        assert_eq!(start.elapsed(), Duration::from_millis(400), "gave up without sleeping");
    }

    /// An attempt that hangs is cut at the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_ends_at_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(3);
        let out: Result<()> = retry(&RetryPolicy::default(), None, Some(deadline), &mut rng(), |_| {
            futures::future::pending()
        })
        .await;
        let e = out.unwrap_err();
        assert_eq!((e.kind, e.phase), (ErrorKind::Timeout, Some(TimeoutPhase::Total)));
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_stops_retries() {
        let budget = RetryBudget::new(&RetryBudgetConfig {
            ratio: 0.0,
            min_per_s: 0,
            window_s: 10,
        });
        let calls = AtomicU32::new(0);
        let out: Result<()> = retry(&RetryPolicy::default(), Some(&budget), None, &mut rng(), |_| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(err(ErrorKind::ServerError)) }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(budget.snapshot().requests, 1);
        let mut s = RetryState::new();
        s.begin_attempt(Some(&budget));
        assert_eq!(
            s.on_error(
                &RetryPolicy::default(),
                &err(ErrorKind::Network),
                None,
                Some(&budget),
                &mut rng()
            ),
            RetryDecision::GiveUp(GiveUp::BudgetExhausted)
        );
    }

    #[test]
    fn config_parses_merges_and_validates() {
        let c: RetryConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, RetryConfig::default());
        assert_eq!((c.max_attempts, c.max_retry_after_s), (3, 60));
        // A partial per_kind keeps the built-in entries of the other kinds,
        // and the missing fields of its own kind.
        let c: RetryConfig =
            serde_json::from_str(r#"{"per_kind":{"rate_limited":{"max_attempts":2},"timeout":{"base_ms":50}}}"#)
                .unwrap();
        assert!(c.validate().is_ok());
        let p = RetryPolicy::new(&c);
        assert_eq!(p.max_attempts(ErrorKind::RateLimited), 2);
        assert_eq!(p.backoff(ErrorKind::RateLimited).base(), Duration::from_secs(1));
        assert_eq!(p.max_attempts(ErrorKind::Overloaded), 4);
        assert_eq!(p.backoff(ErrorKind::Timeout).base(), Duration::from_millis(50));
        assert_eq!(p.backoff(ErrorKind::Timeout).cap(), Duration::from_secs(10));
        assert!(serde_json::from_str::<RetryConfig>(r#"{"per_kind":{"rate_limit":{}}}"#).is_err());
        assert!(serde_json::from_str::<RetryConfig>(r#"{"per_kind":{"network":{"tries":1}}}"#).is_err());
        assert!(serde_json::from_str::<RetryConfig>(r#"{"max_attempt":1}"#).is_err());
        let bad: RetryConfig = serde_json::from_str(r#"{"per_kind":{"authentication":{"max_attempts":2}}}"#).unwrap();
        assert_eq!(bad.validate().unwrap_err().path, "retry.per_kind.authentication");
        let bad = RetryConfig {
            max_attempts: 0,
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().path, "retry.max_attempts");
    }

    #[test]
    fn never_retries_nothing() {
        let p = RetryPolicy::never();
        for k in ErrorKind::ALL {
            assert!(matches!(
                p.decide(&err(k), 1, None, None, &mut rng()),
                RetryDecision::GiveUp(_)
            ));
        }
    }
}
