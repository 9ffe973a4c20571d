//! Scenario tests of the assembled client against simulators, on paused
//! time: retries, breakers, failover, hedging, stream integrity, stitching,
//! degradation, coalescing, idempotency, structured output.

use breakwater::cache::{CacheConfig, CacheControl, CacheOutcome, ExactCache, ModelCacheConfig};
use breakwater::client::{
    Client, ClientBuilder, ClientConfig, Degraded, HedgeAfter, HedgeConfig, ModelConfig, RequestOptions, TargetConfig,
};
use breakwater::error::{ErrorKind, TimeoutPhase};
use breakwater::idempotency::{IdempotencyConfig, IdempotencyStore};
use breakwater::policy::timeout::Timeouts;
use breakwater::route::Strategy;
use breakwater::simulator::{Fault, Faults, ScriptStep, Simulator, SimulatorConfig};
use breakwater::structured::Schema;
use breakwater::types::*;
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn timeouts() -> Timeouts {
    Timeouts {
        connect_ms: 1000,
        first_token_ms: 2000,
        idle_ms: 1000,
        total_ms: 3000,
    }
}

fn sim(name: &str, cfg: SimulatorConfig) -> Arc<Simulator> {
    Arc::new(Simulator::new(name, cfg).with_timeouts(timeouts()))
}

fn quick() -> SimulatorConfig {
    SimulatorConfig {
        latency_ms: 20,
        tokens_per_s: 500.0,
        ..Default::default()
    }
}

fn faults(f: Faults) -> SimulatorConfig {
    SimulatorConfig { faults: f, ..quick() }
}

fn two_targets(primary: &Arc<Simulator>, secondary: &Arc<Simulator>) -> ClientBuilder {
    Client::builder()
        .seed(7)
        .provider(primary.clone())
        .provider(secondary.clone())
        .model(
            "fast",
            ModelConfig::new(vec![
                TargetConfig::new("primary", "sim-1"),
                TargetConfig::new("secondary", "sim-1"),
            ]),
        )
}

fn opts(ms: u64) -> RequestOptions {
    RequestOptions {
        timeout: Some(Duration::from_millis(ms)),
        ..Default::default()
    }
}

fn step(fault: Option<Fault>) -> ScriptStep {
    ScriptStep {
        fault,
        reply: None,
        tool_call: None,
        latency_ms: None,
        retry_after_s: None,
    }
}

#[tokio::test(start_paused = true)]
async fn flaky_primary_healthy_secondary_all_succeed_within_deadline() {
    let primary = sim(
        "primary",
        faults(Faults {
            server_error: 0.1,
            rate_limited: 0.1,
            reset: 0.05,
            hang: 0.05,
            ..Default::default()
        }),
    );
    let secondary = sim("secondary", quick());
    let client = two_targets(&primary, &secondary).build().unwrap();
    let deadline = Duration::from_secs(10);
    let mut worst = Duration::ZERO;
    for i in 0..1000 {
        let t0 = Instant::now();
        let out = client
            .chat(
                ChatRequest::user("fast", format!("question {i}")),
                opts(deadline.as_millis() as u64),
            )
            .await
            .unwrap_or_else(|f| panic!("call {i} failed: {f}"));
        assert!(!out.response.text().is_empty());
        worst = worst.max(t0.elapsed());
    }
    assert!(worst <= deadline, "slowest call took {worst:?}");
    let (p, s) = (primary.engine().stats(), secondary.engine().stats());
    assert!(
        p.requests > 0 && s.requests > 0,
        "both used: {} / {}",
        p.requests,
        s.requests
    );
    assert_eq!(client.stats().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn retries_then_breaker_opens_then_calls_fail_fast() {
    let down = sim(
        "down",
        faults(Faults {
            server_error: 1.0,
            ..Default::default()
        }),
    );
    let client = Client::builder()
        .seed(1)
        .provider(down.clone())
        .model("only", ModelConfig::new(vec![TargetConfig::new("down", "sim-1")]))
        .active_probes(false)
        .build()
        .unwrap();
    // First request: 3 attempts (the default for server errors), all 500.
    let f = client
        .chat(ChatRequest::user("only", "a"), opts(30_000))
        .await
        .unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::ServerError);
    assert_eq!(f.meta.upstream_attempts(), 3);
    assert!(
        f.error.message.contains("down/sim-1: server_error (HTTP 500) ×3"),
        "{}",
        f.error.message
    );
    // The fifth consecutive failure trips the breaker (5 = the default).
    let _ = client.chat(ChatRequest::user("only", "b"), opts(30_000)).await;
    let calls = down.engine().stats().requests;
    assert_eq!(calls, 5, "the breaker opened after 5 consecutive failures");
    // Every target is out, so one request becomes a probe (it fails and
    // re-opens the breaker); the rest fail fast without reaching the upstream.
    let f = client
        .chat(ChatRequest::user("only", "probe"), opts(30_000))
        .await
        .unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::ServerError, "{}", f.error);
    assert_eq!(down.engine().stats().requests, calls + 1);
    for i in 0..50 {
        let t0 = Instant::now();
        let f = client
            .chat(ChatRequest::user("only", format!("c{i}")), opts(30_000))
            .await
            .unwrap_err();
        assert_eq!(f.error.kind, ErrorKind::CircuitOpen, "{}", f.error);
        assert_eq!(t0.elapsed(), Duration::ZERO, "no time passes: nothing was awaited");
    }
    assert_eq!(
        down.engine().stats().requests,
        calls + 1,
        "no call reached the upstream"
    );
    let t = &client.targets()[0];
    assert_eq!(t.breaker.state.as_str(), "open");
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_bounds_amplification_under_total_failure() {
    let down = sim(
        "down",
        SimulatorConfig {
            latency_ms: 1,
            faults: Faults {
                server_error: 1.0,
                ..Default::default()
            },
            ..quick()
        },
    );
    let cfg = ClientConfig {
        // Keep the breaker out of it: only the budget limits retries here.
        breaker: breakwater::policy::breaker::BreakerConfig {
            consecutive_failures: u32::MAX,
            min_calls: u32::MAX,
            ..Default::default()
        },
        ..Default::default()
    };
    let client = Client::builder()
        .seed(2)
        .config(cfg)
        .provider(down.clone())
        .model("m", ModelConfig::new(vec![TargetConfig::new("down", "sim-1")]))
        .build()
        .unwrap();
    // A burst of 1000 concurrent requests, all failing.
    let n = 1000u64;
    let calls = (0..n).map(|i| client.chat(ChatRequest::user("m", format!("{i}")), opts(30_000)));
    let results = futures::future::join_all(calls).await;
    assert!(results.iter().all(|r| r.is_err()));
    let calls = down.engine().stats().requests;
    // Without a budget: 3 attempts each = 3000. With it: ≤ (1 + 0.2) × n plus
    // the floor of 10 retries a second over the 10 s window.
    assert!(
        calls > n && calls <= n * 12 / 10 + 100,
        "{calls} upstream calls for {n} requests"
    );
}

#[tokio::test(start_paused = true)]
async fn primary_down_secondary_serves_and_primary_sees_only_probes() {
    let primary = sim(
        "primary",
        faults(Faults {
            server_error: 1.0,
            ..Default::default()
        }),
    );
    let secondary = sim("secondary", quick());
    let client = two_targets(&primary, &secondary).active_probes(false).build().unwrap();
    for i in 0..200 {
        let out = client
            .chat(ChatRequest::user("fast", format!("q{i}")), opts(10_000))
            .await
            .unwrap();
        assert_eq!(out.meta.target.as_deref(), Some("secondary/sim-1"));
        // Spread the calls over 100 s so the breaker's open period (30 s) passes.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let p = primary.engine().stats().requests;
    // 5 failures trip it; then one probe per open period (30 s, 60 s …).
    assert!(p <= 5 + 3, "primary saw {p} calls");
    assert_eq!(secondary.engine().stats().requests, 200);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_on_every_attempt() {
    let s = sim("one", quick());
    let client = Client::builder()
        .seed(1)
        .provider(s.clone())
        .model("m", ModelConfig::new(vec![TargetConfig::new("one", "sim-1")]))
        .build()
        .unwrap();
    let limited = |secs| ScriptStep {
        retry_after_s: Some(secs),
        ..step(Some(Fault::RateLimited))
    };
    s.engine().push_script([limited(2), limited(3), step(None)]);
    let t0 = Instant::now();
    let out = client.chat(ChatRequest::user("m", "x"), opts(60_000)).await.unwrap();
    let took = t0.elapsed();
    assert_eq!(out.meta.upstream_attempts(), 3);
    // 2 s + 3 s of waiting, plus three simulated latencies of 20 ms and the reply.
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_millis(5200),
        "{took:?}"
    );
    // A Retry-After past the deadline fails fast instead of waiting.
    s.engine().push_script([limited(30)]);
    let t0 = Instant::now();
    let f = client
        .chat(ChatRequest::user("m", "y"), opts(10_000))
        .await
        .unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::RateLimited);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_hang_is_cut_by_the_deadline() {
    let s = sim(
        "hang",
        faults(Faults {
            hang: 1.0,
            ..Default::default()
        }),
    );
    let client = Client::builder()
        .provider(s.clone())
        .model("m", ModelConfig::new(vec![TargetConfig::new("hang", "sim-1")]))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let f = client.chat(ChatRequest::user("m", "x"), opts(1500)).await.unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::Timeout);
    assert!(t0.elapsed() <= Duration::from_millis(1500), "{:?}", t0.elapsed());
    let t0 = Instant::now();
    let f = client
        .chat_stream(ChatRequest::user("m", "x"), opts(1500))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::Timeout);
    assert!(t0.elapsed() <= Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn all_targets_down_explains_itself_within_the_deadline() {
    let a = sim(
        "primary",
        faults(Faults {
            overloaded: 1.0,
            ..Default::default()
        }),
    );
    let b = sim(
        "secondary",
        faults(Faults {
            reset: 1.0,
            ..Default::default()
        }),
    );
    let client = two_targets(&a, &b).build().unwrap();
    let t0 = Instant::now();
    let f = client
        .chat(ChatRequest::user("fast", "x"), opts(20_000))
        .await
        .unwrap_err();
    assert!(t0.elapsed() <= Duration::from_secs(20));
    assert!(
        f.error.message.contains("primary/sim-1: overloaded"),
        "{}",
        f.error.message
    );
    assert!(
        f.error.message.contains("secondary/sim-1: network"),
        "{}",
        f.error.message
    );
    assert!(f.meta.failovers() >= 1);
}

fn cached_alias(targets: Vec<TargetConfig>) -> ModelConfig {
    let mut m = ModelConfig::new(targets);
    m.cache = ModelCacheConfig {
        ttl_s: 60,
        ..Default::default()
    };
    m
}

#[tokio::test(start_paused = true)]
async fn degradation_chain_stale_then_fallback_then_rules() {
    let main = sim("main", quick());
    let backup = sim(
        "backup",
        faults(Faults {
            server_error: 1.0,
            ..Default::default()
        }),
    );
    let mut fast = cached_alias(vec![TargetConfig::new("main", "sim-1")]);
    fast.fallback = Some("slow".into());
    let client = Client::builder()
        .provider(main.clone())
        .provider(backup.clone())
        .model("fast", fast)
        .model("slow", ModelConfig::new(vec![TargetConfig::new("backup", "sim-1")]))
        .cache(ExactCache::memory(CacheConfig::default()))
        .rule_responder(|req, _err| {
            let mut r = ChatResponse {
                id: "rules".into(),
                object: "chat.completion".into(),
                created: 0,
                model: req.model.clone(),
                choices: vec![],
                usage: None,
                system_fingerprint: None,
                extra: Default::default(),
            };
            r.choices.push(Choice {
                index: 0,
                message: Message::assistant("service is degraded, try later"),
                finish_reason: Some(FinishReason::Stop),
                logprobs: None,
                extra: Default::default(),
            });
            Some(r)
        })
        .build()
        .unwrap();
    let mut req = ChatRequest::user("fast", "cached question");
    req.temperature = Some(0.0);
    let first = client.chat(req.clone(), opts(10_000)).await.unwrap();
    assert_eq!(first.meta.cache, CacheOutcome::Miss);
    // The main target goes down; past the TTL the entry is stale.
    main.engine()
        .set_config(faults(Faults {
            server_error: 1.0,
            ..Default::default()
        }))
        .unwrap();
    tokio::time::advance(Duration::from_secs(120)).await;
    let stale = client.chat(req.clone(), opts(10_000)).await.unwrap();
    assert_eq!(stale.meta.degraded, Some(Degraded::StaleCache));
    assert_eq!(stale.meta.cache, CacheOutcome::Stale);
    assert_eq!(stale.response.text(), first.response.text());
    // Not cached: the fallback alias is tried (also down), then the rules.
    let ruled = client
        .chat(ChatRequest::user("fast", "new question"), opts(10_000))
        .await
        .unwrap();
    assert_eq!(ruled.meta.degraded, Some(Degraded::RuleBased));
    assert!(ruled.meta.attempts.iter().any(|a| &*a.target == "backup/sim-1"));
    assert_eq!(ruled.response.text(), "service is degraded, try later");
}

#[tokio::test(start_paused = true)]
async fn fallback_alias_answers_and_says_so() {
    let main = sim(
        "main",
        faults(Faults {
            server_error: 1.0,
            ..Default::default()
        }),
    );
    let backup = sim("backup", quick());
    let mut fast = ModelConfig::new(vec![TargetConfig::new("main", "sim-1")]);
    fast.fallback = Some("slow".into());
    let client = Client::builder()
        .provider(main)
        .provider(backup)
        .model("fast", fast)
        .model("slow", ModelConfig::new(vec![TargetConfig::new("backup", "sim-1")]))
        .build()
        .unwrap();
    let out = client.chat(ChatRequest::user("fast", "x"), opts(10_000)).await.unwrap();
    assert_eq!(out.meta.degraded, Some(Degraded::Fallback("slow".into())));
    assert_eq!(out.meta.target.as_deref(), Some("backup/sim-1"));
    // A request error is never degraded.
    let mut bad = ChatRequest::user("fast", "x");
    bad.temperature = Some(9.0);
    let f = client.chat(bad, opts(10_000)).await.unwrap_err();
    assert_eq!(
        (f.error.kind, f.error.param.as_deref()),
        (ErrorKind::InvalidRequest, Some("temperature"))
    );
}

#[tokio::test(start_paused = true)]
async fn hedging_starts_the_second_target_and_cancels_the_loser() {
    let slow = sim("primary", quick());
    let fastp = sim("secondary", quick());
    let mut m = ModelConfig::new(vec![
        TargetConfig::new("primary", "sim-1"),
        TargetConfig::new("secondary", "sim-1"),
    ]);
    m.hedge = HedgeConfig {
        after_ms: Some(HedgeAfter::Ms(100)),
    };
    let client = Client::builder()
        .seed(3)
        .provider(slow.clone())
        .provider(fastp.clone())
        .model("h", m)
        .build()
        .unwrap();
    slow.engine().push_script([ScriptStep {
        latency_ms: Some(2000),
        ..step(None)
    }]);
    let t0 = Instant::now();
    let out = client.chat(ChatRequest::user("h", "x"), opts(10_000)).await.unwrap();
    let took = t0.elapsed();
    assert!(out.meta.hedged);
    assert_eq!(out.meta.target.as_deref(), Some("secondary/sim-1"));
    // The hedge began after 100 ms and answered in ~20 ms + generation.
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(400),
        "{took:?}"
    );
    let (p, s) = (slow.engine().stats(), fastp.engine().stats());
    assert_eq!((p.requests, s.requests), (1, 1));
    assert_eq!(p.in_flight, 0, "the losing call was cancelled");
    // A fast primary needs no hedge.
    let out = client.chat(ChatRequest::user("h", "y"), opts(10_000)).await.unwrap();
    assert!(!out.meta.hedged);
    assert_eq!(fastp.engine().stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn stream_fails_over_before_the_first_token() {
    let primary = sim(
        "primary",
        faults(Faults {
            hang: 1.0,
            ..Default::default()
        }),
    );
    let secondary = sim("secondary", quick());
    let client = two_targets(&primary, &secondary).build().unwrap();
    let out = client
        .chat_stream(ChatRequest::user("fast", "x"), opts(20_000))
        .await
        .unwrap();
    assert_eq!(out.meta.target.as_deref(), Some("secondary/sim-1"));
    assert_eq!(out.meta.attempts[0].error, Some(ErrorKind::Timeout));
    let mut a = StreamAssembler::new();
    let mut s = out.stream;
    while let Some(c) = s.next().await {
        a.push(&c.unwrap());
    }
    assert!(a.is_complete());
    let summary = out.done.unwrap().await.unwrap();
    assert!(summary.error.is_none());
    assert!(summary.usage.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_stream_broken_after_the_first_token_ends_with_an_error() {
    for fault in [Fault::CutStream, Fault::Stall, Fault::Malformed] {
        let s = sim("one", quick());
        let client = Client::builder()
            .provider(s.clone())
            .model("m", ModelConfig::new(vec![TargetConfig::new("one", "sim-1")]))
            .build()
            .unwrap();
        s.engine().push_script([step(Some(fault))]);
        let out = client
            .chat_stream(ChatRequest::user("m", "x"), opts(20_000))
            .await
            .unwrap();
        let items: Vec<_> = out.stream.collect().await;
        let n = items.len();
        assert!(n >= 3, "{fault:?}");
        let fin = items[n - 2].as_ref().expect("a finish chunk before the error");
        assert_eq!(fin.choices[0].finish_reason, Some(FinishReason::Error), "{fault:?}");
        let e = items[n - 1].as_ref().expect_err("the last item is the error");
        if fault == Fault::Stall {
            assert_eq!(e.phase, Some(TimeoutPhase::Idle));
        }
        assert!(
            !items
                .iter()
                .any(|i| matches!(i, Ok(c) if c.choices.iter().any(|c| c.finish_reason == Some(FinishReason::Stop))))
        );
        let summary = out.done.unwrap().await.unwrap();
        assert!(summary.error.is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn stitching_continues_on_another_target() {
    let primary = sim("primary", quick());
    let secondary = sim("secondary", quick());
    let mut m = ModelConfig::new(vec![
        TargetConfig::new("primary", "sim-1"),
        TargetConfig::new("secondary", "sim-1"),
    ]);
    m.stitch = true;
    let client = Client::builder()
        .provider(primary.clone())
        .provider(secondary.clone())
        .model("m", m)
        .build()
        .unwrap();
    primary.engine().push_script([step(Some(Fault::CutStream))]);
    let out = client
        .chat_stream(ChatRequest::user("m", "tell me"), opts(20_000))
        .await
        .unwrap();
    let mut a = StreamAssembler::new();
    let mut ids = std::collections::HashSet::new();
    let mut s = out.stream;
    while let Some(c) = s.next().await {
        let c = c.expect("a stitched stream has no error");
        ids.insert(c.id.clone());
        a.push(&c);
    }
    assert!(a.is_complete());
    assert_eq!(ids.len(), 1, "one response id throughout");
    let summary = out.done.unwrap().await.unwrap();
    assert!(summary.stitched);
    assert_eq!(summary.target.as_deref(), Some("secondary/sim-1"));
    assert_eq!(secondary.engine().stats().requests, 1);
}

#[tokio::test(start_paused = true)]
async fn hundred_identical_requests_make_one_upstream_call() {
    let s = sim("one", quick());
    let mut m = cached_alias(vec![TargetConfig::new("one", "sim-1")]);
    m.cache.enabled = true;
    let client = Client::builder()
        .provider(s.clone())
        .model("m", m)
        .cache(ExactCache::memory(CacheConfig::default()))
        .build()
        .unwrap();
    let mut req = ChatRequest::user("m", "same");
    req.temperature = Some(0.0);
    let calls = (0..100).map(|_| client.chat(req.clone(), opts(10_000)));
    let outs = futures::future::join_all(calls).await;
    let texts: std::collections::HashSet<String> = outs.iter().map(|o| o.as_ref().unwrap().response.text()).collect();
    assert_eq!(texts.len(), 1);
    assert_eq!(s.engine().stats().requests, 1);
    assert!(outs.iter().filter(|o| o.as_ref().unwrap().meta.coalesced).count() >= 99);
    // Later: a cache hit, no call.
    let hit = client.chat(req.clone(), opts(10_000)).await.unwrap();
    assert_eq!(hit.meta.cache, CacheOutcome::Hit);
    // Streams share the entry.
    let mut sreq = req.clone();
    sreq.stream = Some(true);
    let out = client.chat_stream(sreq, opts(10_000)).await.unwrap();
    assert_eq!(out.meta.cache, CacheOutcome::Hit);
    // no-cache refreshes.
    let fresh = client
        .chat(
            req,
            RequestOptions {
                cache_control: CacheControl::parse("no-cache"),
                ..opts(10_000)
            },
        )
        .await
        .unwrap();
    assert_eq!(fresh.meta.cache, CacheOutcome::Bypass);
    assert_eq!(s.engine().stats().requests, 2);
}

#[tokio::test(start_paused = true)]
async fn idempotency_keys_replay_and_reject_a_changed_body() {
    let s = sim("one", quick());
    let client = Client::builder()
        .provider(s.clone())
        .model("m", ModelConfig::new(vec![TargetConfig::new("one", "sim-1")]))
        .idempotency(IdempotencyStore::new(IdempotencyConfig::default(), None))
        .build()
        .unwrap();
    let o = RequestOptions {
        idempotency_key: Some("order-42".into()),
        tenant: Some(Arc::from("team-a")),
        ..opts(10_000)
    };
    let req = ChatRequest::user("m", "charge it");
    let a = client.chat(req.clone(), o.clone()).await.unwrap();
    let b = client.chat(req.clone(), o.clone()).await.unwrap();
    assert!(b.meta.idempotent_replay);
    assert_eq!(a.response.id, b.response.id);
    assert_eq!(s.engine().stats().requests, 1);
    let f = client
        .chat(ChatRequest::user("m", "something else"), o)
        .await
        .unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::InvalidRequest);
}

#[tokio::test(start_paused = true)]
async fn structured_output_repairs_once_then_explains() {
    let s = sim("one", quick());
    let client = Client::builder()
        .provider(s.clone())
        .model("m", ModelConfig::new(vec![TargetConfig::new("one", "sim-1")]))
        .build()
        .unwrap();
    let schema = Schema::new(
        "cmd",
        json!({"type": "object", "properties": {"device": {"type": "string"}, "level": {"type": "integer", "minimum": 0, "maximum": 100}}, "required": ["device", "level"]}),
    )
    .unwrap();
    let reply = |t: &str| ScriptStep {
        reply: Some(t.into()),
        ..step(None)
    };
    #[derive(serde::Deserialize, Debug)]
    struct Cmd {
        device: String,
        level: u8,
    }
    s.engine()
        .push_script([reply("not json"), reply("{\"device\": \"lamp\", \"level\": 30}")]);
    let out = client
        .structured::<Cmd>(ChatRequest::user("m", "dim the lamp"), &schema, opts(10_000))
        .await
        .unwrap();
    assert_eq!((out.value.device.as_str(), out.value.level), ("lamp", 30));
    assert_eq!(out.outcome.calls, 2);
    assert_eq!(s.engine().stats().requests, 2);
    s.engine()
        .push_script([reply("{}"), reply("{\"device\": \"lamp\", \"level\": 300}")]);
    let e = client
        .structured::<Cmd>(ChatRequest::user("m", "again"), &schema, opts(10_000))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("/level") && text.contains("raw answer"), "{text}");
    assert_eq!(s.engine().stats().requests, 4);
}

#[tokio::test(start_paused = true)]
async fn context_length_goes_to_the_larger_context_alias() {
    let small = sim(
        "small",
        SimulatorConfig {
            context_tokens: 10,
            ..quick()
        },
    );
    let big = sim("big", quick());
    let mut m = ModelConfig::new(vec![TargetConfig::new("small", "sim-1")]);
    m.context_fallback = Some("long".into());
    let client = Client::builder()
        .provider(small)
        .provider(big)
        .model("m", m)
        .model("long", ModelConfig::new(vec![TargetConfig::new("big", "sim-1")]))
        .build()
        .unwrap();
    let long_prompt = "words ".repeat(100);
    let out = client
        .chat(ChatRequest::user("m", long_prompt), opts(10_000))
        .await
        .unwrap();
    assert_eq!(out.meta.target.as_deref(), Some("big/sim-1"));
    assert_eq!(out.meta.attempts[0].error, Some(ErrorKind::ContextLengthExceeded));
}

#[tokio::test(start_paused = true)]
async fn strategies_spread_and_unknown_models_are_not_found() {
    let a = sim("a", quick());
    let b = sim("b", quick());
    let mut m = ModelConfig::new(vec![TargetConfig::new("a", "sim-1"), TargetConfig::new("b", "sim-1")]);
    m.strategy = Strategy::Weighted;
    m.targets[1].weight = 3;
    let client = Client::builder()
        .seed(11)
        .provider(a.clone())
        .provider(b.clone())
        .model("w", m)
        .build()
        .unwrap();
    for i in 0..400 {
        client
            .chat(ChatRequest::user("w", format!("{i}")), opts(10_000))
            .await
            .unwrap();
    }
    let (na, nb) = (a.engine().stats().requests, b.engine().stats().requests);
    assert_eq!(na + nb, 400);
    assert!((250..350).contains(&nb), "weights 1:3 gave {na}:{nb}");
    let f = client
        .chat(ChatRequest::user("nope", "x"), opts(1000))
        .await
        .unwrap_err();
    assert_eq!(f.error.kind, ErrorKind::NotFound);
    assert!(f.error.message.contains("available: w"));
}

#[test]
fn invalid_configs_name_the_path() {
    let s = Arc::new(Simulator::new("a", SimulatorConfig::instant()));
    let e = Client::builder()
        .provider(s.clone())
        .model("m", ModelConfig::new(vec![TargetConfig::new("nope", "x")]))
        .build()
        .unwrap_err();
    assert_eq!(e.path, "models.m.targets[0].provider");
    let mut a = ModelConfig::new(vec![TargetConfig::new("a", "x")]);
    a.fallback = Some("b".into());
    let mut b = ModelConfig::new(vec![TargetConfig::new("a", "x")]);
    b.fallback = Some("a".into());
    let e = Client::builder()
        .provider(s.clone())
        .model("a", a)
        .model("b", b)
        .build()
        .unwrap_err();
    assert!(e.reason.contains("cycle"), "{}", e.reason);
    let _ = ClientConfig::default();
}

#[tokio::test(start_paused = true)]
async fn semantic_hits_after_an_exact_miss_for_enabled_aliases() {
    use breakwater::cache::semantic::{HashEmbedder, SemanticCache, SemanticConfig};
    let s = sim("one", quick());
    let mut m = cached_alias(vec![TargetConfig::new("one", "sim-1")]);
    m.cache.semantic = true;
    let plain = cached_alias(vec![TargetConfig::new("one", "sim-1")]);
    let sem = SemanticCache::new(Arc::new(HashEmbedder::new(64)), SemanticConfig::default());
    let client = Client::builder()
        .provider(s.clone())
        .model("m", m)
        .model("plain", plain)
        .cache(ExactCache::memory(CacheConfig::default()))
        .semantic(Arc::new(sem))
        .build()
        .unwrap();
    let ask = |model: &str, text: &str| {
        let mut r = ChatRequest::user(model, text);
        r.temperature = Some(0.0);
        r
    };
    let first = client
        .chat(ask("m", "What is the capital of France"), opts(10_000))
        .await
        .unwrap();
    assert_eq!(first.meta.cache, CacheOutcome::Miss);
    let second = client
        .chat(ask("m", "what is the capital of france?"), opts(10_000))
        .await
        .unwrap();
    assert_eq!(second.meta.cache, CacheOutcome::Semantic);
    assert_eq!(second.response.text(), first.response.text());
    assert_eq!(s.engine().stats().requests, 1);
    // Streams hit it too.
    let mut sr = ask("m", "What is the CAPITAL of France");
    sr.stream = Some(true);
    let out = client.chat_stream(sr, opts(10_000)).await.unwrap();
    assert_eq!(out.meta.cache, CacheOutcome::Semantic);
    // A guard keeps different numbers apart; an alias without it never hits.
    let n = client
        .chat(ask("m", "convert 5 km to miles"), opts(10_000))
        .await
        .unwrap();
    assert_eq!(n.meta.cache, CacheOutcome::Miss);
    let n2 = client
        .chat(ask("m", "convert 7 km to miles"), opts(10_000))
        .await
        .unwrap();
    assert_eq!(n2.meta.cache, CacheOutcome::Miss);
    let p1 = client
        .chat(ask("plain", "What is the capital of France"), opts(10_000))
        .await
        .unwrap();
    let p2 = client
        .chat(ask("plain", "what is the capital of france?"), opts(10_000))
        .await
        .unwrap();
    assert_eq!((p1.meta.cache, p2.meta.cache), (CacheOutcome::Miss, CacheOutcome::Miss));
}

#[tokio::test(start_paused = true)]
async fn active_probes_bring_a_recovered_target_back_early() {
    let primary = sim(
        "primary",
        faults(Faults {
            server_error: 1.0,
            ..Default::default()
        }),
    );
    let secondary = sim("secondary", quick());
    let client = two_targets(&primary, &secondary).build().unwrap();
    for i in 0..10 {
        client
            .chat(ChatRequest::user("fast", format!("a{i}")), opts(10_000))
            .await
            .unwrap();
    }
    assert_eq!(client.targets()[0].breaker.state.as_str(), "open");
    let calls = |s: &Arc<Simulator>| {
        s.engine()
            .stats()
            .by_route
            .get(breakwater::simulator::ROUTE)
            .copied()
            .unwrap_or(0)
    };
    let before = calls(&primary);
    // The primary recovers; within one probe interval (15 s, before the 30 s
    // open period ends) an active probe finds it answering.
    primary.engine().set_config(quick()).unwrap();
    tokio::time::sleep(Duration::from_secs(16)).await;
    assert!(primary.engine().stats().by_route.get("probe").copied().unwrap_or(0) >= 1);
    for i in 0..5 {
        client
            .chat(ChatRequest::user("fast", format!("b{i}")), opts(10_000))
            .await
            .unwrap();
    }
    assert!(calls(&primary) > before, "real traffic reached the primary again");
    assert_eq!(
        client.targets()[0].breaker.state.as_str(),
        "closed",
        "three probes closed it"
    );
}
