//! Status banners: connecting, reconnecting, disconnected.

use crate::state::use_app;
use crate::state::{Conn, ReadyState, SocketCmd};
use dioxus::prelude::*;

#[component]
pub fn Banners() -> Element {
    let app = use_app();
    let socket = use_coroutine_handle::<SocketCmd>();
    let c: Conn = (app.conn)();
    let notice = (app.notice)();
    rsx! {
        div { class: "banners", aria_live: "polite",
            if c.signed_out {
                div { class: "banner banner-bad", id: "banner-signed-out", role: "alert",
                    "Your sign-in has expired. Sign in again, then "
                    button { onclick: move |_| socket.send(SocketCmd::Reconnect), "Reconnect" }
                }
            } else if c.gave_up {
                div { class: "banner banner-bad", id: "banner-disconnected", role: "alert",
                    "Disconnected from Confab. "
                    button { onclick: move |_| socket.send(SocketCmd::Reconnect), "Reconnect" }
                }
            } else if c.was_open && !c.ready && !c.renewing {
                div { class: "banner banner-warn", id: "banner-reconnecting", role: "status",
                    if c.state == ReadyState::Connecting {
                        "Reconnecting (attempt {c.attempt.max(1)} of 5)…"
                    } else if let Some(s) = c.retry_in {
                        "Connection lost. Reconnecting (attempt {c.attempt} of 5) in {s} s… "
                        button { class: "link", onclick: move |_| socket.send(SocketCmd::Reconnect), "Try now" }
                    } else {
                        "Connection lost. Reconnecting…"
                    }
                }
            } else if !c.ready && !c.renewing {
                div { class: "banner", id: "banner-connecting", role: "status", "Connecting…" }
            }
            if let Some(n) = notice {
                div { class: "banner banner-bad", role: "alert", "{n}" }
            }
        }
    }
}
