//! Fan-out of events: to every connection of an owner, or to the subscribers
//! of a session. A connection that is gone is forgotten; a failed push never
//! fails the request that caused it.

use super::frames::{encode, wire};
use super::records::{SessionRef, Subscriber};
use crate::ports::{ConnectionStore, Push, PushError, StoreError};
use bytes::Bytes;
use confab_protocol::ServerEvent;
use futures::future::join_all;

/// Sends one event to every connection of `owner`.
pub async fn to_owner(
    store: &dyn ConnectionStore,
    push: &dyn Push,
    owner: &str,
    event: &ServerEvent,
) {
    match store.owner_connections(owner).await {
        Ok(conns) => to_connections(store, push, &conns, &[encode(event)]).await,
        Err(e) => tracing::warn!(
            error = &e as &dyn std::error::Error,
            "listing connections failed"
        ),
    }
}

/// Tells every connection of `owner` that a summary changed.
pub async fn session_updated(
    store: &dyn ConnectionStore,
    push: &dyn Push,
    owner: &str,
    session: &confab_protocol::SessionSummary,
) {
    let event = ServerEvent::SessionUpdated {
        session: session.clone(),
    };
    to_owner(store, push, owner, &event).await
}

/// Tells the subscribers of a session that a message was stored.
pub async fn message_created(
    store: &dyn ConnectionStore,
    push: &dyn Push,
    session: &SessionRef,
    message: confab_protocol::Message,
) {
    let event = ServerEvent::MessageCreated {
        session_id: session.id.clone(),
        message,
    };
    to_subscribers(store, push, session, &event).await
}

/// The subscriptions to `session` as it is: rows of another owner or an
/// earlier incarnation under the same id (left by a subscribe that raced a
/// delete) are skipped, so they never receive this session's events.
pub async fn subscribers_of(
    store: &dyn ConnectionStore,
    session: &SessionRef,
) -> Result<Vec<Subscriber>, StoreError> {
    let mut subs = store.subscribers(&session.id).await?;
    subs.retain(|s| {
        let ok = s.is_of(session);
        if !ok {
            tracing::warn!(
                connection = %s.connection_id,
                session = %session.id,
                "skipping a subscription to another incarnation of the session"
            );
        }
        ok
    });
    Ok(subs)
}

/// Sends one event to every subscriber of `session`.
pub async fn to_subscribers(
    store: &dyn ConnectionStore,
    push: &dyn Push,
    session: &SessionRef,
    event: &ServerEvent,
) {
    match subscribers_of(store, session).await {
        Ok(subs) => {
            let conns: Vec<String> = subs.into_iter().map(|s| s.connection_id).collect();
            to_connections(store, push, &conns, &[encode(event)]).await
        }
        Err(e) => tracing::warn!(
            error = &e as &dyn std::error::Error,
            "listing subscribers failed"
        ),
    }
}

/// Sends the same frames, in order, to each connection; connections in
/// parallel.
pub async fn to_connections(
    store: &dyn ConnectionStore,
    push: &dyn Push,
    conns: &[String],
    frames: &[Bytes],
) {
    join_all(conns.iter().map(|c| send_all(store, push, c, frames))).await;
}

/// Sends frames to one connection in order, each over the frame limit in
/// parts; stops at the first failure.
pub async fn send_all(
    store: &dyn ConnectionStore,
    push: &dyn Push,
    conn: &str,
    frames: &[Bytes],
) -> bool {
    for f in frames.iter().flat_map(wire) {
        match push.post(conn, f).await {
            Ok(()) => {}
            Err(PushError::Gone) => {
                tracing::debug!(connection = conn, "connection gone; forgetting it");
                if let Err(e) = store.delete_connection(conn).await {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "forgetting a connection failed"
                    );
                }
                return false;
            }
            Err(e) => {
                tracing::warn!(
                    connection = conn,
                    error = &e as &dyn std::error::Error,
                    "push failed"
                );
                return false;
            }
        }
    }
    true
}

/// Sends one event to one connection.
pub async fn to_connection(
    store: &dyn ConnectionStore,
    push: &dyn Push,
    conn: &str,
    event: &ServerEvent,
) -> bool {
    send_all(store, push, conn, &[encode(event)]).await
}
