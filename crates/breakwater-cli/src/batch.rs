//! `breakwater batch`: an OpenAI Batch API input file run through the full
//! resilient client (cache, limits, retries, failover), with bounded
//! concurrency that adapts to the providers' rate limits, a progress bar,
//! resumable output and a dry run that estimates tokens and cost.
//!
//! **Input** (one JSON object per line, as the OpenAI Batch API):
//! `{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {…}}`
//! (`url` may also be `/v1/embeddings`). Blank lines are ignored.
//!
//! **Output** (one line per request, in completion order):
//! `{"id": "batch_req_<line>", "custom_id": "r1", "response": {"status_code": 200,
//! "request_id": "…", "body": {…}}, "error": null}`. A failed request has the
//! OpenAI error body under `response.body` with the status of its kind, and
//! `error: {"code": "<ErrorKind>", "message": "…"}`. A bad input line has
//! `response: null`, `error.code: "invalid_request"`, a message naming the
//! line number and the field, and a `line` field.
//!
//! **Resume**: every result line is written with one `write` and flushed. On
//! start, the custom_ids (and, for bad lines without one, the line numbers)
//! already in the output file are skipped; a torn last line (a kill in the
//! middle of a write) is cut off first.
//!
//! **Exit codes**: 0 the batch is complete (per-request failures are in the
//! output), 1 the output could not be written, 2 bad arguments, config or
//! input (duplicate custom_ids), 130 interrupted by Ctrl-C (the requests in
//! flight were finished and written; run again to resume).

use breakwater::cache::CacheOutcome;
use breakwater::client::{CallMeta, Client, RequestOptions};
use breakwater::error::{Error, ErrorKind};
use breakwater::policy::concurrency::{Aimd, Bulkhead, BulkheadConfig};
use breakwater::policy::spend::PriceTable;
use breakwater::types::{ChatRequest, EmbeddingInput, EmbeddingRequest};
use breakwater_server::config::{self, GatewayConfig};
use breakwater_server::errors::{Flavor, body_of, status_of};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Arguments of `breakwater batch`.
#[derive(Args, Debug)]
pub struct BatchArgs {
    /// The input file (OpenAI Batch API JSONL).
    input: PathBuf,
    /// The output file (appended to; results already in it are skipped).
    #[arg(long, short, required_unless_present = "dry_run")]
    out: Option<PathBuf>,
    /// The configuration file (default: ./breakwater.yaml if present, else
    /// the zero-config discovery).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Most requests in flight at once; the limit adapts below it (AIMD:
    /// it shrinks on rate limits and overload, grows on success).
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Estimate tokens and cost from the input and call nothing.
    #[arg(long)]
    dry_run: bool,
    /// Total deadline of each request in milliseconds (default: the
    /// config's `server.request_timeout_ms`).
    #[arg(long)]
    timeout_ms: Option<u64>,
}

/// The request of one input line.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `/v1/chat/completions`.
    Chat(Box<ChatRequest>),
    /// `/v1/embeddings`.
    Embeddings(EmbeddingRequest),
}

impl Request {
    fn model(&self) -> &str {
        match self {
            Request::Chat(r) => &r.model,
            Request::Embeddings(r) => &r.model,
        }
    }
}

/// A valid input line.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// 1-based line number.
    pub line: usize,
    /// The caller's id.
    pub custom_id: String,
    /// What to send.
    pub request: Request,
}

/// An input line that cannot be run.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// The custom_id, when it could be read.
    pub custom_id: Option<String>,
    /// What is wrong, naming the line and the field.
    pub message: String,
}

/// Parses one input line (1-based `line`).
pub fn parse_line(line: usize, text: &str) -> Result<Item, BadLine> {
    let bad = |custom_id: Option<String>, what: String| BadLine {
        line,
        custom_id,
        message: format!("line {line}: {what}"),
    };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(None, format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(bad(None, "not a JSON object".into()));
    };
    let custom_id = match obj.get("custom_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err(bad(None, "field `custom_id`: empty".into())),
        Some(_) => return Err(bad(None, "field `custom_id`: not a string".into())),
        None => return Err(bad(None, "field `custom_id`: missing".into())),
    };
    let id = Some(custom_id.clone());
    match obj.get("method") {
        Some(Value::String(m)) if m.eq_ignore_ascii_case("POST") => {}
        Some(_) => return Err(bad(id, "field `method`: must be \"POST\"".into())),
        None => return Err(bad(id, "field `method`: missing (must be \"POST\")".into())),
    }
    let url = match obj.get("url") {
        Some(Value::String(u)) => u.as_str(),
        Some(_) => return Err(bad(id, "field `url`: not a string".into())),
        None => return Err(bad(id, "field `url`: missing".into())),
    };
    let body = match obj.get("body") {
        Some(b @ Value::Object(_)) => b.clone(),
        Some(_) => return Err(bad(id, "field `body`: not a JSON object".into())),
        None => return Err(bad(id, "field `body`: missing".into())),
    };
    let request = match url {
        "/v1/chat/completions" => Request::Chat(Box::new(
            serde_json::from_value(body).map_err(|e| bad(id.clone(), format!("field `body`: {e}")))?,
        )),
        "/v1/embeddings" => Request::Embeddings(
            serde_json::from_value(body).map_err(|e| bad(id.clone(), format!("field `body`: {e}")))?,
        ),
        other => {
            return Err(bad(
                id,
                format!("field `url`: {other:?} is not supported (use /v1/chat/completions or /v1/embeddings)"),
            ));
        }
    };
    Ok(Item {
        line,
        custom_id,
        request,
    })
}

/// A parsed input file.
#[derive(Debug, Default)]
pub struct Input {
    /// Valid lines.
    pub items: Vec<Item>,
    /// Bad lines.
    pub bad: Vec<BadLine>,
    /// custom_ids that appear more than once: `(id, first line, repeated line)`.
    pub duplicates: Vec<(String, usize, usize)>,
}

/// Parses a whole input file; blank lines are skipped.
pub fn parse_input(bytes: &[u8]) -> Input {
    let mut input = Input::default();
    let mut first: HashMap<String, usize> = HashMap::new();
    for (i, raw) in bytes.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let parsed = match std::str::from_utf8(raw) {
            Ok(t) if t.trim().is_empty() => continue,
            Ok(t) => parse_line(line, t),
            Err(_) => Err(BadLine {
                line,
                custom_id: None,
                message: format!("line {line}: not UTF-8"),
            }),
        };
        let id = match &parsed {
            Ok(item) => Some(item.custom_id.clone()),
            Err(b) => b.custom_id.clone(),
        };
        if let Some(id) = id {
            if let Some(&f) = first.get(&id) {
                input.duplicates.push((id, f, line));
            } else {
                first.insert(id, line);
            }
        }
        match parsed {
            Ok(item) => input.items.push(item),
            Err(b) => input.bad.push(b),
        }
    }
    input
}

/// What an earlier run already wrote.
#[derive(Debug, Default, PartialEq)]
pub struct Done {
    /// custom_ids with a result line.
    pub ids: HashSet<String>,
    /// Input lines without a custom_id that have an error line.
    pub lines: HashSet<usize>,
    /// Bytes to keep: everything up to the last newline (a torn last line
    /// is cut).
    pub keep: usize,
    /// The last line is whole but lacks its newline.
    pub needs_newline: bool,
}

/// Reads an existing output file's contents. A complete line that is not
/// a result line is an error (refuse to append to a file we did not write).
pub fn scan_output(bytes: &[u8]) -> Result<Done, String> {
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let mut done = Done {
        keep,
        ..Done::default()
    };
    let record = |i: usize, raw: &[u8], done: &mut Done| -> Result<(), String> {
        let v: Value = serde_json::from_slice(raw).map_err(|e| format!("line {} is not a result line: {e}", i + 1))?;
        match (v.get("custom_id"), v.get("line")) {
            (Some(Value::String(id)), _) => {
                done.ids.insert(id.clone());
            }
            (_, Some(Value::Number(n))) if n.as_u64().is_some() => {
                done.lines.insert(n.as_u64().unwrap_or_default() as usize);
            }
            _ => return Err(format!("line {} is not a result line: no custom_id", i + 1)),
        }
        Ok(())
    };
    let mut n = 0;
    for (i, raw) in bytes[..keep].split(|b| *b == b'\n').enumerate() {
        n = i + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        record(i, raw, &mut done)?;
    }
    // A last line without its newline is whole if it parses (an edited
    // file); it is kept and only its newline is missing.
    let tail = &bytes[keep..];
    if !tail.iter().all(u8::is_ascii_whitespace) && record(n, tail, &mut done).is_ok() {
        done.keep = bytes.len();
        done.needs_newline = true;
    }
    Ok(done)
}

/// The output line of a bad input line.
pub fn bad_line_result(b: &BadLine) -> Value {
    json!({
        "id": format!("batch_req_{}", b.line),
        "custom_id": b.custom_id,
        "line": b.line,
        "response": null,
        "error": {"code": ErrorKind::InvalidRequest.as_str(), "message": b.message},
    })
}

/// The output line of a request that was answered.
pub fn ok_result(item: &Item, body: Value, meta: &CallMeta) -> Value {
    json!({
        "id": format!("batch_req_{}", item.line),
        "custom_id": item.custom_id,
        "response": {"status_code": 200, "request_id": &*meta.request_id, "body": body},
        "error": null,
    })
}

/// The output line of a request that failed.
pub fn error_result(item: &Item, e: &Error, request_id: &str) -> Value {
    json!({
        "id": format!("batch_req_{}", item.line),
        "custom_id": item.custom_id,
        "response": {
            "status_code": status_of(e).as_u16(),
            "request_id": request_id,
            "body": body_of(e, Flavor::OpenAi),
        },
        "error": {"code": e.kind.as_str(), "message": e.message},
    })
}

/// The output file: one `write` per line, then a flush.
struct Output {
    file: Mutex<File>,
}

impl Output {
    fn write(&self, v: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_string(v).map_err(std::io::Error::other)?;
        line.push('\n');
        let mut f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("output lock poisoned"))?;
        f.write_all(line.as_bytes())?;
        f.flush()
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    cached: AtomicU64,
    tokens: AtomicU64,
    nano_usd: AtomicU64,
}

impl Tally {
    fn message(&self, started: Instant) -> String {
        let calls = self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { calls as f64 / secs } else { 0.0 };
        format!(
            "{rate:.1}/s · ok {} · failed {} · cached {} · {} tokens · ${:.4}",
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.cached.load(Ordering::Relaxed),
            self.tokens.load(Ordering::Relaxed),
            self.nano_usd.load(Ordering::Relaxed) as f64 / 1e9
        )
    }

    fn account(&self, meta: &CallMeta) {
        if matches!(
            meta.cache,
            CacheOutcome::Hit | CacheOutcome::Semantic | CacheOutcome::Stale
        ) {
            self.cached.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(u) = &meta.usage {
            self.tokens.fetch_add(u64::from(u.total_tokens), Ordering::Relaxed);
        }
        self.nano_usd
            .fetch_add((meta.cost_usd.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }
}

fn config_path(a: &BatchArgs) -> Option<PathBuf> {
    a.config.clone().or_else(|| {
        let p = PathBuf::from("breakwater.yaml");
        p.exists().then_some(p)
    })
}

/// Runs `breakwater batch`.
pub async fn run(a: BatchArgs) -> ExitCode {
    // Ctrl-C: stop taking new requests, finish those in flight. A second
    // Ctrl-C quits at once (every line written so far is whole).
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
    }
    let bytes = match std::fs::read(&a.input) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", a.input.display());
            return ExitCode::from(2);
        }
    };
    let input = parse_input(&bytes);
    if !input.duplicates.is_empty() {
        for (id, first, again) in input.duplicates.iter().take(10) {
            eprintln!("error: duplicate custom_id {id:?} on lines {first} and {again}");
        }
        if input.duplicates.len() > 10 {
            eprintln!("error: … and {} more duplicates", input.duplicates.len() - 10);
        }
        eprintln!("error: custom_ids must be unique; nothing was run");
        return ExitCode::from(2);
    }
    let cfg = match config_path(&a) {
        Some(p) => match config::load(&p) {
            Ok(c) => Some((c, format!("from {}", p.display()))),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    if a.dry_run {
        print!("{}", dry_run(&input, cfg.as_ref().map(|c| &c.0)));
        return ExitCode::SUCCESS;
    }
    let Some(out_path) = a.out.clone() else {
        eprintln!("error: --out is required");
        return ExitCode::from(2);
    };
    let (done, file) = match open_output(&out_path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {}: {e}", out_path.display());
            return ExitCode::from(2);
        }
    };
    let out = Arc::new(Output { file: Mutex::new(file) });
    let is_done = |line: usize, id: Option<&String>| match id {
        Some(id) => done.ids.contains(id),
        None => done.lines.contains(&line),
    };
    let total = (input.items.len() + input.bad.len()) as u64;
    let mut skipped = 0u64;
    let tally = Arc::new(Tally::default());
    let mut bad_written = 0u64;
    for b in &input.bad {
        if is_done(b.line, b.custom_id.as_ref()) {
            skipped += 1;
            continue;
        }
        if let Err(e) = out.write(&bad_line_result(b)) {
            eprintln!("error: cannot write {}: {e}", out_path.display());
            return ExitCode::FAILURE;
        }
        bad_written += 1;
        tally.failed.fetch_add(1, Ordering::Relaxed);
    }
    let todo: Vec<Item> = input
        .items
        .into_iter()
        .filter(|i| {
            let d = is_done(i.line, Some(&i.custom_id));
            skipped += u64::from(d);
            !d
        })
        .collect();

    let (client, origin) = if todo.is_empty() {
        (None, String::new())
    } else {
        let (cfg, origin) = match cfg {
            Some(c) => c,
            None => breakwater_server::zero_config::config("127.0.0.1:0").await,
        };
        match breakwater_server::state::build(cfg, origin.clone()).await {
            Ok(gw) => (Some(gw.client.clone()), origin),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    if client.is_some() {
        eprintln!(
            "[breakwater] batch: {} to run, {} already in {}, {} bad lines — providers {origin}",
            todo.len(),
            skipped,
            out_path.display(),
            input.bad.len()
        );
    }

    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} · {msg} · ETA {eta}")
    {
        bar.set_style(style);
    }
    let started = Instant::now();
    bar.set_position(skipped + bad_written);
    bar.set_message(tally.message(started));

    let max = a.concurrency.max(1);
    let bulkhead = Bulkhead::new(
        "batch",
        BulkheadConfig {
            max_in_flight: max,
            max_queue: u32::MAX,
            adaptive: Some(Aimd::for_max(max)),
        },
    );
    let fatal: Arc<Mutex<Option<String>>> = Arc::default();
    let opts = RequestOptions {
        timeout: a.timeout_ms.map(Duration::from_millis),
        ..RequestOptions::default()
    };
    let mut not_started = 0usize;
    if let Some(client) = client {
        let mut set = JoinSet::new();
        let mut queue = todo.into_iter();
        while let Some(item) = queue.next() {
            let permit = tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                p = bulkhead.acquire(None) => p.ok(),
            };
            let Some(permit) = permit.filter(|_| !stop.is_cancelled()) else {
                not_started = 1 + queue.len();
                bar.suspend(|| {
                    eprintln!(
                        "[breakwater] stopping: finishing the {} requests in flight, {not_started} not started (Ctrl-C again to quit now)",
                        set.len()
                    );
                });
                break;
            };
            let (client, out, tally, bar, fatal, stop, opts) = (
                client.clone(),
                out.clone(),
                tally.clone(),
                bar.clone(),
                fatal.clone(),
                stop.clone(),
                opts.clone(),
            );
            set.spawn(async move {
                let (line, meta, pressure, ok) = call(&client, &item, opts).await;
                tally.account(&meta);
                if ok {
                    tally.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.failed.fetch_add(1, Ordering::Relaxed);
                }
                if pressure {
                    permit.overloaded();
                } else if ok {
                    permit.success();
                } else {
                    drop(permit);
                }
                if let Err(e) = out.write(&line) {
                    if let Ok(mut f) = fatal.lock() {
                        f.get_or_insert_with(|| format!("cannot write the output: {e}"));
                    }
                    stop.cancel();
                }
                bar.inc(1);
                bar.set_message(tally.message(started));
            });
            while set.try_join_next().is_some() {}
        }
        while set.join_next().await.is_some() {}
    }
    bar.finish_and_clear();

    let elapsed = started.elapsed().as_secs_f64();
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let ran = ok + failed - bad_written;
    eprintln!(
        "[breakwater] batch: {ok} ok, {failed} failed ({} bad lines), {} cached, {skipped} already done, {} tokens, ${:.4}, {:.1}s ({:.1} req/s) → {}",
        bad_written,
        tally.cached.load(Ordering::Relaxed),
        tally.tokens.load(Ordering::Relaxed),
        tally.nano_usd.load(Ordering::Relaxed) as f64 / 1e9,
        elapsed,
        if elapsed > 0.0 { ran as f64 / elapsed } else { 0.0 },
        out_path.display()
    );
    if let Some(e) = fatal.lock().ok().and_then(|f| f.clone()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if stop.is_cancelled() {
        eprintln!("[breakwater] interrupted: {not_started} requests not started; run the same command again to resume");
        return ExitCode::from(130);
    }
    ExitCode::SUCCESS
}

/// One request through the client: the output line, the accounting,
/// whether the upstream signalled rate limiting or overload, and success.
async fn call(client: &Client, item: &Item, opts: RequestOptions) -> (Value, CallMeta, bool, bool) {
    let res = match &item.request {
        Request::Chat(req) => client
            .chat(ChatRequest::clone(req), opts)
            .await
            .map(|o| (serde_json::to_value(&*o.response), o.meta)),
        Request::Embeddings(req) => client
            .embed(req.clone(), opts)
            .await
            .map(|(r, m)| (serde_json::to_value(&r), m)),
    };
    match res {
        Ok((Ok(body), meta)) => {
            let p = pressured(&meta, None);
            (ok_result(item, body, &meta), meta, p, true)
        }
        Ok((Err(e), meta)) => {
            let e = Error::new(ErrorKind::UpstreamUnparseable, format!("cannot encode the answer: {e}"));
            (error_result(item, &e, &meta.request_id), meta, false, false)
        }
        Err(f) => {
            let p = pressured(&f.meta, Some(f.error.kind));
            (error_result(item, &f.error, &f.meta.request_id), *f.meta, p, false)
        }
    }
}

/// Whether a call met rate limiting or overload on any attempt (or in its
/// final error): the signal that shrinks the adaptive concurrency limit.
fn pressured(meta: &CallMeta, last: Option<ErrorKind>) -> bool {
    meta.attempts
        .iter()
        .filter_map(|a| a.error)
        .chain(last)
        .any(|k| matches!(k, ErrorKind::RateLimited | ErrorKind::Overloaded))
}

/// Opens (or creates) the output for appending, after cutting a torn last
/// line; returns what is already done.
fn open_output(path: &Path) -> Result<(Done, File), String> {
    let existing = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    let done = scan_output(&existing).map_err(|e| format!("{e}; refusing to append (move the file away)"))?;
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    if done.needs_newline {
        (&file).write_all(b"\n").map_err(|e| e.to_string())?;
    } else if done.keep < existing.len() {
        file.set_len(done.keep as u64).map_err(|e| e.to_string())?;
        eprintln!(
            "[breakwater] {}: cut a torn last line ({} bytes) left by an interrupted run",
            path.display(),
            existing.len() - done.keep
        );
    }
    Ok((done, file))
}

/// Tokens of an embeddings input: ~4 bytes per token for text, one per id.
fn embedding_tokens(input: &EmbeddingInput) -> u64 {
    match input {
        EmbeddingInput::One(s) => s.len().div_ceil(4) as u64,
        EmbeddingInput::Many(v) => v.iter().map(|s| s.len().div_ceil(4) as u64).sum(),
        EmbeddingInput::Tokens(t) => t.len() as u64,
        EmbeddingInput::TokenBatches(b) => b.iter().map(|t| t.len() as u64).sum(),
    }
}

/// The model whose price applies to requests for `model`: an alias's
/// first target (`provider/model`), else the name itself.
fn priced_model(cfg: Option<&GatewayConfig>, model: &str) -> String {
    cfg.and_then(|c| c.models.get(model))
        .and_then(|m| m.targets.first())
        .map_or_else(|| model.to_string(), |t| format!("{}/{}", t.provider, t.model))
}

/// The dry-run report: requests, estimated tokens and cost per model.
/// Prompt tokens are estimated at ~4 bytes per token (the library's
/// `estimate_prompt_tokens`); completion tokens are `max_tokens` when given,
/// else the adaptive-mode guess (256, or 1024 for long-form prompts).
pub fn dry_run(input: &Input, cfg: Option<&GatewayConfig>) -> String {
    #[derive(Default)]
    struct Row {
        requests: u64,
        prompt: u64,
        completion: u64,
        nano_usd: Option<u64>,
    }
    let empty = PriceTable::default();
    let prices = cfg.map_or(&empty, |c| &c.prices);
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for item in &input.items {
        let (prompt, completion) = match &item.request {
            Request::Chat(r) => (
                u64::from(r.estimate_prompt_tokens()),
                u64::from(breakwater::mode::expected_output_tokens(r)),
            ),
            Request::Embeddings(r) => (embedding_tokens(&r.input), 0),
        };
        let priced = priced_model(cfg, item.request.model());
        let cost = prices
            .get(&priced)
            .map(|_| prices.cost(&priced, prompt, completion).nano_usd);
        let row = rows.entry(item.request.model().to_string()).or_default();
        row.requests += 1;
        row.prompt += prompt;
        row.completion += completion;
        row.nano_usd = match (row.requests, row.nano_usd, cost) {
            (1, _, c) => c,
            (_, Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    let mut s = String::from("dry run: nothing was called\n");
    s.push_str(&format!(
        "{:<24} {:>9} {:>14} {:>18} {:>12}\n",
        "model", "requests", "prompt tokens", "completion tokens", "cost (USD)"
    ));
    let (mut n, mut p, mut c, mut cost, mut unpriced) = (0, 0, 0, 0u64, false);
    for (model, r) in &rows {
        let price = r
            .nano_usd
            .map_or_else(|| "no price".to_string(), |x| format!("{:.6}", x as f64 / 1e9));
        s.push_str(&format!(
            "{model:<24} {:>9} {:>14} {:>18} {price:>12}\n",
            r.requests, r.prompt, r.completion
        ));
        n += r.requests;
        p += r.prompt;
        c += r.completion;
        match r.nano_usd {
            Some(x) => cost += x,
            None => unpriced = true,
        }
    }
    s.push_str(&format!("requests: {n}\nbad lines: {}\n", input.bad.len()));
    s.push_str(&format!(
        "prompt tokens (est.): {p}\ncompletion tokens (est., upper): {c}\n"
    ));
    s.push_str(&format!(
        "cost (est.): ${:.6}{}\n",
        cost as f64 / 1e9,
        if unpriced {
            " (some models have no price in the config's `prices:`)"
        } else {
            ""
        }
    ));
    for b in input.bad.iter().take(20) {
        s.push_str(&format!("bad: {}\n", b.message));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}}"#;

    #[test]
    fn parses_good_and_bad_lines() {
        let item = parse_line(1, CHAT).unwrap();
        assert_eq!(item.custom_id, "a");
        assert!(matches!(item.request, Request::Chat(_)));
        let emb = r#"{"custom_id":"e","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":"x"}}"#;
        assert!(matches!(parse_line(2, emb).unwrap().request, Request::Embeddings(_)));

        let b = parse_line(3, "{not json").unwrap_err();
        assert!(b.message.starts_with("line 3: not valid JSON"), "{}", b.message);
        let b = parse_line(4, r#"{"method":"POST"}"#).unwrap_err();
        assert_eq!(b.message, "line 4: field `custom_id`: missing");
        let b = parse_line(5, r#"{"custom_id":"x","method":"POST","url":"/v1/files","body":{}}"#).unwrap_err();
        assert_eq!(b.custom_id.as_deref(), Some("x"));
        assert!(b.message.contains("field `url`"), "{}", b.message);
        let b = parse_line(
            6,
            r#"{"custom_id":"y","method":"POST","url":"/v1/chat/completions","body":{"model":1}}"#,
        )
        .unwrap_err();
        assert!(b.message.starts_with("line 6: field `body`"), "{}", b.message);
        let b = parse_line(
            7,
            r#"{"custom_id":"z","method":"GET","url":"/v1/chat/completions","body":{}}"#,
        )
        .unwrap_err();
        assert!(b.message.contains("field `method`"), "{}", b.message);
    }

    #[test]
    fn input_skips_blank_lines_and_finds_duplicates() {
        let text = format!("{CHAT}\n\n  \n{CHAT}\n[1]\n");
        let input = parse_input(text.as_bytes());
        assert_eq!(input.items.len(), 2);
        assert_eq!(input.bad.len(), 1);
        assert_eq!(input.bad[0].line, 5);
        assert_eq!(input.duplicates, vec![("a".to_string(), 1, 4)]);
    }

    #[test]
    fn output_scan_cuts_a_torn_line() {
        let good = r#"{"id":"batch_req_1","custom_id":"a","response":null,"error":null}"#;
        let bad = r#"{"id":"batch_req_2","custom_id":null,"line":2,"response":null,"error":{}}"#;
        let text = format!("{good}\n{bad}\n{{\"id\":\"batch_req_3\",\"cus");
        let done = scan_output(text.as_bytes()).unwrap();
        assert_eq!(done.keep, good.len() + bad.len() + 2);
        assert!(done.ids.contains("a"));
        assert!(done.lines.contains(&2));
        assert_eq!(scan_output(b"").unwrap(), Done::default());
        assert!(scan_output(b"garbage\n").is_err(), "a whole line that is not ours");
        let whole = scan_output(format!("{good}\n{good}").as_bytes()).unwrap();
        assert!(whole.needs_newline && whole.keep == 2 * good.len() + 1);
    }

    #[test]
    fn torn_file_is_truncated_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"custom_id\":\"a\"}\n{\"custom_id\":\"b").unwrap();
        let (done, mut f) = open_output(&path).unwrap();
        assert_eq!(done.ids.len(), 1);
        f.write_all(b"{\"custom_id\":\"c\"}\n").unwrap();
        drop(f);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"custom_id\":\"a\"}\n{\"custom_id\":\"c\"}\n"
        );
        // A whole last line without its newline is kept.
        std::fs::write(&path, "{\"custom_id\":\"a\"}\n{\"custom_id\":\"b\"}").unwrap();
        let (done, mut f) = open_output(&path).unwrap();
        assert_eq!(done.ids.len(), 2);
        f.write_all(b"{\"custom_id\":\"c\"}\n").unwrap();
        drop(f);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    }

    #[test]
    fn result_lines_have_the_batch_shape() {
        let item = parse_line(9, CHAT).unwrap();
        let e = Error::new(ErrorKind::RateLimited, "slow down");
        let v = error_result(&item, &e, "req-1");
        assert_eq!(v["id"], "batch_req_9");
        assert_eq!(v["custom_id"], "a");
        assert_eq!(v["response"]["status_code"], 429);
        assert_eq!(v["response"]["request_id"], "req-1");
        assert_eq!(v["error"]["code"], "rate_limited");
        let b = bad_line_result(&parse_line(3, "[]").unwrap_err());
        assert_eq!(b["error"]["code"], "invalid_request");
        assert_eq!(b["line"], 3);
        assert!(b["response"].is_null());
    }

    #[test]
    fn rate_limits_on_any_attempt_are_pressure() {
        let ok = meta_with(&[]);
        assert!(!pressured(&ok, None));
        assert!(pressured(&ok, Some(ErrorKind::Overloaded)));
        assert!(!pressured(&ok, Some(ErrorKind::InvalidRequest)));
        assert!(pressured(&meta_with(&[Some(ErrorKind::RateLimited), None]), None));
        assert!(!pressured(&meta_with(&[Some(ErrorKind::ServerError), None]), None));
    }

    fn meta_with(errors: &[Option<ErrorKind>]) -> CallMeta {
        CallMeta {
            request_id: "r".into(),
            alias: "m".into(),
            target: None,
            attempts: errors
                .iter()
                .map(|e| breakwater::client::AttemptRecord {
                    target: "p/m".into(),
                    error: *e,
                    status: None,
                    message: None,
                    latency_ms: 1,
                    hedge: false,
                    local: false,
                })
                .collect(),
            cache: CacheOutcome::Miss,
            degraded: None,
            hedged: false,
            stitched: false,
            idempotent_replay: false,
            coalesced: false,
            upstream_mode: None,
            usage: None,
            cost_usd: 0.0,
            latency_ms: 1,
            ttft_ms: None,
        }
    }

    #[test]
    fn dry_run_estimates_with_prices() {
        let cfg = config::parse(
            "providers:\n  p: {kind: simulator}\nmodels:\n  m:\n    targets: [{provider: p, model: sim-1}]\nprices:\n  sim-1: {input: 1000000, output: 2000000}\n",
            "test",
            &|_| None,
        )
        .unwrap();
        let mut chat = parse_line(1, CHAT).unwrap();
        if let Request::Chat(r) = &mut chat.request {
            r.max_tokens = Some(10);
        }
        let input = Input {
            items: vec![chat],
            ..Input::default()
        };
        let report = dry_run(&input, Some(&cfg));
        assert!(report.contains("requests: 1"), "{report}");
        assert!(report.contains("completion tokens (est., upper): 10"), "{report}");
        // 3 prompt tokens ("user" framing + "hi") × $1 + 10 × $2.
        assert!(report.contains("cost (est.): $23.000000"), "{report}");
    }
}
