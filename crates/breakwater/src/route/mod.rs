//! Routing: which target of a model alias answers, in which order the
//! others are tried, and what is known about each target's health.

pub mod stats;
pub mod strategy;

pub use stats::{TargetStats, TargetStatsSnapshot};
pub use strategy::{Candidate, Strategy, order};
