//! Scale-out, end to end: several real `breakwater serve` processes sharing
//! one Redis (or a Redis Cluster) in front of one HTTP simulator. Limits and
//! budgets hold globally, the L2 cache and idempotency records are shared,
//! breaker trips propagate (`redis.share_breakers`), and a Redis that dies
//! and comes back costs neither availability nor a restart.
//!
//! Loopback only, fake keys; every wait polls with a deadline.

use breakwater::simulator::{Faults, SimulatorConfig};
use breakwater_simulator::SimServer;
use breakwater_testkit::{RedisCluster, RedisServer, free_port, wait_for_port};
use futures::StreamExt;
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "team-a-key-0001";

/// A `breakwater serve` process, killed when dropped.
struct Gateway {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Gateway {
    async fn start(config: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("breakwater.yaml");
        std::fs::write(&path, config).expect("write config");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_breakwater"))
            .args([
                "serve",
                "--no-watch",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--config",
            ])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn breakwater");
        let gw = Gateway {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        wait_for_port(port, Duration::from_secs(30))
            .await
            .expect("the gateway listens");
        gw
    }

    async fn stats(&self, http: &reqwest::Client) -> Value {
        http.get(format!("{}/admin/stats", self.url))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The config of every gateway of a test: one simulator provider, one
/// alias, one virtual key with `rpm` and a token budget.
fn config(redis: Value, sim: &SimServer, rpm: u64, extra: &str) -> String {
    format!(
        r#"
redis: {redis}
providers:
  sim: {{ kind: openai, base_url: "{base}", api_key: "sk-fake-test" }}
models:
  fast: {{ targets: [{{ provider: sim, model: sim-1 }}] }}
keys:
  - {{ name: team-a, key: "{KEY}", limits: {{ rpm: {rpm} }}, budget: {{ tokens: 1000000000, period: day }} }}
logging: {{ level: warn }}
{extra}
"#,
        base = sim.openai_base(),
    )
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn tokens(&self) -> u64 {
        self.body["usage"]["total_tokens"].as_u64().unwrap_or(0)
    }
}

async fn chat(http: &reqwest::Client, gw: &Gateway, prompt: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({ "model": "fast", "temperature": 0, "messages": [{ "role": "user", "content": prompt }] }));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("the gateway answers within the client timeout");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.json().await.unwrap_or(Value::Null);
    Answer { status, headers, body }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// Polls `check` every 100 ms until it holds, or panics after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let give_up = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < give_up, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The shared budget (spent tokens) each gateway reports.
async fn spent(http: &reqwest::Client, gws: &[Gateway]) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for g in gws {
        out.push(g.stats(http).await["budgets"][0]["spent_tokens"].as_u64());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateways_hold_one_global_limit_and_budget() {
    let redis = RedisServer::start().await.expect("redis-server");
    let sim = SimServer::start(SimulatorConfig::instant()).await.unwrap();
    let cfg = config(
        json!({ "url": redis.url(), "timeout_ms": 1000, "on_failure": "closed" }),
        &sim,
        600,
        "",
    );
    let gws = [
        Gateway::start(&cfg).await,
        Gateway::start(&cfg).await,
        Gateway::start(&cfg).await,
    ];
    let http = http();
    // 600 RPM: a bucket of 600 refilled at 10/s. 1,000 distinct requests,
    // round-robin over the three instances, 24 at a time.
    let started = Instant::now();
    let answers: Vec<Answer> = futures::stream::iter(0..1000usize)
        .map(|i| {
            let (http, gw) = (&http, &gws[i % 3]);
            async move { chat(http, gw, &format!("request number {i}"), &[]).await }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = answers.iter().filter(|a| a.status == 200).count() as f64;
    let limited = answers.iter().filter(|a| a.status == 429).count();
    assert_eq!(
        accepted as usize + limited,
        1000,
        "only admissions and rate-limit refusals"
    );
    let bound = (600.0 + 10.0 * elapsed) * 1.01;
    assert!(
        accepted <= bound,
        "{accepted} admitted in {elapsed:.1} s: the global bound is {bound:.0}"
    );
    assert!(accepted >= 600.0, "the full bucket admits its burst: {accepted}");
    let upstream = sim.stats().requests as f64;
    assert!(
        upstream <= bound,
        "the simulator saw {upstream} calls: the global bound is {bound:.0}"
    );
    for a in answers.iter().filter(|a| a.status == 429) {
        assert!(a.header("retry-after").is_some(), "429 carries Retry-After");
    }
    for a in answers.iter().filter(|a| a.status == 200) {
        let rem: u64 = a
            .header("x-ratelimit-remaining-requests")
            .and_then(|v| v.parse().ok())
            .expect("x-ratelimit-remaining-requests");
        assert!(rem < 600);
    }
    // Every instance reports the same shared budget: what all of them spent.
    let expected: u64 = answers.iter().filter(|a| a.status == 200).map(Answer::tokens).sum();
    assert!(expected > 0);
    eventually(Duration::from_secs(10), "the three report the same spend", || async {
        spent(&http, &gws).await.iter().all(|s| *s == Some(expected))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_fails_open_within_deadlines_and_comes_back_without_restart() {
    let mut redis = RedisServer::start().await.expect("redis-server");
    let sim = SimServer::start(SimulatorConfig::instant()).await.unwrap();
    let cfg = config(
        json!({ "url": redis.url(), "timeout_ms": 100, "on_failure": "open" }),
        &sim,
        100_000,
        "",
    );
    let gws = [Gateway::start(&cfg).await, Gateway::start(&cfg).await];
    let http = http();
    // Shared L2 cache while Redis is up: an answer stored by one instance
    // is a hit on the other.
    assert_eq!(chat(&http, &gws[0], "before", &[]).await.status, 200);
    let hit = chat(&http, &gws[1], "before", &[]).await;
    assert_eq!(hit.header("x-breakwater-cache"), Some("hit"));

    // A slow Redis (every client paused for 2.5 s): requests wait for it at
    // most redis.timeout_ms per call and finish within their deadline.
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port().to_string(), "client", "pause", "2500"])
        .output()
        .expect("redis-cli");
    assert!(out.status.success());
    for i in 0..10 {
        let a = chat(
            &http,
            &gws[i % 2],
            &format!("slow {i}"),
            &[("x-breakwater-timeout-ms", "2000")],
        )
        .await;
        assert_eq!(a.status, 200, "a slow Redis fails open: {}", a.body);
    }

    // Redis dies mid-traffic (after the 30th answer): every request still
    // succeeds, within its deadline (an answer after the deadline would be
    // a timeout error).
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let traffic = async {
        futures::stream::iter(0..120usize)
            .map(|i| {
                let (http, gw, answered) = (&http, &gws[i % 2], &answered);
                async move {
                    let a = chat(http, gw, &format!("during {i}"), &[("x-breakwater-timeout-ms", "5000")]).await;
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    a
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<Answer>>()
            .await
    };
    let kill = async {
        while answered.load(std::sync::atomic::Ordering::Relaxed) < 30 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        redis.kill();
    };
    let (answers, ()) = tokio::join!(traffic, kill);
    for a in &answers {
        assert_eq!(a.status, 200, "fail-open: {}", a.body);
    }
    // And after it is surely down.
    for i in 0..20 {
        let a = chat(
            &http,
            &gws[i % 2],
            &format!("down {i}"),
            &[("x-breakwater-timeout-ms", "3000")],
        )
        .await;
        assert_eq!(a.status, 200, "fail-open while down: {}", a.body);
    }
    let st = gws[0].stats(&http).await;
    let failed_open = st["keys"][0]["requests_limiter"]["failed_open"].as_u64().unwrap_or(0);
    assert!(failed_open > 0, "the limiter failed open: {st}");

    // Redis comes back (empty): the same processes share state again.
    redis.restart().await.expect("redis restarts");
    let mut n = 0;
    eventually(Duration::from_secs(20), "the L2 cache is shared again", || {
        n += 1;
        let prompt = format!("after {n}");
        let (http, gws) = (&http, &gws);
        async move {
            let first = chat(http, &gws[0], &prompt, &[]).await;
            let second = chat(http, &gws[1], &prompt, &[]).await;
            first.status == 200 && second.header("x-breakwater-cache") == Some("hit")
        }
    })
    .await;
    eventually(Duration::from_secs(10), "Redis is marked up", || async {
        gws[1].stats(&http).await["redis"]["down"] == json!(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_serves_cache_limits_budgets_and_idempotency() {
    let cluster = match RedisCluster::start(3).await {
        Ok(c) => c,
        Err(e) => panic!("cannot start a redis cluster: {e}"),
    };
    let sim = SimServer::start(SimulatorConfig::instant()).await.unwrap();
    let cfg = config(
        json!({ "url": cluster.urls(), "cluster": true, "timeout_ms": 1000, "on_failure": "closed" }),
        &sim,
        20,
        "",
    );
    let gws = [Gateway::start(&cfg).await, Gateway::start(&cfg).await];
    let http = http();

    // L2 cache across instances.
    assert_eq!(chat(&http, &gws[0], "cached prompt", &[]).await.status, 200);
    let hit = chat(&http, &gws[1], "cached prompt", &[]).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.header("x-breakwater-cache"), Some("hit"));

    // Idempotency across instances (no-store: only the record can replay).
    let calls = sim.stats().requests;
    let h = [("idempotency-key", "order-42"), ("cache-control", "no-store")];
    let a = chat(&http, &gws[0], "charge the card", &h).await;
    let b = chat(&http, &gws[1], "charge the card", &h).await;
    assert_eq!((a.status, b.status), (200, 200), "{} / {}", a.body, b.body);
    assert_eq!(
        a.body["id"], b.body["id"],
        "the second instance replays the first answer"
    );
    assert_eq!(sim.stats().requests, calls + 1, "one upstream call");
    // A different body under the same key is refused.
    let c = chat(&http, &gws[1], "charge another card", &h).await;
    assert!(c.status >= 400, "{}", c.body);

    // One global limit of 20 RPM (5 requests took from it already).
    let started = Instant::now();
    let mut accepted = 0u64;
    for i in 0..30usize {
        let r = chat(&http, &gws[i % 2], &format!("limited {i}"), &[]).await;
        match r.status {
            200 => accepted += 1,
            429 => assert!(r.header("retry-after").is_some()),
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    let refill = (started.elapsed().as_secs_f64() * 20.0 / 60.0).ceil() as u64;
    assert!(
        accepted + 5 <= 20 + refill,
        "{accepted} admitted: more than the global 20 RPM"
    );
    assert!(accepted >= 10, "the remaining burst is admitted: {accepted}");
    // The budget figures are the same on both instances.
    eventually(Duration::from_secs(10), "both report the same spend", || async {
        let s = spent(&http, &gws).await;
        s[0].is_some() && s[0] == s[1]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_breaker_trip_on_one_instance_protects_the_others() {
    let redis = RedisServer::start().await.expect("redis-server");
    let down = SimServer::start(SimulatorConfig::instant()).await.unwrap();
    let backup = SimServer::start(SimulatorConfig::instant()).await.unwrap();
    let cfg = format!(
        r#"
redis: {{ url: "{redis}", timeout_ms: 1000, share_breakers: true }}
providers:
  down: {{ kind: openai, base_url: "{down}", api_key: "sk-fake-test" }}
  backup: {{ kind: openai, base_url: "{backup}", api_key: "sk-fake-test" }}
models:
  fast:
    targets: [{{ provider: down, model: sim-1 }}, {{ provider: backup, model: sim-1 }}]
    cache: {{ enabled: false }}
keys:
  - {{ name: team-a, key: "{KEY}" }}
retry: {{ max_attempts: 1 }}
breaker: {{ consecutive_failures: 2, open_s: 60 }}
health: {{ probe_interval_s: 3600 }}
logging: {{ level: warn }}
"#,
        redis = redis.url(),
        down = down.openai_base(),
        backup = backup.openai_base(),
    );
    let gws = [Gateway::start(&cfg).await, Gateway::start(&cfg).await];
    let http = http();
    let a = chat(&http, &gws[1], "healthy", &[]).await;
    assert_eq!(a.header("x-breakwater-target"), Some("down/sim-1"));
    // The primary goes down; only instance 0 sees it (and fails over).
    down.engine()
        .set_config(SimulatorConfig {
            faults: Faults {
                server_error: 1.0,
                ..Default::default()
            },
            ..SimulatorConfig::instant()
        })
        .unwrap();
    for i in 0..2 {
        let a = chat(&http, &gws[0], &format!("failing {i}"), &[]).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.header("x-breakwater-target"), Some("backup/sim-1"));
    }
    let state = |st: Value| {
        st["targets"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["id"] == "down/sim-1"))
            .and_then(|t| t["breaker"]["state"].as_str())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(state(gws[0].stats(&http).await), "open");
    // Instance 1 learns it through Redis, without a failed call of its own.
    eventually(Duration::from_secs(10), "instance 1's breaker opens", || async {
        state(gws[1].stats(&http).await) == "open"
    })
    .await;
    let calls = down.stats().requests;
    for i in 0..5 {
        let a = chat(&http, &gws[1], &format!("protected {i}"), &[]).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.header("x-breakwater-target"), Some("backup/sim-1"));
    }
    assert_eq!(down.stats().requests, calls, "instance 1 never called the down target");
}
