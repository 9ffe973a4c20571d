//! The policies composed the way a client uses them per target:
//! limiter acquire → bulkhead permit → breaker permit → call under the
//! deadline → record the outcome → retry decision. A fake upstream counts
//! its calls; time is paused.

use breakwater::policy::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use breakwater::policy::concurrency::{Bulkhead, BulkheadConfig};
use breakwater::policy::ratelimit::{Algorithm, RequestLimits};
use breakwater::policy::retry::{RetryConfig, RetryDecision, RetryPolicy, RetryState};
use breakwater::policy::retry_budget::RetryBudget;
use breakwater::policy::timeout::run_until;
use breakwater::{Error, ErrorKind, Result, error::TimeoutPhase};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

struct Target {
    limits: RequestLimits,
    bulkhead: Bulkhead,
    breaker: CircuitBreaker,
    retry: RetryPolicy,
    budget: RetryBudget,
}

struct Upstream {
    calls: AtomicU32,
    healthy: AtomicBool,
}

impl Upstream {
    async fn call(&self) -> Result<&'static str> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if self.healthy.load(Ordering::Relaxed) {
            Ok("hello")
        } else {
            Err(Error::new(ErrorKind::ServerError, "500").with_status(500))
        }
    }
}

/// One request against one target, with its attempts.
async fn request(t: &Target, up: &Upstream, deadline: Instant, rng: &mut SmallRng) -> (Result<&'static str>, u32) {
    let mut state = RetryState::new();
    loop {
        let attempt = state.begin_attempt(Some(&t.budget));
        let result = async {
            let reservation = t.limits.acquire("target", 100, Some(deadline)).await?;
            let gates = async { Ok::<_, Error>((t.bulkhead.acquire(Some(deadline)).await?, t.breaker.try_acquire()?)) };
            let (slot, permit) = match gates.await {
                Ok(g) => g,
                Err(e) => {
                    // The call is not made: give the reservation back.
                    t.limits.release("target", reservation).await;
                    return Err(e);
                }
            };
            let r = run_until(Some(deadline), TimeoutPhase::Total, up.call()).await;
            permit.record(&r);
            slot.record(&r);
            t.limits.settle("target", reservation, 40).await;
            r
        }
        .await;
        let err = match result {
            Ok(v) => return (Ok(v), attempt),
            Err(e) => e,
        };
        match state.on_error(&t.retry, &err, Some(deadline), Some(&t.budget), rng) {
            RetryDecision::Retry { after } => tokio::time::sleep(after).await,
            RetryDecision::GiveUp(_) => return (Err(err), attempt),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_upstream_trips_the_breaker_then_requests_fail_fast_until_it_recovers() {
    let t = Target {
        limits: RequestLimits::in_memory(Some(1000), Some(1_000_000), Algorithm::TokenBucket),
        bulkhead: Bulkhead::new(
            "sim",
            BulkheadConfig {
                max_in_flight: 4,
                max_queue: 4,
                adaptive: None,
            },
        ),
        breaker: CircuitBreaker::new("sim", &BreakerConfig::default()),
        retry: RetryPolicy::new(&RetryConfig::default()),
        budget: RetryBudget::default(),
    };
    let up = Upstream {
        calls: AtomicU32::new(0),
        healthy: AtomicBool::new(false),
    };
    let mut events = t.breaker.subscribe();
    let mut rng = SmallRng::seed_from_u64(1);

    // 1st request: 3 attempts of 500. 2nd: two more 500s trip the breaker
    // (5 in a row); its third attempt is refused by the breaker, and
    // circuit_open is not retried on the same target.
    let (r, attempts) = request(&t, &up, Instant::now() + Duration::from_secs(30), &mut rng).await;
    assert_eq!((r.unwrap_err().kind, attempts), (ErrorKind::ServerError, 3));
    let (r, attempts) = request(&t, &up, Instant::now() + Duration::from_secs(30), &mut rng).await;
    let e = r.unwrap_err();
    assert_eq!((e.kind, attempts), (ErrorKind::CircuitOpen, 3));
    assert_eq!(up.calls.load(Ordering::Relaxed), 5);
    assert_eq!(events.try_recv().unwrap().to, BreakerState::Open);

    // Now every request fails fast, without touching the upstream, and
    // gives back what it reserved from the limits (no time passes here).
    let left = || async {
        let r = t.limits.try_acquire("target", 0).await.unwrap();
        let left = (
            r.requests().unwrap().decision().remaining,
            r.tokens().unwrap().decision().remaining,
        );
        t.limits.release("target", r).await;
        left
    };
    let before = left().await;
    for _ in 0..50 {
        let start = Instant::now();
        let (r, attempts) = request(&t, &up, start + Duration::from_secs(30), &mut rng).await;
        let e = r.unwrap_err();
        assert_eq!(
            (e.kind, attempts, start.elapsed()),
            (ErrorKind::CircuitOpen, 1, Duration::ZERO)
        );
        assert!(e.retry_after.is_some_and(|d| d <= Duration::from_secs(30)));
    }
    assert_eq!(up.calls.load(Ordering::Relaxed), 5);
    assert_eq!(left().await, before);

    // The upstream recovers; after the open period, probes close the breaker.
    up.healthy.store(true, Ordering::Relaxed);
    tokio::time::advance(Duration::from_secs(30)).await;
    for _ in 0..3 {
        let (r, _) = request(&t, &up, Instant::now() + Duration::from_secs(30), &mut rng).await;
        assert_eq!(r.unwrap(), "hello");
    }
    assert_eq!(t.breaker.state(), BreakerState::Closed);
    assert_eq!(t.bulkhead.stats().in_flight, 0);
}
