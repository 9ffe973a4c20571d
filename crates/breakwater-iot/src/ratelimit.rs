//! A keyed token bucket: per user, `rpm` requests per minute with bursts up
//! to `rpm` (the meaning CONFIG.md gives to `rpm`). In memory, per
//! instance; tokio time, so tests run with paused time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Buckets kept before idle full ones are forgotten.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-key token buckets of one capacity and rate.
#[derive(Debug)]
pub struct KeyedLimiter {
    capacity: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl KeyedLimiter {
    /// `rpm` per minute, bursts up to `rpm`.
    pub fn per_minute(rpm: u32) -> Self {
        let rpm = f64::from(rpm.max(1));
        KeyedLimiter {
            capacity: rpm,
            per_sec: rpm / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(()); // a poisoned lock must not lock users out
        };
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let (cap, rate) = (self.capacity, self.per_sec);
            map.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < cap);
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: self.capacity,
            last: now,
        });
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.capacity);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_user_gets_a_burst_then_the_rate() {
        let l = KeyedLimiter::per_minute(3);
        for _ in 0..3 {
            l.check("alice").unwrap();
        }
        let wait = l.check("alice").unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
        // another user is not affected
        l.check("bob").unwrap();
        tokio::time::advance(Duration::from_secs(19)).await;
        assert!(l.check("alice").is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        l.check("alice").unwrap();
        assert!(l.check("alice").is_err());
    }
}
