//! A shared Redis handle for the components that keep state across gateway
//! instances (L2 cache, rate limits, budgets, idempotency records, breaker
//! state).
//!
//! Every call has a short timeout, and the handle protects itself: after a
//! few consecutive failures it stops calling Redis for a while (answering
//! [`RedisUnavailable`] at once), then lets one call through to test it. So a
//! slow or dead Redis costs a request at most one timeout, and usually
//! nothing. Connections are lazy and reconnect by themselves: the gateway
//! starts and serves while Redis is down.

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, RedisError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// What a limit does when Redis cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Admit the request (availability over strictness).
    #[default]
    Open,
    /// Refuse the request (strictness over availability).
    Closed,
}

/// One URL or a list of cluster nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RedisUrls {
    /// `redis://host:port` or `rediss://…`.
    One(String),
    /// Cluster seed nodes.
    Many(Vec<String>),
}

impl RedisUrls {
    /// The URLs as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            RedisUrls::One(s) => vec![s.clone()],
            RedisUrls::Many(v) => v.clone(),
        }
    }
}

/// The `redis:` section of the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Where Redis is.
    #[serde(default = "d_url")]
    pub url: RedisUrls,
    /// Whether the URLs are Redis Cluster nodes.
    #[serde(default)]
    pub cluster: bool,
    /// Timeout of each Redis call, in milliseconds.
    #[serde(default = "d_timeout")]
    pub timeout_ms: u64,
    /// For limits and budgets when Redis is unreachable (the cache always fails open).
    #[serde(default)]
    pub on_failure: FailurePolicy,
    /// Share circuit-breaker trips between the instances using this Redis
    /// (one instance finding a target down opens it on all of them).
    /// Addition; off by default.
    #[serde(default)]
    pub share_breakers: bool,
}

fn d_url() -> RedisUrls {
    RedisUrls::One("redis://127.0.0.1:6379".into())
}

fn d_timeout() -> u64 {
    50
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: d_url(),
            cluster: false,
            timeout_ms: d_timeout(),
            on_failure: FailurePolicy::Open,
            share_breakers: false,
        }
    }
}

impl RedisConfig {
    /// A config for one server at `url`.
    pub fn single(url: impl Into<String>) -> Self {
        RedisConfig {
            url: RedisUrls::One(url.into()),
            ..Default::default()
        }
    }
}

/// Redis could not answer (down, slow, or skipped while it recovers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUnavailable(pub String);

impl std::fmt::Display for RedisUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redis unavailable: {}", self.0)
    }
}

impl std::error::Error for RedisUnavailable {}

/// Counters of the handle, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RedisStats {
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls that failed or timed out.
    pub failed: u64,
    /// Calls not made because Redis was marked down.
    pub skipped: u64,
    /// Whether Redis is currently marked down.
    pub down: bool,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Consecutive failures that mark Redis down.
const TRIP_AFTER: u32 = 3;
/// How long it stays marked down before one trial call.
const COOL_DOWN: Duration = Duration::from_millis(500);

struct Inner {
    cluster_client: Option<redis::cluster::ClusterClient>,
    conn: Mutex<Option<Conn>>,
    timeout: Duration,
    on_failure: FailurePolicy,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which calls are skipped.
    down_until_ms: AtomicU64,
    epoch: Instant,
    ok: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

/// A shared, cheap-to-clone Redis handle.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("stats", &self.stats()).finish()
    }
}

impl RedisStore {
    /// Creates the handle without connecting (connections are made on first
    /// use and remade after failures). Fails only on a malformed config.
    /// Must be called inside a tokio runtime.
    pub fn connect(cfg: &RedisConfig) -> Result<Self, RedisUnavailable> {
        let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
        let urls = cfg.url.to_vec();
        if urls.is_empty() {
            return Err(RedisUnavailable("redis.url is empty".into()));
        }
        let (conn, cluster_client) = if cfg.cluster || urls.len() > 1 {
            let client = redis::cluster::ClusterClient::builder(urls)
                .connection_timeout(timeout.max(Duration::from_millis(200)))
                .response_timeout(timeout)
                .retries(0)
                .build()
                .map_err(|e| RedisUnavailable(format!("bad redis cluster config: {e}")))?;
            (None, Some(client))
        } else {
            let client =
                redis::Client::open(urls[0].as_str()).map_err(|e| RedisUnavailable(format!("bad redis url: {e}")))?;
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let mgr = ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|e| RedisUnavailable(format!("cannot set up redis: {e}")))?;
            (Some(Conn::Single(mgr)), None)
        };
        Ok(RedisStore {
            inner: Arc::new(Inner {
                cluster_client,
                conn: Mutex::new(conn),
                timeout,
                on_failure: cfg.on_failure,
                consecutive_failures: AtomicU32::new(0),
                down_until_ms: AtomicU64::new(0),
                epoch: Instant::now(),
                ok: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
            }),
        })
    }

    /// What limits should do when this handle answers [`RedisUnavailable`].
    pub fn failure_policy(&self) -> FailurePolicy {
        self.inner.on_failure
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Counters.
    pub fn stats(&self) -> RedisStats {
        RedisStats {
            ok: self.inner.ok.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
            skipped: self.inner.skipped.load(Ordering::Relaxed),
            down: self.is_marked_down(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    fn is_marked_down(&self) -> bool {
        self.now_ms() < self.inner.down_until_ms.load(Ordering::Relaxed)
    }

    fn on_success(&self) {
        self.inner.ok.fetch_add(1, Ordering::Relaxed);
        if self.inner.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.inner.consecutive_failures.store(0, Ordering::Relaxed);
            self.inner.down_until_ms.store(0, Ordering::Relaxed);
        }
    }

    fn on_failure(&self) {
        self.inner.failed.fetch_add(1, Ordering::Relaxed);
        let n = self.inner.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= TRIP_AFTER {
            let until = self.now_ms() + COOL_DOWN.as_millis() as u64;
            self.inner.down_until_ms.store(until, Ordering::Relaxed);
        }
    }

    async fn conn(&self) -> Result<Conn, RedisUnavailable> {
        if let Some(c) = self
            .inner
            .conn
            .lock()
            .map_err(|_| RedisUnavailable("poisoned".into()))?
            .clone()
        {
            return Ok(c);
        }
        let Some(client) = &self.inner.cluster_client else {
            return Err(RedisUnavailable("no connection".into()));
        };
        let c = tokio::time::timeout(
            self.inner.timeout.max(Duration::from_millis(200)),
            client.get_async_connection(),
        )
        .await
        .map_err(|_| RedisUnavailable("cluster connect timed out".into()))?
        .map_err(|e| RedisUnavailable(format!("cluster connect failed: {e}")))?;
        let c = Conn::Cluster(c);
        if let Ok(mut slot) = self.inner.conn.lock() {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    /// Runs one command (or a pipeline) with the timeout and self-protection.
    async fn run<T, F, Fut>(&self, f: F) -> Result<T, RedisUnavailable>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        if self.is_marked_down() {
            self.inner.skipped.fetch_add(1, Ordering::Relaxed);
            return Err(RedisUnavailable("marked down after repeated failures".into()));
        }
        let conn = match self.conn().await {
            Ok(c) => c,
            Err(e) => {
                self.on_failure();
                return Err(e);
            }
        };
        match tokio::time::timeout(self.inner.timeout, f(conn)).await {
            Ok(Ok(v)) => {
                self.on_success();
                Ok(v)
            }
            Ok(Err(e)) => {
                // A script or type error is our bug, not Redis's health.
                if e.kind() == redis::ErrorKind::Client || e.kind() == redis::ErrorKind::UnexpectedReturnType {
                    return Err(RedisUnavailable(e.to_string()));
                }
                self.on_failure();
                if self.inner.cluster_client.is_some()
                    && (e.is_io_error() || e.is_connection_dropped())
                    && let Ok(mut slot) = self.inner.conn.lock()
                {
                    *slot = None;
                }
                Err(RedisUnavailable(e.to_string()))
            }
            Err(_) => {
                self.on_failure();
                Err(RedisUnavailable(format!(
                    "no answer within {} ms",
                    self.inner.timeout.as_millis()
                )))
            }
        }
    }

    /// Runs a command.
    pub async fn query<T: FromRedisValue + Send>(&self, cmd: &redis::Cmd) -> Result<T, RedisUnavailable> {
        self.run(|conn| async move {
            match conn {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        })
        .await
    }

    /// Runs a pipeline (one round trip).
    pub async fn pipeline<T: FromRedisValue + Send>(&self, pipe: &redis::Pipeline) -> Result<T, RedisUnavailable> {
        self.run(|conn| async move {
            match conn {
                Conn::Single(mut c) => pipe.query_async(&mut c).await,
                Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
            }
        })
        .await
    }

    /// Runs a Lua script (EVALSHA, loading it on first use). In a cluster all
    /// keys of one invocation must share a hash tag (`{…}`).
    pub async fn eval<T: FromRedisValue + Send>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<T, RedisUnavailable> {
        self.run(|conn| async move {
            let mut inv = script.prepare_invoke();
            for k in keys {
                inv.key(*k);
            }
            for a in args {
                inv.arg(*a);
            }
            match conn {
                Conn::Single(mut c) => inv.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => inv.invoke_async(&mut c).await,
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use breakwater_testkit::RedisServer;

    #[tokio::test]
    async fn commands_scripts_and_pipelines() {
        let r = RedisServer::start().await.unwrap();
        let store = RedisStore::connect(&RedisConfig::single(r.url())).unwrap();
        let _: () = store.query(redis::cmd("SET").arg("k").arg("v")).await.unwrap();
        let v: String = store.query(redis::cmd("GET").arg("k")).await.unwrap();
        assert_eq!(v, "v");
        let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
        let n: i64 = store.eval(&script, &["n"], &[b"5"]).await.unwrap();
        let n2: i64 = store.eval(&script, &["n"], &[b"2"]).await.unwrap();
        assert_eq!((n, n2), (5, 7));
        let mut p = redis::pipe();
        p.cmd("INCR").arg("a").cmd("INCR").arg("a");
        let (a, b): (i64, i64) = store.pipeline(&p).await.unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(store.stats().failed, 0);
    }

    #[tokio::test]
    async fn dead_redis_fails_fast_then_recovers() {
        let mut r = RedisServer::start().await.unwrap();
        let store = RedisStore::connect(&RedisConfig::single(r.url())).unwrap();
        let _: () = store.query(redis::cmd("SET").arg("k").arg("v")).await.unwrap();
        r.kill();
        for _ in 0..TRIP_AFTER {
            assert!(store.query::<Option<String>>(redis::cmd("GET").arg("k")).await.is_err());
        }
        assert!(store.stats().down);
        // Marked down: no call is made at all.
        let skipped = store.stats().skipped;
        assert!(store.query::<Option<String>>(redis::cmd("GET").arg("k")).await.is_err());
        assert_eq!(store.stats().skipped, skipped + 1);
        r.restart().await.unwrap();
        // After the cool-down a trial call goes through and reconnects.
        let give_up = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::time::sleep(COOL_DOWN).await;
            if store.query::<Option<String>>(redis::cmd("GET").arg("k")).await.is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < give_up, "redis never came back");
        }
        assert!(!store.stats().down);
    }

    #[tokio::test]
    async fn starts_while_redis_is_down() {
        let port = breakwater_testkit::free_port();
        let store = RedisStore::connect(&RedisConfig::single(format!("redis://127.0.0.1:{port}"))).unwrap();
        assert!(store.query::<Option<String>>(redis::cmd("GET").arg("k")).await.is_err());
    }
}
