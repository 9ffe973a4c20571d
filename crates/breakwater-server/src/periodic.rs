//! Background rounds: run something every period until shutdown.

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Runs `round` every `period` (the first one period after the start; a
/// round that overruns skips the ticks it missed) until `stop`.
pub async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => round().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn rounds_come_each_period_and_stop_with_the_token() {
        let stop = CancellationToken::new();
        let n = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(every(Duration::from_secs(5), stop.clone(), {
            let n = n.clone();
            move || {
                n.fetch_add(1, Ordering::Relaxed);
                async {}
            }
        }));
        tokio::time::sleep(Duration::from_millis(4_900)).await;
        assert_eq!(n.load(Ordering::Relaxed), 0, "no round at the start");
        tokio::time::sleep(Duration::from_millis(10_200)).await;
        assert_eq!(n.load(Ordering::Relaxed), 3, "rounds at 5, 10 and 15 s");
        stop.cancel();
        task.await.expect("stops with the token");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(n.load(Ordering::Relaxed), 3);
    }
}
