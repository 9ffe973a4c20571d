//! The audit log survives `kill -9`: a child process (this test binary,
//! re-run as `crash_child`) dispatches commands and reports each one the
//! service acknowledged; the parent SIGKILLs it mid-run, reopens the store
//! and finds every acknowledged command — and every accepted request — in it.

mod common;

use breakwater_iot::clock::Clock;
use breakwater_iot::config::{IotConfig, MqttConfig};
use breakwater_iot::devices::{DeviceFaults, run_simulated_devices};
use breakwater_iot::store::{AuditQuery, Store};
use breakwater_iot::{IotService, Submit};
use breakwater_testkit::Mosquitto;
use common::home;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const STORE_ENV: &str = "BW_IOT_CRASH_STORE";
const BROKER_ENV: &str = "BW_IOT_CRASH_BROKER";

fn config(store: String, broker: String) -> IotConfig {
    let mut c = IotConfig::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/home.yaml"));
    c.mqtt = MqttConfig {
        url: broker,
        topic_prefix: "crash".into(),
        ack_timeout_ms: 2_000,
        max_attempts: 5,
        client_id: None,
    };
    c.store = store;
    c.limits.per_user_rpm = 1_000_000;
    c
}

/// The child: runs only when the parent starts it with the environment set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by `the_audit_log_survives_kill_9` as a child process"]
async fn crash_child() {
    let (Ok(store), Ok(broker)) = (std::env::var(STORE_ENV), std::env::var(BROKER_ENV)) else {
        return;
    };
    let svc = IotService::start_with(config(store, broker), home(), None, Clock::System)
        .await
        .unwrap();
    assert!(svc.wait_connected(Duration::from_secs(10)).await);
    let texts = ["turn on the kettle", "turn off the kettle", "dim the hall light to 40%"];
    let mut out = std::io::stdout();
    for i in 0..100_000usize {
        let rec = svc
            .submit(Submit {
                text: texts[i % texts.len()].into(),
                user: "crash".into(),
                idempotency_key: None,
            })
            .await
            .unwrap();
        let _ = writeln!(out, "ACCEPTED {}", rec.id);
        let rec = svc.wait_settled(&rec.id, Duration::from_secs(10)).await.unwrap();
        for c in &rec.commands {
            if c.status.as_str() == "acknowledged" {
                let _ = writeln!(out, "ACK {}", c.id);
            }
        }
        let _ = out.flush();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_survives_kill_9() {
    let broker = Mosquitto::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store_url = common::sqlite_url(&dir);
    let cfg = config(store_url.clone(), broker.url());
    let devices = run_simulated_devices(home(), &cfg.mqtt, DeviceFaults::default())
        .await
        .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(STORE_ENV, &store_url)
        .env(BROKER_ENV, broker.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Read the child's reports on a thread; stop after 40 acknowledgements.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked = HashSet::new();
    let mut accepted = HashSet::new();
    let give_up = std::time::Instant::now() + Duration::from_secs(120);
    while acked.len() < 40 {
        assert!(
            std::time::Instant::now() < give_up,
            "the child acknowledged only {}",
            acked.len()
        );
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(l) => {
                if let Some(id) = l.strip_prefix("ACK ") {
                    acked.insert(id.to_string());
                } else if let Some(id) = l.strip_prefix("ACCEPTED ") {
                    accepted.insert(id.to_string());
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("the child stopped early: {e}"),
        }
    }
    // SIGKILL, in the middle of whatever it is doing
    child.kill().unwrap();
    child.wait().unwrap();
    // whatever it reported before dying counts too
    for l in rx.iter() {
        if let Some(id) = l.strip_prefix("ACK ") {
            acked.insert(id.to_string());
        } else if let Some(id) = l.strip_prefix("ACCEPTED ") {
            accepted.insert(id.to_string());
        }
    }
    reader.join().unwrap();

    let store = Store::open(&store_url).await.unwrap();
    for id in &acked {
        let c = store.get_command(id).await.unwrap();
        let c = c.unwrap_or_else(|| panic!("acknowledged command {id} is missing after kill -9"));
        assert_eq!(c.status.as_str(), "acknowledged", "{id}");
    }
    let audit = store
        .audit(&AuditQuery {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let acked_in_log: HashSet<&str> = audit
        .iter()
        .filter(|e| e.event == "acknowledged")
        .filter_map(|e| e.command_id.as_deref())
        .collect();
    for id in &acked {
        assert!(
            acked_in_log.contains(id.as_str()),
            "{id} acknowledged but not in the audit log"
        );
    }
    let uttered: HashSet<&str> = audit
        .iter()
        .filter(|e| e.event == "utterance")
        .filter_map(|e| e.request_id.as_deref())
        .collect();
    for id in &accepted {
        assert!(
            uttered.contains(id.as_str()),
            "accepted request {id} is not in the audit log"
        );
    }
    println!(
        "after kill -9: {} acknowledged commands and {} accepted requests reported, all in the audit log",
        acked.len(),
        accepted.len()
    );
    store.close().await;
    devices.stop().await;
}
