//! Deadlines and timeouts that guarantee no call hangs.
//!
//! Four clocks: connect (in the HTTP client), first token, idle between
//! chunks, and a total deadline. The first-token clock starts when the
//! request is sent, not when the first chunk arrives, so an upstream that
//! accepts the connection and never answers is caught.

use crate::error::{Error, Result, TimeoutPhase, TransportCause};
use crate::types::ChatChunk;
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The timeouts of one upstream (`providers.*.timeouts` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP + TLS connect, in milliseconds.
    #[serde(default = "d_connect")]
    pub connect_ms: u64,
    /// From sending the request to the first streamed token.
    #[serde(default = "d_first_token")]
    pub first_token_ms: u64,
    /// Longest gap between two streamed chunks.
    #[serde(default = "d_idle")]
    pub idle_ms: u64,
    /// The whole call.
    #[serde(default = "d_total")]
    pub total_ms: u64,
}

fn d_connect() -> u64 {
    2_000
}
fn d_first_token() -> u64 {
    15_000
}
fn d_idle() -> u64 {
    30_000
}
fn d_total() -> u64 {
    120_000
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: d_connect(),
            first_token_ms: d_first_token(),
            idle_ms: d_idle(),
            total_ms: d_total(),
        }
    }
}

impl Timeouts {
    /// Connect timeout.
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    /// First-token timeout.
    pub fn first_token(&self) -> Duration {
        Duration::from_millis(self.first_token_ms)
    }
    /// Idle timeout.
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    /// Total timeout.
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Runs `fut` until `deadline`; past it, fails with a timeout in `phase`.
pub async fn run_until<T>(
    deadline: Option<Instant>,
    phase: TimeoutPhase,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match deadline {
        None => fut.await,
        Some(d) => match tokio::time::timeout_at(d, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::timeout(
                phase,
                format!("no answer within the {} deadline", phase.as_str()),
            )),
        },
    }
}

/// A boxed stream of chunks, as providers return them.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>>;

/// Wraps a chunk stream so that it
/// - fails with `timeout (first_token)` if no chunk with output arrives by
///   `first_token_at` (role-only and keep-alive chunks do not stop the clock),
/// - fails with `timeout (idle)` when two chunks are more than `idle` apart,
/// - fails with `timeout (total)` at `total_at`,
/// - fails with `network (truncated)` if it ends before any choice finished,
/// - ends after the first error (never yields after one).
pub fn guard_stream(
    inner: ChunkStream,
    first_token_at: Option<Instant>,
    idle: Option<Duration>,
    total_at: Option<Instant>,
) -> ChunkStream {
    let first = earliest(first_token_at, total_at);
    let (deadline, phase) = match (first_token_at, total_at) {
        (Some(f), Some(t)) if t < f => (Some(t), TimeoutPhase::Total),
        (Some(_), _) => (first, TimeoutPhase::FirstToken),
        (None, Some(t)) => (Some(t), TimeoutPhase::Total),
        (None, None) => (None, TimeoutPhase::Total),
    };
    Box::pin(Guarded {
        inner,
        sleep: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        phase,
        idle,
        total_at,
        seen_output: false,
        finished: false,
        done: false,
    })
}

struct Guarded {
    inner: ChunkStream,
    sleep: Option<Pin<Box<Sleep>>>,
    phase: TimeoutPhase,
    idle: Option<Duration>,
    total_at: Option<Instant>,
    seen_output: bool,
    finished: bool,
    done: bool,
}

impl Guarded {
    fn rearm(&mut self) {
        let idle_at = self.idle.map(|d| Instant::now() + d);
        let (at, phase) = match (idle_at, self.total_at) {
            (Some(i), Some(t)) if t <= i => (Some(t), TimeoutPhase::Total),
            (Some(i), _) => (Some(i), TimeoutPhase::Idle),
            (None, t) => (t, TimeoutPhase::Total),
        };
        self.phase = phase;
        match (at, self.sleep.as_mut()) {
            (Some(at), Some(s)) => s.as_mut().reset(at),
            (Some(at), None) => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            (None, _) => self.sleep = None,
        }
    }
}

impl Stream for Guarded {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if chunk.choices.iter().any(|c| c.finish_reason.is_some()) {
                    this.finished = true;
                }
                if chunk.has_output() {
                    this.seen_output = true;
                }
                // Before the first output the first-token clock keeps running.
                if this.seen_output {
                    this.rearm();
                }
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                return Poll::Ready(Some(Err(e)));
            }
            Poll::Ready(None) => {
                this.done = true;
                if this.finished {
                    return Poll::Ready(None);
                }
                return Poll::Ready(Some(Err(Error::network(
                    TransportCause::Truncated,
                    "the stream ended before the answer finished",
                ))));
            }
            Poll::Pending => {}
        }
        if let Some(s) = this.sleep.as_mut()
            && s.as_mut().poll(cx).is_ready()
        {
            this.done = true;
            let what = match this.phase {
                TimeoutPhase::FirstToken => "no token arrived in time",
                TimeoutPhase::Idle => "the stream stalled between chunks",
                _ => "the call ran out of time",
            };
            return Poll::Ready(Some(Err(Error::timeout(this.phase, what))));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::types::{ChunkChoice, Delta, FinishReason};
    use futures::StreamExt;

    fn text_chunk(t: &str) -> ChatChunk {
        let mut c = ChatChunk::new("id", "m", 0);
        c.choices.push(ChunkChoice {
            delta: Delta {
                content: Some(t.into()),
                ..Default::default()
            },
            ..Default::default()
        });
        c
    }

    fn finish_chunk() -> ChatChunk {
        let mut c = ChatChunk::new("id", "m", 0);
        c.choices.push(ChunkChoice {
            finish_reason: Some(FinishReason::Stop),
            ..Default::default()
        });
        c
    }

    fn role_chunk() -> ChatChunk {
        let mut c = ChatChunk::new("id", "m", 0);
        c.choices.push(ChunkChoice::default());
        c
    }

    /// A stream that yields `items` with the given delays before each.
    fn timed(items: Vec<(u64, ChatChunk)>) -> ChunkStream {
        Box::pin(futures::stream::unfold(items.into_iter(), |mut it| async move {
            let (delay, chunk) = it.next()?;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Some((Ok(chunk), it))
        }))
    }

    fn hang() -> ChunkStream {
        Box::pin(futures::stream::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn first_token_fires_while_nothing_arrives() {
        let start = Instant::now();
        let mut s = guard_stream(
            hang(),
            Some(start + Duration::from_secs(15)),
            Some(Duration::from_secs(30)),
            None,
        );
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!((e.kind, e.phase), (ErrorKind::Timeout, Some(TimeoutPhase::FirstToken)));
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        assert!(s.next().await.is_none(), "nothing after an error");
    }

    #[tokio::test(start_paused = true)]
    async fn role_only_chunks_do_not_stop_the_first_token_clock() {
        let start = Instant::now();
        let items = vec![(10, role_chunk()), (10, role_chunk())];
        let inner = Box::pin(timed(items).chain(futures::stream::pending()));
        let mut s = guard_stream(
            inner,
            Some(start + Duration::from_secs(1)),
            Some(Duration::from_millis(100)),
            None,
        );
        assert!(s.next().await.unwrap().is_ok());
        assert!(s.next().await.unwrap().is_ok());
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!(e.phase, Some(TimeoutPhase::FirstToken));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_fires_on_a_stall_after_output() {
        let start = Instant::now();
        let inner =
            Box::pin(timed(vec![(100, text_chunk("a")), (200, text_chunk("b"))]).chain(futures::stream::pending()));
        let mut s = guard_stream(
            inner,
            Some(start + Duration::from_secs(15)),
            Some(Duration::from_millis(500)),
            None,
        );
        assert_eq!(s.next().await.unwrap().unwrap().text(), "a");
        assert_eq!(s.next().await.unwrap().unwrap().text(), "b");
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!(e.phase, Some(TimeoutPhase::Idle));
        assert_eq!(start.elapsed(), Duration::from_millis(800));
    }

    #[tokio::test(start_paused = true)]
    async fn total_deadline_bounds_a_slow_but_steady_stream() {
        let start = Instant::now();
        let items: Vec<_> = (0..100).map(|_| (450, text_chunk("x"))).collect();
        let mut s = guard_stream(
            timed(items),
            Some(start + Duration::from_secs(15)),
            Some(Duration::from_secs(1)),
            Some(start + Duration::from_secs(2)),
        );
        let mut n = 0;
        let err = loop {
            match s.next().await.unwrap() {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(err.phase, Some(TimeoutPhase::Total));
        assert_eq!(n, 4);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn end_without_finish_is_truncation() {
        let mut s = guard_stream(timed(vec![(1, text_chunk("a"))]), None, None, None);
        assert!(s.next().await.unwrap().is_ok());
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!((e.kind, e.cause), (ErrorKind::Network, Some(TransportCause::Truncated)));
        let mut s = guard_stream(timed(vec![(1, text_chunk("a")), (1, finish_chunk())]), None, None, None);
        assert!(s.next().await.unwrap().is_ok());
        assert!(s.next().await.unwrap().is_ok());
        assert!(s.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn run_until_times_out() {
        let r: Result<()> = run_until(
            Some(Instant::now() + Duration::from_millis(50)),
            TimeoutPhase::Total,
            futures::future::pending(),
        )
        .await;
        assert_eq!(r.unwrap_err().phase, Some(TimeoutPhase::Total));
        let r = run_until(None, TimeoutPhase::Total, async { Ok(5) }).await;
        assert_eq!(r.unwrap(), 5);
    }
}
