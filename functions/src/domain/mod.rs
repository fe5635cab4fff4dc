//! The session service and the turn runner, over the ports.

pub mod export;
pub mod frames;
pub mod notify;
pub mod runner;
pub mod sessions;
