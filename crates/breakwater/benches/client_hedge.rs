//! Hedged requests against a slow tail: p50/p99 with and without hedging.
//!
//! The upstream is the in-process simulator on tokio's paused clock, so the
//! latencies are the simulated ones, exact and repeatable, and the run takes
//! a fraction of a second of real time.
//!
//! ```text
//! cargo bench -p breakwater --bench client_hedge
//! ```

use breakwater::client::{Client, HedgeAfter, HedgeConfig, ModelConfig, RequestOptions, TargetConfig};
use breakwater::simulator::{Latency, Simulator, SimulatorConfig, SlowTail};
use breakwater::types::ChatRequest;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn slow_tail(seed: u64) -> SimulatorConfig {
    SimulatorConfig {
        latency: Some(Latency::Uniform { min_ms: 40, max_ms: 60 }),
        slow: Some(SlowTail { p: 0.1, factor: 10.0 }),
        tokens_per_s: 0.0,
        seed,
        ..Default::default()
    }
}

async fn run(hedge: Option<HedgeAfter>, n: usize) -> (Duration, Duration, u64) {
    let a = Arc::new(Simulator::new("a", slow_tail(1)));
    let b = Arc::new(Simulator::new("b", slow_tail(2)));
    let mut m = ModelConfig::new(vec![TargetConfig::new("a", "sim-1"), TargetConfig::new("b", "sim-1")]);
    m.hedge = HedgeConfig { after_ms: hedge };
    let client = Client::builder()
        .seed(5)
        .provider(a.clone())
        .provider(b.clone())
        .model("m", m)
        .build()
        .expect("config");
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        client
            .chat(ChatRequest::user("m", format!("q{i}")), RequestOptions::default())
            .await
            .expect("answer");
        lat.push(t0.elapsed());
    }
    lat.sort_unstable();
    let calls = a.engine().stats().requests + b.engine().stats().requests;
    (lat[n / 2], lat[n * 99 / 100], calls)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let n = 2000;
    println!("| hedging | p50 | p99 | upstream calls / request |");
    println!("|---|---|---|---|");
    for (name, h) in [
        ("off", None),
        ("after 100 ms", Some(HedgeAfter::Ms(100))),
        ("after p95", Some(HedgeAfter::P95)),
    ] {
        let (p50, p99, calls) = rt.block_on(run(h, n));
        println!(
            "| {name} | {} ms | {} ms | {:.3} |",
            p50.as_millis(),
            p99.as_millis(),
            calls as f64 / n as f64
        );
    }
}
