//! The Redis limiter store: one Lua script call per decision, shared by
//! every gateway instance that uses the same Redis.
//!
//! **Atomicity.** Each decision (and each settle) is one `EVALSHA` of a
//! script that reads, decides and writes in one step, so concurrent
//! instances cannot both take the last unit.
//!
//! **Keys.** `bw:rl:{<limiter>:<key>}:<algorithm>` (`:tb`, `:gcra`,
//! `:win`; the sliding log uses `:log` and `:log:sum`), so changing a
//! limiter's algorithm never meets a key of the wrong type. The braces are
//! a Redis Cluster hash tag: all keys of one decision live in the same
//! slot, so the multi-key script works on a cluster. Every key gets a TTL of about the time until it is back to its
//! full allowance (two periods for the sliding window), so idle keys
//! disappear by themselves and nothing leaks.
//!
//! **Time.** By default the script reads the clock of the Redis server
//! (`TIME`), not the gateway's: all instances then judge against one clock,
//! and clock skew between gateway hosts cannot let one of them refill a
//! bucket early. (In a cluster each key lives on one node and uses that
//! node's clock; only a failover to a replica with a skewed clock can shift
//! a key's time, by the skew, once.) A clock that steps backwards never
//! refills anything: elapsed time is clamped at zero. [`TimeSource::Local`]
//! passes the gateway's own clock instead, which is only safe with
//! synchronised clocks and exists for tests that drive time.
//!
//! **Precision.** Lua numbers are doubles: times are whole microseconds and
//! levels are fractional tokens. Comparisons allow 1 µs (or 1e-9 token) of
//! rounding, so an admission can come up to a microsecond early; GCRA's
//! stored timestamp also rounds to a quarter microsecond per admission.
//!
//! **Failures.** Calls go through [`RedisStore`], which bounds each call by
//! the Redis timeout and stops calling a Redis that keeps failing; the
//! limiter then applies the store's failure policy.

use super::{Algorithm, Decision, LimitSpec, LimiterStore, Ticket};
use crate::redis_store::{FailurePolicy, RedisStore, RedisUnavailable};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// Which clock the scripts use.
#[derive(Debug, Clone, Default)]
pub enum TimeSource {
    /// The Redis server's `TIME`: one clock for all instances.
    #[default]
    Redis,
    /// This process's clock (wall time at start plus tokio time since).
    Local,
    /// A clock the test sets, in microseconds.
    #[cfg(test)]
    Manual(Arc<AtomicU64>),
}

/// Shared Lua helpers, prepended to every script.
const PRELUDE: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local function num(x) return string.format('%.17g', x) end
local function clock()
  if ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now = clock()
local limit = tonumber(ARGV[2])
local period = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local mode = ARGV[5]
local at = tonumber(ARGV[6])
local function ms(us) return math.max(1, math.ceil(us / 1000)) end
"#;

/// Token bucket: HASH {l = level in tokens, t = last refill in µs}.
const TOKEN_BUCKET: &str = r#"
local key = KEYS[1]
local rate = limit / period
local v = redis.call('HMGET', key, 'l', 't')
local level = tonumber(v[1])
local last = tonumber(v[2])
if level == nil or last == nil then level = limit; last = now end
if now > last then
  level = math.min(limit, level + (now - last) * rate)
  last = now
end
local allowed, retry = 0, 0
if mode == 'adjust' then
  level = math.min(limit, level - cost)
elseif level + 1e-9 >= cost then
  level = level - cost
  allowed = 1
else
  retry = math.ceil((cost - level) / rate)
end
local reset = math.max(0, math.ceil((limit - level) / rate))
if level < limit then
  redis.call('HSET', key, 'l', num(level), 't', num(last))
  redis.call('PEXPIRE', key, ms(reset) + 1000)
else
  redis.call('DEL', key)
end
return {allowed, math.max(0, math.floor(level + 1e-9)), reset, retry, now}
"#;

/// GCRA: STRING = theoretical arrival time in µs.
const GCRA: &str = r#"
local key = KEYS[1]
local interval = period / limit
local tat = tonumber(redis.call('GET', key)) or now
if tat < now then tat = now end
local allowed, retry = 0, 0
if mode == 'adjust' then
  tat = math.max(now, tat + cost * interval)
else
  local new_tat = tat + cost * interval
  if new_tat - now <= period + 1 then
    tat = new_tat
    allowed = 1
  else
    retry = math.ceil(new_tat - now - period)
  end
end
local reset = math.max(0, math.ceil(tat - now))
if reset > 0 then
  redis.call('SET', key, num(tat), 'PX', ms(reset) + 1000)
else
  redis.call('DEL', key)
end
local remaining = math.floor((period - (tat - now)) / interval + 1e-9)
return {allowed, math.max(0, remaining), reset, retry, now}
"#;

/// Sliding log: ZSET of "time:id:cost" scored by time (µs), plus the sum
/// of the costs in a STRING, both under one hash tag.
const SLIDING_LOG: &str = r#"
local log, sumk = KEYS[1], KEYS[2]
local id = ARGV[7]
local function cost_of(m) return tonumber(string.match(m, ':(%d+)$')) or 0 end
local expired = redis.call('ZRANGEBYSCORE', log, '-inf', num(now - period))
local freed = 0
for _, m in ipairs(expired) do freed = freed + cost_of(m) end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', log, '-inf', num(now - period)) end
local sum = math.max(0, (tonumber(redis.call('GET', sumk)) or 0) - freed)
local allowed, retry = 0, 0
if mode == 'adjust' then
  local orig = tonumber(ARGV[8])
  local member = num(at) .. ':' .. id .. ':' .. num(orig)
  if redis.call('ZSCORE', log, member) then
    local nc = math.max(0, orig + cost)
    redis.call('ZREM', log, member)
    if nc > 0 then redis.call('ZADD', log, num(at), num(at) .. ':' .. id .. ':' .. num(nc)) end
    sum = math.max(0, sum + nc - orig)
  elseif cost > 0 then
    redis.call('ZADD', log, num(now), num(now) .. ':' .. id .. ':' .. num(cost))
    sum = sum + cost
  end
elseif sum + cost <= limit then
  if cost > 0 then
    redis.call('ZADD', log, num(now), num(now) .. ':' .. id .. ':' .. num(cost))
    sum = sum + cost
  end
  allowed = 1
else
  local need = sum + cost - limit
  local acc = 0
  local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    acc = acc + cost_of(entries[i])
    if acc >= need then
      retry = math.max(1, tonumber(entries[i + 1]) + period - now)
      break
    end
  end
end
local reset = 0
local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
if #newest == 2 then reset = math.max(0, tonumber(newest[2]) + period - now) end
if reset > 0 then
  redis.call('SET', sumk, num(sum), 'PX', ms(reset) + 1000)
  redis.call('PEXPIRE', log, ms(reset) + 1000)
else
  redis.call('DEL', log, sumk)
end
return {allowed, math.max(0, limit - sum), reset, retry, now}
"#;

/// Sliding window (two counters): HASH {w = current window index, c = its
/// count, p = the previous window's count}.
const SLIDING_WINDOW: &str = r#"
local key = KEYS[1]
local idx = math.floor(now / period)
local v = redis.call('HMGET', key, 'w', 'c', 'p')
local w, c, p = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
if w == nil then w = idx; c = 0; p = 0
elseif idx == w + 1 then p = c; c = 0; w = idx
elseif idx > w + 1 then p = 0; c = 0; w = idx end
local e = math.min(period, math.max(0, now - w * period))
local allowed, retry = 0, 0
if mode == 'adjust' then
  local at_idx = math.floor(at / period)
  if at_idx == w then c = math.max(0, c + cost)
  elseif at_idx + 1 == w then p = math.max(0, p + cost)
  elseif cost > 0 then c = c + cost end
else
  local est = p * (period - e) / period + c
  if est + cost <= limit + 1e-9 then
    c = c + cost
    allowed = 1
  elseif c + cost <= limit and p > 0 then
    local at_e = period - (limit - c - cost) * period / p
    retry = math.max(1, math.ceil(at_e - e))
  else
    local at_e = 0
    if c > 0 then at_e = math.max(0, period - (limit - cost) * period / c) end
    retry = math.max(1, math.ceil(period - e + at_e))
  end
end
local est = p * (period - e) / period + c
local reset = 0
if c > 0 then reset = 2 * period - e elseif p > 0 then reset = period - e end
if c > 0 or p > 0 then
  redis.call('HSET', key, 'w', num(w), 'c', num(c), 'p', num(p))
  redis.call('PEXPIRE', key, ms(2 * period) + 1000)
else
  redis.call('DEL', key)
end
return {allowed, math.max(0, math.floor(limit - est + 1e-9)), math.ceil(reset), retry, now}
"#;

fn script(algo: Algorithm) -> redis::Script {
    let body = match algo {
        Algorithm::TokenBucket => TOKEN_BUCKET,
        Algorithm::Gcra => GCRA,
        Algorithm::SlidingLog => SLIDING_LOG,
        Algorithm::SlidingWindow => SLIDING_WINDOW,
    };
    redis::Script::new(&format!("{PRELUDE}{body}"))
}

/// Limiter state in Redis.
#[derive(Debug, Clone)]
pub struct RedisLimiterStore {
    redis: RedisStore,
    spec: LimitSpec,
    prefix: Arc<str>,
    script: Arc<redis::Script>,
    time: TimeSource,
    /// Wall-clock µs at `start`, for [`TimeSource::Local`].
    base_us: u64,
    start: Instant,
    ids: Arc<AtomicU64>,
}

impl RedisLimiterStore {
    /// A store for `spec` under the name `limiter` (part of every key: give
    /// each limiter its own, e.g. `key-rpm`). Instances using the same name
    /// and Redis share the limit.
    pub fn new(redis: RedisStore, limiter: &str, spec: LimitSpec) -> Self {
        let base_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        RedisLimiterStore {
            redis,
            spec,
            prefix: limiter.into(),
            script: Arc::new(script(spec.algorithm)),
            time: TimeSource::Redis,
            base_us,
            start: Instant::now(),
            ids: Arc::new(AtomicU64::new(rand::random())),
        }
    }

    /// Uses another clock (see [`TimeSource`]).
    pub fn with_time_source(mut self, time: TimeSource) -> Self {
        self.time = time;
        self
    }

    fn keys(&self, key: &str) -> Vec<String> {
        let base = format!("bw:rl:{{{}:{}}}", self.prefix, key);
        match self.spec.algorithm {
            Algorithm::TokenBucket => vec![format!("{base}:tb")],
            Algorithm::Gcra => vec![format!("{base}:gcra")],
            Algorithm::SlidingLog => vec![format!("{base}:log"), format!("{base}:log:sum")],
            Algorithm::SlidingWindow => vec![format!("{base}:win")],
        }
    }

    fn now_arg(&self) -> String {
        match &self.time {
            TimeSource::Redis => String::new(),
            TimeSource::Local => (self.base_us + self.start.elapsed().as_micros() as u64).to_string(),
            #[cfg(test)]
            TimeSource::Manual(t) => t.load(Ordering::Relaxed).to_string(),
        }
    }

    /// Runs the script: `mode` is `take` (cost) or `adjust` (delta on the
    /// take described by `ticket`).
    async fn call(&self, key: &str, mode: &str, cost: i64, ticket: Ticket) -> Result<[i64; 5], RedisUnavailable> {
        let q = self.spec.quota;
        let period_us = u64::try_from(q.period().as_micros()).unwrap_or(u64::MAX).max(1);
        let (at, id, orig) = (ticket.at, ticket.id, ticket.cost);
        let args: [String; 8] = [
            self.now_arg(),
            q.limit().to_string(),
            period_us.to_string(),
            cost.to_string(),
            mode.to_string(),
            at.to_string(),
            id.to_string(),
            orig.to_string(),
        ];
        let keys = self.keys(key);
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let arg_refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let out: Vec<i64> = self.redis.eval(&self.script, &key_refs, &arg_refs).await?;
        out.try_into()
            .map_err(|v: Vec<i64>| RedisUnavailable(format!("limiter script answered {} values, not 5", v.len())))
    }
}

fn dur_us(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

impl LimiterStore for RedisLimiterStore {
    fn spec(&self) -> LimitSpec {
        self.spec
    }

    async fn take(&self, key: &str, cost: u64) -> Result<(Decision, Ticket), RedisUnavailable> {
        // Tells apart takes of the same key in the same microsecond.
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let blank = Ticket { at: 0, id, cost: 0 };
        let [allowed, remaining, reset, retry, now] = self
            .call(key, "take", i64::try_from(cost).unwrap_or(i64::MAX), blank)
            .await?;
        let d = Decision {
            allowed: allowed == 1,
            limit: self.spec.quota.limit(),
            remaining: u64::try_from(remaining).unwrap_or(0),
            reset_after: dur_us(reset),
            retry_after: if allowed == 1 { Duration::ZERO } else { dur_us(retry) },
        };
        let ticket = Ticket {
            at: u64::try_from(now).unwrap_or(0),
            id,
            cost,
        };
        Ok((d, ticket))
    }

    async fn adjust(&self, key: &str, ticket: Ticket, delta: i64) -> Result<(), RedisUnavailable> {
        self.call(key, "adjust", delta, ticket).await.map(|_| ())
    }

    fn failure_policy(&self) -> FailurePolicy {
        self.redis.failure_policy()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CODE_STORE_DOWN, Quota, RateLimiter};
    use super::*;
    use crate::error::ErrorKind;
    use crate::redis_store::RedisConfig;
    use breakwater_testkit::{RedisCluster, RedisServer};

    const ALL: [Algorithm; 4] = [
        Algorithm::TokenBucket,
        Algorithm::Gcra,
        Algorithm::SlidingLog,
        Algorithm::SlidingWindow,
    ];

    fn handle(url: &str, on_failure: FailurePolicy) -> RedisStore {
        let cfg = RedisConfig {
            on_failure,
            timeout_ms: 200,
            ..RedisConfig::single(url)
        };
        RedisStore::connect(&cfg).unwrap()
    }

    fn limiter(redis: &RedisStore, name: &str, algorithm: Algorithm, limit: u64) -> RateLimiter<RedisLimiterStore> {
        let spec = LimitSpec {
            algorithm,
            quota: Quota::per_minute(limit),
        };
        RateLimiter::new(name, RedisLimiterStore::new(redis.clone(), name, spec))
    }

    async fn ttl_ms(redis: &RedisStore, key: &str) -> i64 {
        redis.query(redis::cmd("PTTL").arg(key)).await.unwrap()
    }

    #[tokio::test]
    async fn each_algorithm_admits_the_burst_then_refuses_with_the_wait() {
        let server = RedisServer::start().await.unwrap();
        let redis = handle(&server.url(), FailurePolicy::Open);
        for algo in ALL {
            let l = limiter(&redis, &format!("{algo:?}"), algo, 5);
            for i in 0..5 {
                let r = l.try_acquire("k", 1).await.unwrap();
                assert_eq!(r.decision().remaining, 4 - i, "{algo:?}");
            }
            let e = l.try_acquire("k", 1).await.unwrap_err();
            assert_eq!(e.error.kind, ErrorKind::RateLimited);
            let d = e.decision.unwrap();
            // 5 per minute: one back in 12 s (the log and the window wait
            // for the whole burst to age).
            assert!(
                d.retry_after >= Duration::from_secs(11) && d.retry_after <= Duration::from_secs(120),
                "{algo:?}: {:?}",
                d.retry_after
            );
            assert!(d.reset_after > Duration::ZERO && d.reset_after <= Duration::from_secs(120));
            // Every key it wrote expires.
            let mut keys: Vec<String> = redis
                .query(redis::cmd("KEYS").arg(format!("bw:rl:{{{algo:?}:k}}*")))
                .await
                .unwrap();
            keys.sort();
            assert!(!keys.is_empty(), "{algo:?}");
            for k in keys {
                let ttl = ttl_ms(&redis, &k).await;
                assert!(ttl > 0 && ttl <= 121_000, "{algo:?} {k}: ttl {ttl}");
            }
        }
        assert_eq!(redis.stats().failed, 0);
    }

    /// Two gateway instances (two handles) share one limit, also when
    /// they race.
    #[tokio::test]
    async fn two_clients_share_one_limit() {
        let server = RedisServer::start().await.unwrap();
        for algo in ALL {
            let a = limiter(&handle(&server.url(), FailurePolicy::Open), "shared", algo, 50);
            let b = limiter(&handle(&server.url(), FailurePolicy::Open), "shared", algo, 50);
            let key = format!("{algo:?}");
            let mut admitted = 0;
            for _ in 0..30 {
                let (x, y) = tokio::join!(a.try_acquire(&key, 1), b.try_acquire(&key, 1));
                admitted += usize::from(x.is_ok()) + usize::from(y.is_ok());
            }
            assert_eq!(admitted, 50, "{algo:?}");
            assert_eq!(a.stats().admitted + b.stats().admitted, 50);
            assert!(a.stats().admitted > 0 && b.stats().admitted > 0);
        }
    }

    #[tokio::test]
    async fn reserve_then_settle_in_redis() {
        let server = RedisServer::start().await.unwrap();
        let redis = handle(&server.url(), FailurePolicy::Open);
        for algo in ALL {
            let l = limiter(&redis, &format!("settle-{algo:?}"), algo, 1000);
            let a = l.try_acquire("k", 600).await.unwrap();
            assert!(l.try_acquire("k", 600).await.is_err(), "{algo:?}");
            l.settle("k", a, 200).await;
            let b = l.try_acquire("k", 600).await.unwrap();
            assert!(b.decision().remaining <= 200, "{algo:?}");
            l.settle("k", b, 800).await;
            assert!(l.try_acquire("k", 5).await.is_err(), "{algo:?}: the excess is charged");
        }
        assert_eq!(redis.stats().failed, 0);
    }

    /// Refill follows the script's clock (driven here by hand).
    #[tokio::test]
    async fn refill_follows_the_clock() {
        let server = RedisServer::start().await.unwrap();
        let redis = handle(&server.url(), FailurePolicy::Open);
        for algo in ALL {
            let clock = Arc::new(AtomicU64::new(1_700_000_000_000_000));
            let spec = LimitSpec {
                algorithm: algo,
                quota: Quota::per_minute(60),
            };
            let store = RedisLimiterStore::new(redis.clone(), &format!("clock-{algo:?}"), spec)
                .with_time_source(TimeSource::Manual(clock.clone()));
            let l = RateLimiter::new("rpm", store);
            for _ in 0..60 {
                let _ = l.try_acquire("k", 1).await.unwrap();
            }
            let wait = l.try_acquire("k", 1).await.unwrap_err().decision.unwrap().retry_after;
            // Exact to the microsecond of tolerance the scripts allow.
            clock.fetch_add(wait.as_micros() as u64 - 2, Ordering::Relaxed);
            assert!(l.try_acquire("k", 1).await.is_err(), "{algo:?}: 2 µs early");
            clock.fetch_add(2, Ordering::Relaxed);
            assert!(l.try_acquire("k", 1).await.is_ok(), "{algo:?}: on time after {wait:?}");
            // Drained again, a clock that steps back refills nothing.
            for _ in 0..100 {
                if l.try_acquire("k", 1).await.is_err() {
                    break;
                }
            }
            clock.fetch_sub(30_000_000, Ordering::Relaxed);
            assert!(l.try_acquire("k", 1).await.is_err(), "{algo:?}");
        }
    }

    /// The acceptance case: Redis killed mid-test, then back.
    #[tokio::test]
    async fn redis_killed_mid_test_fails_open_or_closed_then_recovers() {
        let mut server = RedisServer::start().await.unwrap();
        let open = limiter(&handle(&server.url(), FailurePolicy::Open), "kill", Algorithm::Gcra, 2);
        let closed = limiter(
            &handle(&server.url(), FailurePolicy::Closed),
            "kill",
            Algorithm::Gcra,
            2,
        );
        let _ = open.try_acquire("k", 1).await.unwrap();
        let _ = closed.try_acquire("k", 1).await.unwrap();
        assert!(open.try_acquire("k", 1).await.is_err(), "the limit is shared");

        server.kill();
        for _ in 0..5 {
            let r = open.try_acquire("k", 1).await.unwrap();
            assert!(r.unchecked(), "fail-open admits without a decision");
            let e = closed.try_acquire("k", 1).await.unwrap_err();
            assert_eq!(e.error.kind, ErrorKind::Overloaded);
            assert_eq!(e.error.code.as_deref(), Some(CODE_STORE_DOWN));
            assert!(e.error.message.contains("unavailable"), "{}", e.error.message);
        }
        let (o, c) = (open.stats(), closed.stats());
        assert_eq!((o.failed_open, o.store_errors), (5, 5));
        assert_eq!((c.failed_closed, c.store_errors), (5, 5));

        server.restart().await.unwrap();
        // The handles reconnect by themselves (after their cool-down).
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match closed.try_acquire("k", 1).await {
                Ok(r) => {
                    assert!(!r.unchecked());
                    break;
                }
                Err(e) => assert_eq!(e.error.code.as_deref(), Some(CODE_STORE_DOWN)),
            }
            assert!(std::time::Instant::now() < give_up, "redis never came back");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The restarted Redis is empty: one more fits, then the limit holds again.
        let mut admitted = 1;
        loop {
            match open.try_acquire("k", 1).await {
                Ok(r) if !r.unchecked() => admitted += 1,
                Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => {
                    assert_eq!(e.error.kind, ErrorKind::RateLimited);
                    break;
                }
            }
            assert!(std::time::Instant::now() < give_up, "redis never came back");
        }
        assert_eq!(admitted, 2);
    }

    /// On Redis Cluster the hash tag keeps the sliding log's two keys in
    /// one slot.
    #[tokio::test]
    async fn works_on_redis_cluster() {
        let cluster = match RedisCluster::start(3).await {
            Ok(c) => c,
            Err(e) => panic!("cannot start a redis cluster: {e}"),
        };
        let cfg = RedisConfig {
            url: crate::redis_store::RedisUrls::Many(cluster.urls()),
            cluster: true,
            timeout_ms: 500,
            on_failure: FailurePolicy::Closed,
            share_breakers: false,
        };
        let redis = RedisStore::connect(&cfg).unwrap();
        for algo in ALL {
            let l = limiter(&redis, &format!("cluster-{algo:?}"), algo, 3);
            for user in ["alice", "bob", "carol", "dave"] {
                for _ in 0..3 {
                    let r = l.try_acquire(user, 1).await.unwrap();
                    assert!(!r.unchecked());
                }
                let e = l.try_acquire(user, 1).await.unwrap_err();
                assert_eq!(e.error.kind, ErrorKind::RateLimited, "{algo:?}: {}", e.error.message);
            }
        }
    }
}
