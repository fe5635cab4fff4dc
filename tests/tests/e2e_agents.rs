//! End to end with real agents: a `confab` process whose agent talks to a
//! local stand-in of the provider (HTTP) or of the `claude` executable.

use confab_functions::agents::prompt::DEFAULT_SYSTEM_PROMPT;
use confab_protocol::ServerEvent;
use confab_protocol::model::{Block, MessageStatus, Role};
use confab_protocol::routes;
use confab_tests::fake_provider::{FakeProvider, Reply};
use confab_tests::harness::{Gateway, id};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

const KEY: &str = "sk-e2e-0123456789-secret";

async fn openai_gateway(fake: &FakeProvider) -> Gateway {
    let base = format!("{}/v1", fake.base);
    Gateway::start(&[
        ("CONFAB_AGENT", "openai"),
        ("CONFAB_AGENT_BASE_URL", &base),
        ("OPENAI_API_KEY", KEY),
        ("CONFAB_AGENT_MODEL", "gpt-test"),
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_gets_the_stored_conversation_every_turn_even_after_a_restart() {
    let fake = FakeProvider::start().await;
    fake.then(Reply::fixture("openai/text.sse"))
        .then(Reply::fixture("openai/text.sse"));
    let mut gw = openai_gateway(&fake).await;
    let api = gw.api(None);
    let config = api.get(routes::CONFIG).await.body;
    assert_eq!(
        config["agent"],
        json!({ "provider": "openai", "model": "gpt-test" })
    );
    let sid = id();
    assert_eq!(
        api.create(&sid, &id(), "  first question  ").await.status,
        201
    );
    api.wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;

    gw.restart().await;
    let api = gw.api(None);
    assert_eq!(api.send(&sid, &id(), "second question").await.status, 202);
    let done = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;

    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].body["messages"],
        json!([
            { "role": "system", "content": DEFAULT_SYSTEM_PROMPT },
            { "role": "user", "content": "first question" },
            { "role": "assistant", "content": "Hello, I am a model. ✓" },
            { "role": "user", "content": "second question" },
        ])
    );
    let stored = api.all_messages(&sid).await;
    let texts: Vec<(Role, String)> = stored.iter().map(|m| (m.role, m.plain_text())).collect();
    assert_eq!(
        texts,
        vec![
            (Role::User, "first question".to_string()),
            (Role::Assistant, "Hello, I am a model. ✓".to_string()),
            (Role::User, "second question".to_string()),
            (Role::Assistant, "Hello, I am a model. ✓".to_string()),
        ],
        "what the user typed is stored, without the system prompt"
    );
    assert_eq!(
        done["session"]["usage"],
        json!({ "inputTokens": 42, "outputTokens": 18 })
    );
    assert_eq!(stored[3].usage.unwrap().output_tokens, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_streams_a_reply_with_tool_blocks_and_usage() {
    let fake = FakeProvider::start().await;
    fake.then(Reply::fixture("anthropic/tools.sse"))
        .then(Reply::fixture("anthropic/text.sse"));
    let gw = Gateway::start(&[
        ("CONFAB_AGENT", "anthropic"),
        ("CONFAB_AGENT_BASE_URL", &fake.base),
        ("ANTHROPIC_API_KEY", KEY),
    ])
    .await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "weather?").await;
    api.wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    api.send(&sid, &id(), "thanks").await;
    let done = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    let stored = api.all_messages(&sid).await;
    assert!(matches!(&stored[1].content[1], Block::ToolUse { name, .. } if name == "get_weather"));
    assert_eq!(stored[3].plain_text(), "Hello, I am Claude. ✓");
    assert_eq!(
        done["session"]["usage"],
        json!({ "inputTokens": 497, "outputTokens": 104 })
    );
    let second = &fake.seen()[1].body;
    assert_eq!(second["system"], DEFAULT_SYSTEM_PROMPT);
    assert_eq!(
        second["messages"][0],
        json!({ "role": "user", "content": "weather?" })
    );
    assert_eq!(
        second["messages"][2],
        json!({ "role": "user", "content": "thanks" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_the_upstream_request_and_keeps_the_partial_reply() {
    let fake = FakeProvider::start().await;
    fake.then(Reply::held("openai/long.sse"));
    let gw = openai_gateway(&fake).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "count").await;
    let mut s = gw.socket(None).await;
    s.hello().await;
    s.subscribe(&sid, 1).await;
    s.expect("the reply so far", |e| match e {
        ServerEvent::MessageSnapshot { content, .. } => content
            .iter()
            .any(|b| b.as_text().is_some_and(|t| t.contains("three"))),
        ServerEvent::MessageDelta { text, .. } => text.contains("three"),
        _ => false,
    })
    .await;
    assert_eq!(fake.cut_off(), 0);
    let r = api.stop(&sid).await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["session"]["lastTurn"]["outcome"], "stopped");
    fake.wait_cut_off(1).await;
    let stored = api.all_messages(&sid).await;
    assert_eq!(stored[1].status, MessageStatus::Stopped);
    assert_eq!(stored[1].plain_text(), "One two three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_refusal_is_a_failed_reply_without_secrets() {
    let fake = FakeProvider::start().await;
    fake.then(Reply::status(401, &format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}","type":"invalid_request_error"}}}}"#)));
    let gw = openai_gateway(&fake).await;
    let api = gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "hello").await;
    let done = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    assert_eq!(done["session"]["lastTurn"]["outcome"], "failed");
    let stored = api.all_messages(&sid).await;
    assert_eq!(stored[1].status, MessageStatus::Failed);
    let error = stored[1].error.clone().unwrap();
    assert!(error.contains("OPENAI_API_KEY"), "{error}");
    assert!(!error.contains(KEY));
    assert!(
        !api.get(&routes::export(&sid, "json"))
            .await
            .text
            .contains(KEY)
    );
}

fn fake_claude() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/claude/fake-claude")
        .display()
        .to_string()
}

struct Claude {
    gw: Gateway,
    root: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

async fn claude_gateway() -> Claude {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let log = dir.path().join("log");
    std::fs::create_dir_all(&root).unwrap();
    let gw = Gateway::start(&[
        ("CONFAB_AGENT", "claude-code"),
        ("CONFAB_PROJECTS_ROOT", root.to_str().unwrap()),
        ("CONFAB_CLAUDE_BIN", &fake_claude()),
        ("FAKE_CLAUDE_LOG", log.to_str().unwrap()),
        ("CONFAB_CLAUDE_ENV", "FAKE_CLAUDE_LOG"),
        // Secrets of the gateway's that the child must not see.
        ("OPENAI_API_KEY", "sk-gateway-openai-secret"),
        ("AWS_SECRET_ACCESS_KEY", "aws-gateway-secret"),
        (
            "CONFAB_JWT_SECRET",
            "a-jwt-secret-the-child-must-not-see-0123",
        ),
        // And what Claude Code itself reads.
        ("ANTHROPIC_API_KEY", "sk-ant-for-claude"),
    ])
    .await;
    Claude {
        gw,
        root,
        log,
        _dir: dir,
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_in_the_project_folder_and_resumes_its_session() {
    let c = claude_gateway().await;
    let api = c.gw.api(None);
    let sid = id();
    let body = json!({ "id": sid, "projectId": "my-app", "permissionMode": "plan", "message": { "id": id(), "text": "hello" } });
    assert_eq!(
        api.call("POST", routes::SESSIONS, Some(body)).await.status,
        201
    );
    let first = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    let agent_session = first["session"]["agentSessionId"]
        .as_str()
        .expect("agentSessionId stored")
        .to_string();
    assert!(agent_session.starts_with("fake-session-"));
    assert_eq!(
        first["messages"][1]["content"][0]["text"],
        "Hello from Claude Code."
    );
    assert_eq!(
        read(&c.log.join("cwd")).trim(),
        c.root
            .join("my-app")
            .canonicalize()
            .unwrap()
            .to_str()
            .unwrap()
    );
    let args = read(&c.log.join("args"));
    let first_args = args.lines().next().unwrap();
    assert!(
        first_args.contains("-p --output-format stream-json --verbose"),
        "{first_args}"
    );
    assert!(
        first_args.contains("--permission-mode plan"),
        "{first_args}"
    );
    assert!(!first_args.contains("--resume"));

    assert_eq!(api.send(&sid, &id(), "use a tool please").await.status, 202);
    let second = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    let args = read(&c.log.join("args"));
    let second_args = args.lines().nth(1).unwrap();
    assert!(
        second_args.contains(&format!("--resume {agent_session}")),
        "{second_args}"
    );
    assert_eq!(second["session"]["agentSessionId"], agent_session.as_str());
    let prompts = read(&c.log.join("prompts"));
    assert_eq!(
        prompts, "hello\n---\nuse a tool please\n---\n",
        "a resumed session gets only the new message"
    );
    let stored = api.all_messages(&sid).await;
    let reply = &stored[3].content;
    assert!(
        matches!(&reply[0], Block::ToolUse { name, input, .. } if name == "Bash" && input["command"] == "ls")
    );
    assert!(
        matches!(&reply[1], Block::ToolResult { content, is_error: false, .. } if content == "README.md\nsrc")
    );
    assert_eq!(
        reply[2].as_text(),
        Some("The folder holds a README and a src folder.")
    );
    assert_eq!(second["session"]["usage"]["inputTokens"], 30);
}

/// True when the process is gone (or only a zombie is left of it).
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_claude_code_kills_its_whole_process_group() {
    let c = claude_gateway().await;
    let api = c.gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "be slow").await;
    let live = api
        .wait_session(&sid, |s| {
            s["live"]["content"].as_array().is_some_and(|c| c.len() > 3)
                && c.log.join("grandchild").exists()
        })
        .await;
    assert!(
        live["live"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("chunk 1")
    );
    let pid = read(&c.log.join("pid")).trim().to_string();
    let grandchild = read(&c.log.join("grandchild")).trim().to_string();
    assert!(!dead(&pid) && !dead(&grandchild), "running before the stop");
    assert_eq!(api.stop(&sid).await.status, 202);
    for _ in 0..100 {
        if dead(&pid) && dead(&grandchild) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dead(&pid), "the claude process was killed");
    assert!(dead(&grandchild), "its children were killed too");
    let stored = api.all_messages(&sid).await;
    assert_eq!(stored[1].status, MessageStatus::Stopped);
    assert!(stored[1].plain_text().starts_with("chunk 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_that_leads_outside_the_root_is_refused_and_nothing_is_stored() {
    let c = claude_gateway().await;
    let api = c.gw.api(None);
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), c.root.join("evil")).unwrap();
    std::os::unix::fs::symlink("/etc", c.root.join("etc")).unwrap();
    for project in ["evil", "etc"] {
        let body =
            json!({ "id": id(), "projectId": project, "message": { "id": id(), "text": "hello" } });
        let r = api.call("POST", routes::SESSIONS, Some(body)).await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "invalid_request");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("outside"),
            "{}",
            r.text
        );
    }
    let body =
        json!({ "id": id(), "projectId": "../escape", "message": { "id": id(), "text": "hello" } });
    assert_eq!(
        api.call("POST", routes::SESSIONS, Some(body)).await.status,
        400
    );
    assert_eq!(
        api.get(routes::SESSIONS).await.body["sessions"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert!(!c.log.join("args").exists(), "claude was never started");
}

/// The Claude Code child gets an explicit environment: what it needs
/// (`PATH`, `HOME`, the Claude and Anthropic variables, names listed in
/// `CONFAB_CLAUDE_ENV`) and none of the gateway's other secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_gets_only_the_environment_it_needs() {
    let c = claude_gateway().await;
    let api = c.gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "hello").await;
    api.wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    let env = read(&c.log.join("env"));
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    for wanted in ["PATH", "HOME", "ANTHROPIC_API_KEY", "FAKE_CLAUDE_LOG"] {
        assert!(names.contains(&wanted), "{wanted} missing: {names:?}");
    }
    for secret in [
        "sk-gateway-openai-secret",
        "aws-gateway-secret",
        "a-jwt-secret-the-child",
    ] {
        assert!(!env.contains(secret), "the child saw {secret}");
    }
    assert!(!names.iter().any(|n| n.starts_with("CONFAB_")), "{names:?}");
}

/// The child dies with the gateway, however the gateway ends (here killed
/// with SIGKILL, which runs no cleanup of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_code_child_dies_with_the_gateway() {
    let mut c = claude_gateway().await;
    let api = c.gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "be slow").await;
    api.wait_session(&sid, |_| c.log.join("pid").exists()).await;
    let pid = read(&c.log.join("pid")).trim().to_string();
    assert!(!dead(&pid));
    c.gw.kill().await;
    // SIGKILL reaches a process in uninterruptible sleep (a write under a
    // busy disk) only when the sleep ends: up to 10 s.
    for _ in 0..500 {
        if dead(&pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dead(&pid), "the claude process outlived the gateway");
}

/// A child that writes a line without end cannot make the gateway hold it:
/// past 8 MiB the turn fails, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_too_long_from_claude_code_fails_the_turn() {
    let c = claude_gateway().await;
    let api = c.gw.api(None);
    let sid = id();
    api.create(&sid, &id(), "hugeline").await;
    let done = api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    assert_eq!(done["session"]["lastTurn"]["outcome"], "failed");
    let error = done["session"]["lastTurn"]["error"].as_str().unwrap();
    assert!(error.contains("over 8 MiB"), "{error}");
}

/// Answers `req` of session `sid` with `body` and waits for the turn to end;
/// returns the reply.
async fn answer_and_wait(
    c: &Claude,
    sid: &str,
    req: &serde_json::Value,
    body: serde_json::Value,
) -> confab_protocol::Message {
    let api = c.gw.api(None);
    let path = format!(
        "/api/sessions/{sid}/requests/{}",
        req["id"].as_str().unwrap()
    );
    let r = api.call("POST", &path, Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    api.wait_session(sid, |s| s["session"]["status"] == "idle")
        .await;
    api.all_messages(sid).await.swap_remove(1)
}

/// Starts a Claude Code session with `text` in `default` mode and waits
/// until it asks the person; returns the session id and the request.
async fn claude_asks(c: &Claude, text: &str) -> (String, serde_json::Value) {
    let api = c.gw.api(None);
    let sid = id();
    let body = json!({ "id": sid, "projectId": "app", "message": { "id": id(), "text": text } });
    assert_eq!(
        api.call("POST", routes::SESSIONS, Some(body)).await.status,
        201
    );
    let detail = api
        .wait_session(&sid, |s| s["session"]["status"] == "waiting")
        .await;
    (sid, detail["pending"][0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_asks_before_a_tool_and_the_answer_reaches_it() {
    let c = claude_gateway().await;
    let args = |c: &Claude| read(&c.log.join("args"));

    // Allowed for the session: the CLI gets its input back and the rule it
    // suggested, and the tool runs.
    let (sid, req) = claude_asks(&c, "please approve a command").await;
    assert!(args(&c).contains("--input-format stream-json --permission-prompt-tool stdio"));
    assert_eq!(req["kind"], "tool");
    assert_eq!(req["tool"], "Bash");
    assert_eq!(req["input"]["command"], "touch approved.txt");
    let reply = &answer_and_wait(&c, &sid, &req, json!({"decision": "allow_session"})).await;
    assert_eq!(
        reply.content.last().and_then(Block::as_text),
        Some("Created approved.txt.")
    );
    assert!(c.root.join("app/approved.txt").exists(), "the tool ran");
    let control: Vec<serde_json::Value> = read(&c.log.join("control"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(control[0]["request"]["subtype"], "initialize");
    let answer = &control[1]["response"];
    assert_eq!(answer["request_id"], "req_fake_a");
    assert_eq!(answer["response"]["behavior"], "allow");
    assert_eq!(
        answer["response"]["updatedInput"]["command"],
        "touch approved.txt"
    );
    assert_eq!(
        answer["response"]["updatedPermissions"][0]["rules"][0]["ruleContent"], "touch:*",
        "allow for the session passes on the rule the CLI suggested"
    );

    // Denied with a word: the CLI gets it, and the tool does not run.
    std::fs::remove_file(c.root.join("app/approved.txt")).unwrap();
    let (sid, req) = claude_asks(&c, "please approve a command").await;
    let reply = &answer_and_wait(
        &c,
        &sid,
        &req,
        json!({"decision": "deny", "message": "not today"}),
    )
    .await;
    assert!(
        reply.content.iter().any(|b| matches!(b, Block::ToolResult { content, is_error: true, .. } if content.contains("not today"))),
        "{reply:?}"
    );
    assert!(
        !c.root.join("app/approved.txt").exists(),
        "a denied tool does not run"
    );

    // A question: the chosen option goes back as the tool's answers.
    let (sid, req) = claude_asks(&c, "a question first").await;
    assert_eq!(req["kind"], "question");
    assert_eq!(req["questions"][0]["options"][1]["label"], "Postgres");
    let reply = &answer_and_wait(
        &c,
        &sid,
        &req,
        json!({"decision": "allow", "answers": {"Which database?": "Postgres"}}),
    )
    .await;
    assert_eq!(reply.plain_text(), "Going with Postgres.");
}
