//! Semantic lookup cost at 10k and 100k entries in one partition (the worst
//! case: partitions split the entries further in practice): the index search
//! alone (exact scan vs HNSW), and a full lookup (real embedding + search).
//! The index is filled with random unit vectors. Needs the model:
//! `scripts/fetch-embedding-model`.

use breakwater::cache::semantic::{
    Embedder, IndexConfig, Lookup, MiniLmEmbedder, MiniLmOptions, SemanticCache, SemanticConfig, SemanticMiss,
    SemanticQuery, VectorIndex, default_model_dir, normalize,
};
use criterion::{BenchmarkId, Criterion, criterion_group};
use std::sync::Arc;

const DIM: usize = 384;

fn random_unit(seed: &mut u64) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIM)
        .map(|_| {
            // xorshift, then a sum of uniforms: roughly Gaussian, so the
            // vectors spread over the whole sphere.
            let mut s = 0.0;
            for _ in 0..4 {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                s += (*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            }
            s
        })
        .collect();
    normalize(&mut v);
    v
}

/// `v` moved to a cosine of about 0.95 and renormalised.
fn noisy_copy(v: &[f32], seed: &mut u64) -> Vec<f32> {
    let noise = random_unit(seed);
    let mut out: Vec<f32> = v.iter().zip(&noise).map(|(a, b)| a + 0.33 * b).collect();
    normalize(&mut out);
    out
}

fn model() -> Arc<MiniLmEmbedder> {
    let dir = default_model_dir();
    match MiniLmEmbedder::load(&dir, MiniLmOptions::default()) {
        Ok(m) => Arc::new(m),
        Err(e) => panic!("run scripts/fetch-embedding-model first ({}): {e}", dir.display()),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let e = model();
    let query_text = "How do I reverse a list in Python?";
    let query_vec = rt.block_on(e.embed(&[query_text])).expect("embed").remove(0);

    let mut g = c.benchmark_group("search_only");
    g.sample_size(30);
    for n in [10_000usize, 100_000] {
        let mut seed = 42u64;
        let vectors: Vec<Vec<f32>> = (0..n).map(|_| random_unit(&mut seed)).collect();
        let mut flat = VectorIndex::new(
            DIM,
            IndexConfig {
                hnsw_threshold: usize::MAX,
                ..IndexConfig::default()
            },
        );
        let mut graph = VectorIndex::new(DIM, IndexConfig::default());
        for (i, v) in vectors.iter().enumerate() {
            flat.insert(i as u32, v);
            graph.insert(i as u32, v);
        }
        g.bench_with_input(BenchmarkId::new("exact_scan", n), &n, |b, _| {
            b.iter(|| flat.search(&query_vec, 1, &|_| true))
        });
        g.bench_with_input(BenchmarkId::new("hnsw", n), &n, |b, _| {
            b.iter(|| graph.search(&query_vec, 1, &|_| true))
        });
        // Recall of the graph for stored vectors and for noisy copies
        // (cosine about 0.95, like a paraphrase), against the candidate list size.
        for ef in [32usize, 64, 128] {
            graph.set_ef_search(ef);
            let (mut own, mut near) = (0, 0);
            for i in 0..200 {
                let id = i * (n / 200);
                let target = &vectors[id];
                if graph.search(target, 1, &|_| true).first().map(|h| h.0) == Some(id as u32) {
                    own += 1;
                }
                let noisy = noisy_copy(target, &mut seed);
                let exact = flat.search(&noisy, 1, &|_| true).first().map(|h| h.0);
                if graph.search(&noisy, 1, &|_| true).first().map(|h| h.0) == exact {
                    near += 1;
                }
            }
            let started = std::time::Instant::now();
            for _ in 0..200 {
                std::hint::black_box(graph.search(&query_vec, 1, &|_| true));
            }
            let per = started.elapsed() / 200;
            println!("hnsw n={n} ef={ef}: own vector {own}/200, near copy {near}/200, {per:?} per search");
        }
        graph.set_ef_search(IndexConfig::default().hnsw.ef_search);
    }
    g.finish();

    let mut g = c.benchmark_group("lookup_with_embedding");
    g.sample_size(30);
    for n in [10_000usize, 100_000] {
        let cache: SemanticCache<u32> = SemanticCache::new(
            e.clone(),
            SemanticConfig {
                max_entries: n,
                ..SemanticConfig::default()
            },
        );
        let mut seed = 7u64;
        for i in 0..n {
            let q = SemanticQuery::new("fast", "tenant", b"ctx", "filler");
            cache.insert(SemanticMiss::with_embedding(q, random_unit(&mut seed)), i as u32, None);
        }
        assert_eq!(cache.len(), n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.to_async(&rt).iter(|| async {
                let q = SemanticQuery::new("fast", "tenant", b"ctx", query_text);
                match cache.lookup(q).await.expect("lookup") {
                    Lookup::Hit(h) => h.value,
                    Lookup::Miss(_) => 0,
                }
            })
        });
    }
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
