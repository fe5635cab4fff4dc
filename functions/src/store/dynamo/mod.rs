//! The DynamoDB store. Three tables; the key design is in `docs/aws.md`.
//!
//! - sessions: `id`. The summary (`summary`, a map), the running turn
//!   (`turn`, a map whose `live`, `heartbeatMs` and `stopRequested` are
//!   updated in place), `rev` (a counter every summary write is conditioned
//!   on), and the attributes the indexes read: `owner` + `activityKey`
//!   (`byOwner`), `running` (`byRunning`, present only while a turn runs).
//! - messages: `sessionId` + `sk`. `m#<seq, 20 digits>` holds a message,
//!   `id#<message id>` its seq: the guard that makes a message id unique.
//! - connections: `connectionId` + `sk`. `conn` holds the owner (`byOwner`),
//!   `sub#<session id>` a subscription with its token (`bySession`). Every
//!   row carries `expiresAt` for DynamoDB's TTL.
//!
//! A seq is given inside a transaction conditioned on the session's `rev`,
//! together with the message and its id guard, so under concurrent sends it
//! can neither repeat nor skip: the loser of a race reads again and retries.

use crate::aws::stats::AwsStats;
use crate::domain::records::{
    ActiveTurn, CreateOutcome, ListCursor, MessageRange, NewSession, NewTurn, SessionPatch,
    SessionQuery, SessionRecord, StartOutcome, SubscribeOutcome, Subscriber, TurnEnd,
};
use crate::ports::{ConnectionStore, SessionStore, StoreError, TurnStore};
use async_trait::async_trait;
pub use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, ConsumedCapacity,
    DeleteRequest, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    Put, ReturnConsumedCapacity, ReturnValue, ScalarAttributeType, TimeToLiveSpecification,
    TransactWriteItem, Update, WriteRequest,
};
use confab_protocol::backoff::Backoff;
use confab_protocol::model::{LiveReply, Message, ProjectSummary, SessionSummary};
use confab_protocol::{SessionId, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;

type Item = HashMap<String, AttributeValue>;

/// Waits before a batch write sends again what DynamoDB left unprocessed.
const UNPROCESSED_BACKOFF: Backoff = Backoff {
    first: std::time::Duration::from_millis(20),
    max: std::time::Duration::from_secs(1),
    retries: MAX_ATTEMPTS as u32 - 1,
    jitter: 0.5,
};

/// Connection and subscription rows live this long without a refresh
/// (API Gateway closes a socket after 2 hours).
const CONNECTION_TTL_SECS: i64 = 3 * 60 * 60;
/// A write that lost a race is tried again this many times.
const MAX_ATTEMPTS: usize = 8;
const BY_OWNER: &str = "byOwner";
const BY_RUNNING: &str = "byRunning";
const BY_SESSION: &str = "bySession";
const RUNNING: &str = "turn";
const CONN_SK: &str = "conn";

/// The table names, from `CONFAB_*_TABLE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tables {
    pub sessions: String,
    pub messages: String,
    pub connections: String,
}

#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    tables: Arc<Tables>,
    stats: Arc<AwsStats>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("tables", &self.tables)
            .finish()
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn backend<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::backend(e)
}

fn to_av<T: serde::Serialize>(v: &T) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(v).map_err(StoreError::corrupt)
}

fn from_av<T: serde::de::DeserializeOwned>(v: &AttributeValue) -> Result<T, StoreError> {
    serde_dynamo::from_attribute_value(v.clone()).map_err(StoreError::corrupt)
}

fn get_s<'a>(item: &'a Item, k: &str) -> Result<&'a str, StoreError> {
    match item.get(k) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(corrupt(format!("attribute {k} is missing"))),
    }
}

fn get_n(item: &Item, k: &str) -> Result<i64, StoreError> {
    match item.get(k) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| corrupt(format!("attribute {k} is not a number"))),
        _ => Err(corrupt(format!("attribute {k} is missing"))),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Corrupt(String);

fn corrupt(m: String) -> StoreError {
    StoreError::corrupt(Corrupt(m))
}

/// A string attribute that holds an id.
fn get_id<T: std::str::FromStr<Err = confab_protocol::validate::Invalid>>(
    item: &Item,
    k: &str,
) -> Result<T, StoreError> {
    get_s(item, k)?.parse().map_err(StoreError::corrupt)
}

#[derive(Debug, thiserror::Error)]
#[error("a write lost {MAX_ATTEMPTS} races in a row")]
struct Contention;

fn message_sk(seq: u64) -> String {
    format!("m#{seq:020}")
}

fn guard_sk(message_id: &str) -> String {
    format!("id#{message_id}")
}

/// Newest activity first, ties by id (descending), as one sortable string.
fn activity_key(activity_ms: i64, id: &str) -> String {
    format!("{:013}#{id}", activity_ms.max(0))
}

fn expires_at(now_ms: i64) -> AttributeValue {
    n(now_ms / 1000 + CONNECTION_TTL_SECS)
}

/// The size DynamoDB bills an attribute value at: UTF-8 bytes of strings,
/// about one byte per two digits of a number, 3 bytes per map or list plus 1
/// per element.
pub fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + value_size(v) + 1)
                .sum::<usize>()
        }
        AttributeValue::L(l) => 3 + l.iter().map(|v| value_size(v) + 1).sum::<usize>(),
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        _ => 1,
    }
}

/// The billed size of an item: names and values.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Write units of one item of `bytes` (1 KiB each, at least 1).
fn units(bytes: usize) -> f64 {
    bytes.div_ceil(1024).max(1) as f64
}

/// About the size of a session row holding `rec` (the search attributes
/// counted at their summary's length).
fn session_size(summary: &SessionSummary, turn: Option<&ActiveTurn>) -> usize {
    let av = |v: Result<AttributeValue, StoreError>| v.map(|v| value_size(&v)).unwrap_or(0);
    80 + summary.id.len() * 3
        + summary.project_id.len()
        + summary.title.len()
        + summary.first_message_preview.len()
        + av(to_av(summary))
        + turn.map_or(0, |t| av(to_av(t)))
}

/// What a transaction's cancellation says about each of its items.
fn cancelled_on_condition<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<bool>> {
    let svc = e.as_service_error()?;
    match svc {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => {
            Some(
                c.cancellation_reasons()
                    .iter()
                    .map(|r| r.code() == Some("ConditionalCheckFailed"))
                    .collect(),
            )
        }
        _ => None,
    }
}

fn is_condition_failed<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// A session as read, with the revision its next write is conditioned on.
struct Loaded {
    record: SessionRecord,
    rev: i64,
}

fn parse_session(item: &Item) -> Result<Loaded, StoreError> {
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

impl DynamoStore {
    pub fn new(client: Client, tables: Tables, stats: Arc<AwsStats>) -> DynamoStore {
        DynamoStore {
            client,
            tables: Arc::new(tables),
            stats,
        }
    }

    /// A store on the tables `settings` names, with the SDK configured
    /// from the environment (or for the emulator it names).
    pub async fn from_settings(
        settings: &crate::aws::AwsSettings,
        stats: Arc<AwsStats>,
    ) -> DynamoStore {
        let sdk = settings.sdk_config();
        DynamoStore::new(Client::new(&sdk), settings.tables.clone(), stats)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn count(&self, kind: &str, cc: Option<&ConsumedCapacity>) {
        self.stats.request(kind);
        self.capacity(cc);
    }

    fn capacity(&self, cc: Option<&ConsumedCapacity>) {
        if let Some(cc) = cc {
            let read = cc.read_capacity_units().unwrap_or(0.0);
            let write = cc.write_capacity_units().unwrap_or(0.0);
            // Some answers give only the total; writes report write units.
            if read == 0.0 && write == 0.0 {
                self.stats.capacity(0.0, cc.capacity_units().unwrap_or(0.0));
            } else {
                self.stats.capacity(read, write);
            }
        }
    }

    fn capacities(&self, kind: &str, ccs: &[ConsumedCapacity]) {
        self.stats.request(kind);
        for cc in ccs {
            self.capacity(Some(cc));
        }
    }

    /// Creates the three tables with their indexes and TTL, as the SAM
    /// template declares them. For emulators and tests; idempotent.
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        let attr = |name: &str, t: ScalarAttributeType| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(t)
                .build()
                .map_err(backend)
        };
        let key = |name: &str, t: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(t)
                .build()
                .map_err(backend)
        };
        let gsi = |name: &str,
                   keys: Vec<KeySchemaElement>,
                   projection: ProjectionType,
                   include: &[&str]| {
            let mut p = Projection::builder().projection_type(projection);
            for a in include {
                p = p.non_key_attributes(*a);
            }
            GlobalSecondaryIndex::builder()
                .index_name(name)
                .set_key_schema(Some(keys))
                .projection(p.build())
                .build()
                .map_err(backend)
        };
        use KeyType::{Hash, Range};
        use ScalarAttributeType::S as Str;
        let specs = vec![
            (
                self.tables.sessions.clone(),
                vec![
                    attr("id", Str)?,
                    attr("owner", Str)?,
                    attr("activityKey", Str)?,
                    attr("running", Str)?,
                ],
                vec![key("id", Hash)?],
                vec![
                    gsi(
                        BY_OWNER,
                        vec![key("owner", Hash)?, key("activityKey", Range)?],
                        ProjectionType::Include,
                        &["summary", "projectId", "titleLc", "firstLc"],
                    )?,
                    gsi(
                        BY_RUNNING,
                        vec![key("running", Hash)?],
                        ProjectionType::KeysOnly,
                        &[],
                    )?,
                ],
                false,
            ),
            (
                self.tables.messages.clone(),
                vec![attr("sessionId", Str)?, attr("sk", Str)?],
                vec![key("sessionId", Hash)?, key("sk", Range)?],
                vec![],
                false,
            ),
            (
                self.tables.connections.clone(),
                vec![
                    attr("connectionId", Str)?,
                    attr("sk", Str)?,
                    attr("owner", Str)?,
                    attr("sessionId", Str)?,
                ],
                vec![key("connectionId", Hash)?, key("sk", Range)?],
                vec![
                    gsi(
                        BY_OWNER,
                        vec![key("owner", Hash)?],
                        ProjectionType::KeysOnly,
                        &[],
                    )?,
                    gsi(
                        BY_SESSION,
                        vec![key("sessionId", Hash)?, key("connectionId", Range)?],
                        ProjectionType::Include,
                        &["token"],
                    )?,
                ],
                true,
            ),
        ];
        for (name, attrs, keys, indexes, ttl) in specs {
            let mut req = self
                .client
                .create_table()
                .table_name(&name)
                .billing_mode(BillingMode::PayPerRequest)
                .set_attribute_definitions(Some(attrs))
                .set_key_schema(Some(keys));
            if !indexes.is_empty() {
                req = req.set_global_secondary_indexes(Some(indexes));
            }
            match req.send().await {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_in_use_exception()) =>
                {
                    continue;
                }
                Err(e) => return Err(backend(e)),
            }
            if ttl {
                self.client
                    .update_time_to_live()
                    .table_name(&name)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .enabled(true)
                            .attribute_name("expiresAt")
                            .build()
                            .map_err(backend)?,
                    )
                    .send()
                    .await
                    .map_err(backend)?;
            }
        }
        Ok(())
    }

    /// A strongly consistent `GetItem` of `key`, or of some attributes.
    async fn get(
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

    async fn load(&self, id: &str) -> Result<Option<Loaded>, StoreError> {
        self.get(&self.tables.sessions, &[("id", id)], None)
            .await?
            .as_ref()
            .map(parse_session)
            .transpose()
    }

    /// The summary's attributes as an update sets them.
    fn summary_values(
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

    /// Write units of a message row and its id guard.
    fn message_units(&self, m: &Message) -> f64 {
        let row = to_av(m).map(|v| value_size(&v)).unwrap_or(0) + 40 + m.session_id.len();
        units(row) + 1.0
    }

    fn message_puts(&self, m: &Message) -> Result<[TransactWriteItem; 2], StoreError> {
        let row = Put::builder()
            .table_name(&self.tables.messages)
            .item("sessionId", s(&m.session_id))
            .item("sk", s(message_sk(m.seq)))
            .item("message", to_av(m)?)
            .condition_expression("attribute_not_exists(sk)")
            .build()
            .map_err(backend)?;
        let guard = Put::builder()
            .table_name(&self.tables.messages)
            .item("sessionId", s(&m.session_id))
            .item("sk", s(guard_sk(&m.id)))
            .item("seq", n(m.seq))
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
    async fn append(
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
        let [row, guard] = self.message_puts(message)?;
        self.transact(vec![
            TransactWriteItem::builder()
                .update(update.build().map_err(backend)?)
                .build(),
            row,
            guard,
        ])
        .await
    }

    /// Runs a transaction. `Ok(None)` when a condition failed, with which
    /// items failed.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Option<Vec<bool>>, StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(out) => {
                self.capacities("dynamodb:TransactWriteItems", out.consumed_capacity());
                Ok(None)
            }
            Err(e) => {
                self.stats.request("dynamodb:TransactWriteItems");
                match cancelled_on_condition(&e) {
                    Some(failed) if failed.iter().any(|f| *f) => Ok(Some(failed)),
                    _ => Err(backend(e)),
                }
            }
        }
    }

    /// Every item of a query, across pages.
    async fn query_all(
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
    async fn query_eq(
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
    async fn delete_keys(&self, table: &str, keys: Vec<Item>) -> Result<(), StoreError> {
        for chunk in keys.chunks(25) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|k| {
                    DeleteRequest::builder()
                        .set_key(Some(k.clone()))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(backend)
                })
                .collect::<Result<_, _>>()?;
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
                // One unit per deleted row and one per index row it leaves.
                let left = out
                    .unprocessed_items()
                    .and_then(|u| u.get(table))
                    .map_or(0, Vec::len);
                self.stats.estimate(2.0 * (pending_len - left) as f64);
                pending = out
                    .unprocessed_items()
                    .and_then(|u| u.get(table))
                    .cloned()
                    .unwrap_or_default();
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

    async fn message_by_sk(
        &self,
        session_id: &str,
        sk: &str,
    ) -> Result<Option<Message>, StoreError> {
        self.get(
            &self.tables.messages,
            &[("sessionId", session_id), ("sk", sk)],
            None,
        )
        .await?
        .as_ref()
        .and_then(|i| i.get("message"))
        .map(from_av)
        .transpose()
    }

    async fn subscription_rows(&self, connection_id: &str) -> Result<Vec<Item>, StoreError> {
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

#[async_trait]
impl SessionStore for DynamoStore {
    async fn create_session(&self, new: &NewSession) -> Result<CreateOutcome, StoreError> {
        let sm = &new.summary;
        let mut first = new.first.clone();
        first.seq = 1;
        for _ in 0..MAX_ATTEMPTS {
            let session = Put::builder()
                .table_name(&self.tables.sessions)
                .item("id", s(&sm.id))
                .item("owner", s(&new.owner))
                .item("projectId", s(&sm.project_id))
                .item(
                    "activityKey",
                    s(activity_key(sm.last_message_at.millis(), &sm.id)),
                )
                .item("titleLc", s(sm.title.to_lowercase()))
                .item("firstLc", s(first.plain_text().to_lowercase()))
                .item("summary", to_av(sm)?)
                .item("turn", to_av(&new.turn)?)
                .item("running", s(RUNNING))
                .item("rev", n(0))
                .condition_expression("attribute_not_exists(id)")
                .build()
                .map_err(backend)?;
            let [row, guard] = self.message_puts(&first)?;
            match self
                .transact(vec![
                    TransactWriteItem::builder().put(session).build(),
                    row,
                    guard,
                ])
                .await?
            {
                None => {
                    let sess = session_size(sm, Some(&new.turn));
                    // Transactions bill twice; the row also lands in byOwner
                    // and byRunning.
                    self.stats.estimate(
                        2.0 * (units(sess) + self.message_units(&first)) + units(sess) + 1.0,
                    );
                    return Ok(CreateOutcome::Created);
                }
                Some(_) => {
                    if let Some(l) = self.load(&sm.id).await? {
                        return Ok(CreateOutcome::Exists(l.record));
                    }
                    // Deleted in between (its messages going): try again.
                }
            }
        }
        Err(backend(Contention))
    }

    async fn get_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.load(id).await?.map(|l| l.record))
    }

    async fn list_sessions(
        &self,
        owner: &str,
        q: &SessionQuery,
    ) -> Result<(Vec<SessionSummary>, Option<ListCursor>), StoreError> {
        let mut filters = Vec::new();
        let mut values: Item = HashMap::new();
        values.insert(":o".into(), s(owner));
        let mut key = "#owner = :o".to_string();
        if let Some(c) = &q.after {
            key.push_str(" AND activityKey < :c");
            values.insert(":c".into(), s(activity_key(c.activity_ms, &c.id)));
        }
        if let Some(p) = &q.project_id {
            filters.push("projectId = :p".to_string());
            values.insert(":p".into(), s(p));
        }
        if let Some(t) = q.text.as_deref().filter(|t| !t.is_empty()) {
            filters.push("(contains(titleLc, :t) OR contains(firstLc, :t))".to_string());
            values.insert(":t".into(), s(t));
        }
        let want = q.limit + 1;
        let mut out: Vec<SessionSummary> = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.tables.sessions)
                .index_name(BY_OWNER)
                .key_condition_expression(&key)
                .expression_attribute_names("#owner", "owner")
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .projection_expression("summary")
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            if filters.is_empty() {
                req = req.limit((want - out.len()) as i32);
            } else {
                req = req
                    .filter_expression(filters.join(" AND "))
                    .limit(want.max(100) as i32);
            }
            let page = req.send().await.map_err(backend)?;
            self.count("dynamodb:Query", page.consumed_capacity());
            for item in page.items() {
                if out.len() < want {
                    out.push(from_av(
                        item.get("summary")
                            .ok_or_else(|| corrupt("index row without summary".into()))?,
                    )?);
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() && out.len() < want => start = Some(k.clone()),
                _ => break,
            }
        }
        let next = ListCursor::page(&mut out, q.limit);
        Ok((out, next))
    }

    async fn list_projects(&self, owner: &str) -> Result<Vec<ProjectSummary>, StoreError> {
        let rows = self
            .query_eq(
                &self.tables.sessions,
                Some(BY_OWNER),
                "owner",
                owner,
                Some("id, projectId, activityKey"),
            )
            .await?;
        // Rows come newest first, so a project's first row is its latest.
        let mut projects: Vec<ProjectSummary> = Vec::new();
        let mut at: HashMap<String, usize> = HashMap::new();
        for r in &rows {
            let project = get_s(r, "projectId")?;
            match at.get(project) {
                Some(&i) => projects[i].session_count += 1,
                None => {
                    let ak = get_s(r, "activityKey")?;
                    let ms = ak
                        .split('#')
                        .next()
                        .and_then(|v| v.parse::<i64>().ok())
                        .ok_or_else(|| corrupt("bad activityKey".into()))?;
                    at.insert(project.to_string(), projects.len());
                    projects.push(ProjectSummary {
                        id: get_id(r, "projectId")?,
                        last_session_id: get_id(r, "id")?,
                        last_activity_at: Timestamp::from_millis(ms),
                        session_count: 1,
                    });
                }
            }
        }
        Ok(projects)
    }

    async fn patch_session(
        &self,
        owner: &str,
        id: &str,
        patch: &SessionPatch,
    ) -> Result<Option<SessionSummary>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(Loaded { mut record, rev }) =
                self.load(id).await?.filter(|l| l.record.owner == owner)
            else {
                return Ok(None);
            };
            let sm = &mut record.summary;
            patch.apply(sm);
            let mut req = self
                .client
                .update_item()
                .table_name(&self.tables.sessions)
                .key("id", s(id))
                .update_expression(
                    "SET summary = :summary, activityKey = :ak, titleLc = :tlc, rev = :next",
                )
                .condition_expression("rev = :rev")
                .expression_attribute_values(":rev", n(rev))
                .expression_attribute_values(":next", n(rev + 1))
                .return_consumed_capacity(ReturnConsumedCapacity::Total);
            for (k, v) in Self::summary_values(sm)? {
                req = req.expression_attribute_values(k, v);
            }
            match req.send().await {
                Ok(out) => {
                    self.count("dynamodb:UpdateItem", out.consumed_capacity());
                    let size = session_size(&record.summary, record.turn.as_ref());
                    self.stats.estimate(units(size) + units(size));
                    return Ok(Some(record.summary));
                }
                Err(e) if is_condition_failed(&e) => {
                    self.stats.request("dynamodb:UpdateItem");
                    continue;
                }
                Err(e) => return Err(backend(e)),
            }
        }
        Err(backend(Contention))
    }

    async fn delete_session(&self, owner: &str, id: &str) -> Result<Option<u64>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(Loaded { record, rev }) =
                self.load(id).await?.filter(|l| l.record.owner == owner)
            else {
                return Ok(None);
            };
            // Messages first: the session row goes last, so a failure half
            // way leaves a session that can be deleted again, never orphans
            // that a new session with this id would inherit.
            let keys = self
                .query_eq(
                    &self.tables.messages,
                    None,
                    "sessionId",
                    id,
                    Some("sessionId, sk"),
                )
                .await?;
            self.delete_keys(&self.tables.messages, keys).await?;
            let subs = self
                .query_eq(
                    &self.tables.connections,
                    Some(BY_SESSION),
                    "sessionId",
                    id,
                    None,
                )
                .await?;
            let sub_keys = subs
                .iter()
                .map(|r| {
                    Ok(HashMap::from([
                        ("connectionId".to_string(), s(get_s(r, "connectionId")?)),
                        ("sk".to_string(), s(format!("sub#{id}"))),
                    ]))
                })
                .collect::<Result<Vec<Item>, StoreError>>()?;
            self.delete_keys(&self.tables.connections, sub_keys).await?;
            match self
                .client
                .delete_item()
                .table_name(&self.tables.sessions)
                .key("id", s(id))
                .condition_expression("rev = :rev")
                .expression_attribute_values(":rev", n(rev))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
            {
                Ok(out) => {
                    self.count("dynamodb:DeleteItem", out.consumed_capacity());
                    return Ok(Some(record.summary.version + 1));
                }
                // A message arrived meanwhile: delete again.
                Err(e) if is_condition_failed(&e) => {
                    self.stats.request("dynamodb:DeleteItem");
                    continue;
                }
                Err(e) => return Err(backend(e)),
            }
        }
        Err(backend(Contention))
    }
}

#[async_trait]
impl TurnStore for DynamoStore {
    async fn messages(
        &self,
        session_id: &str,
        range: MessageRange,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let (lo, hi, limit, forward) = match range {
            MessageRange::Latest { limit } => (message_sk(0), message_sk(u64::MAX), limit, false),
            MessageRange::Before { seq, limit } => {
                if seq <= 1 {
                    return Ok((Vec::new(), false));
                }
                (message_sk(0), message_sk(seq - 1), limit, false)
            }
            MessageRange::After { seq, limit } => {
                if seq == u64::MAX {
                    return Ok((Vec::new(), false));
                }
                (message_sk(seq + 1), message_sk(u64::MAX), limit, true)
            }
        };
        let page = self
            .client
            .query()
            .table_name(&self.tables.messages)
            .key_condition_expression("sessionId = :s AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":s", s(session_id))
            .expression_attribute_values(":lo", s(lo))
            .expression_attribute_values(":hi", s(hi))
            .scan_index_forward(forward)
            .limit((limit + 1).min(i32::MAX as usize) as i32)
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(backend)?;
        self.count("dynamodb:Query", page.consumed_capacity());
        let mut out = page
            .items()
            .iter()
            .map(|i| {
                from_av::<Message>(
                    i.get("message")
                        .ok_or_else(|| corrupt("message row without message".into()))?,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let more = out.len() > limit;
        out.truncate(limit);
        if !forward {
            out.reverse();
        }
        Ok((out, more))
    }

    async fn find_message(
        &self,
        session_id: &str,
        message_id: &str,
    ) -> Result<Option<Message>, StoreError> {
        let guard = guard_sk(message_id);
        let Some(item) = self
            .get(
                &self.tables.messages,
                &[("sessionId", session_id), ("sk", &guard)],
                None,
            )
            .await?
        else {
            return Ok(None);
        };
        let seq = get_n(&item, "seq")?;
        self.message_by_sk(session_id, &message_sk(seq as u64))
            .await
    }

    async fn start_turn(
        &self,
        owner: &str,
        session_id: &str,
        turn: &NewTurn,
    ) -> Result<StartOutcome, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(Loaded { mut record, rev }) = self
                .load(session_id)
                .await?
                .filter(|l| l.record.owner == owner)
            else {
                return Ok(StartOutcome::NotFound);
            };
            if record.turn.is_some() {
                if let Some(m) = self.find_message(session_id, &turn.message.id).await? {
                    return Ok(StartOutcome::Duplicate(m));
                }
                return Ok(StartOutcome::Running);
            }
            let seq = record.summary.message_count + 1;
            let message = turn.apply(&mut record.summary, seq);
            let sm = &record.summary;
            match self
                .append(
                    session_id,
                    sm,
                    rev,
                    ", turn = :turn, running = :running",
                    "attribute_not_exists(turn)",
                    vec![(":turn", to_av(&turn.turn)?), (":running", s(RUNNING))],
                    &message,
                )
                .await?
            {
                None => {
                    let sess = session_size(&record.summary, Some(&turn.turn));
                    self.stats.estimate(
                        2.0 * (units(sess) + self.message_units(&message)) + units(sess) + 1.0,
                    );
                    return Ok(StartOutcome::Started {
                        message,
                        session: record.summary,
                    });
                }
                Some(failed) => {
                    if failed.get(2) == Some(&true)
                        && let Some(m) = self.find_message(session_id, &turn.message.id).await?
                    {
                        return Ok(StartOutcome::Duplicate(m));
                    }
                }
            }
        }
        Err(backend(Contention))
    }

    async fn checkpoint(
        &self,
        session_id: &str,
        turn_id: &str,
        live: &LiveReply,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match self
            .client
            .update_item()
            .table_name(&self.tables.sessions)
            .key("id", s(session_id))
            .update_expression("SET turn.live = :live, turn.heartbeatMs = :now")
            .condition_expression("turn.turnId = :t")
            .expression_attribute_values(":live", to_av(live)?)
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":t", s(turn_id))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(out) => {
                self.count("dynamodb:UpdateItem", out.consumed_capacity());
                // The row's other attributes (summary, keys) are about 1 KiB.
                let live = to_av(live).map(|v| value_size(&v)).unwrap_or(0);
                self.stats.estimate(units(live + 1024));
                Ok(true)
            }
            Err(e) if is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                Ok(false)
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn active_turn(
        &self,
        session_id: &str,
        turn_id: &str,
    ) -> Result<Option<ActiveTurn>, StoreError> {
        let item = self
            .get(&self.tables.sessions, &[("id", session_id)], Some("turn"))
            .await?;
        let Some(t) = item.as_ref().and_then(|i| i.get("turn")) else {
            return Ok(None);
        };
        let t: ActiveTurn = from_av(t)?;
        Ok((t.turn_id == turn_id).then_some(t))
    }

    async fn request_stop(
        &self,
        owner: &str,
        session_id: &str,
    ) -> Result<Option<SessionRecord>, StoreError> {
        match self
            .client
            .update_item()
            .table_name(&self.tables.sessions)
            .key("id", s(session_id))
            .update_expression("SET turn.stopRequested = :yes")
            .condition_expression("#owner = :o AND attribute_exists(turn.turnId)")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":o", s(owner))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .return_values(ReturnValue::AllNew)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
        {
            Ok(out) => {
                self.count("dynamodb:UpdateItem", out.consumed_capacity());
                if let Some(a) = out.attributes() {
                    self.stats.estimate(units(item_size(a)));
                }
                out.attributes()
                    .map(|a| parse_session(a).map(|l| l.record))
                    .transpose()
            }
            Err(e) if is_condition_failed(&e) => {
                self.stats.request("dynamodb:UpdateItem");
                Ok(self
                    .load(session_id)
                    .await?
                    .map(|l| l.record)
                    .filter(|r| r.owner == owner))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn finish_turn(
        &self,
        session_id: &str,
        turn_id: &str,
        end: &TurnEnd,
    ) -> Result<Option<(Message, SessionSummary)>, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(Loaded { mut record, rev }) = self.load(session_id).await? else {
                return Ok(None);
            };
            if record.turn.as_ref().is_none_or(|t| t.turn_id != turn_id) {
                return Ok(None);
            }
            let seq = record.summary.message_count + 1;
            let reply = end.apply(&mut record.summary, seq);
            let sm = &record.summary;
            if self
                .append(
                    session_id,
                    sm,
                    rev,
                    " REMOVE turn, running",
                    "turn.turnId = :t",
                    vec![(":t", s(turn_id))],
                    &reply,
                )
                .await?
                .is_none()
            {
                // Billed at the larger of before (with the live reply) and after.
                let before = session_size(&record.summary, record.turn.as_ref());
                let after = session_size(&record.summary, None);
                self.stats.estimate(
                    2.0 * (units(before.max(after)) + self.message_units(&reply))
                        + units(after)
                        + 1.0,
                );
                return Ok(Some((reply, record.summary)));
            }
        }
        Err(backend(Contention))
    }

    async fn running_turns(&self) -> Result<Vec<(String, SessionId, ActiveTurn)>, StoreError> {
        let rows = self
            .query_eq(
                &self.tables.sessions,
                Some(BY_RUNNING),
                "running",
                RUNNING,
                None,
            )
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let id = get_s(&r, "id")?;
            // The index lags; the row itself says whether the turn runs.
            if let Some(l) = self.load(id).await?
                && let Some(t) = l.record.turn
            {
                out.push((l.record.owner, l.record.summary.id, t));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn put_connection(&self, id: &str, owner: &str, now_ms: i64) -> Result<(), StoreError> {
        let out = self
            .client
            .put_item()
            .table_name(&self.tables.connections)
            .item("connectionId", s(id))
            .item("sk", s(CONN_SK))
            .item("owner", s(owner))
            .item("connectedMs", n(now_ms))
            .item("expiresAt", expires_at(now_ms))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(backend)?;
        self.count("dynamodb:PutItem", out.consumed_capacity());
        self.stats.estimate(2.0);
        Ok(())
    }

    async fn connection_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.get(
            &self.tables.connections,
            &[("connectionId", id), ("sk", CONN_SK)],
            None,
        )
        .await?
        .as_ref()
        .map(|i| get_s(i, "owner").map(str::to_string))
        .transpose()
    }

    async fn delete_connection(&self, id: &str) -> Result<(), StoreError> {
        let keys = self
            .subscription_rows(id)
            .await?
            .into_iter()
            .map(|mut r| {
                r.retain(|k, _| k == "connectionId" || k == "sk");
                r
            })
            .collect();
        self.delete_keys(&self.tables.connections, keys).await
    }

    async fn owner_connections(&self, owner: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .query_eq(
                &self.tables.connections,
                Some(BY_OWNER),
                "owner",
                owner,
                None,
            )
            .await?;
        rows.iter()
            .map(|r| get_s(r, "connectionId").map(str::to_string))
            .collect()
    }

    async fn subscribe(
        &self,
        connection_id: &str,
        session_id: &str,
        token: &str,
        max: usize,
    ) -> Result<SubscribeOutcome, StoreError> {
        let rows = self.subscription_rows(connection_id).await?;
        let this = format!("sub#{session_id}");
        let mut owner = None;
        let mut held = 0;
        for r in &rows {
            match get_s(r, "sk")? {
                CONN_SK => owner = Some(get_s(r, "owner")?.to_string()),
                sk if sk.starts_with("sub#") && sk != this => held += 1,
                _ => {}
            }
        }
        if held >= max {
            return Ok(SubscribeOutcome::TooMany);
        }
        let Some(owner) = owner else {
            return Ok(SubscribeOutcome::NotFound);
        };
        let now = crate::clock::now_ms();
        // The session must exist and be the connection owner's when the row
        // is written: a session deleted meanwhile gets no subscription.
        let check = ConditionCheck::builder()
            .table_name(&self.tables.sessions)
            .key("id", s(session_id))
            .condition_expression("#owner = :o")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":o", s(&owner))
            .build()
            .map_err(backend)?;
        let put = Put::builder()
            .table_name(&self.tables.connections)
            .item("connectionId", s(connection_id))
            .item("sk", s(this))
            .item("sessionId", s(session_id))
            .item("token", s(token))
            .item("expiresAt", expires_at(now))
            .build()
            .map_err(backend)?;
        match self
            .transact(vec![
                TransactWriteItem::builder().condition_check(check).build(),
                TransactWriteItem::builder().put(put).build(),
            ])
            .await?
        {
            None => {
                // Condition check and row, doubled; the bySession row.
                self.stats.estimate(2.0 * 2.0 + 1.0);
                Ok(SubscribeOutcome::Subscribed)
            }
            Some(_) => Ok(SubscribeOutcome::NotFound),
        }
    }

    async fn unsubscribe(&self, connection_id: &str, session_id: &str) -> Result<(), StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.tables.connections)
            .key("connectionId", s(connection_id))
            .key("sk", s(format!("sub#{session_id}")))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(backend)?;
        self.count("dynamodb:DeleteItem", out.consumed_capacity());
        self.stats.estimate(2.0);
        Ok(())
    }

    async fn subscribers(&self, session_id: &str) -> Result<Vec<Subscriber>, StoreError> {
        let rows = self
            .query_eq(
                &self.tables.connections,
                Some(BY_SESSION),
                "sessionId",
                session_id,
                None,
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Subscriber {
                    connection_id: get_s(r, "connectionId")?.to_string(),
                    token: get_s(r, "token")?.to_string(),
                })
            })
            .collect()
    }
}
