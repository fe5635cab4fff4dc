//! The reads and writes the capabilities are made of: single-key queries,
//! the append transaction, batched deletes.

use super::billing::{item_size, units};
use super::codec::{
    GuardRow, Loaded, MessageRow, activity_key, guard_sk, item, message_sk, n, parse_session, s,
    to_av,
};
use super::errors::{Contention, backend, cancellation_reasons};
use super::{DynamoStore, Item, UNPROCESSED_BACKOFF};
use crate::ports::StoreError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, Put, PutRequest, ReturnConsumedCapacity, TransactWriteItem,
    Update, WriteRequest,
};
use confab_protocol::model::{Message, SessionSummary};

impl DynamoStore {
    /// A strongly consistent `GetItem` of `key`, or of some attributes.
    pub(super) async fn get(
        &self,
        table: &str,
        key: &[(&str, &str)],
        projection: Option<&str>,
    ) -> Result<Option<Item>, StoreError> {
        let key = key.iter().map(|(k, v)| (k.to_string(), s(*v))).collect();
        let out = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .set_projection_expression(projection.map(str::to_string))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(backend)?;
        self.count("dynamodb:GetItem", out.consumed_capacity());
        Ok(out.item)
    }

    pub(super) async fn load(&self, id: &str) -> Result<Option<Loaded>, StoreError> {
        self.get(&self.tables.sessions, &[("id", id)], None)
            .await?
            .as_ref()
            .map(parse_session)
            .transpose()
    }

    /// A session as its readers see it: with a long in-flight reply's
    /// content read back from its parts.
    pub(super) async fn load_full(&self, id: &str) -> Result<Option<Loaded>, StoreError> {
        let Some(mut l) = self.load(id).await? else {
            return Ok(None);
        };
        if let Some(t) = l.record.turn.as_mut() {
            self.resolve_live(id, &mut t.live, l.live_parts.as_ref())
                .await?;
        }
        Ok(Some(l))
    }

    /// The summary's attributes as an update sets them.
    pub(super) fn summary_values(
        summary: &SessionSummary,
    ) -> Result<Vec<(&'static str, AttributeValue)>, StoreError> {
        Ok(vec![
            (":summary", to_av(summary)?),
            (
                ":ak",
                s(activity_key(summary.last_message_at.millis(), &summary.id)),
            ),
            (":tlc", s(summary.title.to_lowercase())),
        ])
    }

    /// A message's row (with `parts` when its content is in parts) and its
    /// id guard, as transaction items.
    pub(super) fn message_items(
        &self,
        m: &Message,
        parts: Option<usize>,
    ) -> Result<[TransactWriteItem; 2], StoreError> {
        let row = Put::builder()
            .table_name(&self.tables.messages)
            .set_item(Some(item(&MessageRow {
                session_id: &m.session_id,
                sk: message_sk(m.seq),
                message: m,
                parts,
            })?))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(backend)?;
        let guard = Put::builder()
            .table_name(&self.tables.messages)
            .set_item(Some(item(&GuardRow {
                session_id: &m.session_id,
                sk: guard_sk(&m.id),
                seq: m.seq,
            })?))
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(backend)?;
        Ok([
            TransactWriteItem::builder().put(row).build(),
            TransactWriteItem::builder().put(guard).build(),
        ])
    }

    /// Stores `message` (at its seq, with its id guard) and the session's new
    /// summary in one transaction, conditioned on the revision `rev` was read
    /// at and on `condition`. `turn` ends the update expression (sets or
    /// removes the turn) with `values`. `Ok(None)` when it was written, else
    /// which items' conditions failed.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn append(
        &self,
        session_id: &str,
        summary: &SessionSummary,
        rev: i64,
        turn: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
        message: &Message,
    ) -> Result<Option<Vec<bool>>, StoreError> {
        let mut update = Update::builder()
            .table_name(&self.tables.sessions)
            .key("id", s(session_id))
            .update_expression(format!(
                "SET summary = :summary, activityKey = :ak, titleLc = :tlc, rev = :next{turn}"
            ))
            .condition_expression(format!("rev = :rev AND {condition}"))
            .expression_attribute_values(":rev", n(rev))
            .expression_attribute_values(":next", n(rev + 1));
        for (k, v) in Self::summary_values(summary)?.into_iter().chain(values) {
            update = update.expression_attribute_values(k, v);
        }
        let [row, guard] = self.message_puts(message).await?;
        self.transact(vec![
            TransactWriteItem::builder()
                .update(update.build().map_err(backend)?)
                .build(),
            row,
            guard,
        ])
        .await
    }

    /// Runs a transaction. `Ok(None)` when it was written, `Ok(Some(failed))`
    /// when a condition failed, with which items failed. A transaction that
    /// collided with another on the same item (`TransactionConflict`) is
    /// sent again after a short, growing wait.
    pub(super) async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Option<Vec<bool>>, StoreError> {
        let mut retry = 0;
        loop {
            match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
            {
                Ok(out) => {
                    self.capacities("dynamodb:TransactWriteItems", out.consumed_capacity());
                    return Ok(None);
                }
                Err(e) => {
                    self.stats.request("dynamodb:TransactWriteItems");
                    let reasons = cancellation_reasons(&e).unwrap_or_default();
                    let failed: Vec<bool> = reasons
                        .iter()
                        .map(|r| r == "ConditionalCheckFailed")
                        .collect();
                    if failed.iter().any(|f| *f) {
                        return Ok(Some(failed));
                    }
                    if reasons.iter().any(|r| r == "TransactionConflict") {
                        retry += 1;
                        if let Some(wait) = UNPROCESSED_BACKOFF.delay(retry, rand::random()) {
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                    return Err(backend(e));
                }
            }
        }
    }

    /// Every item of a query, across pages.
    pub(super) async fn query_all(
        &self,
        build: impl Fn() -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = build()
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(backend)?;
            self.count("dynamodb:Query", page.consumed_capacity());
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// Every item whose `attr` is `value`, in the table or one of its
    /// indexes (consistent on the table), newest sort key first.
    pub(super) async fn query_eq(
        &self,
        table: &str,
        index: Option<&str>,
        attr: &str,
        value: &str,
        projection: Option<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        self.query_all(|| {
            self.client
                .query()
                .table_name(table)
                .set_index_name(index.map(str::to_string))
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", attr)
                .expression_attribute_values(":v", s(value))
                .set_projection_expression(projection.map(str::to_string))
                .scan_index_forward(false)
                .consistent_read(index.is_none())
        })
        .await
    }

    /// Deletes keys in batches of 25, retrying what DynamoDB leaves
    /// unprocessed.
    pub(super) async fn delete_keys(&self, table: &str, keys: Vec<Item>) -> Result<(), StoreError> {
        let requests = keys
            .into_iter()
            .map(|k| {
                DeleteRequest::builder()
                    .set_key(Some(k))
                    .build()
                    .map(|d| WriteRequest::builder().delete_request(d).build())
                    .map_err(backend)
            })
            .collect::<Result<_, _>>()?;
        // One unit per deleted row and one per index row it leaves.
        self.batch_write(table, requests, 2.0).await
    }

    /// Puts items in batches of 25, retrying what DynamoDB leaves
    /// unprocessed.
    pub(super) async fn put_items(&self, table: &str, items: Vec<Item>) -> Result<(), StoreError> {
        let each = items.iter().map(item_size).max().map_or(1.0, units);
        let requests = items
            .into_iter()
            .map(|i| {
                PutRequest::builder()
                    .set_item(Some(i))
                    .build()
                    .map(|p| WriteRequest::builder().put_request(p).build())
                    .map_err(backend)
            })
            .collect::<Result<_, _>>()?;
        self.batch_write(table, requests, each).await
    }

    /// `BatchWriteItem` in batches of 25, sending again what DynamoDB leaves
    /// unprocessed (with the shared backoff); `units_each` is what a request
    /// is billed, for the estimate.
    async fn batch_write(
        &self,
        table: &str,
        requests: Vec<WriteRequest>,
        units_each: f64,
    ) -> Result<(), StoreError> {
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            let mut retry = 0;
            while !pending.is_empty() {
                let pending_len = pending.len();
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(table, pending)
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .send()
                    .await
                    .map_err(backend)?;
                self.capacities("dynamodb:BatchWriteItem", out.consumed_capacity());
                pending = out
                    .unprocessed_items()
                    .and_then(|u| u.get(table))
                    .cloned()
                    .unwrap_or_default();
                self.stats
                    .estimate(units_each * (pending_len - pending.len()) as f64);
                if pending.is_empty() {
                    break;
                }
                retry += 1;
                let Some(wait) = UNPROCESSED_BACKOFF.delay(retry, rand::random()) else {
                    return Err(backend(Contention));
                };
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }

    pub(super) async fn subscription_rows(
        &self,
        connection_id: &str,
    ) -> Result<Vec<Item>, StoreError> {
        self.query_eq(
            &self.tables.connections,
            None,
            "connectionId",
            connection_id,
            None,
        )
        .await
    }
}
