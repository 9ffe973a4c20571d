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
