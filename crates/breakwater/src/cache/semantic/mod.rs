//! The semantic cache: answers a prompt from the cached answer to an earlier
//! prompt that means the same thing, judged by a local sentence-embedding
//! model (all-MiniLM-L6-v2, run in-process with candle) and cosine similarity.
//!
//! Off by default (`models.<alias>.cache.semantic: false`): a wrong cached
//! answer is worse than none, and the exact cache is always safe.
//!
//! # Use
//!
//! After an exact-cache miss, and before the upstream call:
//!
//! ```no_run
//! # use std::{sync::Arc, time::Duration};
//! # use breakwater::cache::semantic::*;
//! # use breakwater::types::{ChatRequest, ChatResponse};
//! # async fn demo(request: ChatRequest, call_upstream: impl AsyncFn() -> ChatResponse) -> Result<(), SemanticError> {
//! let embedder = Arc::new(MiniLmEmbedder::load_async(default_model_dir(), MiniLmOptions::default()).await?);
//! let cache: SemanticCache<Arc<ChatResponse>> = SemanticCache::new(embedder, SemanticConfig::default());
//!
//! let Ok(query) = SemanticQuery::from_chat("fast", "team-a", &request) else {
//!     return Ok(()); // not eligible (images, empty text, ...): bypass
//! };
//! match cache.lookup(query).await {
//!     Ok(Lookup::Hit(hit)) => { /* answer with hit.value; x-breakwater-cache: semantic */ }
//!     Ok(Lookup::Miss(miss)) => {
//!         let response = Arc::new(call_upstream().await);
//!         // Only successful, complete answers are stored.
//!         cache.insert(miss, response, Some(Duration::from_secs(3600)));
//!     }
//!     Err(_) => { /* embedding refused or failed: serve upstream, do not store */ }
//! }
//! # Ok(()) }
//! ```
//!
//! # Parts
//! - [`Embedder`]: texts to unit vectors; [`MiniLmEmbedder`] (the real model,
//!   on its own thread, batching concurrent calls) and [`HashEmbedder`] (a
//!   deterministic stand-in for tests);
//! - [`VectorIndex`]: exact scan while small, HNSW once large;
//! - [`SemanticQuery`]: partitioning, eligibility and guards (what is
//!   embedded and why is documented there);
//! - [`SemanticCache`]: the cache itself.

mod embed;
mod hnsw;
mod index;
mod minilm;
pub mod query;
mod store;

pub use embed::{Embedder, HashEmbedder};
pub use hnsw::HnswParams;
pub use index::{IndexConfig, VectorIndex, dot, normalize};
pub use minilm::{MODEL_NAME, MiniLmEmbedder, MiniLmOptions, default_model_dir};
pub use query::{Guard, Ineligible, PartitionKey, SemanticQuery};
pub use store::{Lookup, SemanticCache, SemanticConfig, SemanticHit, SemanticMiss, SemanticStats};

use std::path::PathBuf;

/// Why embedding (and so a semantic lookup or store) did not happen. The
/// cache fails open: every one of these means "serve upstream".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SemanticError {
    /// The model files are not where they were looked for.
    #[error(
        "embedding model not found in {}: run scripts/fetch-embedding-model \
         (or set BREAKWATER_EMBED_MODEL_DIR): {reason}",
        dir.display()
    )]
    ModelMissing {
        /// The directory searched.
        dir: PathBuf,
        /// What was missing or unreadable.
        reason: String,
    },
    /// The model files are there but could not be loaded.
    #[error("cannot load the embedding model: {0}")]
    ModelLoad(String),
    /// The text is longer than the embedder accepts (without truncation).
    #[error("text too long to embed: {len} {unit}, limit {max}")]
    InputTooLong {
        /// The text's length.
        len: usize,
        /// The limit.
        max: usize,
        /// `bytes` or `tokens`.
        unit: &'static str,
    },
    /// The embedder's queue is full.
    #[error("embedder overloaded")]
    Overloaded,
    /// The embedder's worker is gone.
    #[error("embedder stopped")]
    Stopped,
    /// The model failed on this input.
    #[error("embedding failed: {0}")]
    Embed(String),
}
