//! Markdown as elements: pulldown-cmark's events become a small tree rendered
//! with rsx, so every piece of text is a text node. Raw HTML in a message is
//! shown as text and never executed; links keep only safe schemes; remote
//! images are not loaded (a link is shown instead).

use dioxus::prelude::*;
use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag};

#[derive(Clone, PartialEq, Debug)]
pub enum Md {
    Text(String),
    Code(String),
    Break,
    Rule,
    Node(Kind, Vec<Md>),
}

#[derive(Clone, PartialEq, Debug)]
pub enum Kind {
    P,
    H(u8),
    Quote,
    Pre(String),
    Ul,
    Ol(u64),
    Li,
    Em,
    Strong,
    Del,
    Link(String),
    Image(String),
    Table,
    THead,
    Tr,
    Td,
    Span,
}

pub fn parse(src: &str) -> Vec<Md> {
    let opts = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut stack: Vec<(Kind, Vec<Md>)> = vec![(Kind::Span, Vec::new())];
    fn push(s: &mut [(Kind, Vec<Md>)], n: Md) {
        if let Some(top) = s.last_mut() {
            top.1.push(n);
        }
    }
    for ev in Parser::new_ext(src, opts) {
        match ev {
            Event::Start(tag) => stack.push((kind_of(tag), Vec::new())),
            Event::End(_) => {
                if stack.len() > 1
                    && let Some((k, ch)) = stack.pop()
                {
                    push(&mut stack, Md::Node(k, ch));
                }
            }
            // Raw HTML stays text.
            Event::Text(t) | Event::Html(t) | Event::InlineHtml(t) => {
                push(&mut stack, Md::Text(t.into_string()))
            }
            Event::Code(t) | Event::InlineMath(t) | Event::DisplayMath(t) => {
                push(&mut stack, Md::Code(t.into_string()))
            }
            Event::SoftBreak => push(&mut stack, Md::Text("\n".into())),
            Event::HardBreak => push(&mut stack, Md::Break),
            Event::Rule => push(&mut stack, Md::Rule),
            Event::TaskListMarker(done) => {
                push(&mut stack, Md::Text(if done { "☑ " } else { "☐ " }.into()))
            }
            Event::FootnoteReference(t) => push(&mut stack, Md::Text(format!("[{t}]"))),
        }
    }
    while stack.len() > 1 {
        if let Some((k, ch)) = stack.pop() {
            push(&mut stack, Md::Node(k, ch));
        }
    }
    stack.pop().map(|(_, ch)| ch).unwrap_or_default()
}

fn kind_of(tag: Tag<'_>) -> Kind {
    match tag {
        Tag::Paragraph => Kind::P,
        Tag::Heading { level, .. } => Kind::H(level as u8),
        Tag::BlockQuote(_) => Kind::Quote,
        Tag::CodeBlock(CodeBlockKind::Fenced(lang)) => Kind::Pre(lang.into_string()),
        Tag::CodeBlock(CodeBlockKind::Indented) => Kind::Pre(String::new()),
        Tag::HtmlBlock => Kind::P,
        Tag::List(Some(start)) => Kind::Ol(start),
        Tag::List(None) => Kind::Ul,
        Tag::Item => Kind::Li,
        Tag::Emphasis => Kind::Em,
        Tag::Strong => Kind::Strong,
        Tag::Strikethrough => Kind::Del,
        Tag::Link { dest_url, .. } => Kind::Link(dest_url.into_string()),
        Tag::Image { dest_url, .. } => Kind::Image(dest_url.into_string()),
        Tag::Table(_) => Kind::Table,
        Tag::TableHead => Kind::THead,
        Tag::TableRow => Kind::Tr,
        Tag::TableCell => Kind::Td,
        _ => Kind::Span,
    }
}

/// Only links a person would expect to follow.
pub fn safe_href(url: &str) -> Option<String> {
    let l = url.trim().to_ascii_lowercase();
    (l.starts_with("https://")
        || l.starts_with("http://")
        || l.starts_with("mailto:")
        || l.starts_with('#'))
    .then(|| url.trim().to_string())
}

fn plain(nodes: &[Md]) -> String {
    let mut s = String::new();
    for n in nodes {
        match n {
            Md::Text(t) | Md::Code(t) => s.push_str(t),
            Md::Break => s.push('\n'),
            Md::Node(_, ch) => s.push_str(&plain(ch)),
            Md::Rule => {}
        }
    }
    s
}

fn render(nodes: &[Md]) -> Element {
    rsx! {
        for (i, n) in nodes.iter().enumerate() {
            Fragment { key: "{i}", {node(n)} }
        }
    }
}

fn node(n: &Md) -> Element {
    match n {
        Md::Text(t) => rsx! { "{t}" },
        Md::Code(t) => rsx! { code { "{t}" } },
        Md::Break => rsx! { br {} },
        Md::Rule => rsx! { hr {} },
        Md::Node(kind, ch) => {
            let inner = render(ch);
            match kind {
                Kind::P => rsx! { p { {inner} } },
                Kind::H(1) => rsx! { h3 { {inner} } },
                Kind::H(2) => rsx! { h4 { {inner} } },
                Kind::H(_) => rsx! { h5 { {inner} } },
                Kind::Quote => rsx! { blockquote { {inner} } },
                Kind::Pre(lang) => {
                    let text = plain(ch);
                    let label = lang.split_whitespace().next().unwrap_or("").to_string();
                    rsx! {
                        div { class: "code",
                            if !label.is_empty() { span { class: "code-lang", "{label}" } }
                            pre { code { class: "language-{label}", "{text}" } }
                        }
                    }
                }
                Kind::Ul => rsx! { ul { {inner} } },
                Kind::Ol(start) => rsx! { ol { start: "{start}", {inner} } },
                Kind::Li => rsx! { li { {inner} } },
                Kind::Em => rsx! { em { {inner} } },
                Kind::Strong => rsx! { strong { {inner} } },
                Kind::Del => rsx! { del { {inner} } },
                Kind::Link(url) => match safe_href(url) {
                    Some(href) => {
                        rsx! { a { href: "{href}", target: "_blank", rel: "noopener noreferrer nofollow", {inner} } }
                    }
                    None => rsx! { span { {inner} } },
                },
                Kind::Image(url) => {
                    let alt = plain(ch);
                    match safe_href(url) {
                        Some(href) => {
                            rsx! { a { href: "{href}", target: "_blank", rel: "noopener noreferrer nofollow", "[image: {alt}]" } }
                        }
                        None => rsx! { span { "[image: {alt}]" } },
                    }
                }
                Kind::Table => rsx! { div { class: "table", table { {inner} } } },
                Kind::THead => rsx! { thead { tr { {inner} } } },
                Kind::Tr => rsx! { tr { {inner} } },
                Kind::Td => rsx! { td { {inner} } },
                Kind::Span => rsx! { span { {inner} } },
            }
        }
    }
}

#[component]
pub fn Markdown(text: ReadSignal<String>) -> Element {
    let nodes = use_memo(move || parse(&text.read()));
    rsx! { div { class: "md", {render(&nodes.read())} } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_is_text() {
        let md = parse("hi <img src=x onerror=alert(1)> <script>alert(2)</script>");
        let text = plain(&md);
        assert!(text.contains("<img src=x onerror=alert(1)>"));
        assert!(text.contains("<script>"));
        let block = parse("<div onclick=\"x()\">\nblock\n</div>");
        assert!(plain(&block).contains("<div onclick"));
    }

    #[test]
    fn only_safe_links() {
        assert_eq!(safe_href("https://a.b"), Some("https://a.b".into()));
        assert_eq!(safe_href("javascript:alert(1)"), None);
        assert_eq!(safe_href(" JaVaScRiPt:alert(1)"), None);
        assert_eq!(safe_href("data:text/html,x"), None);
    }

    #[test]
    fn code_blocks_keep_their_text() {
        let md = parse("```rust\nfn main() {}\n```");
        assert_eq!(
            md,
            vec![Md::Node(
                Kind::Pre("rust".into()),
                vec![Md::Text("fn main() {}\n".into())]
            )]
        );
    }
}
