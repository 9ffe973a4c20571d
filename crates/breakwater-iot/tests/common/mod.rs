//! Helpers shared by the integration tests.
#![allow(dead_code)]

use breakwater_iot::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The example home.
pub fn home() -> Arc<Registry> {
    Arc::new(Registry::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/home.yaml")).unwrap())
}

/// `sqlite://…` in a fresh temporary directory.
pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("iot.db").display())
}

/// Polls `check` every 20 ms until it returns true, up to `timeout`.
/// (Polling is for external processes: the broker, the devices.)
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < give_up, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
