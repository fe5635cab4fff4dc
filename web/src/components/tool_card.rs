//! A tool call or its result as a card that opens and closes.

use confab_protocol::model::Block;
use dioxus::prelude::*;

#[component]
pub fn ToolCard(block: Block) -> Element {
    match block {
        Block::ToolUse { name, input, .. } => {
            let json = serde_json::to_string_pretty(&input).unwrap_or_default();
            rsx! {
                details { class: "tool tool-use",
                    summary { span { class: "tool-kind", "Tool call" } " " code { "{name}" } }
                    pre { code { "{json}" } }
                }
            }
        }
        Block::ToolResult {
            content, is_error, ..
        } => {
            let first = content
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(80)
                .collect::<String>();
            rsx! {
                details { class: if is_error { "tool tool-result tool-error" } else { "tool tool-result" },
                    summary {
                        span { class: "tool-kind", if is_error { "Tool error" } else { "Tool result" } }
                        " "
                        span { class: "tool-preview", "{first}" }
                    }
                    pre { "{content}" }
                }
            }
        }
        Block::Text { text } => rsx! { p { "{text}" } },
    }
}
