//! End to end: isolation between users, bad input, crashes and shutdown.

use confab_protocol::ServerEvent;
use confab_protocol::model::{MessageStatus, SessionStatus, TurnOutcome};
use confab_tests::harness::{ConnectError, Gateway, Socket, id, token};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_cannot_see_or_touch_a_session_and_gets_none_of_its_events() {
    let gw = Gateway::start_jwt(&[("CONFAB_DEMO_DELAY_MS", "1")]).await;
    let (ta, tb) = (token("alice"), token("bob"));
    let (alice, bob) = (gw.api(Some(&ta)), gw.api(Some(&tb)));
    let mut bob_socket = gw.socket(Some(&tb)).await;
    bob_socket.hello().await;

    let sid = id();
    assert_eq!(alice.create(&sid, &id(), "/words 400").await.status, 201);
    let base = format!("/api/sessions/{sid}");
    for (method, path, body) in [
        ("GET", base.clone(), None),
        ("GET", format!("{base}/messages"), None),
        ("PATCH", base.clone(), Some(json!({ "title": "mine now" }))),
        ("POST", format!("{base}/stop"), None),
        (
            "POST",
            format!("{base}/messages"),
            Some(json!({ "id": id(), "text": "hi" })),
        ),
        ("GET", format!("{base}/export?format=json"), None),
        ("DELETE", base.clone(), None),
    ] {
        let r = bob.call(method, &path, body).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        assert_eq!(r.body["error"]["code"], "not_found");
    }
    assert_eq!(
        bob.get("/api/sessions").await.body["sessions"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        bob.get("/api/projects").await.body["projects"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Bob cannot take the id either.
    assert_eq!(bob.create(&sid, &id(), "mine").await.status, 409);

    bob_socket.subscribe(&sid, 0).await;
    let (e, _) = bob_socket
        .expect("an error", |e| matches!(e, ServerEvent::Error { .. }))
        .await;
    let ServerEvent::Error {
        code, session_id, ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(serde_json::to_value(code).unwrap(), "not_found");
    assert_eq!(session_id.as_deref(), Some(sid.as_str()));

    // Alice's turn runs to its end; Bob's socket hears nothing of it.
    let done = alice
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    assert_eq!(
        done["session"]["title"], "/words 400",
        "Bob's rename changed nothing"
    );
    assert_eq!(
        done["messages"].as_array().unwrap().len(),
        2,
        "Bob's message was not stored"
    );
    let heard = bob_socket.drain(Duration::from_millis(300)).await;
    assert!(heard.is_empty(), "bob received {heard:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_nothing_is_served() {
    let gw = Gateway::start_jwt(&[]).await;
    let none = gw.api(None);
    let r = none.get("/api/sessions").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    let forged = gw.api(Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.bad"));
    assert_eq!(forged.get("/api/sessions").await.status, 401);
    assert_eq!(none.create(&id(), &id(), "hi").await.status, 401);
    // The socket is refused at connect.
    match Socket::connect(&gw.ws_url(None)).await {
        Err(ConnectError::Http(401)) => {}
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a socket without a token was accepted"),
    }
    match Socket::connect(&gw.ws_url(Some("garbage"))).await {
        Err(ConnectError::Http(401)) => {}
        other => panic!("{:?}", other.err()),
    }
    // A valid token in the URL is refused too: tokens stay out of URLs,
    // where logs keep them.
    match Socket::connect(&gw.ws_url(Some(&token("alice")))).await {
        Err(ConnectError::Http(401)) => {}
        other => panic!("a token in the socket URL was taken: {:?}", other.err()),
    }
    // A ticket opens one socket, once.
    let url = gw.ticket_url(&token("alice")).await;
    let mut s = Socket::connect(&url)
        .await
        .expect("the ticket opens a socket");
    s.hello().await;
    match Socket::connect(&url).await {
        Err(ConnectError::Http(401)) => {}
        other => panic!("a ticket was used twice: {:?}", other.err()),
    }
    let forged = url.replace("ticket=", "ticket=x");
    match Socket::connect(&forged).await {
        Err(ConnectError::Http(401)) => {}
        other => panic!("a made-up ticket was taken: {:?}", other.err()),
    }
    // A ticket needs a valid token.
    let r = none.call("POST", "/api/socket-ticket", None).await;
    assert_eq!(r.status, 401);
    // Health and config need no token.
    assert_eq!(none.get("/api/health").await.status, 200);
    assert_eq!(none.get("/api/config").await.body["auth"]["mode"], "jwt");
}

/// A request that must be refused: method, path, body, status, code.
type BadRequest = (&'static str, String, Option<Vec<u8>>, u16, &'static str);

async fn expect_error(
    api: &confab_tests::harness::Api,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    status: u16,
    code: &str,
) {
    let r = api.raw(method, path, body).await;
    assert_eq!(r.status, status, "{method} {path}: {}", r.text);
    assert_eq!(r.body["error"]["code"], code, "{method} {path}: {}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    let sid = id();
    assert_eq!(api.create(&sid, &id(), "hello").await.status, 201);
    let before = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;

    let create = |v: Value| Some(serde_json::to_vec(&v).unwrap());
    let big = "x".repeat(32 * 1024 + 1);
    let cases: Vec<BadRequest> = vec![
        (
            "POST",
            "/api/sessions".into(),
            Some(b"{not json".to_vec()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            Some(b"".to_vec()),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "id": id() })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "message": { "id": 7, "text": "hi" } })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "message": "hi" })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "id": "not-a-uuid", "message": { "id": id(), "text": "hi" } })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "id": id().to_uppercase(), "message": { "id": id(), "text": "hi" } })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "message": { "id": "x", "text": "hi" } })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "message": { "id": id(), "text": "   " } })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "message": { "id": id(), "text": big } })),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/sessions".into(),
            Some(vec![b' '; 64 * 1024 + 1]),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "projectId": "../etc", "message": { "id": id(), "text": "hi" } })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "title": "t".repeat(201), "message": { "id": id(), "text": "hi" } })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/sessions".into(),
            create(json!({ "permissionMode": "root", "message": { "id": id(), "text": "hi" } })),
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/sessions?limit=0".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/sessions?limit=101".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/sessions?limit=ten".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/sessions?cursor=bm90LWEtY3Vyc29y".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/sessions?projectId=UPPER".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            "/api/sessions/not-a-uuid".into(),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            format!("/api/sessions/{}", id()),
            None,
            404,
            "not_found",
        ),
        (
            "GET",
            format!("/api/sessions/{sid}/messages?afterSeq=-1"),
            None,
            400,
            "invalid_request",
        ),
        (
            "GET",
            format!("/api/sessions/{sid}/messages?afterSeq=1&beforeSeq=3"),
            None,
            400,
            "invalid_request",
        ),
        (
            "PATCH",
            format!("/api/sessions/{sid}"),
            create(json!({})),
            400,
            "invalid_request",
        ),
        (
            "PATCH",
            format!("/api/sessions/{sid}"),
            create(json!({ "title": "" })),
            400,
            "invalid_request",
        ),
        (
            "PATCH",
            format!("/api/sessions/{sid}"),
            create(json!({ "title": 5 })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            format!("/api/sessions/{sid}/messages"),
            create(json!({ "id": id(), "text": "" })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            format!("/api/sessions/{sid}/messages"),
            create(json!({ "id": id(), "text": "x".repeat(40_000) })),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            format!("/api/sessions/{sid}/messages"),
            create(json!({ "text": "hi" })),
            400,
            "invalid_request",
        ),
        (
            "POST",
            format!("/api/sessions/{}/messages", id()),
            create(json!({ "id": id(), "text": "hi" })),
            404,
            "not_found",
        ),
        (
            "POST",
            format!("/api/sessions/{}/stop", id()),
            None,
            404,
            "not_found",
        ),
        ("GET", "/api/nothing-here".into(), None, 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        expect_error(&api, method, &path, body, status, code).await;
    }
    let after = api.session(&sid).await.body;
    assert_eq!(after, before, "nothing changed");
    let list = api.get("/api/sessions").await;
    assert_eq!(
        list.body["sessions"].as_array().unwrap().len(),
        1,
        "no session was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_and_the_socket_stays_usable() {
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "hello").await;
    let mut s = gw.socket(None).await;
    s.hello().await;
    let frames: Vec<(String, &str)> = vec![
        ("{nope".into(), "invalid_request"),
        ("[1,2]".into(), "invalid_request"),
        (r#"{"action":"dance"}"#.into(), "invalid_request"),
        (r#"{"action":5}"#.into(), "invalid_request"),
        (r#"{"action":"subscribe"}"#.into(), "invalid_request"),
        (
            r#"{"action":"subscribe","sessionId":"x"}"#.into(),
            "invalid_request",
        ),
        (
            r#"{"action":"subscribe","sessionId":7}"#.into(),
            "invalid_request",
        ),
        (
            format!(r#"{{"action":"subscribe","sessionId":"{sid}","afterSeq":"one"}}"#),
            "invalid_request",
        ),
        (
            format!(r#"{{"action":"subscribe","sessionId":"{}"}}"#, id()),
            "not_found",
        ),
        (
            format!(r#"{{"action":"ping","pad":"{}"}}"#, "x".repeat(9000)),
            "payload_too_large",
        ),
    ];
    for (frame, code) in frames {
        s.send_text(&frame).await;
        let (e, _) = s
            .expect("an error frame", |e| matches!(e, ServerEvent::Error { .. }))
            .await;
        let ServerEvent::Error {
            code: got, message, ..
        } = e
        else {
            unreachable!()
        };
        assert_eq!(
            serde_json::to_value(got).unwrap(),
            code,
            "{frame}: {message}"
        );
        assert!(!message.is_empty());
        s.send(&json!({ "action": "ping" })).await;
        s.expect("pong after a bad frame", |e| matches!(e, ServerEvent::Pong))
            .await;
    }
    // And it still subscribes.
    s.subscribe(&sid, 0).await;
    s.expect("subscribed", |e| {
        matches!(e, ServerEvent::Subscribed { .. })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_at_most_twenty_subscriptions() {
    let gw = Gateway::start(&[
        ("CONFAB_CREATE_RATE", "100"),
        ("CONFAB_MAX_TURNS_PER_OWNER", "100"),
        ("CONFAB_DEMO_DELAY_MS", "0"),
    ])
    .await;
    let api = gw.api(None);
    let mut s = gw.socket(None).await;
    s.hello().await;
    let mut ids = Vec::new();
    for _ in 0..21 {
        let sid = id();
        assert_eq!(api.create(&sid, &id(), "hi").await.status, 201);
        ids.push(sid);
    }
    for sid in &ids[..20] {
        s.subscribe(sid, 0).await;
        s.expect("subscribed", |e| {
            matches!(e, ServerEvent::Subscribed { .. })
        })
        .await;
    }
    s.subscribe(&ids[20], 0).await;
    let (e, _) = s
        .expect("refused", |e| matches!(e, ServerEvent::Error { .. }))
        .await;
    assert!(matches!(e, ServerEvent::Error { session_id: Some(ref x), .. } if *x == ids[20]));
    s.send(&json!({ "action": "unsubscribe", "sessionId": ids[0] }))
        .await;
    s.expect("unsubscribed", |e| {
        matches!(e, ServerEvent::Unsubscribed { .. })
    })
    .await;
    s.subscribe(&ids[20], 0).await;
    s.expect("subscribed after making room", |e| {
        matches!(e, ServerEvent::Subscribed { .. })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_reply_loses_nothing_and_closes_the_turn_as_interrupted() {
    let mut gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "1")]).await;
    let api = gw.api(None);
    let (sid, mid) = (id(), id());
    api.create(&sid, &mid, "/words 100000").await;
    // Wait for a checkpoint of the in-flight reply.
    let mid_turn = api
        .wait_session(&sid, |s| {
            s["live"]["content"][0]["text"]
                .as_str()
                .is_some_and(|t| t.len() > 100)
        })
        .await;
    let checkpointed = mid_turn["live"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    gw.kill().await;
    gw.restart().await;
    let api = gw.api(None);
    let after = api.session(&sid).await;
    assert_eq!(after.status, 200);
    let s = &after.body["session"];
    assert_eq!(s["status"], "idle");
    assert_eq!(s["lastTurn"]["outcome"], "interrupted");
    let msgs = api.all_messages(&sid).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (msgs[0].id.as_str(), msgs[0].plain_text().as_str()),
        (mid.as_str(), "/words 100000"),
        "the user's message is intact"
    );
    assert_eq!(msgs[1].status, MessageStatus::Interrupted);
    assert!(
        msgs[1].plain_text().starts_with(&checkpointed),
        "the checkpointed reply was kept"
    );
    // The session goes on.
    assert_eq!(api.send(&sid, &id(), "still there?").await.status, 202);
    let done = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    assert_eq!(done["session"]["messageCount"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_drains_running_turns_and_exits_cleanly() {
    let mut gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "1")]).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "/words 100000").await;
    let mut watcher = gw.socket(None).await;
    watcher.hello().await;
    watcher.subscribe(&sid, 0).await;
    watcher
        .expect("some output", |e| {
            matches!(e, ServerEvent::MessageDelta { .. })
        })
        .await;
    let status = gw.interrupt().await;
    assert!(status.success(), "exit status {status:?}");
    // The watching tab was told how the turn ended before the socket closed.
    let (e, _) = watcher
        .expect("the interrupted reply", |e| {
            matches!(e, ServerEvent::MessageCreated { .. })
        })
        .await;
    let ServerEvent::MessageCreated { message, .. } = e else {
        unreachable!()
    };
    assert_eq!(message.status, MessageStatus::Interrupted);
    assert!(!message.plain_text().is_empty());
    gw.restart().await;
    let s = gw.api(None).session(&sid).await.body;
    assert_eq!(s["session"]["status"], "idle");
    assert_eq!(s["session"]["lastTurn"]["outcome"], "interrupted");
    assert_eq!(
        s["messages"][1]["content"],
        serde_json::to_value(&message.content).unwrap()
    );
}

/// The operator's counters (`/{key}/@stats`): open sockets and the
/// store's writes, under the key only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stats_show_sockets_and_store_writes_under_the_key_only() {
    if confab_tests::harness::aws_mode() {
        return;
    }
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    let key = gw.management_path();
    let before = api.get(&format!("{key}/@stats")).await;
    assert_eq!(before.status, 200, "{}", before.text);
    let mut s = gw.socket(None).await;
    s.hello().await;
    let sid = id();
    assert_eq!(api.create(&sid, &id(), "hi").await.status, 201);
    api.wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    let after = api.get(&format!("{key}/@stats")).await;
    assert_eq!(after.body["sockets"], 1, "{}", after.text);
    assert!(
        after.body["storeWrites"].as_u64() > before.body["storeWrites"].as_u64(),
        "{} then {}",
        before.text,
        after.text
    );
    assert!(after.body["storeCommits"].as_u64().unwrap() >= 1);
    assert_eq!(api.get("/not-the-key/@stats").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_endpoint_reaches_live_connections_and_410s_the_rest() {
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    // Under its key, as API Gateway's is under its stage.
    let key = gw.management_path();
    let mut s = gw.socket(None).await;
    s.hello().await;
    let conn = s.connection_id.clone().unwrap();
    let info = api.get(&format!("{key}/@connections/{conn}")).await;
    assert_eq!(info.status, 200);
    assert!(info.body["connectedAt"].is_string());
    assert_eq!(info.body["identity"]["sourceIp"], "127.0.0.1");
    let r = api
        .raw(
            "POST",
            &format!("{key}/@connections/{conn}"),
            Some(br#"{"type":"pong"}"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, 200);
    s.expect("the posted frame", |e| matches!(e, ServerEvent::Pong))
        .await;
    assert_eq!(
        api.raw(
            "POST",
            &format!("{key}/@connections/unknown"),
            Some(b"{}".to_vec())
        )
        .await
        .status,
        410
    );
    assert_eq!(
        api.get(&format!("{key}/@connections/unknown")).await.status,
        410
    );
    assert_eq!(
        api.call("DELETE", &format!("{key}/@connections/{conn}"), None)
            .await
            .status,
        204
    );
    assert!(s.drain(Duration::from_millis(300)).await.is_empty());
    // Without the key (or with another) the endpoint is not there at all.
    let mut other = gw.socket(None).await;
    other.hello().await;
    let other_id = other.connection_id.clone().unwrap();
    for path in [
        format!("/@connections/{other_id}"),
        format!("/0123456789abcdef0123456789abcdef/@connections/{other_id}"),
    ] {
        let r = api
            .raw("POST", &path, Some(br#"{"type":"pong"}"#.to_vec()))
            .await;
        assert_eq!(r.status, 404, "{path}");
    }
    assert!(other.drain(Duration::from_millis(300)).await.is_empty());
    assert_eq!(
        api.raw(
            "POST",
            &format!("{key}/@connections/{conn}"),
            Some(b"{}".to_vec())
        )
        .await
        .status,
        410
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_is_forgotten_and_events_go_on_to_the_rest() {
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    let mut a = gw.socket(None).await;
    a.hello().await;
    let mut b = gw.socket(None).await;
    b.hello().await;
    a.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sid = id();
    api.create(&sid, &id(), "hello").await;
    b.expect("session.created", |e| {
        matches!(e, ServerEvent::SessionCreated { .. })
    })
    .await;
    let idle = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    assert_eq!(
        idle["session"]["lastTurn"]["outcome"],
        serde_json::to_value(TurnOutcome::Completed).unwrap()
    );
    assert_eq!(
        serde_json::to_value(SessionStatus::Idle).unwrap(),
        idle["session"]["status"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_sites_cannot_drive_the_gateway_from_a_browser() {
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    let host = gw.base.strip_prefix("http://").unwrap().to_string();
    let create = || Some(json!({ "id": id(), "message": { "id": id(), "text": "run something" } }));
    // A page on another site posting to the gateway.
    let r = api
        .with_headers(
            "POST",
            "/api/sessions",
            create(),
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    let r = api
        .with_headers(
            "GET",
            "/api/sessions",
            None,
            &[("origin", "http://evil.example")],
        )
        .await;
    assert_eq!(r.status, 403);
    // A page that rebinds its own name to this machine.
    let r = api
        .with_headers(
            "GET",
            "/api/sessions",
            None,
            &[
                ("host", "evil.example:8787"),
                ("origin", "http://evil.example:8787"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    // The socket refuses a foreign origin at the handshake.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        gw.ws_url(None),
    )
    .unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 403),
        other => panic!("a foreign origin opened a socket: {:?}", other.map(|_| ())),
    }
    assert_eq!(
        api.get("/api/sessions").await.body["sessions"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing was created"
    );
    // The app's own origin, and clients that send none, are served.
    let own = format!("http://{host}");
    assert_eq!(
        api.with_headers("POST", "/api/sessions", create(), &[("origin", &own)])
            .await
            .status,
        201
    );
    assert_eq!(api.create(&id(), &id(), "from curl").await.status, 201);
}

/// A subscribe that races a delete of the same session must not leave a
/// subscription that a later session under the same id feeds. Thirty rounds
/// of subscribe frames sent while the session is deleted; then another owner
/// creates every one of those ids and streams a reply: the first socket
/// receives nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_racing_a_delete_never_delivers_the_next_owner_of_the_id() {
    let gw = Gateway::start_jwt(&[
        ("CONFAB_DEMO_DELAY_MS", "1"),
        ("CONFAB_CREATE_RATE", "100"),
        ("CONFAB_MAX_TURNS_PER_OWNER", "100"),
    ])
    .await;
    let (ta, tb) = (token("alice"), token("bob"));
    let (alice, bob) = (gw.api(Some(&ta)), gw.api(Some(&tb)));
    let mut watcher = gw.socket(Some(&ta)).await;
    watcher.hello().await;
    let idle = |s: &Value| s["session"]["status"] == "idle";
    let mut ids = Vec::new();
    for _ in 0..30 {
        let sid = id();
        assert_eq!(alice.create(&sid, &id(), "hello").await.status, 201);
        alice.wait_session(&sid, idle).await;
        let spam = async {
            for _ in 0..20 {
                watcher.subscribe(&sid, 0).await;
                tokio::task::yield_now().await;
            }
        };
        let path = format!("/api/sessions/{sid}");
        let (_, deleted) = tokio::join!(spam, alice.call("DELETE", &path, None));
        assert_eq!(deleted.status, 204, "{}", deleted.text);
        ids.push(sid);
    }
    // Whatever the spam got (subscribed, not_found) is in before bob starts.
    watcher.drain(Duration::from_millis(500)).await;
    for sid in &ids {
        let r = bob.create(sid, &id(), &format!("bob-secret {sid}")).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    for sid in &ids {
        let done = bob.wait_session(sid, idle).await;
        assert_eq!(done["session"]["messageCount"], 2);
    }
    let got = watcher.drain(Duration::from_secs(1)).await;
    for e in &got {
        let text = serde_json::to_string(e).unwrap();
        assert!(
            !text.contains("bob-secret"),
            "alice's socket got bob's text: {text}"
        );
        assert!(
            !matches!(
                e,
                ServerEvent::MessageCreated { .. }
                    | ServerEvent::MessageSnapshot { .. }
                    | ServerEvent::MessageDelta { .. }
                    | ServerEvent::MessageBlock { .. }
                    | ServerEvent::SessionCreated { .. }
                    | ServerEvent::SessionUpdated { .. }
            ),
            "alice's socket got an event of bob's sessions: {text}"
        );
    }
}

/// A frame over the 128 KiB a socket takes (API Gateway's own limit) closes
/// the socket with 1009 "message too big", so the client knows why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_128_kib_closes_the_socket_with_1009() {
    let gw = Gateway::start(&[]).await;
    let mut s = gw.socket(None).await;
    s.hello().await;
    s.send_text(&format!(
        r#"{{"action":"ping","pad":"{}"}}"#,
        "x".repeat(200 * 1024)
    ))
    .await;
    let (code, reason) = s.wait_closed().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("128 KiB"), "{reason}");
}

/// Starts `confab` with auth off and `args`; its exit status and output
/// when it exits at once, or the process and the URL it listens on.
async fn confab_with(
    args: &[&str],
) -> Result<(tokio::process::Child, String), (std::process::ExitStatus, String)> {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(confab_tests::harness::confab_bin());
    cmd.args(args);
    if !args.contains(&"--data-dir") {
        cmd.arg("--data-dir").arg(dir.path());
    }
    let mut child = cmd
        .env_remove("CONFAB_AUTH")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    match tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        Some(line) => Ok((
            child,
            line.strip_prefix("confab listening on ")
                .unwrap()
                .trim()
                .to_string(),
        )),
        None => {
            let out = child.wait_with_output().await.unwrap();
            Err((
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    }
}

/// With auth off, Confab serves this machine only: it will not listen where
/// other machines reach it unless told so with a loud flag, and it refuses
/// requests that came through a proxy (which could carry anyone's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_the_gateway_answers_only_this_machine_directly() {
    let (status, stderr) = confab_with(&["--addr", "0.0.0.0:0"])
        .await
        .expect_err("it refuses to listen on every interface");
    assert!(!status.success());
    assert!(stderr.contains("--allow-remote-without-auth"), "{stderr}");

    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    assert_eq!(api.get("/api/sessions").await.status, 200);
    for (h, v) in [
        ("X-Forwarded-For", "203.0.113.9"),
        ("Forwarded", "for=203.0.113.9;proto=https"),
        ("X-Forwarded-Host", "confab.example.com"),
        ("X-Real-IP", "203.0.113.9"),
    ] {
        let r = api
            .with_headers("GET", "/api/sessions", None, &[(h, v)])
            .await;
        assert_eq!(r.status, 403, "{h}");
        assert_eq!(r.body["error"]["code"], "unauthorized");
    }
    let (code, _) = match confab_tests::harness::Socket::connect_with_headers(
        &gw.ws_url(None),
        &[("X-Forwarded-For", "203.0.113.9")],
    )
    .await
    {
        Err(confab_tests::harness::ConnectError::Http(c)) => (c, ()),
        other => panic!("the socket was not refused: {:?}", other.is_ok()),
    };
    assert_eq!(code, 403);

    // Told so, it listens on every interface and answers other addresses.
    let (_child, url) = confab_with(&["--addr", "0.0.0.0:0", "--allow-remote-without-auth"])
        .await
        .expect("it starts with the flag");
    let port = url.rsplit(':').next().unwrap();
    let lan = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|u| u.connect("192.0.2.1:9").map(|_| u))
        .and_then(|u| u.local_addr())
        .map(|a| a.ip());
    if let Some(ip) = lan.ok().filter(|ip| !ip.is_loopback()) {
        let r = reqwest::get(format!("http://{ip}:{port}/api/health"))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
}

/// A second gateway on the same data directory refuses to start, and the
/// first one's sockets go on as they were (it does not wipe them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_gateway_on_the_same_data_directory_refuses_to_start() {
    if confab_tests::harness::aws_mode() {
        // Emulated AWS keeps nothing in the data directory.
        return;
    }
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    let sid = id();
    assert_eq!(api.create(&sid, &id(), "hello").await.status, 201);
    let mut s = gw.socket(None).await;
    s.hello().await;
    s.subscribe(&sid, 0).await;
    s.expect("subscribed", |e| {
        matches!(e, ServerEvent::Subscribed { .. })
    })
    .await;
    let data = gw.data.display().to_string();
    let (status, stderr) = confab_with(&["--addr", "127.0.0.1:0", "--data-dir", &data])
        .await
        .expect_err("the second one refuses");
    assert!(!status.success());
    assert!(stderr.contains("another Confab is running"), "{stderr}");
    // The first still knows the socket: a new message reaches it.
    api.wait_session(&sid, |v| v["session"]["status"] == "idle")
        .await;
    assert_eq!(api.send(&sid, &id(), "again").await.status, 202);
    s.expect("the new message", |e| {
        matches!(e, ServerEvent::MessageCreated { message, .. } if message.plain_text() == "again")
    })
    .await;
}

/// The web app is served with the browser's protections: a
/// Content-Security-Policy that allows scripts only from this origin (and
/// the inline loader by its hash) and no framing, `nosniff`, and no
/// referrer. (The browser suite runs the app under this policy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_is_served_with_a_content_security_policy() {
    let gw = Gateway::start_with_web(&[]).await;
    let r = reqwest::get(format!("{}/", gw.base)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h = r.headers().clone();
    let html = r.text().await.unwrap();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let scripts = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .expect("a script-src");
    assert!(scripts.starts_with("script-src 'self' "), "{scripts}");
    assert!(
        scripts.contains("'sha256-"),
        "the loader by its hash: {scripts}"
    );
    assert!(!scripts.contains("unsafe-inline"), "{scripts}");
    assert!(!scripts.contains("http"), "no other origin: {scripts}");
    assert!(html.contains("<script type=\"module\">"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    // The API's answers carry them too.
    let r = reqwest::get(format!("{}/api/health", gw.base))
        .await
        .unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

/// The server, not the client, decides how far an agent may go without
/// asking: a permission mode above `CONFAB_MAX_PERMISSION_MODE` (default
/// `default`) is refused with a clear error on create, send and rename, and
/// `/api/config` says what is allowed, so the app offers only that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_mode_above_the_servers_ceiling_is_refused() {
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    assert_eq!(
        api.get("/api/config").await.body["limits"]["maxPermissionMode"],
        "default"
    );
    let create = |mode: &str| json!({ "id": id(), "permissionMode": mode, "message": { "id": id(), "text": "hi" } });
    for mode in ["acceptEdits", "bypassPermissions"] {
        let r = api.call("POST", "/api/sessions", Some(create(mode))).await;
        assert_eq!(r.status, 400, "{mode}: {}", r.text);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(mode) && message.contains("CONFAB_MAX_PERMISSION_MODE"),
            "{message}"
        );
    }
    assert_eq!(
        api.get("/api/sessions").await.body["sessions"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing was stored"
    );
    for mode in ["plan", "default"] {
        let r = api.call("POST", "/api/sessions", Some(create(mode))).await;
        assert_eq!(r.status, 201, "{mode}: {}", r.text);
    }
    let sid = id();
    api.create(&sid, &id(), "hello").await;
    api.wait_session(&sid, |v| v["session"]["status"] == "idle")
        .await;
    let r = api
        .call(
            "PATCH",
            &format!("/api/sessions/{sid}"),
            Some(json!({ "permissionMode": "bypassPermissions" })),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .call(
            "POST",
            &format!("/api/sessions/{sid}/messages"),
            Some(json!({ "id": id(), "text": "go", "permissionMode": "acceptEdits" })),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(api.session(&sid).await.body["session"]["messageCount"], 2);

    // A server that allows more says so, and takes it.
    let gw = Gateway::start(&[("CONFAB_MAX_PERMISSION_MODE", "acceptEdits")]).await;
    let api = gw.api(None);
    assert_eq!(
        api.get("/api/config").await.body["limits"]["maxPermissionMode"],
        "acceptEdits"
    );
    let r = api
        .call("POST", "/api/sessions", Some(create("acceptEdits")))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = api
        .call("POST", "/api/sessions", Some(create("bypassPermissions")))
        .await;
    assert_eq!(r.status, 400);
}

/// The resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// Clients that never read cannot make the server hold their frames: eight
/// sockets each send 5,000 subscribes to a session with a 32 KiB message
/// (100 bytes in, 32 KiB out each), each after an unsubscribe so that it is
/// a new subscription and not a renewal (which is rate-limited), and read
/// nothing. The server's memory
/// grows by less than 100 MB, every one of them is closed within 30 s, and
/// a normal client streams a reply meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_are_cut_off_and_cannot_exhaust_the_server() {
    if confab_tests::harness::aws_mode() {
        // On AWS, API Gateway holds each connection's queue. In emulated
        // mode the queue is this same registry, but every subscribe goes
        // through moto, which serves one request at a time: the attack
        // cannot produce its 8 × 5,000 answers within the test's 30 s.
        return;
    }
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    let gw = Gateway::start(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let api = gw.api(None);
    let sid = id();
    let text = "x".repeat(32 * 1000);
    assert_eq!(api.create(&sid, &id(), &text).await.status, 201);
    api.wait_session(&sid, |v| v["session"]["status"] == "idle")
        .await;
    let pid = gw.pid();
    let before = rss(pid);
    let started = tokio::time::Instant::now();
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let (ws, _) = tokio_tungstenite::connect_async(gw.ws_url(None))
            .await
            .unwrap();
        let (mut sink, stream) = ws.split();
        let sid = sid.clone();
        attackers.push(tokio::spawn(async move {
            // The reading half is kept and never read.
            let _unread = stream;
            let frame = format!(r#"{{"action":"subscribe","sessionId":"{sid}","afterSeq":0}}"#);
            let leave = format!(r#"{{"action":"unsubscribe","sessionId":"{sid}"}}"#);
            let _ = sink
                .send(WsMessage::Text(r#"{"action":"hello"}"#.into()))
                .await;
            for _ in 0..5000 {
                for f in [&leave, &frame] {
                    if sink.send(WsMessage::Text(f.clone().into())).await.is_err() {
                        return tokio::time::Instant::now();
                    }
                }
            }
            // Then until the server hangs up.
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if sink
                    .send(WsMessage::Text(r#"{"action":"ping"}"#.into()))
                    .await
                    .is_err()
                {
                    return tokio::time::Instant::now();
                }
            }
        }));
    }
    // Meanwhile a normal client streams a reply.
    let mut normal = gw.socket(None).await;
    normal.hello().await;
    normal.subscribe(&sid, 2).await;
    assert_eq!(api.send(&sid, &id(), "/words 2000").await.status, 202);
    let mut peak = before;
    let watch = async {
        loop {
            peak = peak.max(rss(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let reply = normal.expect_within(
        "the reply stored",
        Duration::from_secs(30),
        |e| matches!(e, ServerEvent::MessageCreated { message, .. } if message.seq == 4),
    );
    tokio::select! {
        _ = watch => unreachable!(),
        (e, _) = reply => {
            let ServerEvent::MessageCreated { message, .. } = e else { unreachable!() };
            assert_eq!(message.plain_text().split_whitespace().count(), 2000);
        }
    }
    for a in attackers {
        let closed = tokio::time::timeout(Duration::from_secs(30), a)
            .await
            .expect("an attacker's socket was not closed within 30 s")
            .unwrap();
        assert!(closed.duration_since(started) < Duration::from_secs(30));
    }
    peak = peak.max(rss(pid));
    let grew = peak.saturating_sub(before);
    assert!(
        grew < 100 * 1024 * 1024,
        "the server grew by {} MB",
        grew / (1024 * 1024)
    );
}

/// One owner holds a bounded number of sockets at once
/// (`CONFAB_MAX_SOCKETS_PER_OWNER`): past it the handshake is refused with
/// 429, and closing one frees a place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_holds_a_bounded_number_of_sockets() {
    let gw = Gateway::start(&[("CONFAB_MAX_SOCKETS_PER_OWNER", "3")]).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = gw.socket(None).await;
        s.hello().await;
        open.push(s);
    }
    match Socket::connect(&gw.ws_url(None)).await {
        Err(ConnectError::Http(code)) => assert_eq!(code, 429),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a fourth socket was let in"),
    }
    open.pop().unwrap().close().await;
    let mut again = None;
    for _ in 0..100 {
        if let Ok(s) = Socket::connect(&gw.ws_url(None)).await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    again.expect("a place is free again").hello().await;
}

/// One local gateway runs at most `CONFAB_MAX_TURNS` turns at once: past it
/// a new message is refused with 429 before anything is stored, and once a
/// turn ends there is room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_gateway_runs_a_bounded_number_of_turns_at_once() {
    if confab_tests::harness::aws_mode() {
        // On AWS the worker's reserved concurrency is the bound.
        return;
    }
    let gw = Gateway::start(&[("CONFAB_MAX_TURNS", "2"), ("CONFAB_DEMO_DELAY_MS", "5")]).await;
    let api = gw.api(None);
    let (a, b) = (id(), id());
    assert_eq!(api.create(&a, &id(), "/words 1000").await.status, 201);
    assert_eq!(api.create(&b, &id(), "/words 100").await.status, 201);
    let third = id();
    let r = api.create(&third, &id(), "hello").await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CONFAB_MAX_TURNS")
    );
    assert_eq!(api.session(&third).await.status, 404, "nothing was stored");
    api.wait_session(&b, |v| v["session"]["status"] == "idle")
        .await;
    // The ended turn's runner still sends its last events (and looks for a
    // queued message) once the session shows idle; its place is free when
    // it is done, as "try again in a moment" says.
    let mut status = 0;
    for _ in 0..100 {
        status = api.create(&third, &id(), "hello").await.status;
        if status != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 201);
    api.stop(&a).await;
}

/// A socket whose heartbeat stops is closed (`CONFAB_SOCKET_IDLE_SECS`, as
/// API Gateway closes idle ones); one that keeps pinging stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_whose_heartbeat_stops_is_closed() {
    let gw = Gateway::start(&[("CONFAB_SOCKET_IDLE_SECS", "2")]).await;
    let mut silent = gw.socket(None).await;
    silent.hello().await;
    let mut alive = gw.socket(None).await;
    alive.hello().await;
    let pinging = async {
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            alive.send(&json!({ "action": "ping" })).await;
            alive
                .expect("pong", |e| matches!(e, ServerEvent::Pong))
                .await;
        }
    };
    let (_, (code, reason)) = tokio::join!(pinging, silent.wait_closed());
    assert_eq!(code, 1000);
    assert!(reason.contains("idle"), "{reason}");
    // The one that pinged is still served.
    alive.send(&json!({ "action": "ping" })).await;
    alive
        .expect("pong", |e| matches!(e, ServerEvent::Pong))
        .await;
}

/// Checks a 429 for an owner's limit: its code, its `Retry-After` (at most
/// `max_wait` seconds) and a message naming the setting.
fn assert_limited(r: &confab_tests::harness::Reply, setting: &str, max_wait: u64) {
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "rate_limited");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(setting), "{message}");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=max_wait).contains(&retry), "Retry-After {retry}");
}

/// Sends are limited per owner per minute (`CONFAB_SEND_RATE`), counted in
/// the store: of 100 send+stop pairs, the first ten start turns and every
/// later one gets 429, stores nothing and starts nothing. Another owner is
/// not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_stop_loops_are_refused_past_the_owners_limit() {
    let gw = Gateway::start_jwt(&[("CONFAB_SEND_RATE", "10")]).await;
    let (alice, bob) = (gw.api(Some(&token("alice"))), gw.api(Some(&token("bob"))));
    // The app is told the limits.
    let config = alice.get("/api/config").await;
    assert_eq!(config.body["limits"]["messagesPerMinute"], 10);
    assert_eq!(config.body["limits"]["turnsAtOnce"], 8);
    let sid = id();
    assert_eq!(alice.create(&sid, &id(), "hello").await.status, 201);
    alice
        .wait_session(&sid, |v| v["session"]["status"] == "idle")
        .await;
    confab_tests::harness::within_one_minute(Duration::from_secs(15)).await;
    let (mut started, mut refused) = (0, 0);
    for _ in 0..100 {
        let r = alice.send(&sid, &id(), "/words 200").await;
        if r.status == 202 {
            assert_eq!(refused, 0, "a send after a refusal started a turn");
            started += 1;
        } else {
            assert_limited(&r, "CONFAB_SEND_RATE", 60);
            refused += 1;
        }
        assert!(alice.stop(&sid).await.status < 300);
        alice
            .wait_session(&sid, |v| v["session"]["status"] == "idle")
            .await;
    }
    assert_eq!((started, refused), (10, 90));
    let users = alice
        .all_messages(&sid)
        .await
        .into_iter()
        .filter(|m| m.role == confab_protocol::model::Role::User)
        .count();
    assert_eq!(
        users, 11,
        "the first message and the ten sends, nothing else"
    );
    let other = id();
    assert_eq!(bob.create(&other, &id(), "hello").await.status, 201);
}

/// A daily token budget (`CONFAB_DAILY_TOKENS`): the turn that reaches it
/// finishes, the next is refused until midnight UTC; another owner's budget
/// is their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_token_budget_refuses_turns_once_it_is_spent() {
    let gw = Gateway::start_jwt(&[("CONFAB_DAILY_TOKENS", "100")]).await;
    let (alice, bob) = (gw.api(Some(&token("alice"))), gw.api(Some(&token("bob"))));
    let sid = id();
    assert_eq!(alice.create(&sid, &id(), "/words 150").await.status, 201);
    let done = alice
        .wait_session(&sid, |v| v["session"]["status"] == "idle")
        .await;
    assert_eq!(done["session"]["lastTurn"]["outcome"], "completed");
    let used = done["session"]["usage"]["outputTokens"].as_u64().unwrap();
    assert!(
        used >= 150,
        "the turn that spent the budget finished: {used}"
    );
    let r = alice.send(&sid, &id(), "more").await;
    assert_limited(&r, "CONFAB_DAILY_TOKENS", 86_400);
    let r = alice.create(&id(), &id(), "a new session").await;
    assert_limited(&r, "CONFAB_DAILY_TOKENS", 86_400);
    assert_eq!(bob.create(&id(), &id(), "hello").await.status, 201);
}

/// The limits are counted in the store, so they hold across processes: one
/// owner using two gateways that share one set of tables (DynamoDB on moto,
/// as two Lambda instances do) gets no more than through one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owners_limits_hold_across_two_gateways_sharing_a_store() {
    if !confab_tests::harness::aws_mode() {
        // Two local gateways cannot share a data directory (a lock); the
        // SQLite store is one process's.
        return;
    }
    let env = [
        ("CONFAB_AUTH", "jwt"),
        ("CONFAB_JWT_SECRET", confab_tests::harness::SECRET),
        ("CONFAB_SEND_RATE", "6"),
        ("CONFAB_MAX_TURNS_PER_OWNER", "2"),
        ("CONFAB_DEMO_DELAY_MS", "20"),
    ];
    let gw_a = Gateway::start(&env).await;
    let gw_b = gw_a.sharing_tables(&env).await;
    let (a, b) = (
        gw_a.api(Some(&token("erin"))),
        gw_b.api(Some(&token("erin"))),
    );
    // Turns at once: two running, one through each gateway; a third is
    // refused through either, and nothing of it is stored.
    let (s1, s2, s3) = (id(), id(), id());
    assert_eq!(a.create(&s1, &id(), "/words 3000").await.status, 201);
    assert_eq!(b.create(&s2, &id(), "/words 3000").await.status, 201);
    assert_limited(
        &a.create(&s3, &id(), "hello").await,
        "CONFAB_MAX_TURNS_PER_OWNER",
        60,
    );
    assert_eq!(b.session(&s3).await.status, 404);
    // A turn stopped through one gateway frees its place for the other.
    assert!(b.stop(&s1).await.status < 300);
    a.wait_session(&s1, |v| v["session"]["status"] == "idle")
        .await;
    assert_eq!(b.create(&s3, &id(), "/words 3000").await.status, 201);
    assert!(a.stop(&s2).await.status < 300);
    assert!(a.stop(&s3).await.status < 300);
    for s in [&s2, &s3] {
        b.wait_session(s, |v| v["session"]["status"] == "idle")
            .await;
    }
    // Sends: six a minute, through both gateways together.
    confab_tests::harness::within_one_minute(Duration::from_secs(15)).await;
    let mut started = 0;
    for i in 0..12 {
        let api = if i % 2 == 0 { &a } else { &b };
        let r = api.send(&s1, &id(), "/words 100").await;
        if r.status == 202 {
            started += 1;
        } else {
            assert_limited(&r, "CONFAB_SEND_RATE", 60);
        }
        assert!(api.stop(&s1).await.status < 300);
        api.wait_session(&s1, |v| v["session"]["status"] == "idle")
            .await;
    }
    assert_eq!(started, 6);
}

/// A socket ends with its token: at the token's expiry it gets an `error`
/// frame naming it (`token_expired`) and is closed, however quiet it is;
/// an expired token gets no ticket, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_closed_when_its_token_expires() {
    let gw = Gateway::start_jwt(&[]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Checked with 30 s of leeway for clocks: this one has 4 s left.
    let short = confab_tests::harness::token_expiring("alice", now - 26);
    let mut s = gw.socket(Some(&short)).await;
    s.hello().await;
    let mut long = gw.socket(Some(&token("alice"))).await;
    long.hello().await;
    let (expired, _) = s
        .expect_within("token_expired", Duration::from_secs(15), |e| {
            matches!(
                e,
                ServerEvent::Error {
                    code: confab_protocol::rest::ErrorCode::TokenExpired,
                    ..
                }
            )
        })
        .await;
    let ServerEvent::Error { message, .. } = expired else {
        unreachable!()
    };
    assert!(message.contains("expired"), "{message}");
    let (code, _) = s.wait_closed().await;
    // 1008 from the local gateway; API Gateway's DeleteConnection gives no
    // status.
    assert!(code == 1008 || code == 1005, "closed with {code}");
    // The socket of a valid token is still served.
    long.send(&json!({ "action": "ping" })).await;
    long.expect("pong", |e| matches!(e, ServerEvent::Pong))
        .await;
    // An expired token gets no ticket, with a code that says why.
    let gone = confab_tests::harness::token_expiring("alice", now - 60);
    let r = gw
        .api(Some(&gone))
        .call("POST", "/api/socket-ticket", None)
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "token_expired");
}

/// Renewing a held subscription in a loop is answered with a short refusal,
/// not a page of messages each time: a connection renews a session at most
/// every `RESUBSCRIBE_EVERY_MS`; the first subscribe and a renewal after the
/// wait are answered in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribe_loop_gets_refusals_not_pages() {
    use confab_protocol::socket::RESUBSCRIBE_EVERY_MS;
    let gw = Gateway::start(&[]).await;
    let api = gw.api(None);
    let sid = id();
    let big = "x".repeat(32 * 1024 - 16);
    assert_eq!(api.create(&sid, &id(), &big).await.status, 201);
    api.wait_session(&sid, |v| v["session"]["status"] == "idle")
        .await;
    let mut s = gw.socket(None).await;
    s.hello().await;
    s.subscribe(&sid, 0).await;
    s.expect("subscribed", |e| {
        matches!(e, ServerEvent::Subscribed { .. })
    })
    .await;
    let started = std::time::Instant::now();
    for _ in 0..200 {
        s.send(&json!({ "action": "subscribe", "sessionId": sid, "afterSeq": 0 }))
            .await;
    }
    let (mut pages, mut refused) = (0, 0);
    while pages + refused < 200 {
        match s.next(Duration::from_secs(10)).await {
            Some(ServerEvent::Subscribed { .. }) => pages += 1,
            Some(ServerEvent::Error {
                code: confab_protocol::rest::ErrorCode::RateLimited,
                session_id,
                ..
            }) => {
                assert_eq!(session_id.as_deref(), Some(sid.as_str()));
                refused += 1;
            }
            Some(_) => {}
            None => panic!("answers stopped after {pages} pages and {refused} refusals"),
        }
    }
    let elapsed = started.elapsed().as_millis() as u64;
    let allowed = 1 + elapsed / RESUBSCRIBE_EVERY_MS;
    assert!(
        pages <= allowed,
        "{pages} pages in {elapsed} ms; at most {allowed} renewals fit"
    );
    assert!(refused >= 200 - allowed, "{refused} refused");
    // After the wait, a renewal is answered in full.
    tokio::time::sleep(Duration::from_millis(RESUBSCRIBE_EVERY_MS + 100)).await;
    s.subscribe(&sid, 0).await;
    let (page, _) = s
        .expect_within("a page", Duration::from_secs(10), |e| {
            matches!(e, ServerEvent::Subscribed { .. })
        })
        .await;
    let ServerEvent::Subscribed { messages, .. } = page else {
        unreachable!()
    };
    assert_eq!(messages[0].plain_text(), big);
}

/// The local server gives a request's headers a deadline and holds a
/// bounded number of connections: clients that open connections and trickle
/// nothing (slowloris) are cut off, a connection past the cap is closed at
/// once, and once they are gone a normal request is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if confab_tests::harness::aws_mode() {
        // On AWS, API Gateway holds the connections.
        return;
    }
    let gw = Gateway::start(&[
        ("CONFAB_HEADER_TIMEOUT_SECS", "2"),
        ("CONFAB_MAX_CONNECTIONS", "8"),
    ])
    .await;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            .await
            .unwrap();
        stalled.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Past the cap: closed at once, unanswered.
    let mut ninth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = ninth
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), ninth.read(&mut buf))
        .await
        .expect("the ninth connection was closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "the ninth connection was served");
    // The stalled ones are cut off at their headers' deadline.
    let started = std::time::Instant::now();
    for c in &mut stalled {
        let r = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("a client trickling its headers was cut off");
        // Closed, perhaps after a 408.
        if let Ok(n) = r
            && n > 0
        {
            assert!(String::from_utf8_lossy(&buf[..n]).contains("408"));
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.api(None).get("/api/health").await.status, 200);
}
