//! The MQTT scenario: IoT commands dispatched through a real Mosquitto that
//! is SIGKILLed while they are on their way and restarted; simulated
//! devices count how often each command was applied (lost: 0 times,
//! duplicated: more than once).

use crate::report::Row;
use breakwater_iot::clock::Clock;
use breakwater_iot::command::Command;
use breakwater_iot::config::MqttConfig;
use breakwater_iot::devices::{DeviceFaults, run_simulated_devices};
use breakwater_iot::dispatch::Dispatcher;
use breakwater_iot::registry::{Action, Registry};
use breakwater_iot::status::{CommandStatus, RequestStatus};
use breakwater_iot::store::{NewCommand, NewRequest, Store};
use breakwater_testkit::Mosquitto;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const REGISTRY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/home.yaml");

async fn enqueue(store: &Store, reg: &Registry, tag: &str, n: usize) -> Result<Vec<String>, String> {
    let powered: Vec<String> = reg
        .devices()
        .iter()
        .filter(|d| d.supports(Action::TurnOn) && !d.is_sensitive(Action::TurnOn))
        .map(|d| d.id.clone())
        .collect();
    if powered.is_empty() {
        return Err("the registry has no device to turn on".into());
    }
    let per_request = 50;
    let mut ids = Vec::new();
    for r in 0..n.div_ceil(per_request) {
        let req = NewRequest {
            id: format!("req_{tag}_{r}"),
            user: "bench".into(),
            idempotency_key: None,
            text: "bench".into(),
            status: RequestStatus::Dispatched,
            message: None,
            parse: json!({}),
            created_at: breakwater_iot::clock::system_now_ms(),
            confirm_deadline: None,
        };
        let cmds: Vec<NewCommand> = (0..per_request.min(n - r * per_request))
            .map(|i| {
                let k = r * per_request + i;
                let action = if k % 2 == 0 { Action::TurnOn } else { Action::TurnOff };
                NewCommand {
                    id: format!("cmd_{tag}_{k}"),
                    seq: i as i64,
                    command: Command::new(&powered[k % powered.len()], action),
                    sensitive: false,
                    status: CommandStatus::Queued,
                    due_at: None,
                }
            })
            .collect();
        ids.extend(cmds.iter().map(|c| c.id.clone()));
        store
            .insert_request(&req, &cmds, &[])
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(ids)
}

async fn acked(store: &Store) -> i64 {
    store.count_commands(CommandStatus::Acknowledged).await.unwrap_or(0)
}

/// `n` commands: 60% queued before the broker is killed (after a tenth
/// are acknowledged), 40% while it is down; then it restarts and every
/// command must be applied exactly once.
pub async fn broker_restart(n: usize) -> Result<Row, String> {
    let started = Instant::now();
    let reg = Arc::new(Registry::load(REGISTRY).map_err(|e| format!("{REGISTRY}: {e}"))?);
    let mut broker = Mosquitto::start_with(true)
        .await
        .map_err(|e| format!("mosquitto: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let url = format!("sqlite://{}", dir.path().join("iot.db").display());
    let store = Store::open(&url).await.map_err(|e| e.to_string())?;
    let cfg = MqttConfig {
        url: broker.url(),
        topic_prefix: "bench".into(),
        ack_timeout_ms: 2_000,
        max_attempts: 30,
        client_id: None,
    };
    let faults = DeviceFaults {
        duplicate: 0.05,
        seed: 7,
        ..Default::default()
    };
    let devices = run_simulated_devices(reg.clone(), &cfg, faults).await?;
    let dispatcher = Dispatcher::start(store.clone(), Clock::System, &cfg, CancellationToken::new())?;
    if !dispatcher.wait_connected(Duration::from_secs(10)).await {
        return Err("the dispatcher did not connect to mosquitto".into());
    }
    let before = n * 6 / 10;
    let mut ids = enqueue(&store, &reg, "before", before).await?;
    dispatcher.notify();
    let give_up = Instant::now() + Duration::from_secs(60);
    while acked(&store).await < (n / 10) as i64 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.kill();
    let acked_at_kill = acked(&store).await;
    ids.extend(enqueue(&store, &reg, "during", n - before).await?);
    dispatcher.notify();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart().await.map_err(|e| format!("mosquitto restart: {e}"))?;
    let give_up = Instant::now() + Duration::from_secs(120);
    while acked(&store).await < n as i64 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_acked = acked(&store).await;
    let apps = devices.all_applications();
    let lost = ids.iter().filter(|id| !apps.contains_key(*id)).count() as u64;
    let duplicated = apps.values().filter(|n| **n > 1).count() as u64;
    let redeliveries: u64 = devices.all_counters().values().map(|c| c.duplicates).sum();
    dispatcher.shutdown().await;
    devices.stop().await;
    let mut row = Row {
        name: "mqtt_restart".into(),
        requests: n as u64,
        successes: all_acked.max(0) as u64,
        lost: Some(lost),
        duplicated: Some(duplicated),
        no_latency: true,
        ..Default::default()
    };
    if all_acked < n as i64 {
        row.failures
            .push(format!("mqtt_restart: only {all_acked} of {n} commands acknowledged"));
    }
    row.note = format!(
        "{n} IoT commands over MQTT QoS 1; mosquitto SIGKILLed with {acked_at_kill} acknowledged, {} more queued while it was down, restarted; \
         {redeliveries} redeliveries recognised by command id; {:.1} s in all. Upstream amplification is not applicable (0).",
        n - before,
        started.elapsed().as_secs_f64()
    );
    Ok(row)
}
