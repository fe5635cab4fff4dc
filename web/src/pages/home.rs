//! `/`: opens a fresh session, ready for a first message.

use crate::components::sidebar::new_session_route;
use crate::state::use_app;
use dioxus::prelude::*;

#[component]
pub fn Home() -> Element {
    let app = use_app();
    let nav = use_navigator();
    // Replace, so that Back does not land here and open another one.
    use_effect(move || {
        nav.replace(new_session_route(app));
    });
    rsx! {}
}
