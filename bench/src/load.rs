//! The load runs, against the real `breakwater` binary as a child process
//! (and `breakwater simulate` children as upstreams), so its CPU time, RSS
//! and open descriptors can be read from `/proc`. Requests come from `wrk`
//! (see [`crate::wrk`]), streams from the suite's own client:
//!
//! - (a) added latency at concurrency 1 (gateway minus direct);
//! - (b) throughput at concurrency 32, non-streamed, tiny answers, through
//!   the gateway as a share of direct, and the gateway's CPU per request;
//!   and the highest arrival rate sustained with p99 under a bound, with a
//!   20 ms upstream, direct and through the gateway;
//! - (c) concurrent slow SSE streams held open, stalls counted; RSS with
//!   1,000 streams open;
//! - (d) RSS and descriptors over a soak at a fixed rate, cache off and on;
//! - (e) cache-hit latency end to end.

use crate::client;
use crate::procs::{self, Proc, ProcSample};
use crate::wrk::{self, Load, ms};
use breakwater::simulator::SimulatorConfig;
use futures::StreamExt;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Sizes of the load runs.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    latency_for: Duration,
    throughput_for: Duration,
    probe_for: Duration,
    rate_per_s: u64,
    rate_for: Duration,
    streams: usize,
    streams_http: usize,
    stream_s: u64,
    stall_gap: Duration,
}

impl Sizes {
    fn new(short: bool) -> Sizes {
        if short {
            Sizes {
                latency_for: Duration::from_secs(3),
                throughput_for: Duration::from_secs(3),
                probe_for: Duration::from_secs(3),
                rate_per_s: 200,
                rate_for: Duration::from_secs(5),
                streams: 500,
                streams_http: 500,
                stream_s: 6,
                stall_gap: Duration::from_secs(5),
            }
        } else {
            Sizes {
                latency_for: Duration::from_secs(10),
                throughput_for: Duration::from_secs(10),
                probe_for: Duration::from_secs(6),
                rate_per_s: 500,
                rate_for: Duration::from_secs(30),
                streams: 10_000,
                streams_http: 9_000,
                stream_s: 30,
                stall_gap: Duration::from_secs(10),
            }
        }
    }
}

/// Upstream latency of the sustained-rate runs, and the p99 a rate must
/// keep to count as sustained.
const RATE_UPSTREAM_MS: u64 = 20;
const RATE_P99_BOUND_MS: u64 = RATE_UPSTREAM_MS + 30;
/// Each connection of a sustained-rate run sends a request about every
/// this many ms (its wait plus the upstream's latency): long against the
/// latency, so the load is close to open loop, short against a probe, so
/// the connections' staggered starts cost little of the rate.
const RATE_CYCLE_MS: u64 = 100;

fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// Samples `pid` every `every` until `stop`.
fn sampler(pid: u32, every: Duration, stop: CancellationToken) -> tokio::task::JoinHandle<Vec<ProcSample>> {
    tokio::spawn(async move {
        let t0 = Instant::now();
        let mut out = Vec::new();
        loop {
            if let Some((rss_kb, fds)) = procs::sample(pid) {
                out.push(ProcSample {
                    t: t0.elapsed().as_secs_f64(),
                    rss_kb,
                    fds,
                });
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
            }
        }
        out
    })
}

/// Runs wrk off the runtime's threads.
async fn wrk_run(wrk: &Path, script: &Path, load: Load<'_>) -> Result<wrk::Run, String> {
    let (wrk, script) = (wrk.to_path_buf(), script.to_path_buf());
    let (url, model) = (load.url.to_string(), load.model.to_string());
    let load = Load {
        url: "",
        model: "",
        ..load
    };
    tokio::task::spawn_blocking(move || {
        let load = Load {
            url: &url,
            model: &model,
            ..load
        };
        wrk::run(&wrk, &script, &load)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A wrk run and the CPU time `pid` used during it.
async fn wrk_with_cpu(wrk: &Path, script: &Path, load: Load<'_>, pid: u32) -> Result<(wrk::Run, Duration), String> {
    let before = procs::cpu_time(pid).unwrap_or_default();
    let r = wrk_run(wrk, script, load).await?;
    let after = procs::cpu_time(pid).unwrap_or_default();
    Ok((r, after.saturating_sub(before)))
}

/// CPU per request, µs.
fn cpu_per_request(cpu: Duration, r: &wrk::Run) -> f64 {
    if r.requests == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / r.requests as f64
    }
}

/// One probe of a sustained rate: `rate` requests a second offered (near
/// open loop: many connections, each paced), passed when none failed, the
/// p99 stayed under the bound and most of it was served.
async fn probe_rate(
    wrk: &Path,
    script: &Path,
    url: &str,
    model: &str,
    rate: f64,
    dur: Duration,
) -> Result<(bool, wrk::Run), String> {
    let connections = ((rate * RATE_CYCLE_MS as f64 / 1000.0).round() as usize).max(16);
    let r = wrk_run(
        wrk,
        script,
        Load {
            url,
            model,
            connections,
            threads: 2,
            duration: dur,
            same_prompt: false,
            temperature0: false,
            pace_ms: (RATE_CYCLE_MS - RATE_UPSTREAM_MS) as f64,
        },
    )
    .await?;
    // The served rate falls short of the offered one by the connections'
    // staggered starts (and by queueing, which the p99 bound catches).
    let ok = r.rate() >= rate * 0.8 && r.p99_us <= RATE_P99_BOUND_MS * 1000 && r.failed() == 0;
    Ok((ok, r))
}

/// The highest rate sustained: offered rates doubling from 1,000 a second
/// until a probe fails, then three halvings of the gap; the served rate
/// and the run of the highest probe that passed.
async fn sustained_rate(
    wrk: &Path,
    script: &Path,
    url: &str,
    model: &str,
    dur: Duration,
) -> Result<(f64, wrk::Run), String> {
    let mut good: Option<(f64, wrk::Run)> = None;
    let mut rate = 1000.0;
    let mut bad = None;
    while rate <= 64_000.0 {
        let (ok, r) = probe_rate(wrk, script, url, model, rate, dur).await?;
        eprintln!(
            "   {rate:.0}/s: served {:.0}/s, p99 {} ms, {} failed -> {}",
            r.rate(),
            ms(r.p99_us),
            r.failed(),
            if ok { "sustained" } else { "not sustained" }
        );
        if !ok {
            bad = Some(rate);
            break;
        }
        good = Some((rate, r));
        rate *= 2.0;
    }
    if let Some(mut hi) = bad {
        let mut lo = good.as_ref().map_or(0.0, |g| g.0);
        for _ in 0..3 {
            let mid = (lo + hi) / 2.0;
            if mid < 250.0 {
                break;
            }
            let (ok, r) = probe_rate(wrk, script, url, model, mid, dur).await?;
            eprintln!(
                "   {mid:.0}/s: served {:.0}/s, p99 {} ms, {} failed -> {}",
                r.rate(),
                ms(r.p99_us),
                r.failed(),
                if ok { "sustained" } else { "not sustained" }
            );
            if ok {
                lo = mid;
                good = Some((mid, r));
            } else {
                hi = mid;
            }
        }
    }
    Ok(good.map(|(_, r)| (r.rate(), r)).unwrap_or_default())
}

/// RSS of a fresh gateway with `n` streams of `model` open.
async fn rss_with_streams(
    bin: &Path,
    cfg: &Path,
    model: &str,
    n: usize,
    s: &Sizes,
) -> Result<(u64, u64, StreamRun), String> {
    let gw = procs::spawn_gateway(bin, cfg).await?;
    let idle = procs::sample(gw.pid()).unwrap_or_default().0;
    let url = format!("{}/v1/chat/completions", gw.url());
    let run = hold_streams(
        &url,
        model,
        n,
        s.stall_gap,
        Duration::from_secs(s.stream_s * 3 + 30),
        gw.pid(),
    )
    .await;
    Ok((idle, run.rss_all_open_kb, run))
}

/// (c) RSS with 1,000 streams open, each on a fresh gateway: through the
/// HTTP upstream, then through an in-process simulator provider.
async fn rss_section(
    bin: &Path,
    gw_path: &Path,
    z: &Sizes,
    md: &mut String,
    violations: &mut Vec<String>,
) -> Result<(), String> {
    md.push_str("\n| RSS with 1,000 streams open (fresh gateway each) | idle, MiB | all 1,000 open, MiB | per stream, KiB |\n|---|---:|---:|---:|\n");
    for (label, model) in [
        ("HTTP/1.1 upstream", "stream"),
        ("in-process simulator provider", "stream_inproc"),
    ] {
        eprintln!("== load: RSS with 1,000 streams ({label})");
        let (idle, open, s) = rss_with_streams(bin, gw_path, model, 1000, z).await?;
        if s.stalled > 0 || s.failed > 0 {
            violations.push(format!(
                "load: RSS run {label}: {} stalled, {} failed",
                s.stalled, s.failed
            ));
        }
        md.push_str(&format!(
            "| {label} | {} | {} | {:.1} |\n",
            mib(idle),
            mib(open),
            open.saturating_sub(idle) as f64 / 1000.0
        ));
    }
    Ok(())
}

/// How the held streams went.
struct StreamRun {
    opened: u64,
    completed: u64,
    stalled: u64,
    failed: u64,
    peak_open: u64,
    max_gap: Duration,
    samples: Vec<ProcSample>,
    /// The highest RSS sampled while the streams were held, KiB.
    rss_all_open_kb: u64,
}

/// Opens `n` slow streams (at most 2,048 connecting at once), holds them to
/// their end, and counts those with a gap between events over `stall_gap`.
async fn hold_streams(url: &str, model: &str, n: usize, stall_gap: Duration, limit: Duration, pid: u32) -> StreamRun {
    let stop = CancellationToken::new();
    let sampling = sampler(pid, Duration::from_secs(1), stop.clone());
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a reqwest client");
    let open = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    // The gateway answers a stream's headers with its first token (about a
    // second here), so opening runs at about `permits` streams a second; with
    // 256 permits and ~32 s streams the first ones ended before the last were
    // open, and no more than 256 × 32 = 8,192 were ever open at once.
    let connecting = Arc::new(tokio::sync::Semaphore::new(2048));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, url, model) = (http.clone(), url.to_string(), model.to_string());
        let (open, peak, connecting) = (open.clone(), peak.clone(), connecting.clone());
        tasks.spawn(async move {
            let permit = connecting.acquire_owned().await;
            let resp = http
                .post(&url)
                .json(&client::body(&model, &format!("hold {i}"), true))
                .send()
                .await;
            drop(permit);
            let Ok(resp) = resp else {
                return (false, false, Duration::ZERO, false);
            };
            if !resp.status().is_success() {
                return (false, false, Duration::ZERO, false);
            }
            let now_open = open.fetch_add(1, Ordering::Relaxed) + 1;
            peak.fetch_max(now_open, Ordering::Relaxed);
            let mut body = resp.bytes_stream();
            let mut last = Instant::now();
            let mut max_gap = Duration::ZERO;
            let mut done = false;
            let mut tail: Vec<u8> = Vec::new();
            let read = async {
                while let Some(Ok(chunk)) = body.next().await {
                    max_gap = max_gap.max(last.elapsed());
                    last = Instant::now();
                    tail.extend_from_slice(&chunk);
                    if tail.windows(6).any(|w| w == b"[DONE]") {
                        done = true;
                        break;
                    }
                    let keep = tail.len().saturating_sub(8);
                    tail.drain(..keep);
                }
            };
            let timed_out = tokio::time::timeout(limit, read).await.is_err();
            open.fetch_sub(1, Ordering::Relaxed);
            (true, done, max_gap, timed_out)
        });
    }
    let mut run = StreamRun {
        opened: 0,
        completed: 0,
        stalled: 0,
        failed: 0,
        peak_open: 0,
        max_gap: Duration::ZERO,
        samples: Vec::new(),
        rss_all_open_kb: 0,
    };
    while let Some(r) = tasks.join_next().await {
        let (opened, done, gap, timed_out) = r.unwrap_or((false, false, Duration::ZERO, false));
        if !opened {
            run.failed += 1;
            continue;
        }
        run.opened += 1;
        run.max_gap = run.max_gap.max(gap);
        if done {
            run.completed += 1;
        } else {
            run.failed += 1;
        }
        if gap > stall_gap || timed_out {
            run.stalled += 1;
        }
    }
    stop.cancel();
    run.samples = sampling.await.unwrap_or_default();
    run.rss_all_open_kb = run.samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    run.peak_open = peak.load(Ordering::Relaxed);
    run
}

fn growth(samples: &[ProcSample]) -> String {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return "no samples".into();
    };
    let max_rss = samples.iter().map(|s| s.rss_kb).max().unwrap_or(0);
    let max_fds = samples.iter().map(|s| s.fds).max().unwrap_or(0);
    format!(
        "RSS {} → {} MiB (max {}), fds {} → {} (max {}) over {:.0} s",
        mib(first.rss_kb),
        mib(last.rss_kb),
        mib(max_rss),
        first.fds,
        last.fds,
        max_fds,
        last.t
    )
}

fn write_json(dir: &std::path::Path, name: &str, v: &impl serde::Serialize) -> Result<std::path::PathBuf, String> {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    Ok(p)
}

/// Runs every load measurement; returns the markdown and the invariant
/// failures.
pub async fn run(short: bool, rss_only: bool) -> Result<(String, Vec<String>), String> {
    let z = Sizes::new(short);
    let bin = procs::breakwater_bin()?;
    let wrk = wrk::find()?;
    let release = bin.to_string_lossy().contains("/release/");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let script = wrk::script(dir.path())?;
    let tiny = SimulatorConfig {
        reply_tokens: 8,
        ..SimulatorConfig::instant()
    };
    let slow20 = SimulatorConfig {
        latency_ms: RATE_UPSTREAM_MS,
        reply_tokens: 8,
        ..SimulatorConfig::instant()
    };
    let slow = SimulatorConfig {
        latency_ms: 20,
        tokens_per_s: 1.0,
        reply_tokens: z.stream_s as u32,
        ..SimulatorConfig::default()
    };
    let tiny_sim = procs::spawn_simulator(&bin, &write_json(dir.path(), "tiny.json", &tiny)?).await?;
    let rate_sim = procs::spawn_simulator(&bin, &write_json(dir.path(), "slow20.json", &slow20)?).await?;
    let slow_sim = procs::spawn_simulator(&bin, &write_json(dir.path(), "slow.json", &slow)?).await?;
    let provider = |sim: &Proc| {
        json!({"kind": "openai", "base_url": format!("{}/v1", sim.url()), "api_key": "sk-bench-fake-key",
               "timeouts": {"connect_ms": 2000, "first_token_ms": 15000, "idle_ms": 30000, "total_ms": 600000}})
    };
    let gw_cfg: Value = json!({
        "server": {"listen": "127.0.0.1:0", "request_timeout_ms": 600000, "shutdown_grace_s": 1},
        "providers": {
            "tiny": provider(&tiny_sim),
            "slow20": provider(&rate_sim),
            "slow": provider(&slow_sim),
            "inproc": {"kind": "simulator", "simulator": &slow,
                       "timeouts": {"first_token_ms": 15000, "idle_ms": 30000, "total_ms": 600000}},
        },
        "models": {
            "nocache": {"targets": [{"provider": "tiny", "model": "sim-1"}], "cache": {"enabled": false}},
            "cached": {"targets": [{"provider": "tiny", "model": "sim-1"}], "cache": {"enabled": true, "ttl_s": 3600}},
            "rate": {"targets": [{"provider": "slow20", "model": "sim-1"}], "cache": {"enabled": false}},
            "stream": {"targets": [{"provider": "slow", "model": "sim-1"}], "cache": {"enabled": false}},
            "stream_inproc": {"targets": [{"provider": "inproc", "model": "sim-1"}], "cache": {"enabled": false}},
        },
        "logging": {"level": "error"},
    });
    let gw_path = write_json(dir.path(), "gateway.json", &gw_cfg)?;
    if rss_only {
        let (mut md, mut violations) = (String::new(), Vec::new());
        rss_section(&bin, &gw_path, &z, &mut md, &mut violations).await?;
        return Ok((md, violations));
    }
    let gw = procs::spawn_gateway(&bin, &gw_path).await?;
    let pid = gw.pid();
    let direct = format!("{}/v1/chat/completions", tiny_sim.url());
    let via = format!("{}/v1/chat/completions", gw.url());
    let mut md = String::new();
    let mut violations = Vec::new();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    md.push_str(&format!(
        "## Gateway load ({}; gateway = `{}` as a child process, {workers} workers (one per CPU){}; load from wrk; RLIMIT_NOFILE {})\n\n",
        if short { "short run" } else { "full run" },
        bin.display(),
        if release {
            ""
        } else {
            ", NOT a release build: numbers are not representative"
        },
        procs::nofile()
    ));
    let rss0 = procs::sample(pid).unwrap_or_default();
    let load = |url, model, connections, duration| Load {
        url,
        model,
        connections,
        threads: if connections > 1 { 2 } else { 1 },
        duration,
        same_prompt: false,
        temperature0: false,
        pace_ms: 0.0,
    };
    let check = |violations: &mut Vec<String>, what: &str, r: &wrk::Run| {
        if r.failed() > 0 || r.requests == 0 {
            violations.push(format!(
                "load: {what}: {} of {} requests failed",
                r.failed(),
                r.requests
            ));
        }
    };

    // (a) added latency at c=1
    eprintln!("== load: added latency at concurrency 1");
    let warm = Duration::from_secs(2);
    wrk_run(&wrk, &script, load(&direct, "sim-1", 1, warm)).await?;
    wrk_run(&wrk, &script, load(&via, "nocache", 1, warm)).await?;
    let d1 = wrk_run(&wrk, &script, load(&direct, "sim-1", 1, z.latency_for)).await?;
    let (g1, g1cpu) = wrk_with_cpu(&wrk, &script, load(&via, "nocache", 1, z.latency_for), pid).await?;
    check(&mut violations, "c=1 direct", &d1);
    check(&mut violations, "c=1 gateway", &g1);
    let added = |g: u64, d: u64| format!("{:+.3} ms", (g as f64 - d as f64) / 1000.0);
    md.push_str("| measurement | direct to simulator | through gateway | gateway's share |\n|---|---:|---:|---:|\n");
    md.push_str(&format!(
        "| (a) latency at c=1, {} s each: p50, ms | {} | {} | {} |\n",
        z.latency_for.as_secs(),
        ms(d1.p50_us),
        ms(g1.p50_us),
        added(g1.p50_us, d1.p50_us)
    ));
    md.push_str(&format!(
        "| (a) p99, ms | {} | {} | {} |\n",
        ms(d1.p99_us),
        ms(g1.p99_us),
        added(g1.p99_us, d1.p99_us)
    ));
    md.push_str(&format!(
        "| (a) p99.9, ms | {} | {} | {} |\n",
        ms(d1.p999_us),
        ms(g1.p999_us),
        added(g1.p999_us, d1.p999_us)
    ));
    md.push_str(&format!(
        "| (a) requests at c=1 / gateway CPU per request | {} | {} | {:.0} µs |\n",
        d1.requests,
        g1.requests,
        cpu_per_request(g1cpu, &g1)
    ));

    // (b) throughput at c=32
    eprintln!("== load: throughput at concurrency 32");
    let d32 = wrk_run(&wrk, &script, load(&direct, "sim-1", 32, z.throughput_for)).await?;
    let (g32, g32cpu) = wrk_with_cpu(&wrk, &script, load(&via, "nocache", 32, z.throughput_for), pid).await?;
    check(&mut violations, "c=32 direct", &d32);
    check(&mut violations, "c=32 gateway", &g32);
    md.push_str(&format!(
        "| (b) throughput at c=32, non-streamed, tiny answers, req/s ({} s each) | {:.0} | {:.0} | {:.1}% of direct |\n",
        z.throughput_for.as_secs(),
        d32.rate(),
        g32.rate(),
        if d32.rate() > 0.0 { g32.rate() / d32.rate() * 100.0 } else { 0.0 }
    ));
    md.push_str(&format!(
        "| (b) latency at c=32, p50 / p99, ms | {} / {} | {} / {} | |\n",
        ms(d32.p50_us),
        ms(d32.p99_us),
        ms(g32.p50_us),
        ms(g32.p99_us)
    ));
    md.push_str(&format!(
        "| (b) gateway CPU per request at c=32 (user + system, from /proc) | – | {:.1} µs | |\n",
        cpu_per_request(g32cpu, &g32)
    ));
    // The floor: the same socket work with nothing parsed (relay.rs).
    eprintln!("== load: a byte relay at concurrency 32 (the floor)");
    let relay = procs::spawn_relay(tiny_sim.port).await?;
    let relay_url = format!("{}/v1/chat/completions", relay.url());
    let (r32, r32cpu) = wrk_with_cpu(
        &wrk,
        &script,
        load(&relay_url, "sim-1", 32, z.throughput_for),
        relay.pid(),
    )
    .await?;
    drop(relay);
    check(&mut violations, "c=32 relay", &r32);
    md.push_str(&format!(
        "| (b) the floor: a byte relay in the gateway's place (nothing parsed), c=32: req/s / CPU per request | – | {:.0} / {:.1} µs | gateway above the floor: {:+.1} µs |\n",
        r32.rate(),
        cpu_per_request(r32cpu, &r32),
        cpu_per_request(g32cpu, &g32) - cpu_per_request(r32cpu, &r32)
    ));

    // (e) cache-hit latency: check that the prompt is a hit, then measure
    let http = client::http();
    for _ in 0..2 {
        let _ = http
            .post(&via)
            .json(&json!({"model": "cached", "temperature": 0, "messages": [{"role": "user", "content": "the cached question"}]}))
            .send()
            .await;
    }
    let hit = http
        .post(&via)
        .json(&json!({"model": "cached", "temperature": 0, "messages": [{"role": "user", "content": "the cached question"}]}))
        .send()
        .await
        .ok()
        .and_then(|r| r.headers().get("x-breakwater-cache").map(|v| v.to_str().unwrap_or("").to_string()));
    if hit.as_deref() != Some("hit") {
        violations.push(format!("load: the cache-hit run's prompt is not a cache hit ({hit:?})"));
    }
    eprintln!("== load: cache-hit latency");
    let cached = |connections, duration| Load {
        same_prompt: true,
        temperature0: true,
        ..load(&via, "cached", connections, duration)
    };
    let (h1, h1cpu) = wrk_with_cpu(&wrk, &script, cached(1, z.latency_for), pid).await?;
    let (h32, h32cpu) = wrk_with_cpu(&wrk, &script, cached(32, z.throughput_for), pid).await?;
    check(&mut violations, "cache hits c=1", &h1);
    check(&mut violations, "cache hits c=32", &h32);
    md.push_str(&format!(
        "| (e) cache hit end to end at c=1, p50 / p99, ms | – | {} / {} | {:.0} µs CPU per hit |\n",
        ms(h1.p50_us),
        ms(h1.p99_us),
        cpu_per_request(h1cpu, &h1)
    ));
    md.push_str(&format!(
        "| (e) cache hits at c=32, req/s, p99 ms | – | {:.0}, {} | {:.1} µs CPU per hit |\n",
        h32.rate(),
        ms(h32.p99_us),
        cpu_per_request(h32cpu, &h32)
    ));

    // (b) sustained rate with a 20 ms upstream
    eprintln!(
        "== load: highest sustained rate, {RATE_UPSTREAM_MS} ms upstream, p99 under {RATE_P99_BOUND_MS} ms (direct)"
    );
    let direct20 = format!("{}/v1/chat/completions", rate_sim.url());
    let (dr, drun) = sustained_rate(&wrk, &script, &direct20, "sim-1", z.probe_for).await?;
    eprintln!("== load: the same through the gateway");
    let (gr, grun) = sustained_rate(&wrk, &script, &via, "rate", z.probe_for).await?;
    md.push_str(&format!(
        "| (b) highest rate served with a {RATE_UPSTREAM_MS} ms upstream and p99 ≤ {RATE_P99_BOUND_MS} ms, req/s ({} s probes; each connection paced to a request per {RATE_CYCLE_MS} ms) | {:.0} (p99 {} ms) | {:.0} (p99 {} ms) | {:.0}% of direct |\n\n",
        z.probe_for.as_secs(),
        dr,
        ms(drun.p99_us),
        gr,
        ms(grun.p99_us),
        if dr > 0.0 { gr / dr * 100.0 } else { 0.0 }
    ));

    // (d) soak: a fixed arrival rate, cache off then on
    md.push_str("| fixed arrival rate (paced wrk) | requests | failed | p50 ms | p99 ms | gateway RSS and descriptors |\n|---|---:|---:|---:|---:|---|\n");
    let mut soak = Vec::new();
    for (label, model, same) in [
        ("cache off", "nocache", false),
        ("cache on, one prompt", "cached", true),
    ] {
        eprintln!(
            "== load: {} req/s for {} s, {label}",
            z.rate_per_s,
            z.rate_for.as_secs()
        );
        let stop = CancellationToken::new();
        let sampling = sampler(pid, Duration::from_millis(500), stop.clone());
        let connections = 64;
        let r = wrk_run(
            &wrk,
            &script,
            Load {
                same_prompt: same,
                temperature0: same,
                pace_ms: connections as f64 * 1000.0 / z.rate_per_s as f64,
                ..load(&via, model, connections, z.rate_for)
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(600)).await;
        stop.cancel();
        let samples = sampling.await.unwrap_or_default();
        check(&mut violations, &format!("soak {label}"), &r);
        md.push_str(&format!(
            "| ~{} req/s × {} s, {label} | {} | {} | {} | {} | {} |\n",
            z.rate_per_s,
            z.rate_for.as_secs(),
            r.requests,
            r.failed(),
            ms(r.p50_us),
            ms(r.p99_us),
            growth(&samples)
        ));
        soak.extend(samples);
    }

    // (c) concurrent streams: through the HTTP upstream (a client and an
    // upstream socket each), then through an in-process simulator provider
    // (a client socket each) to reach the full count under the hard
    // RLIMIT_NOFILE
    let limit = Duration::from_secs(z.stream_s * 3 + 30);
    md.push_str(&format!(
        "\n| (c) concurrent SSE streams, {} s each, one event a second | HTTP upstream (`breakwater simulate`) | in-process `kind: simulator` provider |\n|---|---:|---:|\n",
        z.stream_s
    ));
    let mut runs = Vec::new();
    for (n, model) in [(z.streams_http, "stream"), (z.streams, "stream_inproc")] {
        eprintln!("== load: {n} concurrent streams ({model}) for about {} s", z.stream_s);
        let s = hold_streams(&via, model, n, z.stall_gap, limit, pid).await;
        if s.stalled > 0 || s.failed > 0 {
            violations.push(format!(
                "load: {model}: {} of {n} streams stalled, {} failed",
                s.stalled, s.failed
            ));
        }
        runs.push((n, s));
        // let the closed connections go before the next run
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let row = |label: &str, f: &dyn Fn(usize, &StreamRun) -> String| {
        format!(
            "| {label} | {} | {} |\n",
            f(runs[0].0, &runs[0].1),
            f(runs[1].0, &runs[1].1)
        )
    };
    md.push_str(&row("asked for", &|n, _| n.to_string()));
    md.push_str(&row("opened", &|_, s| s.opened.to_string()));
    md.push_str(&row("peak open at once", &|_, s| s.peak_open.to_string()));
    md.push_str(&row("completed with [DONE]", &|_, s| s.completed.to_string()));
    md.push_str(&row("failed", &|_, s| s.failed.to_string()));
    md.push_str(&row(
        &format!(
            "stalled (a gap over {} s, or no end within {} s)",
            z.stall_gap.as_secs(),
            limit.as_secs()
        ),
        &|_, s| s.stalled.to_string(),
    ));
    md.push_str(&row("longest gap between events, ms", &|_, s| {
        ms(s.max_gap.as_micros() as u64)
    }));
    md.push_str(&row("gateway RSS and descriptors meanwhile", &|_, s| {
        growth(&s.samples)
    }));

    // (d) RSS after the soak and the streams, once idle
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = procs::sample(pid).unwrap_or_default();
    let soak_growth = match (soak.first(), soak.last()) {
        (Some(a), Some(b)) => format!(
            "{} MiB at the start of the fixed-rate runs, {} MiB at their end",
            mib(a.rss_kb),
            mib(b.rss_kb)
        ),
        _ => "not sampled".into(),
    };
    md.push_str(&format!(
        "\n(d) Gateway RSS: {} MiB at start, {soak_growth}; {} MiB and {} open descriptors when idle after everything (started with {}).\n",
        mib(rss0.0),
        mib(idle.0),
        idle.1,
        rss0.1
    ));
    drop(gw);

    rss_section(&bin, &gw_path, &z, &mut md, &mut violations).await?;
    drop(tiny_sim);
    drop(rate_sim);
    drop(slow_sim);
    Ok((md, violations))
}
