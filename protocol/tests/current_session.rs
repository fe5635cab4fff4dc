//! The current-session state machine reaches the server's final state from any
//! delivery the contract allows: duplicated, replayed and dropped frames, a
//! reconnect at any point, resubscribes answered late, REST answers arriving
//! anywhere, and subscription answers carrying a stale checkpoint.

use confab_protocol::client::{CurrentSession, Effect, Phase};
use confab_protocol::model::*;
use confab_protocol::rest::SendMessageResponse;
use confab_protocol::{MessageId, ServerEvent, SessionId, Timestamp, TurnId};
use proptest::prelude::*;

const SID: &str = "0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f70";

fn sid() -> SessionId {
    SID.parse().unwrap()
}

/// The `n`th id of the test, of whichever kind is wanted.
fn mid<T: std::str::FromStr>(n: usize) -> T
where
    T::Err: std::fmt::Debug,
{
    format!("0192f0c1-7e3a-7cc0-8a8e-{n:012x}").parse().unwrap()
}

/// One piece of agent output.
#[derive(Clone, Debug)]
enum Out {
    Text(String),
    NewText(String),
    Tool,
}

#[derive(Clone, Debug)]
struct Turn {
    /// Output grouped into flushes.
    flushes: Vec<Vec<Out>>,
    /// Split each delta into this many pieces at most.
    split: usize,
    outcome: TurnOutcome,
}

#[derive(Clone)]
struct State {
    summary: SessionSummary,
    messages: Vec<Message>,
    live: Option<LiveReply>,
}

/// The server as the contract describes it, for one subscriber that sees
/// everything, with its state after every event.
struct Model {
    events: Vec<ServerEvent>,
    /// State after events[i].
    states: Vec<State>,
    /// The REST answer of each send, and the index of the event after which
    /// the server had produced it.
    sends: Vec<(usize, SendMessageResponse, Message)>,
}

fn text_of(s: &str, n: usize) -> String {
    // Mix one-, two-, three- and four-byte characters.
    let alphabet = ["a", "é", "€", "𝄞", " ", "b"];
    (0..n)
        .map(|i| alphabet[(i + s.len()) % alphabet.len()])
        .collect()
}

fn build(turns: &[Turn]) -> Model {
    let t0 = 1_795_000_000_000;
    let mut summary = SessionSummary {
        id: sid(),
        project_id: "default".parse().unwrap(),
        title: "t".into(),
        status: SessionStatus::Idle,
        permission_mode: PermissionMode::Default,
        created_at: Timestamp::from_millis(t0),
        updated_at: Timestamp::from_millis(t0),
        last_message_at: Timestamp::from_millis(t0),
        message_count: 0,
        usage: Usage::default(),
        first_message_preview: "q0".into(),
        last_turn: None,
        agent_session_id: None,
        version: 0,
    };
    let mut messages: Vec<Message> = Vec::new();
    let mut m = Model {
        events: vec![],
        states: vec![],
        sends: vec![],
    };
    fn push(
        m: &mut Model,
        e: ServerEvent,
        s: &SessionSummary,
        msgs: &[Message],
        live: Option<LiveReply>,
    ) {
        m.events.push(e);
        m.states.push(State {
            summary: s.clone(),
            messages: msgs.to_vec(),
            live,
        });
    }
    for (ti, turn) in turns.iter().enumerate() {
        let turn_id: TurnId = mid(1000 + ti);
        let user = Message {
            id: mid(2 * ti),
            session_id: sid(),
            seq: messages.len() as u64 + 1,
            role: Role::User,
            turn_id: turn_id.clone(),
            created_at: Timestamp::from_millis(t0 + ti as i64),
            content: vec![Block::text(format!("q{ti}"))],
            status: MessageStatus::Complete,
            error: None,
            usage: None,
        };
        messages.push(user.clone());
        summary.status = SessionStatus::Running;
        summary.message_count = messages.len() as u64;
        summary.version += 1;
        push(
            &mut m,
            ServerEvent::MessageCreated {
                session_id: sid(),
                message: user.clone(),
            },
            &summary,
            &messages,
            None,
        );
        let at = m.events.len() - 1;
        m.sends.push((
            at,
            SendMessageResponse {
                message: user.clone(),
                session: summary.clone(),
            },
            user.clone(),
        ));
        push(
            &mut m,
            ServerEvent::SessionUpdated {
                session: summary.clone(),
            },
            &summary,
            &messages,
            None,
        );

        let reply_id: MessageId = mid(2 * ti + 1);
        let mut content: Vec<Block> = Vec::new();
        let mut first = true;
        for flush in &turn.flushes {
            let before = content.clone();
            for out in flush {
                match out {
                    Out::Text(t) => match content.last_mut() {
                        Some(Block::Text { text }) => text.push_str(t),
                        _ => content.push(Block::text(t.clone())),
                    },
                    Out::NewText(t) => content.push(Block::text(t.clone())),
                    Out::Tool => {
                        let id = format!("tool{}", content.len());
                        content.push(Block::ToolUse {
                            id: id.clone(),
                            name: "bash".into(),
                            input: serde_json::json!({"cmd": "ls"}),
                        });
                        content.push(Block::ToolResult {
                            tool_use_id: id,
                            content: "ok".into(),
                            is_error: false,
                            duration_ms: None,
                        });
                    }
                }
            }
            let live = LiveReply {
                message_id: reply_id.clone(),
                turn_id: turn_id.clone(),
                content: content.clone(),
            };
            if first {
                first = false;
                push(
                    &mut m,
                    ServerEvent::MessageSnapshot {
                        session_id: sid(),
                        message_id: reply_id.clone(),
                        turn_id: turn_id.clone(),
                        content: content.clone(),
                    },
                    &summary,
                    &messages,
                    Some(live),
                );
                continue;
            }
            // Frames from `before` to `content`, as the runner makes them.
            let mut cur = before.clone();
            for (i, b) in content.iter().enumerate() {
                match (cur.get(i), b) {
                    (Some(Block::Text { text: old }), Block::Text { text: new })
                        if new.len() > old.len() =>
                    {
                        let mut off = old.len();
                        let add = &new[off..];
                        let pieces = split_chars(add, turn.split);
                        for p in pieces {
                            let mut partial = cur.clone();
                            if let Block::Text { text } = &mut partial[i] {
                                text.push_str(&p);
                            }
                            cur = partial;
                            let l = LiveReply {
                                message_id: reply_id.clone(),
                                turn_id: turn_id.clone(),
                                content: cur.clone(),
                            };
                            push(
                                &mut m,
                                ServerEvent::MessageDelta {
                                    session_id: sid(),
                                    message_id: reply_id.clone(),
                                    block: i,
                                    offset: off,
                                    text: p.clone(),
                                },
                                &summary,
                                &messages,
                                Some(l),
                            );
                            off += p.len();
                        }
                    }
                    (Some(_), _) => {}
                    (None, b) => {
                        cur.push(b.clone());
                        let l = LiveReply {
                            message_id: reply_id.clone(),
                            turn_id: turn_id.clone(),
                            content: cur.clone(),
                        };
                        push(
                            &mut m,
                            ServerEvent::MessageBlock {
                                session_id: sid(),
                                message_id: reply_id.clone(),
                                index: i,
                                block: b.clone(),
                            },
                            &summary,
                            &messages,
                            Some(l),
                        );
                    }
                }
            }
        }
        let reply = Message {
            id: reply_id,
            session_id: sid(),
            seq: messages.len() as u64 + 1,
            role: Role::Assistant,
            turn_id: turn_id.clone(),
            created_at: Timestamp::from_millis(t0 + ti as i64),
            content,
            status: turn.outcome.message_status(),
            error: (turn.outcome == TurnOutcome::Failed).then(|| "boom".to_string()),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 5,
            }),
        };
        messages.push(reply.clone());
        summary.status = SessionStatus::Idle;
        summary.message_count = messages.len() as u64;
        summary.last_turn = Some(LastTurn {
            id: turn_id,
            outcome: turn.outcome,
            error: reply.error.clone(),
        });
        summary.usage = summary.usage.plus(Usage {
            input_tokens: 3,
            output_tokens: 5,
        });
        summary.version += 1;
        push(
            &mut m,
            ServerEvent::MessageCreated {
                session_id: sid(),
                message: reply,
            },
            &summary,
            &messages,
            None,
        );
        push(
            &mut m,
            ServerEvent::SessionUpdated {
                session: summary.clone(),
            },
            &summary,
            &messages,
            None,
        );
    }
    m
}

fn split_chars(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let size = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

/// What a reconnect (or a resubscribe) at event `i` brings: the summary and
/// messages then, the in-flight reply from an older checkpoint, then (the
/// runner's next flush) a full snapshot.
fn resubscribe(model: &Model, i: usize, after_seq: u64, lag: usize) -> Vec<ServerEvent> {
    let st = &model.states[i];
    let checkpoint = {
        let j = i.saturating_sub(lag);
        let old = &model.states[j];
        match (&old.live, &st.live) {
            (Some(o), Some(n)) if o.message_id == n.message_id => Some(o.clone()),
            _ => None,
        }
    };
    let mut out = vec![ServerEvent::Subscribed {
        session_id: sid(),
        session: st.summary.clone(),
        messages: st
            .messages
            .iter()
            .filter(|m| m.seq > after_seq)
            .cloned()
            .collect(),
        has_more: false,
        live: checkpoint,
        pending: vec![],
        queued: vec![],
    }];
    if let Some(l) = &st.live {
        out.push(ServerEvent::MessageSnapshot {
            session_id: sid(),
            message_id: l.message_id.clone(),
            turn_id: l.turn_id.clone(),
            content: l.content.clone(),
        });
    }
    out
}

/// While nothing is missing (no resubscribe under way), the reply the client
/// shows is the server's, up to text it has not received yet; just before the
/// reply is stored it is exactly the server's.
fn check_live(
    client: &CurrentSession,
    model: &Model,
    i: usize,
    in_sync: bool,
) -> Result<(), TestCaseError> {
    if !in_sync {
        return Ok(());
    }
    let want = &model.states[i].live;
    let got = client.live();
    let next_stores_reply = matches!(model.events.get(i + 1), Some(ServerEvent::MessageCreated { message, .. }) if message.role == Role::Assistant);
    if next_stores_reply {
        prop_assert_eq!(
            got,
            want.as_ref(),
            "reply before it is stored, after event {}",
            i
        );
        return Ok(());
    }
    if let (Some(g), Some(w)) = (got, want) {
        prop_assert_eq!(&g.message_id, &w.message_id);
        prop_assert!(
            g.content.len() <= w.content.len(),
            "more blocks than the server: {:?} vs {:?}",
            g,
            w
        );
        for (a, b) in g.content.iter().zip(&w.content) {
            match (a, b) {
                (Block::Text { text: x }, Block::Text { text: y }) => prop_assert!(
                    y.starts_with(x.as_str()),
                    "{:?} is not a prefix of {:?}",
                    x,
                    y
                ),
                _ => prop_assert_eq!(a, b),
            }
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Fault {
    None,
    Duplicate,
    /// Deliver an earlier event again (index back from here).
    Replay(usize),
    /// Lose this many events, then reconnect.
    Drop(usize),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        6 => Just(Fault::None),
        1 => Just(Fault::Duplicate),
        1 => (1..12usize).prop_map(Fault::Replay),
        1 => (1..8usize).prop_map(Fault::Drop),
    ]
}

fn out() -> impl Strategy<Value = Out> {
    prop_oneof![
        6 => (1..20usize).prop_map(|n| Out::Text(text_of("x", n))),
        1 => (1..10usize).prop_map(|n| Out::NewText(text_of("yy", n))),
        1 => Just(Out::Tool),
    ]
}

fn turn() -> impl Strategy<Value = Turn> {
    (
        proptest::collection::vec(proptest::collection::vec(out(), 1..4), 1..6),
        1..4usize,
        prop_oneof![
            Just(TurnOutcome::Completed),
            Just(TurnOutcome::Stopped),
            Just(TurnOutcome::Failed),
            Just(TurnOutcome::Interrupted)
        ],
    )
        .prop_map(|(flushes, split, outcome)| Turn {
            flushes,
            split,
            outcome,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn reaches_the_servers_final_state(
        turns in proptest::collection::vec(turn(), 1..4),
        faults in proptest::collection::vec(fault(), 200),
        lags in proptest::collection::vec(0..6usize, 200),
        answer_delays in proptest::collection::vec(0..3usize, 200),
        rest_delays in proptest::collection::vec(0..30usize, 8),
    ) {
        let model = build(&turns);
        let mut client = CurrentSession::new_loading(sid());
        // Opened before the first turn: subscribed to an empty session.
        client.subscribe_sent();
        let mut queue: std::collections::VecDeque<ServerEvent> = Default::default();
        // Pending resubscribe: (events to wait, after_seq).
        let mut pending_resub: Option<(usize, u64)> = None;
        let mut k = 0usize; // fault cursor
        let mut i = 0usize;
        let n = model.events.len();
        let mut sends_shown = 0usize;
        let mut rest_due: Vec<(usize, SendMessageResponse)> = Vec::new();

        // The initial subscribe answer: a session with no messages yet is
        // modelled by delivering the first events directly.
        let apply = |client: &mut CurrentSession, e: &ServerEvent, pending_resub: &mut Option<(usize, u64)>, delay: usize| {
            if let Effect::Resubscribe { after_seq } = client.apply_event(e) {
                prop_assert!(pending_resub.is_none(), "resubscribed twice before an answer");
                *pending_resub = Some((delay, after_seq));
            }
            Ok(())
        };
        client.apply_event(&ServerEvent::Subscribed {
            session_id: sid(),
            session: { let mut s = model.states[0].summary.clone(); s.version = 0; s.status = SessionStatus::Idle; s.message_count = 0; s },
            messages: vec![], has_more: false, live: None, pending: vec![], queued: vec![],
        });

        while i < n || !queue.is_empty() || pending_resub.is_some() {
            // The user sends its message just before the server accepts it.
            while sends_shown < model.sends.len() && model.sends[sends_shown].0 <= i {
                let (at, resp, msg) = &model.sends[sends_shown];
                let mut optimistic = msg.clone();
                optimistic.seq = 0;
                client.add_pending(optimistic);
                rest_due.push((at + rest_delays[sends_shown % rest_delays.len()], resp.clone()));
                sends_shown += 1;
            }
            rest_due.retain(|(due, resp)| {
                if *due <= i { client.apply_sent(resp); false } else { true }
            });
            if let Some(e) = queue.pop_front() {
                apply(&mut client, &e, &mut pending_resub, answer_delays[k % 200])?;
                continue;
            }
            if let Some((wait, after_seq)) = pending_resub {
                if wait == 0 || i >= n {
                    pending_resub = None;
                    let at = i.min(n) .saturating_sub(1);
                    client.subscribe_sent();
                    queue.extend(resubscribe(&model, at, after_seq, lags[k % 200]));
                    k += 1;
                    continue;
                }
                pending_resub = Some((wait - 1, after_seq));
            }
            if i >= n { continue; }
            let f = faults[k % faults.len()].clone();
            k += 1;
            match f {
                Fault::None => { apply(&mut client, &model.events[i], &mut pending_resub, answer_delays[k % 200])?; i += 1; check_live(&client, &model, i - 1, pending_resub.is_none() && queue.is_empty())?; }
                Fault::Duplicate => {
                    apply(&mut client, &model.events[i], &mut pending_resub, answer_delays[k % 200])?;
                    apply(&mut client, &model.events[i], &mut pending_resub, answer_delays[k % 200])?;
                    i += 1;
                    check_live(&client, &model, i - 1, pending_resub.is_none() && queue.is_empty())?;
                }
                Fault::Replay(back) => {
                    // A frame sent again: the contract allows deltas and
                    // blocks to repeat; a snapshot only starts a subscription.
                    if i >= back && !matches!(model.events[i - back], ServerEvent::MessageSnapshot { .. }) {
                        apply(&mut client, &model.events[i - back], &mut pending_resub, answer_delays[k % 200])?;
                    }
                    apply(&mut client, &model.events[i], &mut pending_resub, answer_delays[k % 200])?;
                    i += 1;
                }
                Fault::Drop(count) => {
                    // The socket drops; frames in flight are lost; the client
                    // reconnects and subscribes from what it holds.
                    i = (i + count).min(n);
                    pending_resub = None;
                    client.subscribe_sent();
                    queue.extend(resubscribe(&model, i - 1, client.last_seq(), lags[k % 200]));
                }
            }
        }
        for (_, resp) in rest_due.drain(..) { client.apply_sent(&resp); }

        let last = model.states.last().unwrap();
        let got: Vec<&Message> = client.messages().collect();
        let want: Vec<&Message> = last.messages.iter().collect();
        prop_assert_eq!(got, want);
        prop_assert!(client.pending().is_empty());
        prop_assert_eq!(client.live(), None);
        prop_assert_eq!(client.summary(), Some(&last.summary));
        prop_assert_eq!(client.phase(), Phase::Idle);
    }
}

#[test]
fn user_message_shows_at_once_and_keeps_its_place() {
    let model = build(&[Turn {
        flushes: vec![vec![Out::Text("hello".into())]],
        split: 1,
        outcome: TurnOutcome::Completed,
    }]);
    let mut c = CurrentSession::new_unsaved(sid());
    assert_eq!(c.phase(), Phase::NotCreated);
    let mut mine = model.sends[0].2.clone();
    mine.seq = 0;
    c.begin_create(mine.clone());
    assert_eq!(c.phase(), Phase::Creating);
    assert_eq!(c.messages().next().unwrap().content, mine.content);
    for e in &model.events {
        c.apply_event(e);
    }
    let ids: Vec<_> = c.messages().map(|m| m.id.clone()).collect();
    assert_eq!(ids, vec![mid::<MessageId>(0), mid(1)]);
}

#[test]
fn a_delta_past_the_end_asks_to_resubscribe_once() {
    let model = build(&[Turn {
        flushes: vec![
            vec![Out::Text("ab".into())],
            vec![Out::Text("cd".into())],
            vec![Out::Text("ef".into())],
        ],
        split: 1,
        outcome: TurnOutcome::Completed,
    }]);
    let mut c = CurrentSession::new_unsaved(sid());
    let mut effects = vec![];
    for (i, e) in model.events.iter().enumerate() {
        // Lose the first delta.
        if matches!(e, ServerEvent::MessageDelta { offset, .. } if *offset == 2) {
            continue;
        }
        let eff = c.apply_event(e);
        if eff != Effect::None {
            effects.push((i, eff));
        }
    }
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert!(matches!(effects[0].1, Effect::Resubscribe { after_seq: 1 }));
}

#[test]
fn events_of_other_sessions_change_nothing() {
    let model = build(&[Turn {
        flushes: vec![vec![Out::Text("hello".into())]],
        split: 1,
        outcome: TurnOutcome::Completed,
    }]);
    let mut c =
        CurrentSession::new_unsaved("0192f0c1-7e3a-7cc0-8a8e-ffffffffffff".parse().unwrap());
    let before = c.clone();
    for e in &model.events {
        assert_eq!(c.apply_event(e), Effect::None);
    }
    assert_eq!(c, before);
}

#[test]
fn a_failed_send_gives_the_text_back() {
    let mut c = CurrentSession::new_unsaved(sid());
    let model = build(&[Turn {
        flushes: vec![vec![Out::Text("x".into())]],
        split: 1,
        outcome: TurnOutcome::Completed,
    }]);
    let mine = model.sends[0].2.clone();
    c.begin_create(mine.clone());
    let back = c.send_failed(&mine.id, "offline").unwrap();
    assert_eq!(back.content, mine.content);
    assert_eq!(c.phase(), Phase::Error("offline".into()));
    assert_eq!(c.messages().count(), 0);
}

/// A renewal the server refused as too soon is asked for again after the
/// wait, and nothing else asks meanwhile; a page with more after it asks
/// for the next after the same wait.
#[test]
fn a_refused_renewal_and_a_long_catch_up_wait_their_turn() {
    use confab_protocol::rest::ErrorCode;
    use confab_protocol::socket::RESUBSCRIBE_EVERY_MS;
    let model = build(&[Turn {
        flushes: vec![vec![Out::Text("ab".into())], vec![Out::Text("cd".into())]],
        split: 1,
        outcome: TurnOutcome::Completed,
    }]);
    let mut c = CurrentSession::new_unsaved(sid());
    c.subscribe_sent();
    let refused = ServerEvent::Error {
        code: ErrorCode::RateLimited,
        message: "subscribed again too soon".into(),
        session_id: Some(sid()),
    };
    assert_eq!(
        c.apply_event(&refused),
        Effect::ResubscribeAfter {
            wait_ms: RESUBSCRIBE_EVERY_MS
        }
    );
    // While the renewal waits, a missed delta asks for nothing more.
    let mut asked = vec![];
    for e in &model.events {
        if matches!(e, ServerEvent::MessageDelta { offset, .. } if *offset == 2) {
            continue;
        }
        let eff = c.apply_event(e);
        if eff != Effect::None {
            asked.push(eff);
        }
    }
    assert!(asked.is_empty(), "{asked:?}");
    // A page with more after it: the next page, after the wait.
    let last = model.states.last().unwrap();
    let page = ServerEvent::Subscribed {
        session_id: sid(),
        session: last.summary.clone(),
        messages: last.messages[..1].to_vec(),
        has_more: true,
        live: None,
        pending: vec![],
        queued: vec![],
    };
    assert_eq!(
        c.apply_event(&page),
        Effect::ResubscribeAfter {
            wait_ms: RESUBSCRIBE_EVERY_MS
        }
    );
}

#[test]
fn a_queued_message_waits_apart_and_joins_the_history_when_it_starts() {
    let model = build(&[Turn {
        flushes: vec![vec![Out::Text("hello".into())]],
        split: 1,
        outcome: TurnOutcome::Completed,
    }]);
    let mut c = CurrentSession::new_loading(sid());
    for e in &model.events {
        c.apply_event(e);
    }
    let summary = c.summary().unwrap().clone();
    let q = |n: usize, text: &str| QueuedMessage {
        id: mid(n),
        text: text.parse().unwrap(),
        created_at: Timestamp::from_millis(5),
        permission_mode: None,
    };
    // Shown at once as the user's, then moved to the queue by the answer.
    let mut mine = model.sends[0].2.clone();
    mine.id = mid(90);
    mine.seq = 0;
    c.add_pending(mine);
    let reply = confab_protocol::rest::QueuedReply {
        queued: q(90, "later"),
        session: summary.clone(),
    };
    c.apply_queued(&reply);
    assert!(c.pending().is_empty());
    assert_eq!(c.queued(), [q(90, "later")]);
    // Another tab queued one more, and this one was edited there.
    c.apply_event(&ServerEvent::SessionQueue {
        session_id: sid(),
        queued: vec![q(90, "sooner"), q(91, "and this")],
    });
    assert_eq!(c.queued().len(), 2);
    assert_eq!(c.queued()[0].text.as_str(), "sooner");
    // It starts: stored, it leaves the queue even before the queue event.
    let mut started = model.sends[0].2.clone();
    started.id = mid(90);
    started.seq = c.last_seq() + 1;
    c.apply_event(&ServerEvent::MessageCreated {
        session_id: sid(),
        message: started,
    });
    assert_eq!(c.queued(), [q(91, "and this")]);
    // A late answer or event naming a started message does not bring it back.
    c.apply_queued(&reply);
    c.apply_event(&ServerEvent::SessionQueue {
        session_id: sid(),
        queued: vec![q(90, "sooner"), q(91, "and this")],
    });
    assert_eq!(c.queued(), [q(91, "and this")]);
    c.apply_cancelled(&mid(91));
    assert!(c.queued().is_empty());
}
