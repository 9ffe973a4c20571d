//! Zero-config provider discovery: providers from the usual environment
//! variables, else a local OpenAI-compatible server that answers, else the
//! built-in simulator.

use super::anthropic::Anthropic;
use super::gemini::Gemini;
use super::openai::OpenAi;
use super::{DynProvider, HttpSettings, ProviderKind};
use crate::policy::timeout::Timeouts;
use crate::simulator::{Simulator, SimulatorConfig};
use std::sync::Arc;
use std::time::Duration;

/// A provider found without configuration.
#[derive(Clone)]
pub struct Discovered {
    /// The provider.
    pub provider: DynProvider,
    /// Its wire protocol.
    pub kind: ProviderKind,
    /// Its base URL (`None` for the simulator).
    pub base_url: Option<String>,
    /// Its API key, when one is needed.
    pub api_key: Option<crate::secret::Secret>,
    /// A model to use with it.
    pub model: String,
    /// Why it was chosen (for the startup message).
    pub reason: String,
}

impl std::fmt::Debug for Discovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovered")
            .field("provider", &self.provider.name())
            .field("model", &self.model)
            .field("reason", &self.reason)
            .finish()
    }
}

/// Local OpenAI-compatible servers we look for: llama-server (8033, 8080)
/// and Ollama (11434).
pub const LOCAL_CANDIDATES: &[(&str, u16)] = &[("llama-server", 8033), ("llama-server", 8080), ("ollama", 11434)];

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Providers configured by environment variables: `OPENAI_API_KEY`
/// (`OPENAI_BASE_URL`), `ANTHROPIC_API_KEY` (`ANTHROPIC_BASE_URL`),
/// `GEMINI_API_KEY` or `GOOGLE_API_KEY` (`GEMINI_BASE_URL`).
pub fn from_env(timeouts: Timeouts) -> Vec<Discovered> {
    let mut out = Vec::new();
    if let Some(key) = env("OPENAI_API_KEY") {
        let base = env("OPENAI_BASE_URL").unwrap_or_else(|| "https://api.openai.com/v1".into());
        if let Ok(p) = OpenAi::new("openai", &HttpSettings::new(base).api_key(key).timeouts(timeouts)) {
            out.push(Discovered {
                provider: Arc::new(p),
                kind: ProviderKind::Openai,
                base_url: env("OPENAI_BASE_URL").or_else(|| Some("https://api.openai.com/v1".into())),
                api_key: env("OPENAI_API_KEY").map(Into::into),
                model: env("OPENAI_MODEL").unwrap_or_else(|| "gpt-4o-mini".into()),
                reason: "OPENAI_API_KEY is set".into(),
            });
        }
    }
    if let Some(key) = env("ANTHROPIC_API_KEY") {
        let base = env("ANTHROPIC_BASE_URL").unwrap_or_else(|| super::anthropic::DEFAULT_BASE_URL.into());
        if let Ok(p) = Anthropic::new("anthropic", &HttpSettings::new(base).api_key(key).timeouts(timeouts)) {
            out.push(Discovered {
                provider: Arc::new(p),
                kind: ProviderKind::Anthropic,
                base_url: env("ANTHROPIC_BASE_URL").or_else(|| Some(super::anthropic::DEFAULT_BASE_URL.into())),
                api_key: env("ANTHROPIC_API_KEY").map(Into::into),
                model: env("ANTHROPIC_MODEL").unwrap_or_else(|| "claude-haiku-4-5".into()),
                reason: "ANTHROPIC_API_KEY is set".into(),
            });
        }
    }
    if let Some(key) = env("GEMINI_API_KEY").or_else(|| env("GOOGLE_API_KEY")) {
        let base = env("GEMINI_BASE_URL").unwrap_or_else(|| super::gemini::DEFAULT_BASE_URL.into());
        if let Ok(p) = Gemini::new("gemini", &HttpSettings::new(base).api_key(key).timeouts(timeouts)) {
            out.push(Discovered {
                provider: Arc::new(p),
                kind: ProviderKind::Gemini,
                base_url: env("GEMINI_BASE_URL").or_else(|| Some(super::gemini::DEFAULT_BASE_URL.into())),
                api_key: env("GEMINI_API_KEY").or_else(|| env("GOOGLE_API_KEY")).map(Into::into),
                model: env("GEMINI_MODEL").unwrap_or_else(|| "gemini-2.5-flash".into()),
                reason: "GEMINI_API_KEY is set".into(),
            });
        }
    }
    out
}

/// The first local OpenAI-compatible server that lists its models, skipping
/// `skip_port` (our own listener). Each probe waits at most `wait`.
pub async fn local_server(skip_port: Option<u16>, wait: Duration, timeouts: Timeouts) -> Option<Discovered> {
    local_server_among(LOCAL_CANDIDATES, skip_port, wait, timeouts).await
}

/// [`local_server`] over other candidates (what, loopback port) — tests
/// probe a server on a free port instead of the well-known ones.
pub async fn local_server_among(
    candidates: &[(&str, u16)],
    skip_port: Option<u16>,
    wait: Duration,
    timeouts: Timeouts,
) -> Option<Discovered> {
    let client = reqwest::Client::builder().timeout(wait).build().ok()?;
    for (what, port) in candidates {
        if Some(*port) == skip_port {
            continue;
        }
        let base = format!("http://127.0.0.1:{port}/v1");
        let Ok(resp) = client.get(format!("{base}/models")).send().await else {
            continue;
        };
        if !resp.status().is_success() {
            continue;
        }
        let Ok(v) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let model = v
            .get("data")
            .and_then(|d| d.get(0))
            .and_then(|m| m.get("id"))
            .and_then(|m| m.as_str())
            .unwrap_or("local")
            .to_string();
        let name = format!("local-{what}");
        let Ok(p) = OpenAi::new(name, &HttpSettings::new(base.clone()).timeouts(timeouts)) else {
            continue;
        };
        let caps = super::Capabilities {
            native_json_schema: true,
            assistant_prefill: true,
            embeddings: true,
            tools: true,
        };
        return Some(Discovered {
            provider: Arc::new(p.with_capabilities(caps)),
            kind: ProviderKind::Openai,
            base_url: Some(base.clone()),
            api_key: None,
            model,
            reason: format!("a local {what} answers at {base}"),
        });
    }
    None
}

/// The built-in simulator, as the last resort.
pub fn simulator() -> Discovered {
    Discovered {
        provider: Arc::new(Simulator::new("simulator", SimulatorConfig::default())),
        kind: ProviderKind::Simulator,
        base_url: None,
        api_key: None,
        model: "sim-1".into(),
        reason: "no API key in the environment and no local model server: using the built-in simulator".into(),
    }
}

/// Everything available, in order of preference: environment providers,
/// then a local server, then (only if nothing else) the simulator.
pub async fn discover(skip_port: Option<u16>, timeouts: Timeouts) -> Vec<Discovered> {
    let mut out = from_env(timeouts);
    if let Some(local) = local_server(skip_port, Duration::from_millis(300), timeouts).await {
        out.push(local);
    }
    if out.is_empty() {
        out.push(simulator());
    }
    out
}

/// The kind of a discovered provider, for messages.
pub fn kind_name(d: &Discovered) -> &'static str {
    match d.provider.kind() {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gemini",
        ProviderKind::Simulator => "simulator",
    }
}
