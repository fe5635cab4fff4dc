//! The Confab backend as a library: the domain over ports, the REST router,
//! the socket handlers, auth, configuration and agents. The Lambda binaries
//! and the local gateway are thin shells around it.

pub mod agents;
pub mod auth;
#[cfg(feature = "aws")]
pub mod aws;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod ports;
pub mod ratelimit;
pub mod ws;
