//! Test support: the store conformance suite, shared by every `Store`
//! adapter, and a harness that runs a real `confab` process and talks to it
//! over real HTTP and WebSockets.

pub mod browser;
pub mod conformance;
pub mod fake_provider;
pub mod faulty;
pub mod harness;
pub mod moto;
pub mod oidc;
