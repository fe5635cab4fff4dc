//! What providers are sent: the stored conversation as role/text pairs, and a
//! system prompt added on the way (never stored).

use confab_protocol::model::{Block, Message, Role};

/// The system prompt when `CONFAB_AGENT_SYSTEM_PROMPT` is not set.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are the assistant in Confab, a console for AI agent sessions. Answer clearly; use Markdown for structure and code.";

/// The conversation as (role, text), oldest first. Tool blocks from earlier
/// turns are described in text; messages with no text are left out.
pub fn transcript(history: &[Message]) -> Vec<(Role, String)> {
    history
        .iter()
        .filter_map(|m| {
            let mut parts: Vec<String> = Vec::new();
            for b in &m.content {
                match b {
                    Block::Text { text } if !text.trim().is_empty() => parts.push(text.clone()),
                    Block::Text { .. } => {}
                    Block::ToolUse { name, input, .. } => {
                        parts.push(format!("[used tool {name} with {input}]"))
                    }
                    Block::ToolResult {
                        content, is_error, ..
                    } => {
                        let what = if *is_error {
                            "tool error"
                        } else {
                            "tool result"
                        };
                        parts.push(format!("[{what}: {content}]"));
                    }
                }
            }
            (!parts.is_empty()).then(|| (m.role, parts.join("\n\n")))
        })
        .collect()
}
