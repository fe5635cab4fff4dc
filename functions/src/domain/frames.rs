//! Socket frames as bytes, split so that none is over the contract's 32 KiB.

use bytes::Bytes;
use confab_protocol::model::{Block, LiveReply};
use confab_protocol::socket::MAX_SERVER_FRAME_BYTES;
use confab_protocol::{MessageId, ServerEvent, SessionId};

pub fn encode(event: &ServerEvent) -> Bytes {
    // Serializing our own types cannot fail: no maps with non-string keys.
    Bytes::from(serde_json::to_vec(event).unwrap_or_default())
}

/// The length of `c` inside a JSON string, as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The JSON-escaped length of a string, without its quotes.
pub fn escaped_str_len(s: &str) -> usize {
    s.chars().map(escaped_len).sum()
}

/// Splits `text` at character boundaries into pieces whose escaped length is
/// at most `budget` (and at least one character each).
fn split_escaped(text: &str, budget: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, c) in text.char_indices() {
        let n = escaped_len(c);
        if size + n > budget && i > start {
            out.push(&text[start..i]);
            start = i;
            size = 0;
        }
        size += n;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// A frame as it goes on the wire: whole within the frame limit, else as
/// `frame.part` events that a client joins (`confab_protocol::socket::
/// Reassembly`). A stored reply has no size limit, so `message.created` and
/// `subscribed` can be any size; nothing is refused for its size.
pub fn wire(frame: &Bytes) -> Vec<Bytes> {
    if frame.len() <= MAX_SERVER_FRAME_BYTES {
        return vec![frame.clone()];
    }
    let Ok(text) = std::str::from_utf8(frame) else {
        return vec![frame.clone()];
    };
    let id = crate::clock::new_token();
    let envelope = encode(&ServerEvent::FramePart {
        id: id.clone(),
        part: u32::MAX,
        parts: u32::MAX,
        data: String::new(),
    })
    .len();
    let pieces = split_escaped(
        text,
        MAX_SERVER_FRAME_BYTES.saturating_sub(envelope).max(64),
    );
    let parts = pieces.len() as u32;
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            encode(&ServerEvent::FramePart {
                id: id.clone(),
                part: i as u32,
                parts,
                data: piece.to_string(),
            })
        })
        .collect()
}

/// Deltas appending `text` to block `block` from byte `offset`.
pub fn delta_frames(
    session_id: &SessionId,
    message_id: &MessageId,
    block: usize,
    offset: usize,
    text: &str,
) -> Vec<ServerEvent> {
    let envelope = encode(&ServerEvent::MessageDelta {
        session_id: session_id.clone(),
        message_id: message_id.clone(),
        block,
        offset: offset + text.len(),
        text: String::new(),
    })
    .len();
    let budget = MAX_SERVER_FRAME_BYTES.saturating_sub(envelope).max(64);
    let mut off = offset;
    split_escaped(text, budget)
        .into_iter()
        .map(|piece| {
            let e = ServerEvent::MessageDelta {
                session_id: session_id.clone(),
                message_id: message_id.clone(),
                block,
                offset: off,
                text: piece.to_string(),
            };
            off += piece.len();
            e
        })
        .collect()
}

/// Sets block `index`; a text block too large for one frame is sent as its
/// start and then deltas.
pub fn block_frames(
    session_id: &SessionId,
    message_id: &MessageId,
    index: usize,
    block: &Block,
) -> Vec<ServerEvent> {
    let whole = ServerEvent::MessageBlock {
        session_id: session_id.clone(),
        message_id: message_id.clone(),
        index,
        block: block.clone(),
    };
    let Block::Text { text } = block else {
        return vec![whole];
    };
    if encode(&whole).len() <= MAX_SERVER_FRAME_BYTES {
        return vec![whole];
    }
    let empty = ServerEvent::MessageBlock {
        session_id: session_id.clone(),
        message_id: message_id.clone(),
        index,
        block: Block::text(""),
    };
    let mut out = vec![empty];
    out.extend(delta_frames(session_id, message_id, index, 0, text));
    out
}

/// The whole in-flight reply for a subscriber that has not had it: one
/// snapshot when it fits, else an empty snapshot and the blocks one by one.
pub fn snapshot_frames(session_id: &SessionId, live: &LiveReply) -> Vec<ServerEvent> {
    let whole = ServerEvent::MessageSnapshot {
        session_id: session_id.clone(),
        message_id: live.message_id.clone(),
        turn_id: live.turn_id.clone(),
        content: live.content.clone(),
    };
    if encode(&whole).len() <= MAX_SERVER_FRAME_BYTES {
        return vec![whole];
    }
    let mut out = vec![ServerEvent::MessageSnapshot {
        session_id: session_id.clone(),
        message_id: live.message_id.clone(),
        turn_id: live.turn_id.clone(),
        content: Vec::new(),
    }];
    for (i, b) in live.content.iter().enumerate() {
        out.extend(block_frames(session_id, &live.message_id, i, b));
    }
    out
}

/// The in-flight reply cut to fit in `budget` bytes of JSON: whole blocks
/// while they fit, then as much of a text block as fits. The client treats
/// it like an older checkpoint.
pub fn trim_live(live: &LiveReply, budget: usize) -> Option<LiveReply> {
    let mut out = LiveReply {
        message_id: live.message_id.clone(),
        turn_id: live.turn_id.clone(),
        content: Vec::new(),
    };
    let mut size = serde_json::to_vec(&out)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > budget {
        return None;
    }
    for b in &live.content {
        let n = serde_json::to_vec(b).map(|v| v.len()).unwrap_or(usize::MAX) + 1;
        if size + n <= budget {
            out.content.push(b.clone());
            size += n;
            continue;
        }
        if let Block::Text { text } = b {
            let envelope = serde_json::to_vec(&Block::text(""))
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            let room = budget.saturating_sub(size.saturating_add(envelope + 1));
            if let Some(first) = split_escaped(text, room.max(1)).first()
                && room > 0
            {
                out.content.push(Block::text(*first));
            }
        }
        break;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    const S: &str = "0192f0c1-7e3a-7cc0-8a8e-000000000001";
    const M: &str = "0192f0c1-7e3a-7cc0-8a8e-000000000002";
    const T: &str = "0192f0c1-7e3a-7cc0-8a8e-000000000003";
    use super::*;

    #[test]
    fn long_deltas_are_split_under_the_limit_and_rejoin() {
        let text: String = "a\"é\n€\u{1}𝄞".repeat(20_000);
        let frames = delta_frames(&S.parse().unwrap(), &M.parse().unwrap(), 2, 10, &text);
        assert!(frames.len() > 1);
        let mut joined = String::new();
        let mut expect_off = 10;
        for f in &frames {
            assert!(
                encode(f).len() <= MAX_SERVER_FRAME_BYTES,
                "{}",
                encode(f).len()
            );
            let ServerEvent::MessageDelta {
                offset,
                text,
                block,
                ..
            } = f
            else {
                panic!()
            };
            assert_eq!(*block, 2);
            assert_eq!(*offset, expect_off);
            expect_off += text.len();
            joined.push_str(text);
        }
        assert_eq!(joined, text);
    }

    #[test]
    fn short_delta_is_one_frame() {
        assert_eq!(
            delta_frames(&S.parse().unwrap(), &M.parse().unwrap(), 0, 0, "hi").len(),
            1
        );
    }

    #[test]
    fn big_snapshot_becomes_blocks_and_deltas() {
        let live = LiveReply {
            message_id: M.parse().unwrap(),
            turn_id: T.parse().unwrap(),
            content: vec![Block::text("x".repeat(100_000)), Block::text("tail")],
        };
        let frames = snapshot_frames(&S.parse().unwrap(), &live);
        assert!(
            frames
                .iter()
                .all(|f| encode(f).len() <= MAX_SERVER_FRAME_BYTES)
        );
        // A client applying them ends with the whole reply.
        let mut c = confab_protocol::client::CurrentSession::new_unsaved(S.parse().unwrap());
        for f in &frames {
            c.apply_event(f);
        }
        assert_eq!(c.live(), Some(&live));
    }

    #[test]
    fn trimmed_live_is_a_prefix() {
        let live = LiveReply {
            message_id: M.parse().unwrap(),
            turn_id: T.parse().unwrap(),
            content: vec![Block::text("ab"), Block::text("c".repeat(10_000))],
        };
        let t = trim_live(&live, 1000).unwrap();
        assert_eq!(t.content[0], Block::text("ab"));
        let Block::Text { text } = &t.content[1] else {
            panic!()
        };
        assert!(!text.is_empty() && text.len() < 1000);
        assert!(serde_json::to_vec(&t).unwrap().len() <= 1000);
    }

    #[test]
    fn an_event_over_the_limit_goes_in_parts_that_join_back() {
        use confab_protocol::socket::Reassembly;
        let mut text = String::new();
        for i in 0..40_000 {
            text.push_str(["a \"quote\" ", "ünï ", "\\ back ", "tab\t ", "x "][i % 5]);
        }
        let event = ServerEvent::MessageCreated {
            session_id: "0192f0c1-7e3a-7cc0-8a8e-000000000001".parse().unwrap(),
            message: confab_protocol::Message {
                id: "0192f0c1-7e3a-7cc0-8a8e-000000000002".parse().unwrap(),
                session_id: "0192f0c1-7e3a-7cc0-8a8e-000000000001".parse().unwrap(),
                seq: 2,
                role: confab_protocol::model::Role::Assistant,
                turn_id: "0192f0c1-7e3a-7cc0-8a8e-000000000003".parse().unwrap(),
                created_at: confab_protocol::Timestamp::from_millis(0),
                content: vec![Block::text(text)],
                status: confab_protocol::model::MessageStatus::Complete,
                error: None,
                usage: None,
            },
        };
        let whole = encode(&event);
        assert!(whole.len() > 128 * 1024);
        let frames = wire(&whole);
        assert!(frames.len() > 4);
        let mut r = Reassembly::default();
        let mut out = Vec::new();
        for f in &frames {
            assert!(f.len() <= MAX_SERVER_FRAME_BYTES, "{}", f.len());
            let e: ServerEvent = serde_json::from_slice(f).unwrap();
            assert!(matches!(e, ServerEvent::FramePart { .. }));
            out.extend(r.accept(e).unwrap());
        }
        assert_eq!(out, vec![event]);
        // A frame within the limit goes as it is.
        let small = encode(&ServerEvent::Pong);
        assert_eq!(wire(&small), vec![small]);
    }
}
