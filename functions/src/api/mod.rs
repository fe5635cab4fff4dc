//! The driving adapters: what API Gateway (or the local gateway standing in
//! for it) calls. `rest` is the REST API as one axum Router; `socket` the
//! WebSocket routes; `auth` turns a token into the owner both of them use.

pub mod auth;
pub mod contract;
pub mod oidc;
pub mod rest;
pub mod socket;
