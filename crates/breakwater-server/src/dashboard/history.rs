//! The little history the dashboard needs that the live statistics do not
//! keep: breaker state changes (from the client's breaker events) and, once
//! a second, the counters that rate-limiter headroom is derived from. One
//! background task records it; reading it takes a short lock.

use crate::state::AppState;
use breakwater::policy::breaker::BreakerEvent;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Breaker changes kept.
const CHANGES: usize = 256;
/// Seconds of counter samples kept (one minute of headroom, plus one).
const SAMPLES: usize = 61;

/// One breaker state change.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerChange {
    /// `provider/model`.
    pub target: String,
    /// The state before.
    pub from: String,
    /// The state after.
    pub to: String,
    /// Why (`consecutive_failures`, `open_elapsed`, …).
    pub why: String,
    /// When, UNIX ms.
    pub at_ms: u64,
}

/// Cumulative counters at one second.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    /// Requests admitted by each key's request limiter.
    pub keys: BTreeMap<String, u64>,
    /// Calls made to each target (successes + failures).
    pub target_calls: BTreeMap<String, u64>,
    /// Failures of each target.
    pub target_failures: BTreeMap<String, u64>,
}

/// The dashboard's history.
#[derive(Debug, Default)]
pub struct History {
    changes: Mutex<VecDeque<BreakerChange>>,
    samples: Mutex<VecDeque<Sample>>,
}

/// Milliseconds since the UNIX epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl History {
    /// Records one breaker state change.
    pub fn push_change(&self, e: &BreakerEvent) {
        let ago = e.at.elapsed().as_millis() as u64;
        let c = BreakerChange {
            target: e.target.to_string(),
            from: e.from.as_str().to_string(),
            to: e.to.as_str().to_string(),
            why: serde_json::to_value(e.why)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            at_ms: unix_ms().saturating_sub(ago),
        };
        if let Ok(mut q) = self.changes.lock() {
            if q.len() == CHANGES {
                q.pop_front();
            }
            q.push_back(c);
        }
    }

    /// The breaker changes kept, oldest first.
    pub fn changes(&self) -> Vec<BreakerChange> {
        self.changes
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn push_sample(&self, s: Sample) {
        if let Ok(mut q) = self.samples.lock() {
            if q.len() == SAMPLES {
                q.pop_front();
            }
            q.push_back(s);
        }
    }

    /// The newest sample and the oldest one kept (up to a minute before).
    pub(crate) fn span(&self) -> Option<(Sample, Sample, u64)> {
        let q = self.samples.lock().ok()?;
        let newest = q.back()?.clone();
        let oldest = q.front()?.clone();
        Some((newest, oldest, q.len().saturating_sub(1) as u64))
    }
}

fn sample(app: &AppState) -> Sample {
    let gw = app.gateway.load();
    let mut s = Sample::default();
    for k in gw.keys.entries() {
        if let Some(l) = k.limits.requests() {
            s.keys.insert(k.name.to_string(), l.stats().admitted);
        }
    }
    for t in gw.client.targets() {
        s.target_calls
            .insert(t.id.to_string(), t.stats.successes + t.stats.failures);
        s.target_failures.insert(t.id.to_string(), t.stats.failures);
    }
    s
}

/// Records breaker changes and per-second samples until shutdown; follows
/// reloads (a new gateway has a new client and new breakers).
pub async fn record(app: Arc<AppState>) {
    let mut current = app.gateway.load_full();
    let mut events = current.client.breaker_events();
    let mut open = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            ev = events.recv(), if open => match ev {
                Ok(e) => app.dash.push_change(&e),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => open = false,
            },
            _ = tick.tick() => {
                let now = app.gateway.load_full();
                if !Arc::ptr_eq(&now, &current) {
                    events = now.client.breaker_events();
                    open = true;
                    current = now;
                }
                app.dash.push_sample(sample(&app));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater::policy::breaker::{BreakerState, Transition};

    #[test]
    fn the_rings_stay_bounded() {
        let h = History::default();
        for i in 0..(CHANGES + 10) {
            h.push_change(&BreakerEvent {
                target: Arc::from(format!("p/m{i}")),
                from: BreakerState::Closed,
                to: BreakerState::Open,
                at: tokio::time::Instant::now(),
                why: Transition::ConsecutiveFailures,
                open_for: None,
            });
        }
        let c = h.changes();
        assert_eq!(c.len(), CHANGES);
        assert_eq!(c[0].target, "p/m10");
        assert_eq!(
            (c[0].from.as_str(), c[0].to.as_str(), c[0].why.as_str()),
            ("closed", "open", "consecutive_failures")
        );
        for i in 0..(SAMPLES as u64 + 5) {
            let mut s = Sample::default();
            s.keys.insert("k".into(), i);
            h.push_sample(s);
        }
        let (new, old, span) = h.span().unwrap();
        assert_eq!(
            (new.keys["k"], old.keys["k"], span),
            (SAMPLES as u64 + 4, 5, SAMPLES as u64 - 1)
        );
    }
}
