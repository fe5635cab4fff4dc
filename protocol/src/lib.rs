//! The Confab wire contract: serde types for REST bodies and socket frames,
//! the validation both sides share, and the client-side state machines as
//! plain functions over plain data (no I/O, compiles for wasm32).

// Test fixtures name the crate as its integration tests do.
#[cfg(test)]
extern crate self as confab_protocol;

pub mod backoff;
pub mod client;
#[cfg(test)]
mod fixtures;
pub mod ids;
pub mod model;
pub mod rest;
pub mod routes;
pub mod socket;
pub mod time;
pub mod validate;

pub use ids::{ConnectionId, MessageId, MessageText, ProjectId, RequestId, SessionId, TurnId};
pub use model::{
    Block, LastTurn, LiveReply, Message, MessageStatus, PermissionMode, Role, SessionStatus,
    SessionSummary, TurnOutcome, Usage,
};
pub use socket::{ClientFrame, ServerEvent};
pub use time::Timestamp;
