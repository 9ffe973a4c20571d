//! The Redis tier (L2), shared by gateway instances.
//!
//! Every failure is a miss (the cache fails open) and is counted. Writes run
//! in the background, at most `max_pending` at once; past that they are
//! dropped and counted, so a slow Redis can never pile up tasks or delay a
//! response. Redis expires entries itself (`SET … PX`) at the end of their
//! grace period.

use super::entry::Entry;
use super::key::CacheKey;
use super::stats::CacheStats;
use crate::redis_store::RedisStore;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Prefix of entry keys; the `1` is the entry format, so a format change
/// starts from an empty namespace instead of reading foreign bytes.
const PREFIX: &str = "bw:cache:1:";

/// The Redis tier.
#[derive(Clone, Debug)]
pub struct RedisTier {
    store: RedisStore,
    pending: Arc<Semaphore>,
    max_pending: u32,
    stats: Arc<CacheStats>,
}

impl RedisTier {
    /// A tier over `store`, with at most `max_pending` background writes.
    pub fn new(store: RedisStore, max_pending: usize, stats: Arc<CacheStats>) -> Self {
        let max_pending = u32::try_from(max_pending.clamp(1, 1 << 20)).unwrap_or(1024);
        RedisTier {
            store,
            pending: Arc::new(Semaphore::new(max_pending as usize)),
            max_pending,
            stats,
        }
    }

    /// The handle (namespaces share it).
    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    fn redis_key(key: &CacheKey) -> String {
        let mut s = String::with_capacity(PREFIX.len() + 64);
        s.push_str(PREFIX);
        s.push_str(&key.to_hex());
        s
    }

    /// The entry under `key`; `None` when absent, undecodable, or Redis
    /// failed (counted).
    pub async fn get(&self, key: &CacheKey) -> Option<Entry> {
        let res: Result<Option<Vec<u8>>, _> = self.store.query(redis::cmd("GET").arg(Self::redis_key(key))).await;
        match res {
            Ok(Some(bytes)) => Entry::decode(&bytes),
            Ok(None) => None,
            Err(e) => {
                self.stats.l2_error();
                tracing::debug!(error = %e, "cache L2 read failed; treating as a miss");
                None
            }
        }
    }

    /// Writes `bytes` under `key` for `ttl_ms`, in the background. Returns
    /// at once; a write that cannot be queued is dropped and counted.
    pub fn put_background(&self, key: &CacheKey, bytes: Vec<u8>, ttl_ms: u64) {
        let Ok(permit) = self.pending.clone().try_acquire_owned() else {
            self.stats.l2_write_dropped();
            return;
        };
        let this = self.clone();
        let rkey = Self::redis_key(key);
        tokio::spawn(async move {
            let _permit = permit;
            let res: Result<(), _> = this
                .store
                .query(redis::cmd("SET").arg(rkey).arg(bytes).arg("PX").arg(ttl_ms.max(1)))
                .await;
            if let Err(e) = res {
                this.stats.l2_error();
                tracing::debug!(error = %e, "cache L2 write failed");
            }
        });
    }

    /// Deletes one entry (best effort; failures counted).
    pub async fn remove(&self, key: &CacheKey) {
        let res: Result<i64, _> = self.store.query(redis::cmd("DEL").arg(Self::redis_key(key))).await;
        if res.is_err() {
            self.stats.l2_error();
        }
    }

    /// Waits until no background write is pending (tests, shutdown).
    pub async fn drain(&self) {
        if let Ok(all) = self.pending.acquire_many(self.max_pending).await {
            drop(all);
        }
    }
}
