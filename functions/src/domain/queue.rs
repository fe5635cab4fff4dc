//! Messages sent while a turn runs: queued on the session, shown in every
//! tab (`session.queue`), editable and cancellable until they start, and
//! started one by one as turns end.
//!
//! The queue moves on by itself after a completed reply. A stopped, failed
//! or interrupted reply holds it: what waits stays, shown, until the person
//! starts it ("send now") or cancels it. "Send now" while a turn runs puts
//! the message first and stops the turn; it starts however that turn ends.

use super::limits;
use super::notify;
use super::records::{QueueChange, QueueOutcome, SessionRecord, SessionRef};
use super::sessions::{announce_start, owned, reap_if_stale, room_for_a_turn, store_turn};
use crate::clock::now_ms;
use crate::error::ServiceError;
use crate::ports::{Ports, Push, Store, TurnJob};
use confab_protocol::model::{QueuedMessage, TurnOutcome};
use confab_protocol::rest::{QueueEnvelope, QueuedReply, SendMessageRequest, SendMessageResponse};
use confab_protocol::{MessageId, MessageText, ServerEvent, SessionId, Timestamp};

use super::records::{MAX_QUEUED, MAX_QUEUED_BYTES, StartOutcome};

/// Tells the session's subscribers what its queue holds now.
pub async fn announce(
    store: &dyn Store,
    push: &dyn Push,
    session: &SessionRef,
    queued: Vec<QueuedMessage>,
) {
    let event = ServerEvent::SessionQueue {
        session_id: session.id.clone(),
        queued,
    };
    notify::to_subscribers(store, push, session, &event).await
}

fn full() -> ServiceError {
    ServiceError::TooMany(format!(
        "this session has as many messages waiting as it may ({MAX_QUEUED}, {} KiB in all): cancel one or wait for the reply",
        MAX_QUEUED_BYTES / 1024
    ))
}

/// Queues `req` behind the running turn of `rec`; None when no turn runs
/// (any more): the caller starts it instead.
pub async fn enqueue(
    ports: &Ports,
    owner: &str,
    rec: &SessionRecord,
    req: &SendMessageRequest,
) -> Result<Option<QueuedReply>, ServiceError> {
    let item = QueuedMessage {
        id: req.id.clone(),
        text: req.text.clone(),
        created_at: Timestamp::from_millis(now_ms()),
        permission_mode: req.permission_mode,
    };
    let change = QueueChange::Add(item);
    match ports
        .store
        .change_queue(owner, &rec.summary.id, &change)
        .await?
    {
        QueueOutcome::Changed(queued) => {
            let item = queued.iter().find(|q| q.id == req.id).cloned();
            announce(&*ports.store, &*ports.push, &rec.target(), queued).await;
            let queued = item.ok_or_else(|| ServiceError::Conflict("not queued".into()))?;
            Ok(Some(QueuedReply {
                queued,
                session: rec.summary.clone(),
            }))
        }
        QueueOutcome::Idle => Ok(None),
        QueueOutcome::Full => Err(full()),
        QueueOutcome::NotFound => Err(ServiceError::NotFound),
        QueueOutcome::NotQueued => Err(ServiceError::Conflict("not queued".into())),
    }
}

/// Why a queued message cannot be changed: it started (409), or there is
/// no such message waiting (404).
async fn not_queued(
    store: &dyn Store,
    session_id: &SessionId,
    message_id: &MessageId,
) -> ServiceError {
    match store.find_message(session_id, message_id).await {
        Ok(Some(_)) => ServiceError::Conflict(
            "this message has started already: it can no longer be changed".into(),
        ),
        Ok(None) => ServiceError::NotFound,
        Err(e) => e.into(),
    }
}

/// Applies a change that needs no turn: edit or cancel.
async fn change(
    ports: &Ports,
    owner: &str,
    session_id: &SessionId,
    message_id: &MessageId,
    change: QueueChange,
) -> Result<Vec<QueuedMessage>, ServiceError> {
    let store = &*ports.store;
    let rec = owned(store, owner, session_id).await?;
    match store.change_queue(owner, session_id, &change).await? {
        QueueOutcome::Changed(queued) => {
            announce(store, &*ports.push, &rec.target(), queued.clone()).await;
            Ok(queued)
        }
        QueueOutcome::Full => Err(full()),
        QueueOutcome::NotQueued => Err(not_queued(store, session_id, message_id).await),
        QueueOutcome::NotFound | QueueOutcome::Idle => Err(ServiceError::NotFound),
    }
}

/// `PATCH /api/sessions/{id}/queue/{messageId}`: new text.
pub async fn edit(
    ports: &Ports,
    owner: &str,
    session_id: &SessionId,
    message_id: &MessageId,
    text: MessageText,
) -> Result<QueuedMessage, ServiceError> {
    let edit = QueueChange::Edit {
        id: message_id.clone(),
        text,
    };
    let queued = change(ports, owner, session_id, message_id, edit).await?;
    queued
        .into_iter()
        .find(|q| &q.id == message_id)
        .ok_or_else(|| ServiceError::Conflict("this message is no longer waiting".into()))
}

/// `DELETE /api/sessions/{id}/queue/{messageId}`.
pub async fn cancel(
    ports: &Ports,
    owner: &str,
    session_id: &SessionId,
    message_id: &MessageId,
) -> Result<(), ServiceError> {
    let cancel = QueueChange::Cancel(message_id.clone());
    change(ports, owner, session_id, message_id, cancel)
        .await
        .map(|_| ())
}

/// What "send now" did.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum StartedNow {
    /// No turn ran: the message started now.
    Started(SendMessageResponse),
    /// A turn runs: it was asked to stop, and the message starts next.
    Next(QueueEnvelope),
}

/// `POST /api/sessions/{id}/queue/{messageId}/start`.
pub async fn start_now(
    ports: &Ports,
    owner: &str,
    session_id: &SessionId,
    message_id: &MessageId,
) -> Result<StartedNow, ServiceError> {
    let (store, push) = (&*ports.store, &*ports.push);
    let rec = owned(store, owner, session_id).await?;
    let rec = reap_if_stale(store, push, rec).await?;
    for _ in 0..2 {
        let next = QueueChange::Next(message_id.clone());
        match store.change_queue(owner, session_id, &next).await? {
            QueueOutcome::Changed(queued) => {
                announce(store, push, &rec.target(), queued.clone()).await;
                // A turn parked on the person has no runner to see the stop.
                let parked = store
                    .get_session(session_id)
                    .await?
                    .and_then(|r| r.turn)
                    .is_some_and(|t| t.is_parked());
                let session = if parked {
                    match super::sessions::stop(ports, owner, session_id).await? {
                        super::sessions::Stopped::Stopped(s)
                        | super::sessions::Stopped::WasIdle(s) => s,
                    }
                } else {
                    rec.summary
                };
                return Ok(StartedNow::Next(QueueEnvelope { session, queued }));
            }
            QueueOutcome::Idle => {}
            QueueOutcome::NotQueued => {
                return Err(not_queued(store, session_id, message_id).await);
            }
            QueueOutcome::Full | QueueOutcome::NotFound => return Err(ServiceError::NotFound),
        }
        // No turn runs: start it here.
        let rec = owned(store, owner, session_id).await?;
        let Some(item) = rec
            .queue
            .items
            .iter()
            .find(|q| &q.id == message_id)
            .cloned()
        else {
            return Err(not_queued(store, session_id, message_id).await);
        };
        room_for_a_turn(ports)?;
        limits::check_tokens(store, &ports.limits, owner).await?;
        let (outcome, turn) =
            store_turn(store, &ports.limits, owner, session_id, &item, true).await?;
        match outcome {
            StartOutcome::Started { message, session } => {
                let started = SendMessageResponse { message, session };
                announce_queue_of(store, push, &rec.target()).await;
                announce_start(ports, &rec.target(), &turn, &started).await?;
                return Ok(StartedNow::Started(started));
            }
            StartOutcome::Duplicate(message) => {
                return Ok(StartedNow::Started(SendMessageResponse {
                    message,
                    session: rec.summary,
                }));
            }
            StartOutcome::NotQueued => {
                return Err(not_queued(store, session_id, message_id).await);
            }
            StartOutcome::NotFound => return Err(ServiceError::NotFound),
            // A turn started in between: put this one first, as asked.
            StartOutcome::Running => {}
        }
    }
    Err(ServiceError::TurnRunning)
}

/// Reads the session's queue and tells its subscribers.
async fn announce_queue_of(store: &dyn Store, push: &dyn Push, session: &SessionRef) {
    match store.get_session(&session.id).await {
        Ok(Some(rec)) if rec.incarnation == session.incarnation => {
            announce(store, push, session, rec.queue.items).await
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(
            error = &e as &dyn std::error::Error,
            session = %session.id,
            "reading the queue to announce it failed"
        ),
    }
}

/// After a turn of `session` ended with `outcome`: starts the message that
/// waits next, if the queue moves on (see the module's doc), and returns
/// its turn for the caller to run. A queued message that cannot start now
/// (the owner's limits) stays queued.
pub async fn start_next(
    store: &dyn Store,
    push: &dyn Push,
    limits: &crate::ports::Limits,
    session: &SessionRef,
    outcome: TurnOutcome,
) -> Option<TurnJob> {
    let rec = match store.get_session(&session.id).await {
        Ok(Some(r)) if r.owner == session.owner && r.incarnation == session.incarnation => r,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(error = &e as &dyn std::error::Error, session = %session.id, "reading the queue failed; it waits");
            return None;
        }
    };
    if rec.turn.is_some() {
        return None;
    }
    let item = rec.queue.next_after(outcome)?.clone();
    let started = async {
        limits::check_tokens(store, limits, &session.owner).await?;
        store_turn(store, limits, &session.owner, &session.id, &item, true).await
    };
    match started.await {
        Ok((
            StartOutcome::Started {
                message,
                session: summary,
            },
            turn,
        )) => {
            announce_queue_of(store, push, session).await;
            notify::message_created(store, push, session, message).await;
            notify::session_updated(store, push, &session.owner, &summary).await;
            Some(TurnJob {
                owner: session.owner.clone(),
                session_id: session.id.clone(),
                turn_id: turn.turn_id,
            })
        }
        Ok(_) => None,
        Err(e) => {
            tracing::info!(error = &e as &dyn std::error::Error, session = %session.id, "the next queued message waits");
            None
        }
    }
}
