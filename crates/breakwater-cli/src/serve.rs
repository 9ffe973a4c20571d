//! `breakwater serve` and `breakwater check-config`.

use breakwater_server::config::{self, LogFormat};
use breakwater_server::serve::{self, Options};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFmt {
    Text,
    Json,
}

/// Arguments of `breakwater serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The configuration file (default: ./breakwater.yaml if present, else
    /// the zero-config start).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides server.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Log format (overrides logging.format).
    #[arg(long, value_enum)]
    log_format: Option<LogFmt>,
    /// Do not reload when the config file changes (SIGHUP still reloads).
    #[arg(long)]
    no_watch: bool,
}

/// Arguments of `breakwater check-config`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The configuration file.
    file: PathBuf,
    /// Print the effective configuration (secrets shown as ***).
    #[arg(long)]
    print: bool,
}

fn init_logs(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// Runs the gateway until SIGTERM.
pub fn run(a: ServeArgs) -> ExitCode {
    let config = a.config.clone().or_else(|| {
        let p = PathBuf::from("breakwater.yaml");
        p.exists().then_some(p)
    });
    // Logging comes from the file, so read it (once, to check it) first.
    let (fmt, level) = match &config {
        Some(p) => match config::load(p) {
            Ok(c) => (c.logging.format, c.logging.level),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => (LogFormat::Text, "info".to_string()),
    };
    let fmt = match a.log_format {
        Some(LogFmt::Json) => LogFormat::Json,
        Some(LogFmt::Text) => LogFormat::Text,
        None => fmt,
    };
    init_logs(fmt, &level);
    // Worker 0 runs on this thread; `server.workers` adds more, each a
    // thread with a runtime like this one (see breakwater_server::serve).
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = Options {
        config,
        listen: a.listen,
        watch: (!a.no_watch).then_some(Duration::from_secs(2)),
    };
    match rt.block_on(serve::run(opts)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks a configuration file.
pub fn check(a: CheckArgs) -> ExitCode {
    match config::load(&a.file) {
        Ok(c) => {
            if a.print {
                match serde_json::to_string_pretty(&c) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("cannot print: {e}"),
                }
            }
            eprintln!(
                "{}: ok — {} providers, {} model aliases, {} keys",
                a.file.display(),
                c.providers.len(),
                c.models.len(),
                c.keys.as_ref().map_or(0, Vec::len)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
