//! A target at run time: its provider, upstream model, statistics,
//! breaker, and the limits and bulkheads a call passes before it is sent.

use crate::error::{Error, Result};
use crate::policy::breaker::{BreakerPermit, CircuitBreaker};
use crate::policy::concurrency::{Bulkhead, BulkheadPermit};
use crate::policy::ratelimit::{AnyLimiterStore, PairReservation, RequestLimits};
use crate::provider::DynProvider;
use crate::route::TargetStats;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Limits shared by every target of one provider (`providers.*.limits`).
#[derive(Debug)]
pub(crate) struct Gate {
    pub limits: RequestLimits<AnyLimiterStore>,
    pub bulkhead: Option<Bulkhead>,
}

impl Gate {
    pub fn unlimited() -> Self {
        Gate {
            limits: RequestLimits::new(None, None),
            bulkhead: None,
        }
    }
}

/// One provider + model.
pub(crate) struct Target {
    /// `provider/model`.
    pub id: Arc<str>,
    pub provider: DynProvider,
    pub model: String,
    pub stats: TargetStats,
    pub breaker: CircuitBreaker,
    /// The provider's limits (shared with its other targets).
    pub provider_gate: Arc<Gate>,
    /// This target's own limits.
    pub own_gate: Gate,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("id", &self.id).finish()
    }
}

/// What a call holds while it runs: limiter reservations, bulkhead slots,
/// a breaker permit. [`Admission::finish`] records the outcome on each.
pub(crate) struct Admission {
    target: Arc<Target>,
    // Boxed: a reservation is large and most targets have no limits, and an
    // admission is held in every request's future and every open stream.
    provider_res: Option<Box<PairReservation>>,
    own_res: Option<Box<PairReservation>>,
    provider_slot: Option<BulkheadPermit>,
    own_slot: Option<BulkheadPermit>,
    breaker: Option<BreakerPermit>,
}

async fn take_limits(
    limits: &RequestLimits<AnyLimiterStore>,
    key: &str,
    tokens: u64,
    deadline: Instant,
    max_wait: Duration,
) -> Result<Option<Box<PairReservation>>> {
    if limits.is_unlimited() {
        return Ok(None);
    }
    // Wait a little for capacity; longer waits move on to another target.
    // Boxed (a limiter that may wait on Redis has a large future): unlimited
    // targets, the common case, then pay nothing for it.
    let until = deadline.min(Instant::now() + max_wait);
    Box::pin(limits.acquire(key, tokens, Some(until)))
        .await
        .map(|r| Some(Box::new(r)))
        .map_err(Error::from)
}

impl Target {
    /// Whether a call needs a token estimate: some limit of the provider or
    /// of this target counts tokens or requests.
    pub fn is_limited(&self) -> bool {
        !self.provider_gate.limits.is_unlimited() || !self.own_gate.limits.is_unlimited()
    }

    /// Passes the limits, bulkheads and breaker in that order; a refusal
    /// gives back what was taken. `force_probe` lets one call through an
    /// open breaker (when every target is out).
    pub async fn admit(
        self: &Arc<Self>,
        tokens: u64,
        deadline: Instant,
        max_wait: Duration,
        force_probe: bool,
    ) -> Result<Admission> {
        let mut adm = Admission {
            target: self.clone(),
            provider_res: None,
            own_res: None,
            provider_slot: None,
            own_slot: None,
            breaker: None,
        };
        let step = async {
            adm.provider_res = take_limits(
                &self.provider_gate.limits,
                self.provider.name(),
                tokens,
                deadline,
                max_wait,
            )
            .await?;
            adm.own_res = take_limits(&self.own_gate.limits, &self.id, tokens, deadline, max_wait).await?;
            if let Some(b) = &self.provider_gate.bulkhead {
                adm.provider_slot = Some(b.try_acquire()?);
            }
            if let Some(b) = &self.own_gate.bulkhead {
                adm.own_slot = Some(b.try_acquire()?);
            }
            adm.breaker = Some(if force_probe {
                self.breaker.force_probe()?
            } else {
                self.breaker.try_acquire()?
            });
            Ok::<(), Error>(())
        }
        .await;
        match step {
            Ok(()) => Ok(adm),
            Err(e) => {
                adm.release().await;
                Err(e)
            }
        }
    }
}

impl Admission {
    /// Gives everything back: the call was not made.
    pub async fn release(mut self) {
        let t = self.target.clone();
        if let Some(r) = self.provider_res.take() {
            Box::pin(t.provider_gate.limits.release(t.provider.name(), *r)).await;
        }
        if let Some(r) = self.own_res.take() {
            Box::pin(t.own_gate.limits.release(&t.id, *r)).await;
        }
        // Dropped slots and an unrecorded breaker permit count as nothing.
    }

    /// Records the outcome of the call: breaker, bulkheads (adaptive
    /// limits), and the token reservations settled with the real usage.
    pub async fn finish<T>(mut self, result: &Result<T>, tokens_used: u64) {
        if let Some(p) = self.breaker.take() {
            p.record(result);
        }
        if let Some(p) = self.provider_slot.take() {
            p.record(result);
        }
        if let Some(p) = self.own_slot.take() {
            p.record(result);
        }
        let t = self.target.clone();
        // Boxed like the acquisition: only limited targets pay for it.
        if let Some(r) = self.provider_res.take() {
            Box::pin(t.provider_gate.limits.settle(t.provider.name(), *r, tokens_used)).await;
        }
        if let Some(r) = self.own_res.take() {
            Box::pin(t.own_gate.limits.settle(&t.id, *r, tokens_used)).await;
        }
    }

    /// Records a failure of `kind` without a typed result (a stream that
    /// broke after it started).
    pub async fn finish_err(self, err: &Error, tokens_used: u64) {
        let r: Result<()> = Err(err.clone());
        self.finish(&r, tokens_used).await;
    }
}
