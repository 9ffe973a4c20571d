//! Simulator settings (`providers.*.simulator` in the config).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How long until the first token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum Latency {
    /// Always the same.
    Fixed {
        /// Milliseconds.
        ms: u64,
    },
    /// Uniform between two bounds.
    Uniform {
        /// Lower bound, ms.
        min_ms: u64,
        /// Upper bound, ms.
        max_ms: u64,
    },
    /// Log-normal around a median (a realistic long tail).
    Lognormal {
        /// Median, ms.
        median_ms: u64,
        /// Spread of the underlying normal.
        sigma: f64,
    },
}

/// Probabilities (0–1) of each fault, drawn independently per request in
/// the order listed; the rest of the mass answers normally.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// 429 with `Retry-After`.
    pub rate_limited: f64,
    /// 500.
    pub server_error: f64,
    /// 503 service unavailable.
    pub unavailable: f64,
    /// Overloaded: 529 on the Anthropic route, 503 elsewhere.
    pub overloaded: f64,
    /// 401 (invalid key).
    pub auth: f64,
    /// The connection is reset before any answer.
    pub reset: f64,
    /// The request is accepted and never answered.
    pub hang: f64,
    /// The answer is not valid JSON (a bad chunk, for streams).
    pub malformed: f64,
    /// The stream is cut after `cut_after_chunks` chunks.
    pub cut_stream: f64,
    /// The stream stops sending after `cut_after_chunks` chunks, but stays open.
    pub stall: f64,
}

impl Faults {
    /// The faults and their probabilities, in drawing order.
    pub fn table(&self) -> [(Fault, f64); 10] {
        [
            (Fault::RateLimited, self.rate_limited),
            (Fault::ServerError, self.server_error),
            (Fault::Unavailable, self.unavailable),
            (Fault::Overloaded, self.overloaded),
            (Fault::Auth, self.auth),
            (Fault::Reset, self.reset),
            (Fault::Hang, self.hang),
            (Fault::Malformed, self.malformed),
            (Fault::CutStream, self.cut_stream),
            (Fault::Stall, self.stall),
        ]
    }

    /// Whether every probability is within 0–1 and they sum to at most 1.
    pub fn validate(&self) -> Result<(), String> {
        let mut sum = 0.0;
        for (f, p) in self.table() {
            if !(0.0..=1.0).contains(&p) || p.is_nan() {
                return Err(format!("faults.{} must be between 0 and 1, not {p}", f.as_str()));
            }
            sum += p;
        }
        if sum > 1.0 + 1e-9 {
            return Err(format!("fault probabilities add up to {sum:.3}, more than 1"));
        }
        Ok(())
    }
}

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// 429 with `Retry-After`.
    RateLimited,
    /// 500.
    ServerError,
    /// 503.
    Unavailable,
    /// 529 / 503 overloaded.
    Overloaded,
    /// 401.
    Auth,
    /// Connection reset.
    Reset,
    /// Never answers.
    Hang,
    /// Invalid JSON.
    Malformed,
    /// Stream cut mid-way.
    CutStream,
    /// Stream stalls mid-way.
    Stall,
}

impl Fault {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::RateLimited => "rate_limited",
            Fault::ServerError => "server_error",
            Fault::Unavailable => "unavailable",
            Fault::Overloaded => "overloaded",
            Fault::Auth => "auth",
            Fault::Reset => "reset",
            Fault::Hang => "hang",
            Fault::Malformed => "malformed",
            Fault::CutStream => "cut_stream",
            Fault::Stall => "stall",
        }
    }
}

/// A share of requests that are much slower (a slow tail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowTail {
    /// Fraction of requests, 0–1.
    pub p: f64,
    /// How many times slower.
    pub factor: f64,
}

/// The simulator's behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    /// Time to first token, ms (a fixed latency unless `latency` is given).
    #[serde(default = "d_latency")]
    pub latency_ms: u64,
    /// A latency distribution, overriding `latency_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// A slow tail on top of the latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow: Option<SlowTail>,
    /// Generation speed after the first token.
    #[serde(default = "d_tps")]
    pub tokens_per_s: f64,
    /// Seed of every random choice (faults, latency, text).
    #[serde(default = "d_seed")]
    pub seed: u64,
    /// Fault probabilities.
    #[serde(default)]
    pub faults: Faults,
    /// The `Retry-After` of injected 429s, seconds.
    #[serde(default = "d_retry_after")]
    pub retry_after_s: u64,
    /// Chunks sent before a cut or stall.
    #[serde(default = "d_cut_after")]
    pub cut_after_chunks: u32,
    /// Tokens in a reply when `max_tokens` does not cap it.
    #[serde(default = "d_reply_tokens")]
    pub reply_tokens: u32,
    /// A fixed reply text instead of generated words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// Largest prompt accepted, in estimated tokens (over it: 400
    /// context_length_exceeded).
    #[serde(default = "d_context")]
    pub context_tokens: u32,
    /// Per-route overrides (`openai`, `anthropic`, `gemini`) of the HTTP
    /// simulator.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, SimulatorConfig>,
}

fn d_latency() -> u64 {
    50
}
fn d_tps() -> f64 {
    200.0
}
fn d_seed() -> u64 {
    1
}
fn d_retry_after() -> u64 {
    1
}
fn d_cut_after() -> u32 {
    3
}
fn d_reply_tokens() -> u32 {
    16
}
fn d_context() -> u32 {
    128_000
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            latency_ms: d_latency(),
            latency: None,
            slow: None,
            tokens_per_s: d_tps(),
            seed: d_seed(),
            faults: Faults::default(),
            retry_after_s: d_retry_after(),
            cut_after_chunks: d_cut_after(),
            reply_tokens: d_reply_tokens(),
            reply: None,
            context_tokens: d_context(),
            routes: BTreeMap::new(),
        }
    }
}

impl SimulatorConfig {
    /// A simulator that answers instantly and never fails (for tests).
    pub fn instant() -> Self {
        SimulatorConfig {
            latency_ms: 0,
            tokens_per_s: 0.0,
            ..Default::default()
        }
    }

    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        self.faults.validate()?;
        if !(self.tokens_per_s >= 0.0 && self.tokens_per_s.is_finite()) {
            return Err("tokens_per_s must be a non-negative number".into());
        }
        match &self.latency {
            Some(Latency::Uniform { min_ms, max_ms }) if min_ms > max_ms => {
                return Err("latency.min_ms must not exceed latency.max_ms".into());
            }
            Some(Latency::Lognormal { sigma, .. }) if !(*sigma >= 0.0 && sigma.is_finite()) => {
                return Err("latency.sigma must be a non-negative number".into());
            }
            _ => {}
        }
        if let Some(s) = &self.slow
            && !((0.0..=1.0).contains(&s.p) && s.factor >= 1.0 && s.factor.is_finite())
        {
            return Err("slow.p must be within 0–1 and slow.factor at least 1".into());
        }
        for (name, r) in &self.routes {
            if !matches!(name.as_str(), "openai" | "anthropic" | "gemini") {
                return Err(format!(
                    "routes.{name}: unknown route (use openai, anthropic or gemini)"
                ));
            }
            if !r.routes.is_empty() {
                return Err(format!("routes.{name}.routes: routes do not nest"));
            }
            r.validate().map_err(|e| format!("routes.{name}.{e}"))?;
        }
        Ok(())
    }

    /// The settings for a route.
    pub fn for_route(&self, route: &str) -> &SimulatorConfig {
        self.routes.get(route).unwrap_or(self)
    }
}
