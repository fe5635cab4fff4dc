//! The embedded store: one SQLite file in the data directory. Every write that
//! must be atomic is one transaction; seq numbers are given inside it, so they
//! can neither skip nor repeat.
//!
//! Writes go to one writer thread, which commits the writes that arrive
//! together in one transaction (each in a savepoint of its own, so that one
//! that fails changes nothing and fails alone), with one `fsync` for all
//! of them; each caller hears of its write only once it is committed.
//! Reads go to a few connections of their own, each read a snapshot, so
//! that they never wait for a commit.

use crate::clock::now_ms;
use crate::domain::records;
use crate::domain::records::{
    ActiveTurn, CreateOutcome, ListCursor, MessageRange, NewSession, NewTurn, Parked, Principal,
    Queue, QueueChange, QueueOutcome, RESUBSCRIBE_EVERY_MS, Resolved, SessionPatch, SessionQuery,
    SessionRecord, SessionRef, StartOutcome, SubscribeOutcome, Subscriber, TurnEnd,
};
use crate::ports::{ConnectionStore, Held, LimitStore, SessionStore, StoreError, TurnStore};
use async_trait::async_trait;
use confab_protocol::model::{
    LiveReply, Message, PendingRequest, ProjectSummary, Resolution, SessionSummary,
};
use confab_protocol::{SessionId, Timestamp};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Mutex};

mod schema;
pub use schema::{SCHEMA_VERSION, SchemaError};

/// Counts of what the store was asked, for benchmarks.
#[derive(Debug, Default)]
pub struct Counters {
    /// Writes committed (each a transaction of its own, as callers see it).
    pub writes: std::sync::atomic::AtomicU64,
    /// Commits that carried them (one `fsync` each).
    pub commits: std::sync::atomic::AtomicU64,
}

/// Connections that serve reads.
const READERS: usize = 4;
/// Most writes committed together.
const MAX_BATCH: usize = 128;

/// A write for the writer thread: it runs against the open transaction and
/// says whether it succeeded, and how to tell its caller once the commit is
/// known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Deliver) + Send>;
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

#[derive(Clone)]
pub struct SqliteStore {
    writer: std::sync::mpsc::Sender<Job>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
    counters: Arc<Counters>,
    /// `confab.lock`, locked for as long as the store is open: one gateway
    /// per data directory.
    _lock: Arc<std::fs::File>,
}

/// Another process has the data directory open.
#[derive(Debug, thiserror::Error)]
#[error(
    "another Confab is running on the data directory {0} (it holds confab.lock); stop it, or give this one another --data-dir"
)]
pub struct DataDirInUse(pub String);

/// The data directory and everything in it are the user's alone: the
/// sessions are their conversations.
#[cfg(unix)]
fn private(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::backend(e)),
    }
}

#[cfg(not(unix))]
fn private(_path: &Path, _mode: u32) -> Result<(), StoreError> {
    Ok(())
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::backend(e)
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(StoreError::corrupt)
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(StoreError::corrupt)
}

/// An id read from a column.
fn parse_id<T: std::str::FromStr<Err = confab_protocol::validate::Invalid>>(
    s: String,
) -> Result<T, StoreError> {
    s.parse().map_err(StoreError::corrupt)
}

impl SqliteStore {
    /// Opens (or creates) `confab.db` in `dir`, bringing its schema up to
    /// [`SCHEMA_VERSION`] first.
    ///
    /// The directory is made private (0700) and its files 0600, and
    /// `confab.lock` in it is locked: a second store on the same directory,
    /// in this process or another, is refused with [`DataDirInUse`].
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        private(dir, 0o700)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("confab.lock"))
            .map_err(StoreError::backend)?;
        private(&dir.join("confab.lock"), 0o600)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::backend(DataDirInUse(dir.display().to_string())));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::backend(e)),
        }
        // SQLite gives the journal files the database file's mode, so the
        // database is made first, private.
        let file = dir.join("confab.db");
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&file)
            .map_err(StoreError::backend)?;
        for f in ["confab.db", "confab.db-wal", "confab.db-shm"] {
            private(&dir.join(f), 0o600)?;
        }
        let open = || -> Result<Connection, StoreError> {
            let conn = Connection::open(&file).map_err(db)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(db)?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(db)?;
            conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(db)?;
            Ok(conn)
        };
        let mut conn = open()?;
        schema::migrate(&mut conn)?;
        let readers = (0..READERS)
            .map(|_| {
                let r = open()?;
                r.pragma_update(None, "query_only", "ON").map_err(db)?;
                Ok(Mutex::new(r))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let counters: Arc<Counters> = Arc::default();
        let (writer, jobs) = std::sync::mpsc::channel::<Job>();
        let c = counters.clone();
        std::thread::Builder::new()
            .name("confab-sqlite-writer".into())
            .spawn(move || write_loop(conn, jobs, c))
            .map_err(StoreError::backend)?;
        Ok(SqliteStore {
            writer,
            readers: Arc::new(readers),
            next_reader: Arc::default(),
            counters,
            _lock: Arc::new(lock),
        })
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Forgets every connection: after a restart none of them exists.
    pub async fn clear_connections(&self) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM subscriptions", []).map_err(db)?;
            tx.execute("DELETE FROM connections", []).map_err(db)?;
            Ok(())
        })
        .await
    }

    /// Runs `f` on a reader, in a read transaction: one snapshot, which a
    /// commit meanwhile does not change.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % readers.len();
        tokio::task::spawn_blocking(move || {
            let mut c = readers[i].lock().unwrap_or_else(|p| p.into_inner());
            let tx = c.transaction().map_err(db)?;
            let out = f(&tx);
            // Nothing to keep: a read transaction ends either way.
            let _ = tx.finish();
            out
        })
        .await
        .map_err(StoreError::backend)?
    }

    /// Runs `f` as one atomic write, committed (with the writes that came
    /// with it) before this returns Ok.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: Job = Box::new(move |c: &Connection| {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(c)))
                .unwrap_or_else(|_| {
                    Err(StoreError::backend(std::io::Error::other(
                        "a store write panicked",
                    )))
                });
            let ok = out.is_ok();
            let deliver: Deliver = Box::new(move |commit_failed: Option<&str>| {
                let result = match (out, commit_failed) {
                    (Ok(v), None) => Ok(v),
                    (Ok(_), Some(why)) => Err(StoreError::backend(std::io::Error::other(format!(
                        "the commit failed: {why}"
                    )))),
                    (Err(e), _) => Err(e),
                };
                let _ = tx.send(result);
            });
            (ok, deliver)
        });
        self.writer
            .send(job)
            .map_err(|_| StoreError::backend(std::io::Error::other("the store is closed")))?;
        rx.await
            .map_err(|_| StoreError::backend(std::io::Error::other("the store's writer stopped")))?
    }
}

/// The writer thread: waits for a write, takes every write waiting behind
/// it (up to `MAX_BATCH`), runs each in a savepoint of one transaction, and
/// commits them together. Ends when every handle to the store is gone.
fn write_loop(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Job>, counters: Arc<Counters>) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                // Not run: their callers hear that the writer failed them.
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "a store transaction could not begin"
                );
                drop(batch);
                continue;
            }
        };
        let mut done: Vec<(bool, Deliver)> = Vec::with_capacity(batch.len());
        for job in batch {
            if let Err(e) = tx.execute_batch("SAVEPOINT w") {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "a store savepoint failed"
                );
                continue;
            }
            let (ok, deliver) = job(&tx);
            let ended = if ok {
                tx.execute_batch("RELEASE w")
            } else {
                tx.execute_batch("ROLLBACK TO w; RELEASE w")
            };
            done.push((ok && ended.is_ok(), deliver));
        }
        let committed = tx.commit();
        counters.commits.fetch_add(1, Relaxed);
        let why = committed.err().map(|e| e.to_string());
        for (ok, deliver) in done {
            if ok && why.is_none() {
                counters.writes.fetch_add(1, Relaxed);
            }
            deliver(why.as_deref());
        }
    }
}

impl SqliteStore {
    /// Changes the turn of `session_id` with `change` in one write, if
    /// `turn_id` is its active turn and `change` says to (returns true).
    async fn update_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        change: impl FnOnce(&mut ActiveTurn) -> bool + Send + 'static,
    ) -> Result<bool, StoreError> {
        let (session_id, turn_id) = (session_id.to_string(), turn_id.to_string());
        self.write(move |tx| {
            let Some(mut t) = load_session(tx, &session_id)?
                .and_then(|r| r.turn)
                .filter(|t| t.turn_id == turn_id)
            else {
                return Ok(false);
            };
            if !change(&mut t) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE sessions SET turn = ?2 WHERE id = ?1",
                params![session_id, json(&t)?],
            )
            .map_err(db)?;
            Ok(true)
        })
        .await
    }
}

fn load_session(c: &Connection, id: &str) -> Result<Option<SessionRecord>, StoreError> {
    let row = c
        .query_row(
            "SELECT owner, summary, turn, incarnation, queue FROM sessions WHERE id = ?1",
            [id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            },
        )
        .optional()
        .map_err(db)?;
    let Some((owner, summary, turn, incarnation, queue)) = row else {
        return Ok(None);
    };
    Ok(Some(SessionRecord {
        owner,
        incarnation,
        summary: parse(&summary)?,
        turn: turn.as_deref().map(parse).transpose()?,
        queue: queue.as_deref().map(parse).transpose()?.unwrap_or_default(),
    }))
}

fn save_queue(c: &Connection, id: &str, queue: &Queue) -> Result<(), StoreError> {
    let queue = (!queue.is_empty()).then(|| json(queue)).transpose()?;
    c.execute(
        "UPDATE sessions SET queue = ?2 WHERE id = ?1",
        params![id, queue],
    )
    .map_err(db)?;
    Ok(())
}

fn save_session(
    c: &Connection,
    s: &SessionSummary,
    turn: Option<&ActiveTurn>,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE sessions SET summary = ?2, turn = ?3, activity_ms = ?4, title_lc = ?5 WHERE id = ?1",
        params![s.id.as_str(), json(s)?, turn.map(json).transpose()?, s.last_message_at.millis(), s.title.to_lowercase()],
    )
    .map_err(db)?;
    Ok(())
}

fn insert_message(c: &Connection, m: &Message) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO messages (session_id, seq, id, body) VALUES (?1, ?2, ?3, ?4)",
        params![m.session_id.as_str(), m.seq as i64, m.id.as_str(), json(m)?],
    )
    .map_err(db)?;
    Ok(())
}

fn find_message(c: &Connection, session_id: &str, id: &str) -> Result<Option<Message>, StoreError> {
    c.query_row(
        "SELECT body FROM messages WHERE session_id = ?1 AND id = ?2",
        [session_id, id],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .map_err(db)?
    .map(|b| parse(&b))
    .transpose()
}

fn collect_messages(
    c: &Connection,
    sql: &str,
    session_id: &str,
    seq: i64,
    limit: usize,
) -> Result<Vec<Message>, StoreError> {
    let mut st = c.prepare_cached(sql).map_err(db)?;
    let rows = st
        .query_map(params![session_id, seq, limit as i64 + 1], |r| {
            r.get::<_, String>(0)
        })
        .map_err(db)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(parse::<Message>(&r.map_err(db)?)?);
    }
    Ok(out)
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, new: &NewSession) -> Result<CreateOutcome, StoreError> {
        let new = new.clone();
        self.write(move |tx| {
            if let Some(rec) = load_session(tx, &new.summary.id)? {
                return Ok(CreateOutcome::Exists(rec));
            }
            let s = &new.summary;
            tx.execute(
                "INSERT INTO sessions (id, owner, project_id, activity_ms, title_lc, first_lc, summary, turn, incarnation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    s.id.as_str(),
                    new.owner,
                    s.project_id.as_str(),
                    s.last_message_at.millis(),
                    s.title.to_lowercase(),
                    new.first.plain_text().to_lowercase(),
                    json(s)?,
                    json(&new.turn)?,
                    new.incarnation
                ],
            )
            .map_err(db)?;
            let mut first = new.first.clone();
            first.seq = 1;
            insert_message(tx, &first)?;
            Ok(CreateOutcome::Created)
        })
        .await
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let id = id.to_string();
        self.read(move |c| load_session(c, &id)).await
    }

    async fn list_sessions(
        &self,
        owner: &str,
        q: &SessionQuery,
    ) -> Result<(Vec<SessionSummary>, Option<ListCursor>), StoreError> {
        let (owner, q) = (owner.to_string(), q.clone());
        self.read(move |c| {
            let (after_ms, after_id) = match &q.after {
                Some(cur) => (cur.activity_ms, cur.id.to_string()),
                None => (i64::MAX, String::new()),
            };
            let mut st = c
                .prepare_cached(
                    "SELECT summary FROM sessions
                     WHERE owner = ?1
                       AND (?2 IS NULL OR project_id = ?2)
                       AND (?3 IS NULL OR instr(title_lc, ?3) > 0 OR instr(first_lc, ?3) > 0)
                       AND (activity_ms < ?4 OR (activity_ms = ?4 AND (?5 = '' OR id < ?5)))
                     ORDER BY activity_ms DESC, id DESC
                     LIMIT ?6",
                )
                .map_err(db)?;
            let rows = st
                .query_map(
                    params![
                        owner,
                        q.project_id.as_deref(),
                        q.text,
                        after_ms,
                        after_id,
                        q.limit as i64 + 1
                    ],
                    |r| r.get::<_, String>(0),
                )
                .map_err(db)?;
            let mut out: Vec<SessionSummary> = Vec::new();
            for r in rows {
                out.push(parse(&r.map_err(db)?)?);
            }
            let next = ListCursor::page(&mut out, q.limit);
            Ok((out, next))
        })
        .await
    }

    async fn list_projects(&self, owner: &str) -> Result<Vec<ProjectSummary>, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| {
            // SQLite gives the bare `id` from the row holding MAX(activity_ms).
            let mut st = c
                .prepare_cached(
                    "SELECT project_id, id, MAX(activity_ms), COUNT(*) FROM sessions
                     WHERE owner = ?1 GROUP BY project_id ORDER BY MAX(activity_ms) DESC",
                )
                .map_err(db)?;
            let rows = st
                .query_map([owner], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        Timestamp::from_millis(r.get(2)?),
                        r.get::<_, i64>(3)? as u64,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for row in rows {
                let (id, last, at, count) = row.map_err(db)?;
                out.push(ProjectSummary {
                    id: parse_id(id)?,
                    last_session_id: parse_id(last)?,
                    last_activity_at: at,
                    session_count: count,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn patch_session(
        &self,
        owner: &str,
        id: &str,
        patch: &SessionPatch,
    ) -> Result<Option<SessionSummary>, StoreError> {
        let (owner, id, patch) = (owner.to_string(), id.to_string(), patch.clone());
        self.write(move |tx| {
            let Some(mut rec) = load_session(tx, &id)?.filter(|r| r.owner == owner) else {
                return Ok(None);
            };
            patch.apply(&mut rec.summary);
            save_session(tx, &rec.summary, rec.turn.as_ref())?;
            Ok(Some(rec.summary))
        })
        .await
    }

    async fn delete_session(&self, owner: &str, id: &str) -> Result<Option<u64>, StoreError> {
        let (owner, id) = (owner.to_string(), id.to_string());
        self.write(move |tx| {
            let Some(rec) = load_session(tx, &id)?.filter(|r| r.owner == owner) else {
                return Ok(None);
            };
            tx.execute("DELETE FROM messages WHERE session_id = ?1", [&id])
                .map_err(db)?;
            tx.execute("DELETE FROM subscriptions WHERE session_id = ?1", [&id])
                .map_err(db)?;
            tx.execute("DELETE FROM sessions WHERE id = ?1", [&id])
                .map_err(db)?;
            Ok(Some(rec.summary.version + 1))
        })
        .await
    }
}

#[async_trait]
impl TurnStore for SqliteStore {
    async fn messages(
        &self,
        session_id: &str,
        range: MessageRange,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let session_id = session_id.to_string();
        self.read(move |c| {
            let (mut out, limit, newest_first) = match range {
                MessageRange::Latest { limit } => (
                    collect_messages(c, "SELECT body FROM messages WHERE session_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3", &session_id, i64::MAX, limit)?,
                    limit,
                    true,
                ),
                MessageRange::Before { seq, limit } => (
                    collect_messages(c, "SELECT body FROM messages WHERE session_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3", &session_id, seq.min(i64::MAX as u64) as i64, limit)?,
                    limit,
                    true,
                ),
                MessageRange::After { seq, limit } => (
                    collect_messages(c, "SELECT body FROM messages WHERE session_id = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3", &session_id, seq.min(i64::MAX as u64) as i64, limit)?,
                    limit,
                    false,
                ),
            };
            let more = out.len() > limit;
            out.truncate(limit);
            if newest_first {
                out.reverse();
            }
            Ok((out, more))
        })
        .await
    }

    async fn find_message(
        &self,
        session_id: &str,
        message_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let (s, m) = (session_id.to_string(), message_id.to_string());
        self.read(move |c| find_message(c, &s, &m)).await
    }

    async fn start_turn(
        &self,
        owner: &str,
        session_id: &str,
        turn: &NewTurn,
    ) -> Result<StartOutcome, StoreError> {
        let (owner, session_id, turn) = (owner.to_string(), session_id.to_string(), turn.clone());
        self.write(move |tx| {
            let Some(mut rec) = load_session(tx, &session_id)?.filter(|r| r.owner == owner) else {
                return Ok(StartOutcome::NotFound);
            };
            if let Some(m) = find_message(tx, &session_id, &turn.message.id)? {
                return Ok(StartOutcome::Duplicate(m));
            }
            if rec.turn.is_some() {
                return Ok(StartOutcome::Running);
            }
            if !turn.take_from_queue(&mut rec) {
                return Ok(StartOutcome::NotQueued);
            }
            let seq = rec.summary.message_count + 1;
            let message = turn.apply(&mut rec.summary, seq);
            insert_message(tx, &message)?;
            save_session(tx, &rec.summary, Some(&turn.turn))?;
            if turn.from_queue {
                save_queue(tx, &session_id, &rec.queue)?;
            }
            Ok(StartOutcome::Started {
                message,
                session: rec.summary,
            })
        })
        .await
    }

    async fn claim_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        self.update_turn(session_id, turn_id, move |t| {
            if t.claimed {
                return false;
            }
            t.claimed = true;
            t.heartbeat_ms = now_ms;
            true
        })
        .await
    }

    async fn park_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        parked: &Parked,
    ) -> Result<bool, StoreError> {
        let parked = parked.clone();
        self.update_turn(session_id, turn_id, move |t| {
            t.parked = Some(parked);
            t.claimed = false;
            true
        })
        .await
    }

    async fn checkpoint(
        &self,
        session_id: &str,
        turn_id: &str,
        live: &LiveReply,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let live = live.clone();
        self.update_turn(session_id, turn_id, move |t| {
            t.live = Some(live);
            t.heartbeat_ms = now_ms;
            true
        })
        .await
    }

    async fn active_turn(
        &self,
        session_id: &str,
        turn_id: &str,
    ) -> Result<Option<ActiveTurn>, StoreError> {
        let (session_id, turn_id) = (session_id.to_string(), turn_id.to_string());
        self.read(move |c| {
            let turn: Option<Option<String>> = c
                .query_row(
                    "SELECT turn FROM sessions WHERE id = ?1",
                    [&session_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            let Some(Some(t)) = turn else { return Ok(None) };
            let t: ActiveTurn = parse(&t)?;
            Ok((t.turn_id == turn_id).then_some(t))
        })
        .await
    }

    async fn request_stop(
        &self,
        owner: &str,
        session_id: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let (owner, session_id) = (owner.to_string(), session_id.to_string());
        self.write(move |tx| {
            let Some(mut rec) = load_session(tx, &session_id)?.filter(|r| r.owner == owner) else {
                return Ok(None);
            };
            if let Some(t) = rec.turn.as_mut().filter(|t| !t.stop_requested) {
                t.stop_requested = true;
                tx.execute(
                    "UPDATE sessions SET turn = ?2 WHERE id = ?1",
                    params![session_id, json(&*t)?],
                )
                .map_err(db)?;
            }
            Ok(Some(rec))
        })
        .await
    }

    async fn add_request(
        &self,
        session_id: &str,
        turn_id: &str,
        request: &PendingRequest,
        now_ms: i64,
    ) -> Result<Option<SessionSummary>, StoreError> {
        let (session_id, turn_id, request) =
            (session_id.to_string(), turn_id.to_string(), request.clone());
        self.write(move |tx| {
            let Some(mut rec) = load_session(tx, &session_id)? else {
                return Ok(None);
            };
            let Some(turn) = rec.turn.as_mut().filter(|t| t.turn_id == turn_id) else {
                return Ok(None);
            };
            records::ask(turn, &mut rec.summary, &request, now_ms);
            save_session(tx, &rec.summary, rec.turn.as_ref())?;
            Ok(Some(rec.summary))
        })
        .await
    }

    async fn answer_request(
        &self,
        owner: &str,
        session_id: &str,
        request_id: &str,
        resolution: &Resolution,
    ) -> Result<Resolved, StoreError> {
        let (owner, session_id, request_id, resolution) = (
            owner.to_string(),
            session_id.to_string(),
            request_id.to_string(),
            resolution.clone(),
        );
        self.write(move |tx| {
            let Some(mut rec) = load_session(tx, &session_id)?.filter(|r| r.owner == owner) else {
                return Ok(Resolved::NotFound);
            };
            let Some(turn) = rec.turn.as_mut() else {
                return Ok(Resolved::NotFound);
            };
            let out = records::answer(turn, &mut rec.summary, &request_id, &resolution);
            if matches!(out, Resolved::Now(..)) {
                save_session(tx, &rec.summary, rec.turn.as_ref())?;
            }
            Ok(out)
        })
        .await
    }

    async fn finish_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        end: &TurnEnd,
    ) -> Result<Option<(Message, SessionSummary)>, StoreError> {
        let (session_id, turn_id, end) = (session_id.to_string(), turn_id.to_string(), end.clone());
        self.write(move |tx| {
            let Some(mut rec) = load_session(tx, &session_id)? else {
                return Ok(None);
            };
            if rec.turn.as_ref().is_none_or(|t| t.turn_id != turn_id) {
                return Ok(None);
            }
            let seq = rec.summary.message_count + 1;
            let reply = end.apply(&mut rec.summary, seq);
            insert_message(tx, &reply)?;
            save_session(tx, &rec.summary, None)?;
            Ok(Some((reply, rec.summary)))
        })
        .await
    }

    async fn change_queue(
        &self,
        owner: &str,
        session_id: &str,
        change: &QueueChange,
    ) -> Result<QueueOutcome, StoreError> {
        let (owner, session_id, change) =
            (owner.to_string(), session_id.to_string(), change.clone());
        self.write(move |tx| {
            let Some(mut rec) = load_session(tx, &session_id)?.filter(|r| r.owner == owner) else {
                return Ok(QueueOutcome::NotFound);
            };
            let (out, changed) = change.apply(&mut rec);
            if changed {
                save_queue(tx, &session_id, &rec.queue)?;
                if let Some(t) = &rec.turn {
                    tx.execute(
                        "UPDATE sessions SET turn = ?2 WHERE id = ?1",
                        params![session_id, json(t)?],
                    )
                    .map_err(db)?;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn running_turns(&self) -> Result<Vec<(String, SessionId, ActiveTurn)>, StoreError> {
        self.read(|c| {
            let mut st = c
                .prepare("SELECT owner, id, turn FROM sessions WHERE turn IS NOT NULL")
                .map_err(db)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(db)?;
            let mut out = Vec::new();
            for r in rows {
                let (o, i, t) = r.map_err(db)?;
                out.push((o, parse_id(i)?, parse(&t)?));
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl ConnectionStore for SqliteStore {
    async fn put_connection(
        &self,
        id: &str,
        who: &Principal,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (id, who) = (id.to_string(), who.clone());
        self.write(move |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO connections (id, owner, connected_ms, auth_expires_ms) VALUES (?1, ?2, ?3, ?4)",
                params![id, who.owner, now_ms, who.auth_expires_ms],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn connection(&self, id: &str) -> Result<Option<Principal>, StoreError> {
        let id = id.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT owner, auth_expires_ms FROM connections WHERE id = ?1",
                [id],
                |r| {
                    Ok(Principal {
                        owner: r.get(0)?,
                        auth_expires_ms: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn put_ticket(
        &self,
        ticket: &str,
        who: &Principal,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let (ticket, who) = (ticket.to_string(), who.clone());
        let now = now_ms();
        self.write(move |tx| {
            // Expired tickets go as new ones come.
            tx.execute("DELETE FROM socket_tickets WHERE expires_ms <= ?1", [now])
                .map_err(db)?;
            tx.execute(
                "INSERT INTO socket_tickets (ticket, owner, auth_expires_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                params![ticket, who.owner, who.auth_expires_ms, expires_ms],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn take_ticket(
        &self,
        ticket: &str,
        now_ms: i64,
    ) -> Result<Option<Principal>, StoreError> {
        let ticket = ticket.to_string();
        self.write(move |tx| {
            tx.query_row(
                "DELETE FROM socket_tickets WHERE ticket = ?1 AND expires_ms > ?2 RETURNING owner, auth_expires_ms",
                params![ticket, now_ms],
                |r| {
                    Ok(Principal {
                        owner: r.get(0)?,
                        auth_expires_ms: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn renew_connection(&self, id: &str, who: &Principal) -> Result<bool, StoreError> {
        let (id, who) = (id.to_string(), who.clone());
        self.write(move |tx| {
            let n = tx
                .execute(
                    "UPDATE connections SET auth_expires_ms = ?3 WHERE id = ?1 AND owner = ?2",
                    params![id, who.owner, who.auth_expires_ms],
                )
                .map_err(db)?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_connection(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |tx| {
            tx.execute("DELETE FROM subscriptions WHERE connection_id = ?1", [&id])
                .map_err(db)?;
            tx.execute("DELETE FROM connections WHERE id = ?1", [&id])
                .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn owner_connections(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let owner = owner.to_string();
        self.read(move |c| {
            let mut st = c
                .prepare_cached("SELECT id FROM connections WHERE owner = ?1")
                .map_err(db)?;
            let rows = st.query_map([owner], |r| r.get(0)).map_err(db)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(db)
        })
        .await
    }

    async fn subscribe(
        &self,
        connection_id: &str,
        session: &SessionRef,
        token: &str,
        max: usize,
        now_ms: i64,
    ) -> Result<SubscribeOutcome, StoreError> {
        let (c, s, t) = (
            connection_id.to_string(),
            session.id.to_string(),
            token.to_string(),
        );
        let (o, inc) = (session.owner.clone(), session.incarnation.clone());
        self.write(move |tx| {
            let held: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM subscriptions WHERE connection_id = ?1 AND session_id != ?2",
                    [&c, &s],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if held as usize >= max {
                return Ok(SubscribeOutcome::TooMany);
            }
            // Checked in the same write: a session deleted meanwhile (or
            // another owner's, or another incarnation) gets no subscription.
            let owned: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sessions s JOIN connections c ON c.owner = s.owner
                     WHERE c.id = ?1 AND s.id = ?2 AND s.owner = ?3 AND s.incarnation = ?4)",
                    [&c, &s, &o, &inc],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if !owned {
                return Ok(SubscribeOutcome::NotFound);
            }
            let renewed: Option<i64> = tx
                .query_row(
                    "SELECT renewed_ms FROM subscriptions WHERE connection_id = ?1 AND session_id = ?2",
                    [&c, &s],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            if renewed.is_some_and(|at| at > now_ms - RESUBSCRIBE_EVERY_MS) {
                return Ok(SubscribeOutcome::TooSoon);
            }
            tx.execute(
                "INSERT OR REPLACE INTO subscriptions (connection_id, session_id, token, owner, incarnation, renewed_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![c, s, t, o, inc, now_ms],
            )
            .map_err(db)?;
            Ok(SubscribeOutcome::Subscribed)
        })
        .await
    }

    async fn unsubscribe(&self, connection_id: &str, session_id: &str) -> Result<(), StoreError> {
        let (c, s) = (connection_id.to_string(), session_id.to_string());
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM subscriptions WHERE connection_id = ?1 AND session_id = ?2",
                [c, s],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn subscribers(&self, session_id: &str) -> Result<Vec<Subscriber>, StoreError> {
        let s = session_id.to_string();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT connection_id, token, owner, incarnation FROM subscriptions WHERE session_id = ?1",
                )
                .map_err(db)?;
            let rows = st
                .query_map([s], |r| {
                    Ok(Subscriber {
                        connection_id: r.get(0)?,
                        token: r.get(1)?,
                        owner: r.get(2)?,
                        incarnation: r.get(3)?,
                    })
                })
                .map_err(db)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db)
        })
        .await
    }
}

#[async_trait]
impl LimitStore for SqliteStore {
    async fn count(
        &self,
        owner: &str,
        key: &str,
        amount: u64,
        max: u64,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        let (owner, key) = (owner.to_string(), key.to_string());
        let now = now_ms();
        // SQLite integers are signed: counts stop at i64::MAX.
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let (amount, max) = (clamp(amount), clamp(max));
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM limit_counters WHERE owner = ?1 AND expires_ms <= ?2",
                params![owner, now],
            )
            .map_err(db)?;
            let n: i64 = tx
                .query_row(
                    "SELECT n FROM limit_counters WHERE owner = ?1 AND key = ?2",
                    params![owner, key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?
                .unwrap_or(0);
            if amount > max || n > max - amount {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO limit_counters (owner, key, n, expires_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (owner, key) DO UPDATE SET n = ?3, expires_ms = ?4",
                params![owner, key, n + amount, expires_ms],
            )
            .map_err(db)?;
            Ok(true)
        })
        .await
    }

    async fn counted(&self, owner: &str, key: &str, now_ms: i64) -> Result<u64, StoreError> {
        let (owner, key) = (owner.to_string(), key.to_string());
        self.read(move |c| {
            let n: Option<i64> = c
                .query_row(
                    "SELECT n FROM limit_counters WHERE owner = ?1 AND key = ?2 AND expires_ms > ?3",
                    params![owner, key, now_ms],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db)?;
            Ok(n.unwrap_or(0).max(0) as u64)
        })
        .await
    }

    async fn hold(
        &self,
        owner: &str,
        key: &str,
        member: &str,
        max: u32,
        _expires_ms: i64,
    ) -> Result<Held, StoreError> {
        let (owner, key, member) = (owner.to_string(), key.to_string(), member.to_string());
        self.write(move |tx| {
            let mut q = tx
                .prepare("SELECT member FROM limit_sets WHERE owner = ?1 AND key = ?2")
                .map_err(db)?;
            let members = q
                .query_map(params![owner, key], |r| r.get::<_, String>(0))
                .map_err(db)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db)?;
            if members.contains(&member) {
                return Ok(Held::Already);
            }
            if members.len() >= max as usize {
                return Ok(Held::Full(members));
            }
            tx.execute(
                "INSERT INTO limit_sets (owner, key, member) VALUES (?1, ?2, ?3)",
                params![owner, key, member],
            )
            .map_err(db)?;
            Ok(Held::Added)
        })
        .await
    }

    async fn release(&self, owner: &str, key: &str, member: &str) -> Result<(), StoreError> {
        let (owner, key, member) = (owner.to_string(), key.to_string(), member.to_string());
        self.write(move |tx| {
            tx.execute(
                "DELETE FROM limit_sets WHERE owner = ?1 AND key = ?2 AND member = ?3",
                params![owner, key, member],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes that arrive together are committed together, and one that
    /// fails changes nothing and fails alone: what it wrote before failing
    /// is rolled back, what the others wrote is kept.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_in_a_batch_changes_nothing_and_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let writes = (0..64).map(|i| {
            let store = store.clone();
            async move {
                store
                    .write(move |c| {
                        c.execute(
                            "INSERT INTO connections (id, owner, connected_ms) VALUES (?1, 'o', 0)",
                            [format!("c{i}")],
                        )
                        .map_err(db)?;
                        if i % 2 == 1 {
                            return Err(StoreError::backend(std::io::Error::other("refused")));
                        }
                        Ok(i)
                    })
                    .await
            }
        });
        let results = futures::future::join_all(writes).await;
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_ok(), i % 2 == 0, "write {i}: {r:?}");
        }
        let kept: Vec<String> = store
            .read(|c| {
                let mut st = c
                    .prepare("SELECT id FROM connections ORDER BY id")
                    .map_err(db)?;
                let rows = st
                    .query_map([], |r| r.get::<_, String>(0))
                    .map_err(db)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(db)?;
                Ok(rows)
            })
            .await
            .unwrap();
        let mut want: Vec<String> = (0..64)
            .filter(|i| i % 2 == 0)
            .map(|i| format!("c{i}"))
            .collect();
        want.sort();
        assert_eq!(kept, want);
        let c = store.counters();
        assert_eq!(c.writes.load(std::sync::atomic::Ordering::Relaxed), 32);
        assert!(
            c.commits.load(std::sync::atomic::Ordering::Relaxed) >= 1,
            "committed"
        );
    }
}
