//! The in-memory limiter store: sharded, bounded, no global lock.
//!
//! Keys are spread over shards, each a small mutex-protected map, so
//! threads deciding for different keys rarely meet. The map is keyed by a
//! 64-bit keyed hash of the key string (SipHash with a random key per
//! store) instead of the string: no allocation per new key, and one hash
//! per decision. Two keys would share state only on a 64-bit collision,
//! which a random hash key makes both negligible and impossible to aim for.
//!
//! **Bounded memory.** A key whose state is back to its full allowance is
//! *idle*: forgetting it changes no decision. When a shard reaches its share
//! of `max_keys`, its idle keys are swept (at most once per sweep interval);
//! if none is idle, the key closest to idle among a few is evicted — its
//! usage is forgotten, which can only admit more, never less. Both are
//! counted ([`MemoryStore::evictions`]). [`MemoryStore::purge`] sweeps all
//! shards (e.g. from a periodic task).

use super::algo::{Params, State, Verdict};
use super::{Decision, LimitSpec, LimiterStore, Ticket};
use crate::redis_store::{FailurePolicy, RedisUnavailable};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Sizing of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Keys kept at most (idle keys are dropped first).
    pub max_keys: usize,
    /// Number of shards (rounded up to a power of two).
    pub shards: usize,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            max_keys: 100_000,
            shards: 64,
        }
    }
}

/// Keys are already hashes.
type Map = crate::prehashed::PrehashedMap<State>;

#[derive(Debug, Default)]
struct Shard {
    map: Map,
    next_sweep: u64,
}

/// Keeps each shard on its own cache line, so that two threads locking
/// neighbouring shards do not slow each other down.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// Evictions of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evictions {
    /// Idle keys dropped (harmless).
    pub idle: u64,
    /// Keys dropped while not idle because the store was full (their usage
    /// was forgotten).
    pub active: u64,
}

/// Limiter state in this process.
#[derive(Debug)]
pub struct MemoryStore {
    spec: LimitSpec,
    params: Params,
    shards: Box<[Padded]>,
    mask: usize,
    per_shard: usize,
    sweep_every: u64,
    hasher: RandomState,
    epoch: Instant,
    evicted_idle: AtomicU64,
    evicted_active: AtomicU64,
}

impl MemoryStore {
    /// An empty store enforcing `spec`.
    pub fn new(spec: LimitSpec, opts: MemoryOptions) -> Self {
        let n = opts.shards.clamp(1, 4096).next_power_of_two();
        let period = u64::try_from(spec.quota.period().as_nanos()).unwrap_or(u64::MAX).max(1);
        MemoryStore {
            spec,
            params: Params {
                limit: spec.quota.limit(),
                period,
            },
            shards: (0..n).map(|_| Padded::default()).collect(),
            mask: n - 1,
            per_shard: opts.max_keys.div_ceil(n).max(1),
            sweep_every: period.min(1_000_000_000),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            evicted_idle: AtomicU64::new(0),
            evicted_active: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, h: u64) -> MutexGuard<'_, Shard> {
        // Middle bits: the map itself uses the low ones and the top seven.
        let i = (h >> 32) as usize & self.mask;
        // A shard holds plain numbers; a panic elsewhere cannot leave one
        // half-updated, so a poisoned lock is still usable.
        self.shards[i].0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn decision(&self, v: Verdict) -> Decision {
        Decision {
            allowed: v.allowed,
            limit: self.params.limit,
            remaining: v.remaining,
            reset_after: Duration::from_nanos(v.reset_after),
            retry_after: Duration::from_nanos(v.retry_after),
        }
    }

    /// Takes `cost` from `key` if allowed now.
    pub fn take_now(&self, key: &str, cost: u64) -> (Decision, Ticket) {
        let now = self.now();
        let h = self.hasher.hash_one(key);
        let p = self.params;
        let mut shard = self.shard(h);
        let v = match shard.map.get_mut(&h) {
            Some(st) => st.take(p, now, cost),
            None => {
                let mut st = State::fresh(self.spec.algorithm, p, now);
                let v = st.take(p, now, cost);
                self.make_room(&mut shard, now);
                shard.map.insert(h, st);
                v
            }
        };
        drop(shard);
        (self.decision(v), Ticket { at: now, id: 0, cost })
    }

    /// Adds `delta` to an earlier take of `key`.
    pub fn adjust_now(&self, key: &str, ticket: Ticket, delta: i64) {
        let now = self.now();
        let h = self.hasher.hash_one(key);
        let p = self.params;
        let mut shard = self.shard(h);
        match shard.map.get_mut(&h) {
            Some(st) => st.adjust(p, now, ticket.at, delta),
            // Forgotten (idle or evicted): a refund has nothing to refund.
            None if delta > 0 => {
                let mut st = State::fresh(self.spec.algorithm, p, now);
                st.adjust(p, now, ticket.at, delta);
                self.make_room(&mut shard, now);
                shard.map.insert(h, st);
            }
            None => {}
        }
    }

    fn make_room(&self, shard: &mut Shard, now: u64) {
        if shard.map.len() < self.per_shard {
            return;
        }
        let p = self.params;
        if now >= shard.next_sweep {
            let before = shard.map.len();
            shard.map.retain(|_, st| !st.is_idle(p, now));
            shard.next_sweep = now.saturating_add(self.sweep_every);
            self.evicted_idle
                .fetch_add((before - shard.map.len()) as u64, Ordering::Relaxed);
        }
        if shard.map.len() >= self.per_shard {
            let victim = shard
                .map
                .iter()
                .take(8)
                .min_by_key(|(_, st)| st.idle_at(p, now))
                .map(|(k, st)| (*k, st.is_idle(p, now)));
            if let Some((k, idle)) = victim {
                shard.map.remove(&k);
                let c = if idle { &self.evicted_idle } else { &self.evicted_active };
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops every idle key now.
    pub fn purge(&self) {
        let now = self.now();
        let p = self.params;
        for s in self.shards.iter() {
            let mut shard = s.0.lock().unwrap_or_else(|p| p.into_inner());
            let before = shard.map.len();
            shard.map.retain(|_, st| !st.is_idle(p, now));
            self.evicted_idle
                .fetch_add((before - shard.map.len()) as u64, Ordering::Relaxed);
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(|p| p.into_inner()).map.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys dropped so far.
    pub fn evictions(&self) -> Evictions {
        Evictions {
            idle: self.evicted_idle.load(Ordering::Relaxed),
            active: self.evicted_active.load(Ordering::Relaxed),
        }
    }
}

impl LimiterStore for MemoryStore {
    fn spec(&self) -> LimitSpec {
        self.spec
    }

    fn take(&self, key: &str, cost: u64) -> impl Future<Output = Result<(Decision, Ticket), RedisUnavailable>> + Send {
        std::future::ready(Ok(self.take_now(key, cost)))
    }

    fn adjust(
        &self,
        key: &str,
        ticket: Ticket,
        delta: i64,
    ) -> impl Future<Output = Result<(), RedisUnavailable>> + Send {
        self.adjust_now(key, ticket, delta);
        std::future::ready(Ok(()))
    }

    fn failure_policy(&self) -> FailurePolicy {
        // Memory does not fail.
        FailurePolicy::Open
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Algorithm, Quota};
    use super::*;

    fn store(max_keys: usize) -> MemoryStore {
        MemoryStore::new(
            LimitSpec {
                algorithm: Algorithm::TokenBucket,
                quota: Quota::new(10, Duration::from_secs(10)),
            },
            MemoryOptions { max_keys, shards: 1 },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_swept_and_memory_stays_bounded() {
        let s = store(100);
        for i in 0..100 {
            assert!(s.take_now(&format!("k{i}"), 1).0.allowed);
        }
        assert_eq!(s.len(), 100);
        // After the refill they are all idle: new keys replace them.
        tokio::time::advance(Duration::from_secs(2)).await;
        for i in 100..150 {
            assert!(s.take_now(&format!("k{i}"), 1).0.allowed);
        }
        assert!(s.len() <= 100);
        let e = s.evictions();
        assert_eq!(e.active, 0);
        assert!(e.idle >= 50);
        tokio::time::advance(Duration::from_secs(2)).await;
        s.purge();
        assert!(s.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_active_keys_cannot_grow_memory() {
        let s = store(64);
        for i in 0..10_000 {
            s.take_now(&format!("k{i}"), 5);
        }
        assert!(s.len() <= 64);
        assert!(s.evictions().active > 0, "counted, so an operator can see it");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refund_of_a_forgotten_key_is_a_no_op_and_a_charge_is_kept() {
        let s = store(100);
        let (_, t) = s.take_now("k", 5);
        tokio::time::advance(Duration::from_secs(20)).await;
        s.purge();
        s.adjust_now("k", t, -5);
        assert!(s.is_empty());
        s.adjust_now("k", t, 8);
        assert_eq!(s.take_now("k", 1).0.remaining, 1);
    }
}
