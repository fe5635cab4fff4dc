//! The stores, side by side: both implement the capabilities in `ports`
//! (`SessionStore`, `TurnStore`, `ConnectionStore`) and pass one conformance
//! suite (`tests/src/conformance.rs`).
//!
//! - `sqlite`: one SQLite file, for the local gateway (feature `sqlite`);
//! - `dynamo`: three DynamoDB tables, for AWS (feature `aws`).

#[cfg(feature = "aws")]
pub mod dynamo;
#[cfg(feature = "sqlite")]
pub mod sqlite;
