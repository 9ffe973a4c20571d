//! Hot-path costs of the other policies: a breaker permit taken and
//! recorded while closed, a retry-budget deposit, a bulkhead permit, a
//! spend reservation in memory.
//!
//! `cargo bench -p breakwater --bench policy_breaker`

use breakwater::policy::breaker::{BreakerConfig, CircuitBreaker};
use breakwater::policy::concurrency::{Bulkhead, BulkheadConfig};
use breakwater::policy::retry_budget::RetryBudget;
use breakwater::policy::spend::{BudgetConfig, MemorySpendStore, Period, Spend, SpendLimiter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn policies(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy/1-thread");
    g.throughput(Throughput::Elements(1));

    let breaker = CircuitBreaker::new("t", &BreakerConfig::default());
    g.bench_function("breaker acquire+success", |b| {
        b.iter(|| breaker.try_acquire().map(|p| p.success()).is_ok())
    });

    let budget = RetryBudget::default();
    g.bench_function("retry budget deposit", |b| b.iter(|| budget.record_request()));

    let bulkhead = Bulkhead::new(
        "t",
        BulkheadConfig {
            max_in_flight: 64,
            max_queue: 0,
            adaptive: None,
        },
    );
    g.bench_function("bulkhead try_acquire+drop", |b| {
        b.iter(|| black_box(bulkhead.try_acquire().is_ok()))
    });

    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let spend = SpendLimiter::new(
        BudgetConfig {
            usd: None,
            tokens: Some(u64::MAX / 2),
            period: Period::Month,
        },
        MemorySpendStore::default(),
    );
    let cost = Spend { tokens: 1, nano_usd: 0 };
    g.bench_function("spend reserve+settle (memory)", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = spend.reserve("team-a", cost).await.ok();
                if let Some(r) = r {
                    spend.settle("team-a", r, cost).await;
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, policies);
criterion_main!(benches);
