//! Spending counted in this process.

use super::{Spend, SpendDecision, SpendLimit, SpendStore, Window};
use crate::redis_store::{FailurePolicy, RedisUnavailable};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

type Shard = Mutex<HashMap<Box<str>, Entry>>;

#[derive(Debug, Clone, Copy)]
struct Entry {
    window: Window,
    spent: Spend,
}

/// Spending per key in memory: sharded maps, bounded in size. Entries of
/// past periods are dropped first when a shard is full; beyond that the
/// oldest-period entry goes (counted in [`MemorySpendStore::evicted`]).
#[derive(Debug)]
pub struct MemorySpendStore {
    shards: Box<[Shard]>,
    hasher: RandomState,
    per_shard: usize,
    evicted: AtomicU64,
}

impl Default for MemorySpendStore {
    fn default() -> Self {
        MemorySpendStore::new(100_000)
    }
}

const SHARDS: usize = 16;

impl MemorySpendStore {
    /// A store keeping at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Self {
        MemorySpendStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            evicted: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<Box<str>, Entry>> {
        let i = (self.hasher.hash_one(key) >> 32) as usize % SHARDS;
        // Plain numbers inside: a poisoned lock is still consistent.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys dropped while still in their current period.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn entry<'a>(&self, map: &'a mut HashMap<Box<str>, Entry>, key: &str, window: Window) -> Option<&'a mut Entry> {
        if !map.contains_key(key) {
            if map.len() >= self.per_shard {
                map.retain(|_, e| e.window.end > window.start);
                if map.len() >= self.per_shard
                    && let Some(k) = map.iter().min_by_key(|(_, e)| e.window).map(|(k, _)| k.clone())
                {
                    map.remove(&k);
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
            map.insert(
                key.into(),
                Entry {
                    window,
                    spent: Spend::default(),
                },
            );
        }
        let e = map.get_mut(key)?;
        if e.window.start < window.start {
            // A new period: start from zero.
            *e = Entry {
                window,
                spent: Spend::default(),
            };
        }
        // An entry of a later period than asked (a late settle) is not it.
        (e.window == window).then_some(e)
    }

    fn reserve_now(&self, key: &str, window: Window, limit: SpendLimit, cost: Spend) -> SpendDecision {
        let mut map = self.shard(key);
        let Some(e) = self.entry(&mut map, key, window) else {
            // Asked for a past period: nothing to reserve against.
            return SpendDecision {
                allowed: true,
                spent: cost,
            };
        };
        let allowed = limit.admits(e.spent, cost);
        if allowed {
            e.spent.tokens = e.spent.tokens.saturating_add(cost.tokens);
            e.spent.nano_usd = e.spent.nano_usd.saturating_add(cost.nano_usd);
        }
        SpendDecision {
            allowed,
            spent: e.spent,
        }
    }

    fn adjust_now(&self, key: &str, window: Window, tokens: i64, nano_usd: i64) {
        let mut map = self.shard(key);
        if let Some(e) = map.get_mut(key)
            && e.window == window
        {
            e.spent.tokens = e.spent.tokens.saturating_add_signed(tokens);
            e.spent.nano_usd = e.spent.nano_usd.saturating_add_signed(nano_usd);
        }
    }
}

impl SpendStore for MemorySpendStore {
    fn reserve(
        &self,
        key: &str,
        window: Window,
        limit: SpendLimit,
        cost: Spend,
    ) -> impl Future<Output = Result<SpendDecision, RedisUnavailable>> + Send {
        std::future::ready(Ok(self.reserve_now(key, window, limit, cost)))
    }

    fn adjust(
        &self,
        key: &str,
        window: Window,
        tokens: i64,
        nano_usd: i64,
    ) -> impl Future<Output = Result<(), RedisUnavailable>> + Send {
        self.adjust_now(key, window, tokens, nano_usd);
        std::future::ready(Ok(()))
    }

    fn spent(&self, key: &str, window: Window) -> impl Future<Output = Result<Spend, RedisUnavailable>> + Send {
        let map = self.shard(key);
        let s = map
            .get(key)
            .filter(|e| e.window == window)
            .map_or(Spend::default(), |e| e.spent);
        std::future::ready(Ok(s))
    }

    fn failure_policy(&self) -> FailurePolicy {
        FailurePolicy::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_past_periods_go_first() {
        let s = MemorySpendStore::new(SHARDS * 2);
        let old = Window { start: 0, end: 10 };
        let cur = Window { start: 10, end: 20 };
        let lim = SpendLimit::default();
        let one = Spend { tokens: 1, nano_usd: 0 };
        for i in 0..SHARDS * 2 {
            s.reserve_now(&format!("old{i}"), old, lim, one);
        }
        for i in 0..SHARDS * 4 {
            s.reserve_now(&format!("cur{i}"), cur, lim, one);
        }
        let total: usize = s.shards.iter().map(|m| m.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * 2);
        assert!(s.evicted() > 0);
    }
}
