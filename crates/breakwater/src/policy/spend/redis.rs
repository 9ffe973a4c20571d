//! Spending counted in Redis, shared by all instances.
//!
//! One HASH per key and period, `bw:spend:{<key>}:<period start>` with
//! fields `t` (tokens) and `u` (nano-dollars), expiring a day after the
//! period ends (late settles still land; then it is gone). A reservation is
//! one script call: check both caps and add, atomically.

use super::{Spend, SpendDecision, SpendLimit, SpendStore, Window};
use crate::redis_store::{FailurePolicy, RedisStore, RedisUnavailable};
use std::sync::{Arc, LazyLock};

const GRACE_S: u64 = 86_400;

static RESERVE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local v = redis.call('HMGET', KEYS[1], 't', 'u')
local t, u = tonumber(v[1]) or 0, tonumber(v[2]) or 0
local lt, lu = tonumber(ARGV[1]), tonumber(ARGV[2])
local ct, cu = tonumber(ARGV[3]), tonumber(ARGV[4])
local ok = (lt < 0 or t + ct <= lt) and (lu < 0 or u + cu <= lu)
if ok then
  t = redis.call('HINCRBY', KEYS[1], 't', ARGV[3])
  u = redis.call('HINCRBY', KEYS[1], 'u', ARGV[4])
  redis.call('EXPIREAT', KEYS[1], ARGV[5])
end
return {ok and 1 or 0, t, u}
"#,
    )
});

static ADJUST: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
for i, f in ipairs({'t', 'u'}) do
  if redis.call('HINCRBY', KEYS[1], f, ARGV[i]) < 0 then redis.call('HSET', KEYS[1], f, 0) end
end
redis.call('EXPIREAT', KEYS[1], ARGV[3])
return 1
"#,
    )
});

/// Spending per key in Redis.
#[derive(Debug, Clone)]
pub struct RedisSpendStore {
    redis: RedisStore,
    scope: Arc<str>,
}

impl RedisSpendStore {
    /// A store under `scope` (part of the keys, e.g. `key`), on `redis`.
    pub fn new(redis: RedisStore, scope: &str) -> Self {
        RedisSpendStore {
            redis,
            scope: scope.into(),
        }
    }

    fn key(&self, key: &str, window: Window) -> String {
        format!("bw:spend:{{{}:{}}}:{}", self.scope, key, window.start)
    }
}

fn cap(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_string(), |n| n.to_string())
}

impl SpendStore for RedisSpendStore {
    async fn reserve(
        &self,
        key: &str,
        window: Window,
        limit: SpendLimit,
        cost: Spend,
    ) -> Result<SpendDecision, RedisUnavailable> {
        let k = self.key(key, window);
        let args = [
            cap(limit.tokens),
            cap(limit.nano_usd),
            cost.tokens.to_string(),
            cost.nano_usd.to_string(),
            (window.end + GRACE_S).to_string(),
        ];
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let (ok, t, u): (i64, i64, i64) = self.redis.eval(&RESERVE, &[&k], &argv).await?;
        Ok(SpendDecision {
            allowed: ok == 1,
            spent: Spend {
                tokens: u64::try_from(t).unwrap_or(0),
                nano_usd: u64::try_from(u).unwrap_or(0),
            },
        })
    }

    async fn adjust(&self, key: &str, window: Window, tokens: i64, nano_usd: i64) -> Result<(), RedisUnavailable> {
        let k = self.key(key, window);
        let args = [
            tokens.to_string(),
            nano_usd.to_string(),
            (window.end + GRACE_S).to_string(),
        ];
        let argv: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let _: i64 = self.redis.eval(&ADJUST, &[&k], &argv).await?;
        Ok(())
    }

    async fn spent(&self, key: &str, window: Window) -> Result<Spend, RedisUnavailable> {
        let (t, u): (Option<u64>, Option<u64>) = self
            .redis
            .query(redis::cmd("HMGET").arg(self.key(key, window)).arg("t").arg("u"))
            .await?;
        Ok(Spend {
            tokens: t.unwrap_or(0),
            nano_usd: u.unwrap_or(0),
        })
    }

    fn failure_policy(&self) -> FailurePolicy {
        self.redis.failure_policy()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BudgetConfig, Period, SpendLimiter};
    use super::*;
    use crate::error::ErrorKind;
    use crate::redis_store::RedisConfig;
    use breakwater_testkit::RedisServer;
    use std::time::{Duration, SystemTime};

    fn handle(url: &str, on_failure: FailurePolicy) -> RedisStore {
        RedisStore::connect(&RedisConfig {
            on_failure,
            timeout_ms: 200,
            ..RedisConfig::single(url)
        })
        .unwrap()
    }

    fn tokens(n: u64) -> Spend {
        Spend { tokens: n, nano_usd: 0 }
    }

    #[tokio::test]
    async fn two_instances_share_a_budget_that_expires_after_its_period() {
        let server = RedisServer::start().await.unwrap();
        let cfg = BudgetConfig {
            usd: Some(0.001),
            tokens: Some(1000),
            period: Period::Day,
        };
        let a = SpendLimiter::new(
            cfg,
            RedisSpendStore::new(handle(&server.url(), FailurePolicy::Open), "key"),
        );
        let b = SpendLimiter::new(
            cfg,
            RedisSpendStore::new(handle(&server.url(), FailurePolicy::Open), "key"),
        );
        let r = a.reserve("team-a", tokens(600)).await.unwrap();
        assert!(!r.unchecked());
        let e = b.reserve("team-a", tokens(600)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::BudgetExceeded);
        a.settle("team-a", r, tokens(100)).await;
        let r = b.reserve("team-a", tokens(600)).await.unwrap();
        assert_eq!(r.spent().tokens, 700);
        // Dollars are capped too: $0.001 = 1 000 000 nano-dollars.
        let e = b
            .reserve(
                "team-a",
                Spend {
                    tokens: 1,
                    nano_usd: 1_000_001,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BudgetExceeded);
        assert_eq!(a.spent("team-a").await.unwrap(), tokens(700));
        // The key expires a day after the period ends.
        let window = Period::Day.window(SystemTime::now());
        let key = format!("bw:spend:{{key:team-a}}:{}", window.start);
        let ttl: i64 = handle(&server.url(), FailurePolicy::Open)
            .query(redis::cmd("TTL").arg(&key))
            .await
            .unwrap();
        let until_end = window.remaining(SystemTime::now()).as_secs() as i64;
        assert!(ttl > until_end && ttl <= until_end + GRACE_S as i64 + 1, "ttl {ttl}");
    }

    #[tokio::test]
    async fn settles_clamp_at_zero_and_periods_are_separate() {
        let server = RedisServer::start().await.unwrap();
        // Keys expire by Redis's own clock, so the test's clock starts now.
        let t = std::sync::Arc::new(std::sync::Mutex::new(SystemTime::now()));
        let t2 = t.clone();
        let cfg = BudgetConfig {
            usd: None,
            tokens: Some(100),
            period: Period::Week,
        };
        let l = SpendLimiter::new(
            cfg,
            RedisSpendStore::new(handle(&server.url(), FailurePolicy::Open), "k"),
        )
        .with_clock(move || *t2.lock().unwrap());
        let r = l.reserve("x", tokens(100)).await.unwrap();
        assert!(l.reserve("x", tokens(1)).await.is_err());
        *t.lock().unwrap() += Duration::from_secs(7 * 86_400);
        assert!(l.reserve("x", tokens(100)).await.is_ok(), "a new week");
        *t.lock().unwrap() -= Duration::from_secs(7 * 86_400);
        l.settle("x", r, tokens(0)).await;
        assert_eq!(l.spent("x").await.unwrap(), tokens(0));
    }

    #[tokio::test]
    async fn redis_down_fails_open_or_closed() {
        let mut server = RedisServer::start().await.unwrap();
        let cfg = BudgetConfig {
            usd: None,
            tokens: Some(100),
            period: Period::Month,
        };
        let open = SpendLimiter::new(
            cfg,
            RedisSpendStore::new(handle(&server.url(), FailurePolicy::Open), "k"),
        );
        let closed = SpendLimiter::new(
            cfg,
            RedisSpendStore::new(handle(&server.url(), FailurePolicy::Closed), "k"),
        );
        assert!(open.reserve("x", tokens(1)).await.is_ok());
        server.kill();
        let r = open.reserve("x", tokens(1000)).await.unwrap();
        assert!(r.unchecked());
        let e = closed.reserve("x", tokens(1)).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Overloaded);
        assert!(e.message.contains("unavailable"));
        assert_eq!((open.stats().failed_open, closed.stats().failed_closed), (1, 1));
    }
}
