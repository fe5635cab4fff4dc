//! The socket handlers, as API Gateway's WebSocket routes call them:
//! `$connect`, `$disconnect`, and the route for every client frame. Answers
//! go out through `Push`, never as a return value, exactly as on AWS.

use crate::auth::Auth;
use crate::clock::{new_id, now, now_ms};
use crate::domain::frames::{encode, trim_live};
use crate::domain::notify::to_connection;
use crate::domain::sessions::reap_if_stale;
use crate::error::ServiceError;
use crate::ports::{MessageRange, Push, Store, SubscribeOutcome};
use confab_protocol::rest::ErrorCode;
use confab_protocol::socket::{MAX_SERVER_FRAME_BYTES, MAX_SUBSCRIPTIONS, parse_client_frame};
use confab_protocol::{ClientFrame, ServerEvent, validate};

/// Messages a `subscribed` frame carries at most.
const SUBSCRIBE_PAGE: usize = validate::MAX_PAGE;

/// `$connect`: checks the token and stores the connection with its owner.
/// Nothing may be sent to the connection yet.
pub async fn connect(
    store: &dyn Store,
    auth: &Auth,
    connection_id: &str,
    token: Option<&str>,
) -> Result<String, ServiceError> {
    let owner = auth
        .owner(token)
        .map_err(|_| ServiceError::Unauthorized("a valid token is required"))?;
    store
        .put_connection(connection_id, &owner, now_ms())
        .await?;
    Ok(owner)
}

/// `$disconnect`: forgets the connection and its subscriptions.
pub async fn disconnect(store: &dyn Store, connection_id: &str) -> Result<(), ServiceError> {
    store.delete_connection(connection_id).await?;
    Ok(())
}

/// Every client frame. Bad frames get an `error` frame and change nothing.
pub async fn route(
    store: &dyn Store,
    push: &dyn Push,
    connection_id: &str,
    body: &str,
) -> Result<(), ServiceError> {
    let reply = match handle(store, push, connection_id, body).await {
        Ok(Some(event)) => event,
        Ok(None) => return Ok(()),
        Err(e) => {
            let (code, message, session_id) = match e {
                Refusal::Frame(code, message, session_id) => (code, message, session_id),
                Refusal::Service(ServiceError::Internal(source), session_id) => {
                    tracing::error!(
                        error = &*source as &dyn std::error::Error,
                        "socket frame failed"
                    );
                    (
                        ErrorCode::Internal,
                        "something went wrong on our side; try again".into(),
                        session_id,
                    )
                }
                Refusal::Service(other, session_id) => {
                    (other.code(), other.to_string(), session_id)
                }
            };
            ServerEvent::Error {
                code,
                message,
                session_id,
            }
        }
    };
    to_connection(store, push, connection_id, &reply).await;
    Ok(())
}

enum Refusal {
    Frame(ErrorCode, String, Option<String>),
    Service(ServiceError, Option<String>),
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Self {
        Refusal::Service(e, None)
    }
}

async fn handle(
    store: &dyn Store,
    push: &dyn Push,
    connection_id: &str,
    body: &str,
) -> Result<Option<ServerEvent>, Refusal> {
    let frame =
        parse_client_frame(body).map_err(|e| Refusal::Frame(e.code(), e.to_string(), None))?;
    let Some(owner) = store
        .connection_owner(connection_id)
        .await
        .map_err(ServiceError::from)?
    else {
        return Err(Refusal::Frame(
            ErrorCode::Unauthorized,
            "this connection is not known; reconnect".into(),
            None,
        ));
    };
    match frame {
        ClientFrame::Hello => Ok(Some(ServerEvent::Ready {
            connection_id: connection_id.to_string(),
            server_time: now(),
        })),
        ClientFrame::Ping => Ok(Some(ServerEvent::Pong)),
        ClientFrame::Unsubscribe { session_id } => {
            validate::id("sessionId", &session_id)
                .map_err(|e| Refusal::Service(e.into(), Some(session_id.clone())))?;
            store
                .unsubscribe(connection_id, &session_id)
                .await
                .map_err(ServiceError::from)?;
            Ok(Some(ServerEvent::Unsubscribed { session_id }))
        }
        ClientFrame::Subscribe {
            session_id,
            after_seq,
        } => {
            let sid = Some(session_id.clone());
            subscribe(store, push, connection_id, &owner, &session_id, after_seq)
                .await
                .map(Some)
                .map_err(|e| Refusal::Service(e, sid))
        }
    }
}

async fn subscribe(
    store: &dyn Store,
    push: &dyn Push,
    connection_id: &str,
    owner: &str,
    session_id: &str,
    after_seq: u64,
) -> Result<ServerEvent, ServiceError> {
    validate::id("sessionId", session_id)?;
    let rec = match store.get_session(session_id).await? {
        Some(r) if r.owner == owner => r,
        _ => return Err(ServiceError::NotFound),
    };
    reap_if_stale(store, push, rec).await?;
    // Subscribe first, then read: whatever is stored after this read reaches
    // the connection as an event, so nothing falls between the two.
    match store
        .subscribe(connection_id, session_id, &new_id(), MAX_SUBSCRIPTIONS)
        .await?
    {
        SubscribeOutcome::Subscribed => {}
        SubscribeOutcome::NotFound => return Err(ServiceError::NotFound),
        SubscribeOutcome::TooMany => {
            return Err(ServiceError::Invalid(format!(
                "a connection holds at most {MAX_SUBSCRIPTIONS} subscriptions; unsubscribe first"
            )));
        }
    }
    let rec = store
        .get_session(session_id)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let (messages, has_more) = store
        .messages(
            session_id,
            MessageRange::After {
                seq: after_seq,
                limit: SUBSCRIBE_PAGE,
            },
        )
        .await?;
    let live = rec.turn.and_then(|t| t.live);
    Ok(fit_subscribed(
        session_id,
        rec.summary,
        messages,
        has_more,
        live,
    ))
}

/// A `subscribed` frame within the frame limit: fewer messages (the client
/// subscribes again from where it got to) and a shorter in-flight reply (the
/// runner sends the whole one next) when needed. A single message larger than
/// a frame still goes whole.
fn fit_subscribed(
    session_id: &str,
    session: confab_protocol::SessionSummary,
    mut messages: Vec<confab_protocol::Message>,
    mut has_more: bool,
    mut live: Option<confab_protocol::LiveReply>,
) -> ServerEvent {
    loop {
        let event = ServerEvent::Subscribed {
            session_id: session_id.to_string(),
            session: session.clone(),
            messages: messages.clone(),
            has_more,
            live: live.clone(),
        };
        let size = encode(&event).len();
        if size <= MAX_SERVER_FRAME_BYTES {
            return event;
        }
        if messages.len() > 1 {
            let keep = messages.len() / 2;
            messages.truncate(keep);
            has_more = true;
        } else if let Some(l) = &live {
            let over = size - MAX_SERVER_FRAME_BYTES;
            let have = serde_json::to_vec(l).map(|v| v.len()).unwrap_or(0);
            live = trim_live(l, have.saturating_sub(over + 64));
            if live.as_ref().is_some_and(|l| l.content.is_empty()) || have <= over {
                live = None;
            }
        } else {
            return event;
        }
    }
}
