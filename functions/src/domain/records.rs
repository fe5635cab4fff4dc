//! What the store keeps about sessions and turns, and the rules that change
//! it. Both stores apply these rules inside their own atomic writes, so the
//! rules are written once, here.

use confab_protocol::model::{
    LastTurn, LiveReply, Message, PendingRequest, PermissionMode, QueuedMessage, Resolution,
    SessionStatus, SessionSummary, TurnOutcome, Usage,
};
use confab_protocol::{MessageId, MessageText, ProjectId, SessionId, TurnId};
use serde::{Deserialize, Serialize};

/// The turn a session is running, kept on the session's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveTurn {
    pub turn_id: TurnId,
    /// The id the assistant's reply will be stored under.
    pub reply_id: MessageId,
    pub started_ms: i64,
    /// Last sign of life from the runner (start or checkpoint).
    pub heartbeat_ms: i64,
    pub stop_requested: bool,
    /// A runner has taken the turn on (`TurnStore::claim_turn`); a second
    /// runner for it walks away. A turn never claimed was never started.
    #[serde(default)]
    pub claimed: bool,
    /// The in-flight reply at the last checkpoint.
    pub live: Option<LiveReply>,
    /// What the turn asked the person, pending and answered (the newest
    /// [`MAX_REQUESTS_KEPT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<PendingRequest>,
    /// Set while the turn waits on the person with no runner (on AWS, the
    /// worker's invocation ended): what the runner that claims it next
    /// resumes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<Parked>,
}

/// A turn stopped at a request, to be resumed when it is answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parked {
    pub request_id: confab_protocol::RequestId,
    /// What the agent gave to go on from (`Ask::resume`).
    pub resume: serde_json::Value,
}

/// Requests a turn keeps: every pending one, and the newest answered ones
/// (so a late second answer still learns what the first was).
pub const MAX_REQUESTS_KEPT: usize = 32;

impl ActiveTurn {
    /// Parked with no runner: waiting for an answer (or its time) to be
    /// resumed. Such a turn has no heartbeat and is not stale.
    pub fn is_parked(&self) -> bool {
        self.parked.is_some() && !self.claimed
    }

    /// The requests still waiting for an answer.
    pub fn pending(&self) -> impl Iterator<Item = &PendingRequest> {
        self.requests.iter().filter(|r| r.resolution.is_none())
    }

    /// Adds a request, dropping the oldest answered ones past the cap.
    pub fn add_request(&mut self, r: PendingRequest) {
        self.requests.push(r);
        while self.requests.len() > MAX_REQUESTS_KEPT {
            match self.requests.iter().position(|r| r.resolution.is_some()) {
                Some(i) => {
                    self.requests.remove(i);
                }
                None => break,
            }
        }
    }

    /// The status a session with this turn shows.
    pub fn status(&self) -> SessionStatus {
        if self.pending().next().is_some() {
            SessionStatus::Waiting
        } else {
            SessionStatus::Running
        }
    }
}

/// Adds `request` to `turn` and shows the session waiting (the rule both
/// stores apply in the write that stores the request).
pub fn ask(turn: &mut ActiveTurn, s: &mut SessionSummary, request: &PendingRequest, now_ms: i64) {
    turn.add_request(request.clone());
    s.status = turn.status();
    s.updated_at = confab_protocol::Timestamp::from_millis(now_ms);
    s.version += 1;
}

/// Answers request `request_id` of `turn` unless it was answered already;
/// the session shows running again once nothing is pending.
pub fn answer(
    turn: &mut ActiveTurn,
    s: &mut SessionSummary,
    request_id: &str,
    resolution: &Resolution,
) -> Resolved {
    let Some(r) = turn
        .requests
        .iter_mut()
        .find(|r| r.id.as_str() == request_id)
    else {
        return Resolved::NotFound;
    };
    if r.resolution.is_some() {
        return Resolved::Already(r.clone());
    }
    r.resolution = Some(resolution.clone());
    let answered = r.clone();
    s.status = turn.status();
    s.updated_at = resolution.resolved_at;
    s.version += 1;
    Resolved::Now(answered, s.clone())
}

/// What answering a request did. (Short-lived: boxing would only add an
/// allocation.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Resolved {
    /// This answer was the first: the request as answered, and the
    /// session's summary after it.
    Now(PendingRequest, SessionSummary),
    /// It had been answered already: the request as it was answered.
    Already(PendingRequest),
    /// No such request in the owner's session's running turn.
    NotFound,
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
            claimed: false,
            live: None,
            requests: Vec::new(),
            parked: None,
        }
    }
}

/// A session as stored: its owner, its summary, the turn it runs and the
/// messages queued behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRecord {
    pub owner: String,
    /// Random per creation: a session deleted and created again under the
    /// same id is another incarnation, and subscriptions to the old one do
    /// not carry over.
    pub incarnation: String,
    pub summary: SessionSummary,
    pub turn: Option<ActiveTurn>,
    pub queue: Queue,
}

/// Most messages one session holds queued.
pub const MAX_QUEUED: usize = 10;
/// Most bytes of text one session holds queued (a message is at most
/// 32 KiB): the queue is stored on the session's row, which DynamoDB caps
/// at 400 KB.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024;

/// Messages sent while a turn runs, in the order they start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<QueuedMessage>,
    /// The first item starts when the running turn ends, however it ends
    /// ("send now" while a turn runs). Otherwise the queue moves on only
    /// after a completed reply: a stopped, failed or interrupted one holds
    /// it until the person starts or cancels what waits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub next_now: bool,
}

impl Queue {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn position(&self, id: &MessageId) -> Option<usize> {
        self.items.iter().position(|q| &q.id == id)
    }

    fn bytes(&self) -> usize {
        self.items.iter().map(|q| q.text.as_str().len()).sum()
    }

    /// Takes message `id` out to start it; false when it is not queued.
    pub fn take(&mut self, id: &MessageId) -> bool {
        let Some(i) = self.position(id) else {
            return false;
        };
        self.items.remove(i);
        if i == 0 {
            self.next_now = false;
        }
        true
    }

    /// The message that starts after a turn that ended with `outcome`.
    pub fn next_after(&self, outcome: TurnOutcome) -> Option<&QueuedMessage> {
        if self.next_now || outcome == TurnOutcome::Completed {
            self.items.first()
        } else {
            None
        }
    }
}

/// A change to a session's queue.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueChange {
    /// Queue a message behind the running turn.
    Add(QueuedMessage),
    Edit {
        id: MessageId,
        text: MessageText,
    },
    Cancel(MessageId),
    /// Move it first and start it as soon as the running turn ends; the
    /// turn is asked to stop.
    Next(MessageId),
}

/// What a queue change did.
#[derive(Clone, Debug, PartialEq)]
pub enum QueueOutcome {
    /// The queue as it is now (the same for an `Add` of a queued message: a
    /// retry).
    Changed(Vec<QueuedMessage>),
    /// `Add`, `Next`: no turn runs, so nothing waits: start it instead.
    Idle,
    /// `Add`, `Edit`: past [`MAX_QUEUED`] or [`MAX_QUEUED_BYTES`].
    Full,
    /// `Edit`, `Cancel`, `Next`: not in the queue (started or cancelled).
    NotQueued,
    /// Not the owner's session.
    NotFound,
}

impl QueueChange {
    /// Applies the change to `rec` (both stores run this inside their
    /// atomic write); the bool says whether anything is to be written.
    pub fn apply(&self, rec: &mut SessionRecord) -> (QueueOutcome, bool) {
        let q = &mut rec.queue;
        let changed = |q: &Queue| (QueueOutcome::Changed(q.items.clone()), true);
        match self {
            QueueChange::Add(item) => {
                if q.position(&item.id).is_some() {
                    return (QueueOutcome::Changed(q.items.clone()), false);
                }
                if rec.turn.is_none() {
                    return (QueueOutcome::Idle, false);
                }
                if q.items.len() >= MAX_QUEUED
                    || q.bytes() + item.text.as_str().len() > MAX_QUEUED_BYTES
                {
                    return (QueueOutcome::Full, false);
                }
                q.items.push(item.clone());
                changed(q)
            }
            QueueChange::Edit { id, text } => {
                let Some(i) = q.position(id) else {
                    return (QueueOutcome::NotQueued, false);
                };
                let others = q.bytes() - q.items[i].text.as_str().len();
                if others + text.as_str().len() > MAX_QUEUED_BYTES {
                    return (QueueOutcome::Full, false);
                }
                q.items[i].text = text.clone();
                changed(q)
            }
            QueueChange::Cancel(id) => {
                if !q.take(id) {
                    return (QueueOutcome::NotQueued, false);
                }
                changed(q)
            }
            QueueChange::Next(id) => {
                let Some(i) = q.position(id) else {
                    return (QueueOutcome::NotQueued, false);
                };
                let Some(turn) = rec.turn.as_mut() else {
                    return (QueueOutcome::Idle, false);
                };
                turn.stop_requested = true;
                let item = q.items.remove(i);
                q.items.insert(0, item);
                q.next_now = true;
                changed(q)
            }
        }
    }
}

impl SessionRecord {
    /// The session as fan-out checks its subscriptions against.
    pub fn target(&self) -> SessionRef {
        SessionRef {
            id: self.summary.id.clone(),
            owner: self.owner.clone(),
            incarnation: self.incarnation.clone(),
        }
    }
}

/// A session as its subscribers are found: its id, owner and incarnation.
/// Every subscription row names all three, and a push goes only to rows
/// that match, so a row left behind by a race with a delete never receives
/// a later session's events under the same id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRef {
    pub id: SessionId,
    pub owner: String,
    pub incarnation: String,
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
    pub project_id: Option<ProjectId>,
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
    pub id: SessionId,
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
    /// A fresh random token: see [`SessionRecord::incarnation`].
    pub incarnation: String,
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

/// A rename or a change of permission mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPatch {
    pub title: Option<String>,
    pub permission_mode: Option<PermissionMode>,
    pub now_ms: i64,
}

impl SessionPatch {
    /// The summary once patched: a new version.
    pub fn apply(&self, s: &mut SessionSummary) {
        if let Some(t) = &self.title {
            s.title = t.clone();
        }
        if let Some(p) = self.permission_mode {
            s.permission_mode = p;
        }
        s.updated_at = confab_protocol::Timestamp::from_millis(self.now_ms);
        s.version += 1;
    }
}

/// A user message that starts a turn.
#[derive(Clone, Debug)]
pub struct NewTurn {
    /// Seq is given by the store.
    pub message: Message,
    pub turn: ActiveTurn,
    pub permission_mode: Option<PermissionMode>,
    pub now_ms: i64,
    /// The message waits in the session's queue: it is taken out in the
    /// same write, and the start is refused (`NotQueued`) if it is not there.
    pub from_queue: bool,
}

impl NewTurn {
    /// Takes the message out of `rec`'s queue when it starts from there;
    /// false when it should but is not queued.
    pub fn take_from_queue(&self, rec: &mut SessionRecord) -> bool {
        !self.from_queue || rec.queue.take(&self.message.id)
    }

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
    /// `from_queue`, but the message is not queued (cancelled, or started).
    NotQueued,
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
    /// The owner and incarnation of the session when it was subscribed.
    pub owner: String,
    pub incarnation: String,
}

impl Subscriber {
    /// Whether this subscription is to `session` as it is now.
    pub fn is_of(&self, session: &SessionRef) -> bool {
        self.owner == session.owner && self.incarnation == session.incarnation
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscribeOutcome {
    Subscribed,
    TooMany,
    /// The session does not exist (any more) for the connection's owner.
    NotFound,
    /// The connection holds the session and renewed it less than
    /// [`RESUBSCRIBE_EVERY_MS`] ago.
    TooSoon,
}

/// A connection renews its subscription of one session at most this often:
/// each renewal answers a page of messages, so a loop of them would be a
/// storm. The first subscribe is never held back.
pub const RESUBSCRIBE_EVERY_MS: i64 = confab_protocol::socket::RESUBSCRIBE_EVERY_MS as i64;

/// Who a socket connection, or the ticket that opens one, stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub owner: String,
    /// When the token it was opened with expires (ms); none with auth off.
    pub auth_expires_ms: Option<i64>,
}

impl Principal {
    /// Whether its token has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.auth_expires_ms.is_some_and(|e| e <= now_ms)
    }
}
