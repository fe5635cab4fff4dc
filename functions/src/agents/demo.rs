//! The demo agent: offline and deterministic. It streams a short reply to
//! ordinary text and obeys commands at the start of a message: `/words N`
//! streams N words, `/clock N` streams N words that are each the time
//! they were written (in µs, for the load tool), `/markdown N` streams N KiB of Markdown (headings,
//! lists, a table, code) in 2 KiB pieces, `/tool` adds a tool_use and a
//! tool_result block, `/approve` asks the person to let a pretend tool run,
//! `/ask` asks a question with options, `/fail` fails after a few words.

use crate::ports::{Agent, AgentError, AgentEvent, AgentRequest, AnswerSlot, Ask};
use async_trait::async_trait;
use confab_protocol::model::{Block, Role, Usage};
use confab_protocol::model::{Question, QuestionOption, RequestKind, Resolution};
use futures::stream::{self, BoxStream, StreamExt};
use std::collections::VecDeque;
use std::time::Duration;

/// Most words `/words` will stream.
pub const MAX_WORDS: usize = 200_000;

/// Most KiB `/markdown` will stream.
pub const MAX_MARKDOWN_KIB: usize = 1024;

/// `/markdown` streams its document in pieces of this many bytes (cut
/// anywhere, as a model's deltas are), one piece per pause.
pub const MARKDOWN_PIECE: usize = 2048;

/// What `/markdown` repeats: the constructs agents write most.
const SHOWCASE: &str = r#"## Part {n}: what the demo agent can show

Replies are **Markdown**: *emphasis*, `inline code`, ~~struck text~~ and links
such as [Rust](https://en.wikipedia.org/wiki/Rust_(programming_language)) or
https://www.rust-lang.org. A list with a nested one:

1. Read the file
   - find the function
   - note its callers
2. Change it
3. Run the tests

- [x] parse the input
- [ ] handle the error

| language | typing | first release |
|---|:-:|--:|
| Rust | static | 2015 |
| Python | dynamic | 1991 |
| `Go` | static | 2012 |

> A quotation, with **bold** inside it,
> over two lines.

```rust
fn fib(n: u64) -> u64 {
    // Iterative, so no stack to overflow.
    let (mut a, mut b) = (0, 1);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}
```

```python
def words(path: str) -> dict[str, int]:
    counts = {}
    with open(path) as f:
        for word in f.read().split():
            counts[word] = counts.get(word, 0) + 1
    return counts
```

That is the end of part {n}; the next one repeats it.

"#;

/// `kib` KiB of the showcase, cut in [`MARKDOWN_PIECE`] pieces.
fn markdown(kib: usize) -> Vec<String> {
    let target = kib * 1024;
    let mut doc = String::with_capacity(target + SHOWCASE.len());
    let mut n = 1;
    while doc.len() < target {
        doc.push_str(&SHOWCASE.replace("{n}", &n.to_string()));
        n += 1;
    }
    let mut end = target.min(doc.len());
    while !doc.is_char_boundary(end) {
        end -= 1;
    }
    doc.truncate(end);
    let mut pieces = Vec::with_capacity(doc.len() / MARKDOWN_PIECE + 1);
    let mut rest = doc.as_str();
    while !rest.is_empty() {
        let mut cut = MARKDOWN_PIECE.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece.to_string());
        rest = tail;
    }
    pieces
}

const LOREM: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
];

#[derive(Debug, Clone)]
pub struct DemoAgent {
    delay: Duration,
}

impl DemoAgent {
    pub fn new(delay: Duration) -> DemoAgent {
        DemoAgent { delay }
    }
}

/// What the demo does with an answer: the steps that follow it.
type Then = Box<dyn FnOnce(&Resolution) -> Vec<Step> + Send>;

enum Step {
    Emit(AgentEvent),
    /// A word that is the time it is written, in microseconds since the
    /// epoch (`/clock`): a client that reads it knows how long the word
    /// took to reach it.
    Clock,
    Fail(String),
    /// Asks the person (`answer` is filled in when it is asked), then goes
    /// on as the answer says.
    Ask(Ask, Then),
}

fn text(s: impl Into<String>) -> Step {
    Step::Emit(AgentEvent::Text(s.into()))
}

/// The input of the pretend tool `/approve` asks to run.
fn demo_tool_input() -> serde_json::Value {
    serde_json::json!({ "action": "touch", "path": "demo.txt" })
}

/// `/approve`: asks to run `demo_tool`, and runs it if allowed.
fn approve(steps: &mut Vec<Step>) {
    steps.push(text(
        "I would like to run demo_tool, a pretend tool that changes nothing.",
    ));
    let (answer, _) = AnswerSlot::new();
    let ask = Ask {
        kind: RequestKind::Tool,
        tool: Some("demo_tool".into()),
        input: Some(demo_tool_input()),
        reason: Some("To show how Confab asks before a tool runs.".into()),
        questions: Vec::new(),
        answer,
        resume: Some(serde_json::json!({ "demo": "approve" })),
    };
    steps.push(Step::Ask(ask, Box::new(approved)));
}

/// What `/approve` does once answered.
fn approved(r: &Resolution) -> Vec<Step> {
    if r.decision.allows() {
        let how = if r.decision == confab_protocol::model::Decision::AllowSession {
            "You allowed demo_tool for the rest of the session, so it ran."
        } else {
            "You allowed demo_tool, so it ran."
        };
        vec![
            Step::Emit(AgentEvent::Block(Block::ToolUse {
                id: "toolu_demo_approve".into(),
                name: "demo_tool".into(),
                input: demo_tool_input(),
            })),
            Step::Emit(AgentEvent::Block(Block::ToolResult {
                tool_use_id: "toolu_demo_approve".into(),
                content: "Touched demo.txt (pretend).".into(),
                is_error: false,
                duration_ms: None,
            })),
            Step::Emit(AgentEvent::Block(Block::text(""))),
            text(how),
        ]
    } else {
        let why = r
            .message
            .as_deref()
            .map(|m| format!(" You said: {m}"))
            .unwrap_or_default();
        vec![text(format!(
            "\n\ndemo_tool was denied, so it did not run.{why}"
        ))]
    }
}

/// The question `/ask` asks.
const QUESTION: &str = "Shall I go on?";

/// `/ask`: one question with the options yes and no.
fn ask_question(steps: &mut Vec<Step>) {
    steps.push(text("I have a question before I go on."));
    let (answer, _) = AnswerSlot::new();
    let ask = Ask {
        kind: RequestKind::Question,
        tool: None,
        input: None,
        reason: None,
        questions: vec![Question {
            question: QUESTION.into(),
            header: Some("Go on?".into()),
            options: vec![
                QuestionOption {
                    label: "yes".into(),
                    description: Some("Carry on with the task.".into()),
                },
                QuestionOption {
                    label: "no".into(),
                    description: Some("Stop here.".into()),
                },
            ],
            multi_select: false,
        }],
        answer,
        resume: Some(serde_json::json!({ "demo": "ask" })),
    };
    steps.push(Step::Ask(ask, Box::new(answered)));
}

/// What `/ask` does once answered.
fn answered(r: &Resolution) -> Vec<Step> {
    match r.answers.get(QUESTION) {
        Some(a) if r.decision.allows() => vec![text(format!("\n\nYou answered: {a}."))],
        _ => vec![text("\n\nYou did not answer, so I stop here.")],
    }
}

fn words(n: usize, from: usize) -> impl Iterator<Item = String> {
    (0..n).map(move |i| {
        let w = LOREM[(from + i) % LOREM.len()];
        if i + 1 == n {
            format!("{w}.")
        } else {
            format!("{w} ")
        }
    })
}

/// The number after a command, `default` without one, within 1..=`max`.
fn count(rest: &str, default: usize, max: usize) -> usize {
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

fn plan(text: &str) -> (Vec<Step>, usize) {
    let text = text.trim();
    let mut steps = Vec::new();
    let mut out_words = 0;
    let mut say = |steps: &mut Vec<Step>, s: &str| {
        for w in s.split_inclusive(' ') {
            out_words += 1;
            steps.push(Step::Emit(AgentEvent::Text(w.to_string())));
        }
    };
    if let Some(rest) = text.strip_prefix("/words") {
        let n = count(rest, 100, MAX_WORDS);
        for w in words(n, 0) {
            steps.push(Step::Emit(AgentEvent::Text(w)));
        }
        return (steps, n);
    }
    if let Some(rest) = text.strip_prefix("/clock") {
        let n = count(rest, 100, MAX_WORDS);
        steps.extend((0..n).map(|_| Step::Clock));
        return (steps, n);
    }
    if let Some(rest) = text.strip_prefix("/markdown") {
        let kib = count(rest, 4, MAX_MARKDOWN_KIB);
        for piece in markdown(kib) {
            out_words += piece.split_whitespace().count();
            steps.push(Step::Emit(AgentEvent::Text(piece)));
        }
        return (steps, out_words);
    }
    if text.starts_with("/approve") {
        approve(&mut steps);
        return (steps, 20);
    }
    if text.starts_with("/ask") {
        ask_question(&mut steps);
        return (steps, 12);
    }
    if text.starts_with("/tool") {
        say(&mut steps, "Let me look at the project first. ");
        steps.push(Step::Emit(AgentEvent::Block(Block::ToolUse {
            id: "toolu_demo_1".into(),
            name: "list_files".into(),
            input: serde_json::json!({ "path": ".", "depth": 1 }),
        })));
        steps.push(Step::Emit(AgentEvent::Block(Block::ToolResult {
            tool_use_id: "toolu_demo_1".into(),
            content: "Cargo.toml\nREADME.md\nprotocol/\nfunctions/\nlocal/".into(),
            is_error: false,
            duration_ms: None,
        })));
        steps.push(Step::Emit(AgentEvent::Block(Block::text(""))));
        say(&mut steps, "The workspace has three crates and a README.");
        return (steps, out_words);
    }
    if text.starts_with("/fail") {
        for w in words(5, 3) {
            steps.push(Step::Emit(AgentEvent::Text(w)));
        }
        steps.push(Step::Fail(
            "The demo agent failed on purpose (/fail).".into(),
        ));
        return (steps, 5);
    }
    let reply = format!(
        "This is the demo agent, answering offline. You wrote: {text}\n\nTry /words 200 for a long reply, /markdown 8 for formatted text, /tool for a tool call, /approve to approve one, /ask for a question, or /fail for a failure."
    );
    say(&mut steps, &reply);
    (steps, out_words)
}

#[async_trait]
impl Agent for DemoAgent {
    fn provider(&self) -> &str {
        "demo"
    }

    fn model(&self) -> &str {
        "demo"
    }

    async fn start(
        &self,
        request: AgentRequest,
    ) -> Result<BoxStream<'static, Result<AgentEvent, AgentError>>, AgentError> {
        let last = request
            .history
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .ok_or_else(|| AgentError::new("There is no message to answer."))?;
        let (steps, out_words) = plan(&last.plain_text());
        Ok(self.play(&request, steps, out_words))
    }

    /// Goes on after `/approve` or `/ask` from what their `Ask` carried.
    async fn resume(
        &self,
        request: AgentRequest,
        resume: serde_json::Value,
        answer: Resolution,
    ) -> Result<BoxStream<'static, Result<AgentEvent, AgentError>>, AgentError> {
        let steps = match resume.get("demo").and_then(|v| v.as_str()) {
            Some("approve") => approved(&answer),
            Some("ask") => answered(&answer),
            _ => return Err(AgentError::new("There is nothing to go on from.")),
        };
        Ok(self.play(&request, steps, 0))
    }
}

impl DemoAgent {
    /// Plays `steps` as a reply, paced by the delay.
    fn play(
        &self,
        request: &AgentRequest,
        steps: Vec<Step>,
        out_words: usize,
    ) -> BoxStream<'static, Result<AgentEvent, AgentError>> {
        let input_tokens: usize = request
            .history
            .iter()
            .map(|m| m.plain_text().split_whitespace().count())
            .sum();
        let mut queue: VecDeque<Step> = steps.into();
        queue.push_front(Step::Emit(AgentEvent::SessionId(format!(
            "demo-{}",
            request.session_id
        ))));
        queue.push_back(Step::Emit(AgentEvent::Usage(Usage {
            input_tokens: input_tokens as u64,
            output_tokens: out_words as u64,
        })));
        let delay = self.delay;
        // Paced against the start, a word every `delay` on average: sleeping
        // `delay` per word would add the timer's rounding to every word.
        let started = tokio::time::Instant::now();
        let waiting: Option<(tokio::sync::oneshot::Receiver<Resolution>, Then)> = None;
        let s = stream::unfold(
            (queue, 0usize, waiting),
            move |(mut q, n, waiting)| async move {
                if let Some((rx, then)) = waiting {
                    // The turn waits for the person; gone, the reply ends.
                    let answer = rx.await.ok()?;
                    for step in then(&answer).into_iter().rev() {
                        q.push_front(step);
                    }
                }
                let step = q.pop_front()?;
                if matches!(
                    step,
                    Step::Emit(AgentEvent::Text(_)) | Step::Clock | Step::Fail(_)
                ) {
                    if n % 64 == 63 {
                        tokio::task::yield_now().await;
                    }
                    if !delay.is_zero() {
                        tokio::time::sleep_until(started + delay * (n as u32 + 1)).await;
                    }
                }
                match step {
                    Step::Emit(e) => Some((Ok(e), (q, n + 1, None))),
                    Step::Clock => {
                        let us = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_micros();
                        Some((Ok(AgentEvent::Text(format!("{us} "))), (q, n + 1, None)))
                    }
                    Step::Fail(m) => {
                        Some((Err(AgentError::new(m)), (VecDeque::new(), n + 1, None)))
                    }
                    Step::Ask(mut ask, then) => {
                        let (slot, rx) = AnswerSlot::new();
                        ask.answer = slot;
                        Some((Ok(AgentEvent::Ask(ask)), (q, n, Some((rx, then)))))
                    }
                }
            },
        );
        s.boxed()
    }
}

#[cfg(test)]
mod tests {
    const S: &str = "0192f0c1-7e3a-7cc0-8a8e-000000000001";
    const M: &str = "0192f0c1-7e3a-7cc0-8a8e-000000000002";
    const T: &str = "0192f0c1-7e3a-7cc0-8a8e-000000000003";
    use super::*;
    use confab_protocol::Timestamp;
    use confab_protocol::model::{Message, MessageStatus, PermissionMode};

    fn req(text: &str) -> AgentRequest {
        AgentRequest {
            session_id: S.parse().unwrap(),
            project_id: "default".parse().unwrap(),
            history: vec![Message {
                id: M.parse().unwrap(),
                session_id: S.parse().unwrap(),
                seq: 1,
                role: Role::User,
                turn_id: T.parse().unwrap(),
                created_at: Timestamp::from_millis(0),
                content: vec![Block::text(text)],
                status: MessageStatus::Complete,
                error: None,
                usage: None,
            }],
            permission_mode: PermissionMode::Default,
            agent_session_id: None,
        }
    }

    async fn run(text: &str) -> (String, Vec<Block>, Option<String>, Option<Usage>) {
        run_answering(text, |_| panic!("the demo asked unasked")).await
    }

    /// Runs a message, answering what the demo asks with `answer`.
    async fn run_answering(
        text: &str,
        answer: impl Fn(&Ask) -> Resolution,
    ) -> (String, Vec<Block>, Option<String>, Option<Usage>) {
        let mut s = DemoAgent::new(Duration::ZERO)
            .start(req(text))
            .await
            .unwrap();
        let (mut t, mut blocks, mut err, mut usage) = (String::new(), vec![], None, None);
        while let Some(e) = s.next().await {
            match e {
                Ok(AgentEvent::Text(x)) => t.push_str(&x),
                Ok(AgentEvent::Block(b)) => blocks.push(b),
                Ok(AgentEvent::Usage(u)) => usage = Some(u),
                Ok(AgentEvent::SessionId(_)) => {}
                Ok(AgentEvent::Ask(a)) => a.answer.send(answer(&a)),
                Err(e) => err = Some(e.message),
            }
        }
        (t, blocks, err, usage)
    }

    fn resolution(
        decision: confab_protocol::model::Decision,
        answers: &[(&str, &str)],
    ) -> Resolution {
        Resolution {
            decision,
            message: Some("not now".into()),
            answers: answers
                .iter()
                .map(|(q, a)| (q.to_string(), a.to_string()))
                .collect(),
            resolved_at: Timestamp::from_millis(0),
        }
    }

    #[tokio::test]
    async fn approve_runs_the_tool_only_when_allowed() {
        use confab_protocol::model::Decision;
        let (t, blocks, err, _) = run_answering("/approve", |a| {
            assert_eq!(
                (a.kind, a.tool.as_deref()),
                (RequestKind::Tool, Some("demo_tool"))
            );
            resolution(confab_protocol::model::Decision::Allow, &[])
        })
        .await;
        assert!(err.is_none());
        assert!(matches!(&blocks[0], Block::ToolUse { name, .. } if name == "demo_tool"));
        assert!(t.contains("You allowed demo_tool, so it ran."), "{t}");
        let (t, blocks, _, _) =
            run_answering("/approve", |_| resolution(Decision::Deny, &[])).await;
        assert!(blocks.is_empty(), "a denied tool does not run");
        assert!(t.contains("denied") && t.contains("not now"), "{t}");
    }

    #[tokio::test]
    async fn a_parked_approval_goes_on_from_where_it_stopped() {
        let agent = DemoAgent::new(Duration::ZERO);
        let mut s = agent.start(req("/approve")).await.unwrap();
        let resume = loop {
            match s.next().await {
                Some(Ok(AgentEvent::Ask(a))) => break a.resume.expect("resumable"),
                Some(_) => {}
                None => panic!("no ask"),
            }
        };
        drop(s);
        let events: Vec<_> = agent
            .resume(
                req("/approve"),
                resume,
                resolution(confab_protocol::model::Decision::Allow, &[]),
            )
            .await
            .unwrap()
            .collect()
            .await;
        let texts: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(AgentEvent::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert!(
            texts.contains("You allowed demo_tool, so it ran."),
            "{texts}"
        );
        assert!(
            !texts.contains("I would like"),
            "only what follows the answer"
        );
        assert!(
            agent
                .resume(
                    req("/approve"),
                    serde_json::json!({}),
                    resolution(confab_protocol::model::Decision::Allow, &[])
                )
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn ask_reports_the_chosen_option() {
        use confab_protocol::model::Decision;
        let (t, _, _, _) = run_answering("/ask", |a| {
            assert_eq!(a.questions[0].options.len(), 2);
            resolution(Decision::Allow, &[("Shall I go on?", "no")])
        })
        .await;
        assert!(t.ends_with("You answered: no."), "{t}");
    }

    #[tokio::test]
    async fn a_reply_waiting_for_an_answer_ends_when_nobody_can_answer() {
        let mut s = DemoAgent::new(Duration::ZERO)
            .start(req("/approve"))
            .await
            .unwrap();
        let mut asked = false;
        while let Some(e) = s.next().await {
            if let Ok(AgentEvent::Ask(a)) = e {
                asked = true;
                drop(a); // the slot, and with it the only sender, goes
            }
        }
        assert!(asked);
    }

    #[tokio::test]
    async fn words_streams_exactly_n_words() {
        let (t, _, err, _) = run("/clock 3").await;
        assert!(err.is_none());
        let stamps: Vec<u128> = t.split_whitespace().map(|w| w.parse().unwrap()).collect();
        assert_eq!(stamps.len(), 3, "{t}");
        assert!(
            stamps.windows(2).all(|w| w[0] <= w[1]),
            "written in order: {t}"
        );
        let (t, _, err, usage) = run("/words 1000").await;
        assert_eq!(t.split_whitespace().count(), 1000);
        assert!(err.is_none());
        assert_eq!(usage.unwrap().output_tokens, 1000);
    }

    #[tokio::test]
    async fn markdown_streams_the_size_asked_for_in_pieces() {
        let (t, _, err, usage) = run("/markdown 9").await;
        assert!(err.is_none());
        assert_eq!(t.len(), 9 * 1024, "the size asked for");
        assert!(t.starts_with("## Part 1") && t.contains("## Part 2") && t.contains("```rust"));
        assert!(usage.unwrap().output_tokens > 500);
        let pieces = markdown(9);
        assert_eq!(pieces.len(), 5, "2 KiB pieces");
        assert!(pieces[..4].iter().all(|p| p.len() == MARKDOWN_PIECE));
    }

    #[tokio::test]
    async fn tool_adds_tool_blocks() {
        let (_, blocks, _, _) = run("/tool").await;
        assert!(matches!(blocks[0], Block::ToolUse { .. }));
        assert!(matches!(blocks[1], Block::ToolResult { .. }));
    }

    #[tokio::test]
    async fn fail_fails_after_a_few_words() {
        let (t, _, err, _) = run("/fail").await;
        assert_eq!(t.split_whitespace().count(), 5);
        assert!(err.unwrap().contains("/fail"));
    }

    #[tokio::test]
    async fn ordinary_text_is_answered_with_it() {
        let (t, _, _, _) = run("hello <b>there</b>").await;
        assert!(t.contains("hello <b>there</b>"));
        assert!(t.contains("demo agent"));
    }
}
