//! The breakwater gateway: an OpenAI- and Anthropic-compatible HTTP server
//! around the breakwater client. It adds HTTP, authentication, configuration
//! and observability; every resilience decision is the library's.
//!
//! - [`config`]: the configuration file (schema, `${ENV}`, validation);
//! - [`serve`]: the accept loop, graceful shutdown, reloads;
//! - [`routes`]: `/v1/chat/completions`, `/v1/embeddings`, `/v1/models`,
//!   `/v1/messages`, health, metrics and admin routes;
//! - [`auth`]: virtual keys with per-key limits and budgets;
//! - [`live`] and [`metrics`]: live statistics and Prometheus metrics;
//! - [`dashboard`]: the live dashboard (`/dashboard`, server-sent snapshots).

#![warn(missing_docs)]
// Handlers return early with ready responses as errors: idiomatic in axum.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod config;
pub mod controls;
pub mod dashboard;
pub mod embed_batch;
pub mod errors;
pub mod iot;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod periodic;
pub mod routes;
pub mod serve;
pub mod state;
pub mod zero_config;
