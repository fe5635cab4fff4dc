//! End to end: a `confab` process, real HTTP and real WebSockets, and the
//! protocol's own state machines as the client.

use confab_protocol::client::{CurrentSession, Phase};
use confab_protocol::model::{MessageStatus, Role, SessionStatus, TurnOutcome};
use confab_protocol::routes;
use confab_protocol::{Message, ServerEvent, SessionSummary};
use confab_tests::harness::{Gateway, Viewer, id};
use serde_json::Value;
use std::time::Duration;

fn summary(v: &Value) -> SessionSummary {
    serde_json::from_value(v["session"].clone()).expect("session")
}

fn count<'a>(
    events: impl IntoIterator<Item = &'a ServerEvent>,
    f: impl Fn(&ServerEvent) -> bool,
) -> usize {
    events.into_iter().filter(|e| f(e)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_with_first_message_streams_to_completion() {
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "2")]).await;
    let api = gw.api(None);
    // A second tab is open on the list before the session exists.
    let mut other = gw.socket(None).await;
    other.hello().await;

    let (sid, mid) = (id(), id());
    let r = api.create(&sid, &mid, "/words 300").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let s = summary(&r.body);
    assert_eq!(s.id, sid, "the server keeps the client's id");
    assert_eq!(
        s.status,
        SessionStatus::Running,
        "the turn starts before the answer"
    );
    assert_eq!(s.message_count, 1);
    let first: Vec<Message> = serde_json::from_value(r.body["messages"].clone()).unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (
            first[0].seq,
            first[0].id.as_str(),
            first[0].plain_text().as_str()
        ),
        (1, mid.as_str(), "/words 300")
    );

    // The creating tab subscribes as soon as it has the answer.
    let mut current = CurrentSession::new_unsaved(sid.parse().unwrap());
    current.apply_created(&serde_json::from_value(r.body.clone()).unwrap());
    let mut v = Viewer::open(&gw, None, current).await;
    v.until("the reply is stored and the session idle", |v| {
        v.current.phase() == Phase::Idle && v.assistant_count() == 1
    })
    .await;

    let stored = api.all_messages(&sid).await;
    assert_eq!(
        v.current.stored().cloned().collect::<Vec<_>>(),
        stored,
        "the client holds exactly the server's messages"
    );
    assert_eq!(stored[1].plain_text().split_whitespace().count(), 300);
    assert_eq!(stored[1].status, MessageStatus::Complete);
    assert_eq!(v.resubscribes, 0, "every delta fitted: nothing was missed");
    for (streamed, final_) in &v.assembled {
        assert_eq!(streamed, final_, "the streamed reply is the stored reply");
    }
    assert!(
        !v.assembled.is_empty(),
        "the reply was watched while it streamed"
    );
    assert_eq!(
        v.socket
            .oversize_frames
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Streaming was coalesced: far fewer frames than words.
    let deltas = count(&v.events, |e| matches!(e, ServerEvent::MessageDelta { .. }));
    assert!(deltas < 150, "{deltas} deltas for 300 words");

    // The other tab learned of the session, then of its end.
    let (e, _) = other
        .expect("session.created", |e| {
            matches!(e, ServerEvent::SessionCreated { .. })
        })
        .await;
    let ServerEvent::SessionCreated { session } = e else {
        unreachable!()
    };
    assert_eq!(session.id, sid);
    other
        .expect("session.updated idle", |e| matches!(e, ServerEvent::SessionUpdated { session } if session.status == SessionStatus::Idle))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_turn_ends_with_one_reply_and_one_idle_update() {
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "1")]).await;
    let api = gw.api(None);
    let sid = id();
    // Connected before the session exists, so no event of it can be missed.
    let mut v = Viewer::connect(&gw, None, CurrentSession::new_loading(sid.parse().unwrap())).await;
    let r = api.create(&sid, &id(), "hello").await;
    assert_eq!(r.status, 201);
    v.subscribe().await;
    v.until("first reply", |v| {
        v.current.phase() == Phase::Idle && v.assistant_count() == 1
    })
    .await;

    // A second turn: seq 3 and 4.
    let m2 = id();
    let r = api.send(&sid, &m2, "/tool").await;
    assert_eq!(r.status, 202, "{}", r.text);
    let sent: Message = serde_json::from_value(r.body["message"].clone()).unwrap();
    assert_eq!(sent.seq, 3);
    assert_eq!(summary(&r.body).status, SessionStatus::Running);
    // The same message again creates nothing.
    let again = api.send(&sid, &m2, "/tool").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["message"]["seq"], 3);

    v.until("second reply", |v| {
        v.current.phase() == Phase::Idle && v.assistant_count() == 2
    })
    .await;
    let stored = api.all_messages(&sid).await;
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(stored[3].role, Role::Assistant);
    assert!(
        stored[3]
            .content
            .iter()
            .any(|b| matches!(b, confab_protocol::Block::ToolUse { .. }))
    );
    assert!(
        stored[3].content.iter().any(|b| matches!(
            b,
            confab_protocol::Block::ToolResult {
                duration_ms: Some(_),
                ..
            }
        )),
        "the result carries how long its tool ran"
    );
    assert_eq!(v.current.stored().cloned().collect::<Vec<_>>(), stored);
    assert_eq!(v.resubscribes, 0, "every delta fitted: nothing was missed");

    // Let any stray frames arrive, then count per turn.
    v.events
        .extend(v.socket.drain(Duration::from_millis(300)).await);
    for m in stored.iter().filter(|m| m.role == Role::Assistant) {
        let created = count(
            &v.events,
            |e| matches!(e, ServerEvent::MessageCreated { message, .. } if message.id == m.id),
        );
        assert_eq!(created, 1, "one message.created for reply {}", m.seq);
    }
    let idles = count(
        &v.events,
        |e| matches!(e, ServerEvent::SessionUpdated { session } if session.status == SessionStatus::Idle),
    );
    assert_eq!(idles, 2, "one idle session.updated per turn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_mid_reply_ends_with_exactly_the_servers_text() {
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "1")]).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "/words 3000").await;
    let mut v = Viewer::open(&gw, None, CurrentSession::new_loading(sid.parse().unwrap())).await;
    v.until("some of the reply", |v| v.live_text().len() > 500)
        .await;
    // The connection drops; the reply goes on without us.
    let seen = v.live_text().len();
    v.reconnect(&gw, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    v.until("the reply is stored", |v| {
        v.current.phase() == Phase::Idle && v.assistant_count() == 1
    })
    .await;
    let stored = api.all_messages(&sid).await;
    assert_eq!(v.current.stored().cloned().collect::<Vec<_>>(), stored);
    assert_eq!(stored[1].plain_text().split_whitespace().count(), 3000);
    assert!(
        seen < stored[1].plain_text().len(),
        "the drop happened mid-reply"
    );
    assert_eq!(v.assembled.len(), 1);
    assert_eq!(
        v.assembled[0].0, v.assembled[0].1,
        "text assembled across the reconnect is the stored text"
    );
    assert_eq!(
        v.resubscribes, 0,
        "after the reconnect, snapshot and deltas fitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_keeps_the_partial_reply_and_is_idempotent() {
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "1")]).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "/words 100000").await;
    let mut v = Viewer::open(&gw, None, CurrentSession::new_loading(sid.parse().unwrap())).await;
    let mut other = gw.socket(None).await;
    other.hello().await;
    v.until("some of the reply", |v| v.live_text().len() > 200)
        .await;

    let r = api.stop(&sid).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let s = summary(&r.body);
    assert_eq!(
        s.status,
        SessionStatus::Idle,
        "stop answers once the turn has ended"
    );
    assert_eq!(s.last_turn.as_ref().unwrap().outcome, TurnOutcome::Stopped);

    let again = api.stop(&sid).await;
    assert_eq!(
        again.status, 200,
        "stopping an idle session is not an error"
    );
    assert_eq!(summary(&again.body).status, SessionStatus::Idle);

    v.until("the stopped reply", |v| {
        v.assistant_count() == 1 && v.current.phase() == Phase::Idle
    })
    .await;
    let stored = api.all_messages(&sid).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].status, MessageStatus::Stopped);
    let words = stored[1].plain_text().split_whitespace().count();
    assert!(
        words > 10 && words < 100000,
        "partial reply kept: {words} words"
    );
    assert_eq!(v.assembled[0].0, v.assembled[0].1);
    assert_eq!(v.resubscribes, 0, "every delta fitted: nothing was missed");
    // No more output after the stop.
    let later = v.socket.drain(Duration::from_millis(400)).await;
    assert!(
        !later.iter().any(|e| matches!(
            e,
            ServerEvent::MessageDelta { .. } | ServerEvent::MessageBlock { .. }
        )),
        "{later:?}"
    );
    // Both tabs see idle.
    other.expect("idle in the other tab", |e| matches!(e, ServerEvent::SessionUpdated { session } if session.status == SessionStatus::Idle)).await;
    // The session takes a new message after the stop.
    assert_eq!(api.send(&sid, &id(), "hello again").await.status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_gives_a_failed_reply_and_an_idle_session() {
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "/fail").await;
    let mut v = Viewer::open(&gw, None, CurrentSession::new_loading(sid.parse().unwrap())).await;
    v.until("the failed reply", |v| {
        v.assistant_count() == 1 && v.current.phase() == Phase::Idle
    })
    .await;
    let stored = api.all_messages(&sid).await;
    assert_eq!(stored[1].status, MessageStatus::Failed);
    assert!(stored[1].error.as_deref().unwrap().contains("/fail"));
    assert_eq!(
        stored[1].plain_text().split_whitespace().count(),
        5,
        "the words before the failure are kept"
    );
    let s = v.current.summary().unwrap();
    assert_eq!(s.status, SessionStatus::Idle);
    let last = s.last_turn.as_ref().unwrap();
    assert_eq!(last.outcome, TurnOutcome::Failed);
    assert!(last.error.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_arriving_mid_turn_gets_the_reply_so_far() {
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "1")]).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "/words 3000").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = gw.socket(None).await;
    s.hello().await;
    s.subscribe(&sid, 0).await;
    let (e, _) = s
        .expect("subscribed", |e| {
            matches!(e, ServerEvent::Subscribed { .. })
        })
        .await;
    let ServerEvent::Subscribed {
        messages, session, ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(messages.len(), 1);
    assert_eq!(session.status, SessionStatus::Running);
    // The runner's next flush brings the whole reply so far as one snapshot.
    let (e, before) = s
        .expect("a snapshot", |e| {
            matches!(e, ServerEvent::MessageSnapshot { .. })
        })
        .await;
    assert!(
        !before
            .iter()
            .any(|e| matches!(e, ServerEvent::MessageDelta { .. })),
        "no delta before the snapshot: {before:?}"
    );
    let ServerEvent::MessageSnapshot { content, .. } = e else {
        unreachable!()
    };
    assert!(!content.is_empty());
    api.stop(&sid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_stops_the_turn_and_tells_every_tab() {
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "1")]).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "/words 100000").await;
    let mut other = gw.socket(None).await;
    other.hello().await;
    let r = api.call("DELETE", &routes::session(&sid), None).await;
    assert_eq!(r.status, 204, "{}", r.text);
    let (e, _) = other
        .expect("session.deleted", |e| {
            matches!(e, ServerEvent::SessionDeleted { .. })
        })
        .await;
    let ServerEvent::SessionDeleted { session_id, .. } = e else {
        unreachable!()
    };
    assert_eq!(session_id, sid);
    assert_eq!(api.session(&sid).await.status, 404);
    assert_eq!(
        api.call("DELETE", &routes::session(&sid), None)
            .await
            .status,
        404
    );
    let list = api.get(routes::SESSIONS).await;
    assert_eq!(list.body["sessions"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_and_permission_mode_reach_every_tab() {
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "hello").await;
    api.wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    let mut other = gw.socket(None).await;
    other.hello().await;
    let r = api
        .call(
            "PATCH",
            &routes::session(&sid),
            Some(serde_json::json!({ "title": "  Renamed  ", "permissionMode": "plan" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let s = summary(&r.body);
    assert_eq!(s.title, "Renamed");
    let (e, _) = other
        .expect("session.updated", |e| {
            matches!(e, ServerEvent::SessionUpdated { .. })
        })
        .await;
    let ServerEvent::SessionUpdated { session } = e else {
        unreachable!()
    };
    assert_eq!(session, s);
    assert_eq!(
        serde_json::to_value(session.permission_mode).unwrap(),
        "plan"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_conflicts_on_a_different_first_message_and_is_rate_limited() {
    let gw = Gateway::start(&[("CONFAB_CREATE_RATE", "3")]).await;
    let api = gw.api(None);
    // The limit counts in clock minutes: all of this in one.
    confab_tests::harness::within_one_minute(Duration::from_secs(15)).await;
    let (sid, mid) = (id(), id());
    assert_eq!(api.create(&sid, &mid, "hello").await.status, 201);
    let again = api.create(&sid, &mid, "hello").await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["session"]["id"], sid.as_str());
    assert_eq!(again.body["messages"][0]["id"], mid.as_str());
    let other = api.create(&sid, &id(), "something else").await;
    assert_eq!(other.status, 409);
    assert_eq!(other.body["error"]["code"], "conflict");
    // The limit: 3 creations a minute (the replay above counted nothing).
    assert_eq!(api.create(&id(), &id(), "two").await.status, 201);
    assert_eq!(api.create(&id(), &id(), "three").await.status, 201);
    let limited = api.create(&id(), &id(), "four").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let list = api.get(routes::SESSIONS).await;
    assert_eq!(list.body["sessions"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_search_and_projects() {
    let gw = Gateway::start(&[("CONFAB_CREATE_RATE", "100")]).await;
    let api = gw.api(None);
    let mut ids = Vec::new();
    for i in 0..5 {
        let sid = id();
        let body = serde_json::json!({ "id": sid, "projectId": if i < 3 { "alpha" } else { "beta" }, "message": { "id": id(), "text": format!("note number {i} about Kubernetes") } });
        assert_eq!(
            api.call("POST", routes::SESSIONS, Some(body)).await.status,
            201
        );
        api.wait_session(&sid, |s| s["session"]["status"] == "idle")
            .await;
        ids.push(sid);
    }
    let p1 = api.get(&routes::session_page(2)).await;
    assert_eq!(p1.status, 200);
    let got: Vec<&str> = p1.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        vec![ids[4].as_str(), ids[3].as_str()],
        "newest activity first"
    );
    let cursor = p1.body["nextCursor"].as_str().unwrap();
    let p2 = api
        .get(&format!("/api/sessions?limit=2&cursor={cursor}"))
        .await;
    let got: Vec<&str> = p2.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str()]);
    let q = api.get("/api/sessions?q=NUMBER%203").await;
    assert_eq!(q.body["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(q.body["sessions"][0]["id"], ids[3].as_str());
    let beta = api.get("/api/sessions?projectId=beta").await;
    assert_eq!(beta.body["sessions"].as_array().unwrap().len(), 2);
    let projects = api.get(routes::PROJECTS).await;
    assert_eq!(projects.body["projects"][0]["id"], "beta");
    assert_eq!(projects.body["projects"][0]["sessionCount"], 2);
    assert_eq!(
        projects.body["projects"][0]["lastSessionId"],
        ids[4].as_str()
    );
    assert_eq!(projects.body["projects"][1]["sessionCount"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_as_markdown_and_json() {
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "/tool").await;
    api.wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    let md = api.get(&routes::export(&sid, "md")).await;
    assert_eq!(md.status, 200);
    assert!(
        md.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    assert!(md.text.contains("## You"));
    assert!(md.text.contains("**Tool call:** `list_files`"));
    let json = api.get(&routes::export(&sid, "json")).await;
    assert_eq!(json.body["messages"].as_array().unwrap().len(), 2);
    assert_eq!(json.body["session"]["id"], sid.as_str());
    assert_eq!(api.get(&routes::export(&sid, "pdf")).await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_health() {
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    assert_eq!(api.get(routes::HEALTH).await.body["ok"], true);
    let c = api.get(routes::CONFIG).await.body;
    assert_eq!(c["agent"]["provider"], "demo");
    assert_eq!(c["auth"]["mode"], "none");
    assert_eq!(c["limits"]["maxMessageBytes"], 32768);
    assert_eq!(c["limits"]["maxTitleChars"], 200);
}

/// The protocol's typed REST client, the one the web app uses, through every
/// call of the contract against the real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typed_client_drives_a_session_through_the_contract() {
    use confab_protocol::client::rest::RestError;
    use confab_protocol::rest::{
        CreateSessionRequest, ErrorCode, NewMessage, UpdateSessionRequest,
    };
    use confab_protocol::{MessageText, SessionId};

    let gw = Gateway::start(&[]).await;
    let client = gw.api(None).typed();
    let sid: SessionId = id().parse().unwrap();
    let first = NewMessage {
        id: id().parse().unwrap(),
        text: MessageText::parse("/words 5").unwrap(),
    };
    let create = CreateSessionRequest {
        id: Some(sid.clone()),
        project_id: None,
        title: None,
        permission_mode: None,
        message: first,
    };
    let created = client.create_session(&create).await.unwrap();
    assert_eq!(created.status, 201);
    assert_eq!(created.value.session.id, sid);
    // The same create again changes nothing and says so.
    assert_eq!(client.create_session(&create).await.unwrap().status, 200);
    gw.api(None)
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;

    let next = NewMessage {
        id: id().parse().unwrap(),
        text: MessageText::parse("/words 400").unwrap(),
    };
    let sent = client.send_message(&sid, next, None).await.unwrap();
    let confab_protocol::rest::SendAnswer::Started(started) = sent.value else {
        panic!("no turn ran: the message starts its own")
    };
    assert_eq!((sent.status, started.message.seq), (202, 3));
    let stopped = client.stop(&sid).await.unwrap();
    assert_eq!(stopped.value.status, SessionStatus::Idle);

    let renamed = client
        .update(
            &sid,
            &UpdateSessionRequest {
                title: Some("Typed".into()),
                permission_mode: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.title, "Typed");
    let page = client.messages(&sid, Some(0), None, 100).await.unwrap();
    assert_eq!(page.messages.len(), 4);
    assert!(
        client
            .export(&sid, "md")
            .await
            .unwrap()
            .contains("/words 400")
    );
    assert_eq!(client.list_sessions(10).await.unwrap().sessions[0].id, sid);

    // Refusals come back typed, with the server's code.
    let refused = client
        .update(
            &sid,
            &UpdateSessionRequest {
                title: Some(" ".into()),
                permission_mode: None,
            },
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(RestError::Refused {
                status: 400,
                code: Some(ErrorCode::InvalidRequest),
                ..
            })
        ),
        "{refused:?}"
    );
    client.delete(&sid).await.unwrap();
    assert_eq!(client.session(&sid).await, Err(RestError::NotFound));
}

// ---- requests to the person ---------------------------------------------------

/// A new session whose first message is `text` (`/approve`, `/ask`), once
/// it waits on the person: its id and its detail.
async fn waiting(api: &confab_tests::harness::Api, text: &str) -> (String, Value) {
    let sid = id();
    api.create(&sid, &id(), text).await;
    let detail = api
        .wait_session(&sid, |s| s["session"]["status"] == "waiting")
        .await;
    (sid, detail)
}

/// The ids in a `session.queue` event or a `queued` list, in order.
fn queue_ids(queued: &Value) -> Vec<String> {
    queued
        .as_array()
        .map(|a| {
            a.iter()
                .map(|q| q["id"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The user messages stored, in seq order, as their ids.
async fn user_ids(api: &confab_tests::harness::Api, sid: &str) -> Vec<String> {
    api.all_messages(sid)
        .await
        .into_iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.id.to_string())
        .collect()
}

/// The next `session.queue` event on `s`, as the ids it lists.
async fn next_queue(s: &mut confab_tests::harness::Socket) -> Vec<String> {
    let (e, _) = s
        .expect("session.queue", |e| {
            matches!(e, ServerEvent::SessionQueue { .. })
        })
        .await;
    let ServerEvent::SessionQueue { queued, .. } = e else {
        unreachable!()
    };
    queued.into_iter().map(|q| q.id.to_string()).collect()
}

#[tokio::test]
async fn messages_sent_during_a_turn_are_queued_for_every_tab_and_run_in_order() {
    use confab_tests::harness::token;
    let gw = Gateway::start_jwt(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let (alice, mallory) = (token("alice"), token("mallory"));
    let api = gw.api(Some(&alice));
    // The first turn waits on the person, so the queue fills while it runs.
    let (sid, _) = waiting(&api, "/approve").await;
    let mut a = subscribed(&gw, Some(&alice), &sid).await;
    let mut b = subscribed(&gw, Some(&alice), &sid).await;
    let (q1, q2) = (id(), id());
    let r = api.send(&sid, &q1, "first in line").await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["queued"]["id"], q1.as_str(), "{}", r.text);
    assert_eq!(r.body["queued"]["text"], "first in line");
    assert!(r.body.get("message").is_none(), "no seq while it waits");
    assert_eq!(next_queue(&mut a).await, [q1.as_str()]);
    assert_eq!(next_queue(&mut b).await, [q1.as_str()]);
    // The same send again (a retry) is the same queued message.
    let again = api.send(&sid, &q1, "first in line").await;
    assert_eq!(
        (again.status, &again.body["queued"]["id"]),
        (202, &Value::from(q1.as_str()))
    );
    assert_eq!(api.send(&sid, &q2, "second in line").await.status, 202);
    // Every tab holds the queue in order; a reload shows it too; another
    // user sees none of it and cannot touch it.
    assert_eq!(next_queue(&mut a).await.last(), Some(&q2));
    assert_eq!(next_queue(&mut b).await.last(), Some(&q2));
    let detail = api.session(&sid).await.body;
    assert_eq!(queue_ids(&detail["queued"]), [q1.as_str(), q2.as_str()]);
    assert_eq!(
        detail["session"]["messageCount"], 1,
        "queued messages take no seq"
    );
    let foreign = gw
        .api(Some(&mallory))
        .call("DELETE", &routes::queued(&sid, &q1), None)
        .await;
    assert_eq!(foreign.status, 404, "{}", foreign.text);
    let mut s = gw.socket(Some(&alice)).await;
    s.hello().await;
    s.subscribe(&sid, 0).await;
    let (e, _) = s
        .expect("subscribed", |e| {
            matches!(e, ServerEvent::Subscribed { .. })
        })
        .await;
    let ServerEvent::Subscribed { queued, .. } = e else {
        unreachable!()
    };
    assert_eq!(queued.len(), 2, "subscribed carries the queue");

    // The turn ends; the queue runs, one turn after another, in order.
    let rid = detail["pending"][0]["id"].as_str().unwrap().to_string();
    let answered = api
        .call(
            "POST",
            &request_path(&sid, &rid),
            Some(serde_json::json!({"decision": "allow"})),
        )
        .await;
    assert_eq!(answered.status, 200, "{}", answered.text);
    api.wait_session(&sid, |s| {
        s["session"]["status"] == "idle" && s["session"]["messageCount"] == 6
    })
    .await;
    let stored = api.all_messages(&sid).await;
    let roles: Vec<Role> = stored.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::User,
            Role::Assistant,
            Role::User,
            Role::Assistant,
            Role::User,
            Role::Assistant
        ]
    );
    assert_eq!(stored[2].id.to_string(), q1);
    assert_eq!(stored[4].id.to_string(), q2);
    assert!(stored.iter().all(|m| m.status == MessageStatus::Complete));
    let detail = api.session(&sid).await.body;
    assert_eq!(queue_ids(&detail["queued"]), Vec::<String>::new());
    // The tabs saw the queue empty out.
    let mut seen = next_queue(&mut a).await;
    while !seen.is_empty() {
        seen = next_queue(&mut a).await;
    }
}

#[tokio::test]
async fn a_queued_message_is_edited_and_cancelled_until_it_starts_and_the_queue_has_a_limit() {
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let api = gw.api(None);
    let (sid, detail) = waiting(&api, "/approve").await;
    let (q1, q2) = (id(), id());
    api.send(&sid, &q1, "draft").await;
    api.send(&sid, &q2, "never mind").await;
    let edit = api
        .call(
            "PATCH",
            &routes::queued(&sid, &q1),
            Some(serde_json::json!({"text": "  the real question  "})),
        )
        .await;
    assert_eq!(edit.status, 200, "{}", edit.text);
    assert_eq!(edit.body["queued"]["text"], "the real question");
    let bad = api
        .call(
            "PATCH",
            &routes::queued(&sid, &q1),
            Some(serde_json::json!({"text": "  "})),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let bad_id = api
        .call(
            "DELETE",
            &format!("/api/sessions/{sid}/queue/not-an-id"),
            None,
        )
        .await;
    assert_eq!(bad_id.status, 400, "{}", bad_id.text);
    assert_eq!(
        api.call("DELETE", &routes::queued(&sid, &q2), None)
            .await
            .status,
        204
    );
    assert_eq!(
        api.call("DELETE", &routes::queued(&sid, &q2), None)
            .await
            .status,
        404,
        "cancelled: no such message waits"
    );
    // At most ten wait.
    let mut last = 0;
    for i in 0..10 {
        last = api.send(&sid, &id(), &format!("more {i}")).await.status;
        if last != 202 {
            break;
        }
    }
    assert_eq!(last, 429, "the eleventh is refused");
    let queued = queue_ids(&api.session(&sid).await.body["queued"]);
    assert_eq!(queued.len(), 10);
    for extra in &queued[1..] {
        api.call("DELETE", &routes::queued(&sid, extra), None).await;
    }
    let rid = detail["pending"][0]["id"].as_str().unwrap().to_string();
    api.call(
        "POST",
        &request_path(&sid, &rid),
        Some(serde_json::json!({"decision": "deny"})),
    )
    .await;
    api.wait_session(&sid, |s| {
        s["session"]["status"] == "idle" && s["session"]["messageCount"] == 4
    })
    .await;
    let stored = api.all_messages(&sid).await;
    assert_eq!(
        stored[2].plain_text(),
        "the real question",
        "sent as edited"
    );
    assert_eq!(
        user_ids(&api, &sid).await.len(),
        2,
        "the cancelled one never ran"
    );
    // Started: it can no longer be edited or cancelled.
    let late = api
        .call(
            "PATCH",
            &routes::queued(&sid, &q1),
            Some(serde_json::json!({"text": "x"})),
        )
        .await;
    assert_eq!(
        (late.status, &late.body["error"]["code"]),
        (409, &Value::from("conflict"))
    );
    assert_eq!(
        api.call("DELETE", &routes::queued(&sid, &q1), None)
            .await
            .status,
        409
    );
}

#[tokio::test]
async fn stop_holds_the_queue_and_send_now_steers() {
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let api = gw.api(None);
    let (sid, _) = waiting(&api, "/approve").await;
    let (q1, q2, q3) = (id(), id(), id());
    api.send(&sid, &q1, "later").await;
    api.send(&sid, &q2, "now instead").await;
    // "Send now" on the second: the turn is asked to stop, and the second
    // goes first.
    let steer = api
        .call("POST", &routes::queued_start(&sid, &q2), None)
        .await;
    assert_eq!(steer.status, 202, "{}", steer.text);
    assert_eq!(queue_ids(&steer.body["queued"]), [q2.as_str(), q1.as_str()]);
    api.wait_session(&sid, |s| {
        s["session"]["status"] == "idle" && s["session"]["messageCount"] == 6
    })
    .await;
    let stored = api.all_messages(&sid).await;
    assert_eq!(
        stored[1].status,
        MessageStatus::Stopped,
        "the steered turn stopped"
    );
    assert_eq!(user_ids(&api, &sid).await[1..], [q2.as_str(), q1.as_str()]);

    // A stop holds what waits: nothing starts until the person says so.
    api.send(&sid, &id(), "/approve").await;
    api.wait_session(&sid, |s| s["session"]["status"] == "waiting")
        .await;
    api.send(&sid, &q3, "held").await;
    assert_eq!(api.stop(&sid).await.status, 202);
    let held = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    assert_eq!(queue_ids(&held["queued"]), [q3.as_str()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let still = api.session(&sid).await.body;
    assert_eq!(
        still["session"]["messageCount"], 8,
        "nothing started by itself"
    );
    assert_eq!(queue_ids(&still["queued"]), [q3.as_str()]);
    // Send now, while idle: it starts at once.
    let go = api
        .call("POST", &routes::queued_start(&sid, &q3), None)
        .await;
    assert_eq!(go.status, 200, "{}", go.text);
    assert_eq!(go.body["message"]["id"], q3.as_str());
    assert_eq!(go.body["message"]["seq"], 9);
    api.wait_session(&sid, |s| {
        s["session"]["status"] == "idle" && s["session"]["messageCount"] == 10
    })
    .await;
    assert!(queue_ids(&api.session(&sid).await.body["queued"]).is_empty());
}

fn request_path(sid: &str, rid: &str) -> String {
    format!("/api/sessions/{sid}/requests/{rid}")
}

/// A socket of `token`'s owner subscribed to `sid`.
async fn subscribed(gw: &Gateway, token: Option<&str>, sid: &str) -> confab_tests::harness::Socket {
    let mut s = gw.socket(token).await;
    s.hello().await;
    s.subscribe(sid, 0).await;
    s.expect("subscribed", |e| {
        matches!(e, ServerEvent::Subscribed { .. })
    })
    .await;
    s
}

#[tokio::test]
async fn a_tool_request_reaches_every_tab_of_its_owner_and_the_first_answer_wins() {
    use confab_tests::harness::token;
    let gw = Gateway::start_jwt(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let (alice, mallory) = (token("alice"), token("mallory"));
    let api = gw.api(Some(&alice));
    let sid = id();
    assert_eq!(api.create(&sid, &id(), "/approve").await.status, 201);
    let mut a = subscribed(&gw, Some(&alice), &sid).await;
    let mut b = subscribed(&gw, Some(&alice), &sid).await;
    let mut m = gw.socket(Some(&mallory)).await;
    m.hello().await;
    // The session waits on the person, in the detail too (a reload).
    let detail = api
        .wait_session(&sid, |s| s["session"]["status"] == "waiting")
        .await;
    let pending: Vec<confab_protocol::model::PendingRequest> =
        serde_json::from_value(detail["pending"].clone()).unwrap();
    assert_eq!(pending.len(), 1);
    let req = &pending[0];
    assert_eq!(req.tool.as_deref(), Some("demo_tool"));
    assert!(req.expires_at.millis() - req.created_at.millis() == 30 * 60 * 1000);
    // A tab subscribing now gets it in `subscribed`.
    let mut c = gw.socket(Some(&alice)).await;
    c.hello().await;
    c.subscribe(&sid, 0).await;
    let (sub, _) = c
        .expect("subscribed", |e| {
            matches!(e, ServerEvent::Subscribed { .. })
        })
        .await;
    assert!(
        matches!(sub, ServerEvent::Subscribed { pending, .. } if pending.len() == 1 && pending[0].id == req.id)
    );

    // Another owner can neither see nor answer it.
    let theirs = gw
        .api(Some(&mallory))
        .call(
            "POST",
            &request_path(&sid, req.id.as_str()),
            Some(serde_json::json!({"decision": "allow"})),
        )
        .await;
    assert_eq!(theirs.status, 404, "{}", theirs.text);
    // Bad answers change nothing.
    for bad in [
        serde_json::json!({"decision": "maybe"}),
        serde_json::json!({"decision": "allow", "extra": 1}),
        serde_json::json!({"decision": "deny", "message": "x".repeat(5000)}),
    ] {
        let r = api
            .call("POST", &request_path(&sid, req.id.as_str()), Some(bad))
            .await;
        assert!(
            r.status == 400 || r.status == 413,
            "{} {}",
            r.status,
            r.text
        );
    }
    let r = api
        .call(
            "POST",
            &request_path(&sid, "not-an-id"),
            Some(serde_json::json!({"decision": "allow"})),
        )
        .await;
    assert_eq!(r.status, 400);

    // Two answers race: one wins, the other gets 409 with the winner's.
    let path = request_path(&sid, req.id.as_str());
    let (x, y) = tokio::join!(
        api.call(
            "POST",
            &path,
            Some(serde_json::json!({"decision": "allow"}))
        ),
        api.call(
            "POST",
            &path,
            Some(serde_json::json!({"decision": "deny", "message": "no"}))
        ),
    );
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", x.text, y.text);
    let (won, lost) = if x.status == 200 { (&x, &y) } else { (&y, &x) };
    assert_eq!(lost.body["error"]["code"], "conflict");
    assert_eq!(
        lost.body["request"]["resolution"]["decision"],
        won.body["request"]["resolution"]["decision"],
        "the 409 says what the first answer was"
    );
    let decision = won.body["request"]["resolution"]["decision"]
        .as_str()
        .unwrap()
        .to_string();

    // Both tabs see it resolved, then the turn carries on as answered.
    for s in [&mut a, &mut b] {
        let (e, _) = s
            .expect("request.resolved", |e| {
                matches!(e, ServerEvent::RequestResolved { .. })
            })
            .await;
        assert!(
            matches!(e, ServerEvent::RequestResolved { request_id, .. } if request_id == req.id)
        );
    }
    api.wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    let stored = api.all_messages(&sid).await;
    let text = stored[1].plain_text();
    if decision == "allow" {
        assert!(text.contains("You allowed demo_tool"), "{text}");
    } else {
        assert!(text.contains("denied") && text.contains("no"), "{text}");
    }
    // The other owner's socket heard nothing of it.
    let theirs = m.drain(Duration::from_millis(300)).await;
    assert!(
        theirs
            .iter()
            .all(|e| e.session_id().is_none_or(|s| s != sid)),
        "{theirs:?}"
    );
    // A late answer after the turn ended: 404, nothing changes.
    let late = api
        .call("POST", &path, Some(serde_json::json!({"decision": "deny"})))
        .await;
    assert_eq!(late.status, 404, "{}", late.text);
}

#[tokio::test]
async fn a_question_is_answered_with_an_option() {
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let api = gw.api(None);
    let (sid, detail) = waiting(&api, "/ask").await;
    let rid = detail["pending"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(detail["pending"][0]["kind"], "question");
    assert_eq!(
        detail["pending"][0]["questions"][0]["options"][1]["label"],
        "no"
    );
    // Every question must be answered.
    let r = api
        .call(
            "POST",
            &request_path(&sid, &rid),
            Some(serde_json::json!({"decision": "allow"})),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = api
        .call(
            "POST",
            &request_path(&sid, &rid),
            Some(serde_json::json!({"decision": "allow", "answers": {"Shall I go on?": "yes"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    api.wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    assert!(
        api.all_messages(&sid).await[1]
            .plain_text()
            .ends_with("You answered: yes.")
    );
}

#[tokio::test]
async fn an_unanswered_request_is_denied_in_time_and_stop_while_waiting_denies_and_stops() {
    let gw = Gateway::start(&[
        ("CONFAB_DEMO_DELAY_MS", "0"),
        ("CONFAB_REQUEST_TIMEOUT_SECS", "1"),
    ])
    .await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "/approve").await;
    let detail = api
        .wait_session(&sid, |s| s["session"]["status"] != "running")
        .await;
    let rid = detail["pending"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    let reply = &api.all_messages(&sid).await[1];
    assert_eq!(reply.status, MessageStatus::Complete);
    let text = reply.plain_text();
    assert!(
        text.contains("denied") && text.contains("Nobody answered in time"),
        "the agent was told why: {text}"
    );
    // An answer after the server denied it: 404 (the turn is over).
    let late = api
        .call(
            "POST",
            &request_path(&sid, &rid),
            Some(serde_json::json!({"decision": "allow"})),
        )
        .await;
    assert_eq!(late.status, 404, "{}", late.text);

    // Stop while waiting: the request is denied and the turn ends stopped.
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "/approve").await;
    let mut s = subscribed(&gw, None, &sid).await;
    api.wait_session(&sid, |s| s["session"]["status"] == "waiting")
        .await;
    let r = api.stop(&sid).await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        summary(&r.body).last_turn.unwrap().outcome,
        TurnOutcome::Stopped
    );
    let (e, _) = s
        .expect("the denial on stop", |e| {
            matches!(e, ServerEvent::RequestResolved { .. })
        })
        .await;
    assert!(matches!(
        e,
        ServerEvent::RequestResolved {
            decision: confab_protocol::model::Decision::Deny,
            ..
        }
    ));
    assert_eq!(
        api.all_messages(&sid).await[1].status,
        MessageStatus::Stopped
    );
}
