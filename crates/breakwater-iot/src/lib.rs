//! # breakwater-iot
//!
//! Natural-language commands for a home, on top of breakwater:
//! - [`registry`]: the devices (YAML), validated, versioned by content hash;
//! - [`understand`]: utterance → commands, through the model with a schema
//!   generated from the registry, or the rule-based parser when no model
//!   answers;
//! - [`command`]: the command type and its check against the registry.
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
