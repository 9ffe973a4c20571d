//! Concurrency limits per target: a bulkhead, optionally adaptive.
//!
//! A [`Bulkhead`] lets at most `max_in_flight` calls run at once; up to
//! `max_queue` more wait (first come, first served) for a slot, each no
//! longer than its deadline. Beyond that a call is refused at once with
//! [`ErrorKind::Overloaded`] (code [`CODE_BULKHEAD_FULL`]): a target that is
//! slow must not tie up every task of the gateway.
//!
//! **Adaptive** (AIMD, as Netflix's concurrency-limits `AIMDLimit`): the
//! limit starts at `initial`, grows by one after a success while the calls
//! in flight use at least half of it, and shrinks by `backoff_ratio` when a
//! call signals overload (`overloaded`, `rate_limited` or `timeout`), never
//! below `min` nor above `max_in_flight`. So the gateway finds how much
//! parallelism the upstream really sustains instead of trusting a number.
//!
//! Permits are RAII: dropping one frees its slot. Recording an outcome on it
//! ([`BulkheadPermit::record`]) feeds the adaptive limit; for a fixed limit
//! it is optional.

use crate::error::{Error, ErrorKind, Result, TimeoutPhase};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Error code of a refusal by a full bulkhead.
pub const CODE_BULKHEAD_FULL: &str = "local_bulkhead_full";

/// The AIMD parameters of an adaptive limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    /// The limit at start.
    pub initial: u32,
    /// The lowest limit.
    pub min: u32,
    /// Factor applied on an overload signal (0 < ratio < 1).
    pub backoff_ratio: f64,
}

impl Aimd {
    /// Defaults for a ceiling of `max`: start at half, floor 1, back off by 10%.
    pub fn for_max(max: u32) -> Self {
        Aimd {
            initial: (max / 2).max(1),
            min: 1,
            backoff_ratio: 0.9,
        }
    }
}

/// How a bulkhead is sized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BulkheadConfig {
    /// Calls in flight at once (the ceiling, when adaptive).
    pub max_in_flight: u32,
    /// Calls that may wait for a slot.
    pub max_queue: u32,
    /// Adapt the limit below `max_in_flight`.
    pub adaptive: Option<Aimd>,
}

impl BulkheadConfig {
    /// The bulkhead of a provider's `limits`, or `None` when `max_in_flight`
    /// is unlimited.
    pub fn from_limits(l: &super::ratelimit::ProviderLimits) -> Option<Self> {
        let max = l.max_in_flight?.max(1);
        Some(BulkheadConfig {
            max_in_flight: max,
            max_queue: l.max_queue.unwrap_or(max),
            adaptive: l.adaptive.then(|| Aimd::for_max(max)),
        })
    }
}

/// Counters and current sizes of a bulkhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BulkheadStats {
    /// The current limit (fixed, or where the adaptive one stands).
    pub limit: u32,
    /// Calls in flight.
    pub in_flight: u32,
    /// Calls waiting for a slot.
    pub queued: u32,
    /// Calls refused because the queue was full.
    pub rejected_total: u64,
    /// Calls whose deadline passed while they waited.
    pub timed_out_total: u64,
}

#[derive(Debug)]
struct Adaptive {
    cfg: Aimd,
    max: u32,
    /// Slots to retire when the limit dropped below the calls in flight:
    /// the next permits released are forgotten instead of returned.
    debt: AtomicU32,
}

#[derive(Debug)]
struct Inner {
    name: Arc<str>,
    sem: Arc<Semaphore>,
    limit: AtomicU32,
    max_queue: u32,
    queued: AtomicU32,
    in_flight: AtomicU32,
    adaptive: Option<Adaptive>,
    rejected: AtomicU64,
    timed_out: AtomicU64,
}

/// A concurrency limit for one target; clones share it.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

/// A slot in a bulkhead, freed on drop.
#[derive(Debug)]
#[must_use = "the slot is freed when the permit is dropped"]
pub struct BulkheadPermit {
    inner: Arc<Inner>,
    permit: Option<OwnedSemaphorePermit>,
}

/// Undoes a queue place however the wait ends (success, timeout, cancel).
struct Queued<'a>(&'a AtomicU32);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Bulkhead {
    /// A bulkhead for the target `name`.
    pub fn new(name: impl Into<Arc<str>>, cfg: BulkheadConfig) -> Self {
        let max = cfg.max_in_flight.max(1);
        let adaptive = cfg.adaptive.map(|a| {
            let min = a.min.clamp(1, max);
            Adaptive {
                cfg: Aimd {
                    initial: a.initial.clamp(min, max),
                    min,
                    backoff_ratio: if a.backoff_ratio > 0.0 && a.backoff_ratio < 1.0 {
                        a.backoff_ratio
                    } else {
                        0.9
                    },
                },
                max,
                debt: AtomicU32::new(0),
            }
        });
        let start = adaptive.as_ref().map_or(max, |a| a.cfg.initial);
        Bulkhead {
            inner: Arc::new(Inner {
                name: name.into(),
                sem: Arc::new(Semaphore::new(start as usize)),
                limit: AtomicU32::new(start),
                max_queue: cfg.max_queue,
                queued: AtomicU32::new(0),
                in_flight: AtomicU32::new(0),
                adaptive,
                rejected: AtomicU64::new(0),
                timed_out: AtomicU64::new(0),
            }),
        }
    }

    fn permit(&self, p: OwnedSemaphorePermit) -> BulkheadPermit {
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        BulkheadPermit {
            inner: self.inner.clone(),
            permit: Some(p),
        }
    }

    fn full(&self) -> Error {
        let i = &self.inner;
        i.rejected.fetch_add(1, Ordering::Relaxed);
        Error::new(
            ErrorKind::Overloaded,
            format!(
                "the local bulkhead for {} is full: {} calls in flight and {} waiting",
                i.name,
                i.in_flight.load(Ordering::Relaxed),
                i.queued.load(Ordering::Relaxed)
            ),
        )
        .with_code(CODE_BULKHEAD_FULL)
    }

    fn deadline_passed(&self) -> Error {
        self.inner.timed_out.fetch_add(1, Ordering::Relaxed);
        Error::timeout(
            TimeoutPhase::Total,
            format!(
                "the deadline passed while waiting for a free slot for {}",
                self.inner.name
            ),
        )
    }

    /// A slot now, or an `overloaded` error at once.
    pub fn try_acquire(&self) -> Result<BulkheadPermit> {
        match self.inner.sem.clone().try_acquire_owned() {
            Ok(p) => Ok(self.permit(p)),
            Err(_) => Err(self.full()),
        }
    }

    /// A slot, waiting in the queue if all are busy; refused at once when
    /// the queue is full, and with a `timeout` when `deadline` passes first.
    pub async fn acquire(&self, deadline: Option<Instant>) -> Result<BulkheadPermit> {
        let i = &self.inner;
        if let Ok(p) = i.sem.clone().try_acquire_owned() {
            return Ok(self.permit(p));
        }
        if i.queued.fetch_add(1, Ordering::Relaxed) >= i.max_queue {
            i.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(self.full());
        }
        let _place = Queued(&i.queued);
        let wait = i.sem.clone().acquire_owned();
        let p = match deadline {
            None => wait.await,
            Some(d) if d <= Instant::now() => return Err(self.deadline_passed()),
            Some(d) => match tokio::time::timeout_at(d, wait).await {
                Ok(p) => p,
                Err(_) => return Err(self.deadline_passed()),
            },
        };
        // The semaphore is never closed.
        p.map(|p| self.permit(p))
            .map_err(|_| Error::new(ErrorKind::Overloaded, "the bulkhead was closed"))
    }

    /// The current sizes and counters.
    pub fn stats(&self) -> BulkheadStats {
        let i = &self.inner;
        BulkheadStats {
            limit: i.limit.load(Ordering::Relaxed),
            in_flight: i.in_flight.load(Ordering::Relaxed),
            queued: i.queued.load(Ordering::Relaxed),
            rejected_total: i.rejected.load(Ordering::Relaxed),
            timed_out_total: i.timed_out.load(Ordering::Relaxed),
        }
    }
}

impl Inner {
    fn on_success(&self, in_flight: u32) {
        let Some(a) = &self.adaptive else { return };
        let grew = self.limit.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
            (in_flight.saturating_mul(2) >= l && l < a.max).then_some(l + 1)
        });
        if grew.is_ok() {
            // Pay a retirement debt first; otherwise open a new slot.
            if a.debt
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
                .is_err()
            {
                self.sem.add_permits(1);
            }
        }
    }

    fn on_overload(&self) {
        let Some(a) = &self.adaptive else { return };
        let Ok(old) = self.limit.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
            let new = ((f64::from(l) * a.cfg.backoff_ratio) as u32).max(a.cfg.min);
            (new < l).then_some(new)
        }) else {
            return;
        };
        let new = ((f64::from(old) * a.cfg.backoff_ratio) as u32).max(a.cfg.min);
        let cut = (old - new) as usize;
        // Free slots go at once; slots in use are retired as they come back.
        let forgotten = self.sem.forget_permits(cut);
        a.debt.fetch_add((cut - forgotten) as u32, Ordering::Relaxed);
    }
}

impl BulkheadPermit {
    /// Records the call's result for the adaptive limit: `overloaded`,
    /// `rate_limited` and `timeout` shrink it, a success may grow it, other
    /// errors say nothing about capacity.
    pub fn record<T>(self, r: &Result<T>) {
        match r {
            Ok(_) => self.success(),
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::Overloaded | ErrorKind::RateLimited | ErrorKind::Timeout
                ) =>
            {
                self.overloaded()
            }
            Err(_) => {}
        }
    }

    /// The call succeeded.
    pub fn success(self) {
        let in_flight = self.inner.in_flight.load(Ordering::Relaxed);
        self.inner.on_success(in_flight);
    }

    /// The upstream signalled overload.
    pub fn overloaded(self) {
        self.inner.on_overload();
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(p) = self.permit.take()
            && let Some(a) = &self.inner.adaptive
            && a.debt
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1))
                .is_ok()
        {
            p.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fixed(max: u32, queue: u32) -> Bulkhead {
        Bulkhead::new(
            "t",
            BulkheadConfig {
                max_in_flight: max,
                max_queue: queue,
                adaptive: None,
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn overflow_is_an_immediate_typed_error() {
        let b = fixed(2, 1);
        let _a = b.try_acquire().unwrap();
        let _c = b.acquire(None).await.unwrap();
        let e = b.try_acquire().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Overloaded);
        assert_eq!(e.code.as_deref(), Some(CODE_BULKHEAD_FULL));
        assert!(e.message.contains("local bulkhead"), "{}", e.message);
        // One may queue; the next is refused at once.
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire(None).await.map(drop) });
        tokio::task::yield_now().await;
        assert_eq!(b.stats().queued, 1);
        let start = Instant::now();
        let e = b.acquire(None).await.unwrap_err();
        assert_eq!((e.kind, start.elapsed()), (ErrorKind::Overloaded, Duration::ZERO));
        drop(_a);
        waiter.await.unwrap().unwrap();
        let s = b.stats();
        assert_eq!((s.in_flight, s.queued, s.rejected_total), (1, 0, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_is_bounded_by_the_deadline() {
        let b = fixed(1, 10);
        let held = b.try_acquire().unwrap();
        let start = Instant::now();
        let e = b.acquire(Some(start + Duration::from_millis(300))).await.unwrap_err();
        assert_eq!((e.kind, e.phase), (ErrorKind::Timeout, Some(TimeoutPhase::Total)));
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(b.stats().queued, 0, "the queue place is given back");
        let e = b.acquire(Some(start)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout, "a passed deadline does not wait");
        // Released in time: the waiter gets the slot.
        let b2 = b.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(held);
            drop(b2);
        });
        let got = b.acquire(Some(Instant::now() + Duration::from_secs(1))).await;
        assert!(got.is_ok());
        assert_eq!(b.stats().timed_out_total, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_frees_its_queue_place() {
        let b = fixed(1, 1);
        let _held = b.try_acquire().unwrap();
        let r = tokio::time::timeout(Duration::from_millis(10), b.acquire(None)).await;
        assert!(r.is_err());
        assert_eq!(b.stats().queued, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_in_flight_than_the_limit() {
        let b = fixed(3, 100);
        let peak = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (b, peak) = (b.clone(), peak.clone());
                tokio::spawn(async move {
                    let p = b.acquire(None).await.unwrap();
                    peak.fetch_max(b.stats().in_flight, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    p.success();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::Relaxed), 3);
        assert_eq!(b.stats().in_flight, 0);
    }

    fn adaptive(max: u32) -> Bulkhead {
        Bulkhead::new(
            "t",
            BulkheadConfig {
                max_in_flight: max,
                max_queue: 0,
                adaptive: Some(Aimd::for_max(max)),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn aimd_grows_under_load_and_halves_on_overload() {
        let b = adaptive(20);
        assert_eq!(b.stats().limit, 10);
        // Busy and succeeding: +1 per success.
        for _ in 0..5 {
            let ps: Vec<_> = (0..b.stats().limit).map(|_| b.try_acquire().unwrap()).collect();
            assert!(b.try_acquire().is_err(), "exactly the limit is let in");
            let mut ps = ps.into_iter();
            ps.next().unwrap().success();
        }
        assert_eq!(b.stats().limit, 15);
        // Idle successes (little in flight) do not grow it.
        for _ in 0..10 {
            b.try_acquire().unwrap().success();
        }
        assert_eq!(b.stats().limit, 15);
        // Overload while every slot is busy: the limit drops at once and
        // the busy slots are retired as they come back.
        let ps: Vec<_> = (0..15).map(|_| b.try_acquire().unwrap()).collect();
        let mut ps = ps.into_iter();
        ps.next().unwrap().overloaded();
        assert_eq!(b.stats().limit, 13);
        drop(ps);
        let held: Vec<_> = std::iter::from_fn(|| b.try_acquire().ok()).take(100).collect();
        assert_eq!(held.len(), 13);
        drop(held);
        // Never below the floor.
        for _ in 0..100 {
            b.try_acquire().unwrap().overloaded();
        }
        assert_eq!(b.stats().limit, 1);
        // Other errors are neutral.
        b.try_acquire()
            .unwrap()
            .record::<()>(&Err(Error::new(ErrorKind::InvalidRequest, "x")));
        assert_eq!(b.stats().limit, 1);
    }

    #[test]
    fn from_provider_limits() {
        use super::super::ratelimit::ProviderLimits;
        assert!(BulkheadConfig::from_limits(&ProviderLimits::default()).is_none());
        let c = BulkheadConfig::from_limits(&ProviderLimits {
            max_in_flight: Some(8),
            adaptive: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.max_in_flight, c.max_queue), (8, 8));
        assert_eq!(c.adaptive.unwrap().initial, 4);
    }
}
