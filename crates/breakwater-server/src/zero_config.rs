//! Starting with no configuration file: providers from OPENAI_API_KEY /
//! ANTHROPIC_API_KEY / GEMINI_API_KEY, else a local OpenAI-compatible server
//! that answers (llama-server on 8033 or 8080, Ollama on 11434), else the
//! built-in simulator. In-memory cache and limits, open mode on loopback.

use crate::config::{GatewayConfig, ProviderConfig};
use breakwater::client::{ModelConfig, TargetConfig};
use breakwater::policy::timeout::Timeouts;
use breakwater::provider::discover;

/// The configuration of a zero-config start, and a sentence saying what
/// was chosen and why.
pub async fn config(listen: &str) -> (GatewayConfig, String) {
    let port = listen.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
    let found = discover::discover(port, Timeouts::default()).await;
    let mut cfg = GatewayConfig::default();
    cfg.server.listen = listen.to_string();
    let mut targets = Vec::new();
    let mut lines = Vec::new();
    for d in &found {
        let name = d.provider.name().to_string();
        cfg.providers.insert(
            name.clone(),
            ProviderConfig {
                kind: d.kind,
                base_url: d.base_url.clone(),
                api_key: d.api_key.clone(),
                headers: Default::default(),
                timeouts: Timeouts::default(),
                limits: Default::default(),
                simulator: None,
            },
        );
        targets.push(TargetConfig::new(name.clone(), d.model.clone()));
        lines.push(format!(
            "{name} ({}, model {}): {}",
            discover::kind_name(d),
            d.model,
            d.reason
        ));
    }
    if let Some(first) = found.first() {
        cfg.server.passthrough_provider = Some(first.provider.name().to_string());
    }
    cfg.models.insert("default".into(), ModelConfig::new(targets));
    (cfg, lines.join("; "))
}
