//! Single flight for streams: one upstream stream fanned out to every
//! waiter, with a replay buffer so a late joiner misses nothing.
//!
//! A broadcast channel would drop chunks for a slow or late receiver; here
//! the flight keeps every item it has seen (the answer is bounded, and the
//! cache assembles it anyway) and a `watch` tells subscribers how far it
//! got. Each subscriber reads at its own pace.

use super::flights::{FinishGuard, Flights, Membership};
use super::{CoalesceStats, Counters, lost_call};
use crate::cache::CacheKey;
use crate::error::{Error, Result};
use crate::provider::ChatStream;
use crate::types::ChatChunk;
use futures::StreamExt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// How far a shared stream has got.
#[derive(Debug, Clone)]
enum Phase {
    /// The upstream call has not answered yet.
    Starting,
    /// Streaming: `len` items buffered; `done` once the upstream ended.
    Open { len: usize, done: bool },
    /// The call failed before a stream began.
    Failed(Error),
}

/// The state shared by the waiters of one stream.
pub(crate) struct Shared {
    items: Mutex<Vec<Result<ChatChunk>>>,
    phase: watch::Sender<Phase>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            items: Mutex::new(Vec::new()),
            phase: watch::channel(Phase::Starting).0,
        }
    }

    fn push(&self, item: Result<ChatChunk>) {
        let len = match self.items.lock() {
            Ok(mut items) => {
                items.push(item);
                items.len()
            }
            Err(_) => return,
        };
        self.phase.send_modify(|p| *p = Phase::Open { len, done: false });
    }

    fn end(&self) {
        self.phase.send_modify(|p| {
            if let Phase::Open { done, .. } = p {
                *done = true;
            }
        });
    }

    /// The last word when the call died without finishing (panic, abort).
    fn abandon(&self) {
        let (starting, open) = match &*self.phase.borrow() {
            Phase::Starting => (true, false),
            Phase::Open { done, .. } => (false, !done),
            Phase::Failed(_) => (false, false),
        };
        if starting {
            self.phase.send_replace(Phase::Failed(lost_call()));
        } else if open {
            self.push(Err(lost_call()));
            self.end();
        }
    }
}

/// Single flight for streamed answers. Cheap to clone.
#[derive(Clone)]
pub struct StreamCoalescer {
    flights: Arc<Flights<Shared>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for StreamCoalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCoalescer")
            .field("in_flight", &self.flights.len())
            .finish()
    }
}

impl Default for StreamCoalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamCoalescer {
    /// An empty table.
    pub fn new() -> Self {
        StreamCoalescer {
            flights: Arc::new(Flights::new()),
            counters: Arc::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CoalesceStats {
        self.counters.snapshot(self.flights.len())
    }

    /// Opens `call`'s stream unless an identical one (same `key`) is in
    /// flight, and returns a stream of every chunk of the shared one. An
    /// error before the stream began is every waiter's error. The upstream
    /// stream is read in a task of its own, cancelled when every returned
    /// stream (and every caller still waiting here) is gone.
    pub async fn run_stream<F, Fut>(&self, key: CacheKey, call: F) -> Result<ChatStream>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<ChatStream>> + Send + 'static,
    {
        let (member, leader) = self.flights.join(key, Shared::new);
        self.counters.count(leader);
        let mut rx = member.flight().state.phase.subscribe();
        if leader {
            let guard = FinishGuard {
                flights: member.flights().clone(),
                key: member.key(),
                flight: member.flight().clone(),
                on_drop: Some(Box::new(Shared::abandon)),
            };
            let task = tokio::spawn(pump(guard, call));
            member.set_abort(task.abort_handle());
        }
        let phase = match rx.wait_for(|p| !matches!(p, Phase::Starting)).await {
            Ok(p) => p.clone(),
            Err(_) => Phase::Failed(lost_call()),
        };
        if let Phase::Failed(e) = phase {
            return Err(e);
        }
        Ok(subscriber(member, rx))
    }
}

async fn pump<F, Fut>(mut guard: FinishGuard<Shared>, call: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<ChatStream>> + Send + 'static,
{
    let shared = &guard.flight.state;
    let mut stream = match call().await {
        Ok(s) => s,
        Err(e) => {
            guard.flights.finish(&guard.key, &guard.flight);
            shared.phase.send_replace(Phase::Failed(e));
            guard.disarm();
            return;
        }
    };
    shared.phase.send_replace(Phase::Open { len: 0, done: false });
    while let Some(item) = stream.next().await {
        shared.push(item);
    }
    // Ended: later requests start afresh (and find what the stream stored).
    guard.flights.finish(&guard.key, &guard.flight);
    shared.end();
    guard.disarm();
}

/// One waiter's view: buffered items from the start, then live ones.
fn subscriber(member: Membership<Shared>, rx: watch::Receiver<Phase>) -> ChatStream {
    futures::stream::unfold((member, rx, 0usize), |(member, mut rx, next)| async move {
        loop {
            let phase = rx.borrow_and_update().clone();
            match phase {
                Phase::Open { len, done } => {
                    if next < len {
                        let item = member
                            .flight()
                            .state
                            .items
                            .lock()
                            .ok()
                            .and_then(|items| items.get(next).cloned())
                            .unwrap_or_else(|| Err(lost_call()));
                        return Some((item, (member, rx, next + 1)));
                    }
                    if done {
                        return None;
                    }
                }
                Phase::Failed(_) => return None,
                Phase::Starting => {}
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    })
    .boxed()
}
