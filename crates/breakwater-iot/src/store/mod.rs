//! The durable store: requests, commands (which double as the outbox and
//! the schedule) and the audit log, in SQLite (embedded default) or
//! PostgreSQL (when several gateway instances share the IoT system).
//!
//! Every state change of a command happens in one statement or one
//! transaction together with its audit entry, so the audit log and the
//! outbox never disagree. Work is claimed by an `UPDATE … WHERE id IN
//! (SELECT … FOR UPDATE SKIP LOCKED)` on PostgreSQL, so two instances never
//! dispatch or fire the same command; SQLite has one writer at a time, which
//! gives the same guarantee within one process.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`: every commit is fsynced
//! before it returns, so an acknowledged command survives not only a
//! `kill -9` (which WAL with NORMAL would also survive) but a power loss.
//! The load is people typing commands — a few writes a second at most —
//! so the cost of an fsync per commit is not felt.

mod records;
mod schema;

pub use records::*;

use crate::status::{CommandStatus, RequestStatus};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, Row};
use std::str::FromStr;
use std::time::Duration;

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not `sqlite://…` or `postgres://…`.
    #[error("unsupported store URL {0:?}: use sqlite://PATH or postgres://…")]
    BadUrl(String),
    /// The database failed.
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored value could not be read back.
    #[error("store: corrupt row: {0}")]
    Corrupt(String),
}

/// Shorthand.
pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to whichever pool this store has; the body
/// is type-checked once per engine.
macro_rules! with_pool {
    ($self:expr, $p:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// `FOR UPDATE SKIP LOCKED` where the engine has it.
macro_rules! skip_locked {
    ($self:expr) => {
        match &$self.pool {
            Pool::Sqlite(_) => "",
            Pool::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        }
    };
}

fn parse_json(s: &str) -> Result<Value, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

macro_rules! command_from_row {
    ($row:expr) => {{
        let row = $row;
        let body: String = row.try_get("body")?;
        let status: String = row.try_get("status")?;
        let result: Option<String> = row.try_get("result")?;
        CommandRecord {
            id: row.try_get("id")?,
            request_id: row.try_get("request_id")?,
            seq: row.try_get("seq")?,
            command: serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            sensitive: row.try_get::<i64, _>("sensitive")? != 0,
            status: CommandStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(status.clone()))?,
            due_at: row.try_get("due_at")?,
            attempts: row.try_get("attempts")?,
            result: result.as_deref().map(parse_json).transpose()?,
            updated_at: row.try_get("updated_at")?,
        }
    }};
}

macro_rules! request_from_row {
    ($row:expr) => {{
        let row = $row;
        let status: String = row.try_get("status")?;
        let parse: String = row.try_get("parse")?;
        RequestRecord {
            id: row.try_get("id")?,
            user: row.try_get("user_id")?,
            idempotency_key: row.try_get("idempotency_key")?,
            text: row.try_get("text")?,
            status: RequestStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(status.clone()))?,
            message: row.try_get("message")?,
            parse: parse_json(&parse)?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            confirm_deadline: row.try_get("confirm_deadline")?,
            commands: Vec::new(),
        }
    }};
}

const AUDIT_INSERT: &str = "INSERT INTO iot_audit (at, request_id, command_id, user_id, event, detail) \
                            VALUES ($1, $2, $3, $4, $5, $6)";

macro_rules! audit {
    ($tx:expr, $at:expr, $a:expr) => {{
        let a: &NewAudit = $a;
        sqlx::query(AUDIT_INSERT)
            .bind($at)
            .bind(a.request_id.as_deref())
            .bind(a.command_id.as_deref())
            .bind(a.user.as_deref())
            .bind(a.event.as_str())
            .bind(a.detail.to_string())
            .execute(&mut *$tx)
            .await?;
    }};
}

const REQUEST_COLS: &str = "id, user_id, idempotency_key, text, status, message, parse, created_at, updated_at, \
                            confirm_deadline";
const COMMAND_COLS: &str = "id, request_id, seq, body, sensitive, status, due_at, attempts, result, updated_at";

/// The durable store. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Opens (creating if needed) `sqlite://PATH` or `postgres://…` and
    /// creates the tables.
    pub async fn open(url: &str) -> StoreResult<Store> {
        let pool = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await?,
            )
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    async fn migrate(&self) -> StoreResult<()> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let mut conn = p.acquire().await?;
                for ddl in schema::SQLITE.iter().chain(schema::INDEXES) {
                    sqlx::query(ddl).execute(&mut *conn).await?;
                }
            }
            Pool::Postgres(p) => {
                // Several instances may start together: serialise the DDL.
                let mut conn = p.acquire().await?;
                let mut tx = conn.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7310731)")
                    .execute(&mut *tx)
                    .await?;
                for ddl in schema::POSTGRES.iter().chain(schema::INDEXES) {
                    sqlx::query(ddl).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Closes the pool (waits for connections to return).
    pub async fn close(&self) {
        with_pool!(self, p => p.close().await)
    }

    /// Records a request, its commands and audit events in one
    /// transaction. When the user already sent `idempotency_key`, nothing is
    /// written and the first request comes back.
    pub async fn insert_request(
        &self,
        req: &NewRequest,
        commands: &[NewCommand],
        events: &[NewAudit],
    ) -> StoreResult<Inserted> {
        if let Some(key) = &req.idempotency_key
            && let Some(existing) = self.find_idempotent(&req.user, key).await?
        {
            return Ok(Inserted::Existing(Box::new(existing)));
        }
        let inserted = with_pool!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "INSERT INTO iot_requests (id, user_id, idempotency_key, text, status, message, parse, \
                 created_at, updated_at, confirm_deadline) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&req.id)
            .bind(&req.user)
            .bind(req.idempotency_key.as_deref())
            .bind(&req.text)
            .bind(req.status.as_str())
            .bind(req.message.as_deref())
            .bind(req.parse.to_string())
            .bind(req.created_at)
            .bind(req.confirm_deadline)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                tx.rollback().await?;
                false
            } else {
                for c in commands {
                    let queued = c.status == CommandStatus::Queued;
                    sqlx::query(
                        "INSERT INTO iot_commands (id, request_id, seq, device, action, body, sensitive, status, \
                         due_at, attempts, next_attempt_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11)",
                    )
                    .bind(&c.id)
                    .bind(&req.id)
                    .bind(c.seq)
                    .bind(&c.command.device)
                    .bind(c.command.action.as_str())
                    .bind(serde_json::to_string(&c.command).unwrap_or_default())
                    .bind(i64::from(c.sensitive))
                    .bind(c.status.as_str())
                    .bind(c.due_at)
                    .bind(queued.then_some(req.created_at))
                    .bind(req.created_at)
                    .execute(&mut *tx)
                    .await?;
                }
                for e in events {
                    audit!(tx, req.created_at, e);
                }
                tx.commit().await?;
                true
            }
        });
        if inserted {
            return Ok(Inserted::New);
        }
        // Lost a race on the idempotency key (or the id): return the winner.
        match &req.idempotency_key {
            Some(key) => match self.find_idempotent(&req.user, key).await? {
                Some(existing) => Ok(Inserted::Existing(Box::new(existing))),
                None => Err(StoreError::Corrupt(
                    "idempotent insert conflicted but no row found".into(),
                )),
            },
            None => Err(StoreError::Corrupt(format!("request id {} already exists", req.id))),
        }
    }

    /// The request `user` made with `key`, if any.
    pub async fn find_idempotent(&self, user: &str, key: &str) -> StoreResult<Option<RequestRecord>> {
        let sql = format!("SELECT {REQUEST_COLS} FROM iot_requests WHERE user_id = $1 AND idempotency_key = $2");
        let rec = with_pool!(self, p => {
            match sqlx::query(&sql).bind(user).bind(key).fetch_optional(p).await? {
                Some(row) => Some(request_from_row!(&row)),
                None => None,
            }
        });
        match rec {
            Some(mut r) => {
                r.commands = self.commands_of(&r.id).await?;
                Ok(Some(r))
            }
            None => Ok(None),
        }
    }

    async fn commands_of(&self, request_id: &str) -> StoreResult<Vec<CommandRecord>> {
        let sql = format!("SELECT {COMMAND_COLS} FROM iot_commands WHERE request_id = $1 ORDER BY seq");
        Ok(with_pool!(self, p => {
            let rows = sqlx::query(&sql).bind(request_id).fetch_all(p).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(command_from_row!(row));
            }
            out
        }))
    }

    /// A request with its commands.
    pub async fn get_request(&self, id: &str) -> StoreResult<Option<RequestRecord>> {
        let sql = format!("SELECT {REQUEST_COLS} FROM iot_requests WHERE id = $1");
        let rec = with_pool!(self, p => {
            match sqlx::query(&sql).bind(id).fetch_optional(p).await? {
                Some(row) => Some(request_from_row!(&row)),
                None => None,
            }
        });
        match rec {
            Some(mut r) => {
                r.commands = self.commands_of(&r.id).await?;
                Ok(Some(r))
            }
            None => Ok(None),
        }
    }

    /// One command.
    pub async fn get_command(&self, id: &str) -> StoreResult<Option<CommandRecord>> {
        let sql = format!("SELECT {COMMAND_COLS} FROM iot_commands WHERE id = $1");
        Ok(with_pool!(self, p => {
            match sqlx::query(&sql).bind(id).fetch_optional(p).await? {
                Some(row) => Some(command_from_row!(&row)),
                None => None,
            }
        }))
    }

    /// Requests, newest first, with their commands.
    pub async fn list_requests(&self, q: &ListQuery) -> StoreResult<Vec<RequestRecord>> {
        let limit = q.limit.unwrap_or(50).clamp(1, 500);
        let sql = format!(
            "SELECT {REQUEST_COLS} FROM iot_requests \
             WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR status = $2) AND created_at >= $3 \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let mut recs = with_pool!(self, p => {
            let rows = sqlx::query(&sql)
                .bind(q.user.as_deref())
                .bind(q.status.map(|s| s.as_str()))
                .bind(q.since.unwrap_or(i64::MIN))
                .bind(limit)
                .fetch_all(p)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                out.push(request_from_row!(row));
            }
            out
        });
        for r in &mut recs {
            r.commands = self.commands_of(&r.id).await?;
        }
        Ok(recs)
    }

    /// Appends audit events outside any other change.
    pub async fn append_audit(&self, at: i64, events: &[NewAudit]) -> StoreResult<()> {
        with_pool!(self, p => {
            let mut tx = p.begin().await?;
            for e in events {
                audit!(tx, at, e);
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The audit log, oldest first.
    pub async fn audit(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let limit = q.limit.unwrap_or(200).clamp(1, 10_000);
        let sql = "SELECT seq, at, request_id, command_id, user_id, event, detail FROM iot_audit \
                   WHERE ($1 IS NULL OR request_id = $1) AND ($2 IS NULL OR user_id = $2) AND at >= $3 \
                   ORDER BY seq LIMIT $4";
        Ok(with_pool!(self, p => {
            let rows = sqlx::query(sql)
                .bind(q.request_id.as_deref())
                .bind(q.user.as_deref())
                .bind(q.since.unwrap_or(i64::MIN))
                .bind(limit)
                .fetch_all(p)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let detail: String = row.try_get("detail")?;
                out.push(AuditEntry {
                    seq: row.try_get("seq")?,
                    at: row.try_get("at")?,
                    request_id: row.try_get("request_id")?,
                    command_id: row.try_get("command_id")?,
                    user: row.try_get("user_id")?,
                    event: row.try_get("event")?,
                    detail: parse_json(&detail)?,
                });
            }
            out
        }))
    }

    /// Confirms a pending request for `user`, atomically: its pending
    /// commands go to the outbox (or the schedule when they have a time).
    pub async fn confirm(&self, id: &str, user: &str, now: i64) -> StoreResult<ConfirmOutcome> {
        let Some(req) = self.get_request(id).await? else {
            return Ok(ConfirmOutcome::NotFound);
        };
        if req.user != user {
            self.append_audit(
                now,
                &[NewAudit::request(
                    id,
                    user,
                    "confirmation_refused",
                    serde_json::json!({"reason": "wrong_user", "owner": req.user}),
                )],
            )
            .await?;
            return Ok(ConfirmOutcome::WrongUser);
        }
        if req.status != RequestStatus::PendingConfirmation {
            return Ok(ConfirmOutcome::NotPending(req.status));
        }
        if req.confirm_deadline.is_some_and(|d| now > d) {
            self.expire_confirmations(now).await?;
            return Ok(ConfirmOutcome::Expired);
        }
        // After confirmation: scheduled if every command waits for a time.
        let all_timed = req
            .commands
            .iter()
            .filter(|c| c.status == CommandStatus::PendingConfirmation)
            .all(|c| c.due_at.is_some())
            && req
                .commands
                .iter()
                .all(|c| matches!(c.status, CommandStatus::PendingConfirmation | CommandStatus::Scheduled));
        let new_status = if all_timed {
            RequestStatus::Scheduled
        } else {
            RequestStatus::Dispatched
        };
        let done = with_pool!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "UPDATE iot_requests SET status = $1, updated_at = $2 \
                 WHERE id = $3 AND status = 'pending_confirmation' AND (confirm_deadline IS NULL OR confirm_deadline >= $2)",
            )
            .bind(new_status.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                sqlx::query(
                    "UPDATE iot_commands SET \
                       status = CASE WHEN due_at IS NULL THEN 'queued' ELSE 'scheduled' END, \
                       next_attempt_at = CASE WHEN due_at IS NULL THEN $1 ELSE NULL END, \
                       updated_at = $1 \
                     WHERE request_id = $2 AND status = 'pending_confirmation'",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                audit!(tx, now, &NewAudit::request(id, user, "confirmed", serde_json::json!({"status": new_status})));
                tx.commit().await?;
                true
            } else {
                tx.rollback().await?;
                false
            }
        });
        if done {
            return Ok(ConfirmOutcome::Confirmed(new_status));
        }
        // Someone else changed it meanwhile (another instance, the sweeper).
        match self.get_request(id).await? {
            Some(r) if r.status == RequestStatus::Expired => Ok(ConfirmOutcome::Expired),
            Some(r) => Ok(ConfirmOutcome::NotPending(r.status)),
            None => Ok(ConfirmOutcome::NotFound),
        }
    }

    /// Expires confirmations whose time limit passed; their sensitive
    /// commands are dropped (status `expired`). Returns how many requests.
    pub async fn expire_confirmations(&self, now: i64) -> StoreResult<u64> {
        let sql = format!(
            "UPDATE iot_requests SET status = 'expired', updated_at = $1 WHERE id IN \
             (SELECT id FROM iot_requests WHERE status = 'pending_confirmation' AND confirm_deadline < $1 \
              ORDER BY confirm_deadline LIMIT 100 {}) RETURNING id, user_id",
            skip_locked!(self)
        );
        Ok(with_pool!(self, p => {
            let mut tx = p.begin().await?;
            let rows = sqlx::query(&sql).bind(now).fetch_all(&mut *tx).await?;
            for row in &rows {
                let id: String = row.try_get("id")?;
                let user: String = row.try_get("user_id")?;
                sqlx::query(
                    "UPDATE iot_commands SET status = 'expired', updated_at = $1 \
                     WHERE request_id = $2 AND status = 'pending_confirmation'",
                )
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                audit!(tx, now, &NewAudit::request(&id, &user, "expired", serde_json::json!({"reason": "confirmation timed out"})));
            }
            tx.commit().await?;
            rows.len() as u64
        }))
    }

    /// Moves scheduled commands that are due into the outbox. Returns the
    /// command ids fired.
    pub async fn fire_due(&self, now: i64, limit: i64) -> StoreResult<Vec<String>> {
        let sql = format!(
            "UPDATE iot_commands SET status = 'queued', next_attempt_at = $1, updated_at = $1 WHERE id IN \
             (SELECT id FROM iot_commands WHERE status = 'scheduled' AND due_at <= $1 ORDER BY due_at LIMIT $2 {}) \
             RETURNING id, request_id, due_at",
            skip_locked!(self)
        );
        Ok(with_pool!(self, p => {
            let mut tx = p.begin().await?;
            let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&mut *tx).await?;
            let mut ids = Vec::with_capacity(rows.len());
            for row in &rows {
                let id: String = row.try_get("id")?;
                let request_id: String = row.try_get("request_id")?;
                let due_at: Option<i64> = row.try_get("due_at")?;
                audit!(tx, now, &NewAudit {
                    request_id: Some(request_id),
                    command_id: Some(id.clone()),
                    user: None,
                    event: "fired".into(),
                    detail: serde_json::json!({"due_at": due_at, "late_ms": due_at.map(|d| now - d)}),
                });
                ids.push(id);
            }
            tx.commit().await?;
            ids
        }))
    }

    /// The earliest due time of a scheduled command.
    pub async fn next_due(&self) -> StoreResult<Option<i64>> {
        Ok(with_pool!(self, p => {
            sqlx::query("SELECT MIN(due_at) AS m FROM iot_commands WHERE status = 'scheduled'")
                .fetch_one(p)
                .await?
                .try_get::<Option<i64>, _>("m")?
        }))
    }

    /// The earliest time an outbox row needs attention (send or resend).
    pub async fn next_attempt(&self) -> StoreResult<Option<i64>> {
        Ok(with_pool!(self, p => {
            sqlx::query("SELECT MIN(next_attempt_at) AS m FROM iot_commands WHERE next_attempt_at IS NOT NULL")
                .fetch_one(p)
                .await?
                .try_get::<Option<i64>, _>("m")?
        }))
    }

    /// Claims up to `limit` outbox rows that are due: first sends and
    /// resends of sent rows whose acknowledgement did not come by their
    /// deadline. Each claimed row is marked `sent` with a new deadline
    /// (`now + ack_timeout_ms`) and one more attempt, in the same statement,
    /// so no other claimer (instance) gets it until that deadline passes.
    /// Rows that used all `max_attempts` are given up (`unacknowledged`).
    pub async fn claim(
        &self,
        now: i64,
        claimer: &str,
        ack_timeout_ms: i64,
        max_attempts: i64,
        limit: i64,
    ) -> StoreResult<Vec<Claimed>> {
        let give_up = format!(
            "UPDATE iot_commands SET status = 'unacknowledged', next_attempt_at = NULL, updated_at = $1 WHERE id IN \
             (SELECT id FROM iot_commands WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1 \
              AND attempts >= $2 AND status = 'sent' LIMIT 1000 {}) RETURNING id, request_id, attempts",
            skip_locked!(self)
        );
        let claim = format!(
            "UPDATE iot_commands SET status = 'sent', attempts = attempts + 1, next_attempt_at = $1, \
             claimed_by = $2, updated_at = $3 WHERE id IN \
             (SELECT id FROM iot_commands WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $3 \
              AND attempts < $4 AND status IN ('queued', 'sent', 'unacknowledged') \
              ORDER BY next_attempt_at LIMIT $5 {}) RETURNING id, request_id, body, attempts",
            skip_locked!(self)
        );
        Ok(with_pool!(self, p => {
            let mut tx = p.begin().await?;
            for row in sqlx::query(&give_up).bind(now).bind(max_attempts).fetch_all(&mut *tx).await? {
                let id: String = row.try_get("id")?;
                let attempts: i64 = row.try_get("attempts")?;
                audit!(tx, now, &NewAudit {
                    request_id: row.try_get("request_id")?,
                    command_id: Some(id),
                    user: None,
                    event: "unacknowledged".into(),
                    detail: serde_json::json!({"attempts": attempts, "final": true}),
                });
            }
            let rows = sqlx::query(&claim)
                .bind(now + ack_timeout_ms)
                .bind(claimer)
                .bind(now)
                .bind(max_attempts)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let body: String = row.try_get("body")?;
                let c = Claimed {
                    id: row.try_get("id")?,
                    request_id: row.try_get("request_id")?,
                    command: serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    attempt: row.try_get("attempts")?,
                };
                if c.attempt > 1 {
                    audit!(tx, now, &NewAudit {
                        request_id: Some(c.request_id.clone()),
                        command_id: Some(c.id.clone()),
                        user: None,
                        event: "unacknowledged".into(),
                        detail: serde_json::json!({"attempts": c.attempt - 1, "final": false, "retry": c.attempt}),
                    });
                }
                audit!(tx, now, &NewAudit {
                    request_id: Some(c.request_id.clone()),
                    command_id: Some(c.id.clone()),
                    user: None,
                    event: "sent".into(),
                    detail: serde_json::json!({"attempt": c.attempt, "by": claimer}),
                });
                out.push(c);
            }
            tx.commit().await?;
            out
        }))
    }

    /// Puts a claimed row back (the publish failed before reaching the
    /// broker): the attempt does not count.
    pub async fn unclaim(&self, id: &str, now: i64) -> StoreResult<()> {
        with_pool!(self, p => {
            sqlx::query(
                "UPDATE iot_commands SET status = 'queued', attempts = attempts - 1, next_attempt_at = $1, \
                 updated_at = $1 WHERE id = $2 AND status = 'sent' AND attempts > 0",
            )
            .bind(now)
            .bind(id)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Records acknowledgements; duplicates and acks from the wrong device
    /// change nothing. Returns the command ids whose status changed.
    pub async fn record_acks(&self, acks: &[Ack], now: i64) -> StoreResult<Vec<String>> {
        if acks.is_empty() {
            return Ok(Vec::new());
        }
        Ok(with_pool!(self, p => {
            let mut tx = p.begin().await?;
            let mut changed = Vec::new();
            for a in acks {
                let status = if a.ok { CommandStatus::Acknowledged } else { CommandStatus::Failed };
                let row = sqlx::query(
                    "UPDATE iot_commands SET status = $1, result = $2, next_attempt_at = NULL, updated_at = $3 \
                     WHERE id = $4 AND device = $5 AND status IN ('sent', 'unacknowledged', 'queued') \
                     RETURNING request_id, attempts",
                )
                .bind(status.as_str())
                .bind(a.detail.to_string())
                .bind(now)
                .bind(&a.command_id)
                .bind(&a.device)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = row {
                    let attempts: i64 = row.try_get("attempts")?;
                    audit!(tx, now, &NewAudit {
                        request_id: row.try_get("request_id")?,
                        command_id: Some(a.command_id.clone()),
                        user: None,
                        event: status.as_str().into(),
                        detail: serde_json::json!({"attempts": attempts, "device": a.detail}),
                    });
                    changed.push(a.command_id.clone());
                }
            }
            tx.commit().await?;
            changed
        }))
    }

    /// Counts commands by status (for tests and stats).
    pub async fn count_commands(&self, status: CommandStatus) -> StoreResult<i64> {
        Ok(with_pool!(self, p => {
            sqlx::query("SELECT COUNT(*) AS n FROM iot_commands WHERE status = $1")
                .bind(status.as_str())
                .fetch_one(p)
                .await?
                .try_get::<i64, _>("n")?
        }))
    }
}

#[cfg(test)]
mod tests;
