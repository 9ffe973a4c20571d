//! `POST /v1/messages`: the Anthropic Messages API in front of the
//! canonical client, streaming events included.

use super::common::Peer;
use super::openai::{Finish, event_of, start};
use crate::controls::meta_headers;
use crate::errors::{ApiError, Flavor, status_of};
use crate::state::AppState;
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use breakwater::error::Error;
use breakwater::wire::anthropic::{
    MessagesRequest, StreamEncoder, StreamEvent, from_anthropic_request, to_anthropic_response,
};
use futures::StreamExt;
use std::sync::Arc;

/// `POST /v1/messages`.
#[allow(clippy::manual_async_fn)] // see routes/future_sizes.rs
pub fn messages(
    State(app): State<Arc<AppState>>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> impl Future<Output = Response> + Send {
    // Not an `async fn`: those store their arguments twice.
    async move {
        let mut s = match start(&app, &headers, body, Flavor::Anthropic).await {
            Ok(s) => s,
            Err(e) => return e.into_response(),
        };
        let parsed = s.take_json();
        let refuse = |e: Error| s.refuse(&app, "messages", Flavor::Anthropic, e, HeaderMap::new());
        let areq: MessagesRequest = match parsed {
            Ok(r) => r,
            Err(e) => return refuse(e),
        };
        let stream = areq.stream.unwrap_or(false);
        let mut req = match from_anthropic_request(areq) {
            Ok(r) => r,
            Err(e) => return refuse(e),
        };
        let (hold, opts) = match s
            .admit_chat(&app, &headers, peer, &req, "messages", Flavor::Anthropic)
            .await
        {
            Ok(x) => x,
            Err(r) => return r,
        };
        drop(headers); // see Start::take_json
        let alias = req.model.clone();
        if !stream {
            req.stream = None;
            return match s.gw.client.chat(req, opts).await {
                Ok(out) => {
                    let latency = s.t0.elapsed();
                    let limits = hold.headers.clone();
                    super::openai_settle(hold, &out.meta).await;
                    crate::metrics::request("messages", &alias, 200, Some(&out.meta), latency);
                    app.live.record(&event_of(Some(&out.meta), None, latency, false));
                    let mut r = axum::Json(to_anthropic_response(&out.response)).into_response();
                    r.headers_mut().extend(limits);
                    meta_headers(r.headers_mut(), &out.meta);
                    r
                }
                Err(f) => {
                    let mut h = hold.headers.clone();
                    hold.settle(None, 0.0).await;
                    let status = status_of(&f.error);
                    crate::metrics::request("messages", &alias, status.as_u16(), Some(&f.meta), s.t0.elapsed());
                    app.live
                        .record(&event_of(Some(&f.meta), Some(&f.error), s.t0.elapsed(), false));
                    meta_headers(&mut h, &f.meta);
                    ApiError::new(f.error, Flavor::Anthropic, &s.request_id)
                        .with_headers(h)
                        .into_response()
                }
            };
        }
        req.stream = Some(true);
        let out = match s.gw.client.chat_stream(req, opts).await {
            Ok(o) => o,
            Err(f) => {
                let mut h = hold.headers.clone();
                hold.settle(None, 0.0).await;
                let status = status_of(&f.error);
                crate::metrics::request(
                    "messages_stream",
                    &alias,
                    status.as_u16(),
                    Some(&f.meta),
                    s.t0.elapsed(),
                );
                app.live
                    .record(&event_of(Some(&f.meta), Some(&f.error), s.t0.elapsed(), true));
                meta_headers(&mut h, &f.meta);
                return ApiError::new(f.error, Flavor::Anthropic, &s.request_id)
                    .with_headers(h)
                    .into_response();
            }
        };
        let mut headers = hold.headers.clone();
        meta_headers(&mut headers, &out.meta);
        let finish = Finish {
            app: app.clone(),
            hold: Some(hold),
            meta: out.meta,
            alias: alias.clone(),
            t0: s.t0,
            ttft: s.t0.elapsed(),
            done: out.done,
        };
        let body = events(out.stream, alias, finish);
        let mut resp = Response::new(Body::from_stream(body));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.extend(headers);
        resp
    }
}

fn encode(e: &StreamEvent) -> Bytes {
    breakwater::sse::encode_event(Some(e.name()), &serde_json::to_string(e).unwrap_or_default())
}

/// The Anthropic event stream; a failure mid-way is an `error` event.
fn events(
    stream: breakwater::provider::ChatStream,
    model: String,
    finish: Finish,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    struct St {
        stream: breakwater::provider::ChatStream,
        enc: StreamEncoder,
        finish: Option<Finish>,
        ended: bool,
        pinged: bool,
    }
    impl Drop for St {
        fn drop(&mut self) {
            if let Some(f) = self.finish.take() {
                f.complete(Some(Error::cancelled()));
            }
        }
    }
    let st = St {
        stream,
        enc: StreamEncoder::new(model),
        finish: Some(finish),
        ended: false,
        pinged: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        if st.ended {
            return None;
        }
        loop {
            match st.stream.next().await {
                Some(Ok(c)) => {
                    let evs = st.enc.push(&c);
                    if evs.is_empty() {
                        continue;
                    }
                    let mut buf = Vec::new();
                    for e in &evs {
                        buf.extend_from_slice(&encode(e));
                        if !st.pinged && matches!(e, StreamEvent::MessageStart { .. }) {
                            st.pinged = true;
                            buf.extend_from_slice(&encode(&StreamEvent::Ping));
                        }
                    }
                    return Some((Ok(Bytes::from(buf)), st));
                }
                Some(Err(e)) => {
                    st.ended = true;
                    let ev = StreamEncoder::error_event(&e);
                    if let Some(f) = st.finish.take() {
                        f.complete(Some(e));
                    }
                    return Some((Ok(encode(&ev)), st));
                }
                None => {
                    st.ended = true;
                    let mut buf = Vec::new();
                    for e in st.enc.finish() {
                        buf.extend_from_slice(&encode(&e));
                    }
                    if let Some(f) = st.finish.take() {
                        f.complete(None);
                    }
                    return Some((Ok(Bytes::from(buf)), st));
                }
            }
        }
    })
}
