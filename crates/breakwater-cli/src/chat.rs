//! `breakwater chat`: one prompt, one answer.

use breakwater::policy::timeout::Timeouts;
use breakwater::provider::anthropic::Anthropic;
use breakwater::provider::discover::{self, Discovered};
use breakwater::provider::gemini::Gemini;
use breakwater::provider::openai::OpenAi;
use breakwater::provider::{CallOptions, DynProvider, HttpSettings};
use breakwater::simulator::{Simulator, SimulatorConfig};
use breakwater::types::*;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum ProviderChoice {
    /// Environment keys, else a local server, else the simulator.
    Auto,
    /// OpenAI or any OpenAI-compatible server (with --base-url).
    Openai,
    /// Anthropic.
    Anthropic,
    /// Google Gemini.
    Gemini,
    /// The built-in simulator.
    Simulator,
}

/// Arguments of `breakwater chat`.
#[derive(Args, Debug)]
pub struct ChatArgs {
    /// The prompt (words are joined with spaces).
    #[arg(required = true)]
    prompt: Vec<String>,
    /// Which provider to call.
    #[arg(long, value_enum, default_value_t = ProviderChoice::Auto)]
    provider: ProviderChoice,
    /// Model name (defaults per provider).
    #[arg(long)]
    model: Option<String>,
    /// Base URL (e.g. http://127.0.0.1:8033/v1 for llama-server).
    #[arg(long)]
    base_url: Option<String>,
    /// Environment variable holding the API key (default: the provider's usual one).
    #[arg(long)]
    api_key_env: Option<String>,
    /// A system prompt.
    #[arg(long)]
    system: Option<String>,
    /// Sampling temperature.
    #[arg(long)]
    temperature: Option<f64>,
    /// Cap on generated tokens.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Stream the answer to the terminal as it is generated.
    #[arg(long)]
    stream: bool,
    /// Print the whole response as JSON.
    #[arg(long, conflicts_with = "stream")]
    json: bool,
    /// Total deadline in milliseconds.
    #[arg(long, default_value_t = 120_000)]
    timeout_ms: u64,
}

fn key_from(env: &str) -> Result<String, String> {
    std::env::var(env)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| format!("{env} is not set: export {env}=... or pass --api-key-env"))
}

fn pick(a: &ChatArgs, timeouts: Timeouts) -> Result<Option<Discovered>, String> {
    let settings = |default_base: &str, env: &str| -> Result<HttpSettings, String> {
        let base = a.base_url.clone().unwrap_or_else(|| default_base.to_string());
        let mut s = HttpSettings::new(base).timeouts(timeouts);
        let env = a.api_key_env.as_deref().unwrap_or(env);
        match key_from(env) {
            Ok(k) => s = s.api_key(k),
            // A local OpenAI-compatible server needs no key.
            Err(e) if a.base_url.is_none() => return Err(e),
            Err(_) => {}
        }
        Ok(s)
    };
    let found = |provider: DynProvider, model: &str, reason: &str| Discovered {
        kind: provider.kind(),
        base_url: a.base_url.clone(),
        api_key: None,
        provider,
        model: a.model.clone().unwrap_or_else(|| model.to_string()),
        reason: reason.to_string(),
    };
    Ok(Some(match a.provider {
        ProviderChoice::Auto => return Ok(None),
        ProviderChoice::Openai => {
            let s = settings("https://api.openai.com/v1", "OPENAI_API_KEY")?;
            found(
                Arc::new(OpenAi::new("openai", &s).map_err(|e| e.to_string())?),
                "gpt-4o-mini",
                "--provider openai",
            )
        }
        ProviderChoice::Anthropic => {
            let s = settings(breakwater::provider::anthropic::DEFAULT_BASE_URL, "ANTHROPIC_API_KEY")?;
            found(
                Arc::new(Anthropic::new("anthropic", &s).map_err(|e| e.to_string())?),
                "claude-haiku-4-5",
                "--provider anthropic",
            )
        }
        ProviderChoice::Gemini => {
            let s = settings(breakwater::provider::gemini::DEFAULT_BASE_URL, "GEMINI_API_KEY")?;
            found(
                Arc::new(Gemini::new("gemini", &s).map_err(|e| e.to_string())?),
                "gemini-2.5-flash",
                "--provider gemini",
            )
        }
        ProviderChoice::Simulator => found(
            Arc::new(Simulator::new("simulator", SimulatorConfig::default())),
            "sim-1",
            "--provider simulator",
        ),
    }))
}

fn report(e: &breakwater::Error) -> ExitCode {
    eprintln!("error: {e}");
    eprintln!("hint: {}", e.hint());
    ExitCode::FAILURE
}

/// Runs `breakwater chat`.
pub async fn run(a: ChatArgs) -> ExitCode {
    let timeouts = Timeouts {
        total_ms: a.timeout_ms,
        ..Timeouts::default()
    };
    let chosen = match pick(&a, timeouts) {
        Ok(Some(d)) => d,
        Ok(None) => {
            let mut all = discover::discover(None, timeouts).await;
            let mut d = all.remove(0);
            if let Some(m) = &a.model {
                d.model.clone_from(m);
            }
            d
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "[breakwater] {} ({}) model {} — {}",
        chosen.provider.name(),
        discover::kind_name(&chosen),
        chosen.model,
        chosen.reason
    );
    let mut req = ChatRequest::user(chosen.model.clone(), a.prompt.join(" "));
    if let Some(s) = &a.system {
        req.messages.insert(0, Message::system(s.clone()));
    }
    req.temperature = a.temperature;
    req.max_tokens = a.max_tokens;
    let opts = CallOptions {
        deadline: Some(tokio::time::Instant::now() + Duration::from_millis(a.timeout_ms)),
        request_id: None,
    };
    let started = Instant::now();
    let (usage, first_token) = if a.stream {
        let mut s = match chosen.provider.chat_stream(&req, &opts).await {
            Ok(s) => s,
            Err(e) => return report(&e),
        };
        let mut out = std::io::stdout().lock();
        let mut usage = None;
        let mut first = None;
        while let Some(item) = s.next().await {
            match item {
                Ok(c) => {
                    if first.is_none() && c.has_output() {
                        first = Some(started.elapsed());
                    }
                    let _ = out.write_all(c.text().as_bytes());
                    let _ = out.flush();
                    if c.usage.is_some() {
                        usage = c.usage;
                    }
                }
                Err(e) => {
                    let _ = writeln!(out);
                    return report(&e);
                }
            }
        }
        let _ = writeln!(out);
        (usage, first)
    } else {
        match chosen.provider.chat(&req, &opts).await {
            Ok(r) => {
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    println!("{}", r.text());
                    for call in r.tool_calls() {
                        println!("[tool call] {}({})", call.function.name, call.function.arguments);
                    }
                }
                (r.usage, None)
            }
            Err(e) => return report(&e),
        }
    };
    let mut line = format!("[breakwater] {} ms", started.elapsed().as_millis());
    if let Some(f) = first_token {
        line.push_str(&format!(", first token {} ms", f.as_millis()));
    }
    if let Some(u) = usage {
        line.push_str(&format!(
            ", {} prompt + {} completion tokens",
            u.prompt_tokens, u.completion_tokens
        ));
    }
    eprintln!("{line}");
    ExitCode::SUCCESS
}
