//! The dispatcher: drains the durable outbox to the broker and records the
//! devices' acknowledgements.
//!
//! Three tasks:
//! - the MQTT event loop: connects (and reconnects with backoff), subscribes
//!   to `P/+/ack` and `P/+/state` on every new connection, forwards messages;
//! - the sender: while connected, claims due outbox rows (first sends, and
//!   resends of rows whose ack did not come within `ack_timeout_ms`) and
//!   publishes them with QoS 1. While the broker is down nothing is claimed,
//!   so no attempt is spent: commands wait in the outbox and go out when it
//!   returns;
//! - the ack recorder: writes acknowledgements in batches, keeps the live
//!   device state, and wakes whoever waits for an outcome.
//!
//! Exactly-once effect: a command keeps its id across every resend and
//! devices deduplicate on it; the store ignores duplicate acks.

use crate::clock::Clock;
use crate::config::MqttConfig;
use crate::mqtt::{self, AckMessage, SetMessage};
use crate::store::{Ack, Store};
use rumqttc::{AsyncClient, Event, EventLoop, Packet, QoS};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Rows claimed per round.
const BATCH: i64 = 100;
/// The longest the sender sleeps without looking at the outbox (other
/// instances and the scheduler add work it is not told about).
const IDLE_POLL: Duration = Duration::from_millis(500);

/// A change of a command's status seen by this instance.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandEvent {
    /// The command.
    pub command_id: String,
}

/// The live state of devices, from their acks and state topics.
pub type LiveState = Arc<RwLock<HashMap<String, Value>>>;

/// A running dispatcher.
pub struct Dispatcher {
    work: Arc<Notify>,
    connected: watch::Receiver<bool>,
    events: broadcast::Sender<CommandEvent>,
    live: LiveState,
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("connected", &*self.connected.borrow())
            .finish()
    }
}

enum Incoming {
    Ack(Ack),
    State(String, Value),
}

impl Dispatcher {
    /// Starts dispatching `store`'s outbox to the broker in `cfg`.
    pub fn start(store: Store, clock: Clock, cfg: &MqttConfig, stop: CancellationToken) -> Result<Dispatcher, String> {
        let client_id = cfg
            .client_id
            .clone()
            .unwrap_or_else(|| crate::clock::new_id("breakwater-iot"));
        // A clean session: anything lost while we were away is resent from
        // the outbox; the broker need not remember us.
        let opts = mqtt::options(&client_id, &cfg.url, true)?;
        let (client, eventloop) = AsyncClient::new(opts, 1024);
        let work = Arc::new(Notify::new());
        let (conn_tx, conn_rx) = watch::channel(false);
        let (events, _) = broadcast::channel(4096);
        let live: LiveState = Arc::default();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        tasks.spawn(event_loop(
            eventloop,
            client.clone(),
            cfg.topic_prefix.clone(),
            conn_tx,
            in_tx,
            work.clone(),
            stop.clone(),
        ));
        tasks.spawn(sender(
            store.clone(),
            clock.clone(),
            client.clone(),
            cfg.clone(),
            client_id,
            conn_rx.clone(),
            work.clone(),
            stop.clone(),
        ));
        tasks.spawn(recorder(
            store,
            clock,
            in_rx,
            live.clone(),
            events.clone(),
            stop.clone(),
        ));
        tasks.spawn({
            let stop = stop.clone();
            async move {
                stop.cancelled().await;
                let _ = client.try_disconnect();
            }
        });
        Ok(Dispatcher {
            work,
            connected: conn_rx,
            events,
            live,
            tasks,
            stop,
        })
    }

    /// Wakes the sender: new work is in the outbox.
    pub fn notify(&self) {
        self.work.notify_one();
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Waits until connected (and subscribed), up to `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.connected.clone();
        tokio::time::timeout(timeout, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Status changes recorded by this instance.
    pub fn subscribe(&self) -> broadcast::Receiver<CommandEvent> {
        self.events.subscribe()
    }

    /// The live device state.
    pub fn live_state(&self) -> LiveState {
        self.live.clone()
    }

    /// Stops the tasks and waits for them.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn event_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    prefix: String,
    connected: watch::Sender<bool>,
    incoming: mpsc::UnboundedSender<Incoming>,
    work: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let ev = tokio::select! {
            _ = stop.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(100);
                let subs = [format!("{prefix}/+/ack"), format!("{prefix}/+/state")];
                for s in subs {
                    if let Err(e) = client.try_subscribe(s, QoS::AtLeastOnce) {
                        tracing::warn!(error = %e, "iot: cannot subscribe");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                tracing::info!("iot: connected to the broker");
                let _ = connected.send(true);
                work.notify_one();
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some((device, kind)) = mqtt::split_topic(&prefix, &p.topic) else {
                    continue;
                };
                match kind {
                    "ack" => match serde_json::from_slice::<AckMessage>(&p.payload) {
                        Ok(a) => {
                            let detail = serde_json::json!({
                                "duplicate": a.duplicate, "state": a.state, "error": a.error});
                            let _ = incoming.send(Incoming::Ack(Ack {
                                command_id: a.id,
                                device: device.to_string(),
                                ok: a.ok,
                                detail,
                            }));
                            if !a.state.is_null() {
                                let _ = incoming.send(Incoming::State(device.to_string(), a.state));
                            }
                        }
                        Err(e) => tracing::warn!(device, error = %e, "iot: unreadable ack"),
                    },
                    "state" => {
                        if let Ok(v) = serde_json::from_slice::<Value>(&p.payload) {
                            let _ = incoming.send(Incoming::State(device.to_string(), v));
                        }
                    }
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(e) => {
                if *connected.borrow() {
                    tracing::warn!(error = %e, "iot: lost the broker; commands wait in the outbox");
                }
                let _ = connected.send(false);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    let _ = connected.send(false);
}

#[allow(clippy::too_many_arguments)]
async fn sender(
    store: Store,
    clock: Clock,
    client: AsyncClient,
    cfg: MqttConfig,
    claimer: String,
    mut connected: watch::Receiver<bool>,
    work: Arc<Notify>,
    stop: CancellationToken,
) {
    let ack_timeout = i64::try_from(cfg.ack_timeout_ms).unwrap_or(i64::MAX / 4);
    let max_attempts = i64::from(cfg.max_attempts);
    loop {
        if stop.is_cancelled() {
            break;
        }
        if !*connected.borrow() {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = connected.wait_for(|c| *c) => if r.is_err() { break },
            }
            continue;
        }
        let now = clock.now_ms();
        let claimed = match store.claim(now, &claimer, ack_timeout, max_attempts, BATCH).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "iot: cannot read the outbox");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        };
        let full = claimed.len() as i64 == BATCH;
        for c in claimed {
            let msg = SetMessage {
                id: c.id.clone(),
                action: c.command.action,
                value: c.command.value.clone(),
                delta: c.command.delta,
                attempt: c.attempt,
            };
            let payload = serde_json::to_vec(&msg).unwrap_or_default();
            let topic = mqtt::set_topic(&cfg.topic_prefix, &c.command.device);
            let sent = tokio::time::timeout(
                Duration::from_secs(5),
                client.publish(topic, QoS::AtLeastOnce, false, payload),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                // Never reached the client's queue: the attempt does not count.
                if let Err(e) = store.unclaim(&c.id, clock.now_ms()).await {
                    tracing::error!(error = %e, "iot: cannot return a command to the outbox");
                }
            }
        }
        if full {
            continue;
        }
        let wait = match store.next_attempt().await {
            Ok(Some(t)) => Duration::from_millis(u64::try_from(t - clock.now_ms()).unwrap_or(0)).min(IDLE_POLL),
            _ => IDLE_POLL,
        };
        if wait.is_zero() {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = work.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = connected.changed() => {}
        }
    }
}

async fn recorder(
    store: Store,
    clock: Clock,
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    live: LiveState,
    events: broadcast::Sender<CommandEvent>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            m = incoming.recv() => match m { Some(m) => m, None => break },
        };
        // Batch whatever else arrived: one transaction for many acks.
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Incoming::Ack(a) => acks.push(a),
                Incoming::State(device, state) => {
                    if let Ok(mut l) = live.write() {
                        l.insert(device, state);
                    }
                }
            }
            if acks.len() < 500 {
                next = incoming.try_recv().ok();
            }
        }
        let mut tries = 0;
        loop {
            match store.record_acks(&acks, clock.now_ms()).await {
                Ok(changed) => {
                    for id in changed {
                        let _ = events.send(CommandEvent { command_id: id });
                    }
                    break;
                }
                Err(e) => {
                    tries += 1;
                    tracing::error!(error = %e, tries, "iot: cannot record acknowledgements");
                    if tries >= 10 {
                        // The commands stay `sent`: they are resent after the
                        // ack timeout, the devices ack again, we try again.
                        break;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }
}
