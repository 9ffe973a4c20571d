//! Coalescing: identical in-flight requests share one upstream call, for
//! complete answers and streams; cancellation follows the waiters.

mod cache_support;

use breakwater::cache::{CacheConfig, CacheControl, CacheKey, CacheOutcome, ExactCache, ModelCacheConfig};
use breakwater::coalesce::{Coalescer, StreamCoalescer};
use breakwater::provider::ChatStream;
use breakwater::types::{ChatChunk, ChatResponse, response_to_chunks};
use breakwater::{Error, ErrorKind};
use cache_support::{answer, req, response, until};
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc};

fn key(n: u8) -> CacheKey {
    CacheKey([n; 32])
}

/// Sets a flag when dropped: tells whether an upstream call was cancelled.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_identical_requests_make_one_origin_call() {
    let cache = ExactCache::memory(CacheConfig::default());
    let flights: Coalescer<Arc<ChatResponse>> = Coalescer::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (cache, flights, calls, gate) = (cache.clone(), flights.clone(), calls.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            answer(
                &cache,
                &flights,
                "t",
                "fast",
                ModelCacheConfig::default(),
                req("hi"),
                CacheControl::default(),
                move |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok(response("the one answer"))
                },
            )
            .await
        }));
    }
    // Hold the origin until every request has joined the flight.
    until(|| flights.stats().followers + flights.stats().leaders == 100).await;
    gate.notify_one();
    let mut outcomes = Vec::new();
    for t in tasks {
        let (resp, out) = t.await.unwrap().unwrap();
        assert_eq!(resp.text(), "the one answer");
        outcomes.push(out);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(outcomes.iter().all(|o| *o == CacheOutcome::Miss));
    assert_eq!(flights.stats().in_flight, 0);
    // And the next one is a cache hit, not a new flight.
    let (_, out) = answer(
        &cache,
        &flights,
        "t",
        "fast",
        ModelCacheConfig::default(),
        req("hi"),
        CacheControl::default(),
        |_| async { Err(Error::new(ErrorKind::ServerError, "must not be called")) },
    )
    .await
    .unwrap();
    assert_eq!(out, CacheOutcome::Hit);
}

#[tokio::test]
async fn errors_are_shared_too() {
    let flights: Coalescer<Arc<ChatResponse>> = Coalescer::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (flights, calls, gate) = (flights.clone(), calls.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            flights
                .run(key(1), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Err(Error::new(ErrorKind::RateLimited, "slow down"))
                })
                .await
        }));
    }
    until(|| flights.stats().followers == 9).await;
    gate.notify_one();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err().kind, ErrorKind::RateLimited);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn different_keys_do_not_share() {
    let flights: Coalescer<u32> = Coalescer::new();
    let (a, b) = tokio::join!(
        flights.run(key(1), || async { Ok(1) }),
        flights.run(key(2), || async { Ok(2) })
    );
    assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    assert_eq!(flights.stats().leaders, 2);
}

#[tokio::test]
async fn leader_cancelled_call_goes_on_for_the_others() {
    let flights: Coalescer<u32> = Coalescer::new();
    let gate = Arc::new(Notify::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let start = |flights: Coalescer<u32>, gate: Arc<Notify>, calls: Arc<AtomicUsize>| {
        tokio::spawn(async move {
            flights
                .run(key(3), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok(42)
                })
                .await
        })
    };
    let leader = start(flights.clone(), gate.clone(), calls.clone());
    until(|| flights.stats().leaders == 1).await;
    let follower = start(flights.clone(), gate.clone(), calls.clone());
    until(|| flights.stats().followers == 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    gate.notify_one();
    assert_eq!(follower.await.unwrap().unwrap(), 42);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn call_is_cancelled_when_the_last_waiter_leaves() {
    let flights: Coalescer<u32> = Coalescer::new();
    let cancelled = Arc::new(AtomicBool::new(false));
    let flag = cancelled.clone();
    let waiter = {
        let flights = flights.clone();
        tokio::spawn(async move {
            flights
                .run(key(4), move || async move {
                    let _guard = DropFlag(flag);
                    std::future::pending::<()>().await;
                    Ok(0)
                })
                .await
        })
    };
    until(|| flights.stats().in_flight == 1).await;
    tokio::task::yield_now().await;
    waiter.abort();
    let _ = waiter.await;
    until(|| cancelled.load(Ordering::SeqCst)).await;
    assert_eq!(flights.stats().in_flight, 0);
    // A new request starts a new call.
    assert_eq!(flights.run(key(4), || async { Ok(7) }).await.unwrap(), 7);
}

/// An upstream stream fed by the test through a channel.
fn channel_stream(rx: mpsc::UnboundedReceiver<breakwater::Result<ChatChunk>>, dropped: Arc<AtomicBool>) -> ChatStream {
    futures::stream::unfold((rx, DropFlag(dropped)), |(mut rx, flag)| async move {
        rx.recv().await.map(|item| (item, (rx, flag)))
    })
    .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_identical_streams_share_one_upstream_stream() {
    let flights = StreamCoalescer::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let upstream_rx = Arc::new(Mutex::new(Some(rx)));
    let dropped = Arc::new(AtomicBool::new(false));
    let chunks = response_to_chunks(&response("a fairly long streamed answer"), 4, true);
    assert!(chunks.len() > 6);

    let spawn_client = || {
        let (flights, calls, upstream_rx, dropped) =
            (flights.clone(), calls.clone(), upstream_rx.clone(), dropped.clone());
        tokio::spawn(async move {
            let s = flights
                .run_stream(key(5), move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let rx = upstream_rx.lock().unwrap().take().expect("only one upstream call");
                    Ok(channel_stream(rx, dropped))
                })
                .await?;
            Ok::<Vec<ChatChunk>, Error>(s.map(|c| c.unwrap()).collect().await)
        })
    };
    let mut clients: Vec<_> = (0..50).map(|_| spawn_client()).collect();
    until(|| flights.stats().leaders + flights.stats().followers == 50).await;
    // Half the answer flows, then 50 late joiners arrive.
    let half = chunks.len() / 2;
    for c in &chunks[..half] {
        tx.send(Ok(c.clone())).unwrap();
    }
    clients.extend((0..50).map(|_| spawn_client()));
    until(|| flights.stats().leaders + flights.stats().followers == 100).await;
    for c in &chunks[half..] {
        tx.send(Ok(c.clone())).unwrap();
    }
    drop(tx);
    for c in clients {
        assert_eq!(c.await.unwrap().unwrap(), chunks, "every client gets the full sequence");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(flights.stats().in_flight, 0);
}

#[tokio::test]
async fn stream_start_error_is_every_waiters_error() {
    let flights = StreamCoalescer::new();
    let gate = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (flights, gate) = (flights.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            flights
                .run_stream(key(6), move || async move {
                    gate.notified().await;
                    Err(Error::new(ErrorKind::Overloaded, "busy"))
                })
                .await
                .map(|_| ())
        }));
    }
    until(|| flights.stats().followers == 4).await;
    gate.notify_one();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err().kind, ErrorKind::Overloaded);
    }
}

#[tokio::test]
async fn stream_upstream_is_cancelled_when_every_reader_leaves() {
    let flights = StreamCoalescer::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let chunks = response_to_chunks(&response("never finished"), 4, false);
    tx.send(Ok(chunks[0].clone())).unwrap();
    let mut a = flights
        .run_stream(key(7), move || async move { Ok(channel_stream(rx, d)) })
        .await
        .unwrap();
    let mut b = flights
        .run_stream(key(7), || async {
            Err(Error::new(ErrorKind::ServerError, "not called"))
        })
        .await
        .unwrap();
    assert_eq!(a.next().await.unwrap().unwrap(), chunks[0]);
    assert_eq!(b.next().await.unwrap().unwrap(), chunks[0]);
    // The first reader leaves: the upstream goes on for the second.
    drop(a);
    tx.send(Ok(chunks[1].clone())).unwrap();
    assert_eq!(b.next().await.unwrap().unwrap(), chunks[1]);
    assert!(!dropped.load(Ordering::SeqCst));
    // The last reader leaves: the upstream stream is dropped.
    drop(b);
    until(|| dropped.load(Ordering::SeqCst)).await;
    assert_eq!(flights.stats().in_flight, 0);
}

#[tokio::test]
async fn coalesced_streams_store_once_through_the_cache() {
    let cache = ExactCache::memory(CacheConfig::default());
    let flights = StreamCoalescer::new();
    let cfg = ModelCacheConfig::default();
    let mut r = req("stream me");
    r.stream = Some(true);
    let key = cache.key_for("t", "fast", &r).await;
    let chunks = response_to_chunks(&response("streamed once"), 5, false);
    let c2 = cache.clone();
    let s = flights
        .run_stream(key, move || async move {
            let upstream = futures::stream::iter(chunks.into_iter().map(Ok)).boxed();
            Ok(c2.store_stream(&key, &cfg, upstream))
        })
        .await
        .unwrap();
    let got: Vec<_> = s.collect().await;
    assert!(got.iter().all(Result::is_ok));
    let hit = cache.lookup(&cache.key_for("t", "fast", &req("stream me")).await).await;
    assert_eq!(hit.unwrap().response.text(), "streamed once");
}
