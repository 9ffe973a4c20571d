//! Test support: real `redis-server` and `mosquitto` processes on free
//! loopback ports, killed when dropped (and killable mid-test to inject
//! faults), plus free-port helpers.
//!
//! Tests never use the machine's shared services: each test starts its own.

#![warn(missing_docs)]

mod process;
mod raw;

pub use process::{Mosquitto, RedisCluster, RedisServer, free_port, wait_for_port};
pub use raw::RawServer;
