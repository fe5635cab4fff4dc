//! `cargo xtask bench`: the local gateway measured as clients see it, over
//! real HTTP and WebSockets, with the store's own write counter. Prints a
//! table and keeps it in docs/benchmarks.md.

mod common;

use confab_protocol::ServerEvent;
use confab_protocol::model::{Role, SessionStatus};
use confab_tests::harness::{Api, Socket, id};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

struct Local {
    api: Api,
    ws: String,
    writes: Arc<confab_functions::store::sqlite::Counters>,
    _dir: tempfile::TempDir,
}

async fn start(delay_ms: u64) -> Local {
    start_with(delay_ms, None).await
}

async fn start_with(delay_ms: u64, web_dir: Option<std::path::PathBuf>) -> Local {
    let (started, dir) = common::in_process(delay_ms, web_dir, false).await;
    let base = format!("http://{}", started.addr);
    Local {
        api: Api::new(&base, None),
        ws: format!("ws://{}/ws", started.addr),
        writes: started.store.expect("SQLite counters"),
        _dir: dir,
    }
}

async fn socket(l: &Local) -> Socket {
    let mut s = Socket::connect(&l.ws).await.expect("socket");
    s.hello().await;
    s
}

async fn idle_session(l: &Local) -> String {
    let sid = id();
    assert_eq!(l.api.create(&sid, &id(), "hi").await.status, 201);
    l.api
        .wait_session(&sid, |s| s["session"]["status"] == "idle")
        .await;
    sid
}

fn is_idle_update(e: &ServerEvent, sid: &str) -> bool {
    matches!(e, ServerEvent::SessionUpdated { session } if session.id == sid && session.status == SessionStatus::Idle)
}

/// A socket subscribed to an idle session (holding its first two messages).
async fn subscribed(l: &Local, sid: &str) -> Socket {
    let mut s = socket(l).await;
    s.subscribe(sid, 2).await;
    s.expect("subscribed", |e| {
        matches!(e, ServerEvent::Subscribed { .. })
    })
    .await;
    s
}

/// Frames one subscriber receives and store writes made for one reply.
async fn one_reply(l: &Local, words: usize) -> (usize, u64) {
    let sid = idle_session(l).await;
    let mut s = subscribed(l, &sid).await;
    let frames_before = s.frames.load(Ordering::Relaxed);
    let writes_before = l.writes.writes.load(Ordering::Relaxed);
    assert_eq!(
        l.api
            .send(&sid, &id(), &format!("/words {words}"))
            .await
            .status,
        202
    );
    s.expect("the end of the turn", |e| is_idle_update(e, &sid))
        .await;
    let frames = s.frames.load(Ordering::Relaxed) - frames_before;
    let writes = l.writes.writes.load(Ordering::Relaxed) - writes_before;
    (frames, writes)
}

fn carries_reply(e: &ServerEvent, sid: &str) -> bool {
    match e {
        ServerEvent::Subscribed {
            session_id,
            messages,
            live,
            ..
        } => {
            session_id == sid
                && (live.as_ref().is_some_and(|l| !l.content.is_empty())
                    || messages.iter().any(|m| m.role == Role::Assistant))
        }
        ServerEvent::MessageSnapshot {
            session_id,
            content,
            ..
        } => session_id == sid && !content.is_empty(),
        ServerEvent::MessageDelta { session_id, .. }
        | ServerEvent::MessageBlock { session_id, .. } => session_id == sid,
        ServerEvent::MessageCreated {
            session_id,
            message,
        } => session_id == sid && message.role == Role::Assistant,
        _ => false,
    }
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)])
}

/// From `POST /api/sessions` to the first frame with reply content on a
/// socket that subscribes as soon as the 201 arrives.
async fn create_latency(l: &Local, n: usize) -> (Duration, Duration) {
    let mut s = socket(l).await;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let sid = id();
        let t0 = Instant::now();
        assert_eq!(l.api.create(&sid, &id(), "hi").await.status, 201);
        s.subscribe(&sid, 1).await;
        s.expect("reply content", |e| carries_reply(e, &sid)).await;
        out.push(t0.elapsed());
        s.send(&serde_json::json!({ "action": "unsubscribe", "sessionId": sid }))
            .await;
        s.expect("unsubscribed", |e| {
            matches!(e, ServerEvent::Unsubscribed { .. })
        })
        .await;
    }
    percentiles(out)
}

/// From `POST /api/sessions/{id}/messages` to the first reply frame on a
/// socket already subscribed.
async fn send_latency(l: &Local, n: usize) -> (Duration, Duration) {
    let sid = idle_session(l).await;
    let mut s = subscribed(l, &sid).await;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        assert_eq!(l.api.send(&sid, &id(), "hi").await.status, 202);
        s.expect("reply content", |e| carries_reply(e, &sid)).await;
        out.push(t0.elapsed());
        s.expect("idle", |e| is_idle_update(e, &sid)).await;
    }
    percentiles(out)
}

/// Frames per second and bytes per second delivered to `n` sockets
/// subscribed to one running session.
async fn fanout(l: &Local, n: usize, words: usize) -> (usize, f64, f64) {
    let sid = idle_session(l).await;
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        sockets.push(subscribed(l, &sid).await);
    }
    let t0 = Instant::now();
    assert_eq!(
        l.api
            .send(&sid, &id(), &format!("/words {words}"))
            .await
            .status,
        202
    );
    let mut tasks = Vec::new();
    for mut s in sockets {
        let sid = sid.clone();
        tasks.push(tokio::spawn(async move {
            let before = s.frames.load(Ordering::Relaxed);
            s.expect("idle", |e| is_idle_update(e, &sid)).await;
            s.frames.load(Ordering::Relaxed) - before
        }));
    }
    let mut frames = 0;
    for t in tasks {
        frames += t.await.expect("socket task");
    }
    let secs = t0.elapsed().as_secs_f64();
    let reply_bytes = l.api.all_messages(&sid).await[3].plain_text().len() as f64;
    (
        frames,
        frames as f64 / secs,
        reply_bytes * n as f64 / secs / 1e6,
    )
}

/// The app's wasm and JS, gzipped (what a browser downloads), in bytes.
/// The first load's wasm and JS, gzipped, and the highlighter's, which
/// the app loads only when a code block first appears.
fn bundle_gzipped() -> (u64, u64, u64) {
    let dist = confab_tests::harness::web_dist();
    let (mut wasm, mut js, mut later) = (0, 0, 0);
    for entry in walk(&dist) {
        let name = entry.to_string_lossy().to_string();
        let is_wasm = name.ends_with(".wasm");
        if !is_wasm && !name.ends_with(".js") {
            continue;
        }
        if entry
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|d| d.to_string_lossy().starts_with("hl-"))
        {
            let out = std::process::Command::new("gzip")
                .args(["-9", "-c"])
                .arg(&entry)
                .output()
                .expect("gzip");
            later += out.stdout.len() as u64;
            continue;
        }
        let out = std::process::Command::new("gzip")
            .arg("-9")
            .arg("-c")
            .arg(&entry)
            .output()
            .expect("gzip");
        if is_wasm {
            wasm += out.stdout.len() as u64;
        } else {
            js += out.stdout.len() as u64;
        }
    }
    (wasm, js, later)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// From navigation to a session page that takes input with its socket
/// ready, in headless Chromium (a fresh window each time, nothing cached).
async fn time_to_interactive(l: &Local, runs: usize) -> (Duration, Duration) {
    let driver = confab_tests::browser::Driver::start().await;
    let base = l.api.base.clone();
    let mut out = Vec::with_capacity(runs);
    for _ in 0..runs {
        let w = driver.window().await;
        let t0 = Instant::now();
        w.goto(&format!("{base}/projects/default/sessions/{}", id()))
            .await;
        loop {
            let ready = w
                .js("const t = document.querySelector('#composer-input'); return !!t && !t.disabled && !document.querySelector('#banner-connecting, #banner-reconnecting');")
                .await;
            if ready == serde_json::Value::Bool(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out.push(t0.elapsed());
        w.close().await;
    }
    out.sort();
    (out[out.len() / 2], out[out.len() - 1])
}

/// Put in the page before the app starts: for every socket frame, the time
/// from its arrival until the app has handled it, rendered it into the DOM
/// and the browser has laid the page out again (read after the frame's task
/// and the microtasks it queued, where Dioxus renders, have all run).
const FRAME_TIMER: &str = r#"
window.__frames = [];
const timed = (h) => function (ev) {
  const t0 = performance.now();
  const r = h.call(this, ev);
  const ch = new MessageChannel();
  ch.port1.onmessage = () => {
    void document.body.offsetHeight;
    const head = typeof ev.data === 'string' ? ev.data.slice(0, 48) : '';
    const type = (head.match(/"type":"([a-z.]+)"/) || [])[1] || '';
    window.__frames.push([type, ev.data.length || 0, performance.now() - t0]);
  };
  ch.port2.postMessage(0);
  return r;
};
const d = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage');
Object.defineProperty(WebSocket.prototype, 'onmessage', {
  configurable: true,
  get() { return d.get.call(this); },
  set(h) { d.set.call(this, h ? timed(h) : h); },
});
const add = WebSocket.prototype.addEventListener;
WebSocket.prototype.addEventListener = function (t, h, o) {
  return add.call(this, t, t === 'message' && typeof h === 'function' ? timed(h) : h, o);
};
"#;

/// One timed frame: its type, its size in bytes and its render time.
#[derive(serde::Deserialize)]
struct Frame(String, usize, f64);

/// Sends `text` in a fresh window with the frame timer on and returns the
/// frames the window received until the reply was stored.
async fn timed_reply(driver: &confab_tests::browser::Driver, base: &str, text: &str) -> Vec<Frame> {
    let w = driver.window().await;
    w.on_new_document(FRAME_TIMER).await;
    w.goto(&format!("{base}/projects/default/sessions/{}", id()))
        .await;
    w.until(
        "the socket ready",
        "const t = document.querySelector('#composer-input'); return !!t && !t.disabled && !document.querySelector('#banner-connecting, #banner-reconnecting');",
    )
    .await;
    w.js("window.__frames.length = 0; return null;").await;
    // CONFAB_BENCH_PROFILE=<dir> keeps a CPU profile of each reply there,
    // to open in Chromium's DevTools (build the app with names to read it).
    let profile = std::env::var_os("CONFAB_BENCH_PROFILE");
    if profile.is_some() {
        w.cdp("Profiler.enable", serde_json::json!({})).await;
        w.cdp(
            "Profiler.setSamplingInterval",
            serde_json::json!({ "interval": 100 }),
        )
        .await;
        w.cdp("Profiler.start", serde_json::json!({})).await;
    }
    w.paste_and_send(text).await;
    // Polled slowly, so that the polling itself is not what is measured.
    for _ in 0..1200 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let done = w
            .js("return !!document.querySelector('article.msg-agent[data-status=stored]') && document.querySelector('#session-status')?.innerText !== 'running';")
            .await;
        if done == serde_json::Value::Bool(true) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Some(dir) = profile {
        let p = w.cdp("Profiler.stop", serde_json::json!({})).await;
        let name: String = text
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        let path = std::path::Path::new(&dir).join(format!("{name}-{}.cpuprofile", id()));
        std::fs::write(&path, p["profile"].to_string()).expect("writing the profile");
        eprintln!("bench: profile in {}", path.display());
    }
    let frames = w.js("return window.__frames;").await;
    w.close().await;
    serde_json::from_value(frames).expect("timed frames")
}

/// Median and slowest of some times in milliseconds.
fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    assert!(!v.is_empty(), "no frames were timed");
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let fast = start(0).await;
    let paced = start(1).await;
    eprintln!("bench: one 1,000-word reply");
    let (f0, w0) = one_reply(&fast, 1000).await;
    let (f1, w1) = one_reply(&paced, 1000).await;
    eprintln!("bench: latency over 200 turns");
    let (c50, c99) = create_latency(&fast, 200).await;
    let (s50, s99) = send_latency(&fast, 200).await;
    eprintln!("bench: fan-out to 100 sockets");
    let (frames, fps, mbps) = fanout(&fast, 100, 100_000).await;

    let mut rows = vec![
        (
            "Pushes to one subscriber, 1,000-word reply, demo delay 0",
            f0.to_string(),
            "≤ 40",
        ),
        (
            "Store writes, 1,000-word reply, demo delay 0",
            w0.to_string(),
            "≤ 10",
        ),
        (
            "Pushes to one subscriber, 1,000-word reply, 1 ms per word",
            f1.to_string(),
            "≤ 40",
        ),
        (
            "Store writes, 1,000-word reply, 1 ms per word",
            w1.to_string(),
            "≤ 10",
        ),
        (
            "First reply frame after `POST /api/sessions`, p50",
            ms(c50),
            "< 5 ms",
        ),
        (
            "First reply frame after `POST /api/sessions`, p99",
            ms(c99),
            "",
        ),
        (
            "First reply frame after `POST …/messages` (already subscribed), p50",
            ms(s50),
            "< 5 ms",
        ),
        (
            "First reply frame after `POST …/messages` (already subscribed), p99",
            ms(s99),
            "",
        ),
        (
            "Frames delivered to 100 sockets on one session (100,000-word reply)",
            frames.to_string(),
            "",
        ),
        (
            "Frames per second to those 100 sockets",
            format!("{fps:.0}"),
            "",
        ),
        (
            "Reply text delivered to those 100 sockets",
            format!("{mbps:.1} MB/s"),
            "",
        ),
    ];
    eprintln!("bench: the web app");
    let web = start_with(0, Some(confab_tests::harness::web_dist())).await;
    let (wasm, js, highlighter) = bundle_gzipped();
    let (i50, imax) = time_to_interactive(&web, 10).await;
    eprintln!("bench: rendering a 200 KB reply as it streams");
    let paced_web = start_with(120, Some(confab_tests::harness::web_dist())).await;
    let driver = confab_tests::browser::Driver::start().await;
    let frames = timed_reply(&driver, &paced_web.api.base, "/markdown 200").await;
    let deltas: Vec<&Frame> = frames.iter().filter(|f| f.0 == "message.delta").collect();
    let (d50, dmax) = median_max(deltas.iter().map(|f| f.2).collect());
    let slowest_at = deltas.iter().position(|f| f.2 == dmax).unwrap_or(0) + 1;
    let (_, dmax_later) = median_max(deltas.iter().skip(1).map(|f| f.2).collect());
    let (size50, _) = median_max(deltas.iter().map(|f| f.1 as f64).collect());
    let stored = frames
        .iter()
        .filter(|f| f.0 == "message.created" || f.0 == "frame.part")
        .map(|f| f.2)
        .fold(0.0, f64::max);
    let mut evil_max = Vec::new();
    for evil in [format!("a {}", "* ".repeat(16000)), "[".repeat(32000)] {
        let frames = timed_reply(&driver, &web.api.base, &evil).await;
        evil_max.push(median_max(frames.iter().map(|f| f.2).collect()).1);
    }
    let kib = |b: u64| b as f64 / 1024.0;
    rows.extend([
        (
            "Web app download, gzipped (wasm + JS)",
            format!(
                "{:.1} KiB ({:.1} + {:.1})",
                kib(wasm + js),
                kib(wasm),
                kib(js)
            ),
            "< 400 KiB",
        ),
        (
            "Code highlighter, gzipped, loaded when a code block first appears",
            format!("{:.1} KiB", kib(highlighter)),
            "",
        ),
        (
            "Navigation to an interactive session page (headless Chromium), p50 of 10",
            ms(i50),
            "",
        ),
        (
            "Navigation to an interactive session page (headless Chromium), slowest of 10",
            ms(imax),
            "",
        ),
        (
            "Render per delta of a 200 KB Markdown reply, median",
            format!(
                "{d50:.2} ms ({} deltas, median {:.1} KB)",
                deltas.len(),
                size50 / 1000.0
            ),
            "< 8 ms",
        ),
        (
            "Render per delta of a 200 KB Markdown reply, slowest",
            format!("{dmax:.2} ms (delta {slowest_at})"),
            "< 8 ms",
        ),
        (
            "Render per delta of a 200 KB Markdown reply, slowest after the first",
            format!("{dmax_later:.2} ms"),
            "< 8 ms",
        ),
        (
            "The same reply's stored message (in 32 KiB parts) replacing the stream, slowest part",
            format!("{stored:.2} ms"),
            "",
        ),
        (
            "Slowest frame of the reply to `a * * * …` (16,000 stars)",
            format!("{:.2} ms", evil_max[0]),
            "< 50 ms",
        ),
        (
            "Slowest frame of the reply to `[[[…` (32,000 brackets)",
            format!("{:.2} ms", evil_max[1]),
            "< 50 ms",
        ),
    ]);
    let mut table = String::from("| measure | result | target |\n|---|---|---|\n");
    for (what, value, target) in rows {
        table.push_str(&format!("| {what} | {value} | {target} |\n"));
    }
    println!("\n{table}");
    let section = format!(
        "<!-- bench:gateway:start -->\n## Local gateway\n\nLast run: `cargo xtask bench` on {} cores, {}.\n\n{table}\n<!-- bench:gateway:end -->",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        rustc_version(),
    );
    write_doc(&section);
}

fn rustc_version() -> String {
    std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "rustc".into())
}

/// Replaces the gateway section of docs/benchmarks.md, keeping the rest.
fn write_doc(section: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let (start, end) = ("<!-- bench:gateway:start -->", "<!-- bench:gateway:end -->");
    let new = match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if a < b => format!("{}{section}{}", &old[..a], &old[b + end.len()..]),
        _ if old.is_empty() => format!("# Benchmarks\n\n{section}\n"),
        _ => format!("{old}\n{section}\n"),
    };
    std::fs::write(&path, new).expect("writing docs/benchmarks.md");
    eprintln!("bench: wrote {}", path.display());
}
