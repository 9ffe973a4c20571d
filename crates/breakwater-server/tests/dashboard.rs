//! The live dashboard: access (admin key, cookie, loopback), the page, the
//! server-sent snapshots, and the page itself in a real headless chromium
//! (`tests/browser/dashboard.mjs`, driven by playwright-core).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Form};
use breakwater::simulator::SimulatorConfig;
use breakwater_server::dashboard::{self, KeyForm};
use breakwater_server::routes::common::Peer;
use breakwater_server::serve::{self, Running};
use breakwater_simulator::SimServer;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ADMIN: &str = "dash-admin-fake-key";
const TENANT: &str = "tenant-fake-key-1";

struct Setup {
    gw: Running,
    _sims: Vec<SimServer>,
}

/// A gateway in front of three simulators: `bad` always answers 500 (its
/// breaker trips), `flaky` fails a third of the time (retries), `good`
/// always answers.
async fn setup(admin_key: Option<&str>) -> Setup {
    setup_with(admin_key, "").await
}

async fn setup_with(admin_key: Option<&str>, extra_yaml: &str) -> Setup {
    let sim = |p: f64| {
        let mut c = SimulatorConfig::instant();
        c.latency_ms = 2;
        c.faults.server_error = p;
        SimServer::start(c)
    };
    let bad = sim(1.0).await.unwrap();
    let flaky = sim(0.3).await.unwrap();
    let good = sim(0.0).await.unwrap();
    let admin = admin_key.map(|k| format!(", admin_key: \"{k}\"")).unwrap_or_default();
    let yaml = format!(
        r#"
server: {{ listen: "127.0.0.1:0"{admin} }}
providers:
  bad: {{ kind: openai, base_url: "{bad}", api_key: "sk-fake", limits: {{ rpm: 100000 }} }}
  flaky: {{ kind: openai, base_url: "{flaky}", api_key: "sk-fake" }}
  good: {{ kind: openai, base_url: "{good}", api_key: "sk-fake", limits: {{ max_in_flight: 64 }} }}
models:
  default:
    strategy: priority
    targets:
      - {{ provider: bad, model: m }}
      - {{ provider: flaky, model: m }}
      - {{ provider: good, model: m }}
    cache: {{ enabled: true, ttl_s: 60 }}
  broken:
    targets: [{{ provider: bad, model: m }}]
retry: {{ max_attempts: 2, backoff: {{ base_ms: 1, max_ms: 5, jitter: none }} }}
breaker: {{ consecutive_failures: 3, open_s: 120, max_open_s: 600, min_calls: 1000 }}
keys:
  - {{ name: team-a, key: "{TENANT}", limits: {{ rpm: 100000 }} }}
{extra_yaml}
"#,
        bad = bad.openai_base(),
        flaky = flaky.openai_base(),
        good = good.openai_base(),
    );
    let cfg = breakwater_server::config::parse(&yaml, "dashboard-test.yaml", &|_| None).unwrap();
    let gw = serve::start(cfg, "test".into(), &serve::Options::default())
        .await
        .unwrap();
    Setup {
        gw,
        _sims: vec![bad, flaky, good],
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn chat(c: &reqwest::Client, url: &str, i: usize) -> StatusCode {
    // Some prompts repeat (cache hits), every fifth request streams (time to
    // first token).
    let content = if i.is_multiple_of(4) {
        format!("hello {}", i % 7)
    } else {
        format!("hello {i}")
    };
    let body = serde_json::json!({
        "model": "default",
        "temperature": 0,
        "stream": i % 5 == 1,
        "messages": [{"role": "user", "content": content}],
    });
    let Ok(r) = c
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(TENANT)
        .json(&body)
        .send()
        .await
    else {
        return StatusCode::BAD_GATEWAY;
    };
    let status = r.status();
    let _ = r.bytes().await;
    status
}

/// Reads `snapshot` server-sent events one at a time.
struct Snapshots {
    resp: reqwest::Response,
    buf: String,
}

impl Snapshots {
    fn new(resp: reqwest::Response) -> Self {
        Snapshots {
            resp,
            buf: String::new(),
        }
    }

    /// The next snapshot (within 10 s).
    async fn next(&mut self) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                if event.lines().any(|l| l == "event: snapshot") {
                    let data: String = event
                        .lines()
                        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                        .collect();
                    return serde_json::from_str(&data).unwrap();
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("a snapshot arrives within 10 s")
                .unwrap()
                .expect("the stream stays open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// The first `n` snapshots of a stream.
async fn snapshots(resp: reqwest::Response, n: usize) -> Vec<serde_json::Value> {
    let mut s = Snapshots::new(resp);
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(s.next().await);
    }
    out
}

#[tokio::test]
async fn page_and_assets_are_served_with_their_types() {
    let s = setup(None).await;
    let c = http();
    let url = s.gw.url();
    let r = c.get(format!("{url}/dashboard")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("/dashboard/app.js") && page.contains("id=\"targets\""));
    assert!(!page.contains("http://") && !page.contains("https://"), "no CDN");
    let js = c.get(format!("{url}/dashboard/app.js")).send().await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(js.text().await.unwrap().contains("EventSource"));
    let css = c.get(format!("{url}/dashboard/app.css")).send().await.unwrap();
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
}

#[tokio::test]
async fn the_admin_key_or_its_cookie_is_required() {
    let s = setup(Some(ADMIN)).await;
    let c = http();
    let url = s.gw.url();
    // Nothing presented: 401, with the sign-in form.
    let r = c.get(format!("{url}/dashboard")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("name=\"key\""));
    let r = c.get(format!("{url}/dashboard/events")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A wrong key: 401, no cookie.
    let r = c.get(format!("{url}/dashboard?key=wrong")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    // A forged cookie: 401.
    let r = c
        .get(format!("{url}/dashboard/events"))
        .header("cookie", format!("{}=00ff", dashboard::COOKIE))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The header works like on the admin routes.
    let r = c
        .get(format!("{url}/dashboard"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The key once (query or form) → a redirect that sets the cookie.
    for r in [
        c.get(format!("{url}/dashboard?key={ADMIN}")).send().await.unwrap(),
        c.post(format!("{url}/dashboard"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("key={ADMIN}"))
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/dashboard");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/dashboard"));
        assert!(!set.contains(ADMIN), "the cookie never holds the key");
        let pair = set.split(';').next().unwrap().to_string();
        let page = c
            .get(format!("{url}/dashboard"))
            .header("cookie", &pair)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let ev = c
            .get(format!("{url}/dashboard/events"))
            .header("cookie", format!("other=1; {pair}"))
            .send()
            .await
            .unwrap();
        assert_eq!(ev.status(), StatusCode::OK);
        assert!(
            ev.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        assert_eq!(snapshots(ev, 1).await.len(), 1);
    }
    // The cookie does not open the other admin routes.
    let r = c.get(format!("{url}/admin/stats")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_an_admin_key_only_loopback_gets_in() {
    let s = setup(None).await;
    let app = s.gw.app.clone();
    let far = Peer("192.0.2.7:40000".parse().unwrap());
    let r = dashboard::page(
        State(app.clone()),
        Extension(far),
        HeaderMap::new(),
        Query(KeyForm::default()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = dashboard::events(State(app.clone()), Extension(far), HeaderMap::new()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = dashboard::sign_in_form(
        State(app.clone()),
        Extension(far),
        Form(KeyForm {
            key: Some("anything".into()),
        }),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let near = Peer("127.0.0.1:40000".parse().unwrap());
    let r = dashboard::page(State(app), Extension(near), HeaderMap::new(), Query(KeyForm::default())).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_carries_the_fields_the_page_reads() {
    let s = setup(None).await;
    let c = http();
    let url = s.gw.url();
    let first = snapshots(c.get(format!("{url}/dashboard/events")).send().await.unwrap(), 1).await;
    assert_eq!(first[0]["totals"]["requests"], 0, "no traffic yet");
    for i in 0..40 {
        chat(&c, &url, i).await;
    }
    // Poll (bounded) until the breaker of `bad` shows open in a snapshot.
    let mut stream = Snapshots::new(c.get(format!("{url}/dashboard/events")).send().await.unwrap());
    let mut last = serde_json::Value::Null;
    for _ in 0..5 {
        last = stream.next().await;
        if last["targets"].as_array().unwrap().iter().any(|t| t["state"] == "open") {
            break;
        }
    }
    let s = &last;
    assert_eq!(s["version"], dashboard::SNAPSHOT_VERSION);
    for path in [
        "/traffic/rps",
        "/traffic/latency_ms/p50",
        "/traffic/latency_ms/p99",
        "/traffic/ttft_ms",
        "/traffic/requests_300s",
        "/traffic/retries_300s",
        "/traffic/failovers_300s",
        "/traffic/errors_by_kind_300s",
        "/totals/requests",
        "/cache/window_300s/hit_rate",
        "/cache/window_300s/tokens_saved",
        "/cache/window_300s/usd_saved",
        "/cache/tiers/l1_hits",
        "/limits/keys",
        "/limits/upstream",
        "/limits/window_s",
        "/breaker_changes",
        "/iot",
        "/at_ms",
    ] {
        assert!(s.pointer(path).is_some(), "snapshot lacks {path}: {s:#}");
    }
    assert_eq!(s["series"].as_array().unwrap().len(), 120);
    for f in [
        "requests",
        "errors",
        "retries",
        "failovers",
        "hedges",
        "p50_ms",
        "p99_ms",
    ] {
        assert!(s["series"][0].get(f).is_some(), "series point lacks {f}");
    }
    assert!(s["traffic"]["requests_300s"].as_u64().unwrap() >= 40);
    assert!(s["traffic"]["retries_300s"].as_u64().unwrap() > 0, "{s:#}");
    let bad = s["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "bad/m")
        .unwrap();
    assert_eq!(bad["state"], "open", "{bad:#}");
    assert!(bad["errors_by_kind"]["server_error"].as_u64().unwrap() >= 3);
    let hist = bad["history"].as_array().unwrap();
    assert!(
        hist.iter().any(|c| c["to"] == "open" && c["from"] == "closed"),
        "{hist:?}"
    );
    let key = &s["limits"]["keys"][0];
    assert_eq!(
        (key["name"].as_str(), key["rpm"].as_u64()),
        (Some("team-a"), Some(100000))
    );
    let up: Vec<&str> = s["limits"]["upstream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(up, ["bad", "good"]);
    assert!(s["iot"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iot_feed_shows_commands_confirmations_and_devices() {
    use breakwater_iot::{DeviceFaults, run_simulated_devices};
    let broker = breakwater_testkit::Mosquitto::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/home.yaml");
    // `model: broken` always fails: the rule-based parser answers.
    let iot = format!(
        "iot:\n  registry: \"{registry}\"\n  model: broken\n  mqtt: {{ url: \"{}\", topic_prefix: home }}\n  store: \"sqlite://{}\"\n",
        broker.url(),
        dir.path().join("iot.db").display()
    );
    let s = setup_with(None, &iot).await;
    let svc = s.gw.app.iot.get().expect("the IoT service runs").clone();
    let reg = svc.registry().clone();
    let mqtt = s.gw.app.gateway.load().config.iot.as_ref().unwrap().mqtt.clone();
    let _devices = run_simulated_devices(reg, &mqtt, DeviceFaults::default())
        .await
        .unwrap();
    assert!(svc.wait_connected(Duration::from_secs(10)).await);
    let c = http();
    let url = s.gw.url();
    for text in ["turn on the kitchen light", "unlock the front door"] {
        let r = c
            .post(format!("{url}/iot/commands"))
            .bearer_auth(TENANT)
            .json(&serde_json::json!({"text": text, "user": "ann"}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{text}: {}", r.status());
    }
    let resp = c.get(format!("{url}/dashboard/events")).send().await.unwrap();
    let mut stream = Snapshots::new(resp);
    let mut found = None;
    for _ in 0..8 {
        let snap = stream.next().await;
        let iot = &snap["iot"];
        let states = iot["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| !d["state"].is_null())
            .count();
        if iot["recent"].as_array().unwrap().len() == 2 && states > 0 {
            found = Some(snap);
            break;
        }
    }
    let snap = found.expect("the feed shows both commands and a device state within 8 snapshots");
    let iot = &snap["iot"];
    assert_eq!(iot["connected"], true);
    assert!(iot["error"].is_null());
    let pending = iot["pending"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{iot:#}");
    assert_eq!(pending[0]["text"], "unlock the front door");
    assert!(pending[0]["confirm_deadline"].is_i64());
    assert!(
        pending[0].get("parse").is_none(),
        "the parse details stay out of the feed"
    );
    let recent = iot["recent"].as_array().unwrap();
    assert!(
        recent
            .iter()
            .any(|r| r["status"] == "dispatched" && r["commands"][0]["command"]["device"].is_string())
    );
    assert_eq!(iot["devices"].as_array().unwrap().len(), reg_len());
}

fn reg_len() -> usize {
    breakwater_iot::registry::Registry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/home.yaml"))
        .unwrap()
        .devices()
        .len()
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What the browser test needs, or why it cannot run.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("BREAKWATER_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} is missing (apt-get install chromium, or run scripts/test-deps)",
            chromium.display()
        ));
    }
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Err("node is missing (apt-get install nodejs npm, or run scripts/test-deps)".into());
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {} (scripts/test-deps does)",
            browser_dir().display()
        ));
    }
    Ok((chromium, browser_dir().join("dashboard.mjs")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_updates_live_in_a_real_browser() {
    let (chromium, script) = match browser_tools() {
        Ok(t) => t,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the browser test cannot run in CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED the_page_updates_live_in_a_real_browser: {why}");
            return;
        }
    };
    let s = setup(Some(ADMIN)).await;
    let url = s.gw.url();
    // Steady traffic once the page has shown its empty state, until the
    // script asks for the shutdown (bounded by the timeout below).
    let go = tokio_util::sync::CancellationToken::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let traffic = {
        let (go, stop) = (go.clone(), stop.clone());
        let url = url.clone();
        tokio::spawn(async move {
            go.cancelled().await;
            let c = http();
            let mut i = 0usize;
            while !stop.is_cancelled() {
                let batch: Vec<_> = (0..8).map(|k| chat(&c, &url, i + k)).collect();
                futures::future::join_all(batch).await;
                i += 8;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            i
        })
    };
    let shot_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shot_dir).unwrap();
    let shot = shot_dir.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let mut child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("{url}/dashboard?key={ADMIN}"))
        .arg(&shot)
        .env("CHROMIUM", &chromium)
        .current_dir(browser_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut buf = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut buf).await;
        buf
    });
    let app = s.gw.app.clone();
    let lines = {
        let (go, stop) = (go.clone(), stop.clone());
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let mut all = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.trim() {
                    "READY-FOR-TRAFFIC" => go.cancel(),
                    "READY-FOR-SHUTDOWN" => {
                        stop.cancel();
                        app.shutdown.cancel();
                    }
                    _ => {}
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        })
    };
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .expect("the browser script finishes within 90 s")
        .expect("node runs");
    go.cancel();
    stop.cancel();
    let sent = traffic.await.unwrap();
    let stdout = lines.await.unwrap();
    let stderr = errors.await.unwrap();
    eprintln!("--- dashboard.mjs stdout\n{stdout}\n--- stderr\n{stderr}\n--- {sent} requests sent");
    assert!(status.success(), "the browser script failed: {status}");
    assert!(shot.exists(), "a screenshot at {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}
