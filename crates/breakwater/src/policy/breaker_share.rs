//! Circuit-breaker trips shared between gateway instances through Redis, so
//! that one instance's discovery that a target is down protects the others.
//!
//! **Model.** One Redis HASH (default key `bw:breakers`) maps a target's id
//! (`provider/model`) to `<open until, ms of the Redis clock>:<instance>`.
//! An instance whose breaker trips publishes its open period there
//! ([`BreakerShare::publish_open`]; a later end time replaces an earlier
//! one, never the reverse); one whose probes close the breaker again removes
//! the entry ([`BreakerShare::publish_closed`]). Every instance polls the
//! hash ([`BreakerShare::open_targets`]) and forces its own breaker of each
//! listed target open for the time left
//! ([`CircuitBreaker::force_open`](super::breaker::CircuitBreaker::force_open)),
//! skipping the entries it published itself. Times are computed by the
//! Redis server's clock, so skew between gateway hosts does not matter. The
//! key carries a TTL of the longest open period left, and expired fields are
//! dropped on every publish, so nothing leaks.
//!
//! **Cluster.** One key: every script touches a single slot.
//!
//! **Failures.** Every call goes through [`RedisStore`] (bounded by the Redis
//! timeout, skipped while Redis is marked down) and fails open: without
//! Redis each instance simply keeps its own breakers, as without sharing.

use crate::redis_store::{RedisStore, RedisUnavailable};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// The default HASH key.
pub const DEFAULT_KEY: &str = "bw:breakers";

/// Reads the Redis clock in ms (effects replication for writes after TIME).
const CLOCK: &str = r#"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function until_of(v) return tonumber(string.match(v or '', '^(%d+)')) or 0 end
"#;

/// KEYS[1] = hash; ARGV = target, open_for_ms, instance.
static OPEN: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{CLOCK}{}",
        r#"
local u = now + tonumber(ARGV[2])
local cur = until_of(redis.call('HGET', KEYS[1], ARGV[1]))
local changed = 0
if cur < u then
  redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', u) .. ':' .. ARGV[3])
  changed = 1
end
local all = redis.call('HGETALL', KEYS[1])
local latest = now
for i = 1, #all, 2 do
  local x = until_of(all[i + 1])
  if x <= now then redis.call('HDEL', KEYS[1], all[i]) elseif x > latest then latest = x end
end
if latest > now then redis.call('PEXPIRE', KEYS[1], latest - now + 1000) end
return changed
"#
    ))
});

/// KEYS[1] = hash → flat list of target, ms left, instance.
static READ: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        "{CLOCK}{}",
        r#"
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local x = until_of(all[i + 1])
  if x > now then
    out[#out + 1] = all[i]
    out[#out + 1] = string.format('%d', x - now)
    out[#out + 1] = string.match(all[i + 1], ':(.*)$') or ''
  end
end
return out
"#
    ))
});

/// One instance's view of the shared breaker hash.
#[derive(Debug, Clone)]
pub struct BreakerShare {
    redis: RedisStore,
    key: Arc<str>,
    instance: Arc<str>,
}

impl BreakerShare {
    /// Shares through `redis` under [`DEFAULT_KEY`], as a new instance with a
    /// random id.
    pub fn new(redis: RedisStore) -> Self {
        Self::with_key(redis, DEFAULT_KEY)
    }

    /// Shares under another HASH key (for several independent gateway
    /// fleets on one Redis, or tests).
    pub fn with_key(redis: RedisStore, key: &str) -> Self {
        BreakerShare {
            redis,
            key: Arc::from(key),
            instance: Arc::from(format!("{:016x}", rand::random::<u64>())),
        }
    }

    /// This instance's id (entries it published are not read back).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Publishes that `target` is open for `open_for` from now (a later end
    /// already there stays). Returns whether the entry changed.
    pub async fn publish_open(&self, target: &str, open_for: Duration) -> Result<bool, RedisUnavailable> {
        let ms = open_for.as_millis().max(1).to_string();
        let n: i64 = self
            .redis
            .eval(
                &OPEN,
                &[&*self.key],
                &[target.as_bytes(), ms.as_bytes(), self.instance.as_bytes()],
            )
            .await?;
        Ok(n == 1)
    }

    /// Publishes that `target` works again (its probes succeeded).
    pub async fn publish_closed(&self, target: &str) -> Result<(), RedisUnavailable> {
        let _: i64 = self.redis.query(redis::cmd("HDEL").arg(&*self.key).arg(target)).await?;
        Ok(())
    }

    /// The targets other instances report open, with the time left.
    pub async fn open_targets(&self) -> Result<HashMap<String, Duration>, RedisUnavailable> {
        let flat: Vec<String> = self.redis.eval(&READ, &[&*self.key], &[]).await?;
        let mut out = HashMap::new();
        for t in flat.chunks_exact(3) {
            if t[2] == *self.instance {
                continue;
            }
            if let Ok(ms) = t[1].parse::<u64>() {
                out.insert(t[0].clone(), Duration::from_millis(ms));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_store::RedisConfig;
    use breakwater_testkit::RedisServer;

    #[tokio::test]
    async fn trips_are_seen_by_the_other_instances_only() {
        let r = RedisServer::start().await.unwrap();
        let store = RedisStore::connect(&RedisConfig {
            timeout_ms: 1000,
            ..RedisConfig::single(r.url())
        })
        .unwrap();
        let a = BreakerShare::with_key(store.clone(), "t:breakers");
        let b = BreakerShare::with_key(store.clone(), "t:breakers");
        assert!(a.publish_open("p/m", Duration::from_secs(30)).await.unwrap());
        assert!(a.open_targets().await.unwrap().is_empty(), "own entries are skipped");
        let seen = b.open_targets().await.unwrap();
        let left = seen["p/m"];
        assert!(
            left > Duration::from_secs(25) && left <= Duration::from_secs(30),
            "{left:?}"
        );
        // A shorter period does not shorten it; a longer one extends it.
        assert!(!b.publish_open("p/m", Duration::from_secs(5)).await.unwrap());
        assert!(b.publish_open("p/m", Duration::from_secs(60)).await.unwrap());
        assert!(a.open_targets().await.unwrap()["p/m"] > Duration::from_secs(50));
        let ttl: i64 = store.query(redis::cmd("PTTL").arg("t:breakers")).await.unwrap();
        assert!(ttl > 50_000, "the key expires after the longest period: {ttl}");
        b.publish_closed("p/m").await.unwrap();
        assert!(a.open_targets().await.unwrap().is_empty());
        // Expired entries vanish by themselves.
        assert!(a.publish_open("q/m", Duration::from_millis(1)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(b.open_targets().await.unwrap().is_empty());
    }
}
