//! A flaky primary (30% mixed faults), a healthy secondary, and what the
//! client did about it.
//!
//! ```text
//! cargo run -p breakwater --example failover
//! ```

use breakwater::client::{Client, ModelConfig, RequestOptions, TargetConfig};
use breakwater::policy::timeout::Timeouts;
use breakwater::simulator::{Faults, Simulator, SimulatorConfig};
use breakwater::types::ChatRequest;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let timeouts = Timeouts {
        first_token_ms: 1000,
        total_ms: 2000,
        ..Timeouts::default()
    };
    let flaky = SimulatorConfig {
        latency_ms: 5,
        tokens_per_s: 5000.0,
        faults: Faults {
            server_error: 0.1,
            rate_limited: 0.1,
            reset: 0.05,
            hang: 0.05,
            ..Default::default()
        },
        ..Default::default()
    };
    let healthy = SimulatorConfig {
        latency_ms: 5,
        tokens_per_s: 5000.0,
        ..Default::default()
    };
    let primary = Arc::new(Simulator::new("primary", flaky).with_timeouts(timeouts));
    let secondary = Arc::new(Simulator::new("secondary", healthy).with_timeouts(timeouts));
    let client = Client::builder()
        .provider(primary.clone())
        .provider(secondary.clone())
        .model(
            "fast",
            ModelConfig::new(vec![
                TargetConfig::new("primary", "sim-1"),
                TargetConfig::new("secondary", "sim-1"),
            ]),
        )
        .build()
        .expect("valid configuration");

    let n = 200;
    let (mut ok, mut failed, mut retries, mut failovers) = (0, 0, 0, 0);
    let started = std::time::Instant::now();
    for i in 0..n {
        let opts = RequestOptions {
            timeout: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        match client
            .chat(ChatRequest::user("fast", format!("question {i}")), opts)
            .await
        {
            Ok(out) => {
                ok += 1;
                retries += out.meta.retries();
                failovers += out.meta.failovers();
            }
            Err(f) => {
                failed += 1;
                eprintln!("failed: {f}");
            }
        }
    }
    println!(
        "{n} requests in {:.1}s: {ok} answered, {failed} failed",
        started.elapsed().as_secs_f64()
    );
    println!("retries: {retries}, failovers: {failovers}");
    println!(
        "upstream calls: primary {} ({:?}), secondary {}",
        primary.engine().stats().requests,
        primary.engine().stats().by_outcome,
        secondary.engine().stats().requests
    );
    for t in client.targets() {
        println!(
            "{:<18} breaker {:<9} ok {:>4} failed {:>4} errors {:?}",
            t.id,
            t.breaker.state.as_str(),
            t.stats.successes,
            t.stats.failures,
            t.stats.errors
        );
    }
    println!("{:?}", client.stats());
}
