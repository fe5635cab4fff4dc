//! The sign-in page: one button to the identity provider, and why the last
//! sign-in failed when it did.

use dioxus::prelude::*;

#[component]
pub fn SignIn(why: Option<String>) -> Element {
    use_effect(|| crate::set_title("Sign in"));
    rsx! {
        main { class: "sign-in",
            div { class: "sign-in-card",
                h1 { class: "brand", "Confab" }
                p { "Sign in to see your sessions." }
                if let Some(why) = why {
                    p { class: "error", id: "sign-in-error", role: "alert", "{why}" }
                }
                button { class: "new-session", id: "sign-in", autofocus: true,
                    onclick: move |_| crate::auth::sign_in(), "Sign in" }
            }
        }
    }
}
