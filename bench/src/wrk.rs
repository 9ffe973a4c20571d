//! The load generator of the load runs: `wrk` (a C program, so the load
//! generator costs the shared cores little, and the same tool peers were
//! measured with), driven by a Lua script that POSTs chat requests and
//! prints its results as JSON.
//!
//! `scripts/bench-deps` installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Lua script: request bodies (a new prompt per request unless the run
/// wants one cached prompt), optional pacing, and a JSON summary.
const SCRIPT: &str = r#"
local model = os.getenv("BW_MODEL") or "sim-1"
local same = os.getenv("BW_SAME") == "1"
local temp0 = os.getenv("BW_TEMP0") == "1"
local pace_ms = tonumber(os.getenv("BW_PACE_MS") or "0")
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  n = 0
  bad = 0
  math.randomseed(id * 7919 + 17)
end

request = function()
  n = n + 1
  local prompt = same and "the cached question" or string.format("bench %d %d", id, n)
  local extra = temp0 and '"temperature":0,' or ''
  local body = string.format('{"model":"%s",%s"messages":[{"role":"user","content":"%s"}]}', model, extra, prompt)
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end

response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

if pace_ms > 0 then
  -- Paced: each connection waits around pace_ms between requests (uniform
  -- jitter of +-50%), which spreads the connections' requests in time.
  delay = function() return pace_ms * (0.5 + math.random()) end
end

done = function(summary, latency, requests)
  local bad_total = 0
  for _, t in ipairs(threads) do bad_total = bad_total + (t:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format(
    'BWJSON {"requests":%d,"duration_us":%d,"non200":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, bad_total, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct Run {
    /// Responses received.
    pub requests: u64,
    /// Length of the run, µs.
    pub duration_us: u64,
    /// Responses with a status other than 200.
    pub non200: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
}

impl Run {
    /// Responses per second.
    pub fn rate(&self) -> f64 {
        if self.duration_us == 0 {
            0.0
        } else {
            self.requests as f64 / (self.duration_us as f64 / 1e6)
        }
    }

    /// Requests that did not end in a 200.
    pub fn failed(&self) -> u64 {
        self.non200 + self.socket_errors
    }
}

/// One load shape.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    /// `http://host:port/v1/chat/completions`.
    pub url: &'a str,
    /// The `model` of every request.
    pub model: &'a str,
    /// Connections (wrk's `-c`).
    pub connections: usize,
    /// wrk threads (`-t`).
    pub threads: usize,
    /// How long.
    pub duration: Duration,
    /// One prompt for every request (cache hits) instead of a new one each.
    pub same_prompt: bool,
    /// `temperature: 0` (cacheable).
    pub temperature0: bool,
    /// Mean pause of each connection between requests, ms (0 = none).
    pub pace_ms: f64,
}

/// `wrk`, or why it cannot run.
pub fn find() -> Result<PathBuf, String> {
    let out = Command::new("wrk").arg("-v").output();
    match out {
        Ok(_) => Ok(PathBuf::from("wrk")),
        Err(e) => Err(format!(
            "wrk is needed for the load runs ({e}): run scripts/bench-deps (apt-get install -y wrk)"
        )),
    }
}

/// Writes the Lua script into `dir`.
pub fn script(dir: &Path) -> Result<PathBuf, String> {
    let p = dir.join("bench.lua");
    std::fs::write(&p, SCRIPT).map_err(|e| e.to_string())?;
    Ok(p)
}

/// Runs wrk (blocking: call it from `spawn_blocking`).
pub fn run(wrk: &Path, script: &Path, load: &Load<'_>) -> Result<Run, String> {
    let out = Command::new(wrk)
        .args([
            "-t",
            &load.threads.max(1).min(load.connections.max(1)).to_string(),
            "-c",
            &load.connections.max(1).to_string(),
            "-d",
            &format!("{}s", load.duration.as_secs().max(1)),
            "--timeout",
            "30s",
            "-s",
        ])
        .arg(script)
        .arg(load.url)
        .env("BW_MODEL", load.model)
        .env("BW_SAME", if load.same_prompt { "1" } else { "0" })
        .env("BW_TEMP0", if load.temperature0 { "1" } else { "0" })
        .env("BW_PACE_MS", format!("{:.3}", load.pace_ms))
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("BWJSON ")).ok_or_else(|| {
        format!(
            "wrk printed no summary (status {}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    serde_json::from_str(line).map_err(|e| format!("wrk summary {line}: {e}"))
}

/// Microseconds as milliseconds with two decimals.
pub fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}
