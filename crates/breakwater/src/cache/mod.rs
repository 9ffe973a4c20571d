//! The response cache.
//!
//! - [`key`]: the versioned, canonical hash of what changes an answer
//!   ([`Fingerprint`]), scoped per tenant and namespace ([`CacheKey`]);
//! - [`policy`]: config, what may be cached ([`CachePlan`]) and stored
//!   ([`check_storable`]);
//! - [`control`]: the request's `Cache-Control` header;
//! - [`exact`]: the exact-match cache, L1 memory ([`memory`]) → L2 Redis
//!   ([`redis`]), with invalidation by key, alias, tenant or everything
//!   ([`namespace`]) and stale-if-error;
//! - [`stream`]: replaying hits as chunk streams, storing streamed misses;
//! - [`stats`]: counters, tokens and money saved.
//!
//! # Composition (what the client does)
//! Lookup (exact) → on miss, coalesce identical in-flight requests → origin
//! → store (inside the coalesced call, so it happens once) → if every route
//! failed, fall back to a stale entry.
//!
//! ```
//! use breakwater::cache::{CacheConfig, CacheControl, CacheOutcome, CachePlan, ExactCache, ModelCacheConfig};
//! use breakwater::coalesce::Coalescer;
//! use breakwater::types::{ChatRequest, ChatResponse};
//! use std::sync::Arc;
//!
//! async fn answer(
//!     cache: &ExactCache,
//!     flights: &Coalescer<Arc<ChatResponse>>,
//!     tenant: &str,
//!     alias: &str,
//!     model_cfg: ModelCacheConfig,
//!     req: ChatRequest,
//!     control: CacheControl,
//!     origin: impl AsyncFnOnce(ChatRequest) -> breakwater::Result<ChatResponse> + Send + 'static,
//! ) -> breakwater::Result<(Arc<ChatResponse>, CacheOutcome)> {
//!     let plan = CachePlan::decide(&req, &model_cfg, control);
//!     if !plan.uses_cache() {
//!         cache.counters().bypass();
//!         return Ok((Arc::new(origin(req).await?), CacheOutcome::Bypass));
//!     }
//!     let key = cache.key_for(tenant, alias, &req).await;
//!     if plan.read && let Some(hit) = cache.lookup(&key).await {
//!         return Ok((hit.response, hit.outcome));
//!     }
//!     let store_cache = cache.clone();
//!     let result = flights
//!         .run(key, async move || {
//!             let resp = Arc::new(origin(req).await?);
//!             if plan.write {
//!                 let _ = store_cache.store(&key, resp.clone(), &model_cfg).await;
//!             }
//!             Ok(resp)
//!         })
//!         .await;
//!     let outcome = if plan.read { CacheOutcome::Miss } else { CacheOutcome::Bypass };
//!     match result {
//!         Ok(resp) => Ok((resp, outcome)),
//!         Err(e) => match cache.lookup_stale(&key).await {
//!             Some(stale) => Ok((stale.response, stale.outcome)),
//!             None => Err(e),
//!         },
//!     }
//! }
//! # let _ = answer;
//! ```
//!
//! For a streaming request the same order holds with
//! [`stream::replay`] for a hit, [`ExactCache::store_stream`] around the
//! upstream stream, and `Coalescer::run_stream` for the flight.

pub mod clock;
pub mod control;
pub mod entry;
pub mod exact;
pub mod key;
pub mod memory;
pub mod namespace;
pub mod policy;
pub mod redis;
pub mod stats;
pub mod stream;
// The semantic cache (embedder + vector index) lives in `cache/semantic/`:
// pub mod semantic;

mod canon;

pub use clock::Clock;
pub use control::CacheControl;
pub use exact::{CacheHit, ExactCache, ExactCacheBuilder, PriceFn, Tier};
pub use key::{CacheKey, CacheScope, Fingerprint, Generations};
pub use policy::{CacheConfig, CachePlan, ModelCacheConfig, NotStored, check_storable, is_deterministic};
pub use stats::{CacheStats, CacheStatsSnapshot, Price, Prices};

/// What the cache did for a response (the `x-breakwater-cache` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheOutcome {
    /// Answered from the exact cache.
    Hit,
    /// Answered from the semantic cache.
    Semantic,
    /// Answered from an entry past its TTL, because every route failed.
    Stale,
    /// Looked up, not found, answered by a provider.
    Miss,
    /// The cache was not consulted (config, sampling, `Cache-Control`).
    Bypass,
}

impl CacheOutcome {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Semantic => "semantic",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Bypass => "bypass",
        }
    }
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
