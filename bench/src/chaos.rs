//! The chaos scenarios: each starts simulators (and Redis or Mosquitto
//! where it needs them) and an in-process gateway on 127.0.0.1, drives a
//! bounded workload through it while a fault is injected, and tallies a
//! [`Row`].

use crate::client::{self, Req};
use crate::report::{Row, Sample};
use breakwater::simulator::{Faults, Latency, SimulatorConfig, SlowTail};
use breakwater_server::config;
use breakwater_server::serve::{self, Options, Running};
use breakwater_simulator::SimServer;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long and how hard each scenario runs.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Load phase of each scenario.
    pub duration: Duration,
    /// Concurrent clients.
    pub concurrency: usize,
    /// The deadline each request carries (`x-breakwater-timeout-ms`).
    pub deadline: Duration,
    /// Past deadline + slack a request counts as hung.
    pub slack: Duration,
    /// IoT commands sent through the broker restart.
    pub iot_commands: usize,
}

impl Params {
    /// The CI version: a few seconds per scenario.
    pub fn short() -> Params {
        Params {
            duration: Duration::from_secs(3),
            concurrency: 16,
            deadline: Duration::from_secs(4),
            slack: Duration::from_secs(2),
            iot_commands: 300,
        }
    }

    /// The full version.
    pub fn full() -> Params {
        Params {
            duration: Duration::from_secs(10),
            concurrency: 32,
            deadline: Duration::from_secs(5),
            slack: Duration::from_secs(2),
            iot_commands: 1000,
        }
    }
}

/// Every scenario's name, in running order.
pub const SCENARIOS: &[&str] = &[
    "flaky_primary",
    "primary_outage",
    "slow_tail_hedged",
    "rate_limit_storm",
    "stream_cut",
    "stream_stall",
    "malformed_chunk",
    "accepts_never_answers",
    "client_disconnect",
    "redis_restart",
    "mqtt_restart",
];

/// Runs one scenario by name.
pub async fn run(name: &str, p: Params) -> Result<Row, String> {
    match name {
        "flaky_primary" => flaky_primary(p).await,
        "primary_outage" => primary_outage(p).await,
        "slow_tail_hedged" => slow_tail(p).await,
        "rate_limit_storm" => rate_limit_storm(p).await,
        "stream_cut" => stream_fault(p, name, |f| f.cut_stream = 0.3).await,
        "stream_stall" => stream_fault(p, name, |f| f.stall = 0.3).await,
        "malformed_chunk" => stream_fault(p, name, |f| f.malformed = 0.3).await,
        "accepts_never_answers" => never_answers(p).await,
        "client_disconnect" => client_disconnect(p).await,
        "redis_restart" => redis_restart(p).await,
        "mqtt_restart" => mqtt_restart(p).await,
        other => Err(format!("unknown scenario {other}; known: {}", SCENARIOS.join(", "))),
    }
}

/// A simulator with `faults`, answering after `latency_ms`.
fn sim_config(latency_ms: u64, seed: u64, faults: Faults) -> SimulatorConfig {
    SimulatorConfig {
        latency_ms,
        tokens_per_s: 400.0,
        seed,
        faults,
        ..SimulatorConfig::default()
    }
}

/// An OpenAI-compatible provider at `base` with tight timeouts. A
/// complete (non-streamed) call is bounded by `total_ms` only, so it is well
/// under the request deadline to leave time for a failover.
pub fn provider(base: &str) -> Value {
    json!({
        "kind": "openai",
        "base_url": base,
        "api_key": "sk-bench-fake-key",
        "timeouts": {"connect_ms": 300, "first_token_ms": 1000, "idle_ms": 500, "total_ms": 1500},
    })
}

/// A model alias over `targets` (provider names, each serving `sim-1`),
/// priority order, no cache.
pub fn model(targets: &[&str]) -> Value {
    let t: Vec<Value> = targets
        .iter()
        .map(|p| json!({"provider": p, "model": "sim-1"}))
        .collect();
    json!({"targets": t, "cache": {"enabled": false}})
}

/// A whole gateway config: short backoffs, a quick breaker, quiet logs.
pub fn gateway_config(providers: Value, models: Value, deadline: Duration) -> Value {
    json!({
        "server": {"listen": "127.0.0.1:0", "request_timeout_ms": deadline.as_millis() as u64, "shutdown_grace_s": 1},
        "providers": providers,
        "models": models,
        "retry": {
            "max_attempts": 3,
            "backoff": {"base_ms": 20, "max_ms": 300, "jitter": "full"},
            "per_kind": {
                "rate_limited": {"max_attempts": 3, "base_ms": 100, "max_ms": 1000},
                "overloaded": {"max_attempts": 3, "base_ms": 100, "max_ms": 1000},
                "network": {"max_attempts": 3, "base_ms": 20, "max_ms": 300},
            },
            "max_retry_after_s": 2,
        },
        "breaker": {"consecutive_failures": 5, "open_s": 2, "max_open_s": 5},
        "health": {"probe_interval_s": 1},
        "logging": {"level": "error"},
    })
}

/// Starts a gateway in this process.
pub async fn start_gateway(cfg: &Value) -> Result<Running, String> {
    let c = config::parse(&cfg.to_string(), "bench", &|_| None).map_err(|e| e.to_string())?;
    serve::start(c, "bench".into(), &Options::default()).await
}

async fn sim(cfg: SimulatorConfig) -> Result<SimServer, String> {
    SimServer::start(cfg).await.map_err(|e| format!("simulator: {e}"))
}

/// Drives `p.concurrency` clients for `p.duration`, each sending the
/// requests `make(i)` one after another.
async fn drive<F>(gw: &Running, p: Params, make: F) -> Vec<Sample>
where
    F: Fn(&str, usize) -> Req + Send + Sync + 'static,
{
    let http = client::http();
    let url = format!("{}/v1/chat/completions", gw.url());
    let make = Arc::new(make);
    let end = Instant::now() + p.duration;
    let mut tasks = Vec::new();
    for w in 0..p.concurrency {
        let http = http.clone();
        let url = url.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut j = 0;
            while Instant::now() < end {
                out.push(client::send(&http, &make(&url, w * 1_000_000 + j)).await);
                j += 1;
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all
}

fn req(p: Params, url: &str, prompt: String, stream: bool) -> Req {
    Req {
        url: url.to_string(),
        model: "m".into(),
        prompt,
        stream,
        deadline: p.deadline,
        slack: p.slack,
        bearer: None,
        drop_after_events: None,
    }
}

async fn flaky_primary(p: Params) -> Result<Row, String> {
    let faults = Faults {
        rate_limited: 0.05,
        server_error: 0.1,
        unavailable: 0.05,
        reset: 0.05,
        malformed: 0.05,
        ..Default::default()
    };
    let a = sim(sim_config(20, 11, faults)).await?;
    let b = sim(sim_config(20, 12, Faults::default())).await?;
    let cfg = gateway_config(
        json!({"a": provider(&a.openai_base()), "b": provider(&b.openai_base())}),
        json!({"m": model(&["a", "b"])}),
        p.deadline,
    );
    let gw = start_gateway(&cfg).await?;
    let samples = drive(&gw, p, move |url, i| req(p, url, format!("flaky {i}"), i % 2 == 1)).await;
    gw.shutdown();
    let mut row = Row::from_samples("flaky_primary", &samples, a.stats().requests + b.stats().requests);
    row.note = format!(
        "primary: 30% faults (429, 500, 503, reset, malformed) on {} calls; secondary healthy ({} calls). Half the requests streamed.",
        a.stats().requests,
        b.stats().requests
    );
    Ok(row)
}

async fn primary_outage(p: Params) -> Result<Row, String> {
    // a port that was just free: connection refused
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        l.local_addr().map_err(|e| e.to_string())?
    };
    let b = sim(sim_config(20, 21, Faults::default())).await?;
    let cfg = gateway_config(
        json!({"a": provider(&format!("http://{dead}/v1")), "b": provider(&b.openai_base())}),
        json!({"m": model(&["a", "b"])}),
        p.deadline,
    );
    let gw = start_gateway(&cfg).await?;
    let samples = drive(&gw, p, move |url, i| req(p, url, format!("outage {i}"), i % 2 == 1)).await;
    gw.shutdown();
    let mut row = Row::from_samples("primary_outage", &samples, b.stats().requests);
    row.note = "primary refuses every connection (upstream calls counted at the secondary only; the breaker keeps the primary out).".into();
    Ok(row)
}

async fn slow_tail(p: Params) -> Result<Row, String> {
    let cfg_with = |seed| SimulatorConfig {
        latency: Some(Latency::Fixed { ms: 40 }),
        slow: Some(SlowTail { p: 0.1, factor: 10.0 }),
        ..sim_config(40, seed, Faults::default())
    };
    let a = sim(cfg_with(31)).await?;
    let b = sim(cfg_with(32)).await?;
    let mut m = model(&["a", "b"]);
    m["hedge"] = json!({"after_ms": 120});
    let cfg = gateway_config(
        json!({"a": provider(&a.openai_base()), "b": provider(&b.openai_base())}),
        json!({"m": m}),
        p.deadline,
    );
    let gw = start_gateway(&cfg).await?;
    let samples = drive(&gw, p, move |url, i| req(p, url, format!("slow {i}"), false)).await;
    gw.shutdown();
    let mut row = Row::from_samples("slow_tail_hedged", &samples, a.stats().requests + b.stats().requests);
    row.note = "10% of calls 10× slower (40 ms → 400 ms), hedge after 120 ms: p99 stays near 120 + 40 ms.".into();
    Ok(row)
}

async fn rate_limit_storm(p: Params) -> Result<Row, String> {
    let a = sim(SimulatorConfig {
        retry_after_s: 1,
        ..sim_config(
            10,
            41,
            Faults {
                rate_limited: 0.7,
                ..Default::default()
            },
        )
    })
    .await?;
    let cfg = gateway_config(
        json!({"a": provider(&a.openai_base())}),
        json!({"m": model(&["a"])}),
        p.deadline,
    );
    let gw = start_gateway(&cfg).await?;
    let samples = drive(&gw, p, move |url, i| req(p, url, format!("storm {i}"), i % 2 == 1)).await;
    gw.shutdown();
    let mut row = Row::from_samples("rate_limit_storm", &samples, a.stats().requests);
    row.note = "one target answering 70% of calls with 429 + Retry-After: 1; retries wait for it within the retry budget, the rest are rate_limited errors with Retry-After.".into();
    Ok(row)
}

async fn stream_fault(p: Params, name: &str, set: impl Fn(&mut Faults)) -> Result<Row, String> {
    let mut faults = Faults::default();
    set(&mut faults);
    let a = sim(SimulatorConfig {
        tokens_per_s: 100.0,
        reply_tokens: 12,
        cut_after_chunks: 3,
        ..sim_config(10, 51, faults)
    })
    .await?;
    let b = sim(sim_config(10, 52, Faults::default())).await?;
    let cfg = gateway_config(
        json!({"a": provider(&a.openai_base()), "b": provider(&b.openai_base())}),
        json!({"m": model(&["a", "b"])}),
        p.deadline,
    );
    let gw = start_gateway(&cfg).await?;
    let samples = drive(&gw, p, move |url, i| req(p, url, format!("stream {i}"), i % 4 != 0)).await;
    gw.shutdown();
    let mut row = Row::from_samples(name, &samples, a.stats().requests + b.stats().requests);
    let what = match name {
        "stream_cut" => "30% of primary streams cut after 3 chunks",
        "stream_stall" => "30% of primary streams stop sending after 3 chunks but stay open (idle timeout 500 ms)",
        _ => "30% of primary answers carry a malformed chunk / body",
    };
    row.note = format!(
        "{what}; healthy secondary; 3 in 4 requests streamed. A break after the first token must end in an error event, never a silent end."
    );
    Ok(row)
}

/// A TCP listener that accepts connections and never reads or answers.
async fn black_hole() -> Result<(String, Arc<AtomicU64>, CancellationToken), String> {
    let l = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let accepted = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let (acc, st) = (accepted.clone(), stop.clone());
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                _ = st.cancelled() => break,
                r = l.accept() => if let Ok((s, _)) = r {
                    acc.fetch_add(1, Ordering::Relaxed);
                    held.push(s);
                },
            }
        }
    });
    Ok((format!("http://{addr}/v1"), accepted, stop))
}

async fn never_answers(p: Params) -> Result<Row, String> {
    let (hole, accepted, stop) = black_hole().await?;
    let b = sim(sim_config(20, 61, Faults::default())).await?;
    let cfg = gateway_config(
        json!({"a": provider(&hole), "b": provider(&b.openai_base())}),
        json!({"m": model(&["a", "b"])}),
        p.deadline,
    );
    let gw = start_gateway(&cfg).await?;
    let samples = drive(&gw, p, move |url, i| req(p, url, format!("hole {i}"), i % 2 == 1)).await;
    gw.shutdown();
    stop.cancel();
    let hole_calls = accepted.load(Ordering::Relaxed);
    let mut row = Row::from_samples("accepts_never_answers", &samples, hole_calls + b.stats().requests);
    row.note = format!(
        "primary accepts TCP connections ({hole_calls} accepted) and never reads or answers; first-token timeout 1 s, then the secondary; the breaker keeps it out."
    );
    Ok(row)
}

async fn client_disconnect(p: Params) -> Result<Row, String> {
    let a = sim(SimulatorConfig {
        tokens_per_s: 20.0,
        reply_tokens: 60,
        ..sim_config(10, 71, Faults::default())
    })
    .await?;
    let cfg = gateway_config(
        json!({"a": provider(&a.openai_base())}),
        json!({"m": model(&["a"])}),
        p.deadline,
    );
    // the streams last 3 s: longer than the usual total timeout
    let mut cfg = cfg;
    cfg["providers"]["a"]["timeouts"]["total_ms"] = json!(10_000);
    let gw = start_gateway(&cfg).await?;
    let samples = drive(&gw, p, move |url, i| Req {
        drop_after_events: Some(3),
        ..req(p, url, format!("leave {i}"), true)
    })
    .await;
    // every upstream stream the gateway opened must be closed soon after its client left
    let give_up = Instant::now() + Duration::from_secs(3);
    while a.stats().in_flight > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = a.stats();
    gw.shutdown();
    let mut row = Row::from_samples("client_disconnect", &samples, st.requests);
    if st.in_flight > 0 {
        row.failures.push(format!(
            "client_disconnect: {} upstream streams still open 3 s after their clients left",
            st.in_flight
        ));
    }
    row.note = format!(
        "clients drop each 3-second stream after 3 events; upstream streams started {}, cancelled {}, still open afterwards {} (must be 0). Successes = planned disconnects.",
        st.streams_started, st.streams_cancelled, st.in_flight
    );
    Ok(row)
}

async fn redis_restart(p: Params) -> Result<Row, String> {
    let mut redis = breakwater_testkit::RedisServer::start()
        .await
        .map_err(|e| format!("redis-server: {e}"))?;
    let a = sim(sim_config(20, 81, Faults::default())).await?;
    let mut m = model(&["a"]);
    m["cache"] = json!({"enabled": true, "ttl_s": 60});
    let mut cfg = gateway_config(json!({"a": provider(&a.openai_base())}), json!({"m": m}), p.deadline);
    cfg["redis"] = json!({"url": redis.url(), "timeout_ms": 50, "on_failure": "open"});
    cfg["keys"] = json!([{"name": "bench", "key": "bw-bench-fake-key", "models": ["*"], "limits": {"rpm": 1_000_000}}]);
    let gw = start_gateway(&cfg).await?;
    let load = drive(&gw, p, move |url, i| Req {
        bearer: Some("bw-bench-fake-key".into()),
        // a few repeated prompts: cache hits from memory and Redis
        ..req(p, url, format!("redis {}", i % 50), i % 3 == 0)
    });
    let chaos = async {
        tokio::time::sleep(p.duration / 4).await;
        redis.kill();
        tokio::time::sleep(p.duration / 3).await;
        redis.restart().await
    };
    let (samples, restarted) = tokio::join!(load, chaos);
    gw.shutdown();
    let mut row = Row::from_samples("redis_restart", &samples, a.stats().requests);
    if let Err(e) = restarted {
        row.failures
            .push(format!("redis_restart: could not restart redis-server: {e}"));
    }
    row.note = format!(
        "Redis (L2 cache, key rate limits; on_failure: open) SIGKILLed a quarter into the run, restarted {:.1} s later; requests go on.",
        (p.duration / 3).as_secs_f64()
    );
    Ok(row)
}

async fn mqtt_restart(p: Params) -> Result<Row, String> {
    crate::iot::broker_restart(p.iot_commands).await
}
