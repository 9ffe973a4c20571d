//! Simulated devices: an agent per registry device, over MQTT, keeping
//! state, acknowledging commands by id, deduplicating redeliveries, and
//! injecting faults (dropped messages, delays, duplicate deliveries). The
//! counters of applied commands prove exactly-once effect in tests; `breakwater
//! iot devices --simulate` runs them for demos.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! use breakwater_iot::{config::MqttConfig, devices::{DeviceFaults, run_simulated_devices}, registry::Registry};
//! use std::sync::Arc;
//! let reg = Arc::new(Registry::load("examples/home.yaml").map_err(|e| e.to_string())?);
//! let sim = run_simulated_devices(reg, &MqttConfig::default(), DeviceFaults::default()).await?;
//! // … send commands …
//! println!("{} commands applied", sim.total_applied());
//! sim.stop().await;
//! # Ok(()) }
//! ```

use crate::command::{Command, Value as CmdValue, check_command};
use crate::config::MqttConfig;
use crate::mqtt::{self, AckMessage, SetMessage};
use crate::registry::{Action, Device, ParamSpec, Registry};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Faults the simulated devices inject, by probability per message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceFaults {
    /// Ignore the message entirely (no effect, no ack), as if it were lost.
    #[serde(default)]
    pub drop: f64,
    /// Apply, but lose the acknowledgement.
    #[serde(default)]
    pub drop_ack: f64,
    /// Handle the message twice, as a redelivery would.
    #[serde(default)]
    pub duplicate: f64,
    /// Handle the message after `delay_ms`.
    #[serde(default)]
    pub delay: f64,
    /// The delay, ms.
    #[serde(default)]
    pub delay_ms: u64,
    /// Seed of the fault draws.
    #[serde(default)]
    pub seed: u64,
}

/// What one device has done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceCounters {
    /// Commands applied (each id once).
    pub applied: u64,
    /// Redeliveries recognised by id and not applied again.
    pub duplicates: u64,
    /// Commands refused (not an action of the device, out of range).
    pub rejected: u64,
    /// Messages dropped by fault injection.
    pub dropped: u64,
}

struct Agent {
    device: Device,
    state: Map<String, Value>,
    seen: HashSet<String>,
    order: VecDeque<String>,
    counters: DeviceCounters,
}

/// How many ids each device remembers for deduplication.
const DEDUP_WINDOW: usize = 100_000;

#[derive(Default)]
struct Shared {
    agents: HashMap<String, Agent>,
    /// Applications per command id, across devices: the exactly-once proof.
    applications: HashMap<String, u32>,
}

/// Running simulated devices; stop with [`SimulatedDevices::stop`].
pub struct SimulatedDevices {
    shared: Arc<Mutex<Shared>>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
}

fn initial_state(d: &Device) -> Map<String, Value> {
    let mut s = Map::new();
    for (action, spec) in d.capabilities.actions() {
        match (action, spec) {
            (Action::TurnOn, _) => {
                s.insert("power".into(), json!("off"));
            }
            (Action::SetBrightness, ParamSpec::Number { max, .. }) => {
                s.insert("brightness".into(), json!(max));
            }
            (Action::SetColorTemperature, ParamSpec::Number { min, max, .. }) => {
                s.insert("color_temperature".into(), json!(((min + max) / 2.0).round()));
            }
            (Action::SetTemperature, ParamSpec::Number { min, max, .. }) => {
                s.insert("target_temperature".into(), json!(20f64.clamp(min, max)));
            }
            (Action::SetMode, ParamSpec::Choice(v)) => {
                s.insert("mode".into(), json!(v.first()));
            }
            (Action::SetPosition, _) | (Action::Open, _) => {
                s.insert("position".into(), json!(0));
            }
            (Action::Lock, _) => {
                s.insert("locked".into(), json!(true));
            }
            (Action::Arm, _) => {
                s.insert("alarm".into(), json!("disarmed"));
            }
            (Action::SetVolume, ParamSpec::Number { min, max, .. }) => {
                s.insert("volume".into(), json!(30f64.clamp(min, max)));
            }
            _ => {}
        }
    }
    s
}

impl Agent {
    /// Applies a command to the state; the device checks it itself.
    fn apply(&mut self, reg: &Registry, msg: &SetMessage) -> Result<(), String> {
        let cmd = Command {
            device: self.device.id.clone(),
            action: msg.action,
            value: msg.value.clone(),
            delta: msg.delta,
            at: None,
        };
        check_command(reg, &cmd).map_err(|e| e.to_string())?;
        let key = match msg.action {
            Action::SetBrightness => "brightness",
            Action::SetColorTemperature => "color_temperature",
            Action::SetTemperature => "target_temperature",
            Action::SetPosition => "position",
            Action::SetVolume => "volume",
            Action::TurnOn | Action::TurnOff => {
                let on = msg.action == Action::TurnOn;
                self.state.insert("power".into(), json!(if on { "on" } else { "off" }));
                return Ok(());
            }
            Action::Open | Action::Close => {
                let open = msg.action == Action::Open;
                self.state.insert("position".into(), json!(if open { 100 } else { 0 }));
                return Ok(());
            }
            Action::Lock | Action::Unlock => {
                self.state.insert("locked".into(), json!(msg.action == Action::Lock));
                return Ok(());
            }
            Action::Arm => {
                self.state.insert("alarm".into(), json!(msg.value));
                return Ok(());
            }
            Action::Disarm => {
                self.state.insert("alarm".into(), json!("disarmed"));
                return Ok(());
            }
            Action::SetMode => {
                self.state.insert("mode".into(), json!(msg.value));
                return Ok(());
            }
        };
        let Some(ParamSpec::Number { min, max, .. }) = self.device.param(msg.action) else {
            return Err(format!("{} has no {}", self.device.id, msg.action));
        };
        let current = self.state.get(key).and_then(Value::as_f64).unwrap_or(min);
        let next = match (&msg.value, msg.delta) {
            (Some(CmdValue::Number(n)), _) => *n,
            (None, Some(d)) => (current + d).clamp(min, max),
            _ => return Err("no value".into()),
        };
        self.state.insert(key.into(), json!(next));
        Ok(())
    }
}

/// A tiny seeded generator for fault draws (splitmix64).
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Starts agents for every device of `registry`, connected to the broker
/// of `mqtt` under its topic prefix, and returns once they are subscribed
/// (within 10 s). The agents use a persistent MQTT session, so commands
/// published while they are disconnected are delivered when they return.
pub async fn run_simulated_devices(
    registry: Arc<Registry>,
    mqtt: &MqttConfig,
    faults: DeviceFaults,
) -> Result<SimulatedDevices, String> {
    let client_id = format!("breakwater-sim-devices-{}", mqtt.topic_prefix.replace('/', "-"));
    let opts = mqtt::options(&client_id, &mqtt.url, false)?;
    let (client, mut eventloop) = AsyncClient::new(opts, 4096);
    let mut shared = Shared::default();
    for d in registry.devices() {
        shared.agents.insert(
            d.id.clone(),
            Agent {
                device: d.clone(),
                state: initial_state(d),
                seen: HashSet::new(),
                order: VecDeque::new(),
                counters: DeviceCounters::default(),
            },
        );
    }
    let shared = Arc::new(Mutex::new(shared));
    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(1);
    let (msg_tx, mut msg_rx) = mpsc::unbounded_channel::<(String, SetMessage)>();
    let prefix = mqtt.topic_prefix.clone();
    let mut tasks = JoinSet::new();

    // The event loop: (re)subscribes on every connection, forwards commands.
    tasks.spawn({
        let client = client.clone();
        let stop = stop.clone();
        let prefix = prefix.clone();
        async move {
            loop {
                let ev = tokio::select! {
                    _ = stop.cancelled() => break,
                    ev = eventloop.poll() => ev,
                };
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe(format!("{prefix}/+/set"), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if let Some((device, "set")) = mqtt::split_topic(&prefix, &p.topic)
                            && let Ok(m) = serde_json::from_slice::<SetMessage>(&p.payload)
                        {
                            let _ = msg_tx.send((device.to_string(), m));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        }
                    }
                }
            }
            let _ = client.try_disconnect();
        }
    });

    // The agents: apply, deduplicate, acknowledge, with faults.
    tasks.spawn({
        let shared = shared.clone();
        let stop = stop.clone();
        let client = client.clone();
        async move {
            let mut draw = Draw(faults.seed);
            let mut delayed = JoinSet::new();
            loop {
                let (device, msg) = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = msg_rx.recv() => match m { Some(m) => m, None => break },
                    Some(_) = delayed.join_next(), if !delayed.is_empty() => continue,
                };
                if draw.next() < faults.drop {
                    if let Ok(mut s) = shared.lock()
                        && let Some(a) = s.agents.get_mut(&device)
                    {
                        a.counters.dropped += 1;
                    }
                    continue;
                }
                let copies = if draw.next() < faults.duplicate { 2 } else { 1 };
                let lose_ack = draw.next() < faults.drop_ack;
                let delay = (draw.next() < faults.delay).then(|| Duration::from_millis(faults.delay_ms));
                let job = {
                    let shared = shared.clone();
                    let client = client.clone();
                    let registry = registry.clone();
                    let prefix = prefix.clone();
                    async move {
                        if let Some(d) = delay {
                            tokio::time::sleep(d).await;
                        }
                        for _ in 0..copies {
                            let reply = handle(&shared, &registry, &device, &msg);
                            let Some((ack, state)) = reply else { return };
                            let _ = client
                                .publish(
                                    mqtt::state_topic(&prefix, &device),
                                    QoS::AtLeastOnce,
                                    true,
                                    serde_json::to_vec(&state).unwrap_or_default(),
                                )
                                .await;
                            if !lose_ack {
                                let _ = client
                                    .publish(
                                        mqtt::ack_topic(&prefix, &device),
                                        QoS::AtLeastOnce,
                                        false,
                                        serde_json::to_vec(&ack).unwrap_or_default(),
                                    )
                                    .await;
                            }
                        }
                    }
                };
                if delay.is_some() {
                    delayed.spawn(job);
                } else {
                    job.await;
                }
            }
        }
    });

    let ready = tokio::time::timeout(Duration::from_secs(10), ready_rx.recv()).await;
    let devices = SimulatedDevices { shared, stop, tasks };
    if !matches!(ready, Ok(Some(()))) {
        devices.stop().await;
        return Err(format!("the simulated devices could not subscribe at {}", mqtt.url));
    }
    Ok(devices)
}

/// One delivery to one device: apply once per id, acknowledge every time.
fn handle(shared: &Mutex<Shared>, registry: &Registry, device: &str, msg: &SetMessage) -> Option<(AckMessage, Value)> {
    let mut s = shared.lock().ok()?;
    let s = &mut *s;
    let agent = s.agents.get_mut(device)?;
    if agent.seen.contains(&msg.id) {
        agent.counters.duplicates += 1;
        let state = Value::Object(agent.state.clone());
        return Some((
            AckMessage {
                id: msg.id.clone(),
                ok: true,
                duplicate: true,
                state: state.clone(),
                error: None,
            },
            state,
        ));
    }
    agent.seen.insert(msg.id.clone());
    agent.order.push_back(msg.id.clone());
    if agent.order.len() > DEDUP_WINDOW
        && let Some(old) = agent.order.pop_front()
    {
        agent.seen.remove(&old);
    }
    let result = agent.apply(registry, msg);
    match &result {
        Ok(()) => {
            agent.counters.applied += 1;
            *s.applications.entry(msg.id.clone()).or_default() += 1;
        }
        Err(_) => agent.counters.rejected += 1,
    }
    let state = Value::Object(agent.state.clone());
    Some((
        AckMessage {
            id: msg.id.clone(),
            ok: result.is_ok(),
            duplicate: false,
            state: state.clone(),
            error: result.err(),
        },
        state,
    ))
}

impl SimulatedDevices {
    /// Commands `device` applied.
    pub fn applied(&self, device: &str) -> u64 {
        self.counters(device).map_or(0, |c| c.applied)
    }

    /// The counters of one device.
    pub fn counters(&self, device: &str) -> Option<DeviceCounters> {
        self.shared.lock().ok()?.agents.get(device).map(|a| a.counters.clone())
    }

    /// Every device's counters.
    pub fn all_counters(&self) -> HashMap<String, DeviceCounters> {
        self.shared
            .lock()
            .map(|s| s.agents.iter().map(|(k, a)| (k.clone(), a.counters.clone())).collect())
            .unwrap_or_default()
    }

    /// Commands applied by all devices.
    pub fn total_applied(&self) -> u64 {
        self.all_counters().values().map(|c| c.applied).sum()
    }

    /// How many times the command with `id` was applied (0 or 1 when all is well).
    pub fn applications(&self, id: &str) -> u32 {
        self.shared
            .lock()
            .ok()
            .and_then(|s| s.applications.get(id).copied())
            .unwrap_or(0)
    }

    /// Applications per command id.
    pub fn all_applications(&self) -> HashMap<String, u32> {
        self.shared.lock().map(|s| s.applications.clone()).unwrap_or_default()
    }

    /// A device's state.
    pub fn state(&self, device: &str) -> Option<Value> {
        let s = self.shared.lock().ok()?;
        s.agents.get(device).map(|a| Value::Object(a.state.clone()))
    }

    /// Stops the agents and disconnects.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}
