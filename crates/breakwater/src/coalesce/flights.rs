//! The single-flight table: which keys have a call in flight, who waits on
//! it, and cancelling the call when the last waiter leaves.
//!
//! Sharded by key (32 shards, each a `std` mutex held only for a map
//! operation, never across an await), so there is no global lock on the hot
//! path.

use crate::cache::CacheKey;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::task::AbortHandle;

const SHARDS: usize = 32;

/// One call in flight and its shared state.
pub(crate) struct Flight<S> {
    pub(crate) state: S,
    /// Waiters still interested; changed only under the shard lock.
    waiters: Mutex<usize>,
    /// The spawned call, aborted when the last waiter leaves.
    abort: OnceLock<AbortHandle>,
}

type Shard<S> = Mutex<HashMap<CacheKey, Arc<Flight<S>>>>;

/// The table of flights.
pub(crate) struct Flights<S> {
    shards: Vec<Shard<S>>,
}

impl<S> Flights<S> {
    pub(crate) fn new() -> Self {
        Flights {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &CacheKey) -> &Shard<S> {
        &self.shards[key.shard(SHARDS)]
    }

    /// Joins the flight for `key`, starting one with `make()` if there is
    /// none. Returns the membership and whether the caller is the leader
    /// (who must start the call and [`Membership::set_abort`] it).
    pub(crate) fn join(self: &Arc<Self>, key: CacheKey, make: impl FnOnce() -> S) -> (Membership<S>, bool) {
        let Ok(mut map) = self.shard(&key).lock() else {
            // A poisoned shard (a panic while holding it; we never panic
            // there): run alone rather than fail.
            let flight = Arc::new(Flight {
                state: make(),
                waiters: Mutex::new(1),
                abort: OnceLock::new(),
            });
            return (
                Membership {
                    flights: self.clone(),
                    key,
                    flight,
                },
                true,
            );
        };
        if let Some(f) = map.get(&key) {
            if let Ok(mut w) = f.waiters.lock() {
                *w += 1;
            }
            let flight = f.clone();
            drop(map);
            return (
                Membership {
                    flights: self.clone(),
                    key,
                    flight,
                },
                false,
            );
        }
        let flight = Arc::new(Flight {
            state: make(),
            waiters: Mutex::new(1),
            abort: OnceLock::new(),
        });
        map.insert(key, flight.clone());
        drop(map);
        (
            Membership {
                flights: self.clone(),
                key,
                flight,
            },
            true,
        )
    }

    /// Removes `flight` from the table (the call is over; later requests
    /// start a new one). A no-op if it was already removed.
    pub(crate) fn finish(&self, key: &CacheKey, flight: &Arc<Flight<S>>) {
        if let Ok(mut map) = self.shard(key).lock()
            && map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight))
        {
            map.remove(key);
        }
    }

    fn leave(&self, key: &CacheKey, flight: &Arc<Flight<S>>) {
        let Ok(mut map) = self.shard(key).lock() else { return };
        let last = match flight.waiters.lock() {
            Ok(mut w) => {
                *w = w.saturating_sub(1);
                *w == 0
            }
            Err(_) => false,
        };
        if last && map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            map.remove(key);
            drop(map);
            if let Some(h) = flight.abort.get() {
                h.abort();
            }
        }
    }

    /// Flights in the table.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|m| m.len()).unwrap_or(0)).sum()
    }
}

/// A waiter's place in a flight; leaving (drop) may cancel the call.
pub(crate) struct Membership<S> {
    flights: Arc<Flights<S>>,
    key: CacheKey,
    flight: Arc<Flight<S>>,
}

impl<S> Membership<S> {
    pub(crate) fn flight(&self) -> &Arc<Flight<S>> {
        &self.flight
    }

    pub(crate) fn flights(&self) -> &Arc<Flights<S>> {
        &self.flights
    }

    pub(crate) fn key(&self) -> CacheKey {
        self.key
    }

    /// Records the spawned call so the last waiter to leave can cancel it.
    pub(crate) fn set_abort(&self, h: AbortHandle) {
        let _ = self.flight.abort.set(h);
    }
}

impl<S> Drop for Membership<S> {
    fn drop(&mut self) {
        self.flights.leave(&self.key, &self.flight);
    }
}

/// What a finished call's guard does for its waiters if the call did not
/// publish a result itself.
pub(crate) type LastWord<S> = Box<dyn FnOnce(&S) + Send>;

/// Runs in the spawned call: removes the flight from the table when the call
/// ends however it ends (completion, panic, abort), then `on_drop` publishes
/// a last word for waiters if the call did not.
pub(crate) struct FinishGuard<S> {
    pub(crate) flights: Arc<Flights<S>>,
    pub(crate) key: CacheKey,
    pub(crate) flight: Arc<Flight<S>>,
    pub(crate) on_drop: Option<LastWord<S>>,
}

impl<S> FinishGuard<S> {
    /// The call published its own last word: nothing to add on drop.
    pub(crate) fn disarm(&mut self) {
        self.on_drop = None;
    }
}

impl<S> Drop for FinishGuard<S> {
    fn drop(&mut self) {
        self.flights.finish(&self.key, &self.flight);
        if let Some(f) = self.on_drop.take() {
            f(&self.flight.state);
        }
    }
}
