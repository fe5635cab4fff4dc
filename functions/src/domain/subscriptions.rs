//! Subscribing a connection to a session: the subscription is stored first,
//! then the session is read, so whatever is stored after the read reaches the
//! connection as an event and nothing falls between the two.

use super::frames::{encode, trim_live};
use super::records::{MessageRange, RESUBSCRIBE_EVERY_MS, SubscribeOutcome};
use super::sessions::reap_if_stale;
use crate::clock::{new_token, now_ms};
use crate::error::ServiceError;
use crate::ports::{Push, Store};
use confab_protocol::model::{LiveReply, Message, PendingRequest, QueuedMessage, SessionSummary};
use confab_protocol::socket::{MAX_SERVER_FRAME_BYTES, MAX_SUBSCRIPTIONS};
use confab_protocol::{ConnectionId, ServerEvent, SessionId, validate};

/// Messages a `subscribed` frame carries at most.
const SUBSCRIBE_PAGE: usize = validate::MAX_PAGE;

/// `subscribe`: the `subscribed` frame for `connection_id`, which belongs
/// to `owner`, with the messages after `after_seq`.
pub async fn subscribe(
    store: &dyn Store,
    push: &dyn Push,
    connection_id: &ConnectionId,
    owner: &str,
    session_id: &SessionId,
    after_seq: u64,
) -> Result<ServerEvent, ServiceError> {
    let rec = match store.get_session(session_id).await? {
        Some(r) if r.owner == owner => r,
        _ => return Err(ServiceError::NotFound),
    };
    let rec = reap_if_stale(store, push, rec).await?;
    // Subscribe first, then read: whatever is stored after this read reaches
    // the connection as an event, so nothing falls between the two.
    match store
        .subscribe(
            connection_id,
            &rec.target(),
            &new_token(),
            MAX_SUBSCRIPTIONS,
            now_ms(),
        )
        .await?
    {
        SubscribeOutcome::Subscribed => {}
        SubscribeOutcome::NotFound => return Err(ServiceError::NotFound),
        SubscribeOutcome::TooSoon => {
            return Err(ServiceError::RateLimited {
                message: format!(
                    "subscribed again too soon: this connection holds the session and renews it at most every {RESUBSCRIBE_EVERY_MS} ms"
                ),
                retry_after_secs: 1,
            });
        }
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
    let pending: Vec<PendingRequest> = rec
        .turn
        .as_ref()
        .map(|t| t.pending().cloned().collect())
        .unwrap_or_default();
    let live = rec.turn.and_then(|t| t.live);
    Ok(fit_subscribed(
        session_id,
        rec.summary,
        messages,
        has_more,
        live,
        pending,
        rec.queue.items,
    ))
}

/// A `subscribed` frame within the frame limit: fewer messages (the client
/// subscribes again from where it got to) and a shorter in-flight reply (the
/// runner sends the whole one next) when needed. A single message larger than
/// a frame goes whole, in `frame.part`s (`frames::wire`).
fn fit_subscribed(
    session_id: &SessionId,
    session: SessionSummary,
    mut messages: Vec<Message>,
    mut has_more: bool,
    mut live: Option<LiveReply>,
    pending: Vec<PendingRequest>,
    queued: Vec<QueuedMessage>,
) -> ServerEvent {
    loop {
        let event = ServerEvent::Subscribed {
            session_id: session_id.clone(),
            session: session.clone(),
            messages: messages.clone(),
            has_more,
            live: live.clone(),
            pending: pending.clone(),
            queued: queued.clone(),
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
