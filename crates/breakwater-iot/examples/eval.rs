//! Measures the model path of understanding against the labelled
//! utterances, with a real OpenAI-compatible server (e.g. llama-server with
//! SmolLM2-135M, started by `scripts/local-llm`):
//!
//! ```text
//! cargo run -p breakwater-iot --example eval -- --base-url http://127.0.0.1:8033/v1 --model smollm2-135m
//!     [--data crates/breakwater-iot/tests/data/utterances.jsonl] [--registry examples/home.yaml]
//!     [--limit N] [--sample N (every Nth case)] [--api-key K] [--verbose]
//! ```
//!
//! Each utterance goes to the model with the registry's schema as
//! `response_format`; the answer is validated and repaired once. Cases where
//! the model gave no valid answer are counted apart (in the service, the
//! rule-based parser would answer them). The rule-based parser is scored on
//! the same cases for comparison.

use breakwater::provider::openai::OpenAi;
use breakwater::provider::{DynProvider, HttpSettings};
use breakwater_iot::eval::{Grade, Tally, grade, parse_cases};
use breakwater_iot::registry::Registry;
use breakwater_iot::understand::Understander;
use breakwater_iot::understand::llm::DynBackend;
use std::sync::Arc;
use std::time::Instant;

struct Args {
    base_url: String,
    model: String,
    api_key: String,
    data: String,
    registry: String,
    limit: usize,
    sample: usize,
    verbose: bool,
    dump: bool,
}

fn args() -> Result<Args, String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut a = Args {
        base_url: "http://127.0.0.1:8033/v1".into(),
        model: "smollm2-135m".into(),
        api_key: String::new(),
        data: format!("{root}/crates/breakwater-iot/tests/data/utterances.jsonl"),
        registry: format!("{root}/examples/home.yaml"),
        limit: usize::MAX,
        sample: 1,
        verbose: false,
        dump: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--base-url" => a.base_url = val()?,
            "--model" => a.model = val()?,
            "--api-key" => a.api_key = val()?,
            "--data" => a.data = val()?,
            "--registry" => a.registry = val()?,
            "--limit" => a.limit = val()?.parse().map_err(|_| "--limit needs a number".to_string())?,
            "--sample" => {
                a.sample = val()?.parse().map_err(|_| "--sample needs a number".to_string())?;
                if a.sample == 0 {
                    return Err("--sample must be at least 1".into());
                }
            }
            "--verbose" => a.verbose = true,
            "--dump-request" => a.dump = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), String> {
    let a = args()?;
    let reg = Arc::new(Registry::load(&a.registry).map_err(|e| e.to_string())?);
    let text = std::fs::read_to_string(&a.data).map_err(|e| format!("{}: {e}", a.data))?;
    let cases = parse_cases(&text)?;
    let provider: DynProvider = Arc::new(
        OpenAi::new("local", &HttpSettings::new(&a.base_url).api_key(a.api_key.clone())).map_err(|e| e.to_string())?,
    );
    let backend: DynBackend = Arc::new(provider);
    let understander = Understander::new(reg.clone(), Some(backend), a.model.clone());
    let rules = understander.rules().clone();
    if a.dump {
        // the request body the model gets for the first case, for debugging with curl
        let body = serde_json::json!({
            "model": a.model,
            "messages": [{"role": "system", "content": understander.prompt()},
                         {"role": "user", "content": cases.first().map(|c| c.utterance.as_str()).unwrap_or("")}],
            "temperature": 0.0,
            "max_tokens": 384,
            "response_format": {"type": "json_schema", "json_schema": {"name": "home_commands", "strict": true, "schema": understander.schema()}}
        });
        println!("{body}");
        return Ok(());
    }

    let (mut model, mut model_answered, mut rules_tally) = (Tally::default(), Tally::default(), Tally::default());
    let (mut no_answer, mut repaired, mut calls) = (0usize, 0usize, 0u64);
    let started = Instant::now();
    for (i, c) in cases
        .iter()
        .enumerate()
        .filter(|(i, _)| i.is_multiple_of(a.sample))
        .map(|(_, c)| c)
        .take(a.limit)
        .enumerate()
    {
        let t = Instant::now();
        let u = understander.understand(&c.utterance).await;
        let ms = t.elapsed().as_millis();
        rules_tally.add(grade(&reg, c, &rules.parse(&c.utterance)));
        let g = if u.info.parser == "llm" {
            calls += u64::from(u.info.calls);
            if u.info.calls > 1 {
                repaired += 1;
            }
            let g = grade(&reg, c, &u.outcome);
            model_answered.add(g);
            g
        } else {
            // no valid model answer: the service would use the rules
            no_answer += 1;
            calls += 2;
            Grade::Refusal
        };
        model.add(g);
        if a.verbose || matches!(g, Grade::Wrong { sensitive: true }) {
            println!(
                "[{i}] {ms} ms {:?} → {g:?}: {:?}{}",
                c.utterance,
                u.outcome,
                u.info
                    .fallback_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("model {} at {}", a.model, a.base_url);
    println!(
        "cases: {}, {:.1} s ({:.2} s per utterance), {calls} model calls",
        model.total,
        secs,
        secs / model.total.max(1) as f64
    );
    println!("model path (no valid answer counted as refusal): {}", model.summary());
    println!(
        "  answered validly: {} of {} ({} after a repair); no valid answer: {no_answer}",
        model_answered.total, model.total, repaired
    );
    println!("  among valid answers: {}", model_answered.summary());
    println!("rule-based parser on the same cases: {}", rules_tally.summary());
    Ok(())
}
