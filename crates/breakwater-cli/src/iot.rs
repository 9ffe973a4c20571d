//! `breakwater iot`: say something to the home, read the log, or run
//! simulated devices.

use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `breakwater iot`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IotArgs {
    #[command(subcommand)]
    cmd: Option<IotCmd>,
    /// What to do, in words ("dim the bedroom lights to 30%").
    text: Vec<String>,
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// Who is speaking.
    #[arg(long, default_value = "cli", global = true)]
    user: String,
    /// The virtual key (default: $BREAKWATER_KEY).
    #[arg(long, env = "BREAKWATER_KEY", global = true)]
    key: Option<String>,
}

#[derive(Subcommand, Debug)]
enum IotCmd {
    /// Confirm a pending sensitive command.
    Confirm {
        /// The command request id.
        id: String,
    },
    /// The latest commands and their outcomes.
    Log {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Devices and their live state; with --simulate, run simulated devices.
    Devices {
        /// Run device agents for the registry of the config's `iot:` section.
        #[arg(long)]
        simulate: bool,
        /// The gateway config (for --simulate).
        #[arg(long, short, default_value = "breakwater.yaml")]
        config: PathBuf,
        /// Probability of dropping a command (for --simulate).
        #[arg(long, default_value_t = 0.0)]
        drop: f64,
        /// Probability of a duplicate delivery (for --simulate).
        #[arg(long, default_value_t = 0.0)]
        duplicate: f64,
    },
}

fn client(key: &Option<String>) -> Result<reqwest::Client, String> {
    let mut h = reqwest::header::HeaderMap::new();
    if let Some(k) = key {
        let v = reqwest::header::HeaderValue::from_str(&format!("Bearer {k}"))
            .map_err(|_| "the key has invalid characters")?;
        h.insert(reqwest::header::AUTHORIZATION, v);
    }
    reqwest::Client::builder()
        .default_headers(h)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())
}

async fn call(req: reqwest::RequestBuilder) -> Result<serde_json::Value, String> {
    let resp = req.send().await.map_err(|e| format!("cannot reach the gateway: {e}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.map_err(|e| format!("unreadable answer: {e}"))?;
    if !status.is_success() {
        let msg = body
            .get("error")
            .and_then(|e| e.get("message"))
            .and_then(|m| m.as_str())
            .unwrap_or("error");
        return Err(format!("HTTP {status}: {msg}"));
    }
    Ok(body)
}

fn print_record(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs `breakwater iot`.
pub async fn run(a: IotArgs) -> ExitCode {
    let http = match client(&a.key) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let base = a.url.trim_end_matches('/').to_string();
    let result = match a.cmd {
        None => {
            if a.text.is_empty() {
                eprintln!("error: say something, e.g. breakwater iot \"turn off the kitchen lights\"");
                return ExitCode::from(2);
            }
            let body = serde_json::json!({"text": a.text.join(" "), "user": a.user, "wait_ms": 5000});
            call(http.post(format!("{base}/iot/commands")).json(&body))
                .await
                .map(|v| print_record(&v))
        }
        Some(IotCmd::Confirm { id }) => {
            let body = serde_json::json!({"user": a.user});
            call(http.post(format!("{base}/iot/commands/{id}/confirm")).json(&body))
                .await
                .map(|v| print_record(&v))
        }
        Some(IotCmd::Log { limit }) => call(http.get(format!("{base}/iot/commands?limit={limit}")))
            .await
            .map(|v| print_record(&v)),
        Some(IotCmd::Devices { simulate: false, .. }) => call(http.get(format!("{base}/iot/devices")))
            .await
            .map(|v| print_record(&v)),
        Some(IotCmd::Devices {
            simulate: true,
            config,
            drop,
            duplicate,
        }) => simulate(&config, drop, duplicate).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn simulate(config: &std::path::Path, drop: f64, duplicate: f64) -> Result<(), String> {
    let cfg = breakwater_server::config::load(config).map_err(|e| e.to_string())?;
    let iot = cfg
        .iot
        .ok_or_else(|| format!("{}: no `iot:` section", config.display()))?;
    let registry = breakwater_iot::registry::Registry::load(&iot.registry).map_err(|e| e.to_string())?;
    let faults = breakwater_iot::DeviceFaults {
        drop,
        duplicate,
        ..Default::default()
    };
    let devices = breakwater_iot::run_simulated_devices(std::sync::Arc::new(registry), &iot.mqtt, faults).await?;
    eprintln!(
        "simulated devices listening on {} under {}/… (Ctrl-C to stop)",
        iot.mqtt.url, iot.mqtt.topic_prefix
    );
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("applied {} commands", devices.total_applied());
    devices.stop().await;
    Ok(())
}
