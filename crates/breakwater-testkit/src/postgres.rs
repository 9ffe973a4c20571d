//! A fresh PostgreSQL database per test on the local server
//! (127.0.0.1:5432, trust auth, user `postgres`), dropped afterwards.
//!
//! Uses the `psql` client rather than a Rust driver so the testkit stays
//! light for the crates that do not need PostgreSQL.

use std::io;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// The server the tests use.
pub const PG_HOST: &str = "127.0.0.1";
/// Its port.
pub const PG_PORT: u16 = 5432;

fn psql(sql: &str) -> io::Result<()> {
    let out = Command::new("psql")
        .args([
            "-h",
            PG_HOST,
            "-p",
            &PG_PORT.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-c",
            sql,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "`psql` could not run ({e}): install postgresql-client, start the server with scripts/test-deps"
                ),
            )
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "psql failed: {} (is PostgreSQL running on {PG_HOST}:{PG_PORT}? scripts/test-deps starts it)",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A database of our own, dropped (with its connections) when this is dropped.
pub struct PgDatabase {
    name: String,
}

impl PgDatabase {
    /// Creates `bw_test_<pid>_<n>_<random>`.
    pub fn create() -> io::Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "bw_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        psql(&format!("CREATE DATABASE {name}"))?;
        Ok(PgDatabase { name })
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://postgres@127.0.0.1:5432/<name>`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{PG_HOST}:{PG_PORT}/{}", self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // FORCE ends the test's pool connections that may still be open.
        let _ = psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn databases_are_created_and_dropped() {
        let db = PgDatabase::create().unwrap();
        assert!(db.url().ends_with(db.name()));
        let name = db.name().to_string();
        drop(db);
        // dropping twice is harmless
        psql(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
    }
}
