//! The assembled client: one object an application calls, which puts every
//! stage of DESIGN.md in order.
//!
//! ```text
//! validate → idempotency → cache (exact) → coalesce → route over the alias's targets:
//!   per target: limits → bulkhead → breaker → call under the deadline → record → retry
//!   failover to the next target (hedging the first two when configured)
//! → store → on failure degrade: stale cache → fallback alias → rule-based responder → explainable error
//! ```
//!
//! ```
//! use breakwater::client::{Client, ModelConfig, RequestOptions, TargetConfig};
//! use breakwater::simulator::{Faults, Simulator, SimulatorConfig};
//! use breakwater::types::ChatRequest;
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), breakwater::client::Failure> {
//! let flaky = SimulatorConfig { faults: Faults { server_error: 0.3, ..Default::default() }, ..SimulatorConfig::instant() };
//! let client = Client::builder()
//!     .provider(Arc::new(Simulator::new("primary", flaky)))
//!     .provider(Arc::new(Simulator::new("secondary", SimulatorConfig::instant())))
//!     .model("fast", ModelConfig::new(vec![
//!         TargetConfig::new("primary", "sim-1"),
//!         TargetConfig::new("secondary", "sim-1"),
//!     ]))
//!     .build()
//!     .expect("valid config");
//! let out = client.chat(ChatRequest::user("fast", "Hello"), RequestOptions::default()).await?;
//! assert!(!out.response.text().is_empty());
//! println!("answered by {:?} after {} attempts", out.meta.target, out.meta.attempts.len());
//! # Ok(()) }
//! ```

mod call;
mod config;
#[cfg(test)]
mod future_sizes;
mod meta;
mod route;
mod stream;
mod target;
pub mod validate;

pub use config::{ClientConfig, HealthConfig, HedgeAfter, HedgeConfig, ModelConfig, TargetConfig};
pub use meta::{AttemptRecord, CallMeta, Degraded, Failure, explain};
pub use stream::StreamSummary;

use crate::cache::semantic::{Lookup, SemanticCache, SemanticMiss, SemanticQuery};
use crate::cache::{
    CacheControl, CacheKey, CacheOutcome, CachePlan, ExactCache, Fingerprint, ModelCacheConfig, check_storable,
};
use crate::coalesce::{Coalescer, StreamCoalescer};
use crate::error::{Error, ErrorKind, Result};
use crate::idempotency::{Begin, IdempotencyStore, record_stream};
use crate::mode::{self, UpstreamMode};
use crate::policy::breaker::{BreakerEvent, BreakerSnapshot, CircuitBreaker};
use crate::policy::concurrency::{Bulkhead, BulkheadConfig};
use crate::policy::config::InvalidConfig;
use crate::policy::ratelimit::{ProviderLimits, RequestLimits};
use crate::policy::retry::RetryPolicy;
use crate::policy::retry_budget::{RetryBudget, RetryBudgetSnapshot};
use crate::policy::spend::PriceTable;
use crate::provider::{CallOptions, ChatStream, DynProvider};
use crate::redis_store::RedisStore;
use crate::route::TargetStatsSnapshot;
use crate::structured::{Schema, StructuredError, StructuredOutcome};
use crate::types::{
    ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamAssembler, response_to_chunks,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use rand::SeedableRng;
use rand::rngs::StdRng;
use route::Alias;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use target::{Gate, Target};
use tokio::sync::{broadcast, oneshot};
use tokio::time::Instant;

/// How deep fallback and context-fallback aliases may chain.
const MAX_ALIAS_DEPTH: u32 = 3;

/// Randomness: the thread's generator, or a seeded one for reproducible runs.
pub(crate) enum Rand {
    Thread,
    Seeded(Box<Mutex<StdRng>>),
}

impl Rand {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut dyn rand::Rng) -> T) -> T {
        match self {
            Rand::Thread => f(&mut rand::rng()),
            Rand::Seeded(m) => {
                let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut *g)
            }
        }
    }
}

/// The semantic cache as the client uses it: cached answers by meaning.
pub type Semantic = SemanticCache<Arc<ChatResponse>>;

/// A rule-based answer for when every provider fails (the last step before
/// an error): given the request and the error, an answer or `None`.
pub type Responder = Arc<dyn Fn(&ChatRequest, &Error) -> Option<ChatResponse> + Send + Sync>;

/// What the leader of a stream learned while opening it: target, attempts,
/// whether it hedged.
type StartInfo = (Option<Arc<str>>, Vec<meta::AttemptRecord>, bool);

/// What an `Idempotency-Key` claim gave.
enum Claim {
    Replay(Arc<ChatResponse>),
    Proceed(Option<crate::idempotency::IdempotencyGuard>),
}

/// What the semantic cache said. Not boxed: it lives for one request and
/// the miss moves straight into the insertion.
#[allow(clippy::large_enum_variant)]
enum SemanticStep {
    Hit(Arc<ChatResponse>),
    Miss(SemanticMiss),
    Skip,
}

/// The result of routing, shared by coalesced waiters.
struct RouteOutcome {
    result: Result<Arc<ChatResponse>>,
    target: Option<Arc<str>>,
    attempts: Vec<meta::AttemptRecord>,
    hedged: bool,
}

pub(crate) struct Inner {
    cfg: ClientConfig,
    retry: RetryPolicy,
    budget: RetryBudget,
    /// foldhash: looked up several times per request, where std's SipHash
    /// showed in profiles.
    aliases: HashMap<String, Arc<Alias>, foldhash::fast::RandomState>,
    targets: Vec<Arc<Target>>,
    providers: HashMap<String, (DynProvider, Arc<Gate>)>,
    cache: Option<ExactCache>,
    semantic: Option<Arc<Semantic>>,
    flights: Coalescer<Arc<RouteOutcome>>,
    stream_flights: StreamCoalescer,
    idempotency: Option<IdempotencyStore>,
    prices: PriceTable,
    rng: Rand,
    responder: Option<Responder>,
    breaker_events: broadcast::Sender<BreakerEvent>,
    prober: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Shares breaker trips through Redis (`redis.share_breakers`).
    sharer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    counters: Counters,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut p) = self.prober.lock()
            && let Some(h) = p.take()
        {
            h.abort();
        }
        if let Ok(mut p) = self.sharer.lock()
            && let Some(h) = p.take()
        {
            h.abort();
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    failures: AtomicU64,
    degraded: AtomicU64,
    ids: AtomicU64,
}

/// Per-request options.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// The tenant (virtual key name): cache scope and idempotency scope.
    pub tenant: Option<Arc<str>>,
    /// The overall deadline; every stage respects it.
    pub deadline: Option<Instant>,
    /// Or a timeout from now (the earlier of the two wins).
    pub timeout: Option<Duration>,
    /// The caller's `Cache-Control`.
    pub cache_control: CacheControl,
    /// The caller's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Correlation id (made when absent).
    pub request_id: Option<Arc<str>>,
}

/// A complete answer and what producing it took.
#[derive(Debug, Clone)]
pub struct ChatOutcome {
    /// The answer (shared with the cache; never copied per hit).
    pub response: Arc<ChatResponse>,
    /// Attempts, cache outcome, target, degradation, tokens and cost.
    pub meta: CallMeta,
}

/// A stream and what opening it took.
pub struct StreamOutcome {
    /// The chunks. After the first chunk, a failure ends it with a
    /// `finish_reason: "error"` chunk and then the error.
    pub stream: ChatStream,
    /// What is known when the stream starts (cache outcome, target, attempts).
    pub meta: CallMeta,
    /// How it ended (usage, cost, errors), sent when it does; `None` for
    /// replays from the cache and coalesced followers.
    pub done: Option<oneshot::Receiver<StreamSummary>>,
}

impl std::fmt::Debug for StreamOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOutcome").field("meta", &self.meta).finish()
    }
}

/// A typed structured answer.
#[derive(Debug, Clone)]
pub struct Structured<T> {
    /// The value.
    pub value: T,
    /// The validated JSON, raw text and number of calls.
    pub outcome: StructuredOutcome,
}

/// One target's live state, for stats and the dashboard.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetSnapshot {
    /// `provider/model`.
    pub id: Arc<str>,
    /// Breaker state and counters.
    pub breaker: BreakerSnapshot,
    /// Latency, load and errors.
    pub stats: TargetStatsSnapshot,
}

/// Client-wide counters.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ClientStats {
    /// Requests (chat and embeddings).
    pub requests: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Requests answered by a degraded path.
    pub degraded: u64,
    /// The retry budget.
    pub retry_budget: RetryBudgetSnapshot,
}

/// The resilient client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("aliases", &self.inner.aliases.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Builds a [`Client`].
#[derive(Default)]
pub struct ClientBuilder {
    cfg: ClientConfig,
    providers: Vec<(DynProvider, ProviderLimits)>,
    models: Vec<(String, ModelConfig)>,
    cache: Option<ExactCache>,
    semantic: Option<Arc<Semantic>>,
    idempotency: Option<IdempotencyStore>,
    redis: Option<RedisStore>,
    prices: PriceTable,
    seed: Option<u64>,
    responder: Option<Responder>,
    probe: bool,
    share_breakers: bool,
}

impl ClientBuilder {
    /// Adds a provider (by its name) without limits.
    pub fn provider(self, p: DynProvider) -> Self {
        self.provider_with_limits(p, ProviderLimits::default())
    }

    /// Adds a provider with its limits (`providers.*.limits`).
    pub fn provider_with_limits(mut self, p: DynProvider, limits: ProviderLimits) -> Self {
        self.providers.push((p, limits));
        self
    }

    /// Adds a model alias.
    pub fn model(mut self, alias: impl Into<String>, cfg: ModelConfig) -> Self {
        self.models.push((alias.into(), cfg));
        self
    }

    /// Sets retry, breaker, health and other call settings.
    pub fn config(mut self, cfg: ClientConfig) -> Self {
        self.cfg = cfg;
        self
    }

    /// Uses an exact cache (L1 memory, L2 Redis when it has one).
    pub fn cache(mut self, cache: ExactCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Answers by meaning too, for aliases with `cache.semantic: true`
    /// (only after an exact-cache miss, and only when the exact cache is
    /// configured: the semantic cache shares its policy).
    pub fn semantic(mut self, cache: Arc<Semantic>) -> Self {
        self.semantic = Some(cache);
        self
    }

    /// Honours `Idempotency-Key`s with this store.
    pub fn idempotency(mut self, store: IdempotencyStore) -> Self {
        self.idempotency = Some(store);
        self
    }

    /// Keeps provider limits in Redis, shared by every instance.
    pub fn redis(mut self, redis: RedisStore) -> Self {
        self.redis = Some(redis);
        self
    }

    /// Shares breaker trips with the other instances using the same Redis
    /// (needs [`redis`](Self::redis); off by default): a trip here opens
    /// the target's breaker on every instance for the same period, and a
    /// breaker closed by successful probes clears it for all. See
    /// [`crate::policy::breaker_share`].
    pub fn share_breakers(mut self, on: bool) -> Self {
        self.share_breakers = on;
        self
    }

    /// Prices for cost accounting.
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = prices;
        self
    }

    /// Seeds every random choice (balancing, jitter) for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The last step of degradation: a rule-based responder.
    pub fn rule_responder(
        mut self,
        f: impl Fn(&ChatRequest, &Error) -> Option<ChatResponse> + Send + Sync + 'static,
    ) -> Self {
        self.responder = Some(Arc::new(f));
        self
    }

    /// Runs active health probes for targets that are out (on by default
    /// when built inside a tokio runtime).
    pub fn active_probes(mut self, on: bool) -> Self {
        self.probe = on;
        self
    }

    /// Checks the configuration and builds the client.
    pub fn build(self) -> std::result::Result<Client, InvalidConfig> {
        self.cfg
            .retry
            .validate()
            .map_err(|e| InvalidConfig::new(format!("retry.{}", e.path.trim_start_matches("retry.")), e.reason))?;
        self.cfg.breaker.validate()?;
        let (events, _) = broadcast::channel(256);
        let mut providers: HashMap<String, (DynProvider, Arc<Gate>)> = HashMap::new();
        for (p, limits) in &self.providers {
            let name = p.name().to_string();
            if providers.contains_key(&name) {
                return Err(InvalidConfig::new(format!("providers.{name}"), "defined twice"));
            }
            limits
                .validate()
                .map_err(|e| InvalidConfig::new(format!("providers.{name}.{}", e.path), e.reason))?;
            providers.insert(
                name.clone(),
                (
                    p.clone(),
                    Arc::new(gate(&format!("provider:{name}"), limits, self.redis.as_ref())),
                ),
            );
        }
        let names: Vec<&str> = self.models.iter().map(|(a, _)| a.as_str()).collect();
        let mut targets: HashMap<Arc<str>, Arc<Target>> = HashMap::new();
        let mut aliases = HashMap::default();
        for (alias, cfg) in &self.models {
            let path = format!("models.{alias}");
            cfg.validate(&path)?;
            for (key, val) in [("fallback", &cfg.fallback), ("context_fallback", &cfg.context_fallback)] {
                if let Some(a) = val
                    && !names.contains(&a.as_str())
                {
                    return Err(InvalidConfig::new(
                        format!("{path}.{key}"),
                        format!("no model alias named `{a}`"),
                    ));
                }
            }
            let mut ts = Vec::new();
            for (i, t) in cfg.targets.iter().enumerate() {
                let Some((p, pgate)) = providers.get(&t.provider) else {
                    return Err(InvalidConfig::new(
                        format!("{path}.targets[{i}].provider"),
                        format!("no provider named `{}`", t.provider),
                    ));
                };
                let id: Arc<str> = Arc::from(format!("{}/{}", t.provider, t.model));
                let target = targets
                    .entry(id.clone())
                    .or_insert_with(|| {
                        Arc::new(Target {
                            id: id.clone(),
                            provider: p.clone(),
                            model: t.model.clone(),
                            stats: Default::default(),
                            breaker: CircuitBreaker::with_events(id.clone(), &self.cfg.breaker, events.clone()),
                            provider_gate: pgate.clone(),
                            own_gate: t
                                .limits
                                .as_ref()
                                .map(|l| gate(&format!("target:{id}"), l, self.redis.as_ref()))
                                .unwrap_or_else(Gate::unlimited),
                        })
                    })
                    .clone();
                ts.push((target, t.weight));
            }
            aliases.insert(
                alias.clone(),
                Arc::new(Alias {
                    name: alias.clone(),
                    cfg: cfg.clone(),
                    targets: ts,
                }),
            );
        }
        check_fallback_cycles(&self.models)?;
        let mut targets: Vec<Arc<Target>> = targets.into_values().collect();
        targets.sort_by(|a, b| a.id.cmp(&b.id));
        let inner = Arc::new(Inner {
            retry: RetryPolicy::new(&self.cfg.retry),
            budget: RetryBudget::new(&self.cfg.retry.budget),
            cfg: self.cfg,
            aliases,
            targets,
            providers,
            cache: self.cache,
            semantic: self.semantic,
            flights: Coalescer::new(),
            stream_flights: StreamCoalescer::new(),
            idempotency: self.idempotency,
            prices: self.prices,
            rng: match self.seed {
                Some(s) => Rand::Seeded(Box::new(Mutex::new(StdRng::seed_from_u64(s)))),
                None => Rand::Thread,
            },
            responder: self.responder,
            breaker_events: events,
            prober: Mutex::new(None),
            sharer: Mutex::new(None),
            counters: Counters::default(),
        });
        if self.share_breakers
            && let Some(redis) = &self.redis
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let share = crate::policy::breaker_share::BreakerShare::new(redis.clone());
            let task = handle.spawn(share_loop(
                Arc::downgrade(&inner),
                inner.breaker_events.subscribe(),
                share,
                SHARE_POLL,
            ));
            if let Ok(mut p) = inner.sharer.lock() {
                *p = Some(task);
            }
        }
        if self.probe
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let weak = Arc::downgrade(&inner);
            let every = Duration::from_secs(inner.cfg.health.probe_interval_s.max(1));
            let task = handle.spawn(probe_loop(weak, every));
            if let Ok(mut p) = inner.prober.lock() {
                *p = Some(task);
            }
        }
        Ok(Client { inner })
    }
}

fn gate(scope: &str, l: &ProviderLimits, redis: Option<&RedisStore>) -> Gate {
    Gate {
        limits: RequestLimits::build(scope, l.rpm, l.tpm, l.algorithm, redis),
        bulkhead: BulkheadConfig::from_limits(l).map(|c| Bulkhead::new(scope.to_string(), c)),
    }
}

fn check_fallback_cycles(models: &[(String, ModelConfig)]) -> std::result::Result<(), InvalidConfig> {
    let get = |a: &str| models.iter().find(|(n, _)| n == a).map(|(_, c)| c);
    for (alias, _) in models {
        let mut seen = vec![alias.as_str()];
        let mut cur = alias.as_str();
        while let Some(next) = get(cur).and_then(|c| c.fallback.as_deref()) {
            if seen.contains(&next) {
                return Err(InvalidConfig::new(
                    format!("models.{alias}.fallback"),
                    format!("fallbacks form a cycle: {} → {next}", seen.join(" → ")),
                ));
            }
            seen.push(next);
            cur = next;
        }
    }
    Ok(())
}

/// How often an instance sharing breakers reads the others' trips.
const SHARE_POLL: Duration = Duration::from_millis(250);

/// Publishes this instance's trips and closes, and applies the others'
/// trips to the local breakers. Fails open: without Redis the breakers
/// simply stay local.
async fn share_loop(
    weak: std::sync::Weak<Inner>,
    mut events: broadcast::Receiver<BreakerEvent>,
    share: crate::policy::breaker_share::BreakerShare,
    every: Duration,
) {
    use crate::policy::breaker::{BreakerState, Transition};
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(ev) => {
                    let r = match (ev.to, ev.why) {
                        (_, Transition::Remote) => Ok(()),
                        (BreakerState::Open, _) => {
                            let open_for = ev.open_for.unwrap_or(Duration::from_secs(1));
                            share.publish_open(&ev.target, open_for).await.map(|_| ())
                        }
                        (BreakerState::Closed, Transition::ProbesSucceeded | Transition::Reset) => {
                            share.publish_closed(&ev.target).await
                        }
                        _ => Ok(()),
                    };
                    if let Err(e) = r {
                        tracing::debug!(target_name = %ev.target, error = %e, "could not share a breaker change");
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let Ok(open) = share.open_targets().await else { continue };
                let Some(inner) = weak.upgrade() else { return };
                for t in &inner.targets {
                    if let Some(left) = open.get(&*t.id)
                        && t.breaker.force_open(*left)
                    {
                        tracing::info!(target_name = %t.id, open_ms = left.as_millis() as u64, "breaker opened: another instance found the target down");
                    }
                }
            }
        }
    }
}

/// Probes targets that are out; a target that answers gets its open period
/// ended, so real traffic probes it next.
async fn probe_loop(weak: std::sync::Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = weak.upgrade() else { return };
        for t in &inner.targets {
            let out = t.breaker.state() == crate::policy::breaker::BreakerState::Open || t.stats.cooling_down();
            if !out {
                continue;
            }
            let opts = CallOptions {
                deadline: Some(Instant::now() + Duration::from_secs(5)),
                request_id: None,
            };
            let ok = matches!(
                tokio::time::timeout(Duration::from_secs(5), t.provider.probe(&opts)).await,
                Ok(Ok(()))
            );
            tracing::debug!(target_name = %t.id, ok, "active health probe");
            if ok {
                t.breaker.end_open_period();
                t.stats.clear_cooldown();
            }
        }
    }
}

impl Client {
    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            probe: true,
            ..Default::default()
        }
    }

    fn deadline(&self, opts: &RequestOptions) -> Instant {
        let now = Instant::now();
        let by_timeout = opts.timeout.map(|t| now + t);
        crate::policy::timeout::earliest(opts.deadline, by_timeout)
            .unwrap_or_else(|| now + Duration::from_millis(self.inner.cfg.default_timeout_ms))
    }

    fn request_id(&self, opts: &RequestOptions) -> Arc<str> {
        opts.request_id.clone().unwrap_or_else(|| {
            let n = self.inner.counters.ids.fetch_add(1, Ordering::Relaxed);
            let r: u64 = rand::random();
            Arc::from(format!("req_{:016x}{:04x}", r, n & 0xffff))
        })
    }

    fn resolve(&self, model: &str) -> Result<Arc<Alias>> {
        if let Some(a) = self.inner.aliases.get(model) {
            return Ok(a.clone());
        }
        let direct = if self.inner.cfg.allow_direct_models
            && let Some((provider, upstream)) = model.split_once('/')
            && self.inner.providers.contains_key(provider)
        {
            Some((provider, upstream))
        } else {
            self.inner.cfg.passthrough_provider.as_deref().map(|p| (p, model))
        };
        if let Some((provider, upstream)) = direct
            && let Some((p, pgate)) = self.inner.providers.get(provider)
        {
            let id: Arc<str> = Arc::from(format!("{provider}/{upstream}"));
            let existing = self.inner.targets.iter().find(|t| t.id == id).cloned();
            let t = existing.unwrap_or_else(|| {
                Arc::new(Target {
                    id: id.clone(),
                    provider: p.clone(),
                    model: upstream.to_string(),
                    stats: Default::default(),
                    breaker: CircuitBreaker::with_events(
                        id.clone(),
                        &self.inner.cfg.breaker,
                        self.inner.breaker_events.clone(),
                    ),
                    provider_gate: pgate.clone(),
                    own_gate: Gate::unlimited(),
                })
            });
            return Ok(Arc::new(Alias {
                name: model.to_string(),
                cfg: ModelConfig::new(vec![TargetConfig::new(provider, upstream)]),
                targets: vec![(t, 1)],
            }));
        }
        let mut known: Vec<&str> = self.inner.aliases.keys().map(String::as_str).collect();
        known.sort_unstable();
        Err(Error::new(
            ErrorKind::NotFound,
            format!("the model `{model}` does not exist; available: {}", known.join(", ")),
        )
        .with_code("model_not_found"))
    }

    fn fail(&self, error: Error, mut meta: CallMeta, started: Instant) -> Failure {
        self.inner.counters.failures.fetch_add(1, Ordering::Relaxed);
        meta.latency_ms = started.elapsed().as_millis() as u64;
        Failure {
            error,
            meta: Box::new(meta),
        }
    }

    /// What every call does first: count it, give it an id and a deadline,
    /// check it, resolve its alias.
    #[allow(clippy::type_complexity)]
    fn prelude(
        &self,
        req: &ChatRequest,
        opts: &RequestOptions,
    ) -> std::result::Result<(Instant, Instant, CallMeta, Arc<Alias>), Failure> {
        let started = Instant::now();
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let meta = CallMeta::new(self.request_id(opts), &req.model);
        if let Err(e) = validate::chat(req) {
            return Err(self.fail(e, meta, started));
        }
        match self.resolve(&req.model) {
            Ok(a) => Ok((started, self.deadline(opts), meta, a)),
            Err(e) => Err(self.fail(e, meta, started)),
        }
    }

    /// Claims the request's `Idempotency-Key`, if it has one.
    async fn claim(
        &self,
        tenant: &str,
        opts: &RequestOptions,
        alias: &Alias,
        req: &ChatRequest,
        deadline: Instant,
    ) -> Result<Claim> {
        let (Some(store), Some(k)) = (&self.inner.idempotency, &opts.idempotency_key) else {
            return Ok(Claim::Proceed(None));
        };
        // Boxed: only requests with a key pay for the store's large future.
        let begin = Box::pin(store.begin(tenant, k, Fingerprint::of(&alias.name, req), Some(deadline)));
        Ok(match begin.await? {
            Begin::Replay(resp) => Claim::Replay(resp),
            Begin::Proceed(g) => Claim::Proceed(Some(g)),
        })
    }

    /// The options of a request made on behalf of another (a fallback or
    /// larger-context alias): same tenant and controls, same deadline and
    /// id, no idempotency key (the outer request holds it).
    fn sub_options(opts: &RequestOptions, deadline: Instant, request_id: &Arc<str>) -> RequestOptions {
        RequestOptions {
            idempotency_key: None,
            deadline: Some(deadline),
            request_id: Some(request_id.clone()),
            ..opts.clone()
        }
    }

    /// A complete answer for `req` (its `model` is an alias).
    pub fn chat(
        &self,
        req: ChatRequest,
        opts: RequestOptions,
    ) -> impl Future<Output = std::result::Result<ChatOutcome, Failure>> + Send + '_ {
        // Not an `async fn`: the caller's future then holds a pointer to the
        // boxed request future, not the request and options twice more.
        self.chat_at(req, opts, 0)
    }

    /// Boxed: fallback aliases recurse, and the future lives on the heap
    /// once instead of being moved through every caller's state.
    fn chat_at(
        &self,
        req: ChatRequest,
        opts: RequestOptions,
        depth: u32,
    ) -> BoxFuture<'_, std::result::Result<ChatOutcome, Failure>> {
        Box::pin(self.chat_inner(req, opts, depth))
    }

    // Not an `async fn`, for the reason given at `stream_inner`.
    #[allow(clippy::manual_async_fn)] // see above: the arguments would be stored twice
    fn chat_inner(
        &self,
        mut req: ChatRequest,
        opts: RequestOptions,
        depth: u32,
    ) -> impl Future<Output = std::result::Result<ChatOutcome, Failure>> + Send + '_ {
        async move {
            req.stream = None;
            req.stream_options = None;
            let (started, deadline, mut meta, alias) = self.prelude(&req, &opts)?;
            let mode = mode::decide(&req, alias.cfg.response_mode);
            meta.upstream_mode = Some(mode);
            let tenant = opts.tenant.clone().unwrap_or_else(|| Arc::from(""));
            let guard = match self.claim(&tenant, &opts, &alias, &req, deadline).await {
                Ok(Claim::Replay(resp)) => {
                    meta.idempotent_replay = true;
                    meta.latency_ms = started.elapsed().as_millis() as u64;
                    return Ok(ChatOutcome { response: resp, meta });
                }
                Ok(Claim::Proceed(g)) => g,
                Err(e) => return Err(self.fail(e, meta, started)),
            };
            // Shared with the upstream call, which must own what it uses (a
            // coalesced call runs in a task of its own).
            let req = Arc::new(req);
            let res = self
                .answer(&req, &alias, &opts, &tenant, deadline, mode, &mut meta, depth)
                .await;
            meta.latency_ms = started.elapsed().as_millis() as u64;
            match res {
                Ok(resp) => {
                    if let Some(g) = guard {
                        if meta.degraded.is_none() {
                            Box::pin(g.complete(resp.clone())).await;
                        } else {
                            Box::pin(g.release()).await;
                        }
                    }
                    if meta.degraded.is_some() {
                        self.inner.counters.degraded.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(ChatOutcome { response: resp, meta })
                }
                Err(e) => Err(self.fail(e, meta, started)),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        req: &Arc<ChatRequest>,
        alias: &Arc<Alias>,
        opts: &RequestOptions,
        tenant: &Arc<str>,
        deadline: Instant,
        mode: UpstreamMode,
        meta: &mut CallMeta,
        depth: u32,
    ) -> Result<Arc<ChatResponse>> {
        let cache = self.inner.cache.as_ref();
        let plan = cache.map(|_| CachePlan::decide(req, &alias.cfg.cache, opts.cache_control));
        let key = match (cache, plan) {
            (Some(c), Some(p)) if p.uses_cache() => Some(c.key_for(tenant, &alias.name, req).await),
            _ => None,
        };
        if let (Some(c), Some(k), Some(p)) = (cache, key, plan)
            && p.read
            && let Some(hit) = c.lookup(&k).await
        {
            meta.cache = hit.outcome;
            return Ok(hit.response);
        }
        let mut sem_miss = None;
        if let (Some(c), Some(p)) = (cache, plan)
            && p.read
            && key.is_some()
        {
            match self.semantic_lookup(alias, tenant, req).await {
                SemanticStep::Hit(resp) => {
                    c.counters().semantic_hit();
                    meta.cache = CacheOutcome::Semantic;
                    return Ok(resp);
                }
                SemanticStep::Miss(m) => sem_miss = Some(m),
                SemanticStep::Skip => {}
            }
        }
        meta.cache = match plan {
            Some(p) if p.read => CacheOutcome::Miss,
            _ => CacheOutcome::Bypass,
        };
        if let (Some(c), None) = (cache, key) {
            c.counters().bypass();
        }
        let write = plan.is_some_and(|p| p.write);
        let run = {
            let inner = self.inner.clone();
            let alias = alias.clone();
            let req = req.clone();
            let rid = meta.request_id.clone();
            move || origin(inner, alias, req, rid, deadline, mode, key.filter(|_| write))
        };
        let outcome = match key {
            Some(k) if self.inner.cfg.coalesce => {
                let ran = Arc::new(AtomicBool::new(false));
                let flag = ran.clone();
                let r = self
                    .inner
                    .flights
                    .run(k, move || async move {
                        flag.store(true, Ordering::Relaxed);
                        Ok(Arc::new(run().await))
                    })
                    .await;
                meta.coalesced = !ran.load(Ordering::Relaxed);
                match r {
                    Ok(o) => o,
                    Err(e) => Arc::new(RouteOutcome {
                        result: Err(e),
                        target: None,
                        attempts: Vec::new(),
                        hedged: false,
                    }),
                }
            }
            _ => Arc::new(run().await),
        };
        if !meta.coalesced {
            meta.attempts.extend(outcome.attempts.iter().cloned());
            meta.hedged |= outcome.hedged;
        }
        meta.target.clone_from(&outcome.target);
        match &outcome.result {
            Ok(resp) => {
                if !meta.coalesced {
                    self.account(meta, resp);
                    if write && let Some(m) = sem_miss {
                        self.semantic_insert(m, resp.clone(), &alias.cfg.cache);
                    }
                }
                Ok(resp.clone())
            }
            Err(e) => {
                if e.kind == ErrorKind::ContextLengthExceeded
                    && let Some(cf) = &alias.cfg.context_fallback
                    && depth < MAX_ALIAS_DEPTH
                {
                    let mut r2 = ChatRequest::clone(req);
                    r2.model.clone_from(cf);
                    let o2 = Self::sub_options(opts, deadline, &meta.request_id);
                    return match self.chat_at(r2, o2, depth + 1).await {
                        Ok(o) => {
                            meta.attempts.extend(o.meta.attempts);
                            meta.target = o.meta.target;
                            meta.usage = o.meta.usage;
                            meta.cost_usd = o.meta.cost_usd;
                            Ok(o.response)
                        }
                        Err(f) => {
                            meta.attempts.extend(f.meta.attempts);
                            Err(f.error)
                        }
                    };
                }
                // Boxed: a rare path, which would otherwise size every request's future.
                Box::pin(self.degrade(req, alias, key, e.clone(), opts, deadline, meta, depth)).await
            }
        }
    }

    /// The semantic step after an exact miss.
    async fn semantic_lookup(&self, alias: &Alias, tenant: &str, req: &ChatRequest) -> SemanticStep {
        let Some(sem) = self.inner.semantic.as_ref().filter(|_| alias.cfg.cache.semantic) else {
            return SemanticStep::Skip;
        };
        let Ok(q) = SemanticQuery::from_chat(&alias.name, tenant, req) else {
            return SemanticStep::Skip;
        };
        match sem.lookup(q).await {
            Ok(Lookup::Hit(h)) => SemanticStep::Hit(h.value),
            Ok(Lookup::Miss(m)) => SemanticStep::Miss(m),
            // Embedding failed or was refused: the cache fails open.
            Err(e) => {
                tracing::debug!(error = %e, "semantic lookup skipped");
                SemanticStep::Skip
            }
        }
    }

    fn semantic_insert(&self, miss: SemanticMiss, resp: Arc<ChatResponse>, cfg: &ModelCacheConfig) {
        if let Some(sem) = &self.inner.semantic
            && check_storable(&resp, cfg).is_ok()
        {
            sem.insert(miss, resp, Some(cfg.ttl()));
        }
    }

    fn account(&self, meta: &mut CallMeta, resp: &ChatResponse) {
        meta.usage.clone_from(&resp.usage);
        if let (Some(u), Some(t)) = (&resp.usage, &meta.target) {
            let model = t.split_once('/').map_or(&**t, |(_, m)| m);
            meta.cost_usd = self.inner.prices.cost_of_usage(model, u).usd();
        }
    }

    /// Stale cache → fallback alias → rule-based responder → explainable error.
    #[allow(clippy::too_many_arguments)]
    async fn degrade(
        &self,
        req: &ChatRequest,
        alias: &Alias,
        key: Option<CacheKey>,
        err: Error,
        opts: &RequestOptions,
        deadline: Instant,
        meta: &mut CallMeta,
        depth: u32,
    ) -> Result<Arc<ChatResponse>> {
        // The request itself is at fault: no other answer is right.
        if !err.allows_failover() {
            return Err(err);
        }
        if let (Some(c), Some(k)) = (self.inner.cache.as_ref(), key)
            && let Some(hit) = c.lookup_stale(&k).await
        {
            meta.cache = CacheOutcome::Stale;
            meta.degraded = Some(Degraded::StaleCache);
            return Ok(hit.response);
        }
        if let Some(fb) = &alias.cfg.fallback
            && depth < MAX_ALIAS_DEPTH
            && Instant::now() < deadline
        {
            let mut r2 = req.clone();
            r2.model.clone_from(fb);
            let o2 = Self::sub_options(opts, deadline, &meta.request_id);
            match self.chat_at(r2, o2, depth + 1).await {
                Ok(o) => {
                    meta.attempts.extend(o.meta.attempts);
                    meta.target = o.meta.target;
                    meta.usage = o.meta.usage;
                    meta.cost_usd = o.meta.cost_usd;
                    meta.degraded = Some(o.meta.degraded.unwrap_or(Degraded::Fallback(fb.clone())));
                    return Ok(o.response);
                }
                Err(f) => meta.attempts.extend(f.meta.attempts),
            }
        }
        if let Some(r) = &self.inner.responder
            && let Some(resp) = r(req, &err)
        {
            meta.degraded = Some(Degraded::RuleBased);
            return Ok(Arc::new(resp));
        }
        Err(explain(&meta.attempts, &err, &alias.name))
    }

    /// A streamed answer for `req` (its `model` is an alias). Retries and
    /// failover happen before the first token; after it, a failure ends the
    /// stream with an error (or continues on another target when the alias
    /// stitches).
    pub fn chat_stream(
        &self,
        req: ChatRequest,
        opts: RequestOptions,
    ) -> impl Future<Output = std::result::Result<StreamOutcome, Failure>> + Send + '_ {
        // Not an `async fn`, as `chat`.
        self.stream_at(req, opts, 0)
    }

    /// Boxed, like [`Client::chat_at`].
    fn stream_at(
        &self,
        req: ChatRequest,
        opts: RequestOptions,
        depth: u32,
    ) -> BoxFuture<'_, std::result::Result<StreamOutcome, Failure>> {
        Box::pin(self.stream_inner(req, opts, depth))
    }

    // Not an `async fn`: those store their arguments twice (the argument and
    // the local it is moved into), and the request is large.
    #[allow(clippy::manual_async_fn)] // see above: the arguments would be stored twice
    fn stream_inner(
        &self,
        mut req: ChatRequest,
        opts: RequestOptions,
        depth: u32,
    ) -> impl Future<Output = std::result::Result<StreamOutcome, Failure>> + Send + '_ {
        async move {
            req.stream = Some(true);
            let (started, deadline, mut meta, alias) = self.prelude(&req, &opts)?;
            let rid = meta.request_id.clone();
            meta.upstream_mode = Some(UpstreamMode::Stream);
            let include_usage = req.wants_stream_usage();
            let tenant = opts.tenant.clone().unwrap_or_else(|| Arc::from(""));
            let guard = match self.claim(&tenant, &opts, &alias, &req, deadline).await {
                Ok(Claim::Replay(resp)) => {
                    meta.idempotent_replay = true;
                    return Ok(StreamOutcome {
                        stream: chunks_stream(&resp, include_usage),
                        meta,
                        done: None,
                    });
                }
                Ok(Claim::Proceed(g)) => g,
                Err(e) => return Err(self.fail(e, meta, started)),
            };
            let cache = self.inner.cache.as_ref();
            let plan = cache.map(|_| CachePlan::decide(&req, &alias.cfg.cache, opts.cache_control));
            let key = match (cache, plan) {
                (Some(c), Some(p)) if p.uses_cache() => Some(c.key_for(&tenant, &alias.name, &req).await),
                _ => None,
            };
            if let (Some(c), Some(k), Some(p)) = (cache, key, plan)
                && p.read
                && let Some(hit) = c.lookup(&k).await
            {
                meta.cache = hit.outcome;
                let s = crate::cache::stream::replay(&hit, include_usage);
                let s = match guard {
                    Some(g) => record_stream(g, s),
                    None => s,
                };
                return Ok(StreamOutcome {
                    stream: s,
                    meta,
                    done: None,
                });
            }
            let mut sem_miss = None;
            if let (Some(c), Some(p)) = (cache, plan)
                && p.read
                && key.is_some()
            {
                match self.semantic_lookup(&alias, &tenant, &req).await {
                    SemanticStep::Hit(resp) => {
                        c.counters().semantic_hit();
                        meta.cache = CacheOutcome::Semantic;
                        let s = chunks_stream(&resp, include_usage);
                        let s = match guard {
                            Some(g) => record_stream(g, s),
                            None => s,
                        };
                        return Ok(StreamOutcome {
                            stream: s,
                            meta,
                            done: None,
                        });
                    }
                    SemanticStep::Miss(m) => sem_miss = Some(m),
                    SemanticStep::Skip => {}
                }
            }
            meta.cache = match plan {
                Some(p) if p.read => CacheOutcome::Miss,
                _ => CacheOutcome::Bypass,
            };
            let write = plan.is_some_and(|p| p.write);
            let (tx, rx) = oneshot::channel();
            let slot: Arc<Mutex<Option<StartInfo>>> = Arc::default();
            // Shared with the opening call, which must own what it uses (a
            // coalesced stream is opened in a task of its own).
            let req = Arc::new(req);
            let open = {
                let inner = self.inner.clone();
                let alias = alias.clone();
                let req = req.clone();
                let rid = rid.clone();
                let slot = slot.clone();
                let cache_cfg = alias.cfg.cache;
                move || async move {
                    let routed = route::stream(&inner, &alias, &req, &rid, deadline).await;
                    let target = routed.target.as_ref().map(|t| t.id.clone());
                    if let Ok(mut s) = slot.lock() {
                        *s = Some((target, routed.attempts, routed.hedged));
                    }
                    let opened = routed.result?;
                    let s = stream::drive(inner.clone(), alias, &req, rid, deadline, opened, Some(tx));
                    Ok(match (inner.cache.as_ref(), key.filter(|_| write)) {
                        (Some(c), Some(k)) => c.store_stream(&k, &cache_cfg, s),
                        _ => s,
                    })
                }
            };
            let opened = match key {
                Some(k) if self.inner.cfg.coalesce => self.inner.stream_flights.run_stream(k, open).await,
                _ => open().await,
            };
            let info = slot.lock().ok().and_then(|mut s| s.take());
            let leader = info.is_some();
            if let Some((target, attempts, hedged)) = info {
                meta.target = target;
                meta.attempts = attempts;
                meta.hedged = hedged;
            } else {
                meta.coalesced = true;
            }
            match opened {
                Ok(s) => {
                    let s = match (sem_miss.filter(|_| write && leader), self.inner.semantic.clone()) {
                        (Some(m), Some(sem)) => {
                            let cfg = alias.cfg.cache;
                            let insert: crate::cache::stream::OnComplete = Box::new(move |resp| {
                                if check_storable(&resp, &cfg).is_ok() {
                                    sem.insert(m, resp, Some(cfg.ttl()));
                                }
                                Box::pin(async {})
                            });
                            crate::cache::stream::TapComplete::new(s, insert).boxed()
                        }
                        _ => s,
                    };
                    let s = match guard {
                        Some(g) => record_stream(g, s),
                        None => s,
                    };
                    meta.latency_ms = started.elapsed().as_millis() as u64;
                    Ok(StreamOutcome {
                        stream: s,
                        meta,
                        done: leader.then_some(rx),
                    })
                }
                Err(e) => {
                    drop(guard);
                    let e = if e.kind == ErrorKind::ContextLengthExceeded
                        && let Some(cf) = &alias.cfg.context_fallback
                        && depth < MAX_ALIAS_DEPTH
                    {
                        let mut r2 = ChatRequest::clone(&req);
                        r2.model.clone_from(cf);
                        let o2 = Self::sub_options(&opts, deadline, &rid);
                        match self.stream_at(r2, o2, depth + 1).await {
                            Ok(mut o) => {
                                let mut attempts = std::mem::take(&mut meta.attempts);
                                attempts.append(&mut o.meta.attempts);
                                o.meta.attempts = attempts;
                                return Ok(o);
                            }
                            Err(f) => {
                                meta.attempts.extend(f.meta.attempts);
                                f.error
                            }
                        }
                    } else {
                        e
                    };
                    // Boxed: a rare path, which would otherwise size every stream's future.
                    let req = Arc::unwrap_or_clone(req);
                    Box::pin(self.degrade_stream(req, &alias, key, e, &opts, deadline, meta, depth, started)).await
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn degrade_stream(
        &self,
        req: ChatRequest,
        alias: &Alias,
        key: Option<CacheKey>,
        err: Error,
        opts: &RequestOptions,
        deadline: Instant,
        mut meta: CallMeta,
        depth: u32,
        started: Instant,
    ) -> std::result::Result<StreamOutcome, Failure> {
        let include_usage = req.wants_stream_usage();
        if !err.allows_failover() {
            return Err(self.fail(err, meta, started));
        }
        if let (Some(c), Some(k)) = (self.inner.cache.as_ref(), key)
            && let Some(hit) = c.lookup_stale(&k).await
        {
            meta.cache = CacheOutcome::Stale;
            meta.degraded = Some(Degraded::StaleCache);
            self.inner.counters.degraded.fetch_add(1, Ordering::Relaxed);
            return Ok(StreamOutcome {
                stream: crate::cache::stream::replay(&hit, include_usage),
                meta,
                done: None,
            });
        }
        if let Some(fb) = &alias.cfg.fallback
            && depth < MAX_ALIAS_DEPTH
            && Instant::now() < deadline
        {
            let mut r2 = req.clone();
            r2.model.clone_from(fb);
            let o2 = Self::sub_options(opts, deadline, &meta.request_id);
            match self.stream_at(r2, o2, depth + 1).await {
                Ok(mut o) => {
                    let mut attempts = std::mem::take(&mut meta.attempts);
                    attempts.append(&mut o.meta.attempts);
                    o.meta.attempts = attempts;
                    o.meta.alias = meta.alias;
                    o.meta.degraded = Some(o.meta.degraded.unwrap_or(Degraded::Fallback(fb.clone())));
                    self.inner.counters.degraded.fetch_add(1, Ordering::Relaxed);
                    return Ok(o);
                }
                Err(f) => meta.attempts.extend(f.meta.attempts),
            }
        }
        if let Some(r) = &self.inner.responder
            && let Some(resp) = r(&req, &err)
        {
            meta.degraded = Some(Degraded::RuleBased);
            self.inner.counters.degraded.fetch_add(1, Ordering::Relaxed);
            return Ok(StreamOutcome {
                stream: chunks_stream(&resp, include_usage),
                meta,
                done: None,
            });
        }
        let e = explain(&meta.attempts, &err, &alias.name);
        Err(self.fail(e, meta, started))
    }

    /// Embeddings over the alias's targets (retries and failover; no cache).
    pub async fn embed(
        &self,
        req: EmbeddingRequest,
        opts: RequestOptions,
    ) -> std::result::Result<(EmbeddingResponse, CallMeta), Failure> {
        let started = Instant::now();
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let rid = self.request_id(&opts);
        let deadline = self.deadline(&opts);
        let mut meta = CallMeta::new(rid.clone(), &req.model);
        if let Err(e) = validate::embeddings(&req) {
            return Err(self.fail(e, meta, started));
        }
        let alias = match self.resolve(&req.model) {
            Ok(a) => a,
            Err(e) => return Err(self.fail(e, meta, started)),
        };
        self.inner.budget.record_request();
        let tokens: u64 = req
            .input
            .texts()
            .map(|t| t.iter().map(|s| s.len().div_ceil(4) as u64).sum())
            .unwrap_or(1);
        let mut last: Option<Error> = None;
        let cands = route::candidates(&self.inner, &alias, false);
        for (i, (t, force)) in cands.iter().enumerate() {
            let others_left = i + 1 < cands.len();
            let mut attempt = 0u32;
            let mut prev = None;
            loop {
                attempt += 1;
                let t0 = Instant::now();
                let adm = match t
                    .admit(
                        tokens,
                        deadline,
                        Duration::from_millis(self.inner.cfg.max_limiter_wait_ms),
                        *force && attempt == 1,
                    )
                    .await
                {
                    Ok(a) => a,
                    Err(e) => {
                        meta.attempts
                            .push(meta::AttemptRecord::failed(&t.id, &e, t0.elapsed(), false, true));
                        last = Some(e);
                        break;
                    }
                };
                let mut r = req.clone();
                r.model.clone_from(&t.model);
                let call_opts = CallOptions {
                    deadline: Some(deadline),
                    request_id: Some(rid.clone()),
                };
                let res = {
                    let _busy = t.stats.start();
                    crate::policy::timeout::run_until(
                        Some(deadline),
                        crate::error::TimeoutPhase::Total,
                        t.provider.embed(&r, &call_opts),
                    )
                    .await
                };
                adm.finish(&res, res.as_ref().map_or(0, |r| u64::from(r.usage.total_tokens)))
                    .await;
                match res {
                    Ok(mut resp) => {
                        t.stats.observe_success(t0.elapsed());
                        meta.attempts.push(meta::AttemptRecord::ok(&t.id, t0.elapsed(), false));
                        meta.target = Some(t.id.clone());
                        resp.model = req.model.clone();
                        meta.usage = Some(crate::types::Usage::new(resp.usage.prompt_tokens, 0));
                        meta.latency_ms = started.elapsed().as_millis() as u64;
                        return Ok((resp, meta));
                    }
                    Err(e) => {
                        t.stats.observe_failure(
                            e.kind,
                            if e.kind == ErrorKind::RateLimited {
                                e.retry_after
                            } else {
                                None
                            },
                        );
                        meta.attempts
                            .push(meta::AttemptRecord::failed(&t.id, &e, t0.elapsed(), false, false));
                        let d = self
                            .inner
                            .rng
                            .with(|rng| self.inner.retry.decide(&e, attempt, prev, Some(deadline), rng));
                        let stop = !e.allows_failover();
                        match d {
                            crate::policy::retry::RetryDecision::Retry { after }
                                if !(others_left
                                    && after.as_millis() as u64 > self.inner.cfg.max_wait_before_failover_ms)
                                    && self.inner.budget.try_withdraw() =>
                            {
                                prev = Some(after);
                                tokio::time::sleep(after).await;
                            }
                            _ => {
                                if stop {
                                    return Err(self.fail(e, meta, started));
                                }
                                last = Some(e);
                                break;
                            }
                        }
                    }
                }
            }
        }
        let last =
            last.unwrap_or_else(|| Error::timeout(crate::error::TimeoutPhase::Total, "no target could be tried"));
        let e = explain(&meta.attempts, &last, &alias.name);
        Err(self.fail(e, meta, started))
    }

    /// Structured output: asks for JSON matching `schema` (natively where the
    /// provider enforces schemas, by instruction otherwise), validates it,
    /// repairs once, and deserializes it into `T`.
    pub async fn structured<T: serde::de::DeserializeOwned>(
        &self,
        req: ChatRequest,
        schema: &Schema,
        opts: RequestOptions,
    ) -> std::result::Result<Structured<T>, StructuredError> {
        let this = self.clone();
        let (value, outcome) = crate::structured::run_typed::<T, _, _>(req, schema, move |r| {
            let this = this.clone();
            let o = opts.clone();
            async move {
                this.chat(r, o)
                    .await
                    .map(|x| Arc::unwrap_or_clone(x.response))
                    .map_err(Error::from)
            }
        })
        .await?;
        Ok(Structured { value, outcome })
    }

    /// Every target's breaker state and statistics.
    pub fn targets(&self) -> Vec<TargetSnapshot> {
        self.inner
            .targets
            .iter()
            .map(|t| TargetSnapshot {
                id: t.id.clone(),
                breaker: t.breaker.snapshot(),
                stats: t.stats.snapshot(),
            })
            .collect()
    }

    /// Breaker state changes, as they happen.
    pub fn breaker_events(&self) -> broadcast::Receiver<BreakerEvent> {
        self.inner.breaker_events.subscribe()
    }

    /// Client-wide counters.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            requests: c.requests.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            degraded: c.degraded.load(Ordering::Relaxed),
            retry_budget: self.inner.budget.snapshot(),
        }
    }

    /// The exact cache, when configured (for invalidation and stats).
    pub fn cache(&self) -> Option<&ExactCache> {
        self.inner.cache.as_ref()
    }

    /// The model aliases, sorted.
    pub fn aliases(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.aliases.keys().cloned().collect();
        v.sort_unstable();
        v
    }

    /// The providers by name.
    pub fn provider(&self, name: &str) -> Option<DynProvider> {
        self.inner.providers.get(name).map(|(p, _)| p.clone())
    }

    /// The configuration of an alias.
    pub fn alias_config(&self, alias: &str) -> Option<&ModelConfig> {
        self.inner.aliases.get(alias).map(|a| &a.cfg)
    }
}

/// A complete response replayed as a stream.
fn chunks_stream(resp: &ChatResponse, include_usage: bool) -> ChatStream {
    let chunks = response_to_chunks(resp, 64, include_usage);
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}

/// Routes a request and (when `store_key` is set) stores the answer.
/// A complete answer made from a stream (`response_mode: stream`): the
/// result, who answered, the attempts, whether it hedged.
async fn assembled(
    inner: &Arc<Inner>,
    alias: &Arc<Alias>,
    req: &ChatRequest,
    rid: &Arc<str>,
    deadline: Instant,
) -> (Result<ChatResponse>, Option<Arc<str>>, Vec<meta::AttemptRecord>, bool) {
    let r = route::stream(inner, alias, req, rid, deadline).await;
    let target = r.target.as_ref().map(|t| t.id.clone());
    let result = match r.result {
        Ok(opened) => {
            let mut s = stream::drive(inner.clone(), alias.clone(), req, rid.clone(), deadline, opened, None);
            let mut asm = StreamAssembler::new();
            let mut err = None;
            while let Some(item) = s.next().await {
                match item {
                    Ok(c) => asm.push(&c),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            match err {
                Some(e) => Err(e),
                None => Ok(asm.finish()),
            }
        }
        Err(e) => Err(e),
    };
    (result, target, r.attempts, r.hedged)
}

async fn origin(
    inner: Arc<Inner>,
    alias: Arc<Alias>,
    req: Arc<ChatRequest>,
    rid: Arc<str>,
    deadline: Instant,
    mode: UpstreamMode,
    store_key: Option<CacheKey>,
) -> RouteOutcome {
    let (result, target, attempts, hedged) = match mode {
        UpstreamMode::Complete => {
            let r = route::complete(&inner, &alias, &req, &rid, deadline).await;
            (r.result, r.target.map(|t| t.id.clone()), r.attempts, r.hedged)
        }
        UpstreamMode::Stream => Box::pin(assembled(&inner, &alias, &req, &rid, deadline)).await,
    };
    let result = result.map(Arc::new);
    if let (Ok(resp), Some(k), Some(c)) = (&result, store_key, inner.cache.as_ref()) {
        // Not storable (tool calls, truncation, size): simply not stored.
        let _ = c.store(&k, resp.clone(), &alias.cfg.cache).await;
    }
    RouteOutcome {
        result,
        target,
        attempts,
        hedged,
    }
}
