//! The socket: one coroutine at the root owns it. The protocol decisions it
//! makes (when to retry, what waits for `ready`, where an event goes) are
//! plain functions here, tested natively; the browser loop is below them.

use confab_protocol::backoff::Backoff;
use confab_protocol::client::{CurrentSession, Effect, SessionList};
use confab_protocol::rest::ErrorCode;
use confab_protocol::socket::Reassembly;
use confab_protocol::{ClientFrame, ServerEvent};
use std::collections::VecDeque;

/// Reconnect attempts before waiting for the Reconnect button.
pub const MAX_ATTEMPTS: u32 = 5;
/// 0.5 s doubling to a cap of 8 s, spread by ±20 % so tabs do not retry in
/// step.
const RECONNECT: Backoff = Backoff {
    first: std::time::Duration::from_millis(500),
    max: std::time::Duration::from_secs(8),
    retries: MAX_ATTEMPTS,
    jitter: 0.2,
};
/// A ping goes out this often; a pong missing this long is a drop.
pub const PING_EVERY_MS: f64 = 30_000.0;
pub const PONG_WITHIN_MS: f64 = 10_000.0;

/// The delay before reconnect attempt `attempt` (1-based), `rand01` in 0..1.
/// None once the attempts are used up.
pub fn backoff_ms(attempt: u32, rand01: f64) -> Option<u32> {
    RECONNECT
        .delay(attempt, rand01)
        .map(|d| d.as_millis().min(u128::from(u32::MAX)) as u32)
}

/// Frames that wait for `ready` and go out in order.
#[derive(Debug, Default)]
pub struct Outbox {
    ready: bool,
    queue: VecDeque<ClientFrame>,
}

impl Outbox {
    /// Returns the frame to send now, or queues it until `ready`.
    pub fn push(&mut self, frame: ClientFrame) -> Option<ClientFrame> {
        if self.ready {
            return Some(frame);
        }
        // A later subscribe or unsubscribe of a session replaces an earlier one.
        if let Some(sid) = frame_session(&frame) {
            self.queue.retain(|f| frame_session(f) != Some(sid));
        }
        self.queue.push_back(frame);
        None
    }

    /// `ready` arrived: everything queued, in order.
    pub fn ready(&mut self) -> Vec<ClientFrame> {
        self.ready = true;
        self.queue.drain(..).collect()
    }

    /// The connection dropped: frames queue again until the next `ready`.
    pub fn disconnected(&mut self) {
        self.ready = false;
    }

    pub fn is_ready(&self) -> bool {
        self.ready
    }
}

fn frame_session(f: &ClientFrame) -> Option<&str> {
    match f {
        ClientFrame::Subscribe { session_id, .. } | ClientFrame::Unsubscribe { session_id } => {
            Some(session_id)
        }
        _ => None,
    }
}

/// The subscribe that brings `current` up to date from what it holds.
pub fn subscribe_frame(current: &mut CurrentSession) -> ClientFrame {
    current.subscribe_sent();
    ClientFrame::Subscribe {
        session_id: current.session_id().clone(),
        after_seq: current.last_seq(),
    }
}

/// What to send in answer to an event.
#[derive(Debug, Default, PartialEq)]
pub struct Answer {
    /// Frames to send now.
    pub frames: Vec<ClientFrame>,
    /// Subscribe to the current session again after this many ms.
    pub resubscribe_after_ms: Option<u64>,
}

/// Applies a server event to the list and, when it is the current session's,
/// to the current session. Returns what to send in answer.
pub fn route_event(
    event: &ServerEvent,
    list: &mut SessionList,
    current: Option<&mut CurrentSession>,
) -> Answer {
    list.apply(event);
    let Some(current) = current else {
        return Answer::default();
    };
    if event.session_id() != Some(current.session_id()) {
        return Answer::default();
    }
    match current.apply_event(event) {
        Effect::Resubscribe { after_seq } => Answer {
            frames: vec![ClientFrame::Subscribe {
                session_id: current.session_id().clone(),
                after_seq,
            }],
            resubscribe_after_ms: None,
        },
        Effect::ResubscribeAfter { wait_ms } => Answer {
            frames: Vec::new(),
            resubscribe_after_ms: Some(wait_ms),
        },
        Effect::None => Answer::default(),
    }
}

// ---- the browser side -------------------------------------------------------

use crate::api;
use crate::state::{AppState, ReadyState, SocketCmd};
use dioxus::prelude::*;
use futures::{FutureExt, SinkExt, StreamExt};
use gloo_net::websocket::{Message, State, futures::WebSocket};
use gloo_timers::future::{IntervalStream, TimeoutFuture};

fn now_ms() -> f64 {
    js_sys::Date::now()
}

/// Starts the coroutine that owns the socket, for the app's lifetime.
pub fn use_socket(app: AppState) -> Coroutine<SocketCmd> {
    use_coroutine(move |mut rx: UnboundedReceiver<SocketCmd>| async move {
        let mut app = app;
        let mut outbox = Outbox::default();
        let mut attempt: u32 = 0;
        loop {
            app.conn.with_mut(|c| {
                c.state = ReadyState::Connecting;
                c.ready = false;
                c.retry_in = None;
                c.gave_up = false;
                c.signed_out = false;
                c.attempt = attempt;
            });
            let url = match api::socket_url().await {
                Ok(url) => Some(url),
                Err(api::ApiError::Refused {
                    code: Some(ErrorCode::Unauthorized | ErrorCode::TokenExpired),
                    ..
                }) => {
                    // The token is refused: trying again would be refused
                    // too. Wait until the person signs in and asks.
                    app.conn.with_mut(|c| {
                        c.state = ReadyState::Closed;
                        c.signed_out = true;
                        c.renewing = false;
                    });
                    if !wait_for_reconnect(&mut rx).await {
                        return;
                    }
                    attempt = 0;
                    continue;
                }
                Err(_) => None,
            };
            let ws = match url {
                Some(url) => open(&url).await,
                None => None,
            };
            if let Some(ws) = ws {
                attempt = 0;
                app.conn.with_mut(|c| {
                    c.state = ReadyState::Open;
                    c.attempt = 0;
                    c.was_open = true;
                });
                let ended = serve(&mut app, ws, &mut outbox, &mut rx).await;
                outbox.disconnected();
                match ended {
                    Ended::Quit => return,
                    Ended::TokenExpired => {
                        // Planned: a fresh ticket, at once, without a banner.
                        app.conn.with_mut(|c| {
                            c.ready = false;
                            c.renewing = true;
                        });
                        continue;
                    }
                    Ended::Dropped => {}
                }
            }
            app.conn.with_mut(|c| {
                c.state = ReadyState::Closed;
                c.ready = false;
                c.renewing = false;
            });
            attempt += 1;
            match backoff_ms(attempt, js_sys::Math::random()) {
                Some(ms) => {
                    app.conn.with_mut(|c| c.attempt = attempt);
                    if wait(&mut app, ms, &mut rx).await {
                        attempt = 0;
                    }
                }
                None => {
                    app.conn.with_mut(|c| {
                        c.gave_up = true;
                        c.retry_in = None;
                    });
                    if !wait_for_reconnect(&mut rx).await {
                        return;
                    }
                    attempt = 0;
                }
            }
        }
    })
}

/// Waits for the Reconnect button; false when the app is going away.
async fn wait_for_reconnect(rx: &mut UnboundedReceiver<SocketCmd>) -> bool {
    loop {
        match rx.next().await {
            Some(SocketCmd::Reconnect) => return true,
            Some(_) => {}
            None => return false,
        }
    }
}

/// How serving a socket ended.
enum Ended {
    /// The app is going away.
    Quit,
    /// The connection dropped.
    Dropped,
    /// The server closes it: the token it was opened with expired.
    TokenExpired,
}

/// Opens a socket and waits until it is open (None if it fails or takes
/// more than 10 s).
async fn open(url: &str) -> Option<WebSocket> {
    let ws = WebSocket::open(url).ok()?;
    let started = now_ms();
    while matches!(ws.state(), State::Connecting) {
        if now_ms() - started > 10_000.0 {
            return None;
        }
        TimeoutFuture::new(25).await;
    }
    matches!(ws.state(), State::Open).then_some(ws)
}

/// Counts down to the next attempt; true when the user asked to retry now.
async fn wait(app: &mut AppState, ms: u32, rx: &mut UnboundedReceiver<SocketCmd>) -> bool {
    let until = now_ms() + ms as f64;
    loop {
        let left = until - now_ms();
        if left <= 0.0 {
            return false;
        }
        app.conn
            .with_mut(|c| c.retry_in = Some((left / 1000.0).ceil() as u32));
        let step = TimeoutFuture::new(left.min(250.0) as u32).fuse();
        futures::pin_mut!(step);
        futures::select! {
            _ = step => {}
            cmd = rx.next() => match cmd {
                Some(SocketCmd::Reconnect) => return true,
                Some(_) => {}
                None => return false,
            },
        }
    }
}

fn encode(f: &ClientFrame) -> Message {
    Message::Text(serde_json::to_string(f).unwrap_or_default())
}

/// Serves an open socket until it drops, or the app goes away.
async fn serve(
    app: &mut AppState,
    ws: WebSocket,
    outbox: &mut Outbox,
    rx: &mut UnboundedReceiver<SocketCmd>,
) -> Ended {
    let (mut sink, stream) = ws.split();
    let mut stream = stream.fuse();
    let mut ticks = IntervalStream::new(250).fuse();
    if sink.send(encode(&ClientFrame::Hello)).await.is_err() {
        return Ended::Dropped;
    }
    let mut last_ping = now_ms();
    let mut pong_due: Option<f64> = None;
    // A renewal of the current subscription that must wait (the server takes
    // one every RESUBSCRIBE_EVERY_MS).
    let mut resubscribe_at: Option<f64> = None;
    let mut joining = Reassembly::default();
    loop {
        let mut to_send: Vec<ClientFrame> = Vec::new();
        futures::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let Ok(event) = serde_json::from_str::<ServerEvent>(&text) else { continue };
                    // An event too large for a frame comes in parts.
                    let event = match joining.accept(event) {
                        Ok(e) => e,
                        Err(_) => {
                            // An event was lost: bring the open session up to date.
                            if let Some(f) = app.current.with_mut(|c| c.as_mut().map(subscribe_frame)) {
                                to_send.extend(outbox.push(f));
                            }
                            None
                        }
                    };
                    match event {
                        None => {}
                        Some(event) => match event {
                        ServerEvent::Ready { .. } => {
                            app.conn.with_mut(|c| {
                                c.ready = true;
                                c.renewing = false;
                            });
                            if let Some(f) = app.current.with_mut(|c| c.as_mut().filter(|c| c.summary().is_some()).map(subscribe_frame)) {
                                outbox.push(f);
                            }
                            to_send.extend(outbox.ready());
                            app.refresh_list();
                        }
                        ServerEvent::Pong => pong_due = None,
                        ServerEvent::Error { code: ErrorCode::TokenExpired, .. } => {
                            // The server closes the socket next.
                            let _ = sink.close().await;
                            return Ended::TokenExpired;
                        }
                        other => {
                            let before = other
                                .session_id()
                                .and_then(|id| app.sessions.peek().get(id).map(|s| s.status));
                            crate::notify::on_event(*app, &other, before);
                            let answer = {
                                let mut list = app.sessions.write();
                                let mut current = app.current.write();
                                route_event(&other, &mut list, current.as_mut())
                            };
                            for f in answer.frames {
                                to_send.extend(outbox.push(f));
                            }
                            if let Some(ms) = answer.resubscribe_after_ms {
                                resubscribe_at = Some(now_ms() + ms as f64);
                            }
                        }
                    },
                    }
                }
                Some(Ok(Message::Bytes(_))) => {}
                Some(Err(_)) | None => return Ended::Dropped,
            },
            cmd = rx.next() => match cmd {
                Some(SocketCmd::SubscribeCurrent) => {
                    if let Some(f) = app.current.with_mut(|c| c.as_mut().map(subscribe_frame)) {
                        to_send.extend(outbox.push(f));
                    }
                }
                Some(SocketCmd::Unsubscribe(session_id)) => to_send.extend(outbox.push(ClientFrame::Unsubscribe { session_id })),
                Some(SocketCmd::Reconnect) => {}
                Some(SocketCmd::Renew) => {
                    // A socket not renewed ends when its token does, and
                    // is opened again with a fresh ticket: no frame is lost
                    // either way.
                    if let Ok(ticket) = api::socket_ticket().await {
                        to_send.push(ClientFrame::Renew { ticket });
                    }
                }
                None => return Ended::Quit,
            },
            _ = ticks.next() => {
                let now = now_ms();
                if resubscribe_at.is_some_and(|at| now >= at) {
                    resubscribe_at = None;
                    if let Some(f) = app.current.with_mut(|c| c.as_mut().map(subscribe_frame)) {
                        to_send.extend(outbox.push(f));
                    }
                }
                if pong_due.is_some_and(|due| now > due) {
                    // No pong: the connection is dead; close it and start over.
                    app.conn.with_mut(|c| c.state = ReadyState::Closing);
                    let _ = sink.close().await;
                    return Ended::Dropped;
                }
                if outbox.is_ready() && now - last_ping >= PING_EVERY_MS {
                    last_ping = now;
                    pong_due = Some(now + PONG_WITHIN_MS);
                    to_send.push(ClientFrame::Ping);
                }
            },
        }
        for f in to_send {
            if sink.send(encode(&f)).await.is_err() {
                return Ended::Dropped;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use confab_protocol::model::*;
    use confab_protocol::{MessageId, SessionId, Timestamp};

    /// A UUID made from a readable name (up to 16 bytes).
    fn uuid_of(name: &str) -> uuid::Uuid {
        let mut bytes = [0u8; 16];
        for (b, n) in bytes.iter_mut().zip(name.bytes()) {
            *b = n;
        }
        uuid::Uuid::from_bytes(bytes)
    }

    fn sid(name: &str) -> SessionId {
        SessionId::from(uuid_of(name))
    }

    fn mid(name: &str) -> MessageId {
        MessageId::from(uuid_of(name))
    }

    fn summary(id: &str, version: u64) -> SessionSummary {
        SessionSummary {
            id: sid(id),
            project_id: "default".parse().unwrap(),
            title: "t".into(),
            status: SessionStatus::Running,
            permission_mode: PermissionMode::Default,
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            last_message_at: Timestamp::from_millis(version as i64),
            message_count: 0,
            usage: Usage::default(),
            first_message_preview: "p".into(),
            last_turn: None,
            agent_session_id: None,
            version,
        }
    }

    #[test]
    fn backoff_doubles_to_a_cap_then_gives_up() {
        let mid: Vec<u32> = (1..=5).map(|a| backoff_ms(a, 0.5).unwrap()).collect();
        assert_eq!(mid, vec![500, 1000, 2000, 4000, 8000]);
        assert_eq!(backoff_ms(6, 0.5), None, "five attempts, then the button");
        assert_eq!(backoff_ms(0, 0.5), None);
        // Jitter stays within ±20 %.
        assert_eq!(backoff_ms(1, 0.0), Some(400));
        assert_eq!(backoff_ms(1, 1.0), Some(600));
        assert_eq!(backoff_ms(5, 1.0), Some(9600));
    }

    #[test]
    fn frames_wait_for_ready_and_go_in_order() {
        let mut o = Outbox::default();
        assert_eq!(o.push(ClientFrame::Ping), None);
        assert_eq!(
            o.push(ClientFrame::Subscribe {
                session_id: sid("a"),
                after_seq: 0
            }),
            None
        );
        assert_eq!(
            o.push(ClientFrame::Subscribe {
                session_id: sid("b"),
                after_seq: 0
            }),
            None
        );
        // A newer subscribe to `a` replaces the queued one.
        assert_eq!(
            o.push(ClientFrame::Subscribe {
                session_id: sid("a"),
                after_seq: 4
            }),
            None
        );
        assert_eq!(
            o.ready(),
            vec![
                ClientFrame::Ping,
                ClientFrame::Subscribe {
                    session_id: sid("b"),
                    after_seq: 0
                },
                ClientFrame::Subscribe {
                    session_id: sid("a"),
                    after_seq: 4
                },
            ]
        );
        assert_eq!(
            o.push(ClientFrame::Ping),
            Some(ClientFrame::Ping),
            "once ready, frames go at once"
        );
        o.disconnected();
        assert_eq!(o.push(ClientFrame::Ping), None);
        assert!(!o.is_ready());
    }

    #[test]
    fn events_of_other_sessions_touch_only_the_list() {
        let mut list = SessionList::new();
        let mut current = CurrentSession::new_unsaved(sid("mine"));
        let before = current.clone();
        let answer = route_event(
            &ServerEvent::SessionCreated {
                session: summary("other", 1),
            },
            &mut list,
            Some(&mut current),
        );
        assert_eq!(answer, Answer::default());
        assert_eq!(current, before);
        assert!(list.get(&sid("other")).is_some());
        let delta = ServerEvent::MessageDelta {
            session_id: sid("other"),
            message_id: mid("m"),
            block: 0,
            offset: 0,
            text: "x".into(),
        };
        assert_eq!(
            route_event(&delta, &mut list, Some(&mut current)),
            Answer::default()
        );
        assert_eq!(current, before);
    }

    #[test]
    fn a_gap_in_the_current_session_asks_to_subscribe_again() {
        let mut list = SessionList::new();
        let mut current = CurrentSession::new_loading(sid("mine"));
        route_event(
            &ServerEvent::SessionUpdated {
                session: summary("mine", 1),
            },
            &mut list,
            Some(&mut current),
        );
        let delta = ServerEvent::MessageDelta {
            session_id: sid("mine"),
            message_id: mid("m"),
            block: 0,
            offset: 5,
            text: "x".into(),
        };
        let frames = route_event(&delta, &mut list, Some(&mut current)).frames;
        assert_eq!(
            frames,
            vec![ClientFrame::Subscribe {
                session_id: sid("mine"),
                after_seq: 0
            }]
        );
        // Until it is answered, further gaps ask nothing more.
        assert_eq!(
            route_event(&delta, &mut list, Some(&mut current)),
            Answer::default()
        );
        assert_eq!(list.get(&sid("mine")).unwrap().version, 1);
    }
}
