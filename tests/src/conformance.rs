//! One conformance suite for every `Store`. An adapter's test file calls
//! `store_conformance!(async_fn_that_makes_an_empty_store)`.

use confab_functions::clock::{new_id, new_token, now_ms};
use confab_functions::domain::records::{
    ActiveTurn, CreateOutcome, MessageRange, NewSession, NewTurn, Principal, SessionPatch,
    SessionQuery, SessionRef, StartOutcome, SubscribeOutcome, TurnEnd,
};
use confab_functions::ports::{Held, Store};
use confab_protocol::model::*;
use confab_protocol::{SessionId, Timestamp, TurnId};
use std::sync::Arc;

/// A connection's principal with auth off: no expiry.
pub fn who(owner: &str) -> Principal {
    Principal {
        owner: owner.to_string(),
        auth_expires_ms: None,
    }
}

pub fn turn() -> ActiveTurn {
    let now = now_ms();
    ActiveTurn {
        turn_id: new_id(),
        reply_id: new_id(),
        started_ms: now,
        heartbeat_ms: now,
        stop_requested: false,
        claimed: false,
        live: None,
        requests: Vec::new(),
        parked: None,
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
        incarnation: new_token(),
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
                    from_queue: false,
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
        from_queue: false,
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
            from_queue: false,
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
    store
        .put_connection(&c, &who("alice"), now_ms())
        .await
        .unwrap();
    store
        .subscribe(&c, &target(&*store, &id).await, "tok", 20, now_ms())
        .await
        .unwrap();
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

/// The session as a subscription names it.
pub async fn target(store: &dyn Store, id: &SessionId) -> SessionRef {
    store
        .get_session(id)
        .await
        .unwrap()
        .expect("the session exists")
        .target()
}

pub async fn connections_and_subscriptions(store: Arc<dyn Store>) {
    let owner = format!("conn-owner-{}", new_token());
    let (c1, c2) = (new_token(), new_token());
    store
        .put_connection(&c1, &who(&owner), now_ms())
        .await
        .unwrap();
    store
        .put_connection(&c2, &who(&owner), now_ms())
        .await
        .unwrap();
    assert_eq!(store.connection(&c1).await.unwrap(), Some(who(&owner)));
    let mut conns = store.owner_connections(&owner).await.unwrap();
    conns.sort();
    let mut want = vec![c1.clone(), c2.clone()];
    want.sort();
    assert_eq!(conns, want);

    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(idle_session(&*store, &owner, now_ms()).await);
    }
    let mut refs = Vec::new();
    for id in &sessions {
        refs.push(target(&*store, id).await);
    }
    // Only a session of the connection's owner can be subscribed to.
    let other = idle_session(&*store, "someone-else", now_ms()).await;
    assert_eq!(
        store
            .subscribe(&c1, &target(&*store, &other).await, "t0", 2, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::NotFound
    );
    assert_eq!(
        store
            .subscribe(
                &c1,
                &SessionRef {
                    id: new_id(),
                    owner: owner.clone(),
                    incarnation: new_token()
                },
                "t0",
                2,
                now_ms()
            )
            .await
            .unwrap(),
        SubscribeOutcome::NotFound
    );
    assert_eq!(
        store
            .subscribe(&c1, &refs[0], "t1", 2, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::Subscribed
    );
    assert_eq!(
        store
            .subscribe(&c1, &refs[1], "t2", 2, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::Subscribed
    );
    assert_eq!(
        store
            .subscribe(&c1, &refs[2], "t3", 2, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::TooMany
    );
    // Subscribing again to a held session is allowed and renews the token.
    assert_eq!(
        store
            .subscribe(&c1, &refs[0], "t4", 2, now_ms() + 1_000)
            .await
            .unwrap(),
        SubscribeOutcome::Subscribed
    );
    // Renewed again at once, it is refused, and keeps its token.
    assert_eq!(
        store
            .subscribe(&c1, &refs[0], "t6", 2, now_ms() + 1_100)
            .await
            .unwrap(),
        SubscribeOutcome::TooSoon
    );
    store
        .subscribe(&c2, &refs[0], "t5", 2, now_ms())
        .await
        .unwrap();
    let mut subs = store.subscribers(&sessions[0]).await.unwrap();
    subs.sort_by(|a, b| a.token.cmp(&b.token));
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0].token, "t4");
    store.unsubscribe(&c1, &sessions[0]).await.unwrap();
    assert_eq!(store.subscribers(&sessions[0]).await.unwrap().len(), 1);
    store.delete_connection(&c2).await.unwrap();
    assert!(store.subscribers(&sessions[0]).await.unwrap().is_empty());
    assert!(store.connection(&c2).await.unwrap().is_none());
    assert_eq!(store.owner_connections(&owner).await.unwrap(), vec![c1]);
}

/// A turn is taken on once: the first claim of the active turn wins, every
/// later or concurrent one, and a claim of another turn, loses.
pub async fn a_turn_is_claimed_once(store: Arc<dyn Store>) {
    let n = new_session("alice", "default", "t", "go", now_ms());
    store.create_session(&n).await.unwrap();
    let (sid, tid) = (&n.summary.id, &n.turn.turn_id);
    assert!(!store.claim_turn(sid, &new_token(), now_ms()).await.unwrap());
    let claims =
        futures::future::join_all((0..8).map(|_| store.claim_turn(sid, tid, now_ms()))).await;
    let won = claims.into_iter().filter(|c| *c.as_ref().unwrap()).count();
    assert_eq!(won, 1, "exactly one claim wins");
    assert!(!store.claim_turn(sid, tid, now_ms()).await.unwrap());
    let rec = store.get_session(sid).await.unwrap().unwrap();
    assert!(rec.turn.unwrap().claimed);
    // Once the turn ends there is nothing to claim.
    store
        .finish_turn(sid, tid, &end(sid, &n.turn, "done", TurnOutcome::Completed))
        .await
        .unwrap()
        .unwrap();
    assert!(!store.claim_turn(sid, tid, now_ms()).await.unwrap());
}

/// A request is stored with its turn and shows the session waiting; of
/// many racing answers exactly one wins, every other learns the winner's;
/// another owner's answer finds nothing; the session runs again once
/// nothing is pending, and the requests go with the turn.
pub async fn the_first_answer_to_a_request_wins(store: Arc<dyn Store>) {
    use confab_functions::domain::records::Resolved;
    use confab_protocol::model::{Decision, PendingRequest, RequestKind, Resolution};
    let n = new_session("alice", "default", "t", "go", now_ms());
    store.create_session(&n).await.unwrap();
    let (sid, tid) = (&n.summary.id, &n.turn.turn_id);
    let request = |tool: &str| PendingRequest {
        id: new_id(),
        session_id: sid.clone(),
        turn_id: tid.clone(),
        kind: RequestKind::Tool,
        tool: Some(tool.into()),
        input: Some(serde_json::json!({"command": "ls", "nested": {"list": [1, "two", null]}})),
        reason: None,
        questions: vec![],
        created_at: confab_protocol::Timestamp::from_millis(now_ms()),
        expires_at: confab_protocol::Timestamp::from_millis(now_ms() + 60_000),
        resolution: None,
    };
    let (first, second) = (request("Bash"), request("Edit"));
    assert!(
        store
            .add_request(sid, &new_id::<confab_protocol::TurnId>(), &first, now_ms())
            .await
            .unwrap()
            .is_none(),
        "not this turn"
    );
    let s = store
        .add_request(sid, tid, &first, now_ms())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.status, SessionStatus::Waiting);
    store
        .add_request(sid, tid, &second, now_ms())
        .await
        .unwrap()
        .unwrap();
    let rec = store.get_session(sid).await.unwrap().unwrap();
    assert_eq!(rec.summary.status, SessionStatus::Waiting);
    assert_eq!(
        rec.turn.as_ref().unwrap().requests,
        vec![first.clone(), second.clone()],
        "stored whole"
    );

    let answer = |d: Decision| Resolution {
        decision: d,
        message: None,
        answers: Default::default(),
        resolved_at: confab_protocol::Timestamp::from_millis(now_ms()),
    };
    assert_eq!(
        store
            .answer_request("mallory", sid, first.id.as_str(), &answer(Decision::Allow))
            .await
            .unwrap(),
        Resolved::NotFound
    );
    let outcomes = futures::future::join_all((0..8).map(|i| {
        let d = if i % 2 == 0 {
            Decision::Allow
        } else {
            Decision::Deny
        };
        let store = store.clone();
        let (sid, rid) = (sid.clone(), first.id.clone());
        async move {
            store
                .answer_request("alice", &sid, rid.as_str(), &answer(d))
                .await
                .unwrap()
        }
    }))
    .await;
    let won: Vec<&PendingRequest> = outcomes
        .iter()
        .filter_map(|o| match o {
            Resolved::Now(r, summary) => {
                assert_eq!(
                    summary.status,
                    SessionStatus::Waiting,
                    "the second still waits"
                );
                Some(r)
            }
            _ => None,
        })
        .collect();
    assert_eq!(won.len(), 1, "exactly one answer wins: {outcomes:?}");
    let winner = won[0].resolution.clone().unwrap();
    for o in &outcomes {
        if let Resolved::Already(r) = o {
            assert_eq!(
                r.resolution.as_ref(),
                Some(&winner),
                "a late answer learns the first"
            );
        }
    }
    match store
        .answer_request("alice", sid, second.id.as_str(), &answer(Decision::Allow))
        .await
        .unwrap()
    {
        Resolved::Now(_, summary) => assert_eq!(
            summary.status,
            SessionStatus::Running,
            "nothing pending: running again"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .answer_request(
                "alice",
                sid,
                new_id::<confab_protocol::RequestId>().as_str(),
                &answer(Decision::Allow)
            )
            .await
            .unwrap(),
        Resolved::NotFound
    );
    store
        .finish_turn(sid, tid, &end(sid, &n.turn, "done", TurnOutcome::Completed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .answer_request("alice", sid, first.id.as_str(), &answer(Decision::Deny))
            .await
            .unwrap(),
        Resolved::NotFound,
        "the requests went with the turn"
    );
}

/// The cap on a connection's subscriptions holds when many subscribes race,
/// and a subscription taken off frees its place.
/// A queued message for tests.
fn queued_item(text: &str) -> confab_protocol::model::QueuedMessage {
    confab_protocol::model::QueuedMessage {
        id: new_id(),
        text: text.parse().unwrap(),
        created_at: Timestamp::from_millis(now_ms()),
        permission_mode: None,
    }
}

pub async fn the_queue_holds_its_limit_and_a_queued_message_starts_once(store: Arc<dyn Store>) {
    use confab_functions::domain::records::{MAX_QUEUED, QueueChange, QueueOutcome};
    let n = new_session("alice", "default", "t", "first", now_ms());
    store.create_session(&n).await.unwrap();
    let id = n.summary.id.clone();
    // Another owner's session has no queue for them.
    assert_eq!(
        store
            .change_queue("bob", &id, &QueueChange::Add(queued_item("x")))
            .await
            .unwrap(),
        QueueOutcome::NotFound
    );
    // A burst of adds past the limit: exactly MAX_QUEUED wait.
    let mut handles = Vec::new();
    for i in 0..MAX_QUEUED + 4 {
        let (store, id) = (store.clone(), id.clone());
        handles.push(tokio::spawn(async move {
            let add = QueueChange::Add(queued_item(&format!("m{i}")));
            store.change_queue("alice", &id, &add).await.unwrap()
        }));
    }
    let mut full = 0;
    for h in handles {
        match h.await.unwrap() {
            QueueOutcome::Changed(_) => {}
            QueueOutcome::Full => full += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(full, 4);
    let rec = store.get_session(&id).await.unwrap().unwrap();
    assert_eq!(rec.queue.items.len(), MAX_QUEUED);
    // "Send now" on the last: first in line, and the turn asked to stop.
    let last = rec.queue.items[MAX_QUEUED - 1].clone();
    let QueueOutcome::Changed(q) = store
        .change_queue("alice", &id, &QueueChange::Next(last.id.clone()))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(q[0].id, last.id);
    let rec = store.get_session(&id).await.unwrap().unwrap();
    assert!(rec.turn.as_ref().unwrap().stop_requested);
    assert!(rec.queue.next_now);
    // Starting from the queue while a turn runs is refused.
    let t = turn();
    let from_queue = |t: &ActiveTurn| NewTurn {
        message: user(&id, &t.turn_id, last.text.as_str()),
        turn: t.clone(),
        permission_mode: None,
        now_ms: now_ms(),
        from_queue: true,
    };
    let mut nt = from_queue(&t);
    nt.message.id = last.id.clone();
    assert_eq!(
        store.start_turn("alice", &id, &nt).await.unwrap(),
        StartOutcome::Running
    );
    store
        .finish_turn(
            &id,
            &n.turn.turn_id,
            &end(&id, &n.turn, "r", TurnOutcome::Stopped),
        )
        .await
        .unwrap()
        .unwrap();
    // Idle: an add does not queue.
    assert_eq!(
        store
            .change_queue("alice", &id, &QueueChange::Add(queued_item("y")))
            .await
            .unwrap(),
        QueueOutcome::Idle
    );
    // Two starts of one queued message race: it starts once.
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (store, id, mut nt) = (store.clone(), id.clone(), from_queue(&turn()));
        nt.message.id = last.id.clone();
        handles.push(tokio::spawn(async move {
            store.start_turn("alice", &id, &nt).await.unwrap()
        }));
    }
    let mut started = 0;
    for h in handles {
        match h.await.unwrap() {
            StartOutcome::Started { message, .. } => {
                assert_eq!(message.seq, 3);
                started += 1
            }
            StartOutcome::Running | StartOutcome::Duplicate(_) | StartOutcome::NotQueued => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(started, 1);
    let rec = store.get_session(&id).await.unwrap().unwrap();
    assert_eq!(rec.queue.items.len(), MAX_QUEUED - 1);
    assert!(!rec.queue.items.iter().any(|q| q.id == last.id));
    assert!(
        !rec.queue.next_now,
        "the message it was set for has started"
    );
    // A message not queued does not start from the queue.
    let mut stray = from_queue(&turn());
    stray.message.id = new_id();
    let t = rec.turn.unwrap();
    store
        .finish_turn(&id, &t.turn_id, &end(&id, &t, "r", TurnOutcome::Completed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.start_turn("alice", &id, &stray).await.unwrap(),
        StartOutcome::NotQueued
    );
    // Edit and cancel; a cancelled one is no longer there.
    let first = store.get_session(&id).await.unwrap().unwrap().queue.items[0].clone();
    let edit = QueueChange::Edit {
        id: first.id.clone(),
        text: "edited".parse().unwrap(),
    };
    let QueueOutcome::Changed(q) = store.change_queue("alice", &id, &edit).await.unwrap() else {
        panic!()
    };
    assert_eq!(q[0].text.as_str(), "edited");
    let cancel = QueueChange::Cancel(first.id.clone());
    assert!(matches!(
        store.change_queue("alice", &id, &cancel).await.unwrap(),
        QueueOutcome::Changed(q) if q.len() == MAX_QUEUED - 2
    ));
    assert_eq!(
        store.change_queue("alice", &id, &cancel).await.unwrap(),
        QueueOutcome::NotQueued
    );
}

pub async fn a_parked_turn_is_claimed_again_once(store: Arc<dyn Store>) {
    use confab_functions::domain::records::Parked;
    let n = new_session("alice", "default", "t", "first", now_ms());
    store.create_session(&n).await.unwrap();
    let (id, t) = (n.summary.id.clone(), n.turn.turn_id.clone());
    assert!(store.claim_turn(&id, &t, now_ms()).await.unwrap());
    let parked = Parked {
        request_id: new_id(),
        resume: serde_json::json!({"at": 3}),
    };
    assert!(
        !store.park_turn(&id, &new_token(), &parked).await.unwrap(),
        "not its turn"
    );
    assert!(store.park_turn(&id, &t, &parked).await.unwrap());
    let turn = store.get_session(&id).await.unwrap().unwrap().turn.unwrap();
    assert!(turn.is_parked());
    assert_eq!(turn.parked.as_ref(), Some(&parked));
    // The runners that the answer and the sweep both send: one resumes it.
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (store, id, t) = (store.clone(), id.clone(), t.clone());
        handles.push(tokio::spawn(async move {
            store.claim_turn(&id, &t, now_ms()).await.unwrap()
        }));
    }
    let mut claimed = 0;
    for h in handles {
        claimed += usize::from(h.await.unwrap());
    }
    assert_eq!(claimed, 1);
    let turn = store.get_session(&id).await.unwrap().unwrap().turn.unwrap();
    assert!(!turn.is_parked(), "claimed: it runs again");
}

pub async fn subscription_cap_holds_under_a_burst(store: Arc<dyn Store>) {
    let owner = format!("burst-{}", new_token());
    let conn = new_token();
    store
        .put_connection(&conn, &who(&owner), now_ms())
        .await
        .unwrap();
    let mut refs = Vec::new();
    for _ in 0..40 {
        let id = idle_session(&*store, &owner, now_ms()).await;
        refs.push(target(&*store, &id).await);
    }
    let outcomes = futures::future::join_all(
        refs.iter()
            .map(|r| store.subscribe(&conn, r, "tok", 20, now_ms())),
    )
    .await;
    let subscribed = outcomes
        .iter()
        .filter(|o| *o.as_ref().unwrap() == SubscribeOutcome::Subscribed)
        .count();
    assert_eq!(subscribed, 20, "{outcomes:?}");
    let mut held = Vec::new();
    for r in &refs {
        if store
            .subscribers(&r.id)
            .await
            .unwrap()
            .iter()
            .any(|s| s.connection_id == conn)
        {
            held.push(r.clone());
        }
    }
    assert_eq!(held.len(), 20);
    let free = refs.iter().find(|r| !held.contains(r)).unwrap();
    assert_eq!(
        store
            .subscribe(&conn, free, "tok", 20, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::TooMany
    );
    // Renewing one held is not a new one.
    assert_eq!(
        store
            .subscribe(&conn, &held[0], "again", 20, now_ms() + 1_000)
            .await
            .unwrap(),
        SubscribeOutcome::Subscribed
    );
    store.unsubscribe(&conn, &held[1].id).await.unwrap();
    assert_eq!(
        store
            .subscribe(&conn, free, "tok", 20, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::Subscribed
    );
    // Deleting a subscribed session frees its place too.
    store.delete_session(&owner, &held[2].id).await.unwrap();
    let another = refs
        .iter()
        .find(|r| !held.contains(r) && *r != free)
        .unwrap();
    assert_eq!(
        store
            .subscribe(&conn, another, "tok", 20, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::Subscribed
    );
}

/// A subscription names the session's owner and incarnation: after a
/// delete, a subscribe to the old incarnation fails in its own condition,
/// even once a session with the same id exists again, and the rows of the
/// new one name the new incarnation.
pub async fn subscriptions_name_their_incarnation(store: Arc<dyn Store>) {
    let conn = new_token();
    store
        .put_connection(&conn, &who("alice"), now_ms())
        .await
        .unwrap();
    let first = new_session("alice", "default", "t", "one", now_ms());
    store.create_session(&first).await.unwrap();
    let id = first.summary.id.clone();
    let old = target(&*store, &id).await;
    assert_eq!(old.owner, "alice");
    assert_eq!(
        store
            .subscribe(&conn, &old, "t1", 20, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::Subscribed
    );
    let subs = store.subscribers(&id).await.unwrap();
    assert!(subs.iter().all(|s| s.is_of(&old)) && subs.len() == 1);
    store.request_stop("alice", &id).await.unwrap();
    store.delete_session("alice", &id).await.unwrap().unwrap();
    assert_eq!(
        store
            .subscribe(&conn, &old, "t2", 20, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::NotFound
    );
    // The same id again, the same owner: a new incarnation.
    let mut again = new_session("alice", "default", "t", "two", now_ms());
    again.summary.id = id.clone();
    again.first.session_id = id.clone();
    store.create_session(&again).await.unwrap();
    let new = target(&*store, &id).await;
    assert_ne!(new.incarnation, old.incarnation);
    assert_eq!(
        store
            .subscribe(&conn, &old, "t3", 20, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::NotFound
    );
    assert!(
        store
            .subscribers(&id)
            .await
            .unwrap()
            .iter()
            .all(|s| !s.is_of(&old) || s.is_of(&new))
    );
    assert_eq!(
        store
            .subscribe(&conn, &new, "t4", 20, now_ms())
            .await
            .unwrap(),
        SubscribeOutcome::Subscribed
    );
    let subs = store.subscribers(&id).await.unwrap();
    assert_eq!(subs.iter().filter(|s| s.is_of(&new)).count(), 1);
}

struct Nowhere;

#[async_trait::async_trait]
impl confab_functions::ports::Push for Nowhere {
    async fn post(
        &self,
        _connection_id: &str,
        _frame: bytes::Bytes,
    ) -> Result<(), confab_functions::ports::PushError> {
        Ok(())
    }
    async fn close(&self, _connection_id: &str) -> Result<(), confab_functions::ports::PushError> {
        Ok(())
    }
}

/// Runs the turn `turn_id` of `sid` with the demo agent, to its end.
async fn run_demo_turn(store: &Arc<dyn Store>, owner: &str, sid: &SessionId, turn_id: &TurnId) {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    confab_functions::domain::runner::run_turn(
        &**store,
        &Nowhere,
        &confab_functions::agents::demo::DemoAgent::new(std::time::Duration::ZERO),
        &confab_functions::domain::runner::RunnerConfig::default(),
        &confab_functions::ports::TurnJob {
            owner: owner.into(),
            session_id: sid.clone(),
            turn_id: turn_id.clone(),
        },
        rx,
    )
    .await
    .unwrap();
}

/// A user message of 32,000 characters whose first word is `m<i>`.
fn long_text(i: usize) -> String {
    let mut t = format!("m{i:02} ");
    while t.len() < 32_000 {
        t.push_str("word ");
    }
    t.truncate(32_000);
    t
}

/// History past DynamoDB's 1 MB page: 21 user messages of 32,000
/// characters and the demo agent's replies (which quote them). The detail,
/// every page, the export and the agent's history hold all 42 messages, and
/// the last reply answers the last message.
pub async fn long_history_is_whole(store: Arc<dyn Store>) {
    use confab_functions::domain::sessions;
    let owner = format!("long-{}", new_token());
    let n = new_session(&owner, "default", "t", &long_text(1), now_ms());
    store.create_session(&n).await.unwrap();
    let sid = n.summary.id.clone();
    run_demo_turn(&store, &owner, &sid, &n.turn.turn_id).await;
    for i in 2..=21 {
        let t = turn();
        let started = store
            .start_turn(
                &owner,
                &sid,
                &NewTurn {
                    message: user(&sid, &t.turn_id, &long_text(i)),
                    turn: t.clone(),
                    permission_mode: None,
                    now_ms: now_ms(),
                    from_queue: false,
                },
            )
            .await
            .unwrap();
        assert!(
            matches!(started, StartOutcome::Started { .. }),
            "{started:?}"
        );
        run_demo_turn(&store, &owner, &sid, &t.turn_id).await;
    }
    let seqs = |ms: &[Message]| ms.iter().map(|m| m.seq).collect::<Vec<_>>();
    let all: Vec<u64> = (1..=42).collect();

    let detail = sessions::detail(&*store, &owner, &sid).await.unwrap();
    assert_eq!(seqs(&detail.messages), all);
    assert!(!detail.has_more);
    assert_eq!(detail.session.message_count, 42);

    // Every page, newest first and oldest first.
    let mut back = Vec::new();
    let mut before = None;
    loop {
        let page = sessions::messages(&*store, &owner, &sid, None, before, Some(5))
            .await
            .unwrap();
        back.splice(0..0, page.messages.iter().cloned());
        before = page.messages.first().map(|m| m.seq);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seqs(&back), all);
    let mut fwd: Vec<Message> = Vec::new();
    loop {
        let after = fwd.last().map_or(0, |m| m.seq);
        let page = sessions::messages(&*store, &owner, &sid, Some(after), None, Some(7))
            .await
            .unwrap();
        fwd.extend(page.messages);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(fwd, back);

    // The export as it is downloaded: streamed, a page at a time.
    let (_, body) =
        sessions::export_stream(store.clone(), &owner, &sid, sessions::ExportFormat::Json)
            .await
            .unwrap();
    let chunks: Vec<bytes::Bytes> = futures::StreamExt::collect::<Vec<_>>(body)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let doc: serde_json::Value = serde_json::from_slice(&chunks.concat()).unwrap();
    let exported: Vec<Message> = serde_json::from_value(doc["messages"].clone()).unwrap();
    assert_eq!(exported, back);

    // The agent read all 41 messages before the last reply (the demo
    // agent counts their words as input tokens), and answered the last.
    let last = back.last().unwrap();
    assert_eq!(last.role, Role::Assistant);
    assert!(
        last.plain_text().contains("You wrote: m21 "),
        "answers the last message"
    );
    let words: u64 = back[..41]
        .iter()
        .map(|m| m.plain_text().split_whitespace().count() as u64)
        .sum();
    assert_eq!(last.usage.unwrap().input_tokens, words);
    let history = sessions::history(&*store, &sid).await.unwrap();
    assert_eq!(history.len(), 42);
}

/// A reply of any length is kept: a 1.5 MB in-flight reply survives a
/// checkpoint and a longer one after it, and the stored reply reads back
/// whole, by page and by id.
pub async fn long_reply_round_trips(store: Arc<dyn Store>) {
    let n = new_session("alice", "default", "t", "long", now_ms());
    store.create_session(&n).await.unwrap();
    let (sid, t) = (&n.summary.id, &n.turn);
    assert!(store.claim_turn(sid, &t.turn_id, now_ms()).await.unwrap());
    let mut text = String::new();
    for i in 0..150_000 {
        text.push_str(["lorem ", "ipsum ", "dolor ", "\"quoted\" ", "ünïcödé "][i % 5]);
    }
    let mut live = LiveReply {
        message_id: t.reply_id.clone(),
        turn_id: t.turn_id.clone(),
        content: vec![
            Block::text(&text[..text.len() / 2]),
            Block::ToolUse {
                id: "t1".into(),
                name: "bash".into(),
                input: serde_json::json!({"command": "ls"}),
            },
        ],
    };
    // Two checkpoints, the second longer: each reads back whole.
    for grow in [false, true] {
        if grow {
            live.content.push(Block::text(&text));
        }
        assert!(
            store
                .checkpoint(sid, &t.turn_id, &live, now_ms())
                .await
                .unwrap()
        );
        let back = store.get_session(sid).await.unwrap().unwrap();
        assert_eq!(back.turn.unwrap().live.as_ref(), Some(&live));
    }
    let running = store.running_turns().await.unwrap();
    let mine = running.iter().find(|(_, id, _)| id == sid).unwrap();
    assert_eq!(mine.2.live.as_ref(), Some(&live));

    let mut e = end(sid, t, "", TurnOutcome::Completed);
    e.reply.content = live.content.clone();
    let (stored, _) = store
        .finish_turn(sid, &t.turn_id, &e)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.content, live.content);
    let (page, more) = store
        .messages(sid, MessageRange::Latest { limit: 10 })
        .await
        .unwrap();
    assert!(!more);
    assert_eq!(page.len(), 2);
    assert_eq!(page[1], stored);
    let (page, _) = store
        .messages(sid, MessageRange::Before { seq: 2, limit: 10 })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    let (page, _) = store
        .messages(sid, MessageRange::After { seq: 1, limit: 1 })
        .await
        .unwrap();
    assert_eq!(page, vec![stored.clone()]);
    assert_eq!(
        store.find_message(sid, &t.reply_id).await.unwrap(),
        Some(stored)
    );
    assert!(
        store
            .get_session(sid)
            .await
            .unwrap()
            .unwrap()
            .turn
            .is_none()
    );
}

/// The sweep closes turns whose runner is gone and says which case it
/// closed: a turn no runner ever claimed "never started" (failed), a claimed
/// one whose runner stopped answering was "interrupted" with its reply so far.
pub async fn the_sweep_says_which_case_it_closed(store: Arc<dyn Store>) {
    use confab_functions::domain::sessions::{NEVER_STARTED, STOPPED_ANSWERING, sweep_stale};
    let long_ago = now_ms() - 60_000;
    let mut never = new_session("alice", "default", "t", "one", long_ago);
    never.turn.started_ms = long_ago;
    never.turn.heartbeat_ms = long_ago;
    store.create_session(&never).await.unwrap();
    let died = new_session("alice", "default", "t", "two", long_ago);
    store.create_session(&died).await.unwrap();
    let (sid, t) = (&died.summary.id, &died.turn);
    assert!(store.claim_turn(sid, &t.turn_id, long_ago).await.unwrap());
    let live = LiveReply {
        message_id: t.reply_id.clone(),
        turn_id: t.turn_id.clone(),
        content: vec![Block::text("half a")],
    };
    assert!(
        store
            .checkpoint(sid, &t.turn_id, &live, long_ago)
            .await
            .unwrap()
    );
    // A turn running now is left alone.
    let busy = new_session("alice", "default", "t", "three", now_ms());
    store.create_session(&busy).await.unwrap();
    assert!(
        store
            .claim_turn(&busy.summary.id, &busy.turn.turn_id, now_ms())
            .await
            .unwrap()
    );

    assert!(sweep_stale(&*store, &Nowhere, None).await.unwrap() >= 2);
    let reply = |id: SessionId| {
        let store = store.clone();
        async move {
            let (m, _) = store
                .messages(&id, MessageRange::Latest { limit: 5 })
                .await
                .unwrap();
            let rec = store.get_session(&id).await.unwrap().unwrap();
            (m, rec)
        }
    };
    let (m, rec) = reply(never.summary.id.clone()).await;
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].status, MessageStatus::Failed);
    assert_eq!(m[1].error.as_deref(), Some(NEVER_STARTED));
    assert_eq!(rec.summary.last_turn.unwrap().outcome, TurnOutcome::Failed);
    let (m, rec) = reply(sid.clone()).await;
    assert_eq!(m[1].status, MessageStatus::Interrupted);
    assert_eq!(m[1].error.as_deref(), Some(STOPPED_ANSWERING));
    assert_eq!(m[1].plain_text(), "half a");
    assert_eq!(
        rec.summary.last_turn.unwrap().outcome,
        TurnOutcome::Interrupted
    );
    let (m, rec) = reply(busy.summary.id.clone()).await;
    assert_eq!(m.len(), 1);
    assert!(rec.turn.is_some());
}

/// If the end of a turn cannot be stored, whatever the reason, the turn ends
/// at once as `failed` with its last checkpoint and an error saying so; it
/// is never left running.
pub async fn a_turn_whose_end_cannot_be_stored_ends_failed_with_its_checkpoint(
    store: Arc<dyn Store>,
) {
    use confab_functions::domain::runner::{RunnerConfig, run_turn};
    use confab_functions::domain::sessions::SAVE_FAILED;
    use std::time::Duration;
    let faulty: Arc<dyn Store> = Arc::new(crate::faulty::Faulty::failing_finish(store.clone(), 1));
    let n = new_session("alice", "default", "t", "/words 300", now_ms());
    store.create_session(&n).await.unwrap();
    let (sid, t) = (&n.summary.id, &n.turn);
    // Checkpoints as often as the runner looks, so there is one to keep.
    let cfg = RunnerConfig {
        checkpoint_interval: Duration::from_millis(1),
        heartbeat_interval: Duration::from_millis(1),
        ..RunnerConfig::default()
    };
    let (_tx, rx) = tokio::sync::watch::channel(false);
    run_turn(
        &*faulty,
        &Nowhere,
        &confab_functions::agents::demo::DemoAgent::new(Duration::from_millis(1)),
        &cfg,
        &confab_functions::ports::TurnJob {
            owner: "alice".into(),
            session_id: sid.clone(),
            turn_id: t.turn_id.clone(),
        },
        rx,
    )
    .await
    .unwrap();
    let rec = store.get_session(sid).await.unwrap().unwrap();
    assert!(rec.turn.is_none(), "the turn is not left running");
    let last = rec.summary.last_turn.unwrap();
    assert_eq!(last.outcome, TurnOutcome::Failed);
    assert_eq!(last.error.as_deref(), Some(SAVE_FAILED));
    let (m, _) = store
        .messages(sid, MessageRange::Latest { limit: 5 })
        .await
        .unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].status, MessageStatus::Failed);
    assert_eq!(m[1].error.as_deref(), Some(SAVE_FAILED));
    let kept = m[1].plain_text();
    assert!(!kept.is_empty(), "the last checkpoint is kept");
    // The demo agent's words, as far as the last checkpoint had them.
    assert!(kept.starts_with("lorem ipsum"), "{kept}");
    assert!(kept.split_whitespace().count() <= 300);
}

/// An owner's counter counts up to its limit and no further, however many
/// counts race; owners and keys are counted apart; an expired counter reads
/// as zero.
pub async fn owner_counters_hold_under_a_burst(store: Arc<dyn Store>) {
    let (alice, bob) = (
        format!("alice-{}", new_token()),
        format!("bob-{}", new_token()),
    );
    let later = now_ms() + 120_000;
    let counts =
        futures::future::join_all((0..20).map(|_| store.count(&alice, "sends#1", 1, 5, later)))
            .await;
    let counted = counts.into_iter().filter(|c| *c.as_ref().unwrap()).count();
    assert_eq!(counted, 5, "exactly the limit is counted");
    assert_eq!(store.counted(&alice, "sends#1", now_ms()).await.unwrap(), 5);
    assert!(!store.count(&alice, "sends#1", 1, 5, later).await.unwrap());
    // Another owner and another window are counted apart.
    assert!(store.count(&bob, "sends#1", 1, 5, later).await.unwrap());
    assert!(store.count(&alice, "sends#2", 1, 5, later).await.unwrap());
    assert_eq!(store.counted(&bob, "sends#1", now_ms()).await.unwrap(), 1);
    // Amounts: a count that would pass the limit changes nothing.
    assert!(
        store
            .count(&bob, "tokens#1", 900, 1000, later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .count(&bob, "tokens#1", 101, 1000, later)
            .await
            .unwrap()
    );
    assert!(
        store
            .count(&bob, "tokens#1", 100, 1000, later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .count(&bob, "tokens#1", 2000, 1000, later)
            .await
            .unwrap()
    );
    assert_eq!(
        store.counted(&bob, "tokens#1", now_ms()).await.unwrap(),
        1000
    );
    assert_eq!(store.counted(&bob, "never", now_ms()).await.unwrap(), 0);
    // Past its expiry a counter reads as zero.
    assert!(
        store
            .count(&bob, "old", 3, 10, now_ms() + 1_000)
            .await
            .unwrap()
    );
    assert_eq!(
        store.counted(&bob, "old", now_ms() + 5_000).await.unwrap(),
        0
    );
}

/// An owner's set holds at most its limit of members, however many holds
/// race; a member already held is held again; a released place is free.
pub async fn owner_sets_hold_under_a_burst(store: Arc<dyn Store>) {
    let owner = format!("carol-{}", new_token());
    let later = now_ms() + 120_000;
    let members: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let held = futures::future::join_all(
        members
            .iter()
            .map(|m| store.hold(&owner, "turns", m, 3, later)),
    )
    .await;
    let added: Vec<&String> = members
        .iter()
        .zip(&held)
        .filter(|(_, h)| *h.as_ref().unwrap() == Held::Added)
        .map(|(m, _)| m)
        .collect();
    assert_eq!(added.len(), 3, "exactly the limit is held: {held:?}");
    assert_eq!(
        store
            .hold(&owner, "turns", added[0], 3, later)
            .await
            .unwrap(),
        Held::Already
    );
    match store.hold(&owner, "turns", "late", 3, later).await.unwrap() {
        Held::Full(mut full) => {
            full.sort();
            let mut want: Vec<String> = added.iter().map(|m| m.to_string()).collect();
            want.sort();
            assert_eq!(full, want);
        }
        other => panic!("a full set took another member: {other:?}"),
    }
    store.release(&owner, "turns", added[1]).await.unwrap();
    store.release(&owner, "turns", "never-held").await.unwrap();
    store
        .release(&format!("nobody-{}", new_token()), "turns", "x")
        .await
        .unwrap();
    assert_eq!(
        store.hold(&owner, "turns", "late", 3, later).await.unwrap(),
        Held::Added
    );
    // Other owners have sets of their own.
    assert_eq!(
        store
            .hold(&format!("dave-{}", new_token()), "turns", "s0", 3, later)
            .await
            .unwrap(),
        Held::Added
    );
    // Emptied, the set takes members again.
    for m in [added[0], added[2], &"late".to_string()] {
        store.release(&owner, "turns", m).await.unwrap();
    }
    assert_eq!(
        store
            .hold(&owner, "turns", "again", 1, later)
            .await
            .unwrap(),
        Held::Added
    );
}

/// A socket ticket is taken once, however many takes race, and not after
/// it expires; a connection keeps its token's expiry.
pub async fn socket_tickets_are_taken_once(store: Arc<dyn Store>) {
    let alice = Principal {
        owner: format!("alice-{}", new_token()),
        auth_expires_ms: Some(now_ms() + 3_600_000),
    };
    let ticket = new_token();
    store
        .put_ticket(&ticket, &alice, now_ms() + 60_000)
        .await
        .unwrap();
    let takes =
        futures::future::join_all((0..8).map(|_| store.take_ticket(&ticket, now_ms()))).await;
    let taken: Vec<Principal> = takes.into_iter().filter_map(|t| t.unwrap()).collect();
    assert_eq!(taken, vec![alice.clone()], "exactly one take wins");
    assert_eq!(
        store.take_ticket(&new_token(), now_ms()).await.unwrap(),
        None
    );
    let stale = new_token();
    store
        .put_ticket(&stale, &alice, now_ms() + 1_000)
        .await
        .unwrap();
    assert_eq!(
        store.take_ticket(&stale, now_ms() + 2_000).await.unwrap(),
        None,
        "an expired ticket opens nothing"
    );
    let conn = new_token();
    store.put_connection(&conn, &alice, now_ms()).await.unwrap();
    assert_eq!(store.connection(&conn).await.unwrap(), Some(alice.clone()));
    // Tickets are not sockets of their owner.
    assert_eq!(
        store.owner_connections(&alice.owner).await.unwrap(),
        vec![conn]
    );
}

/// A connection renewed with a fresher token of its owner carries on until
/// that token's expiry; another owner cannot renew it, and a connection that
/// is gone is not made again.
pub async fn a_connection_is_renewed_by_its_owner_only(store: Arc<dyn Store>) {
    let owner = format!("alice-{}", new_token());
    let first = Principal {
        owner: owner.clone(),
        auth_expires_ms: Some(now_ms() + 60_000),
    };
    let conn = new_token();
    store.put_connection(&conn, &first, now_ms()).await.unwrap();
    let fresh = Principal {
        owner: owner.clone(),
        auth_expires_ms: Some(now_ms() + 3_600_000),
    };
    assert!(store.renew_connection(&conn, &fresh).await.unwrap());
    assert_eq!(store.connection(&conn).await.unwrap(), Some(fresh.clone()));
    let mallory = Principal {
        owner: format!("mallory-{}", new_token()),
        auth_expires_ms: Some(now_ms() + 7_200_000),
    };
    assert!(!store.renew_connection(&conn, &mallory).await.unwrap());
    assert_eq!(
        store.connection(&conn).await.unwrap(),
        Some(fresh.clone()),
        "unchanged by another owner"
    );
    let gone = new_token();
    assert!(!store.renew_connection(&gone, &fresh).await.unwrap());
    assert_eq!(store.connection(&gone).await.unwrap(), None, "not made");
    assert_eq!(store.owner_connections(&owner).await.unwrap(), vec![conn]);
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
            connections_and_subscriptions,
            a_turn_is_claimed_once,
            the_first_answer_to_a_request_wins,
            the_queue_holds_its_limit_and_a_queued_message_starts_once,
            a_parked_turn_is_claimed_again_once,
            subscription_cap_holds_under_a_burst,
            subscriptions_name_their_incarnation,
            long_history_is_whole,
            long_reply_round_trips,
            the_sweep_says_which_case_it_closed,
            a_turn_whose_end_cannot_be_stored_ends_failed_with_its_checkpoint,
            owner_counters_hold_under_a_burst,
            owner_sets_hold_under_a_burst,
            socket_tickets_are_taken_once,
            a_connection_is_renewed_by_its_owner_only
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
