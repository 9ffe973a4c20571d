//! Routing one request over an alias's targets: candidate order, skipping
//! targets that are out, failover, and hedged requests.

use super::Inner;
use super::call::{self, Opened, TryOpts};
use super::config::{HedgeAfter, ModelConfig};
use super::meta::AttemptRecord;
use super::target::Target;
use crate::error::{Error, Result, TimeoutPhase};
use crate::route::{Candidate, order};
use crate::types::{ChatRequest, ChatResponse};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A resolved alias.
#[derive(Debug)]
pub(crate) struct Alias {
    pub name: String,
    pub cfg: ModelConfig,
    pub targets: Vec<(Arc<Target>, u32)>,
}

/// The targets to try, in order, each with whether it must be forced
/// through an open breaker. Targets that are out (breaker open, cooling
/// down after a 429) are skipped; when every one is out, the one that
/// failed longest ago gets a probe rather than nothing being tried.
pub(crate) fn candidates(inner: &Inner, alias: &Alias, stream: bool) -> Vec<(Arc<Target>, bool)> {
    let cands: Vec<Candidate<'_>> = alias
        .targets
        .iter()
        .map(|(t, w)| Candidate {
            weight: *w,
            stats: &t.stats,
        })
        .collect();
    let ordered = inner.rng.with(|rng| order(alias.cfg.strategy, &cands, stream, rng));
    let (ok, out): (Vec<usize>, Vec<usize>) = ordered.into_iter().partition(|i| {
        let t = &alias.targets[*i].0;
        t.breaker.allows_calls() && !t.stats.cooling_down()
    });
    if !ok.is_empty() {
        return ok.into_iter().map(|i| (alias.targets[i].0.clone(), false)).collect();
    }
    // Every target is out: the one that failed longest ago gets a probe —
    // at most one per second, so the rest fail fast.
    out.into_iter()
        .max_by_key(|i| alias.targets[*i].0.stats.since_last_failure().unwrap_or(Duration::MAX))
        .map(|i| &alias.targets[i].0)
        .map(|t| {
            let force = t.stats.try_force_probe(FORCED_PROBE_EVERY);
            vec![(t.clone(), force)]
        })
        .unwrap_or_default()
}

/// How often a target that is out may be forced to take a probe when every
/// target of an alias is out.
const FORCED_PROBE_EVERY: Duration = Duration::from_secs(1);

/// When to hedge the first candidate, if at all.
fn hedge_delay(cfg: &ModelConfig, first: &Target) -> Option<Duration> {
    match cfg.hedge.after_ms? {
        HedgeAfter::Ms(ms) => Some(Duration::from_millis(ms)),
        HedgeAfter::P95 => first.stats.ttft_p95(),
    }
}

fn no_time_left() -> Error {
    Error::timeout(TimeoutPhase::Total, "the deadline passed before a target could answer")
}

type Tried<T> = (Result<T>, Vec<AttemptRecord>);

/// Races `primary` against `hedge`, started after `delay` if the retry
/// budget allows one. The first success wins; the other future is dropped,
/// which cancels its upstream call. Returns the result (the first error when
/// both fail), the attempts, and whether the hedge started.
async fn race<T, A, B>(inner: &Inner, primary: A, delay: Duration, hedge: B) -> (Result<T>, Vec<AttemptRecord>, bool)
where
    A: Future<Output = Tried<T>>,
    B: Future<Output = Tried<T>>,
{
    tokio::pin!(primary);
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    tokio::select! {
        (r, log) = &mut primary => return (r, log, false),
        _ = &mut sleep => {}
    }
    if !inner.budget.try_withdraw() {
        let (r, log) = primary.await;
        return (r, log, false);
    }
    tokio::pin!(hedge);
    let mut logs = Vec::new();
    let mut first_err: Option<Error> = None;
    let (mut a_done, mut b_done) = (false, false);
    loop {
        let err = tokio::select! {
            (r, mut log) = &mut primary, if !a_done => {
                a_done = true;
                logs.append(&mut log);
                match r {
                    Ok(v) => return (Ok(v), logs, true),
                    Err(e) => e,
                }
            }
            (r, mut log) = &mut hedge, if !b_done => {
                b_done = true;
                logs.append(&mut log);
                match r {
                    Ok(v) => return (Ok(v), logs, true),
                    Err(e) => e,
                }
            }
        };
        // The request itself is at fault: the other target would refuse too.
        if !err.allows_failover() {
            return (Err(err), logs, true);
        }
        let e = first_err.get_or_insert(err).clone();
        if a_done && b_done {
            return (Err(e), logs, true);
        }
    }
}

/// What routing produced: the answer (or last error), who answered, what
/// was tried.
pub(crate) struct Routed<T> {
    pub result: Result<T>,
    pub target: Option<Arc<Target>>,
    pub attempts: Vec<AttemptRecord>,
    pub hedged: bool,
}

/// Routes a request for a complete answer.
pub(crate) async fn complete(
    inner: &Inner,
    alias: &Alias,
    req: &ChatRequest,
    request_id: &Arc<str>,
    deadline: Instant,
) -> Routed<ChatResponse> {
    generic(inner, alias, deadline, false, |t: Arc<Target>, o| async move {
        let (r, log) = call::complete(inner, &t, req, request_id, o).await;
        (r.map(|v| (v, t)), log)
    })
    .await
}

/// Routes a request for a stream, returning it once it produced output.
pub(crate) async fn stream(
    inner: &Inner,
    alias: &Alias,
    req: &ChatRequest,
    request_id: &Arc<str>,
    deadline: Instant,
) -> Routed<Opened> {
    generic(inner, alias, deadline, true, |t: Arc<Target>, o| async move {
        let (r, log) = call::open_stream(inner, &t, req, request_id, o).await;
        (r.map(|v| (v, t)), log)
    })
    .await
}

/// Failover (and hedging of the first two candidates) over any kind of call.
async fn generic<T, F, Fut>(inner: &Inner, alias: &Alias, deadline: Instant, stream: bool, call: F) -> Routed<T>
where
    F: Fn(Arc<Target>, TryOpts) -> Fut,
    Fut: Future<Output = Tried<(T, Arc<Target>)>>,
{
    // One deposit per routed request: retries and hedges withdraw from it.
    inner.budget.record_request();
    let cands = candidates(inner, alias, stream);
    let mut attempts: Vec<AttemptRecord> = Vec::new();
    let mut last_err: Option<Error> = None;
    let mut hedged = false;
    let opts = |i: usize, hedge: bool, force: bool| TryOpts {
        deadline,
        others_left: i + 1 < cands.len(),
        hedge,
        force_probe: force,
    };
    let mut i = 0;
    let finish = |result: Result<(T, Arc<Target>)>, attempts: Vec<AttemptRecord>, hedged: bool| match result {
        Ok((v, t)) => Routed {
            result: Ok(v),
            target: Some(t),
            attempts,
            hedged,
        },
        Err(e) => Routed {
            result: Err(e),
            target: None,
            attempts,
            hedged,
        },
    };
    if cands.len() >= 2
        && let Some(delay) = hedge_delay(&alias.cfg, &cands[0].0)
    {
        // Boxed: passed by value into `race`, each would otherwise be
        // stored twice in this future, on every request, hedged or not.
        let a = Box::pin(call(cands[0].0.clone(), opts(1, false, cands[0].1)));
        let b = Box::pin(call(cands[1].0.clone(), opts(1, true, cands[1].1)));
        let (res, mut log, started) = race(inner, a, delay, b).await;
        attempts.append(&mut log);
        hedged = started;
        match res {
            Ok(v) => return finish(Ok(v), attempts, hedged),
            Err(e) if !e.allows_failover() => return finish(Err(e), attempts, hedged),
            Err(e) => last_err = Some(e),
        }
        i = if started { 2 } else { 1 };
    }
    while i < cands.len() {
        if Instant::now() >= deadline {
            break;
        }
        let (res, mut log) = call(cands[i].0.clone(), opts(i, false, cands[i].1)).await;
        attempts.append(&mut log);
        match res {
            Ok(v) => return finish(Ok(v), attempts, hedged),
            Err(e) if !e.allows_failover() => return finish(Err(e), attempts, hedged),
            Err(e) => last_err = Some(e),
        }
        i += 1;
    }
    finish(Err(last_err.unwrap_or_else(no_time_left)), attempts, hedged)
}
