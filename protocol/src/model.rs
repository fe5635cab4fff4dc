//! The objects of the contract: session summaries, messages and their blocks.

use crate::ids::{MessageId, ProjectId, RequestId, SessionId, TurnId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Idle,
    Running,
    /// A turn is paused on the person: a tool to approve or a question to
    /// answer ("needs you").
    Waiting,
}

impl SessionStatus {
    /// A turn is on: running or waiting for the person.
    pub fn is_active(self) -> bool {
        !matches!(self, SessionStatus::Idle)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    #[default]
    Default,
    AcceptEdits,
    BypassPermissions,
    Plan,
}

impl PermissionMode {
    pub const ALL: [PermissionMode; 4] = [
        PermissionMode::Default,
        PermissionMode::AcceptEdits,
        PermissionMode::BypassPermissions,
        PermissionMode::Plan,
    ];

    /// How much the mode lets an agent do without asking: `plan` (read
    /// only) < `default` < `acceptEdits` < `bypassPermissions`.
    pub fn rank(self) -> u8 {
        match self {
            PermissionMode::Plan => 0,
            PermissionMode::Default => 1,
            PermissionMode::AcceptEdits => 2,
            PermissionMode::BypassPermissions => 3,
        }
    }

    /// Whether a server whose ceiling is `self` allows `mode`.
    pub fn allows(self, mode: PermissionMode) -> bool {
        mode.rank() <= self.rank()
    }

    /// The wire spelling, e.g. `acceptEdits`.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionMode::Default => "default",
            PermissionMode::AcceptEdits => "acceptEdits",
            PermissionMode::BypassPermissions => "bypassPermissions",
            PermissionMode::Plan => "plan",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

impl Usage {
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
        }
    }
}

/// How a turn ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TurnOutcome {
    Completed,
    Stopped,
    Failed,
    Interrupted,
}

impl TurnOutcome {
    /// The status of the assistant message a turn with this outcome stores.
    pub fn message_status(self) -> MessageStatus {
        match self {
            TurnOutcome::Completed => MessageStatus::Complete,
            TurnOutcome::Stopped => MessageStatus::Stopped,
            TurnOutcome::Failed => MessageStatus::Failed,
            TurnOutcome::Interrupted => MessageStatus::Interrupted,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LastTurn {
    pub id: TurnId,
    pub outcome: TurnOutcome,
    pub error: Option<String>,
}

/// Readers written by hand for the types the web app reads most: through a
/// JSON object map, field by field (the derived readers of these types were
/// among the web app's largest functions). Each type also has a twin with
/// serde's derived reader, for tests only, which its reader is held to.
pub(crate) mod read {
    use serde::de::Error;

    pub type Map = serde_json::Map<String, serde_json::Value>;

    /// Field `k`: required unless its type takes `null` (an `Option`).
    pub fn take<T: serde::de::DeserializeOwned, E: Error>(
        m: &mut Map,
        k: &'static str,
    ) -> Result<T, E> {
        let v = m.remove(k).unwrap_or(serde_json::Value::Null);
        serde_json::from_value(v).map_err(|e| E::custom(format_args!("{k}: {e}")))
    }

    /// Field `k`, or the default when it is absent (`#[serde(default)]`).
    pub fn or_default<T: serde::de::DeserializeOwned + Default, E: Error>(
        m: &mut Map,
        k: &'static str,
    ) -> Result<T, E> {
        if m.contains_key(k) {
            take(m, k)
        } else {
            Ok(T::default())
        }
    }

    /// A struct, and for tests only its twin with serde's derived reader.
    macro_rules! with_twin {
        ($(#[$m:meta])* pub struct $name:ident, $twin:ident { $($body:tt)* }) => {
            $(#[$m])*
            #[derive(Clone, Debug, PartialEq, Serialize)]
            #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
            #[serde(rename_all = "camelCase")]
            pub struct $name { $($body)* }

            #[cfg(test)]
            #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
            #[serde(rename_all = "camelCase")]
            pub(crate) struct $twin { $($body)* }
        };
    }
    pub(crate) use with_twin;

    /// Whether the hand-written reader `H` takes or refuses `v`, and what it
    /// makes of it, as serde's derived reader `D` does: `v` itself, and `v`
    /// with each field taken out, replaced by wrong values, and an unknown
    /// field added.
    #[cfg(test)]
    pub fn agrees<H, D>(v: &serde_json::Value)
    where
        H: serde::de::DeserializeOwned + serde::Serialize,
        D: serde::de::DeserializeOwned + serde::Serialize,
    {
        use serde_json::{Value, json};
        let hand = |v: &Value| {
            serde_json::from_value::<H>(v.clone())
                .ok()
                .map(|x| serde_json::to_value(x).unwrap())
        };
        let derived = |v: &Value| {
            serde_json::from_value::<D>(v.clone())
                .ok()
                .map(|x| serde_json::to_value(x).unwrap())
        };
        assert_eq!(hand(v), Some(v.clone()), "the hand reader loses nothing");
        assert_eq!(derived(v), Some(v.clone()));
        let Value::Object(fields) = v else {
            panic!("an object")
        };
        for k in fields.keys() {
            let mut without = fields.clone();
            without.remove(k);
            let without = Value::Object(without);
            assert_eq!(hand(&without), derived(&without), "{v} without {k}");
            for wrong in [json!({"not": "this"}), Value::Null, json!(7)] {
                let mut w = fields.clone();
                w.insert(k.clone(), wrong.clone());
                let w = Value::Object(w);
                assert_eq!(hand(&w), derived(&w), "{v} with {k} = {wrong}");
            }
        }
        let mut extra = fields.clone();
        extra.insert("later".into(), json!(1));
        let extra = Value::Object(extra);
        assert_eq!(hand(&extra), derived(&extra));
    }
}

read::with_twin! {
    /// What lists show and what `session.*` events carry.
    #[derive(Eq)]
    pub struct SessionSummary, DerivedSessionSummary {
    pub id: SessionId,
    pub project_id: ProjectId,
    pub title: String,
    pub status: SessionStatus,
    pub permission_mode: PermissionMode,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_message_at: Timestamp,
    pub message_count: u64,
    pub usage: Usage,
    pub first_message_preview: String,
    pub last_turn: Option<LastTurn>,
    pub agent_session_id: Option<String>,
    pub version: u64,
}
}

impl<'de> Deserialize<'de> for SessionSummary {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use read::take;
        let mut m = read::Map::deserialize(d)?;
        let m = &mut m;
        Ok(SessionSummary {
            id: take(m, "id")?,
            project_id: take(m, "projectId")?,
            title: take(m, "title")?,
            status: take(m, "status")?,
            permission_mode: take(m, "permissionMode")?,
            created_at: take(m, "createdAt")?,
            updated_at: take(m, "updatedAt")?,
            last_message_at: take(m, "lastMessageAt")?,
            message_count: take(m, "messageCount")?,
            usage: take(m, "usage")?,
            first_message_preview: take(m, "firstMessagePreview")?,
            last_turn: take(m, "lastTurn")?,
            agent_session_id: take(m, "agentSessionId")?,
            version: take(m, "version")?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    Complete,
    Stopped,
    Failed,
    Interrupted,
}

/// Defines `Block` and, for tests only, the same enum with serde's derived
/// reader, which the hand-written reader must agree with.
macro_rules! block {
    ($($variants:tt)*) => {
        /// One piece of a message's content: text, a tool call, or a tool's
        /// result.
        // Serialized by serde's derive; deserialized by hand (below): the
        // derived reader of an internally tagged enum buffers every field
        // and is one of the web app's largest functions.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum Block { $($variants)* }

        /// `Block` with serde's derived reader (tests only).
        #[cfg(test)]
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub(crate) enum DerivedBlock { $($variants)* }
    };
}

block! {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    ToolResult {
        #[serde(rename = "toolUseId")]
        tool_use_id: String,
        content: String,
        #[serde(rename = "isError")]
        is_error: bool,
        /// How long the tool ran: from its `tool_use` to this result as the
        /// server saw them. Absent when unknown (replies stored before it
        /// was recorded).
        #[serde(
            rename = "durationMs",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        duration_ms: Option<u64>,
    },
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use read::take;
        use serde::de::Error;
        let mut m = read::Map::deserialize(d)?;
        let m = &mut m;
        let kind: String = take(m, "type")?;
        Ok(match kind.as_str() {
            "text" => Block::Text {
                text: take(m, "text")?,
            },
            "tool_use" => Block::ToolUse {
                id: take(m, "id")?,
                name: take(m, "name")?,
                input: m
                    .remove("input")
                    .ok_or_else(|| D::Error::missing_field("input"))?,
            },
            "tool_result" => Block::ToolResult {
                tool_use_id: take(m, "toolUseId")?,
                content: take(m, "content")?,
                is_error: take(m, "isError")?,
                duration_ms: take(m, "durationMs")?,
            },
            other => {
                return Err(D::Error::unknown_variant(
                    other,
                    &["text", "tool_use", "tool_result"],
                ));
            }
        })
    }
}

impl Block {
    pub fn text(s: impl Into<String>) -> Block {
        Block::Text { text: s.into() }
    }

    /// The text of a text block.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Block::Text { text } => Some(text),
            _ => None,
        }
    }
}

read::with_twin! {
    /// A stored message.
    pub struct Message, DerivedMessage {
    pub id: MessageId,
    pub session_id: SessionId,
    pub seq: u64,
    pub role: Role,
    pub turn_id: TurnId,
    pub created_at: Timestamp,
    pub content: Vec<Block>,
    pub status: MessageStatus,
    pub error: Option<String>,
    pub usage: Option<Usage>,
}
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use read::take;
        let mut m = read::Map::deserialize(d)?;
        let m = &mut m;
        Ok(Message {
            id: take(m, "id")?,
            session_id: take(m, "sessionId")?,
            seq: take(m, "seq")?,
            role: take(m, "role")?,
            turn_id: take(m, "turnId")?,
            created_at: take(m, "createdAt")?,
            content: take(m, "content")?,
            status: take(m, "status")?,
            error: take(m, "error")?,
            usage: take(m, "usage")?,
        })
    }
}

impl Message {
    /// All text blocks joined, for previews and exports.
    pub fn plain_text(&self) -> String {
        let mut out = String::new();
        for b in &self.content {
            if let Block::Text { text } = b {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(text);
            }
        }
        out
    }
}

/// An in-flight reply: what `live` and `message.snapshot` carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LiveReply {
    pub message_id: MessageId,
    pub turn_id: TurnId,
    pub content: Vec<Block>,
}

/// A project as `GET /api/projects` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProjectSummary {
    pub id: ProjectId,
    pub session_count: u64,
    pub last_session_id: SessionId,
    pub last_activity_at: Timestamp,
}

/// What a paused turn asks the person: to let a tool run, or to answer
/// questions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    Tool,
    Question,
}

read::with_twin! {
    /// One option of a question.
    #[derive(Eq)]
    pub struct QuestionOption, DerivedQuestionOption {
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}
}

impl<'de> Deserialize<'de> for QuestionOption {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use read::take;
        let mut m = read::Map::deserialize(d)?;
        let m = &mut m;
        Ok(QuestionOption {
            label: take(m, "label")?,
            description: take(m, "description")?,
        })
    }
}

read::with_twin! {
    /// A question with its options, as Claude Code's `AskUserQuestion` asks it.
    #[derive(Eq)]
    pub struct Question, DerivedQuestion {
    pub question: String,
    /// A short label for the question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    pub options: Vec<QuestionOption>,
    #[serde(default)]
    pub multi_select: bool,
}
}

impl<'de> Deserialize<'de> for Question {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use read::{or_default, take};
        let mut m = read::Map::deserialize(d)?;
        let m = &mut m;
        Ok(Question {
            question: take(m, "question")?,
            header: take(m, "header")?,
            options: take(m, "options")?,
            multi_select: or_default(m, "multiSelect")?,
        })
    }
}

/// How a request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Run the tool (or: these are the answers).
    Allow,
    /// Run it, and this tool again in this session without asking.
    AllowSession,
    Deny,
}

impl Decision {
    pub fn allows(self) -> bool {
        !matches!(self, Decision::Deny)
    }
}

read::with_twin! {
    /// The answer a request got, first answer wins.
    #[derive(Eq)]
    pub struct Resolution, DerivedResolution {
    pub decision: Decision,
    /// Said to the agent with a denial (or why the server denied it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a question: the chosen option's label, by question text.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub answers: std::collections::BTreeMap<String, String>,
    pub resolved_at: Timestamp,
}
}

impl<'de> Deserialize<'de> for Resolution {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use read::{or_default, take};
        let mut m = read::Map::deserialize(d)?;
        let m = &mut m;
        Ok(Resolution {
            decision: take(m, "decision")?,
            message: take(m, "message")?,
            answers: or_default(m, "answers")?,
            resolved_at: take(m, "resolvedAt")?,
        })
    }
}

read::with_twin! {
    /// A turn paused on the person: a tool to approve or questions to answer.
    #[derive(Eq)]
    pub struct PendingRequest, DerivedPendingRequest {
    pub id: RequestId,
    pub session_id: SessionId,
    pub turn_id: TurnId,
    pub kind: RequestKind,
    /// The tool's name (a tool request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The tool's input (a tool request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Why the agent wants it, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The questions (a question request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub questions: Vec<Question>,
    pub created_at: Timestamp,
    /// Denied by the server if nobody answers by then.
    pub expires_at: Timestamp,
    /// Set once answered (or denied by the server); then it is no longer
    /// pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}
}

impl<'de> Deserialize<'de> for PendingRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use read::{or_default, take};
        let mut m = read::Map::deserialize(d)?;
        let m = &mut m;
        Ok(PendingRequest {
            id: take(m, "id")?,
            session_id: take(m, "sessionId")?,
            turn_id: take(m, "turnId")?,
            kind: take(m, "kind")?,
            tool: take(m, "tool")?,
            input: or_default(m, "input")?,
            reason: take(m, "reason")?,
            questions: or_default(m, "questions")?,
            created_at: take(m, "createdAt")?,
            expires_at: take(m, "expiresAt")?,
            resolution: take(m, "resolution")?,
        })
    }
}

read::with_twin! {
    /// A message sent while a turn runs: stored, shown as queued, and
    /// started as a turn of its own when the running one ends. It has no
    /// `seq` until then.
    #[derive(Eq)]
    pub struct QueuedMessage, DerivedQueuedMessage {
    /// The id the message keeps once it starts.
    pub id: MessageId,
    pub text: crate::ids::MessageText,
    pub created_at: Timestamp,
    /// The mode its turn runs in, when it was sent with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<PermissionMode>,
}
}

impl<'de> Deserialize<'de> for QueuedMessage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use read::take;
        let mut m = read::Map::deserialize(d)?;
        let m = &mut m;
        Ok(QueuedMessage {
            id: take(m, "id")?,
            text: take(m, "text")?,
            created_at: take(m, "createdAt")?,
            permission_mode: take(m, "permissionMode")?,
        })
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    #[test]
    fn a_summary_is_read_by_hand_as_serde_would_read_it() {
        let mut s: SessionSummary =
            serde_json::from_value(serde_json::to_value(crate::fixtures::summary()).unwrap())
                .unwrap();
        read::agrees::<SessionSummary, DerivedSessionSummary>(&serde_json::to_value(&s).unwrap());
        s.last_turn = None;
        s.agent_session_id = None;
        read::agrees::<SessionSummary, DerivedSessionSummary>(&serde_json::to_value(&s).unwrap());
    }

    #[test]
    fn a_message_and_a_request_are_read_by_hand_as_serde_would_read_them() {
        let m = crate::fixtures::message();
        read::agrees::<Message, DerivedMessage>(&serde_json::to_value(&m).unwrap());
        let mut r = crate::fixtures::request();
        read::agrees::<PendingRequest, DerivedPendingRequest>(&serde_json::to_value(&r).unwrap());
        r.resolution = Some(Resolution {
            decision: Decision::Deny,
            message: Some("no".into()),
            answers: [("q".to_string(), "a".to_string())].into(),
            resolved_at: Timestamp::from_millis(3),
        });
        r.input = None;
        r.questions.clear();
        read::agrees::<PendingRequest, DerivedPendingRequest>(&serde_json::to_value(&r).unwrap());
        let mut q = crate::fixtures::request().questions.remove(0);
        read::agrees::<Question, DerivedQuestion>(&serde_json::to_value(&q).unwrap());
        q.multi_select = true;
        q.options[0].description = Some("the first".into());
        read::agrees::<Question, DerivedQuestion>(&serde_json::to_value(&q).unwrap());
        read::agrees::<QuestionOption, DerivedQuestionOption>(
            &serde_json::to_value(&q.options[0]).unwrap(),
        );
        read::agrees::<Resolution, DerivedResolution>(
            &serde_json::to_value(r.resolution.as_ref().unwrap()).unwrap(),
        );
        read::agrees::<QueuedMessage, DerivedQueuedMessage>(
            &serde_json::to_value(crate::fixtures::queued()).unwrap(),
        );
    }
}

#[cfg(test)]
mod block_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_block_is_read_by_hand_as_serde_would_read_it() {
        let samples = [
            Block::text("hi"),
            Block::ToolUse {
                id: "t".into(),
                name: "Bash".into(),
                input: json!({"command": "ls"}),
            },
            Block::ToolResult {
                tool_use_id: "t".into(),
                content: "out".into(),
                is_error: false,
                duration_ms: Some(5),
            },
            Block::ToolResult {
                tool_use_id: "t".into(),
                content: "".into(),
                is_error: true,
                duration_ms: None,
            },
        ];
        for b in samples {
            read::agrees::<Block, DerivedBlock>(&serde_json::to_value(&b).unwrap());
        }
        let unknown = json!({"type": "image", "url": "x"});
        assert!(serde_json::from_value::<Block>(unknown.clone()).is_err());
        assert!(serde_json::from_value::<DerivedBlock>(unknown).is_err());
    }
}
