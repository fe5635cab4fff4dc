//! The Confab backend as a library, laid out as a hexagon:
//!
//! - `domain`: the records and rules of sessions and turns, and the use
//!   cases (the session service, subscriptions, the turn runner);
//! - `ports`: the traits the domain reaches the world through, and the one
//!   [`ports::Ports`] value a handler is given;
//! - driving adapters in `api`: the REST router, the socket handlers, auth;
//! - driven adapters: `store` (SQLite, DynamoDB), `aws` (push through the
//!   management API, dispatch to the worker Lambda, the Lambda entry
//!   points), `agents` (the LLM providers).
//!
//! The Lambda binaries and the local gateway are composition roots around it.

pub mod agents;
pub mod api;
#[cfg(feature = "aws")]
pub mod aws;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod ports;
pub mod store;
