//! Virtual keys: who is calling, which aliases they may use, and their
//! per-key rate limits and spend budgets.
//!
//! Keys are kept only as SHA-256 digests (given hashed in the config, or
//! hashed at load). A presented key is hashed and compared in constant time,
//! so neither the config in memory nor the comparison's timing reveals keys.

use crate::config::KeyConfig;
use axum::http::HeaderMap;
use breakwater::error::{Error, ErrorKind};
use breakwater::policy::ratelimit::{AnyLimiterStore, RequestLimits};
use breakwater::policy::spend::{AnySpendStore, MemorySpendStore, RedisSpendStore, SpendLimiter};
use breakwater::redis_store::RedisStore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// One virtual key at run time.
pub struct KeyEntry {
    /// The key's name: the tenant.
    pub name: Arc<str>,
    digest: [u8; 32],
    models: Vec<String>,
    /// Requests and tokens per minute.
    pub limits: RequestLimits<AnyLimiterStore>,
    /// Spend per period, when configured.
    pub spend: Option<SpendLimiter<AnySpendStore>>,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry").field("name", &self.name).finish()
    }
}

impl KeyEntry {
    /// Whether the key may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }
}

/// The keys of the gateway (empty in open mode).
#[derive(Default)]
pub struct Keys {
    by_digest: HashMap<[u8; 32], Arc<KeyEntry>>,
    /// Whether `keys:` was configured at all.
    pub enabled: bool,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("count", &self.by_digest.len()).finish()
    }
}

/// SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key a request presents: `Authorization: Bearer KEY` or `x-api-key: KEY`.
pub fn presented(h: &HeaderMap) -> Option<&str> {
    if let Some(v) = h.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(k) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(k.trim());
        }
    }
    h.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

impl Keys {
    /// Builds the keys of the config; limits and budgets live in Redis when
    /// given.
    pub fn build(cfg: Option<&[KeyConfig]>, redis: Option<&RedisStore>) -> Keys {
        let Some(cfg) = cfg else { return Keys::default() };
        let mut by_digest = HashMap::new();
        for k in cfg {
            let digest = match (&k.key, &k.key_sha256) {
                (Some(key), _) => digest(key.expose()),
                (None, Some(h)) => {
                    let mut d = [0u8; 32];
                    if hex::decode_to_slice(h, &mut d).is_err() {
                        continue; // validated at load; unreachable in practice
                    }
                    d
                }
                (None, None) => continue,
            };
            let scope = format!("key:{}", k.name);
            let spend = (!k.budget.is_unlimited()).then(|| {
                let store = match redis {
                    Some(r) => AnySpendStore::Redis(RedisSpendStore::new(r.clone(), &scope)),
                    None => AnySpendStore::Memory(MemorySpendStore::new(100_000)),
                };
                SpendLimiter::new(k.budget, store)
            });
            let entry = KeyEntry {
                name: Arc::from(k.name.as_str()),
                digest,
                models: k.models.clone(),
                limits: RequestLimits::build(&scope, k.limits.rpm, k.limits.tpm, k.limits.algorithm, redis),
                spend,
            };
            by_digest.insert(digest, Arc::new(entry));
        }
        Keys {
            by_digest,
            enabled: true,
        }
    }

    /// The key of a request, or `authentication` (401).
    pub fn authenticate(&self, presented: Option<&str>) -> Result<Arc<KeyEntry>, Error> {
        let Some(p) = presented.filter(|p| !p.is_empty()) else {
            return Err(Error::new(
                ErrorKind::Authentication,
                "no API key: send `Authorization: Bearer <key>` (or `x-api-key`)",
            )
            .with_code("missing_api_key"));
        };
        let d = digest(p);
        match self.by_digest.get(&d) {
            // Digests are compared again in constant time for good measure.
            Some(e) if bool::from(e.digest.ct_eq(&d)) => Ok(e.clone()),
            _ => Err(Error::new(ErrorKind::Authentication, "invalid API key").with_code("invalid_api_key")),
        }
    }

    /// Every key, for stats.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<KeyEntry>> {
        self.by_digest.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn cfg(name: &str, key: Option<&str>, sha: Option<&str>, models: &[&str]) -> KeyConfig {
        serde_json::from_value(serde_json::json!({
            "name": name, "key": key, "key_sha256": sha, "models": models
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn plain_and_hashed_keys_authenticate() {
        let hashed = hex::encode(digest("team-b-secret"));
        let keys = Keys::build(
            Some(&[
                cfg("team-a", Some("team-a-secret"), None, &["*"]),
                cfg("team-b", None, Some(&hashed), &["fast"]),
            ]),
            None,
        );
        assert_eq!(&*keys.authenticate(Some("team-a-secret")).unwrap().name, "team-a");
        let b = keys.authenticate(Some("team-b-secret")).unwrap();
        assert!(b.allows("fast") && !b.allows("slow"));
        assert_eq!(
            keys.authenticate(Some("nope")).unwrap_err().kind,
            ErrorKind::Authentication
        );
        assert_eq!(
            keys.authenticate(None).unwrap_err().code.as_deref(),
            Some("missing_api_key")
        );
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer  team-a-secret "));
        assert_eq!(presented(&h), Some("team-a-secret"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k"));
        assert_eq!(presented(&h), Some("k"));
    }
}
