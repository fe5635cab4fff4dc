//! One page per route.

pub mod home;
pub mod not_found;
pub mod session;
pub mod sign_in;
