//! End-to-end: the official OpenAI and Anthropic Python SDKs as clients of a
//! gateway started in-process, in front of HTTP simulators that inject
//! faults. The SDKs' own retries are off, so every success is the gateway's
//! retries and failover. The scripts are `tests/sdk/test_*.py`; they run
//! with the venv `scripts/test-deps` makes (missing: a failure under CI, a
//! skip elsewhere).

mod common;

use breakwater::simulator::{Faults, SimulatorConfig};
use breakwater_simulator::SimServer;
use common::{Gateway, require, run_bounded, venv_python};
use std::process::Command;
use std::time::Duration;

const KEY: &str = "sk-e2e-test-key";
const TINY_KEY: &str = "sk-e2e-tiny-key";

fn sim_config(faults: Faults) -> SimulatorConfig {
    SimulatorConfig {
        latency_ms: 2,
        tokens_per_s: 5000.0,
        faults,
        ..SimulatorConfig::default()
    }
}

/// Three simulators: `flaky` (30% 5xx/529), `healthy`, and `down` (every
/// call 500), and a gateway config with keys, retries and failover.
struct Upstreams {
    flaky: SimServer,
    healthy: SimServer,
    down: SimServer,
}

impl Upstreams {
    async fn start() -> Upstreams {
        let flaky = SimServer::start(sim_config(Faults {
            server_error: 0.15,
            // 529 on the Anthropic route, 503 on the OpenAI one.
            overloaded: 0.15,
            ..Faults::default()
        }))
        .await
        .expect("flaky simulator");
        let healthy = SimServer::start(sim_config(Faults::default()))
            .await
            .expect("healthy simulator");
        let down = SimServer::start(sim_config(Faults {
            server_error: 1.0,
            ..Faults::default()
        }))
        .await
        .expect("down simulator");
        Upstreams { flaky, healthy, down }
    }

    fn config(&self) -> String {
        let (flaky, healthy, down) = (self.flaky.url(), self.healthy.url(), self.down.url());
        format!(
            r#"
server: {{ listen: "127.0.0.1:0", shutdown_grace_s: 1 }}
providers:
  flaky:          {{ kind: openai,    base_url: "{flaky}/v1",   api_key: "sk-fake-upstream" }}
  healthy:        {{ kind: openai,    base_url: "{healthy}/v1", api_key: "sk-fake-upstream" }}
  down:           {{ kind: openai,    base_url: "{down}/v1",    api_key: "sk-fake-upstream" }}
  flaky-claude:   {{ kind: anthropic, base_url: "{flaky}/v1",   api_key: "sk-ant-fake-upstream" }}
  healthy-claude: {{ kind: anthropic, base_url: "{healthy}/v1", api_key: "sk-ant-fake-upstream" }}
  down-claude:    {{ kind: anthropic, base_url: "{down}/v1",    api_key: "sk-ant-fake-upstream" }}
models:
  fast:
    targets: [{{ provider: flaky, model: sim-1 }}, {{ provider: healthy, model: sim-1 }}]
    cache: {{ enabled: false }}
  embed:
    targets: [{{ provider: flaky, model: sim-embed }}, {{ provider: healthy, model: sim-embed }}]
    cache: {{ enabled: false }}
  down-first:
    targets: [{{ provider: down, model: sim-1 }}, {{ provider: healthy, model: sim-1 }}]
    cache: {{ enabled: false }}
  claude:
    targets: [{{ provider: flaky-claude, model: claude-sim }}, {{ provider: healthy-claude, model: claude-sim }}]
    cache: {{ enabled: false }}
  claude-down-first:
    targets: [{{ provider: down-claude, model: claude-sim }}, {{ provider: healthy-claude, model: claude-sim }}]
    cache: {{ enabled: false }}
retry:
  max_attempts: 3
  backoff: {{ base_ms: 5, max_ms: 20, jitter: full }}
  budget: {{ ratio: 1.0, min_per_s: 100, window_s: 10 }}
  per_kind:
    overloaded:   {{ max_attempts: 3, base_ms: 5, max_ms: 20 }}
    rate_limited: {{ max_attempts: 2, base_ms: 5, max_ms: 20 }}
    network:      {{ max_attempts: 3, base_ms: 5, max_ms: 20 }}
coalesce: {{ enabled: false }}
keys:
  - {{ name: e2e,  key: "{KEY}",      models: ["*"] }}
  - {{ name: tiny, key: "{TINY_KEY}", models: ["*"], limits: {{ rpm: 1 }} }}
logging: {{ level: warn }}
"#
        )
    }

    /// The faults must have happened (else the resilience part proved
    /// nothing) and the healthy target must have answered.
    fn assert_exercised(&self) {
        let flaky = self.flaky.stats();
        let injected: u64 = flaky
            .by_outcome
            .iter()
            .filter(|(k, _)| k.as_str() != "ok")
            .map(|(_, v)| *v)
            .sum();
        assert!(injected > 0, "the flaky simulator injected no fault: {flaky:?}");
        assert!(self.down.stats().requests > 0, "the down target was never tried");
        assert!(self.healthy.stats().requests > 0, "the healthy target never answered");
        eprintln!(
            "flaky: {:?}; healthy: {} requests; down: {} requests",
            flaky.by_outcome,
            self.healthy.stats().requests,
            self.down.stats().requests
        );
    }
}

async fn run_script(test: &str, script: &str, modules: &[&str]) {
    let Some(python) = require(test, venv_python(modules)) else {
        return;
    };
    let ups = Upstreams::start().await;
    let gw = Gateway::start(&ups.config()).await;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let mut cmd = Command::new(python);
    cmd.arg(&path)
        .env("GATEWAY_URL", gw.url())
        .env("GATEWAY_KEY", KEY)
        .env("GATEWAY_TINY_KEY", TINY_KEY)
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
    ] {
        cmd.env_remove(var);
    }
    let (ok, output) = run_bounded(cmd, Duration::from_secs(75)).await;
    assert!(ok, "{script} failed:\n{output}");
    eprintln!("{output}");
    ups.assert_exercised();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_chat_stream_embeddings_errors_and_invisible_failover() {
    run_script("openai_sdk", "test_openai.py", &["openai"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_sdk_messages_stream_errors_and_invisible_failover() {
    run_script("anthropic_sdk", "test_anthropic.py", &["anthropic"]).await;
}
