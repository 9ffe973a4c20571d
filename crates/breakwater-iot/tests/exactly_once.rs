//! Dispatch over a real Mosquitto: acknowledgements, retries with the same
//! id, and exactly-once effect when the broker dies with 1,000 commands in
//! flight (device-side counters prove it).

mod common;

use breakwater_iot::clock::Clock;
use breakwater_iot::command::Command;
use breakwater_iot::config::MqttConfig;
use breakwater_iot::devices::{DeviceFaults, run_simulated_devices};
use breakwater_iot::dispatch::Dispatcher;
use breakwater_iot::registry::Action;
use breakwater_iot::status::{CommandStatus, RequestStatus};
use breakwater_iot::store::{NewCommand, NewRequest, Store};
use breakwater_testkit::Mosquitto;
use common::{eventually, home, sqlite_url};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn mqtt(broker: &Mosquitto, ack_timeout_ms: u64, max_attempts: u32) -> MqttConfig {
    MqttConfig {
        url: broker.url(),
        topic_prefix: "test".into(),
        ack_timeout_ms,
        max_attempts,
        client_id: None,
    }
}

/// Queues `n` commands for devices with power, `per_request` to a request.
async fn enqueue(store: &Store, tag: &str, n: usize, per_request: usize) -> Vec<String> {
    let reg = home();
    let powered: Vec<String> = reg
        .devices()
        .iter()
        .filter(|d| d.supports(Action::TurnOn) && !d.is_sensitive(Action::TurnOn))
        .map(|d| d.id.clone())
        .collect();
    let mut ids = Vec::new();
    for r in 0..n.div_ceil(per_request) {
        let req = NewRequest {
            id: format!("req_{tag}_{r}"),
            user: "load".into(),
            idempotency_key: None,
            text: "load".into(),
            status: RequestStatus::Dispatched,
            message: None,
            parse: json!({}),
            created_at: breakwater_iot::clock::system_now_ms(),
            confirm_deadline: None,
        };
        let cmds: Vec<NewCommand> = (0..per_request.min(n - r * per_request))
            .map(|i| {
                let k = r * per_request + i;
                let action = if k.is_multiple_of(2) {
                    Action::TurnOn
                } else {
                    Action::TurnOff
                };
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
        store.insert_request(&req, &cmds, &[]).await.unwrap();
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_acknowledged_and_lost_messages_retried_with_the_same_id() {
    let broker = Mosquitto::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&sqlite_url(&dir)).await.unwrap();
    // 40 attempts: a command fails one with p ≈ 0.5, all 40 with p ≈ 1e-12
    let cfg = mqtt(&broker, 300, 40);
    // a third of the messages are lost, a third of the acks too, some are duplicated
    let faults = DeviceFaults {
        drop: 0.3,
        drop_ack: 0.3,
        duplicate: 0.2,
        seed: 42,
        ..Default::default()
    };
    let devices = run_simulated_devices(home(), &cfg, faults).await.unwrap();
    let stop = CancellationToken::new();
    let dispatcher = Dispatcher::start(store.clone(), Clock::System, &cfg, stop.clone()).unwrap();
    assert!(dispatcher.wait_connected(Duration::from_secs(10)).await);
    let ids = enqueue(&store, "a", 40, 10).await;
    dispatcher.notify();
    eventually(Duration::from_secs(60), "all acknowledged", || async {
        store.count_commands(CommandStatus::Acknowledged).await.unwrap() == 40
    })
    .await;
    for id in &ids {
        assert_eq!(devices.applications(id), 1, "{id} applied once");
    }
    let retried = store
        .audit(&Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.event == "sent" && a.detail["attempt"].as_i64() > Some(1))
        .count();
    assert!(retried > 0, "with 30% loss some commands must have been resent");
    let dup: u64 = devices.all_counters().values().map(|c| c.duplicates).sum();
    assert!(dup > 0, "redeliveries were recognised by id");
    dispatcher.shutdown().await;
    devices.stop().await;
}

/// 1,000 commands, the broker SIGKILLed while they are on their way and 400
/// more queued while it is down; `dispatchers` instances share the store.
async fn broker_restart(store_url: &str, dispatchers: usize) {
    let mut broker = Mosquitto::start_with(true).await.unwrap();
    let store = Store::open(store_url).await.unwrap();
    let cfg = mqtt(&broker, 2_000, 30);
    let faults = DeviceFaults {
        duplicate: 0.05,
        seed: 7,
        ..Default::default()
    };
    let devices = run_simulated_devices(home(), &cfg, faults).await.unwrap();
    let mut instances = Vec::new();
    for _ in 0..dispatchers {
        let s = Store::open(store_url).await.unwrap();
        let d = Dispatcher::start(s, Clock::System, &cfg, CancellationToken::new()).unwrap();
        assert!(d.wait_connected(Duration::from_secs(10)).await);
        instances.push(d);
    }

    let mut ids = enqueue(&store, "before", 600, 50).await;
    instances.iter().for_each(Dispatcher::notify);
    // kill the broker while commands are on their way
    eventually(Duration::from_secs(60), "some commands acknowledged", || async {
        store.count_commands(CommandStatus::Acknowledged).await.unwrap() >= 100
    })
    .await;
    broker.kill();
    let acked_at_kill = store.count_commands(CommandStatus::Acknowledged).await.unwrap();
    // more commands arrive while it is down: they wait in the outbox
    ids.extend(enqueue(&store, "during", 400, 50).await);
    instances.iter().for_each(Dispatcher::notify);
    broker.restart().await.unwrap();
    eventually(Duration::from_secs(90), "all 1000 acknowledged", || async {
        store.count_commands(CommandStatus::Acknowledged).await.unwrap() == 1000
    })
    .await;

    assert_eq!(ids.len(), 1000);
    let apps = devices.all_applications();
    let missing: Vec<&String> = ids.iter().filter(|id| !apps.contains_key(*id)).collect();
    let repeated: Vec<(&String, &u32)> = apps.iter().filter(|(_, n)| **n != 1).collect();
    assert!(missing.is_empty(), "{} commands never applied", missing.len());
    assert!(repeated.is_empty(), "commands applied more than once: {repeated:?}");
    assert_eq!(devices.total_applied(), 1000);
    let dups: u64 = devices.all_counters().values().map(|c| c.duplicates).sum();
    println!(
        "{} ({dispatchers} dispatcher(s)): {acked_at_kill} of 1000 acknowledged when the broker was killed; \
         every command applied exactly once; {dups} redeliveries recognised by id",
        store.engine()
    );
    for d in instances {
        d.shutdown().await;
    }
    devices.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_with_1000_commands_in_flight_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    tokio::time::timeout(Duration::from_secs(240), broker_restart(&sqlite_url(&dir), 1))
        .await
        .expect("the test is bounded in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_through_a_broker_restart_apply_each_command_once() {
    let db = breakwater_testkit::PgDatabase::create().unwrap();
    tokio::time::timeout(Duration::from_secs(240), broker_restart(&db.url(), 2))
        .await
        .expect("the test is bounded in time");
}
