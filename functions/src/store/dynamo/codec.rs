//! How rows are written and read: attribute values, keys, and a session row
//! back into a record.

use super::{CONNECTION_TTL_SECS, Item};
use crate::domain::records::{ActiveTurn, SessionRecord};
use crate::ports::StoreError;
use aws_sdk_dynamodb::types::AttributeValue;
use confab_protocol::model::SessionSummary;

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

pub(super) fn guard_sk(message_id: &str) -> String {
    format!("id#{message_id}")
}

/// Newest activity first, ties by id (descending), as one sortable string.
pub(super) fn activity_key(activity_ms: i64, id: &str) -> String {
    format!("{:013}#{id}", activity_ms.max(0))
}

pub(super) fn expires_at(now_ms: i64) -> AttributeValue {
    n(now_ms / 1000 + CONNECTION_TTL_SECS)
}

/// A session as read, with the revision its next write is conditioned on.
pub(super) struct Loaded {
    pub(super) record: SessionRecord,
    pub(super) rev: i64,
}

pub(super) fn parse_session(item: &Item) -> Result<Loaded, StoreError> {
    let summary: SessionSummary = from_av(
        item.get("summary")
            .ok_or_else(|| corrupt("session without summary".into()))?,
    )?;
    let turn = match item.get("turn") {
        None | Some(AttributeValue::Null(_)) => None,
        Some(t) => Some(from_av::<ActiveTurn>(t)?),
    };
    Ok(Loaded {
        record: SessionRecord {
            owner: get_s(item, "owner")?.to_string(),
            summary,
            turn,
        },
        rev: get_n(item, "rev")?,
    })
}
