//! Streams and the cache: replaying a hit as chunks, and storing a streamed
//! miss once it has completed.

use super::exact::{CacheHit, ExactCache};
use super::key::CacheKey;
use super::policy::ModelCacheConfig;
use crate::provider::ChatStream;
use crate::types::{ChatChunk, ChatResponse, StreamAssembler, response_to_chunks};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Text bytes per replayed chunk: small enough to look like a stream to a
/// client that renders incrementally, large enough to keep the chunk count
/// (and SSE framing) low.
pub const REPLAY_PIECE_BYTES: usize = 64;

/// A hit as a chunk stream (role chunk, text pieces, finish chunk, and a
/// usage chunk when `include_usage`).
pub fn replay(hit: &CacheHit, include_usage: bool) -> ChatStream {
    let chunks = response_to_chunks(&hit.response, REPLAY_PIECE_BYTES, include_usage);
    futures::stream::iter(chunks.into_iter().map(Ok)).boxed()
}

/// What to do with a completed stream's assembled answer.
pub type OnComplete = Box<dyn FnOnce(Arc<ChatResponse>) -> BoxFuture<'static, ()> + Send>;

/// Passes a stream through untouched, assembling it on the side; when it
/// ends cleanly and complete (every choice finished, no error item), the
/// callback runs with the assembled answer before the end is reported — so
/// a caller that has seen the end finds what the callback stored. A stream
/// dropped early, or one that failed, runs nothing.
pub struct TapComplete {
    inner: ChatStream,
    assembler: Option<StreamAssembler>,
    on_complete: Option<OnComplete>,
    running: Option<BoxFuture<'static, ()>>,
    done: bool,
}

impl TapComplete {
    /// Wraps `inner`.
    pub fn new(inner: ChatStream, on_complete: OnComplete) -> Self {
        TapComplete {
            inner,
            assembler: Some(StreamAssembler::new()),
            on_complete: Some(on_complete),
            running: None,
            done: false,
        }
    }

    /// Boxed as a [`ChatStream`].
    pub fn boxed(self) -> ChatStream {
        Box::pin(self)
    }
}

impl Stream for TapComplete {
    type Item = crate::Result<ChatChunk>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(f) = this.running.as_mut() {
                return match f.poll_unpin(cx) {
                    Poll::Ready(()) => {
                        this.running = None;
                        this.done = true;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
            match this.inner.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    if let Some(a) = this.assembler.as_mut() {
                        a.push(&chunk);
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Err(e))) => {
                    // An error item means the answer is incomplete.
                    this.assembler = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => match (this.assembler.take(), this.on_complete.take()) {
                    (Some(a), Some(f)) if a.is_complete() => this.running = Some(f(Arc::new(a.finish()))),
                    _ => this.done = true,
                },
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl ExactCache {
    /// Wraps a streamed miss so it is stored once complete (see
    /// [`TapComplete`]).
    pub fn store_stream(&self, key: &CacheKey, cfg: &ModelCacheConfig, stream: ChatStream) -> ChatStream {
        let cache = self.clone();
        let (key, cfg) = (*key, *cfg);
        let store: OnComplete = Box::new(move |resp| {
            async move {
                let _ = cache.store(&key, resp, &cfg).await;
            }
            .boxed()
        });
        TapComplete::new(stream, store).boxed()
    }
}
