//! The gateway over real HTTP: keys, headers, input safety, admin routes,
//! reload, graceful drain and client-disconnect cancellation, in front of
//! the HTTP simulator on loopback.

use breakwater::simulator::SimulatorConfig;
use breakwater_server::serve::{self, Options, Running};
use breakwater_simulator::SimServer;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

const KEY: &str = "sk-test-team-a";
const SLOW_KEY: &str = "sk-test-limited";
const ADMIN: &str = "sk-test-admin";

fn config_text(sim: &SimServer, extra_model: &str) -> String {
    format!(
        r#"
server:
  listen: "127.0.0.1:0"
  admin_key: "{ADMIN}"
  max_body_bytes: 65536
  shutdown_grace_s: 20
providers:
  sim:
    kind: openai
    base_url: "{base}"
    api_key: "sk-fake-upstream"
models:
  fast:
    targets:
      - {{ provider: sim, model: sim-1 }}
    cache: {{ enabled: true, ttl_s: 600 }}
{extra_model}
keys:
  - name: team-a
    key: "{KEY}"
    models: ["*"]
  - name: limited
    key: "{SLOW_KEY}"
    models: ["fast"]
    limits: {{ rpm: 2 }}
"#,
        base = sim.openai_base()
    )
}

async fn start_with_file(path: &Path) -> Running {
    let opts = Options {
        config: Some(path.to_path_buf()),
        ..Options::default()
    };
    let (cfg, origin) = serve::load(&opts).await.expect("config loads");
    serve::start(cfg, origin, &opts).await.expect("gateway starts")
}

async fn setup(sim_cfg: SimulatorConfig) -> (SimServer, Running, tempfile::TempDir) {
    let sim = SimServer::start(sim_cfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakwater.yaml");
    std::fs::write(&path, config_text(&sim, "")).unwrap();
    let gw = start_with_file(&path).await;
    (sim, gw, dir)
}

fn chat(content: &str) -> Value {
    json!({"model": "fast", "temperature": 0, "messages": [{"role": "user", "content": content}]})
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `GET /admin/stats` with the admin key.
async fn admin_stats(gw: &Running) -> Value {
    http()
        .get(format!("{}/admin/stats", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("GET /admin/stats")
        .json()
        .await
        .expect("/admin/stats is JSON")
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("errors are JSON");
    (status, body)
}

#[tokio::test]
async fn keys_are_required_and_errors_have_openai_shape() {
    let (_sim, gw, _dir) = setup(SimulatorConfig::default()).await;
    let url = format!("{}/v1/chat/completions", gw.url());

    let (status, body) = error_of(http().post(&url).json(&chat("hi")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");

    let resp = http()
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&chat("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Anthropic clients send x-api-key.
    let resp = http()
        .post(format!("{}/v1/messages", gw.url()))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "fast", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message", "{body}");
}

#[tokio::test]
async fn answers_carry_the_gateway_headers_and_the_cache_works() {
    let (sim, gw, _dir) = setup(SimulatorConfig::default()).await;
    let url = format!("{}/v1/chat/completions", gw.url());

    let resp = http()
        .post(&url)
        .bearer_auth(KEY)
        .header("x-request-id", "req-123")
        .json(&chat("cache me"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["x-request-id"], "req-123");
    assert_eq!(h["x-breakwater-cache"], "miss");
    assert!(h["x-breakwater-target"].to_str().unwrap().contains("sim"), "{h:?}");
    assert_eq!(h["x-breakwater-attempts"], "1");
    let first: Value = resp.json().await.unwrap();

    // A request id is made when none is given.
    let resp = http()
        .post(&url)
        .bearer_auth(KEY)
        .json(&chat("cache me"))
        .send()
        .await
        .unwrap();
    assert!(!resp.headers()["x-request-id"].is_empty());
    assert_eq!(resp.headers()["x-breakwater-cache"], "hit");
    let second: Value = resp.json().await.unwrap();
    assert_eq!(first["choices"], second["choices"]);
    assert_eq!(sim.stats().requests, 1, "the hit did not go upstream");

    // no-store / no-cache bypass.
    let resp = http()
        .post(&url)
        .bearer_auth(KEY)
        .header("cache-control", "no-cache")
        .json(&chat("cache me"))
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-breakwater-cache"], "hit");
    assert_eq!(sim.stats().requests, 2);
}

#[tokio::test]
async fn a_key_over_its_rpm_gets_429_with_retry_after_and_ratelimit_headers() {
    let (_sim, gw, _dir) = setup(SimulatorConfig::default()).await;
    let url = format!("{}/v1/chat/completions", gw.url());
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = http()
            .post(&url)
            .bearer_auth(SLOW_KEY)
            .json(&chat(&format!("n{i}")))
            .send()
            .await
            .unwrap();
        let h = resp.headers().clone();
        statuses.push(resp.status().as_u16());
        if resp.status() == 200 {
            assert_eq!(h["x-ratelimit-limit-requests"], "2", "{h:?}");
            assert!(h.contains_key("x-ratelimit-remaining-requests"));
            assert!(h.contains_key("x-ratelimit-reset-requests"));
        } else {
            assert_eq!(resp.status(), 429);
            let after: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(after >= 1, "{after}");
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"]["message"].as_str().unwrap().len() > 5, "{body}");
        }
    }
    assert_eq!(statuses, [200, 200, 429]);

    // The key's allowlist: only `fast`.
    let resp = http()
        .post(&url)
        .bearer_auth(SLOW_KEY)
        .json(&json!({"model": "other", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert!(matches!(resp.status().as_u16(), 403 | 404), "{}", resp.status());
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_naming_what_is_wrong() {
    let (sim, gw, _dir) = setup(SimulatorConfig::default()).await;
    let url = format!("{}/v1/chat/completions", gw.url());

    // Malformed JSON: the position is named.
    let resp = http()
        .post(&url)
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body("{\"model\": \"fast\",\n \"messages\": [}")
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 400);
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("line 2") || msg.contains("column"), "{msg}");

    // A missing field is named.
    let resp = http()
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({"model": "fast"}))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 400);
    let text = body.to_string();
    assert!(text.contains("messages"), "{text}");

    // A wrong type is named with its path.
    let resp = http()
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({"model": "fast", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 400);
    assert!(body.to_string().contains("temperature"), "{body}");

    // Unknown model → 404; wrong method → 405; unknown route → 404.
    let resp = http()
        .post(&url)
        .bearer_auth(KEY)
        .json(&json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 404);
    assert!(body.to_string().contains("nope"), "{body}");
    let (status, _) = error_of(http().get(&url).bearer_auth(KEY).send().await.unwrap()).await;
    assert_eq!(status, 405);
    let (status, _) = error_of(http().get(format!("{}/v2/x", gw.url())).send().await.unwrap()).await;
    assert_eq!(status, 404);

    // Over the body limit → 413.
    let big = "x".repeat(70_000);
    let resp = http()
        .post(&url)
        .bearer_auth(KEY)
        .json(&chat(&big))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);

    assert_eq!(sim.stats().requests, 0, "nothing bad went upstream");
}

#[tokio::test]
async fn admin_routes_need_the_admin_key() {
    let (_sim, gw, _dir) = setup(SimulatorConfig::default()).await;
    let resp = http()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(KEY)
        .json(&chat("count me"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    for path in ["/admin/stats", "/metrics"] {
        let resp = http().get(format!("{}{path}", gw.url())).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        let resp = http()
            .get(format!("{}{path}", gw.url()))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path}: a tenant key is not the admin key");
    }
    let stats = admin_stats(&gw).await;
    assert!(stats["targets"].is_array(), "{stats}");
    let metrics = http()
        .get(format!("{}/metrics", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("breakwater_"), "{metrics}");

    let resp = http()
        .delete(format!("{}/admin/cache?all=true", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        http()
            .get(format!("{}/healthz", gw.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http()
            .get(format!("{}/readyz", gw.url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn reload_swaps_the_config_and_a_bad_one_is_refused() {
    // Slow enough that a request is still in flight during the reload.
    let sim_cfg = SimulatorConfig {
        latency_ms: 300,
        ..SimulatorConfig::default()
    };
    let (sim, gw, dir) = setup(sim_cfg).await;
    let sim2 = SimServer::start(SimulatorConfig::default()).await.unwrap();
    let path = dir.path().join("breakwater.yaml");
    let url = format!("{}/v1/chat/completions", gw.url());
    let newer = json!({"model": "newer", "messages": [{"role": "user", "content": "x"}]});

    let resp = http().post(&url).bearer_auth(KEY).json(&newer).send().await.unwrap();
    assert_eq!(resp.status(), 404, "not configured yet");

    // A request in flight across the reload finishes on the old config.
    let in_flight = tokio::spawn({
        let url = url.clone();
        async move {
            http()
                .post(&url)
                .bearer_auth(KEY)
                .json(&chat("in flight"))
                .send()
                .await
                .unwrap()
        }
    });
    // Really in flight (at the old upstream, inside its 300 ms) before the
    // reload: otherwise the request may reach the gateway after the swap.
    eventually("the request reached the old upstream", || sim.stats().requests == 1).await;
    let extra = "  newer:\n    targets:\n      - { provider: sim2, model: sim-2 }\n";
    let text = config_text(&sim2, extra).replace("  sim:\n", "  sim2:\n").replace(
        "      - { provider: sim, model: sim-1 }",
        "      - { provider: sim2, model: sim-1 }",
    );
    std::fs::write(&path, text).unwrap();
    let resp = http()
        .post(format!("{}/admin/reload", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    let old = in_flight.await.unwrap();
    assert_eq!(old.status(), 200);
    let resp = http().post(&url).bearer_auth(KEY).json(&newer).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sim2.stats().requests, 1);
    assert_eq!(
        sim.stats().requests,
        1,
        "the old upstream served only the request in flight"
    );

    // A broken config is refused with the reason, and the running one stays.
    std::fs::write(&path, "server: {listen: 12\nmodels: [").unwrap();
    let resp = http()
        .post(format!("{}/admin/reload", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error() || resp.status().is_server_error());
    let resp = http().post(&url).bearer_auth(KEY).json(&newer).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the previous configuration still serves");
    let stats = gw.app.reload_failures.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(stats, 1);
}

/// POSTs `body` to the chat route on a connection of its own, and reads
/// the answer to its end: the status and the body.
fn post_on_new_connection(addr: std::net::SocketAddr, body: &Value) -> impl Future<Output = (u16, String)> + use<> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string());
        (status, body)
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts a simulator answering `reply_tokens` at `tokens_per_s` after
/// `latency_ms`, the gateway in front of it, and one stream through it.
async fn open_stream(
    latency_ms: u64,
    tokens_per_s: f64,
    reply_tokens: u32,
) -> (SimServer, Running, tempfile::TempDir, reqwest::Response) {
    let sim_cfg = SimulatorConfig {
        latency_ms,
        tokens_per_s,
        reply_tokens,
        ..SimulatorConfig::default()
    };
    let (sim, gw, dir) = setup(sim_cfg).await;
    let url = format!("{}/v1/chat/completions", gw.url());
    let mut body = chat("tell me a story");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(reply_tokens);
    let resp = http().post(&url).bearer_auth(KEY).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    (sim, gw, dir, resp)
}

#[tokio::test]
async fn shutdown_drains_an_open_stream_and_refuses_new_connections() {
    // About a second of streaming: 40 tokens at 40 tokens/s.
    let (sim, gw, _dir, mut resp) = open_stream(20, 40.0, 40).await;
    let first = resp.chunk().await.unwrap().expect("a first chunk");
    assert!(!first.is_empty());

    gw.shutdown();
    // New connections are refused once the listener is closed.
    let addr = gw.addr;
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener still accepts after shutdown");

    // The open stream still runs to its end.
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(c) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
    tokio::time::timeout(Duration::from_secs(10), gw.done)
        .await
        .expect("the server stops after draining")
        .unwrap();
    assert_eq!(sim.stats().streams_completed, 1);
}

#[tokio::test]
async fn a_client_disconnect_cancels_the_upstream_stream() {
    // A long reply: about 25 s at 20 tokens/s, so only a cancel ends it early.
    let (sim, _gw, _dir, mut resp) = open_stream(10, 20.0, 500).await;
    resp.chunk().await.unwrap().expect("a first chunk");
    eventually("the upstream stream starts", || sim.stats().streams_started == 1).await;
    drop(resp);

    eventually("the upstream sees the cancellation", || {
        let s = sim.stats();
        s.streams_cancelled == 1 && s.in_flight == 0
    })
    .await;
    assert_eq!(sim.stats().streams_completed, 0);
}

#[tokio::test]
async fn a_changed_config_file_is_picked_up_by_the_watcher() {
    let sim = SimServer::start(SimulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakwater.yaml");
    std::fs::write(&path, config_text(&sim, "")).unwrap();
    let opts = Options {
        config: Some(path.clone()),
        watch: Some(Duration::from_millis(50)),
        ..Options::default()
    };
    let (cfg, origin) = serve::load(&opts).await.unwrap();
    let gw = serve::start(cfg, origin, &opts).await.unwrap();
    let url = format!("{}/v1/chat/completions", gw.url());
    let newer = json!({"model": "newer", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(
        http()
            .post(&url)
            .bearer_auth(KEY)
            .json(&newer)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let extra = "  newer:\n    targets:\n      - { provider: sim, model: sim-1 }\n";
    std::fs::write(&path, config_text(&sim, extra)).unwrap();
    let app = gw.app.clone();
    eventually("the watcher reloads", || {
        app.reloads.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(
        http()
            .post(&url)
            .bearer_auth(KEY)
            .json(&newer)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn several_workers_share_the_port_and_each_drains_its_streams() {
    let sim = SimServer::start(SimulatorConfig {
        latency_ms: 20,
        tokens_per_s: 40.0,
        reply_tokens: 30,
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakwater.yaml");
    let text = config_text(&sim, "").replace("  shutdown_grace_s: 20\n", "  shutdown_grace_s: 20\n  workers: 3\n");
    std::fs::write(&path, text).unwrap();
    let gw = start_with_file(&path).await;
    assert_eq!(gw.app.connections.len(), 3);

    // Every request on a connection of its own, so the kernel spreads them
    // over the workers' sockets; each is answered whichever worker took it.
    // (Plain TCP: a new reqwest client per connection loads the system's
    // root certificates each time, seconds in a debug build.)
    let asks: Vec<_> = (0..24)
        .map(|i| tokio::spawn(post_on_new_connection(gw.addr, &chat(&format!("q{i}")))))
        .collect();
    for a in asks {
        assert_eq!(a.await.unwrap().0, 200);
    }
    let per_worker: Vec<u64> = gw
        .app
        .connections
        .iter()
        .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    assert_eq!(per_worker.iter().sum::<u64>(), 24, "{per_worker:?}");
    assert!(
        per_worker.iter().filter(|n| **n > 0).count() >= 2,
        "24 connections all went to one worker: {per_worker:?}"
    );
    let stats = admin_stats(&gw).await;
    assert_eq!(stats["workers"]["count"], 3, "{}", stats["workers"]);

    // Streams open on several workers; a shutdown drains every one of them.
    let mut streams = Vec::new();
    for i in 0..6 {
        let mut body = chat(&format!("story {i}"));
        body["stream"] = json!(true);
        streams.push(tokio::spawn(post_on_new_connection(gw.addr, &body)));
    }
    eventually("every stream is open", || sim.stats().streams_started == 6).await;
    gw.shutdown();
    for s in streams {
        let (status, text) = s.await.unwrap();
        assert_eq!(status, 200);
        // Chunked: the last event, then the empty chunk that ends the body.
        assert!(text.ends_with("data: [DONE]\n\n\r\n0\r\n\r\n"), "{text}");
    }
    tokio::time::timeout(Duration::from_secs(10), gw.done)
        .await
        .expect("every worker stops after draining")
        .unwrap();
    assert_eq!(sim.stats().streams_completed, 6);
}

/// Reads what the server sends until it closes the connection (or 60
/// paused-clock seconds pass).
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_loris_client_is_cut_off_and_oversized_headers_are_refused() {
    use tokio::io::AsyncWriteExt;
    let sim = SimServer::start(SimulatorConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breakwater.yaml");
    // One worker: it runs on this test's runtime, whose paused clock then
    // jumps to the header-read deadline as soon as everything waits.
    let text = config_text(&sim, "").replace("  shutdown_grace_s: 20\n", "  shutdown_grace_s: 20\n  workers: 1\n");
    std::fs::write(&path, text).unwrap();
    let gw = start_with_file(&path).await;

    // Headers that never end: the connection is closed at the header-read
    // deadline, without an answer and without holding the slot forever.
    let started = tokio::time::Instant::now();
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nx-trickle: 1")
        .await
        .unwrap();
    let got = read_until_closed(&mut slow)
        .await
        .expect("the server closes the connection");
    let waited = started.elapsed();
    assert!(!got.contains("200 OK"), "{got}");
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_secs(30),
        "closed after {waited:?}"
    );

    // A prompt client on another connection is answered meanwhile.
    let mut ok = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut ok).await.expect("an answer");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");

    // More than 100 headers: 431, before any route runs.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nhost: gw\r\n");
    for i in 0..101 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(many.as_bytes()).await.unwrap();
    let got = read_until_closed(&mut s).await.expect("an answer");
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");

    // One header larger than the read buffer may grow to: refused too.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: gw\r\nx-big: {}\r\n\r\n",
        "a".repeat(512 * 1024)
    );
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _ = s.write_all(big.as_bytes()).await;
    let got = read_until_closed(&mut s).await.unwrap_or_default();
    assert!(!got.contains("200 OK"), "{got}");
}

#[tokio::test]
async fn http1_and_http2_cleartext_are_both_served() {
    let (_sim, gw, _dir) = setup(SimulatorConfig::instant()).await;
    let url = format!("{}/v1/chat/completions", gw.url());
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for (client, version) in [(http(), reqwest::Version::HTTP_11), (h2, reqwest::Version::HTTP_2)] {
        let resp = client
            .post(&url)
            .bearer_auth(KEY)
            .json(&chat(&format!("over {version:?}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200, "{version:?}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["choices"][0]["message"]["content"].is_string(), "{body}");
        // an error answer too, so the version is not only good for 200s
        let resp = client.post(&url).json(&chat("no key")).send().await.unwrap();
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 401, "{version:?}");
        // and a stream, to its end
        let mut body = chat(&format!("stream over {version:?}"));
        body["stream"] = json!(true);
        let resp = client.post(&url).bearer_auth(KEY).json(&body).send().await.unwrap();
        assert_eq!(resp.version(), version);
        assert_eq!(resp.status(), 200, "{version:?}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("\"delta\""), "{version:?}: {text}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{version:?}: {text}");
    }
}
