//! Any other path.

use crate::Route;
use dioxus::prelude::*;

#[component]
pub fn NotFound(segments: Vec<String>) -> Element {
    let path = segments.join("/");
    rsx! {
        section { class: "not-found",
            h1 { "Nothing at /{path}" }
            Link { to: Route::Home {}, "Start a new session" }
        }
    }
}
