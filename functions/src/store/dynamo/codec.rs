//! How rows are written and read: the rows of the three tables as structs
//! (serde_dynamo writes and reads them, so each attribute is named once,
//! here; update expressions name the few they change), attribute values,
//! and keys.

use super::{CONNECTION_TTL_SECS, Item};
use crate::domain::records::{ActiveTurn, Queue, SessionRecord};
use crate::ports::StoreError;
use aws_sdk_dynamodb::types::AttributeValue;
use confab_protocol::model::{Message, SessionSummary};
use confab_protocol::{ProjectId, SessionId};
use serde::{Deserialize, Serialize};

/// A row of the sessions table.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SessionRow {
    pub(super) id: SessionId,
    pub(super) owner: String,
    /// Random per creation; subscriptions name it.
    #[serde(default)]
    pub(super) incarnation: String,
    pub(super) project_id: ProjectId,
    /// `byOwner`'s sort key: [`activity_key`].
    pub(super) activity_key: String,
    /// For search: the title and the first message, lowercased.
    pub(super) title_lc: String,
    pub(super) first_lc: String,
    pub(super) summary: SessionSummary,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) turn: Option<ActiveTurn>,
    /// Present while a turn runs: the key of the sparse `byRunning` index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) running: Option<String>,
    /// Every summary write is conditioned on it.
    pub(super) rev: i64,
    /// Where a long in-flight reply's content is (`turn.live` keeps the
    /// rest of it): see `parts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) live_parts: Option<super::parts::LiveParts>,
    /// The messages queued behind the running turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) queue: Option<Queue>,
}

/// A stored message, at `m#<seq>`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MessageRow<'a> {
    pub(super) session_id: &'a SessionId,
    pub(super) sk: String,
    pub(super) message: &'a Message,
    /// How many parts hold the content (then `message.content` is empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) parts: Option<usize>,
}

/// A message id's guard, at `id#<message id>`: its seq.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GuardRow<'a> {
    pub(super) session_id: &'a SessionId,
    pub(super) sk: String,
    pub(super) seq: u64,
}

/// A connection, at `conn`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConnectionRow<'a> {
    pub(super) connection_id: &'a str,
    pub(super) sk: &'a str,
    pub(super) owner: &'a str,
    pub(super) connected_ms: i64,
    /// How many `sub#` rows the connection holds, kept in the same
    /// transaction as each row, so the cap holds under racing subscribes.
    pub(super) subs: u32,
    pub(super) expires_at: i64,
    /// When the token the socket was opened with expires (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) auth_exp: Option<i64>,
}

/// A subscription, at `sub#<session id>`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SubscriptionRow<'a> {
    pub(super) connection_id: &'a str,
    pub(super) sk: String,
    pub(super) session_id: &'a str,
    pub(super) token: &'a str,
    /// The session's owner and incarnation when subscribed: fan-out sends
    /// only through rows that match the session as it is. (Not `owner`:
    /// that would put the row in the connections' `byOwner` index.)
    pub(super) session_owner: &'a str,
    pub(super) incarnation: &'a str,
    pub(super) expires_at: i64,
    /// When the row was last written: a renewal waits
    /// `RESUBSCRIBE_EVERY_MS` after it.
    pub(super) renewed_ms: i64,
}

/// A row as DynamoDB's item.
pub(super) fn item<T: Serialize>(row: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(row).map_err(StoreError::corrupt)
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn to_av<T: serde::Serialize>(v: &T) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(v).map_err(StoreError::corrupt)
}

pub(super) fn from_av<T: serde::de::DeserializeOwned>(v: &AttributeValue) -> Result<T, StoreError> {
    serde_dynamo::from_attribute_value(v.clone()).map_err(StoreError::corrupt)
}

pub(super) fn get_s<'a>(item: &'a Item, k: &str) -> Result<&'a str, StoreError> {
    match item.get(k) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(corrupt(format!("attribute {k} is missing"))),
    }
}

pub(super) fn get_n(item: &Item, k: &str) -> Result<i64, StoreError> {
    match item.get(k) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| corrupt(format!("attribute {k} is not a number"))),
        _ => Err(corrupt(format!("attribute {k} is missing"))),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct Corrupt(String);

pub(super) fn corrupt(m: String) -> StoreError {
    StoreError::corrupt(Corrupt(m))
}

/// A string attribute that holds an id.
pub(super) fn get_id<T: std::str::FromStr<Err = confab_protocol::validate::Invalid>>(
    item: &Item,
    k: &str,
) -> Result<T, StoreError> {
    get_s(item, k)?.parse().map_err(StoreError::corrupt)
}

pub(super) fn message_sk(seq: u64) -> String {
    format!("m#{seq:020}")
}

pub(super) fn sub_sk(session_id: &str) -> String {
    format!("sub#{session_id}")
}

pub(super) fn guard_sk(message_id: &str) -> String {
    format!("id#{message_id}")
}

/// Newest activity first, ties by id (descending), as one sortable string.
pub(super) fn activity_key(activity_ms: i64, id: &str) -> String {
    format!("{:013}#{id}", activity_ms.max(0))
}

/// When a connection row written at `now_ms` expires (TTL, in seconds).
pub(super) fn expires_at(now_ms: i64) -> i64 {
    now_ms / 1000 + CONNECTION_TTL_SECS
}

/// A session as read, with the revision its next write is conditioned on.
pub(super) struct Loaded {
    pub(super) record: SessionRecord,
    pub(super) rev: i64,
    /// Set when the in-flight reply's content is in parts, not yet read.
    pub(super) live_parts: Option<super::parts::LiveParts>,
}

pub(super) fn parse_session(item: &Item) -> Result<Loaded, StoreError> {
    let row: SessionRow = serde_dynamo::from_item(item.clone()).map_err(StoreError::corrupt)?;
    Ok(Loaded {
        record: SessionRecord {
            owner: row.owner,
            incarnation: row.incarnation,
            summary: row.summary,
            turn: row.turn,
            queue: row.queue.unwrap_or_default(),
        },
        rev: row.rev,
        live_parts: row.live_parts,
    })
}
