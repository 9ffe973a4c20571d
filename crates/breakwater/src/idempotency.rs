//! Idempotency keys: a request repeated with the same `Idempotency-Key`
//! (per tenant) gets the first one's result instead of a second call.
//!
//! - The first request runs; its successful response is recorded for
//!   `idempotency.ttl_s` (memory, and Redis when configured, so every
//!   instance replays it).
//! - A duplicate arriving while the first runs waits for it (locally on a
//!   watch; across instances by polling Redis, up to a deadline) instead of
//!   calling again.
//! - The same key with a different body (its [`Fingerprint`] differs) is
//!   rejected with `invalid_request` / `idempotency_key_reused`.
//!
//! # Failures release the key
//! Only completed (successful) responses are recorded. A failed first
//! attempt releases the key, so the client's retry runs for real: most
//! failures of an LLM call are transient (rate limits, 5xx, timeouts) and
//! replaying them would turn a retry into a guaranteed failure; the
//! deterministic ones (an invalid request) fail again the same way at no
//! upstream cost. This is Stripe's rule for requests that did not complete.
//!
//! # Redis protocol
//! `bw:idem:<hex>` holds either `P` + fingerprint + owner token (in
//! progress; written with `SET NX` semantics and a lease `PX lease_s`, so a
//! crashed instance blocks the key for one lease at most) or `D` +
//! fingerprint + response JSON (done; `PX ttl_s`). Acquire, complete and
//! release are small Lua scripts so each is one atomic round trip, and only
//! the owner of a lease can complete or release it. If Redis cannot be
//! reached, keys are enforced per instance (fail open), and counted.

use crate::cache::{Clock, Fingerprint};
use crate::error::{Error, ErrorKind, Result, TimeoutPhase};
use crate::redis_store::RedisStore;
use crate::types::ChatResponse;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest `Idempotency-Key` accepted (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;
const SHARDS: usize = 16;
const PREFIX: &str = "bw:idem:";
/// Memory held by completed records in one instance.
const MEMORY_BYTES: u64 = 64 << 20;

/// The `idempotency:` section of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long a completed result is replayed.
    #[serde(default = "d_ttl")]
    pub ttl_s: u64,
    /// How long an in-progress marker blocks the key if its instance dies
    /// (added key; the default matches the default total upstream timeout).
    #[serde(default = "d_lease")]
    pub lease_s: u64,
    /// Longest a duplicate waits for the first when the request has no
    /// deadline of its own (added key).
    #[serde(default = "d_wait")]
    pub wait_s: u64,
}

fn d_ttl() -> u64 {
    86_400
}
fn d_lease() -> u64 {
    120
}
fn d_wait() -> u64 {
    120
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            ttl_s: d_ttl(),
            lease_s: d_lease(),
            wait_s: d_wait(),
        }
    }
}

/// What [`IdempotencyStore::begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// The key already has a result: answer with it.
    Replay(Arc<ChatResponse>),
    /// This request owns the key: run it, then complete or release.
    Proceed(IdempotencyGuard),
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IdempotencyStats {
    /// Requests answered with a recorded result.
    pub replays: u64,
    /// Requests that ran (owned the key).
    pub proceeds: u64,
    /// Requests that waited for a duplicate in progress.
    pub waits: u64,
    /// Keys reused with a different body (rejected).
    pub conflicts: u64,
    /// Redis calls that failed (the key was enforced locally only).
    pub redis_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    replays: AtomicU64,
    proceeds: AtomicU64,
    waits: AtomicU64,
    conflicts: AtomicU64,
    redis_errors: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

#[derive(Clone)]
struct Record {
    fp: Fingerprint,
    response: Arc<ChatResponse>,
    expires_ms: u64,
    size: u32,
}

#[derive(Debug, Clone)]
enum Local {
    Running,
    Done(Arc<ChatResponse>),
    Released,
}

struct Pending {
    fp: Fingerprint,
    state: watch::Sender<Local>,
    /// Whether this claim owns the key (memory-only, or Redis agreed).
    /// Until then it may be a request that is about to be rejected, so a
    /// different body waits for the verdict instead of being refused on its
    /// account.
    confirmed: std::sync::atomic::AtomicBool,
}

type Id = [u8; 32];

struct Inner {
    cfg: IdempotencyConfig,
    redis: Option<RedisStore>,
    clock: Clock,
    done: moka::future::Cache<Id, Record>,
    pending: Vec<Mutex<HashMap<Id, Arc<Pending>>>>,
    counters: Counters,
    instance: [u8; 16],
    tokens: AtomicU64,
}

/// The idempotency records. Cheap to clone.
#[derive(Clone)]
pub struct IdempotencyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for IdempotencyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyStore")
            .field("redis", &self.inner.redis.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

fn acquire_script() -> &'static redis::Script {
    static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        redis::Script::new(
            "local v = redis.call('GET', KEYS[1]) \
             if v then return v end \
             redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
             return false",
        )
    })
}

fn complete_script() -> &'static redis::Script {
    static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        redis::Script::new(
            "local v = redis.call('GET', KEYS[1]) \
             if v == false or v == ARGV[1] then \
               redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) return 1 end \
             return 0",
        )
    })
}

fn release_script() -> &'static redis::Script {
    static S: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end \
             return 0",
        )
    })
}

/// What Redis holds for a key.
enum Remote {
    InProgress(Fingerprint),
    Done(Fingerprint, Arc<ChatResponse>),
}

fn decode_remote(v: &[u8]) -> Option<Remote> {
    let fp = Fingerprint(v.get(1..33)?.try_into().ok()?);
    match v.first()? {
        b'P' => Some(Remote::InProgress(fp)),
        b'D' => serde_json::from_slice(&v[33..])
            .ok()
            .map(|r| Remote::Done(fp, Arc::new(r))),
        _ => None,
    }
}

fn reused() -> Error {
    Error::invalid_param(
        "Idempotency-Key",
        "this Idempotency-Key was already used with a different request body; use a new key for a new request",
    )
    .with_code("idempotency_key_reused")
}

fn still_running() -> Error {
    Error::timeout(
        TimeoutPhase::Total,
        "a request with the same Idempotency-Key is still in progress; retry later",
    )
    .with_code("idempotency_key_in_progress")
    .with_retry_after(Some(Duration::from_secs(1)))
}

impl IdempotencyStore {
    /// A store in memory, sharing records through `redis` when given.
    pub fn new(cfg: IdempotencyConfig, redis: Option<RedisStore>) -> Self {
        Self::with_clock(cfg, redis, Clock::tokio())
    }

    /// [`IdempotencyStore::new`] with an explicit clock (tests).
    pub fn with_clock(cfg: IdempotencyConfig, redis: Option<RedisStore>, clock: Clock) -> Self {
        let done = moka::future::Cache::builder()
            .max_capacity(MEMORY_BYTES)
            .weigher(|_k: &Id, r: &Record| r.size.saturating_add(96))
            // moka's clock is only the memory backstop; expiry is decided
            // against `clock` (see `Record::expires_ms`).
            .time_to_live(Duration::from_secs(cfg.ttl_s.max(1)))
            .build();
        let seed = format!(
            "{}:{}:{:p}",
            std::process::id(),
            clock.now_ms(),
            &cfg as *const IdempotencyConfig
        );
        let mut instance = [0u8; 16];
        instance.copy_from_slice(&blake3::hash(seed.as_bytes()).as_bytes()[..16]);
        IdempotencyStore {
            inner: Arc::new(Inner {
                cfg,
                redis,
                clock,
                done,
                pending: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                counters: Counters::default(),
                instance,
                tokens: AtomicU64::new(0),
            }),
        }
    }

    /// Counters.
    pub fn stats(&self) -> IdempotencyStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IdempotencyStats {
            replays: l(&c.replays),
            proceeds: l(&c.proceeds),
            waits: l(&c.waits),
            conflicts: l(&c.conflicts),
            redis_errors: l(&c.redis_errors),
        }
    }

    fn id(tenant: &str, key: &str) -> Id {
        let mut h = blake3::Hasher::new();
        h.update(b"breakwater.idempotency.v1");
        h.update(&(tenant.len() as u64).to_le_bytes());
        h.update(tenant.as_bytes());
        h.update(key.as_bytes());
        *h.finalize().as_bytes()
    }

    fn redis_key(id: &Id) -> String {
        let mut s = String::from(PREFIX);
        s.push_str(&crate::cache::CacheKey(*id).to_hex());
        s
    }

    fn shard(&self, id: &Id) -> &Mutex<HashMap<Id, Arc<Pending>>> {
        &self.inner.pending[id[0] as usize % SHARDS]
    }

    async fn local_record(&self, id: &Id) -> Option<Record> {
        let r = self.inner.done.get(id).await?;
        (self.inner.clock.now_ms() < r.expires_ms).then_some(r)
    }

    fn replay(&self, r: Arc<ChatResponse>) -> Result<Begin> {
        bump(&self.inner.counters.replays);
        Ok(Begin::Replay(r))
    }

    fn conflict(&self) -> Error {
        bump(&self.inner.counters.conflicts);
        reused()
    }

    /// Claims `key` for this tenant's request with fingerprint `fp`, or
    /// returns the recorded result, waiting (until `deadline`, else
    /// `wait_s`) while a duplicate is in progress.
    pub async fn begin(&self, tenant: &str, key: &str, fp: Fingerprint, deadline: Option<Instant>) -> Result<Begin> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::invalid_param(
                "Idempotency-Key",
                format!("an Idempotency-Key must have 1 to {MAX_KEY_LEN} characters"),
            ));
        }
        let deadline = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(self.inner.cfg.wait_s));
        let id = Self::id(tenant, key);
        let mut waited = false;
        let pending = loop {
            if let Some(r) = self.local_record(&id).await {
                return if r.fp == fp {
                    self.replay(r.response)
                } else {
                    Err(self.conflict())
                };
            }
            let (pending, leader) = {
                let Ok(mut map) = self.shard(&id).lock() else {
                    return Err(Error::new(ErrorKind::ServerError, "idempotency table unavailable"));
                };
                match map.get(&id) {
                    Some(p) => (p.clone(), false),
                    None => {
                        let p = Arc::new(Pending {
                            fp,
                            state: watch::channel(Local::Running).0,
                            confirmed: std::sync::atomic::AtomicBool::new(false),
                        });
                        map.insert(id, p.clone());
                        (p, true)
                    }
                }
            };
            if leader {
                break pending;
            }
            let same_body = pending.fp == fp;
            if !same_body && pending.confirmed.load(Ordering::Acquire) {
                return Err(self.conflict());
            }
            if same_body && !waited {
                waited = true;
                bump(&self.inner.counters.waits);
            }
            let mut rx = pending.state.subscribe();
            let outcome = tokio::time::timeout_at(deadline, rx.wait_for(|s| !matches!(s, Local::Running))).await;
            match outcome {
                Err(_) => return Err(still_running()),
                Ok(Ok(state)) => {
                    if let Local::Done(r) = &*state {
                        if !same_body {
                            return Err(self.conflict());
                        }
                        return self.replay(r.clone());
                    }
                    // Released: the first attempt failed; try to own it.
                }
                Ok(Err(_)) => {}
            }
        };
        let token = self.token();
        let guard = IdempotencyGuard {
            store: self.clone(),
            id,
            fp,
            token,
            pending,
            finished: false,
        };
        self.claim_remote(guard, deadline, waited).await
    }

    fn token(&self) -> Vec<u8> {
        let n = self.inner.tokens.fetch_add(1, Ordering::Relaxed);
        let mut t = Vec::with_capacity(24);
        t.extend_from_slice(&self.inner.instance);
        t.extend_from_slice(&n.to_le_bytes());
        t
    }

    /// With the local claim held: claims the key in Redis too, or waits for
    /// the instance that holds it.
    async fn claim_remote(&self, mut guard: IdempotencyGuard, deadline: Instant, mut waited: bool) -> Result<Begin> {
        let Some(redis) = &self.inner.redis else {
            return Ok(self.proceed(guard));
        };
        let rkey = Self::redis_key(&guard.id);
        let mut marker = Vec::with_capacity(1 + 32 + 24);
        marker.push(b'P');
        marker.extend_from_slice(&guard.fp.0);
        marker.extend_from_slice(&guard.token);
        let lease_ms = self.inner.cfg.lease_s.saturating_mul(1000).max(1).to_string();
        let mut poll = Duration::from_millis(20);
        loop {
            let res: std::result::Result<Option<Vec<u8>>, _> = redis
                .eval(acquire_script(), &[&rkey], &[&marker, lease_ms.as_bytes()])
                .await;
            match res {
                Ok(None) => return Ok(self.proceed(guard)),
                Ok(Some(v)) => match decode_remote(&v) {
                    Some(Remote::Done(fp, resp)) => {
                        if fp != guard.fp {
                            guard.release_local();
                            return Err(self.conflict());
                        }
                        self.remember(&guard.id, fp, resp.clone(), None).await;
                        guard.finish_local(Local::Done(resp.clone()));
                        return self.replay(resp);
                    }
                    Some(Remote::InProgress(fp)) => {
                        if fp != guard.fp {
                            guard.release_local();
                            return Err(self.conflict());
                        }
                        if !waited {
                            waited = true;
                            bump(&self.inner.counters.waits);
                        }
                    }
                    // Not ours to read (a newer format?): do not block on it.
                    None => return Ok(self.proceed(guard)),
                },
                Err(e) => {
                    tracing::debug!(error = %e, "idempotency: redis unavailable, enforcing locally");
                    bump(&self.inner.counters.redis_errors);
                    return Ok(self.proceed(guard));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                guard.release_local();
                return Err(still_running());
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
            poll = (poll * 2).min(Duration::from_millis(250));
        }
    }

    fn proceed(&self, guard: IdempotencyGuard) -> Begin {
        guard.pending.confirmed.store(true, Ordering::Release);
        bump(&self.inner.counters.proceeds);
        Begin::Proceed(guard)
    }

    async fn remember(&self, id: &Id, fp: Fingerprint, response: Arc<ChatResponse>, size: Option<usize>) {
        let size = size.unwrap_or_else(|| serde_json::to_vec(&*response).map(|v| v.len()).unwrap_or(0));
        let rec = Record {
            fp,
            response,
            expires_ms: self
                .inner
                .clock
                .now_ms()
                .saturating_add(self.inner.cfg.ttl_s.saturating_mul(1000)),
            size: u32::try_from(size).unwrap_or(u32::MAX),
        };
        self.inner.done.insert(*id, rec).await;
    }

    /// Runs `call` under the key: replays a recorded result, waits for a
    /// duplicate in progress, or calls and records the success (a failure
    /// releases the key). Returns the response and whether it was replayed.
    pub async fn run<F, Fut>(
        &self,
        tenant: &str,
        key: &str,
        fp: Fingerprint,
        deadline: Option<Instant>,
        call: F,
    ) -> Result<(Arc<ChatResponse>, bool)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<ChatResponse>>>,
    {
        match self.begin(tenant, key, fp, deadline).await? {
            Begin::Replay(r) => Ok((r, true)),
            Begin::Proceed(guard) => match call().await {
                Ok(r) => {
                    guard.complete(r.clone()).await;
                    Ok((r, false))
                }
                Err(e) => {
                    guard.release().await;
                    Err(e)
                }
            },
        }
    }
}

/// Ownership of an idempotency key while its request runs. Complete it with
/// the response, or release it; dropping it releases it.
pub struct IdempotencyGuard {
    store: IdempotencyStore,
    id: Id,
    fp: Fingerprint,
    token: Vec<u8>,
    pending: Arc<Pending>,
    finished: bool,
}

impl std::fmt::Debug for IdempotencyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyGuard").field("fp", &self.fp).finish()
    }
}

impl IdempotencyGuard {
    fn finish_local(&mut self, state: Local) {
        self.finished = true;
        if let Ok(mut map) = self.store.shard(&self.id).lock()
            && map.get(&self.id).is_some_and(|p| Arc::ptr_eq(p, &self.pending))
        {
            map.remove(&self.id);
        }
        self.pending.state.send_replace(state);
    }

    fn release_local(&mut self) {
        self.finish_local(Local::Released);
    }

    /// Records `response` as the key's result (memory at once; Redis before
    /// returning, bounded by the Redis timeout) and wakes the waiters.
    pub async fn complete(mut self, response: Arc<ChatResponse>) {
        let inner = self.store.inner.clone();
        let json = serde_json::to_vec(&*response).ok();
        let size = json.as_ref().map(Vec::len);
        self.store.remember(&self.id, self.fp, response.clone(), size).await;
        self.finish_local(Local::Done(response));
        if let (Some(redis), Some(json)) = (&inner.redis, json) {
            let mut value = Vec::with_capacity(33 + json.len());
            value.push(b'D');
            value.extend_from_slice(&self.fp.0);
            value.extend_from_slice(&json);
            let mut marker = Vec::with_capacity(57);
            marker.push(b'P');
            marker.extend_from_slice(&self.fp.0);
            marker.extend_from_slice(&self.token);
            let ttl = inner.cfg.ttl_s.saturating_mul(1000).max(1).to_string();
            let rkey = IdempotencyStore::redis_key(&self.id);
            let res: std::result::Result<i64, _> = redis
                .eval(complete_script(), &[&rkey], &[&marker, &value, ttl.as_bytes()])
                .await;
            if res.is_err() {
                bump(&inner.counters.redis_errors);
            }
        }
    }

    /// Gives the key up (the attempt failed): a retry will run for real.
    pub async fn release(mut self) {
        self.release_local();
        if let Some(fut) = self.remote_release() {
            fut.await;
        }
    }

    fn remote_release(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        let inner = self.store.inner.clone();
        inner.redis.as_ref()?;
        let mut marker = Vec::with_capacity(57);
        marker.push(b'P');
        marker.extend_from_slice(&self.fp.0);
        marker.extend_from_slice(&self.token);
        let rkey = IdempotencyStore::redis_key(&self.id);
        Some(async move {
            if let Some(redis) = &inner.redis {
                let res: std::result::Result<i64, _> = redis.eval(release_script(), &[&rkey], &[&marker]).await;
                if res.is_err() {
                    bump(&inner.counters.redis_errors);
                }
            }
        })
    }
}

/// Records a streamed answer under an idempotency key: passes the chunks
/// through untouched, assembles them, and completes the key when the stream
/// ends complete (every choice finished, no error item); any other end —
/// an error item, a cut stream, the caller dropping it — releases the key.
/// Replays of a recorded answer are served with
/// [`crate::types::response_to_chunks`].
pub fn record_stream(guard: IdempotencyGuard, stream: crate::provider::ChatStream) -> crate::provider::ChatStream {
    use futures::StreamExt;
    let state = (stream, Some((guard, crate::types::StreamAssembler::new())));
    futures::stream::unfold(state, |(mut stream, mut rec)| async move {
        match stream.next().await {
            Some(Ok(chunk)) => {
                if let Some((_, a)) = rec.as_mut() {
                    a.push(&chunk);
                }
                Some((Ok(chunk), (stream, rec)))
            }
            Some(Err(e)) => {
                if let Some((guard, _)) = rec.take() {
                    guard.release().await;
                }
                Some((Err(e), (stream, rec)))
            }
            None => {
                if let Some((guard, a)) = rec.take() {
                    if a.is_complete() {
                        guard.complete(Arc::new(a.finish())).await;
                    } else {
                        guard.release().await;
                    }
                }
                None
            }
        }
    })
    .boxed()
}

impl Drop for IdempotencyGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.release_local();
        if let Some(fut) = self.remote_release()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(fut);
        }
    }
}
