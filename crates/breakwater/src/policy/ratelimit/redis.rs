//! The Redis limiter store: one Lua script call per decision, shared by
//! every gateway instance that uses the same Redis.
//!
//! **Atomicity.** Each decision (and each settle) is one `EVALSHA` of a
//! script that reads, decides and writes in one step, so concurrent
//! instances cannot both take the last unit.
//!
//! **Keys.** `bw:rl:{<limiter>:<key>}` (the sliding log adds `:log` and
//! `:sum`). The braces are a Redis Cluster hash tag: all keys of one
//! decision live in the same slot, so the multi-key script works on a
//! cluster. Every key gets a TTL of about the time until it is back to its
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
//! levels are fractional tokens; comparisons allow 1 µs (or 1e-9 token) of
//! rounding, which can admit at most a microsecond's worth of refill early.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeSource {
    /// The Redis server's `TIME`: one clock for all instances.
    #[default]
    Redis,
    /// This process's clock (wall time at start plus tokio time since).
    Local,
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
            Algorithm::SlidingLog => vec![format!("{base}:log"), format!("{base}:sum")],
            _ => vec![base],
        }
    }

    fn now_arg(&self) -> String {
        match self.time {
            TimeSource::Redis => String::new(),
            TimeSource::Local => (self.base_us + self.start.elapsed().as_micros() as u64).to_string(),
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
