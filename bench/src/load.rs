//! The load runs, against the real `breakwater` binary as a child process
//! (and `breakwater simulate` children as upstreams), so its RSS and open
//! descriptors can be read from `/proc`:
//!
//! - added latency at concurrency 1 (gateway minus direct to the simulator);
//! - throughput at concurrency 32, non-streamed, tiny upstream answers,
//!   through the gateway as a share of direct;
//! - cache-hit latency end to end;
//! - a fixed arrival rate held for a while with caching off and on, RSS and
//!   descriptors sampled over time (soak growth);
//! - N concurrent slow SSE streams held open, stalls counted.

use crate::client::{self, Req};
use crate::procs::{self, Proc, ProcSample};
use crate::report::{Outcome, quantile};
use breakwater::simulator::SimulatorConfig;
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// Sizes of the load runs.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    seq_requests: usize,
    throughput_for: Duration,
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
                seq_requests: 200,
                throughput_for: Duration::from_secs(3),
                rate_per_s: 200,
                rate_for: Duration::from_secs(5),
                streams: 500,
                streams_http: 500,
                stream_s: 6,
                stall_gap: Duration::from_secs(5),
            }
        } else {
            Sizes {
                seq_requests: 1000,
                throughput_for: Duration::from_secs(10),
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

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

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

fn req(url: &str, model: &str, prompt: String, stream: bool) -> Req {
    Req {
        url: url.to_string(),
        model: model.to_string(),
        prompt,
        stream,
        deadline: Duration::from_secs(30),
        slack: Duration::from_secs(5),
        bearer: None,
        drop_after_events: None,
    }
}

/// Sequential requests: sorted latencies and how many failed.
async fn sequential(http: &reqwest::Client, url: &str, model: &str, n: usize, same: bool) -> (Vec<Duration>, usize) {
    let mut lat = Vec::with_capacity(n);
    let mut failed = 0;
    for i in 0..n {
        let prompt = if same {
            "the cached question".to_string()
        } else {
            format!("seq {i}")
        };
        let s = client::send(http, &req(url, model, prompt, false)).await;
        if s.outcome != Outcome::Success {
            failed += 1;
        }
        lat.push(s.latency);
    }
    lat.sort();
    (lat, failed)
}

/// Closed-loop throughput: completed requests per second at `c` clients.
async fn throughput(http: &reqwest::Client, url: &str, model: &str, c: usize, dur: Duration) -> (f64, u64) {
    let end = Instant::now() + dur;
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..c {
        let (http, url, model, ok, bad) = (
            http.clone(),
            url.to_string(),
            model.to_string(),
            ok.clone(),
            bad.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut j = 0;
            while Instant::now() < end {
                let s = client::send(&http, &req(&url, &model, format!("tp {w} {j}"), false)).await;
                if s.outcome == Outcome::Success {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                j += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    (ok.load(Ordering::Relaxed) as f64 / secs, bad.load(Ordering::Relaxed))
}

/// Result of an open-loop run.
struct RateRun {
    sent: u64,
    ok: u64,
    failed: u64,
    lat: Vec<Duration>,
    samples: Vec<ProcSample>,
}

/// Open loop: `rate` requests per second for `dur`, whatever the latency.
async fn fixed_rate(
    http: &reqwest::Client,
    url: &str,
    model: &str,
    rate: u64,
    dur: Duration,
    distinct: usize,
    pid: u32,
) -> RateRun {
    let stop = CancellationToken::new();
    let sampling = sampler(pid, Duration::from_millis(500), stop.clone());
    let lat = Arc::new(Mutex::new(Vec::new()));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let end = Instant::now() + dur;
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let prompt = if distinct == 0 {
            format!("rate {sent}")
        } else {
            format!("rate {}", sent as usize % distinct)
        };
        let r = req(url, model, prompt, false);
        let (http, lat, ok, failed) = (http.clone(), lat.clone(), ok.clone(), failed.clone());
        tasks.spawn(async move {
            let s = client::send(&http, &r).await;
            if s.outcome == Outcome::Success {
                ok.fetch_add(1, Ordering::Relaxed);
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            lat.lock().await.push(s.latency);
        });
        sent += 1;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.cancel();
    let samples = sampling.await.unwrap_or_default();
    let mut lat = std::mem::take(&mut *lat.lock().await);
    lat.sort();
    RateRun {
        sent,
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        lat,
        samples,
    }
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
pub async fn run(short: bool) -> Result<(String, Vec<String>), String> {
    let z = Sizes::new(short);
    let bin = procs::breakwater_bin()?;
    let release = bin.to_string_lossy().contains("/release/");
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let tiny = SimulatorConfig {
        reply_tokens: 8,
        ..SimulatorConfig::instant()
    };
    let slow = SimulatorConfig {
        latency_ms: 20,
        tokens_per_s: 1.0,
        reply_tokens: z.stream_s as u32,
        ..SimulatorConfig::default()
    };
    let tiny_sim = procs::spawn_simulator(&bin, &write_json(dir.path(), "tiny.json", &tiny)?)?;
    let slow_sim = procs::spawn_simulator(&bin, &write_json(dir.path(), "slow.json", &slow)?)?;
    let provider = |sim: &Proc, idle_ms: u64| {
        json!({"kind": "openai", "base_url": format!("{}/v1", sim.url()), "api_key": "sk-bench-fake-key",
               "timeouts": {"connect_ms": 2000, "first_token_ms": 15000, "idle_ms": idle_ms, "total_ms": 600000}})
    };
    let gw_cfg: Value = json!({
        "server": {"listen": "127.0.0.1:0", "request_timeout_ms": 600000, "shutdown_grace_s": 1},
        "providers": {
            "tiny": provider(&tiny_sim, 30000),
            "slow": provider(&slow_sim, 30000),
            "inproc": {"kind": "simulator", "simulator": &slow,
                       "timeouts": {"first_token_ms": 15000, "idle_ms": 30000, "total_ms": 600000}},
        },
        "models": {
            "nocache": {"targets": [{"provider": "tiny", "model": "sim-1"}], "cache": {"enabled": false}},
            "cached": {"targets": [{"provider": "tiny", "model": "sim-1"}], "cache": {"enabled": true, "ttl_s": 3600}},
            "stream": {"targets": [{"provider": "slow", "model": "sim-1"}], "cache": {"enabled": false}},
            "stream_inproc": {"targets": [{"provider": "inproc", "model": "sim-1"}], "cache": {"enabled": false}},
        },
        "logging": {"level": "error"},
    });
    let gw = procs::spawn_gateway(&bin, &write_json(dir.path(), "gateway.json", &gw_cfg)?)?;
    let pid = gw.pid();
    let http = client::http();
    let direct = format!("{}/v1/chat/completions", tiny_sim.url());
    let via = format!("{}/v1/chat/completions", gw.url());
    let mut md = String::new();
    let mut violations = Vec::new();
    md.push_str(&format!(
        "## Gateway load ({}; gateway = `{}` as a child process{}; RLIMIT_NOFILE {})\n\n",
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

    // (a) added latency at c=1
    eprintln!("== load: added latency at concurrency 1");
    sequential(&http, &direct, "sim-1", 50, false).await;
    sequential(&http, &via, "nocache", 50, false).await;
    let (d, df) = sequential(&http, &direct, "sim-1", z.seq_requests, false).await;
    let (g, gf) = sequential(&http, &via, "nocache", z.seq_requests, false).await;
    let added = |q| quantile(&g, q).saturating_sub(quantile(&d, q));
    md.push_str("| measurement | direct to simulator | through gateway | gateway's share |\n|---|---:|---:|---:|\n");
    md.push_str(&format!(
        "| (a) latency p50 at c=1, {} requests, ms | {} | {} | +{} ms |\n",
        z.seq_requests,
        ms(quantile(&d, 0.5)),
        ms(quantile(&g, 0.5)),
        ms(added(0.5))
    ));
    md.push_str(&format!(
        "| (a) latency p99 at c=1, ms | {} | {} | +{} ms |\n",
        ms(quantile(&d, 0.99)),
        ms(quantile(&g, 0.99)),
        ms(added(0.99))
    ));
    if df + gf > 0 {
        violations.push(format!("load: {} of the sequential requests failed", df + gf));
    }

    // (b) throughput at c=32
    eprintln!("== load: throughput at concurrency 32");
    let (dt, dbad) = throughput(&http, &direct, "sim-1", 32, z.throughput_for).await;
    let (gt, gbad) = throughput(&http, &via, "nocache", 32, z.throughput_for).await;
    md.push_str(&format!(
        "| (b) throughput at c=32, non-streamed, tiny answers, req/s ({} s each) | {:.0} | {:.0} | {:.0}% of direct |\n",
        z.throughput_for.as_secs(),
        dt,
        gt,
        if dt > 0.0 { gt / dt * 100.0 } else { 0.0 }
    ));
    if dbad + gbad > 0 {
        violations.push(format!("load: {} throughput requests failed", dbad + gbad));
    }

    // (e) cache-hit latency
    eprintln!("== load: cache-hit latency");
    sequential(&http, &via, "cached", 20, true).await;
    let (h, hf) = sequential(&http, &via, "cached", z.seq_requests, true).await;
    md.push_str(&format!(
        "| (e) cache hit end to end, p50 / p99, ms | – | {} / {} | miss path p50 {} ms |\n\n",
        ms(quantile(&h, 0.5)),
        ms(quantile(&h, 0.99)),
        ms(quantile(&g, 0.5))
    ));
    if hf > 0 {
        violations.push(format!("load: {hf} cache-hit requests failed"));
    }

    // sustained fixed arrival rate, cache off then on
    md.push_str("| fixed arrival rate | sent | ok | failed | p50 ms | p99 ms | gateway RSS and descriptors |\n|---|---:|---:|---:|---:|---:|---|\n");
    let mut soak = Vec::new();
    for (label, model, distinct) in [
        ("cache off", "nocache", 0usize),
        ("cache on (100 distinct prompts)", "cached", 100),
    ] {
        eprintln!(
            "== load: {} req/s for {} s, {label}",
            z.rate_per_s,
            z.rate_for.as_secs()
        );
        let r = fixed_rate(&http, &via, model, z.rate_per_s, z.rate_for, distinct, pid).await;
        md.push_str(&format!(
            "| {} req/s × {} s, {label} | {} | {} | {} | {} | {} | {} |\n",
            z.rate_per_s,
            z.rate_for.as_secs(),
            r.sent,
            r.ok,
            r.failed,
            ms(quantile(&r.lat, 0.5)),
            ms(quantile(&r.lat, 0.99)),
            growth(&r.samples)
        ));
        if r.failed > 0 {
            violations.push(format!(
                "load: {} of {} fixed-rate requests failed ({label})",
                r.failed, r.sent
            ));
        }
        soak.extend(r.samples);
    }

    // (c) concurrent streams: through the HTTP upstream (a client socket and
    // an upstream socket each), then through an in-process simulator
    // provider (a client socket each) to reach the full count under the
    // hard RLIMIT_NOFILE
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
    md.push_str(&row("longest gap between events, ms", &|_, s| ms(s.max_gap)));
    md.push_str(&row("gateway RSS and descriptors meanwhile", &|_, s| {
        growth(&s.samples)
    }));

    // (d) RSS after the soak, once idle
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
    drop(tiny_sim);
    drop(slow_sim);
    Ok((md, violations))
}
