//! # breakwater
//!
//! A resilient LLM gateway library: one client in front of OpenAI,
//! Anthropic, Gemini and any OpenAI-compatible server, that keeps working
//! through rate limits, 5xx storms, hung streams and outages.
//!
//! The modules follow the path of a request:
//! - [`types`]: the canonical (OpenAI-shaped) request, response and stream chunk;
//! - [`error`]: the [`error::ErrorKind`] taxonomy and classification of upstream failures;
//! - [`sse`]: an incremental server-sent-events parser and writer;
//! - [`provider`]: the [`provider::Provider`] trait and its adapters;
//! - [`wire`]: pure translations between the canonical types and the
//!   Anthropic and Gemini wire formats, both directions;
//! - [`cache`]: the exact-match response cache (memory → Redis), invalidation, stale-if-error,
//!   and the semantic (embedding) cache;
//! - [`coalesce`]: identical in-flight requests share one upstream call;
//! - [`idempotency`]: `Idempotency-Key` replay, across instances through Redis;
//! - [`policy`]: timeouts and deadlines (and the other resilience policies);
//! - [`simulator`]: a deterministic fake LLM with fault injection.
//!
//! ```
//! use breakwater::provider::{CallOptions, Provider};
//! use breakwater::simulator::{Simulator, SimulatorConfig};
//! use breakwater::types::ChatRequest;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> breakwater::Result<()> {
//! // Any provider works the same way; the simulator needs no key.
//! let sim = Simulator::new("sim", SimulatorConfig::instant());
//! let reply = sim.chat(&ChatRequest::user("sim-1", "Hello"), &CallOptions::default()).await?;
//! assert!(!reply.text().is_empty());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod cache;
pub mod client;
pub mod coalesce;
pub mod error;
pub mod idempotency;
pub mod mode;
pub mod policy;
pub mod prehashed;
pub mod provider;
pub mod redis_store;
pub mod route;
pub mod runtime;
pub mod secret;
pub mod simulator;
pub mod sse;
pub mod structured;
pub mod types;
pub mod wire;

pub use error::{Error, ErrorKind, Result};
pub use secret::Secret;
