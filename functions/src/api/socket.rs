//! The socket handlers, as API Gateway's WebSocket routes call them:
//! `$connect`, `$disconnect`, and the route for every client frame. Answers
//! go out through `Push`, never as a return value, exactly as on AWS.

use super::auth::Auth;
use crate::clock::{now, now_ms};
use crate::domain::notify::to_connection;
use crate::domain::subscriptions::subscribe;
use crate::error::ServiceError;
use crate::ports::{ConnectionStore, Push, Store};
use confab_protocol::rest::ErrorCode;
use confab_protocol::socket::parse_client_frame;
use confab_protocol::{ClientFrame, ConnectionId, ServerEvent, SessionId};

/// Sockets one owner may hold at once, unless configured
/// (`CONFAB_MAX_SOCKETS_PER_OWNER`).
pub const MAX_SOCKETS_PER_OWNER: usize = 32;

/// `$connect`: checks the token and the owner's socket count, and stores
/// the connection with its owner. Nothing may be sent to the connection yet.
/// The count is read, then the row written: racing connects can pass it by
/// a few, never without bound.
pub async fn connect(
    store: &dyn ConnectionStore,
    auth: &Auth,
    connection_id: &ConnectionId,
    token: Option<&str>,
    max_sockets: usize,
) -> Result<String, ServiceError> {
    let owner = auth
        .owner(token)
        .map_err(|_| ServiceError::Unauthorized("a valid token is required"))?;
    if store.owner_connections(&owner).await?.len() >= max_sockets {
        return Err(ServiceError::TooMany(format!(
            "you have {max_sockets} sockets open, the most allowed; close a tab first"
        )));
    }
    store
        .put_connection(connection_id, &owner, now_ms())
        .await?;
    Ok(owner)
}

/// `$disconnect`: forgets the connection and its subscriptions.
pub async fn disconnect(
    store: &dyn ConnectionStore,
    connection_id: &ConnectionId,
) -> Result<(), ServiceError> {
    store.delete_connection(connection_id).await?;
    Ok(())
}

/// Every client frame. Bad frames get an `error` frame and change nothing.
pub async fn route(
    store: &dyn Store,
    push: &dyn Push,
    connection_id: &ConnectionId,
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
    Frame(ErrorCode, String, Option<SessionId>),
    Service(ServiceError, Option<SessionId>),
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Self {
        Refusal::Service(e, None)
    }
}

async fn handle(
    store: &dyn Store,
    push: &dyn Push,
    connection_id: &ConnectionId,
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
            connection_id: connection_id.clone(),
            server_time: now(),
        })),
        ClientFrame::Ping => Ok(Some(ServerEvent::Pong)),
        ClientFrame::Unsubscribe { session_id } => {
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
