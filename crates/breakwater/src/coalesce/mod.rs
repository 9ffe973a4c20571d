//! Request coalescing (single flight): identical requests in flight at the
//! same time share one upstream call.
//!
//! Keyed by the [`CacheKey`], so "identical" means what the cache means (and
//! tenants share a flight only when they share cache entries). The call runs
//! in its own task: if the caller that started it goes away, the call goes on
//! for the others; when the last waiter leaves, it is cancelled (the task is
//! aborted, which drops the upstream request).
//!
//! - [`Coalescer::run`]: complete answers; every waiter gets the same
//!   result, errors included.
//! - [`StreamCoalescer::run_stream`]: streams; every waiter gets every chunk,
//!   a late joiner first the chunks so far, then the live ones.
//!
//! Put the cache store *inside* the coalesced call, so it happens once and
//! before the flight ends (a request arriving just after then hits the
//! cache instead of starting a new call).

mod flights;
mod stream;

pub use stream::StreamCoalescer;

use crate::cache::CacheKey;
use crate::error::{Error, ErrorKind, Result};
use flights::{FinishGuard, Flights};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// The `coalesce:` section of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoalesceConfig {
    /// Whether identical in-flight requests share one call.
    #[serde(default = "d_true")]
    pub enabled: bool,
}

fn d_true() -> bool {
    true
}

impl Default for CoalesceConfig {
    fn default() -> Self {
        CoalesceConfig { enabled: true }
    }
}

/// Counters of a coalescer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CoalesceStats {
    /// Calls started (one per flight).
    pub leaders: u64,
    /// Requests that joined a flight instead of calling.
    pub followers: u64,
    /// Flights in progress now.
    pub in_flight: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    leaders: AtomicU64,
    followers: AtomicU64,
}

impl Counters {
    pub(crate) fn count(&self, leader: bool) {
        let c = if leader { &self.leaders } else { &self.followers };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, in_flight: usize) -> CoalesceStats {
        CoalesceStats {
            leaders: self.leaders.load(Ordering::Relaxed),
            followers: self.followers.load(Ordering::Relaxed),
            in_flight: in_flight as u64,
        }
    }
}

/// The error waiters get when the shared call died without an answer (it
/// panicked).
pub(crate) fn lost_call() -> Error {
    Error::new(
        ErrorKind::ServerError,
        "the shared upstream call ended without an answer",
    )
}

type Slot<T> = watch::Sender<Option<Result<T>>>;

/// Single flight for complete answers. Cheap to clone.
pub struct Coalescer<T> {
    flights: Arc<Flights<Slot<T>>>,
    counters: Arc<Counters>,
}

impl<T> Clone for Coalescer<T> {
    fn clone(&self) -> Self {
        Coalescer {
            flights: self.flights.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Coalescer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("in_flight", &self.flights.len())
            .finish()
    }
}

impl<T: Clone + Send + Sync + 'static> Default for Coalescer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone + Send + Sync + 'static> Coalescer<T> {
    /// An empty table.
    pub fn new() -> Self {
        Coalescer {
            flights: Arc::new(Flights::new()),
            counters: Arc::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CoalesceStats {
        self.counters.snapshot(self.flights.len())
    }

    /// Runs `call` unless an identical one (same `key`) is in flight, in
    /// which case waits for that one's result. `call` runs in a task of its
    /// own, so it completes even if this caller is dropped, as long as some
    /// waiter remains.
    pub async fn run<F, Fut>(&self, key: CacheKey, call: F) -> Result<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (member, leader) = self.flights.join(key, || watch::channel(None).0);
        self.counters.count(leader);
        let mut rx = member.flight().state.subscribe();
        if leader {
            let mut guard = FinishGuard {
                flights: member.flights().clone(),
                key: member.key(),
                flight: member.flight().clone(),
                on_drop: Some(Box::new(|tx: &Slot<T>| {
                    tx.send_if_modified(|v| {
                        if v.is_none() {
                            *v = Some(Err(lost_call()));
                            true
                        } else {
                            false
                        }
                    });
                })),
            };
            let task = tokio::spawn(async move {
                let res = call().await;
                // Leave the table first: a request arriving from now on
                // starts afresh (and finds the cache the call filled).
                guard.flights.finish(&guard.key, &guard.flight);
                guard.flight.state.send_replace(Some(res));
                guard.disarm();
            });
            member.set_abort(task.abort_handle());
        }
        let res = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(|| Err(lost_call())),
            Err(_) => Err(lost_call()),
        };
        drop(member);
        res
    }
}
