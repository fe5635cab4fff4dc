//! One conformance suite for every `Store`. An adapter's test file calls
//! `store_conformance!(async_fn_that_makes_an_empty_store)`.

use confab_functions::clock::{new_id, new_token, now_ms};
use confab_functions::domain::records::{
    ActiveTurn, CreateOutcome, MessageRange, NewSession, NewTurn, SessionPatch, SessionQuery,
    StartOutcome, SubscribeOutcome, TurnEnd,
};
use confab_functions::ports::Store;
use confab_protocol::model::*;
use confab_protocol::{SessionId, Timestamp, TurnId};
use std::sync::Arc;

pub fn turn() -> ActiveTurn {
    let now = now_ms();
    ActiveTurn {
        turn_id: new_id(),
        reply_id: new_id(),
        started_ms: now,
        heartbeat_ms: now,
        stop_requested: false,
        live: None,
    }
}

pub fn user(session_id: &SessionId, turn_id: &TurnId, text: &str) -> Message {
    Message {
        id: new_id(),
        session_id: session_id.clone(),
        seq: 0,
        role: Role::User,
        turn_id: turn_id.clone(),
        created_at: Timestamp::from_millis(now_ms()),
        content: vec![Block::text(text)],
        status: MessageStatus::Complete,
        error: None,
        usage: None,
    }
}

/// A new session of `owner` whose first message is `text`, at `activity_ms`.
pub fn new_session(
    owner: &str,
    project: &str,
    title: &str,
    text: &str,
    activity_ms: i64,
) -> NewSession {
    let id: SessionId = new_id();
    let t = turn();
    let mut first = user(&id, &t.turn_id, text);
    first.seq = 1;
    let at = Timestamp::from_millis(activity_ms);
    NewSession {
        owner: owner.into(),
        summary: SessionSummary {
            id: id.clone(),
            project_id: project.parse().expect("a valid project id"),
            title: title.into(),
            status: SessionStatus::Running,
            permission_mode: PermissionMode::Default,
            created_at: at,
            updated_at: at,
            last_message_at: at,
            message_count: 1,
            usage: Usage::default(),
            first_message_preview: text.chars().take(120).collect(),
            last_turn: None,
            agent_session_id: None,
            version: 1,
        },
        first,
        turn: t,
    }
}

pub fn rename(title: &str, now_ms: i64) -> SessionPatch {
    SessionPatch {
        title: Some(title.into()),
        permission_mode: None,
        now_ms,
    }
}

pub fn end(session_id: &SessionId, turn: &ActiveTurn, text: &str, outcome: TurnOutcome) -> TurnEnd {
    TurnEnd {
        reply: Message {
            id: turn.reply_id.clone(),
            session_id: session_id.clone(),
            seq: 0,
            role: Role::Assistant,
            turn_id: turn.turn_id.clone(),
            created_at: Timestamp::from_millis(now_ms()),
            content: vec![Block::text(text)],
            status: outcome.message_status(),
            error: None,
            usage: Some(Usage {
                input_tokens: 2,
                output_tokens: 3,
            }),
        },
        last_turn: LastTurn {
            id: turn.turn_id.clone(),
            outcome,
            error: None,
        },
        usage: Usage {
            input_tokens: 2,
            output_tokens: 3,
        },
        agent_session_id: Some("agent-1".into()),
        now_ms: now_ms(),
    }
}

/// Creates a session and closes its first turn: an idle session with seq 1, 2.
pub async fn idle_session(store: &dyn Store, owner: &str, activity_ms: i64) -> SessionId {
    let n = new_session(owner, "default", "t", "first", activity_ms);
    assert_eq!(
        store.create_session(&n).await.unwrap(),
        CreateOutcome::Created
    );
    store
        .finish_turn(
            &n.summary.id,
            &n.turn.turn_id,
            &end(&n.summary.id, &n.turn, "reply", TurnOutcome::Completed),
        )
        .await
        .unwrap()
        .unwrap();
    n.summary.id
}

pub async fn create_is_idempotent_and_atomic(store: Arc<dyn Store>) {
    let n = new_session("alice", "default", "Hello", "first message", now_ms());
    assert_eq!(
        store.create_session(&n).await.unwrap(),
        CreateOutcome::Created
    );
    let rec = store.get_session(&n.summary.id).await.unwrap().unwrap();
    assert_eq!(rec.owner, "alice");
    assert_eq!(rec.summary, n.summary);
    assert_eq!(rec.turn.as_ref().unwrap().turn_id, n.turn.turn_id);
    let (msgs, more) = store
        .messages(&n.summary.id, MessageRange::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(msgs, vec![n.first.clone()]);
    assert!(!more);
    // The same id again creates nothing and reports what is there.
    let mut again = new_session("bob", "default", "Other", "other", now_ms());
    again.summary.id = n.summary.id.clone();
    match store.create_session(&again).await.unwrap() {
        CreateOutcome::Exists(r) => assert_eq!(r.owner, "alice"),
        other => panic!("{other:?}"),
    }
    let (msgs, _) = store
        .messages(&n.summary.id, MessageRange::Latest { limit: 10 })
        .await
        .unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(
        store
            .find_message(&n.summary.id, &n.first.id)
            .await
            .unwrap()
            .unwrap()
            .seq,
        1
    );
}

pub async fn concurrent_creates_of_one_id_make_one_session(store: Arc<dyn Store>) {
    let base = new_session("alice", "default", "t", "x", now_ms());
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (store, n) = (store.clone(), base.clone());
        handles.push(tokio::spawn(async move {
            store.create_session(&n).await.unwrap()
        }));
    }
    let mut created = 0;
    for h in handles {
        if h.await.unwrap() == CreateOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
}

pub async fn seq_has_no_gaps_under_concurrent_sends(store: Arc<dyn Store>) {
    let id = idle_session(&*store, "alice", now_ms()).await;
    // Rounds of concurrent sends: exactly one starts a turn each round; the
    // rest see it running. Then the turn ends. Seqs stay 1, 2, 3, ...
    for _round in 0..6 {
        let mut handles = Vec::new();
        for _ in 0..6 {
            let (store, id) = (store.clone(), id.clone());
            handles.push(tokio::spawn(async move {
                let t = turn();
                let nt = NewTurn {
                    message: user(&id, &t.turn_id, "again"),
                    turn: t.clone(),
                    permission_mode: None,
                    now_ms: now_ms(),
                };
                (store.start_turn("alice", &id, &nt).await.unwrap(), t)
            }));
        }
        let mut started = Vec::new();
        for h in handles {
            let (outcome, t) = h.await.unwrap();
            match outcome {
                StartOutcome::Started { message, session } => {
                    assert_eq!(session.status, SessionStatus::Running);
                    assert_eq!(session.message_count, message.seq);
                    started.push((message, t));
                }
                StartOutcome::Running => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(started.len(), 1, "exactly one send starts a turn");
        let (_, t) = &started[0];
        store
            .finish_turn(&id, &t.turn_id, &end(&id, t, "r", TurnOutcome::Completed))
            .await
            .unwrap()
            .unwrap();
    }
    let (msgs, _) = store
        .messages(&id, MessageRange::After { seq: 0, limit: 100 })
        .await
        .unwrap();
    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=14).collect::<Vec<u64>>());
    let rec = store.get_session(&id).await.unwrap().unwrap();
    assert_eq!(rec.summary.message_count, 14);
    assert_eq!(rec.summary.status, SessionStatus::Idle);
    assert!(rec.turn.is_none());
}

pub async fn start_turn_rules(store: Arc<dyn Store>) {
    let id = idle_session(&*store, "alice", now_ms()).await;
    let t = turn();
    let nt = NewTurn {
        message: user(&id, &t.turn_id, "hi"),
        turn: t.clone(),
        permission_mode: Some(PermissionMode::Plan),
        now_ms: now_ms(),
    };
    // Another owner cannot.
    assert_eq!(
        store.start_turn("bob", &id, &nt).await.unwrap(),
        StartOutcome::NotFound
    );
    assert_eq!(
        store.start_turn("alice", &new_token(), &nt).await.unwrap(),
        StartOutcome::NotFound
    );
    let StartOutcome::Started { message, session } =
        store.start_turn("alice", &id, &nt).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(message.seq, 3);
    assert_eq!(session.permission_mode, PermissionMode::Plan);
    assert_eq!(session.version, 3);
    // The same message id again is a duplicate, not a new message.
    assert_eq!(
        store.start_turn("alice", &id, &nt).await.unwrap(),
        StartOutcome::Duplicate(message.clone())
    );
    let (done, s) = store
        .finish_turn(&id, &t.turn_id, &end(&id, &t, "ok", TurnOutcome::Stopped))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.seq, 4);
    assert_eq!(s.last_turn.unwrap().outcome, TurnOutcome::Stopped);
    assert_eq!(
        s.usage,
        Usage {
            input_tokens: 4,
            output_tokens: 6
        }
    );
    assert_eq!(s.agent_session_id.as_deref(), Some("agent-1"));
    // Finishing twice stores nothing.
    assert!(
        store
            .finish_turn(&id, &t.turn_id, &end(&id, &t, "ok", TurnOutcome::Completed))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .get_session(&id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .message_count,
        4
    );
}

pub async fn checkpoint_stop_and_running_turns(store: Arc<dyn Store>) {
    let n = new_session("alice", "default", "t", "x", now_ms());
    store.create_session(&n).await.unwrap();
    let id = n.summary.id.clone();
    let live = LiveReply {
        message_id: n.turn.reply_id.clone(),
        turn_id: n.turn.turn_id.clone(),
        content: vec![Block::text("partial")],
    };
    assert!(
        store
            .checkpoint(&id, &n.turn.turn_id, &live, now_ms())
            .await
            .unwrap()
    );
    assert!(
        !store
            .checkpoint(&id, "other-turn", &live, now_ms())
            .await
            .unwrap()
    );
    let t = store
        .active_turn(&id, &n.turn.turn_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(t.live, Some(live.clone()));
    assert!(!t.stop_requested);
    assert!(
        store
            .active_turn(&id, "other-turn")
            .await
            .unwrap()
            .is_none()
    );
    let running = store.running_turns().await.unwrap();
    assert!(
        running
            .iter()
            .any(|(o, s, t)| o == "alice" && s == &id && t.live == Some(live.clone()))
    );
    // Stop: only the owner; the flag is seen by the runner.
    assert!(store.request_stop("bob", &id).await.unwrap().is_none());
    let rec = store.request_stop("alice", &id).await.unwrap().unwrap();
    assert!(rec.turn.unwrap().stop_requested);
    assert!(
        store
            .active_turn(&id, &n.turn.turn_id)
            .await
            .unwrap()
            .unwrap()
            .stop_requested
    );
    store
        .finish_turn(
            &id,
            &n.turn.turn_id,
            &end(&id, &n.turn, "partial", TurnOutcome::Stopped),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .active_turn(&id, &n.turn.turn_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .running_turns()
            .await
            .unwrap()
            .iter()
            .any(|(_, s, _)| s == &id)
    );
    // Stop on an idle session changes nothing.
    let rec = store.request_stop("alice", &id).await.unwrap().unwrap();
    assert!(rec.turn.is_none());
}

pub async fn message_pages(store: Arc<dyn Store>) {
    let id = idle_session(&*store, "alice", now_ms()).await;
    for _ in 0..4 {
        let t = turn();
        let nt = NewTurn {
            message: user(&id, &t.turn_id, "m"),
            turn: t.clone(),
            permission_mode: None,
            now_ms: now_ms(),
        };
        store.start_turn("alice", &id, &nt).await.unwrap();
        store
            .finish_turn(&id, &t.turn_id, &end(&id, &t, "r", TurnOutcome::Completed))
            .await
            .unwrap()
            .unwrap();
    }
    let seqs = |v: &[Message]| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    let (m, more) = store
        .messages(&id, MessageRange::Latest { limit: 3 })
        .await
        .unwrap();
    assert_eq!((seqs(&m), more), (vec![8, 9, 10], true));
    let (m, more) = store
        .messages(&id, MessageRange::Before { seq: 8, limit: 3 })
        .await
        .unwrap();
    assert_eq!((seqs(&m), more), (vec![5, 6, 7], true));
    let (m, more) = store
        .messages(&id, MessageRange::Before { seq: 3, limit: 3 })
        .await
        .unwrap();
    assert_eq!((seqs(&m), more), (vec![1, 2], false));
    let (m, more) = store
        .messages(&id, MessageRange::After { seq: 0, limit: 4 })
        .await
        .unwrap();
    assert_eq!((seqs(&m), more), (vec![1, 2, 3, 4], true));
    let (m, more) = store
        .messages(&id, MessageRange::After { seq: 7, limit: 4 })
        .await
        .unwrap();
    assert_eq!((seqs(&m), more), (vec![8, 9, 10], false));
    let (m, more) = store
        .messages(&id, MessageRange::After { seq: 10, limit: 4 })
        .await
        .unwrap();
    assert_eq!((seqs(&m), more), (vec![], false));
}

pub async fn list_pages_newest_first(store: Arc<dyn Store>) {
    let owner = format!("pager-{}", new_token());
    let base = now_ms();
    let mut ids = Vec::new();
    for i in 0..7 {
        // Two share an activity time, so ties are ordered by id.
        let at = if i == 3 { base + 2 } else { base + i };
        ids.push((at, idle_session(&*store, &owner, at).await));
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let q = SessionQuery {
            limit: 3,
            after: after.clone(),
            ..Default::default()
        };
        let (page, next) = store.list_sessions(&owner, &q).await.unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|s| (s.last_message_at, s.id.clone())));
        match next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "every session once");
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    assert_eq!(seen, sorted, "newest activity first, ties by id");
}

pub async fn search_and_projects(store: Arc<dyn Store>) {
    let owner = format!("search-{}", new_token());
    let now = now_ms();
    let a = new_session(&owner, "alpha", "Fix the Build", "the CI is red", now);
    let b = new_session(
        &owner,
        "alpha",
        "Lunch",
        "Where to eat? Ünïcode Straße",
        now + 1,
    );
    let c = new_session(&owner, "beta", "Other", "nothing", now + 2);
    for n in [&a, &b, &c] {
        store.create_session(n).await.unwrap();
    }
    let find = |text: &str, project: Option<&str>| SessionQuery {
        text: Some(text.to_lowercase()),
        project_id: project.map(|p| p.parse().expect("a valid project id")),
        limit: 50,
        after: None,
    };
    let ids = |v: Vec<SessionSummary>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store
            .list_sessions(&owner, &find("BUILD", None))
            .await
            .unwrap()
            .0),
        vec![a.summary.id.clone()]
    );
    assert_eq!(
        ids(store
            .list_sessions(&owner, &find("ci is", None))
            .await
            .unwrap()
            .0),
        vec![a.summary.id.clone()]
    );
    assert_eq!(
        ids(store
            .list_sessions(&owner, &find("straße", None))
            .await
            .unwrap()
            .0),
        vec![b.summary.id.clone()]
    );
    assert_eq!(
        ids(store
            .list_sessions(&owner, &find("ÜNÏCODE", None))
            .await
            .unwrap()
            .0),
        vec![b.summary.id.clone()]
    );
    assert!(
        store
            .list_sessions(&owner, &find("zzz", None))
            .await
            .unwrap()
            .0
            .is_empty()
    );
    let q = SessionQuery {
        project_id: Some("beta".parse().unwrap()),
        limit: 50,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_sessions(&owner, &q).await.unwrap().0),
        vec![c.summary.id.clone()]
    );
    // A search also matches case-insensitively on a renamed title.
    store
        .patch_session(&owner, &c.summary.id, &rename("Renamed Thing", now + 3))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ids(store
            .list_sessions(&owner, &find("renamed", None))
            .await
            .unwrap()
            .0),
        vec![c.summary.id.clone()]
    );

    let projects = store.list_projects(&owner).await.unwrap();
    assert_eq!(projects.len(), 2);
    assert_eq!(projects[0].id, "beta");
    assert_eq!(projects[0].session_count, 1);
    assert_eq!(projects[1].id, "alpha");
    assert_eq!(projects[1].session_count, 2);
    assert_eq!(projects[1].last_session_id, b.summary.id);
    assert_eq!(projects[1].last_activity_at.millis(), now + 1);
}

pub async fn owners_are_isolated(store: Arc<dyn Store>) {
    let alice = format!("alice-{}", new_token());
    let bob = format!("bob-{}", new_token());
    let id = idle_session(&*store, &alice, now_ms()).await;
    let q = SessionQuery {
        limit: 50,
        ..Default::default()
    };
    assert!(store.list_sessions(&bob, &q).await.unwrap().0.is_empty());
    assert_eq!(store.list_sessions(&alice, &q).await.unwrap().0.len(), 1);
    assert!(store.list_projects(&bob).await.unwrap().is_empty());
    assert!(
        store
            .patch_session(&bob, &id, &rename("mine", now_ms()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.delete_session(&bob, &id).await.unwrap().is_none());
    assert!(store.request_stop(&bob, &id).await.unwrap().is_none());
    let rec = store.get_session(&id).await.unwrap().unwrap();
    assert_eq!(rec.summary.title, "t");
    assert_eq!(rec.owner, alice);
}

pub async fn patch_and_delete(store: Arc<dyn Store>) {
    let id = idle_session(&*store, "alice", now_ms()).await;
    let v0 = store
        .get_session(&id)
        .await
        .unwrap()
        .unwrap()
        .summary
        .version;
    let s = store
        .patch_session(
            "alice",
            &id,
            &SessionPatch {
                title: Some("New".into()),
                permission_mode: Some(PermissionMode::AcceptEdits),
                now_ms: now_ms(),
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.title, "New");
    assert_eq!(s.permission_mode, PermissionMode::AcceptEdits);
    assert_eq!(s.version, v0 + 1);
    let c = "conn-".to_string() + &new_token();
    store.put_connection(&c, "alice", now_ms()).await.unwrap();
    store.subscribe(&c, &id, "tok", 20).await.unwrap();
    let v = store.delete_session("alice", &id).await.unwrap().unwrap();
    assert!(v > s.version);
    assert!(store.get_session(&id).await.unwrap().is_none());
    assert!(
        store
            .messages(&id, MessageRange::Latest { limit: 10 })
            .await
            .unwrap()
            .0
            .is_empty()
    );
    assert!(store.subscribers(&id).await.unwrap().is_empty());
    assert!(store.delete_session("alice", &id).await.unwrap().is_none());
}

pub async fn connections_and_subscriptions(store: Arc<dyn Store>) {
    let owner = format!("conn-owner-{}", new_token());
    let (c1, c2) = (new_token(), new_token());
    store.put_connection(&c1, &owner, now_ms()).await.unwrap();
    store.put_connection(&c2, &owner, now_ms()).await.unwrap();
    assert_eq!(
        store.connection_owner(&c1).await.unwrap().as_deref(),
        Some(owner.as_str())
    );
    let mut conns = store.owner_connections(&owner).await.unwrap();
    conns.sort();
    let mut want = vec![c1.clone(), c2.clone()];
    want.sort();
    assert_eq!(conns, want);

    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(idle_session(&*store, &owner, now_ms()).await);
    }
    // Only a session of the connection's owner can be subscribed to.
    let other = idle_session(&*store, "someone-else", now_ms()).await;
    assert_eq!(
        store.subscribe(&c1, &other, "t0", 2).await.unwrap(),
        SubscribeOutcome::NotFound
    );
    assert_eq!(
        store.subscribe(&c1, &new_token(), "t0", 2).await.unwrap(),
        SubscribeOutcome::NotFound
    );
    assert_eq!(
        store.subscribe(&c1, &sessions[0], "t1", 2).await.unwrap(),
        SubscribeOutcome::Subscribed
    );
    assert_eq!(
        store.subscribe(&c1, &sessions[1], "t2", 2).await.unwrap(),
        SubscribeOutcome::Subscribed
    );
    assert_eq!(
        store.subscribe(&c1, &sessions[2], "t3", 2).await.unwrap(),
        SubscribeOutcome::TooMany
    );
    // Subscribing again to a held session is allowed and renews the token.
    assert_eq!(
        store.subscribe(&c1, &sessions[0], "t4", 2).await.unwrap(),
        SubscribeOutcome::Subscribed
    );
    store.subscribe(&c2, &sessions[0], "t5", 2).await.unwrap();
    let mut subs = store.subscribers(&sessions[0]).await.unwrap();
    subs.sort_by(|a, b| a.token.cmp(&b.token));
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0].token, "t4");
    store.unsubscribe(&c1, &sessions[0]).await.unwrap();
    assert_eq!(store.subscribers(&sessions[0]).await.unwrap().len(), 1);
    store.delete_connection(&c2).await.unwrap();
    assert!(store.subscribers(&sessions[0]).await.unwrap().is_empty());
    assert!(store.connection_owner(&c2).await.unwrap().is_none());
    assert_eq!(store.owner_connections(&owner).await.unwrap(), vec![c1]);
}

/// Generates one test per case for a store made by `$make` (an async fn
/// returning `Arc<dyn Store>`).
#[macro_export]
macro_rules! store_conformance {
    ($make:path) => {
        $crate::store_conformance!(@cases $make;
            create_is_idempotent_and_atomic,
            concurrent_creates_of_one_id_make_one_session,
            seq_has_no_gaps_under_concurrent_sends,
            start_turn_rules,
            checkpoint_stop_and_running_turns,
            message_pages,
            list_pages_newest_first,
            search_and_projects,
            owners_are_isolated,
            patch_and_delete,
            connections_and_subscriptions
        );
    };
    (@cases $make:path; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::conformance::$case($make().await).await;
            }
        )*
    };
}
