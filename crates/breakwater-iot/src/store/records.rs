//! The records the store reads and writes, and the queries' filters.

use crate::command::Command;
use crate::status::{CommandStatus, RequestStatus};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A new request to record.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// `req_…`.
    pub id: String,
    /// Who asked.
    pub user: String,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// The utterance.
    pub text: String,
    /// Its status.
    pub status: RequestStatus,
    /// A clarification question or explanation.
    pub message: Option<String>,
    /// How it was understood (parser, model, attempts, fallback).
    pub parse: Value,
    /// When, UTC ms.
    pub created_at: i64,
    /// Until when a confirmation is accepted.
    pub confirm_deadline: Option<i64>,
}

/// A new command of a request.
#[derive(Debug, Clone)]
pub struct NewCommand {
    /// `cmd_…`: also the idempotency key devices deduplicate on.
    pub id: String,
    /// Position in the request.
    pub seq: i64,
    /// The command.
    pub command: Command,
    /// Whether it needed confirmation.
    pub sensitive: bool,
    /// Its first status.
    pub status: CommandStatus,
    /// When it is due, for scheduled commands (UTC ms).
    pub due_at: Option<i64>,
}

/// An audit event to append.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAudit {
    /// The request.
    pub request_id: Option<String>,
    /// The command.
    pub command_id: Option<String>,
    /// The user.
    pub user: Option<String>,
    /// `utterance`, `parse`, `command`, `confirmed`, `sent`, …
    pub event: String,
    /// Details.
    pub detail: Value,
}

impl NewAudit {
    /// An event about a request.
    pub fn request(request_id: &str, user: &str, event: &str, detail: Value) -> Self {
        NewAudit {
            request_id: Some(request_id.to_string()),
            command_id: None,
            user: Some(user.to_string()),
            event: event.to_string(),
            detail,
        }
    }
}

/// A stored request with its commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// `req_…`.
    pub id: String,
    /// Who asked.
    pub user: String,
    /// The client's idempotency key.
    pub idempotency_key: Option<String>,
    /// The utterance.
    pub text: String,
    /// Where it stands.
    pub status: RequestStatus,
    /// A clarification question or explanation.
    pub message: Option<String>,
    /// How it was understood.
    pub parse: Value,
    /// When, UTC ms.
    pub created_at: i64,
    /// Last change, UTC ms.
    pub updated_at: i64,
    /// Until when a confirmation is accepted.
    pub confirm_deadline: Option<i64>,
    /// Its commands.
    pub commands: Vec<CommandRecord>,
}

/// A stored command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// `cmd_…`.
    pub id: String,
    /// Its request.
    pub request_id: String,
    /// Position in the request.
    pub seq: i64,
    /// The command.
    pub command: Command,
    /// Whether it needed confirmation.
    pub sensitive: bool,
    /// Where it stands.
    pub status: CommandStatus,
    /// When it is due (UTC ms), if scheduled.
    pub due_at: Option<i64>,
    /// Sends so far.
    pub attempts: i64,
    /// The device's answer.
    pub result: Option<Value>,
    /// Last change, UTC ms.
    pub updated_at: i64,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Order of appending.
    pub seq: i64,
    /// When, UTC ms.
    pub at: i64,
    /// The request.
    pub request_id: Option<String>,
    /// The command.
    pub command_id: Option<String>,
    /// The user.
    pub user: Option<String>,
    /// What happened.
    pub event: String,
    /// Details.
    pub detail: Value,
}

/// A command claimed for sending.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// `cmd_…`.
    pub id: String,
    /// Its request.
    pub request_id: String,
    /// The command.
    pub command: Command,
    /// This send's number (1 = first).
    pub attempt: i64,
}

/// A device's acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The command id.
    pub command_id: String,
    /// The device that answered (must be the command's device).
    pub device: String,
    /// Whether it applied the command.
    pub ok: bool,
    /// The device's message (state, error).
    pub detail: Value,
}

/// Filters for listing requests.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    /// Only this user's.
    pub user: Option<String>,
    /// Only in this status.
    pub status: Option<RequestStatus>,
    /// Only created at or after (UTC ms).
    pub since: Option<i64>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<i64>,
}

/// Filters for reading the audit log.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditQuery {
    /// Only this request's events.
    pub request_id: Option<String>,
    /// Only this user's events.
    pub user: Option<String>,
    /// Only at or after (UTC ms).
    pub since: Option<i64>,
    /// At most this many, oldest first (default 200, at most 10 000).
    pub limit: Option<i64>,
}

/// What a confirmation attempt found.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfirmOutcome {
    /// Confirmed; the request's new status.
    Confirmed(RequestStatus),
    /// No such request.
    NotFound,
    /// Another user asked; only they may confirm.
    WrongUser,
    /// The request is not waiting for a confirmation (its status).
    NotPending(RequestStatus),
    /// The time limit passed; the request is now expired.
    Expired,
}

/// What recording a new request found.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// Recorded.
    New,
    /// The same user already sent this idempotency key: the first request.
    Existing(Box<RequestRecord>),
}
