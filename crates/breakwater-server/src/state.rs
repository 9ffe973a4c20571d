//! The gateway built from a configuration: providers, cache, client, keys.
//! A reload builds a new one and swaps it in atomically; requests in flight
//! finish on the one they started with.

use crate::auth::Keys;
use crate::config::{GatewayConfig, ProviderConfig};
use crate::embed_batch::EmbedBatcher;
use crate::live::Live;
use arc_swap::ArcSwap;
use breakwater::cache::ExactCache;
use breakwater::client::{Client, ClientConfig};
use breakwater::idempotency::IdempotencyStore;
use breakwater::policy::config::InvalidConfig;
use breakwater::provider::anthropic::Anthropic;
use breakwater::provider::gemini::Gemini;
use breakwater::provider::openai::OpenAi;
use breakwater::provider::{DynProvider, HttpSettings, ProviderKind};
use breakwater::redis_store::RedisStore;
use breakwater::simulator::Simulator;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One configuration, built.
pub struct Gateway {
    /// The configuration it was built from.
    pub config: Arc<GatewayConfig>,
    /// The resilient client.
    pub client: Client,
    /// Virtual keys.
    pub keys: Keys,
    /// SHA-256 of the admin key.
    pub admin_digest: Option<[u8; 32]>,
    /// Redis, when configured.
    pub redis: Option<RedisStore>,
    /// Embedding micro-batching.
    pub embeddings: EmbedBatcher,
    /// How the providers were chosen, for the zero-config start.
    pub origin: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("origin", &self.origin).finish()
    }
}

/// Everything that outlives a reload.
pub struct AppState {
    /// The current gateway.
    pub gateway: ArcSwap<Gateway>,
    /// Live statistics (kept across reloads).
    pub live: Live,
    /// When the process started.
    pub started: std::time::Instant,
    /// The config file, for reloads (`None` in zero-config mode).
    pub config_path: Option<PathBuf>,
    /// Cancelled when the server shuts down (stops stream keep-alives,
    /// background tasks).
    pub shutdown: CancellationToken,
    /// Reloads done and refused.
    pub reloads: std::sync::atomic::AtomicU64,
    /// Reloads refused (the old configuration stayed).
    pub reload_failures: std::sync::atomic::AtomicU64,
    /// The IoT command system, when `iot:` is configured (started once; a
    /// reload does not restart it).
    pub iot: std::sync::OnceLock<breakwater_iot::IotService>,
    /// The dashboard's history (breaker changes, limiter samples).
    pub dash: crate::dashboard::History,
    /// Connections accepted by each worker (`server.workers`).
    pub connections: Box<[std::sync::atomic::AtomicU64]>,
}

/// Why a configuration could not be built.
#[derive(Debug)]
pub struct BuildError(pub String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

impl From<InvalidConfig> for BuildError {
    fn from(e: InvalidConfig) -> Self {
        BuildError(format!("{}: {}", e.path, e.reason))
    }
}

/// Builds one provider.
pub fn provider(name: &str, p: &ProviderConfig) -> Result<DynProvider, BuildError> {
    let settings = || {
        let mut s = HttpSettings::new(p.base_url().unwrap_or_default()).timeouts(p.timeouts);
        s.api_key = p.api_key.clone();
        s.headers = p.headers.clone();
        s
    };
    let e = |x: breakwater::Error| BuildError(format!("providers.{name}: {}", x.message));
    Ok(match p.kind {
        ProviderKind::Openai => Arc::new(OpenAi::new(name, &settings()).map_err(e)?),
        ProviderKind::Anthropic => Arc::new(Anthropic::new(name, &settings()).map_err(e)?),
        ProviderKind::Gemini => Arc::new(Gemini::new(name, &settings()).map_err(e)?),
        ProviderKind::Simulator => {
            Arc::new(Simulator::new(name, p.simulator.clone().unwrap_or_default()).with_timeouts(p.timeouts))
        }
    })
}

/// Builds a gateway from a checked configuration. Must run inside a tokio
/// runtime (Redis connections and health probes are tasks). Loads the
/// embedding model when an alias turns the semantic cache on.
pub async fn build(cfg: GatewayConfig, origin: String) -> Result<Gateway, BuildError> {
    let redis = match &cfg.redis {
        Some(r) => Some(RedisStore::connect(r).map_err(|e| BuildError(format!("redis: {e}")))?),
        None => None,
    };
    let mut builder = Client::builder()
        .config(ClientConfig {
            retry: cfg.retry.clone(),
            breaker: cfg.breaker,
            health: cfg.health,
            coalesce: cfg.coalesce.enabled,
            default_timeout_ms: cfg.server.request_timeout_ms,
            allow_direct_models: cfg.server.allow_direct_models,
            passthrough_provider: cfg.server.passthrough_provider.clone(),
            ..ClientConfig::default()
        })
        .prices(cfg.prices.clone());
    for (name, p) in &cfg.providers {
        builder = builder.provider_with_limits(provider(name, p)?, p.limits);
    }
    for (alias, m) in &cfg.models {
        builder = builder.model(alias.clone(), m.clone());
    }
    let prices = cfg.prices.clone();
    let mut cache = ExactCache::builder(cfg.cache.clone()).prices(move |model| {
        prices.get(model).map(|p| breakwater::cache::Price {
            input: p.input,
            output: p.output,
        })
    });
    if let Some(r) = &redis {
        cache = cache.redis(r.clone());
        builder = builder.redis(r.clone());
    }
    if cfg.redis.as_ref().is_some_and(|r| r.share_breakers) {
        builder = builder.share_breakers(true);
    }
    if cfg.models.values().any(|m| m.cache.semantic) {
        use breakwater::cache::semantic::{
            MiniLmEmbedder, MiniLmOptions, SemanticCache, SemanticConfig, default_model_dir,
        };
        let sec = cfg.semantic().map_err(|e| BuildError(format!("cache.semantic: {e}")))?;
        let dir = sec.model_dir.clone().unwrap_or_else(default_model_dir);
        let embedder = MiniLmEmbedder::load_async(dir.clone(), MiniLmOptions::default())
            .await
            .map_err(|e| {
                BuildError(format!(
                    "cache.semantic: cannot load the embedding model from {}: {e} (run scripts/fetch-embedding-model)",
                    dir.display()
                ))
            })?;
        let sem = SemanticCache::new(
            Arc::new(embedder),
            SemanticConfig {
                threshold: sec.threshold,
                max_entries: sec.max_entries,
                ..SemanticConfig::default()
            },
        );
        builder = builder.semantic(Arc::new(sem));
    }
    builder = builder
        .cache(cache.build())
        .idempotency(IdempotencyStore::new(cfg.idempotency, redis.clone()));
    let client = builder.build()?;
    let keys = Keys::build(cfg.keys.as_deref(), redis.as_ref());
    let admin_digest = cfg
        .server
        .admin_key
        .as_ref()
        .filter(|k| !k.is_empty())
        .map(|k| crate::auth::digest(k.expose()));
    let embeddings = EmbedBatcher::new(
        client.clone(),
        std::time::Duration::from_millis(cfg.server.embeddings_batch_ms),
        cfg.server.embeddings_batch_max,
    );
    Ok(Gateway {
        config: Arc::new(cfg),
        client,
        keys,
        admin_digest,
        redis,
        embeddings,
        origin,
    })
}
