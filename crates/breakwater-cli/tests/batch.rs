//! `breakwater batch` end to end: the built binary against an HTTP
//! simulator on 127.0.0.1, with a small config file in a tempdir.

use breakwater::simulator::SimulatorConfig;
use breakwater_simulator::SimServer;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_breakwater");
/// Upper bound for any one run of the binary.
const LIMIT: Duration = Duration::from_secs(90);

struct Setup {
    sim: SimServer,
    dir: tempfile::TempDir,
}

impl Setup {
    async fn new(sim: SimulatorConfig) -> Setup {
        let sim = SimServer::start(sim).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "providers:\n  sim:\n    kind: openai\n    base_url: \"{}\"\n    api_key: sk-fake-test\n\
             models:\n  m:\n    targets: [{{provider: sim, model: sim-1}}]\n\
             retry:\n  max_attempts: 1\n  per_kind: {{rate_limited: {{max_attempts: 1}}}}\n\
             prices:\n  sim-1: {{input: 1.0, output: 2.0}}\n",
            sim.openai_base()
        );
        std::fs::write(dir.path().join("bw.yaml"), cfg).unwrap();
        Setup { sim, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_input(&self, lines: &[String]) -> PathBuf {
        let p = self.path("in.jsonl");
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.current_dir(self.dir.path())
            .arg("batch")
            .arg(self.path("in.jsonl"))
            .arg("--out")
            .arg(self.path("out.jsonl"))
            .arg("--config")
            .arg(self.path("bw.yaml"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    async fn run(&self, extra: &[&str]) -> Output {
        let child = self.command(extra).spawn().unwrap();
        tokio::time::timeout(LIMIT, child.wait_with_output())
            .await
            .expect("the batch finishes in time")
            .unwrap()
    }

    fn results(&self) -> Vec<Value> {
        read_results(&self.path("out.jsonl"))
    }
}

fn read_results(p: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn chat(id: &str, prompt: &str) -> String {
    json!({"custom_id": id, "method": "POST", "url": "/v1/chat/completions",
           "body": {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": 5}})
    .to_string()
}

fn by_id(results: &[Value]) -> HashMap<String, Value> {
    let mut m = HashMap::new();
    for r in results {
        if let Some(id) = r["custom_id"].as_str() {
            assert!(m.insert(id.to_string(), r.clone()).is_none(), "custom_id {id} twice");
        }
    }
    m
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits until the output has at least `n` lines.
async fn wait_for_lines(p: &Path, n: usize, child: &mut Child) {
    let until = tokio::time::Instant::now() + LIMIT;
    loop {
        let have = std::fs::read_to_string(p).map_or(0, |t| t.matches('\n').count());
        if have >= n {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the batch ended before {n} lines");
        assert!(tokio::time::Instant::now() < until, "no {n} lines in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_format_errors_per_line_and_bad_lines() {
    let s = Setup::new(SimulatorConfig {
        latency_ms: 1,
        context_tokens: 60,
        ..SimulatorConfig::default()
    })
    .await;
    let long = "word ".repeat(400);
    s.write_input(&[
        chat("ok-1", "What is the capital of Japan?"),
        chat("too-long", &long),
        json!({"custom_id": "emb", "method": "POST", "url": "/v1/embeddings",
               "body": {"model": "m", "input": "hello"}})
        .to_string(),
        "{this is not json".to_string(),
        json!({"custom_id": "bad-url", "method": "POST", "url": "/v1/files", "body": {}}).to_string(),
        json!({"method": "POST", "url": "/v1/chat/completions", "body": {}}).to_string(),
        json!({"custom_id": "long-answer", "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 600}})
        .to_string(),
    ]);
    let o = s.run(&["--concurrency", "2"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("3 ok, 4 failed (3 bad lines)"), "{}", stderr(&o));
    let results = s.results();
    assert_eq!(results.len(), 7, "{results:#?}");
    let m = by_id(&results);

    let ok = &m["ok-1"];
    assert_eq!(ok["id"], "batch_req_1");
    assert_eq!(ok["response"]["status_code"], 200);
    assert!(ok["response"]["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(ok["response"]["body"]["object"], "chat.completion");
    assert!(ok["error"].is_null());

    let long = &m["too-long"];
    assert_eq!(long["error"]["code"], "context_length_exceeded", "{long}");
    assert_eq!(long["response"]["status_code"], 400);
    assert!(long["response"]["body"]["error"]["message"].is_string());

    let emb = &m["emb"];
    assert_eq!(emb["response"]["status_code"], 200, "{emb}");
    assert!(emb["response"]["body"]["data"][0]["embedding"].is_array());

    let url = &m["bad-url"];
    assert_eq!(url["error"]["code"], "invalid_request");
    assert!(
        url["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 5: field `url`")
    );
    let unnamed: Vec<&Value> = results.iter().filter(|r| r["custom_id"].is_null()).collect();
    assert_eq!(unnamed.len(), 2);
    assert!(unnamed.iter().any(|r| {
        r["line"] == 4
            && r["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("line 4: not valid JSON")
    }));
    assert!(
        unnamed
            .iter()
            .any(|r| r["line"] == 6 && r["error"]["message"].as_str().unwrap() == "line 6: field `custom_id`: missing")
    );

    // The adaptive mode: a long expected answer is streamed upstream and
    // assembled; the short ones are called for complete answers.
    assert_eq!(m["long-answer"]["response"]["body"]["object"], "chat.completion");
    assert_eq!(s.sim.stats().streams_started, 1);

    // Run again: everything is already there; nothing is called or written.
    let calls = s.sim.stats().requests;
    let o = s.run(&[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.results().len(), 7);
    assert_eq!(s.sim.stats().requests, calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_custom_ids_are_refused() {
    let s = Setup::new(SimulatorConfig::default()).await;
    s.write_input(&[chat("a", "one"), chat("b", "two"), chat("a", "three")]);
    let o = s.run(&[]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("duplicate custom_id \"a\" on lines 1 and 3"),
        "{}",
        stderr(&o)
    );
    assert!(!s.path("out.jsonl").exists());
    assert_eq!(s.sim.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_calls_nothing() {
    let s = Setup::new(SimulatorConfig::default()).await;
    s.write_input(&[chat("a", "one"), chat("b", "two"), "oops".into()]);
    let o = s.run(&["--dry-run"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("requests: 2"), "{out}");
    assert!(out.contains("bad lines: 1"), "{out}");
    assert!(out.contains("completion tokens (est., upper): 10"), "{out}");
    assert!(out.contains("cost (est.): $0.0000"), "{out}");
    assert!(!out.contains("no price"), "{out}");
    assert!(!s.path("out.jsonl").exists());
    assert_eq!(s.sim.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_sigkill_gives_each_custom_id_once() {
    let s = Setup::new(SimulatorConfig {
        latency_ms: 100,
        ..SimulatorConfig::default()
    })
    .await;
    let n = 30;
    let lines: Vec<String> = (0..n)
        .map(|i| chat(&format!("r{i}"), &format!("question {i}")))
        .collect();
    s.write_input(&lines);
    let out = s.path("out.jsonl");
    let mut child = s.command(&["--concurrency", "2"]).spawn().unwrap();
    wait_for_lines(&out, 3, &mut child).await;
    child.kill().await.unwrap(); // SIGKILL
    let first = s.results().len();
    // A torn last line, as a kill in the middle of a write would leave.
    let mut text = std::fs::read_to_string(&out).unwrap();
    text.push_str("{\"id\":\"batch_req_9\",\"custom_");
    std::fs::write(&out, text).unwrap();

    let o = s.run(&["--concurrency", "4"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("cut a torn last line"), "{}", stderr(&o));
    let results = s.results();
    assert_eq!(results.len(), n, "{} lines after the kill", first);
    let m = by_id(&results);
    for i in 0..n {
        assert_eq!(m[&format!("r{i}")]["response"]["status_code"], 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_in_flight_requests_and_exits_130() {
    let s = Setup::new(SimulatorConfig {
        latency_ms: 500,
        ..SimulatorConfig::default()
    })
    .await;
    let n = 40;
    let lines: Vec<String> = (0..n)
        .map(|i| chat(&format!("r{i}"), &format!("question {i}")))
        .collect();
    s.write_input(&lines);
    let out = s.path("out.jsonl");
    let mut child = s.command(&["--concurrency", "4"]).spawn().unwrap();
    wait_for_lines(&out, 1, &mut child).await;
    let pid = child.id().unwrap().to_string();
    let k = Command::new("kill").args(["-INT", &pid]).status().await.unwrap();
    assert!(k.success());
    let o = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("exits after SIGINT")
        .unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("run the same command again to resume"),
        "{}",
        stderr(&o)
    );
    let results = s.results();
    by_id(&results);
    // Every request the upstream received was finished and written.
    assert_eq!(results.len() as u64, s.sim.stats().requests);
    assert!(results.len() < n);
    assert!(results.iter().all(|r| r["response"]["status_code"] == 200));

    // And the rest runs on resume.
    let o = s.run(&[]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(by_id(&s.results()).len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_reported_per_line_with_their_kind() {
    let faults = breakwater::simulator::Faults {
        rate_limited: 1.0,
        ..Default::default()
    };
    let s = Setup::new(SimulatorConfig {
        latency_ms: 1,
        faults,
        ..SimulatorConfig::default()
    })
    .await;
    s.write_input(&[chat("a", "one"), chat("b", "two"), chat("c", "three")]);
    let o = s.run(&["--concurrency", "2"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let m = by_id(&s.results());
    assert_eq!(m.len(), 3);
    for r in m.values() {
        assert_eq!(r["error"]["code"], "rate_limited", "{r}");
        assert_eq!(r["response"]["status_code"], 429, "{r}");
        assert_eq!(r["response"]["body"]["error"]["type"], "rate_limit_error", "{r}");
    }
}
