//! The OpenAI-compatible routes: `/v1/chat/completions` (streamed and
//! not), `/v1/embeddings` (micro-batched), `/v1/models`.

use super::common::{Hold, Peer, admit, authorize, estimate_cost, parse_json, read_body};
use crate::controls::{self, meta_headers};
use crate::errors::{ApiError, Flavor, body_of, status_of};
use crate::live::Event;
use crate::state::{AppState, Gateway};
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use breakwater::client::{CallMeta, RequestOptions, StreamSummary};
use breakwater::error::Error;
use breakwater::types::{ChatRequest, EmbeddingRequest};
use futures::StreamExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// `req_` and 16 hex digits, written in place (`format!` would build a
/// `String` to copy into the `Arc`).
fn new_request_id() -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"req_0000000000000000";
    let n = rand::random::<u64>();
    for (i, b) in id[4..].iter_mut().enumerate() {
        *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    Arc::from(std::str::from_utf8(&id).unwrap_or("req_0"))
}

/// Builds the event for the live statistics from a finished call.
pub(crate) fn event_of(
    meta: Option<&CallMeta>,
    err: Option<&Error>,
    latency: std::time::Duration,
    stream: bool,
) -> Event {
    let mut e = Event {
        latency,
        error: err.map(|e| e.kind),
        stream,
        ..Default::default()
    };
    if let Some(m) = meta {
        e.retries = m.retries() as u32;
        e.failovers = m.failovers() as u32;
        e.hedged = m.hedged;
        e.degraded = m.degraded.is_some();
        e.cache = Some(m.cache);
        e.ttft = m.ttft_ms.map(std::time::Duration::from_millis);
        if let Some(u) = &m.usage {
            let cached = matches!(
                m.cache,
                breakwater::cache::CacheOutcome::Hit | breakwater::cache::CacheOutcome::Semantic
            );
            if cached {
                e.saved_tokens = u64::from(u.total_tokens);
            } else {
                e.prompt_tokens = u64::from(u.prompt_tokens);
                e.completion_tokens = u64::from(u.completion_tokens);
                e.cost_usd = m.cost_usd;
            }
        }
    }
    e
}

/// Common start of a request: controls, body, gateway.
pub(crate) struct Start {
    pub gw: Arc<Gateway>,
    pub controls: controls::Controls,
    pub request_id: Arc<str>,
    pub body: Bytes,
    pub t0: Instant,
}

pub(crate) async fn start(app: &AppState, headers: &HeaderMap, body: Body, flavor: Flavor) -> Result<Start, ApiError> {
    let t0 = Instant::now();
    let gw = app.gateway.load_full();
    let controls = match controls::parse(headers) {
        Ok(c) => c,
        Err(e) => return Err(ApiError::new(e, flavor, &new_request_id())),
    };
    let request_id = controls.request_id.clone().unwrap_or_else(new_request_id);
    let body = read_body(body, gw.config.server.max_body_bytes)
        .await
        .map_err(|e| ApiError::new(e, flavor, &request_id))?;
    Ok(Start {
        gw,
        controls,
        request_id,
        body,
        t0,
    })
}

impl Start {
    /// Parses the body as JSON and lets it go. The body (like the request's
    /// headers) is a slice of the connection's read buffer in hyper, and
    /// while any slice of it lives, hyper's next read cannot reuse that
    /// buffer and reserves another 8 KiB for the connection. Handlers also
    /// drop their `HeaderMap` before the upstream call, for the same reason
    /// (measured: 8 KiB less per held stream).
    pub(crate) fn take_json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, Error> {
        let body = std::mem::take(&mut self.body);
        parse_json(&body)
    }

    /// The answer to a request refused before any call, counted in the
    /// metrics and live statistics like every other.
    pub(crate) fn refuse(
        &self,
        app: &AppState,
        route: &'static str,
        flavor: Flavor,
        e: Error,
        h: HeaderMap,
    ) -> Response {
        let status = status_of(&e);
        crate::metrics::request(route, "unknown", status.as_u16(), None, self.t0.elapsed());
        app.live.record(&event_of(None, Some(&e), self.t0.elapsed(), false));
        ApiError::new(e, flavor, &self.request_id)
            .with_headers(h)
            .into_response()
    }

    /// What every chat route does before calling: validate the request,
    /// check the key against the model, take the key's limits and budget,
    /// and build the call's options.
    pub(crate) async fn admit_chat(
        &self,
        app: &AppState,
        headers: &HeaderMap,
        peer: SocketAddr,
        req: &ChatRequest,
        route: &'static str,
        flavor: Flavor,
    ) -> Result<(Hold, RequestOptions), Response> {
        let refuse = |e, h| self.refuse(app, route, flavor, e, h);
        breakwater::client::validate::chat(req).map_err(|e| refuse(e, HeaderMap::new()))?;
        let key = authorize(&self.gw, headers, peer, &req.model).map_err(|e| refuse(e, HeaderMap::new()))?;
        // Only a key's token limits and budget use the estimates (a scan of
        // the prompt and a price lookup): open mode and plain keys skip them.
        let (tokens, cost) = if key
            .as_ref()
            .is_some_and(|k| !k.limits.is_unlimited() || k.spend.is_some())
        {
            let prompt = u64::from(req.estimate_prompt_tokens());
            let completion = u64::from(breakwater::mode::expected_output_tokens(req));
            (
                prompt + completion,
                estimate_cost(&self.gw, &req.model, prompt, completion),
            )
        } else {
            (0, breakwater::policy::spend::Spend::default())
        };
        let hold = admit(key.as_ref(), tokens, cost).await.map_err(|(e, h)| refuse(e, h))?;
        let opts = RequestOptions {
            tenant: hold.tenant(),
            deadline: None,
            timeout: self.controls.timeout,
            cache_control: self.controls.cache_control,
            idempotency_key: self.controls.idempotency_key.clone(),
            request_id: Some(self.request_id.clone()),
        };
        Ok((hold, opts))
    }
}

/// `POST /v1/chat/completions`.
#[allow(clippy::manual_async_fn)] // see routes/future_sizes.rs
pub fn chat_completions(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> impl Future<Output = Response> + Send {
    // Not an `async fn`: those store their arguments twice.
    async move {
        let mut s = match start(&app, &headers, body, Flavor::OpenAi).await {
            Ok(s) => s,
            Err(e) => return e.into_response(),
        };
        let req: ChatRequest = match s.take_json() {
            Ok(r) => r,
            Err(e) => return s.refuse(&app, "chat", Flavor::OpenAi, e, HeaderMap::new()),
        };
        let (hold, opts) = match s.admit_chat(&app, &headers, peer, &req, "chat", Flavor::OpenAi).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        drop(headers); // see Start::take_json
        let alias = req.model.clone();
        if req.is_stream() {
            // boxed: only streams need its space (routes/future_sizes.rs)
            return Box::pin(stream_chat(app, s, req, opts, hold, alias)).await;
        }
        match s.gw.client.chat(req, opts).await {
            Ok(out) => {
                let latency = s.t0.elapsed();
                let limits = hold.headers.clone();
                hold_settle(hold, &out.meta).await;
                crate::metrics::request("chat", &alias, 200, Some(&out.meta), latency);
                app.live.record(&event_of(Some(&out.meta), None, latency, false));
                // Sized for a typical answer rather than grown from 128 bytes.
                let mut body = Vec::with_capacity(1024);
                if serde_json::to_writer(&mut body, &*out.response).is_err() {
                    body.clear();
                }
                let mut resp = (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response();
                resp.headers_mut().extend(limits);
                meta_headers(resp.headers_mut(), &out.meta);
                resp
            }
            Err(f) => {
                let latency = s.t0.elapsed();
                let h = hold.headers.clone();
                hold.settle(None, 0.0).await;
                let status = status_of(&f.error);
                crate::metrics::request("chat", &alias, status.as_u16(), Some(&f.meta), latency);
                app.live
                    .record(&event_of(Some(&f.meta), Some(&f.error), latency, false));
                let mut mh = h;
                meta_headers(&mut mh, &f.meta);
                ApiError::new(f.error, Flavor::OpenAi, &s.request_id)
                    .with_headers(mh)
                    .into_response()
            }
        }
    }
}

pub(crate) fn hold_settle(hold: super::common::Hold, meta: &CallMeta) -> impl Future<Output = ()> + Send + use<> {
    let cached = matches!(
        meta.cache,
        breakwater::cache::CacheOutcome::Hit | breakwater::cache::CacheOutcome::Semantic
    );
    if cached || meta.idempotent_replay {
        hold.settle(None, 0.0)
    } else {
        hold.settle(meta.usage.as_ref(), meta.cost_usd)
    }
}

#[allow(clippy::manual_async_fn)] // see routes/future_sizes.rs
fn stream_chat(
    app: Arc<AppState>,
    s: Start,
    req: ChatRequest,
    opts: RequestOptions,
    hold: super::common::Hold,
    alias: String,
) -> impl Future<Output = Response> + Send {
    // Not an `async fn`: those store their arguments twice.
    async move {
        let include_usage = req.wants_stream_usage();
        let out = match s.gw.client.chat_stream(req, opts).await {
            Ok(o) => o,
            Err(f) => {
                let latency = s.t0.elapsed();
                let mut h = hold.headers.clone();
                hold.settle(None, 0.0).await;
                let status = status_of(&f.error);
                crate::metrics::request("chat_stream", &alias, status.as_u16(), Some(&f.meta), latency);
                app.live.record(&event_of(Some(&f.meta), Some(&f.error), latency, true));
                meta_headers(&mut h, &f.meta);
                return ApiError::new(f.error, Flavor::OpenAi, &s.request_id)
                    .with_headers(h)
                    .into_response();
            }
        };
        let mut headers = hold.headers.clone();
        meta_headers(&mut headers, &out.meta);
        let meta = out.meta;
        let done = out.done;
        let t0 = s.t0;
        let ttft = t0.elapsed();
        // Settle and record when the stream ends (or the client goes away).
        let finish = Finish {
            app,
            hold: Some(hold),
            meta,
            alias,
            t0,
            ttft,
            done,
        };
        let body = sse_body(out.stream, include_usage, finish);
        let mut resp = Response::new(Body::from_stream(body));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        h.extend(headers);
        resp
    }
}

/// What happens when a stream ends: settle the key, record statistics.
pub(crate) struct Finish {
    pub app: Arc<AppState>,
    pub hold: Option<super::common::Hold>,
    pub meta: CallMeta,
    pub alias: String,
    pub t0: Instant,
    pub ttft: std::time::Duration,
    pub done: Option<tokio::sync::oneshot::Receiver<StreamSummary>>,
}

impl Finish {
    /// Runs in a task: the summary arrives when the stream driver ends.
    pub(crate) fn complete(mut self, error: Option<Error>) {
        tokio::spawn(async move {
            let summary = match self.done.take() {
                Some(rx) => rx.await.ok(),
                None => None,
            };
            let mut meta = self.meta;
            meta.ttft_ms = Some(self.ttft.as_millis() as u64);
            if let Some(s) = &summary {
                meta.usage.clone_from(&s.usage);
                meta.cost_usd = s.cost_usd;
                meta.stitched = s.stitched;
                meta.attempts.extend(s.attempts.iter().cloned());
            }
            let error = error.or_else(|| summary.as_ref().and_then(|s| s.error.clone()));
            if let Some(h) = self.hold.take() {
                hold_settle(h, &meta).await;
            }
            let latency = self.t0.elapsed();
            let status = error.as_ref().map_or(200, |e| status_of(e).as_u16());
            crate::metrics::request("chat_stream", &self.alias, status, Some(&meta), latency);
            self.app
                .live
                .record(&event_of(Some(&meta), error.as_ref(), latency, true));
        });
    }
}

/// The OpenAI event stream: each chunk as `data:`, the usage chunk only
/// when asked for, `[DONE]` at a clean end, and an error event (no
/// `[DONE]`) when the stream broke.
fn sse_body(
    stream: breakwater::provider::ChatStream,
    include_usage: bool,
    finish: Finish,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    struct St {
        stream: breakwater::provider::ChatStream,
        finish: Option<Finish>,
        ended: bool,
    }
    impl Drop for St {
        fn drop(&mut self) {
            // The client went away before the end: record it as cancelled.
            if let Some(f) = self.finish.take() {
                f.complete(Some(Error::cancelled()));
            }
        }
    }
    let st = St {
        stream,
        finish: Some(finish),
        ended: false,
    };
    futures::stream::unfold(st, move |mut st| async move {
        if st.ended {
            return None;
        }
        loop {
            match st.stream.next().await {
                Some(Ok(c)) => {
                    if c.usage.is_some() && c.choices.is_empty() && !include_usage {
                        continue;
                    }
                    let mut buf = Vec::with_capacity(256);
                    buf.extend_from_slice(b"data: ");
                    if serde_json::to_writer(&mut buf, &c).is_err() {
                        continue;
                    }
                    buf.extend_from_slice(b"\n\n");
                    return Some((Ok(Bytes::from(buf)), st));
                }
                Some(Err(e)) => {
                    st.ended = true;
                    let body = body_of(&e, Flavor::OpenAi);
                    if let Some(f) = st.finish.take() {
                        f.complete(Some(e));
                    }
                    return Some((Ok(Bytes::from(format!("data: {body}\n\n"))), st));
                }
                None => {
                    st.ended = true;
                    if let Some(f) = st.finish.take() {
                        f.complete(None);
                    }
                    return Some((Ok(Bytes::from_static(breakwater::sse::DONE)), st));
                }
            }
        }
    })
}

/// `POST /v1/embeddings`.
#[allow(clippy::manual_async_fn)] // see routes/future_sizes.rs
pub fn embeddings(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> impl Future<Output = Response> + Send {
    // Not an `async fn`: those store their arguments twice.
    async move {
        let mut s = match start(&app, &headers, body, Flavor::OpenAi).await {
            Ok(s) => s,
            Err(e) => return e.into_response(),
        };
        let parsed = s.take_json();
        let fail = |e: Error, h: HeaderMap| {
            let status = status_of(&e);
            crate::metrics::request("embeddings", "unknown", status.as_u16(), None, s.t0.elapsed());
            ApiError::new(e, Flavor::OpenAi, &s.request_id)
                .with_headers(h)
                .into_response()
        };
        let mut req: EmbeddingRequest = match parsed {
            Ok(r) => r,
            Err(e) => return fail(e, HeaderMap::new()),
        };
        if let Err(e) = breakwater::client::validate::embeddings(&req) {
            return fail(e, HeaderMap::new());
        }
        let key = match authorize(&s.gw, &headers, peer, &req.model) {
            Ok(k) => k,
            Err(e) => return fail(e, HeaderMap::new()),
        };
        drop(headers); // see Start::take_json
        let tokens: u64 = req
            .input
            .texts()
            .map(|t| t.iter().map(|x| x.len().div_ceil(4) as u64).sum())
            .unwrap_or(1);
        let cost = estimate_cost(&s.gw, &req.model, tokens, 0);
        let hold = match admit(key.as_ref(), tokens, cost).await {
            Ok(h) => h,
            Err((e, h)) => return fail(e, h),
        };
        // Always ask upstream for floats; encode for the client as it asked
        // (the OpenAI SDKs ask for base64 by default).
        let want_b64 = req.encoding_format.as_deref() == Some("base64");
        req.encoding_format = None;
        let alias = req.model.clone();
        let opts = RequestOptions {
            tenant: hold.tenant(),
            timeout: s.controls.timeout,
            request_id: Some(s.request_id.clone()),
            ..Default::default()
        };
        // boxed: the micro-batcher's future is large (routes/future_sizes.rs)
        match Box::pin(s.gw.embeddings.embed(req, opts)).await {
            Ok((mut resp, meta)) => {
                let latency = s.t0.elapsed();
                let limits = hold.headers.clone();
                hold.settle(meta.usage.as_ref(), meta.cost_usd).await;
                crate::metrics::request("embeddings", &alias, 200, Some(&meta), latency);
                if want_b64 {
                    resp.data.iter_mut().for_each(|d| d.embedding.make_base64());
                }
                let mut r = axum::Json(resp).into_response();
                r.headers_mut().extend(limits);
                meta_headers(r.headers_mut(), &meta);
                r
            }
            Err(f) => {
                let h = hold.headers.clone();
                hold.settle(None, 0.0).await;
                let status = status_of(&f.error);
                crate::metrics::request("embeddings", &alias, status.as_u16(), Some(&f.meta), s.t0.elapsed());
                let mut mh = h;
                meta_headers(&mut mh, &f.meta);
                ApiError::new(f.error, Flavor::OpenAi, &s.request_id)
                    .with_headers(mh)
                    .into_response()
            }
        }
    }
}

/// `GET /v1/models`: the aliases (the key may use).
pub async fn models(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    let gw = app.gateway.load_full();
    let key = match authorize(&gw, &headers, peer, "") {
        Ok(k) => k,
        Err(e) => return ApiError::new(e, Flavor::OpenAi, &new_request_id()).into_response(),
    };
    let data: Vec<serde_json::Value> = gw
        .client
        .aliases()
        .into_iter()
        .filter(|a| key.as_ref().is_none_or(|k| k.allows(a)))
        .map(|a| serde_json::json!({"id": a, "object": "model", "created": 0, "owned_by": "breakwater"}))
        .collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_ids_are_req_and_sixteen_hex_digits() {
        let a = super::new_request_id();
        let b = super::new_request_id();
        for id in [&a, &b] {
            assert_eq!(id.len(), 20, "{id}");
            assert!(id.starts_with("req_"), "{id}");
            assert!(
                id[4..]
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
                "{id}"
            );
        }
        assert_ne!(a, b);
    }
}
