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
//! use breakwater::cache::{CacheControl, CacheOutcome, CachePlan, ExactCache, ModelCacheConfig};
//! use breakwater::coalesce::Coalescer;
//! use breakwater::types::{ChatRequest, ChatResponse};
//! use std::future::Future;
//! use std::sync::Arc;
//!
//! async fn answer<F, Fut>(
//!     cache: &ExactCache,
//!     flights: &Coalescer<Arc<ChatResponse>>,
//!     (tenant, alias): (&str, &str),
//!     model_cfg: ModelCacheConfig,
//!     req: ChatRequest,
//!     control: CacheControl,
//!     origin: F,
//! ) -> breakwater::Result<(Arc<ChatResponse>, CacheOutcome)>
//! where
//!     F: FnOnce(ChatRequest) -> Fut + Send + 'static,
//!     Fut: Future<Output = breakwater::Result<ChatResponse>> + Send + 'static,
//! {
//!     let plan = CachePlan::decide(&req, &model_cfg, control);
//!     if !plan.uses_cache() {
//!         cache.counters().bypass();
//!         return Ok((Arc::new(origin(req).await?), CacheOutcome::Bypass));
//!     }
//!     let key = cache.key_for(tenant, alias, &req).await;
//!     if plan.read && let Some(hit) = cache.lookup(&key).await {
//!         return Ok((hit.response, hit.outcome)); // x-breakwater-cache: hit
//!     }
//!     let store_cache = cache.clone();
//!     let result = flights
//!         .run(key, move || async move {
//!             let resp = Arc::new(origin(req).await?);
//!             if plan.write {
//!                 // Inside the flight: stored once, before the flight ends.
//!                 let _ = store_cache.store(&key, resp.clone(), &model_cfg).await;
//!             }
//!             Ok(resp)
//!         })
//!         .await;
//!     let outcome = if plan.read { CacheOutcome::Miss } else { CacheOutcome::Bypass };
//!     match result {
//!         Ok(resp) => Ok((resp, outcome)),
//!         // Every route failed: an answer past its TTL beats an error.
//!         Err(e) => match cache.lookup_stale(&key).await {
//!             Some(stale) => Ok((stale.response, stale.outcome)),
//!             None => Err(e),
//!         },
//!     }
//! }
//! ```
//!
//! For a streaming request the same order holds with
//! [`stream::replay`] for a hit, [`ExactCache::store_stream`] around the
//! upstream stream, and [`crate::coalesce::StreamCoalescer::run_stream`] for
//! the flight.

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

impl serde::Serialize for CacheOutcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
