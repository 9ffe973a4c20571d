//! The IoT command system end to end, for trying it by hand: simulated
//! devices, the service, and its HTTP routes on a port.
//!
//! ```text
//! mosquitto -p 1884 &        # any broker
//! cargo run -p breakwater-iot --example demo -- --mqtt mqtt://127.0.0.1:1884 --listen 127.0.0.1:8099 \
//!     [--store sqlite:///tmp/iot-demo.db] [--base-url http://127.0.0.1:8033/v1 --model smollm2-135m]
//! curl -s localhost:8099/iot/commands -d '{"text":"dim the bedroom lights to 30%","user":"me","wait_ms":5000}'
//! curl -s localhost:8099/iot/devices
//! ```
//!
//! Without `--base-url` the rule-based parser understands everything.
//! Ctrl-C shuts down gracefully (unacknowledged commands stay in the outbox).

use breakwater::provider::openai::OpenAi;
use breakwater::provider::{DynProvider, HttpSettings};
use breakwater_iot::config::IotConfig;
use breakwater_iot::understand::llm::DynBackend;
use breakwater_iot::{DeviceFaults, IotService, run_simulated_devices};
use std::sync::Arc;

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = IotConfig::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/home.yaml"));
    cfg.store = "sqlite:///tmp/breakwater-iot-demo.db".into();
    let mut listen = "127.0.0.1:8099".to_string();
    let (mut base_url, mut model) = (None, "smollm2-135m".to_string());
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mqtt" => cfg.mqtt.url = val()?,
            "--listen" => listen = val()?,
            "--store" => cfg.store = val()?,
            "--registry" => cfg.registry = val()?.into(),
            "--base-url" => base_url = Some(val()?),
            "--model" => model = val()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    cfg.model = model;
    let backend: Option<DynBackend> = match base_url {
        Some(url) => {
            let p: DynProvider = Arc::new(OpenAi::new("local", &HttpSettings::new(&url))?);
            Some(Arc::new(p))
        }
        None => None,
    };
    let registry = Arc::new(breakwater_iot::registry::Registry::load(&cfg.registry)?);
    let devices = run_simulated_devices(registry, &cfg.mqtt, DeviceFaults::default()).await?;
    let iot = IotService::start(cfg, backend).await?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("IoT demo on http://{listen}/iot/commands (devices simulated)");
    axum::serve(listener, iot.router())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    iot.shutdown().await;
    devices.stop().await;
    Ok(())
}
