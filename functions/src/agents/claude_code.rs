//! The Claude Code CLI as a child process: `claude -p --output-format
//! stream-json --verbose --input-format stream-json --permission-prompt-tool
//! stdio`, resumed with `--resume <agentSessionId>`, in the session's project
//! folder under `CONFAB_PROJECTS_ROOT`. The message goes in on stdin as a
//! stream-json `user` line, and stdin stays open for the CLI's own control
//! protocol (as Anthropic's Agent SDKs speak it): a permission prompt or an
//! `AskUserQuestion` arrives as a `control_request` of subtype
//! `can_use_tool`, becomes a request to the person, and their answer goes
//! back as a `control_response`. The child runs in its own process group;
//! dropping the stream (stop, shutdown) kills the whole group at once.

use super::prompt::transcript;
use crate::ports::{Agent, AgentError, AgentEvent, AgentRequest, AnswerSlot, Ask};
use async_trait::async_trait;
use confab_protocol::model::{
    Block, Decision, Question, QuestionOption, RequestKind, Resolution, Role, Usage,
};
use futures::stream::{self, BoxStream, StreamExt};
use serde_json::Value;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const PROVIDER: &str = "Claude Code";

/// The longest line of output read from the child; a longer one fails the
/// turn instead of growing without bound.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// The environment the child gets, and nothing else of the gateway's (whose
/// environment holds its own secrets: the JWT secret, other providers'
/// keys, cloud credentials). Names with these prefixes pass too.
const ENV_NAMES: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TMPDIR", "TZ",
];
const ENV_PREFIXES: &[&str] = &["LC_", "CLAUDE_", "ANTHROPIC_"];

/// Whether the child gets variable `name`: the list above, or one named in
/// `extra` (`CONFAB_CLAUDE_ENV`).
fn passes(name: &str, extra: &[String]) -> bool {
    ENV_NAMES.contains(&name)
        || ENV_PREFIXES.iter().any(|p| name.starts_with(p))
        || extra.iter().any(|e| e == name)
}

/// Folders Claude Code must never be pointed at.
const SYSTEM_PATHS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/sbin", "/sys",
    "/usr", "/var",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RootError {
    #[error("CONFAB_PROJECTS_ROOT={0} does not exist or is not a folder")]
    Missing(String),
    #[error("CONFAB_PROJECTS_ROOT={0} is a system folder; choose a folder of projects")]
    System(String),
}

#[derive(Debug)]
pub struct ClaudeCode {
    bin: PathBuf,
    root: PathBuf,
    model: Option<String>,
    /// More variable names the child may see (`CONFAB_CLAUDE_ENV`).
    extra_env: Vec<String>,
}

impl ClaudeCode {
    pub fn new(bin: PathBuf, root: &Path, model: Option<String>) -> Result<ClaudeCode, RootError> {
        let shown = root.display().to_string();
        let root = root
            .canonicalize()
            .map_err(|_| RootError::Missing(shown.clone()))?;
        if !root.is_dir() {
            return Err(RootError::Missing(shown));
        }
        if SYSTEM_PATHS.iter().any(|p| root == Path::new(p)) {
            return Err(RootError::System(shown));
        }
        Ok(ClaudeCode {
            bin,
            root,
            model,
            extra_env: Vec::new(),
        })
    }

    /// Lets the child see these variables too (proxies, a cloud provider's
    /// settings).
    pub fn with_env(mut self, names: Vec<String>) -> ClaudeCode {
        self.extra_env = names;
        self
    }

    /// The folder of a project, refused when it would lead outside the root
    /// (a projectId cannot name `..` or `/`, but a folder can be a link).
    fn project_dir(&self, project_id: &str) -> Result<PathBuf, String> {
        let dir = self.root.join(project_id);
        if !dir.exists() {
            return Ok(dir);
        }
        let real = dir
            .canonicalize()
            .map_err(|_| format!("the folder of project {project_id:?} cannot be read"))?;
        if !real.starts_with(&self.root) || real == self.root {
            return Err(format!(
                "the folder of project {project_id:?} leads outside CONFAB_PROJECTS_ROOT"
            ));
        }
        if SYSTEM_PATHS.iter().any(|p| real == Path::new(p)) {
            return Err(format!(
                "the folder of project {project_id:?} is a system folder"
            ));
        }
        Ok(real)
    }
}

/// Kills the child's process group when dropped.
struct Group {
    child: Child,
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a negative pid signals that process group;
            // it touches no memory of ours.
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
        }
        let _ = self.child.start_kill();
    }
}

struct Run {
    group: Group,
    lines: BufReader<ChildStdout>,
    queue: VecDeque<AgentEvent>,
    finished: bool,
    /// Lines for the child's stdin (the message, then control responses).
    input: tokio::sync::mpsc::UnboundedSender<String>,
    /// Writes them; aborted with the run.
    _feed: AbortOnDrop,
    /// Each waits for the person's answer to one request and sends it on;
    /// aborted with the run.
    _waiting: Vec<AbortOnDrop>,
}

impl Run {
    /// Turns a control request into a request to the person, whose answer
    /// a task sends back when it comes.
    fn control(&mut self, c: Control) {
        match c {
            Control::CanUseTool {
                request_id,
                tool,
                input,
                suggestions,
                reason,
            } => {
                let (slot, answer) = AnswerSlot::new();
                self.queue
                    .push_back(AgentEvent::Ask(ask_of(&tool, &input, reason, slot)));
                let out = self.input.clone();
                self._waiting.push(AbortOnDrop(tokio::spawn(async move {
                    if let Ok(r) = answer.await {
                        let _ = out.send(permission_response(
                            &request_id,
                            &tool,
                            &input,
                            &suggestions,
                            &r,
                        ));
                    }
                })));
            }
            Control::Unsupported {
                request_id,
                subtype,
            } => {
                let _ = self.input.send(
                    serde_json::json!({
                        "type": "control_response",
                        "response": {
                            "subtype": "error",
                            "request_id": request_id,
                            "error": format!("Confab does not handle {subtype}"),
                        },
                    })
                    .to_string(),
                );
            }
        }
    }
}

/// What a `control_request` from the CLI asks.
#[derive(Debug, PartialEq)]
enum Control {
    /// `can_use_tool`: a tool to allow, or `AskUserQuestion`'s questions.
    CanUseTool {
        request_id: String,
        tool: String,
        input: Value,
        /// Rules the CLI suggests for "allow for this session".
        suggestions: Value,
        reason: Option<String>,
    },
    /// Anything else (hooks, MCP): Confab registers none, so it says so.
    Unsupported { request_id: String, subtype: String },
}

/// The questions of an `AskUserQuestion` input.
fn questions(input: &Value) -> Vec<Question> {
    input["questions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| Question {
            question: q["question"].as_str().unwrap_or_default().to_string(),
            header: q["header"].as_str().map(str::to_string),
            options: q["options"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| QuestionOption {
                    label: o["label"].as_str().unwrap_or_default().to_string(),
                    description: o["description"].as_str().map(str::to_string),
                })
                .collect(),
            multi_select: q["multiSelect"].as_bool().unwrap_or(false),
        })
        .collect()
}

/// The request to the person a `can_use_tool` makes.
fn ask_of(tool: &str, input: &Value, reason: Option<String>, answer: AnswerSlot) -> Ask {
    if tool == "AskUserQuestion" {
        Ask {
            kind: RequestKind::Question,
            tool: None,
            input: None,
            reason,
            questions: questions(input),
            answer,
            // The CLI process holds the conversation: it waits with it.
            resume: None,
        }
    } else {
        Ask {
            kind: RequestKind::Tool,
            tool: Some(tool.to_string()),
            input: Some(input.clone()),
            reason,
            questions: Vec::new(),
            answer,
            resume: None,
        }
    }
}

/// The `control_response` line that carries the person's answer.
fn permission_response(
    request_id: &str,
    tool: &str,
    input: &Value,
    suggestions: &Value,
    r: &Resolution,
) -> String {
    let response = match r.decision {
        Decision::Deny => serde_json::json!({
            "behavior": "deny",
            "message": r.message.clone().unwrap_or_else(|| "The person denied this.".into()),
        }),
        Decision::Allow | Decision::AllowSession => {
            let mut updated = input.clone();
            if tool == "AskUserQuestion"
                && let Value::Object(m) = &mut updated
            {
                m.insert("answers".into(), serde_json::json!(r.answers));
            }
            let mut allow = serde_json::json!({ "behavior": "allow", "updatedInput": updated });
            if r.decision == Decision::AllowSession {
                allow["updatedPermissions"] = match suggestions {
                    Value::Array(s) if !s.is_empty() => suggestions.clone(),
                    _ => serde_json::json!([{
                        "type": "addRules",
                        "rules": [{ "toolName": tool }],
                        "behavior": "allow",
                        "destination": "session",
                    }]),
                };
            }
            allow
        }
    };
    serde_json::json!({
        "type": "control_response",
        "response": { "subtype": "success", "request_id": request_id, "response": response },
    })
    .to_string()
}

/// A control request the CLI sent, if the line is one.
fn control_of(v: &Value) -> Option<Control> {
    if v["type"].as_str() != Some("control_request") {
        return None;
    }
    let request_id = v["request_id"].as_str().unwrap_or_default().to_string();
    let r = &v["request"];
    Some(match r["subtype"].as_str() {
        Some("can_use_tool") => Control::CanUseTool {
            request_id,
            tool: r["tool_name"].as_str().unwrap_or_default().to_string(),
            input: r["input"].clone(),
            suggestions: r["permission_suggestions"].clone(),
            reason: r["decision_reason"]
                .as_str()
                .or_else(|| {
                    r["blocked_path"]
                        .as_str()
                        .map(|_| "It touches a path outside the project.")
                })
                .map(str::to_string),
        },
        other => Control::Unsupported {
            request_id,
            subtype: other.unwrap_or_default().to_string(),
        },
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a line could not be read.
enum LineError {
    TooLong,
    Io,
}

/// The next line of `r` without its newline, at most `max` bytes; None at
/// the end.
async fn next_line(
    r: &mut BufReader<ChildStdout>,
    max: usize,
) -> Result<Option<String>, LineError> {
    use tokio::io::AsyncBufReadExt as _;
    let mut line: Vec<u8> = Vec::new();
    loop {
        let buf = r.fill_buf().await.map_err(|_| LineError::Io)?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned()));
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max + 1 {
            return Err(LineError::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if done {
            line.pop();
            return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
        }
    }
}

/// The prompt: the new message, with the earlier conversation when there is
/// no Claude Code session to resume.
fn prompt(request: &AgentRequest) -> String {
    let turns = transcript(&request.history);
    let Some(((_, last), earlier)) = turns.split_last() else {
        return String::new();
    };
    if request.agent_session_id.is_some() || earlier.is_empty() {
        return last.clone();
    }
    let mut p = String::from("The conversation so far:\n\n");
    for (role, text) in earlier {
        let who = match role {
            Role::User => "User",
            Role::Assistant => "Assistant",
        };
        p.push_str(&format!("{who}: {text}\n\n"));
    }
    p.push_str("Now the user says:\n\n");
    p.push_str(last);
    p
}

fn tool_result_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One line of stream-json: the events it makes, and whether it is the end.
fn parse_line(line: &str) -> Result<(Vec<AgentEvent>, bool), AgentError> {
    let v: Value = serde_json::from_str(line).map_err(|_| {
        AgentError::new(format!("{PROVIDER} printed a line Confab could not read."))
    })?;
    let mut out = Vec::new();
    match v["type"].as_str() {
        Some("system") => {
            if let Some(id) = v["session_id"].as_str() {
                out.push(AgentEvent::SessionId(id.to_string()));
            }
        }
        Some("assistant") => {
            for b in v["message"]["content"].as_array().into_iter().flatten() {
                match b["type"].as_str() {
                    Some("text") => {
                        if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(AgentEvent::Block(Block::text(t)));
                        }
                    }
                    Some("tool_use") => out.push(AgentEvent::Block(Block::ToolUse {
                        id: b["id"].as_str().unwrap_or_default().to_string(),
                        name: b["name"].as_str().unwrap_or_default().to_string(),
                        input: b["input"].clone(),
                    })),
                    _ => {}
                }
            }
        }
        Some("user") => {
            for b in v["message"]["content"].as_array().into_iter().flatten() {
                if b["type"].as_str() == Some("tool_result") {
                    out.push(AgentEvent::Block(Block::ToolResult {
                        tool_use_id: b["tool_use_id"].as_str().unwrap_or_default().to_string(),
                        content: tool_result_text(&b["content"]),
                        is_error: b["is_error"].as_bool().unwrap_or(false),
                        duration_ms: None,
                    }));
                }
            }
        }
        Some("result") => {
            if let Some(id) = v["session_id"].as_str() {
                out.push(AgentEvent::SessionId(id.to_string()));
            }
            let u = &v["usage"];
            out.push(AgentEvent::Usage(Usage {
                input_tokens: u["input_tokens"].as_u64().unwrap_or(0)
                    + u["cache_creation_input_tokens"].as_u64().unwrap_or(0)
                    + u["cache_read_input_tokens"].as_u64().unwrap_or(0),
                output_tokens: u["output_tokens"].as_u64().unwrap_or(0),
            }));
            if v["is_error"].as_bool().unwrap_or(false) {
                let subtype = v["subtype"].as_str().unwrap_or("error");
                return Err(AgentError::new(format!(
                    "{PROVIDER} ended with an error ({subtype})."
                )));
            }
            return Ok((out, true));
        }
        _ => {}
    }
    Ok((out, false))
}

#[async_trait]
impl Agent for ClaudeCode {
    fn provider(&self) -> &str {
        "claude-code"
    }

    fn model(&self) -> &str {
        self.model.as_deref().unwrap_or("default")
    }

    fn check_project(&self, project_id: &str) -> Result<(), String> {
        self.project_dir(project_id).map(|_| ())
    }

    async fn start(
        &self,
        request: AgentRequest,
    ) -> Result<BoxStream<'static, Result<AgentEvent, AgentError>>, AgentError> {
        let dir = self
            .project_dir(&request.project_id)
            .map_err(AgentError::new)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| AgentError {
                message: "The project folder could not be created.".into(),
                source: Some(Box::new(e)),
            })?;
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--input-format",
            "stream-json",
            "--permission-prompt-tool",
            "stdio",
            "--permission-mode",
            request.permission_mode.as_str(),
        ]);
        if let Some(id) = &request.agent_session_id {
            cmd.args(["--resume", id]);
        }
        if let Some(m) = &self.model {
            cmd.args(["--model", m]);
        }
        cmd.current_dir(&dir)
            .env_clear()
            .envs(std::env::vars().filter(|(k, _)| passes(k, &self.extra_env)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        // The child dies with the gateway, however the gateway ends.
        #[cfg(target_os = "linux")]
        // SAFETY: between fork and exec only prctl(2) runs, which is
        // async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| AgentError {
            message: format!(
                "{PROVIDER} could not be started: is `claude` installed (or CONFAB_CLAUDE_BIN set)?"
            ),
            source: Some(Box::new(e)),
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| AgentError::new("Claude Code's output could not be read."))?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| AgentError::new("Claude Code's input could not be written."))?;
        let group = Group { child };
        // Stdin stays open: the message, then the answers to the CLI's
        // control requests. A task writes the lines, so a child that does
        // not read cannot hold the turn up; stopping or shutting down drops
        // the run and the task.
        let (input, mut lines_in) = tokio::sync::mpsc::unbounded_channel::<String>();
        let feed = tokio::spawn(async move {
            while let Some(line) = lines_in.recv().await {
                let written = async {
                    stdin.write_all(line.as_bytes()).await?;
                    stdin.write_all(b"\n").await?;
                    stdin.flush().await
                };
                if let Err(e) = written.await {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "Claude Code did not take its input"
                    );
                    return;
                }
            }
        });
        // The control protocol's handshake, as the Agent SDKs open it (no
        // hooks), then the message as a stream-json `user` line: no length
        // limit, and not visible in `ps`.
        let _ = input.send(
            serde_json::json!({
                "type": "control_request",
                "request_id": "confab_init",
                "request": { "subtype": "initialize", "hooks": null },
            })
            .to_string(),
        );
        let _ = input.send(
            serde_json::json!({
                "type": "user",
                "message": { "role": "user", "content": prompt(&request) },
                "parent_tool_use_id": null,
                "session_id": request.agent_session_id.clone().unwrap_or_default(),
            })
            .to_string(),
        );
        let run = Run {
            group,
            lines: BufReader::new(stdout),
            queue: VecDeque::new(),
            finished: false,
            input,
            _feed: AbortOnDrop(feed),
            _waiting: Vec::new(),
        };
        Ok(stream::unfold(Some(run), |run| async move {
            let mut run = run?;
            loop {
                if let Some(e) = run.queue.pop_front() {
                    return Some((Ok(e), Some(run)));
                }
                if run.finished {
                    return None;
                }
                match next_line(&mut run.lines, MAX_LINE_BYTES).await {
                    Err(LineError::TooLong) => {
                        return Some((
                            Err(AgentError::new(format!(
                                "{PROVIDER} sent a line over {} MiB; the reply was ended there.",
                                MAX_LINE_BYTES / (1024 * 1024)
                            ))),
                            None,
                        ));
                    }
                    Ok(Some(line)) if line.trim().is_empty() => continue,
                    Ok(Some(line)) if line.contains("\"control_request\"") => {
                        if let Ok(v) = serde_json::from_str::<Value>(&line)
                            && let Some(c) = control_of(&v)
                        {
                            run.control(c);
                        }
                    }
                    Ok(Some(line)) => match parse_line(&line) {
                        Ok((events, done)) => {
                            run.queue.extend(events);
                            run.finished = done;
                        }
                        Err(e) => return Some((Err(e), None)),
                    },
                    Ok(None) | Err(_) => {
                        let status = run.group.child.wait().await.ok().and_then(|s| s.code());
                        let how = status.map_or_else(
                            || "was killed".to_string(),
                            |c| format!("exited with code {c}"),
                        );
                        return Some((
                            Err(AgentError::new(format!(
                                "{PROVIDER} {how} before finishing the reply."
                            ))),
                            None,
                        ));
                    }
                }
            }
        })
        .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lines_of_a_run() {
        let (e, done) = parse_line(
            r#"{"type":"system","subtype":"init","session_id":"abc","cwd":"/x","tools":[]}"#,
        )
        .unwrap();
        assert_eq!(e, vec![AgentEvent::SessionId("abc".into())]);
        assert!(!done);
        let (e, _) = parse_line(r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]},"session_id":"abc"}"#).unwrap();
        assert!(matches!(&e[0], AgentEvent::Block(Block::ToolUse { name, .. }) if name == "Bash"));
        let (e, _) = parse_line(r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}],"is_error":true}]}}"#).unwrap();
        assert_eq!(
            e,
            vec![AgentEvent::Block(Block::ToolResult {
                tool_use_id: "t1".into(),
                content: "a\nb".into(),
                is_error: true,
                duration_ms: None,
            })]
        );
        let (e, done) = parse_line(r#"{"type":"result","subtype":"success","is_error":false,"session_id":"abc","usage":{"input_tokens":3,"cache_read_input_tokens":4,"output_tokens":5}}"#).unwrap();
        assert!(done);
        assert!(e.contains(&AgentEvent::Usage(Usage {
            input_tokens: 7,
            output_tokens: 5
        })));
        assert!(
            parse_line(r#"{"type":"result","subtype":"error_max_turns","is_error":true}"#).is_err()
        );
        assert!(parse_line("not json").is_err());
    }

    #[test]
    fn system_folders_are_refused_as_root() {
        assert!(matches!(
            ClaudeCode::new("claude".into(), Path::new("/etc"), None),
            Err(RootError::System(_))
        ));
        assert!(matches!(
            ClaudeCode::new("claude".into(), Path::new("/no/such/folder"), None),
            Err(RootError::Missing(_))
        ));
    }
}
