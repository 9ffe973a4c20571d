//! Outcomes of client requests, their tally per scenario, and the markdown
//! table.

use std::collections::BTreeMap;
use std::time::Duration;

/// How one client request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A complete answer (or a stream that ended with `[DONE]`).
    Success,
    /// A proper error (JSON body or stream event) naming its kind.
    Explained(String),
    /// Anything else: a bare status, a broken connection, a stream that
    /// ended silently.
    Unexplained(String),
    /// No end within the request's deadline plus slack.
    Hang,
    /// The client went away on purpose (the disconnect scenario).
    Abandoned,
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took.
    pub latency: Duration,
}

/// A scenario's line of the report.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Scenario name.
    pub name: String,
    /// Client requests (or IoT commands).
    pub requests: u64,
    /// Client-visible successes.
    pub successes: u64,
    /// Explainable errors.
    pub explained: u64,
    /// Errors without a kind (an invariant failure).
    pub unexplained: u64,
    /// Requests past their deadline + slack (must be 0).
    pub hangs: u64,
    /// Upstream calls (all simulators together).
    pub upstream_calls: u64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Lost IoT commands (`None` when the scenario has none).
    pub lost: Option<u64>,
    /// Duplicated IoT commands.
    pub duplicated: Option<u64>,
    /// Error kinds seen, with counts.
    pub kinds: BTreeMap<String, u64>,
    /// Further invariant failures found by the scenario itself.
    pub failures: Vec<String>,
    /// A note on what the scenario checks.
    pub note: String,
    /// The scenario measures no request latency.
    pub no_latency: bool,
}

/// The `q`-quantile (0–1) of sorted durations.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Row {
    /// A row tallied from samples.
    pub fn from_samples(name: &str, samples: &[Sample], upstream_calls: u64) -> Row {
        let mut row = Row {
            name: name.to_string(),
            requests: samples.len() as u64,
            upstream_calls,
            ..Default::default()
        };
        let mut lat: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        lat.sort();
        row.p50 = quantile(&lat, 0.5);
        row.p99 = quantile(&lat, 0.99);
        for s in samples {
            match &s.outcome {
                Outcome::Success | Outcome::Abandoned => row.successes += 1,
                Outcome::Explained(k) => {
                    row.explained += 1;
                    *row.kinds.entry(k.clone()).or_default() += 1;
                }
                Outcome::Unexplained(why) => {
                    row.unexplained += 1;
                    *row.kinds.entry(format!("UNEXPLAINED {why}")).or_default() += 1;
                }
                Outcome::Hang => row.hangs += 1,
            }
        }
        row
    }

    /// Upstream calls per client request.
    pub fn amplification(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.upstream_calls as f64 / self.requests as f64
        }
    }

    /// The invariants this row breaks (empty: it passed).
    pub fn violations(&self) -> Vec<String> {
        let mut v = self.failures.clone();
        if self.hangs > 0 {
            v.push(format!("{}: {} hung requests", self.name, self.hangs));
        }
        if self.unexplained > 0 {
            v.push(format!("{}: {} errors without a kind", self.name, self.unexplained));
        }
        if let Some(n) = self.lost.filter(|n| *n > 0) {
            v.push(format!("{}: {n} IoT commands lost", self.name));
        }
        if let Some(n) = self.duplicated.filter(|n| *n > 0) {
            v.push(format!("{}: {n} IoT commands duplicated", self.name));
        }
        v
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "–".to_string(), |n| n.to_string())
}

/// The chaos table in markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| scenario | requests | successes | explainable errors | hangs | unexplained | upstream amplification | p50 ms | p99 ms | IoT lost | IoT duplicated | pass |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} |\n",
            r.name,
            r.requests,
            r.successes,
            r.explained,
            r.hangs,
            r.unexplained,
            r.amplification(),
            if r.no_latency { "–".into() } else { ms(r.p50) },
            if r.no_latency { "–".into() } else { ms(r.p99) },
            opt(r.lost),
            opt(r.duplicated),
            if r.violations().is_empty() { "yes" } else { "**NO**" },
        ));
    }
    s.push_str("\nError kinds and notes:\n\n");
    for r in rows {
        let kinds: Vec<String> = r.kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
        s.push_str(&format!(
            "- **{}** — {}{}\n",
            r.name,
            r.note,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" Errors: {}.", kinds.join(", "))
            }
        ));
    }
    s
}
