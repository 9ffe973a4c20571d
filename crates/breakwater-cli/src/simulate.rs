//! `breakwater simulate`: the HTTP simulator.

use breakwater::simulator::{Fault, Faults, SimulatorConfig};
use breakwater_simulator::SimServer;
use clap::Args;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Arguments of `breakwater simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Port to listen on.
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Simulator settings as YAML or JSON (the `simulator:` block of a
    /// provider); flags below override it.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Latency to the first token, ms.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Generation speed.
    #[arg(long)]
    tokens_per_s: Option<f64>,
    /// Seed of every random choice.
    #[arg(long)]
    seed: Option<u64>,
    /// A fault probability, e.g. `--fault server_error=0.1` (repeatable).
    /// Faults: rate_limited, server_error, unavailable, overloaded, auth,
    /// reset, hang, malformed, cut_stream, stall.
    #[arg(long = "fault", value_name = "NAME=P")]
    faults: Vec<String>,
    /// Require this API key on requests.
    #[arg(long)]
    api_key: Option<String>,
}

fn set_fault(f: &mut Faults, spec: &str) -> Result<(), String> {
    let (name, p) = spec
        .split_once('=')
        .ok_or_else(|| format!("--fault {spec}: expected NAME=PROBABILITY"))?;
    let p: f64 = p
        .parse()
        .map_err(|_| format!("--fault {spec}: `{p}` is not a number"))?;
    let fault: Fault = serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| format!("--fault {spec}: unknown fault `{name}`"))?;
    let slot = match fault {
        Fault::RateLimited => &mut f.rate_limited,
        Fault::ServerError => &mut f.server_error,
        Fault::Unavailable => &mut f.unavailable,
        Fault::Overloaded => &mut f.overloaded,
        Fault::Auth => &mut f.auth,
        Fault::Reset => &mut f.reset,
        Fault::Hang => &mut f.hang,
        Fault::Malformed => &mut f.malformed,
        Fault::CutStream => &mut f.cut_stream,
        Fault::Stall => &mut f.stall,
    };
    *slot = p;
    Ok(())
}

fn build_config(a: &SimulateArgs) -> Result<SimulatorConfig, String> {
    let mut cfg = match &a.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            serde_saphyr::from_str::<SimulatorConfig>(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => SimulatorConfig::default(),
    };
    if let Some(v) = a.latency_ms {
        cfg.latency_ms = v;
        cfg.latency = None;
    }
    if let Some(v) = a.tokens_per_s {
        cfg.tokens_per_s = v;
    }
    if let Some(v) = a.seed {
        cfg.seed = v;
    }
    for spec in &a.faults {
        set_fault(&mut cfg.faults, spec)?;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `breakwater simulate` until Ctrl-C.
pub async fn run(a: SimulateArgs) -> ExitCode {
    let cfg = match build_config(&a) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let addr: SocketAddr = match format!("{}:{}", a.host, a.port).parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: --host/--port: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match SimServer::bind(addr, cfg, a.api_key.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("breakwater simulator on {}", server.url());
    eprintln!("  OpenAI:    {}/chat/completions", server.openai_base());
    eprintln!("  Anthropic: {}/messages", server.anthropic_base());
    eprintln!("  Gemini:    {}/models/sim-1:generateContent", server.gemini_base());
    eprintln!("  counters:  {}/_sim/stats", server.url());
    eprintln!(
        "try: curl -s {}/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"sim-1\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'",
        server.openai_base()
    );
    let _ = tokio::signal::ctrl_c().await;
    server.stop();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_flags() {
        let mut f = Faults::default();
        set_fault(&mut f, "server_error=0.25").unwrap();
        assert_eq!(f.server_error, 0.25);
        assert!(set_fault(&mut f, "nope=0.1").unwrap_err().contains("unknown fault"));
        assert!(set_fault(&mut f, "hang").unwrap_err().contains("NAME=PROBABILITY"));
        assert!(set_fault(&mut f, "hang=x").unwrap_err().contains("not a number"));
    }
}
