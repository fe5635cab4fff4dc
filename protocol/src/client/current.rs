//! The current session: stored messages ordered by `seq`, the user's own
//! messages shown at once and reconciled by id, and the in-flight reply built
//! from snapshot, block and delta frames by the offset rule.

use crate::ids::{MessageId, SessionId};
use crate::model::{
    Block, LiveReply, Message, PendingRequest, QueuedMessage, Role, SessionStatus, SessionSummary,
};
use crate::rest::ErrorCode;
use crate::rest::{
    MessagePage, QueuedReply, SendMessageResponse, SessionDetail, SessionWithMessages,
};
use crate::socket::RESUBSCRIBE_EVERY_MS;
use crate::socket::ServerEvent;
use std::collections::{BTreeMap, HashSet};

/// What the page shows about the session as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// An id the server does not know yet: ready for a first message.
    NotCreated,
    /// The first message is on its way; the input waits.
    Creating,
    /// Fetching a session the server knows.
    Loading,
    Idle,
    Running,
    /// Deleted, here or in another tab.
    Deleted,
    Error(String),
}

/// What the caller must do after applying something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Something was missed: send `subscribe` with this `afterSeq`.
    Resubscribe {
        after_seq: u64,
    },
    /// Send `subscribe` again, but not before `wait_ms` (a connection may
    /// renew a subscription only every `RESUBSCRIBE_EVERY_MS`).
    ResubscribeAfter {
        wait_ms: u64,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct CurrentSession {
    session_id: SessionId,
    summary: Option<SessionSummary>,
    messages: BTreeMap<u64, Message>,
    stored_ids: HashSet<MessageId>,
    /// The user's messages not yet confirmed by the server, in sending order.
    pending: Vec<Message>,
    live: Option<LiveReply>,
    /// What the running turn waits for the person to answer.
    requests: Vec<PendingRequest>,
    /// Messages waiting for the running turn to end, in the order they start.
    queued: Vec<QueuedMessage>,
    has_older: bool,
    creating: bool,
    loading: bool,
    deleted: bool,
    error: Option<String>,
    /// A subscribe is on its way; gaps until its answer are not gaps.
    resubscribing: bool,
    /// A subscription to a running turn waits for its first snapshot; until
    /// it comes, deltas that do not fit are expected and ignored.
    awaiting_snapshot: bool,
}

impl CurrentSession {
    /// A session id made by this client that the server does not know yet.
    pub fn new_unsaved(session_id: SessionId) -> Self {
        CurrentSession {
            session_id,
            summary: None,
            messages: BTreeMap::new(),
            stored_ids: HashSet::new(),
            pending: Vec::new(),
            live: None,
            requests: Vec::new(),
            queued: Vec::new(),
            has_older: false,
            creating: false,
            loading: false,
            deleted: false,
            error: None,
            resubscribing: false,
            awaiting_snapshot: false,
        }
    }

    /// A session id from a URL, about to be fetched.
    pub fn new_loading(session_id: SessionId) -> Self {
        let mut s = Self::new_unsaved(session_id);
        s.loading = true;
        s
    }

    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    pub fn summary(&self) -> Option<&SessionSummary> {
        self.summary.as_ref()
    }

    /// What the running turn waits for the person to answer, oldest first.
    pub fn requests(&self) -> &[PendingRequest] {
        &self.requests
    }

    /// Messages waiting for the running turn to end, in the order they
    /// start (after a stop, until one is started or cancelled).
    pub fn queued(&self) -> &[QueuedMessage] {
        &self.queued
    }

    pub fn live(&self) -> Option<&LiveReply> {
        self.live.as_ref()
    }

    /// True when older messages exist on the server and are not loaded.
    pub fn has_older(&self) -> bool {
        self.has_older
    }

    pub fn oldest_seq(&self) -> Option<u64> {
        self.messages.keys().next().copied()
    }

    pub fn phase(&self) -> Phase {
        if self.deleted {
            return Phase::Deleted;
        }
        if let Some(e) = &self.error {
            return Phase::Error(e.clone());
        }
        if self.creating {
            return Phase::Creating;
        }
        match &self.summary {
            None if self.loading => Phase::Loading,
            None => Phase::NotCreated,
            Some(s) => match s.status {
                SessionStatus::Running => Phase::Running,
                SessionStatus::Idle => Phase::Idle,
                SessionStatus::Waiting => Phase::Running,
            },
        }
    }

    /// Stored messages in seq order, then the user's unconfirmed ones.
    pub fn messages(&self) -> impl Iterator<Item = &Message> {
        self.messages.values().chain(self.pending.iter())
    }

    /// Stored messages only, in seq order.
    pub fn stored(&self) -> impl Iterator<Item = &Message> {
        self.messages.values()
    }

    pub fn pending(&self) -> &[Message] {
        &self.pending
    }

    /// The end of the unbroken run of stored seqs: what `afterSeq` should say.
    pub fn last_seq(&self) -> u64 {
        let mut it = self.messages.keys();
        let Some(mut last) = it.next().copied() else {
            return 0;
        };
        for s in it {
            if *s != last + 1 {
                break;
            }
            last = *s;
        }
        last
    }

    // ---- what the client does -------------------------------------------------

    /// The first message is being sent: it shows at once, the input waits.
    pub fn begin_create(&mut self, message: Message) {
        self.creating = true;
        self.error = None;
        self.pending.push(message);
    }

    /// A later message is being sent: it shows at once.
    pub fn add_pending(&mut self, message: Message) {
        self.error = None;
        self.pending.push(message);
    }

    /// Sending failed: the message comes back out so its text is not lost.
    pub fn send_failed(
        &mut self,
        message_id: &MessageId,
        error: impl Into<String>,
    ) -> Option<Message> {
        self.creating = false;
        self.error = Some(error.into());
        let i = self.pending.iter().position(|m| &m.id == message_id)?;
        Some(self.pending.remove(i))
    }

    pub fn clear_error(&mut self) {
        self.error = None;
    }

    /// The server does not know this id: it opens ready for a first message.
    pub fn not_found(&mut self) {
        self.loading = false;
    }

    pub fn load_failed(&mut self, error: impl Into<String>) {
        self.loading = false;
        self.error = Some(error.into());
    }

    /// A `subscribe` frame was sent for this session.
    pub fn subscribe_sent(&mut self) {
        self.resubscribing = true;
    }

    // ---- what the server says -------------------------------------------------

    /// The answer of `POST /api/sessions`.
    pub fn apply_created(&mut self, r: &SessionWithMessages) {
        self.creating = false;
        self.loading = false;
        self.merge_summary(&r.session);
        for m in &r.messages {
            self.insert_stored(m.clone());
        }
    }

    /// The answer of `GET /api/sessions/{id}`.
    pub fn apply_detail(&mut self, d: &SessionDetail) {
        self.loading = false;
        self.merge_summary(&d.session);
        if self.messages.is_empty() {
            self.has_older = d.has_more;
        }
        for m in &d.messages {
            self.insert_stored(m.clone());
        }
        self.merge_live(d.live.as_ref());
        self.requests = d.pending.clone();
        self.set_queue(&d.queued);
    }

    /// The answer of `POST /api/sessions/{id}/messages`.
    pub fn apply_sent(&mut self, r: &SendMessageResponse) {
        self.merge_summary(&r.session);
        self.insert_stored(r.message.clone());
    }

    /// The answer of `POST /api/sessions/{id}/messages` while a turn ran:
    /// the message waits in the queue rather than among the sent ones.
    pub fn apply_queued(&mut self, r: &QueuedReply) {
        self.merge_summary(&r.session);
        self.pending.retain(|m| m.id != r.queued.id);
        if !self.stored_ids.contains(&r.queued.id)
            && !self.queued.iter().any(|q| q.id == r.queued.id)
        {
            self.queued.push(r.queued.clone());
        }
    }

    /// The answer of cancelling queued message `id`: it no longer waits.
    pub fn apply_cancelled(&mut self, id: &MessageId) {
        self.queued.retain(|q| &q.id != id);
    }

    /// The queue as the server has it now.
    pub fn set_queue(&mut self, queued: &[QueuedMessage]) {
        self.queued = queued
            .iter()
            .filter(|q| !self.stored_ids.contains(&q.id))
            .cloned()
            .collect();
    }

    /// An older page (`beforeSeq`) loaded on scroll.
    pub fn apply_older(&mut self, p: &MessagePage) {
        self.has_older = p.has_more;
        for m in &p.messages {
            self.insert_stored(m.clone());
        }
    }

    /// A newer summary of this session, from an event or a REST answer
    /// (stop, rename, mode). Another session's summary changes nothing.
    pub fn apply_summary(&mut self, session: &SessionSummary) -> Effect {
        if session.id != self.session_id {
            return Effect::None;
        }
        let had = self.summary.is_some() && !self.creating;
        self.merge_summary(session);
        if !self.is_running() {
            self.awaiting_snapshot = false;
            // The turn is over: nothing of it waits any more.
            self.requests.clear();
        }
        let count = self.summary.as_ref().map_or(0, |s| s.message_count);
        if had && count > self.last_seq() {
            return self.gap();
        }
        Effect::None
    }

    /// Applies a socket event. Events of other sessions change nothing.
    pub fn apply_event(&mut self, event: &ServerEvent) -> Effect {
        if event.session_id() != Some(self.session_id.as_str()) {
            return Effect::None;
        }
        match event {
            ServerEvent::Subscribed {
                session,
                messages,
                live,
                has_more,
                pending,
                queued,
                ..
            } => {
                self.requests = pending.clone();
                self.resubscribing = false;
                self.loading = false;
                self.deleted = false;
                self.merge_summary(session);
                for m in messages {
                    self.insert_stored(m.clone());
                }
                self.merge_live(live.as_ref());
                self.set_queue(queued);
                self.awaiting_snapshot = self.is_running();
                if *has_more {
                    // More new messages than one page: subscribe again from
                    // the new end until caught up, as often as the server
                    // takes renewals.
                    self.resubscribing = true;
                    return Effect::ResubscribeAfter {
                        wait_ms: RESUBSCRIBE_EVERY_MS,
                    };
                }
                Effect::None
            }
            ServerEvent::SessionCreated { session } | ServerEvent::SessionUpdated { session } => {
                self.apply_summary(session)
            }
            ServerEvent::SessionDeleted { version, .. } => {
                if self.summary.as_ref().is_none_or(|s| s.version <= *version) {
                    self.deleted = true;
                    self.live = None;
                }
                Effect::None
            }
            ServerEvent::MessageCreated { message, .. } => {
                let expected = self.last_seq() + 1;
                let is_gap = !self.messages.is_empty() && message.seq > expected;
                if message.role == Role::Assistant {
                    self.awaiting_snapshot = false;
                }
                self.insert_stored(message.clone());
                if is_gap {
                    return self.gap();
                }
                Effect::None
            }
            ServerEvent::MessageSnapshot {
                message_id,
                turn_id,
                content,
                ..
            } => {
                if self.stored_ids.contains(message_id) {
                    return Effect::None;
                }
                self.awaiting_snapshot = false;
                self.live = Some(LiveReply {
                    message_id: message_id.clone(),
                    turn_id: turn_id.clone(),
                    content: content.clone(),
                });
                Effect::None
            }
            ServerEvent::MessageDelta {
                message_id,
                block,
                offset,
                text,
                ..
            } => {
                if self.stored_ids.contains(message_id) {
                    return Effect::None;
                }
                match apply_delta(self.live.as_mut(), message_id, *block, *offset, text) {
                    Ok(()) => Effect::None,
                    Err(Missed) => self.gap(),
                }
            }
            ServerEvent::MessageBlock {
                message_id,
                index,
                block,
                ..
            } => {
                if self.stored_ids.contains(message_id) {
                    return Effect::None;
                }
                match apply_block(self.live.as_mut(), message_id, *index, block) {
                    Ok(()) => Effect::None,
                    Err(Missed) => self.gap(),
                }
            }
            ServerEvent::RequestCreated { request, .. } => {
                if !self.requests.iter().any(|r| r.id == request.id) {
                    self.requests.push(request.clone());
                }
                Effect::None
            }
            ServerEvent::RequestResolved { request_id, .. } => {
                self.requests.retain(|r| &r.id != request_id);
                Effect::None
            }
            ServerEvent::SessionQueue { queued, .. } => {
                self.set_queue(queued);
                Effect::None
            }
            ServerEvent::Error {
                code: ErrorCode::RateLimited,
                ..
            } => {
                // A renewal sooner than the server takes them: again, later.
                self.resubscribing = true;
                Effect::ResubscribeAfter {
                    wait_ms: RESUBSCRIBE_EVERY_MS,
                }
            }
            ServerEvent::Error { .. } => {
                // The other errors that name a session refuse a subscribe:
                // the server does not know it (or it is not ours).
                self.resubscribing = false;
                Effect::None
            }
            ServerEvent::Unsubscribed { .. }
            | ServerEvent::Ready { .. }
            | ServerEvent::Pong
            | ServerEvent::Renewed { .. }
            | ServerEvent::FramePart { .. } => Effect::None,
        }
    }

    // ---- internals -----------------------------------------------------------

    fn is_running(&self) -> bool {
        self.summary.as_ref().is_some_and(|s| s.status.is_active())
    }

    fn gap(&mut self) -> Effect {
        if self.resubscribing || self.awaiting_snapshot {
            return Effect::None;
        }
        self.resubscribing = true;
        Effect::Resubscribe {
            after_seq: self.last_seq(),
        }
    }

    fn merge_summary(&mut self, s: &SessionSummary) {
        if s.id != self.session_id {
            return;
        }
        if self
            .summary
            .as_ref()
            .is_none_or(|have| have.version < s.version)
        {
            self.summary = Some(s.clone());
        }
    }

    fn insert_stored(&mut self, m: Message) {
        if m.session_id != self.session_id {
            return;
        }
        self.pending.retain(|p| p.id != m.id);
        self.queued.retain(|q| q.id != m.id);
        if self.live.as_ref().is_some_and(|l| l.message_id == m.id) {
            self.live = None;
        }
        self.stored_ids.insert(m.id.clone());
        self.messages.insert(m.seq, m);
    }

    /// Takes an in-flight reply from the server unless it is already stored
    /// or older than the one held.
    fn merge_live(&mut self, live: Option<&LiveReply>) {
        let Some(l) = live else { return };
        if self.stored_ids.contains(&l.message_id) {
            return;
        }
        let keep_ours = self.live.as_ref().is_some_and(|have| {
            have.message_id == l.message_id && content_len(&have.content) >= content_len(&l.content)
        });
        if !keep_ours {
            self.live = Some(l.clone());
        }
    }
}

struct Missed;

fn content_len(content: &[Block]) -> usize {
    content
        .iter()
        .map(|b| match b {
            Block::Text { text } => text.len(),
            _ => 1,
        })
        .sum::<usize>()
        + content.len()
}

fn apply_delta(
    live: Option<&mut LiveReply>,
    message_id: &str,
    block: usize,
    offset: usize,
    text: &str,
) -> Result<(), Missed> {
    let live = live.filter(|l| l.message_id == message_id).ok_or(Missed)?;
    let Some(Block::Text { text: have }) = live.content.get_mut(block) else {
        return Err(Missed);
    };
    let len = have.len();
    if offset > len {
        return Err(Missed);
    }
    if offset + text.len() <= len {
        return Ok(()); // already have all of it
    }
    let cut = len - offset;
    if !text.is_char_boundary(cut) {
        return Err(Missed);
    }
    have.push_str(&text[cut..]);
    Ok(())
}

fn apply_block(
    live: Option<&mut LiveReply>,
    message_id: &str,
    index: usize,
    block: &Block,
) -> Result<(), Missed> {
    let live = live.filter(|l| l.message_id == message_id).ok_or(Missed)?;
    match index.cmp(&live.content.len()) {
        std::cmp::Ordering::Greater => Err(Missed),
        std::cmp::Ordering::Equal => {
            live.content.push(block.clone());
            Ok(())
        }
        std::cmp::Ordering::Less => {
            let have = &mut live.content[index];
            // A replayed text block never shortens text that grew since.
            if let (Block::Text { text: ours }, Block::Text { text: theirs }) = (&*have, block)
                && ours.starts_with(theirs.as_str())
            {
                return Ok(());
            }
            *have = block.clone();
            Ok(())
        }
    }
}
