//! Markdown as elements: the Markdown agents write (fenced code, headings,
//! lists, quotes, tables, rules, emphasis, code spans, links) parsed into a
//! small tree and rendered with rsx, so every piece of text is a text node.
//! Raw HTML in a message is shown as text and never executed; links keep only
//! safe schemes; remote images are not loaded (a link is shown instead). A
//! full CommonMark parser would more than double the app's download.

use dioxus::prelude::*;

#[derive(Clone, PartialEq, Debug)]
pub enum Md {
    Text(String),
    Code(String),
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
}

// ---- blocks ------------------------------------------------------------------

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// An opening code fence: its character, length and info string.
fn fence(line: &str) -> Option<(char, usize, String)> {
    if indent(line) > 3 {
        return None;
    }
    let t = line.trim_start();
    let c = t.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = t.chars().take_while(|x| *x == c).count();
    let info = t[n..].trim();
    (n >= 3 && !(c == '`' && info.contains('`'))).then(|| (c, n, info.to_string()))
}

fn heading(line: &str) -> Option<(u8, &str)> {
    let t = line.trim_start();
    if indent(line) > 3 {
        return None;
    }
    let n = t.chars().take_while(|c| *c == '#').count();
    let rest = &t[n..];
    if !(1..=6).contains(&n) || !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let text = rest.trim().trim_end_matches('#').trim_end();
    Some((n as u8, text))
}

fn is_rule(line: &str) -> bool {
    let t: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(c) = t.chars().next() else {
        return false;
    };
    indent(line) <= 3 && matches!(c, '-' | '*' | '_') && t.len() >= 3 && t.chars().all(|x| x == c)
}

/// A list item marker: (indent, ordered start, width of marker and space, rest).
fn list_item(line: &str) -> Option<(usize, Option<u64>, usize, &str)> {
    let ind = indent(line);
    let t = &line[ind..];
    if let Some(rest) = t
        .strip_prefix("- ")
        .or_else(|| t.strip_prefix("* "))
        .or_else(|| t.strip_prefix("+ "))
    {
        return Some((ind, None, 2, rest));
    }
    if t == "-" || t == "*" || t == "+" {
        return Some((ind, None, 2, ""));
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if (1..=9).contains(&digits) {
        let after = &t[digits..];
        if let Some(rest) = after
            .strip_prefix(". ")
            .or_else(|| after.strip_prefix(") "))
        {
            return Some((ind, t[..digits].parse().ok(), digits + 2, rest));
        }
    }
    None
}

fn table_cells(line: &str) -> Vec<String> {
    let t = line.trim();
    let t = t.strip_prefix('|').unwrap_or(t);
    let t = t.strip_suffix('|').unwrap_or(t);
    t.split('|').map(|c| c.trim().to_string()).collect()
}

fn is_table_separator(line: &str) -> bool {
    let cells = table_cells(line);
    line.contains('-')
        && !cells.is_empty()
        && cells.iter().all(|c| {
            let c = c.trim_matches(':');
            !c.is_empty() && c.chars().all(|x| x == '-')
        })
}

fn starts_block(line: &str) -> bool {
    fence(line).is_some()
        || heading(line).is_some()
        || is_rule(line)
        || line.trim_start().starts_with('>')
        || list_item(line).is_some()
}

pub fn parse(src: &str) -> Vec<Md> {
    let lines: Vec<&str> = src.lines().map(|l| l.trim_end_matches('\r')).collect();
    blocks(&lines, 0)
}

/// How deep quotes and lists nest, and emphasis within emphasis, before the
/// rest is shown as plain text (so no reply can exhaust the stack).
const MAX_DEPTH: usize = 12;

fn blocks(lines: &[&str], depth: usize) -> Vec<Md> {
    if depth >= MAX_DEPTH {
        return vec![Md::Node(Kind::P, vec![Md::Text(lines.join("\n"))])];
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() {
            i += 1;
        } else if let Some((c, n, info)) = fence(line) {
            let mut code = Vec::new();
            i += 1;
            while i < lines.len() {
                let t = lines[i].trim();
                if t.len() >= n && t.chars().all(|x| x == c) {
                    i += 1;
                    break;
                }
                code.push(lines[i]);
                i += 1;
            }
            let mut text = code.join("\n");
            text.push('\n');
            let lang = info.split_whitespace().next().unwrap_or("").to_string();
            out.push(Md::Node(Kind::Pre(lang), vec![Md::Text(text)]));
        } else if let Some((level, text)) = heading(line) {
            out.push(Md::Node(Kind::H(level), inline(text)));
            i += 1;
        } else if is_rule(line) {
            out.push(Md::Rule);
            i += 1;
        } else if line.trim_start().starts_with('>') {
            let mut inner = Vec::new();
            while i < lines.len() && lines[i].trim_start().starts_with('>') {
                let t = &lines[i].trim_start()[1..];
                inner.push(t.strip_prefix(' ').unwrap_or(t));
                i += 1;
            }
            out.push(Md::Node(Kind::Quote, blocks(&inner, depth + 1)));
        } else if let Some((ind, start, _, _)) = list_item(line) {
            let ordered = start.is_some();
            let mut items = Vec::new();
            while i < lines.len() {
                let Some((ind2, start2, width, rest)) = list_item(lines[i]) else {
                    break;
                };
                if ind2 != ind || start2.is_some() != ordered {
                    break;
                }
                let mut body = vec![rest.to_string()];
                i += 1;
                while i < lines.len() {
                    let l = lines[i];
                    if l.trim().is_empty() {
                        // A blank line ends the item unless indented text follows.
                        if lines
                            .get(i + 1)
                            .is_some_and(|n| !n.trim().is_empty() && indent(n) >= ind + width)
                        {
                            body.push(String::new());
                            i += 1;
                            continue;
                        }
                        break;
                    }
                    if indent(l) >= ind + width {
                        body.push(l[(ind + width).min(indent(l))..].to_string());
                    } else if !starts_block(l) && list_item(l).is_none() {
                        body.push(l.trim_start().to_string()); // a lazy continuation
                    } else {
                        break;
                    }
                    i += 1;
                }
                let body: Vec<&str> = body.iter().map(String::as_str).collect();
                let mut content = blocks(&body, depth + 1);
                // A tight item's paragraph renders without a paragraph box.
                if let [Md::Node(Kind::P, inner)] = content.as_slice() {
                    content = inner.clone();
                }
                items.push(Md::Node(Kind::Li, content));
                while i < lines.len()
                    && lines[i].trim().is_empty()
                    && lines.get(i + 1).is_some_and(|n| {
                        list_item(n).is_some_and(|(d, s, _, _)| d == ind && s.is_some() == ordered)
                    })
                {
                    i += 1;
                }
            }
            let kind = match start {
                Some(n) => Kind::Ol(n),
                None => Kind::Ul,
            };
            out.push(Md::Node(kind, items));
        } else if line.contains('|') && lines.get(i + 1).is_some_and(|n| is_table_separator(n)) {
            let head: Vec<Md> = table_cells(line)
                .iter()
                .map(|c| Md::Node(Kind::Td, inline(c)))
                .collect();
            let mut rows = vec![Md::Node(Kind::THead, head)];
            i += 2;
            while i < lines.len() && lines[i].contains('|') && !lines[i].trim().is_empty() {
                let cells = table_cells(lines[i])
                    .iter()
                    .map(|c| Md::Node(Kind::Td, inline(c)))
                    .collect();
                rows.push(Md::Node(Kind::Tr, cells));
                i += 1;
            }
            out.push(Md::Node(Kind::Table, rows));
        } else {
            let mut para = vec![line.trim_start()];
            i += 1;
            // Only a list starting at 1 may interrupt a paragraph ("2024. The
            // year…" stays text).
            let interrupts = |l: &str| match list_item(l) {
                Some((_, Some(n), _, _)) => n == 1,
                Some((_, None, _, _)) => true,
                None => starts_block(l),
            };
            while i < lines.len() && !lines[i].trim().is_empty() && !interrupts(lines[i]) {
                para.push(lines[i].trim_start());
                i += 1;
            }
            out.push(Md::Node(Kind::P, inline(&para.join("\n"))));
        }
    }
    out
}

// ---- inline ------------------------------------------------------------------

/// Where the delimiter `d` closes, from byte `from`, with non-empty content
/// that does not start or end with white space.
fn closing(s: &str, from: usize, d: &str) -> Option<usize> {
    let mut at = from;
    while let Some(k) = s[at..].find(d) {
        let end = at + k;
        let inner = &s[from..end];
        if !inner.is_empty()
            && !inner.starts_with(char::is_whitespace)
            && !inner.ends_with(char::is_whitespace)
            && (d.len() != 1 || !s[end + 1..].starts_with(d))
        {
            return Some(end);
        }
        at = end + d.len();
        if d.len() == 1 && s[at..].starts_with(d) {
            at += d.len();
        }
    }
    None
}

fn inline(s: &str) -> Vec<Md> {
    inline_at(s, 0)
}

fn inline_at(s: &str, depth: usize) -> Vec<Md> {
    if depth >= MAX_DEPTH {
        return vec![Md::Text(s.to_string())];
    }
    let mut out: Vec<Md> = Vec::new();
    let mut text = String::new();
    let flush = |text: &mut String, out: &mut Vec<Md>| {
        if !text.is_empty() {
            out.push(Md::Text(std::mem::take(text)));
        }
    };
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        let c = rest.chars().next().unwrap_or(' ');
        let prev_alnum = s[..i]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric);
        if c == '\\'
            && let Some(n) = rest[1..]
                .chars()
                .next()
                .filter(|n| n.is_ascii_punctuation())
        {
            text.push(n);
            i += 1 + n.len_utf8();
            continue;
        }
        if c == '`' {
            let n = rest.chars().take_while(|x| *x == '`').count();
            let ticks = &rest[..n];
            let mut search = n;
            let mut found = None;
            while let Some(k) = rest[search..].find(ticks) {
                let at = search + k;
                let run = rest[at..].chars().take_while(|x| *x == '`').count();
                if run == n {
                    found = Some(at);
                    break;
                }
                search = at + run;
            }
            if let Some(end) = found {
                let code = &rest[n..end];
                let code = if code.len() > 1 && code.starts_with(' ') && code.ends_with(' ') {
                    &code[1..code.len() - 1]
                } else {
                    code
                };
                flush(&mut text, &mut out);
                out.push(Md::Code(code.replace('\n', " ")));
                i += end + n;
                continue;
            }
            text.push_str(ticks);
            i += n;
            continue;
        }
        let spans: [(&str, Kind); 5] = [
            ("**", Kind::Strong),
            ("__", Kind::Strong),
            ("~~", Kind::Del),
            ("*", Kind::Em),
            ("_", Kind::Em),
        ];
        let mut matched = false;
        for (d, kind) in spans {
            let opens = rest.starts_with(d) && !(d.starts_with('_') && prev_alnum);
            if opens && let Some(end) = closing(s, i + d.len(), d) {
                // `_` only emphasises at word edges (snake_case stays text).
                let after = s[end + d.len()..].chars().next();
                if d.starts_with('_') && after.is_some_and(char::is_alphanumeric) {
                    continue;
                }
                flush(&mut text, &mut out);
                out.push(Md::Node(kind, inline_at(&s[i + d.len()..end], depth + 1)));
                i = end + d.len();
                matched = true;
                break;
            }
        }
        if matched {
            continue;
        }
        let image = rest.starts_with("![");
        if c == '[' || image {
            let open = i + usize::from(image) + 1;
            if let Some(close) = s[open..].find("](").map(|k| open + k)
                && let Some(end) = s[close + 2..].find(')').map(|k| close + 2 + k)
            {
                let url = s[close + 2..end].trim().to_string();
                if !url.contains(char::is_whitespace) || url.starts_with('<') {
                    flush(&mut text, &mut out);
                    let label = inline_at(&s[open..close], depth + 1);
                    out.push(Md::Node(
                        if image {
                            Kind::Image(url)
                        } else {
                            Kind::Link(url)
                        },
                        label,
                    ));
                    i = end + 1;
                    continue;
                }
            }
        }
        if c == '<'
            && let Some(end) = rest.find('>')
        {
            let url = &rest[1..end];
            if safe_href(url).is_some()
                && !url.contains(char::is_whitespace)
                && !url.starts_with('#')
            {
                flush(&mut text, &mut out);
                out.push(Md::Node(
                    Kind::Link(url.to_string()),
                    vec![Md::Text(url.to_string())],
                ));
                i += end + 1;
                continue;
            }
        }
        text.push(c);
        i += c.len_utf8();
    }
    flush(&mut text, &mut out);
    out
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

    fn t(s: &str) -> Md {
        Md::Text(s.into())
    }
    fn n(k: Kind, ch: Vec<Md>) -> Md {
        Md::Node(k, ch)
    }

    #[test]
    fn raw_html_is_text() {
        let md = parse("hi <img src=x onerror=alert(1)> <script>alert(2)</script>");
        let text = plain(&md);
        assert!(text.contains("<img src=x onerror=alert(1)>"));
        assert!(text.contains("<script>alert(2)</script>"));
        let block = parse("<div onclick=\"x()\">\nblock\n</div>");
        assert!(plain(&block).contains("<div onclick"));
    }

    #[test]
    fn only_safe_links() {
        assert_eq!(safe_href("https://a.b"), Some("https://a.b".into()));
        assert_eq!(safe_href("javascript:alert(1)"), None);
        assert_eq!(safe_href(" JaVaScRiPt:alert(1)"), None);
        assert_eq!(safe_href("data:text/html,x"), None);
        assert_eq!(
            parse("[x](javascript:alert(1))"),
            vec![n(
                Kind::P,
                vec![
                    n(Kind::Link("javascript:alert(1".into()), vec![t("x")]),
                    t(")")
                ]
            )]
        );
    }

    #[test]
    fn code_blocks_keep_their_text() {
        assert_eq!(
            parse("```rust\nfn main() {}\n  *not* markdown\n```"),
            vec![n(
                Kind::Pre("rust".into()),
                vec![t("fn main() {}\n  *not* markdown\n")]
            )]
        );
        // An unclosed fence runs to the end.
        assert_eq!(
            parse("~~~\nx"),
            vec![n(Kind::Pre(String::new()), vec![t("x\n")])]
        );
    }

    #[test]
    fn headings_rules_and_quotes() {
        assert_eq!(parse("## Plan ##"), vec![n(Kind::H(2), vec![t("Plan")])]);
        assert_eq!(parse("#hashtag"), vec![n(Kind::P, vec![t("#hashtag")])]);
        assert_eq!(
            parse("a\n\n---\nb"),
            vec![n(Kind::P, vec![t("a")]), Md::Rule, n(Kind::P, vec![t("b")])]
        );
        assert_eq!(
            parse("> quoted\n> **bold**"),
            vec![n(
                Kind::Quote,
                vec![n(
                    Kind::P,
                    vec![t("quoted\n"), n(Kind::Strong, vec![t("bold")])]
                )]
            )]
        );
    }

    #[test]
    fn lists_nest_and_number() {
        let md = parse("1. one\n2. two\n   - inner\n3. three");
        let Md::Node(Kind::Ol(1), items) = &md[0] else {
            panic!("{md:?}")
        };
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[1],
            n(
                Kind::Li,
                vec![
                    n(Kind::P, vec![t("two")]),
                    n(Kind::Ul, vec![n(Kind::Li, vec![t("inner")])])
                ]
            )
        );
        assert_eq!(
            parse("- a\n- b"),
            vec![n(
                Kind::Ul,
                vec![n(Kind::Li, vec![t("a")]), n(Kind::Li, vec![t("b")])]
            )]
        );
        assert_eq!(
            parse("3) c"),
            vec![n(Kind::Ol(3), vec![n(Kind::Li, vec![t("c")])])]
        );
    }

    #[test]
    fn emphasis_code_and_links_inline() {
        assert_eq!(
            parse(
                "Use `cargo test` and **do** _not_ touch snake_case_name or 2*3*4 [docs](https://x.y)."
            ),
            vec![n(
                Kind::P,
                vec![
                    t("Use "),
                    Md::Code("cargo test".into()),
                    t(" and "),
                    n(Kind::Strong, vec![t("do")]),
                    t(" "),
                    n(Kind::Em, vec![t("not")]),
                    t(" touch snake_case_name or 2"),
                    n(Kind::Em, vec![t("3")]),
                    t("4 "),
                    n(Kind::Link("https://x.y".into()), vec![t("docs")]),
                    t("."),
                ]
            )]
        );
        assert_eq!(
            parse("``a `b` c``"),
            vec![n(Kind::P, vec![Md::Code("a `b` c".into())])]
        );
        assert_eq!(parse("\\*not em\\*"), vec![n(Kind::P, vec![t("*not em*")])]);
        assert_eq!(
            parse("unclosed **bold and `tick"),
            vec![n(Kind::P, vec![t("unclosed **bold and `tick")])]
        );
        assert_eq!(
            parse("~~gone~~"),
            vec![n(Kind::P, vec![n(Kind::Del, vec![t("gone")])])]
        );
        assert_eq!(
            parse("<https://a.b/c>"),
            vec![n(
                Kind::P,
                vec![n(
                    Kind::Link("https://a.b/c".into()),
                    vec![t("https://a.b/c")]
                )]
            )]
        );
    }

    #[test]
    fn a_number_inside_a_paragraph_is_not_a_list() {
        assert_eq!(
            parse("It happened in\n2024. Then more."),
            vec![n(Kind::P, vec![t("It happened in\n2024. Then more.")])]
        );
    }

    #[test]
    fn tables() {
        let md = parse("| a | b |\n|---|:-:|\n| 1 | `2` |\n\nafter");
        assert_eq!(
            md[0],
            n(
                Kind::Table,
                vec![
                    n(
                        Kind::THead,
                        vec![n(Kind::Td, vec![t("a")]), n(Kind::Td, vec![t("b")])]
                    ),
                    n(
                        Kind::Tr,
                        vec![
                            n(Kind::Td, vec![t("1")]),
                            n(Kind::Td, vec![Md::Code("2".into())])
                        ]
                    ),
                ]
            )
        );
        assert_eq!(md[1], n(Kind::P, vec![t("after")]));
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
        assert!(depth(&parse(&quotes)) <= 2 * MAX_DEPTH + 2);
        let lists: String = (0..3000)
            .map(|i| format!("{}- x\n", "  ".repeat(i)))
            .collect();
        assert!(depth(&parse(&lists)) <= 2 * MAX_DEPTH + 2);
        let emphasis = format!("{}x{}", "*_".repeat(2000), "_*".repeat(2000));
        assert!(depth(&parse(&emphasis)) <= MAX_DEPTH + 2);
    }

    #[test]
    fn anything_at_all_parses() {
        for s in [
            "", "\n\n", "*", "**", "[", "![", "](", "`", "> ", "- ", "1.", "|", "|-|", "```", "\\",
            "é*é*é", "_a_b_", "[a](b", "<", "<>",
        ] {
            let _ = parse(s);
        }
    }
}
