//! The tables, for each engine. Integers are BIGINT everywhere so both
//! engines decode them as i64; times are UTC milliseconds.

/// SQLite DDL.
pub(super) const SQLITE: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS iot_requests (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        idempotency_key TEXT,
        text TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT,
        parse TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        confirm_deadline BIGINT)",
    "CREATE TABLE IF NOT EXISTS iot_commands (
        id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        device TEXT NOT NULL,
        action TEXT NOT NULL,
        body TEXT NOT NULL,
        sensitive BIGINT NOT NULL,
        status TEXT NOT NULL,
        due_at BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT,
        claimed_by TEXT,
        result TEXT,
        updated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS iot_audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at BIGINT NOT NULL,
        request_id TEXT,
        command_id TEXT,
        user_id TEXT,
        event TEXT NOT NULL,
        detail TEXT NOT NULL)",
];

/// PostgreSQL DDL.
pub(super) const POSTGRES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS iot_requests (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        idempotency_key TEXT,
        text TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT,
        parse TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        confirm_deadline BIGINT)",
    "CREATE TABLE IF NOT EXISTS iot_commands (
        id TEXT PRIMARY KEY,
        request_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        device TEXT NOT NULL,
        action TEXT NOT NULL,
        body TEXT NOT NULL,
        sensitive BIGINT NOT NULL,
        status TEXT NOT NULL,
        due_at BIGINT,
        attempts BIGINT NOT NULL DEFAULT 0,
        next_attempt_at BIGINT,
        claimed_by TEXT,
        result TEXT,
        updated_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS iot_audit (
        seq BIGSERIAL PRIMARY KEY,
        at BIGINT NOT NULL,
        request_id TEXT,
        command_id TEXT,
        user_id TEXT,
        event TEXT NOT NULL,
        detail TEXT NOT NULL)",
];

/// Indexes, the same text for both engines.
pub(super) const INDEXES: &[&str] = &[
    "CREATE UNIQUE INDEX IF NOT EXISTS iot_requests_idem ON iot_requests (user_id, idempotency_key)",
    "CREATE INDEX IF NOT EXISTS iot_requests_user ON iot_requests (user_id, created_at)",
    "CREATE INDEX IF NOT EXISTS iot_requests_pending ON iot_requests (confirm_deadline) \
     WHERE status = 'pending_confirmation'",
    "CREATE INDEX IF NOT EXISTS iot_commands_request ON iot_commands (request_id, seq)",
    "CREATE INDEX IF NOT EXISTS iot_commands_outbox ON iot_commands (next_attempt_at) \
     WHERE next_attempt_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS iot_commands_due ON iot_commands (due_at) WHERE status = 'scheduled'",
    "CREATE INDEX IF NOT EXISTS iot_audit_request ON iot_audit (request_id, seq)",
];
