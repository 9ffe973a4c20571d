//! Idempotency keys: replay, concurrent duplicates wait, a different body is
//! rejected, failures release the key; in memory and across two instances
//! sharing a real `redis-server`.

mod cache_support;

use breakwater::cache::Fingerprint;
use breakwater::idempotency::{Begin, IdempotencyConfig, IdempotencyStore};
use breakwater::redis_store::{RedisConfig, RedisStore};
use breakwater::types::ChatResponse;
use breakwater::{Error, ErrorKind};
use breakwater_testkit::RedisServer;
use cache_support::{req, response, until};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

fn fp(text: &str) -> Fingerprint {
    Fingerprint::of("fast", &req(text))
}

fn memory() -> IdempotencyStore {
    IdempotencyStore::new(IdempotencyConfig::default(), None)
}

async fn ok(text: &str) -> breakwater::Result<Arc<ChatResponse>> {
    Ok(Arc::new(response(text)))
}

#[tokio::test]
async fn repeated_key_replays_the_first_result() {
    let s = memory();
    let (first, replayed) = s.run("t", "k1", fp("a"), None, || ok("first")).await.unwrap();
    assert!(!replayed);
    let (again, replayed) = s
        .run("t", "k1", fp("a"), None, || async { panic!("must not run") })
        .await
        .unwrap();
    assert!(replayed);
    assert_eq!(first, again);
    // Another tenant's identical key is another key.
    let (_, replayed) = s.run("u", "k1", fp("a"), None, || ok("other")).await.unwrap();
    assert!(!replayed);
}

#[tokio::test]
async fn a_different_body_under_the_same_key_is_rejected() {
    let s = memory();
    s.run("t", "k", fp("a"), None, || ok("x")).await.unwrap();
    let e = s.run("t", "k", fp("b"), None, || ok("y")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert_eq!(e.code.as_deref(), Some("idempotency_key_reused"));
    assert_eq!(s.stats().conflicts, 1);
    let e = s.run("t", "", fp("a"), None, || ok("y")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_wait_for_the_first() {
    let s = memory();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (s, calls, gate) = (s.clone(), calls.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            s.run("t", "dup", fp("a"), None, || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                ok("only once").await
            })
            .await
        }));
    }
    until(|| s.stats().waits == 9).await;
    // A different body while the first is in progress: rejected at once.
    let e = s.begin("t", "dup", fp("b"), None).await.unwrap_err();
    assert_eq!(e.code.as_deref(), Some("idempotency_key_reused"));
    gate.notify_one();
    let mut replays = 0;
    for t in tasks {
        let (resp, replayed) = t.await.unwrap().unwrap();
        assert_eq!(resp.text(), "only once");
        replays += usize::from(replayed);
    }
    assert_eq!((calls.load(Ordering::SeqCst), replays), (1, 9));
}

#[tokio::test]
async fn a_failed_first_attempt_releases_the_key() {
    let s = memory();
    let e = s
        .run("t", "k", fp("a"), None, || async {
            Err(Error::new(ErrorKind::ServerError, "upstream 500"))
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ServerError);
    let (resp, replayed) = s.run("t", "k", fp("a"), None, || ok("retried")).await.unwrap();
    assert!(!replayed);
    assert_eq!(resp.text(), "retried");
    // Dropping a guard (the caller went away) releases it too.
    match s.begin("t", "k2", fp("a"), None).await.unwrap() {
        Begin::Proceed(g) => drop(g),
        Begin::Replay(_) => panic!("fresh key"),
    }
    assert!(matches!(
        s.begin("t", "k2", fp("a"), None).await.unwrap(),
        Begin::Proceed(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_duplicate_gives_up_at_its_deadline() {
    let s = memory();
    let _first = match s.begin("t", "slow", fp("a"), None).await.unwrap() {
        Begin::Proceed(g) => g,
        Begin::Replay(_) => panic!("fresh key"),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let e = s.begin("t", "slow", fp("a"), Some(deadline)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert_eq!(e.code.as_deref(), Some("idempotency_key_in_progress"));
}

#[tokio::test(start_paused = true)]
async fn records_expire_after_their_ttl() {
    let s = IdempotencyStore::new(
        IdempotencyConfig {
            ttl_s: 60,
            ..Default::default()
        },
        None,
    );
    s.run("t", "k", fp("a"), None, || ok("first")).await.unwrap();
    tokio::time::advance(Duration::from_secs(59)).await;
    assert!(s.run("t", "k", fp("a"), None, || ok("second")).await.unwrap().1);
    tokio::time::advance(Duration::from_secs(2)).await;
    let (resp, replayed) = s.run("t", "k", fp("a"), None, || ok("second")).await.unwrap();
    assert!(!replayed);
    assert_eq!(resp.text(), "second");
}

fn instance(server: &RedisServer) -> IdempotencyStore {
    let store = RedisStore::connect(&RedisConfig::single(server.url())).unwrap();
    IdempotencyStore::new(IdempotencyConfig::default(), Some(store))
}

#[tokio::test]
async fn two_instances_share_keys_through_redis() {
    let server = RedisServer::start().await.unwrap();
    let a = instance(&server);
    let b = instance(&server);

    let guard = match a.begin("t", "order-1", fp("a"), None).await.unwrap() {
        Begin::Proceed(g) => g,
        Begin::Replay(_) => panic!("fresh key"),
    };
    // A duplicate on the other instance waits for the first...
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            b.run("t", "order-1", fp("a"), None, || async { panic!("must wait") })
                .await
        })
    };
    // ...and a different body there is rejected while it runs.
    let e = b.begin("t", "order-1", fp("b"), None).await.unwrap_err();
    assert_eq!(e.code.as_deref(), Some("idempotency_key_reused"));
    until(|| b.stats().waits >= 1).await;
    guard.complete(Arc::new(response("done on a"))).await;
    let (resp, replayed) = waiter.await.unwrap().unwrap();
    assert!(replayed);
    assert_eq!(resp.text(), "done on a");
    assert!(b.stats().waits >= 1);

    // A third instance, started later, replays from Redis.
    let c = instance(&server);
    let (resp, replayed) = c.run("t", "order-1", fp("a"), None, || ok("nope")).await.unwrap();
    assert!(replayed);
    assert_eq!(resp.text(), "done on a");
    let e = c.run("t", "order-1", fp("b"), None, || ok("nope")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidRequest);

    // A failure on one instance releases the key for the other.
    let e = a
        .run("t", "order-2", fp("a"), None, || async {
            Err(Error::new(ErrorKind::Timeout, "upstream slow"))
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout);
    let (resp, replayed) = b.run("t", "order-2", fp("a"), None, || ok("second try")).await.unwrap();
    assert!(!replayed);
    assert_eq!(resp.text(), "second try");
    assert_eq!(
        a.stats().redis_errors + b.stats().redis_errors + c.stats().redis_errors,
        0
    );
}

#[tokio::test]
async fn redis_down_enforces_keys_locally() {
    let mut server = RedisServer::start().await.unwrap();
    let a = instance(&server);
    server.kill();
    let (_, replayed) = a.run("t", "k", fp("a"), None, || ok("first")).await.unwrap();
    assert!(!replayed);
    let (_, replayed) = a.run("t", "k", fp("a"), None, || ok("second")).await.unwrap();
    assert!(replayed, "the local record still replays");
    assert!(a.stats().redis_errors > 0);
}

#[tokio::test]
async fn streamed_answers_are_recorded_when_complete() {
    use breakwater::idempotency::record_stream;
    use breakwater::types::response_to_chunks;
    use futures::StreamExt;
    let s = memory();
    let chunks = response_to_chunks(&response("streamed"), 3, false);
    // A cut stream releases the key.
    let Begin::Proceed(g) = s.begin("t", "st", fp("a"), None).await.unwrap() else {
        panic!("fresh key")
    };
    let head: Vec<breakwater::Result<_>> = chunks.iter().take(2).cloned().map(Ok).collect();
    let cut = futures::stream::iter(head).boxed();
    let _: Vec<_> = record_stream(g, cut).collect().await;
    // A complete one records it.
    let Begin::Proceed(g) = s.begin("t", "st", fp("a"), None).await.unwrap() else {
        panic!("the cut stream released the key")
    };
    let full = futures::stream::iter(chunks.clone().into_iter().map(Ok)).boxed();
    let got: Vec<_> = record_stream(g, full).map(|c| c.unwrap()).collect().await;
    assert_eq!(got, chunks);
    match s.begin("t", "st", fp("a"), None).await.unwrap() {
        Begin::Replay(r) => assert_eq!(r.text(), "streamed"),
        Begin::Proceed(_) => panic!("should replay"),
    }
}
