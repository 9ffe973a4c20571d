//! Embedding latency of the real model (all-MiniLM-L6-v2), one compute
//! thread. Needs the model: `scripts/fetch-embedding-model`.

use breakwater::cache::semantic::{Embedder, MiniLmEmbedder, MiniLmOptions, default_model_dir};
use criterion::{Criterion, Throughput, criterion_group};
use std::sync::Arc;

fn model() -> Arc<MiniLmEmbedder> {
    let dir = default_model_dir();
    match MiniLmEmbedder::load(&dir, MiniLmOptions::default()) {
        Ok(m) => Arc::new(m),
        Err(e) => panic!("run scripts/fetch-embedding-model first ({}): {e}", dir.display()),
    }
}

const SHORT: &str = "How do I reverse a list in Python?";
const MEDIUM: &str = "I am writing a small web service in Rust with axum and I would like to know how to \
                      share a database connection pool between handlers without cloning it for every \
                      request, and whether I should wrap it in an Arc or use the state extractor instead.";

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let e = model();
    let mut g = c.benchmark_group("embed");
    g.sample_size(50);
    for (name, text) in [("short_10_tokens", SHORT), ("medium_60_tokens", MEDIUM)] {
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { e.embed(&[text]).await.expect("embed") })
        });
    }
    // 32 concurrent callers: the worker batches them.
    let owned: Vec<String> = (0..32).map(|i| format!("{SHORT} (variant {i})")).collect();
    let texts: Vec<[&str; 1]> = owned.iter().map(|t| [t.as_str()]).collect();
    g.throughput(Throughput::Elements(32));
    g.bench_function("32_concurrent_short", |b| {
        b.to_async(&rt).iter(|| async {
            let calls = texts.iter().map(|t| e.embed(t));
            futures::future::join_all(calls).await
        })
    });
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    // One compute thread, as in production (see `MiniLmOptions::threads`).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: nothing else runs yet; no thread can read the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
