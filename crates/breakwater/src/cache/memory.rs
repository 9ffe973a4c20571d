//! The memory tier (L1): a moka cache bounded by the bytes of its entries.
//!
//! moka's admission (TinyLFU) and eviction keep the useful entries; its
//! per-entry expiry reclaims memory once an entry is past its grace period.
//! moka runs on its own clock, which a paused tokio test cannot move, so
//! moka's expiry is only the memory backstop: whether an entry is fresh,
//! stale or dead is decided by the cache from the entry's own timestamps.

use super::entry::Entry;
use super::key::CacheKey;
use super::stats::CacheStats;
use moka::Expiry;
use moka::notification::RemovalCause;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What moka holds: the entry and how long moka should keep it.
#[derive(Clone)]
struct Slot {
    entry: Arc<Entry>,
    reclaim_after: Duration,
}

struct SlotExpiry;

impl Expiry<CacheKey, Slot> for SlotExpiry {
    fn expire_after_create(&self, _key: &CacheKey, slot: &Slot, _created_at: Instant) -> Option<Duration> {
        Some(slot.reclaim_after)
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        slot: &Slot,
        _updated_at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(slot.reclaim_after)
    }
}

/// The in-memory tier.
#[derive(Clone)]
pub struct MemoryTier {
    cache: moka::future::Cache<CacheKey, Slot>,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("entries", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl MemoryTier {
    /// A tier holding at most `max_bytes` of encoded entries; evictions and
    /// expirations are counted in `stats`.
    pub fn new(max_bytes: u64, stats: Arc<CacheStats>) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            // Key and bookkeeping overhead on top of the encoded size, so a
            // flood of tiny entries is bounded too.
            .weigher(|_k: &CacheKey, s: &Slot| s.entry.size.saturating_add(128))
            .expire_after(SlotExpiry)
            .eviction_listener(move |_k, _v, cause| match cause {
                RemovalCause::Size => stats.evicted(),
                RemovalCause::Expired => stats.expired(),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        MemoryTier { cache }
    }

    /// The entry under `key`, whatever its freshness.
    pub async fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.cache.get(key).await.map(|s| s.entry)
    }

    /// Stores `entry`, to be reclaimed after `reclaim_after` (its remaining
    /// grace period) at the latest.
    pub async fn insert(&self, key: CacheKey, entry: Arc<Entry>, reclaim_after: Duration) {
        self.cache.insert(key, Slot { entry, reclaim_after }).await;
    }

    /// Removes one entry.
    pub async fn remove(&self, key: &CacheKey) {
        self.cache.invalidate(key).await;
    }

    /// Removes every entry.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Entries held (approximate: moka updates it in the background).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Weighted bytes held (approximate).
    pub fn bytes(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Applies pending bookkeeping now (tests and exact stats).
    pub async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::tests::response;

    fn entry(size: u32) -> Arc<Entry> {
        Arc::new(Entry {
            response: Arc::new(response("x")),
            stored_at_ms: 0,
            fresh_until_ms: 1,
            stale_until_ms: 2,
            size,
        })
    }

    #[tokio::test]
    async fn bounded_by_bytes() {
        let stats = Arc::new(CacheStats::default());
        let t = MemoryTier::new(10_000, stats.clone());
        for i in 0..100u8 {
            t.insert(CacheKey([i; 32]), entry(1_000), Duration::from_secs(60)).await;
        }
        t.sync().await;
        assert!(t.bytes() <= 10_000, "{} bytes", t.bytes());
        assert!(t.entry_count() <= 10);
    }

    #[test]
    fn expiry_follows_the_slot() {
        let s = Slot {
            entry: entry(1),
            reclaim_after: Duration::from_secs(7),
        };
        let k = CacheKey([0; 32]);
        assert_eq!(
            SlotExpiry.expire_after_create(&k, &s, Instant::now()),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            SlotExpiry.expire_after_update(&k, &s, Instant::now(), None),
            Some(Duration::from_secs(7))
        );
    }
}
