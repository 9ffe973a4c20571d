//! The configuration schema of `../shared/CONFIG.md` as types. Every key
//! there is here with its documented default; additions are marked. Unknown
//! keys are errors.

use breakwater::Secret;
use breakwater::cache::CacheConfig;
use breakwater::client::{HealthConfig, ModelConfig};
use breakwater::coalesce::CoalesceConfig;
use breakwater::idempotency::IdempotencyConfig;
use breakwater::policy::breaker::BreakerConfig;
use breakwater::policy::ratelimit::{KeyLimits, ProviderLimits};
use breakwater::policy::retry::RetryConfig;
use breakwater::policy::spend::{BudgetConfig, PriceTable};
use breakwater::policy::timeout::Timeouts;
use breakwater::provider::ProviderKind;
use breakwater::redis_store::RedisConfig;
use breakwater::simulator::SimulatorConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The HTTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Shared state across instances; absent → everything in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    /// Upstreams by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Model aliases.
    #[serde(default)]
    pub models: BTreeMap<String, ModelConfig>,
    /// Retries.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Circuit breakers.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Active health probes.
    #[serde(default)]
    pub health: HealthConfig,
    /// The response cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Request coalescing.
    #[serde(default)]
    pub coalesce: CoalesceConfig,
    /// Idempotency keys.
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    /// Virtual keys; absent → open mode (loopback only unless allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<KeyConfig>>,
    /// USD per million tokens by upstream model.
    #[serde(default)]
    pub prices: PriceTable,
    /// Logs.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// The IoT command system; absent → off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot: Option<breakwater_iot::IotConfig>,
}

/// `server:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(default = "d_listen")]
    pub listen: String,
    /// Largest request body.
    #[serde(default = "d_body")]
    pub max_body_bytes: usize,
    /// Key for admin routes and the dashboard; absent → admin routes only
    /// from loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<Secret>,
    /// How long in-flight requests may finish on shutdown.
    #[serde(default = "d_grace")]
    pub shutdown_grace_s: u64,
    /// Allow `provider/model` as a model name.
    #[serde(default)]
    pub allow_direct_models: bool,
    /// Allow open mode (no `keys:`) on a non-loopback address. Addition.
    #[serde(default)]
    pub allow_open_non_loopback: bool,
    /// Overall deadline of a request that sets none, ms. Addition.
    #[serde(default = "d_request_timeout")]
    pub request_timeout_ms: u64,
    /// Embedding micro-batching: wait this long to group single-input
    /// requests into one upstream call; 0 = off. Addition.
    #[serde(default = "d_batch_ms")]
    pub embeddings_batch_ms: u64,
    /// Largest group for embedding micro-batching. Addition.
    #[serde(default = "d_batch_max")]
    pub embeddings_batch_max: usize,
    /// Send model names that are no alias to this provider, as the upstream
    /// model name. Addition; the zero-config start sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough_provider: Option<String>,
    /// Worker threads, each with its own single-threaded runtime and its
    /// own listening socket (`SO_REUSEPORT`); 0 = one per CPU. Addition.
    #[serde(default)]
    pub workers: usize,
}

/// The most worker threads `server.workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

impl ServerConfig {
    /// The number of workers: `workers`, or one per CPU when 0 (always 1
    /// where `SO_REUSEPORT` is missing).
    pub fn worker_count(&self) -> usize {
        if !cfg!(unix) {
            return 1;
        }
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n.min(MAX_WORKERS),
        }
    }
}

fn d_listen() -> String {
    "127.0.0.1:8080".into()
}
fn d_body() -> usize {
    4_194_304
}
fn d_grace() -> u64 {
    30
}
fn d_request_timeout() -> u64 {
    300_000
}
fn d_batch_ms() -> u64 {
    5
}
fn d_batch_max() -> usize {
    64
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: d_listen(),
            max_body_bytes: d_body(),
            admin_key: None,
            shutdown_grace_s: d_grace(),
            allow_direct_models: false,
            allow_open_non_loopback: false,
            request_timeout_ms: d_request_timeout(),
            embeddings_batch_ms: d_batch_ms(),
            embeddings_batch_max: d_batch_max(),
            passthrough_provider: None,
            workers: 0,
        }
    }
}

/// `providers.<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The wire protocol.
    pub kind: ProviderKind,
    /// Base URL (defaults per kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Extra headers sent upstream.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Limits of this upstream account.
    #[serde(default)]
    pub limits: ProviderLimits,
    /// For `kind: simulator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulator: Option<SimulatorConfig>,
}

impl ProviderConfig {
    /// The base URL, the kind's default when unset.
    pub fn base_url(&self) -> Option<String> {
        self.base_url.clone().or_else(|| match self.kind {
            ProviderKind::Openai => Some("https://api.openai.com/v1".into()),
            ProviderKind::Anthropic => Some(breakwater::provider::anthropic::DEFAULT_BASE_URL.into()),
            ProviderKind::Gemini => Some(breakwater::provider::gemini::DEFAULT_BASE_URL.into()),
            ProviderKind::Simulator => None,
        })
    }
}

/// `keys[]`: a virtual key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key's name (tenant); required.
    pub name: String,
    /// The key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// Or its SHA-256, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_sha256: Option<String>,
    /// Aliases it may use (`*` = all).
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    /// Requests and tokens per minute.
    #[serde(default)]
    pub limits: KeyLimits,
    /// Spend per period.
    #[serde(default)]
    pub budget: BudgetConfig,
}

fn all_models() -> Vec<String> {
    vec!["*".into()]
}

/// `logging:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A level or `tracing` filter (`info`, `breakwater=debug,info`).
    #[serde(default = "d_level")]
    pub level: String,
    /// Whether prompt text may appear in logs.
    #[serde(default)]
    pub log_prompts: bool,
}

fn d_level() -> String {
    "info".into()
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            format: LogFormat::Text,
            level: d_level(),
            log_prompts: false,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `cache.semantic` (kept opaque in the library's cache config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SemanticSection {
    /// Directory of the all-MiniLM-L6-v2 model (default:
    /// `$BREAKWATER_MODEL_DIR` or `~/.cache/breakwater/models/all-MiniLM-L6-v2`,
    /// where `scripts/fetch-embedding-model` puts it).
    #[serde(default)]
    pub model_dir: Option<std::path::PathBuf>,
    /// Cosine similarity needed for a hit.
    #[serde(default = "d_threshold")]
    pub threshold: f32,
    /// Entries kept at most.
    #[serde(default = "d_max_entries")]
    pub max_entries: usize,
}

fn d_threshold() -> f32 {
    0.92
}
fn d_max_entries() -> usize {
    100_000
}

impl Default for SemanticSection {
    fn default() -> Self {
        SemanticSection {
            model_dir: None,
            threshold: d_threshold(),
            max_entries: d_max_entries(),
        }
    }
}

impl GatewayConfig {
    /// The typed `cache.semantic` section.
    pub fn semantic(&self) -> Result<SemanticSection, String> {
        match &self.cache.semantic {
            None | Some(serde_json::Value::Null) => Ok(SemanticSection::default()),
            Some(v) => serde_path_to_error::deserialize(v.clone()).map_err(|e| {
                let p = e.path().to_string();
                if p == "." {
                    e.into_inner().to_string()
                } else {
                    format!("{p}: {}", e.into_inner())
                }
            }),
        }
    }
}
