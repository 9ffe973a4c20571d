//! `chaos`: breakwater's chaos and load suite.
//!
//! ```text
//! chaos                      every chaos scenario, full length, markdown table
//! chaos --short              a few seconds per scenario (CI)
//! chaos --scenario NAME      one scenario (repeatable)
//! chaos --load               the load runs (gateway as a child process of the
//!                            release `breakwater` binary) instead of chaos
//! chaos --rss-only           only the load run's RSS with 1,000 streams
//! chaos --all                chaos, then load
//! chaos --out FILE           also write the markdown to FILE
//! chaos --relay PORT UPSTREAM a byte relay from PORT to UPSTREAM (the load
//!                            run starts it as the floor of proxy CPU)
//! ```
//!
//! Everything listens on 127.0.0.1, uses fake keys, and every run is bounded
//! in time and count. The exit status is non-zero when an invariant fails:
//! a hung request, an error without a kind, a lost or duplicated IoT
//! command.

mod chaos;
mod client;
mod iot;
mod load;
mod procs;
mod relay;
mod report;
mod wrk;

use std::process::ExitCode;
use std::time::Instant;

struct Args {
    short: bool,
    chaos: bool,
    load: bool,
    rss_only: bool,
    scenarios: Vec<String>,
    out: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        short: false,
        chaos: true,
        load: false,
        rss_only: false,
        scenarios: Vec::new(),
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--short" => a.short = true,
            "--load" => {
                a.load = true;
                a.chaos = false;
            }
            "--rss-only" => {
                a.load = true;
                a.rss_only = true;
                a.chaos = false;
            }
            "--all" => {
                a.load = true;
                a.chaos = true;
            }
            "--scenario" => a.scenarios.push(it.next().ok_or("--scenario needs a name")?),
            "--out" => a.out = Some(it.next().ok_or("--out needs a file")?),
            "-h" | "--help" => {
                println!(
                    "usage: chaos [--short] [--load | --rss-only | --all] [--scenario NAME]... [--out FILE]\nscenarios: {}",
                    chaos::SCENARIOS.join(", ")
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--relay") {
        let port = |i: usize| argv.get(i).and_then(|p| p.parse::<u16>().ok());
        let (Some(listen), Some(upstream)) = (port(2), port(3)) else {
            eprintln!("usage: chaos --relay LISTEN_PORT UPSTREAM_PORT");
            return ExitCode::from(2);
        };
        return match relay::run(listen, upstream) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("relay: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // 10,000 held streams need far more descriptors than the usual 1,024.
    procs::raise_nofile(1 << 18);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let started = Instant::now();
    let mut md = String::new();
    let mut violations = Vec::new();
    let machine = procs::machine();
    md.push_str(&format!(
        "breakwater chaos/load suite — {} — {} — {}\n\n",
        procs::utc_now(),
        machine,
        if args.short { "short run" } else { "full run" }
    ));
    if args.chaos {
        let p = if args.short {
            chaos::Params::short()
        } else {
            chaos::Params::full()
        };
        let names: Vec<String> = if args.scenarios.is_empty() {
            chaos::SCENARIOS.iter().map(|s| s.to_string()).collect()
        } else {
            args.scenarios.clone()
        };
        let mut rows = Vec::new();
        for name in &names {
            let t = Instant::now();
            eprintln!("== {name}");
            match chaos::run(name, p).await {
                Ok(row) => {
                    let v = row.violations();
                    eprintln!(
                        "   {} requests, {} ok, {} explained, {} hangs, {} unexplained in {:.1} s{}",
                        row.requests,
                        row.successes,
                        row.explained,
                        row.hangs,
                        row.unexplained,
                        t.elapsed().as_secs_f64(),
                        if v.is_empty() {
                            String::new()
                        } else {
                            format!(" — FAIL: {}", v.join("; "))
                        }
                    );
                    violations.extend(v);
                    rows.push(row);
                }
                Err(e) => {
                    eprintln!("   could not run: {e}");
                    violations.push(format!("{name}: could not run: {e}"));
                }
            }
        }
        md.push_str(&format!(
            "## Chaos ({} s load per scenario, {} clients, deadline {} ms + {} ms slack)\n\n",
            p.duration.as_secs(),
            p.concurrency,
            p.deadline.as_millis(),
            p.slack.as_millis()
        ));
        md.push_str(&report::markdown(&rows));
        md.push('\n');
    }
    if args.load {
        match load::run(args.short, args.rss_only).await {
            Ok((text, v)) => {
                md.push_str(&text);
                violations.extend(v);
            }
            Err(e) => {
                eprintln!("load: {e}");
                violations.push(format!("load: {e}"));
            }
        }
    }
    md.push_str(&format!("\nWhole run: {:.0} s.\n", started.elapsed().as_secs_f64()));
    println!("{md}");
    if let Some(path) = &args.out
        && let Err(e) = std::fs::write(path, &md)
    {
        eprintln!("cannot write {path}: {e}");
    }
    if violations.is_empty() {
        eprintln!("chaos: every invariant held");
        ExitCode::SUCCESS
    } else {
        eprintln!("chaos: {} invariant failure(s):", violations.len());
        for v in &violations {
            eprintln!("  - {v}");
        }
        ExitCode::FAILURE
    }
}
