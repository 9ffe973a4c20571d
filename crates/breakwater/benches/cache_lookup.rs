//! Cache hot paths: an L1 hit including key hashing for a 2 KB prompt
//! (target < 5 µs), the key hashing alone, and an L2 hit round trip against
//! a local `redis-server`.
//!
//! `cargo bench -p breakwater --bench cache_lookup`

use breakwater::cache::redis::RedisTier;
use breakwater::cache::{CacheConfig, ExactCache, Fingerprint, ModelCacheConfig};
use breakwater::redis_store::{RedisConfig, RedisStore};
use breakwater::types::{ChatRequest, ChatResponse, Choice, Extra, FinishReason, Message, Tool, Usage};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::sync::Arc;

/// A request whose prompt is about 2 KB: a system prompt, a user turn, a tool.
fn request() -> ChatRequest {
    let mut r = ChatRequest::user("fast", "Summarise the following text. ".repeat(40));
    r.messages
        .insert(0, Message::system("You are a careful assistant. ".repeat(20)));
    r.temperature = Some(0.0);
    r.tools = Some(vec![Tool::function(
        "lookup",
        "look a fact up",
        serde_json::json!({"type": "object", "properties": {"q": {"type": "string"}, "n": {"type": "integer"}}}),
    )]);
    r
}

fn response() -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-bench".into(),
        object: "chat.completion".into(),
        created: 1,
        model: "gpt-4o-mini".into(),
        choices: vec![Choice {
            index: 0,
            message: Message::assistant("A summary of about this length. ".repeat(16)),
            finish_reason: Some(FinishReason::Stop),
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: Some(Usage::new(500, 120)),
        system_fingerprint: None,
        extra: Extra::new(),
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let req = request();
    let prompt_bytes: usize = req.messages.iter().map(|m| m.text().len()).sum();
    let json = serde_json::to_vec(&response()).unwrap().len();
    let entry = breakwater::cache::entry::Entry {
        response: Arc::new(response()),
        stored_at_ms: 0,
        fresh_until_ms: 0,
        stale_until_ms: 0,
        size: 0,
    };
    let encoded = entry.encode().unwrap().len();
    eprintln!("prompt bytes: {prompt_bytes}; response JSON {json} B, L2 entry {encoded} B");

    // The floor: blake3 over the same number of bytes in one call (shows
    // how loaded the machine is when comparing runs).
    let raw = vec![7u8; prompt_bytes];
    c.bench_function("blake3_raw_2kb", |b| b.iter(|| blake3::hash(black_box(&raw))));

    c.bench_function("fingerprint_2kb", |b| {
        b.iter(|| Fingerprint::of(black_box("fast"), black_box(&req)))
    });

    let cache = rt.block_on(async {
        let cache = ExactCache::memory(CacheConfig::default());
        let key = cache.key_for("team-a", "fast", &req).await;
        cache
            .store(&key, Arc::new(response()), &ModelCacheConfig::default())
            .await
            .unwrap();
        cache
    });
    c.bench_function("l1_hit_with_key_2kb", |b| {
        b.to_async(&rt).iter(|| async {
            let key = cache.key_for("team-a", "fast", black_box(&req)).await;
            let hit = cache.lookup(&key).await;
            assert!(hit.is_some());
            hit
        })
    });

    let (server, tier, key) = rt.block_on(async {
        let server = breakwater_testkit::RedisServer::start().await.unwrap();
        let store = RedisStore::connect(&RedisConfig::single(server.url())).unwrap();
        let writer = ExactCache::builder(CacheConfig::default()).redis(store.clone()).build();
        let key = writer.key_for("team-a", "fast", &req).await;
        writer
            .store(&key, Arc::new(response()), &ModelCacheConfig::default())
            .await
            .unwrap();
        writer.sync().await;
        let tier = RedisTier::new(store, 16, Arc::default());
        (server, tier, key)
    });
    c.bench_function("l2_hit_roundtrip", |b| {
        b.to_async(&rt).iter(|| async {
            let e = tier.get(&key).await;
            assert!(e.is_some());
            e
        })
    });
    drop(server);
}

criterion_group! {
    name = cache;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(30);
    targets = benches
}
criterion_main!(cache);
