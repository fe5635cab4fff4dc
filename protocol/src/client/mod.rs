//! The client's state machines as plain data and plain functions, so that the
//! hardest logic of a front end is tested natively.

pub mod current;
pub mod list;

pub use current::{CurrentSession, Effect, Phase};
pub use list::SessionList;
