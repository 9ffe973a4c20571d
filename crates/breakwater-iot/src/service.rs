//! The IoT command system assembled: registry, understanding, safety
//! (confirmations, per-user limits), the durable store, the scheduler and
//! the dispatcher, behind one [`IotService`] that the gateway mounts (its
//! [`IotService::router`]) and the CLI calls.

use crate::clock::{Clock, new_id};
use crate::command::check_command;
use crate::config::IotConfig;
use crate::dispatch::{Dispatcher, LiveState};
use crate::error::IotError;
use crate::ratelimit::KeyedLimiter;
use crate::registry::{Registry, RegistryError};
use crate::status::{CommandStatus, RequestStatus, initial_command_status, initial_status, is_sensitive};
use crate::store::{
    AuditEntry, AuditQuery, ConfirmOutcome, Inserted, ListQuery, NewAudit, NewCommand, NewRequest, RequestRecord, Store,
};
use crate::understand::llm::DynBackend;
use crate::understand::{Outcome, Understander, Understanding};
use breakwater::ErrorKind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A command in words: "unlock front door", "set temperature oven to 200".
pub fn describe(reg: &Registry, c: &crate::command::Command) -> String {
    let name = reg.device(&c.device).map_or(c.device.as_str(), |d| d.name.as_str());
    let mut s = format!("{} {name}", c.action.as_str().replace('_', " "));
    if let Some(v) = &c.value {
        s.push_str(&format!(" to {v}"));
    }
    if let Some(d) = c.delta {
        s.push_str(&format!(" by {d:+}"));
    }
    s
}

/// Longest accepted utterance, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;

/// A new utterance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Submit {
    /// What the person said.
    pub text: String,
    /// Who said it.
    pub user: String,
    /// Replays the first result for the same user and key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// A device with its live state, for `GET /iot/devices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Room id.
    pub room: String,
    /// Floor id.
    pub floor: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Actions it offers.
    pub actions: Vec<String>,
    /// Actions that need confirmation.
    pub sensitive: Vec<String>,
    /// Last reported state (from acks and the state topic), if any.
    pub state: Option<Value>,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config is invalid.
    #[error("{0}")]
    Config(String),
    /// The registry is invalid.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

struct Inner {
    config: IotConfig,
    registry: Arc<Registry>,
    store: Store,
    understander: Understander,
    limiter: KeyedLimiter,
    clock: Clock,
    dispatcher: Mutex<Option<Dispatcher>>,
    live: LiveState,
    outbox_wake: Arc<Notify>,
    schedule_wake: Arc<Notify>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
    stop: CancellationToken,
}

/// The IoT command system. Cheap to clone.
#[derive(Clone)]
pub struct IotService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for IotService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IotService")
            .field("registry", &self.inner.registry.version())
            .field("store", &self.inner.store.engine())
            .finish()
    }
}

impl IotService {
    /// Starts from the `iot:` config: loads the registry, opens the store,
    /// connects to the broker and starts the scheduler. `backend` answers
    /// the model requests (model `config.model`); `None` = rules only.
    pub async fn start(config: IotConfig, backend: Option<DynBackend>) -> Result<IotService, StartError> {
        let path = config.registry.display().to_string();
        let text = tokio::fs::read_to_string(&config.registry)
            .await
            .map_err(|source| RegistryError::Io { path, source })?;
        let registry = Arc::new(Registry::from_yaml(&text)?);
        Self::start_with(config, registry, backend, Clock::System).await
    }

    /// Starts with an already loaded registry and a clock.
    pub async fn start_with(
        config: IotConfig,
        registry: Arc<Registry>,
        backend: Option<DynBackend>,
        clock: Clock,
    ) -> Result<IotService, StartError> {
        config.validate().map_err(StartError::Config)?;
        let store = Store::open(&config.store).await?;
        let stop = CancellationToken::new();
        let dispatcher = Dispatcher::start(store.clone(), clock.clone(), &config.mqtt, stop.child_token())
            .map_err(StartError::Config)?;
        let live = dispatcher.live_state();
        let outbox_wake = Arc::new(Notify::new());
        let schedule_wake = Arc::new(Notify::new());
        let understander = Understander::new(registry.clone(), backend, config.model.clone());
        let inner = Arc::new(Inner {
            limiter: KeyedLimiter::per_minute(config.limits.per_user_rpm),
            config,
            registry,
            store: store.clone(),
            understander,
            clock: clock.clone(),
            dispatcher: Mutex::new(Some(dispatcher)),
            live,
            outbox_wake: outbox_wake.clone(),
            schedule_wake: schedule_wake.clone(),
            scheduler: Mutex::new(None),
            stop: stop.clone(),
        });
        // The scheduler wakes the dispatcher through `outbox_wake`, which a
        // relay forwards (the dispatcher lives behind a mutex for shutdown).
        let svc = IotService { inner };
        let weak = Arc::downgrade(&svc.inner);
        let relay_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = relay_stop.cancelled() => break,
                    _ = outbox_wake.notified() => {}
                }
                let Some(inner) = weak.upgrade() else { break };
                if let Ok(d) = inner.dispatcher.lock()
                    && let Some(d) = d.as_ref()
                {
                    d.notify();
                }
            }
        });
        let wake = svc.inner.outbox_wake.clone();
        let handle = tokio::spawn(crate::scheduler::run(
            Arc::new(store),
            clock,
            schedule_wake,
            move || wake.notify_one(),
            stop.child_token(),
        ));
        if let Ok(mut s) = svc.inner.scheduler.lock() {
            *s = Some(handle);
        }
        Ok(svc)
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The store (for the CLI's `iot log`).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The understander (schema, prompt, rules).
    pub fn understander(&self) -> &Understander {
        &self.inner.understander
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner
            .dispatcher
            .lock()
            .ok()
            .and_then(|d| d.as_ref().map(Dispatcher::is_connected))
            .unwrap_or(false)
    }

    /// Looks at the schedule and the outbox now (instead of at the next
    /// planned wake-up).
    pub fn tick(&self) {
        self.inner.schedule_wake.notify_one();
        self.inner.outbox_wake.notify_one();
    }

    /// Waits until the broker connection is up, up to `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let give_up = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < give_up {
            if self.is_connected() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.is_connected()
    }

    /// Understands and acts on an utterance. The result carries the status:
    /// dispatched, pending_confirmation, scheduled, needs_clarification or
    /// not_understood. Over the user's rate limit: a `rate_limited` error
    /// (the request is still recorded in the audit log).
    pub async fn submit(&self, s: Submit) -> Result<RequestRecord, IotError> {
        let text = s.text.trim();
        if text.is_empty() {
            return Err(IotError::invalid("text", "`text` must not be empty"));
        }
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(IotError::invalid(
                "text",
                format!("`text` is longer than {MAX_TEXT_CHARS} characters"),
            ));
        }
        let user = s.user.trim();
        if user.is_empty() || user.len() > 128 {
            return Err(IotError::invalid("user", "`user` must be 1–128 characters"));
        }
        if let Some(k) = &s.idempotency_key
            && (k.is_empty() || k.len() > 200)
        {
            return Err(IotError::invalid(
                "idempotency_key",
                "`idempotency_key` must be 1–200 characters",
            ));
        }
        let inner = &self.inner;
        // A replay costs no quota and never runs twice.
        if let Some(k) = &s.idempotency_key
            && let Some(existing) = inner.store.find_idempotent(user, k).await?
        {
            return Ok(existing);
        }
        let now = inner.clock.now_ms();
        let id = new_id("req");
        if let Err(wait) = inner.limiter.check(user) {
            let rec = NewRequest {
                id: id.clone(),
                user: user.to_string(),
                idempotency_key: None,
                text: text.to_string(),
                status: RequestStatus::RateLimited,
                message: Some(format!("rate limited: retry in {:.0} s", wait.as_secs_f64().ceil())),
                parse: json!(null),
                created_at: now,
                confirm_deadline: None,
            };
            let ev = [NewAudit::request(
                &id,
                user,
                "rate_limited",
                json!({"text": text, "retry_after_s": wait.as_secs_f64().ceil()}),
            )];
            inner.store.insert_request(&rec, &[], &ev).await?;
            return Err(IotError {
                retry_after: Some(wait),
                request_id: Some(id),
                ..IotError::new(
                    ErrorKind::RateLimited,
                    format!(
                        "{user} sent more than {} commands a minute; retry in {:.0} s",
                        inner.config.limits.per_user_rpm,
                        wait.as_secs_f64().ceil()
                    ),
                )
            });
        }
        let understanding = inner.understander.understand(text).await;
        let (rec, cmds, events) = self.plan(&id, user, s.idempotency_key.clone(), text, understanding, now);
        let scheduled = cmds.iter().any(|c| c.status == CommandStatus::Scheduled);
        let queued = cmds.iter().any(|c| c.status == CommandStatus::Queued);
        match inner.store.insert_request(&rec, &cmds, &events).await? {
            Inserted::Existing(first) => return Ok(*first),
            Inserted::New => {}
        }
        if queued {
            inner.outbox_wake.notify_one();
        }
        if scheduled {
            inner.schedule_wake.notify_one();
        }
        self.get(&id).await
    }

    /// Turns an understanding into the records to store.
    fn plan(
        &self,
        id: &str,
        user: &str,
        idempotency_key: Option<String>,
        text: &str,
        u: Understanding,
        now: i64,
    ) -> (NewRequest, Vec<NewCommand>, Vec<NewAudit>) {
        let reg = &self.inner.registry;
        let mut outcome = u.outcome.clone();
        let mut due: Vec<Option<i64>> = Vec::new();
        if let Outcome::Commands(cmds) = &outcome {
            // Whatever produced them, commands are checked against the
            // registry once more here, and their times resolved.
            let mut problem = None;
            for c in cmds {
                if let Err(e) = check_command(reg, c) {
                    problem = Some(format!("cannot do {c}: {e}"));
                    break;
                }
                match c.at.as_ref().map(|w| w.resolve(now, reg.timezone())) {
                    Some(Err(e)) => {
                        problem = Some(format!("cannot schedule {c}: {e}"));
                        break;
                    }
                    Some(Ok(t)) => due.push(Some(t)),
                    None => due.push(None),
                }
            }
            if let Some(p) = problem {
                outcome = Outcome::NotUnderstood(p);
                due.clear();
            }
        }
        let status = initial_status(reg, &outcome);
        let mut events = vec![
            NewAudit::request(id, user, "utterance", json!({"text": text})),
            NewAudit::request(
                id,
                user,
                "parse",
                json!({
                    "info": serde_json::to_value(&u.info).unwrap_or(Value::Null),
                    "outcome": serde_json::to_value(&outcome).unwrap_or(Value::Null),
                }),
            ),
        ];
        let mut commands = Vec::new();
        let mut message = match &outcome {
            Outcome::Clarify(q) => Some(q.clone()),
            Outcome::NotUnderstood(why) => Some(format!("Could not understand that: {why}")),
            Outcome::Commands(_) => None,
        };
        if let Outcome::Commands(cmds) = &outcome {
            for (i, (c, due_at)) in cmds.iter().zip(due).enumerate() {
                let cid = new_id("cmd");
                let st = initial_command_status(reg, c);
                events.push(NewAudit {
                    request_id: Some(id.to_string()),
                    command_id: Some(cid.clone()),
                    user: Some(user.to_string()),
                    event: "command".into(),
                    detail: json!({"command": c, "status": st, "due_at": due_at}),
                });
                commands.push(NewCommand {
                    id: cid,
                    seq: i as i64,
                    command: c.clone(),
                    sensitive: is_sensitive(reg, c),
                    status: st,
                    due_at,
                });
            }
            if status == RequestStatus::PendingConfirmation {
                let what: Vec<String> = cmds
                    .iter()
                    .filter(|c| is_sensitive(reg, c))
                    .map(|c| describe(reg, c))
                    .collect();
                message = Some(format!(
                    "Please confirm within {} s: {}",
                    self.inner.config.confirm_timeout_s,
                    what.join("; ")
                ));
                events.push(NewAudit::request(
                    id,
                    user,
                    "confirmation_requested",
                    json!({"commands": what}),
                ));
            }
        }
        if u.info.fallback {
            let note = "understood without the language model (rule-based fallback)";
            message = Some(match message {
                Some(m) => format!("{m} — {note}"),
                None => format!("Done, {note}."),
            });
        }
        let confirm_deadline = (status == RequestStatus::PendingConfirmation)
            .then(|| now + i64::try_from(self.inner.config.confirm_timeout_s).unwrap_or(60) * 1000);
        let rec = NewRequest {
            id: id.to_string(),
            user: user.to_string(),
            idempotency_key,
            text: text.to_string(),
            status,
            message,
            parse: serde_json::to_value(&u.info).unwrap_or(Value::Null),
            created_at: now,
            confirm_deadline,
        };
        (rec, commands, events)
    }

    /// Confirms a pending request; only its user may, within the time limit.
    pub async fn confirm(&self, id: &str, user: &str) -> Result<RequestRecord, IotError> {
        if user.trim().is_empty() {
            return Err(IotError::invalid("user", "`user` must not be empty"));
        }
        let inner = &self.inner;
        match inner.store.confirm(id, user.trim(), inner.clock.now_ms()).await? {
            ConfirmOutcome::Confirmed(status) => {
                if status == RequestStatus::Scheduled {
                    inner.schedule_wake.notify_one();
                } else {
                    inner.outbox_wake.notify_one();
                    inner.schedule_wake.notify_one();
                }
                self.get(id).await
            }
            ConfirmOutcome::NotFound => Err(IotError::not_found("id", format!("no command request {id:?}"))),
            ConfirmOutcome::WrongUser => Err(IotError {
                param: Some("user".into()),
                ..IotError::new(
                    ErrorKind::PermissionDenied,
                    "only the user who made the request may confirm it",
                )
            }),
            ConfirmOutcome::NotPending(s) => Err(IotError::conflict(
                "not_pending",
                format!("the request is {s}, not waiting for a confirmation"),
            )),
            ConfirmOutcome::Expired => Err(IotError::conflict(
                "confirmation_expired",
                format!(
                    "the confirmation came after the {} s limit; nothing was done, say the command again",
                    inner.config.confirm_timeout_s
                ),
            )),
        }
    }

    /// One request.
    pub async fn get(&self, id: &str) -> Result<RequestRecord, IotError> {
        self.inner
            .store
            .get_request(id)
            .await?
            .ok_or_else(|| IotError::not_found("id", format!("no command request {id:?}")))
    }

    /// Requests, newest first.
    pub async fn list(&self, q: &ListQuery) -> Result<Vec<RequestRecord>, IotError> {
        Ok(self.inner.store.list_requests(q).await?)
    }

    /// The audit log.
    pub async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>, IotError> {
        Ok(self.inner.store.audit(q).await?)
    }

    /// Waits until none of the request's commands is on its way (queued,
    /// sent, or unacknowledged with attempts left), up to `timeout`, and
    /// returns the request as it then is.
    pub async fn wait_settled(&self, id: &str, timeout: Duration) -> Result<RequestRecord, IotError> {
        let max = i64::from(self.inner.config.mqtt.max_attempts);
        let give_up = tokio::time::Instant::now() + timeout;
        loop {
            let r = self.get(id).await?;
            let moving = r.commands.iter().any(|c| {
                matches!(c.status, CommandStatus::Queued | CommandStatus::Sent)
                    || (c.status == CommandStatus::Unacknowledged && c.attempts < max)
            });
            if !moving || tokio::time::Instant::now() >= give_up {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Devices with their live state.
    pub fn devices(&self) -> Vec<DeviceView> {
        let live = self.inner.live.read().map(|l| l.clone()).unwrap_or_default();
        let reg = &self.inner.registry;
        reg.devices()
            .iter()
            .map(|d| {
                let actions = d.capabilities.actions();
                DeviceView {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    room: d.room.clone(),
                    floor: reg.floor_of(d).to_string(),
                    kind: d.kind.as_str().to_string(),
                    sensitive: actions
                        .iter()
                        .filter(|(a, _)| d.is_sensitive(*a))
                        .map(|(a, _)| a.as_str().to_string())
                        .collect(),
                    actions: actions.iter().map(|(a, _)| a.as_str().to_string()).collect(),
                    state: live.get(&d.id).cloned(),
                }
            })
            .collect()
    }

    /// The axum routes (`/iot/...`) for the gateway to mount.
    pub fn router(&self) -> axum::Router {
        crate::http::router(self.clone())
    }

    /// Stops the scheduler and the dispatcher, then closes the store.
    /// Commands not yet acknowledged stay in the outbox for the next start.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let dispatcher = self.inner.dispatcher.lock().ok().and_then(|mut d| d.take());
        if let Some(d) = dispatcher {
            d.shutdown().await;
        }
        let scheduler = self.inner.scheduler.lock().ok().and_then(|mut s| s.take());
        if let Some(s) = scheduler {
            let _ = s.await;
        }
        self.inner.store.close().await;
    }
}
