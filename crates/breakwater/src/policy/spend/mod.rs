//! Spend budgets: tokens and US dollars per key per calendar period (UTC).
//!
//! A key's budget (`keys[].budget: { usd, tokens, period }`) caps what its
//! requests may consume in a day, an ISO week or a month. Costs come from
//! the [`PriceTable`] (`prices:`, USD per million input and output tokens,
//! by upstream model name).
//!
//! Like the token rate limit, spending is **reserve-then-settle**: before
//! the call the estimated cost (prompt tokens plus the largest possible
//! completion) is reserved atomically, and refused with
//! [`ErrorKind::BudgetExceeded`] if it would not fit in what is left; after
//! the call [`SpendLimiter::settle`] replaces the estimate with the real
//! cost. So concurrent requests cannot overspend together, and an unsettled
//! reservation stays charged.
//!
//! Amounts are integers: tokens, and dollars in nano-dollars
//! ([`Spend::nano_usd`]), so sums never drift. A model missing from the
//! price table costs tokens but no dollars (check [`PriceTable::get`] when
//! loading the config to warn about it).
//!
//! Stores: [`MemorySpendStore`] and [`RedisSpendStore`] (shared by all
//! instances; keys expire after their period). Periods are computed from
//! this host's UTC clock, which matters only within clock skew of a period
//! boundary.

mod memory;
mod period;
mod redis;

pub use memory::MemorySpendStore;
pub use period::{Period, Window};
pub use redis::RedisSpendStore;

use super::config::InvalidConfig;
use crate::error::{Error, ErrorKind};
use crate::redis_store::{FailurePolicy, RedisUnavailable};
use crate::types::Usage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// `keys[].budget`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// US dollars per period; `null` = unlimited.
    #[serde(default)]
    pub usd: Option<f64>,
    /// Tokens per period; `null` = unlimited.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// The period.
    #[serde(default)]
    pub period: Period,
}

impl BudgetConfig {
    /// Checks the values; paths are relative (`budget.usd`).
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if let Some(usd) = self.usd
            && !(usd.is_finite() && usd >= 0.0)
        {
            return Err(InvalidConfig::new("budget.usd", "must be a number ≥ 0"));
        }
        if self.tokens == Some(0) {
            return Err(InvalidConfig::new(
                "budget.tokens",
                "must be ≥ 1 (null means unlimited)",
            ));
        }
        Ok(())
    }

    /// Whether there is no cap at all.
    pub fn is_unlimited(&self) -> bool {
        self.usd.is_none() && self.tokens.is_none()
    }

    /// The caps as integers.
    pub fn limit(&self) -> SpendLimit {
        SpendLimit {
            tokens: self.tokens,
            nano_usd: self.usd.map(usd_to_nano),
        }
    }
}

fn usd_to_nano(usd: f64) -> u64 {
    // Saturating float-to-int cast: negative and NaN give 0.
    (usd * 1e9).round() as u64
}

/// USD per million tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input: f64,
    /// Per million completion tokens.
    pub output: f64,
}

/// `prices:`: model name → [`Price`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable(pub BTreeMap<String, Price>);

impl PriceTable {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        for (model, p) in &self.0 {
            for (field, v) in [("input", p.input), ("output", p.output)] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(InvalidConfig::new(
                        format!("prices.{model}.{field}"),
                        "must be a number ≥ 0",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The price of `model`; `provider/model` is also looked up as `model`.
    pub fn get(&self, model: &str) -> Option<Price> {
        self.0
            .get(model)
            .or_else(|| model.split_once('/').and_then(|(_, m)| self.0.get(m)))
            .copied()
    }

    /// What `prompt` input and `completion` output tokens of `model` cost.
    pub fn cost(&self, model: &str, prompt: u64, completion: u64) -> Spend {
        let nano_usd = self.get(model).map_or(0, |p| {
            // USD per 1M tokens = 1000 nano-USD per token; round up.
            (prompt as f64 * p.input * 1_000.0 + completion as f64 * p.output * 1_000.0).ceil() as u64
        });
        Spend {
            tokens: prompt.saturating_add(completion),
            nano_usd,
        }
    }

    /// The real cost of a call from its usage.
    pub fn cost_of_usage(&self, model: &str, usage: &Usage) -> Spend {
        self.cost(
            model,
            u64::from(usage.prompt_tokens),
            u64::from(usage.completion_tokens),
        )
    }
}

/// An amount spent: tokens and nano-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Spend {
    /// Tokens.
    pub tokens: u64,
    /// US dollars × 10⁹.
    pub nano_usd: u64,
}

impl Spend {
    /// The dollars as a float (for display).
    pub fn usd(&self) -> f64 {
        self.nano_usd as f64 / 1e9
    }
}

/// The caps of one period, as integers; `None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpendLimit {
    /// Tokens.
    pub tokens: Option<u64>,
    /// Nano-dollars.
    pub nano_usd: Option<u64>,
}

impl SpendLimit {
    /// Whether `spent + cost` stays within the caps.
    pub fn admits(&self, spent: Spend, cost: Spend) -> bool {
        self.tokens
            .is_none_or(|t| spent.tokens.saturating_add(cost.tokens) <= t)
            && self
                .nano_usd
                .is_none_or(|u| spent.nano_usd.saturating_add(cost.nano_usd) <= u)
    }
}

/// The answer of a store to a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendDecision {
    /// Whether the cost was reserved.
    pub allowed: bool,
    /// Spent in the period, this reservation included if allowed.
    pub spent: Spend,
}

/// Where spending is counted. Implemented by [`MemorySpendStore`] and
/// [`RedisSpendStore`].
pub trait SpendStore: Send + Sync {
    /// Adds `cost` to `key` in `window` if it stays within `limit`.
    fn reserve(
        &self,
        key: &str,
        window: Window,
        limit: SpendLimit,
        cost: Spend,
    ) -> impl Future<Output = Result<SpendDecision, RedisUnavailable>> + Send;

    /// Adds `tokens` and `nano_usd` (either may be negative) to `key` in
    /// `window`, never below zero and never refusing.
    fn adjust(
        &self,
        key: &str,
        window: Window,
        tokens: i64,
        nano_usd: i64,
    ) -> impl Future<Output = Result<(), RedisUnavailable>> + Send;

    /// What `key` spent in `window`.
    fn spent(&self, key: &str, window: Window) -> impl Future<Output = Result<Spend, RedisUnavailable>> + Send;

    /// What a limiter does when the store fails.
    fn failure_policy(&self) -> FailurePolicy;
}

/// An admitted request's hold on a budget; settle it with the real cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "settle the reservation with the real cost (or drop it to keep the estimate charged)"]
pub struct SpendReservation {
    window: Window,
    reserved: Spend,
    checked: bool,
    spent: Spend,
}

impl SpendReservation {
    /// Spent in the period after this reservation (for headers and logs).
    pub fn spent(&self) -> Spend {
        self.spent
    }

    /// Whether it was admitted without asking the store (fail-open).
    pub fn unchecked(&self) -> bool {
        !self.checked
    }
}

/// Counters of a spend limiter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpendStats {
    /// Reservations admitted.
    pub admitted: u64,
    /// Reservations refused over budget.
    pub rejected: u64,
    /// Store calls that failed.
    pub store_errors: u64,
    /// Admitted unchecked because the store failed (fail-open).
    pub failed_open: u64,
    /// Refused because the store failed (fail-closed).
    pub failed_closed: u64,
}

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Enforces one [`BudgetConfig`] per key over a store.
pub struct SpendLimiter<S = MemorySpendStore> {
    cfg: BudgetConfig,
    limit: SpendLimit,
    store: S,
    clock: Clock,
    admitted: AtomicU64,
    rejected: AtomicU64,
    store_errors: AtomicU64,
    failed_open: AtomicU64,
    failed_closed: AtomicU64,
}

impl<S: std::fmt::Debug> std::fmt::Debug for SpendLimiter<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendLimiter")
            .field("cfg", &self.cfg)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<S: SpendStore> SpendLimiter<S> {
    /// A limiter for `cfg` over `store`, on the system clock.
    pub fn new(cfg: BudgetConfig, store: S) -> Self {
        SpendLimiter {
            limit: cfg.limit(),
            cfg,
            store,
            clock: Arc::new(SystemTime::now),
            admitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            failed_open: AtomicU64::new(0),
            failed_closed: AtomicU64::new(0),
        }
    }

    /// Uses another wall clock (for tests and replays).
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The budget.
    pub fn config(&self) -> &BudgetConfig {
        &self.cfg
    }

    /// The counters.
    pub fn stats(&self) -> SpendStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SpendStats {
            admitted: l(&self.admitted),
            rejected: l(&self.rejected),
            store_errors: l(&self.store_errors),
            failed_open: l(&self.failed_open),
            failed_closed: l(&self.failed_closed),
        }
    }

    fn period_name(&self) -> &'static str {
        match self.cfg.period {
            Period::Day => "today",
            Period::Week => "this week",
            Period::Month => "this month",
        }
    }

    fn over_budget(&self, key: &str, spent: Spend, cost: Spend, window: Window, now: SystemTime) -> Error {
        let mut caps = vec![];
        if let Some(t) = self.limit.tokens {
            caps.push(format!("{} of {t} tokens", spent.tokens));
        }
        if let Some(u) = self.limit.nano_usd {
            caps.push(format!("${:.4} of ${:.2}", spent.usd(), u as f64 / 1e9));
        }
        let left = window.remaining(now);
        Error::new(
            ErrorKind::BudgetExceeded,
            format!(
                "the budget of {key} is spent: {} used {}; this request may cost {} tokens / ${:.4}; it renews in {}h",
                caps.join(" and "),
                self.period_name(),
                cost.tokens,
                cost.usd(),
                left.as_secs().div_ceil(3600)
            ),
        )
        .with_retry_after(Some(left))
    }

    /// Reserves `estimate` for `key` in the current period, or refuses with
    /// `budget_exceeded` (`retry_after` = until the period renews).
    pub async fn reserve(&self, key: &str, estimate: Spend) -> Result<SpendReservation, Error> {
        let now = (self.clock)();
        let window = self.cfg.period.window(now);
        if self.cfg.is_unlimited() {
            return Ok(SpendReservation {
                window,
                reserved: estimate,
                checked: false,
                spent: Spend::default(),
            });
        }
        match self.store.reserve(key, window, self.limit, estimate).await {
            Ok(d) if d.allowed => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(SpendReservation {
                    window,
                    reserved: estimate,
                    checked: true,
                    spent: d.spent,
                })
            }
            Ok(d) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Err(self.over_budget(key, d.spent, estimate, window, now))
            }
            Err(e) => {
                self.store_errors.fetch_add(1, Ordering::Relaxed);
                match self.store.failure_policy() {
                    FailurePolicy::Open => {
                        self.failed_open.fetch_add(1, Ordering::Relaxed);
                        self.admitted.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "budget store unavailable: admitting (fail-open)");
                        Ok(SpendReservation {
                            window,
                            reserved: estimate,
                            checked: false,
                            spent: Spend::default(),
                        })
                    }
                    FailurePolicy::Closed => {
                        self.failed_closed.fetch_add(1, Ordering::Relaxed);
                        Err(Error::new(
                            ErrorKind::Overloaded,
                            format!(
                                "the budget store is unavailable ({e}) and the failure policy is closed, so the request is refused"
                            ),
                        )
                        .with_code(super::ratelimit::CODE_STORE_DOWN))
                    }
                }
            }
        }
    }

    /// Replaces the reservation's estimate with the real cost. Store errors
    /// are counted, not returned.
    pub async fn settle(&self, key: &str, r: SpendReservation, actual: Spend) {
        if !r.checked {
            return;
        }
        let dt = actual.tokens as i64 - r.reserved.tokens as i64;
        let du = actual.nano_usd as i64 - r.reserved.nano_usd as i64;
        if (dt, du) == (0, 0) {
            return;
        }
        if let Err(e) = self.store.adjust(key, r.window, dt, du).await {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "could not settle a budget reservation");
        }
    }

    /// What `key` spent in the current period.
    pub async fn spent(&self, key: &str) -> Result<Spend, RedisUnavailable> {
        let window = self.cfg.period.window((self.clock)());
        self.store.spent(key, window).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, UNIX_EPOCH};

    fn prices() -> PriceTable {
        serde_json::from_str(r#"{"gpt-4o-mini":{"input":0.15,"output":0.60},"big":{"input":10,"output":30}}"#).unwrap()
    }

    /// A clock the test moves.
    fn clock(start: u64) -> (Arc<Mutex<SystemTime>>, impl Fn() -> SystemTime + Send + Sync + 'static) {
        let t = Arc::new(Mutex::new(UNIX_EPOCH + Duration::from_secs(start)));
        let t2 = t.clone();
        (t, move || *t2.lock().unwrap())
    }

    // 2024-02-29T13:00:00Z.
    const T0: u64 = 1_709_211_600;

    #[test]
    fn prices_and_costs() {
        let p = prices();
        assert!(p.validate().is_ok());
        // 1M in at $0.15 + 1M out at $0.60.
        assert_eq!(p.cost("gpt-4o-mini", 1_000_000, 1_000_000).usd(), 0.75);
        assert_eq!(p.cost("gpt-4o-mini", 1000, 500).nano_usd, 450_000);
        assert_eq!(p.cost("openai/gpt-4o-mini", 1000, 0).nano_usd, 150_000);
        let unknown = p.cost("mystery", 10, 10);
        assert_eq!((unknown.tokens, unknown.nano_usd), (20, 0));
        assert!(serde_json::from_str::<PriceTable>(r#"{"m":{"input":1,"output":1,"cached":1}}"#).is_err());
        let bad: PriceTable = serde_json::from_str(r#"{"m":{"input":-1,"output":1}}"#).unwrap();
        assert_eq!(bad.validate().unwrap_err().path, "prices.m.input");
    }

    #[test]
    fn budget_config() {
        let b: BudgetConfig = serde_json::from_str(r#"{"usd":null,"tokens":null,"period":"month"}"#).unwrap();
        assert_eq!(b, BudgetConfig::default());
        assert!(b.is_unlimited());
        let b: BudgetConfig = serde_json::from_str(r#"{"usd":12.5,"period":"week"}"#).unwrap();
        assert_eq!(b.limit().nano_usd, Some(12_500_000_000));
        assert!(serde_json::from_str::<BudgetConfig>(r#"{"period":"year"}"#).is_err());
        assert!(serde_json::from_str::<BudgetConfig>(r#"{"dollars":1}"#).is_err());
        let bad = BudgetConfig {
            tokens: Some(0),
            ..Default::default()
        };
        assert_eq!(bad.validate().unwrap_err().path, "budget.tokens");
    }

    #[tokio::test]
    async fn usd_budget_reserve_settle_and_renewal() {
        let (now, clock) = clock(T0);
        let cfg = BudgetConfig {
            usd: Some(1.0),
            tokens: None,
            period: Period::Day,
        };
        let l = SpendLimiter::new(cfg, MemorySpendStore::default()).with_clock(clock);
        let p = prices();
        // Estimate: 10k in + 20k max out on "big" = $0.70.
        let est = p.cost("big", 10_000, 20_000);
        let r = l.reserve("team-a", est).await.unwrap();
        assert_eq!(r.spent().nano_usd, 700_000_000);
        // A second one does not fit while the first is reserved.
        let e = l.reserve("team-a", est).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::BudgetExceeded);
        assert_eq!(e.retry_after, Some(Duration::from_secs(11 * 3600)));
        assert!(
            e.message.contains("team-a") && e.message.contains("today"),
            "{}",
            e.message
        );
        // It used only 1k out: $0.13. Now the second fits.
        l.settle("team-a", r, p.cost("big", 10_000, 1_000)).await;
        assert_eq!(l.spent("team-a").await.unwrap().nano_usd, 130_000_000);
        let r2 = l.reserve("team-a", est).await.unwrap();
        l.settle("team-a", r2, est).await;
        assert!(l.reserve("team-a", est).await.is_err());
        // Other keys have their own budget.
        assert!(l.reserve("team-b", est).await.is_ok());
        // The next day starts from zero.
        *now.lock().unwrap() += Duration::from_secs(11 * 3600);
        assert_eq!(l.spent("team-a").await.unwrap(), Spend::default());
        assert!(l.reserve("team-a", est).await.is_ok());
        let s = l.stats();
        assert_eq!((s.admitted, s.rejected), (4, 2));
    }

    #[tokio::test]
    async fn token_budget_and_late_settles_go_to_their_period() {
        let (now, clock) = clock(T0);
        let cfg = BudgetConfig {
            usd: None,
            tokens: Some(1000),
            period: Period::Month,
        };
        let l = SpendLimiter::new(cfg, MemorySpendStore::default()).with_clock(clock);
        let r = l
            .reserve(
                "k",
                Spend {
                    tokens: 900,
                    nano_usd: 0,
                },
            )
            .await
            .unwrap();
        assert!(
            l.reserve(
                "k",
                Spend {
                    tokens: 200,
                    nano_usd: 0
                }
            )
            .await
            .is_err()
        );
        // The month ends before the call does; its cost stays in February.
        *now.lock().unwrap() += Duration::from_secs(2 * 86_400);
        l.settle(
            "k",
            r,
            Spend {
                tokens: 1200,
                nano_usd: 0,
            },
        )
        .await;
        assert_eq!(l.spent("k").await.unwrap().tokens, 0);
        assert!(
            l.reserve(
                "k",
                Spend {
                    tokens: 1000,
                    nano_usd: 0
                }
            )
            .await
            .is_ok()
        );
    }

    #[tokio::test]
    async fn concurrent_reservations_cannot_overspend() {
        let cfg = BudgetConfig {
            usd: None,
            tokens: Some(10_000),
            period: Period::Day,
        };
        let l = Arc::new(SpendLimiter::new(cfg, MemorySpendStore::default()));
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move {
                    l.reserve(
                        "k",
                        Spend {
                            tokens: 1000,
                            nano_usd: 0,
                        },
                    )
                    .await
                    .is_ok()
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        assert_eq!(ok, 10);
    }
}
