//! What may be cached: the config sections (`cache:` and
//! `models.*.cache`), the read/write decision for a request, and the check
//! that a response is worth storing.

use super::control::CacheControl;
use super::key::CacheScope;
use crate::types::{ChatRequest, ChatResponse, FinishReason};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `cache:` section of the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The in-memory tier (L1).
    #[serde(default)]
    pub memory: MemoryConfig,
    /// Whether tenants share entries.
    #[serde(default)]
    pub scope: CacheScope,
    /// Responses larger than this (encoded) are not stored.
    #[serde(default = "d_max_entry")]
    pub max_entry_bytes: usize,
    /// The semantic cache's section; parsed by the semantic cache module,
    /// kept opaque here so the two can evolve apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<serde_json::Value>,
    /// How long an instance trusts its copy of a namespace generation before
    /// it asks Redis again (invalidations by another instance are seen within
    /// this). Added key; milliseconds.
    #[serde(default = "d_refresh")]
    pub namespace_refresh_ms: u64,
    /// Most L2 writes in flight at once; more are dropped (and counted), so a
    /// slow Redis cannot pile up tasks. Added key.
    #[serde(default = "d_l2_writes")]
    pub max_pending_l2_writes: usize,
}

fn d_max_entry() -> usize {
    1 << 20
}
fn d_refresh() -> u64 {
    1_000
}
fn d_l2_writes() -> usize {
    256
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory: MemoryConfig::default(),
            scope: CacheScope::Tenant,
            max_entry_bytes: d_max_entry(),
            semantic: None,
            namespace_refresh_ms: d_refresh(),
            max_pending_l2_writes: d_l2_writes(),
        }
    }
}

/// `cache.memory`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Bytes of encoded responses the memory tier holds.
    #[serde(default = "d_max_bytes")]
    pub max_bytes: u64,
}

fn d_max_bytes() -> u64 {
    256 << 20
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_bytes: d_max_bytes(),
        }
    }
}

/// `models.<alias>.cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCacheConfig {
    /// Whether the exact cache is used for this alias at all.
    #[serde(default = "d_true")]
    pub enabled: bool,
    /// How long an entry answers normal lookups.
    #[serde(default = "d_ttl")]
    pub ttl_s: u64,
    /// How much longer it is kept to answer when every route failed.
    #[serde(default = "d_stale")]
    pub stale_s: u64,
    /// Whether the semantic cache is used (read by the semantic cache).
    #[serde(default)]
    pub semantic: bool,
    /// Cache sampled (non-deterministic) requests too: a repeat then gets
    /// the first sample instead of a new one.
    #[serde(default)]
    pub nondeterministic: bool,
    /// Store answers cut at the token cap (`finish_reason: length`). Added
    /// key; off because a truncated answer is usually a retry candidate.
    #[serde(default)]
    pub store_truncated: bool,
}

fn d_true() -> bool {
    true
}
fn d_ttl() -> u64 {
    3_600
}
fn d_stale() -> u64 {
    86_400
}

impl Default for ModelCacheConfig {
    fn default() -> Self {
        ModelCacheConfig {
            enabled: true,
            ttl_s: d_ttl(),
            stale_s: d_stale(),
            semantic: false,
            nondeterministic: false,
            store_truncated: false,
        }
    }
}

impl ModelCacheConfig {
    /// The freshness lifetime.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_s)
    }

    /// The grace period after the TTL.
    pub fn stale(&self) -> Duration {
        Duration::from_secs(self.stale_s)
    }
}

/// Whether a request asks for a reproducible answer: temperature 0, or a
/// fixed seed. Only those are cached by default: caching a sampled request
/// would silently turn "give me another one" into "the same one again".
pub fn is_deterministic(req: &ChatRequest) -> bool {
    req.temperature == Some(0.0) || req.seed.is_some()
}

/// Why a request does not use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// `models.*.cache.enabled: false`.
    Disabled,
    /// Sampled request and `nondeterministic: false`.
    Nondeterministic,
    /// `Cache-Control: no-store`.
    NoStore,
}

/// What to do with the cache for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePlan {
    /// Look the answer up.
    pub read: bool,
    /// Store the answer.
    pub write: bool,
    /// Why the cache is skipped, when it is skipped entirely.
    pub bypass: Option<BypassReason>,
}

impl CachePlan {
    /// Decides for `req` under the alias's cache config and the caller's
    /// `Cache-Control`. `no-cache` reads nothing but refreshes the entry.
    pub fn decide(req: &ChatRequest, cfg: &ModelCacheConfig, control: CacheControl) -> Self {
        let skip = |r| CachePlan {
            read: false,
            write: false,
            bypass: Some(r),
        };
        if !cfg.enabled {
            return skip(BypassReason::Disabled);
        }
        if control.no_store {
            return skip(BypassReason::NoStore);
        }
        if !cfg.nondeterministic && !is_deterministic(req) {
            return skip(BypassReason::Nondeterministic);
        }
        CachePlan {
            read: !control.no_cache,
            write: true,
            bypass: None,
        }
    }

    /// Whether the cache is touched at all.
    pub fn uses_cache(&self) -> bool {
        self.read || self.write
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// No choices at all.
    Empty,
    /// A choice has no finish reason (incomplete).
    Unfinished,
    /// The model asked for tool results (`tool_calls` / `function_call`):
    /// the conversation goes on with results the cache cannot know.
    AwaitsTools,
    /// Cut at the token cap, and the config does not store those.
    Truncated,
    /// Filtered or broken off (`content_filter`, `error`).
    NotClean,
    /// Larger than `cache.max_entry_bytes`.
    TooLarge,
    /// Could not be encoded.
    Unencodable,
}

/// Whether `resp` may be stored under `cfg`.
pub fn check_storable(resp: &ChatResponse, cfg: &ModelCacheConfig) -> Result<(), NotStored> {
    if resp.choices.is_empty() {
        return Err(NotStored::Empty);
    }
    for c in &resp.choices {
        match &c.finish_reason {
            None => return Err(NotStored::Unfinished),
            Some(FinishReason::ToolCalls | FinishReason::FunctionCall) => return Err(NotStored::AwaitsTools),
            Some(FinishReason::Length) if !cfg.store_truncated => return Err(NotStored::Truncated),
            Some(FinishReason::ContentFilter | FinishReason::Error) => return Err(NotStored::NotClean),
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Choice, Extra, Message};

    fn req(temp: Option<f64>, seed: Option<i64>) -> ChatRequest {
        let mut r = ChatRequest::user("m", "hi");
        r.temperature = temp;
        r.seed = seed;
        r
    }

    #[test]
    fn plans() {
        let cfg = ModelCacheConfig::default();
        let cc = CacheControl::default();
        let p = CachePlan::decide(&req(Some(0.0), None), &cfg, cc);
        assert!(p.read && p.write);
        assert!(CachePlan::decide(&req(Some(1.0), Some(7)), &cfg, cc).read);
        let p = CachePlan::decide(&req(None, None), &cfg, cc);
        assert_eq!(p.bypass, Some(BypassReason::Nondeterministic));
        let nd = ModelCacheConfig {
            nondeterministic: true,
            ..cfg
        };
        assert!(CachePlan::decide(&req(None, None), &nd, cc).read);
        let off = ModelCacheConfig { enabled: false, ..cfg };
        assert_eq!(
            CachePlan::decide(&req(Some(0.0), None), &off, cc).bypass,
            Some(BypassReason::Disabled)
        );
        let p = CachePlan::decide(&req(Some(0.0), None), &cfg, CacheControl::parse("no-cache"));
        assert!(!p.read && p.write && p.bypass.is_none());
        let p = CachePlan::decide(&req(Some(0.0), None), &cfg, CacheControl::parse("no-store"));
        assert!(!p.uses_cache());
    }

    fn resp(finish: Option<FinishReason>) -> ChatResponse {
        ChatResponse {
            id: "x".into(),
            object: "chat.completion".into(),
            created: 0,
            model: "m".into(),
            choices: vec![Choice {
                index: 0,
                message: Message::assistant("a"),
                finish_reason: finish,
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }

    #[test]
    fn storability() {
        let cfg = ModelCacheConfig::default();
        assert_eq!(check_storable(&resp(Some(FinishReason::Stop)), &cfg), Ok(()));
        assert_eq!(check_storable(&resp(None), &cfg), Err(NotStored::Unfinished));
        assert_eq!(
            check_storable(&resp(Some(FinishReason::ToolCalls)), &cfg),
            Err(NotStored::AwaitsTools)
        );
        assert_eq!(
            check_storable(&resp(Some(FinishReason::Length)), &cfg),
            Err(NotStored::Truncated)
        );
        let t = ModelCacheConfig {
            store_truncated: true,
            ..cfg
        };
        assert_eq!(check_storable(&resp(Some(FinishReason::Length)), &t), Ok(()));
        assert_eq!(
            check_storable(&resp(Some(FinishReason::Error)), &cfg),
            Err(NotStored::NotClean)
        );
        let mut e = resp(None);
        e.choices.clear();
        assert_eq!(check_storable(&e, &cfg), Err(NotStored::Empty));
    }
}
