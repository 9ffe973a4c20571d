//! The JSON of every proxied call: parsing a client's chat request and an
//! upstream's answer (and a stream chunk), and encoding them again. These
//! run once or twice per request on the gateway's hot path.
//!
//! `cargo bench -p breakwater --bench wire_json`

use breakwater::types::{ChatChunk, ChatRequest, ChatResponse};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

/// What the load runs send: one short user turn.
const SMALL_REQUEST: &str = r#"{"model":"nocache","messages":[{"role":"user","content":"bench 1 2"}]}"#;

/// A larger request: system prompt, two turns, sampling fields, a tool and
/// a field breakwater does not model.
const LARGE_REQUEST: &str = r#"{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":256,"user":"u-42","metadata":{"team":"search"},
"messages":[{"role":"system","content":"You are a careful assistant who answers briefly and cites sources when asked."},
{"role":"user","content":"What is the capital of France, and what river runs through it?"},
{"role":"assistant","content":"Paris; the Seine."},
{"role":"user","content":[{"type":"text","text":"And its population?"}]}],
"tools":[{"type":"function","function":{"name":"lookup","description":"look a fact up","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}]}"#;

/// The simulator's answer, as an upstream sends it.
const RESPONSE: &str = r#"{"id":"chatcmpl-sim0023ccbd","object":"chat.completion","created":1796212531,"model":"sim-1","choices":[{"index":0,"message":{"role":"assistant","content":"Shore morning shore summer candle lantern patient market."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":8,"total_tokens":13},"system_fingerprint":"breakwater-sim"}"#;

/// One streamed token.
const CHUNK: &str = r#"{"id":"chatcmpl-sim0023ccbd","object":"chat.completion.chunk","created":1796212531,"model":"sim-1","choices":[{"index":0,"delta":{"content":" lantern"},"finish_reason":null}]}"#;

/// A Gemini answer, as `generateContent` sends it.
const GEMINI_RESPONSE: &str = r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Shore morning shore summer candle lantern patient market."}]},"finishReason":"STOP","index":0,"safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","probability":"NEGLIGIBLE"}]}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":8,"totalTokenCount":13},"modelVersion":"gemini-2.0-flash","responseId":"r-0023ccbd"}"#;

/// One streamed Anthropic token (a `content_block_delta` event's data).
const ANTHROPIC_DELTA: &str =
    r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" lantern"}}"#;

fn benches(c: &mut Criterion) {
    c.bench_function("parse small chat request", |b| {
        b.iter(|| serde_json::from_str::<ChatRequest>(black_box(SMALL_REQUEST)).unwrap())
    });
    c.bench_function("parse large chat request", |b| {
        b.iter(|| serde_json::from_str::<ChatRequest>(black_box(LARGE_REQUEST)).unwrap())
    });
    c.bench_function("parse chat response", |b| {
        b.iter(|| serde_json::from_str::<ChatResponse>(black_box(RESPONSE)).unwrap())
    });
    c.bench_function("parse chat response from bytes, serde_json::from_slice", |b| {
        b.iter(|| serde_json::from_slice::<ChatResponse>(black_box(RESPONSE.as_bytes())).unwrap())
    });
    c.bench_function("parse chat response from bytes, from_json_bytes", |b| {
        b.iter(|| breakwater::types::from_json_bytes::<ChatResponse>(black_box(RESPONSE.as_bytes())).unwrap())
    });
    c.bench_function("parse gemini response", |b| {
        b.iter(|| {
            serde_json::from_str::<breakwater::wire::gemini::GenerateContentResponse>(black_box(GEMINI_RESPONSE))
                .unwrap()
        })
    });
    c.bench_function("parse stream chunk", |b| {
        b.iter(|| serde_json::from_str::<ChatChunk>(black_box(CHUNK)).unwrap())
    });
    c.bench_function("parse anthropic stream event", |b| {
        b.iter(|| breakwater::wire::anthropic::StreamEvent::parse(black_box(ANTHROPIC_DELTA)).unwrap())
    });
    let req: ChatRequest = serde_json::from_str(LARGE_REQUEST).unwrap();
    c.bench_function("encode large chat request", |b| {
        b.iter(|| serde_json::to_vec(black_box(&req)).unwrap())
    });
    let resp: ChatResponse = serde_json::from_str(RESPONSE).unwrap();
    c.bench_function("encode chat response", |b| {
        b.iter(|| serde_json::to_vec(black_box(&resp)).unwrap())
    });
}

criterion_group!(wire, benches);
criterion_main!(wire);
