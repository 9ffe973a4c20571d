//! The load generator's client side: one request (complete or streamed),
//! classified into an [`Outcome`], and a bounded-concurrency driver.

use crate::report::{Outcome, Sample};
use futures::StreamExt;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone)]
pub struct Req {
    /// Full URL of `/v1/chat/completions`.
    pub url: String,
    /// The model alias.
    pub model: String,
    /// The prompt.
    pub prompt: String,
    /// Stream the answer.
    pub stream: bool,
    /// `x-breakwater-timeout-ms` (also the base of the hang check).
    pub deadline: Duration,
    /// Extra time past the deadline before a request counts as hung.
    pub slack: Duration,
    /// `Authorization: Bearer …`.
    pub bearer: Option<String>,
    /// Drop the stream after this many data events (client disconnect).
    pub drop_after_events: Option<usize>,
}

/// A reqwest client for loopback load: no proxy, many idle connections.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()
        .expect("a reqwest client")
}

/// The body of a chat request.
pub fn body(model: &str, prompt: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]})
}

/// The kind named by an error body (`error.code`, `error.type`), if any.
pub fn error_kind(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    e.get("code")
        .and_then(Value::as_str)
        .or_else(|| e.get("type").and_then(Value::as_str))
        .map(str::to_string)
}

/// Sends one request and classifies how it ended.
pub async fn send(client: &reqwest::Client, r: &Req) -> Sample {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(r.deadline + r.slack, attempt(client, r)).await {
        Ok(o) => o,
        Err(_) => Outcome::Hang,
    };
    Sample {
        outcome,
        latency: started.elapsed(),
    }
}

async fn attempt(client: &reqwest::Client, r: &Req) -> Outcome {
    let mut rb = client
        .post(&r.url)
        .header("x-breakwater-timeout-ms", r.deadline.as_millis().to_string())
        .json(&body(&r.model, &r.prompt, r.stream));
    if let Some(b) = &r.bearer {
        rb = rb.bearer_auth(b);
    }
    let resp = match rb.send().await {
        Ok(x) => x,
        Err(e) => return Outcome::Unexplained(format!("connection: {e}")),
    };
    let status = resp.status();
    if !status.is_success() {
        let bytes = resp.bytes().await.unwrap_or_default();
        return match serde_json::from_slice::<Value>(&bytes)
            .ok()
            .as_ref()
            .and_then(error_kind)
        {
            Some(k) => Outcome::Explained(k),
            None => Outcome::Unexplained(format!("status {status} without an error body")),
        };
    }
    if !r.stream {
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return Outcome::Unexplained(format!("body: {e}")),
        };
        return match serde_json::from_slice::<Value>(&bytes) {
            Ok(v)
                if v.get("choices")
                    .and_then(Value::as_array)
                    .is_some_and(|c| !c.is_empty()) =>
            {
                Outcome::Success
            }
            Ok(v) => match error_kind(&v) {
                Some(k) => Outcome::Explained(k),
                None => Outcome::Unexplained("200 without choices".into()),
            },
            Err(_) => Outcome::Unexplained("200 with a body that is not JSON".into()),
        };
    }
    read_stream(resp, r.drop_after_events).await
}

/// Reads an OpenAI event stream to its end: `[DONE]` is a success, an
/// error event is explained, a silent end is not.
async fn read_stream(resp: reqwest::Response, drop_after: Option<usize>) -> Outcome {
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut events = 0usize;
    loop {
        match body.next().await {
            Some(Ok(chunk)) => {
                buf.extend_from_slice(&chunk);
                while let Some(pos) = find_event_end(&buf) {
                    let ev: Vec<u8> = buf.drain(..pos + 2).collect();
                    let text = String::from_utf8_lossy(&ev);
                    for line in text.lines() {
                        let Some(data) = line.strip_prefix("data:") else {
                            continue;
                        };
                        let data = data.trim();
                        if data == "[DONE]" {
                            return Outcome::Success;
                        }
                        events += 1;
                        match serde_json::from_str::<Value>(data) {
                            Ok(v) if v.get("error").is_some() => {
                                return match error_kind(&v) {
                                    Some(k) => Outcome::Explained(format!("stream:{k}")),
                                    None => Outcome::Unexplained("error event without a kind".into()),
                                };
                            }
                            Ok(_) => {}
                            Err(_) => return Outcome::Unexplained("an event that is not JSON".into()),
                        }
                        if drop_after.is_some_and(|n| events >= n) {
                            return Outcome::Abandoned;
                        }
                    }
                }
            }
            Some(Err(e)) => return Outcome::Unexplained(format!("stream broke: {e}")),
            None => return Outcome::Unexplained("stream ended without [DONE] or an error event".into()),
        }
    }
}

fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}
