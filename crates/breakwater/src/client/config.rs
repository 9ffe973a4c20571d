//! The client's configuration: model aliases (`models:`) and the sections
//! that shape every call (retry, breaker, health, coalescing, idempotency).

use crate::cache::ModelCacheConfig;
use crate::mode::ResponseMode;
use crate::policy::breaker::BreakerConfig;
use crate::policy::config::InvalidConfig;
use crate::policy::ratelimit::ProviderLimits;
use crate::policy::retry::RetryConfig;
use crate::route::Strategy;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One alias (`models.<alias>`): what clients ask for, and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// How requests spread over the targets.
    #[serde(default)]
    pub strategy: Strategy,
    /// The targets; at least one.
    pub targets: Vec<TargetConfig>,
    /// Hedged requests.
    #[serde(default)]
    pub hedge: HedgeConfig,
    /// Another alias to degrade to when every target fails.
    #[serde(default)]
    pub fallback: Option<String>,
    /// An alias with a larger context window, for `context_length_exceeded`.
    #[serde(default)]
    pub context_fallback: Option<String>,
    /// Caching of this alias's answers.
    #[serde(default)]
    pub cache: ModelCacheConfig,
    /// How breakwater calls upstream.
    #[serde(default)]
    pub response_mode: ResponseMode,
    /// When a stream breaks after its first token, continue on another target
    /// that supports assistant prefill, from the partial text (text output
    /// only). An addition to the documented schema; off by default.
    #[serde(default)]
    pub stitch: bool,
}

impl ModelConfig {
    /// An alias with these targets and defaults for the rest.
    pub fn new(targets: Vec<TargetConfig>) -> Self {
        ModelConfig {
            strategy: Strategy::Priority,
            targets,
            hedge: HedgeConfig::default(),
            fallback: None,
            context_fallback: None,
            cache: ModelCacheConfig::default(),
            response_mode: ResponseMode::Auto,
            stitch: false,
        }
    }

    /// Checks the alias; `path` is `models.<alias>`.
    pub fn validate(&self, path: &str) -> Result<(), InvalidConfig> {
        if self.targets.is_empty() {
            return Err(InvalidConfig::new(
                format!("{path}.targets"),
                "needs at least one target",
            ));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if t.provider.is_empty() {
                return Err(InvalidConfig::new(
                    format!("{path}.targets[{i}].provider"),
                    "must not be empty",
                ));
            }
            if t.model.is_empty() {
                return Err(InvalidConfig::new(
                    format!("{path}.targets[{i}].model"),
                    "must not be empty",
                ));
            }
            if let Some(l) = &t.limits {
                l.validate()
                    .map_err(|e| InvalidConfig::new(format!("{path}.targets[{i}].{}", e.path), e.reason))?;
            }
        }
        if self.strategy == Strategy::Weighted && self.targets.iter().all(|t| t.weight == 0) {
            return Err(InvalidConfig::new(
                format!("{path}.targets"),
                "a weighted alias needs a target with weight > 0",
            ));
        }
        Ok(())
    }
}

/// A target: a provider (by its configured name) and an upstream model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `providers.<name>`.
    pub provider: String,
    /// The upstream model name.
    pub model: String,
    /// Relative weight for `weighted`.
    #[serde(default = "one")]
    pub weight: u32,
    /// Limits of this provider+model on top of the provider's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ProviderLimits>,
}

fn one() -> u32 {
    1
}

impl TargetConfig {
    /// A target with weight 1 and no limits of its own.
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        TargetConfig {
            provider: provider.into(),
            model: model.into(),
            weight: 1,
            limits: None,
        }
    }
}

/// When to start a hedge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HedgeAfter {
    /// After this many milliseconds without a first token.
    Ms(u64),
    /// After the target's observed p95 time to first token.
    P95,
}

impl Serialize for HedgeAfter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HedgeAfter::Ms(ms) => s.serialize_u64(*ms),
            HedgeAfter::P95 => s.serialize_str("p95"),
        }
    }
}

impl<'de> Deserialize<'de> for HedgeAfter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Ms(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Ms(ms) => Ok(HedgeAfter::Ms(ms)),
            Raw::Text(t) if t == "p95" => Ok(HedgeAfter::P95),
            Raw::Text(t) => Err(serde::de::Error::custom(format!(
                "hedge.after_ms must be a number of milliseconds or \"p95\", not {t:?}"
            ))),
        }
    }
}

/// `models.*.hedge`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// `null` = no hedging.
    #[serde(default)]
    pub after_ms: Option<HedgeAfter>,
}

/// `health:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Interval of active probes for targets that are out, seconds.
    #[serde(default = "d_probe")]
    pub probe_interval_s: u64,
}

fn d_probe() -> u64 {
    15
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probe_interval_s: d_probe(),
        }
    }
}

/// Everything besides providers and aliases that shapes calls.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientConfig {
    /// Retries per target.
    pub retry: RetryConfig,
    /// Circuit breakers per target.
    pub breaker: BreakerConfig,
    /// Active health probes.
    pub health: HealthConfig,
    /// Whether identical in-flight requests share one upstream call.
    pub coalesce: bool,
    /// The overall deadline of a request that sets none.
    pub default_timeout_ms: u64,
    /// When other targets remain, retry the same target only if the wait is
    /// at most this long; otherwise fail over at once.
    pub max_wait_before_failover_ms: u64,
    /// How long a call may wait for a provider's rate limit before moving on.
    pub max_limiter_wait_ms: u64,
    /// Allow `provider/model` as a model name.
    pub allow_direct_models: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            health: HealthConfig::default(),
            coalesce: true,
            default_timeout_ms: 300_000,
            max_wait_before_failover_ms: 500,
            max_limiter_wait_ms: 1_000,
            allow_direct_models: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hedge_forms() {
        let h: HedgeConfig = serde_json::from_str(r#"{"after_ms": 250}"#).unwrap();
        assert_eq!(h.after_ms, Some(HedgeAfter::Ms(250)));
        let h: HedgeConfig = serde_json::from_str(r#"{"after_ms": "p95"}"#).unwrap();
        assert_eq!(h.after_ms, Some(HedgeAfter::P95));
        let h: HedgeConfig = serde_json::from_str(r#"{"after_ms": null}"#).unwrap();
        assert_eq!(h.after_ms, None);
        let e = serde_json::from_str::<HedgeConfig>(r#"{"after_ms": "soon"}"#).unwrap_err();
        assert!(e.to_string().contains("p95"), "{e}");
    }

    #[test]
    fn validation_names_the_path() {
        let mut m = ModelConfig::new(vec![]);
        assert_eq!(m.validate("models.fast").unwrap_err().path, "models.fast.targets");
        m.targets.push(TargetConfig::new("openai", ""));
        assert_eq!(
            m.validate("models.fast").unwrap_err().path,
            "models.fast.targets[0].model"
        );
        let m: ModelConfig = serde_json::from_str(
            r#"{"strategy": "p2c", "targets": [{"provider": "a", "model": "m", "weight": 2}], "hedge": {"after_ms": "p95"}}"#,
        )
        .unwrap();
        assert!(m.validate("models.x").is_ok());
        assert!(serde_json::from_str::<ModelConfig>(r#"{"targets": [], "tragets": 1}"#).is_err());
    }
}
