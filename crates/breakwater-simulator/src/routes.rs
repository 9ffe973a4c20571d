//! The HTTP routes: OpenAI, Anthropic and Gemini endpoints backed by one
//! [`SimEngine`], plus `/_sim/*` admin routes for tests.

use crate::conn::ConnReset;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use breakwater::error::ErrorKind;
use breakwater::simulator::{Fault, Plan, ScriptStep, SimEngine, SimulatorConfig, embed_text};
use breakwater::sse::encode_event;
use breakwater::types::*;
use breakwater::wire::{anthropic, gemini, openai};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Shared state of the routes.
#[derive(Clone)]
pub struct Ctx {
    /// The decisions and counters.
    pub engine: Arc<SimEngine>,
    /// When set, requests must carry this key.
    pub api_key: Option<Arc<str>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Format {
    fn route(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
        }
    }
}

/// Builds the router.
pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/embeddings", post(openai_embeddings))
        .route("/v1/models", get(models))
        .route("/v1/messages", post(anthropic_messages))
        .route("/v1beta/models", get(gemini_models))
        .route("/v1beta/models/{call}", post(gemini_call))
        .route("/_sim/stats", get(stats))
        .route("/_sim/reset", post(reset))
        .route("/_sim/config", get(get_config).put(put_config))
        .route("/_sim/script", post(push_script))
        .with_state(ctx)
}

fn error_response(
    format: Format,
    kind: ErrorKind,
    status: u16,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let body = match format {
        Format::OpenAi => {
            let code = match kind {
                ErrorKind::RateLimited => Some("rate_limit_exceeded"),
                ErrorKind::Authentication => Some("invalid_api_key"),
                ErrorKind::ContextLengthExceeded => Some("context_length_exceeded"),
                _ => None,
            };
            openai::error_body(kind, message, None, code)
        }
        Format::Anthropic => anthropic::error_body(kind, message),
        Format::Gemini => gemini::error_body(kind, message, retry_after.map(|d| d.as_secs())),
    };
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response();
    if let Some(d) = retry_after
        && let Ok(v) = HeaderValue::from_str(&d.as_secs().to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn bad_request(format: Format, message: String) -> Response {
    error_response(format, ErrorKind::InvalidRequest, 400, &message, None)
}

/// Checks the key the format carries.
fn authorized(ctx: &Ctx, format: Format, headers: &HeaderMap, query: &HashMap<String, String>) -> Result<(), Response> {
    let Some(key) = &ctx.api_key else { return Ok(()) };
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let given = match format {
        Format::OpenAi => h("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string),
        Format::Anthropic => h("x-api-key").map(str::to_string),
        Format::Gemini => h("x-goog-api-key")
            .map(str::to_string)
            .or_else(|| query.get("key").cloned()),
    };
    if given.as_deref() == Some(&**key) {
        return Ok(());
    }
    let status = if format == Format::Gemini { 400 } else { 401 };
    Err(error_response(
        format,
        ErrorKind::Authentication,
        status,
        "invalid API key",
        None,
    ))
}

/// Handles faults that replace the response entirely. `Some` is the error
/// response; `None` means the body handles the fault (or there is none).
async fn pre_fault(format: Format, fault: Option<Fault>, retry_after: Duration, reset: &ConnReset) -> Option<Response> {
    let (kind, status, msg) = match fault? {
        Fault::Hang => futures::future::pending().await,
        Fault::Reset => {
            reset.trigger();
            futures::future::pending().await
        }
        Fault::RateLimited => (ErrorKind::RateLimited, 429, "simulated rate limit"),
        Fault::ServerError => (ErrorKind::ServerError, 500, "simulated server error"),
        Fault::Unavailable => (ErrorKind::Overloaded, 503, "simulated service unavailable"),
        Fault::Overloaded if format == Format::Anthropic => (ErrorKind::Overloaded, 529, "Overloaded"),
        Fault::Overloaded => (ErrorKind::Overloaded, 503, "simulated overload"),
        Fault::Auth if format == Format::Gemini => (ErrorKind::Authentication, 400, "API key not valid."),
        Fault::Auth => (ErrorKind::Authentication, 401, "simulated invalid API key"),
        Fault::Malformed | Fault::CutStream | Fault::Stall => return None,
    };
    let ra = (fault == Some(Fault::RateLimited)).then_some(retry_after);
    let mut resp = error_response(format, kind, status, msg, ra);
    if kind == ErrorKind::RateLimited {
        let h = resp.headers_mut();
        h.insert("x-ratelimit-remaining-requests", HeaderValue::from_static("0"));
    }
    Some(resp)
}

/// Counts a stream as completed or cancelled when it is dropped.
struct StreamTracker {
    engine: Arc<SimEngine>,
    sent: u64,
    completed: bool,
}

impl Drop for StreamTracker {
    fn drop(&mut self) {
        self.engine.stream_ended(self.completed, self.sent);
    }
}

/// A complete (non-streamed) answer, with the body faults applied.
async fn complete_body(plan: &Plan, json_text: String) -> Response {
    let ok = |body: Body| {
        let mut r = Response::new(body);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    };
    match plan.fault {
        Some(Fault::Malformed) => {
            let half = &json_text[..json_text.len() / 2];
            ok(Body::from(half.to_string()))
        }
        Some(Fault::CutStream) => {
            let half = Bytes::from(json_text[..json_text.len() / 2].to_string());
            let s = futures::stream::iter(vec![
                Ok::<_, std::io::Error>(half),
                Err(std::io::Error::other("simulated cut")),
            ]);
            ok(Body::from_stream(s))
        }
        Some(Fault::Stall) => ok(Body::from_stream(futures::stream::pending::<
            Result<Bytes, std::io::Error>,
        >())),
        _ => {
            breakwater::simulator::wait(plan.token_interval * plan.tokens.len() as u32).await;
            ok(Body::from(json_text))
        }
    }
}

/// A streamed answer: `groups[i]` is sent after the first-token delay
/// (i = 0) or the token interval; faults cut, stall or garble it.
fn stream_body(engine: Arc<SimEngine>, plan: &Plan, groups: Vec<Vec<Bytes>>, garbage: Bytes) -> Response {
    engine.stream_started();
    let total = groups.len();
    let limit = match plan.fault {
        Some(Fault::CutStream | Fault::Stall | Fault::Malformed) => plan.cut_after.min(total),
        _ => total,
    };
    let fault = plan.fault;
    let first = plan.first_token_delay;
    let interval = plan.token_interval;
    let tracker = StreamTracker {
        engine,
        sent: 0,
        completed: false,
    };
    let state = (groups.into_iter(), 0usize, tracker, false);
    let s = futures::stream::unfold(state, move |(mut it, i, mut tracker, done)| {
        let garbage = garbage.clone();
        async move {
            if done {
                return None;
            }
            breakwater::simulator::wait(if i == 0 { first } else { interval }).await;
            if i < limit
                && let Some(group) = it.next()
            {
                let mut buf = Vec::new();
                for b in group {
                    buf.extend_from_slice(&b);
                }
                tracker.sent += 1;
                if i + 1 == total {
                    tracker.completed = true;
                }
                return Some((Ok(Bytes::from(buf)), (it, i + 1, tracker, false)));
            }
            match fault {
                Some(Fault::CutStream) => Some((Err(std::io::Error::other("simulated cut")), (it, i, tracker, true))),
                Some(Fault::Stall) => futures::future::pending().await,
                Some(Fault::Malformed) => Some((Ok(garbage), (it, i, tracker, true))),
                _ => None,
            }
        }
    });
    let mut r = Response::new(Body::from_stream(s.map(|r: Result<Bytes, std::io::Error>| r)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

fn parse<T: serde::de::DeserializeOwned>(format: Format, body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(format, format!("invalid request body: {e}")))
}

fn context_check(ctx: &Ctx, format: Format, req: &ChatRequest) -> Result<(), Response> {
    let limit = ctx.engine.config().for_route(format.route()).context_tokens;
    if req.estimate_prompt_tokens() > limit {
        return Err(error_response(
            format,
            ErrorKind::ContextLengthExceeded,
            400,
            &format!("This model's maximum context length is {limit} tokens. However, your messages resulted in more."),
            None,
        ));
    }
    Ok(())
}

async fn openai_chat(
    State(ctx): State<Ctx>,
    Extension(reset): Extension<ConnReset>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = Format::OpenAi;
    if let Err(r) = authorized(&ctx, f, &headers, &q) {
        return r;
    }
    let req: ChatRequest = match parse(f, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if req.messages.is_empty() {
        return bad_request(f, "messages must not be empty".into());
    }
    if let Err(r) = context_check(&ctx, f, &req) {
        return r;
    }
    let plan = ctx.engine.plan(f.route(), &req);
    let _guard = ctx.engine.in_flight();
    if !req.is_stream() {
        breakwater::simulator::wait(plan.first_token_delay).await;
    }
    if let Some(r) = pre_fault(f, plan.fault, plan.retry_after, &reset).await {
        return r;
    }
    if !req.is_stream() {
        let text = serde_json::to_string(&plan.response).unwrap_or_default();
        return complete_body(&plan, text).await;
    }
    let include_usage = req.wants_stream_usage();
    let mut groups: Vec<Vec<Bytes>> = plan
        .chunks()
        .into_iter()
        .filter(|c| include_usage || c.usage.is_none())
        .map(|c| vec![encode_event(None, &serde_json::to_string(&c).unwrap_or_default())])
        .collect();
    if let Some(last) = groups.last_mut() {
        last.push(Bytes::from_static(breakwater::sse::DONE));
    }
    stream_body(
        ctx.engine.clone(),
        &plan,
        groups,
        Bytes::from_static(b"data: {\"id\": \"broken\", \"choices\": [\n\n"),
    )
}

async fn openai_embeddings(
    State(ctx): State<Ctx>,
    Extension(reset): Extension<ConnReset>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = Format::OpenAi;
    if let Err(r) = authorized(&ctx, f, &headers, &q) {
        return r;
    }
    let req: EmbeddingRequest = match parse(f, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let texts: Vec<String> = match &req.input {
        EmbeddingInput::One(s) => vec![s.clone()],
        EmbeddingInput::Many(v) => v.clone(),
        EmbeddingInput::Tokens(t) => vec![format!("{t:?}")],
        EmbeddingInput::TokenBatches(b) => b.iter().map(|t| format!("{t:?}")).collect(),
    };
    if texts.is_empty() {
        return bad_request(f, "input must not be empty".into());
    }
    let (fault, delay, retry) = ctx.engine.plan_embed("openai_embeddings");
    let _guard = ctx.engine.in_flight();
    breakwater::simulator::wait(delay).await;
    if let Some(r) = pre_fault(f, fault, retry, &reset).await {
        return r;
    }
    let seed = ctx.engine.config().seed;
    let dims = req.dimensions.unwrap_or(64) as usize;
    let b64 = req.encoding_format.as_deref() == Some("base64");
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = embed_text(seed, t, dims);
            let embedding = if b64 {
                Value::String(EmbeddingVector::base64_of(&v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens: usize = texts.iter().map(|t| t.len().div_ceil(4).max(1)).sum();
    let text = json!({"object": "list", "data": data, "model": req.model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}).to_string();
    let plan_like_fault = fault.filter(|f| matches!(f, Fault::Malformed | Fault::CutStream | Fault::Stall));
    match plan_like_fault {
        Some(Fault::Malformed) => text[..text.len() / 2].to_string().into_response(),
        Some(Fault::CutStream | Fault::Stall) => {
            let s = futures::stream::iter(vec![Err::<Bytes, _>(std::io::Error::other("simulated cut"))]);
            Response::new(Body::from_stream(s))
        }
        _ => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
    }
}

async fn models() -> Json<Value> {
    Json(json!({"object": "list", "data": [
        {"id": "sim-1", "object": "model", "created": 0, "owned_by": "breakwater"},
        {"id": "sim-embed", "object": "model", "created": 0, "owned_by": "breakwater"}
    ]}))
}

async fn anthropic_messages(
    State(ctx): State<Ctx>,
    Extension(reset): Extension<ConnReset>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = Format::Anthropic;
    if let Err(r) = authorized(&ctx, f, &headers, &q) {
        return r;
    }
    if headers.get("anthropic-version").is_none() {
        return bad_request(f, "anthropic-version header is required".into());
    }
    let areq: anthropic::MessagesRequest = match parse(f, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let stream = areq.stream.unwrap_or(false);
    let req = match anthropic::from_anthropic_request(areq) {
        Ok(r) => r,
        Err(e) => return bad_request(f, e.message),
    };
    if let Err(r) = context_check(&ctx, f, &req) {
        return r;
    }
    let plan = ctx.engine.plan(f.route(), &req);
    let _guard = ctx.engine.in_flight();
    if !stream {
        breakwater::simulator::wait(plan.first_token_delay).await;
    }
    if let Some(r) = pre_fault(f, plan.fault, plan.retry_after, &reset).await {
        return r;
    }
    if !stream {
        let text = serde_json::to_string(&anthropic::to_anthropic_response(&plan.response)).unwrap_or_default();
        return complete_body(&plan, text).await;
    }
    let mut enc = anthropic::StreamEncoder::new(req.model.clone());
    let ev = |e: &anthropic::StreamEvent| encode_event(Some(e.name()), &serde_json::to_string(e).unwrap_or_default());
    let mut groups: Vec<Vec<Bytes>> = Vec::new();
    for (i, c) in plan.chunks().iter().enumerate() {
        let mut g: Vec<Bytes> = enc.push(c).iter().map(ev).collect();
        if i == 0 {
            g.push(ev(&anthropic::StreamEvent::Ping));
        }
        groups.push(g);
    }
    let tail: Vec<Bytes> = enc.finish().iter().map(ev).collect();
    if let Some(last) = groups.last_mut() {
        last.extend(tail);
    }
    stream_body(
        ctx.engine.clone(),
        &plan,
        groups,
        Bytes::from_static(b"event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\n\n"),
    )
}

async fn gemini_models() -> Json<Value> {
    Json(json!({"models": [{"name": "models/sim-1", "displayName": "Simulator"}]}))
}

async fn gemini_call(
    State(ctx): State<Ctx>,
    Extension(reset): Extension<ConnReset>,
    Path(call): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = Format::Gemini;
    if let Err(r) = authorized(&ctx, f, &headers, &q) {
        return r;
    }
    let Some((model, method)) = call.split_once(':') else {
        return error_response(f, ErrorKind::NotFound, 404, "expected models/{model}:{method}", None);
    };
    match method {
        "generateContent" | "streamGenerateContent" => {}
        "batchEmbedContents" => return gemini_embed(ctx, reset, body).await,
        _ => return error_response(f, ErrorKind::NotFound, 404, &format!("unknown method {method}"), None),
    }
    let stream = method == "streamGenerateContent";
    if stream && q.get("alt").map(String::as_str) != Some("sse") {
        return bad_request(f, "the simulator streams only with alt=sse".into());
    }
    let greq: gemini::GenerateContentRequest = match parse(f, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let req = match gemini::from_gemini_request(model, greq) {
        Ok(r) => r,
        Err(e) => return bad_request(f, e.message),
    };
    if let Err(r) = context_check(&ctx, f, &req) {
        return r;
    }
    let plan = ctx.engine.plan(f.route(), &req);
    let _guard = ctx.engine.in_flight();
    if !stream {
        breakwater::simulator::wait(plan.first_token_delay).await;
    }
    if let Some(r) = pre_fault(f, plan.fault, plan.retry_after, &reset).await {
        return r;
    }
    if !stream {
        let text = serde_json::to_string(&gemini::to_gemini_response(&plan.response)).unwrap_or_default();
        return complete_body(&plan, text).await;
    }
    // Google's servers end events with CRLF: exercise the parser on it.
    let ev = |p: &gemini::GenerateContentResponse| {
        Bytes::from(format!(
            "data: {}\r\n\r\n",
            serde_json::to_string(p).unwrap_or_default()
        ))
    };
    let mut enc = gemini::StreamEncoder::new();
    let mut groups: Vec<Vec<Bytes>> = plan
        .chunks()
        .iter()
        .map(|c| enc.push(c).iter().map(ev).collect())
        .collect();
    let tail: Vec<Bytes> = enc.finish().iter().map(ev).collect();
    if let Some(last) = groups.last_mut() {
        last.extend(tail);
    }
    stream_body(
        ctx.engine.clone(),
        &plan,
        groups,
        Bytes::from_static(b"data: {\"candidates\": [{\"content\r\n\r\n"),
    )
}

async fn gemini_embed(ctx: Ctx, reset: ConnReset, body: Bytes) -> Response {
    let f = Format::Gemini;
    let req: gemini::BatchEmbedRequest = match parse(f, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (fault, delay, retry) = ctx.engine.plan_embed("gemini_embeddings");
    let _guard = ctx.engine.in_flight();
    breakwater::simulator::wait(delay).await;
    if let Some(r) = pre_fault(f, fault, retry, &reset).await {
        return r;
    }
    let seed = ctx.engine.config().seed;
    let embeddings: Vec<Value> = req
        .requests
        .iter()
        .map(|r| {
            let text: String = r.content.parts.iter().filter_map(|p| p.text.as_deref()).collect();
            json!({"values": embed_text(seed, &text, r.output_dimensionality.unwrap_or(64) as usize)})
        })
        .collect();
    Json(json!({"embeddings": embeddings})).into_response()
}

async fn stats(State(ctx): State<Ctx>) -> Json<Value> {
    Json(serde_json::to_value(ctx.engine.stats()).unwrap_or(Value::Null))
}

async fn reset(State(ctx): State<Ctx>) -> StatusCode {
    ctx.engine.reset();
    StatusCode::NO_CONTENT
}

async fn get_config(State(ctx): State<Ctx>) -> Json<Value> {
    Json(serde_json::to_value(&*ctx.engine.config()).unwrap_or(Value::Null))
}

async fn put_config(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let cfg: SimulatorConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return bad_request(Format::OpenAi, format!("invalid simulator config: {e}")),
    };
    match ctx.engine.set_config(cfg) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => bad_request(Format::OpenAi, e),
    }
}

async fn push_script(State(ctx): State<Ctx>, body: Bytes) -> Response {
    let steps: Vec<ScriptStep> = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return bad_request(Format::OpenAi, format!("invalid script: {e}")),
    };
    ctx.engine.push_script(steps);
    StatusCode::NO_CONTENT.into_response()
}
