//! Resilience policies, each usable alone: deadlines and timeouts, backoff,
//! retry and the retry budget, circuit breakers, rate limiters, concurrency
//! limits (bulkheads) and spend budgets.
//!
//! A client composes them per target, in this order: rate limiter acquire →
//! bulkhead permit → breaker permit → call under the deadline → record the
//! outcome on the permits → retry decision.

pub mod backoff;
pub mod breaker;
pub mod breaker_share;
pub mod concurrency;
pub mod config;
pub mod ratelimit;
pub mod retry;
pub mod retry_budget;
pub mod spend;
pub mod timeout;
mod window;
