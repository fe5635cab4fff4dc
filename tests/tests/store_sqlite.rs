//! The store conformance suite on the embedded SQLite store, on a real file.

use confab_functions::domain::records::{MessageRange, NewTurn, StartOutcome};
use confab_functions::ports::{SessionStore, Store, TurnStore};
use confab_functions::store::sqlite::{SCHEMA_VERSION, SqliteStore};
use confab_tests::conformance::{new_session, turn, user};
use rusqlite::{Connection, params};
use std::sync::Arc;

async fn sqlite() -> Arc<dyn Store> {
    // Each test gets its own database file, kept until the process ends.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    Arc::new(SqliteStore::open(&dir).expect("open store"))
}

confab_tests::store_conformance!(sqlite);

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = SqliteStore::open(dir.path()).unwrap();
        confab_tests::conformance::idle_session(&store, "alice", 1).await
    };
    let store = SqliteStore::open(dir.path()).unwrap();
    let rec = store.get_session(&id).await.unwrap().unwrap();
    assert_eq!(rec.summary.message_count, 2);
}

/// The tables as Confab wrote them before the schema had a version
/// (`user_version` 0).
const UNVERSIONED_SCHEMA: &str = r#"
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    project_id   TEXT NOT NULL,
    activity_ms  INTEGER NOT NULL,
    title_lc     TEXT NOT NULL,
    first_lc     TEXT NOT NULL,
    summary      TEXT NOT NULL,
    turn         TEXT
);
CREATE INDEX sessions_by_owner ON sessions(owner, activity_ms DESC, id DESC);
CREATE INDEX sessions_running ON sessions(id) WHERE turn IS NOT NULL;
CREATE TABLE messages (
    session_id   TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    id           TEXT NOT NULL,
    body         TEXT NOT NULL,
    PRIMARY KEY (session_id, seq),
    UNIQUE (session_id, id)
);
CREATE TABLE connections (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    connected_ms INTEGER NOT NULL
);
CREATE INDEX connections_by_owner ON connections(owner);
CREATE TABLE subscriptions (
    connection_id TEXT NOT NULL,
    session_id    TEXT NOT NULL,
    token         TEXT NOT NULL,
    PRIMARY KEY (connection_id, session_id)
);
CREATE INDEX subscriptions_by_session ON subscriptions(session_id);
"#;

fn user_version(dir: &std::path::Path) -> u32 {
    Connection::open(dir.join("confab.db"))
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_database_from_before_schema_versions_is_migrated_and_keeps_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    // A session with its first message, as the unversioned store kept it.
    let mut new = new_session("alice", "default", "Old times", "hello from before", 1_000);
    new.summary.status = confab_protocol::model::SessionStatus::Idle;
    let id = new.summary.id.clone();
    {
        let c = Connection::open(dir.path().join("confab.db")).unwrap();
        c.execute_batch(UNVERSIONED_SCHEMA).unwrap();
        c.execute(
            "INSERT INTO sessions (id, owner, project_id, activity_ms, title_lc, first_lc, summary, turn) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)",
            params![
                id.as_str(),
                new.owner,
                new.summary.project_id.as_str(),
                1_000,
                "old times",
                "hello from before",
                serde_json::to_string(&new.summary).unwrap()
            ],
        )
        .unwrap();
        c.execute(
            "INSERT INTO messages (session_id, seq, id, body) VALUES (?1, 1, ?2, ?3)",
            params![
                id.as_str(),
                new.first.id.as_str(),
                serde_json::to_string(&new.first).unwrap()
            ],
        )
        .unwrap();
    }
    assert_eq!(user_version(dir.path()), 0);

    let store = SqliteStore::open(dir.path()).expect("an unversioned database opens");
    assert_eq!(user_version(dir.path()), SCHEMA_VERSION);
    let rec = store
        .get_session(&id)
        .await
        .unwrap()
        .expect("the session is kept");
    assert_eq!(rec.summary.title, "Old times");
    let (messages, _) = store
        .messages(&id, MessageRange::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(messages, vec![new.first.clone()]);
    // And it goes on: the next message gets the next seq.
    let t = turn();
    let next = NewTurn {
        message: user(&id, &t.turn_id, "hello again"),
        turn: t,
        permission_mode: None,
        now_ms: 2_000,
        from_queue: false,
    };
    match store.start_turn("alice", &id, &next).await.unwrap() {
        StartOutcome::Started { message, .. } => assert_eq!(message.seq, 2),
        other => panic!("the turn did not start: {other:?}"),
    }
    drop(store);
    // Opening again changes nothing.
    SqliteStore::open(dir.path()).unwrap();
    assert_eq!(user_version(dir.path()), SCHEMA_VERSION);
}

#[tokio::test]
async fn a_database_from_a_newer_confab_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let newer = SCHEMA_VERSION + 1;
    Connection::open(dir.path().join("confab.db"))
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let err = SqliteStore::open(dir.path()).expect_err("a newer schema is refused");
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(chain.contains("newer than this Confab"), "{chain}");
    assert_eq!(user_version(dir.path()), newer);
}

/// An agent is given the newest history within a budget, not the whole
/// session: past `HISTORY_BUDGET_BYTES`, the oldest messages stay out, the
/// newest is always in, and what it gets starts with a user message.
#[tokio::test]
async fn the_agent_history_is_read_within_its_budget() {
    use confab_functions::domain::sessions::{HISTORY_BUDGET_BYTES, history};
    use confab_protocol::model::{Role, TurnOutcome};
    let store = sqlite().await;
    let text = "x".repeat(32_000);
    let n = new_session("alice", "default", "t", &text, 1);
    store.create_session(&n).await.unwrap();
    let sid = n.summary.id.clone();
    let mut t = n.turn.clone();
    for i in 0..40 {
        let end = confab_tests::conformance::end(&sid, &t, &text, TurnOutcome::Completed);
        store
            .finish_turn(&sid, &t.turn_id, &end)
            .await
            .unwrap()
            .unwrap();
        if i == 39 {
            break;
        }
        t = turn();
        let started = store
            .start_turn(
                "alice",
                &sid,
                &NewTurn {
                    message: user(&sid, &t.turn_id, &text),
                    turn: t.clone(),
                    permission_mode: None,
                    now_ms: 2,
                    from_queue: false,
                },
            )
            .await
            .unwrap();
        assert!(matches!(started, StartOutcome::Started { .. }));
    }
    // And the newest, the message being answered.
    let t = turn();
    store
        .start_turn(
            "alice",
            &sid,
            &NewTurn {
                message: user(&sid, &t.turn_id, "the newest"),
                turn: t.clone(),
                permission_mode: None,
                now_ms: 3,
                from_queue: false,
            },
        )
        .await
        .unwrap();
    let h = history(&*store, &sid).await.unwrap();
    let bytes: usize = h
        .iter()
        .map(|m| serde_json::to_vec(&m.content).unwrap().len())
        .sum();
    assert!(bytes <= HISTORY_BUDGET_BYTES, "{bytes}");
    assert!(h.len() < 81 && h.len() > 40, "{}", h.len());
    assert_eq!(h.last().unwrap().plain_text(), "the newest");
    assert_eq!(h[0].role, Role::User);
    let seqs: Vec<u64> = h.iter().map(|m| m.seq).collect();
    let want: Vec<u64> = (81 - h.len() as u64 + 1..=81).collect();
    assert_eq!(seqs, want, "the newest, in order, without gaps");
    let (_, more) = store
        .messages(&sid, MessageRange::Latest { limit: 100 })
        .await
        .unwrap();
    assert!(!more);
}

/// The data directory holds the user's conversations: it is private (0700,
/// its files 0600), and one store at a time holds it (`confab.lock`), so a
/// second gateway cannot start on it and wipe the first one's sockets.
#[tokio::test]
async fn the_data_directory_is_private_and_held_by_one_store() {
    use confab_functions::store::sqlite::DataDirInUse;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A database left readable by an older Confab is made private too.
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("confab.db"), b"").unwrap();
    std::fs::set_permissions(
        data.join("confab.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let store = SqliteStore::open(&data).unwrap();
    confab_tests::conformance::idle_session(&store, "alice", 1).await;
    let mode = |f: &str| {
        std::fs::metadata(data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for f in ["confab.db", "confab.db-wal", "confab.db-shm", "confab.lock"] {
        assert_eq!(mode(f), 0o600, "{f}");
    }
    let second = SqliteStore::open(&data).expect_err("the directory is held");
    let source = std::error::Error::source(&second).expect("a cause");
    assert!(source.downcast_ref::<DataDirInUse>().is_some(), "{source}");
    assert!(source.to_string().contains("another Confab is running"));
    drop(store);
    SqliteStore::open(&data).expect("free again once the first is closed");
}
