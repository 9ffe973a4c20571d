//! Rate limiter decisions per second: each in-memory algorithm on one
//! thread and contended across threads, and the Redis store one at a time
//! and with many decisions in flight (pipelined on the multiplexed
//! connection).
//!
//! `cargo bench -p breakwater --bench policy_ratelimit`

use breakwater::policy::ratelimit::{
    Algorithm, LimitSpec, MemoryOptions, MemoryStore, Quota, RateLimiter, RedisLimiterStore,
};
use breakwater::redis_store::{RedisConfig, RedisStore};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ALGOS: [Algorithm; 4] = [
    Algorithm::TokenBucket,
    Algorithm::Gcra,
    Algorithm::SlidingLog,
    Algorithm::SlidingWindow,
];

fn memory_limiter(algorithm: Algorithm) -> RateLimiter<MemoryStore> {
    // High enough that every decision admits: the common, hot path. The
    // sliding log keeps one entry per admission for a period: a short period
    // keeps it at a steady size (entries expire as fast as they come).
    let period = if algorithm == Algorithm::SlidingLog { 1 } else { 60 };
    let spec = LimitSpec {
        algorithm,
        quota: Quota::new(1 << 40, Duration::from_secs(period)),
    };
    RateLimiter::new("bench", MemoryStore::new(spec, MemoryOptions::default()))
}

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("virtual-key-{i}")).collect()
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit/memory/1-thread");
    g.throughput(Throughput::Elements(1));
    let keys = keys(1024);
    for algo in ALGOS {
        let l = memory_limiter(algo);
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(format!("{algo:?}")), |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(l.try_acquire_now(&keys[i], 1).is_ok())
            })
        });
    }
    g.finish();
}

/// `threads` threads deciding at once, on one shared key (worst case: one
/// shard) or on distinct keys.
fn contended(c: &mut Criterion) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    let mut g = c.benchmark_group(format!("ratelimit/memory/{threads}-threads"));
    g.throughput(Throughput::Elements(1));
    let keys = Arc::new(keys(1024));
    for algo in ALGOS {
        for shared_key in [true, false] {
            let l = Arc::new(memory_limiter(algo));
            let name = format!("{algo:?}/{}", if shared_key { "one-key" } else { "many-keys" });
            g.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(threads as u64);
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..threads {
                            let (l, keys) = (l.clone(), keys.clone());
                            s.spawn(move || {
                                for n in 0..per {
                                    let k = if shared_key {
                                        0
                                    } else {
                                        (n as usize * 7 + t * 131) & 1023
                                    };
                                    black_box(l.try_acquire_now(&keys[k], 1).is_ok());
                                }
                            });
                        }
                    });
                    // About `iters` decisions in all, in this wall time:
                    // criterion reports the aggregate rate.
                    start.elapsed()
                })
            });
        }
    }
    g.finish();
}

fn redis(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = match rt.block_on(breakwater_testkit::RedisServer::start()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping the Redis benchmarks: {e}");
            return;
        }
    };
    let store = rt
        .block_on(async {
            RedisStore::connect(&RedisConfig {
                timeout_ms: 1000,
                ..RedisConfig::single(server.url())
            })
        })
        .expect("redis handle");
    let mut g = c.benchmark_group("ratelimit/redis");
    g.sample_size(20);
    for algo in [Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::SlidingWindow] {
        let spec = LimitSpec {
            algorithm: algo,
            quota: Quota::new(1 << 40, Duration::from_secs(60)),
        };
        let l = Arc::new(RateLimiter::new(
            "bench",
            RedisLimiterStore::new(store.clone(), &format!("bench-{algo:?}"), spec),
        ));
        let keys = Arc::new(keys(1024));
        for in_flight in [1usize, 64] {
            g.throughput(Throughput::Elements(1));
            g.bench_function(
                BenchmarkId::new(format!("{algo:?}"), format!("{in_flight}-in-flight")),
                |b| {
                    b.to_async(&rt).iter_custom(|iters| {
                        let (l, keys) = (l.clone(), keys.clone());
                        async move {
                            let start = Instant::now();
                            let per = iters.div_ceil(in_flight as u64);
                            let tasks: Vec<_> = (0..in_flight)
                                .map(|t| {
                                    let (l, keys) = (l.clone(), keys.clone());
                                    tokio::spawn(async move {
                                        for n in 0..per {
                                            let k = (n as usize + t * 17) & 1023;
                                            black_box(l.try_acquire(&keys[k], 1).await.is_ok());
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                let _ = t.await;
                            }
                            start.elapsed()
                        }
                    })
                },
            );
        }
        assert_eq!(l.stats().store_errors, 0, "the benchmark must not measure failures");
    }
    g.finish();
    drop(server);
}

criterion_group!(benches, single_thread, contended, redis);
criterion_main!(benches);
