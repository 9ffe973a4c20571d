//! A circuit breaker per target: stop calling a target that is down, fail
//! fast meanwhile, and probe it carefully before trusting it again.
//!
//! States:
//! - **closed**: calls pass. It trips (→ open) on `consecutive_failures`
//!   failures in a row, or when over the sliding `window_s` at least
//!   `min_calls` calls were counted and the failure share reaches
//!   `failure_rate`.
//! - **open**: calls are refused at once with [`ErrorKind::CircuitOpen`]
//!   and a `retry_after` of the time left. The period starts at `open_s`
//!   and doubles on each repeated trip, up to `max_open_s`. A trip is
//!   *repeated* when a half-open probe fails, or when the breaker trips
//!   again within `window_s` of having closed (a flapping target); any
//!   other trip starts from `open_s` again.
//! - **half-open** (once the period is over): at most `half_open_probes`
//!   calls are let through at a time; that many successes close the
//!   breaker, one failure opens it again for the longer period.
//!
//! **What counts.** Only outcomes that say something about the target's
//! health are counted: errors whose [`ErrorKind::counts_for_health`] is true
//! are failures, successes are successes. Everything else (400, 401, 404,
//! 429, content filtered, a cancelled call) is *neutral*: neither a failure
//! nor a success. Not a failure, because a client sending bad requests must
//! not cut a target off for everyone; not a success either, because cheap
//! refusals must not dilute the failure rate or reset the consecutive count
//! of a target that is failing its real work. A neutral half-open probe just
//! frees its slot for another probe. A permit dropped without an outcome is
//! neutral too.
//!
//! **Cost.** One breaker per target, nothing shared between targets. While
//! closed, acquiring is one atomic load (plus the permit's `Arc` clone) and
//! recording is a few atomic adds; the per-breaker mutex is taken only for
//! state changes and in half-open.
//!
//! **Events.** Every state change is broadcast as a [`BreakerEvent`] (for
//! metrics and the dashboard); [`CircuitBreaker::snapshot`] gives the
//! current state and counters.

use super::config::InvalidConfig;
use super::window::WindowCounter;
use crate::error::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// The `breaker:` section of the config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures in a row that trip the breaker.
    #[serde(default = "d_consecutive")]
    pub consecutive_failures: u32,
    /// Failure share over the window that trips it (0 < rate ≤ 1).
    #[serde(default = "d_rate")]
    pub failure_rate: f64,
    /// The sliding window for the failure rate, in seconds.
    #[serde(default = "d_window_s")]
    pub window_s: u64,
    /// Calls the window needs before the rate counts.
    #[serde(default = "d_min_calls")]
    pub min_calls: u32,
    /// First open period, in seconds.
    #[serde(default = "d_open_s")]
    pub open_s: u64,
    /// Longest open period, in seconds.
    #[serde(default = "d_max_open_s")]
    pub max_open_s: u64,
    /// Probes let through at a time when half-open, and successes needed to close.
    #[serde(default = "d_probes")]
    pub half_open_probes: u32,
}

fn d_consecutive() -> u32 {
    5
}
fn d_rate() -> f64 {
    0.5
}
fn d_window_s() -> u64 {
    30
}
fn d_min_calls() -> u32 {
    10
}
fn d_open_s() -> u64 {
    30
}
fn d_max_open_s() -> u64 {
    600
}
fn d_probes() -> u32 {
    3
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: d_consecutive(),
            failure_rate: d_rate(),
            window_s: d_window_s(),
            min_calls: d_min_calls(),
            open_s: d_open_s(),
            max_open_s: d_max_open_s(),
            half_open_probes: d_probes(),
        }
    }
}

impl BreakerConfig {
    /// Checks the values, naming the offending key.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |k: &str, why: &str| Err(InvalidConfig::new(format!("breaker.{k}"), why));
        if self.consecutive_failures == 0 {
            return bad("consecutive_failures", "must be ≥ 1");
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return bad("failure_rate", "must be in (0, 1]");
        }
        if self.window_s == 0 {
            return bad("window_s", "must be ≥ 1");
        }
        if self.open_s == 0 {
            return bad("open_s", "must be ≥ 1");
        }
        if self.max_open_s < self.open_s {
            return bad("max_open_s", "must be ≥ open_s");
        }
        if self.half_open_probes == 0 {
            return bad("half_open_probes", "must be ≥ 1");
        }
        Ok(())
    }
}

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused.
    Open,
    /// A few probes pass.
    HalfOpen,
}

impl BreakerState {
    /// The snake_case name (for metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn code(self) -> u64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }

    fn from_code(c: u64) -> Self {
        match c & 3 {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// Too many failures in a row.
    ConsecutiveFailures,
    /// The failure rate over the window.
    FailureRate,
    /// A half-open probe failed.
    ProbeFailed,
    /// The open period is over.
    OpenElapsed,
    /// Enough probes succeeded.
    ProbesSucceeded,
    /// Forced by an operator ([`CircuitBreaker::reset`]).
    Reset,
    /// Another gateway instance found the target down and shared its trip
    /// ([`CircuitBreaker::force_open`]).
    Remote,
}

/// One state change of one breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerEvent {
    /// The target (its configured name).
    pub target: Arc<str>,
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// When (tokio time).
    pub at: Instant,
    /// Why.
    pub why: Transition,
    /// For a change to open, how long it stays open.
    pub open_for: Option<Duration>,
}

/// The current state and counters of a breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The target.
    #[serde(serialize_with = "ser_str")]
    pub target: Arc<str>,
    /// The state.
    pub state: BreakerState,
    /// When open, the time left before half-open.
    pub open_remaining: Option<Duration>,
    /// Failures in a row (closed state).
    pub consecutive_failures: u32,
    /// Calls counted in the window.
    pub window_calls: u64,
    /// Failures counted in the window.
    pub window_failures: u64,
    /// Trips in the current series of repeated trips.
    pub trips: u32,
    /// Probes in flight (half-open).
    pub probes_in_flight: u32,
    /// Successful probes so far (half-open).
    pub probe_successes: u32,
    /// Successes recorded since the breaker was made.
    pub successes_total: u64,
    /// Failures recorded since the breaker was made.
    pub failures_total: u64,
    /// Neutral outcomes (non-health errors, dropped permits) since made.
    pub neutral_total: u64,
    /// Calls refused since made.
    pub rejected_total: u64,
}

fn ser_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

#[derive(Debug)]
struct Slow {
    trips: u32,
    open_for: Duration,
    closed_at: Option<u64>,
    probes_in_flight: u32,
    probe_successes: u32,
    /// Counts closes, so probes of an earlier half-open series that finish
    /// after the breaker closed do not touch the new series' count.
    series: u64,
}

#[derive(Debug)]
struct Shared {
    target: Arc<str>,
    cfg: BreakerConfig,
    /// generation << 2 | state: the fast path reads only this.
    state: AtomicU64,
    /// Nanoseconds since `epoch` when the open period ends.
    open_until: AtomicU64,
    consecutive: AtomicU32,
    calls: WindowCounter,
    failures: WindowCounter,
    slow: Mutex<Slow>,
    successes_total: AtomicU64,
    failures_total: AtomicU64,
    neutral_total: AtomicU64,
    rejected_total: AtomicU64,
    events: broadcast::Sender<BreakerEvent>,
    epoch: Instant,
}

/// A circuit breaker for one target; clones share it.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    inner: Arc<Shared>,
}

/// How a call went, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target did its job.
    Success,
    /// The target failed in a way that says it is unhealthy.
    Failure,
    /// Says nothing about the target's health.
    Neutral,
}

impl Outcome {
    /// The outcome of an error: a failure if it counts for health, else neutral.
    pub fn of_error(kind: ErrorKind) -> Outcome {
        if kind.counts_for_health() {
            Outcome::Failure
        } else {
            Outcome::Neutral
        }
    }

    /// The outcome of a call's result.
    pub fn of<T>(r: &Result<T, Error>) -> Outcome {
        match r {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::of_error(e.kind),
        }
    }
}

/// Leave to make one call. Record the outcome with [`record`](Self::record)
/// (or `success` / `failure`); dropping it unrecorded counts as neutral and
/// frees its half-open slot.
#[derive(Debug)]
#[must_use = "a permit records the call's outcome; dropping it at once wastes a probe"]
pub struct BreakerPermit {
    breaker: Arc<Shared>,
    generation: u64,
    probe: Option<u64>,
    done: bool,
}

const WINDOW_SLOTS: usize = 10;
/// What a refused caller is told to wait while all probes are busy.
const PROBES_BUSY_RETRY: Duration = Duration::from_secs(1);

impl CircuitBreaker {
    /// A closed breaker for `target`, with its own event channel.
    pub fn new(target: impl Into<Arc<str>>, cfg: &BreakerConfig) -> Self {
        let (tx, _) = broadcast::channel(64);
        Self::with_events(target, cfg, tx)
    }

    /// A closed breaker that sends its events on `events` (share one sender
    /// between all targets to watch them through one receiver).
    pub fn with_events(
        target: impl Into<Arc<str>>,
        cfg: &BreakerConfig,
        events: broadcast::Sender<BreakerEvent>,
    ) -> Self {
        let mut cfg = *cfg;
        cfg.consecutive_failures = cfg.consecutive_failures.max(1);
        cfg.half_open_probes = cfg.half_open_probes.max(1);
        cfg.open_s = cfg.open_s.max(1);
        cfg.max_open_s = cfg.max_open_s.max(cfg.open_s);
        let window = Duration::from_secs(cfg.window_s.max(1));
        CircuitBreaker {
            inner: Arc::new(Shared {
                target: target.into(),
                cfg,
                state: AtomicU64::new(BreakerState::Closed.code()),
                open_until: AtomicU64::new(0),
                consecutive: AtomicU32::new(0),
                calls: WindowCounter::new(window, WINDOW_SLOTS),
                failures: WindowCounter::new(window, WINDOW_SLOTS),
                slow: Mutex::new(Slow {
                    trips: 0,
                    open_for: Duration::ZERO,
                    closed_at: None,
                    probes_in_flight: 0,
                    probe_successes: 0,
                    series: 0,
                }),
                successes_total: AtomicU64::new(0),
                failures_total: AtomicU64::new(0),
                neutral_total: AtomicU64::new(0),
                rejected_total: AtomicU64::new(0),
                events,
                epoch: Instant::now(),
            }),
        }
    }

    /// The target's name.
    pub fn target(&self) -> &Arc<str> {
        &self.inner.target
    }

    /// A receiver of this breaker's state changes.
    pub fn subscribe(&self) -> broadcast::Receiver<BreakerEvent> {
        self.inner.events.subscribe()
    }

    /// Asks to make a call: a permit, or a [`ErrorKind::CircuitOpen`] error
    /// at once (with `retry_after` = time until half-open).
    pub fn try_acquire(&self) -> Result<BreakerPermit, Error> {
        let s = &self.inner;
        let word = s.state.load(Ordering::Acquire);
        match BreakerState::from_code(word) {
            BreakerState::Closed => return Ok(self.permit(word >> 2, None)),
            BreakerState::Open => {
                let now = s.now();
                let until = s.open_until.load(Ordering::Acquire);
                if now < until {
                    return Err(s.refuse(Duration::from_nanos(until - now)));
                }
            }
            BreakerState::HalfOpen => {}
        }
        self.acquire_slow()
    }

    fn acquire_slow(&self) -> Result<BreakerPermit, Error> {
        let s = &self.inner;
        let mut slow = s.lock();
        let now = s.now();
        let word = s.state.load(Ordering::Acquire);
        let (generation, state) = (word >> 2, BreakerState::from_code(word));
        let generation = match state {
            BreakerState::Closed => return Ok(self.permit(generation, None)),
            BreakerState::Open => {
                let until = s.open_until.load(Ordering::Acquire);
                if now < until {
                    return Err(s.refuse(Duration::from_nanos(until - now)));
                }
                slow.probe_successes = 0;
                s.set_state(
                    &mut slow,
                    BreakerState::Open,
                    BreakerState::HalfOpen,
                    Transition::OpenElapsed,
                    now,
                )
            }
            BreakerState::HalfOpen => generation,
        };
        if slow.probes_in_flight >= s.cfg.half_open_probes {
            return Err(s.refuse(PROBES_BUSY_RETRY));
        }
        slow.probes_in_flight += 1;
        let series = slow.series;
        drop(slow);
        Ok(self.permit(generation, Some(series)))
    }

    fn permit(&self, generation: u64, probe: Option<u64>) -> BreakerPermit {
        BreakerPermit {
            breaker: self.inner.clone(),
            generation,
            probe,
            done: false,
        }
    }

    /// Whether a call would be let through now (without taking a permit):
    /// for a router choosing among targets.
    pub fn allows_calls(&self) -> bool {
        let s = &self.inner;
        match s.current_state() {
            BreakerState::Closed => true,
            BreakerState::Open => s.now() >= s.open_until.load(Ordering::Acquire),
            BreakerState::HalfOpen => s.lock().probes_in_flight < s.cfg.half_open_probes,
        }
    }

    /// Ends the current open period now (an active health probe found the
    /// target answering): the next call is let through as a half-open probe
    /// instead of waiting out the period. No effect unless open.
    pub fn end_open_period(&self) {
        let s = &self.inner;
        if s.current_state() == BreakerState::Open {
            s.open_until.store(s.now(), Ordering::Release);
        }
    }

    /// A half-open probe permit even while the open period lasts: for a
    /// router whose every target is out, so that something is tried rather
    /// than nothing. Still bounded by the half-open probe limit.
    pub fn force_probe(&self) -> Result<BreakerPermit, Error> {
        self.end_open_period();
        self.try_acquire()
    }

    /// Opens the breaker for `open_for` because someone else (another
    /// gateway instance sharing breaker state through Redis) found the
    /// target down. A closed or half-open breaker opens with
    /// [`Transition::Remote`] (not counted as a trip of its own: a later
    /// local trip starts its doubling from `open_s`); an open one only
    /// extends its period when `open_for` ends later. Returns whether the
    /// state changed.
    pub fn force_open(&self, open_for: Duration) -> bool {
        if open_for.is_zero() {
            return false;
        }
        let s = &self.inner;
        let mut slow = s.lock();
        let now = s.now();
        let until = now.saturating_add(u64::try_from(open_for.as_nanos()).unwrap_or(u64::MAX));
        let from = s.current_state();
        if from == BreakerState::Open {
            if until > s.open_until.load(Ordering::Acquire) {
                s.open_until.store(until, Ordering::Release);
            }
            return false;
        }
        slow.open_for = open_for;
        slow.probe_successes = 0;
        s.open_until.store(until, Ordering::Release);
        s.set_state(&mut slow, from, BreakerState::Open, Transition::Remote, now);
        true
    }

    /// The current state (open stays open until a call asks after the period).
    pub fn state(&self) -> BreakerState {
        self.inner.current_state()
    }

    /// Forces the breaker closed with fresh counters (an operator's action).
    pub fn reset(&self) {
        let s = &self.inner;
        let mut slow = s.lock();
        let now = s.now();
        let from = s.current_state();
        s.close(&mut slow, from, Transition::Reset, now);
    }

    /// The current state and counters.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let s = &self.inner;
        let slow = s.lock();
        let now = s.now();
        let state = s.current_state();
        let until = s.open_until.load(Ordering::Acquire);
        BreakerSnapshot {
            target: s.target.clone(),
            state,
            open_remaining: (state == BreakerState::Open).then(|| Duration::from_nanos(until.saturating_sub(now))),
            consecutive_failures: s.consecutive.load(Ordering::Relaxed),
            window_calls: s.calls.sum(now),
            window_failures: s.failures.sum(now),
            trips: slow.trips,
            probes_in_flight: slow.probes_in_flight,
            probe_successes: slow.probe_successes,
            successes_total: s.successes_total.load(Ordering::Relaxed),
            failures_total: s.failures_total.load(Ordering::Relaxed),
            neutral_total: s.neutral_total.load(Ordering::Relaxed),
            rejected_total: s.rejected_total.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Slow> {
        // The critical sections cannot panic half-way; a poisoned lock still
        // holds consistent data.
        self.slow.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current_state(&self) -> BreakerState {
        BreakerState::from_code(self.state.load(Ordering::Acquire))
    }

    fn refuse(&self, retry_after: Duration) -> Error {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        Error::new(
            ErrorKind::CircuitOpen,
            format!("the circuit breaker of {} is open: the call was not made", self.target),
        )
        .with_retry_after(Some(retry_after))
        .with_provider(&self.target)
    }

    /// Moves to `to` under the lock, bumping the generation so permits of
    /// the previous state no longer count. Returns the new generation.
    fn set_state(&self, _slow: &mut Slow, from: BreakerState, to: BreakerState, why: Transition, now: u64) -> u64 {
        let generation = (self.state.load(Ordering::Acquire) >> 2) + 1;
        self.state.store((generation << 2) | to.code(), Ordering::Release);
        let open_for = (to == BreakerState::Open).then(|| {
            let until = self.open_until.load(Ordering::Acquire);
            Duration::from_nanos(until.saturating_sub(now))
        });
        let at = self.epoch + Duration::from_nanos(now);
        tracing::info!(target_name = %self.target, %from, %to, ?why, "circuit breaker state change");
        let _ = self.events.send(BreakerEvent {
            target: self.target.clone(),
            from,
            to,
            at,
            why,
            open_for,
        });
        generation
    }

    fn trip(&self, slow: &mut Slow, from: BreakerState, why: Transition, now: u64) {
        let window = Duration::from_secs(self.cfg.window_s).as_nanos() as u64;
        let repeated = from == BreakerState::HalfOpen || slow.closed_at.is_some_and(|c| now.saturating_sub(c) < window);
        slow.trips = if repeated { slow.trips.saturating_add(1) } else { 1 };
        let doublings = slow.trips.saturating_sub(1).min(30);
        let open_s = self
            .cfg
            .open_s
            .saturating_mul(1u64 << doublings)
            .min(self.cfg.max_open_s);
        slow.open_for = Duration::from_secs(open_s);
        slow.probe_successes = 0;
        let until = now.saturating_add(u64::try_from(slow.open_for.as_nanos()).unwrap_or(u64::MAX));
        self.open_until.store(until, Ordering::Release);
        self.set_state(slow, from, BreakerState::Open, why, now);
    }

    fn close(&self, slow: &mut Slow, from: BreakerState, why: Transition, now: u64) {
        self.consecutive.store(0, Ordering::Relaxed);
        self.calls.clear();
        self.failures.clear();
        slow.probes_in_flight = 0;
        slow.probe_successes = 0;
        slow.series += 1;
        if why == Transition::Reset {
            slow.trips = 0;
            slow.closed_at = None;
        } else {
            slow.closed_at = Some(now);
        }
        self.open_until.store(0, Ordering::Release);
        if from != BreakerState::Closed {
            self.set_state(slow, from, BreakerState::Closed, why, now);
        }
    }

    fn count(&self, outcome: Outcome) {
        let c = match outcome {
            Outcome::Success => &self.successes_total,
            Outcome::Failure => &self.failures_total,
            Outcome::Neutral => &self.neutral_total,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn finish(&self, generation: u64, probe: Option<u64>, outcome: Outcome) {
        self.count(outcome);
        match probe {
            None => self.finish_call(generation, outcome),
            Some(series) => self.finish_probe(generation, series, outcome),
        }
    }

    fn finish_call(&self, generation: u64, outcome: Outcome) {
        let word = self.state.load(Ordering::Acquire);
        if word >> 2 != generation || BreakerState::from_code(word) != BreakerState::Closed {
            // A call let through before the last state change: its outcome
            // describes the past.
            return;
        }
        let now = self.now();
        match outcome {
            Outcome::Neutral => {}
            Outcome::Success => {
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
                self.calls.add(now, 1);
            }
            Outcome::Failure => {
                let run = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                self.calls.add(now, 1);
                self.failures.add(now, 1);
                let why = if run >= self.cfg.consecutive_failures {
                    Some(Transition::ConsecutiveFailures)
                } else {
                    let calls = self.calls.sum(now);
                    let failures = self.failures.sum(now);
                    (calls >= u64::from(self.cfg.min_calls)
                        && calls > 0
                        && failures as f64 >= self.cfg.failure_rate * calls as f64)
                        .then_some(Transition::FailureRate)
                };
                if let Some(why) = why {
                    let mut slow = self.lock();
                    // Another failing call may have tripped it already.
                    if self.state.load(Ordering::Acquire) == word {
                        self.trip(&mut slow, BreakerState::Closed, why, now);
                    }
                }
            }
        }
    }

    fn finish_probe(&self, generation: u64, series: u64, outcome: Outcome) {
        let mut slow = self.lock();
        if slow.series != series {
            return; // the breaker closed since: the slot is gone already
        }
        slow.probes_in_flight = slow.probes_in_flight.saturating_sub(1);
        let word = self.state.load(Ordering::Acquire);
        if word >> 2 != generation || BreakerState::from_code(word) != BreakerState::HalfOpen {
            return; // reopened by another probe: only the slot matters
        }
        let now = self.now();
        match outcome {
            Outcome::Neutral => {}
            Outcome::Success => {
                slow.probe_successes += 1;
                if slow.probe_successes >= self.cfg.half_open_probes {
                    self.close(&mut slow, BreakerState::HalfOpen, Transition::ProbesSucceeded, now);
                }
            }
            Outcome::Failure => self.trip(&mut slow, BreakerState::HalfOpen, Transition::ProbeFailed, now),
        }
    }
}

impl BreakerPermit {
    /// Whether this permit is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// Records the outcome.
    pub fn record_outcome(mut self, outcome: Outcome) {
        self.done = true;
        self.breaker.finish(self.generation, self.probe, outcome);
    }

    /// Records a call's result (see [`Outcome::of`]).
    pub fn record<T>(self, result: &Result<T, Error>) {
        self.record_outcome(Outcome::of(result));
    }

    /// Records a success.
    pub fn success(self) {
        self.record_outcome(Outcome::Success);
    }

    /// Records an error: a failure if its kind counts for health, else neutral.
    pub fn failure(self, kind: ErrorKind) {
        self.record_outcome(Outcome::of_error(kind));
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.finish(self.generation, self.probe, Outcome::Neutral);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_active_probe_ends_the_open_period() {
        let b = CircuitBreaker::new("t", &BreakerConfig::default());
        for _ in 0..5 {
            b.try_acquire().unwrap().failure(ErrorKind::ServerError);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.try_acquire().is_err());
        b.end_open_period();
        let p = b.try_acquire().unwrap();
        assert!(p.is_probe());
        p.success();
        // A forced probe works while open, within the probe limit.
        let c = CircuitBreaker::new("u", &BreakerConfig::default());
        for _ in 0..5 {
            c.try_acquire().unwrap().failure(ErrorKind::ServerError);
        }
        let f = c.force_probe().unwrap();
        assert!(f.is_probe());
        f.success();
    }

    #[tokio::test(start_paused = true)]
    async fn a_remote_trip_opens_and_extends_but_never_shortens() {
        let b = CircuitBreaker::new("t", &BreakerConfig::default());
        let mut events = b.subscribe();
        assert!(b.force_open(Duration::from_secs(10)));
        assert_eq!(b.state(), BreakerState::Open);
        let e = events.try_recv().unwrap();
        assert_eq!((e.to, e.why), (BreakerState::Open, Transition::Remote));
        assert!(b.try_acquire().is_err());
        // Shorter: ignored; longer: extends without a new event.
        assert!(!b.force_open(Duration::from_secs(1)));
        assert!(!b.force_open(Duration::from_secs(20)));
        assert!(events.try_recv().is_err());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(b.try_acquire().is_err(), "still open: extended to 20 s");
        tokio::time::advance(Duration::from_secs(10)).await;
        let p = b.try_acquire().unwrap();
        assert!(p.is_probe());
        p.success();
        assert_eq!(b.snapshot().trips, 0, "a remote trip is not a local trip");
    }
    use proptest::prelude::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig::default()
    }

    fn fail(b: &CircuitBreaker, n: usize) {
        for _ in 0..n {
            b.try_acquire().unwrap().failure(ErrorKind::ServerError);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_trip_and_open_fails_fast() {
        let b = CircuitBreaker::new("t", &cfg());
        let mut events = b.subscribe();
        fail(&b, 4);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        let e = events.try_recv().unwrap();
        assert_eq!(
            (e.from, e.to, e.why, e.open_for),
            (
                BreakerState::Closed,
                BreakerState::Open,
                Transition::ConsecutiveFailures,
                Some(Duration::from_secs(30))
            )
        );
        assert_eq!(&*e.target, "t");
        tokio::time::advance(Duration::from_secs(10)).await;
        let err = b.try_acquire().unwrap_err();
        assert_eq!(err.kind, ErrorKind::CircuitOpen);
        assert_eq!(err.retry_after, Some(Duration::from_secs(20)));
        assert!(!b.allows_calls());
        assert_eq!(b.snapshot().rejected_total, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_consecutive_count() {
        let b = CircuitBreaker::new("t", &cfg());
        let mut events = b.subscribe();
        for _ in 0..2 {
            fail(&b, 4);
            b.try_acquire().unwrap().success();
        }
        assert_eq!(b.state(), BreakerState::Closed, "never 5 in a row");
        // 8 failures of 10 calls: the next failure trips it on the rate.
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(events.try_recv().unwrap().why, Transition::FailureRate);
        let b = CircuitBreaker::new(
            "t",
            &BreakerConfig {
                min_calls: 100,
                ..cfg()
            },
        );
        for _ in 0..10 {
            fail(&b, 4);
            b.try_acquire().unwrap().success();
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_needs_min_calls_and_slides() {
        let c = BreakerConfig {
            consecutive_failures: 100,
            ..cfg()
        };
        let b = CircuitBreaker::new("t", &c);
        let mut events = b.subscribe();
        // Alternate: 50% failures, but under min_calls until the 10th call.
        for i in 0..9 {
            let p = b.try_acquire().unwrap();
            if i % 2 == 0 {
                p.success()
            } else {
                p.failure(ErrorKind::Timeout)
            }
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire().unwrap().failure(ErrorKind::Timeout);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(events.try_recv().unwrap().why, Transition::FailureRate);

        // Old calls leave the window: failures 30 s ago do not count.
        let b = CircuitBreaker::new("t", &c);
        fail(&b, 9);
        tokio::time::advance(Duration::from_secs(31)).await;
        for _ in 0..10 {
            b.try_acquire().unwrap().success();
        }
        fail(&b, 5);
        assert_eq!(b.state(), BreakerState::Closed, "5 of 15 in the window");
    }

    #[tokio::test(start_paused = true)]
    async fn non_health_errors_are_neutral() {
        let b = CircuitBreaker::new("t", &cfg());
        fail(&b, 4);
        for k in [
            ErrorKind::InvalidRequest,
            ErrorKind::Authentication,
            ErrorKind::NotFound,
            ErrorKind::RateLimited,
            ErrorKind::Cancelled,
        ] {
            for _ in 0..20 {
                b.try_acquire().unwrap().failure(k);
            }
        }
        drop(b.try_acquire().unwrap());
        let s = b.snapshot();
        assert_eq!(s.state, BreakerState::Closed);
        assert_eq!(
            s.consecutive_failures, 4,
            "neutral outcomes do not reset the run either"
        );
        assert_eq!((s.window_calls, s.window_failures), (4, 4));
        assert_eq!(s.neutral_total, 101);
        fail(&b, 1);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_limits_probes_and_closes_after_successes() {
        let b = CircuitBreaker::new("t", &cfg());
        let mut events = b.subscribe();
        fail(&b, 5);
        let _ = events.try_recv();
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(b.allows_calls());
        let probes: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
        assert!(probes.iter().all(BreakerPermit::is_probe));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(events.try_recv().unwrap().to, BreakerState::HalfOpen);
        let e = b.try_acquire().unwrap_err();
        assert_eq!(e.kind, ErrorKind::CircuitOpen);
        assert!(!b.allows_calls());
        // A neutral probe and a dropped probe free their slots, nothing more.
        let mut probes = probes.into_iter();
        probes.next().unwrap().failure(ErrorKind::InvalidRequest);
        drop(probes.next().unwrap());
        assert_eq!(b.snapshot().probes_in_flight, 1);
        assert_eq!(b.snapshot().probe_successes, 0);
        probes.next().unwrap().success();
        for _ in 0..2 {
            b.try_acquire().unwrap().success();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        let e = events.try_recv().unwrap();
        assert_eq!(
            (e.from, e.to, e.why),
            (
                BreakerState::HalfOpen,
                BreakerState::Closed,
                Transition::ProbesSucceeded
            )
        );
        assert!(!b.try_acquire().unwrap().is_probe());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_longer_up_to_the_max() {
        let b = CircuitBreaker::new(
            "t",
            &BreakerConfig {
                max_open_s: 100,
                ..cfg()
            },
        );
        fail(&b, 5);
        let mut expected = vec![];
        let mut seen = vec![];
        for want in [60, 100, 100] {
            let open = b.snapshot().open_remaining.unwrap();
            tokio::time::advance(open).await;
            b.try_acquire().unwrap().failure(ErrorKind::Network);
            assert_eq!(b.state(), BreakerState::Open);
            seen.push(b.snapshot().open_remaining.unwrap().as_secs());
            expected.push(want);
        }
        assert_eq!(seen, expected);
        assert_eq!(b.snapshot().trips, 4);
        // Closing and tripping again soon (flapping) keeps the longer period;
        // tripping long after starts from open_s.
        tokio::time::advance(Duration::from_secs(100)).await;
        for _ in 0..3 {
            b.try_acquire().unwrap().success();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b, 5);
        assert_eq!(b.snapshot().open_remaining, Some(Duration::from_secs(100)));
        tokio::time::advance(Duration::from_secs(100)).await;
        for _ in 0..3 {
            b.try_acquire().unwrap().success();
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        fail(&b, 5);
        assert_eq!(b.snapshot().open_remaining, Some(Duration::from_secs(30)));
        assert_eq!(b.snapshot().trips, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn late_outcomes_of_an_earlier_state_are_ignored() {
        let b = CircuitBreaker::new("t", &cfg());
        let slow_calls: Vec<_> = (0..10).map(|_| b.try_acquire().unwrap()).collect();
        fail(&b, 5);
        tokio::time::advance(Duration::from_secs(30)).await;
        let probe = b.try_acquire().unwrap();
        // Calls let through while closed finish now: they neither close nor reopen it.
        for p in slow_calls {
            p.success();
        }
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.snapshot().probe_successes, 0);
        probe.success();
        assert_eq!(b.snapshot().probe_successes, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn reset_closes() {
        let b = CircuitBreaker::new("t", &cfg());
        fail(&b, 5);
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        let s = b.snapshot();
        assert_eq!((s.trips, s.consecutive_failures, s.window_calls), (0, 0, 0));
    }

    #[test]
    fn config_defaults_and_validation() {
        let c: BreakerConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, BreakerConfig::default());
        assert_eq!(
            (
                c.consecutive_failures,
                c.failure_rate,
                c.window_s,
                c.min_calls,
                c.open_s,
                c.max_open_s,
                c.half_open_probes
            ),
            (5, 0.5, 30, 10, 30, 600, 3)
        );
        assert!(c.validate().is_ok());
        assert!(serde_json::from_str::<BreakerConfig>(r#"{"probes":1}"#).is_err());
        for (bad, path) in [
            (BreakerConfig { failure_rate: 1.5, ..c }, "breaker.failure_rate"),
            (
                BreakerConfig {
                    half_open_probes: 0,
                    ..c
                },
                "breaker.half_open_probes",
            ),
            (BreakerConfig { max_open_s: 1, ..c }, "breaker.max_open_s"),
        ] {
            assert_eq!(bad.validate().unwrap_err().path, path);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Finish(usize, u8),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Acquire),
            4 => (any::<usize>(), 0u8..4).prop_map(|(i, o)| Op::Finish(i, o)),
            1 => (0u64..40_000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever happens, no more than `half_open_probes` probes are in
        /// flight at once since the breaker last closed.
        #[test]
        fn never_more_than_n_probes(probes in 1u32..5, ops in prop::collection::vec(op(), 1..300)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let c = BreakerConfig { consecutive_failures: 2, min_calls: 4, open_s: 5, half_open_probes: probes, ..cfg() };
                let b = CircuitBreaker::new("t", &c);
                let mut held: Vec<(BreakerPermit, u64)> = vec![];
                let mut series = 0u64;
                for op in ops {
                    match op {
                        Op::Acquire => {
                            if let Ok(p) = b.try_acquire() {
                                held.push((p, series));
                            }
                        }
                        Op::Finish(i, o) if !held.is_empty() => {
                            let (p, _) = held.swap_remove(i % held.len());
                            match o {
                                0 => p.success(),
                                1 => p.failure(ErrorKind::ServerError),
                                2 => p.failure(ErrorKind::InvalidRequest),
                                _ => drop(p),
                            }
                        }
                        Op::Finish(..) => {}
                        Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                    }
                    if b.state() == BreakerState::Closed {
                        series += 1;
                    }
                    let probes_now = held.iter().filter(|(p, s)| p.is_probe() && *s == series).count();
                    prop_assert!(probes_now as u32 <= probes, "{probes_now} probes in flight");
                    prop_assert!(b.snapshot().probes_in_flight <= probes);
                }
                Ok::<(), TestCaseError>(())
            })?;
        }
    }
}
