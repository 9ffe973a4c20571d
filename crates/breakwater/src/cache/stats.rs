//! Cache counters: atomics bumped on the hot path, read by a cheap snapshot
//! (for `/admin/stats` and the Prometheus exporter).

use crate::types::Usage;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A model's price, USD per million tokens (the config's `prices:` entry).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Price {
    /// USD per million prompt tokens.
    pub input: f64,
    /// USD per million completion tokens.
    pub output: f64,
}

impl Price {
    /// What `usage` costs at this price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (f64::from(usage.prompt_tokens) * self.input + f64::from(usage.completion_tokens) * self.output) / 1e6
    }
}

/// A plain price table (`prices:` in the config), usable as the price lookup
/// of [`CacheStats::record_saved`] through [`lookup_in`].
pub type Prices = HashMap<String, Price>;

/// Looks a model up in a price table (a helper to pass as the lookup).
pub fn lookup_in(prices: &Prices) -> impl Fn(&str) -> Option<Price> + '_ {
    move |model| prices.get(model).copied()
}

/// The live counters.
#[derive(Debug, Default)]
pub struct CacheStats {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    semantic_hits: AtomicU64,
    stale_hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    stores: AtomicU64,
    not_stored: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    l2_errors: AtomicU64,
    l2_writes_dropped: AtomicU64,
    invalidations: AtomicU64,
    tokens_saved: AtomicU64,
    /// Micro-dollars, so an atomic integer can hold money.
    usd_saved_micros: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl CacheStats {
    /// A hit in the memory tier.
    pub fn l1_hit(&self) {
        bump(&self.l1_hits);
    }
    /// A hit in the Redis tier.
    pub fn l2_hit(&self) {
        bump(&self.l2_hits);
    }
    /// A hit in the semantic cache (bumped by the semantic cache).
    pub fn semantic_hit(&self) {
        bump(&self.semantic_hits);
    }
    /// A stale entry served because every route failed.
    pub fn stale_hit(&self) {
        bump(&self.stale_hits);
    }
    /// A lookup that found nothing fresh.
    pub fn miss(&self) {
        bump(&self.misses);
    }
    /// A request that skipped the cache (config or `Cache-Control`).
    pub fn bypass(&self) {
        bump(&self.bypasses);
    }
    /// An entry written.
    pub fn stored(&self) {
        bump(&self.stores);
    }
    /// A response refused for storage (see `NotStored`).
    pub fn not_stored(&self) {
        bump(&self.not_stored);
    }
    /// An entry evicted by the memory bound.
    pub fn evicted(&self) {
        bump(&self.evictions);
    }
    /// An entry dropped by its time to live.
    pub fn expired(&self) {
        bump(&self.expirations);
    }
    /// A Redis call of the cache that failed (the cache failed open).
    pub fn l2_error(&self) {
        bump(&self.l2_errors);
    }
    /// An L2 write dropped because too many were pending.
    pub fn l2_write_dropped(&self) {
        bump(&self.l2_writes_dropped);
    }
    /// An invalidation (key, alias, tenant or flush).
    pub fn invalidated(&self) {
        bump(&self.invalidations);
    }

    /// Adds what serving `usage` from the cache saved: its tokens, and its
    /// cost at `price_of(model)` when the model has a price.
    pub fn record_saved(&self, model: &str, usage: Option<&Usage>, price_of: impl Fn(&str) -> Option<Price>) {
        let Some(u) = usage else { return };
        let tokens = u64::from(u.total_tokens.max(u.prompt_tokens.saturating_add(u.completion_tokens)));
        self.tokens_saved.fetch_add(tokens, Ordering::Relaxed);
        if let Some(p) = price_of(model) {
            let micros = (p.cost(u) * 1e6).round();
            if micros.is_finite() && micros > 0.0 {
                self.usd_saved_micros.fetch_add(micros as u64, Ordering::Relaxed);
            }
        }
    }

    /// A consistent-enough copy of the counters (each read is atomic; the
    /// set is not, which is fine for metrics). `entries` and `bytes` are
    /// filled by the cache, which knows its tiers.
    pub fn snapshot(&self) -> CacheStatsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStatsSnapshot {
            l1_hits: l(&self.l1_hits),
            l2_hits: l(&self.l2_hits),
            semantic_hits: l(&self.semantic_hits),
            stale_hits: l(&self.stale_hits),
            misses: l(&self.misses),
            bypasses: l(&self.bypasses),
            stores: l(&self.stores),
            not_stored: l(&self.not_stored),
            evictions: l(&self.evictions),
            expirations: l(&self.expirations),
            l2_errors: l(&self.l2_errors),
            l2_writes_dropped: l(&self.l2_writes_dropped),
            invalidations: l(&self.invalidations),
            tokens_saved: l(&self.tokens_saved),
            usd_saved: l(&self.usd_saved_micros) as f64 / 1e6,
            entries: 0,
            bytes: 0,
        }
    }
}

/// A copy of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct CacheStatsSnapshot {
    /// Exact hits from memory.
    pub l1_hits: u64,
    /// Exact hits from Redis.
    pub l2_hits: u64,
    /// Semantic hits.
    pub semantic_hits: u64,
    /// Stale entries served after failures.
    pub stale_hits: u64,
    /// Lookups that found nothing fresh.
    pub misses: u64,
    /// Requests that skipped the cache.
    pub bypasses: u64,
    /// Entries written.
    pub stores: u64,
    /// Responses refused for storage.
    pub not_stored: u64,
    /// Memory-tier evictions by size.
    pub evictions: u64,
    /// Memory-tier removals by time.
    pub expirations: u64,
    /// Failed Redis calls (each one a fail-open miss or a lost write).
    pub l2_errors: u64,
    /// L2 writes dropped under back-pressure.
    pub l2_writes_dropped: u64,
    /// Invalidations.
    pub invalidations: u64,
    /// Tokens not spent thanks to hits.
    pub tokens_saved: u64,
    /// USD not spent thanks to hits.
    pub usd_saved: f64,
    /// Entries in memory (approximate).
    pub entries: u64,
    /// Bytes in memory (approximate).
    pub bytes: u64,
}

impl CacheStatsSnapshot {
    /// All exact and semantic hits, stale ones included.
    pub fn hits(&self) -> u64 {
        self.l1_hits + self.l2_hits + self.semantic_hits + self.stale_hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_savings() {
        let s = CacheStats::default();
        let mut prices = Prices::new();
        prices.insert(
            "gpt-4o-mini".into(),
            Price {
                input: 0.15,
                output: 0.60,
            },
        );
        s.record_saved(
            "gpt-4o-mini",
            Some(&Usage::new(1_000_000, 1_000_000)),
            lookup_in(&prices),
        );
        s.record_saved("unknown", Some(&Usage::new(10, 10)), lookup_in(&prices));
        s.record_saved("gpt-4o-mini", None, lookup_in(&prices));
        s.l1_hit();
        s.l2_hit();
        s.semantic_hit();
        let snap = s.snapshot();
        assert_eq!(snap.tokens_saved, 2_000_020);
        assert!((snap.usd_saved - 0.75).abs() < 1e-9);
        assert_eq!(snap.hits(), 3);
    }
}
