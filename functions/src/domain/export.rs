//! A session as a Markdown document, in pieces a streamed export writes
//! one after another (`sessions::export_stream`, which also writes JSON).

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

/// The fence that closes the code block `text` leaves open, if it does
/// (CommonMark: a line of at least three backticks or tildes, indented at
/// most three spaces, opens a block that only a run of the same character at
/// least as long closes).
fn open_fence(text: &str) -> Option<String> {
    let mut open: Option<(char, usize)> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if indent > 3 {
            continue;
        }
        let rest = &line[indent..];
        let Some(c) = rest.chars().next().filter(|c| *c == '`' || *c == '~') else {
            continue;
        };
        let run = rest.chars().take_while(|x| *x == c).count();
        if run < 3 {
            continue;
        }
        match open {
            None => {
                // A backtick fence's info string may not hold a backtick.
                if c == '`' && rest[run..].contains('`') {
                    continue;
                }
                open = Some((c, run));
            }
            Some((oc, on)) if oc == c && run >= on && rest[run..].trim().is_empty() => {
                open = None;
            }
            Some(_) => {}
        }
    }
    open.map(|(c, n)| c.to_string().repeat(n))
}

fn fenced(lang: &str, body: &str) -> String {
    let f = fence(body);
    format!("{f}{lang}\n{body}\n{f}\n")
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
                    out.push('\n');
                    // A code block the message left open would swallow the
                    // rest of the document: close it here.
                    if let Some(fence) = open_fence(text) {
                        out.push_str(&fence);
                        out.push('\n');
                    }
                    out.push('\n');
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

    fn text_message(text: &str) -> Message {
        Message {
            id: "0192f0c1-7e3a-7cc0-8a8e-000000000002".parse().unwrap(),
            session_id: "0192f0c1-7e3a-7cc0-8a8e-000000000001".parse().unwrap(),
            seq: 1,
            role: Role::Assistant,
            turn_id: "0192f0c1-7e3a-7cc0-8a8e-000000000003".parse().unwrap(),
            created_at: confab_protocol::Timestamp::from_millis(0),
            content: vec![Block::text(text)],
            status: MessageStatus::Complete,
            error: None,
            usage: None,
        }
    }

    #[test]
    fn a_code_block_left_open_does_not_swallow_what_follows() {
        let open = text_message("Here is the start:\n\n```rust\nfn main() {");
        let next = text_message("## Next step\n\nDone.");
        let md = markdown_messages(&[open, next]);
        // The block is closed right after the message that opened it, so the
        // next message's heading is a heading again.
        let closed_at = md.find("fn main() {\n```\n").expect("closed");
        let heading = md.find("\n## Next step").expect("heading");
        assert!(closed_at < heading);
        // Balanced fences, other fence characters and longer runs.
        assert_eq!(open_fence("```\ncode\n```"), None);
        assert_eq!(open_fence("~~~~\ncode\n~~~"), Some("~~~~".into()));
        assert_eq!(open_fence("````md\n```\n"), Some("````".into()));
        assert_eq!(open_fence("    ```\nindented is code, not a fence"), None);
        assert_eq!(open_fence("``` a`b\nnot a fence"), None);
        assert_eq!(open_fence("no code at all"), None);
    }

    #[test]
    fn fences_outgrow_backticks_in_content() {
        assert_eq!(fence("no ticks"), "```");
        assert_eq!(fence("a ```` b"), "`````");
    }
}
