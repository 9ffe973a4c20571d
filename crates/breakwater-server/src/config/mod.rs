//! Loading and checking the configuration file: YAML → `${ENV}`
//! interpolation → typed schema (unknown keys are errors) → semantic checks.
//! Every error names the path of the key and the reason.

mod env;
mod schema;

pub use env::interpolate;
pub use schema::*;

use breakwater::policy::config::InvalidConfig;
use breakwater::provider::ProviderKind;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<inline>`).
    pub source: String,
    /// The key's path, e.g. `models.fast.targets[0].provider` (empty for
    /// errors of the whole file).
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.source, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.source, self.path, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(source: &str, path: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        source: source.to_string(),
        path: path.into(),
        reason: reason.into(),
    }
}

fn from_invalid(source: &str, prefix: &str, e: InvalidConfig) -> ConfigError {
    let path = if prefix.is_empty() || e.path.starts_with(prefix) {
        e.path
    } else {
        format!("{prefix}.{}", e.path)
    };
    err(source, path, e.reason)
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| err(&source, "", format!("cannot read: {e}")))?;
    parse(&text, &source, &|name| std::env::var(name).ok())
}

/// Parses and checks configuration text; `lookup` resolves `${NAME}`.
pub fn parse(text: &str, source: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<GatewayConfig, ConfigError> {
    let mut value: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_saphyr::from_str(text).map_err(|e| err(source, "", format!("not valid YAML: {e}")))?
    };
    if value.is_null() {
        value = serde_json::Value::Object(Default::default());
    }
    if !value.is_object() {
        return Err(err(source, "", "the configuration must be a mapping of sections"));
    }
    interpolate(&mut value, "", lookup).map_err(|(p, r)| err(source, p, r))?;
    let cfg: GatewayConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        err(source, path, e.into_inner().to_string())
    })?;
    validate(&cfg, source)?;
    Ok(cfg)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The semantic checks the types cannot express.
pub fn validate(cfg: &GatewayConfig, source: &str) -> Result<(), ConfigError> {
    let e = |p: String, r: String| err(source, p, r);
    cfg.server.listen.parse::<std::net::SocketAddr>().map_err(|x| {
        e(
            "server.listen".into(),
            format!("`{}` is not host:port ({x})", cfg.server.listen),
        )
    })?;
    if cfg.server.workers > schema::MAX_WORKERS {
        return Err(e(
            "server.workers".into(),
            format!("at most {} (0 = one per CPU)", schema::MAX_WORKERS),
        ));
    }
    if cfg.server.max_body_bytes == 0 {
        return Err(e("server.max_body_bytes".into(), "must be at least 1".into()));
    }
    if let Some(r) = &cfg.redis {
        let urls = r.url.to_vec();
        if urls.is_empty() {
            return Err(e("redis.url".into(), "needs at least one URL".into()));
        }
        for (i, u) in urls.iter().enumerate() {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                let p = if urls.len() == 1 {
                    "redis.url".into()
                } else {
                    format!("redis.url[{i}]")
                };
                return Err(e(p, format!("`{u}` must start with redis:// or rediss://")));
            }
        }
        if r.timeout_ms == 0 {
            return Err(e("redis.timeout_ms".into(), "must be at least 1".into()));
        }
    }
    if cfg.providers.is_empty() {
        return Err(e(
            "providers".into(),
            "at least one provider is required (or start without a config file for the zero-config mode)".into(),
        ));
    }
    for (name, p) in &cfg.providers {
        let path = format!("providers.{name}");
        if name.is_empty() || name.contains('/') {
            return Err(e(path, "a provider name must be non-empty and contain no `/`".into()));
        }
        if let Some(url) = p.base_url()
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(e(
                format!("{path}.base_url"),
                format!("`{url}` must start with http:// or https://"),
            ));
        }
        let official = match p.kind {
            ProviderKind::Openai => p.base_url.is_none() || p.base_url().is_some_and(|u| u.contains("api.openai.com")),
            ProviderKind::Anthropic | ProviderKind::Gemini => true,
            ProviderKind::Simulator => false,
        };
        if official && p.api_key.as_ref().is_none_or(|k| k.is_empty()) {
            return Err(e(
                format!("{path}.api_key"),
                format!("required for a {} provider", p.kind.as_str()),
            ));
        }
        if p.simulator.is_some() && p.kind != ProviderKind::Simulator {
            return Err(e(format!("{path}.simulator"), "only for `kind: simulator`".into()));
        }
        if let Some(s) = &p.simulator {
            s.validate().map_err(|r| e(format!("{path}.simulator"), r))?;
        }
        let t = &p.timeouts;
        for (k, v) in [
            ("connect_ms", t.connect_ms),
            ("first_token_ms", t.first_token_ms),
            ("idle_ms", t.idle_ms),
            ("total_ms", t.total_ms),
        ] {
            if v == 0 {
                return Err(e(format!("{path}.timeouts.{k}"), "must be at least 1".into()));
            }
        }
        p.limits.validate().map_err(|x| from_invalid(source, &path, x))?;
    }
    let aliases: BTreeSet<&str> = cfg.models.keys().map(String::as_str).collect();
    for (alias, m) in &cfg.models {
        let path = format!("models.{alias}");
        m.validate(&path).map_err(|x| from_invalid(source, "", x))?;
        for (i, t) in m.targets.iter().enumerate() {
            if !cfg.providers.contains_key(&t.provider) {
                let known: Vec<&str> = cfg.providers.keys().map(String::as_str).collect();
                return Err(e(
                    format!("{path}.targets[{i}].provider"),
                    format!("no provider named `{}` (known: {})", t.provider, known.join(", ")),
                ));
            }
        }
        for (key, v) in [("fallback", &m.fallback), ("context_fallback", &m.context_fallback)] {
            if let Some(a) = v
                && !aliases.contains(a.as_str())
            {
                return Err(e(format!("{path}.{key}"), format!("no model alias named `{a}`")));
            }
        }
    }
    if let Some(p) = &cfg.server.passthrough_provider
        && !cfg.providers.contains_key(p)
    {
        return Err(e(
            "server.passthrough_provider".into(),
            format!("no provider named `{p}`"),
        ));
    }
    if cfg.models.is_empty() && !cfg.server.allow_direct_models && cfg.server.passthrough_provider.is_none() {
        return Err(e(
            "models".into(),
            "define at least one model alias (or set server.allow_direct_models: true)".into(),
        ));
    }
    let sem = cfg.semantic().map_err(|r| e("cache.semantic".into(), r))?;
    if !(sem.threshold > 0.0 && sem.threshold <= 1.0) {
        return Err(e("cache.semantic.threshold".into(), "must be in (0, 1]".into()));
    }
    if sem.max_entries == 0 {
        return Err(e("cache.semantic.max_entries".into(), "must be at least 1".into()));
    }
    cfg.retry.validate().map_err(|x| from_invalid(source, "retry", x))?;
    cfg.breaker.validate().map_err(|x| from_invalid(source, "breaker", x))?;
    cfg.prices.validate().map_err(|x| from_invalid(source, "prices", x))?;
    if cfg.health.probe_interval_s == 0 {
        return Err(e("health.probe_interval_s".into(), "must be at least 1".into()));
    }
    if let Some(iot) = &cfg.iot {
        iot.validate().map_err(|r| {
            // The IoT section's messages start with the key's path.
            match r.split_once(": ") {
                Some((k, why)) if k.starts_with("iot") && !k.contains(' ') => e(k.to_string(), why.to_string()),
                _ => e("iot".to_string(), r.clone()),
            }
        })?;
        if !aliases.contains(iot.model.as_str()) && cfg.server.passthrough_provider.is_none() {
            return Err(e("iot.model".into(), format!("no model alias named `{}`", iot.model)));
        }
    }
    if let Some(keys) = &cfg.keys {
        let mut names = BTreeSet::new();
        for (i, k) in keys.iter().enumerate() {
            let path = format!("keys[{i}]");
            if k.name.trim().is_empty() {
                return Err(e(format!("{path}.name"), "required".into()));
            }
            if !names.insert(k.name.as_str()) {
                return Err(e(
                    format!("{path}.name"),
                    format!("`{}` is used by another key", k.name),
                ));
            }
            match (&k.key, &k.key_sha256) {
                (Some(_), Some(_)) => {
                    return Err(e(path, "give `key` or `key_sha256`, not both".into()));
                }
                (None, None) => return Err(e(format!("{path}.key"), "`key` or `key_sha256` is required".into())),
                (Some(key), None) if key.expose().len() < 8 => {
                    return Err(e(format!("{path}.key"), "too short: use at least 8 characters".into()));
                }
                (None, Some(h)) if !is_hex64(h) => {
                    return Err(e(
                        format!("{path}.key_sha256"),
                        "must be 64 hexadecimal characters".into(),
                    ));
                }
                _ => {}
            }
            for (j, m) in k.models.iter().enumerate() {
                if m != "*" && !aliases.contains(m.as_str()) && !(cfg.server.allow_direct_models && m.contains('/')) {
                    return Err(e(format!("{path}.models[{j}]"), format!("no model alias named `{m}`")));
                }
            }
            k.limits.validate().map_err(|x| from_invalid(source, &path, x))?;
            k.budget.validate().map_err(|x| from_invalid(source, &path, x))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "OPENAI_API_KEY").then(|| "sk-test".to_string())
    }

    const GOOD: &str = r#"
server: { listen: "127.0.0.1:0", admin_key: "admin-secret" }
providers:
  openai: { kind: openai, api_key: "${OPENAI_API_KEY}", limits: { rpm: 600 } }
  sim:
    kind: simulator
    simulator: { latency_ms: 5, faults: { server_error: 0.1 } }
models:
  fast:
    strategy: priority
    targets:
      - { provider: openai, model: gpt-4o-mini }
      - { provider: sim, model: sim-1 }
    hedge: { after_ms: p95 }
    cache: { ttl_s: 60 }
keys:
  - { name: team-a, key: "team-a-key-123", limits: { rpm: 60 }, budget: { usd: 5.0, period: day } }
prices:
  gpt-4o-mini: { input: 0.15, output: 0.60 }
"#;

    #[test]
    fn a_full_config_loads() {
        let c = parse(GOOD, "good.yaml", &env).unwrap();
        assert_eq!(c.providers["openai"].api_key.as_ref().unwrap().expose(), "sk-test");
        assert_eq!(c.models["fast"].targets.len(), 2);
        assert_eq!(c.keys.as_ref().unwrap()[0].limits.rpm, Some(60));
        let printed = serde_json::to_string(&c).unwrap();
        assert!(
            !printed.contains("sk-test") && !printed.contains("team-a-key-123"),
            "secrets never print"
        );
    }

    fn fails(text: &str) -> ConfigError {
        parse(text, "bad.yaml", &env).unwrap_err()
    }

    #[test]
    fn errors_name_the_path_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "providers: { sim: { kind: simulator } }\nmodels: { m: { tragets: [] } }",
                "models.m.tragets",
                "unknown field",
            ),
            (
                "providers: { sim: { kind: simulator } }\nmodels: { m: { targets: [{ provider: nope, model: x }] } }",
                "models.m.targets[0].provider",
                "nope",
            ),
            (
                "providers: { o: { kind: openai } }\nmodels: { m: { targets: [{ provider: o, model: x }] } }",
                "providers.o.api_key",
                "required",
            ),
            (
                "providers: { o: { kind: openai, api_key: \"${MISSING}\" } }",
                "providers.o.api_key",
                "MISSING",
            ),
            (
                "providers: { s: { kind: simulator, simulator: { faults: { hang: 2 } } } }\nmodels: { m: { targets: [{ provider: s, model: x }] } }",
                "providers.s.simulator",
                "faults.hang",
            ),
            ("providers: { s: { kind: banana } }", "providers.s.kind", "banana"),
            (
                "server: { listen: nowhere }\nproviders: { s: { kind: simulator } }",
                "server.listen",
                "host:port",
            ),
            ("providers: {}", "providers", "at least one"),
            (
                "providers: { s: { kind: simulator } }\nmodels: { m: { targets: [{ provider: s, model: x }] } }\nkeys: [{ name: a }]",
                "keys[0].key",
                "required",
            ),
            (
                "providers: { s: { kind: simulator } }\nmodels: { m: { targets: [{ provider: s, model: x }] } }\nkeys: [{ name: a, key_sha256: abc }]",
                "keys[0].key_sha256",
                "64",
            ),
            (
                "providers: { s: { kind: simulator } }\nmodels: { m: { targets: [{ provider: s, model: x }], fallback: z } }",
                "models.m.fallback",
                "`z`",
            ),
            (
                "providers: { s: { kind: simulator } }\nmodels: { m: { targets: [{ provider: s, model: x }] } }\nretry: { max_attempts: 0 }",
                "retry.max_attempts",
                "",
            ),
            (
                "providers: { s: { kind: simulator, limits: { rpm: -5 } } }",
                "providers.s.limits.rpm",
                "",
            ),
            (
                "redis: { url: \"http://x\" }\nproviders: { s: { kind: simulator } }",
                "redis.url",
                "redis://",
            ),
            ("- a\n- b", "", "mapping"),
            ("providers: [unclosed", "", "YAML"),
        ];
        for (text, path, reason) in cases {
            let e = fails(text);
            assert_eq!(&e.path, path, "{text}\n→ {e}");
            assert!(e.reason.contains(reason), "{text}\n→ {e}");
            assert!(e.to_string().starts_with("bad.yaml"));
        }
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/breakwater.yaml");
        let text = std::fs::read_to_string(&path).expect("examples/breakwater.yaml exists");
        let lookup = |name: &str| match name {
            "BREAKWATER_ADMIN_KEY" | "TEAM_A_KEY" | "TEAM_B_KEY" => Some("test-key-1234567".to_string()),
            n if n.ends_with("_API_KEY") => Some("sk-test".to_string()),
            _ => None,
        };
        parse(&text, "examples/breakwater.yaml", &lookup).unwrap_or_else(|e| panic!("{e}"));
    }
}
