//! The SQLite schema, versioned by `PRAGMA user_version`. Each migration
//! takes the schema from one version to the next, in one transaction with
//! the version bump, so a database is always at a version it can be read at.
//! A database is brought forward when it is opened; one written by a newer
//! Confab is refused rather than guessed at.
//!
//! Add a change as a new entry at the end of [`MIGRATIONS`]; never edit one
//! that has shipped.

use super::db;
use crate::ports::StoreError;
use rusqlite::{Connection, TransactionBehavior};

/// The migrations in order: entry `i` takes version `i` to `i + 1`.
///
/// 1. The first schema. Databases from before versioning (version 0) have
///    exactly these tables already, hence `IF NOT EXISTS`.
/// 2. Session incarnations, and owner and incarnation on subscriptions.
/// 3. Per-owner counters and sets (`LimitStore`); socket tickets, and when
///    a connection's token expires.
/// 4. The messages queued behind a session's running turn.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE IF NOT EXISTS sessions (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    activity_ms  INTEGER NOT NULL,
    title_lc     TEXT NOT NULL,
    first_lc     TEXT NOT NULL,
    summary      TEXT NOT NULL,
    turn         TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_owner ON sessions(owner, activity_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS sessions_running ON sessions(id) WHERE turn IS NOT NULL;
CREATE TABLE IF NOT EXISTS messages (
    session_id   TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    id           TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (session_id, seq),
    UNIQUE (session_id, id)
);
CREATE TABLE IF NOT EXISTS connections (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    connected_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS connections_by_owner ON connections(owner);
CREATE TABLE IF NOT EXISTS subscriptions (
    connection_id TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    token         TEXT NOT NULL,
    PRIMARY KEY (connection_id, session_id)
);
CREATE INDEX IF NOT EXISTS subscriptions_by_session ON subscriptions(session_id);
"#,
    // 2. Incarnations: a session deleted and created again under its id is a
    //    new incarnation, and a subscription names the owner and incarnation it
    //    was made for, so fan-out can skip rows of another one.
    r#"
ALTER TABLE sessions ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriptions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE subscriptions ADD COLUMN incarnation TEXT NOT NULL DEFAULT '';
"#,
    // 3. What one owner uses: counters in windows (creations, sends, tokens)
    //    and sets (the sessions whose turn runs).
    r#"
CREATE TABLE limit_counters (
    owner       TEXT NOT NULL,
    key         TEXT NOT NULL,
    n           INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE TABLE limit_sets (
    owner       TEXT NOT NULL,
    key         TEXT NOT NULL,
    member      TEXT NOT NULL,
    PRIMARY KEY (owner, key, member)
);
CREATE TABLE socket_tickets (
    ticket          TEXT PRIMARY KEY,
    owner           TEXT NOT NULL,
    auth_expires_ms INTEGER,
    expires_ms      INTEGER NOT NULL
);
ALTER TABLE connections ADD COLUMN auth_expires_ms INTEGER;
ALTER TABLE subscriptions ADD COLUMN renewed_ms INTEGER NOT NULL DEFAULT 0;
"#,
    // 4. The queue: messages sent while a turn runs (JSON; NULL when empty).
    r#"
ALTER TABLE sessions ADD COLUMN queue TEXT;
"#,
];

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// A database this build cannot use.
#[derive(Debug, thiserror::Error)]
#[error(
    "the database is at schema version {found}, newer than this Confab's {SCHEMA_VERSION}; use a newer Confab"
)]
pub struct SchemaError {
    pub found: u32,
}

fn version(conn: &Connection) -> Result<u32, StoreError> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(db)
}

/// Brings the database up to [`SCHEMA_VERSION`]; returns the version it was at.
pub(super) fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::backend(SchemaError { found }));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(db)?;
        // Another process may have migrated meanwhile.
        if version(&tx)? > from as u32 {
            continue;
        }
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", from as u32 + 1)
            .map_err(db)?;
        tx.commit().map_err(db)?;
        tracing::info!(from, to = from + 1, "migrated the database schema");
    }
    Ok(found)
}
