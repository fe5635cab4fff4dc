//! The domain: the records of sessions and turns with the rules that change
//! them, and the use cases over the ports.

pub mod export;
pub mod frames;
pub mod limits;
pub mod notify;
pub mod queue;
pub mod records;
pub mod requests;
pub mod runner;
pub mod sessions;
pub mod subscriptions;
