//! Sample values of the wire types, for tests only: the unit tests take it
//! as `crate::fixtures`, the integration tests by `#[path]`, so both share
//! one set.

use confab_protocol::Timestamp;
use confab_protocol::model::{
    Block, LastTurn, Message, MessageStatus, PendingRequest, PermissionMode, Question,
    QuestionOption, QueuedMessage, RequestKind, Role, SessionStatus, SessionSummary, TurnOutcome,
    Usage,
};
use serde_json::json;

pub const SID: &str = "0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f70";
pub const MID: &str = "0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f71";
pub const TID: &str = "0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f72";
pub const RID: &str = "0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f73";

/// A valid id of whichever kind is wanted.
pub fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

pub fn summary() -> SessionSummary {
    SessionSummary {
        id: id(SID),
        project_id: id("default"),
        title: "Hello".into(),
        status: SessionStatus::Running,
        permission_mode: PermissionMode::AcceptEdits,
        created_at: Timestamp::from_millis(1_795_000_000_000),
        updated_at: Timestamp::from_millis(1_795_000_000_001),
        last_message_at: Timestamp::from_millis(1_795_000_000_002),
        message_count: 1,
        usage: Usage {
            input_tokens: 1,
            output_tokens: 2,
        },
        first_message_preview: "hi".into(),
        last_turn: Some(LastTurn {
            id: id(TID),
            outcome: TurnOutcome::Failed,
            error: Some("x".into()),
        }),
        agent_session_id: None,
        version: 7,
    }
}

pub fn message() -> Message {
    Message {
        id: id(MID),
        session_id: summary().id,
        seq: 2,
        role: Role::Assistant,
        turn_id: id(TID),
        created_at: Timestamp::from_millis(1_795_000_000_000),
        content: vec![
            Block::text("a"),
            Block::ToolUse {
                id: "tu1".into(),
                name: "bash".into(),
                input: json!({"cmd": ["ls", 1, null]}),
            },
            Block::ToolResult {
                tool_use_id: "tu1".into(),
                content: "out".into(),
                is_error: true,
                duration_ms: Some(1200),
            },
        ],
        status: MessageStatus::Stopped,
        error: None,
        usage: Some(Usage::default()),
    }
}

/// A tool request that also carries a question, so that every field shows.
pub fn request() -> PendingRequest {
    PendingRequest {
        id: id(RID),
        session_id: id(SID),
        turn_id: id(TID),
        kind: RequestKind::Tool,
        tool: Some("Bash".into()),
        input: Some(json!({"command": "rm -rf target"})),
        reason: Some("to clean the build".into()),
        questions: vec![Question {
            question: "Which one?".into(),
            header: Some("Pick".into()),
            options: vec![QuestionOption {
                label: "a".into(),
                description: None,
            }],
            multi_select: false,
        }],
        created_at: Timestamp::from_millis(1),
        expires_at: Timestamp::from_millis(1_800_001),
        resolution: None,
    }
}

pub fn queued() -> QueuedMessage {
    QueuedMessage {
        id: id(MID),
        text: id("and then this"),
        created_at: Timestamp::from_millis(1_795_000_000_003),
        permission_mode: Some(PermissionMode::Plan),
    }
}
