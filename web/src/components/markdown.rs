//! Markdown as elements: CommonMark 0.31.2 and the GFM extensions agents use
//! (tables, strikethrough, task lists, autolinks), parsed by pulldown-cmark
//! into a small tree that is rendered with rsx, so every piece of text is a
//! text node. Raw HTML in a message is shown as text and never executed;
//! links keep only safe schemes; images are not loaded until the person asks
//! (a link is shown instead); nesting is bounded.
//!
//! While a reply streams, only its last top-level block is parsed again:
//! the blocks before it are finished and kept, parsed and rendered once
//! (`Blocks`).

use dioxus::prelude::*;
use pulldown_cmark::{
    Alignment, BrokenLink, CodeBlockKind, CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd,
};
use std::collections::HashMap;
use std::rc::Rc;

/// How deep elements nest at most; deeper structure is kept flat.
pub const MAX_DEPTH: usize = 32;

#[derive(Clone, PartialEq, Debug)]
pub enum Md {
    Text(String),
    Code(String),
    /// Raw HTML from the message, shown as the text it is.
    Html(String),
    SoftBreak,
    HardBreak,
    Rule,
    /// A task list item's box.
    Task(bool),
    Node(Kind, Vec<Md>),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Align {
    None,
    Left,
    Center,
    Right,
}

#[derive(Clone, PartialEq, Debug)]
pub enum Kind {
    P,
    H(u8),
    Quote,
    /// A code block with its info string.
    Pre(String),
    Ul,
    Ol(u64),
    Li,
    Em,
    Strong,
    Del,
    Link {
        href: String,
        title: String,
    },
    Image {
        src: String,
        title: String,
    },
    Table(Vec<Align>),
    THead,
    TBody,
    Tr,
    Th(Align),
    Td(Align),
}

/// Which Markdown: CommonMark alone (for its spec), or with the GFM
/// extensions agents use, as the app shows replies.
#[cfg(test)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    CommonMark,
    Gfm,
}

#[cfg(test)]
impl Flavor {
    fn options(self) -> Options {
        match self {
            Flavor::CommonMark => Options::empty(),
            Flavor::Gfm => options(),
        }
    }
}

/// The GFM extensions agents use (autolinks are added by `build`).
fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Parses a whole document, as the app shows it.
#[cfg(test)]
pub fn parse(src: &str) -> Vec<Md> {
    parse_as(src, Flavor::Gfm)
}

/// Parses a whole document in a flavor.
#[cfg(test)]
pub fn parse_as(src: &str, flavor: Flavor) -> Vec<Md> {
    let parser = Parser::new_ext(src, flavor.options());
    build(parser, flavor == Flavor::Gfm)
}

/// Parses `src`, resolving links to definitions found elsewhere (`refs`).
fn parse_with(src: &str, refs: &HashMap<String, (String, String)>) -> Vec<Md> {
    let mut resolve = |l: BrokenLink<'_>| {
        refs.get(&normalize_label(&l.reference))
            .map(|(u, t)| (CowStr::from(u.clone()), CowStr::from(t.clone())))
    };
    let parser = Parser::new_with_broken_link_callback(src, options(), Some(&mut resolve));
    build(parser, true)
}

/// A link label as CommonMark matches them: case-folded, whitespace
/// collapsed.
fn normalize_label(l: &str) -> String {
    l.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

struct Open {
    kind: Option<Kind>,
    children: Vec<Md>,
}

/// Builds the tree from pulldown-cmark's events. Raw HTML becomes text;
/// nesting deeper than `MAX_DEPTH` is flattened into its parent; with
/// `autolinks`, bare URLs and emails in text become links (GFM).
fn build<'a>(events: impl Iterator<Item = Event<'a>>, autolinks: bool) -> Vec<Md> {
    let mut stack: Vec<Open> = vec![Open {
        kind: None,
        children: Vec::new(),
    }];
    let mut aligns: Vec<Align> = Vec::new();
    let mut cell = 0usize;
    let mut in_head = false;
    let mut link_depth = 0usize;
    let mut code_depth = 0usize;
    // Text between two other events, in one piece: the parser splits it
    // at characters that might have been syntax.
    let mut text = String::new();
    for ev in events {
        if let Event::Text(t) = &ev {
            text.push_str(t);
            continue;
        }
        let linking = autolinks && code_depth == 0 && link_depth == 0;
        flush_text(
            &mut stack.last_mut().expect("the root").children,
            &mut text,
            linking,
        );
        let top = stack.len() - 1;
        match ev {
            Event::Start(tag) => {
                let kind = match tag {
                    Tag::Paragraph => Some(Kind::P),
                    Tag::Heading { level, .. } => Some(Kind::H(heading_level(level))),
                    Tag::BlockQuote(_) => Some(Kind::Quote),
                    Tag::CodeBlock(k) => {
                        code_depth += 1;
                        Some(Kind::Pre(match k {
                            CodeBlockKind::Fenced(info) => info.to_string(),
                            CodeBlockKind::Indented => String::new(),
                        }))
                    }
                    Tag::List(Some(start)) => Some(Kind::Ol(start)),
                    Tag::List(None) => Some(Kind::Ul),
                    Tag::Item => Some(Kind::Li),
                    Tag::Emphasis => Some(Kind::Em),
                    Tag::Strong => Some(Kind::Strong),
                    Tag::Strikethrough => Some(Kind::Del),
                    Tag::Link {
                        link_type,
                        dest_url,
                        title,
                        ..
                    } => {
                        link_depth += 1;
                        let href = if link_type == pulldown_cmark::LinkType::Email {
                            format!("mailto:{dest_url}")
                        } else {
                            dest_url.to_string()
                        };
                        Some(Kind::Link {
                            href,
                            title: title.to_string(),
                        })
                    }
                    Tag::Image {
                        dest_url, title, ..
                    } => {
                        link_depth += 1;
                        Some(Kind::Image {
                            src: dest_url.to_string(),
                            title: title.to_string(),
                        })
                    }
                    Tag::Table(a) => {
                        aligns = a.iter().map(|a| align(*a)).collect();
                        Some(Kind::Table(aligns.clone()))
                    }
                    Tag::TableHead => {
                        in_head = true;
                        cell = 0;
                        Some(Kind::THead)
                    }
                    Tag::TableRow => {
                        cell = 0;
                        Some(Kind::Tr)
                    }
                    Tag::TableCell => {
                        let a = aligns.get(cell).copied().unwrap_or(Align::None);
                        cell += 1;
                        Some(if in_head { Kind::Th(a) } else { Kind::Td(a) })
                    }
                    // Raw HTML blocks are shown as their text, in a paragraph.
                    Tag::HtmlBlock => Some(Kind::P),
                    _ => None,
                };
                let kind = kind.filter(|_| stack.len() <= MAX_DEPTH);
                stack.push(Open {
                    kind,
                    children: Vec::new(),
                });
            }
            Event::End(end) => {
                match end {
                    TagEnd::CodeBlock => code_depth = code_depth.saturating_sub(1),
                    TagEnd::Link | TagEnd::Image => link_depth = link_depth.saturating_sub(1),
                    TagEnd::TableHead => in_head = false,
                    _ => {}
                }
                if stack.len() < 2 {
                    continue;
                }
                let open = stack.pop().expect("an open element");
                let parent = &mut stack.last_mut().expect("the root").children;
                match open.kind {
                    Some(Kind::Table(a)) => {
                        // The body rows, grouped as HTML has them.
                        let mut head = Vec::new();
                        let mut body = Vec::new();
                        for c in open.children {
                            match c {
                                Md::Node(Kind::THead, _) => head.push(c),
                                other => body.push(other),
                            }
                        }
                        if !body.is_empty() {
                            head.push(Md::Node(Kind::TBody, body));
                        }
                        parent.push(Md::Node(Kind::Table(a), head));
                    }
                    Some(k) => parent.push(Md::Node(k, open.children)),
                    None => parent.extend(open.children),
                }
            }
            Event::Text(_) => unreachable!("text is gathered above"),
            Event::Code(t) => stack[top].children.push(Md::Code(t.to_string())),
            Event::Html(t) | Event::InlineHtml(t) => {
                stack[top].children.push(Md::Html(t.to_string()))
            }
            Event::SoftBreak => stack[top].children.push(Md::SoftBreak),
            Event::HardBreak => stack[top].children.push(Md::HardBreak),
            Event::Rule => stack[top].children.push(Md::Rule),
            Event::TaskListMarker(done) => stack[top].children.push(Md::Task(done)),
            Event::InlineMath(t) | Event::DisplayMath(t) => push_text(&mut stack[top].children, &t),
            Event::FootnoteReference(t) => push_text(&mut stack[top].children, &format!("[^{t}]")),
        }
    }
    let linking = autolinks && code_depth == 0 && link_depth == 0;
    flush_text(
        &mut stack.last_mut().expect("the root").children,
        &mut text,
        linking,
    );
    // Whatever is still open (never, from a parser) closes here.
    while stack.len() > 1 {
        let open = stack.pop().expect("an open element");
        let parent = &mut stack.last_mut().expect("the root").children;
        match open.kind {
            Some(k) => parent.push(Md::Node(k, open.children)),
            None => parent.extend(open.children),
        }
    }
    stack.pop().map(|r| r.children).unwrap_or_default()
}

fn heading_level(l: HeadingLevel) -> u8 {
    match l {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

fn align(a: Alignment) -> Align {
    match a {
        Alignment::None => Align::None,
        Alignment::Left => Align::Left,
        Alignment::Center => Align::Center,
        Alignment::Right => Align::Right,
    }
}

/// Appends the gathered text, with its URLs made links when `linking`.
fn flush_text(children: &mut Vec<Md>, text: &mut String, linking: bool) {
    if text.is_empty() {
        return;
    }
    if linking {
        autolink(children, text);
    } else {
        push_text(children, text);
    }
    text.clear();
}

/// Appends text, joining it to text just before.
fn push_text(children: &mut Vec<Md>, t: &str) {
    if let Some(Md::Text(prev)) = children.last_mut() {
        prev.push_str(t);
    } else {
        children.push(Md::Text(t.to_string()));
    }
}

// ---- GFM autolinks -------------------------------------------------------------

/// Text with its bare URLs (`https://…`, `http://…`, `www.…`) and email
/// addresses made links, by the GFM autolink extension's rules.
fn autolink(children: &mut Vec<Md>, t: &str) {
    let b = t.as_bytes();
    let mut i = 0;
    let mut plain_from = 0;
    while i < b.len() {
        let at_word_start = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let found = if at_word_start && (b[i] == b'h' || b[i] == b'w' || b[i] == b'f') {
            url_at(t, i)
        } else if b[i] == b'@' {
            email_around(t, i, plain_from)
        } else {
            None
        };
        match found {
            Some((start, end, href)) => {
                push_text(children, &t[plain_from..start]);
                children.push(Md::Node(
                    Kind::Link {
                        href,
                        title: String::new(),
                    },
                    vec![Md::Text(t[start..end].to_string())],
                ));
                i = end;
                plain_from = end;
            }
            None => i += 1,
        }
    }
    push_text(children, &t[plain_from..]);
}

/// A URL starting at `i`: (start, end, href).
fn url_at(t: &str, i: usize) -> Option<(usize, usize, String)> {
    let rest = &t[i..];
    let (scheme_len, prefix) = if rest.starts_with("https://") {
        (8, "")
    } else if rest.starts_with("http://") {
        (7, "")
    } else if rest.starts_with("ftp://") {
        (6, "")
    } else if rest.starts_with("www.") {
        (0, "http://")
    } else {
        return None;
    };
    let domain_end = rest[scheme_len..]
        .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .map_or(rest.len(), |n| n + scheme_len);
    // A final `.` ends the sentence, not the domain.
    let domain = rest[scheme_len..domain_end].trim_end_matches('.');
    if !valid_domain(domain) {
        return None;
    }
    let mut end = rest[domain_end..]
        .find(|c: char| c.is_whitespace() || c == '<')
        .map_or(rest.len(), |n| n + domain_end);
    end = trim_url_end(&rest[..end], scheme_len + domain.len());
    if end <= scheme_len {
        return None;
    }
    Some((i, i + end, format!("{prefix}{}", &rest[..end])))
}

/// A domain of at least two segments, the last two without underscores.
fn valid_domain(d: &str) -> bool {
    let parts: Vec<&str> = d.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return false;
    }
    parts[parts.len() - 2..].iter().all(|p| !p.contains('_'))
}

/// Where a URL ends once trailing punctuation, an unbalanced `)` and an
/// entity-like `&x;` are left out, as GFM does.
fn trim_url_end(u: &str, min: usize) -> usize {
    let mut end = u.len();
    loop {
        let s = &u[..end];
        if end <= min {
            return end;
        }
        let last = s.chars().last().unwrap_or(' ');
        if "?!.,:*_~'\"".contains(last) {
            end -= last.len_utf8();
        } else if last == ')' {
            let open = s.matches('(').count();
            let close = s.matches(')').count();
            if close > open {
                end -= 1;
            } else {
                return end;
            }
        } else if last == ';' {
            // `&entity;` at the end is not part of the URL.
            match s.rfind('&') {
                Some(amp)
                    if s[amp + 1..s.len() - 1]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric())
                        && amp + 1 < s.len() - 1 =>
                {
                    end = amp;
                }
                _ => return end,
            }
        } else {
            return end;
        }
    }
}

/// An email address around the `@` at `at`, not reaching before `from`.
fn email_around(t: &str, at: usize, from: usize) -> Option<(usize, usize, String)> {
    let b = t.as_bytes();
    let mut start = at;
    while start > from && {
        let c = b[start - 1];
        c.is_ascii_alphanumeric() || b".-_+".contains(&c)
    } {
        start -= 1;
    }
    if start == at {
        return None;
    }
    let mut end = at + 1;
    while end < b.len() && (b[end].is_ascii_alphanumeric() || b"-_.".contains(&b[end])) {
        end += 1;
    }
    // A trailing `.` is punctuation; the last character must be a letter
    // or digit.
    while end > at + 1 && b[end - 1] == b'.' {
        end -= 1;
    }
    let domain = &t[at + 1..end];
    if !domain.contains('.')
        || !b[end - 1].is_ascii_alphanumeric()
        || domain.split('.').any(|p| p.is_empty())
    {
        return None;
    }
    Some((start, end, format!("mailto:{}", &t[start..end])))
}

// ---- the elements ---------------------------------------------------------------

/// Only links a person would expect to follow.
pub fn safe_href(url: &str) -> Option<String> {
    let l = url.trim().to_ascii_lowercase();
    (l.starts_with("https://")
        || l.starts_with("http://")
        || l.starts_with("mailto:")
        || l.starts_with('#'))
    .then(|| url.trim().to_string())
}

pub fn plain(nodes: &[Md]) -> String {
    let mut s = String::new();
    for n in nodes {
        match n {
            Md::Text(t) | Md::Code(t) | Md::Html(t) => s.push_str(t),
            Md::SoftBreak | Md::HardBreak => s.push('\n'),
            Md::Node(_, ch) => s.push_str(&plain(ch)),
            Md::Rule | Md::Task(_) => {}
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

fn align_style(a: &Align) -> &'static str {
    match a {
        Align::None => "",
        Align::Left => "text-align: left",
        Align::Center => "text-align: center",
        Align::Right => "text-align: right",
    }
}

fn node(n: &Md) -> Element {
    match n {
        Md::Text(t) | Md::Html(t) => rsx! { "{t}" },
        Md::Code(t) => rsx! { code { "{t}" } },
        Md::SoftBreak => rsx! { "\n" },
        Md::HardBreak => rsx! { br {} },
        Md::Rule => rsx! { hr {} },
        Md::Task(done) => rsx! { input { r#type: "checkbox", disabled: true, checked: *done } " " },
        Md::Node(kind, ch) => {
            let inner = render(ch);
            match kind {
                Kind::P => rsx! { p { {inner} } },
                Kind::H(1) => rsx! { h3 { {inner} } },
                Kind::H(2) => rsx! { h4 { {inner} } },
                Kind::H(_) => rsx! { h5 { {inner} } },
                Kind::Quote => rsx! { blockquote { {inner} } },
                Kind::Pre(info) => {
                    let text = plain(ch);
                    let lang = info.split_whitespace().next().unwrap_or("").to_string();
                    rsx! { CodeBlock { lang, text } }
                }
                Kind::Ul => rsx! { ul { {inner} } },
                Kind::Ol(start) => rsx! { ol { start: "{start}", {inner} } },
                Kind::Li => rsx! { li { {inner} } },
                Kind::Em => rsx! { em { {inner} } },
                Kind::Strong => rsx! { strong { {inner} } },
                Kind::Del => rsx! { del { {inner} } },
                Kind::Link { href, title } => match safe_href(href) {
                    Some(href) => rsx! {
                        a { href: "{href}", title: if !title.is_empty() { "{title}" }, target: "_blank", rel: "noopener noreferrer nofollow", {inner} }
                    },
                    None => rsx! { span { {inner} } },
                },
                Kind::Image { src, .. } => {
                    let alt = plain(ch);
                    match safe_href(src) {
                        Some(href) => rsx! {
                            a { href: "{href}", target: "_blank", rel: "noopener noreferrer nofollow", "[image: {alt}]" }
                        },
                        None => rsx! { span { "[image: {alt}]" } },
                    }
                }
                Kind::Table(_) => rsx! { div { class: "table", table { {inner} } } },
                Kind::THead => rsx! { thead { tr { {inner} } } },
                Kind::TBody => rsx! { tbody { {inner} } },
                Kind::Tr => rsx! { tr { {inner} } },
                Kind::Th(a) => rsx! { th { style: align_style(a), {inner} } },
                Kind::Td(a) => rsx! { td { style: align_style(a), {inner} } },
            }
        }
    }
}

/// A code block: its language, a Copy button, and its code highlighted when
/// it names a language the highlighter knows. The first such block loads
/// the highlighter; until then (and for unknown languages) the code is
/// plain text.
#[component]
fn CodeBlock(lang: String, text: String) -> Element {
    let mut loaded = use_signal(crate::highlight::is_ready);
    let mut copied = use_signal(|| false);
    let wants = !lang.is_empty();
    use_effect(use_reactive((&wants,), move |(wants,)| {
        if wants && !crate::highlight::is_ready() {
            spawn(async move {
                if crate::highlight::ready().await {
                    loaded.set(true);
                }
            });
        }
    }));
    let lit = if wants && loaded() {
        crate::highlight::highlight(&text, &lang)
    } else {
        None
    };
    let copy = {
        let text = text.clone();
        move |_| {
            let text = text.clone();
            spawn(async move {
                if crate::highlight::copy(&text).await {
                    copied.set(true);
                    gloo_timers::future::TimeoutFuture::new(1_500).await;
                    copied.set(false);
                }
            });
        }
    };
    rsx! {
        div { class: "code",
            div { class: "code-head",
                if wants { span { class: "code-lang", "{lang}" } }
                button { class: "code-copy", r#type: "button", onclick: copy,
                    if copied() { "Copied" } else { "Copy" }
                }
            }
            match lit {
                Some(html) => rsx! { pre { code { class: "hljs language-{lang}", dangerous_inner_html: "{html}" } } },
                None => rsx! { pre { code { class: "language-{lang}", "{text}" } } },
            }
        }
    }
}

// ---- streaming: finished blocks are kept ----------------------------------------

/// A document split into top-level blocks, of which all but the last are
/// finished: text appended later cannot change them. Built again from
/// where the last one starts when the text grows.
#[derive(Clone, Default)]
pub struct Blocks {
    /// The source the blocks were parsed from.
    source: String,
    /// Finished blocks: (their source's end, the block).
    done: Vec<Rc<Md>>,
    /// Where the unfinished tail starts in `source`.
    tail_from: usize,
    /// The blocks of the tail (the last may still change).
    tail: Vec<Rc<Md>>,
    /// Link definitions of the finished blocks.
    refs: HashMap<String, (String, String)>,
    /// The definitions the finished blocks were parsed with: those of the
    /// whole text as it was then.
    parsed_with: HashMap<String, (String, String)>,
    /// The finished blocks in groups of [`CHUNK`], each made once, so a
    /// render compares a few groups rather than every block.
    chunks: Vec<Rc<[Rc<Md>]>>,
}

/// Finished blocks per group on screen.
const CHUNK: usize = 32;

type Refs = HashMap<String, (String, String)>;

/// The link definitions of `src`, by normalized label.
fn refs_of(src: &str) -> Refs {
    // A definition needs `]:`; most text has none and is not parsed twice.
    if !src.contains("]:") {
        return Refs::new();
    }
    let parser = Parser::new_ext(src, options());
    parser
        .reference_definitions()
        .iter()
        .map(|(label, def)| {
            (
                normalize_label(label),
                (
                    def.dest.to_string(),
                    def.title.as_deref().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

impl Blocks {
    /// The blocks of `text`, reusing the finished ones when `text` extends
    /// the text they came from.
    pub fn update(&mut self, text: &str) {
        if !text.starts_with(&self.source[..self.tail_from]) {
            *self = Blocks::default();
        }
        self.source.clear();
        self.source.push_str(text);
        let tail_src = &text[self.tail_from..];
        // A link definition applies to the whole document: when the tail's
        // change what the finished blocks were parsed with, they are parsed
        // again (rarely: agents seldom write definitions).
        let mut all = self.refs.clone();
        for (k, v) in refs_of(tail_src) {
            all.entry(k).or_insert(v);
        }
        if all != self.parsed_with {
            if self.tail_from > 0 {
                let again = parse_with(&text[..self.tail_from], &all);
                self.done = again.into_iter().map(Rc::new).collect();
                self.chunks.clear();
            }
            self.parsed_with = all.clone();
        }
        let parser = Parser::new_ext(tail_src, options());
        // Top-level blocks of the tail and where each starts.
        let mut starts = Vec::new();
        let mut depth = 0usize;
        for (ev, range) in parser.into_offset_iter() {
            match ev {
                Event::Start(_) => {
                    if depth == 0 {
                        starts.push(range.start);
                    }
                    depth += 1;
                }
                Event::End(_) => depth = depth.saturating_sub(1),
                Event::Rule if depth == 0 => starts.push(range.start),
                Event::Html(_) if depth == 0 => starts.push(range.start),
                _ => {}
            }
        }
        // Everything before the last block's start is finished, as long as
        // a blank line separates it from the last block (a paragraph can
        // still become a heading, a list can still grow).
        let settled = starts
            .iter()
            .rev()
            .find(|&&s| s > 0 && tail_src[..s].ends_with("\n\n"))
            .copied();
        if let Some(cut) = settled {
            let finished = &tail_src[..cut];
            for (k, v) in refs_of(finished) {
                self.refs.entry(k).or_insert(v);
            }
            let blocks = parse_with(finished, &all);
            self.done.extend(blocks.into_iter().map(Rc::new));
            self.tail_from += cut;
        }
        let tail = parse_with(&text[self.tail_from..], &all);
        self.tail = tail.into_iter().map(Rc::new).collect();
    }

    /// Every block, finished ones first.
    #[cfg(test)]
    pub fn all(&self) -> impl Iterator<Item = &Rc<Md>> {
        self.done.iter().chain(self.tail.iter())
    }

    /// What is on screen: every block in groups of [`CHUNK`] by position.
    /// A group of finished blocks is made once and stays the same `Rc`;
    /// only the last one or two groups are made again as the text grows.
    fn shown(&mut self) -> Shown {
        while (self.chunks.len() + 1) * CHUNK <= self.done.len() {
            let from = self.chunks.len() * CHUNK;
            self.chunks.push(self.done[from..from + CHUNK].into());
        }
        let open: Vec<Rc<Md>> = self.done[self.chunks.len() * CHUNK..]
            .iter()
            .chain(self.tail.iter())
            .cloned()
            .collect();
        let mut groups = self.chunks.clone();
        groups.extend(open.chunks(CHUNK).map(Rc::from));
        Shown(groups)
    }

    #[cfg(test)]
    pub fn finished(&self) -> usize {
        self.done.len()
    }
}

/// A group of blocks as a prop, compared by identity: a group of finished
/// blocks is the same `Rc` from render to render, so the page's render
/// compares a few groups rather than every block.
#[derive(Clone)]
pub struct Chunk(Rc<[Rc<Md>]>);

impl PartialEq for Chunk {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// A block as a component's prop: a finished block is the same `Rc` from
/// render to render, so it compares equal at once and is neither rendered
/// nor diffed again.
#[derive(Clone)]
pub struct Shared(Rc<Md>);

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

#[component]
fn MdBlock(block: Shared) -> Element {
    node(&block.0)
}

/// A group of blocks; those that are the same `Rc` as last time are
/// neither rendered nor diffed again.
#[component]
fn MdGroup(blocks: Chunk) -> Element {
    rsx! {
        for (i, block) in blocks.0.iter().enumerate() {
            MdBlock { key: "{i}", block: Shared(block.clone()) }
        }
    }
}

/// The groups on screen, compared by identity.
#[derive(Clone)]
struct Shown(Vec<Rc<[Rc<Md>]>>);

impl PartialEq for Shown {
    fn eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && self.0.iter().zip(&other.0).all(|(a, b)| Rc::ptr_eq(a, b))
    }
}

#[component]
pub fn Markdown(text: ReadSignal<String>) -> Element {
    let cache = use_hook(|| Rc::new(std::cell::RefCell::new(Blocks::default())));
    let shown = use_memo(move || {
        let t = text.read();
        let mut c = cache.borrow_mut();
        c.update(&t);
        c.shown()
    });
    let shown = shown.read();
    rsx! {
        div { class: "md",
            for (g, group) in shown.0.iter().enumerate() {
                MdGroup { key: "{g}", blocks: Chunk(group.clone()) }
            }
        }
    }
}

/// The tree as CommonMark's reference HTML, to hold the parser to the spec's
/// examples (native tests; the app renders elements, never HTML).
#[cfg(test)]
pub mod html {
    use super::{Align, Kind, Md, plain};
    use pulldown_cmark_escape::escape_href;

    pub fn to_html(nodes: &[Md]) -> String {
        let mut out = String::new();
        children(&mut out, nodes);
        out
    }

    /// As the spec's reference renderer escapes text and attributes.
    fn text(out: &mut String, t: &str) {
        for c in t.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                c => out.push(c),
            }
        }
    }

    fn href(out: &mut String, u: &str) {
        escape_href(&mut *out, u).expect("writing to a string");
    }

    fn children(out: &mut String, ch: &[Md]) {
        for c in ch {
            node(out, c);
        }
    }

    /// `open`, the children, `close`.
    fn element(out: &mut String, open: &str, ch: &[Md], close: &str) {
        out.push_str(open);
        children(out, ch);
        out.push_str(close);
    }

    fn align(a: &Align) -> &'static str {
        match a {
            Align::None => "",
            Align::Left => " align=\"left\"",
            Align::Center => " align=\"center\"",
            Align::Right => " align=\"right\"",
        }
    }

    fn node(out: &mut String, n: &Md) {
        match n {
            // Raw HTML is shown as text, deliberately.
            Md::Text(t) | Md::Html(t) => text(out, t),
            Md::Code(t) => {
                out.push_str("<code>");
                text(out, t);
                out.push_str("</code>");
            }
            Md::SoftBreak => out.push('\n'),
            Md::HardBreak => out.push_str("<br />\n"),
            Md::Rule => out.push_str("<hr />\n"),
            Md::Task(done) => out.push_str(if *done {
                "<input checked=\"\" disabled=\"\" type=\"checkbox\"> "
            } else {
                "<input disabled=\"\" type=\"checkbox\"> "
            }),
            Md::Node(kind, ch) => match kind {
                Kind::P => element(out, "<p>", ch, "</p>\n"),
                Kind::H(l) => element(out, &format!("<h{l}>"), ch, &format!("</h{l}>\n")),
                Kind::Quote => element(out, "<blockquote>\n", ch, "</blockquote>\n"),
                Kind::Pre(info) => {
                    let lang = info.split_whitespace().next().unwrap_or("");
                    if lang.is_empty() {
                        out.push_str("<pre><code>");
                    } else {
                        out.push_str("<pre><code class=\"language-");
                        text(out, lang);
                        out.push_str("\">");
                    }
                    text(out, &plain(ch));
                    out.push_str("</code></pre>\n");
                }
                Kind::Ul => element(out, "<ul>\n", ch, "</ul>\n"),
                Kind::Ol(start) => {
                    if *start == 1 {
                        out.push_str("<ol>\n");
                    } else {
                        out.push_str(&format!("<ol start=\"{start}\">\n"));
                    }
                    children(out, ch);
                    out.push_str("</ol>\n");
                }
                Kind::Li => element(out, "<li>", ch, "</li>\n"),
                Kind::Em => element(out, "<em>", ch, "</em>"),
                Kind::Strong => element(out, "<strong>", ch, "</strong>"),
                Kind::Del => element(out, "<del>", ch, "</del>"),
                Kind::Link { href: u, title } => {
                    out.push_str("<a href=\"");
                    href(out, u);
                    if !title.is_empty() {
                        out.push_str("\" title=\"");
                        text(out, title);
                    }
                    out.push_str("\">");
                    children(out, ch);
                    out.push_str("</a>");
                }
                Kind::Image { src, title } => {
                    out.push_str("<img src=\"");
                    href(out, src);
                    out.push_str("\" alt=\"");
                    text(out, &plain(ch));
                    if !title.is_empty() {
                        out.push_str("\" title=\"");
                        text(out, title);
                    }
                    out.push_str("\" />");
                }
                Kind::Table(_) => element(out, "<table>\n", ch, "</table>\n"),
                Kind::THead => element(out, "<thead>\n<tr>\n", ch, "</tr>\n</thead>\n"),
                Kind::TBody => element(out, "<tbody>\n", ch, "</tbody>\n"),
                Kind::Tr => element(out, "<tr>\n", ch, "</tr>\n"),
                Kind::Th(a) => element(out, &format!("<th{}>", align(a)), ch, "</th>\n"),
                Kind::Td(a) => element(out, &format!("<td{}>", align(a)), ch, "</td>\n"),
            },
        }
    }

    /// HTML with the whitespace next to tags taken out (outside `<pre>`),
    /// so that two renderings compare equal when they differ only in line
    /// breaks between elements. Both sides of a comparison go through it.
    pub fn normalize(html: &str) -> String {
        let mut out = String::with_capacity(html.len());
        let mut in_pre = 0usize;
        let mut rest = html;
        while !rest.is_empty() {
            let (text, tag, after) = match rest.find('<') {
                Some(i) => {
                    let end = rest[i..].find('>').map_or(rest.len(), |j| i + j + 1);
                    (&rest[..i], &rest[i..end], &rest[end..])
                }
                None => (rest, "", ""),
            };
            if in_pre > 0 {
                out.push_str(text);
            } else {
                out.push_str(text.trim_matches(|c: char| c == '\n' || c == ' '));
            }
            let lower = tag.to_ascii_lowercase();
            if lower.starts_with("<pre") {
                in_pre += 1;
            } else if lower.starts_with("</pre") {
                in_pre = in_pre.saturating_sub(1);
            }
            out.push_str(tag);
            rest = after;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Md {
        Md::Text(s.into())
    }
    fn n(k: Kind, ch: Vec<Md>) -> Md {
        Md::Node(k, ch)
    }
    fn link(href: &str, ch: Vec<Md>) -> Md {
        n(
            Kind::Link {
                href: href.into(),
                title: String::new(),
            },
            ch,
        )
    }

    #[test]
    fn raw_html_is_text() {
        let md = parse("hi <img src=x onerror=alert(1)> <script>alert(2)</script>");
        assert!(plain(&md).contains("<img src=x onerror=alert(1)>"));
        assert!(plain(&md).contains("<script>alert(2)</script>"));
        let block = parse("<div onclick=\"x()\">\nblock\n</div>");
        assert!(plain(&block).contains("<div onclick"));
        // No element comes from it: only text, in a paragraph.
        assert!(
            matches!(&block[0], Md::Node(Kind::P, ch) if ch.iter().all(|c| matches!(c, Md::Html(_) | Md::Text(_) | Md::SoftBreak)))
        );
    }

    #[test]
    fn only_safe_links_are_followed() {
        assert_eq!(safe_href("https://a.b"), Some("https://a.b".into()));
        assert_eq!(safe_href("javascript:alert(1)"), None);
        assert_eq!(safe_href(" JaVaScRiPt:alert(1)"), None);
        assert_eq!(safe_href("data:text/html,x"), None);
    }

    #[test]
    fn link_targets_with_parentheses_are_whole() {
        assert_eq!(
            parse("[Rust](https://en.wikipedia.org/wiki/Rust_(programming_language))"),
            vec![n(
                Kind::P,
                vec![link(
                    "https://en.wikipedia.org/wiki/Rust_(programming_language)",
                    vec![t("Rust")]
                )]
            )]
        );
    }

    #[test]
    fn bare_urls_and_emails_are_links() {
        assert_eq!(
            parse("See https://example.com/a_(b). Or www.rust-lang.org, or me@example.org."),
            vec![n(
                Kind::P,
                vec![
                    t("See "),
                    link(
                        "https://example.com/a_(b)",
                        vec![t("https://example.com/a_(b)")]
                    ),
                    t(". Or "),
                    link("http://www.rust-lang.org", vec![t("www.rust-lang.org")]),
                    t(", or "),
                    link("mailto:me@example.org", vec![t("me@example.org")]),
                    t("."),
                ]
            )]
        );
        // Not in code, and not a word that merely starts like one.
        assert_eq!(
            parse("`https://a.b` and xhttps://a.b"),
            vec![n(
                Kind::P,
                vec![Md::Code("https://a.b".into()), t(" and xhttps://a.b")]
            )]
        );
    }

    #[test]
    fn gfm_tables_strikethrough_and_task_lists() {
        let md = parse("| a | b |\n|---|:-:|\n| 1 | `2` |\n\n~~gone~~\n\n- [x] done\n- [ ] to do");
        assert_eq!(
            md[0],
            n(
                Kind::Table(vec![Align::None, Align::Center]),
                vec![
                    n(
                        Kind::THead,
                        vec![
                            n(Kind::Th(Align::None), vec![t("a")]),
                            n(Kind::Th(Align::Center), vec![t("b")])
                        ]
                    ),
                    n(
                        Kind::TBody,
                        vec![n(
                            Kind::Tr,
                            vec![
                                n(Kind::Td(Align::None), vec![t("1")]),
                                n(Kind::Td(Align::Center), vec![Md::Code("2".into())])
                            ]
                        )]
                    ),
                ]
            )
        );
        assert_eq!(md[1], n(Kind::P, vec![n(Kind::Del, vec![t("gone")])]));
        assert_eq!(
            md[2],
            n(
                Kind::Ul,
                vec![
                    n(Kind::Li, vec![Md::Task(true), t("done")]),
                    n(Kind::Li, vec![Md::Task(false), t("to do")])
                ]
            )
        );
    }

    fn depth(nodes: &[Md]) -> usize {
        nodes
            .iter()
            .map(|n| match n {
                Md::Node(_, ch) => 1 + depth(ch),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let quotes = format!("hi\n{}", ">".repeat(5000));
        assert!(depth(&parse(&quotes)) <= MAX_DEPTH + 1);
        let lists: String = (0..3000)
            .map(|i| format!("{}- x\n", "  ".repeat(i)))
            .collect();
        assert!(depth(&parse(&lists)) <= MAX_DEPTH + 1);
        let emphasis = format!("{}x{}", "*_".repeat(2000), "_*".repeat(2000));
        assert!(depth(&parse(&emphasis)) <= MAX_DEPTH + 1);
    }

    #[test]
    fn anything_at_all_parses() {
        for s in [
            "", "\n\n", "*", "**", "[", "![", "](", "`", "> ", "- ", "1.", "|", "|-|", "```", "\\",
            "é*é*é", "_a_b_", "[a](b", "<", "<>", "www.", "a@b", "http://", "&#0;",
        ] {
            let _ = parse(s);
        }
        let _ = parse(&format!("a {}", "* ".repeat(16000)));
        let _ = parse(&"[".repeat(32000));
    }

    /// The documents the streaming test grows, by pieces.
    const DOCS: &[&str] = &[
        "# Plan\n\nFirst a paragraph with *emphasis* and a [link][ref].\n\n[ref]: https://example.com\n\n- one\n- two\n\n  still two\n\n1. a\n2. b\n\n```rust\nfn main() {\n\n    println!(\"hi\");\n}\n```\n\n> quoted\n> more\n\nSetext\n======\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nThe end, see [link][ref].",
        "para one\n\npara two\nstill two\n\n---\n\n    indented code\n\n    more code\n\nlast",
    ];

    #[test]
    fn finished_blocks_are_shown_in_groups_made_once() {
        let part = "A paragraph.\n\n- a list\n\n```rust\nfn x() {}\n```\n\n";
        let doc = part.repeat(40);
        let mut blocks = Blocks::default();
        let mut first: Option<Rc<[Rc<Md>]>> = None;
        let mut end = 0;
        while end < doc.len() {
            end = (end + 50).min(doc.len());
            blocks.update(&doc[..end]);
            let shown = blocks.shown();
            let all: Vec<&Rc<Md>> = blocks.all().collect();
            let in_groups: Vec<&Rc<Md>> = shown.0.iter().flat_map(|g| g.iter()).collect();
            assert_eq!(in_groups.len(), all.len(), "every block is shown once");
            assert!(
                in_groups.iter().zip(&all).all(|(a, b)| Rc::ptr_eq(a, b)),
                "in order"
            );
            assert!(shown.0.iter().all(|g| g.len() <= CHUNK));
            match (
                &first,
                shown
                    .0
                    .first()
                    .filter(|g| g.len() == CHUNK && blocks.finished() >= CHUNK),
            ) {
                (Some(a), Some(b)) => assert!(Rc::ptr_eq(a, b), "a group was made again"),
                (None, Some(b)) => first = Some(b.clone()),
                _ => {}
            }
        }
        assert!(blocks.shown().0.len() >= 3);
    }

    #[test]
    fn a_streamed_reply_parses_as_the_whole_and_keeps_finished_blocks() {
        for doc in DOCS {
            for step in [1, 2, 7, 64] {
                let mut blocks = Blocks::default();
                let mut end = 0;
                let mut kept: Vec<Rc<Md>> = Vec::new();
                let mut defs = Refs::new();
                while end < doc.len() {
                    end = (end + step).min(doc.len());
                    while !doc.is_char_boundary(end) {
                        end += 1;
                    }
                    blocks.update(&doc[..end]);
                    // Finished blocks are the same ones, never parsed again
                    // (but when a link definition arrives: it applies to
                    // them too).
                    let now: Vec<Rc<Md>> = blocks.all().take(blocks.finished()).cloned().collect();
                    let defs_now = refs_of(&doc[..end]);
                    if defs_now == defs {
                        for (a, b) in kept.iter().zip(&now) {
                            assert!(Rc::ptr_eq(a, b), "a finished block was parsed again");
                        }
                    }
                    defs = defs_now;
                    kept = now;
                }
                let streamed: Vec<Md> = blocks.all().map(|b| (**b).clone()).collect();
                assert_eq!(streamed, parse(doc), "step {step}");
                assert!(blocks.finished() > 0);
            }
        }
    }

    #[test]
    fn an_edited_text_is_parsed_afresh() {
        let mut blocks = Blocks::default();
        blocks.update("one\n\ntwo\n\nthree");
        blocks.update("uno\n\ntwo");
        let got: Vec<Md> = blocks.all().map(|b| (**b).clone()).collect();
        assert_eq!(got, parse("uno\n\ntwo"));
    }
}

/// CommonMark 0.31.2's examples, from the spec itself (the npm package
/// `commonmark-spec`, which `cargo xtask test` installs under
/// `target/tools`), each parsed into the tree and written as the spec's
/// reference HTML. The examples whose point is raw HTML are left out:
/// Confab shows raw HTML as text, on purpose.
#[cfg(test)]
mod spec {
    use super::html::{normalize, to_html};
    use super::{Flavor, parse_as};
    use pulldown_cmark::{Event, Parser};

    struct Example {
        markdown: String,
        html: String,
        example: u32,
        section: String,
    }

    /// The examples of the spec's text, as the package's own reader finds
    /// them; `→` stands for a tab.
    fn examples(spec: &str) -> Vec<Example> {
        let spec = spec.split("\n<!-- END TESTS -->").next().unwrap_or("");
        let fence = "`".repeat(32);
        let start = format!("{fence} example");
        let mut out = Vec::new();
        let mut section = String::new();
        let mut lines = spec.lines();
        while let Some(line) = lines.next() {
            if line == start {
                let mut markdown = String::new();
                for l in lines.by_ref().take_while(|l| *l != ".") {
                    markdown.push_str(l);
                    markdown.push('\n');
                }
                let mut html = String::new();
                for l in lines.by_ref().take_while(|l| *l != fence) {
                    html.push_str(l);
                    html.push('\n');
                }
                out.push(Example {
                    markdown: markdown.replace('→', "\t"),
                    html: html.replace('→', "\t"),
                    example: out.len() as u32 + 1,
                    section: section.clone(),
                });
            } else if line.starts_with('#') {
                let hashes = line.chars().take_while(|c| *c == '#').count();
                if hashes <= 6 {
                    section = line[hashes..].trim().to_string();
                }
            }
        }
        out
    }

    fn has_raw_html(md: &str) -> bool {
        Parser::new_ext(md, Flavor::CommonMark.options())
            .any(|e| matches!(e, Event::Html(_) | Event::InlineHtml(_)))
    }

    #[test]
    fn commonmark_spec_examples_pass() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/tools/node_modules/commonmark-spec/spec.txt"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!("{path}: {e}: `cargo xtask test` installs the CommonMark spec")
        });
        let examples = examples(&text);
        assert_eq!(examples.len(), 652, "CommonMark 0.31.2 has 652 examples");
        let mut failed = Vec::new();
        let mut raw = 0;
        for ex in &examples {
            if has_raw_html(&ex.markdown) {
                raw += 1;
                continue;
            }
            let got = normalize(&to_html(&parse_as(&ex.markdown, Flavor::CommonMark)));
            if got != normalize(&ex.html) {
                failed.push(format!(
                    "example {} ({}):\n{:?}\nwanted {:?}\ngot    {:?}",
                    ex.example, ex.section, ex.markdown, ex.html, got
                ));
            }
        }
        let tested = examples.len() - raw;
        println!(
            "CommonMark 0.31.2: {} of {tested} examples pass ({raw} raw-HTML examples left out)",
            tested - failed.len()
        );
        assert!(
            failed.is_empty(),
            "{} failed:\n{}",
            failed.len(),
            failed.join("\n\n")
        );
    }
}

/// The examples of the GitHub Flavored Markdown spec's extensions that
/// Confab renders (tables, task lists, strikethrough, autolinks), from the
/// GFM spec 0.29-gfm (CC-BY-SA 4.0), each written as the spec's reference
/// HTML. Its "disallowed raw HTML" extension is moot: Confab shows all raw
/// HTML as text.
#[cfg(test)]
mod gfm_spec {
    use super::html::{normalize, to_html};
    use super::{Flavor, parse_as};

    const EXAMPLES: &[(u32, &str, &str)] = &[
        (
            198,
            "| foo | bar |\n| --- | --- |\n| baz | bim |\n",
            "<table>\n<thead>\n<tr>\n<th>foo</th>\n<th>bar</th>\n</tr>\n</thead>\n<tbody>\n<tr>\n<td>baz</td>\n<td>bim</td>\n</tr>\n</tbody>\n</table>\n",
        ),
        (
            199,
            "| abc | defghi |\n:-: | -----------:\nbar | baz\n",
            "<table>\n<thead>\n<tr>\n<th align=\"center\">abc</th>\n<th align=\"right\">defghi</th>\n</tr>\n</thead>\n<tbody>\n<tr>\n<td align=\"center\">bar</td>\n<td align=\"right\">baz</td>\n</tr>\n</tbody>\n</table>\n",
        ),
        (
            200,
            "| f\\|oo  |\n| ------ |\n| b `\\|` az |\n| b **\\|** im |\n",
            "<table>\n<thead>\n<tr>\n<th>f|oo</th>\n</tr>\n</thead>\n<tbody>\n<tr>\n<td>b <code>|</code> az</td>\n</tr>\n<tr>\n<td>b <strong>|</strong> im</td>\n</tr>\n</tbody>\n</table>\n",
        ),
        (
            201,
            "| abc | def |\n| --- | --- |\n| bar | baz |\n> bar\n",
            "<table>\n<thead>\n<tr>\n<th>abc</th>\n<th>def</th>\n</tr>\n</thead>\n<tbody>\n<tr>\n<td>bar</td>\n<td>baz</td>\n</tr>\n</tbody>\n</table>\n<blockquote>\n<p>bar</p>\n</blockquote>\n",
        ),
        (
            202,
            "| abc | def |\n| --- | --- |\n| bar | baz |\nbar\n\nbar\n",
            "<table>\n<thead>\n<tr>\n<th>abc</th>\n<th>def</th>\n</tr>\n</thead>\n<tbody>\n<tr>\n<td>bar</td>\n<td>baz</td>\n</tr>\n<tr>\n<td>bar</td>\n<td></td>\n</tr>\n</tbody>\n</table>\n<p>bar</p>\n",
        ),
        (
            203,
            "| abc | def |\n| --- |\n| bar |\n",
            "<p>| abc | def |\n| --- |\n| bar |</p>\n",
        ),
        (
            204,
            "| abc | def |\n| --- | --- |\n| bar |\n| bar | baz | boo |\n",
            "<table>\n<thead>\n<tr>\n<th>abc</th>\n<th>def</th>\n</tr>\n</thead>\n<tbody>\n<tr>\n<td>bar</td>\n<td></td>\n</tr>\n<tr>\n<td>bar</td>\n<td>baz</td>\n</tr>\n</tbody>\n</table>\n",
        ),
        (
            205,
            "| abc | def |\n| --- | --- |\n",
            "<table>\n<thead>\n<tr>\n<th>abc</th>\n<th>def</th>\n</tr>\n</thead>\n</table>\n",
        ),
        (
            279,
            "- [ ] foo\n- [x] bar\n",
            "<ul>\n<li><input disabled=\"\" type=\"checkbox\"> foo</li>\n<li><input checked=\"\" disabled=\"\" type=\"checkbox\"> bar</li>\n</ul>\n",
        ),
        (
            280,
            "- [x] foo\n  - [ ] bar\n  - [x] baz\n- [ ] bim\n",
            "<ul>\n<li><input checked=\"\" disabled=\"\" type=\"checkbox\"> foo\n<ul>\n<li><input disabled=\"\" type=\"checkbox\"> bar</li>\n<li><input checked=\"\" disabled=\"\" type=\"checkbox\"> baz</li>\n</ul>\n</li>\n<li><input disabled=\"\" type=\"checkbox\"> bim</li>\n</ul>\n",
        ),
        (
            491,
            "~~Hi~~ Hello, ~there~ world!\n",
            "<p><del>Hi</del> Hello, <del>there</del> world!</p>\n",
        ),
        (
            492,
            "This ~~has a\n\nnew paragraph~~.\n",
            "<p>This ~~has a</p>\n<p>new paragraph~~.</p>\n",
        ),
        (
            493,
            "This will ~~~not~~~ strike.\n",
            "<p>This will ~~~not~~~ strike.</p>\n",
        ),
        (
            621,
            "www.commonmark.org\n",
            "<p><a href=\"http://www.commonmark.org\">www.commonmark.org</a></p>\n",
        ),
        (
            622,
            "Visit www.commonmark.org/help for more information.\n",
            "<p>Visit <a href=\"http://www.commonmark.org/help\">www.commonmark.org/help</a> for more information.</p>\n",
        ),
        (
            623,
            "Visit www.commonmark.org.\n\nVisit www.commonmark.org/a.b.\n",
            "<p>Visit <a href=\"http://www.commonmark.org\">www.commonmark.org</a>.</p>\n<p>Visit <a href=\"http://www.commonmark.org/a.b\">www.commonmark.org/a.b</a>.</p>\n",
        ),
        (
            624,
            "www.google.com/search?q=Markup+(business)\n\nwww.google.com/search?q=Markup+(business)))\n\n(www.google.com/search?q=Markup+(business))\n\n(www.google.com/search?q=Markup+(business)\n",
            "<p><a href=\"http://www.google.com/search?q=Markup+(business)\">www.google.com/search?q=Markup+(business)</a></p>\n<p><a href=\"http://www.google.com/search?q=Markup+(business)\">www.google.com/search?q=Markup+(business)</a>))</p>\n<p>(<a href=\"http://www.google.com/search?q=Markup+(business)\">www.google.com/search?q=Markup+(business)</a>)</p>\n<p>(<a href=\"http://www.google.com/search?q=Markup+(business)\">www.google.com/search?q=Markup+(business)</a></p>\n",
        ),
        (
            625,
            "www.google.com/search?q=(business))+ok\n",
            "<p><a href=\"http://www.google.com/search?q=(business))+ok\">www.google.com/search?q=(business))+ok</a></p>\n",
        ),
        (
            626,
            "www.google.com/search?q=commonmark&hl=en\n\nwww.google.com/search?q=commonmark&hl;\n",
            "<p><a href=\"http://www.google.com/search?q=commonmark&amp;hl=en\">www.google.com/search?q=commonmark&amp;hl=en</a></p>\n<p><a href=\"http://www.google.com/search?q=commonmark\">www.google.com/search?q=commonmark</a>&amp;hl;</p>\n",
        ),
        (
            627,
            "www.commonmark.org/he<lp\n",
            "<p><a href=\"http://www.commonmark.org/he\">www.commonmark.org/he</a>&lt;lp</p>\n",
        ),
        (
            628,
            "http://commonmark.org\n\n(Visit https://encrypted.google.com/search?q=Markup+(business))\n\nAnonymous FTP is available at ftp://foo.bar.baz.\n",
            "<p><a href=\"http://commonmark.org\">http://commonmark.org</a></p>\n<p>(Visit <a href=\"https://encrypted.google.com/search?q=Markup+(business)\">https://encrypted.google.com/search?q=Markup+(business)</a>)</p>\n<p>Anonymous FTP is available at <a href=\"ftp://foo.bar.baz\">ftp://foo.bar.baz</a>.</p>\n",
        ),
        (
            629,
            "foo@bar.baz\n",
            "<p><a href=\"mailto:foo@bar.baz\">foo@bar.baz</a></p>\n",
        ),
        (
            630,
            "hello@mail+xyz.example isn't valid, but hello+xyz@mail.example is.\n",
            "<p>hello@mail+xyz.example isn't valid, but <a href=\"mailto:hello+xyz@mail.example\">hello+xyz@mail.example</a> is.</p>\n",
        ),
        (
            631,
            "a.b-c_d@a.b\n\na.b-c_d@a.b.\n\na.b-c_d@a.b-\n\na.b-c_d@a.b_\n",
            "<p><a href=\"mailto:a.b-c_d@a.b\">a.b-c_d@a.b</a></p>\n<p><a href=\"mailto:a.b-c_d@a.b\">a.b-c_d@a.b</a>.</p>\n<p>a.b-c_d@a.b-</p>\n<p>a.b-c_d@a.b_</p>\n",
        ),
    ];

    #[test]
    fn gfm_extension_examples_pass() {
        let mut failed = Vec::new();
        for (n, md, html) in EXAMPLES {
            let got = normalize(&to_html(&parse_as(md, Flavor::Gfm)));
            if got != normalize(html) {
                failed.push(format!(
                    "example {n}: {md:?}\nwanted {html:?}\ngot    {got:?}"
                ));
            }
        }
        println!(
            "GFM extensions: {} of {} examples pass",
            EXAMPLES.len() - failed.len(),
            EXAMPLES.len()
        );
        assert!(
            failed.is_empty(),
            "{} failed:\n{}",
            failed.len(),
            failed.join("\n\n")
        );
    }
}
