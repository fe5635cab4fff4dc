//! What every client shares: the state machines as plain data and plain
//! functions, so that the hardest logic of a front end is tested natively,
//! and the typed REST client over any transport.

pub mod current;
pub mod list;
pub mod rest;

pub use current::{CurrentSession, Effect, Phase};
pub use list::SessionList;
