//! Wall-clock time in milliseconds since the Unix epoch (UTC), the unit of
//! every stored time. Production reads the system clock; tests can use a
//! clock that follows tokio's (pausable) time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of "now" in UTC milliseconds.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// `base_ms` plus the tokio time elapsed since `base`: with
    /// `tokio::time::pause()`, time only moves when the test moves it.
    Tokio {
        /// The UTC time at `base`.
        base_ms: i64,
        /// The tokio instant it corresponds to.
        base: tokio::time::Instant,
    },
    /// A time that only moves when told ([`Clock::advance`]); for tests
    /// that span minutes or hours against real services.
    Manual(Arc<AtomicI64>),
}

/// The system clock now, in UTC ms.
pub fn system_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Clock {
    /// A tokio-time clock starting at `base_ms`.
    pub fn tokio_at(base_ms: i64) -> Self {
        Clock::Tokio {
            base_ms,
            base: tokio::time::Instant::now(),
        }
    }

    /// A manual clock at `ms`.
    pub fn manual(ms: i64) -> Self {
        Clock::Manual(Arc::new(AtomicI64::new(ms)))
    }

    /// Moves a manual clock forward (no effect on the others).
    pub fn advance(&self, ms: i64) {
        if let Clock::Manual(t) = self {
            t.fetch_add(ms, Ordering::SeqCst);
        }
    }

    /// Now, in UTC ms.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => system_now_ms(),
            Clock::Tokio { base_ms, base } => {
                base_ms + i64::try_from(base.elapsed().as_millis()).unwrap_or(i64::MAX / 2)
            }
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }
}

/// A fresh random id with a prefix (`req_…`, `cmd_…`): 64 random bits, hex.
pub fn new_id(prefix: &str) -> String {
    use rand::RngExt;
    format!("{prefix}_{:016x}", rand::rng().random::<u64>())
}
