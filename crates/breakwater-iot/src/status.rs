//! Statuses of requests and commands, and the rule deciding what a new
//! request's status is. Sensitive actions never run without a confirmation,
//! whatever produced them — that is the point where an utterance's text
//! stops being able to widen what happens.

use crate::command::Command;
use crate::registry::Registry;
use crate::understand::Outcome;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a request (one utterance) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Its commands went to the outbox (and on to the devices).
    Dispatched,
    /// At least one command waits for the user's confirmation.
    PendingConfirmation,
    /// Its commands wait for their time.
    Scheduled,
    /// A question went back to the user.
    NeedsClarification,
    /// Nothing was understood; nothing was done.
    NotUnderstood,
    /// Refused by the per-user rate limit.
    RateLimited,
    /// The confirmation did not come in time; the sensitive commands were dropped.
    Expired,
}

/// Where one command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Waits for the user's confirmation.
    PendingConfirmation,
    /// Waits for its time.
    Scheduled,
    /// In the outbox, not yet sent.
    Queued,
    /// Sent; waiting for the device's acknowledgement.
    Sent,
    /// The device acknowledged it.
    Acknowledged,
    /// No acknowledgement in time (retried while attempts remain).
    Unacknowledged,
    /// The device refused it.
    Failed,
    /// Its confirmation never came.
    Expired,
}

macro_rules! names {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
            /// Parses a wire name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)* _ => None }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names!(RequestStatus {
    Dispatched => "dispatched",
    PendingConfirmation => "pending_confirmation",
    Scheduled => "scheduled",
    NeedsClarification => "needs_clarification",
    NotUnderstood => "not_understood",
    RateLimited => "rate_limited",
    Expired => "expired",
});

names!(CommandStatus {
    PendingConfirmation => "pending_confirmation",
    Scheduled => "scheduled",
    Queued => "queued",
    Sent => "sent",
    Acknowledged => "acknowledged",
    Unacknowledged => "unacknowledged",
    Failed => "failed",
    Expired => "expired",
});

/// Whether a command needs confirmation. Unknown devices count as
/// sensitive (they never get this far: every command is checked first).
pub fn is_sensitive(reg: &Registry, cmd: &Command) -> bool {
    reg.device(&cmd.device).is_none_or(|d| d.is_sensitive(cmd.action))
}

/// The first status of one command.
pub fn initial_command_status(reg: &Registry, cmd: &Command) -> CommandStatus {
    if is_sensitive(reg, cmd) {
        CommandStatus::PendingConfirmation
    } else if cmd.at.is_some() {
        CommandStatus::Scheduled
    } else {
        CommandStatus::Queued
    }
}

/// The status a new request gets from its understanding: any sensitive
/// command makes the request wait for confirmation; all-timed commands
/// make it scheduled; otherwise it is dispatched.
pub fn initial_status(reg: &Registry, outcome: &Outcome) -> RequestStatus {
    match outcome {
        Outcome::Clarify(_) => RequestStatus::NeedsClarification,
        Outcome::NotUnderstood(_) => RequestStatus::NotUnderstood,
        Outcome::Commands(cmds) if cmds.is_empty() => RequestStatus::NotUnderstood,
        Outcome::Commands(cmds) => {
            if cmds.iter().any(|c| is_sensitive(reg, c)) {
                RequestStatus::PendingConfirmation
            } else if cmds.iter().all(|c| c.at.is_some()) {
                RequestStatus::Scheduled
            } else {
                RequestStatus::Dispatched
            }
        }
    }
}
