//! `breakwater serve` as a process: SIGHUP reloads, SIGTERM drains the
//! open streams and exits 0.

use breakwater_testkit::{free_port, wait_for_port};
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn config(port: u16, alias: &str) -> String {
    format!(
        r#"
server:
  listen: "127.0.0.1:{port}"
  shutdown_grace_s: 20
providers:
  sim:
    kind: simulator
    simulator: {{ latency_ms: 10, tokens_per_s: 40, reply_tokens: 40, seed: 7 }}
models:
  {alias}:
    targets:
      - {{ provider: sim, model: sim-1 }}
"#
    )
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig}");
}

fn chat(model: &str, stream: bool) -> serde_json::Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn sighup_reloads_and_sigterm_drains_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    let port = free_port();
    std::fs::write(&path, config(port, "first")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_breakwater"))
        .args(["serve", "--no-watch", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut gw = Gateway(child);
    wait_for_port(port, Duration::from_secs(20))
        .await
        .expect("the gateway listens");
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    assert_eq!(
        http.post(&url)
            .json(&chat("first", false))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.post(&url)
            .json(&chat("second", false))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // SIGHUP: the new file is read; `second` now exists.
    std::fs::write(&path, config(port, "second")).unwrap();
    signal(&gw.0, "HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = http
            .post(&url)
            .json(&chat("second", false))
            .send()
            .await
            .unwrap()
            .status();
        if s == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGTERM with a stream open: the stream ends normally, then the
    // process exits 0.
    let mut resp = http.post(&url).json(&chat("second", true)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().expect("a first chunk");
    let mut text = String::from_utf8_lossy(&first).into_owned();
    signal(&gw.0, "TERM");
    while let Some(c) = resp.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = gw.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}
