//! The turn runner: drives an agent, coalesces its output into frames, sends
//! each subscriber a snapshot first and offsets-tagged deltas after,
//! checkpoints the in-flight reply, honours stop, and stores the end.

use super::frames::{block_frames, delta_frames, encode, snapshot_frames};
use super::notify::{send_all, subscribers_of};
use super::records::{Parked, SessionRef, Subscriber, TurnEnd};
use super::requests;
use super::sessions::{SAVE_FAILED, finish_and_announce, history};
use crate::clock::now_ms;
use crate::error::ServiceError;
use crate::ports::{Agent, AgentEvent, AgentRequest, AnswerSlot, Push, Store, TurnJob};
use bytes::Bytes;
use confab_protocol::model::{Block, LastTurn, LiveReply, Message, Role, TurnOutcome, Usage};
use confab_protocol::{MessageId, RequestId, ServerEvent, SessionId, Timestamp, TurnId};
use futures::StreamExt;
use futures::future::join_all;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The cadence of a runner.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Output waits at most this long before it is pushed, at the start of
    /// a reply...
    pub flush_interval: Duration,
    /// ...and the wait doubles with each push up to this. Equal to
    /// `flush_interval`, the cadence is constant.
    pub max_flush_interval: Duration,
    /// Or until this many bytes are waiting.
    pub flush_bytes: usize,
    /// The in-flight reply is first saved this long after the turn starts,
    /// then at doubling intervals while it changes, up to...
    pub checkpoint_interval: Duration,
    /// ...this, which is also how often it is saved while the agent is quiet
    /// (a heartbeat). A 30 s reply costs five checkpoints, a minute's eight.
    pub heartbeat_interval: Duration,
    /// Stop requests and new subscribers are looked for this often when no
    /// output is waiting (and answers, while the turn waits for one).
    pub poll_interval: Duration,
    /// A request to the person nobody answers is denied after this long.
    pub request_timeout: Duration,
    /// The longest this runner itself may wait for an answer (a Lambda
    /// invocation's time left): a request it waits on, rather than parks,
    /// is denied by then.
    pub wait_limit: Duration,
    /// What a queued message's turn is held to when it starts after this
    /// one (an owner's turns at once, their daily tokens).
    pub limits: crate::ports::Limits,
    /// Park rather than wait when the agent asks the person and can resume
    /// (`Ask::resume`): store where it is and end, so that no compute is
    /// held while the person thinks (a Lambda invocation). The answer, or
    /// the sweep once the request expires, dispatches the turn again.
    pub park_asks: bool,
}

impl RunnerConfig {
    /// The cadence behind API Gateway, which bills every message and every
    /// Lambda second: the first words go out within 50 ms, then pushes slow
    /// down to one a second per subscriber, and stop requests and new
    /// subscribers are looked for every second. A 1,000-word reply at a
    /// hosted model's pace takes about 30 pushes.
    pub fn serverless() -> RunnerConfig {
        RunnerConfig {
            flush_interval: Duration::from_millis(50),
            max_flush_interval: Duration::from_secs(1),
            poll_interval: Duration::from_secs(1),
            park_asks: true,
            ..RunnerConfig::default()
        }
    }
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            flush_interval: Duration::from_millis(10),
            max_flush_interval: Duration::from_millis(50),
            flush_bytes: 16 * 1024,
            checkpoint_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(10),
            poll_interval: Duration::from_millis(250),
            request_timeout: Duration::from_secs(30 * 60),
            wait_limit: Duration::MAX,
            limits: crate::ports::Limits::unreachable(),
            park_asks: false,
        }
    }
}

/// The reply being written and what the subscribers have of it.
struct Reply {
    session: SessionRef,
    session_id: SessionId,
    message_id: MessageId,
    turn_id: TurnId,
    content: Vec<Block>,
    /// Per block: the text length (bytes) pushed so far; non-text blocks 0.
    sent: Vec<usize>,
    pending_since: Option<Instant>,
    pending_bytes: usize,
    /// Content changed since the last checkpoint.
    unsaved: bool,
    /// Tool calls waiting for their result: when each was seen. An entry
    /// goes when its result comes; the blocks they stand for are already
    /// bounded by the reply's size.
    tools_started: std::collections::HashMap<String, Instant>,
}

impl Reply {
    fn push_text(&mut self, t: &str) {
        if t.is_empty() {
            return;
        }
        match self.content.last_mut() {
            Some(Block::Text { text }) => text.push_str(t),
            _ => self.content.push(Block::text(t)),
        }
        self.touch(t.len());
    }

    fn push_block(&mut self, mut b: Block) {
        match &mut b {
            Block::ToolUse { id, .. } => {
                self.tools_started.insert(id.clone(), Instant::now());
            }
            Block::ToolResult {
                tool_use_id,
                duration_ms,
                ..
            } => {
                if let Some(t) = self.tools_started.remove(tool_use_id.as_str()) {
                    duration_ms.get_or_insert(t.elapsed().as_millis() as u64);
                }
            }
            Block::Text { .. } => {}
        }
        let n = serde_json::to_vec(&b).map(|v| v.len()).unwrap_or(0);
        self.content.push(b);
        self.touch(n);
    }

    fn touch(&mut self, n: usize) {
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending_bytes += n;
        self.unsaved = true;
    }

    fn live(&self) -> LiveReply {
        LiveReply {
            message_id: self.message_id.clone(),
            turn_id: self.turn_id.clone(),
            content: self.content.clone(),
        }
    }

    /// Frames that bring a subscriber holding `sent` up to `content`.
    fn take_increment(&mut self) -> Vec<ServerEvent> {
        let mut out = Vec::new();
        for (i, b) in self.content.iter().enumerate() {
            match self.sent.get(i).copied() {
                Some(had) => {
                    if let Block::Text { text } = b
                        && text.len() > had
                    {
                        out.extend(delta_frames(
                            &self.session_id,
                            &self.message_id,
                            i,
                            had,
                            &text[had..],
                        ));
                    }
                }
                None => out.extend(block_frames(&self.session_id, &self.message_id, i, b)),
            }
        }
        self.sent = self
            .content
            .iter()
            .map(|b| b.as_text().map_or(0, str::len))
            .collect();
        self.pending_since = None;
        self.pending_bytes = 0;
        out
    }
}

enum Flow {
    Continue,
    Stop,
    /// The store failed: end the turn as failed rather than leave it running.
    Broken,
    /// The turn waits on the person and can be resumed: store where it is
    /// and end.
    Park(Parked),
    /// The turn was closed by someone else (deleted, reaped): walk away.
    Abandon,
}

/// Runs one turn to its end. `shutdown` turning true ends it as interrupted.
/// Returns the turn of the queued message that starts after it, if one did
/// (`queue::start_next`), for the caller to run.
pub async fn run_turn(
    store: &dyn Store,
    push: &dyn Push,
    agent: &dyn Agent,
    cfg: &RunnerConfig,
    job: &TurnJob,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Option<TurnJob>, ServiceError> {
    let Some(record) = store
        .get_session(&job.session_id)
        .await?
        .filter(|r| r.owner == job.owner)
    else {
        return Ok(None);
    };
    let Some(turn) = record.turn.clone().filter(|t| t.turn_id == job.turn_id) else {
        return Ok(None);
    };
    // One runner per turn: a second invocation (an at-least-once delivery,
    // a retried dispatch) walks away here, before the agent is called.
    if !store
        .claim_turn(&job.session_id, &job.turn_id, now_ms())
        .await?
    {
        tracing::info!(session = %job.session_id, turn = %job.turn_id, "turn already claimed by another runner");
        return Ok(None);
    }
    // A parked turn is resumed from where it stopped to ask.
    let turn = match &turn.parked {
        Some(_) => match store.active_turn(&job.session_id, &job.turn_id).await? {
            Some(t) => t,
            None => return Ok(None),
        },
        None => turn,
    };
    let resume = match &turn.parked {
        Some(p) => match resumable(store, push, &record, &turn, p).await? {
            Some(answer) => Some((p.resume.clone(), answer)),
            // Not answered yet: parked again for the runner the answer sends.
            None => {
                store.park_turn(&job.session_id, &job.turn_id, p).await?;
                return Ok(None);
            }
        },
        None => None,
    };
    let history = history(store, &job.session_id).await?;
    let request = AgentRequest {
        session_id: job.session_id.clone(),
        project_id: record.summary.project_id.clone(),
        history,
        permission_mode: record.summary.permission_mode,
        agent_session_id: record.summary.agent_session_id.clone(),
    };
    // A resumed reply goes on from its checkpoint; every subscriber gets a
    // snapshot of it first.
    let content = match &resume {
        Some(_) => turn.live.clone().map(|l| l.content).unwrap_or_default(),
        None => Vec::new(),
    };
    let mut reply = Reply {
        session: record.target(),
        session_id: job.session_id.clone(),
        message_id: turn.reply_id.clone(),
        turn_id: turn.turn_id.clone(),
        sent: content
            .iter()
            .map(|b| b.as_text().map_or(0, str::len))
            .collect(),
        content,
        pending_since: None,
        pending_bytes: 0,
        unsaved: false,
        tools_started: Default::default(),
    };
    // Connection -> the subscription token it last got a snapshot for.
    let mut seen: HashMap<String, String> = HashMap::new();
    // The subscribers last read (at the last poll).
    let mut subs: Option<Vec<Subscriber>> = None;
    let mut started_output = false;
    let mut outcome = TurnOutcome::Completed;
    let mut error: Option<String> = None;
    let mut usage = Usage::default();
    let mut agent_session_id = None;
    let mut last_checkpoint = Instant::now();
    let mut checkpoint_every = cfg.checkpoint_interval;
    let mut flush_every = cfg.flush_interval;
    let mut last_poll = Instant::now();
    // Requests the agent waits on: their id, where the answer goes, and
    // when the server denies them.
    let mut asks: Vec<(RequestId, AnswerSlot, i64)> = Vec::new();
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    // A parked request waits in the store for as long as requests may; one
    // this runner waits on, no longer than the runner may.
    let (park_ms, wait_ms) = (
        ms(cfg.request_timeout),
        ms(cfg.request_timeout.min(cfg.wait_limit)),
    );

    let started = match resume {
        Some((state, answer)) => agent.resume(request, state, answer).await,
        None => agent.start(request).await,
    };
    match started {
        Err(e) => {
            tracing::warn!(error = &e as &dyn std::error::Error, session = %job.session_id, "agent failed to start");
            outcome = TurnOutcome::Failed;
            error = Some(e.message);
        }
        Ok(mut stream) => {
            loop {
                // Wake when output has waited its flush interval, or for the
                // next poll: at that moment, not at the next tick of a
                // clock (which made a word wait up to two intervals).
                let poll_at = last_poll + cfg.poll_interval;
                let wake_at = reply
                    .pending_since
                    .map_or(poll_at, |t| (t + flush_every).min(poll_at));
                let flow = tokio::select! {
                    biased;
                    _ = shutdown.changed() => {
                        outcome = TurnOutcome::Interrupted;
                        error = Some("The reply was interrupted: the server shut down while writing it.".into());
                        break;
                    }
                    ev = stream.next() => match ev {
                        Some(Ok(AgentEvent::Text(t))) => {
                            reply.push_text(&t);
                            // The first words go out at once: how soon a
                            // reply starts is what a person notices most.
                            if reply.pending_bytes >= cfg.flush_bytes || !started_output {
                                started_output = true;
                                flush(store, push, &mut reply, &mut seen, &mut subs, false).await
                            } else {
                                Flow::Continue
                            }
                        }
                        Some(Ok(AgentEvent::Block(b))) => {
                            reply.push_block(b);
                            Flow::Continue
                        }
                        Some(Ok(AgentEvent::Usage(u))) => {
                            usage = u;
                            Flow::Continue
                        }
                        Some(Ok(AgentEvent::SessionId(id))) => {
                            agent_session_id = Some(id);
                            Flow::Continue
                        }
                        Some(Ok(AgentEvent::Ask(a))) => {
                            // What the agent said before it asked is shown first.
                            if reply.pending_since.is_some()
                                && let Err(e) = push_to_current(store, push, &mut reply, &mut seen).await
                            {
                                tracing::warn!(error = &e as &dyn std::error::Error, session = %job.session_id, "frames before a request not sent");
                            }
                            let parks = cfg.park_asks && a.resume.is_some();
                            let timeout_ms = if parks { park_ms } else { wait_ms };
                            let req = requests::from_ask(&a, &job.session_id, &job.turn_id, now_ms(), timeout_ms);
                            match store.add_request(&job.session_id, &job.turn_id, &req, now_ms()).await {
                                Ok(Some(summary)) => {
                                    requests::announce_created(store, push, &reply.session, &req, &summary).await;
                                    match a.resume {
                                        Some(resume) if cfg.park_asks => Flow::Park(Parked {
                                            request_id: req.id,
                                            resume,
                                        }),
                                        _ => {
                                            asks.push((req.id, a.answer, req.expires_at.millis()));
                                            Flow::Continue
                                        }
                                    }
                                }
                                Ok(None) => Flow::Abandon,
                                Err(e) => {
                                    tracing::error!(error = &e as &dyn std::error::Error, session = %job.session_id, "storing a request failed");
                                    Flow::Broken
                                }
                            }
                        }
                        Some(Err(e)) => {
                            tracing::info!(error = &e as &dyn std::error::Error, session = %job.session_id, "agent failed");
                            outcome = TurnOutcome::Failed;
                            error = Some(e.message);
                            break;
                        }
                        None => break,
                    },
                    _ = tokio::time::sleep_until(wake_at) => {
                        let due_output = reply.pending_since.is_some_and(|t| t.elapsed() >= flush_every);
                        let due_poll = last_poll.elapsed() >= cfg.poll_interval;
                        if due_output || due_poll {
                            if due_poll {
                                last_poll = Instant::now();
                            }
                            if due_output {
                                flush_every = (flush_every * 2).min(cfg.max_flush_interval.max(cfg.flush_interval));
                            }
                            match flush(store, push, &mut reply, &mut seen, &mut subs, due_poll).await {
                                Flow::Continue if due_poll && !asks.is_empty() => {
                                    answers(store, push, &reply, &mut asks).await
                                }
                                other => other,
                            }
                        } else {
                            Flow::Continue
                        }
                    }
                };
                match flow {
                    Flow::Continue => {}
                    Flow::Stop => {
                        outcome = TurnOutcome::Stopped;
                        // Stop while waiting is a denial of what waits.
                        for (id, slot, _) in asks.drain(..) {
                            match requests::deny_for_server(
                                store,
                                push,
                                &reply.session,
                                &id,
                                "Stopped by the person.",
                            )
                            .await
                            {
                                Ok(Some(r)) => slot.send(r),
                                Ok(None) => {}
                                Err(e) => {
                                    tracing::warn!(error = &e as &dyn std::error::Error, session = %job.session_id, "denying a request on stop failed")
                                }
                            }
                        }
                        break;
                    }
                    Flow::Abandon => return Ok(None),
                    Flow::Park(parked) => {
                        drop(stream);
                        return park(store, &reply, &parked).await;
                    }
                    Flow::Broken => {
                        outcome = TurnOutcome::Failed;
                        error = Some(SAVE_FAILED.into());
                        break;
                    }
                }
                let changed_due = reply.unsaved && last_checkpoint.elapsed() >= checkpoint_every;
                if changed_due || last_checkpoint.elapsed() >= cfg.heartbeat_interval {
                    last_checkpoint = Instant::now();
                    checkpoint_every = (checkpoint_every * 2).min(cfg.heartbeat_interval);
                    reply.unsaved = false;
                    match store
                        .checkpoint(&job.session_id, &job.turn_id, &reply.live(), now_ms())
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => return Ok(None),
                        Err(e) => {
                            tracing::error!(error = &e as &dyn std::error::Error, session = %job.session_id, "checkpoint failed");
                            outcome = TurnOutcome::Failed;
                            error = Some(SAVE_FAILED.into());
                            break;
                        }
                    }
                }
            }
            // Dropping the stream cancels the agent's work at once.
            drop(stream);
        }
    }

    // Whatever is still waiting goes out before the stored message.
    if reply.pending_since.is_some()
        && let Err(e) = push_to_current(store, push, &mut reply, &mut seen).await
    {
        tracing::warn!(error = &e as &dyn std::error::Error, session = %job.session_id, "last frames not sent");
    }
    let now = now_ms();
    let end = TurnEnd {
        reply: Message {
            id: reply.message_id.clone(),
            session_id: job.session_id.clone(),
            seq: 0,
            role: Role::Assistant,
            turn_id: job.turn_id.clone(),
            created_at: Timestamp::from_millis(now),
            content: reply.content,
            status: outcome.message_status(),
            error: error.clone(),
            usage: Some(usage),
        },
        last_turn: LastTurn {
            id: job.turn_id.clone(),
            outcome,
            error,
        },
        usage,
        agent_session_id,
        now_ms: now,
    };
    finish_and_announce(store, push, &reply.session, &job.turn_id, &end).await;
    if *shutdown.borrow() {
        return Ok(None);
    }
    Ok(super::queue::start_next(store, push, &cfg.limits, &reply.session, outcome).await)
}

/// Stores the reply so far and where the turn stopped, and gives up the
/// claim: the runner ends, and the answer (or the sweep, once the request
/// expires) dispatches the turn to be resumed.
async fn park(
    store: &dyn Store,
    reply: &Reply,
    parked: &Parked,
) -> Result<Option<TurnJob>, ServiceError> {
    let (sid, tid) = (&reply.session_id, &reply.turn_id);
    if store.checkpoint(sid, tid, &reply.live(), now_ms()).await?
        && store.park_turn(sid, tid, parked).await?
    {
        tracing::info!(session = %sid, turn = %tid, "turn parked on a request");
    }
    Ok(None)
}

/// The answer a parked turn resumes with: the person's, or the server's
/// denial once the request has expired; None while it still waits.
async fn resumable(
    store: &dyn Store,
    push: &dyn Push,
    record: &crate::domain::records::SessionRecord,
    turn: &crate::domain::records::ActiveTurn,
    parked: &Parked,
) -> Result<Option<confab_protocol::model::Resolution>, ServiceError> {
    let Some(request) = turn.requests.iter().find(|r| r.id == parked.request_id) else {
        return Ok(None);
    };
    if let Some(answer) = &request.resolution {
        return Ok(Some(answer.clone()));
    }
    if now_ms() < request.expires_at.millis() {
        return Ok(None);
    }
    requests::deny_for_server(store, push, &record.target(), &request.id, TIMED_OUT).await
}

/// What a request nobody answered in time is denied with.
pub const TIMED_OUT: &str = "Nobody answered in time, so it was denied.";

/// While the agent waits: hands it the answers that came, and denies what
/// nobody answered in time.
async fn answers(
    store: &dyn Store,
    push: &dyn Push,
    reply: &Reply,
    asks: &mut Vec<(RequestId, AnswerSlot, i64)>,
) -> Flow {
    let turn = match store.active_turn(&reply.session_id, &reply.turn_id).await {
        Ok(Some(t)) => t,
        Ok(None) => return Flow::Abandon,
        Err(e) => {
            tracing::error!(error = &e as &dyn std::error::Error, session = %reply.session_id, "reading the turn failed");
            return Flow::Broken;
        }
    };
    let now = now_ms();
    let mut still = Vec::with_capacity(asks.len());
    for (id, slot, expires) in asks.drain(..) {
        let answered = turn
            .requests
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.resolution.clone());
        if let Some(r) = answered {
            slot.send(r);
        } else if now >= expires {
            match requests::deny_for_server(store, push, &reply.session, &id, TIMED_OUT).await {
                Ok(Some(r)) => slot.send(r),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = &e as &dyn std::error::Error, session = %reply.session_id, "denying a request failed");
                    still.push((id, slot, expires));
                }
            }
        } else {
            still.push((id, slot, expires));
        }
    }
    *asks = still;
    Flow::Continue
}

/// One flush: is the turn still wanted, then push what waits. The turn and
/// its subscribers are read from the store when `fresh` (at each poll) or
/// while nobody is known to watch; between polls the subscribers last read are pushed to
/// (one that came meanwhile gets the whole reply at the next poll, so it
/// misses nothing), and a stop is seen at the next poll.
async fn flush(
    store: &dyn Store,
    push: &dyn Push,
    reply: &mut Reply,
    seen: &mut HashMap<String, String>,
    subs: &mut Option<Vec<Subscriber>>,
    fresh: bool,
) -> Flow {
    // Nobody known yet: look again at each flush, so that the first
    // subscriber of a new session sees its reply start at once.
    if fresh || subs.as_ref().is_none_or(Vec::is_empty) {
        match store.active_turn(&reply.session_id, &reply.turn_id).await {
            Ok(None) => return Flow::Abandon,
            Ok(Some(t)) if t.stop_requested => return Flow::Stop,
            Ok(Some(_)) => {}
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, session = %reply.session_id, "reading the turn failed");
                return Flow::Broken;
            }
        }
        match subscribers_of(store, &reply.session).await {
            Ok(s) => *subs = Some(s),
            Err(e) => {
                tracing::error!(error = &e as &dyn std::error::Error, session = %reply.session_id, "reading the subscribers failed");
                return Flow::Broken;
            }
        }
    }
    match push_frames(
        store,
        push,
        reply,
        seen,
        subs.as_deref().unwrap_or_default(),
    )
    .await
    {
        Ok(()) => Flow::Continue,
        Err(e) => {
            tracing::error!(error = &e as &dyn std::error::Error, session = %reply.session_id, "pushing frames failed");
            Flow::Broken
        }
    }
}

/// `push_frames` to the subscribers as they are now.
async fn push_to_current(
    store: &dyn Store,
    push: &dyn Push,
    reply: &mut Reply,
    seen: &mut HashMap<String, String>,
) -> Result<(), ServiceError> {
    let subs = subscribers_of(store, &reply.session).await?;
    push_frames(store, push, reply, seen, &subs).await
}

/// Pushes the increment to subscribers that have the reply so far, and the
/// whole reply to those that do not (new, or subscribed again).
async fn push_frames(
    store: &dyn Store,
    push: &dyn Push,
    reply: &mut Reply,
    seen: &mut HashMap<String, String>,
    subs: &[Subscriber],
) -> Result<(), ServiceError> {
    let increment: Vec<Bytes> = reply.take_increment().iter().map(encode).collect();
    let mut snapshot: Option<Vec<Bytes>> = None;
    let mut sends: Vec<(String, Vec<Bytes>)> = Vec::with_capacity(subs.len());
    for s in subs {
        if seen.get(&s.connection_id) == Some(&s.token) {
            if !increment.is_empty() {
                sends.push((s.connection_id.clone(), increment.clone()));
            }
        } else {
            let frames = snapshot
                .get_or_insert_with(|| {
                    snapshot_frames(&reply.session_id, &reply.live())
                        .iter()
                        .map(encode)
                        .collect()
                })
                .clone();
            seen.insert(s.connection_id.clone(), s.token.clone());
            sends.push((s.connection_id.clone(), frames));
        }
    }
    seen.retain(|c, _| subs.iter().any(|s| &s.connection_id == c));
    join_all(
        sends
            .iter()
            .map(|(c, frames)| send_all(store, push, c, frames)),
    )
    .await;
    Ok(())
}
