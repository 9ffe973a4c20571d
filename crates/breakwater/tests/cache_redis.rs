//! The Redis tier against a real `redis-server`: sharing between instances,
//! promotion to memory, namespaces across instances, expiry, and Redis
//! dying mid-test (the cache fails open) and coming back.

mod cache_support;

use breakwater::cache::{CacheConfig, CacheControl, CacheOutcome, Clock, ExactCache, ModelCacheConfig, Tier};
use breakwater::coalesce::Coalescer;
use breakwater::redis_store::{RedisConfig, RedisStore};
use breakwater_testkit::RedisServer;
use cache_support::{Origin, answer, req, response};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn instance(server: &RedisServer, clock: Option<Clock>) -> ExactCache {
    let store = RedisStore::connect(&RedisConfig::single(server.url())).unwrap();
    let cfg = CacheConfig {
        // Always re-read namespace generations, so another instance's
        // invalidation is seen at once in these tests.
        namespace_refresh_ms: 0,
        ..Default::default()
    };
    let b = ExactCache::builder(cfg).redis(store);
    match clock {
        Some(c) => b.clock(c).build(),
        None => b.build(),
    }
}

#[tokio::test]
async fn instances_share_entries_through_redis() {
    let server = RedisServer::start().await.unwrap();
    let a = instance(&server, None);
    let b = instance(&server, None);
    let key = a.key_for("t", "fast", &req("shared")).await;
    a.store(&key, Arc::new(response("from a")), &ModelCacheConfig::default())
        .await
        .unwrap();
    a.sync().await;
    let hit = b.lookup(&b.key_for("t", "fast", &req("shared")).await).await.unwrap();
    assert_eq!((hit.tier, hit.response.text().as_str()), (Tier::L2, "from a"));
    // Promoted: the next hit is from memory.
    assert_eq!(b.lookup(&key).await.unwrap().tier, Tier::L1);
    assert_eq!((b.stats().l2_hits, b.stats().l1_hits), (1, 1));

    // An invalidation on one instance reaches the other.
    a.invalidate_model("fast").await;
    let key2 = b.key_for("t", "fast", &req("shared")).await;
    assert_ne!(key, key2);
    assert!(b.lookup(&key2).await.is_none());
    // Other tenants under another alias are untouched.
    let other = a.key_for("t", "slow", &req("x")).await;
    a.store(&other, Arc::new(response("slow")), &ModelCacheConfig::default())
        .await
        .unwrap();
    a.sync().await;
    a.invalidate_tenant("someone-else").await;
    assert!(b.lookup(&b.key_for("t", "slow", &req("x")).await).await.is_some());
    a.flush_all().await;
    assert!(b.lookup(&b.key_for("t", "slow", &req("x")).await).await.is_none());
    assert_eq!(a.stats().l2_errors + b.stats().l2_errors, 0);
}

#[tokio::test]
async fn l2_entries_follow_their_own_lifetimes() {
    let server = RedisServer::start().await.unwrap();
    let (clock, now) = Clock::manual(1_000_000);
    let a = instance(&server, Some(clock.clone()));
    let b = instance(&server, Some(clock));
    let cfg = ModelCacheConfig {
        ttl_s: 10,
        stale_s: 20,
        ..Default::default()
    };
    let key = a.key_for("t", "fast", &req("aging")).await;
    a.store(&key, Arc::new(response("old")), &cfg).await.unwrap();
    a.sync().await;
    now.fetch_add(11_000, Ordering::SeqCst);
    assert!(b.lookup(&key).await.is_none(), "past its TTL");
    let stale = b.lookup_stale(&key).await.unwrap();
    assert_eq!((stale.tier, stale.outcome), (Tier::L2, CacheOutcome::Stale));
    now.fetch_add(20_000, Ordering::SeqCst);
    assert!(b.lookup_stale(&key).await.is_none(), "past its grace period");
}

#[tokio::test]
async fn redis_dying_mid_test_fails_open_then_recovers() {
    let mut server = RedisServer::start().await.unwrap();
    let a = instance(&server, None);
    let b = instance(&server, None);
    let flights = Coalescer::new();
    let origin = Origin::default();
    let ask = |cache: ExactCache, text: String| {
        let o = origin.clone();
        let flights = flights.clone();
        async move {
            answer(
                &cache,
                &flights,
                "t",
                "fast",
                ModelCacheConfig::default(),
                req(&text),
                CacheControl::default(),
                move |r| o.call(r),
            )
            .await
        }
    };
    let (_, out) = ask(a.clone(), "before".into()).await.unwrap();
    assert_eq!(out, CacheOutcome::Miss);
    a.sync().await;
    assert_eq!(ask(b.clone(), "before".into()).await.unwrap().1, CacheOutcome::Hit);

    server.kill();
    // Every request still gets an answer: misses go to the origin.
    for i in 0..5 {
        let (resp, out) = ask(a.clone(), format!("during {i}")).await.unwrap();
        assert_eq!(out, CacheOutcome::Miss);
        assert_eq!(resp.text(), format!("answer to during {i}"));
    }
    // What instance a had in memory still answers from memory.
    assert_eq!(ask(a.clone(), "during 0".into()).await.unwrap().1, CacheOutcome::Hit);
    a.sync().await;
    assert!(a.stats().l2_errors > 0, "L2 failures are counted: {:?}", a.stats());
    let calls_during = origin.calls();
    assert_eq!(calls_during, 6);

    server.restart().await.unwrap();
    // The Redis handle rests for a moment after failures; poll (real time:
    // a real process) until the tier works again.
    let give_up = std::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0;
    loop {
        n += 1;
        let text = format!("after {n}");
        ask(a.clone(), text.clone()).await.unwrap();
        a.sync().await;
        let hit = b.lookup(&b.key_for("t", "fast", &req(&text)).await).await;
        if hit.is_some_and(|h| h.tier == Tier::L2) {
            break;
        }
        assert!(std::time::Instant::now() < give_up, "L2 never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
