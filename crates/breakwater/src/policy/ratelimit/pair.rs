//! Requests and tokens per minute together, as a key or a provider states
//! them (`rpm` + `tpm`).
//!
//! Both limits are asked at once (concurrently, so against Redis the
//! decision costs one round trip of latency); a request is admitted only if
//! both admit it, and the one that admitted is refunded when the other
//! refuses, so a refusal costs nothing.

use super::{
    Algorithm, AnyLimiterStore, LimitSpec, LimiterStore, MemoryOptions, MemoryStore, Quota, RateLimiter,
    RedisLimiterStore, Rejection, Reservation,
};
use crate::redis_store::RedisStore;
use std::time::Duration;
use tokio::time::Instant;

/// The reservations of one admitted request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "settle it with the real token usage"]
pub struct PairReservation {
    requests: Option<Reservation>,
    tokens: Option<Reservation>,
}

impl PairReservation {
    /// The request limit's reservation (for `x-ratelimit-*-requests`).
    pub fn requests(&self) -> Option<&Reservation> {
        self.requests.as_ref()
    }

    /// The token limit's reservation (for `x-ratelimit-*-tokens`).
    pub fn tokens(&self) -> Option<&Reservation> {
        self.tokens.as_ref()
    }
}

/// A requests-per-minute and a tokens-per-minute limiter, either optional.
#[derive(Debug)]
pub struct RequestLimits<S = MemoryStore> {
    requests: Option<RateLimiter<S>>,
    tokens: Option<RateLimiter<S>>,
}

impl<S: LimiterStore> RequestLimits<S> {
    /// The pair of two limiters.
    pub fn new(requests: Option<RateLimiter<S>>, tokens: Option<RateLimiter<S>>) -> Self {
        RequestLimits { requests, tokens }
    }

    /// The request limiter.
    pub fn requests(&self) -> Option<&RateLimiter<S>> {
        self.requests.as_ref()
    }

    /// The token limiter.
    pub fn tokens(&self) -> Option<&RateLimiter<S>> {
        self.tokens.as_ref()
    }

    /// Whether there is no limit at all.
    pub fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none()
    }

    /// Admits one request estimated at `tokens` for `key` if both limits
    /// allow it now.
    pub async fn try_acquire(&self, key: &str, tokens: u64) -> Result<PairReservation, Rejection> {
        let (r, t) = tokio::join!(
            ask(self.requests.as_ref(), key, 1),
            ask(self.tokens.as_ref(), key, tokens)
        );
        match (r, t) {
            (Ok(requests), Ok(tokens)) => Ok(PairReservation { requests, tokens }),
            (Err(e), Ok(t)) => {
                if let (Some(l), Some(t)) = (&self.tokens, t) {
                    l.settle(key, t, 0).await;
                }
                Err(e)
            }
            (Ok(r), Err(e)) => {
                if let (Some(l), Some(r)) = (&self.requests, r) {
                    l.settle(key, r, 0).await;
                }
                Err(e)
            }
            // Report the longer wait.
            (Err(a), Err(b)) => Err(if wait(&a) >= wait(&b) { a } else { b }),
        }
    }

    /// Like [`try_acquire`](Self::try_acquire), but waits for admission,
    /// never past `deadline`.
    pub async fn acquire(
        &self,
        key: &str,
        tokens: u64,
        deadline: Option<Instant>,
    ) -> Result<PairReservation, Rejection> {
        loop {
            match self.try_acquire(key, tokens).await {
                Err(e) if e.decision.is_some() && deadline.is_none_or(|dl| super::fits(wait(&e), dl)) => {
                    tokio::time::sleep(wait(&e).max(Duration::from_millis(1))).await;
                }
                other => return other,
            }
        }
    }

    /// Gives everything back: the call was not made (a bulkhead or breaker
    /// refused it, or the caller went away before sending).
    pub async fn release(&self, key: &str, r: PairReservation) {
        if let (Some(l), Some(q)) = (&self.requests, r.requests) {
            l.settle(key, q, 0).await;
        }
        if let (Some(l), Some(t)) = (&self.tokens, r.tokens) {
            l.settle(key, t, 0).await;
        }
    }

    /// Settles the token reservation with the real usage (the request
    /// itself was used as reserved).
    pub async fn settle(&self, key: &str, r: PairReservation, actual_tokens: u64) {
        if let (Some(l), Some(t)) = (&self.tokens, r.tokens) {
            l.settle(key, t, actual_tokens).await;
        }
    }
}

async fn ask<S: LimiterStore>(
    l: Option<&RateLimiter<S>>,
    key: &str,
    cost: u64,
) -> Result<Option<Reservation>, Rejection> {
    match l {
        Some(l) => l.try_acquire(key, cost).await.map(Some),
        None => Ok(None),
    }
}

fn wait(r: &Rejection) -> Duration {
    r.decision.map_or(Duration::ZERO, |d| d.retry_after)
}

fn spec(algorithm: Algorithm, n: u64) -> LimitSpec {
    LimitSpec {
        algorithm,
        quota: Quota::per_minute(n),
    }
}

impl RequestLimits<MemoryStore> {
    /// `rpm` and `tpm` in memory (`None` = unlimited).
    pub fn in_memory(rpm: Option<u64>, tpm: Option<u64>, algorithm: Algorithm) -> Self {
        let mk = |name: &str, n: u64| {
            RateLimiter::new(
                name.to_string(),
                MemoryStore::new(spec(algorithm, n), MemoryOptions::default()),
            )
        };
        RequestLimits::new(
            rpm.map(|n| mk("requests per minute", n)),
            tpm.map(|n| mk("tokens per minute", n)),
        )
    }
}

impl RequestLimits<AnyLimiterStore> {
    /// `rpm` and `tpm` for `scope` (e.g. `key` or `provider:openai`, part
    /// of the Redis keys and of error messages), in Redis when given, else
    /// in memory.
    pub fn build(
        scope: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
        algorithm: Algorithm,
        redis: Option<&RedisStore>,
    ) -> Self {
        let mk = |what: &str, n: u64| {
            let spec = spec(algorithm, n);
            let store = match redis {
                Some(r) => AnyLimiterStore::Redis(RedisLimiterStore::new(r.clone(), &format!("{scope}:{what}"), spec)),
                None => AnyLimiterStore::Memory(MemoryStore::new(spec, MemoryOptions::default())),
            };
            let name = match what {
                "rpm" => format!("{scope} requests per minute"),
                _ => format!("{scope} tokens per minute"),
            };
            RateLimiter::new(name, store)
        };
        RequestLimits::new(rpm.map(|n| mk("rpm", n)), tpm.map(|n| mk("tpm", n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[tokio::test(start_paused = true)]
    async fn both_limits_must_admit_and_a_refusal_costs_nothing() {
        let l = RequestLimits::in_memory(Some(3), Some(1000), Algorithm::TokenBucket);
        let a = l.try_acquire("k", 900).await.unwrap();
        assert_eq!(a.requests().unwrap().decision().remaining, 2);
        assert_eq!(a.tokens().unwrap().decision().remaining, 100);
        // Tokens refuse: the request slot taken meanwhile is given back.
        let e = l.try_acquire("k", 200).await.unwrap_err();
        assert_eq!(e.error.kind, ErrorKind::RateLimited);
        assert!(e.error.message.contains("tokens per minute"), "{}", e.error.message);
        l.settle("k", a, 100).await;
        for _ in 0..2 {
            let _ = l.try_acquire("k", 10).await.unwrap();
        }
        let e = l.try_acquire("k", 10).await.unwrap_err();
        assert!(e.error.message.contains("requests per minute"), "{}", e.error.message);
        // The refused token reservations were refunded: 1000 - 100 - 2·10 left.
        let t = l.tokens().unwrap().try_acquire("k", 880).await;
        assert!(t.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_the_slower_limit() {
        let l = RequestLimits::in_memory(Some(60), Some(600), Algorithm::Gcra);
        let _ = l.try_acquire("k", 600).await.unwrap();
        let start = Instant::now();
        // 60 tokens come back in 6 s; the request limit is not the issue.
        let _ = l.acquire("k", 60, Some(start + Duration::from_secs(10))).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        assert!(
            l.acquire("k", 600, Some(Instant::now() + Duration::from_secs(10)))
                .await
                .is_err()
        );
        assert_eq!(start.elapsed(), Duration::from_secs(6), "refused at once");
        assert!(RequestLimits::in_memory(None, None, Algorithm::Gcra).is_unlimited());
    }
}
