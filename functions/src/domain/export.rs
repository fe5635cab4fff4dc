//! A session as a Markdown document or a JSON file.

use confab_protocol::model::{Block, Message, MessageStatus, Role, SessionSummary};

/// A fence longer than any run of backticks in `s`.
fn fence(s: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat((longest + 1).max(3))
}

fn fenced(lang: &str, body: &str) -> String {
    let f = fence(body);
    format!("{f}{lang}\n{body}\n{f}\n")
}

/// The whole session as one Markdown document.
pub fn markdown(s: &SessionSummary, messages: &[Message]) -> String {
    let mut out = markdown_head(s);
    out.push_str(&markdown_messages(messages));
    out
}

/// The document's title and facts.
pub fn markdown_head(s: &SessionSummary) -> String {
    let mut out = format!("# {}\n\n", s.title.replace('\n', " "));
    out.push_str(&format!(
        "- Session: `{}`\n- Project: `{}`\n- Created: {}\n- Messages: {}\n- Tokens: {} in, {} out\n\n---\n\n",
        s.id, s.project_id, s.created_at, s.message_count, s.usage.input_tokens, s.usage.output_tokens
    ));
    out
}

/// Messages as the document's sections.
pub fn markdown_messages(messages: &[Message]) -> String {
    let mut out = String::new();
    for m in messages {
        let who = match m.role {
            Role::User => "You",
            Role::Assistant => "Assistant",
        };
        let status = match m.status {
            MessageStatus::Complete => "",
            MessageStatus::Stopped => " (stopped)",
            MessageStatus::Failed => " (failed)",
            MessageStatus::Interrupted => " (interrupted)",
        };
        out.push_str(&format!("## {who} · {}{status}\n\n", m.created_at));
        for b in &m.content {
            match b {
                Block::Text { text } if text.is_empty() => {}
                Block::Text { text } => {
                    out.push_str(text);
                    out.push_str("\n\n");
                }
                Block::ToolUse { name, input, .. } => {
                    out.push_str(&format!("**Tool call:** `{name}`\n\n"));
                    let json = serde_json::to_string_pretty(input).unwrap_or_default();
                    out.push_str(&fenced("json", &json));
                    out.push('\n');
                }
                Block::ToolResult {
                    content, is_error, ..
                } => {
                    out.push_str(if *is_error {
                        "**Tool error:**\n\n"
                    } else {
                        "**Tool result:**\n\n"
                    });
                    out.push_str(&fenced("", content));
                    out.push('\n');
                }
            }
        }
        if let Some(e) = &m.error {
            out.push_str(&format!("> Error: {e}\n\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fences_outgrow_backticks_in_content() {
        assert_eq!(fence("no ticks"), "```");
        assert_eq!(fence("a ```` b"), "`````");
    }
}
