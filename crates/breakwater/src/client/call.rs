//! Calling one target: admission, the call under the deadline, recording
//! the outcome, and retries at the same target.

use super::Inner;
use super::meta::AttemptRecord;
use super::target::{Admission, Target};
use crate::error::{Error, ErrorKind, Result, TimeoutPhase};
use crate::policy::retry::RetryDecision;
use crate::policy::timeout::run_until;
use crate::provider::{CallOptions, ChatStream};
use crate::types::{ChatChunk, ChatRequest, ChatResponse};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How one target is tried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TryOpts {
    pub deadline: Instant,
    /// Other targets remain after this one (long waits fail over instead).
    pub others_left: bool,
    /// This is a hedge.
    pub hedge: bool,
    /// Let the first call through an open breaker.
    pub force_probe: bool,
}

/// Tokens to reserve before the call: the prompt plus the answer's cap
/// (or the expected answer length).
pub(crate) fn token_estimate(req: &ChatRequest) -> u64 {
    u64::from(req.estimate_prompt_tokens()) + u64::from(crate::mode::expected_output_tokens(req))
}

/// What to do after a failed attempt at a target.
enum Next {
    RetryAfter(Duration),
    Stop,
}

fn after_error(
    inner: &Inner,
    target: &Target,
    err: &Error,
    attempt: u32,
    prev_wait: Option<Duration>,
    o: &TryOpts,
) -> Next {
    // Local refusals (limiter, bulkhead, breaker) are not retried here, nor
    // is a target whose breaker this failure just opened: the router moves on.
    if is_local(err) || !target.breaker.allows_calls() {
        return Next::Stop;
    }
    let d = inner
        .rng
        .with(|rng| inner.retry.decide(err, attempt, prev_wait, Some(o.deadline), rng));
    match d {
        RetryDecision::Retry { after } => {
            if o.others_left && after.as_millis() as u64 > inner.cfg.max_wait_before_failover_ms {
                return Next::Stop;
            }
            if !inner.budget.try_withdraw() {
                return Next::Stop;
            }
            Next::RetryAfter(after)
        }
        RetryDecision::GiveUp(_) => Next::Stop,
    }
}

/// Errors breakwater produced itself before sending anything.
pub(crate) fn is_local(e: &Error) -> bool {
    use crate::policy::concurrency::CODE_BULKHEAD_FULL;
    use crate::policy::ratelimit::{CODE_LOCAL_LIMIT, CODE_STORE_DOWN, CODE_TOO_LARGE};
    e.kind == ErrorKind::CircuitOpen
        || e.code
            .as_deref()
            .is_some_and(|c| [CODE_BULKHEAD_FULL, CODE_LOCAL_LIMIT, CODE_STORE_DOWN, CODE_TOO_LARGE].contains(&c))
}

fn observe_failure(t: &Target, e: &Error) {
    let cooldown = match e.kind {
        ErrorKind::RateLimited | ErrorKind::Overloaded => e.retry_after,
        _ => None,
    };
    t.stats.observe_failure(e.kind, cooldown);
}

/// Tries `target` until `once` succeeds or the retry policy gives up:
/// admission (limits → bulkheads → breaker), the attempt, its record in the
/// log and the target's statistics, and the wait before the next one.
/// `once` makes the call with the admission and records its outcome on it.
async fn with_retries<T, F, Fut>(
    inner: &Inner,
    target: &Arc<Target>,
    req: &ChatRequest,
    o: TryOpts,
    log: &mut Vec<AttemptRecord>,
    mut once: F,
) -> Result<T>
where
    F: FnMut(Admission) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    let mut prev_wait = None;
    let mut force = o.force_probe;
    loop {
        attempt += 1;
        let started = Instant::now();
        let max_wait = Duration::from_millis(inner.cfg.max_limiter_wait_ms);
        // The estimate scans the prompt: only limits use it.
        let tokens = if target.is_limited() { token_estimate(req) } else { 0 };
        let adm = match target
            .admit(tokens, o.deadline, max_wait, std::mem::take(&mut force))
            .await
        {
            Ok(a) => a,
            Err(e) => {
                log.push(AttemptRecord::failed(&target.id, &e, started.elapsed(), o.hedge, true));
                return Err(e);
            }
        };
        let res = {
            let _busy = target.stats.start();
            once(adm).await
        };
        match res {
            Ok(v) => {
                let took = started.elapsed();
                target.stats.observe_ttft(took);
                log.push(AttemptRecord::ok(&target.id, took, o.hedge));
                return Ok(v);
            }
            Err(e) => {
                observe_failure(target, &e);
                log.push(AttemptRecord::failed(&target.id, &e, started.elapsed(), o.hedge, false));
                match after_error(inner, target, &e, attempt, prev_wait, &o) {
                    Next::RetryAfter(wait) => {
                        prev_wait = Some(wait);
                        tokio::time::sleep(wait).await;
                    }
                    Next::Stop => return Err(e),
                }
            }
        }
    }
}

fn call_options(request_id: &Arc<str>, o: &TryOpts) -> CallOptions {
    CallOptions {
        deadline: Some(o.deadline),
        request_id: Some(request_id.clone()),
    }
}

/// A complete answer from `target`, retrying it per the policy, with the
/// log of its attempts.
pub(crate) async fn complete(
    inner: &Inner,
    target: &Arc<Target>,
    req: &ChatRequest,
    request_id: &Arc<str>,
    o: TryOpts,
) -> (Result<ChatResponse>, Vec<AttemptRecord>) {
    let mut log = Vec::new();
    let opts = call_options(request_id, &o);
    let res = with_retries(inner, target, req, o, &mut log, |adm| {
        let opts = &opts;
        async move {
            let started = Instant::now();
            let call = target.provider.chat_as(&target.model, req, opts);
            let res = run_until(Some(o.deadline), TimeoutPhase::Total, call).await;
            let used = res
                .as_ref()
                .ok()
                .and_then(|r| r.usage.as_ref())
                .map_or(0, |u| u64::from(u.total_tokens));
            adm.finish(&res, used).await;
            if res.is_ok() {
                target.stats.observe_success(started.elapsed());
            }
            res
        }
    })
    .await;
    (res, log)
}

/// A stream that has produced its first output: the chunks read so far,
/// the rest, and what must be recorded when it ends.
pub(crate) struct Opened {
    pub target: Arc<Target>,
    pub prefix: Vec<ChatChunk>,
    pub rest: ChatStream,
    pub admission: Admission,
    pub started: Instant,
    pub ttft: Duration,
}

/// Opens a stream at `target` and reads until its first output, retrying
/// per the policy: a stream is retried only before anything reached the
/// caller. Returns the log of its attempts too.
pub(crate) async fn open_stream(
    inner: &Inner,
    target: &Arc<Target>,
    req: &ChatRequest,
    request_id: &Arc<str>,
    o: TryOpts,
) -> (Result<Opened>, Vec<AttemptRecord>) {
    let mut log = Vec::new();
    let opts = call_options(request_id, &o);
    let res = with_retries(inner, target, req, o, &mut log, |adm| {
        let opts = &opts;
        async move {
            let started = Instant::now();
            let first = run_until(Some(o.deadline), TimeoutPhase::FirstToken, async {
                let mut s = target.provider.chat_stream_as(&target.model, req, opts).await?;
                let mut prefix = Vec::new();
                loop {
                    match s.next().await {
                        Some(Ok(c)) => {
                            let out = c.has_output();
                            prefix.push(c);
                            if out {
                                return Ok((prefix, s));
                            }
                        }
                        Some(Err(e)) => return Err(e),
                        None => {
                            return Err(Error::network(
                                crate::error::TransportCause::Truncated,
                                "the stream ended before its first token",
                            ));
                        }
                    }
                }
            })
            .await;
            match first {
                Ok((prefix, rest)) => Ok(Opened {
                    target: target.clone(),
                    prefix,
                    rest,
                    admission: adm,
                    started,
                    ttft: started.elapsed(),
                }),
                Err(e) => {
                    adm.finish_err(&e, 0).await;
                    Err(e)
                }
            }
        }
    })
    .await;
    (res, log)
}
