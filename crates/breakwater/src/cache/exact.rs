//! The exact-match cache: L1 memory → L2 Redis read-through, namespaces,
//! stale-if-error and stats, behind one handle.

use super::CacheOutcome;
use super::clock::Clock;
use super::entry::{Entry, Freshness, encode_parts};
use super::key::{CacheKey, CacheScope, Fingerprint};
use super::memory::MemoryTier;
use super::namespace::Namespaces;
use super::policy::{CacheConfig, ModelCacheConfig, NotStored, check_storable};
use super::redis::RedisTier;
use super::stats::{CacheStats, CacheStatsSnapshot, Price};
use crate::redis_store::RedisStore;
use crate::types::{ChatRequest, ChatResponse};
use std::sync::Arc;
use std::time::Duration;

/// Where a hit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Memory.
    L1,
    /// Redis.
    L2,
}

/// A cached answer.
#[derive(Debug, Clone)]
pub struct CacheHit {
    /// The answer (shared, never copied per hit).
    pub response: Arc<ChatResponse>,
    /// [`CacheOutcome::Hit`] or, from [`ExactCache::lookup_stale`] past
    /// the TTL, [`CacheOutcome::Stale`].
    pub outcome: CacheOutcome,
    /// Which tier answered.
    pub tier: Tier,
    /// How old the entry is.
    pub age: Duration,
}

/// Looks up a model's price (`prices:` in the config), for money-saved stats.
pub type PriceFn = Arc<dyn Fn(&str) -> Option<Price> + Send + Sync>;

struct Inner {
    cfg: CacheConfig,
    l1: MemoryTier,
    l2: Option<RedisTier>,
    namespaces: Namespaces,
    stats: Arc<CacheStats>,
    clock: Clock,
    prices: Option<PriceFn>,
}

/// The exact-match cache. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct ExactCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ExactCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactCache")
            .field("l1", &self.inner.l1)
            .field("l2", &self.inner.l2.is_some())
            .field("scope", &self.inner.cfg.scope)
            .finish()
    }
}

/// Builds an [`ExactCache`].
pub struct ExactCacheBuilder {
    cfg: CacheConfig,
    redis: Option<RedisStore>,
    clock: Option<Clock>,
    prices: Option<PriceFn>,
}

impl ExactCacheBuilder {
    /// Adds the Redis tier (and shares namespace generations through it).
    pub fn redis(mut self, store: RedisStore) -> Self {
        self.redis = Some(store);
        self
    }

    /// Replaces the clock (tests that cannot pause tokio time).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Sets the price lookup used to count money saved by hits.
    pub fn prices(mut self, price_of: impl Fn(&str) -> Option<Price> + Send + Sync + 'static) -> Self {
        self.prices = Some(Arc::new(price_of));
        self
    }

    /// The cache. Must be called inside a tokio runtime.
    pub fn build(self) -> ExactCache {
        let stats = Arc::new(CacheStats::default());
        let clock = self.clock.unwrap_or_default();
        let l1 = MemoryTier::new(self.cfg.memory.max_bytes, stats.clone());
        let l2 = self
            .redis
            .clone()
            .map(|s| RedisTier::new(s, self.cfg.max_pending_l2_writes, stats.clone()));
        let namespaces = Namespaces::new(self.redis, self.cfg.namespace_refresh_ms, clock.clone(), stats.clone());
        ExactCache {
            inner: Arc::new(Inner {
                cfg: self.cfg,
                l1,
                l2,
                namespaces,
                stats,
                clock,
                prices: self.prices,
            }),
        }
    }
}

impl ExactCache {
    /// A builder for `cfg`.
    pub fn builder(cfg: CacheConfig) -> ExactCacheBuilder {
        ExactCacheBuilder {
            cfg,
            redis: None,
            clock: None,
            prices: None,
        }
    }

    /// A memory-only cache.
    pub fn memory(cfg: CacheConfig) -> Self {
        Self::builder(cfg).build()
    }

    /// The config.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.cfg
    }

    /// The live counters (the semantic cache bumps its hits here too).
    pub fn counters(&self) -> &Arc<CacheStats> {
        &self.inner.stats
    }

    /// A snapshot of the counters with the memory tier's size.
    pub fn stats(&self) -> CacheStatsSnapshot {
        let mut s = self.inner.stats.snapshot();
        s.entries = self.inner.l1.entry_count();
        s.bytes = self.inner.l1.bytes();
        s
    }

    /// The key of `fp` for `tenant` under `alias`, with the current
    /// namespace generations (a Redis round trip at most once per
    /// `namespace_refresh_ms`).
    pub async fn key(&self, tenant: &str, alias: &str, fp: &Fingerprint) -> CacheKey {
        let scope = self.inner.cfg.scope;
        let tenant_ns = (scope == CacheScope::Tenant).then_some(tenant);
        let gens = self.inner.namespaces.current(alias, tenant_ns).await;
        CacheKey::derive(fp, scope, tenant, gens)
    }

    /// Fingerprint and key of `req` in one step.
    pub async fn key_for(&self, tenant: &str, alias: &str, req: &ChatRequest) -> CacheKey {
        self.key(tenant, alias, &Fingerprint::of(alias, req)).await
    }

    fn hit(&self, entry: &Entry, tier: Tier, outcome: CacheOutcome, now: u64) -> CacheHit {
        let stats = &self.inner.stats;
        match (outcome, tier) {
            (CacheOutcome::Stale, _) => stats.stale_hit(),
            (_, Tier::L1) => stats.l1_hit(),
            (_, Tier::L2) => stats.l2_hit(),
        }
        let model = entry.response.model.as_str();
        let usage = entry.response.usage.as_ref();
        match &self.inner.prices {
            Some(p) => stats.record_saved(model, usage, |m| p(m)),
            None => stats.record_saved(model, usage, |_| None),
        }
        CacheHit {
            response: entry.response.clone(),
            outcome,
            tier,
            age: Duration::from_millis(now.saturating_sub(entry.stored_at_ms)),
        }
    }

    /// A fresh entry for `key` (L1, then L2, promoting L2 hits to L1), or
    /// `None` (a miss, counted). Never fails: Redis errors are misses.
    pub async fn lookup(&self, key: &CacheKey) -> Option<CacheHit> {
        let found = self.find(key, false).await;
        if found.is_none() {
            self.inner.stats.miss();
        }
        found
    }

    /// Like [`ExactCache::lookup`] but also returns entries past their TTL
    /// and within their grace period, marked [`CacheOutcome::Stale`]: for
    /// when every route to a fresh answer failed.
    pub async fn lookup_stale(&self, key: &CacheKey) -> Option<CacheHit> {
        self.find(key, true).await
    }

    async fn find(&self, key: &CacheKey, accept_stale: bool) -> Option<CacheHit> {
        let now = self.inner.clock.now_ms();
        let usable = |f: Freshness| f == Freshness::Fresh || (accept_stale && f == Freshness::Stale);
        let outcome = |f: Freshness| {
            if f == Freshness::Fresh {
                CacheOutcome::Hit
            } else {
                CacheOutcome::Stale
            }
        };
        if let Some(e) = self.inner.l1.get(key).await {
            let f = e.freshness(now);
            if usable(f) {
                return Some(self.hit(&e, Tier::L1, outcome(f), now));
            }
        }
        let l2 = self.inner.l2.as_ref()?;
        let e = l2.get(key).await?;
        let f = e.freshness(now);
        if !usable(f) {
            return None;
        }
        let e = Arc::new(e);
        let reclaim = Duration::from_millis(e.stale_until_ms.saturating_sub(now));
        self.inner.l1.insert(*key, e.clone(), reclaim).await;
        Some(self.hit(&e, Tier::L2, outcome(f), now))
    }

    /// Stores `resp` under `key` if it may be stored (see
    /// [`check_storable`] and `cache.max_entry_bytes`): in memory at once,
    /// in Redis in the background. Returns without waiting for Redis.
    pub async fn store(
        &self,
        key: &CacheKey,
        resp: Arc<ChatResponse>,
        cfg: &ModelCacheConfig,
    ) -> Result<(), NotStored> {
        let res = self.store_inner(key, resp, cfg).await;
        match res {
            Ok(()) => self.inner.stats.stored(),
            Err(_) => self.inner.stats.not_stored(),
        }
        res
    }

    async fn store_inner(
        &self,
        key: &CacheKey,
        resp: Arc<ChatResponse>,
        cfg: &ModelCacheConfig,
    ) -> Result<(), NotStored> {
        check_storable(&resp, cfg)?;
        let now = self.inner.clock.now_ms();
        let ttl_ms = cfg.ttl_s.saturating_mul(1000);
        let life_ms = ttl_ms.saturating_add(cfg.stale_s.saturating_mul(1000));
        let fresh_until_ms = now.saturating_add(ttl_ms);
        let stale_until_ms = now.saturating_add(life_ms);
        let bytes = encode_parts(&resp, now, fresh_until_ms, stale_until_ms).map_err(|_| NotStored::Unencodable)?;
        if bytes.len() > self.inner.cfg.max_entry_bytes {
            return Err(NotStored::TooLarge);
        }
        let entry = Arc::new(Entry {
            response: resp,
            stored_at_ms: now,
            fresh_until_ms,
            stale_until_ms,
            size: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
        });
        self.inner.l1.insert(*key, entry, Duration::from_millis(life_ms)).await;
        if let Some(l2) = &self.inner.l2 {
            l2.put_background(key, bytes, life_ms);
        }
        Ok(())
    }

    /// Removes one entry from both tiers.
    pub async fn invalidate_key(&self, key: &CacheKey) {
        self.inner.stats.invalidated();
        self.inner.l1.remove(key).await;
        if let Some(l2) = &self.inner.l2 {
            l2.remove(key).await;
        }
    }

    /// Invalidates every entry under a model alias (all tenants).
    pub async fn invalidate_model(&self, alias: &str) {
        self.inner.stats.invalidated();
        self.inner.namespaces.bump_alias(alias).await;
    }

    /// Invalidates every entry of a tenant (no effect on shared entries).
    pub async fn invalidate_tenant(&self, tenant: &str) {
        self.inner.stats.invalidated();
        self.inner.namespaces.bump_tenant(tenant).await;
    }

    /// Invalidates everything, and frees the memory tier at once.
    pub async fn flush_all(&self) {
        self.inner.stats.invalidated();
        self.inner.namespaces.bump_global().await;
        self.inner.l1.clear();
    }

    /// Waits until background L2 writes are done and memory bookkeeping is
    /// applied (tests and graceful shutdown).
    pub async fn sync(&self) {
        if let Some(l2) = &self.inner.l2 {
            l2.drain().await;
        }
        self.inner.l1.sync().await;
    }
}
