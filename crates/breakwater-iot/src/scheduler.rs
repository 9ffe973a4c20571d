//! The scheduler: fires timed commands when they are due by moving them
//! into the outbox, and expires confirmations that were not given in time.
//! The schedule lives in the store, so it survives restarts; with
//! PostgreSQL every instance runs a scheduler and `SKIP LOCKED` makes each
//! command fire once. Waits use tokio time (testable with paused time).

use crate::clock::Clock;
use crate::store::Store;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The longest wait between two looks at the schedule: other instances add
/// timed commands this one is not told about.
pub const MAX_IDLE: Duration = Duration::from_secs(5);

/// Where the scheduler finds its work.
#[async_trait]
pub trait DueWork: Send + Sync + 'static {
    /// Fires what is due at `now` (UTC ms); returns how many.
    async fn fire_due(&self, now: i64) -> Result<usize, String>;
    /// The next due time.
    async fn next_due(&self) -> Result<Option<i64>, String>;
    /// Expires overdue confirmations.
    async fn sweep(&self, now: i64) -> Result<(), String>;
}

#[async_trait]
impl DueWork for Store {
    async fn fire_due(&self, now: i64) -> Result<usize, String> {
        let mut total = 0;
        loop {
            let n = Store::fire_due(self, now, 200).await.map_err(|e| e.to_string())?.len();
            total += n;
            if n < 200 {
                return Ok(total);
            }
        }
    }

    async fn next_due(&self) -> Result<Option<i64>, String> {
        Store::next_due(self).await.map_err(|e| e.to_string())
    }

    async fn sweep(&self, now: i64) -> Result<(), String> {
        self.expire_confirmations(now)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Runs until `stop`: fires due work, then sleeps until the next due time
/// (at most [`MAX_IDLE`]) or until `wake` is notified. `on_fire` is called
/// when something was fired (to wake the dispatcher).
pub async fn run(
    work: Arc<dyn DueWork>,
    clock: Clock,
    wake: Arc<Notify>,
    on_fire: impl Fn() + Send + 'static,
    stop: CancellationToken,
) {
    loop {
        let now = clock.now_ms();
        match work.fire_due(now).await {
            Ok(n) if n > 0 => {
                tracing::info!(fired = n, "iot: scheduled commands are due");
                on_fire();
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "iot: cannot read the schedule"),
        }
        if let Err(e) = work.sweep(now).await {
            tracing::error!(error = %e, "iot: cannot expire confirmations");
        }
        let wait = match work.next_due().await {
            Ok(Some(t)) => Duration::from_millis(u64::try_from(t - clock.now_ms()).unwrap_or(0)).min(MAX_IDLE),
            Ok(None) => MAX_IDLE,
            Err(_) => Duration::from_secs(1),
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An in-memory schedule recording when each item fired.
    #[derive(Default)]
    struct Fake {
        due: Mutex<Vec<i64>>,
        fired: Mutex<Vec<(i64, i64)>>,
    }

    #[async_trait]
    impl DueWork for Fake {
        async fn fire_due(&self, now: i64) -> Result<usize, String> {
            let mut due = self.due.lock().unwrap();
            let (ready, rest): (Vec<i64>, Vec<i64>) = due.iter().partition(|&&d| d <= now);
            *due = rest;
            self.fired.lock().unwrap().extend(ready.iter().map(|&d| (d, now)));
            Ok(ready.len())
        }
        async fn next_due(&self) -> Result<Option<i64>, String> {
            Ok(self.due.lock().unwrap().iter().copied().min())
        }
        async fn sweep(&self, _now: i64) -> Result<(), String> {
            Ok(())
        }
    }

    const T0: i64 = 1_800_000_000_000;

    #[tokio::test(start_paused = true)]
    async fn commands_fire_at_their_time_not_before() {
        let fake = Arc::new(Fake::default());
        // in one hour, and tomorrow at the same time
        fake.due.lock().unwrap().extend([T0 + 3_600_000, T0 + 86_400_000]);
        let clock = Clock::tokio_at(T0);
        let stop = CancellationToken::new();
        let wake = Arc::new(Notify::new());
        let fires = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let f2 = fires.clone();
        let task = tokio::spawn(run(
            fake.clone(),
            clock.clone(),
            wake.clone(),
            move || {
                f2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            },
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(3_599)).await;
        assert!(fake.fired.lock().unwrap().is_empty(), "nothing before its time");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(fake.fired.lock().unwrap().len(), 1);
        let (due, at) = fake.fired.lock().unwrap()[0];
        assert!(at >= due && at - due <= 1_000, "fired {} ms late", at - due);
        // a command added meanwhile, due in 10 minutes: the wake-up is honoured
        fake.due.lock().unwrap().push(clock.now_ms() + 600_000);
        wake.notify_one();
        tokio::time::sleep(Duration::from_secs(601)).await;
        assert_eq!(fake.fired.lock().unwrap().len(), 2);
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        assert_eq!(fake.fired.lock().unwrap().len(), 3);
        assert_eq!(fires.load(std::sync::atomic::Ordering::SeqCst), 3);
        stop.cancel();
        task.await.unwrap();
    }
}
