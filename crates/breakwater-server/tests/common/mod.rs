//! Shared by the end-to-end tests: the venv `scripts/test-deps` makes, the
//! rule for missing dependencies (fail under CI, skip with a message
//! locally), child processes killed on drop, and an in-process gateway.

#![allow(dead_code)]

use breakwater_server::serve::{self, Running};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The e2e venv: `$BREAKWATER_E2E_VENV`, else `target/e2e-venv`.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("BREAKWATER_E2E_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/e2e-venv"))
}

/// Whether this run is CI's (`CI=true`): missing dependencies fail there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `found`, or — when a dependency is missing — a panic under CI and a
/// clear skip message (`None`) elsewhere.
pub fn require<T>(test: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(x) => Some(x),
        Err(why) => {
            assert!(
                !in_ci(),
                "{test}: {why} — CI must have it: run `bash scripts/test-deps`"
            );
            eprintln!("SKIPPED {test}: {why} (run `bash scripts/test-deps` to install it)");
            None
        }
    }
}

/// The venv's python with `import`s of `modules` working.
pub fn venv_python(modules: &[&str]) -> Result<PathBuf, String> {
    let py = venv_dir().join("bin/python");
    if !py.exists() {
        return Err(format!("no e2e venv at {}", venv_dir().display()));
    }
    let code = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let ok = Command::new(&py)
        .args(["-c", &code])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(py)
    } else {
        Err(format!("the e2e venv lacks {modules:?}"))
    }
}

/// A child process, killed (and reaped) when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to its end within `limit` (killed after it), returning
/// (success, stdout + stderr).
pub async fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("out.txt");
    let out = std::fs::File::create(&out_path).expect("output file");
    let err = out.try_clone().expect("output file");
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = ChildGuard(cmd.spawn().expect("spawn the child process"));
    let t0 = std::time::Instant::now();
    let ok = loop {
        if let Some(status) = child.0.try_wait().expect("wait for the child") {
            break status.success();
        }
        if t0.elapsed() > limit {
            let _ = child.0.kill();
            let _ = child.0.wait();
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            return (false, format!("{text}\n[killed after {limit:?}]"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (ok, std::fs::read_to_string(&out_path).unwrap_or_default())
}

/// A gateway started in-process from YAML (listening on a free loopback
/// port whatever the YAML says), shut down when dropped.
pub struct Gateway(pub Running);

impl Gateway {
    pub async fn start(yaml: &str) -> Gateway {
        let mut cfg = breakwater_server::config::parse(yaml, "e2e.yaml", &|_| None)
            .unwrap_or_else(|e| panic!("the test config is invalid: {e}"));
        cfg.server.listen = "127.0.0.1:0".into();
        let running = serve::start(cfg, "e2e test".into(), &serve::Options::default())
            .await
            .expect("the gateway starts");
        Gateway(running)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.0.url()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}
