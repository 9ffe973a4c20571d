//! Keyed rate limiters for requests and tokens, in memory or in Redis.
//!
//! A [`RateLimiter`] enforces one [`Quota`] (at most `limit` per `period`,
//! bursts up to `limit`: `rpm: N` is `Quota::per_minute(N)`) with one
//! [`Algorithm`], separately for each key (a virtual key, a user, a target:
//! any string — never secret material). Its state lives in a
//! [`LimiterStore`]: [`MemoryStore`] (sharded, bounded, for one instance) or
//! [`RedisLimiterStore`] (shared by every instance using the same Redis).
//!
//! **Two ways to ask.** [`RateLimiter::try_acquire`] answers at once: admitted,
//! or refused with the wait until it would be admitted.
//! [`RateLimiter::acquire`] waits for admission, but never past the
//! deadline: if the wait would end after it, it refuses at once.
//!
//! **Reserve, then settle.** A request's token cost is known only after the
//! call. So the estimate is reserved atomically when admitting (concurrent
//! requests cannot all squeeze into the same remaining allowance), and
//! [`RateLimiter::settle`] later corrects it with the real usage: the
//! unused part is refunded, an excess is charged (owed even above the limit,
//! delaying later requests). A reservation never settled keeps its estimate
//! charged, the safe side for a call that may have happened; when the call
//! is certainly not made (a later gate refused it), settle with 0
//! ([`RequestLimits::release`]).
//!
//! **Decisions** carry `limit`, `remaining` and `reset_after` for the
//! `x-ratelimit-*` headers, also on refusal.
//!
//! **When the store fails** (Redis down or slow: each call is bounded by
//! the Redis timeout), the limiter follows the store's [`FailurePolicy`]:
//! `open` admits, `closed` refuses with an [`ErrorKind::Overloaded`] error
//! saying why; both are counted in [`LimiterStats`].

mod algo;
pub mod config;
pub mod memory;
pub mod pair;
pub mod redis;

pub use config::{KeyLimits, ProviderLimits};
pub use memory::{MemoryOptions, MemoryStore};
pub use pair::{PairReservation, RequestLimits};
pub use redis::{RedisLimiterStore, TimeSource};

use crate::error::{Error, ErrorKind};
use crate::redis_store::{FailurePolicy, RedisUnavailable};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The rate-limiting algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// A bucket of `limit` tokens refilled continuously at `limit / period`:
    /// exactly the meaning of `rpm`/`tpm` in the config.
    #[default]
    TokenBucket,
    /// The generic cell rate algorithm: the same admissions as the token
    /// bucket, with a single timestamp of state per key.
    Gcra,
    /// A log of admissions over the last `period`: exact, but stores one
    /// entry per admitted request (use it for small limits).
    SlidingLog,
    /// Two fixed-window counters, the previous one weighted by how much of
    /// it still overlaps the sliding window (Cloudflare's approximation):
    /// constant state, smooth, slightly approximate.
    SlidingWindow,
}

/// At most `limit` per `period`, with bursts up to `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u64,
    period: Duration,
}

impl Quota {
    /// `limit` per `period` (a zero period is taken as one nanosecond).
    pub fn new(limit: u64, period: Duration) -> Self {
        Quota {
            limit,
            period: period.max(Duration::from_nanos(1)),
        }
    }

    /// `n` per minute, burst `n` (the config's `rpm` and `tpm`).
    pub fn per_minute(n: u64) -> Self {
        Quota::new(n, Duration::from_secs(60))
    }

    /// The limit (and burst).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// What a limiter enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitSpec {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The quota.
    pub quota: Quota,
}

/// The answer for one key, admitted or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the cost was taken.
    pub allowed: bool,
    /// The limit (`x-ratelimit-limit-*`).
    pub limit: u64,
    /// What is left now (`x-ratelimit-remaining-*`).
    pub remaining: u64,
    /// Until the key is back to its full allowance (`x-ratelimit-reset-*`).
    pub reset_after: Duration,
    /// Until the same cost would be admitted; zero when allowed.
    pub retry_after: Duration,
}

/// What a store needs to adjust a take later. Opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// When the take happened, in the store's time unit.
    pub(crate) at: u64,
    /// Tells apart takes at the same time (Redis sliding log).
    pub(crate) id: u64,
    /// The cost taken.
    pub(crate) cost: u64,
}

/// Where limiter state lives. Implemented by [`MemoryStore`],
/// [`RedisLimiterStore`] and [`AnyLimiterStore`] (either, chosen at run time).
pub trait LimiterStore: Send + Sync {
    /// The algorithm and quota the store enforces.
    fn spec(&self) -> LimitSpec;

    /// Takes `cost` from `key` if the quota allows it now.
    fn take(&self, key: &str, cost: u64) -> impl Future<Output = Result<(Decision, Ticket), RedisUnavailable>> + Send;

    /// Adds `delta` to an earlier take (negative: refund), never refusing.
    fn adjust(
        &self,
        key: &str,
        ticket: Ticket,
        delta: i64,
    ) -> impl Future<Output = Result<(), RedisUnavailable>> + Send;

    /// What a limiter does when this store fails.
    fn failure_policy(&self) -> FailurePolicy;
}

/// A store chosen at run time: memory, or Redis when configured.
#[derive(Debug)]
pub enum AnyLimiterStore {
    /// In this process.
    Memory(MemoryStore),
    /// In Redis, shared by every instance.
    Redis(RedisLimiterStore),
}

impl LimiterStore for AnyLimiterStore {
    fn spec(&self) -> LimitSpec {
        match self {
            AnyLimiterStore::Memory(s) => s.spec(),
            AnyLimiterStore::Redis(s) => s.spec(),
        }
    }

    async fn take(&self, key: &str, cost: u64) -> Result<(Decision, Ticket), RedisUnavailable> {
        match self {
            AnyLimiterStore::Memory(s) => Ok(s.take_now(key, cost)),
            AnyLimiterStore::Redis(s) => s.take(key, cost).await,
        }
    }

    async fn adjust(&self, key: &str, ticket: Ticket, delta: i64) -> Result<(), RedisUnavailable> {
        match self {
            AnyLimiterStore::Memory(s) => {
                s.adjust_now(key, ticket, delta);
                Ok(())
            }
            AnyLimiterStore::Redis(s) => s.adjust(key, ticket, delta).await,
        }
    }

    fn failure_policy(&self) -> FailurePolicy {
        match self {
            AnyLimiterStore::Memory(s) => s.failure_policy(),
            AnyLimiterStore::Redis(s) => s.failure_policy(),
        }
    }
}

/// An admitted request's hold on the limit; settle it with the real cost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "settle the reservation with the real cost (or drop it to keep the estimate charged)"]
pub struct Reservation {
    decision: Decision,
    ticket: Option<Ticket>,
    cost: u64,
}

impl Reservation {
    /// The admission decision (for the `x-ratelimit-*` headers).
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The cost reserved.
    pub fn cost(&self) -> u64 {
        self.cost
    }

    /// Whether it was admitted without asking the store (store down, fail-open).
    pub fn unchecked(&self) -> bool {
        self.ticket.is_none()
    }
}

/// A refusal: the error to return, and the decision when the store made one.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `rate_limited` (with `retry_after`) over the limit; `overloaded` when
    /// the store is down and the policy is closed. Boxed: refusals are the
    /// rare path, and this keeps `Result`s small.
    pub error: Box<Error>,
    /// The store's decision, for the `x-ratelimit-*` headers.
    pub decision: Option<Decision>,
}

impl From<Rejection> for Error {
    fn from(r: Rejection) -> Error {
        *r.error
    }
}

/// Counters of a limiter, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LimiterStats {
    /// Requests admitted.
    pub admitted: u64,
    /// Requests refused for being over the limit.
    pub rejected: u64,
    /// Times `acquire` slept waiting for admission.
    pub waited: u64,
    /// Store calls that failed.
    pub store_errors: u64,
    /// Requests admitted unchecked because the store failed (fail-open).
    pub failed_open: u64,
    /// Requests refused because the store failed (fail-closed).
    pub failed_closed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    admitted: AtomicU64,
    rejected: AtomicU64,
    waited: AtomicU64,
    store_errors: AtomicU64,
    failed_open: AtomicU64,
    failed_closed: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Error code of a refusal by a local limit (tells it apart from an
/// upstream's 429).
pub const CODE_LOCAL_LIMIT: &str = "local_rate_limit";
/// Error code of a request whose cost exceeds the whole limit.
pub const CODE_TOO_LARGE: &str = "request_too_large";
/// Error code of a refusal because the limit store is down (fail-closed).
pub const CODE_STORE_DOWN: &str = "limit_store_unavailable";

/// Whether a wait starting now ends before `deadline`.
pub(crate) fn fits(wait: Duration, deadline: Instant) -> bool {
    Instant::now().checked_add(wait).is_some_and(|end| end < deadline)
}

/// A keyed rate limiter over a store.
#[derive(Debug)]
pub struct RateLimiter<S = MemoryStore> {
    name: Arc<str>,
    store: S,
    counters: Counters,
}

impl<S: LimiterStore> RateLimiter<S> {
    /// A limiter named `name` (used in error messages and metrics, e.g.
    /// `"tokens per minute"`) over `store`.
    pub fn new(name: impl Into<Arc<str>>, store: S) -> Self {
        RateLimiter {
            name: name.into(),
            store,
            counters: Counters::default(),
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.store.spec().quota
    }

    /// The counters.
    pub fn stats(&self) -> LimiterStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LimiterStats {
            admitted: l(&c.admitted),
            rejected: l(&c.rejected),
            waited: l(&c.waited),
            store_errors: l(&c.store_errors),
            failed_open: l(&c.failed_open),
            failed_closed: l(&c.failed_closed),
        }
    }

    fn too_large(&self, key: &str, cost: u64) -> Option<Rejection> {
        let q = self.quota();
        (cost > q.limit).then(|| {
            Rejection {
            error: Box::new(Error::new(
                ErrorKind::RateLimited,
                format!(
                    "{}: the request needs {cost} but the limit for {key} is {} per {}s, so it can never be admitted",
                    self.name,
                    q.limit,
                    q.period.as_secs_f64()
                ),
            )
            .with_code(CODE_TOO_LARGE)),
            decision: None,
        }
        })
    }

    fn over_limit(&self, key: &str, d: Decision) -> Rejection {
        let q = self.quota();
        Rejection {
            error: Box::new(
                Error::new(
                    ErrorKind::RateLimited,
                    format!(
                        "{}: limit of {} per {}s reached for {key}; admitted again in {:.3}s",
                        self.name,
                        q.limit,
                        q.period.as_secs_f64(),
                        d.retry_after.as_secs_f64()
                    ),
                )
                .with_retry_after(Some(d.retry_after))
                .with_code(CODE_LOCAL_LIMIT),
            ),
            decision: Some(d),
        }
    }

    fn admit(&self, d: Decision, ticket: Ticket, cost: u64) -> Result<Reservation, Rejection> {
        bump(&self.counters.admitted);
        Ok(Reservation {
            decision: d,
            ticket: Some(ticket),
            cost,
        })
    }

    fn store_failed(&self, e: RedisUnavailable, cost: u64) -> Result<Reservation, Rejection> {
        bump(&self.counters.store_errors);
        let q = self.quota();
        match self.store.failure_policy() {
            FailurePolicy::Open => {
                bump(&self.counters.failed_open);
                bump(&self.counters.admitted);
                tracing::warn!(limiter = %self.name, error = %e, "rate limit store unavailable: admitting (fail-open)");
                Ok(Reservation {
                    decision: Decision {
                        allowed: true,
                        limit: q.limit,
                        remaining: q.limit.saturating_sub(cost),
                        reset_after: Duration::ZERO,
                        retry_after: Duration::ZERO,
                    },
                    ticket: None,
                    cost,
                })
            }
            FailurePolicy::Closed => {
                bump(&self.counters.failed_closed);
                Err(Rejection {
                    error: Box::new(Error::new(
                        ErrorKind::Overloaded,
                        format!(
                            "{}: the rate limit store is unavailable ({e}) and the failure policy is closed, so the request is refused",
                            self.name
                        ),
                    )
                    .with_code(CODE_STORE_DOWN)),
                    decision: None,
                })
            }
        }
    }

    /// Takes `cost` for `key` if allowed now; otherwise refuses at once with
    /// the wait until it would be admitted.
    pub async fn try_acquire(&self, key: &str, cost: u64) -> Result<Reservation, Rejection> {
        if let Some(r) = self.too_large(key, cost) {
            bump(&self.counters.rejected);
            return Err(r);
        }
        match self.store.take(key, cost).await {
            Ok((d, t)) if d.allowed => self.admit(d, t, cost),
            Ok((d, _)) => {
                bump(&self.counters.rejected);
                Err(self.over_limit(key, d))
            }
            Err(e) => self.store_failed(e, cost),
        }
    }

    /// Takes `cost` for `key`, waiting until it is allowed, but never past
    /// `deadline`: when the wait would end after it, refuses at once.
    /// Without a deadline it may wait as long as the limit requires.
    pub async fn acquire(&self, key: &str, cost: u64, deadline: Option<Instant>) -> Result<Reservation, Rejection> {
        loop {
            match self.try_acquire(key, cost).await {
                Err(Rejection { decision: Some(d), .. }) if deadline.is_none_or(|dl| fits(d.retry_after, dl)) => {
                    bump(&self.counters.waited);
                    // Others may take the freed allowance first: then wait again.
                    tokio::time::sleep(d.retry_after.max(Duration::from_millis(1))).await;
                }
                other => return other,
            }
        }
    }

    /// Corrects a reservation with the real cost: refunds what was not
    /// used, charges what was used beyond the estimate. Store errors are
    /// counted, not returned: the request is over by then.
    pub async fn settle(&self, key: &str, reservation: Reservation, actual: u64) {
        let Some(ticket) = reservation.ticket else { return };
        let delta = i64::try_from(actual).unwrap_or(i64::MAX) - i64::try_from(reservation.cost).unwrap_or(i64::MAX);
        if delta == 0 {
            return;
        }
        if let Err(e) = self.store.adjust(key, ticket, delta).await {
            bump(&self.counters.store_errors);
            tracing::warn!(limiter = %self.name, error = %e, "could not settle a rate limit reservation");
        }
    }
}

impl RateLimiter<MemoryStore> {
    /// A limiter in memory.
    pub fn in_memory(name: impl Into<Arc<str>>, spec: LimitSpec) -> Self {
        RateLimiter::new(name, MemoryStore::new(spec, MemoryOptions::default()))
    }

    /// [`try_acquire`](Self::try_acquire) without a future: the in-memory
    /// store answers synchronously.
    pub fn try_acquire_now(&self, key: &str, cost: u64) -> Result<Reservation, Rejection> {
        if let Some(r) = self.too_large(key, cost) {
            bump(&self.counters.rejected);
            return Err(r);
        }
        let (d, t) = self.store.take_now(key, cost);
        if d.allowed {
            self.admit(d, t, cost)
        } else {
            bump(&self.counters.rejected);
            Err(self.over_limit(key, d))
        }
    }

    /// [`settle`](Self::settle) without a future.
    pub fn settle_now(&self, key: &str, reservation: Reservation, actual: u64) {
        let Some(ticket) = reservation.ticket else { return };
        let delta = i64::try_from(actual).unwrap_or(i64::MAX) - i64::try_from(reservation.cost).unwrap_or(i64::MAX);
        if delta != 0 {
            self.store.adjust_now(key, ticket, delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn limiter(algorithm: Algorithm, limit: u64) -> RateLimiter {
        RateLimiter::in_memory(
            "requests per minute",
            LimitSpec {
                algorithm,
                quota: Quota::per_minute(limit),
            },
        )
    }

    const ALL: [Algorithm; 4] = [
        Algorithm::TokenBucket,
        Algorithm::Gcra,
        Algorithm::SlidingLog,
        Algorithm::SlidingWindow,
    ];

    #[tokio::test(start_paused = true)]
    async fn over_the_limit_is_refused_with_the_wait_and_headers() {
        for algo in ALL {
            let l = limiter(algo, 3);
            for i in 0..3 {
                let r = l.try_acquire("k", 1).await.unwrap();
                assert_eq!(r.decision().remaining, 2 - i);
                assert_eq!(r.decision().limit, 3);
            }
            let e = l.try_acquire("k", 1).await.unwrap_err();
            assert_eq!(e.error.kind, ErrorKind::RateLimited);
            assert_eq!(e.error.code.as_deref(), Some(CODE_LOCAL_LIMIT));
            let d = e.decision.unwrap();
            assert_eq!((d.allowed, d.remaining, d.limit), (false, 0, 3));
            assert_eq!(e.error.retry_after, Some(d.retry_after));
            assert!(d.retry_after > Duration::ZERO);
            // Other keys are untouched.
            assert!(l.try_acquire("other", 1).await.is_ok());
            let s = l.stats();
            assert_eq!((s.admitted, s.rejected), (4, 1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rpm_refills_at_n_per_minute() {
        let l = limiter(Algorithm::TokenBucket, 60);
        for _ in 0..60 {
            let _ = l.try_acquire_now("k", 1).unwrap();
        }
        let e = l.try_acquire_now("k", 1).unwrap_err();
        assert_eq!(e.error.retry_after, Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        let _ = l.try_acquire_now("k", 1).unwrap();
        assert!(l.try_acquire_now("k", 1).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_within_the_deadline_and_refuses_beyond_it() {
        let l = limiter(Algorithm::Gcra, 60);
        for _ in 0..60 {
            let _ = l.try_acquire("k", 1).await.unwrap();
        }
        let start = Instant::now();
        // Admitted again after 1 s: a deadline at 0.5 s refuses at once.
        let e = l
            .acquire("k", 1, Some(start + Duration::from_millis(500)))
            .await
            .unwrap_err();
        assert_eq!(e.error.kind, ErrorKind::RateLimited);
        assert_eq!(start.elapsed(), Duration::ZERO);
        // A deadline at 2 s waits 1 s.
        let _ = l.acquire("k", 1, Some(start + Duration::from_secs(2))).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // No deadline: waits as long as needed.
        let _ = l.acquire("k", 1, None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(l.stats().waited, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_then_settle() {
        for algo in ALL {
            let l = limiter(algo, 1000);
            let a = l.try_acquire("k", 600).await.unwrap();
            // The estimate is held: a second big request does not fit.
            assert!(l.try_acquire("k", 600).await.is_err(), "{algo:?}");
            l.settle("k", a, 200).await;
            let b = l.try_acquire("k", 600).await.unwrap();
            assert_eq!(b.decision().remaining, 200, "{algo:?}");
            // Used more than estimated: the excess is charged.
            l.settle("k", b, 800).await;
            assert!(l.try_acquire("k", 1).await.is_err(), "{algo:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_reservations_cannot_overspend() {
        let l = Arc::new(limiter(Algorithm::TokenBucket, 10_000));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.try_acquire("k", 1000).await.is_ok() })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        assert_eq!(admitted, 10);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Through the public API, on tokio's paused clock: in any interval
        /// of length t a key gets at most `limit × t / period + limit`.
        #[test]
        fn the_limiter_never_admits_more_than_rate_times_t_plus_burst(
            algo in proptest::sample::select(ALL.to_vec()),
            limit in 1u64..30,
            period_ms in 1u64..2_000,
            steps in proptest::collection::vec((0u64..500, 1u64..4, 0usize..3), 1..200),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            let admitted = rt.block_on(async {
                let l = RateLimiter::in_memory("p", LimitSpec { algorithm: algo, quota: Quota::new(limit, Duration::from_millis(period_ms)) });
                let start = Instant::now();
                let mut admitted = vec![];
                for (dt, cost, key) in steps {
                    tokio::time::advance(Duration::from_millis(dt)).await;
                    let key = ["a", "b", "c"][key];
                    if l.try_acquire(key, cost).await.is_ok() {
                        admitted.push((key, start.elapsed().as_nanos(), u128::from(cost)));
                    }
                }
                admitted
            });
            let period = u128::from(period_ms) * 1_000_000;
            for key in ["a", "b", "c"] {
                let mine: Vec<_> = admitted.iter().filter(|a| a.0 == key).collect();
                for i in 0..mine.len() {
                    let mut total = 0;
                    for j in i..mine.len() {
                        total += mine[j].2;
                        let t = mine[j].1 - mine[i].1;
                        proptest::prop_assert!(total * period <= u128::from(limit) * (t + period),
                            "{:?} key {}: {} in {} ns", algo, key, total, t);
                    }
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_larger_than_the_limit_is_refused_without_waiting() {
        let l = limiter(Algorithm::TokenBucket, 100);
        let start = Instant::now();
        let e = l.acquire("k", 101, None).await.unwrap_err();
        assert_eq!(e.error.code.as_deref(), Some(CODE_TOO_LARGE));
        assert_eq!(e.error.retry_after, None);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
