//! Namespace generations: invalidation without scanning.
//!
//! Every cache key folds in three counters — global, per model alias, per
//! tenant. Bumping one makes every key under it new, so the old entries are
//! never read again and simply age out. Counters live in memory and, with
//! Redis, in Redis too (`INCR`), so a bump on one instance reaches the
//! others: each instance trusts its copy for `refresh` and then re-reads it
//! (one `MGET` per refresh, not per request). A local copy never goes
//! backwards, so an entry invalidated here is never read again here, even if
//! Redis lost its counters.

use super::clock::Clock;
use super::key::Generations;
use super::stats::CacheStats;
use crate::redis_store::RedisStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Redis keys share a hash tag so one `MGET` works on a cluster too.
const GLOBAL_KEY: &str = "{bw:cgen}:global";
const ALIAS_PREFIX: &str = "{bw:cgen}:a:";
const TENANT_PREFIX: &str = "{bw:cgen}:t:";
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    value: u64,
    /// When Redis was last asked (Unix ms); 0 = never.
    checked_ms: u64,
}

/// Which counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Global,
    Alias,
    Tenant,
}

type Shard = Mutex<HashMap<String, Slot>>;

/// The generation counters.
#[derive(Debug)]
pub struct Namespaces {
    /// One sharded map per kind, so a lookup borrows the name (no allocation).
    shards: [Vec<Shard>; 3],
    redis: Option<RedisStore>,
    refresh_ms: u64,
    clock: Clock,
    stats: Arc<CacheStats>,
}

fn redis_key(kind: Kind, name: &str) -> String {
    match kind {
        Kind::Global => GLOBAL_KEY.to_string(),
        Kind::Alias => format!("{ALIAS_PREFIX}{name}"),
        Kind::Tenant => format!("{TENANT_PREFIX}{name}"),
    }
}

impl Namespaces {
    /// Counters kept in memory, and in `redis` when given.
    pub fn new(redis: Option<RedisStore>, refresh_ms: u64, clock: Clock, stats: Arc<CacheStats>) -> Self {
        Namespaces {
            shards: std::array::from_fn(|_| (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect()),
            redis,
            refresh_ms,
            clock,
            stats,
        }
    }

    fn shard(&self, kind: Kind, name: &str) -> &Shard {
        // FNV-1a: cheap, and only spreads lock contention.
        let mut h: u32 = 0x811c_9dc5;
        for b in name.as_bytes() {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
        &self.shards[kind as usize][h as usize % SHARDS]
    }

    fn read(&self, kind: Kind, name: &str) -> Slot {
        let shard = self.shard(kind, name);
        let Ok(map) = shard.lock() else { return Slot::default() };
        map.get(name).copied().unwrap_or_default()
    }

    fn write(&self, kind: Kind, name: &str, value: u64, checked_ms: u64) -> u64 {
        let shard = self.shard(kind, name);
        let Ok(mut map) = shard.lock() else { return value };
        if !map.contains_key(name) {
            map.insert(name.to_string(), Slot::default());
        }
        let Some(slot) = map.get_mut(name) else { return value };
        slot.value = slot.value.max(value);
        slot.checked_ms = checked_ms;
        slot.value
    }

    /// The generations for a key under `alias` and (unless shared) `tenant`.
    pub async fn current(&self, alias: &str, tenant: Option<&str>) -> Generations {
        let wanted = [
            (Kind::Global, ""),
            (Kind::Alias, alias),
            (Kind::Tenant, tenant.unwrap_or("")),
        ];
        let n = if tenant.is_some() { 3 } else { 2 };
        let mut slots = [Slot::default(); 3];
        for i in 0..n {
            slots[i] = self.read(wanted[i].0, wanted[i].1);
        }
        if let Some(redis) = &self.redis {
            let now = self.clock.now_ms();
            let due = slots[..n]
                .iter()
                .any(|s| s.checked_ms == 0 || now.saturating_sub(s.checked_ms) >= self.refresh_ms);
            if due {
                let mut cmd = redis::cmd("MGET");
                for (kind, name) in &wanted[..n] {
                    cmd.arg(redis_key(*kind, name));
                }
                match redis.query::<Vec<Option<u64>>>(&cmd).await {
                    Ok(values) => {
                        for i in 0..n {
                            let remote = values.get(i).copied().flatten().unwrap_or(0);
                            slots[i].value = self.write(wanted[i].0, wanted[i].1, remote, now);
                        }
                    }
                    Err(_) => {
                        // Fail open with the local copy; ask again after
                        // the next refresh period, not on every request.
                        self.stats.l2_error();
                        for i in 0..n {
                            self.write(wanted[i].0, wanted[i].1, slots[i].value, now);
                        }
                    }
                }
            }
        }
        Generations {
            global: slots[0].value,
            alias: slots[1].value,
            tenant: slots[2].value,
        }
    }

    async fn bump(&self, kind: Kind, name: &str) -> u64 {
        let local = self.read(kind, name).value + 1;
        let now = self.clock.now_ms();
        let mut value = local;
        if let Some(redis) = &self.redis {
            match redis.query::<u64>(redis::cmd("INCR").arg(redis_key(kind, name))).await {
                Ok(remote) => value = value.max(remote),
                Err(_) => self.stats.l2_error(),
            }
        }
        self.write(kind, name, value, now)
    }

    /// Invalidates everything.
    pub async fn bump_global(&self) -> u64 {
        self.bump(Kind::Global, "").await
    }

    /// Invalidates everything under a model alias.
    pub async fn bump_alias(&self, alias: &str) -> u64 {
        self.bump(Kind::Alias, alias).await
    }

    /// Invalidates everything of a tenant.
    pub async fn bump_tenant(&self, tenant: &str) -> u64 {
        self.bump(Kind::Tenant, tenant).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bumps_are_local_without_redis() {
        let ns = Namespaces::new(None, 1000, Clock::tokio(), Arc::default());
        let g0 = ns.current("fast", Some("a")).await;
        assert_eq!(g0, Generations::default());
        ns.bump_alias("fast").await;
        ns.bump_tenant("a").await;
        ns.bump_global().await;
        let g1 = ns.current("fast", Some("a")).await;
        assert_eq!((g1.global, g1.alias, g1.tenant), (1, 1, 1));
        assert_eq!(ns.current("slow", Some("b")).await.alias, 0);
        assert_eq!(ns.current("fast", None).await.tenant, 0);
    }
}
