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
//! - [`policy`]: timeouts and deadlines (and the other resilience policies);
//! - [`cache`]: response caching, including the semantic (embedding) cache;
//! - [`simulator`]: a deterministic fake LLM with fault injection.

#![warn(missing_docs)]

pub mod cache;
pub mod error;
pub mod policy;
pub mod provider;
pub mod redis_store;
pub mod secret;
pub mod simulator;
pub mod sse;
pub mod types;
pub mod wire;

pub use error::{Error, ErrorKind, Result};
pub use secret::Secret;
