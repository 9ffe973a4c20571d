//! The exact cache in memory: keys and scopes, cacheability, TTL and grace
//! with paused time, invalidation, streams, stats.

mod cache_support;

use breakwater::cache::stream::replay;
use breakwater::cache::{
    CacheConfig, CacheControl, CacheOutcome, CacheScope, ExactCache, ModelCacheConfig, NotStored, Price, Tier,
};
use breakwater::coalesce::Coalescer;
use breakwater::types::{ChatChunk, FinishReason, StreamAssembler, Tool, response_to_chunks};
use cache_support::{Origin, answer, req, response};
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn cache(scope: CacheScope) -> ExactCache {
    ExactCache::memory(CacheConfig {
        scope,
        ..Default::default()
    })
}

async fn ask(
    cache: &ExactCache,
    origin: &Origin,
    tenant: &str,
    r: breakwater::types::ChatRequest,
) -> (Arc<breakwater::types::ChatResponse>, CacheOutcome) {
    let o = origin.clone();
    answer(
        cache,
        &Coalescer::new(),
        tenant,
        "fast",
        ModelCacheConfig::default(),
        r,
        CacheControl::default(),
        move |r| o.call(r),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn second_identical_request_hits() {
    let c = cache(CacheScope::Tenant);
    let o = Origin::default();
    let (a, out1) = ask(&c, &o, "team-a", req("hi")).await;
    let (b, out2) = ask(&c, &o, "team-a", req("hi")).await;
    assert_eq!((out1, out2), (CacheOutcome::Miss, CacheOutcome::Hit));
    assert_eq!(a, b);
    assert_eq!(o.calls(), 1);
    let s = c.stats();
    assert_eq!((s.l1_hits, s.misses, s.stores), (1, 1, 1));
}

#[tokio::test]
async fn tenants_never_share_unless_scope_is_shared() {
    let c = cache(CacheScope::Tenant);
    let o = Origin::default();
    ask(&c, &o, "team-a", req("hi")).await;
    let (_, out) = ask(&c, &o, "team-b", req("hi")).await;
    assert_eq!(out, CacheOutcome::Miss);
    assert_eq!(o.calls(), 2);

    let shared = cache(CacheScope::Shared);
    let o = Origin::default();
    ask(&shared, &o, "team-a", req("hi")).await;
    let (_, out) = ask(&shared, &o, "team-b", req("hi")).await;
    assert_eq!(out, CacheOutcome::Hit);
    assert_eq!(o.calls(), 1);
}

fn with_tool(schema: serde_json::Value) -> breakwater::types::ChatRequest {
    let mut r = req("weather?");
    r.tools = Some(vec![Tool::function("get_weather", "the weather", schema)]);
    r
}

#[tokio::test]
async fn changed_parameters_miss_and_key_order_hits() {
    let c = cache(CacheScope::Tenant);
    let o = Origin::default();
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}});
    ask(&c, &o, "t", with_tool(schema)).await;
    assert_eq!(o.calls(), 1);

    // Same schema, keys in another order: a hit.
    let reordered: serde_json::Value =
        serde_json::from_str(r#"{"properties":{"days":{"type":"integer"},"city":{"type":"string"}},"type":"object"}"#)
            .unwrap();
    let (_, out) = ask(&c, &o, "t", with_tool(reordered)).await;
    assert_eq!(out, CacheOutcome::Hit);

    // A changed tool schema, a changed temperature, a response schema: misses.
    let (_, out) = ask(&c, &o, "t", with_tool(json!({"type": "object"}))).await;
    assert_eq!(out, CacheOutcome::Miss);
    let mut seeded = with_tool(json!({"type": "object"}));
    seeded.seed = Some(3);
    let (_, out) = ask(&c, &o, "t", seeded).await;
    assert_eq!(out, CacheOutcome::Miss);
    let mut formatted = with_tool(json!({"type": "object"}));
    formatted.response_format = Some(
        serde_json::from_value(
            json!({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}),
        )
        .unwrap(),
    );
    let (_, out) = ask(&c, &o, "t", formatted).await;
    assert_eq!(out, CacheOutcome::Miss);
    assert_eq!(o.calls(), 4);

    // Temperature other than 0 is not cached at all by default.
    let mut warm = req("weather?");
    warm.temperature = Some(0.7);
    let (_, out) = ask(&c, &o, "t", warm.clone()).await;
    assert_eq!(out, CacheOutcome::Bypass);
}

#[tokio::test]
async fn stream_and_non_stream_share_entries() {
    let c = cache(CacheScope::Tenant);
    let cfg = ModelCacheConfig::default();
    // A streamed miss, stored as it completes...
    let mut streamed = req("hi");
    streamed.stream = Some(true);
    let key = c.key_for("t", "fast", &streamed).await;
    let upstream = response_to_chunks(&response("streamed answer"), 3, true);
    let s = c.store_stream(
        &key,
        &cfg,
        futures::stream::iter(upstream.clone().into_iter().map(Ok)).boxed(),
    );
    let passed: Vec<ChatChunk> = s.map(|c| c.unwrap()).collect().await;
    assert_eq!(passed, upstream, "the tee passes chunks untouched");
    // ...answers the non-stream request.
    let key2 = c.key_for("t", "fast", &req("hi")).await;
    assert_eq!(key, key2);
    let hit = c.lookup(&key2).await.expect("stored by the stream");
    assert_eq!(hit.response.text(), "streamed answer");
    // And a hit replays as a proper stream.
    let chunks: Vec<ChatChunk> = replay(&hit, true).map(|c| c.unwrap()).collect().await;
    let mut a = StreamAssembler::new();
    chunks.iter().for_each(|c| a.push(c));
    assert!(a.is_complete());
    assert_eq!(a.finish().text(), "streamed answer");
    assert!(chunks.last().and_then(|c| c.usage.as_ref()).is_some());
}

#[tokio::test]
async fn broken_or_cut_streams_are_not_stored() {
    let c = cache(CacheScope::Tenant);
    let cfg = ModelCacheConfig::default();
    let key = c.key_for("t", "fast", &req("cut")).await;
    let upstream = response_to_chunks(&response("partial"), 3, false);
    // Ends before the finish chunk.
    let cut = upstream[..upstream.len() - 1].to_vec();
    let s = c.store_stream(&key, &cfg, futures::stream::iter(cut.into_iter().map(Ok)).boxed());
    let _: Vec<_> = s.collect().await;
    assert!(c.lookup(&key).await.is_none());
    // Complete chunks, then an error item.
    let mut items: Vec<breakwater::Result<ChatChunk>> = upstream.into_iter().map(Ok).collect();
    items.push(Err(breakwater::Error::new(breakwater::ErrorKind::ServerError, "boom")));
    let s = c.store_stream(&key, &cfg, futures::stream::iter(items).boxed());
    let got: Vec<_> = s.collect().await;
    assert!(got.last().is_some_and(|r| r.is_err()), "the error reaches the caller");
    assert!(c.lookup(&key).await.is_none());
    // Dropped half-way.
    let upstream = response_to_chunks(&response("dropped"), 3, false);
    let mut s = c.store_stream(&key, &cfg, futures::stream::iter(upstream.into_iter().map(Ok)).boxed());
    let _ = s.next().await;
    drop(s);
    assert!(c.lookup(&key).await.is_none());
}

#[tokio::test]
async fn what_is_not_stored() {
    let c = ExactCache::memory(CacheConfig {
        max_entry_bytes: 2_000,
        ..Default::default()
    });
    let cfg = ModelCacheConfig::default();
    let key = c.key_for("t", "fast", &req("x")).await;
    let mut tools = response("");
    tools.choices[0].finish_reason = Some(FinishReason::ToolCalls);
    assert_eq!(c.store(&key, Arc::new(tools), &cfg).await, Err(NotStored::AwaitsTools));
    let mut cut = response("abc");
    cut.choices[0].finish_reason = Some(FinishReason::Length);
    assert_eq!(c.store(&key, Arc::new(cut), &cfg).await, Err(NotStored::Truncated));
    let big = response(&"x".repeat(5_000));
    assert_eq!(c.store(&key, Arc::new(big), &cfg).await, Err(NotStored::TooLarge));
    assert!(c.lookup(&key).await.is_none());
    assert_eq!(c.stats().not_stored, 3);
}

#[tokio::test]
async fn cache_control_no_cache_refreshes_and_no_store_bypasses() {
    let c = cache(CacheScope::Tenant);
    let o = Origin::default();
    let flights = Coalescer::new();
    let go = |cc: &str| {
        let o = o.clone();
        let c = c.clone();
        let flights = flights.clone();
        let cc = CacheControl::parse(cc);
        async move {
            answer(
                &c,
                &flights,
                "t",
                "fast",
                ModelCacheConfig::default(),
                req("hi"),
                cc,
                move |r| o.call(r),
            )
            .await
            .unwrap()
            .1
        }
    };
    assert_eq!(go("").await, CacheOutcome::Miss);
    assert_eq!(go("no-cache").await, CacheOutcome::Bypass);
    assert_eq!(o.calls(), 2, "no-cache skipped the lookup");
    assert_eq!(go("no-store").await, CacheOutcome::Bypass);
    assert_eq!(o.calls(), 3);
    assert_eq!(go("").await, CacheOutcome::Hit);
    assert_eq!(o.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn ttl_then_grace_then_gone() {
    let c = cache(CacheScope::Tenant);
    let cfg = ModelCacheConfig {
        ttl_s: 10,
        stale_s: 20,
        ..Default::default()
    };
    let key = c.key_for("t", "fast", &req("x")).await;
    c.store(&key, Arc::new(response("v")), &cfg).await.unwrap();
    tokio::time::advance(Duration::from_secs(9)).await;
    let hit = c.lookup(&key).await.expect("fresh");
    assert_eq!(hit.outcome, CacheOutcome::Hit);
    assert_eq!(hit.age, Duration::from_secs(9));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(c.lookup(&key).await.is_none(), "past the TTL a normal lookup misses");
    let stale = c.lookup_stale(&key).await.expect("within grace");
    assert_eq!(stale.outcome, CacheOutcome::Stale);
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(c.lookup_stale(&key).await.is_none(), "past the grace period it is gone");
    assert_eq!(c.stats().stale_hits, 1);
}

#[tokio::test(start_paused = true)]
async fn stale_answer_when_every_route_fails() {
    let c = cache(CacheScope::Tenant);
    let cfg = ModelCacheConfig {
        ttl_s: 1,
        ..Default::default()
    };
    let o = Origin::default();
    let oc = o.clone();
    let flights = Coalescer::new();
    answer(
        &c,
        &flights,
        "t",
        "fast",
        cfg,
        req("hi"),
        CacheControl::default(),
        move |r| oc.call(r),
    )
    .await
    .unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    let (resp, out) = answer(
        &c,
        &flights,
        "t",
        "fast",
        cfg,
        req("hi"),
        CacheControl::default(),
        |_| async { Err(breakwater::Error::new(breakwater::ErrorKind::Overloaded, "down")) },
    )
    .await
    .unwrap();
    assert_eq!(out, CacheOutcome::Stale);
    assert_eq!(resp.text(), "answer to hi");
}

#[tokio::test]
async fn invalidation_by_key_alias_tenant_and_flush() {
    let c = cache(CacheScope::Tenant);
    let cfg = ModelCacheConfig::default();
    let put = |tenant: &'static str, alias: &'static str| {
        let c = c.clone();
        async move {
            let key = c.key_for(tenant, alias, &req("q")).await;
            c.store(&key, Arc::new(response("a")), &cfg).await.unwrap();
        }
    };
    let present = |tenant: &'static str, alias: &'static str| {
        let c = c.clone();
        async move {
            let key = c.key_for(tenant, alias, &req("q")).await;
            c.lookup(&key).await.is_some()
        }
    };
    put("a", "fast").await;
    let key = c.key_for("a", "fast", &req("q")).await;
    c.invalidate_key(&key).await;
    assert!(!present("a", "fast").await);

    put("a", "fast").await;
    put("b", "fast").await;
    put("a", "slow").await;
    c.invalidate_model("fast").await;
    assert!(!present("a", "fast").await && !present("b", "fast").await);
    assert!(present("a", "slow").await);

    put("a", "fast").await;
    put("b", "fast").await;
    c.invalidate_tenant("a").await;
    assert!(!present("a", "fast").await && !present("a", "slow").await);
    assert!(present("b", "fast").await);

    c.flush_all().await;
    assert!(!present("b", "fast").await);
    assert_eq!(c.stats().invalidations, 4);
}

#[tokio::test]
async fn stats_count_tokens_and_money_saved() {
    let mut prices = breakwater::cache::Prices::new();
    prices.insert(
        "gpt-4o-mini".into(),
        Price {
            input: 1.0,
            output: 2.0,
        },
    );
    let c = ExactCache::builder(CacheConfig::default())
        .prices(move |m| prices.get(m).copied())
        .build();
    let key = c.key_for("t", "fast", &req("x")).await;
    c.store(&key, Arc::new(response("v")), &ModelCacheConfig::default())
        .await
        .unwrap();
    for _ in 0..2 {
        let hit = c.lookup(&key).await.unwrap();
        assert_eq!(hit.tier, Tier::L1);
    }
    c.sync().await;
    let s = c.stats();
    assert_eq!(s.tokens_saved, 300);
    // 2 × (100 × $1 + 50 × $2) / 1M
    assert!((s.usd_saved - 0.0004).abs() < 1e-12, "{}", s.usd_saved);
    assert_eq!(s.entries, 1);
    assert!(s.bytes > 100);
}

#[test]
fn outcome_header_values() {
    let all = [
        CacheOutcome::Hit,
        CacheOutcome::Semantic,
        CacheOutcome::Stale,
        CacheOutcome::Miss,
        CacheOutcome::Bypass,
    ];
    let names: Vec<&str> = all.iter().map(|o| o.as_str()).collect();
    assert_eq!(names, ["hit", "semantic", "stale", "miss", "bypass"]);
}
