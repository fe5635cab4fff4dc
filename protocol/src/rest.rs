//! Request and response bodies of the REST API (`/api`).

use crate::ids::{MessageId, MessageText, ProjectId, SessionId};
use crate::model::{
    Decision, LiveReply, Message, PendingRequest, PermissionMode, ProjectSummary, QueuedMessage,
    SessionSummary,
};
use serde::{Deserialize, Serialize};

/// A message as the user sends it: the client chooses the id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NewMessage {
    pub id: MessageId,
    pub text: MessageText,
}

/// `POST /api/sessions`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<SessionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<ProjectId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("minLength" = 1, "maxLength" = 200, "pattern" = "\\S"))
    )]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<PermissionMode>,
    pub message: NewMessage,
}

/// `201`/`200` of `POST /api/sessions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionWithMessages {
    pub session: SessionSummary,
    pub messages: Vec<Message>,
}

/// `GET /api/sessions`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionPage {
    pub sessions: Vec<SessionSummary>,
    pub next_cursor: Option<String>,
}

/// `GET /api/sessions/{id}`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionDetail {
    pub session: SessionSummary,
    pub messages: Vec<Message>,
    pub has_more: bool,
    pub live: Option<LiveReply>,
    /// What the running turn waits for the person to answer.
    #[serde(default)]
    pub pending: Vec<PendingRequest>,
    /// Messages waiting for the running turn to end, in the order they start.
    #[serde(default)]
    pub queued: Vec<QueuedMessage>,
}

/// `POST /api/sessions/{id}/requests/{requestId}`: the person's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnswerRequest {
    pub decision: Decision,
    /// Said to the agent with a denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For a question: the chosen option's label, by question text.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub answers: std::collections::BTreeMap<String, String>,
}

/// `200` of `POST /api/sessions/{id}/requests/{requestId}`, and the body of
/// its `409` with the answer that came first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RequestEnvelope {
    pub request: PendingRequest,
}

/// `GET /api/sessions/{id}/messages`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

/// `PATCH /api/sessions/{id}`
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(extend("minProperties" = 1)))]
#[serde(rename_all = "camelCase")]
pub struct UpdateSessionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(extend("minLength" = 1, "maxLength" = 200, "pattern" = "\\S"))
    )]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<PermissionMode>,
}

/// `{ session }`: PATCH and stop answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionEnvelope {
    pub session: SessionSummary,
}

/// `POST /api/sessions/{id}/messages`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SendMessageRequest {
    pub id: MessageId,
    pub text: MessageText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<PermissionMode>,
}

/// `202`/`200` of `POST /api/sessions/{id}/messages`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SendMessageResponse {
    pub message: Message,
    pub session: SessionSummary,
}

/// `202` of `POST /api/sessions/{id}/messages` while a turn runs: the
/// message is queued, and starts its own turn when the running one ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueuedReply {
    pub queued: QueuedMessage,
    pub session: SessionSummary,
}

/// What `POST /api/sessions/{id}/messages` did: started a turn (`202`, or
/// `200` for a message stored before), or queued the message behind the
/// running turn (`202` with `queued`). Told apart by the `queued` field.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum SendAnswer {
    Started(SendMessageResponse),
    Queued(QueuedReply),
}

impl<'de> Deserialize<'de> for SendAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::model::read::take;
        let mut m = crate::model::read::Map::deserialize(d)?;
        let m = &mut m;
        let session = take(m, "session")?;
        Ok(if m.contains_key("queued") {
            SendAnswer::Queued(QueuedReply {
                queued: take(m, "queued")?,
                session,
            })
        } else {
            SendAnswer::Started(SendMessageResponse {
                message: take(m, "message")?,
                session,
            })
        })
    }
}

/// `PATCH /api/sessions/{id}/queue/{messageId}`: new text for a queued
/// message (until it starts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EditQueuedRequest {
    pub text: MessageText,
}

/// `200` of `PATCH /api/sessions/{id}/queue/{messageId}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueuedEnvelope {
    pub queued: QueuedMessage,
}

/// `202` of `POST /api/sessions/{id}/queue/{messageId}/start` while a turn
/// runs: it was asked to stop, and this message starts next. (When no turn
/// runs the message starts at once: `200` with a [`SendMessageResponse`].)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueEnvelope {
    pub session: SessionSummary,
    pub queued: Vec<QueuedMessage>,
}

/// `GET /api/projects`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProjectsResponse {
    pub projects: Vec<ProjectSummary>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    pub provider: String,
    pub model: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AuthInfo {
    pub mode: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_title_chars: usize,
    /// The most a session's `permissionMode` may allow on this server
    /// (`CONFAB_MAX_PERMISSION_MODE`); a request above it is refused.
    pub max_permission_mode: crate::model::PermissionMode,
    /// Sessions one person may create a minute (`CONFAB_CREATE_RATE`).
    pub sessions_per_minute: u32,
    /// Messages one person may send to their sessions a minute
    /// (`CONFAB_SEND_RATE`).
    pub messages_per_minute: u32,
    /// Replies one person may have running at once
    /// (`CONFAB_MAX_TURNS_PER_OWNER`).
    pub turns_at_once: u32,
    /// Tokens one person may use a day (UTC), if there is a budget
    /// (`CONFAB_DAILY_TOKENS`).
    pub daily_tokens: Option<u64>,
}

/// `GET /api/config`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ConfigResponse {
    pub agent: AgentInfo,
    pub auth: AuthInfo,
    pub limits: Limits,
}

/// `GET /api/health`
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Health {
    pub ok: bool,
}

/// The machine-readable part of every error, on REST and on the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    NotFound,
    Conflict,
    TurnRunning,
    PayloadTooLarge,
    RateLimited,
    Internal,
    /// The request's effect is stored but could not be carried on (a turn
    /// could not be handed to a worker); the same request again finishes it.
    Unavailable,
    /// The token a socket was opened with has expired: the socket is closed
    /// after this error, and a fresh token opens a new one.
    TokenExpired,
}

impl ErrorCode {
    /// The HTTP status that goes with the code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::TurnRunning => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// `POST /api/socket-ticket`: open the socket with `?ticket=` within the
/// minute. It is taken by the first socket that uses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SocketTicket {
    pub ticket: String,
    /// When the ticket can no longer be used.
    pub expires_at: crate::Timestamp,
}

/// `{"error": {"code", "message"}}`; a `409` for a request answered
/// already also holds `request`, as it was answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<PendingRequest>,
}
