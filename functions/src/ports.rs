//! The ports the domain reaches the world through, split by capability, and
//! [`Ports`], the one value a handler is given to reach them. The adapters
//! live beside: `store::{sqlite, dynamo}`, `aws` (push and dispatch on AWS),
//! `agents`; the local gateway's in-process push and dispatch in
//! `confab-local`.

use crate::domain::records::{
    ActiveTurn, CreateOutcome, ListCursor, MessageRange, NewSession, NewTurn, Parked, Principal,
    QueueChange, QueueOutcome, Resolved, SessionPatch, SessionQuery, SessionRecord, SessionRef,
    StartOutcome, SubscribeOutcome, Subscriber, TurnEnd,
};
use async_trait::async_trait;
use bytes::Bytes;
use confab_protocol::model::{
    Block, LiveReply, Message, PendingRequest, PermissionMode, ProjectSummary, Question,
    RequestKind, Resolution, SessionSummary, Usage,
};
use confab_protocol::{ProjectId, SessionId, TurnId};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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

/// Sessions as their owner sees them in the list.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
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
    /// Renames or changes the permission mode of the owner's session;
    /// bumps the version.
    async fn patch_session(
        &self,
        owner: &str,
        id: &str,
        patch: &SessionPatch,
    ) -> Result<Option<SessionSummary>, StoreError>;
    /// Deletes a session, its messages and subscriptions; returns the
    /// version of the deletion.
    async fn delete_session(&self, owner: &str, id: &str) -> Result<Option<u64>, StoreError>;
}

/// A session's messages, and the turns that append to them.
#[async_trait]
pub trait TurnStore: Send + Sync + 'static {
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
    /// if it is the owner's and idle; a message `from_queue` leaves the
    /// queue in the same write.
    async fn start_turn(
        &self,
        owner: &str,
        session_id: &str,
        turn: &NewTurn,
    ) -> Result<StartOutcome, StoreError>;
    /// Takes the turn on for one runner: true for the first caller while
    /// `turn_id` is the session's active turn, false for every later one.
    async fn claim_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
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
    /// Adds a request to the running turn `turn_id` and shows the session
    /// waiting (`records::ask`), in one write; None when `turn_id` is no
    /// longer the session's turn.
    async fn add_request(
        &self,
        session_id: &str,
        turn_id: &str,
        request: &PendingRequest,
        now_ms: i64,
    ) -> Result<Option<SessionSummary>, StoreError>;
    /// Answers a request of the owner's session's running turn
    /// (`records::answer`), in one write: however many answers race, the
    /// first wins and every later one gets `Already`.
    async fn answer_request(
        &self,
        owner: &str,
        session_id: &str,
        request_id: &str,
        resolution: &Resolution,
    ) -> Result<Resolved, StoreError>;
    /// Changes the owner's session's queue (`QueueChange::apply`), in one
    /// write.
    async fn change_queue(
        &self,
        owner: &str,
        session_id: &str,
        change: &QueueChange,
    ) -> Result<QueueOutcome, StoreError>;
    /// Parks the running turn `turn_id` on a request: stores `parked` and
    /// gives up the claim, so that the runner may end and the one that
    /// claims it next resumes it. False when it is no longer the turn.
    async fn park_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        parked: &Parked,
    ) -> Result<bool, StoreError>;
    /// Every session with a running turn: (owner, session id, turn).
    async fn running_turns(&self) -> Result<Vec<(String, SessionId, ActiveTurn)>, StoreError>;
}

/// Socket connections and what they subscribe to.
#[async_trait]
pub trait ConnectionStore: Send + Sync + 'static {
    async fn put_connection(
        &self,
        id: &str,
        who: &Principal,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Who a connection stands for; None when it is not known.
    async fn connection(&self, id: &str) -> Result<Option<Principal>, StoreError>;
    /// Stores a one-use socket ticket for `who`, usable until `expires_ms`.
    async fn put_ticket(
        &self,
        ticket: &str,
        who: &Principal,
        expires_ms: i64,
    ) -> Result<(), StoreError>;
    /// Takes a ticket, in one write: the first caller before it expires gets
    /// who it stands for, every later one None.
    async fn take_ticket(&self, ticket: &str, now_ms: i64)
    -> Result<Option<Principal>, StoreError>;
    /// Removes a connection and its subscriptions.
    /// Carries a connection on as `who` (a fresh token of the same owner):
    /// its new expiry. False when the connection is gone or is not `who`'s.
    async fn renew_connection(&self, id: &str, who: &Principal) -> Result<bool, StoreError>;
    async fn delete_connection(&self, id: &str) -> Result<(), StoreError>;
    async fn owner_connections(&self, owner: &str) -> Result<Vec<String>, StoreError>;
    /// Subscribes a connection of `session.owner` to `session`, in one write
    /// that checks the session exists in that incarnation and counts the
    /// connection's subscriptions (at most `max`, however many subscribes
    /// race). Renewing a held one is refused (`TooSoon`) within
    /// `RESUBSCRIBE_EVERY_MS` of its last renewal.
    async fn subscribe(
        &self,
        connection_id: &str,
        session: &SessionRef,
        token: &str,
        max: usize,
        now_ms: i64,
    ) -> Result<SubscribeOutcome, StoreError>;
    async fn unsubscribe(&self, connection_id: &str, session_id: &str) -> Result<(), StoreError>;
    /// Every subscription row naming the session, whatever its owner and
    /// incarnation: fan-out keeps only those [`Subscriber::is_of`] the
    /// session it sends for.
    async fn subscribers(&self, session_id: &str) -> Result<Vec<Subscriber>, StoreError>;
}

/// What a [`LimitStore::hold`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// The member was added now.
    Added,
    /// The member was in the set already.
    Already,
    /// The set is full; these are its members.
    Full(Vec<String>),
}

/// Per-owner counters and sets that bound what one owner may use. They live
/// in the store, so that every process sharing it (every Lambda instance)
/// counts against the same figures.
#[async_trait]
pub trait LimitStore: Send + Sync + 'static {
    /// Adds `amount` to the owner's counter `key` if the sum stays at most
    /// `max`, in one write; false, with nothing changed, when it would not.
    /// The counter is forgotten after `expires_ms`.
    async fn count(
        &self,
        owner: &str,
        key: &str,
        amount: u64,
        max: u64,
        expires_ms: i64,
    ) -> Result<bool, StoreError>;
    /// The owner's counter `key`: 0 when it was never counted or expired.
    async fn counted(&self, owner: &str, key: &str, now_ms: i64) -> Result<u64, StoreError>;
    /// Adds `member` to the owner's set `key` if it holds fewer than `max`
    /// members, in one write.
    async fn hold(
        &self,
        owner: &str,
        key: &str,
        member: &str,
        max: u32,
        expires_ms: i64,
    ) -> Result<Held, StoreError>;
    /// Takes `member` out of the owner's set `key`; absent, nothing changes.
    async fn release(&self, owner: &str, key: &str, member: &str) -> Result<(), StoreError>;
}

/// A whole store: every capability. Adapters implement the four traits;
/// this one comes with them.
pub trait Store: SessionStore + TurnStore + ConnectionStore + LimitStore {}

impl<T: SessionStore + TurnStore + ConnectionStore + LimitStore> Store for T {}

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
/// `PostToConnection`), and closes them (`DeleteConnection`).
#[async_trait]
pub trait Push: Send + Sync + 'static {
    async fn post(&self, connection_id: &str, frame: Bytes) -> Result<(), PushError>;
    /// Closes a connection from the server's side, after what was posted.
    async fn close(&self, connection_id: &str) -> Result<(), PushError>;
}

/// One turn to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnJob {
    pub owner: String,
    pub session_id: SessionId,
    pub turn_id: TurnId,
}

#[derive(Debug, thiserror::Error)]
#[error("could not start the turn")]
pub struct DispatchError(#[source] pub BoxError);

/// Starts turns somewhere: a task in this process, or a worker Lambda.
#[async_trait]
pub trait Dispatch: Send + Sync + 'static {
    async fn dispatch(&self, job: TurnJob) -> Result<(), DispatchError>;
    /// Whether another turn may start now; asked before a message that
    /// would start one is stored. (On AWS the worker's reserved concurrency
    /// is the bound, so the answer there is yes.)
    fn has_room(&self) -> bool {
        true
    }
}

/// What an agent is asked.
#[derive(Clone, Debug)]
pub struct AgentRequest {
    pub session_id: SessionId,
    pub project_id: ProjectId,
    /// The conversation so far, oldest first, ending with the new user message.
    pub history: Vec<Message>,
    pub permission_mode: PermissionMode,
    /// The provider's own session id from an earlier turn.
    pub agent_session_id: Option<String>,
}

/// What an agent asks the person; the runner stores it as a
/// [`PendingRequest`] and sends the answer through `answer`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    pub kind: RequestKind,
    pub tool: Option<String>,
    pub input: Option<serde_json::Value>,
    pub reason: Option<String>,
    pub questions: Vec<Question>,
    pub answer: AnswerSlot,
    /// What the agent needs to go on from here once the answer comes, when
    /// it can (`Agent::resume`). A runner that may not wait (a Lambda
    /// invocation) then stores it and ends, rather than hold its compute
    /// while the person thinks.
    pub resume: Option<serde_json::Value>,
}

/// Where the answer to an [`Ask`] goes: taken once.
#[derive(Clone)]
pub struct AnswerSlot(Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Resolution>>>>);

impl AnswerSlot {
    /// A slot and the receiver its answer arrives on.
    pub fn new() -> (AnswerSlot, tokio::sync::oneshot::Receiver<Resolution>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (AnswerSlot(Arc::new(std::sync::Mutex::new(Some(tx)))), rx)
    }

    /// Sends the answer; later calls do nothing.
    pub fn send(&self, r: Resolution) {
        let tx = self.0.lock().ok().and_then(|mut s| s.take());
        if let Some(tx) = tx {
            let _ = tx.send(r);
        }
    }
}

impl std::fmt::Debug for AnswerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerSlot")
    }
}

impl PartialEq for AnswerSlot {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
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
    /// The agent waits for the person: a tool to approve, questions to
    /// answer.
    Ask(Ask),
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
    /// Goes on with a reply that stopped at an [`Ask`] carrying `resume`,
    /// now that `answer` has come. Only agents that give `resume` are asked.
    async fn resume(
        &self,
        _request: AgentRequest,
        _resume: serde_json::Value,
        _answer: Resolution,
    ) -> Result<BoxStream<'static, Result<AgentEvent, AgentError>>, AgentError> {
        Err(AgentError::new(
            "This agent cannot go on from where it stopped to ask.",
        ))
    }
}

/// What one owner may use, per minute, at once and per day. Counted in the
/// store by `domain::limits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Sessions created per owner per minute (`CONFAB_CREATE_RATE`).
    pub creates_per_minute: u32,
    /// Messages sent to existing sessions per owner per minute
    /// (`CONFAB_SEND_RATE`).
    pub sends_per_minute: u32,
    /// Turns running at once per owner (`CONFAB_MAX_TURNS_PER_OWNER`).
    pub turns_per_owner: u32,
    /// Tokens per owner per UTC day (`CONFAB_DAILY_TOKENS`); none by default.
    pub daily_tokens: Option<u64>,
}

impl Limits {
    /// Limits too high to reach: for benchmarks.
    pub fn unreachable() -> Limits {
        Limits {
            creates_per_minute: u32::MAX,
            sends_per_minute: u32::MAX,
            turns_per_owner: u32::MAX,
            daily_tokens: None,
        }
    }
}

/// What a handler reaches the world through: built once by a composition
/// root (the local gateway, a Lambda function's start) and handed to every
/// use case, so none takes its ports one by one.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn Store>,
    pub push: Arc<dyn Push>,
    pub dispatch: Arc<dyn Dispatch>,
    pub agent: Arc<dyn Agent>,
    /// What one owner may use (counted in the store).
    pub limits: Limits,
    /// The most a session's permission mode may allow here.
    pub max_permission_mode: PermissionMode,
}

impl Ports {
    /// `mode` if this server allows it, else why not, in words for the user.
    pub fn permit(
        &self,
        mode: PermissionMode,
    ) -> Result<PermissionMode, crate::error::ServiceError> {
        if self.max_permission_mode.allows(mode) {
            Ok(mode)
        } else {
            Err(crate::error::ServiceError::Invalid(format!(
                "permissionMode {} is above what this server allows ({}; CONFAB_MAX_PERMISSION_MODE)",
                mode.as_str(),
                self.max_permission_mode.as_str()
            )))
        }
    }
}
