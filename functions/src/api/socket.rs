//! The socket handlers, as API Gateway's WebSocket routes call them:
//! `$connect`, `$disconnect`, and the route for every client frame. Answers
//! go out through `Push`, never as a return value, exactly as on AWS.

use super::auth::Auth;
use crate::clock::{now, now_ms};
use crate::domain::notify::to_connection;
use crate::domain::records::Principal;
use crate::domain::subscriptions::subscribe;
use crate::error::ServiceError;
use crate::ports::{ConnectionStore, Push, Store};
use base64::Engine as _;
use confab_protocol::Timestamp;
use confab_protocol::rest::{ErrorCode, SocketTicket};
use confab_protocol::socket::parse_client_frame;
use confab_protocol::{ClientFrame, ConnectionId, ServerEvent, SessionId};

/// Sockets one owner may hold at once, unless configured
/// (`CONFAB_MAX_SOCKETS_PER_OWNER`).
pub const MAX_SOCKETS_PER_OWNER: usize = 32;

/// How long a socket ticket can be used.
pub const TICKET_TTL_MS: i64 = 60_000;

/// `POST /api/socket-ticket`: a one-use ticket that opens a socket as `who`,
/// until their token expires. 32 random bytes, kept in the store.
pub async fn ticket(
    store: &dyn ConnectionStore,
    who: &Principal,
) -> Result<SocketTicket, ServiceError> {
    let bytes: [u8; 32] = rand::random();
    let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let expires = now_ms() + TICKET_TTL_MS;
    store.put_ticket(&ticket, who, expires).await?;
    Ok(SocketTicket {
        ticket,
        expires_at: Timestamp::from_millis(expires),
    })
}

/// What a socket handshake carries (its query string).
#[derive(Clone, Copy, Debug, Default)]
pub struct Handshake<'a> {
    /// A ticket from `POST /api/socket-ticket`.
    pub ticket: Option<&'a str>,
    /// A bearer token: refused when auth is on (tokens stay out of URLs).
    pub token: Option<&'a str>,
}

/// `$connect`: takes the ticket, checks the owner's socket count, and
/// stores the connection with who it stands for and until when. Nothing may
/// be sent to the connection yet. The count is read, then the row written:
/// racing connects can pass it by a few, never without bound.
pub async fn connect(
    store: &dyn ConnectionStore,
    auth: &Auth,
    connection_id: &ConnectionId,
    handshake: Handshake<'_>,
    max_sockets: usize,
) -> Result<Principal, ServiceError> {
    let who = match auth {
        Auth::None => auth
            .principal(None)
            .await
            .map_err(|_| ServiceError::Unauthorized("a valid token is required"))?,
        Auth::Jwt(_) | Auth::Oidc(_) => match handshake {
            Handshake {
                ticket: Some(t), ..
            } => store
                .take_ticket(t, now_ms())
                .await?
                .filter(|who| !who.expired(now_ms()))
                .ok_or(ServiceError::Unauthorized(
                    "the ticket is not valid: it was used or has expired; get a new one",
                ))?,
            Handshake { token: Some(_), .. } => {
                return Err(ServiceError::Unauthorized(
                    "open the socket with a ticket from POST /api/socket-ticket, not a token",
                ));
            }
            _ => {
                return Err(ServiceError::Unauthorized(
                    "a ticket from POST /api/socket-ticket is required",
                ));
            }
        },
    };
    if store.owner_connections(&who.owner).await?.len() >= max_sockets {
        return Err(ServiceError::TooMany(format!(
            "you have {max_sockets} sockets open, the most allowed; close a tab first"
        )));
    }
    store.put_connection(connection_id, &who, now_ms()).await?;
    Ok(who)
}

/// What a socket whose token expired is told before it is closed.
pub const TOKEN_EXPIRED: &str =
    "the token this socket was opened with has expired: connect again with a fresh one";

/// Closes a connection whose token has expired: an `error` frame that says
/// so, then the close, and the connection is forgotten.
pub async fn expire(
    store: &dyn Store,
    push: &dyn Push,
    connection_id: &ConnectionId,
) -> Result<(), ServiceError> {
    let event = ServerEvent::Error {
        code: ErrorCode::TokenExpired,
        message: TOKEN_EXPIRED.into(),
        session_id: None,
    };
    to_connection(store, push, connection_id, &event).await;
    if let Err(e) = push.close(connection_id).await
        && !matches!(e, crate::ports::PushError::Gone)
    {
        tracing::warn!(
            error = &e as &dyn std::error::Error,
            "closing an expired socket failed"
        );
    }
    store.delete_connection(connection_id).await?;
    Ok(())
}

/// `renew`: the connection carries on until the expiry of the token the
/// ticket was issued for. The ticket must be the same owner's: a socket
/// never changes hands.
async fn renew(
    store: &dyn Store,
    connection_id: &ConnectionId,
    owner: &str,
    ticket: &str,
) -> Result<ServerEvent, Refusal> {
    let refused = || {
        Refusal::Frame(
            ErrorCode::Unauthorized,
            "the ticket is not valid: it was used, has expired or is another user's; get a new one"
                .into(),
            None,
        )
    };
    if ticket.is_empty() || ticket.len() > 128 {
        return Err(refused());
    }
    let fresh = store
        .take_ticket(ticket, now_ms())
        .await
        .map_err(ServiceError::from)?
        .filter(|who| who.owner == owner && !who.expired(now_ms()))
        .ok_or_else(refused)?;
    if !store
        .renew_connection(connection_id, &fresh)
        .await
        .map_err(ServiceError::from)?
    {
        return Err(Refusal::Frame(
            ErrorCode::Unauthorized,
            "this connection is not known; reconnect".into(),
            None,
        ));
    }
    Ok(ServerEvent::Renewed {
        auth_expires_at: fresh.auth_expires_ms.map(Timestamp::from_millis),
    })
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
    let Some(who) = store
        .connection(connection_id)
        .await
        .map_err(ServiceError::from)?
    else {
        return Err(Refusal::Frame(
            ErrorCode::Unauthorized,
            "this connection is not known; reconnect".into(),
            None,
        ));
    };
    if who.expired(now_ms()) {
        expire(store, push, connection_id).await?;
        return Ok(None);
    }
    let owner = who.owner;
    match frame {
        ClientFrame::Hello => Ok(Some(ServerEvent::Ready {
            connection_id: connection_id.clone(),
            server_time: now(),
        })),
        ClientFrame::Ping => Ok(Some(ServerEvent::Pong)),
        ClientFrame::Renew { ticket } => {
            renew(store, connection_id, &owner, &ticket).await.map(Some)
        }
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
