//! # breakwater-iot
//!
//! Natural-language commands for a home, on top of breakwater: "dim the
//! bedroom lights to 30%", "turn off everything downstairs and lock the front
//! door", "set the heating to 21 at 7am tomorrow".
//!
//! The path of an utterance:
//! 1. [`registry`]: the home's devices (YAML), validated with errors that
//!    name the path, versioned by a content hash;
//! 2. [`understand`]: the model is asked with a JSON Schema generated from
//!    the registry (`response_format: json_schema`), the answer validated,
//!    repaired once or explained, and re-checked in Rust against the registry
//!    ([`command::check_command`]); with no model reachable, the rule-based
//!    parser answers and the result says so. Model parses are cached per
//!    registry version;
//! 3. safety ([`status`], [`ratelimit`]): sensitive actions wait for the
//!    same user's confirmation within `confirm_timeout_s`; per-user limits;
//!    the text of an utterance can never widen what the registry allows;
//! 4. [`store`]: requests, commands, outbox, schedule and audit log, durable
//!    in SQLite or PostgreSQL; [`scheduler`] fires timed commands;
//! 5. [`dispatch`]: each command goes over MQTT (QoS 1) with its id, is
//!    acknowledged by the device or resent with the same id (devices
//!    deduplicate: exactly-once effect); a broker outage only delays;
//! 6. interfaces: [`IotService`] with its axum [`IotService::router`], and
//!    [`run_simulated_devices`] to run against.
//!
//! ## Mounting in the gateway
//!
//! ```no_run
//! # async fn demo(backend: breakwater_iot::understand::llm::DynBackend) -> Result<(), Box<dyn std::error::Error>> {
//! use breakwater_iot::{IotConfig, IotService};
//! let config: IotConfig = serde_saphyr::from_str("registry: examples/home.yaml\n")?; // the `iot:` section
//! let iot = IotService::start(config, Some(backend)).await?;
//! let app = axum::Router::new().merge(iot.router()); // /iot/commands, /iot/devices, /iot/audit
//! // … serve `app`; on shutdown:
//! iot.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## From the CLI
//!
//! `breakwater iot "…"`: [`IotService::submit`] then
//! [`IotService::wait_settled`]; `breakwater iot log`: [`store::Store::open`]
//! and [`store::Store::audit`] / [`store::Store::list_requests`] (no broker
//! needed); `breakwater iot devices --simulate`: [`run_simulated_devices`].
//!
//! ## The model
//!
//! [`LlmBackend`] is the seam: it is implemented for
//! `breakwater::provider::DynProvider` now, and the gateway implements it for
//! its resilient client (reporting target, attempts, degraded answers). The
//! parse → validate → repair-once loop lives in
//! [`understand::structured`], apart, to be swapped for the library's own.
#![warn(missing_docs)]

pub mod clock;
pub mod command;
pub mod config;
pub mod devices;
pub mod dispatch;
pub mod error;
pub mod eval;
pub mod http;
pub mod mqtt;
pub mod ratelimit;
pub mod registry;
pub mod scheduler;
pub mod service;
pub mod status;
pub mod store;
pub mod understand;

pub use config::IotConfig;
pub use devices::{DeviceFaults, SimulatedDevices, run_simulated_devices};
pub use error::IotError;
pub use service::{IotService, Submit};
pub use understand::llm::{LlmBackend, LlmReply};
