//! The session service: every command and query of the contract, over the
//! ports it names. REST and the socket call these; nothing else touches the
//! store for a user.

use super::records::{
    ActiveTurn, CreateOutcome, ListCursor, MessageRange, NewSession, NewTurn, SessionPatch,
    SessionQuery, SessionRecord, SessionRef, StartOutcome, TurnEnd,
};
use super::{limits, notify, queue};
use crate::clock::{new_id, new_token, now_ms};
use crate::error::ServiceError;
use crate::ports::{Dispatch, Limits, Ports, Push, SessionStore, Store, TurnJob, TurnStore};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use confab_protocol::model::{
    Block, LastTurn, Message, MessageStatus, QueuedMessage, Role, SessionStatus, SessionSummary,
    TurnOutcome, Usage,
};
use confab_protocol::rest::{
    CreateSessionRequest, MessagePage, ProjectsResponse, QueuedReply, SendMessageRequest,
    SendMessageResponse, SessionDetail, SessionPage, SessionWithMessages, UpdateSessionRequest,
};
use confab_protocol::{
    MessageId, MessageText, ProjectId, ServerEvent, SessionId, Timestamp, TurnId, validate,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::time::Duration;

/// How long stop and delete wait for a running turn to close.
const STOP_WAIT: Duration = Duration::from_secs(3);
/// A running turn whose runner has shown no sign of life for this long is
/// taken to be dead and closed as interrupted.
pub const STALE_TURN_MS: i64 = 45_000;

/// What a create did.
#[derive(Clone, Debug, PartialEq)]
pub enum Created<T> {
    /// The session was stored now.
    Created(T),
    /// The same create came before (a retry): nothing changed.
    AlreadyExisted(T),
}

/// What a send did. (Short-lived: boxing would only add an allocation.)
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Sent<T> {
    /// The message was stored and its turn started.
    Started(T),
    /// A message with this id is stored already (a retry): nothing changed.
    AlreadyStored(T),
    /// A turn runs: the message waits in the session's queue.
    Queued(QueuedReply),
}

/// What a stop did.
#[derive(Clone, Debug, PartialEq)]
pub enum Stopped<T> {
    /// A turn was running; it was asked to stop (and has, unless it is slow).
    Stopped(T),
    /// No turn was running: nothing changed.
    WasIdle(T),
}

/// Loads a session the caller owns; another owner's session does not exist.
pub(super) async fn owned(
    store: &dyn SessionStore,
    owner: &str,
    id: &SessionId,
) -> Result<SessionRecord, ServiceError> {
    match store.get_session(id).await? {
        Some(r) if r.owner == owner => Ok(r),
        _ => Err(ServiceError::NotFound),
    }
}

fn user_message(
    id: MessageId,
    session_id: &SessionId,
    turn_id: &TurnId,
    text: &MessageText,
    now: i64,
) -> Message {
    Message {
        id,
        session_id: session_id.clone(),
        seq: 0,
        role: Role::User,
        turn_id: turn_id.clone(),
        created_at: Timestamp::from_millis(now),
        content: vec![Block::text(text.as_str())],
        status: MessageStatus::Complete,
        error: None,
        usage: None,
    }
}

/// `POST /api/sessions`. Returns true when the session was created now.
pub async fn create_session(
    ports: &Ports,
    owner: &str,
    req: CreateSessionRequest,
) -> Result<Created<SessionWithMessages>, ServiceError> {
    let store = &*ports.store;
    let id = req.id.unwrap_or_else(new_id);
    let project_id = req.project_id.unwrap_or_else(ProjectId::default_project);
    ports
        .agent
        .check_project(&project_id)
        .map_err(ServiceError::Invalid)?;
    let title = req.title.as_deref().map(validate::title).transpose()?;
    let text = &req.message.text;
    let permission_mode = ports.permit(req.permission_mode.unwrap_or_default())?;

    if let Some(rec) = store.get_session(&id).await? {
        return existing(ports, owner, rec, &req.message.id).await;
    }
    room_for_a_turn(ports)?;
    limits::check_tokens(store, &ports.limits, owner).await?;
    limits::take_creation(ports, owner).await?;
    let place = limits::take_turn(store, &ports.limits, owner, &id).await?;

    let now = now_ms();
    let at = Timestamp::from_millis(now);
    let turn = ActiveTurn::new(now);
    let mut first = user_message(req.message.id.clone(), &id, &turn.turn_id, text, now);
    first.seq = 1;
    let summary = SessionSummary {
        id: id.clone(),
        project_id,
        title: title.map_or_else(|| validate::default_title(text), str::to_string),
        status: SessionStatus::Running,
        permission_mode,
        created_at: at,
        updated_at: at,
        last_message_at: at,
        message_count: 1,
        usage: Usage::default(),
        first_message_preview: validate::preview(text),
        last_turn: None,
        agent_session_id: None,
        version: 1,
    };
    let new = NewSession {
        owner: owner.to_string(),
        incarnation: new_token(),
        summary: summary.clone(),
        first: first.clone(),
        turn: turn.clone(),
    };
    match store.create_session(&new).await {
        Ok(CreateOutcome::Created) => {}
        Ok(CreateOutcome::Exists(rec)) => {
            place.unused(store).await;
            return existing(ports, owner, rec, &req.message.id).await;
        }
        Err(e) => {
            place.unused(store).await;
            return Err(e.into());
        }
    }
    // Dispatch before fan-out: whatever happens to the fan-out, the turn has
    // been handed on. A dispatch that failed leaves the turn unclaimed, and
    // the client's retry of this create dispatches it again.
    let started = start(ports, owner, &id, &turn).await;
    notify::to_owner(
        store,
        &*ports.push,
        owner,
        &ServerEvent::SessionCreated {
            session: summary.clone(),
        },
    )
    .await;
    started?;
    Ok(Created::Created(SessionWithMessages {
        session: summary,
        messages: vec![first],
    }))
}

/// The same create again: the current state, or a conflict. A turn that no
/// runner has claimed (its dispatch failed, or is still on its way) is
/// dispatched again; the claim makes a second runner harmless.
async fn existing(
    ports: &Ports,
    owner: &str,
    rec: SessionRecord,
    first_message_id: &str,
) -> Result<Created<SessionWithMessages>, ServiceError> {
    let store = &*ports.store;
    if rec.owner != owner {
        return Err(ServiceError::Conflict("this session id is taken".into()));
    }
    let first = store
        .find_message(&rec.summary.id, first_message_id)
        .await?;
    if first.is_none_or(|m| m.seq != 1) {
        return Err(ServiceError::Conflict(
            "this session exists with a different first message".into(),
        ));
    }
    redispatch_unclaimed(ports, &rec).await?;
    let (messages, _) = store
        .messages(
            &rec.summary.id,
            MessageRange::Latest {
                limit: validate::DEFAULT_PAGE,
            },
        )
        .await?;
    Ok(Created::AlreadyExisted(SessionWithMessages {
        session: rec.summary,
        messages,
    }))
}

/// Refuses a new turn, before anything is stored, while the server runs as
/// many as it may at once.
pub(super) fn room_for_a_turn(ports: &Ports) -> Result<(), ServiceError> {
    if ports.dispatch.has_room() {
        Ok(())
    } else {
        Err(ServiceError::TooMany(
            "the server is running as many replies as it may at once (CONFAB_MAX_TURNS); try again in a moment".into(),
        ))
    }
}

/// What a create or send whose turn could not be handed on answers: the
/// message is stored, and sending the same request again starts its turn.
const NOT_DISPATCHED: &str =
    "the message is saved but its reply could not be started; send the same request again";

/// Hands a turn to Dispatch. On failure the turn stays stored and unclaimed:
/// the client's retry of the same request dispatches it again, and if none
/// comes the sweep closes it as never started.
async fn start(
    ports: &Ports,
    owner: &str,
    session_id: &SessionId,
    turn: &ActiveTurn,
) -> Result<(), ServiceError> {
    let job = TurnJob {
        owner: owner.to_string(),
        session_id: session_id.clone(),
        turn_id: turn.turn_id.clone(),
    };
    ports.dispatch.dispatch(job).await.map_err(|e| {
        tracing::error!(error = &e as &dyn std::error::Error, session = %session_id, "dispatch failed");
        ServiceError::Unavailable(NOT_DISPATCHED.into())
    })
}

/// Dispatches the running turn of `rec` again if no runner has claimed it.
async fn redispatch_unclaimed(ports: &Ports, rec: &SessionRecord) -> Result<(), ServiceError> {
    match &rec.turn {
        Some(turn) if !turn.claimed => {
            tracing::info!(session = %rec.summary.id, turn = %turn.turn_id, "dispatching an unclaimed turn again");
            start(ports, &rec.owner, &rec.summary.id, turn).await
        }
        _ => Ok(()),
    }
}

/// Closes a turn with the given content and outcome and tells everyone.
/// Returns the new summary, or None when the turn was closed already.
pub async fn close_turn(
    store: &dyn Store,
    push: &dyn Push,
    session: &SessionRef,
    turn: &ActiveTurn,
    content: Vec<Block>,
    outcome: TurnOutcome,
    error: Option<String>,
) -> Option<SessionSummary> {
    let now = now_ms();
    let end = TurnEnd {
        reply: Message {
            id: turn.reply_id.clone(),
            session_id: session.id.clone(),
            seq: 0,
            role: Role::Assistant,
            turn_id: turn.turn_id.clone(),
            created_at: Timestamp::from_millis(now),
            content,
            status: outcome.message_status(),
            error: error.clone(),
            usage: None,
        },
        last_turn: LastTurn {
            id: turn.turn_id.clone(),
            outcome,
            error,
        },
        usage: Usage::default(),
        agent_session_id: None,
        now_ms: now,
    };
    finish_and_announce(store, push, session, &turn.turn_id, &end).await
}

/// What a turn whose end could not be stored tells the user.
pub const SAVE_FAILED: &str = "Confab could not save this reply; what was saved of it is kept.";

/// Stores the end of a turn; sends `message.created` to the subscribers and
/// `session.updated` to the owner. If the end cannot be stored (whatever
/// the reason), the turn ends `failed` at once with its last checkpoint,
/// never left running.
pub async fn finish_and_announce(
    store: &dyn Store,
    push: &dyn Push,
    session: &SessionRef,
    turn_id: &str,
    end: &TurnEnd,
) -> Option<SessionSummary> {
    let (message, summary) = match store.finish_turn(&session.id, turn_id, end).await {
        Ok(Some(done)) => done,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                session = %session.id,
                "storing the end of a turn failed; ending it as failed with its last checkpoint"
            );
            match finish_failed(store, &session.id, turn_id, end).await {
                Some(done) => done,
                None => return None,
            }
        }
    };
    let tokens = end
        .usage
        .input_tokens
        .saturating_add(end.usage.output_tokens);
    limits::turn_ended(store, &session.owner, &session.id, tokens).await;
    notify::message_created(store, push, session, message).await;
    notify::session_updated(store, push, &session.owner, &summary).await;
    Some(summary)
}

/// The end of a turn as `failed`, with the reply of its last checkpoint.
async fn finish_failed(
    store: &dyn Store,
    session_id: &SessionId,
    turn_id: &str,
    end: &TurnEnd,
) -> Option<(Message, SessionSummary)> {
    let live = match store.get_session(session_id).await {
        Ok(Some(r)) => match r.turn.filter(|t| t.turn_id == turn_id) {
            Some(t) => t.live,
            None => return None,
        },
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = &e as &dyn std::error::Error, session = %session_id, "reading the last checkpoint failed");
            None
        }
    };
    let mut failed = end.clone();
    failed.reply.content = live.map(|l| l.content).unwrap_or_default();
    failed.reply.status = MessageStatus::Failed;
    failed.reply.error = Some(SAVE_FAILED.into());
    failed.last_turn.outcome = TurnOutcome::Failed;
    failed.last_turn.error = Some(SAVE_FAILED.into());
    match store.finish_turn(session_id, turn_id, &failed).await {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(error = &e as &dyn std::error::Error, session = %session_id, "storing the failed end of a turn failed too");
            None
        }
    }
}

/// Closes a running turn whose runner is dead (no sign of life for
/// `STALE_TURN_MS`), keeping its checkpointed reply. Returns the fresh record.
pub async fn reap_if_stale(
    store: &dyn Store,
    push: &dyn Push,
    rec: SessionRecord,
) -> Result<SessionRecord, ServiceError> {
    let Some(turn) = &rec.turn else {
        return Ok(rec);
    };
    // A parked turn has no runner to beat: it waits for an answer, and the
    // sweep resumes it once its request expires.
    if turn.is_parked() || now_ms() - turn.heartbeat_ms < STALE_TURN_MS {
        return Ok(rec);
    }
    let content = turn.live.clone().map(|l| l.content).unwrap_or_default();
    let (outcome, error) = if turn.claimed {
        tracing::warn!(session = %rec.summary.id, turn = %turn.turn_id, "closing a turn whose runner stopped answering");
        (TurnOutcome::Interrupted, STOPPED_ANSWERING)
    } else {
        tracing::warn!(session = %rec.summary.id, turn = %turn.turn_id, "closing a turn that no runner started");
        (TurnOutcome::Failed, NEVER_STARTED)
    };
    close_turn(
        store,
        push,
        &rec.target(),
        turn,
        content,
        outcome,
        Some(error.into()),
    )
    .await;
    store
        .get_session(&rec.summary.id)
        .await?
        .ok_or(ServiceError::NotFound)
}

/// What a turn closed by the sweep tells the user, by case: its runner died
/// while writing, or no runner ever took it on.
pub const STOPPED_ANSWERING: &str =
    "The reply was interrupted: the server stopped while writing it.";
pub const NEVER_STARTED: &str =
    "The reply never started: no worker took this turn on. Send your message again.";

/// `POST /api/sessions/{id}/messages`.
pub async fn send_message(
    ports: &Ports,
    owner: &str,
    session_id: &SessionId,
    req: SendMessageRequest,
) -> Result<Sent<SendMessageResponse>, ServiceError> {
    let (store, push) = (&*ports.store, &*ports.push);
    let rec = owned(store, owner, session_id).await?;
    if let Some(message) = store.find_message(session_id, &req.id).await? {
        if rec
            .turn
            .as_ref()
            .is_some_and(|t| t.turn_id == message.turn_id)
        {
            redispatch_unclaimed(ports, &rec).await?;
        }
        return Ok(Sent::AlreadyStored(SendMessageResponse {
            message,
            session: rec.summary,
        }));
    }
    if let Some(q) = rec.queue.items.iter().find(|q| q.id == req.id) {
        return Ok(Sent::Queued(QueuedReply {
            queued: q.clone(),
            session: rec.summary.clone(),
        }));
    }
    let rec = reap_if_stale(store, push, rec).await?;
    // The mode the turn runs in, given or kept, is within this server's.
    ports.permit(req.permission_mode.unwrap_or(rec.summary.permission_mode))?;
    if rec.turn.is_some() {
        // A turn runs: the message waits for it to end.
        limits::take_send(ports, owner).await?;
        if let Some(queued) = queue::enqueue(ports, owner, &rec, &req).await? {
            return Ok(Sent::Queued(queued));
        }
    } else {
        room_for_a_turn(ports)?;
        limits::check_tokens(store, &ports.limits, owner).await?;
        limits::take_send(ports, owner).await?;
    }
    let item = QueuedMessage {
        id: req.id.clone(),
        text: req.text.clone(),
        created_at: Timestamp::from_millis(now_ms()),
        permission_mode: req.permission_mode,
    };
    let (outcome, turn) = store_turn(store, &ports.limits, owner, session_id, &item, false).await?;
    match outcome {
        StartOutcome::Started { message, session } => {
            let response = SendMessageResponse { message, session };
            announce_start(ports, &rec.target(), &turn, &response).await?;
            Ok(Sent::Started(response))
        }
        StartOutcome::Duplicate(message) => Ok(Sent::AlreadyStored(SendMessageResponse {
            message,
            session: rec.summary,
        })),
        // A turn started in between: the message waits for it.
        StartOutcome::Running => match queue::enqueue(ports, owner, &rec, &req).await? {
            Some(queued) => Ok(Sent::Queued(queued)),
            None => Err(ServiceError::TurnRunning),
        },
        StartOutcome::NotQueued => Err(ServiceError::TurnRunning),
        StartOutcome::NotFound => Err(ServiceError::NotFound),
    }
}

/// A user message as a turn: a place among the owner's running turns taken,
/// then the message and the turn stored in one write (taken out of the
/// queue, `from_queue`). The caller has checked the other limits.
pub(super) async fn store_turn(
    store: &dyn Store,
    limits: &Limits,
    owner: &str,
    session_id: &SessionId,
    item: &QueuedMessage,
    from_queue: bool,
) -> Result<(StartOutcome, ActiveTurn), ServiceError> {
    let place = limits::take_turn(store, limits, owner, session_id).await?;
    let now = now_ms();
    let turn = ActiveTurn::new(now);
    let new = NewTurn {
        message: user_message(item.id.clone(), session_id, &turn.turn_id, &item.text, now),
        turn: turn.clone(),
        permission_mode: item.permission_mode,
        now_ms: now,
        from_queue,
    };
    let outcome = store.start_turn(owner, session_id, &new).await;
    if !matches!(outcome, Ok(StartOutcome::Started { .. })) {
        place.unused(store).await;
    }
    Ok((outcome?, turn))
}

/// A turn stored now: handed to Dispatch, then told to the session's
/// subscribers and the owner.
pub(super) async fn announce_start(
    ports: &Ports,
    session: &SessionRef,
    turn: &ActiveTurn,
    started: &SendMessageResponse,
) -> Result<(), ServiceError> {
    let (store, push) = (&*ports.store, &*ports.push);
    // Dispatch before fan-out, as for a create.
    let dispatched = start(ports, &session.owner, &session.id, turn).await;
    notify::message_created(store, push, session, started.message.clone()).await;
    notify::session_updated(store, push, &session.owner, &started.session).await;
    dispatched
}

/// Asks a running turn to stop and waits briefly for it to close.
async fn stop_and_wait(
    store: &dyn Store,
    push: &dyn Push,
    owner: &str,
    session_id: &SessionId,
) -> Result<(bool, SessionRecord), ServiceError> {
    let rec = store
        .request_stop(owner, session_id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let Some(turn) = rec.turn.clone() else {
        return Ok((false, rec));
    };
    if turn.is_parked() {
        // No runner to see the stop: end the turn here.
        stop_parked(store, push, &rec, &turn).await?;
        let rec = store
            .get_session(session_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        return Ok((true, rec));
    }
    let rec = reap_if_stale(store, push, rec).await?;
    if rec.turn.is_none() {
        return Ok((true, rec));
    }
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    let mut delay = Duration::from_millis(5);
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
        let now = store
            .get_session(session_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let closed = now.turn.as_ref().is_none_or(|t| t.turn_id != turn.turn_id);
        if closed || tokio::time::Instant::now() >= deadline {
            return Ok((true, now));
        }
    }
}

/// Stops a parked turn: what it waits on is denied and it ends as stopped
/// with its reply so far. A runner that resumed it meanwhile finds it gone.
async fn stop_parked(
    store: &dyn Store,
    push: &dyn Push,
    rec: &SessionRecord,
    turn: &ActiveTurn,
) -> Result<(), ServiceError> {
    for r in turn.pending() {
        super::requests::deny_for_server(
            store,
            push,
            &rec.target(),
            &r.id,
            "Stopped by the person.",
        )
        .await?;
    }
    let content = turn.live.clone().map(|l| l.content).unwrap_or_default();
    close_turn(
        store,
        push,
        &rec.target(),
        turn,
        content,
        TurnOutcome::Stopped,
        None,
    )
    .await;
    Ok(())
}

/// `POST /api/sessions/{id}/stop`.
pub async fn stop(
    ports: &Ports,
    owner: &str,
    session_id: &SessionId,
) -> Result<Stopped<SessionSummary>, ServiceError> {
    let (store, push) = (&*ports.store, &*ports.push);
    let parked = store
        .get_session(session_id)
        .await?
        .and_then(|r| r.turn)
        .is_some_and(|t| t.is_parked());
    let (was_running, mut rec) = stop_and_wait(store, push, owner, session_id).await?;
    // A parked turn was ended here, not by a runner: what "send now" put
    // first in the queue starts here too.
    if parked
        && let Some(job) = queue::start_next(
            store,
            push,
            &ports.limits,
            &rec.target(),
            TurnOutcome::Stopped,
        )
        .await
    {
        let turn = store.active_turn(session_id, &job.turn_id).await?;
        if let Some(turn) = turn {
            start(ports, owner, session_id, &turn).await?;
        }
        rec = owned(store, owner, session_id).await?;
    }
    Ok(if was_running {
        Stopped::Stopped(rec.summary)
    } else {
        Stopped::WasIdle(rec.summary)
    })
}

/// `DELETE /api/sessions/{id}`: stops a running turn first.
pub async fn delete(
    ports: &Ports,
    owner: &str,
    session_id: &SessionId,
) -> Result<(), ServiceError> {
    let (store, push) = (&*ports.store, &*ports.push);
    owned(store, owner, session_id).await?;
    stop_and_wait(store, push, owner, session_id).await?;
    let version = store
        .delete_session(owner, session_id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    notify::to_owner(
        store,
        push,
        owner,
        &ServerEvent::SessionDeleted {
            session_id: session_id.clone(),
            version,
        },
    )
    .await;
    Ok(())
}

/// `PATCH /api/sessions/{id}`
pub async fn update(
    ports: &Ports,
    owner: &str,
    session_id: &SessionId,
    req: UpdateSessionRequest,
) -> Result<SessionSummary, ServiceError> {
    let title = req.title.as_deref().map(validate::title).transpose()?;
    if let Some(m) = req.permission_mode {
        ports.permit(m)?;
    }
    if title.is_none() && req.permission_mode.is_none() {
        return Err(ServiceError::Invalid(
            "give a title or a permissionMode to change".into(),
        ));
    }
    let patch = SessionPatch {
        title: title.map(str::to_string),
        permission_mode: req.permission_mode,
        now_ms: now_ms(),
    };
    let session = ports
        .store
        .patch_session(owner, session_id, &patch)
        .await?
        .ok_or(ServiceError::NotFound)?;
    notify::session_updated(&*ports.store, &*ports.push, owner, &session).await;
    Ok(session)
}

/// `GET /api/sessions/{id}`
pub async fn detail(
    store: &dyn Store,
    owner: &str,
    session_id: &SessionId,
) -> Result<SessionDetail, ServiceError> {
    let rec = owned(store, owner, session_id).await?;
    let (messages, has_more) = store
        .messages(
            session_id,
            MessageRange::Latest {
                limit: validate::DEFAULT_PAGE,
            },
        )
        .await?;
    let pending = rec
        .turn
        .as_ref()
        .map(|t| t.pending().cloned().collect())
        .unwrap_or_default();
    let live = rec.turn.and_then(|t| t.live);
    Ok(SessionDetail {
        session: rec.summary,
        messages,
        has_more,
        live,
        pending,
        queued: rec.queue.items,
    })
}

/// `GET /api/sessions/{id}/messages`
pub async fn messages(
    store: &dyn Store,
    owner: &str,
    session_id: &SessionId,
    after_seq: Option<u64>,
    before_seq: Option<u64>,
    limit: Option<usize>,
) -> Result<MessagePage, ServiceError> {
    owned(store, owner, session_id).await?;
    let limit = validate::limit(limit)?;
    let range = match (after_seq, before_seq) {
        (Some(_), Some(_)) => {
            return Err(ServiceError::Invalid(
                "give afterSeq or beforeSeq, not both".into(),
            ));
        }
        (Some(seq), None) => MessageRange::After { seq, limit },
        (None, Some(seq)) => MessageRange::Before { seq, limit },
        (None, None) => MessageRange::Latest { limit },
    };
    let (messages, has_more) = store.messages(session_id, range).await?;
    Ok(MessagePage { messages, has_more })
}

/// The most of a session's history an agent is given: this many bytes of
/// message content (as JSON), counted from the newest message back. The
/// newest message always goes, whatever its size. Providers cut far
/// shorter (a 200,000-token context is under 1 MiB of text); the budget
/// bounds what a turn reads and holds.
pub const HISTORY_BUDGET_BYTES: usize = 2 * 1024 * 1024;

/// The history an agent is given: the newest messages within
/// [`HISTORY_BUDGET_BYTES`], oldest first, starting with a user message.
pub async fn history(
    store: &dyn TurnStore,
    session_id: &SessionId,
) -> Result<Vec<Message>, ServiceError> {
    let mut out: Vec<Message> = Vec::new();
    let mut used = 0;
    'pages: loop {
        let range = match out.last() {
            None => MessageRange::Latest {
                limit: validate::MAX_PAGE,
            },
            Some(m) => MessageRange::Before {
                seq: m.seq,
                limit: validate::MAX_PAGE,
            },
        };
        let (page, more) = store.messages(session_id, range).await?;
        for m in page.into_iter().rev() {
            let size = serde_json::to_vec(&m.content).map_or(0, |v| v.len());
            if !out.is_empty() && used + size > HISTORY_BUDGET_BYTES {
                break 'pages;
            }
            used += size;
            out.push(m);
        }
        if !more {
            break;
        }
    }
    out.reverse();
    // A conversation an agent reads starts with the user.
    while out.len() > 1 && out[0].role != Role::User {
        out.remove(0);
    }
    Ok(out)
}

/// `GET /api/sessions`
pub async fn list(
    store: &dyn SessionStore,
    owner: &str,
    project_id: Option<ProjectId>,
    q: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
) -> Result<SessionPage, ServiceError> {
    let text = q.map(|q| q.trim().to_lowercase()).filter(|q| !q.is_empty());
    if text
        .as_ref()
        .is_some_and(|q| q.chars().count() > validate::MAX_TITLE_CHARS)
    {
        return Err(ServiceError::Invalid(format!(
            "q is longer than {} characters",
            validate::MAX_TITLE_CHARS
        )));
    }
    let after = cursor.as_deref().map(decode_cursor).transpose()?;
    let query = SessionQuery {
        project_id,
        text,
        limit: validate::limit(limit)?,
        after,
    };
    let (sessions, next) = store.list_sessions(owner, &query).await?;
    Ok(SessionPage {
        sessions,
        next_cursor: next.map(|c| encode_cursor(&c)),
    })
}

pub fn encode_cursor(c: &ListCursor) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

fn decode_cursor(s: &str) -> Result<ListCursor, ServiceError> {
    let bad = || ServiceError::Invalid("cursor is not one this server gave out".into());
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// `GET /api/projects`
pub async fn projects(
    store: &dyn SessionStore,
    owner: &str,
) -> Result<ProjectsResponse, ServiceError> {
    Ok(ProjectsResponse {
        projects: store.list_projects(owner).await?,
    })
}

/// An export's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Markdown,
    Json,
}

/// The whole session as a document, streamed: a page of messages is read
/// and written at a time, so a long session is never held whole. A store
/// failure part way ends the stream with an error (the download breaks
/// rather than ends short).
pub async fn export_stream(
    store: std::sync::Arc<dyn Store>,
    owner: &str,
    session_id: &SessionId,
    format: ExportFormat,
) -> Result<
    (
        SessionSummary,
        BoxStream<'static, Result<Bytes, ServiceError>>,
    ),
    ServiceError,
> {
    let rec = owned(&*store, owner, session_id).await?;
    let summary = rec.summary;
    let head = match format {
        ExportFormat::Markdown => super::export::markdown_head(&summary),
        ExportFormat::Json => format!(
            "{{\"session\":{},\"messages\":[",
            serde_json::to_string(&summary).map_err(ServiceError::internal)?
        ),
    };
    struct Pages {
        store: std::sync::Arc<dyn Store>,
        id: SessionId,
        after: u64,
        first: bool,
        done: bool,
    }
    let pages = Pages {
        store,
        id: session_id.clone(),
        after: 0,
        first: true,
        done: false,
    };
    let body = futures::stream::try_unfold(pages, move |mut p| async move {
        if p.done {
            return Ok(None);
        }
        let (page, more) = p
            .store
            .messages(
                &p.id,
                MessageRange::After {
                    seq: p.after,
                    limit: validate::MAX_PAGE,
                },
            )
            .await?;
        p.after = page.last().map_or(p.after, |m| m.seq);
        p.done = !more;
        let mut chunk = match format {
            ExportFormat::Markdown => super::export::markdown_messages(&page),
            ExportFormat::Json => {
                let mut out = String::new();
                for m in &page {
                    if !p.first {
                        out.push(',');
                    }
                    p.first = false;
                    out.push('\n');
                    out.push_str(&serde_json::to_string(m).map_err(ServiceError::internal)?);
                }
                out
            }
        };
        if p.done && format == ExportFormat::Json {
            chunk.push_str("\n]}\n");
        }
        Ok(Some((Bytes::from(chunk), p)))
    });
    let stream = futures::stream::once(async move { Ok(Bytes::from(head)) }).chain(body);
    Ok((summary, stream.boxed()))
}

/// A parked turn whose request is answered (its resume was lost) or has
/// expired (the resumed turn denies it) is dispatched to be resumed.
async fn resume_if_due(
    store: &dyn Store,
    dispatch: &dyn Dispatch,
    session_id: &SessionId,
    turn: &ActiveTurn,
) {
    let now = now_ms();
    let due = turn.parked.as_ref().is_some_and(|p| {
        turn.requests
            .iter()
            .find(|r| r.id == p.request_id)
            .is_none_or(|r| r.resolution.is_some() || r.expires_at.millis() <= now)
    });
    if due {
        super::requests::resume_parked(store, dispatch, session_id).await;
    }
}

/// On start of a process that owns every runner (the local gateway): closes
/// every turn left running as interrupted, keeping its checkpointed reply.
pub async fn recover_interrupted(
    store: &dyn Store,
    push: &dyn Push,
) -> Result<usize, ServiceError> {
    let running = store.running_turns().await?;
    let n = running.len();
    for (_, session_id, turn) in running {
        let Some(rec) = store.get_session(&session_id).await? else {
            continue;
        };
        let content = turn.live.clone().map(|l| l.content).unwrap_or_default();
        close_turn(
            store,
            push,
            &rec.target(),
            &turn,
            content,
            TurnOutcome::Interrupted,
            Some("The reply was interrupted: the server stopped while writing it.".into()),
        )
        .await;
    }
    Ok(n)
}

/// Closes every turn whose runner stopped answering (a worker that died),
/// as `interrupted` with its checkpointed reply. Returns how many it closed.
/// On AWS a schedule runs this; locally the next request on the session does.
pub async fn sweep_stale(
    store: &dyn Store,
    push: &dyn Push,
    dispatch: Option<&dyn Dispatch>,
) -> Result<usize, ServiceError> {
    let mut closed = 0;
    for (_, session_id, turn) in store.running_turns().await? {
        if turn.is_parked() {
            if let Some(d) = dispatch {
                resume_if_due(store, d, &session_id, &turn).await;
            }
            continue;
        }
        if now_ms() - turn.heartbeat_ms < STALE_TURN_MS {
            continue;
        }
        if let Some(rec) = store.get_session(&session_id).await? {
            let before = rec.turn.as_ref().map(|t| t.turn_id.clone());
            match reap_if_stale(store, push, rec).await {
                Ok(after) if after.turn.as_ref().map(|t| &t.turn_id) == before.as_ref() => {}
                Ok(_) | Err(ServiceError::NotFound) => closed += 1,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(closed)
}
