//! Values larger than an item. DynamoDB refuses items over 400 KB, and a
//! reply has no size limit of its own (the agent's token limit is the only
//! one), so a message or an in-flight reply whose content is large is kept
//! in parts, in the messages table beside it:
//!
//! - a stored message at `m#<seq>` whose content (as JSON) is over
//!   [`INLINE_MAX`] keeps an empty `content` and `parts: n`; its content's
//!   JSON is cut into `n` pieces of at most [`PART_BYTES`], at
//!   `m#<seq>/p<k>`, each naming the message (`of`). They sort between
//!   `m#<seq>` and `m#<seq + 1>`, so a range of messages reads its parts in
//!   the same `Query`. Parts are written before the transaction that stores
//!   the message; parts left at a seq by a transaction that lost a race name
//!   another message and are skipped.
//! - the in-flight reply of a running turn, when over [`INLINE_MAX`], is
//!   kept at `live#<turn id>/p<k>`, and the session row's `liveParts` says
//!   how many parts make it. A checkpoint rewrites only the parts that
//!   changed (a reply grows at its end); the parts go when the turn ends.

use super::codec::{corrupt, from_av, get_n, get_s, message_sk, s};
use super::errors::backend;
use super::{DynamoStore, Item};
use crate::ports::StoreError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, TransactWriteItem};
use confab_protocol::model::{Block, LiveReply, Message};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Content up to this many bytes of JSON stays in its item.
pub(super) const INLINE_MAX: usize = 64 * 1024;
/// The most bytes of one part: well under the 400 KB item limit.
pub(super) const PART_BYTES: usize = 256 * 1024;

/// A checkpoint of a long reply: how many parts make its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LiveParts {
    pub(super) turn_id: String,
    pub(super) count: u32,
}

fn part_sk(base: &str, k: usize) -> String {
    format!("{base}/p{k:06}")
}

fn live_base(turn_id: &str) -> String {
    format!("live#{turn_id}")
}

/// The key of a row of the messages table.
fn key(session_id: &str, sk: String) -> Item {
    HashMap::from([
        ("sessionId".to_string(), s(session_id)),
        ("sk".to_string(), s(sk)),
    ])
}

/// A part's row: its key, what it is a part of, and its bytes.
fn part_row(session_id: &str, sk: String, of: &str, piece: &[u8]) -> Item {
    let mut row = key(session_id, sk);
    row.insert("of".to_string(), s(of));
    row.insert("data".to_string(), AttributeValue::B(Blob::new(piece)));
    row
}

fn blob(item: &Item, k: &str) -> Result<Vec<u8>, StoreError> {
    match item.get(k) {
        Some(AttributeValue::B(b)) => Ok(b.as_ref().to_vec()),
        _ => Err(corrupt(format!("attribute {k} is missing"))),
    }
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// One part as read: its number, the message or turn it is of, its bytes.
type Part = (usize, String, Vec<u8>);

/// The rows of one range query, as read: messages with their parts.
struct Rows {
    mains: Vec<Item>,
    /// By the key they are parts of (`m#<seq>`, `live#<turn>`).
    parts: HashMap<String, Vec<Part>>,
}

impl DynamoStore {
    /// The writes that store `m`: its row and its id guard, for the caller's
    /// transaction. Content over [`INLINE_MAX`] is written in parts first.
    pub(super) async fn message_puts(
        &self,
        m: &Message,
    ) -> Result<[TransactWriteItem; 2], StoreError> {
        let content = serde_json::to_vec(&m.content).map_err(StoreError::corrupt)?;
        if content.len() <= INLINE_MAX {
            return self.message_items(m, None);
        }
        let base = message_sk(m.seq);
        let rows: Vec<Item> = content
            .chunks(PART_BYTES)
            .enumerate()
            .map(|(k, piece)| part_row(&m.session_id, part_sk(&base, k), &m.id, piece))
            .collect();
        let n = rows.len();
        self.put_items(&self.tables.messages, rows).await?;
        let mut head = m.clone();
        head.content = Vec::new();
        self.message_items(&head, Some(n))
    }

    /// Reads the messages with seq in `lo..=hi`, up to `limit` of them from
    /// the low end (`forward`) or the high end, following `LastEvaluatedKey`
    /// across DynamoDB's 1 MB pages until it has `limit + 1` or the range
    /// ends. Returns them oldest first, and whether more are in the range.
    pub(super) async fn read_messages(
        &self,
        session_id: &str,
        lo: u64,
        hi: u64,
        limit: usize,
        forward: bool,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let want = limit.saturating_add(1);
        let rows = self
            .read_range(
                session_id,
                &message_sk(lo),
                &part_sk(&message_sk(hi), 999_999),
                forward,
                want,
            )
            .await?;
        let more = rows.mains.len() > limit;
        let mut out = Vec::with_capacity(limit.min(rows.mains.len()));
        for item in rows.mains.iter().take(limit) {
            out.push(self.assemble(session_id, item, &rows.parts).await?);
        }
        if !forward {
            out.reverse();
        }
        Ok((out, more))
    }

    /// The message at `seq`, with its parts.
    pub(super) async fn message_at(
        &self,
        session_id: &str,
        seq: u64,
    ) -> Result<Option<Message>, StoreError> {
        Ok(self
            .read_messages(session_id, seq, seq, 1, true)
            .await?
            .0
            .pop())
    }

    /// One message row made whole: its parts (read with it, or fetched when
    /// the read stopped before them) put back as its content.
    async fn assemble(
        &self,
        session_id: &str,
        item: &Item,
        parts: &HashMap<String, Vec<Part>>,
    ) -> Result<Message, StoreError> {
        let mut m: Message = from_av(
            item.get("message")
                .ok_or_else(|| corrupt("message row without message".into()))?,
        )?;
        let Ok(n) = get_n(item, "parts") else {
            return Ok(m);
        };
        let n = n as usize;
        let sk = get_s(item, "sk")?;
        let mut pieces = pieces_of(parts.get(sk).map(Vec::as_slice).unwrap_or(&[]), &m.id, n);
        if pieces.is_none() {
            let again = self
                .read_range(
                    session_id,
                    &part_sk(sk, 0),
                    &part_sk(sk, 999_999),
                    true,
                    usize::MAX,
                )
                .await?;
            pieces = pieces_of(
                again.parts.get(sk).map(Vec::as_slice).unwrap_or(&[]),
                &m.id,
                n,
            );
        }
        let bytes = pieces.ok_or_else(|| corrupt(format!("parts of {sk} are missing")))?;
        m.content = serde_json::from_slice::<Vec<Block>>(&bytes).map_err(StoreError::corrupt)?;
        Ok(m)
    }

    /// Rows with `sk` in `lo..=hi`, until `mains` message rows are read or
    /// the range ends, across pages.
    async fn read_range(
        &self,
        session_id: &str,
        lo: &str,
        hi: &str,
        forward: bool,
        mains: usize,
    ) -> Result<Rows, StoreError> {
        let mut rows = Rows {
            mains: Vec::new(),
            parts: HashMap::new(),
        };
        let mut start: Option<Item> = None;
        loop {
            let left = mains.saturating_sub(rows.mains.len());
            let page = self
                .client
                .query()
                .table_name(&self.tables.messages)
                .key_condition_expression("sessionId = :s AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":s", s(session_id))
                .expression_attribute_values(":lo", s(lo))
                .expression_attribute_values(":hi", s(hi))
                .scan_index_forward(forward)
                .limit(left.clamp(1, 100) as i32)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(backend)?;
            self.count("dynamodb:Query", page.consumed_capacity());
            for item in page.items() {
                let sk = get_s(item, "sk")?;
                match sk.split_once('/') {
                    None if rows.mains.len() < mains => rows.mains.push(item.clone()),
                    None => {}
                    Some((base, k)) => {
                        let k = k
                            .strip_prefix('p')
                            .and_then(|k| k.parse::<usize>().ok())
                            .ok_or_else(|| corrupt(format!("bad part key {sk}")))?;
                        let of = get_s(item, "of")?.to_string();
                        rows.parts.entry(base.to_string()).or_default().push((
                            k,
                            of,
                            blob(item, "data")?,
                        ));
                    }
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() && rows.mains.len() < mains => start = Some(k.clone()),
                _ => return Ok(rows),
            }
        }
    }

    /// Every part of `base` (a message's `m#<seq>` or a turn's `live#`).
    async fn all_parts(&self, session_id: &str, base: &str) -> Result<Rows, StoreError> {
        self.read_range(
            session_id,
            &part_sk(base, 0),
            &part_sk(base, 999_999),
            true,
            usize::MAX,
        )
        .await
    }

    /// Saves a long in-flight reply's content in parts, rewriting only those
    /// that differ from what this process last wrote for the turn. Returns
    /// the pointer the session row keeps.
    pub(super) async fn put_live_parts(
        &self,
        session_id: &str,
        turn_id: &str,
        content: &[u8],
    ) -> Result<LiveParts, StoreError> {
        let base = live_base(turn_id);
        let hashes: Vec<u64> = content.chunks(PART_BYTES).map(hash).collect();
        let had = self
            .live_written
            .lock()
            .map(|m| m.get(turn_id).cloned().unwrap_or_default())
            .unwrap_or_default();
        let rows: Vec<Item> = content
            .chunks(PART_BYTES)
            .enumerate()
            .filter(|(k, _)| had.get(*k) != Some(&hashes[*k]))
            .map(|(k, piece)| part_row(session_id, part_sk(&base, k), turn_id, piece))
            .collect();
        self.put_items(&self.tables.messages, rows).await?;
        if let Ok(mut m) = self.live_written.lock() {
            // One entry per turn running in this process; a bound for turns
            // that ended without `finish_turn` here.
            if m.len() >= 4096 {
                m.clear();
            }
            m.insert(turn_id.to_string(), hashes.clone());
        }
        Ok(LiveParts {
            turn_id: turn_id.to_string(),
            count: hashes.len() as u32,
        })
    }

    /// The in-flight reply's content from its parts.
    pub(super) async fn live_content(
        &self,
        session_id: &str,
        parts: &LiveParts,
    ) -> Result<Vec<Block>, StoreError> {
        let base = live_base(&parts.turn_id);
        let rows = self.all_parts(session_id, &base).await?;
        let bytes = pieces_of(
            rows.parts.get(&base).map(Vec::as_slice).unwrap_or(&[]),
            &parts.turn_id,
            parts.count as usize,
        )
        .ok_or_else(|| corrupt(format!("parts of {base} are missing")))?;
        serde_json::from_slice(&bytes).map_err(StoreError::corrupt)
    }

    /// Puts a long reply's content into `live` when the row points to parts.
    pub(super) async fn resolve_live(
        &self,
        session_id: &str,
        live: &mut Option<LiveReply>,
        parts: Option<&LiveParts>,
    ) -> Result<(), StoreError> {
        if let (Some(l), Some(p)) = (live.as_mut(), parts)
            && l.turn_id.as_str() == p.turn_id
        {
            l.content = self.live_content(session_id, p).await?;
        }
        Ok(())
    }

    /// Removes a turn's live parts once the turn has ended; a failure only
    /// leaves rows that the session's deletion removes.
    pub(super) async fn drop_live_parts(&self, session_id: &str, turn_id: &str) {
        let had = self
            .live_written
            .lock()
            .ok()
            .and_then(|mut m| m.remove(turn_id));
        let base = live_base(turn_id);
        let keys = match had {
            Some(h) => (0..h.len())
                .map(|k| key(session_id, part_sk(&base, k)))
                .collect(),
            None => match self.all_parts(session_id, &base).await {
                Ok(rows) => rows
                    .parts
                    .get(&base)
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                    .iter()
                    .map(|(k, _, _)| key(session_id, part_sk(&base, *k)))
                    .collect(),
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "reading live parts failed"
                    );
                    return;
                }
            },
        };
        if let Err(e) = self.delete_keys(&self.tables.messages, keys).await {
            tracing::warn!(
                error = &e as &dyn std::error::Error,
                "removing live parts failed"
            );
        }
    }
}

/// The bytes of parts `0..n` of `of`, in order, if all are there.
fn pieces_of(parts: &[Part], of: &str, n: usize) -> Option<Vec<u8>> {
    let mut by_k: Vec<Option<&[u8]>> = vec![None; n];
    for (k, o, data) in parts {
        if o == of && *k < n {
            by_k[*k] = Some(data);
        }
    }
    let mut out = Vec::new();
    for p in by_k {
        out.extend_from_slice(p?);
    }
    Some(out)
}
