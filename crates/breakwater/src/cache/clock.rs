//! Wall-clock milliseconds that follow tokio's clock.
//!
//! Entries carry absolute expiry times in Unix milliseconds, because L2
//! entries are shared by gateway instances (a monotonic instant means
//! nothing to another process). Reading the system clock directly would
//! make TTL tests sleep for real; so the clock is anchored once to the
//! system time and then advanced by `tokio::time::Instant`, which a test can
//! pause and advance. Tests that cannot pause tokio (they talk to a real
//! Redis, whose timeouts would fire on auto-advance) use a manual clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// A source of "now" in Unix milliseconds.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: ClockInner,
}

#[derive(Clone, Debug)]
enum ClockInner {
    Tokio { base: Instant, base_unix_ms: u64 },
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The system time now, advancing with tokio's clock (pausable in tests).
    /// Must be called inside a tokio runtime when time is paused.
    pub fn tokio() -> Self {
        let base_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Clock {
            inner: ClockInner::Tokio {
                base: Instant::now(),
                base_unix_ms,
            },
        }
    }

    /// A clock that only moves when the returned handle is changed (tests).
    pub fn manual(start_ms: u64) -> (Self, Arc<AtomicU64>) {
        let cell = Arc::new(AtomicU64::new(start_ms));
        (
            Clock {
                inner: ClockInner::Manual(cell.clone()),
            },
            cell,
        )
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.inner {
            ClockInner::Tokio { base, base_unix_ms } => base_unix_ms + base.elapsed().as_millis() as u64,
            ClockInner::Manual(cell) => cell.load(Ordering::Relaxed),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::tokio()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let c = Clock::tokio();
        let t0 = c.now_ms();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(c.now_ms() - t0, 3_600_000);
    }

    #[test]
    fn manual_clock_moves_when_told() {
        let (c, h) = Clock::manual(5);
        assert_eq!(c.now_ms(), 5);
        h.store(9, Ordering::Relaxed);
        assert_eq!(c.now_ms(), 9);
    }
}
