//! Tool calls as cards: a call and its result in one card, paired by id,
//! with its status, and shown the way coding agents' tools read best, by
//! Claude Code's names and input shapes: edits as diffs, commands with their
//! output, reads, searches, checklists, fetches and subagents. Any other
//! tool shows its input as JSON. Long results show their start and open on
//! demand.

use super::markdown::Markdown;
use confab_protocol::model::Block;
use dioxus::prelude::*;
use serde_json::Value;

/// Lines of a result shown before "Show all".
const PREVIEW_LINES: usize = 12;
/// Characters of a result shown before "Show all".
const PREVIEW_CHARS: usize = 2_000;
/// Longest side of an edit diffed line by line; longer ones show the old
/// text removed and the new one added.
const DIFF_MAX_LINES: usize = 400;

/// What a message's blocks show as: text, a tool call with its result when
/// it is there, or a result whose call is not in the message.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Text(String),
    Tool {
        id: String,
        name: String,
        input: Value,
        result: Option<(String, bool)>,
        /// How long it ran, when the server recorded it.
        took: Option<u64>,
    },
    Result {
        content: String,
        is_error: bool,
    },
}

/// Pairs each tool call with its result by id.
pub fn items(blocks: &[Block]) -> Vec<Item> {
    let mut out: Vec<Item> = Vec::new();
    for b in blocks {
        match b {
            Block::Text { text } => out.push(Item::Text(text.clone())),
            Block::ToolUse { id, name, input } => out.push(Item::Tool {
                id: id.clone(),
                name: name.clone(),
                input: input.clone(),
                result: None,
                took: None,
            }),
            Block::ToolResult {
                tool_use_id,
                content,
                is_error,
                duration_ms,
            } => {
                let call = out.iter_mut().rev().find_map(|i| match i {
                    Item::Tool {
                        id, result, took, ..
                    } if id == tool_use_id && result.is_none() => Some((result, took)),
                    _ => None,
                });
                match call {
                    Some((slot, took)) => {
                        *slot = Some((content.clone(), *is_error));
                        *took = *duration_ms;
                    }
                    None => out.push(Item::Result {
                        content: content.clone(),
                        is_error: *is_error,
                    }),
                }
            }
        }
    }
    out
}

/// Where a tool call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    Done,
    Error,
    Denied,
    /// The reply ended before a result came.
    NoResult,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Done => "done",
            Status::Error => "error",
            Status::Denied => "denied",
            Status::NoResult => "no result",
        }
    }
}

/// A refusal of permission, as Claude Code words it in the result.
fn is_denial(content: &str) -> bool {
    let c = content.to_ascii_lowercase();
    c.contains("permission") && (c.contains("denied") || c.contains("not granted"))
        || c.contains("doesn't want to proceed")
        || c.contains("was rejected")
}

pub fn status(result: Option<&(String, bool)>, live: bool) -> Status {
    match result {
        None if live => Status::Running,
        None => Status::NoResult,
        Some((c, true)) if is_denial(c) => Status::Denied,
        Some((_, true)) => Status::Error,
        Some((_, false)) => Status::Done,
    }
}

fn field<'a>(input: &'a Value, key: &str) -> &'a str {
    input.get(key).and_then(Value::as_str).unwrap_or("")
}

// ---- diffs ---------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Same(usize, usize, String),
    Del(usize, String),
    Add(usize, String),
}

/// A line diff of `old` into `new`, with 1-based line numbers on each side.
pub fn diff(old: &str, new: &str) -> Vec<Line> {
    let a: Vec<&str> = if old.is_empty() {
        Vec::new()
    } else {
        old.lines().collect()
    };
    let b: Vec<&str> = if new.is_empty() {
        Vec::new()
    } else {
        new.lines().collect()
    };
    if a.len() > DIFF_MAX_LINES || b.len() > DIFF_MAX_LINES {
        let mut out: Vec<Line> = a
            .iter()
            .enumerate()
            .map(|(i, l)| Line::Del(i + 1, l.to_string()))
            .collect();
        out.extend(
            b.iter()
                .enumerate()
                .map(|(j, l)| Line::Add(j + 1, l.to_string())),
        );
        return out;
    }
    // Longest common subsequence, from the end.
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u16; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(Line::Same(i + 1, j + 1, a[i].to_string()));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(Line::Del(i + 1, a[i].to_string()));
            i += 1;
        } else {
            out.push(Line::Add(j + 1, b[j].to_string()));
            j += 1;
        }
    }
    out
}

/// Edits as a diff (the card's head names the file).
#[component]
fn Diff(hunks: Vec<(String, String)>) -> Element {
    rsx! {
        div { class: "diff",
            for (h, (old, new)) in hunks.iter().enumerate() {
                table { key: "{h}", class: "diff-hunk",
                    tbody {
                        for (k, line) in diff(old, new).into_iter().enumerate() {
                            match line {
                                Line::Same(o, n, t) => rsx! { tr { key: "{k}", class: "same", td { class: "ln", "{o}" } td { class: "ln", "{n}" } td { class: "sign", " " } td { class: "txt", "{t}" } } },
                                Line::Del(o, t) => rsx! { tr { key: "{k}", class: "del", td { class: "ln", "{o}" } td { class: "ln" } td { class: "sign", "-" } td { class: "txt", "{t}" } } },
                                Line::Add(n, t) => rsx! { tr { key: "{k}", class: "add", td { class: "ln" } td { class: "ln", "{n}" } td { class: "sign", "+" } td { class: "txt", "{t}" } } },
                            }
                        }
                    }
                }
            }
        }
    }
}

// ---- long output ---------------------------------------------------------------

/// Text that shows its start, and all of it on demand.
#[component]
fn Output(text: String, #[props(default)] error: bool) -> Element {
    let mut open = use_signal(|| false);
    let lines = text.lines().count();
    let long = lines > PREVIEW_LINES || text.len() > PREVIEW_CHARS;
    let shown = if long && !open() {
        let mut s: String = text
            .lines()
            .take(PREVIEW_LINES)
            .collect::<Vec<_>>()
            .join("\n");
        if s.len() > PREVIEW_CHARS {
            let mut cut = PREVIEW_CHARS;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    } else {
        text.clone()
    };
    rsx! {
        pre { class: if error { "output output-error" } else { "output" }, "{shown}" }
        if long {
            button { class: "link show-all", r#type: "button", onclick: move |_| open.toggle(),
                if open() { "Show less" } else { "Show all ({lines} lines)" }
            }
        }
    }
}

// ---- the card ------------------------------------------------------------------

/// A tool's running time as people read it: "80 ms", "4.2 s", "2 m 5 s".
pub fn took_label(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{}.{} s", ms / 1000, ms % 1000 / 100),
        _ => format!("{} m {} s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// One tool call with its result.
#[component]
pub fn ToolCard(
    name: String,
    input: Value,
    result: Option<(String, bool)>,
    took: Option<u64>,
    live: bool,
) -> Element {
    let st = status(result.as_ref(), live);
    let (content, is_error) = result.clone().unwrap_or_default();
    let summary = summary(&name, &input);
    let body = body(&name, &input, &content, is_error, result.is_some());
    rsx! {
        div { class: "tool-card", "data-tool": "{name}", "data-status": st.label(),
            div { class: "tool-head",
                span { class: "tool-name", "{name}" }
                span { class: "tool-summary", "{summary}" }
                if let Some(ms) = took {
                    span { class: "tool-took", title: "How long the tool ran", "{took_label(ms)}" }
                }
                span { class: "tool-status status-{st.label()}", "{st.label()}" }
            }
            div { class: "tool-body", {body} }
        }
    }
}

/// The line beside the tool's name.
fn summary(name: &str, input: &Value) -> String {
    match name {
        "Edit" | "MultiEdit" | "Write" | "Read" | "NotebookEdit" => {
            field(input, "file_path").to_string()
        }
        "Bash" => {
            let d = field(input, "description");
            if d.is_empty() {
                String::new()
            } else {
                d.to_string()
            }
        }
        "Grep" | "Glob" => field(input, "pattern").to_string(),
        "WebFetch" => field(input, "url").to_string(),
        "WebSearch" => field(input, "query").to_string(),
        "Task" => field(input, "description").to_string(),
        "TodoWrite" => {
            let todos = input.get("todos").and_then(Value::as_array);
            let done = todos.map_or(0, |t| {
                t.iter()
                    .filter(|x| field(x, "status") == "completed")
                    .count()
            });
            format!("{done} of {} done", todos.map_or(0, Vec::len))
        }
        _ => String::new(),
    }
}

fn body(name: &str, input: &Value, content: &str, is_error: bool, has_result: bool) -> Element {
    let result = if has_result && !content.is_empty() {
        rsx! { Output { text: content.to_string(), error: is_error } }
    } else {
        rsx! {}
    };
    match name {
        "Edit" => {
            let hunks = vec![(
                field(input, "old_string").to_string(),
                field(input, "new_string").to_string(),
            )];
            rsx! {
                Diff { hunks }
                if is_error { {result} }
            }
        }
        "MultiEdit" => {
            let hunks = input
                .get("edits")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .map(|x| {
                            (
                                field(x, "old_string").to_string(),
                                field(x, "new_string").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            rsx! {
                Diff { hunks }
                if is_error { {result} }
            }
        }
        "Write" => {
            let hunks = vec![(String::new(), field(input, "content").to_string())];
            rsx! {
                Diff { hunks }
                if is_error { {result} }
            }
        }
        "Bash" => {
            let command = field(input, "command").to_string();
            let exit = if !has_result {
                ""
            } else if is_error {
                "exit status: failed"
            } else {
                "exit status: 0"
            };
            rsx! {
                pre { class: "command", "$ {command}" }
                {result}
                if !exit.is_empty() { div { class: "exit", "{exit}" } }
            }
        }
        "Read" => {
            let path = field(input, "file_path").to_string();
            let offset = input.get("offset").and_then(Value::as_u64);
            let limit = input.get("limit").and_then(Value::as_u64);
            let range = match (offset, limit) {
                (Some(o), Some(l)) => format!("lines {o}–{}", o + l.saturating_sub(1)),
                (Some(o), None) => format!("from line {o}"),
                (None, Some(l)) => format!("first {l} lines"),
                (None, None) => "whole file".to_string(),
            };
            let lines = content.lines().count();
            rsx! {
                div { class: "read", span { class: "path", "{path}" } " · {range}" if has_result { " · {lines} lines read" } }
                if is_error { {result} }
            }
        }
        "Grep" | "Glob" => {
            let pattern = field(input, "pattern").to_string();
            let within = [field(input, "path"), field(input, "glob")]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" ");
            let matches = content.lines().filter(|l| !l.trim().is_empty()).count();
            rsx! {
                div { class: "search", code { "{pattern}" } if !within.is_empty() { " in {within}" } if has_result { " · {matches} matches" } }
                {result}
            }
        }
        "TodoWrite" => {
            let todos: Vec<(String, String)> = input
                .get("todos")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .map(|x| {
                            (
                                field(x, "content").to_string(),
                                field(x, "status").to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            rsx! {
                ul { class: "todos",
                    for (i, (text, state)) in todos.into_iter().enumerate() {
                        li { key: "{i}", class: "todo todo-{state}",
                            input { r#type: "checkbox", disabled: true, checked: state == "completed" }
                            span { " {text}" }
                            if state == "in_progress" { span { class: "todo-now", " (in progress)" } }
                        }
                    }
                }
            }
        }
        "WebFetch" => {
            let url = field(input, "url").to_string();
            let href = super::markdown::safe_href(&url);
            rsx! {
                div { class: "fetch",
                    match href {
                        Some(h) => rsx! { a { href: "{h}", target: "_blank", rel: "noopener noreferrer nofollow", "{url}" } },
                        None => rsx! { span { "{url}" } },
                    }
                }
                {result}
            }
        }
        "WebSearch" => {
            let query = field(input, "query").to_string();
            rsx! {
                div { class: "fetch", "Search: " q { "{query}" } }
                {result}
            }
        }
        "Task" => {
            let prompt = field(input, "prompt").to_string();
            let agent = field(input, "subagent_type").to_string();
            rsx! {
                div { class: "subagent",
                    if !agent.is_empty() { div { class: "subagent-kind", "{agent}" } }
                    details { summary { "Instructions" } pre { class: "output", "{prompt}" } }
                    if has_result {
                        div { class: "subagent-result", Markdown { text: content.to_string() } }
                    }
                }
            }
        }
        _ => {
            let json = serde_json::to_string_pretty(input).unwrap_or_default();
            rsx! {
                pre { class: "json", "{json}" }
                {result}
            }
        }
    }
}

/// A result whose call is not in this message.
#[component]
pub fn LoneResult(content: String, is_error: bool) -> Element {
    rsx! {
        div { class: "tool-card", "data-tool": "result", "data-status": if is_error { "error" } else { "done" },
            div { class: "tool-head", span { class: "tool-name", if is_error { "Tool error" } else { "Tool result" } } }
            div { class: "tool-body", Output { text: content, error: is_error } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn calls_and_results_pair_by_id() {
        let blocks = vec![
            Block::text("first"),
            Block::ToolUse {
                id: "a".into(),
                name: "Bash".into(),
                input: json!({"command": "ls"}),
            },
            Block::ToolUse {
                id: "b".into(),
                name: "Read".into(),
                input: json!({"file_path": "x"}),
            },
            Block::ToolResult {
                tool_use_id: "b".into(),
                content: "read".into(),
                is_error: false,
                duration_ms: Some(40),
            },
            Block::ToolResult {
                tool_use_id: "a".into(),
                content: "boom".into(),
                is_error: true,
                duration_ms: None,
            },
            Block::ToolResult {
                tool_use_id: "zz".into(),
                content: "orphan".into(),
                is_error: false,
                duration_ms: Some(5),
            },
        ];
        let it = items(&blocks);
        assert_eq!(it.len(), 4);
        assert!(
            matches!(&it[1], Item::Tool { id, result: Some((c, true)), .. } if id == "a" && c == "boom")
        );
        assert!(
            matches!(&it[2], Item::Tool { id, result: Some((c, false)), took: Some(40), .. } if id == "b" && c == "read")
        );
        assert!(matches!(&it[1], Item::Tool { took: None, .. }));
        assert!(matches!(&it[3], Item::Result { content, .. } if content == "orphan"));
    }

    #[test]
    fn running_times_read_as_people_say_them() {
        assert_eq!(took_label(80), "80 ms");
        assert_eq!(took_label(4_250), "4.2 s");
        assert_eq!(took_label(125_000), "2 m 5 s");
    }

    #[test]
    fn status_reads_the_result() {
        assert_eq!(status(None, true), Status::Running);
        assert_eq!(status(None, false), Status::NoResult);
        assert_eq!(status(Some(&("ok".into(), false)), false), Status::Done);
        assert_eq!(status(Some(&("exit 1".into(), true)), false), Status::Error);
        assert_eq!(
            status(
                Some(&("Claude requested permissions to write to x, but you haven't granted it yet. Permission denied".into(), true)),
                false
            ),
            Status::Denied
        );
    }

    #[test]
    fn an_edit_diffs_line_by_line_with_numbers() {
        let d = diff("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(
            d,
            vec![
                Line::Same(1, 1, "a".into()),
                Line::Del(2, "b".into()),
                Line::Add(2, "B".into()),
                Line::Same(3, 3, "c".into()),
                Line::Add(4, "d".into()),
            ]
        );
        assert_eq!(
            diff("", "x\ny"),
            vec![Line::Add(1, "x".into()), Line::Add(2, "y".into())]
        );
        let big = "l\n".repeat(DIFF_MAX_LINES + 1);
        assert_eq!(diff(&big, "").len(), DIFF_MAX_LINES + 1);
    }
}
