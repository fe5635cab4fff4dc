//! One message: the user's, a stored reply, or the reply being written.

use super::markdown::Markdown;
use super::tool_card::{Item, LoneResult, ToolCard, items};
use confab_protocol::model::{Block, MessageStatus, Role};
use dioxus::prelude::*;

#[component]
pub fn MessageView(
    role: Role,
    content: Vec<Block>,
    status: MessageStatus,
    error: Option<String>,
    /// Still being written.
    live: bool,
    /// Not yet confirmed by the server.
    pending: bool,
    on_retry: Option<EventHandler<()>>,
) -> Element {
    let who = match role {
        Role::User => "You",
        Role::Assistant => "Agent",
    };
    let class = match role {
        Role::User => "msg msg-user",
        Role::Assistant => "msg msg-agent",
    };
    let note = match (live, status) {
        (true, _) => Some("writing…"),
        (_, MessageStatus::Stopped) => Some("stopped"),
        (_, MessageStatus::Failed) => Some("failed"),
        (_, MessageStatus::Interrupted) => Some("interrupted"),
        _ if pending => Some("sending…"),
        _ => None,
    };
    rsx! {
        article { class: "{class}", "data-status": if live { "live" } else { "stored" },
            header { class: "msg-head",
                span { class: "msg-who", "{who}" }
                if let Some(n) = note { span { class: "msg-note", "{n}" } }
            }
            div { class: "msg-body",
                for (i, item) in items(&content).into_iter().enumerate() {
                    match item {
                        Item::Text(text) if role == Role::User => rsx! { p { key: "{i}", class: "user-text", "{text}" } },
                        Item::Text(text) => rsx! { Markdown { key: "{i}", text } },
                        Item::Tool { name, input, result, took, .. } => rsx! { ToolCard { key: "{i}", name, input, result, took, live } },
                        Item::Result { content, is_error } => rsx! { LoneResult { key: "{i}", content, is_error } },
                    }
                }
                if live && content.is_empty() { span { class: "typing", aria_label: "The agent is writing", "…" } }
            }
            if let Some(e) = error {
                div { class: "msg-error", role: "alert",
                    span { "{e}" }
                    if let Some(retry) = on_retry {
                        button { class: "link", onclick: move |_| retry.call(()), "Try again" }
                    }
                }
            }
        }
    }
}
