//! Driving a routed stream to its end: chunks pass through as they come;
//! when the upstream breaks after the first token, the stream ends with a
//! `finish_reason: "error"` chunk and then the error — never a clean end —
//! unless the alias stitches: the answer then continues on another target
//! that supports assistant prefill, from the partial text. Outcomes are
//! recorded (breaker, limits, statistics) when the stream ends.

use super::Inner;
use super::call::{self, Opened, TryOpts};
use super::meta::AttemptRecord;
use super::route::{Alias, candidates};
use super::target::{Admission, Target};
use crate::error::{Error, Result};
use crate::provider::ChatStream;
use crate::types::{ChatChunk, ChatRequest, ChunkChoice, Delta, FinishReason, Message, StreamAssembler, Usage};
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How a stream ended, sent when it does.
#[derive(Debug, Clone, Default)]
pub struct StreamSummary {
    /// `provider/model` that produced the (last part of the) answer.
    pub target: Option<Arc<str>>,
    /// Token usage, when the upstream reported it.
    pub usage: Option<Usage>,
    /// Cost in US dollars.
    pub cost_usd: f64,
    /// Whether the answer was continued on another target.
    pub stitched: bool,
    /// The error that ended it, if it broke.
    pub error: Option<Error>,
    /// Attempts made after the stream began (stitching).
    pub attempts: Vec<AttemptRecord>,
    /// From the first attempt to the end.
    pub latency: Duration,
    /// Time to the first token.
    pub ttft: Duration,
    /// Whether the client stopped reading before the end.
    pub abandoned: bool,
}

struct Current {
    stream: ChatStream,
    admission: Option<Admission>,
    target: Arc<Target>,
    started: Instant,
}

struct Drive {
    inner: Arc<Inner>,
    alias: Arc<Alias>,
    /// The request, kept only when the alias stitches (a stream may be
    /// held for minutes; a long prompt need not be held with it).
    req: Option<ChatRequest>,
    request_id: Arc<str>,
    deadline: Instant,
    queue: VecDeque<ChatChunk>,
    cur: Option<Current>,
    asm: StreamAssembler,
    /// Identity of the first stream, kept across a stitch.
    id: Option<(String, String, u64)>,
    summary: StreamSummary,
    first_started: Instant,
    done_tx: Option<oneshot::Sender<StreamSummary>>,
    pending_err: Option<Error>,
    skip_role: bool,
    ended: bool,
}

impl Drop for Drive {
    fn drop(&mut self) {
        if let Some(tx) = self.done_tx.take() {
            // The caller went away mid-stream: the upstream call is cancelled
            // by dropping it; the breaker permit counts as nothing.
            self.summary.abandoned = true;
            self.summary.latency = self.first_started.elapsed();
            let _ = tx.send(std::mem::take(&mut self.summary));
        }
    }
}

/// Wraps an opened stream.
pub(crate) fn drive(
    inner: Arc<Inner>,
    alias: Arc<Alias>,
    req: &ChatRequest,
    request_id: Arc<str>,
    deadline: Instant,
    opened: Opened,
    done_tx: Option<oneshot::Sender<StreamSummary>>,
) -> ChatStream {
    let summary = StreamSummary {
        target: Some(opened.target.id.clone()),
        ttft: opened.ttft,
        ..Default::default()
    };
    let d = Drive {
        inner,
        req: alias.cfg.stitch.then(|| req.clone()),
        alias,
        request_id,
        deadline,
        queue: opened.prefix.into(),
        cur: Some(Current {
            stream: opened.rest,
            admission: Some(opened.admission),
            target: opened.target,
            started: opened.started,
        }),
        asm: StreamAssembler::new(),
        id: None,
        summary,
        first_started: opened.started,
        done_tx,
        pending_err: None,
        skip_role: false,
        ended: false,
    };
    // The state is boxed on its own: `unfold` keeps either it or the step's
    // future, and an async fn's future stores its argument twice.
    Box::pin(futures::stream::unfold(Box::new(d), step))
}

fn is_role_only(c: &ChatChunk) -> bool {
    c.usage.is_none() && !c.has_output()
}

impl Drive {
    fn pass(&mut self, mut c: ChatChunk) -> ChatChunk {
        match &self.id {
            None => self.id = Some((c.id.clone(), c.model.clone(), c.created)),
            Some((id, model, created)) => {
                // After a stitch, keep the identity the client already saw.
                if c.id != *id {
                    c.id.clone_from(id);
                    c.model.clone_from(model);
                    c.created = *created;
                }
            }
        }
        if c.usage.is_some() {
            self.summary.usage = c.usage.clone();
        }
        self.asm.push(&c);
        c
    }

    fn send_summary(&mut self) {
        self.summary.latency = self.first_started.elapsed();
        if let (Some(u), Some(t)) = (&self.summary.usage, &self.summary.target) {
            let model = t.split_once('/').map_or(&**t, |(_, m)| m);
            self.summary.cost_usd = self.inner.prices.cost_of_usage(model, u).usd();
        }
        if let Some(tx) = self.done_tx.take() {
            let _ = tx.send(std::mem::take(&mut self.summary));
        }
    }

    fn error_finish(&self) -> ChatChunk {
        let (id, model, created) = self.id.clone().unwrap_or_default();
        let mut c = ChatChunk::new(id, model, created);
        c.choices.push(ChunkChoice {
            index: 0,
            delta: Delta::default(),
            finish_reason: Some(FinishReason::Error),
            logprobs: None,
        });
        c
    }

    /// Continues the answer on another target from the partial text.
    async fn stitch(&mut self, broken: &Arc<str>) -> Option<Opened> {
        let req = self.req.as_ref().filter(|_| self.alias.cfg.stitch)?;
        if self.asm.has_tool_calls() || Instant::now() >= self.deadline {
            return None;
        }
        let partial = self.asm.text().to_string();
        let mut req = req.clone();
        req.messages.push(Message::assistant(partial));
        for (t, _) in candidates(&self.inner, &self.alias, true) {
            if t.id == *broken || !t.provider.capabilities().assistant_prefill {
                continue;
            }
            let o = TryOpts {
                deadline: self.deadline,
                others_left: true,
                hedge: false,
                force_probe: false,
            };
            let (r, mut log) = call::open_stream(&self.inner, &t, &req, &self.request_id, o).await;
            self.summary.attempts.append(&mut log);
            if let Ok(opened) = r {
                return Some(opened);
            }
        }
        None
    }
}

async fn step(mut d: Box<Drive>) -> Option<(Result<ChatChunk>, Box<Drive>)> {
    if let Some(e) = d.pending_err.take() {
        d.ended = true;
        return Some((Err(e), d));
    }
    if d.ended {
        return None;
    }
    loop {
        if let Some(c) = d.queue.pop_front() {
            if d.skip_role && is_role_only(&c) {
                continue;
            }
            let c = d.pass(c);
            return Some((Ok(c), d));
        }
        let cur = d.cur.as_mut()?;
        match cur.stream.next().await {
            Some(Ok(c)) => {
                if d.skip_role && is_role_only(&c) {
                    continue;
                }
                let c = d.pass(c);
                return Some((Ok(c), d));
            }
            None => {
                let cur = d.cur.take()?;
                let used = d.summary.usage.as_ref().map_or(0, |u| u64::from(u.total_tokens));
                if let Some(a) = cur.admission {
                    a.finish::<()>(&Ok(()), used).await;
                }
                cur.target.stats.observe_success(cur.started.elapsed());
                d.ended = true;
                d.send_summary();
                return None;
            }
            Some(Err(e)) if d.asm.is_complete() => {
                // Every choice finished before the connection broke (e.g. it
                // dropped before `[DONE]`): the answer is whole.
                let cur = d.cur.take()?;
                tracing::debug!(target_name = %cur.target.id, error = %e, "stream broke after its last choice finished");
                let used = d.summary.usage.as_ref().map_or(0, |u| u64::from(u.total_tokens));
                if let Some(a) = cur.admission {
                    a.finish::<()>(&Ok(()), used).await;
                }
                cur.target.stats.observe_success(cur.started.elapsed());
                d.ended = true;
                d.send_summary();
                return None;
            }
            Some(Err(e)) => {
                let cur = d.cur.take()?;
                if let Some(a) = cur.admission {
                    a.finish_err(&e, 0).await;
                }
                cur.target.stats.observe_failure(e.kind, None);
                d.summary.attempts.push(AttemptRecord::failed(
                    &cur.target.id,
                    &e,
                    cur.started.elapsed(),
                    false,
                    false,
                ));
                // Boxed: a stream holds this future's state for its whole
                // life, and stitching (a whole new call) is rare.
                if let Some(opened) = Box::pin(d.stitch(&cur.target.id)).await {
                    d.summary.stitched = true;
                    d.summary.target = Some(opened.target.id.clone());
                    d.skip_role = true;
                    d.queue.extend(opened.prefix);
                    d.cur = Some(Current {
                        stream: opened.rest,
                        admission: Some(opened.admission),
                        target: opened.target,
                        started: opened.started,
                    });
                    continue;
                }
                d.summary.error = Some(e.clone());
                d.send_summary();
                let fin = d.error_finish();
                d.pending_err = Some(e);
                return Some((Ok(fin), d));
            }
        }
    }
}
