//! The AWS adapters against real endpoints: `ApiGatewayPush` against the
//! local gateway's `@connections` (moto's never answers 410), and the socket
//! functions fed the API Gateway events that ship in `aws_lambda_events`,
//! over `DynamoStore` on moto.

use bytes::Bytes;
use confab_functions::api::auth::Auth;
use confab_functions::aws::lambda::ApiGatewayWebsocketProxyRequest as ApiGatewayEvent;
use confab_functions::aws::lambda::SocketApp;
use confab_functions::aws::{ApiGatewayPush, AwsStats};
use confab_functions::domain::notify::to_connections;
use confab_functions::domain::records::SubscribeOutcome;
use confab_functions::ports::{ConnectionStore, Push, PushError, SessionStore, Store, TurnStore};
use confab_protocol::ServerEvent;
use confab_protocol::client::{CurrentSession, Phase};
use confab_protocol::rest::ErrorCode;
use confab_tests::fake_provider::{FakeProvider, Reply};
use confab_tests::harness::{Gateway, SECRET, Viewer, id, token};
use confab_tests::moto;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

async fn push_to(gw: &Gateway) -> (ApiGatewayPush, Arc<AwsStats>) {
    let stats = Arc::new(AwsStats::default());
    let sdk = moto::settings(moto::fresh_tables()).sdk_config();
    (
        ApiGatewayPush::new(&sdk, &gw.management_endpoint(), stats.clone()),
        stats,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_delivers_refuses_oversize_and_410_forgets_the_connection() {
    let gw = Gateway::start(&[]).await;
    let mut s = gw.socket(None).await;
    s.hello().await;
    let conn = s.connection_id.clone().expect("connection id");
    let (push, stats) = push_to(&gw).await;

    push.post(&conn, Bytes::from_static(br#"{"type":"pong"}"#))
        .await
        .expect("delivered");
    s.expect("the pushed frame", |e| matches!(e, ServerEvent::Pong))
        .await;

    // Over API Gateway's 128 KiB: refused here, nothing sent.
    let big = format!(r#"{{"type":"pong","pad":"{}"}}"#, "x".repeat(129 * 1024));
    let before = stats.snapshot().count("apigw:");
    assert!(matches!(
        push.post(&conn, Bytes::from(big)).await,
        Err(PushError::Failed(_))
    ));
    assert_eq!(stats.snapshot().count("apigw:"), before);
    assert!(s.drain(Duration::from_millis(300)).await.is_empty());

    // A connection that is gone: 410, and the domain forgets it and its
    // subscriptions, while the live one still gets the frame.
    let (store, _) = moto::dynamo_store().await;
    let sid = confab_tests::conformance::idle_session(&store, "alice", 1).await;
    for c in ["gone-connection", conn.as_str()] {
        store
            .put_connection(c, &confab_tests::conformance::who("alice"), 1)
            .await
            .unwrap();
        assert_eq!(
            store
                .subscribe(
                    c,
                    &confab_tests::conformance::target(&store, &sid).await,
                    "tok",
                    20,
                    confab_functions::clock::now_ms()
                )
                .await
                .unwrap(),
            SubscribeOutcome::Subscribed
        );
    }
    assert!(matches!(
        push.post("gone-connection", Bytes::from_static(b"{}"))
            .await,
        Err(PushError::Gone)
    ));
    to_connections(
        &store,
        &push,
        &["gone-connection".to_string(), conn.to_string()],
        &[Bytes::from_static(br#"{"type":"pong"}"#)],
    )
    .await;
    s.expect("the frame to the live connection", |e| {
        matches!(e, ServerEvent::Pong)
    })
    .await;
    assert_eq!(store.connection("gone-connection").await.unwrap(), None);
    let subs = store.subscribers(&sid).await.unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].connection_id, conn);
}

/// A long reply in emulated-AWS mode: the frames that reach the socket
/// through the management API are at most 32 KiB, and together they make
/// exactly the stored reply.
/// A management API that answers each `PostToConnection` with the next of
/// `answers` (then 200), in API Gateway's restJson1 error format, and counts
/// the requests.
async fn scripted_management_api(
    answers: Vec<(u16, &'static str)>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answers = Arc::new(std::sync::Mutex::new(
        answers
            .into_iter()
            .collect::<std::collections::VecDeque<_>>(),
    ));
    let (h, a) = (hits.clone(), answers.clone());
    let app = axum::Router::new().route(
        "/@connections/{id}",
        axum::routing::post(move || {
            let (h, a) = (h.clone(), a.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                match a.lock().unwrap().pop_front() {
                    None => StatusCode::OK.into_response(),
                    Some((status, kind)) => (
                        StatusCode::from_u16(status).unwrap(),
                        [
                            ("x-amzn-errortype", kind),
                            ("content-type", "application/json"),
                        ],
                        format!(r#"{{"message":"{kind}"}}"#),
                    )
                        .into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_retries_throttling_and_server_errors_a_bounded_number_of_times() {
    let sdk = moto::settings(moto::fresh_tables()).sdk_config();
    let frame = || Bytes::from_static(br#"{"type":"pong"}"#);
    let push = |base: &str| ApiGatewayPush::new(&sdk, base, Arc::new(AwsStats::default()));

    // Throttled, then a 5xx, then delivered: the frame arrives.
    let (base, hits) = scripted_management_api(vec![
        (429, "LimitExceededException"),
        (500, "InternalServerErrorException"),
    ])
    .await;
    push(&base)
        .post("c1", frame())
        .await
        .expect("delivered on the third attempt");
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // Throttled every time: three attempts, then a failure (not Gone).
    let (base, hits) = scripted_management_api(vec![(429, "LimitExceededException"); 10]).await;
    assert!(matches!(
        push(&base).post("c1", frame()).await,
        Err(PushError::Failed(_))
    ));
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    // Gone is final at once; so is a refusal.
    let (base, hits) = scripted_management_api(vec![(410, "GoneException")]).await;
    assert!(matches!(
        push(&base).post("c1", frame()).await,
        Err(PushError::Gone)
    ));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    let (base, hits) = scripted_management_api(vec![(403, "ForbiddenException")]).await;
    assert!(matches!(
        push(&base).post("c1", frame()).await,
        Err(PushError::Failed(_))
    ));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reply_arrives_split_into_small_frames_through_the_management_api() {
    let gw = Gateway::start_aws(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let api = gw.api(None);
    let sid = id();
    let mut v = Viewer::connect(&gw, None, CurrentSession::new_loading(sid.parse().unwrap())).await;
    assert_eq!(api.create(&sid, &id(), "/words 12000").await.status, 201);
    v.subscribe().await;
    v.until("the reply is stored", |v| {
        v.current.phase() == Phase::Idle && v.assistant_count() == 1
    })
    .await;
    let stored = api.all_messages(&sid).await;
    let text = stored[1].plain_text();
    assert!(text.len() > 64 * 1024, "the reply is long: {}", text.len());
    // Every frame is at most 32 KiB, the `message.created` that carries the
    // whole stored reply too: it comes in parts.
    assert_eq!(v.socket.oversize_frames.load(Ordering::Relaxed), 0);
    assert!(v.socket.frames.load(Ordering::Relaxed) > 4);
    assert_eq!(
        v.current.stored().cloned().collect::<Vec<_>>(),
        stored,
        "the client holds exactly the server's messages"
    );
}

/// A reply of any length ends cleanly on DynamoDB: `/words 200000`, a word
/// a millisecond (so the in-flight reply is checkpointed many times as it
/// grows past an item's 400 KB), is stored whole, reads back whole, and
/// reaches a subscriber byte for byte in frames none over 32 KiB, through
/// the management API (whose limit is 128 KiB a message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_of_200000_words_is_stored_read_back_and_delivered_whole() {
    let gw = Gateway::start_aws(&[("CONFAB_DEMO_DELAY_MS", "1")]).await;
    let api = gw.api(None);
    let sid = id();
    let mut v = Viewer::connect(&gw, None, CurrentSession::new_loading(sid.parse().unwrap())).await;
    assert_eq!(api.create(&sid, &id(), "/words 200000").await.status, 201);
    v.subscribe().await;
    // Meanwhile the in-flight reply, as a reload reads it, is past an
    // item's size.
    let mut checked_live = false;
    while !checked_live {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let detail = api.session(&sid).await.body;
        let live = serde_json::to_string(&detail["live"]).unwrap();
        checked_live = live.len() > 500_000;
        assert_eq!(detail["session"]["status"], "running", "still running");
    }
    v.until_within("the reply is stored", Duration::from_secs(600), |v| {
        v.current.phase() == Phase::Idle && v.assistant_count() == 1
    })
    .await;
    let stored = api.all_messages(&sid).await;
    assert_eq!(stored.len(), 2);
    let reply = &stored[1];
    assert_eq!(
        reply.status,
        confab_protocol::model::MessageStatus::Complete
    );
    let text = reply.plain_text();
    assert_eq!(text.split_whitespace().count(), 200_000);
    assert!(text.len() > 1_000_000, "{}", text.len());
    assert!(text.ends_with('.'));
    assert_eq!(
        v.current.stored().cloned().collect::<Vec<_>>(),
        stored,
        "the subscriber holds exactly the stored reply"
    );
    assert_eq!(v.socket.oversize_frames.load(Ordering::Relaxed), 0);
    // Read back by id and by page, the same.
    let page = api
        .get(&format!("/api/sessions/{sid}/messages?afterSeq=1&limit=1"))
        .await
        .body;
    let back: confab_protocol::Message =
        serde_json::from_value(page["messages"][0].clone()).unwrap();
    assert_eq!(&back, reply);
}

fn fixture(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/aws")
        .join(name);
    serde_json::from_slice(&std::fs::read(&p).expect("fixture")).expect("fixture JSON")
}

/// A session of alice's with `text` as its first message, stored with its
/// running turn, and the job that runs the turn.
async fn stored_turn(
    store: &dyn Store,
    text: &str,
) -> (
    confab_functions::domain::records::NewSession,
    confab_functions::ports::TurnJob,
) {
    let n = confab_tests::conformance::new_session(
        "alice",
        "p",
        "t",
        text,
        confab_functions::clock::now_ms(),
    );
    store.create_session(&n).await.unwrap();
    let job = confab_functions::ports::TurnJob {
        owner: "alice".into(),
        session_id: n.summary.id.clone(),
        turn_id: n.turn.turn_id.clone(),
    };
    (n, job)
}

/// The shipped `$connect` event, for connection `conn` with `token`.
/// A `$connect` event with this query parameter (`token` or `ticket`).
fn connect_event(conn: &str, param: Option<(&str, &str)>) -> Value {
    let mut ev = fixture("example-apigw-websocket-request.json");
    ev["requestContext"]["connectionId"] = conn.into();
    ev["queryStringParameters"] = match param {
        Some((k, v)) => serde_json::json!({ k: v }),
        None => serde_json::json!({}),
    };
    ev["multiValueQueryStringParameters"] = match param {
        Some((k, v)) => serde_json::json!({ k: [v] }),
        None => serde_json::json!({}),
    };
    ev
}

fn route_event(conn: &str, body: &str) -> Value {
    let mut ev = fixture("example-apigw-websocket-request.json");
    ev["requestContext"]["connectionId"] = conn.into();
    ev["requestContext"]["routeKey"] = "$default".into();
    ev["requestContext"]["eventType"] = "MESSAGE".into();
    ev["body"] = body.into();
    ev
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("the fixture is a valid event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_functions_handle_the_shipped_api_gateway_events() {
    // The answers of `$default` go out through the management API of a real
    // gateway, to a real socket whose connection id the events carry.
    let gw = Gateway::start(&[]).await;
    let mut s = gw.socket(None).await;
    s.hello().await;
    let conn = s.connection_id.clone().expect("connection id");
    let (store, stats) = moto::dynamo_store().await;
    let store: Arc<dyn Store> = Arc::new(store);
    let sdk = moto::settings(moto::fresh_tables()).sdk_config();
    let app = SocketApp::new(
        store.clone(),
        Arc::new(Auth::hs256(SECRET.as_bytes())),
        sdk,
        stats,
        Some(gw.management_endpoint()),
    );

    // $connect without a token, or with a bad one: 401, nothing stored.
    let r = app.connect(parse(connect_event(&conn, None))).await;
    assert_eq!(r.status_code, 401);
    let r = app
        .connect(parse(connect_event(
            &conn,
            Some(("ticket", "not-a-ticket")),
        )))
        .await;
    assert_eq!(r.status_code, 401);
    assert_eq!(store.connection(&conn).await.unwrap(), None);
    // A valid token in the URL is refused: sockets open with tickets.
    let r = app
        .connect(parse(connect_event(
            &conn,
            Some(("token", &token("alice"))),
        )))
        .await;
    assert_eq!(r.status_code, 401);
    assert_eq!(store.connection(&conn).await.unwrap(), None);
    // With a ticket: 200, and the connection belongs to its subject until
    // the token's expiry; the ticket is used up.
    let alice = Auth::hs256(SECRET.as_bytes())
        .principal(Some(&token("alice")))
        .await
        .unwrap();
    let ticket = confab_functions::api::socket::ticket(&*store, &alice)
        .await
        .unwrap()
        .ticket;
    let r = app
        .connect(parse(connect_event(&conn, Some(("ticket", &ticket)))))
        .await;
    assert_eq!(r.status_code, 200);
    assert_eq!(store.connection(&conn).await.unwrap(), Some(alice));
    let r = app
        .connect(parse(connect_event(
            "another-conn",
            Some(("ticket", &ticket)),
        )))
        .await;
    assert_eq!(r.status_code, 401, "a ticket opens one socket");

    // $default with a good frame: the answer reaches the socket.
    let r = app
        .route(parse(route_event(&conn, r#"{"action":"ping"}"#)))
        .await;
    assert_eq!(r.status_code, 200);
    s.expect("pong", |e| matches!(e, ServerEvent::Pong)).await;
    // The fixture's own body has no action: an error frame, nothing else.
    let shipped: ApiGatewayEvent = parse(route_event(&conn, "{\r\n\t\"a\": 1\r\n}"));
    let r = app.route(shipped).await;
    assert_eq!(r.status_code, 200);
    let (e, _) = s
        .expect("an error frame", |e| matches!(e, ServerEvent::Error { .. }))
        .await;
    assert!(matches!(
        e,
        ServerEvent::Error {
            code: ErrorCode::InvalidRequest,
            ..
        }
    ));
    // Malformed JSON and another user's session: clear errors.
    let r = app.route(parse(route_event(&conn, "{nope"))).await;
    assert_eq!(r.status_code, 200);
    s.expect("an error frame", |e| matches!(e, ServerEvent::Error { .. }))
        .await;
    let bobs = confab_tests::conformance::idle_session(&*store, "bob", 1).await;
    let frame = serde_json::json!({"action": "subscribe", "sessionId": bobs, "afterSeq": 0});
    app.route(parse(route_event(&conn, &frame.to_string())))
        .await;
    let (e, _) = s
        .expect("not found", |e| matches!(e, ServerEvent::Error { .. }))
        .await;
    assert!(matches!(
        e,
        ServerEvent::Error {
            code: ErrorCode::NotFound,
            ..
        }
    ));
    assert!(store.subscribers(&bobs).await.unwrap().is_empty());

    // $disconnect (its own shipped event): the connection is forgotten.
    let mine = confab_tests::conformance::idle_session(&*store, "alice", 2).await;
    assert_eq!(
        store
            .subscribe(
                &conn,
                &confab_tests::conformance::target(&*store, &mine).await,
                "t",
                20,
                confab_functions::clock::now_ms()
            )
            .await
            .unwrap(),
        SubscribeOutcome::Subscribed
    );
    let mut ev = fixture("example-apigw-websocket-request-disconnect-route.json");
    ev["requestContext"]["connectionId"] = conn.as_str().into();
    let r = app.disconnect(parse(ev)).await;
    assert_eq!(r.status_code, 200);
    assert_eq!(store.connection(&conn).await.unwrap(), None);
    assert!(store.subscribers(&mine).await.unwrap().is_empty());

    // An event without a connection id is refused.
    let ev = fixture("example-apigw-websocket-request-without-method.json");
    let mut ev = ev;
    ev["requestContext"]["connectionId"] = Value::Null;
    assert_eq!(app.disconnect(parse(ev)).await.status_code, 400);
    assert!(s.drain(WAIT / 20).await.is_empty());
}

/// The worker's scheduled sweep, fed EventBridge's schedule event as it
/// ships in `aws_lambda_events`: a turn whose worker died (no sign of life
/// for 45 s) is closed as interrupted with its checkpointed reply; a live
/// one is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_sweep_closes_turns_whose_worker_died() {
    use confab_functions::aws::worker::{Worker, WorkerEvent};
    use confab_functions::domain::runner::RunnerConfig;
    use confab_protocol::model::{Block, LiveReply, Role, TurnOutcome};

    let gw = Gateway::start(&[]).await;
    let (push, _) = push_to(&gw).await;
    let (store, _) = moto::dynamo_store().await;
    let now = confab_functions::clock::now_ms();
    let mut dead = confab_tests::conformance::new_session("alice", "p", "dead", "hi", now);
    dead.turn.heartbeat_ms = now - 60_000;
    let mut alive = confab_tests::conformance::new_session("alice", "p", "alive", "hi", now);
    alive.turn.heartbeat_ms = now - 1_000;
    for s in [&dead, &alive] {
        store.create_session(s).await.unwrap();
    }
    // The dead worker had claimed its turn.
    assert!(
        store
            .claim_turn(&dead.summary.id, &dead.turn.turn_id, now - 61_000)
            .await
            .unwrap()
    );
    let live = LiveReply {
        message_id: dead.turn.reply_id.clone(),
        turn_id: dead.turn.turn_id.clone(),
        content: vec![Block::text("half a reply")],
    };
    // The last checkpoint of the dead worker, a minute ago.
    assert!(
        store
            .checkpoint(&dead.summary.id, &dead.turn.turn_id, &live, now - 60_000)
            .await
            .unwrap()
    );

    let event: WorkerEvent = serde_json::from_value(fixture("example-eventbridge-schedule.json"))
        .expect("the schedule event");
    let agent = confab_functions::agents::demo::DemoAgent::new(Duration::ZERO);
    Worker {
        store: &store,
        push: &push,
        agent: &agent,
        runner: &RunnerConfig::default(),
        next: None,
    }
    .handle(event, Some(Duration::from_secs(60)))
    .await
    .expect("sweep");

    let rec = store.get_session(&dead.summary.id).await.unwrap().unwrap();
    assert!(rec.turn.is_none());
    let last = rec.summary.last_turn.expect("last turn");
    assert_eq!(last.outcome, TurnOutcome::Interrupted);
    let (msgs, _) = store
        .messages(
            &dead.summary.id,
            confab_functions::domain::records::MessageRange::Latest { limit: 10 },
        )
        .await
        .unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].role, Role::Assistant);
    assert_eq!(msgs[1].plain_text(), "half a reply");
    let rec = store.get_session(&alive.summary.id).await.unwrap().unwrap();
    assert!(rec.turn.is_some(), "a live turn is left running");
}

/// On AWS a request to the person is denied, with a message the agent
/// sees, before the worker's invocation runs out, rather than the turn
/// being cut off with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_denied_before_the_workers_time_runs_out() {
    use confab_functions::aws::worker::{DEADLINE_MARGIN, Worker, WorkerEvent};
    use confab_functions::domain::runner::RunnerConfig;
    use confab_protocol::model::TurnOutcome;

    let gw = Gateway::start(&[]).await;
    let (push, _) = push_to(&gw).await;
    let (store, _) = moto::dynamo_store().await;
    let (n, job) = stored_turn(&store, "/approve").await;
    let agent = confab_functions::agents::demo::DemoAgent::new(Duration::ZERO);
    Worker {
        store: &store,
        push: &push,
        agent: &agent,
        runner: &RunnerConfig::default(),
        next: None,
    }
    .handle(
        WorkerEvent::Turn(job),
        Some(DEADLINE_MARGIN * 2 + Duration::from_secs(2)),
    )
    .await
    .expect("turn");
    let rec = store.get_session(&n.summary.id).await.unwrap().unwrap();
    assert_eq!(
        rec.summary.last_turn.expect("last turn").outcome,
        TurnOutcome::Completed,
        "the turn carried on without the answer"
    );
    let (msgs, _) = store
        .messages(
            &n.summary.id,
            confab_functions::domain::records::MessageRange::Latest { limit: 10 },
        )
        .await
        .unwrap();
    assert!(
        msgs[1].plain_text().contains("Nobody answered in time"),
        "{}",
        msgs[1].plain_text()
    );
}

/// On AWS a turn that asks the person holds no compute: the worker stores
/// where it is and ends; the answer (or the sweep, once the request has
/// expired) sends the turn to a worker that resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_turn_ends_its_invocation_and_is_resumed_by_the_answer_or_the_sweep() {
    use confab_functions::aws::worker::{Worker, WorkerEvent};
    use confab_functions::domain::runner::RunnerConfig;
    use confab_protocol::model::{Decision, MessageStatus, Resolution};

    let gw = Gateway::start(&[]).await;
    let (push, _) = push_to(&gw).await;
    let (store, _) = moto::dynamo_store().await;
    let agent = confab_functions::agents::demo::DemoAgent::new(Duration::ZERO);
    let invocations = Invocations::default();
    let runner = RunnerConfig {
        request_timeout: Duration::from_secs(1),
        ..RunnerConfig::serverless()
    };
    let worker = Worker {
        store: &store,
        push: &push,
        agent: &agent,
        runner: &runner,
        next: Some(&invocations),
    };
    let reply_of = |msgs: &[confab_protocol::Message]| msgs[1].plain_text();

    // Answered: the worker returns while the turn waits (a minute's
    // invocation, but a request that would wait for a second only shows
    // the worker did not wait for it); the answer's worker resumes it.
    let (n, job) = stored_turn(&store, "/approve").await;
    let t0 = std::time::Instant::now();
    worker
        .handle(
            WorkerEvent::Turn(job.clone()),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("turn");
    let rec = store.get_session(&n.summary.id).await.unwrap().unwrap();
    let turn = rec.turn.clone().expect("still running");
    assert!(turn.is_parked(), "{turn:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "the worker did not wait"
    );
    let live = turn.live.clone().expect("the reply so far is kept");
    assert!(
        live.content[0]
            .as_text()
            .unwrap()
            .contains("I would like to run demo_tool")
    );
    let request = turn.pending().next().expect("pending").clone();
    // A resume before the answer (a stray delivery) parks it again.
    worker
        .handle(
            WorkerEvent::Turn(job.clone()),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("early");
    let rec = store.get_session(&n.summary.id).await.unwrap().unwrap();
    assert!(rec.turn.expect("still waiting").is_parked());
    let allow = Resolution {
        decision: Decision::Allow,
        message: None,
        answers: Default::default(),
        resolved_at: confab_protocol::Timestamp::from_millis(confab_functions::clock::now_ms()),
    };
    store
        .answer_request("alice", &n.summary.id, request.id.as_str(), &allow)
        .await
        .unwrap();
    // The answer's worker resumes it, and the turn ends.
    worker
        .handle(
            WorkerEvent::Turn(job.clone()),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("resumed");
    let rec = store.get_session(&n.summary.id).await.unwrap().unwrap();
    assert!(rec.turn.is_none());
    let (msgs, _) = store
        .messages(
            &n.summary.id,
            confab_functions::domain::records::MessageRange::Latest { limit: 10 },
        )
        .await
        .unwrap();
    assert_eq!(msgs[1].status, MessageStatus::Complete);
    let text = reply_of(&msgs);
    assert!(
        text.starts_with("I would like to run demo_tool") && text.contains("You allowed demo_tool"),
        "one reply, from before the question to after the answer: {text}"
    );

    // Unanswered: the sweep finds the request expired and sends the turn
    // on; the resumed agent hears it was denied.
    let (n, job) = stored_turn(&store, "/approve").await;
    worker
        .handle(
            WorkerEvent::Turn(job.clone()),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("turn");
    let sweep: WorkerEvent = serde_json::from_value(fixture("example-eventbridge-schedule.json"))
        .expect("the schedule event");
    worker.handle(sweep.clone(), None).await.expect("sweep");
    assert!(
        invocations.0.lock().unwrap().is_empty(),
        "not expired yet: nothing to resume"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    worker.handle(sweep, None).await.expect("sweep");
    let handed = invocations.0.lock().unwrap().clone();
    assert_eq!(handed, [job]);
    worker
        .handle(
            WorkerEvent::Turn(handed[0].clone()),
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("resumed");
    let (msgs, _) = store
        .messages(
            &n.summary.id,
            confab_functions::domain::records::MessageRange::Latest { limit: 10 },
        )
        .await
        .unwrap();
    let text = reply_of(&msgs);
    assert!(
        text.contains("denied") && text.contains("Nobody answered in time"),
        "{text}"
    );
}

/// Lambda's `Invoke` as the worker sees it: the jobs handed to it.
#[derive(Default)]
struct Invocations(std::sync::Mutex<Vec<confab_functions::ports::TurnJob>>);

#[async_trait::async_trait]
impl confab_functions::ports::Dispatch for Invocations {
    async fn dispatch(
        &self,
        job: confab_functions::ports::TurnJob,
    ) -> Result<(), confab_functions::ports::DispatchError> {
        self.0.lock().unwrap().push(job);
        Ok(())
    }
}

/// On AWS the turn of a message queued behind the worker's turn starts
/// when that turn ends and goes to an invocation of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_queued_turn_goes_to_an_invocation_of_its_own() {
    use confab_functions::aws::worker::{Worker, WorkerEvent};
    use confab_functions::domain::records::{QueueChange, QueueOutcome};
    use confab_functions::domain::runner::RunnerConfig;

    let gw = Gateway::start(&[]).await;
    let (push, _) = push_to(&gw).await;
    let (store, _) = moto::dynamo_store().await;
    let (n, job) = stored_turn(&store, "/words 3").await;
    let queued = confab_protocol::model::QueuedMessage {
        id: id().parse().unwrap(),
        text: "and then this".parse().unwrap(),
        created_at: confab_protocol::Timestamp::from_millis(confab_functions::clock::now_ms()),
        permission_mode: None,
    };
    let add = QueueChange::Add(queued.clone());
    assert!(matches!(
        store
            .change_queue("alice", &n.summary.id, &add)
            .await
            .unwrap(),
        QueueOutcome::Changed(_)
    ));
    let agent = confab_functions::agents::demo::DemoAgent::new(Duration::ZERO);
    let invocations = Invocations::default();
    Worker {
        store: &store,
        push: &push,
        agent: &agent,
        runner: &RunnerConfig::default(),
        next: Some(&invocations),
    }
    .handle(WorkerEvent::Turn(job), Some(Duration::from_secs(60)))
    .await
    .expect("turn");
    let rec = store.get_session(&n.summary.id).await.unwrap().unwrap();
    let next = rec.turn.expect("the queued message's turn is stored");
    assert!(!next.claimed, "this invocation left it to the next");
    assert!(rec.queue.items.is_empty());
    let handed = invocations.0.lock().unwrap().clone();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].turn_id, next.turn_id);
    let (msgs, _) = store
        .messages(
            &n.summary.id,
            confab_functions::domain::records::MessageRange::Latest { limit: 10 },
        )
        .await
        .unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!((msgs[2].id.clone(), msgs[2].seq), (queued.id, 3));
}

/// An OpenAI-format reply stream of `n` words, `delay` apart.
fn openai_words(n: usize, delay: Duration) -> Reply {
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            serde_json::json!({
                "id": "chatcmpl-once", "object": "chat.completion.chunk", "created": 1763715600,
                "model": "gpt-test",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                "usage": null
            })
        )
    };
    let mut events = vec![chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for i in 0..n {
        events.push(chunk(
            serde_json::json!({ "content": format!(" w{i}") }),
            Value::Null,
        ));
    }
    events.push(chunk(serde_json::json!({}), "stop".into()));
    events.push("data: [DONE]\n\n".into());
    Reply::Stream {
        events,
        delay,
        hold: false,
    }
}

/// Lambda delivers an asynchronous event at least once, and the SDK may
/// send an `Invoke` twice: the worker invoked again for a running turn
/// (here twice more, through the emulated `Invoke`) walks away before it
/// calls the agent. The provider is called once, and the checkpointed
/// reply a reload reads only ever grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_invoked_again_runs_once_and_its_reply_never_goes_back() {
    let fake = FakeProvider::start().await;
    fake.then(openai_words(60, Duration::from_millis(50)))
        .then(openai_words(60, Duration::from_millis(50)))
        .then(openai_words(60, Duration::from_millis(50)));
    let base = format!("{}/v1", fake.base);
    let gw = Gateway::start_aws(&[
        ("CONFAB_AGENT", "openai"),
        ("CONFAB_AGENT_BASE_URL", &base),
        ("OPENAI_API_KEY", "sk-once-0123456789"),
        ("CONFAB_AGENT_MODEL", "gpt-test"),
    ])
    .await;
    let api = gw.api(None);
    let sid = id();
    let created = api.create(&sid, &id(), "count").await;
    assert_eq!(created.status, 201, "{}", created.text);
    let turn_id = created.body["messages"][0]["turnId"].as_str().unwrap();
    let job = serde_json::json!({ "owner": "local", "sessionId": sid, "turnId": turn_id });
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let r = http
            .post(format!(
                "{}/2015-03-31/functions/confab-turn-worker/invocations",
                gw.base
            ))
            .header("x-amz-invocation-type", "Event")
            .body(job.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    let mut last = String::new();
    let mut seen_live = 0;
    let detail = loop {
        let d = api.session(&sid).await.body;
        if d["session"]["status"] == "idle" {
            break d;
        }
        let text: String = d["live"]["content"]
            .as_array()
            .map(|blocks| blocks.iter().filter_map(|b| b["text"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            text.starts_with(&last),
            "the checkpointed reply went back: {last:?} then {text:?}"
        );
        if !text.is_empty() {
            seen_live += 1;
        }
        last = text;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(seen_live > 0, "the reply was seen while it was written");
    assert_eq!(fake.seen().len(), 1, "the provider was called once");
    assert_eq!(detail["session"]["lastTurn"]["outcome"], "completed");
    let stored = api.all_messages(&sid).await;
    let want: String = (0..60).map(|i| format!(" w{i}")).collect();
    assert_eq!(stored[1].plain_text(), want);
}

/// A create whose dispatch is refused answers 503 `unavailable` with the
/// session and its message stored; the client's retry of the same request
/// dispatches the turn, which runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_dispatch_failed_runs_its_turn_when_the_client_retries() {
    let gw = Gateway::start_aws(&[(confab_local::emulated::INVOKE_FAILURES_VAR, "1")]).await;
    let api = gw.api(None);
    let (sid, mid) = (id(), id());
    let first = api.create(&sid, &mid, "hello there").await;
    assert_eq!(first.status, 503, "{}", first.text);
    assert_eq!(first.body["error"]["code"], "unavailable");
    let d = api.session(&sid).await.body;
    assert_eq!(d["session"]["messageCount"], 1, "the message is kept");
    assert_eq!(d["session"]["status"], "running");
    let again = api.create(&sid, &mid, "hello there").await;
    assert_eq!(again.status, 200, "{}", again.text);
    let done = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    assert_eq!(done["session"]["lastTurn"]["outcome"], "completed");
    let stored = api.all_messages(&sid).await;
    assert_eq!(stored.len(), 2);
    assert!(stored[1].plain_text().contains("You wrote: hello there"));
}

/// Each function reads from Secrets Manager the one secret it uses, at
/// start: the API the token secret, the worker the provider's key. The
/// others get stand-ins good for nothing, never the real values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_reads_only_its_own_secrets() {
    use confab_functions::aws::secrets::{Role, SecretError, resolve};
    let jwt = "a-token-secret-from-secrets-manager-0123456789";
    let key = "sk-ant-from-secrets-manager-0123";
    let (jwt_arn, key_arn) = (
        moto::create_secret(jwt).await,
        moto::create_secret(key).await,
    );
    let sdk = moto::settings(moto::fresh_tables()).sdk_config();
    let env = |k: &str| -> Option<String> {
        match k {
            "CONFAB_AUTH" => Some("jwt".into()),
            "CONFAB_AGENT" => Some("anthropic".into()),
            "CONFAB_JWT_SECRET_ARN" => Some(jwt_arn.clone()),
            "CONFAB_AGENT_API_KEY_SECRET_ARN" => Some(key_arn.clone()),
            _ => None,
        }
    };
    let api = resolve(&sdk, Role::Api, env).await.unwrap();
    assert_eq!(api["CONFAB_JWT_SECRET"], jwt);
    assert_ne!(api["ANTHROPIC_API_KEY"], key);
    let worker = resolve(&sdk, Role::Worker, env).await.unwrap();
    assert_eq!(worker["ANTHROPIC_API_KEY"], key);
    assert_ne!(worker["CONFAB_JWT_SECRET"], jwt);
    let socket = resolve(&sdk, Role::Socket, env).await.unwrap();
    assert_ne!(socket["CONFAB_JWT_SECRET"], jwt);
    assert_ne!(socket["ANTHROPIC_API_KEY"], key);
    // The stand-in key is random: no token can be made for it.
    let again = resolve(&sdk, Role::Socket, env).await.unwrap();
    assert_ne!(socket["CONFAB_JWT_SECRET"], again["CONFAB_JWT_SECRET"]);
    assert!(socket["CONFAB_JWT_SECRET"].len() >= 32);
    // Each configuration starts (the stand-ins satisfy it).
    for got in [&api, &worker, &socket] {
        confab_functions::config::Config::from_lookup(|k| got.get(k).cloned().or_else(|| env(k)))
            .unwrap();
    }
    // A secret that cannot be read stops the function, naming the variable.
    let missing = |k: &str| match k {
        "CONFAB_JWT_SECRET_ARN" => {
            Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:nothing-AbCdEf".into())
        }
        other => env(other),
    };
    let e = resolve(&sdk, Role::Api, missing).await.unwrap_err();
    assert!(
        matches!(
            e,
            SecretError::Read {
                var: "CONFAB_JWT_SECRET_ARN",
                ..
            }
        ),
        "{e}"
    );
    let none = |k: &str| match k {
        "CONFAB_JWT_SECRET_ARN" => None,
        other => env(other),
    };
    assert!(matches!(
        resolve(&sdk, Role::Api, none).await.unwrap_err(),
        SecretError::Missing("CONFAB_JWT_SECRET_ARN")
    ));
}
