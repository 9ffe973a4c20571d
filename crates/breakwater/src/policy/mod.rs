//! Resilience policies, each usable alone: deadlines and timeouts (more
//! arrive with the policy issue: backoff, retry, budgets, breaker, limiters,
//! bulkheads).

pub mod timeout;
