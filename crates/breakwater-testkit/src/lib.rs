//! Test support: real `redis-server` and `mosquitto` processes on free
//! loopback ports, killed when dropped (and killable mid-test to inject
//! faults), plus free-port helpers.
//!
//! [`PgDatabase`] gives each test a fresh database on the local PostgreSQL
//! server and drops it afterwards.
//!
//! Tests never use the machine's shared services: each test starts its own.

#![warn(missing_docs)]

mod postgres;
mod process;
mod raw;

pub use postgres::{PG_HOST, PG_PORT, PgDatabase};
pub use process::{Mosquitto, RedisCluster, RedisServer, free_port, wait_for_port};
pub use raw::RawServer;
