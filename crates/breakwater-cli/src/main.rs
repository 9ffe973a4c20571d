//! `breakwater`: the one binary.

mod batch;
mod chat;
mod iot;
mod serve;
mod simulate;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// breakwater: a resilient LLM gateway.
#[derive(Parser, Debug)]
#[command(name = "breakwater", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway (OpenAI- and Anthropic-compatible HTTP API).
    Serve(serve::ServeArgs),
    /// Check a configuration file and report the first problem with its path.
    CheckConfig(serve::CheckArgs),
    /// Send one prompt to a provider and print the answer.
    Chat(chat::ChatArgs),
    /// Run the fault-injecting LLM simulator as an HTTP server.
    Simulate(simulate::SimulateArgs),
    /// Run an OpenAI Batch API JSONL file through the resilient client
    /// (resumable, adaptive concurrency, progress, dry-run estimates).
    Batch(batch::BatchArgs),
    /// Talk to the IoT command system ("dim the bedroom lights"), read its
    /// log, or run simulated devices.
    Iot(iot::IotArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => return serve::run(a),
        Command::CheckConfig(a) => return serve::check(a),
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match cli.command {
            Command::Chat(a) => chat::run(a).await,
            Command::Batch(a) => batch::run(a).await,
            Command::Simulate(a) => simulate::run(a).await,
            Command::Iot(a) => iot::run(a).await,
            Command::Serve(_) | Command::CheckConfig(_) => ExitCode::SUCCESS,
        }
    })
}
