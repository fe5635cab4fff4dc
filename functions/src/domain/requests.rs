//! Requests to the person: a turn that needs a tool approved or a question
//! answered stores the request with the turn and waits; the first answer,
//! from any tab or device, wins; a request nobody answers in time, or whose
//! turn is stopped, is denied by the server.

use super::notify;
use super::records::{Resolved, SessionRef};
use crate::clock::{new_id, now_ms};
use crate::error::ServiceError;
use crate::ports::{Ask, Dispatch, Ports, Push, Store, TurnJob};
use confab_protocol::model::{Decision, PendingRequest, Resolution, SessionSummary};
use confab_protocol::rest::AnswerRequest;
use confab_protocol::{RequestId, ServerEvent, SessionId, Timestamp, TurnId};

/// The longest message a denial may carry to the agent, in characters.
pub const MAX_ANSWER_MESSAGE_CHARS: usize = 4_000;
/// The most answers one question request may carry.
pub const MAX_ANSWERS: usize = 16;

/// A request built from what the agent asked.
pub fn from_ask(
    ask: &Ask,
    session_id: &SessionId,
    turn_id: &TurnId,
    now: i64,
    timeout_ms: i64,
) -> PendingRequest {
    PendingRequest {
        id: new_id(),
        session_id: session_id.clone(),
        turn_id: turn_id.clone(),
        kind: ask.kind,
        tool: ask.tool.clone(),
        input: ask.input.clone(),
        reason: ask.reason.clone(),
        questions: ask.questions.clone(),
        created_at: Timestamp::from_millis(now),
        expires_at: Timestamp::from_millis(now.saturating_add(timeout_ms)),
        resolution: None,
    }
}

/// Tells the session's subscribers about a new request, and every tab of
/// the owner that the session waits.
pub async fn announce_created(
    store: &dyn Store,
    push: &dyn Push,
    session: &SessionRef,
    request: &PendingRequest,
    summary: &SessionSummary,
) {
    let event = ServerEvent::RequestCreated {
        session_id: session.id.clone(),
        request: request.clone(),
    };
    notify::to_subscribers(store, push, session, &event).await;
    notify::session_updated(store, push, &session.owner, summary).await;
}

/// Tells the session's subscribers how a request was answered, and every
/// tab of the owner the session's status after it.
pub async fn announce_resolved(
    store: &dyn Store,
    push: &dyn Push,
    session: &SessionRef,
    request: &PendingRequest,
    summary: &SessionSummary,
) {
    let Some(r) = &request.resolution else {
        return;
    };
    let event = ServerEvent::RequestResolved {
        session_id: session.id.clone(),
        request_id: request.id.clone(),
        decision: r.decision,
        message: r.message.clone(),
        answers: r.answers.clone(),
        resolved_at: r.resolved_at,
    };
    notify::to_subscribers(store, push, session, &event).await;
    notify::session_updated(store, push, &session.owner, summary).await;
}

/// What `POST /api/sessions/{id}/requests/{requestId}` did.
#[derive(Debug)]
pub enum Answered {
    /// This answer was the first.
    Now(PendingRequest),
    /// Another came first: the request as it was answered.
    Already(PendingRequest),
}

/// `POST /api/sessions/{id}/requests/{requestId}`: the person's answer.
pub async fn answer(
    ports: &Ports,
    owner: &str,
    session_id: &SessionId,
    request_id: &RequestId,
    body: AnswerRequest,
) -> Result<Answered, ServiceError> {
    if let Some(m) = &body.message
        && m.chars().count() > MAX_ANSWER_MESSAGE_CHARS
    {
        return Err(ServiceError::TooLarge(format!(
            "message is over the limit of {MAX_ANSWER_MESSAGE_CHARS} characters"
        )));
    }
    if body.answers.len() > MAX_ANSWERS
        || body.answers.iter().any(|(q, a)| {
            q.chars().count() > MAX_ANSWER_MESSAGE_CHARS
                || a.chars().count() > MAX_ANSWER_MESSAGE_CHARS
        })
    {
        return Err(ServiceError::TooLarge(format!(
            "answers are over the limit of {MAX_ANSWERS} answers of {MAX_ANSWER_MESSAGE_CHARS} characters"
        )));
    }
    let store = &*ports.store;
    let rec = match store.get_session(session_id).await? {
        Some(r) if r.owner == owner => r,
        _ => return Err(ServiceError::NotFound),
    };
    if let Some(asked) = rec
        .turn
        .as_ref()
        .and_then(|t| t.requests.iter().find(|r| &r.id == request_id))
        && asked.resolution.is_none()
        && !asked.questions.is_empty()
        && body.decision.allows()
        && let Some(q) = asked
            .questions
            .iter()
            .find(|q| !body.answers.contains_key(&q.question))
    {
        return Err(ServiceError::Invalid(format!(
            "answers must answer every question; missing: {:?}",
            q.question
        )));
    }
    let resolution = Resolution {
        decision: body.decision,
        message: body.message.filter(|m| !m.trim().is_empty()),
        answers: body.answers,
        resolved_at: Timestamp::from_millis(now_ms()),
    };
    match store
        .answer_request(owner, session_id, request_id, &resolution)
        .await?
    {
        Resolved::Now(request, summary) => {
            announce_resolved(store, &*ports.push, &rec.target(), &request, &summary).await;
            // A turn parked on it (no runner waits) goes on now.
            if rec.turn.as_ref().is_some_and(|t| t.parked.is_some()) {
                resume_parked(store, &*ports.dispatch, session_id).await;
            }
            Ok(Answered::Now(request))
        }
        Resolved::Already(request) => Ok(Answered::Already(request)),
        Resolved::NotFound => Err(ServiceError::NotFound),
    }
}

/// Denies a request for the server (the turn was stopped, or nobody
/// answered in time). Returns the answer the request ends with: this
/// denial, or the person's if theirs came first.
pub async fn deny_for_server(
    store: &dyn Store,
    push: &dyn Push,
    session: &SessionRef,
    request_id: &RequestId,
    why: &str,
) -> Result<Option<Resolution>, ServiceError> {
    let denial = Resolution {
        decision: Decision::Deny,
        message: Some(why.to_string()),
        answers: Default::default(),
        resolved_at: Timestamp::from_millis(now_ms()),
    };
    match store
        .answer_request(&session.owner, &session.id, request_id, &denial)
        .await?
    {
        Resolved::Now(request, summary) => {
            announce_resolved(store, push, session, &request, &summary).await;
            Ok(request.resolution)
        }
        Resolved::Already(request) => Ok(request.resolution),
        Resolved::NotFound => Ok(None),
    }
}

/// Dispatches the turn of `session_id` to be resumed if it is parked (no
/// runner holds it). A failed dispatch is logged: the sweep dispatches it
/// again, and the claim makes a second runner harmless.
pub async fn resume_parked(store: &dyn Store, dispatch: &dyn Dispatch, session_id: &SessionId) {
    let rec = match store.get_session(session_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(error = &e as &dyn std::error::Error, session = %session_id, "reading a parked turn failed; the sweep resumes it");
            return;
        }
    };
    let Some(turn) = rec.turn.as_ref().filter(|t| t.is_parked()) else {
        return;
    };
    let job = TurnJob {
        owner: rec.owner.clone(),
        session_id: session_id.clone(),
        turn_id: turn.turn_id.clone(),
    };
    if let Err(e) = dispatch.dispatch(job).await {
        tracing::warn!(error = &e as &dyn std::error::Error, session = %session_id, "resuming a parked turn failed; the sweep tries again");
    }
}
