//! `/`: opens a fresh session, ready for a first message.

use crate::components::sidebar::open_new_session;
use crate::state::use_app;
use dioxus::prelude::*;

#[component]
pub fn Home() -> Element {
    let app = use_app();
    let nav = use_navigator();
    use_effect(move || open_new_session(app, nav));
    rsx! {}
}
