//! `cargo xtask load [--scenario NAME]`: many clients against one `confab`
//! process (release build, SQLite, the demo agent, jwt auth with many
//! users), and the same sockets against a bare broadcast server
//! (`confab-baseline`) in the same run. Every frame is checked with the web
//! app's offset rule: a delta lost, doubled or out of order is counted, and
//! any count above zero fails the run. Results go to docs/benchmarks.md.
//!
//! Every loop here is bounded in count and in time.

use anyhow::{Context, Result, bail};
use confab_protocol::ServerEvent;
use confab_protocol::model::{Block, SessionStatus};
use confab_protocol::socket::Reassembly;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "load-secret-0123456789abcdefghijklmnop";
/// How long any one wait may take before the run fails.
const WAIT: Duration = Duration::from_secs(120);

// ---- processes -------------------------------------------------------------

/// Where a server answers.
#[derive(Clone)]
struct Addr {
    http: String,
    ws: String,
}

/// A server process under load.
struct Server {
    child: Child,
    pid: u32,
    http: String,
    ws: String,
    data: Option<PathBuf>,
}

impl Server {
    async fn confab(bin: &Path, env: &[(&str, &str)]) -> Result<Server> {
        let data = std::env::temp_dir().join(format!("confab-load-{}", uuid::Uuid::now_v7()));
        let mut cmd = Command::new(bin);
        cmd.args(["--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(["--web-dir", "/nonexistent"])
            .env("RUST_LOG", "warn")
            .env("CONFAB_AUTH", "jwt")
            .env("CONFAB_JWT_SECRET", SECRET)
            .env("CONFAB_AGENT", "demo")
            .env("CONFAB_MAX_CONNECTIONS", "12000");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (child, line) = spawn(cmd, "confab listening on http://").await?;
        Ok(Server {
            pid: child.id().context("confab's pid")?,
            child,
            http: format!("http://{line}"),
            ws: format!("ws://{line}/ws"),
            data: Some(data),
        })
    }

    async fn baseline(bin: &Path) -> Result<Server> {
        let (child, line) = spawn(Command::new(bin), "baseline listening on ").await?;
        Ok(Server {
            pid: child.id().context("the baseline's pid")?,
            child,
            http: String::new(),
            ws: format!("ws://{line}/ws"),
            data: None,
        })
    }

    fn addr(&self) -> Addr {
        Addr {
            http: self.http.clone(),
            ws: self.ws.clone(),
        }
    }

    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// CPU time used so far (user and system), in seconds.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        // Fields after the command name (which may hold spaces).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        ticks as f64 / hz
    }

    /// The store's writes and commits so far, from the management endpoint.
    async fn store_writes(&self, http: &reqwest::Client) -> (u64, u64) {
        let Some(data) = &self.data else {
            return (0, 0);
        };
        let key = std::fs::read_to_string(data.join("management-key")).unwrap_or_default();
        let r = http
            .get(format!("{}/{}/@stats", self.http, key.trim()))
            .send()
            .await;
        let v = match r {
            Ok(r) => r.json::<Value>().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        (
            v["storeWrites"].as_u64().unwrap_or(0),
            v["storeCommits"].as_u64().unwrap_or(0),
        )
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
        if let Some(d) = &self.data {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

async fn spawn(mut cmd: Command, prefix: &str) -> Result<(Child, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("starting a server")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("the server did not start in 30 s")??
        .context("the server exited before listening")?;
    let addr = line
        .strip_prefix(prefix)
        .with_context(|| format!("unexpected first line: {line}"))?
        .trim()
        .to_string();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, addr))
}

/// Open files this process may hold: as many as the hard limit allows.
fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain calls on a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

fn token(sub: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 7200;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": sub, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("signing")
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64
}

fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}

// ---- what clients see --------------------------------------------------------

/// What every socket of a run saw.
#[derive(Default)]
struct Seen {
    frames: AtomicU64,
    bytes: AtomicU64,
    lost: AtomicU64,
    dup: AtomicU64,
    /// Replies seen stored (one per socket per turn).
    ended: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    /// Delay of each word that carries its send time, in µs.
    delays: Mutex<Vec<u64>>,
}

impl Seen {
    fn delivered(&self, bytes: usize) {
        let now = now_us();
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let _ = self
            .first_us
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_us.fetch_max(now, Ordering::Relaxed);
    }
}

/// The web app's offset rule, counted instead of repaired: per message and
/// block, a delta must start where the text so far ends.
#[derive(Default)]
struct Offsets(HashMap<(String, usize), usize>);

impl Offsets {
    fn snapshot(&mut self, message_id: &str, content: &[Block]) {
        for (i, b) in content.iter().enumerate() {
            if let Block::Text { text } = b {
                self.0.insert((message_id.to_string(), i), text.len());
            }
        }
    }

    fn delta(&mut self, seen: &Seen, message_id: &str, block: usize, offset: usize, text: &str) {
        let have = self.0.entry((message_id.to_string(), block)).or_insert(0);
        if offset == *have {
            *have += text.len();
        } else if offset < *have {
            seen.dup.fetch_add(1, Ordering::Relaxed);
            *have = (*have).max(offset + text.len());
        } else {
            seen.lost.fetch_add(1, Ordering::Relaxed);
            *have = offset + text.len();
        }
    }
}

/// Words that are send times (µs since the epoch), as `/clock` and the
/// baseline write them: their delay until now.
fn delays(text: &str, out: &mut Vec<u64>) {
    let now = now_us();
    for w in text.split_whitespace() {
        if w.len() == 16
            && let Ok(t) = w.parse::<u64>()
        {
            out.push(now.saturating_sub(t));
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a socket (with a ticket for `user`, or as a baseline client of
/// `group`), says hello, and subscribes to `session` when given.
async fn open(
    http: &reqwest::Client,
    server: &Addr,
    user: Option<&str>,
    group: Option<usize>,
    session: Option<&str>,
) -> Result<Ws> {
    let url = match (user, group) {
        (Some(u), _) => {
            let r: Value = http
                .post(format!("{}/api/socket-ticket", server.http))
                .bearer_auth(token(u))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            format!(
                "{}?ticket={}",
                server.ws,
                r["ticket"].as_str().context("a ticket")?
            )
        }
        (None, Some(g)) => format!("{}?group={g}", server.ws),
        (None, None) => server.ws.clone(),
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    if group.is_some() {
        return Ok(ws);
    }
    ws.send(Message::text(json!({"action": "hello"}).to_string()))
        .await?;
    expect(&mut ws, |e| matches!(e, ServerEvent::Ready { .. })).await?;
    if let Some(s) = session {
        ws.send(Message::text(
            json!({"action": "subscribe", "sessionId": s, "afterSeq": 0}).to_string(),
        ))
        .await?;
        expect(&mut ws, |e| matches!(e, ServerEvent::Subscribed { .. })).await?;
    }
    Ok(ws)
}

async fn expect(ws: &mut Ws, want: impl Fn(&ServerEvent) -> bool) -> Result<ServerEvent> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .context("a frame did not come in time")?
            .context("the socket closed")??;
        if let Message::Text(t) = msg
            && let Ok(e) = serde_json::from_str::<ServerEvent>(&t)
        {
            if let ServerEvent::Error { message, .. } = &e {
                bail!("the server refused a frame: {message}");
            }
            if want(&e) {
                return Ok(e);
            }
        }
    }
}

/// Reads a socket until `stop`, checking and counting what comes; pings
/// every `ping` when given (as the web app does every 30 s).
fn watch(
    mut ws: Ws,
    seen: Arc<Seen>,
    stop: tokio::sync::watch::Receiver<bool>,
    ping: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut offsets = Offsets::default();
        let mut parts = Reassembly::default();
        let mut stop = stop;
        let mut words = Vec::new();
        let jitter = Duration::from_millis(rand_below(ping.map_or(1, |p| p.as_millis() as u64)));
        let mut next_ping = ping.map(|p| tokio::time::Instant::now() + jitter.min(p));
        loop {
            let ping_at = next_ping
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep_until(ping_at) => {
                    next_ping = ping.map(|p| tokio::time::Instant::now() + p);
                    if ws.send(Message::text(r#"{"action":"ping"}"#)).await.is_err() { break; }
                }
                msg = ws.next() => {
                    let Some(Ok(msg)) = msg else { break };
                    let Message::Text(t) = msg else { continue };
                    let Ok(e) = serde_json::from_str::<ServerEvent>(&t) else { continue };
                    let Ok(Some(e)) = parts.accept(e) else { continue };
                    match e {
                        ServerEvent::MessageDelta { message_id, block, offset, text, .. } => {
                            seen.delivered(t.len());
                            offsets.delta(&seen, &message_id, block, offset, &text);
                            delays(&text, &mut words);
                        }
                        ServerEvent::Subscribed { live: Some(live), .. } => {
                            offsets.snapshot(&live.message_id, &live.content);
                        }
                        ServerEvent::MessageSnapshot { message_id, content, .. } => {
                            offsets.snapshot(&message_id, &content);
                            for b in &content {
                                if let Block::Text { text } = b {
                                    delays(text, &mut words);
                                }
                            }
                        }
                        ServerEvent::MessageBlock { message_id, index, block: Block::Text { text }, .. } => {
                            offsets.0.insert((message_id.to_string(), index), text.len());
                        }
                        // The stored reply: what it holds beyond the deltas
                        // is the last words, delivered now.
                        ServerEvent::MessageCreated { message, .. } => {
                            for (i, b) in message.content.iter().enumerate() {
                                if let Block::Text { text } = b {
                                    let have = offsets.0.get(&(message.id.to_string(), i)).copied().unwrap_or(0);
                                    if let Some(rest) = text.get(have..) {
                                        delays(rest, &mut words);
                                    }
                                }
                            }
                        }
                        ServerEvent::SessionUpdated { session } if session.status == SessionStatus::Idle => {
                            seen.ended.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
        }
        seen.delays.lock().unwrap().extend(words);
    })
}

/// Tells every watcher to stop, and waits until each has.
async fn stop_all(stop: tokio::sync::watch::Sender<bool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
}

fn rand_below(n: u64) -> u64 {
    rand::random::<u64>() % n.max(1)
}

/// Runs `f` over `items`, `width` at a time; fails with the first error.
async fn each<T, F, Fut, R>(items: Vec<T>, width: usize, f: F) -> Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<R>>,
{
    futures::stream::iter(items.into_iter().map(f))
        .buffered(width)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn create(http: &reqwest::Client, server: &Addr, user: &str, text: &str) -> Result<String> {
    let sid = id();
    for _ in 0..200 {
        let r = http
            .post(format!("{}/api/sessions", server.http))
            .bearer_auth(token(user))
            .json(&json!({"id": sid, "message": {"id": id(), "text": text}}))
            .send()
            .await?;
        match r.status().as_u16() {
            201 | 200 => return Ok(sid),
            429 | 503 => tokio::time::sleep(Duration::from_millis(50)).await,
            s => bail!(
                "create answered {s}: {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }
    bail!("create kept being refused")
}

async fn send(
    http: &reqwest::Client,
    server: &Addr,
    user: &str,
    sid: &str,
    text: &str,
) -> Result<()> {
    for _ in 0..200 {
        let r = http
            .post(format!("{}/api/sessions/{sid}/messages", server.http))
            .bearer_auth(token(user))
            .json(&json!({"id": id(), "text": text}))
            .send()
            .await?;
        match r.status().as_u16() {
            200..=299 => return Ok(()),
            429 | 503 | 409 => tokio::time::sleep(Duration::from_millis(50)).await,
            s => bail!("send answered {s}: {}", r.text().await.unwrap_or_default()),
        }
    }
    bail!("send kept being refused")
}

async fn wait_idle(http: &reqwest::Client, server: &Addr, user: &str, sid: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let v: Value = http
            .get(format!("{}/api/sessions/{sid}", server.http))
            .bearer_auth(token(user))
            .send()
            .await?
            .json()
            .await?;
        if v["session"]["status"] == "idle" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("session {sid} never went idle")
}

// ---- scenarios ------------------------------------------------------------------

struct Row {
    scenario: &'static str,
    measure: String,
    confab: String,
    baseline: String,
    ratio: String,
    target: &'static str,
    met: bool,
}

/// The idle scenario's name in the table (fewer sockets are said so).
const IDLE: &str = "10,000 idle sockets";

struct Ctx {
    open_files: u64,
    confab: PathBuf,
    baseline: PathBuf,
    http: reqwest::Client,
    rows: Vec<Row>,
    failures: Vec<String>,
}

impl Ctx {
    /// A fresh `confab` with `env`, where it answers, and a client for it.
    async fn confab(&self, env: &[(&str, &str)]) -> Result<(Server, Addr, reqwest::Client)> {
        let server = Server::confab(&self.confab, env).await?;
        let at = server.addr();
        Ok((server, at, self.http.clone()))
    }

    /// A row: Confab's value, the baseline's, and their ratio.
    fn row(
        &mut self,
        scenario: &'static str,
        measure: &str,
        [confab, baseline, ratio]: [String; 3],
        target: &'static str,
        met: bool,
    ) {
        println!(
            "{scenario} | {measure} | {confab} | {baseline} | {ratio} | {target} | {}",
            if met { "met" } else { "NOT met" }
        );
        self.rows.push(Row {
            scenario,
            measure: measure.into(),
            confab,
            baseline,
            ratio,
            target,
            met,
        });
    }

    fn check_frames(&mut self, scenario: &str, seen: &Seen) {
        let (lost, dup) = (
            seen.lost.load(Ordering::Relaxed),
            seen.dup.load(Ordering::Relaxed),
        );
        if lost + dup > 0 {
            self.failures
                .push(format!("{scenario}: {lost} frames lost, {dup} doubled"));
        }
    }
}

/// A session for each of `owners` (a name may come more than once), each
/// with its first reply done: (owner, session id).
async fn idle_sessions(
    http: &reqwest::Client,
    at: &Addr,
    owners: Vec<String>,
) -> Result<Vec<(String, String)>> {
    each(owners, 32, |u| async move {
        let sid = create(http, at, &u, "hi").await?;
        wait_idle(http, at, &u, &sid).await?;
        Ok((u, sid))
    })
    .await
}

/// Watches `sockets` (each pinging every 30 s, as the web app does), lets
/// them settle, and measures the server: its memory then (KiB), and its
/// CPU over 15 s (% of a core).
async fn settle(
    server: &Server,
    sockets: Vec<Ws>,
    seen: &Arc<Seen>,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> (u64, f64, Vec<tokio::task::JoinHandle<()>>) {
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| {
            watch(
                ws,
                seen.clone(),
                stop.clone(),
                Some(Duration::from_secs(30)),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss = server.rss_kib();
    let cpu0 = server.cpu_secs();
    let window = Duration::from_secs(15);
    tokio::time::sleep(window).await;
    let cpu = (server.cpu_secs() - cpu0) / window.as_secs_f64() * 100.0;
    (rss, cpu, tasks)
}

/// 10,000 idle sockets, each subscribed to one of 1,000 sessions (ten of
/// each of 1,000 users), pinging every 30 s as the web app does.
async fn idle(cx: &mut Ctx) -> Result<()> {
    const PER_USER: usize = 10;
    // 10,000 sockets, or as many as this machine lets each process open.
    let users = (cx.open_files.saturating_sub(500) as usize / PER_USER).clamp(1, 1000);
    let (server, at, http) = cx.confab(&[("CONFAB_DEMO_DELAY_MS", "0")]).await?;
    let users: Vec<String> = (0..users).map(|u| format!("idle-{u}")).collect();
    let sessions = idle_sessions(&http, &at, users.clone()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.rss_kib();
    let seen = Arc::new(Seen::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let jobs: Vec<(String, String)> = sessions
        .iter()
        .flat_map(|(u, s)| (0..PER_USER).map(move |_| (u.clone(), s.clone())))
        .collect();
    let total = jobs.len();
    let started = Instant::now();
    let sockets = each(jobs, 64, |(u, s)| {
        let (http, server) = (&http, &at);
        async move { open(http, server, Some(&u), None, Some(&s)).await }
    })
    .await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let (after, idle_cpu, tasks) = settle(&server, sockets, &seen, &stop).await;
    let per_socket = after.saturating_sub(before) as f64 / total as f64;
    stop_all(stop_tx, tasks).await;
    server.stop().await;

    // The baseline holds the same number of sockets, idle.
    let base = Server::baseline(&cx.baseline).await?;
    let base_at = base.addr();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b_before = base.rss_kib();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let b_sockets = each((0..total).collect(), 64, |i| {
        let (http, base) = (&http, &base_at);
        async move { open(http, base, None, Some(i / PER_USER), None).await }
    })
    .await?;
    let b_seen = Arc::new(Seen::default());
    let (b_after, b_idle_cpu, tasks) = settle(&base, b_sockets, &b_seen, &stop).await;
    let b_per_socket = b_after.saturating_sub(b_before) as f64 / total as f64;
    stop_all(stop_tx, tasks).await;
    base.stop().await;

    cx.row(
        IDLE,
        "memory per socket (RSS)",
        [
            format!("{per_socket:.1} KiB"),
            format!("{b_per_socket:.1} KiB"),
            format!("{:.2}", per_socket / b_per_socket.max(0.01)),
        ],
        "≤ 25 KiB",
        per_socket <= 25.0,
    );
    cx.row(
        IDLE,
        "CPU while idle (pings every 30 s)",
        [
            format!("{idle_cpu:.2} %"),
            format!("{b_idle_cpu:.2} %"),
            format!("{:.2}", idle_cpu / b_idle_cpu.max(0.01)),
        ],
        "< 2 %",
        idle_cpu < 2.0,
    );
    println!("({total} sockets connected and subscribed in {connect_secs:.1} s)");
    if total < 10_000 {
        cx.failures.push(format!(
            "idle: only {total} sockets (raise the open-files limit to 10,500 for 10,000)"
        ));
    }
    cx.check_frames("idle", &seen);
    Ok(())
}

/// 1,000 turns at once (the demo agent's `/clock`: 300 words, 20 ms
/// apart, each word its send time), two subscribers each; and meanwhile,
/// new sessions created and timed to their first reply frame.
async fn turns(cx: &mut Ctx) -> Result<()> {
    const SESSIONS: usize = 1000;
    const USERS: usize = 250;
    const WORDS: usize = 300;
    let (server, at, http) = cx
        .confab(&[("CONFAB_DEMO_DELAY_MS", "20"), ("CONFAB_MAX_TURNS", "1100")])
        .await?;
    let jobs: Vec<String> = (0..SESSIONS)
        .map(|i| format!("turns-{}", i % USERS))
        .collect();
    let sessions = idle_sessions(&http, &at, jobs).await?;
    let seen = Arc::new(Seen::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let subs: Vec<(String, String)> = sessions
        .iter()
        .flat_map(|(u, s)| [(u.clone(), s.clone()), (u.clone(), s.clone())])
        .collect();
    let sockets = each(subs, 64, |(u, s)| {
        let (http, server) = (&http, &at);
        async move { open(http, server, Some(&u), None, Some(&s)).await }
    })
    .await?;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| watch(ws, seen.clone(), stop.clone(), None))
        .collect();
    // The probe: sessions created while the turns run, timed from the
    // create to the first frame of their reply.
    let probe = {
        let (http, server) = (http.clone(), at.clone());
        tokio::spawn(async move {
            let mut times = Vec::new();
            tokio::time::sleep(Duration::from_millis(1000)).await;
            for _ in 0..20 {
                let mut ws = match open(&http, &server, Some("probe"), None, None).await {
                    Ok(ws) => ws,
                    Err(_) => break,
                };
                let t0 = Instant::now();
                let Ok(sid) = create(&http, &server, "probe", "/words 5").await else {
                    break;
                };
                let created = t0.elapsed().as_micros() as u64;
                let _ = ws
                    .send(Message::text(
                        json!({"action": "subscribe", "sessionId": sid, "afterSeq": 0}).to_string(),
                    ))
                    .await;
                let has_text = |c: &[Block]| {
                    c.iter()
                        .any(|b| matches!(b, Block::Text { text } if !text.is_empty()))
                };
                let Ok(sub) =
                    expect(&mut ws, |e| matches!(e, ServerEvent::Subscribed { .. })).await
                else {
                    break;
                };
                let subscribed = t0.elapsed().as_micros() as u64;
                let already = match &sub {
                    ServerEvent::Subscribed { live: Some(l), .. } => has_text(&l.content),
                    ServerEvent::Subscribed { messages, .. } => messages.len() >= 2,
                    _ => false,
                };
                let first = if already {
                    Ok(sub)
                } else {
                    expect(&mut ws, |e| match e {
                        ServerEvent::MessageDelta { .. } => true,
                        ServerEvent::MessageSnapshot { content, .. } => has_text(content),
                        ServerEvent::MessageCreated { .. } => true,
                        _ => false,
                    })
                    .await
                };
                if first.is_ok() {
                    times.push((created, subscribed, t0.elapsed().as_micros() as u64));
                }
                let _ = ws.close(None).await;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            times
        })
    };
    let writes0 = server.store_writes(&http).await;
    let cpu0 = server.cpu_secs();
    let started = Instant::now();
    each(sessions.clone(), 200, |(u, s)| {
        let (http, server) = (&http, &at);
        async move { send(http, server, &u, &s, &format!("/clock {WORDS}")).await }
    })
    .await?;
    let deadline = Instant::now() + WAIT;
    while seen.ended.load(Ordering::Relaxed) < (2 * SESSIONS) as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed().as_secs_f64();
    let (w1, c1) = server.store_writes(&http).await;
    let (writes, commits) = (w1.saturating_sub(writes0.0), c1.saturating_sub(writes0.1));
    let cpu = server.cpu_secs() - cpu0;
    stop_all(stop_tx, tasks).await;
    let probes = probe.await.unwrap_or_default();
    server.stop().await;
    let ended = seen.ended.load(Ordering::Relaxed);
    if ended < (2 * SESSIONS) as u64 {
        cx.failures.push(format!(
            "turns: {ended} of {} subscribers saw their reply end",
            2 * SESSIONS
        ));
    }
    let frames = seen.frames.load(Ordering::Relaxed);
    let bytes = seen.bytes.load(Ordering::Relaxed);
    let mut d = std::mem::take(&mut *seen.delays.lock().unwrap());
    d.sort_unstable();
    let (p50, p99) = (
        percentile(&d, 0.5) as f64 / 1000.0,
        percentile(&d, 0.99) as f64 / 1000.0,
    );
    let measured = d.len();

    // The baseline: the same sockets in pairs, the same frames per turn, of
    // the same size, at the same pace.
    let per_turn = frames as f64 / (2 * SESSIONS) as f64;
    let size = (bytes as f64 / frames.max(1) as f64) as u64;
    let interval = ((WORDS as f64 * 20.0) / per_turn.max(1.0)).round() as u64;
    let (b50, b99) = baseline_run(
        cx,
        Broadcast {
            sockets: 2 * SESSIONS,
            group: 2,
            frames: per_turn.round() as u64,
            size,
            interval,
        },
    )
    .await?;

    cx.row(
        "1,000 turns at once, 2 subscribers each",
        "word delay, agent to client, p50",
        [
            format!("{p50:.1} ms"),
            format!("{b50:.1} ms"),
            format!("{:.2}", p50 / b50.max(0.01)),
        ],
        "—",
        true,
    );
    cx.row(
        "1,000 turns at once, 2 subscribers each",
        "word delay, agent to client, p99",
        [
            format!("{p99:.1} ms"),
            format!("{b99:.1} ms"),
            format!("{:.2}", p99 / b99.max(0.01)),
        ],
        "< 100 ms",
        p99 < 100.0,
    );
    cx.row(
        "1,000 turns at once, 2 subscribers each",
        "frames lost / doubled",
        [
            format!(
                "{} / {}",
                seen.lost.load(Ordering::Relaxed),
                seen.dup.load(Ordering::Relaxed)
            ),
            "0 / 0".into(),
            "—".into(),
        ],
        "0 / 0",
        seen.lost.load(Ordering::Relaxed) + seen.dup.load(Ordering::Relaxed) == 0,
    );
    cx.row(
        "1,000 turns at once, 2 subscribers each",
        "store writes per second (commits)",
        [
            format!("{:.0} ({:.0})", writes as f64 / took, commits as f64 / took),
            "—".into(),
            "—".into(),
        ],
        "reported",
        true,
    );
    println!(
        "(turns: {frames} frames, {per_turn:.1} a turn per subscriber, {size} bytes each, all ended in {took:.1} s; {measured} word delays measured; Confab used {cpu:.1} s of CPU)"
    );
    let stage = |f: fn(&(u64, u64, u64)) -> u64| {
        let mut v: Vec<u64> = probes.iter().map(f).collect();
        v.sort_unstable();
        percentile(&v, 0.5) as f64 / 1000.0
    };
    println!(
        "(probe, p50: created {:.1} ms, subscribed {:.1} ms, first frame {:.1} ms)",
        stage(|p| p.0),
        stage(|p| p.1),
        stage(|p| p.2)
    );
    let mut probe_times: Vec<u64> = probes.iter().map(|p| p.2).collect();
    probe_times.sort_unstable();
    let (c50, c99) = (
        percentile(&probe_times, 0.5) as f64 / 1000.0,
        percentile(&probe_times, 0.99) as f64 / 1000.0,
    );
    cx.row(
        "create → first reply frame, during the above",
        &format!("p50 / p99 of {}", probe_times.len()),
        [format!("{c50:.1} / {c99:.1} ms"), "—".into(), "—".into()],
        "p99 < 50 ms",
        c99 < 50.0 && !probe_times.is_empty(),
    );
    cx.check_frames("turns", &seen);
    Ok(())
}

/// What the baseline is asked to do: `sockets` sockets in groups of
/// `group`, each group sent `frames` frames of `size` bytes every
/// `interval` ms (0: as fast as they go).
struct Broadcast {
    sockets: usize,
    group: usize,
    frames: u64,
    size: u64,
    interval: u64,
}

/// The baseline's run of `b`: the delay p50 and p99 in ms.
async fn baseline_run(cx: &mut Ctx, b: Broadcast) -> Result<(f64, f64)> {
    let (seen, _) = baseline_broadcast(cx, b).await?;
    let mut d = std::mem::take(&mut *seen.delays.lock().unwrap());
    d.sort_unstable();
    Ok((
        percentile(&d, 0.5) as f64 / 1000.0,
        percentile(&d, 0.99) as f64 / 1000.0,
    ))
}

/// Runs `b` on a fresh baseline server: what its sockets saw (checked as
/// Confab's are), and the seconds from the first frame to the last.
async fn baseline_broadcast(cx: &mut Ctx, b: Broadcast) -> Result<(Arc<Seen>, f64)> {
    let Broadcast {
        sockets,
        group,
        frames,
        size,
        interval,
    } = b;
    let http = cx.http.clone();
    let base = Server::baseline(&cx.baseline).await?;
    let base_at = base.addr();
    let seen = Arc::new(Seen::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let socks = each((0..sockets).collect(), 64, |i| {
        let (http, base) = (&http, &base_at);
        async move { open(http, base, None, Some(i / group), None).await }
    })
    .await?;
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|ws| watch(ws, seen.clone(), stop.clone(), None))
        .collect();
    let (mut control, _) =
        tokio_tungstenite::connect_async(base.ws.replace("/ws", "/control")).await?;
    control
        .send(Message::text(
            json!({"frames": frames, "size": size, "intervalMs": interval}).to_string(),
        ))
        .await?;
    let _ = tokio::time::timeout(WAIT, control.next()).await;
    // Until every socket has every frame, or a while.
    let want = frames * sockets as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.frames.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let span = (seen
        .last_us
        .load(Ordering::Relaxed)
        .saturating_sub(seen.first_us.load(Ordering::Relaxed))) as f64
        / 1e6;
    stop_all(stop_tx, tasks).await;
    base.stop().await;
    cx.check_frames("baseline", &seen);
    Ok((seen, span))
}

/// One session, 1,000 subscribers, a 100,000-word reply as fast as the
/// demo agent writes it.
async fn fanout(cx: &mut Ctx) -> Result<()> {
    const SUBSCRIBERS: usize = 1000;
    let (server, at, http) = cx
        .confab(&[
            ("CONFAB_DEMO_DELAY_MS", "0"),
            ("CONFAB_MAX_SOCKETS_PER_OWNER", "1100"),
        ])
        .await?;
    let user = "fanout";
    let sid = create(&http, &at, user, "hi").await?;
    wait_idle(&http, &at, user, &sid).await?;
    let seen = Arc::new(Seen::default());
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let socks = each((0..SUBSCRIBERS).collect(), 64, |_| {
        let (http, server, sid) = (&http, &at, &sid);
        async move { open(http, server, Some(user), None, Some(sid)).await }
    })
    .await?;
    let tasks: Vec<_> = socks
        .into_iter()
        .map(|ws| watch(ws, seen.clone(), stop.clone(), None))
        .collect();
    let cpu0 = server.cpu_secs();
    send(&http, &at, user, &sid, "/words 100000").await?;
    let deadline = Instant::now() + WAIT;
    while seen.ended.load(Ordering::Relaxed) < SUBSCRIBERS as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = server.cpu_secs() - cpu0;
    stop_all(stop_tx, tasks).await;
    server.stop().await;
    if seen.ended.load(Ordering::Relaxed) < SUBSCRIBERS as u64 {
        cx.failures
            .push("fanout: not every subscriber saw the reply end".into());
    }
    let frames = seen.frames.load(Ordering::Relaxed);
    let bytes = seen.bytes.load(Ordering::Relaxed);
    let span = (seen
        .last_us
        .load(Ordering::Relaxed)
        .saturating_sub(seen.first_us.load(Ordering::Relaxed))) as f64
        / 1e6;
    let (fps, bps) = (frames as f64 / span, bytes as f64 / span);
    let per_sub = frames / SUBSCRIBERS as u64;
    let size = bytes / frames.max(1);
    let (b_seen, b_span) = baseline_broadcast(
        cx,
        Broadcast {
            sockets: SUBSCRIBERS,
            group: SUBSCRIBERS,
            frames: per_sub,
            size,
            interval: 0,
        },
    )
    .await?;
    let b_fps = b_seen.frames.load(Ordering::Relaxed) as f64 / b_span;
    let b_bps = b_seen.bytes.load(Ordering::Relaxed) as f64 / b_span;
    cx.row(
        "one session, 1,000 subscribers, 100,000 words",
        "frames delivered per second",
        [
            format!("{fps:.0}"),
            format!("{b_fps:.0}"),
            format!("{:.2}", fps / b_fps),
        ],
        "≥ 0.8 × baseline",
        fps / b_fps >= 0.8,
    );
    cx.row(
        "one session, 1,000 subscribers, 100,000 words",
        "bytes delivered per second",
        [
            format!("{:.1} MB/s", bps / 1e6),
            format!("{:.1} MB/s", b_bps / 1e6),
            format!("{:.2}", bps / b_bps),
        ],
        "≥ 0.8 × baseline",
        bps / b_bps >= 0.8,
    );
    println!(
        "(fanout: {per_sub} frames of {size} bytes to each subscriber in {span:.2} s; Confab used {cpu:.1} s of CPU)"
    );
    cx.check_frames("fanout", &seen);
    Ok(())
}

/// A user with 10,000 sessions: the first page of the list, a page deep in
/// it, timed.
async fn many_sessions(cx: &mut Ctx) -> Result<()> {
    const SESSIONS: usize = 10_000;
    let (server, at, http) = cx
        .confab(&[
            ("CONFAB_DEMO_DELAY_MS", "0"),
            ("CONFAB_CREATE_RATE", "1000000"),
            ("CONFAB_MAX_TURNS_PER_OWNER", "64"),
        ])
        .await?;
    let user = "hoarder";
    let started = Instant::now();
    each((0..SESSIONS).collect(), 16, |i| {
        let (http, server) = (&http, &at);
        async move {
            create(
                http,
                server,
                user,
                &format!("note {i} about topic-{}", i % 97),
            )
            .await
        }
    })
    .await?;
    println!(
        "(10,000 sessions created in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let time = |url: String| {
        let http = http.clone();
        async move {
            let t = Instant::now();
            let r = http
                .get(url)
                .bearer_auth(token(user))
                .send()
                .await?
                .error_for_status()?;
            let v: Value = r.json().await?;
            Ok::<_, anyhow::Error>((t.elapsed().as_micros() as u64, v))
        }
    };
    let mut first = Vec::new();
    let mut cursor = None;
    for i in 0..200 {
        let (us, v) = time(format!("{}/api/sessions?limit=50", server.http)).await?;
        first.push(us);
        if i == 0 {
            cursor = v["nextCursor"].as_str().map(str::to_string);
        }
    }
    // Walk 100 pages in, then time that page.
    let mut deep_cursor = cursor.clone();
    for _ in 0..100 {
        let Some(c) = deep_cursor.clone() else { break };
        let (_, v) = time(format!("{}/api/sessions?limit=50&cursor={c}", server.http)).await?;
        deep_cursor = v["nextCursor"].as_str().map(str::to_string);
    }
    let mut deep = Vec::new();
    if let Some(c) = deep_cursor {
        for _ in 0..200 {
            deep.push(
                time(format!("{}/api/sessions?limit=50&cursor={c}", server.http))
                    .await?
                    .0,
            );
        }
    }
    server.stop().await;
    first.sort_unstable();
    deep.sort_unstable();
    let ms = |v: &[u64], p| percentile(v, p) as f64 / 1000.0;
    cx.row(
        "a user with 10,000 sessions",
        "first page of the list (50), p50 / p99",
        [
            format!("{:.1} / {:.1} ms", ms(&first, 0.5), ms(&first, 0.99)),
            "—".into(),
            "—".into(),
        ],
        "p99 < 20 ms",
        ms(&first, 0.99) < 20.0,
    );
    cx.row(
        "a user with 10,000 sessions",
        "page 100 of the list, p50 / p99",
        [
            format!("{:.1} / {:.1} ms", ms(&deep, 0.5), ms(&deep, 0.99)),
            "—".into(),
            "—".into(),
        ],
        "p99 < 20 ms",
        !deep.is_empty() && ms(&deep, 0.99) < 20.0,
    );
    Ok(())
}

fn write_docs(path: &Path, rows: &[Row], took: f64) -> Result<()> {
    let mut table = String::from(
        "| scenario | measure | Confab | baseline | Confab / baseline | target | |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.measure,
            r.confab,
            r.baseline,
            r.ratio,
            r.target,
            if r.met { "met" } else { "**not met**" }
        ));
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let section = format!(
        "<!-- load:start -->\n## Under load: one machine, beside a bare server\n\nLast run: `cargo xtask load` on {cores} cores, all scenarios in {took:.0} s.\n\n{table}<!-- load:end -->"
    );
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let (start, end) = ("<!-- load:start -->", "<!-- load:end -->");
    let new = match (doc.find(start), doc.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{section}{}", &doc[..a], &doc[b + end.len()..]),
        _ => format!("{}\n{section}\n", doc.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut confab, mut baseline, mut scenario, mut docs) = (None, None, None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--confab" => confab = args.next().map(PathBuf::from),
            "--baseline" => baseline = args.next().map(PathBuf::from),
            "--scenario" => scenario = args.next(),
            "--docs" => docs = args.next().map(PathBuf::from),
            other => bail!("unknown argument {other}"),
        }
    }
    let files = raise_open_files();
    // Each process holds one end of the idle scenario's 10,000 sockets.
    if files < 10_500 {
        eprintln!(
            "load: only {files} open files allowed; the idle scenario needs about 10,500 in each process"
        );
    }
    let mut cx = Ctx {
        open_files: files,
        confab: confab.context("--confab")?,
        baseline: baseline.context("--baseline")?,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        rows: Vec::new(),
        failures: Vec::new(),
    };
    let started = Instant::now();
    let all = ["idle", "turns", "fanout", "sessions"];
    let chosen: Vec<&str> = match scenario.as_deref() {
        Some(s) if all.contains(&s) => vec![all[all.iter().position(|a| *a == s).unwrap_or(0)]],
        Some(s) => bail!("no scenario {s}: {}", all.join(", ")),
        None => all.to_vec(),
    };
    for s in chosen {
        let run = async {
            match s {
                "idle" => idle(&mut cx).await,
                "turns" => turns(&mut cx).await,
                "fanout" => fanout(&mut cx).await,
                _ => many_sessions(&mut cx).await,
            }
        };
        tokio::time::timeout(Duration::from_secs(300), run)
            .await
            .with_context(|| format!("scenario {s} took over 5 minutes"))??;
    }
    let took = started.elapsed().as_secs_f64();
    if let Some(path) = docs
        && scenario.is_none()
    {
        write_docs(&path, &cx.rows, took)?;
    }
    println!("load: done in {took:.0} s");
    if !cx.failures.is_empty() {
        bail!("{}", cx.failures.join("; "));
    }
    Ok(())
}
