//! The ports the domain reaches the world through. Adapters live elsewhere:
//! SQLite and in-process push/dispatch in `confab-local`, DynamoDB, the API
//! Gateway management API and Lambda in `aws`.

use async_trait::async_trait;
use bytes::Bytes;
use confab_protocol::model::{
    Block, LastTurn, LiveReply, Message, PermissionMode, ProjectSummary, SessionStatus,
    SessionSummary, Usage,
};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of the storage backend. Never shown to a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend failed")]
    Backend(#[source] BoxError),
    #[error("stored data could not be read")]
    Corrupt(#[source] BoxError),
}

impl StoreError {
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Backend(Box::new(e))
    }
    pub fn corrupt(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
        StoreError::Corrupt(Box::new(e))
    }
}

/// The turn a session is running, kept on the session's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveTurn {
    pub turn_id: String,
    /// The id the assistant's reply will be stored under.
    pub reply_id: String,
    pub started_ms: i64,
    /// Last sign of life from the runner (start or checkpoint).
    pub heartbeat_ms: i64,
    pub stop_requested: bool,
    /// The in-flight reply at the last checkpoint.
    pub live: Option<LiveReply>,
}

impl ActiveTurn {
    /// A turn starting now, with fresh ids for it and its reply.
    pub fn new(now_ms: i64) -> ActiveTurn {
        ActiveTurn {
            turn_id: crate::clock::new_id(),
            reply_id: crate::clock::new_id(),
            started_ms: now_ms,
            heartbeat_ms: now_ms,
            stop_requested: false,
            live: None,
        }
    }
}

/// A session as stored: its owner, its summary and the turn it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    pub owner: String,
    pub summary: SessionSummary,
    pub turn: Option<ActiveTurn>,
}

/// Which messages of a session to read. Pages are returned oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageRange {
    /// The newest `limit`; `has_more` says older ones exist.
    Latest { limit: usize },
    /// Seq > `seq`, the oldest `limit` of them; `has_more` says newer exist.
    After { seq: u64, limit: usize },
    /// Seq < `seq`, the newest `limit` of them; `has_more` says older exist.
    Before { seq: u64, limit: usize },
}

/// Filters of an owner's session list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionQuery {
    pub project_id: Option<String>,
    /// Lowercased search text, matched against title and first message.
    pub text: Option<String>,
    pub limit: usize,
    pub after: Option<ListCursor>,
}

/// Where a page of the session list ends: newest activity first, ties by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListCursor {
    #[serde(rename = "t")]
    pub activity_ms: i64,
    #[serde(rename = "i")]
    pub id: String,
}

impl ListCursor {
    /// Cuts `rows` (up to one more than `limit`, newest first) to a page and
    /// returns where the next page starts, if there is one.
    pub fn page(rows: &mut Vec<SessionSummary>, limit: usize) -> Option<ListCursor> {
        if rows.len() <= limit {
            return None;
        }
        rows.truncate(limit);
        rows.last().map(|s| ListCursor {
            activity_ms: s.last_message_at.millis(),
            id: s.id.clone(),
        })
    }
}

/// A new session with its first message and the turn it starts.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub owner: String,
    pub summary: SessionSummary,
    /// The first user message; the store gives it seq 1.
    pub first: Message,
    pub turn: ActiveTurn,
}

// Short-lived return values: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    Created,
    /// A session with this id exists already (maybe another owner's).
    Exists(SessionRecord),
}

/// Renames or changes the permission mode of a summary (the
/// `patch_session` of every store).
pub fn apply_patch(
    s: &mut SessionSummary,
    title: Option<&str>,
    permission_mode: Option<PermissionMode>,
    now_ms: i64,
) {
    if let Some(t) = title {
        s.title = t.to_string();
    }
    if let Some(p) = permission_mode {
        s.permission_mode = p;
    }
    s.updated_at = confab_protocol::Timestamp::from_millis(now_ms);
    s.version += 1;
}

/// A user message that starts a turn.
#[derive(Clone, Debug)]
pub struct NewTurn {
    /// Seq is given by the store.
    pub message: Message,
    pub turn: ActiveTurn,
    pub permission_mode: Option<PermissionMode>,
    pub now_ms: i64,
}

impl NewTurn {
    /// The message as stored with `seq`, and the summary once the turn runs.
    pub fn apply(&self, s: &mut SessionSummary, seq: u64) -> Message {
        let mut message = self.message.clone();
        message.seq = seq;
        s.message_count = seq;
        s.status = SessionStatus::Running;
        if let Some(p) = self.permission_mode {
            s.permission_mode = p;
        }
        s.last_message_at = confab_protocol::Timestamp::from_millis(self.now_ms);
        s.updated_at = s.last_message_at;
        s.version += 1;
        message
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum StartOutcome {
    Started {
        message: Message,
        session: SessionSummary,
    },
    /// This message id is stored already.
    Duplicate(Message),
    /// Another turn runs.
    Running,
    NotFound,
}

/// How a turn ends.
#[derive(Clone, Debug)]
pub struct TurnEnd {
    /// The assistant's reply; the store gives it the next seq.
    pub reply: Message,
    pub last_turn: LastTurn,
    pub usage: Usage,
    pub agent_session_id: Option<String>,
    pub now_ms: i64,
}

impl TurnEnd {
    /// The reply as stored with `seq`, and the summary once the turn ended.
    pub fn apply(&self, s: &mut SessionSummary, seq: u64) -> Message {
        let mut reply = self.reply.clone();
        reply.seq = seq;
        s.message_count = seq;
        s.status = SessionStatus::Idle;
        s.usage = s.usage.plus(self.usage);
        s.last_turn = Some(self.last_turn.clone());
        if let Some(a) = &self.agent_session_id {
            s.agent_session_id = Some(a.clone());
        }
        s.last_message_at = confab_protocol::Timestamp::from_millis(self.now_ms);
        s.updated_at = s.last_message_at;
        s.version += 1;
        reply
    }
}

/// A connection subscribed to a session. `token` changes with every
/// subscribe, so a runner knows to send a fresh snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    pub connection_id: String,
    pub token: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscribeOutcome {
    Subscribed,
    TooMany,
    /// The session does not exist (any more) for the connection's owner.
    NotFound,
}

/// Sessions, messages, connections and subscriptions.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a session, its first message (seq 1) and its running turn in
    /// one write, unless the id exists.
    async fn create_session(&self, new: &NewSession) -> Result<CreateOutcome, StoreError>;
    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    async fn list_sessions(
        &self,
        owner: &str,
        query: &SessionQuery,
    ) -> Result<(Vec<SessionSummary>, Option<ListCursor>), StoreError>;
    async fn list_projects(&self, owner: &str) -> Result<Vec<ProjectSummary>, StoreError>;
    /// Renames or changes the permission mode; bumps the version.
    async fn patch_session(
        &self,
        owner: &str,
        id: &str,
        title: Option<&str>,
        permission_mode: Option<PermissionMode>,
        now_ms: i64,
    ) -> Result<Option<SessionSummary>, StoreError>;
    /// Deletes a session, its messages and subscriptions; returns the
    /// version of the deletion.
    async fn delete_session(&self, owner: &str, id: &str) -> Result<Option<u64>, StoreError>;

    async fn messages(
        &self,
        session_id: &str,
        range: MessageRange,
    ) -> Result<(Vec<Message>, bool), StoreError>;
    async fn find_message(
        &self,
        session_id: &str,
        message_id: &str,
    ) -> Result<Option<Message>, StoreError>;

    /// Appends a user message with the next seq and marks the session running,
    /// if it is the owner's and idle.
    async fn start_turn(
        &self,
        owner: &str,
        session_id: &str,
        turn: &NewTurn,
    ) -> Result<StartOutcome, StoreError>;
    /// Saves the in-flight reply; false when the turn is no longer active.
    async fn checkpoint(
        &self,
        session_id: &str,
        turn_id: &str,
        live: &LiveReply,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// The active turn of a session if it is `turn_id`.
    async fn active_turn(
        &self,
        session_id: &str,
        turn_id: &str,
    ) -> Result<Option<ActiveTurn>, StoreError>;
    /// Asks the running turn to stop. None when the session is not the owner's.
    async fn request_stop(
        &self,
        owner: &str,
        session_id: &str,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// Stores the reply with the next seq, marks the session idle and updates
    /// its summary, if `turn_id` is still its active turn.
    async fn finish_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        end: &TurnEnd,
    ) -> Result<Option<(Message, SessionSummary)>, StoreError>;
    /// Every session with a running turn: (owner, session id, turn).
    async fn running_turns(&self) -> Result<Vec<(String, String, ActiveTurn)>, StoreError>;

    async fn put_connection(&self, id: &str, owner: &str, now_ms: i64) -> Result<(), StoreError>;
    async fn connection_owner(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// Removes a connection and its subscriptions.
    async fn delete_connection(&self, id: &str) -> Result<(), StoreError>;
    async fn owner_connections(&self, owner: &str) -> Result<Vec<String>, StoreError>;
    async fn subscribe(
        &self,
        connection_id: &str,
        session_id: &str,
        token: &str,
        max: usize,
    ) -> Result<SubscribeOutcome, StoreError>;
    async fn unsubscribe(&self, connection_id: &str, session_id: &str) -> Result<(), StoreError>;
    async fn subscribers(&self, session_id: &str) -> Result<Vec<Subscriber>, StoreError>;
}

/// A failure to deliver a frame.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The connection is gone for good: forget it.
    #[error("connection is gone")]
    Gone,
    #[error("push failed")]
    Failed(#[source] BoxError),
}

/// Delivers frames to socket connections (the management API's
/// `PostToConnection`).
#[async_trait]
pub trait Push: Send + Sync + 'static {
    async fn post(&self, connection_id: &str, frame: Bytes) -> Result<(), PushError>;
}

/// One turn to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnJob {
    pub owner: String,
    pub session_id: String,
    pub turn_id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("could not start the turn")]
pub struct DispatchError(#[source] pub BoxError);

/// Starts turns somewhere: a task in this process, or a worker Lambda.
#[async_trait]
pub trait Dispatch: Send + Sync + 'static {
    async fn dispatch(&self, job: TurnJob) -> Result<(), DispatchError>;
}

/// What an agent is asked.
#[derive(Clone, Debug)]
pub struct AgentRequest {
    pub session_id: String,
    pub project_id: String,
    /// The conversation so far, oldest first, ending with the new user message.
    pub history: Vec<Message>,
    pub permission_mode: PermissionMode,
    /// The provider's own session id from an earlier turn.
    pub agent_session_id: Option<String>,
}

/// What an agent yields while it works.
#[derive(Clone, Debug, PartialEq)]
pub enum AgentEvent {
    /// Text appended to the reply (to its last text block, or a new one).
    Text(String),
    /// A whole non-text block (tool_use, tool_result) or a new text block.
    Block(Block),
    Usage(Usage),
    /// The provider's session id, stored for resume.
    SessionId(String),
}

/// Why an agent failed. The message is shown to the user, so it carries no
/// secrets or internals.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    pub message: String,
    #[source]
    pub source: Option<BoxError>,
}

impl AgentError {
    pub fn new(message: impl Into<String>) -> AgentError {
        AgentError {
            message: message.into(),
            source: None,
        }
    }
}

/// An LLM provider or agent program.
#[async_trait]
pub trait Agent: Send + Sync + 'static {
    /// The provider and model as `/api/config` shows them.
    fn provider(&self) -> &str;
    fn model(&self) -> &str;
    /// Whether sessions of this project can run here; the reason when not.
    /// Checked before a session is stored.
    fn check_project(&self, _project_id: &str) -> Result<(), String> {
        Ok(())
    }
    /// Starts a reply. Dropping the stream cancels the work.
    async fn start(
        &self,
        request: AgentRequest,
    ) -> Result<BoxStream<'static, Result<AgentEvent, AgentError>>, AgentError>;
}
