//! Socket frames: what a client sends (`ClientFrame`, routed on `action`) and
//! what the server pushes (`ServerEvent`, tagged by `type`).

use crate::ids::{ConnectionId, MessageId, RequestId, SessionId, TurnId};
use crate::model::{
    Block, Decision, LiveReply, Message, PendingRequest, QueuedMessage, SessionSummary,
};
use crate::rest::ErrorCode;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Largest client frame, in bytes.
pub const MAX_CLIENT_FRAME_BYTES: usize = 8 * 1024;
/// Largest server frame, in bytes.
pub const MAX_SERVER_FRAME_BYTES: usize = 32 * 1024;
/// Most subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 20;
/// A connection renews its subscription of a session it holds at most this
/// often; sooner, the server answers `error` with `rate_limited`.
pub const RESUBSCRIBE_EVERY_MS: u64 = 500;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum ClientFrame {
    Hello,
    #[serde(rename_all = "camelCase")]
    Subscribe {
        session_id: SessionId,
        #[serde(default)]
        after_seq: u64,
    },
    #[serde(rename_all = "camelCase")]
    Unsubscribe {
        session_id: SessionId,
    },
    Ping,
    /// Carries the socket on with a fresh token: a ticket from
    /// `POST /api/socket-ticket`, taken as `$connect` takes one, of the same
    /// owner. Answered with `renewed`.
    Renew {
        ticket: String,
    },
}

/// Defines `ServerEvent` and, for tests only, the same enum with serde's
/// derived reader, which the hand-written reader must agree with.
macro_rules! server_event {
    ($($variants:tt)*) => {
        /// Serialized by serde's derive; deserialized by hand (below), because
        /// the derived reader of an internally tagged enum is the largest
        /// function of the web app.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(tag = "type")]
        pub enum ServerEvent { $($variants)* }

        /// `ServerEvent` with serde's derived reader (tests only).
        #[cfg(test)]
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        enum DerivedServerEvent { $($variants)* }
    };
}

server_event! {
    #[serde(rename = "ready", rename_all = "camelCase")]
    Ready {
        connection_id: ConnectionId,
        server_time: Timestamp,
    },
    #[serde(rename = "subscribed", rename_all = "camelCase")]
    Subscribed {
        session_id: SessionId,
        session: SessionSummary,
        messages: Vec<Message>,
        has_more: bool,
        live: Option<LiveReply>,
        /// What the running turn waits for the person to answer.
        #[serde(default)]
        pending: Vec<PendingRequest>,
        /// Messages waiting for the running turn to end.
        #[serde(default)]
        queued: Vec<QueuedMessage>,
    },
    #[serde(rename = "unsubscribed", rename_all = "camelCase")]
    Unsubscribed { session_id: SessionId },
    #[serde(rename = "pong")]
    Pong,
    /// The socket carries on until `authExpiresAt` (the fresh token's
    /// expiry; absent when auth is off), in answer to `renew`.
    #[serde(rename = "renewed", rename_all = "camelCase")]
    Renewed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth_expires_at: Option<Timestamp>,
    },
    /// A refused frame. `sessionId` is set when the frame named a session.
    #[serde(rename = "error", rename_all = "camelCase")]
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<SessionId>,
    },
    #[serde(rename = "session.created")]
    SessionCreated { session: SessionSummary },
    #[serde(rename = "session.updated")]
    SessionUpdated { session: SessionSummary },
    #[serde(rename = "session.deleted", rename_all = "camelCase")]
    SessionDeleted { session_id: SessionId, version: u64 },
    #[serde(rename = "message.created", rename_all = "camelCase")]
    MessageCreated {
        session_id: SessionId,
        message: Message,
    },
    #[serde(rename = "message.snapshot", rename_all = "camelCase")]
    MessageSnapshot {
        session_id: SessionId,
        message_id: MessageId,
        turn_id: TurnId,
        content: Vec<Block>,
    },
    #[serde(rename = "message.delta", rename_all = "camelCase")]
    MessageDelta {
        session_id: SessionId,
        message_id: MessageId,
        block: usize,
        offset: usize,
        text: String,
    },
    #[serde(rename = "message.block", rename_all = "camelCase")]
    MessageBlock {
        session_id: SessionId,
        message_id: MessageId,
        index: usize,
        block: Block,
    },
    /// The running turn asks the person: every subscriber shows it until
    /// `request.resolved`.
    #[serde(rename = "request.created", rename_all = "camelCase")]
    RequestCreated {
        session_id: SessionId,
        request: PendingRequest,
    },
    /// A request was answered (first answer wins) or denied by the server
    /// (stopped, or nobody answered in time).
    #[serde(rename = "request.resolved", rename_all = "camelCase")]
    RequestResolved {
        session_id: SessionId,
        request_id: RequestId,
        decision: Decision,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        answers: std::collections::BTreeMap<String, String>,
        resolved_at: Timestamp,
    },
    /// The session's queue changed (a message queued, edited, cancelled or
    /// started): all of it, in the order it starts.
    #[serde(rename = "session.queue", rename_all = "camelCase")]
    SessionQueue {
        session_id: SessionId,
        queued: Vec<QueuedMessage>,
    },
    /// One piece of an event too large for a frame (a long stored reply in
    /// `message.created` or `subscribed`). The pieces of one event share
    /// `id`, come in order (`part` 0 to `parts - 1`), and their `data`
    /// joined is the event's JSON. [`Reassembly`] joins them.
    #[serde(rename = "frame.part", rename_all = "camelCase")]
    FramePart {
        id: String,
        part: u32,
        parts: u32,
        data: String,
    },
}

impl ServerEvent {
    /// The session a per-session event belongs to.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            ServerEvent::Subscribed { session_id, .. }
            | ServerEvent::Unsubscribed { session_id }
            | ServerEvent::SessionDeleted { session_id, .. }
            | ServerEvent::MessageCreated { session_id, .. }
            | ServerEvent::MessageSnapshot { session_id, .. }
            | ServerEvent::MessageDelta { session_id, .. }
            | ServerEvent::MessageBlock { session_id, .. }
            | ServerEvent::RequestCreated { session_id, .. }
            | ServerEvent::RequestResolved { session_id, .. }
            | ServerEvent::SessionQueue { session_id, .. } => Some(session_id),
            ServerEvent::SessionCreated { session } | ServerEvent::SessionUpdated { session } => {
                Some(&session.id)
            }
            ServerEvent::Error { session_id, .. } => session_id.as_deref(),
            ServerEvent::Ready { .. }
            | ServerEvent::Pong
            | ServerEvent::Renewed { .. }
            | ServerEvent::FramePart { .. } => None,
        }
    }

    /// A shortcut for the socket's error frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> ServerEvent {
        ServerEvent::Error {
            code,
            message: message.into(),
            session_id: None,
        }
    }
}

impl<'de> Deserialize<'de> for ServerEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::model::read::{Map, or_default, take};
        use serde::de::Error;
        let mut m = Map::deserialize(d)?;
        let kind = match m.remove("type") {
            Some(serde_json::Value::String(s)) => s,
            _ => return Err(D::Error::missing_field("type")),
        };
        let m = &mut m;
        Ok(match kind.as_str() {
            "ready" => ServerEvent::Ready {
                connection_id: take(m, "connectionId")?,
                server_time: take(m, "serverTime")?,
            },
            "subscribed" => ServerEvent::Subscribed {
                session_id: take(m, "sessionId")?,
                session: take(m, "session")?,
                messages: take(m, "messages")?,
                has_more: take(m, "hasMore")?,
                live: take(m, "live")?,
                pending: or_default(m, "pending")?,
                queued: or_default(m, "queued")?,
            },
            "unsubscribed" => ServerEvent::Unsubscribed {
                session_id: take(m, "sessionId")?,
            },
            "pong" => ServerEvent::Pong,
            "renewed" => ServerEvent::Renewed {
                auth_expires_at: take(m, "authExpiresAt")?,
            },
            "error" => ServerEvent::Error {
                code: take(m, "code")?,
                message: take(m, "message")?,
                session_id: take(m, "sessionId")?,
            },
            "session.created" => ServerEvent::SessionCreated {
                session: take(m, "session")?,
            },
            "session.updated" => ServerEvent::SessionUpdated {
                session: take(m, "session")?,
            },
            "session.deleted" => ServerEvent::SessionDeleted {
                session_id: take(m, "sessionId")?,
                version: take(m, "version")?,
            },
            "message.created" => ServerEvent::MessageCreated {
                session_id: take(m, "sessionId")?,
                message: take(m, "message")?,
            },
            "message.snapshot" => ServerEvent::MessageSnapshot {
                session_id: take(m, "sessionId")?,
                message_id: take(m, "messageId")?,
                turn_id: take(m, "turnId")?,
                content: take(m, "content")?,
            },
            "message.delta" => ServerEvent::MessageDelta {
                session_id: take(m, "sessionId")?,
                message_id: take(m, "messageId")?,
                block: take(m, "block")?,
                offset: take(m, "offset")?,
                text: take(m, "text")?,
            },
            "message.block" => ServerEvent::MessageBlock {
                session_id: take(m, "sessionId")?,
                message_id: take(m, "messageId")?,
                index: take(m, "index")?,
                block: take(m, "block")?,
            },
            "request.created" => ServerEvent::RequestCreated {
                session_id: take(m, "sessionId")?,
                request: take(m, "request")?,
            },
            "request.resolved" => ServerEvent::RequestResolved {
                session_id: take(m, "sessionId")?,
                request_id: take(m, "requestId")?,
                decision: take(m, "decision")?,
                message: take(m, "message")?,
                answers: or_default(m, "answers")?,
                resolved_at: take(m, "resolvedAt")?,
            },
            "session.queue" => ServerEvent::SessionQueue {
                session_id: take(m, "sessionId")?,
                queued: take(m, "queued")?,
            },
            "frame.part" => ServerEvent::FramePart {
                id: take(m, "id")?,
                part: take(m, "part")?,
                parts: take(m, "parts")?,
                data: take(m, "data")?,
            },
            other => return Err(D::Error::unknown_variant(other, SERVER_EVENT_TYPES)),
        })
    }
}

const SERVER_EVENT_TYPES: &[&str] = &[
    "ready",
    "subscribed",
    "unsubscribed",
    "pong",
    "renewed",
    "error",
    "session.created",
    "session.updated",
    "session.deleted",
    "message.created",
    "message.snapshot",
    "message.delta",
    "message.block",
    "request.created",
    "request.resolved",
    "session.queue",
    "frame.part",
];

/// The most bytes one event sent in parts may have, joined: a reply of a
/// million tokens is about 4 MiB of JSON.
pub const MAX_JOINED_BYTES: usize = 16 * 1024 * 1024;
/// Events being joined at once; the oldest unfinished one is dropped past it.
pub const MAX_JOINING: usize = 8;

/// Why parts could not be joined. The event is lost; a client subscribes
/// again to get what it holds up to date.
#[derive(Debug, PartialEq, Eq)]
pub enum ReassemblyError {
    /// A part came out of order, or a part of an event not begun.
    OutOfOrder { id: String },
    /// More than [`MAX_JOINED_BYTES`].
    TooLarge { id: String },
    /// The joined parts are not an event.
    Malformed { id: String },
}

impl std::fmt::Display for ReassemblyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReassemblyError::OutOfOrder { id } => write!(f, "parts of event {id} out of order"),
            ReassemblyError::TooLarge { id } => {
                write!(f, "event {id} is over {MAX_JOINED_BYTES} bytes")
            }
            ReassemblyError::Malformed { id } => write!(f, "event {id} joined is not an event"),
        }
    }
}

impl std::error::Error for ReassemblyError {}

/// Joins `frame.part` events back into the events they carry, within
/// [`MAX_JOINED_BYTES`] each and [`MAX_JOINING`] at once. Parts of
/// different events may interleave; the parts of one come in order.
#[derive(Debug, Default)]
pub struct Reassembly {
    /// Id, parts expected, parts had, joined so far; oldest first.
    joining: Vec<(String, u32, u32, String)>,
}

impl Reassembly {
    /// Any event but a part comes back as it is; a part comes back as the
    /// whole event once its last part is in, else `Ok(None)`.
    pub fn accept(&mut self, event: ServerEvent) -> Result<Option<ServerEvent>, ReassemblyError> {
        let ServerEvent::FramePart {
            id,
            part,
            parts,
            data,
        } = event
        else {
            return Ok(Some(event));
        };
        let at = self.joining.iter().position(|j| j.0 == id);
        let i = match (at, part) {
            (None, 0) => {
                if self.joining.len() >= MAX_JOINING {
                    self.joining.remove(0);
                }
                self.joining.push((id.clone(), parts, 0, String::new()));
                self.joining.len() - 1
            }
            (Some(i), p) if self.joining[i].2 == p && self.joining[i].1 == parts => i,
            (at, _) => {
                if let Some(i) = at {
                    self.joining.remove(i);
                }
                return Err(ReassemblyError::OutOfOrder { id });
            }
        };
        let j = &mut self.joining[i];
        if j.3.len() + data.len() > MAX_JOINED_BYTES {
            self.joining.remove(i);
            return Err(ReassemblyError::TooLarge { id });
        }
        j.3.push_str(&data);
        j.2 += 1;
        if j.2 < j.1 {
            return Ok(None);
        }
        let (id, _, _, joined) = self.joining.remove(i);
        match serde_json::from_str::<ServerEvent>(&joined) {
            Ok(ServerEvent::FramePart { .. }) | Err(_) => Err(ReassemblyError::Malformed { id }),
            Ok(e) => Ok(Some(e)),
        }
    }
}

/// Parses a client frame, saying what is wrong in words a developer can act on.
pub fn parse_client_frame(raw: &str) -> Result<ClientFrame, FrameError> {
    if raw.len() > MAX_CLIENT_FRAME_BYTES {
        return Err(FrameError::TooLarge(raw.len()));
    }
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let Some(action) = value.get("action") else {
        return Err(FrameError::Invalid(
            "a frame is a JSON object with an \"action\"".into(),
        ));
    };
    let Some(action) = action.as_str() else {
        return Err(FrameError::Invalid("\"action\" must be a string".into()));
    };
    if !matches!(
        action,
        "hello" | "subscribe" | "unsubscribe" | "ping" | "renew"
    ) {
        return Err(FrameError::UnknownAction(action.chars().take(64).collect()));
    }
    serde_json::from_value(value).map_err(|e| FrameError::Invalid(e.to_string()))
}

/// Why a client frame was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    TooLarge(usize),
    Malformed(String),
    UnknownAction(String),
    Invalid(String),
}

impl FrameError {
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            _ => ErrorCode::InvalidRequest,
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge(n) => write!(
                f,
                "frame of {n} bytes is over the limit of {MAX_CLIENT_FRAME_BYTES} bytes"
            ),
            FrameError::Malformed(e) => write!(f, "frame is not valid JSON: {e}"),
            FrameError::UnknownAction(a) => write!(
                f,
                "unknown action {a:?}; expected hello, subscribe, unsubscribe or ping"
            ),
            FrameError::Invalid(e) => write!(f, "invalid frame: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{message, summary};
    use serde_json::{Value, json};

    /// The `type` of each variant. There is no wildcard: a new variant does
    /// not compile until it is named here, and then [`samples`] must carry
    /// one of it for the test below to pass.
    fn kind(e: &ServerEvent) -> &'static str {
        match e {
            ServerEvent::Ready { .. } => "ready",
            ServerEvent::Subscribed { .. } => "subscribed",
            ServerEvent::Unsubscribed { .. } => "unsubscribed",
            ServerEvent::Pong => "pong",
            ServerEvent::Renewed { .. } => "renewed",
            ServerEvent::Error { .. } => "error",
            ServerEvent::SessionCreated { .. } => "session.created",
            ServerEvent::SessionUpdated { .. } => "session.updated",
            ServerEvent::SessionDeleted { .. } => "session.deleted",
            ServerEvent::MessageCreated { .. } => "message.created",
            ServerEvent::MessageSnapshot { .. } => "message.snapshot",
            ServerEvent::MessageDelta { .. } => "message.delta",
            ServerEvent::MessageBlock { .. } => "message.block",
            ServerEvent::RequestCreated { .. } => "request.created",
            ServerEvent::RequestResolved { .. } => "request.resolved",
            ServerEvent::SessionQueue { .. } => "session.queue",
            ServerEvent::FramePart { .. } => "frame.part",
        }
    }

    fn samples() -> Vec<ServerEvent> {
        let sid = summary().id;
        let live = LiveReply {
            message_id: message().id,
            turn_id: message().turn_id,
            content: vec![Block::text("x")],
        };
        vec![
            ServerEvent::Ready {
                connection_id: "c".parse().unwrap(),
                server_time: Timestamp::from_millis(0),
            },
            ServerEvent::Subscribed {
                session_id: sid.clone(),
                session: summary(),
                messages: vec![message()],
                has_more: true,
                live: Some(live.clone()),
                pending: vec![crate::fixtures::request()],
                queued: vec![crate::fixtures::queued()],
            },
            ServerEvent::Unsubscribed {
                session_id: sid.clone(),
            },
            ServerEvent::Pong,
            ServerEvent::Renewed {
                auth_expires_at: Some(Timestamp::from_millis(1_000)),
            },
            ServerEvent::Error {
                code: ErrorCode::NotFound,
                message: "m".into(),
                session_id: Some(sid.clone()),
            },
            ServerEvent::SessionCreated { session: summary() },
            ServerEvent::SessionUpdated { session: summary() },
            ServerEvent::SessionDeleted {
                session_id: sid.clone(),
                version: 9,
            },
            ServerEvent::MessageCreated {
                session_id: sid.clone(),
                message: message(),
            },
            ServerEvent::MessageSnapshot {
                session_id: sid.clone(),
                message_id: live.message_id.clone(),
                turn_id: live.turn_id.clone(),
                content: live.content.clone(),
            },
            ServerEvent::MessageDelta {
                session_id: sid.clone(),
                message_id: live.message_id.clone(),
                block: 0,
                offset: 3,
                text: "é".into(),
            },
            ServerEvent::MessageBlock {
                session_id: sid.clone(),
                message_id: live.message_id,
                index: 1,
                block: Block::text(""),
            },
            ServerEvent::RequestCreated {
                session_id: sid.clone(),
                request: crate::fixtures::request(),
            },
            ServerEvent::SessionQueue {
                session_id: sid.clone(),
                queued: vec![crate::fixtures::queued()],
            },
            ServerEvent::RequestResolved {
                session_id: sid,
                request_id: crate::fixtures::request().id,
                decision: crate::model::Decision::Deny,
                message: Some("not that file".into()),
                answers: Default::default(),
                resolved_at: Timestamp::from_millis(5),
            },
            ServerEvent::FramePart {
                id: "e1".into(),
                part: 0,
                parts: 2,
                data: "{\"type\":".into(),
            },
        ]
    }

    /// What a reader makes of `v`, written back as JSON (None: refused).
    fn hand(v: &Value) -> Option<Value> {
        serde_json::from_value::<ServerEvent>(v.clone())
            .ok()
            .map(|e| serde_json::to_value(e).unwrap())
    }

    fn derived(v: &Value) -> Option<Value> {
        serde_json::from_value::<DerivedServerEvent>(v.clone())
            .ok()
            .map(|e| serde_json::to_value(e).unwrap())
    }

    #[test]
    fn every_event_is_read_by_hand_as_serde_would_read_it() {
        let samples = samples();
        let mut kinds: Vec<&str> = samples.iter().map(kind).collect();
        kinds.sort_unstable();
        let mut known = SERVER_EVENT_TYPES.to_vec();
        known.sort_unstable();
        assert_eq!(
            kinds, known,
            "one sample of every event, each known to the reader"
        );
        for e in samples {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(v["type"], kind(&e), "the wire type of {e:?}");
            let back: ServerEvent = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(back, e, "the hand-written reader loses nothing");
            assert_eq!(derived(&v), Some(v.clone()), "serde's reader takes it too");
            // Damaged frames: both readers take or refuse each the same way.
            let Value::Object(fields) = &v else {
                unreachable!("an event is an object")
            };
            for k in fields.keys().filter(|k| *k != "type") {
                let mut without = fields.clone();
                without.remove(k);
                let without = Value::Object(without);
                assert_eq!(
                    hand(&without),
                    derived(&without),
                    "{} without {k}",
                    kind(&e)
                );
                let mut wrong = fields.clone();
                wrong.insert(k.clone(), json!({"not": "this"}));
                let wrong = Value::Object(wrong);
                assert_eq!(
                    hand(&wrong),
                    derived(&wrong),
                    "{} with a wrong {k}",
                    kind(&e)
                );
            }
            let mut extra = fields.clone();
            extra.insert("later".into(), json!(1));
            let extra = Value::Object(extra);
            assert_eq!(
                hand(&extra),
                derived(&extra),
                "{} with an unknown field",
                kind(&e)
            );
        }
        let unknown = json!({"type": "session.exploded"});
        assert_eq!(hand(&unknown), None);
        assert_eq!(derived(&unknown), None);
    }

    fn part(id: &str, part: u32, parts: u32, data: &str) -> ServerEvent {
        ServerEvent::FramePart {
            id: id.into(),
            part,
            parts,
            data: data.into(),
        }
    }

    #[test]
    fn parts_join_into_their_event_interleaved_in_order_and_bounded() {
        let event = ServerEvent::MessageCreated {
            session_id: summary().id,
            message: message(),
        };
        let json = serde_json::to_string(&event).unwrap();
        let (a, b) = json.split_at(json.len() / 2);
        let mut r = Reassembly::default();
        assert_eq!(r.accept(ServerEvent::Pong), Ok(Some(ServerEvent::Pong)));
        assert_eq!(r.accept(part("x", 0, 2, a)), Ok(None));
        // Another event's parts in between.
        assert_eq!(r.accept(part("y", 0, 2, a)), Ok(None));
        assert_eq!(r.accept(part("x", 1, 2, b)), Ok(Some(event.clone())));
        assert_eq!(r.accept(part("y", 1, 2, b)), Ok(Some(event)));
        // A missing part loses the event, and says so.
        assert_eq!(r.accept(part("z", 0, 3, a)), Ok(None));
        assert!(matches!(
            r.accept(part("z", 2, 3, b)),
            Err(ReassemblyError::OutOfOrder { .. })
        ));
        assert!(matches!(
            r.accept(part("w", 1, 2, b)),
            Err(ReassemblyError::OutOfOrder { .. })
        ));
        // Parts that do not make an event.
        assert_eq!(r.accept(part("v", 0, 2, "{\"type\":")), Ok(None));
        assert!(matches!(
            r.accept(part("v", 1, 2, "\"nope\"}")),
            Err(ReassemblyError::Malformed { .. })
        ));
        // At most MAX_JOINING at once; the oldest goes first.
        for i in 0..=MAX_JOINING {
            assert_eq!(r.accept(part(&format!("k{i}"), 0, 2, a)), Ok(None));
        }
        assert!(r.accept(part("k0", 1, 2, b)).is_err());
        assert!(r.accept(part("k1", 1, 2, b)).unwrap().is_some());
        // And at most MAX_JOINED_BYTES each.
        let big = "x".repeat(MAX_JOINED_BYTES / 2 + 1);
        assert_eq!(r.accept(part("b", 0, 3, &big)), Ok(None));
        assert!(matches!(
            r.accept(part("b", 1, 3, &big)),
            Err(ReassemblyError::TooLarge { .. })
        ));
    }
}
