//! The DynamoDB store. Three tables; the key design is in `docs/aws.md`.
//!
//! - sessions: `id`. The summary (`summary`, a map), the running turn
//!   (`turn`, a map whose `live`, `heartbeatMs` and `stopRequested` are
//!   updated in place), `rev` (a counter every summary write is conditioned
//!   on), and the attributes the indexes read: `owner` + `activityKey`
//!   (`byOwner`), `running` (`byRunning`, present only while a turn runs).
//! - messages: `sessionId` + `sk`. `m#<seq, 20 digits>` holds a message,
//!   `id#<message id>` its seq: the guard that makes a message id unique.
//!   Content too large for an item is in parts beside it (`parts`).
//! - connections: `connectionId` + `sk`. `conn` holds the owner (`byOwner`),
//!   `sub#<session id>` a subscription with its token, session owner and
//!   incarnation (`subscribers`); `conn` counts its `sub#` rows (`subs`).
//!   `limits#<owner>` holds the owner's counters and sets (`limits`).
//!   Every row carries `expiresAt` for DynamoDB's TTL.
//!
//! A seq is given inside a transaction conditioned on the session's `rev`,
//! together with the message and its id guard, so under concurrent sends it
//! can neither repeat nor skip: the loser of a race reads again and retries.
//!
//! The folder by concern: `codec` (attribute values and keys), `errors`,
//! `billing` (sizes and write units), `schema` (the tables), `ops` (the
//! queries and transactions the capabilities share), and one file for each
//! capability: `sessions`, `turns`, `connections`, `limits`.

use crate::aws::stats::AwsStats;
pub use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use confab_protocol::backoff::Backoff;
use std::collections::HashMap;
use std::sync::Arc;

mod billing;
mod codec;
mod connections;
mod errors;
mod limits;
mod ops;
mod parts;
mod schema;
mod sessions;
mod turns;

pub use billing::{item_size, value_size};
pub use sessions::FILTER_SCAN_MAX;

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
/// Subscribers of a session, with the owner and incarnation each row names.
/// (Was `bySession`, which projected only the token; an index's projection
/// cannot change in place, so it has a new name.)
const BY_SESSION: &str = "subscribers";
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
    /// Per running turn: the hashes of the live parts this process wrote.
    live_written: Arc<std::sync::Mutex<HashMap<String, Vec<u64>>>>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("tables", &self.tables)
            .finish()
    }
}

impl DynamoStore {
    pub fn new(client: Client, tables: Tables, stats: Arc<AwsStats>) -> DynamoStore {
        DynamoStore {
            client,
            tables: Arc::new(tables),
            stats,
            live_written: Arc::default(),
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

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}
