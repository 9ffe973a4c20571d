//! A deterministic fake LLM with fault injection: the test and benchmark
//! upstream of the project. The engine decides (seeded) what each request
//! gets; [`Simulator`] serves it in-process, and the `breakwater-simulator`
//! crate serves it over HTTP in the OpenAI, Anthropic and Gemini formats.

mod config;
mod engine;
mod provider;

pub use config::{Fault, Faults, Latency, SimulatorConfig, SlowTail};
pub use engine::{InFlight, Plan, ScriptStep, SimEngine, SimStats, example_from_schema};
pub use provider::{ROUTE, Simulator, embed_text};

/// Waits `d` of simulated latency; zero does not wait at all. (A zero
/// `tokio::time::sleep` still waits for the timer's next tick, about a
/// millisecond, which made an "instant" simulator take 2 ms a request.)
pub async fn wait(d: std::time::Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}
