//! The OpenAI-compatible and Anthropic agents against a local server that
//! replays their real wire formats: replies with usage, tool blocks, retries
//! before the first token and never after, errors and malformed streams,
//! and a stop that closes the upstream connection.

use confab_functions::agents::anthropic::Anthropic;
use confab_functions::agents::http::HttpSettings;
use confab_functions::agents::openai::OpenAi;
use confab_functions::config::Secret;
use confab_functions::ports::{Agent, AgentError, AgentEvent, AgentRequest};
use confab_protocol::Timestamp;
use confab_protocol::model::{Block, Message, MessageStatus, PermissionMode, Role, Usage};
use confab_tests::fake_provider::{FakeProvider, Reply};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

const KEY: &str = "sk-test-0123456789-secret";

#[derive(Clone, Copy, Debug)]
enum Kind {
    OpenAi,
    Anthropic,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Anthropic => "anthropic",
        }
    }
}

fn settings() -> HttpSettings {
    HttpSettings {
        retries: 2,
        backoff: Duration::from_millis(10),
        idle_timeout: Duration::from_secs(5),
        ..HttpSettings::default()
    }
}

fn agent(kind: Kind, fake: &FakeProvider) -> Box<dyn Agent> {
    match kind {
        Kind::OpenAi => Box::new(
            OpenAi::new(
                Some(format!("{}/v1", fake.base)),
                Some("gpt-test".into()),
                Some(Secret::new(KEY)),
                "SYSTEM PROMPT".into(),
                256,
                settings(),
            )
            .unwrap(),
        ),
        Kind::Anthropic => Box::new(
            Anthropic::new(
                Some(fake.base.clone()),
                Some("claude-test".into()),
                Secret::new(KEY),
                "SYSTEM PROMPT".into(),
                256,
                settings(),
            )
            .unwrap(),
        ),
    }
}

const S: &str = "0192f0c1-7e3a-7cc0-8a8e-000000000001";
const T: &str = "0192f0c1-7e3a-7cc0-8a8e-000000000003";

fn msg(seq: u64, role: Role, text: &str) -> Message {
    Message {
        id: format!("0192f0c1-7e3a-7cc0-8a8e-{seq:012}")
            .parse()
            .unwrap(),
        session_id: S.parse().unwrap(),
        seq,
        role,
        turn_id: T.parse().unwrap(),
        created_at: Timestamp::from_millis(0),
        content: vec![Block::text(text)],
        status: MessageStatus::Complete,
        error: None,
        usage: None,
    }
}

fn request() -> AgentRequest {
    AgentRequest {
        session_id: S.parse().unwrap(),
        project_id: "default".parse().unwrap(),
        history: vec![
            msg(1, Role::User, "What is Rust?"),
            msg(2, Role::Assistant, "A language."),
            msg(3, Role::User, "Say hello"),
        ],
        permission_mode: PermissionMode::Default,
        agent_session_id: None,
    }
}

/// The reply as the runner builds it, the last usage, and the error.
#[derive(Debug, Default)]
struct Outcome {
    content: Vec<Block>,
    usage: Option<Usage>,
    error: Option<AgentError>,
}

impl Outcome {
    fn text(&self) -> String {
        self.content.iter().filter_map(|b| b.as_text()).collect()
    }
}

async fn run(agent: &dyn Agent) -> Outcome {
    let mut out = Outcome::default();
    let mut s = agent.start(request()).await.expect("start");
    while let Some(e) = s.next().await {
        match e {
            Ok(AgentEvent::Text(t)) => match out.content.last_mut() {
                Some(Block::Text { text }) => text.push_str(&t),
                _ => out.content.push(Block::text(t)),
            },
            Ok(AgentEvent::Block(b)) => out.content.push(b),
            Ok(AgentEvent::Usage(u)) => out.usage = Some(u),
            Ok(AgentEvent::SessionId(_)) => {}
            Ok(AgentEvent::Ask(a)) => panic!("the HTTP agents do not ask: {a:?}"),
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out
}

async fn normal_reply_with_usage(kind: Kind) {
    let fake = FakeProvider::start().await;
    fake.then(Reply::fixture(&format!("{}/text.sse", kind.dir())));
    let out = run(&*agent(kind, &fake)).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    match kind {
        Kind::OpenAi => {
            assert_eq!(out.text(), "Hello, I am a model. ✓");
            assert_eq!(
                out.usage,
                Some(Usage {
                    input_tokens: 21,
                    output_tokens: 9
                })
            );
        }
        Kind::Anthropic => {
            assert_eq!(out.text(), "Hello, I am Claude. ✓");
            assert_eq!(
                out.usage,
                Some(Usage {
                    input_tokens: 25,
                    output_tokens: 15
                })
            );
        }
    }
    // What was sent: the model, streaming, the key, the system prompt, and
    // the stored conversation as it was typed.
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let (req, body) = (&seen[0], &seen[0].body);
    assert_eq!(body["stream"], true);
    let turns = match kind {
        Kind::OpenAi => {
            assert_eq!(req.path, "/v1/chat/completions");
            assert_eq!(
                req.headers["authorization"],
                format!("Bearer {KEY}").as_str()
            );
            assert_eq!(body["model"], "gpt-test");
            assert_eq!(body["stream_options"]["include_usage"], true);
            assert_eq!(
                body["messages"][0],
                json!({ "role": "system", "content": "SYSTEM PROMPT" })
            );
            body["messages"].as_array().unwrap()[1..].to_vec()
        }
        Kind::Anthropic => {
            assert_eq!(req.path, "/v1/messages");
            assert_eq!(req.headers["x-api-key"], KEY);
            assert_eq!(req.headers["anthropic-version"], "2023-06-01");
            assert_eq!(body["model"], "claude-test");
            assert_eq!(body["system"], "SYSTEM PROMPT");
            assert_eq!(body["max_tokens"], 256);
            body["messages"].as_array().unwrap().clone()
        }
    };
    assert_eq!(
        turns,
        vec![
            json!({ "role": "user", "content": "What is Rust?" }),
            json!({ "role": "assistant", "content": "A language." }),
            json!({ "role": "user", "content": "Say hello" }),
        ]
    );
}

async fn tool_blocks(kind: Kind) {
    let fake = FakeProvider::start().await;
    fake.then(Reply::fixture(&format!("{}/tools.sse", kind.dir())));
    let out = run(&*agent(kind, &fake)).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    let tool = out.content.iter().find_map(|b| match b {
        Block::ToolUse { id, name, input } => Some((id.clone(), name.clone(), input.clone())),
        _ => None,
    });
    let (id, name, input) = tool.expect("a tool_use block");
    assert_eq!(name, "get_weather");
    match kind {
        Kind::OpenAi => {
            assert_eq!(id, "call_abc123");
            assert_eq!(input, json!({ "location": "Paris" }));
        }
        Kind::Anthropic => {
            assert_eq!(id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
            assert_eq!(
                input,
                json!({ "location": "San Francisco, CA", "unit": "fahrenheit" })
            );
        }
    }
    assert!(
        matches!(&out.content[0], Block::Text { text } if !text.is_empty()),
        "the text before the tool comes first"
    );
}

async fn rate_limited_then_success(kind: Kind) {
    let fake = FakeProvider::start().await;
    fake.then(Reply::Status {
        status: 429,
        retry_after: Some(0),
        body: r#"{"error":{"type":"rate_limit_error"}}"#.into(),
    })
    .then(Reply::status(503, r#"{"error":"busy"}"#))
    .then(Reply::fixture(&format!("{}/text.sse", kind.dir())));
    let out = run(&*agent(kind, &fake)).await;
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.text().starts_with("Hello"));
    assert_eq!(fake.seen().len(), 3, "retried twice before the first token");
}

async fn gives_up_after_the_retries_with_a_clear_message(kind: Kind) {
    let fake = FakeProvider::start().await;
    for _ in 0..3 {
        fake.then(Reply::status(
            500,
            &format!(r#"{{"error":"boom, key {KEY}"}}"#),
        ));
    }
    let out = run(&*agent(kind, &fake)).await;
    let e = out.error.expect("an error");
    assert!(e.message.contains("unavailable"), "{}", e.message);
    assert!(!e.message.contains(KEY));
    assert_eq!(fake.seen().len(), 3);
}

async fn bad_credentials_are_not_retried_and_not_echoed(kind: Kind) {
    let fake = FakeProvider::start().await;
    fake.then(Reply::status(
        401,
        &format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}"}}}}"#),
    ));
    let out = run(&*agent(kind, &fake)).await;
    let e = out.error.expect("an error");
    assert!(e.message.contains("API_KEY"), "{}", e.message);
    assert!(
        !e.message.contains(KEY) && !e.message.contains("Incorrect"),
        "{}",
        e.message
    );
    assert_eq!(fake.seen().len(), 1);
}

async fn error_event_mid_stream(kind: Kind) {
    let fake = FakeProvider::start().await;
    fake.then(Reply::fixture(&format!("{}/error.sse", kind.dir())))
        .then(Reply::fixture(&format!("{}/text.sse", kind.dir())));
    let out = run(&*agent(kind, &fake)).await;
    assert_eq!(
        out.text(),
        "Part of an answer",
        "what came before the error is kept"
    );
    let e = out.error.expect("an error");
    let expect = match kind {
        Kind::OpenAi => "server_error",
        Kind::Anthropic => "overloaded_error",
    };
    assert!(e.message.contains(expect), "{}", e.message);
    assert_eq!(fake.seen().len(), 1, "never retried after the first token");
}

async fn malformed_line(kind: Kind) {
    let fake = FakeProvider::start().await;
    fake.then(Reply::fixture(&format!("{}/malformed.sse", kind.dir())));
    let out = run(&*agent(kind, &fake)).await;
    assert_eq!(out.text(), "Before the break");
    assert!(
        out.error
            .expect("an error")
            .message
            .contains("could not read")
    );
}

async fn a_reply_that_ends_early_fails(kind: Kind) {
    let fake = FakeProvider::start().await;
    fake.then(Reply::fixture(&format!("{}/long.sse", kind.dir())));
    let out = run(&*agent(kind, &fake)).await;
    assert!(out.text().starts_with("One"));
    assert!(
        out.error
            .expect("an error")
            .message
            .contains("ended the reply early")
    );
}

async fn dropping_the_stream_closes_the_upstream_connection(kind: Kind) {
    let fake = FakeProvider::start().await;
    fake.then(Reply::held(&format!("{}/long.sse", kind.dir())));
    let agent = agent(kind, &fake);
    let mut s = agent.start(request()).await.unwrap();
    let mut text = String::new();
    while !text.contains("One") {
        if let Some(Ok(AgentEvent::Text(t))) = s.next().await {
            text.push_str(&t);
        }
    }
    assert_eq!(fake.cut_off(), 0);
    drop(s);
    fake.wait_cut_off(1).await;
    assert_eq!(fake.finished(), 0);
}

async fn dropping_during_retries_sends_nothing_more(kind: Kind) {
    let fake = FakeProvider::start().await;
    fake.then(Reply::Status {
        status: 429,
        retry_after: Some(2),
        body: "{}".into(),
    });
    let agent = agent(kind, &fake);
    let mut s = agent.start(request()).await.unwrap();
    // The first poll sends; a stop during the wait ends it.
    let _ = tokio::time::timeout(Duration::from_millis(300), s.next()).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fake.seen().len(), 1);
}

macro_rules! both {
    ($($case:ident),*) => {
        mod openai {
            $( #[tokio::test] async fn $case() { super::$case(super::Kind::OpenAi).await } )*
        }
        mod anthropic {
            $( #[tokio::test] async fn $case() { super::$case(super::Kind::Anthropic).await } )*
        }
    };
}

both!(
    normal_reply_with_usage,
    tool_blocks,
    rate_limited_then_success,
    gives_up_after_the_retries_with_a_clear_message,
    bad_credentials_are_not_retried_and_not_echoed,
    error_event_mid_stream,
    malformed_line,
    a_reply_that_ends_early_fails,
    dropping_the_stream_closes_the_upstream_connection,
    dropping_during_retries_sends_nothing_more
);

#[test]
fn keys_are_redacted_in_debug() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fake = FakeProvider::start().await;
        let o = OpenAi::new(
            Some(fake.base.clone()),
            None,
            Some(Secret::new(KEY)),
            S.parse().unwrap(),
            1,
            settings(),
        )
        .unwrap();
        let a = Anthropic::new(
            Some(fake.base.clone()),
            None,
            Secret::new(KEY),
            S.parse().unwrap(),
            1,
            settings(),
        )
        .unwrap();
        assert!(!format!("{o:?}").contains(KEY));
        assert!(!format!("{a:?}").contains(KEY));
    });
}
