//! The web app in real headless Chromium against a `confab` gateway serving
//! the built app. Each test saves screenshots under `target/screenshots/`.

use confab_tests::browser::{Driver, Window};
use confab_tests::harness::{Gateway, id};
use std::time::Duration;

fn session_path_id(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').collect();
    assert_eq!(parts.len(), 5, "{path}");
    assert_eq!((parts[1], parts[3]), ("projects", "sessions"), "{path}");
    parts[4].to_string()
}

/// Text of the last stored agent reply.
const LAST_REPLY: &str = "const m = [...document.querySelectorAll('article.msg-agent[data-status=stored]')]; return m.length ? m[m.length-1].querySelector('.msg-body').innerText : null;";

async fn open(w: &Window, gw: &Gateway, path: &str) {
    w.goto(&format!("{}{path}", gw.base)).await;
    w.until(
        "the app",
        "return !!document.querySelector('#composer-input')",
    )
    .await;
}

/// Two windows on fresh sessions, both with their sockets ready.
async fn two_windows(driver: &Driver, gw: &Gateway) -> (Window, Window) {
    let a = driver.window().await;
    let b = driver.window().await;
    open(&a, gw, "/").await;
    open(&b, gw, "/").await;
    wait_ready(&a).await;
    wait_ready(&b).await;
    (a, b)
}

async fn wait_ready(w: &Window) {
    w.until("the socket ready", "return !document.querySelector('#banner-connecting, #banner-reconnecting, #banner-disconnected');").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_creates_the_session_and_streams_the_reply() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "10")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    let path = w.path().await;
    let sid = session_path_id(&path);
    assert_eq!(
        gw.api(None).session(&sid).await.status,
        404,
        "nothing is stored before the first message"
    );
    w.js("window.__sameDocument = true; return null;").await;

    w.send_message("/words 60").await;
    w.until("my message at once", "return [...document.querySelectorAll('article.msg-user')].some(a => a.innerText.includes('/words 60'))").await;
    w.until(
        "the reply streaming",
        "return !!document.querySelector('article.msg-agent[data-status=live]')",
    )
    .await;
    let _ = w.screenshot("1-streaming").await;
    w.until(
        "the stored reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    let reply = w.js(LAST_REPLY).await;
    assert_eq!(reply.as_str().unwrap().split_whitespace().count(), 60);
    assert_eq!(w.path().await, path, "the URL keeps the id");
    assert_eq!(
        w.js("return window.__sameDocument === true").await,
        true,
        "no reload"
    );
    let stored = gw.api(None).all_messages(&sid).await;
    assert_eq!(stored[1].plain_text(), reply.as_str().unwrap().trim());
    w.until(
        "the list shows it",
        &format!("return !!document.querySelector('[data-session-id=\"{sid}\"]')"),
    )
    .await;
    let _ = w.screenshot("1-first-message").await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_window_sees_the_session_appear_run_and_go_idle() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "10")]).await;
    let driver = Driver::start().await;
    let (a, b) = two_windows(&driver, &gw).await;
    let sid = session_path_id(&a.path().await);
    a.send_message("/words 300").await;
    let item = format!("document.querySelector('[data-session-id=\"{sid}\"] [data-badge]')");
    b.until(
        "the new session, running",
        &format!("const e = {item}; return !!e && e.dataset.badge === 'running'"),
    )
    .await;
    let _ = b.screenshot("2-other-window-running").await;
    b.until(
        "the session done",
        &format!("const e = {item}; return !!e && e.dataset.badge === 'done'"),
    )
    .await;
    let _ = b.screenshot("2-other-window-idle").await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_a_long_reply_and_both_windows_show_it() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "5")]).await;
    let driver = Driver::start().await;
    let (a, b) = two_windows(&driver, &gw).await;
    let sid = session_path_id(&a.path().await);
    a.send_message("/words 100000").await;
    a.until("some of the reply", "const l = document.querySelector('article.msg-agent[data-status=live]'); return !!l && l.innerText.length > 200").await;
    a.click("#stop-button").await;
    a.until("the stopped reply", "return !!document.querySelector('article.msg-agent[data-status=stored]') && !document.querySelector('#stop-button')").await;
    a.until("the status stopped", "const s = document.querySelector('#session-status'); return !!s && s.innerText === 'stopped'").await;
    let item = format!("document.querySelector('[data-session-id=\"{sid}\"] [data-badge]')");
    b.until(
        "idle in the other window",
        &format!("const e = {item}; return !!e && e.dataset.badge === 'stopped'"),
    )
    .await;
    let stored = gw.api(None).all_messages(&sid).await;
    assert_eq!(
        stored[1].status,
        confab_protocol::model::MessageStatus::Stopped
    );
    let _ = a.screenshot("3-stopped").await;
    let _ = b.screenshot("3-stopped-other-window").await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_reply_brings_back_the_history_and_the_rest_of_the_reply() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "2")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    let path = w.path().await;
    let sid = session_path_id(&path);
    w.send_message("/words 1500").await;
    w.until("some of the reply", "const l = document.querySelector('article.msg-agent[data-status=live]'); return !!l && l.innerText.length > 300").await;
    w.client.refresh().await.expect("reload");
    w.until("the history after the reload", "return [...document.querySelectorAll('article.msg-user')].some(a => a.innerText.includes('/words 1500'))").await;
    let _ = w.screenshot("4-after-reload").await;
    w.until(
        "the rest of the reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    let shown = w.js(LAST_REPLY).await;
    let stored = gw.api(None).all_messages(&sid).await;
    assert_eq!(shown.as_str().unwrap().trim(), stored[1].plain_text());
    assert_eq!(stored[1].plain_text().split_whitespace().count(), 1500);
    let _ = w.screenshot("4-reload-complete").await;
    w.close().await;
}

/// A stored reply far over a frame's 32 KiB reaches the page whole: its
/// `message.created` comes in `frame.part`s, which the app joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_larger_than_a_frame_is_shown_whole() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    let sid = session_path_id(&w.path().await);
    w.send_message("/words 12000").await;
    w.until(
        "the stored reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    let stored = gw.api(None).all_messages(&sid).await;
    assert!(stored[1].plain_text().len() > 64 * 1024);
    let shown = w.js(LAST_REPLY).await;
    assert_eq!(shown.as_str().unwrap().trim(), stored[1].plain_text());
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_reply_keeps_its_elements_when_it_is_stored() {
    // Ten 2 KiB pieces, 300 ms apart.
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "300")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    let sid = session_path_id(&w.path().await);
    w.send_message("/markdown 20").await;
    // The first heading, while the reply is still being written.
    w.until(
        "a heading in the reply being written",
        "window.__first = document.querySelector('article.msg-agent[data-status=live] .md h4'); return !!window.__first;",
    )
    .await;
    w.until(
        "the stored reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    // The same element, not a copy drawn again: what the reader selected
    // or scrolled to stays put.
    assert_eq!(
        w.js("return window.__first.isConnected && !!window.__first.closest('article.msg-agent[data-status=stored]');").await,
        true,
        "the reply's first heading was drawn again when the reply was stored"
    );
    assert_eq!(
        w.js("return document.querySelectorAll('article.msg-agent').length")
            .await,
        1
    );
    let stored = gw.api(None).all_messages(&sid).await;
    assert_eq!(stored[1].plain_text().len(), 20 * 1024);
    assert_eq!(
        w.js("return document.querySelectorAll('article.msg-agent .md h4').length")
            .await,
        serde_json::json!(stored[1].plain_text().matches("\n## Part").count() + 1),
        "every part's heading is shown"
    );
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_forward_and_reload_follow_the_address() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    let first = w.path().await;
    session_path_id(&first);
    w.send_message("the first session").await;
    w.until(
        "the first reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    w.click("#new-session").await;
    w.until(
        "a new address",
        &format!("return location.pathname !== {first:?} && !!document.querySelector('#composer-input') && !document.querySelector('article.msg')"),
    )
    .await;
    let second = w.path().await;
    session_path_id(&second);
    w.client.back().await.expect("back");
    w.until(
        "the first session again",
        &format!("return location.pathname === {first:?} && document.querySelector('article.msg-user')?.innerText.includes('the first session')"),
    )
    .await;
    w.client.forward().await.expect("forward");
    w.until(
        "the second session again",
        &format!(
            "return location.pathname === {second:?} && !document.querySelector('article.msg')"
        ),
    )
    .await;
    w.client.back().await.expect("back");
    w.client.refresh().await.expect("reload");
    w.until(
        "the first session after a reload",
        &format!("return location.pathname === {first:?} && !!document.querySelector('article.msg-agent[data-status=stored]')"),
    )
    .await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_shows_in_every_window_and_one_answer_resolves_it_everywhere() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let driver = Driver::start().await;
    let (a, b) = two_windows(&driver, &gw).await;
    a.send_message("/approve").await;
    let card = "document.querySelector('.request-card[data-kind=tool]')";
    a.until("the approval card", &format!("return !!{card}"))
        .await;
    let path = a.path().await;
    open(&b, &gw, &path).await;
    b.until(
        "the approval card in the other window",
        &format!("return !!{card}"),
    )
    .await;
    assert_eq!(
        b.js(&format!(
            "return {card}.querySelector('.request-title').innerText"
        ))
        .await,
        "Allow demo_tool?"
    );
    for w in [&a, &b] {
        w.until(
            "a title that counts the session waiting",
            "return document.title.startsWith('(1) ')",
        )
        .await;
    }
    assert_eq!(
        b.js("return document.querySelector('.sidebar .badge-waiting')?.innerText")
            .await,
        "needs you"
    );
    for w in [&a, &b] {
        w.until(
            "what the agent said before it asked",
            "return (document.querySelector('article.msg-agent[data-status=live]')?.innerText ?? '').includes('I would like to run demo_tool')",
        )
        .await;
    }
    let _ = a.screenshot("13-approval").await;
    b.click(".request-card .request-allow").await;
    for w in [&a, &b] {
        w.until(
            "the card gone and the reply carried on",
            &format!("return !{card} && (document.querySelector('article.msg-agent[data-status=stored]')?.innerText ?? '').includes('You allowed demo_tool')"),
        )
        .await;
        w.until(
            "a title without the count",
            "return !document.title.startsWith('(')",
        )
        .await;
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_while_the_agent_works_is_queued_in_every_window_and_then_runs() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let driver = Driver::start().await;
    let (a, b) = two_windows(&driver, &gw).await;
    a.send_message("/approve").await;
    let card = "document.querySelector('.request-card[data-kind=tool]')";
    a.until("the approval card", &format!("return !!{card}"))
        .await;
    let path = a.path().await;
    open(&b, &gw, &path).await;
    b.until("the approval card", &format!("return !!{card}"))
        .await;
    assert_eq!(
        a.js("return document.querySelector('#send-button').innerText")
            .await,
        "Queue"
    );
    // Typing on while the agent works: the messages wait, shown as queued
    // in both windows, not among the sent ones.
    a.send_message("and then tell me a joke").await;
    a.send_message("drop this one").await;
    let queued =
        "return [...document.querySelectorAll('#queue .queued p')].map(p => p.innerText).join('|')";
    for w in [&a, &b] {
        w.until(
            "both queued, in order",
            &format!("{queued} === 'and then tell me a joke|drop this one'"),
        )
        .await;
    }
    assert_eq!(
        a.js("return [...document.querySelectorAll('article.msg-user')].length")
            .await,
        1,
        "a queued message is not shown as sent"
    );
    let _ = a.screenshot("16-queued").await;
    // Cancel one in the other window: it goes from both.
    b.click("#queue .queued:nth-child(2) button:last-child")
        .await;
    for w in [&a, &b] {
        w.until(
            "one left",
            &format!("{queued} === 'and then tell me a joke'"),
        )
        .await;
    }
    // The turn ends; the queued message runs as a turn of its own.
    b.click(".request-card .request-allow").await;
    for w in [&a, &b] {
        w.until(
            "the queued message sent, answered, and the queue empty",
            "const u = [...document.querySelectorAll('article.msg-user')].map(m => m.innerText); \
             const r = document.querySelectorAll('article.msg-agent[data-status=stored]'); \
             return !document.querySelector('#queue') && u.length === 2 && u[1].includes('and then tell me a joke') \
               && r.length === 2 && document.querySelector('#session-status')?.innerText === 'done';",
        )
        .await;
    }
    assert_eq!(
        b.js("return document.querySelector('.sidebar .badge-done')?.innerText")
            .await,
        "done"
    );
    a.close().await;
    b.close().await;
}

/// Put in the page before the app starts: the browser's Notification API
/// as a recorder (a headless browser shows none), permission granted when
/// asked and kept, and a tab whose `document.hidden` the test sets.
const NOTIFICATIONS: &str = r#"
window.__notes = [];
window.__hidden = false;
window.__asked = 0;
Object.defineProperty(Document.prototype, 'hidden', { configurable: true, get() { return window.__hidden; } });
class RecordedNotification {
  constructor(title, options) { this.title = title; this.options = options || {}; this.onclick = null; window.__notes.push(this); }
  close() {}
  // Kept across page loads, as a browser keeps a site's permission.
  static get permission() { return localStorage.getItem('test.permission') || 'default'; }
  static requestPermission() { window.__asked += 1; localStorage.setItem('test.permission', 'granted'); return Promise.resolve('granted'); }
}
window.Notification = RecordedNotification;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_tell_a_hidden_tab_what_needs_the_person_and_open_the_session() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    w.on_new_document(NOTIFICATIONS).await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    // Off until the person turns them on; asked on their click.
    assert_eq!(w.js("return window.__asked").await, 0);
    w.click("#notify-toggle").await;
    w.until(
        "notifications on",
        "return document.querySelector('#notify-toggle').innerText === 'Notifications on' && window.__asked === 1",
    )
    .await;
    // A visible tab is not notified.
    w.send_message("hello").await;
    w.until(
        "the reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    assert_eq!(w.js("return window.__notes.length").await, 0);
    let first = w.path().await;

    // Hidden: a session that waits says so; its end too.
    w.click("#new-session").await;
    w.until(
        "a fresh session",
        &format!(
            "return location.pathname !== {first:?} && !document.querySelector('article.msg')"
        ),
    )
    .await;
    w.js("window.__hidden = true; return null;").await;
    w.send_message("/approve").await;
    w.until(
        "a notification that the session needs the person",
        "return window.__notes.some(n => n.title === 'Needs you: /approve')",
    )
    .await;
    let asking = w.path().await;
    w.click(".request-card .request-allow").await;
    w.until(
        "a notification that the session is done",
        "return window.__notes.some(n => n.title === 'Done: /approve' && n.options.body === 'The agent has finished.')",
    )
    .await;

    // Clicking a notification opens its session.
    w.goto(&format!("{}{first}", gw.base)).await;
    w.until(
        "the first session",
        &format!(
            "return location.pathname === {first:?} && !!document.querySelector('#composer-input')"
        ),
    )
    .await;
    w.js("window.__hidden = true; return null;").await;
    w.send_message("/approve").await;
    w.until(
        "a notification for the first session",
        "return window.__notes.some(n => n.title === 'Needs you: hello')",
    )
    .await;
    w.click("#new-session").await;
    w.until(
        "away from it",
        &format!("return location.pathname !== {first:?}"),
    )
    .await;
    w.js(
        "window.__notes.filter(n => n.title === 'Needs you: hello').pop().onclick(); return null;",
    )
    .await;
    w.until(
        "the session the notification named",
        &format!("return location.pathname === {first:?}"),
    )
    .await;
    assert_ne!(asking, first);
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_is_answered_by_choosing_an_option() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    w.send_message("/ask").await;
    w.until(
        "the question",
        "return !!document.querySelector('.request-card[data-kind=question]')",
    )
    .await;
    assert_eq!(
        w.js("return document.querySelector('.request-card .request-allow').disabled")
            .await,
        true,
        "nothing chosen yet"
    );
    w.click(".request-card input[value=no]").await;
    w.until(
        "Answer enabled once every question has a choice",
        "return !document.querySelector('.request-card .request-allow').disabled",
    )
    .await;
    w.click(".request-card .request-allow").await;
    w.until(
        "the answer in the reply",
        "return (document.querySelector('article.msg-agent[data-status=stored]')?.innerText ?? '').includes('You answered: no.')",
    )
    .await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restart_shows_reconnecting_then_recovers() {
    let mut gw = Gateway::start_with_web(&[]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    let sid = session_path_id(&w.path().await);
    w.send_message("hello").await;
    w.until(
        "the first reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    gw.kill().await;
    w.until(
        "the reconnecting banner",
        "return !!document.querySelector('#banner-reconnecting')",
    )
    .await;
    let _ = w.screenshot("5-reconnecting").await;
    gw.restart().await;
    wait_ready(&w).await;
    w.send_message("hello again").await;
    w.until(
        "the second reply",
        "return document.querySelectorAll('article.msg-agent[data-status=stored]').length === 2",
    )
    .await;
    assert_eq!(gw.api(None).all_messages(&sid).await.len(), 4);
    let _ = w.screenshot("5-recovered").await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_in_a_reply_is_shown_as_text_and_never_runs() {
    let gw = Gateway::start_with_web(&[]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    w.js(
        "window.__alerted = false; window.alert = () => { window.__alerted = true; }; return null;",
    )
    .await;
    let evil = "<img src=x onerror=alert(1)> and <script>alert(2)</script>";
    w.send_message(evil).await;
    w.until(
        "the reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    let reply = w.js(LAST_REPLY).await;
    assert!(
        reply
            .as_str()
            .unwrap()
            .contains("<img src=x onerror=alert(1)>"),
        "{reply}"
    );
    assert!(
        reply
            .as_str()
            .unwrap()
            .contains("<script>alert(2)</script>"),
        "{reply}"
    );
    assert_eq!(
        w.js("return document.querySelectorAll('.messages img, .messages script').length")
            .await,
        0
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.js("return window.__alerted").await, false);
    let _ = w.screenshot("6-html-as-text").await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_session_url_opens_ready_for_a_first_message() {
    let gw = Gateway::start_with_web(&[]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    let sid = id();
    open(&w, &gw, &format!("/projects/default/sessions/{sid}")).await;
    w.until("a fresh session", "const p = document.querySelector('.session-page'); return !!p && p.dataset.phase === 'not-created'").await;
    assert_eq!(
        w.js("return document.querySelector('#composer-input').disabled")
            .await,
        false
    );
    let _ = w.screenshot("7-unknown-url").await;
    // The app offers only the permission modes this server allows (its
    // default ceiling: `default`).
    w.until(
        "the server's modes",
        "const o = [...document.querySelectorAll('#default-mode option')].map(o => o.value); return o.length === 2 && o.includes('default') && o.includes('plan')",
    )
    .await;
    assert_eq!(
        w.js("return [...document.querySelectorAll('#session-mode option')].map(o => o.value).sort().join(',')")
            .await,
        "default,plan"
    );
    w.send_message("first words").await;
    w.until(
        "the reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    assert_eq!(
        gw.api(None).session(&sid).await.status,
        200,
        "the session was created with the id in the URL"
    );
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_first_message_comes_back_and_the_retry_creates_the_session() {
    let gw = Gateway::start_with_web(&[]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    let sid = session_path_id(&w.path().await);
    // A first message over the 32 KiB limit, typed (pasted) into the box.
    w.paste_and_send(&"x".repeat(33000)).await;
    w.until("the refusal shown", "return !!document.querySelector('.banner-bad') && document.querySelector('.banner-bad').innerText.includes('limit')").await;
    w.until(
        "the text given back",
        "return document.querySelector('#composer-input').value.length === 33000",
    )
    .await;
    assert_eq!(
        gw.api(None).session(&sid).await.status,
        404,
        "nothing was stored"
    );
    let _ = w.screenshot("8-refused-first-message").await;
    // The user shortens it and sends again: the session is created.
    w.paste_and_send(&"x".repeat(100)).await;
    w.until(
        "the reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    assert_eq!(
        gw.api(None).session(&sid).await.status,
        200,
        "created with the id in the URL"
    );
    assert_eq!(
        w.js("return document.querySelectorAll('article.msg-user').length")
            .await,
        1
    );
    w.close().await;
}

/// Seconds since the epoch.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// How many socket tickets the page has asked for.
const TICKETS: &str = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/api/socket-ticket')).length";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_whose_token_expires_renews_without_a_banner_or_a_lost_frame() {
    use confab_tests::harness::{SECRET, token, token_expiring};
    let gw = Gateway::start_with_web(&[
        ("CONFAB_AUTH", "jwt"),
        ("CONFAB_JWT_SECRET", SECRET),
        ("CONFAB_DEMO_DELAY_MS", "20"),
    ])
    .await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    // A token with 9 s left (it is checked with 30 s of leeway).
    let short = token_expiring("erin", unix_now() - 21);
    w.goto(&format!("{}/", gw.base)).await;
    w.js(&format!(
        "localStorage.setItem('confab.token', '{short}'); return null;"
    ))
    .await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    w.js("window.__banners = 0; new MutationObserver(() => { if (document.querySelector('#banner-reconnecting, #banner-signed-out, #banner-disconnected, #banner-connecting')) window.__banners++; }).observe(document.body, {subtree: true, childList: true, attributes: true}); return null;").await;
    // The person's token is renewed before the socket's ends (as a sign-in
    // would); the socket learns of it only when its own token expires.
    let long = token("erin");
    w.js(&format!(
        "localStorage.setItem('confab.token', '{long}'); return null;"
    ))
    .await;
    w.send_message("/words 600").await;
    w.until(
        "the reply streaming",
        "return !!document.querySelector('article.msg-agent[data-status=live]')",
    )
    .await;
    // The socket's token expires while the reply streams: a second ticket.
    for _ in 0..30 {
        if w.js(TICKETS).await.as_u64() >= Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        w.js(TICKETS).await.as_u64(),
        Some(2),
        "the socket renewed once"
    );
    w.until(
        "the stored reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored]')",
    )
    .await;
    let reply = w.js(LAST_REPLY).await;
    assert_eq!(
        reply.as_str().unwrap().split_whitespace().count(),
        600,
        "the reply is whole"
    );
    assert_eq!(
        w.js("return window.__banners").await.as_u64(),
        Some(0),
        "no banner"
    );
    let _ = w.screenshot("9-renewed").await;

    // A token the server refuses: one banner that says so, and no retrying
    // until the person asks.
    let gone = token_expiring("erin", unix_now() - 120);
    w.js(&format!(
        "localStorage.setItem('confab.token', '{gone}'); return null;"
    ))
    .await;
    open(&w, &gw, "/").await;
    w.until(
        "the signed-out banner",
        "return !!document.querySelector('#banner-signed-out')",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(w.js(TICKETS).await.as_u64(), Some(1), "no retry storm");
    let _ = w.screenshot("9-signed-out").await;
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_past_the_owners_limit_says_why_and_gives_the_text_back() {
    let gw = Gateway::start_with_web(&[("CONFAB_SEND_RATE", "1")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    let sid = session_path_id(&w.path().await);
    // A creation is not a send; the next message is the one send allowed.
    confab_tests::harness::within_one_minute(Duration::from_secs(20)).await;
    w.send_message("hello").await;
    w.until(
        "the first reply",
        "return document.querySelectorAll('article.msg-agent[data-status=stored]').length === 1",
    )
    .await;
    w.send_message("second").await;
    w.until(
        "the second reply",
        "return document.querySelectorAll('article.msg-agent[data-status=stored]').length === 2",
    )
    .await;
    w.send_message("third").await;
    w.until(
        "the refusal, saying why",
        "const b = document.querySelector('.banner-bad'); return !!b && b.innerText.includes('too many messages') && b.innerText.includes('try again in');",
    )
    .await;
    w.until(
        "the text given back",
        "return document.querySelector('#composer-input').value === 'third'",
    )
    .await;
    let _ = w.screenshot("10-send-limit").await;
    let users = gw
        .api(None)
        .all_messages(&sid)
        .await
        .into_iter()
        .filter(|m| m.role == confab_protocol::model::Role::User)
        .count();
    assert_eq!(users, 2, "the refused message was not stored");
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markdown_links_tables_and_task_lists_render_and_pathological_input_does_not_freeze() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    // The demo agent quotes the message back, so the reply renders it too.
    let text = "See [Rust](https://en.wikipedia.org/wiki/Rust_(programming_language)) and www.rust-lang.org.\n\n| a | b |\n|---|:-:|\n| `x` | ~~y~~ |\n\n- [x] done\n- [ ] to do";
    w.paste_and_send(text).await;
    let reply = "document.querySelector('article.msg-agent[data-status=stored] .msg-body')";
    // Blocks out of view are not laid out (`content-visibility: auto`), and
    // one just added is laid out at the next frame: until then its
    // `innerText` is empty.
    w.until(
        "the reply on screen",
        &format!("return !!{reply} && {reply}.innerText.includes('www.rust-lang.org')"),
    )
    .await;
    assert_eq!(
        w.js(&format!("return {reply}.querySelector('a[href=\"https://en.wikipedia.org/wiki/Rust_(programming_language)\"]')?.innerText")).await,
        "Rust",
        "a link whose target has parentheses is whole"
    );
    assert_eq!(
        w.js(&format!(
            "return {reply}.querySelector('a[href=\"http://www.rust-lang.org\"]')?.innerText"
        ))
        .await,
        "www.rust-lang.org",
        "a bare URL is a link"
    );
    assert_eq!(
        w.js(&format!(
            "return {reply}.querySelectorAll('table th, table td').length"
        ))
        .await,
        4
    );
    assert_eq!(
        w.js(&format!("return [...{reply}.querySelectorAll('input[type=checkbox]')].map(c => c.checked).join(',')")).await,
        "true,false"
    );
    let _ = w.screenshot("11-markdown").await;
    // Inputs that were quadratic: the tab keeps working and shows them.
    for evil in [format!("a {}", "* ".repeat(16000)), "[".repeat(32000)] {
        let before = w
            .js("return document.querySelectorAll('article.msg-agent[data-status=stored]').length")
            .await
            .as_u64()
            .unwrap();
        w.paste_and_send(&evil).await;
        w.until(
            "the reply to a pathological input",
            &format!("return document.querySelectorAll('article.msg-agent[data-status=stored]').length === {}", before + 1),
        )
        .await;
    }
    w.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_is_highlighted_once_the_highlighter_loads_and_copy_copies_it() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    let loaded = "return performance.getEntriesByType('resource').filter(e => e.name.includes('/hl-11.11.1/highlight.min.js')).length";
    assert_eq!(w.js(loaded).await, 0, "no highlighter before a code block");
    let code = "fn main() {\n    let greeting = \"hi\"; // say it\n}\n";
    let text = format!("Here:\n\n```rust\n{code}```");
    w.paste_and_send(&text).await;
    let block = "document.querySelector('article.msg-agent[data-status=stored] .code')";
    w.until(
        "the code highlighted",
        &format!("const b = {block}; return !!b && [...b.querySelectorAll('.hljs-keyword')].map(k => k.innerText).join(' ') === 'fn let'"),
    )
    .await;
    assert_eq!(
        w.js(&format!(
            "return {block}.querySelector('.code-lang').innerText"
        ))
        .await,
        "rust"
    );
    assert_eq!(
        w.js(&format!(
            "return {block}.querySelector('.hljs-string').innerText"
        ))
        .await,
        "\"hi\""
    );
    assert_eq!(
        w.js(&format!("return {block}.querySelector('pre').innerText"))
            .await,
        code,
        "the code reads as it was written"
    );
    assert_eq!(w.js(loaded).await, 1, "the highlighter loaded once");
    // The languages agents write most are known.
    assert_eq!(
        w.js("return ['rust','python','typescript','javascript','go','java','c','cpp','csharp','bash','shell','sql','json','yaml','toml','html','css','markdown','diff','dockerfile','ruby','kotlin','swift'].filter(l => !hljs.getLanguage(l)).join(',')").await,
        ""
    );
    let _ = w.screenshot("12-code").await;
    // Copy puts the code, as written, on the clipboard.
    w.js("window.__copied = null; navigator.clipboard.writeText = t => { window.__copied = t; return Promise.resolve(); }; return null;").await;
    w.js(&format!(
        "{block}.querySelector('.code-copy').click(); return null;"
    ))
    .await;
    w.until("copied", "return window.__copied !== null").await;
    assert_eq!(w.js("return window.__copied").await, code);
    w.until(
        "the button says so",
        &format!("return {block}.querySelector('.code-copy').innerText === 'Copied'"),
    )
    .await;
    w.close().await;
}

/// A gateway serving the web app with the Claude Code agent, whose
/// stand-in `claude` replays fixtures of its stream-json.
async fn claude_web_gateway() -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let log = dir.path().join("log");
    std::fs::create_dir_all(&root).unwrap();
    let fake = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/claude/fake-claude");
    let gw = Gateway::start_with_web(&[
        ("CONFAB_AGENT", "claude-code"),
        ("CONFAB_PROJECTS_ROOT", root.to_str().unwrap()),
        ("CONFAB_CLAUDE_BIN", fake.to_str().unwrap()),
        ("FAKE_CLAUDE_LOG", log.to_str().unwrap()),
        ("CONFAB_CLAUDE_ENV", "FAKE_CLAUDE_LOG"),
    ])
    .await;
    (gw, dir)
}

/// The README's screenshot (`target/screenshots/readme.png`): a reply with
/// an edit as a diff, a command with its output, highlighted code and a
/// table, all as a person sees them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coding_reply_reads_as_in_the_readme() {
    let (gw, _dir) = claude_web_gateway().await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    w.client.set_window_size(1280, 1100).await.unwrap();
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    w.send_message("Greet by name (readme-tour)").await;
    let reply = "document.querySelector('article.msg-agent[data-status=stored]')";
    w.until(
        "the reply, highlighted",
        &format!("const r = {reply}; return !!r && !!r.querySelector('.tool-card[data-tool=Edit] tr.add') && !!r.querySelector('.code .hljs-keyword') && !!r.querySelector('table')"),
    )
    .await;
    assert_eq!(
        w.js(&format!(
            "return {reply}.querySelector('.tool-card[data-tool=Bash] .output').innerText"
        ))
        .await,
        "hello, Confab"
    );
    w.js("document.querySelector('.messages').scrollTop = 0; return null;")
        .await;
    let _ = w.screenshot("readme").await;
    w.close().await;
}

/// Claude Code's tools as cards, from a fixture of its stream-json (the
/// stand-in `claude` replays it): each call with its result, its status,
/// and its own renderer. A screenshot of each card is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_show_as_cards_with_their_results() {
    let (gw, _dir) = claude_web_gateway().await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    w.send_message("show me the tools-tour").await;
    w.until(
        "the reply with its cards",
        "const r = document.querySelector('article.msg-agent[data-status=stored]'); return !!r && r.innerText.includes('All done.')",
    )
    .await;
    let card = |tool: &str| {
        format!("document.querySelector('article.msg-agent .tool-card[data-tool=\"{tool}\"]')")
    };
    let js = |s: String| {
        let w = &w;
        async move { w.js(&s).await }
    };
    assert_eq!(
        js("return document.querySelectorAll('article.msg-agent .tool-card').length".into()).await,
        14,
        "each call and its result are one card"
    );
    // An edit is a diff with its path and line numbers.
    let edit = card("Edit");
    assert_eq!(
        js(format!(
            "return {edit}.querySelector('.tool-summary').innerText"
        ))
        .await,
        "/work/app/src/main.rs"
    );
    assert_eq!(
        js(format!(
            "return {edit}.querySelector('tr.del .txt').innerText"
        ))
        .await,
        "    println!(\"hello\");"
    );
    assert_eq!(
        js(format!(
            "return {edit}.querySelector('tr.del .ln').innerText"
        ))
        .await,
        "2"
    );
    assert_eq!(
        js(format!(
            "return [...{edit}.querySelectorAll('tr.add .txt')].map(t => t.innerText).join('|')"
        ))
        .await,
        "    let name = \"Confab\";|    println!(\"hello, {name}\");"
    );
    assert_eq!(js(format!("return {edit}.dataset.status")).await, "done");
    assert_eq!(
        js(format!(
            "return /^\\d+ ms$/.test({edit}.querySelector('.tool-took')?.innerText ?? '')"
        ))
        .await,
        true,
        "the card says how long the tool ran"
    );
    assert_eq!(
        js(format!(
            "return {}.querySelectorAll('.diff-hunk').length",
            card("MultiEdit")
        ))
        .await,
        2
    );
    assert_eq!(
        js(format!(
            "return {}.querySelectorAll('tr.add').length",
            card("Write")
        ))
        .await,
        3
    );
    // A command with its output, collapsed past a few lines, and its exit.
    let bash = "document.querySelectorAll('article.msg-agent .tool-card[data-tool=\"Bash\"]')";
    assert_eq!(
        js(format!(
            "return {bash}[0].querySelector('.command').innerText"
        ))
        .await,
        "$ cargo test"
    );
    assert_eq!(
        js(format!(
            "return {bash}[0].querySelector('.output').innerText.split('\\n').length"
        ))
        .await,
        12
    );
    assert_eq!(
        js(format!("return {bash}[0].querySelector('.exit').innerText")).await,
        "exit status: 0"
    );
    js(format!(
        "{bash}[0].querySelector('.show-all').click(); return null"
    ))
    .await;
    w.until(
        "the whole output",
        &format!("return {bash}[0].querySelector('.output').innerText.split('\\n').length === 23"),
    )
    .await;
    assert_eq!(
        js(format!("return {bash}[1].dataset.status")).await,
        "error"
    );
    assert_eq!(
        js(format!("return {bash}[1].querySelector('.exit').innerText")).await,
        "exit status: failed"
    );
    assert_eq!(
        js(format!("return {bash}[2].dataset.status")).await,
        "denied"
    );
    // Reads, searches, checklists, fetches, subagents, and the rest as JSON.
    assert_eq!(
        js(format!(
            "return {}.querySelector('.read').innerText",
            card("Read")
        ))
        .await,
        "/work/app/src/lib.rs · lines 10–29 · 20 lines read"
    );
    assert_eq!(
        js(format!(
            "return {}.querySelector('.search').innerText",
            card("Grep")
        ))
        .await,
        "fn main in src · 2 matches"
    );
    assert_eq!(
        js(format!(
            "return {}.querySelector('.search').innerText",
            card("Glob")
        ))
        .await,
        "**/*.rs · 3 matches"
    );
    let todo = card("TodoWrite");
    assert_eq!(
        js(format!(
            "return {todo}.querySelector('.tool-summary').innerText"
        ))
        .await,
        "1 of 3 done"
    );
    assert_eq!(
        js(format!(
            "return [...{todo}.querySelectorAll('input')].map(c => c.checked).join(',')"
        ))
        .await,
        "true,false,false"
    );
    assert_eq!(
        js(format!(
            "return {}.querySelector('a').href",
            card("WebFetch")
        ))
        .await,
        "https://doc.rust-lang.org/book/"
    );
    assert_eq!(
        js(format!(
            "return {}.querySelector('q').innerText",
            card("WebSearch")
        ))
        .await,
        "rust async traits"
    );
    assert_eq!(
        js(format!(
            "return {}.querySelector('.subagent-result strong').innerText",
            card("Task")
        ))
        .await,
        "Looks good."
    );
    assert!(
        js(format!(
            "return {}.querySelector('pre.json').innerText",
            card("mcp__db__query")
        ))
        .await
        .as_str()
        .unwrap()
        .contains("\"sql\": \"select 1\"")
    );
    // One screenshot per card.
    let cards = w
        .client
        .find_all(fantoccini::Locator::Css("article.msg-agent .tool-card"))
        .await
        .unwrap();
    for (i, c) in cards.iter().enumerate() {
        let name = c.attr("data-tool").await.unwrap().unwrap_or_default();
        w.js(&format!("document.querySelectorAll('article.msg-agent .tool-card')[{i}].scrollIntoView({{block: 'center'}}); return null")).await;
        if let Ok(png) = c.screenshot().await {
            let path =
                confab_tests::browser::screenshot_dir().join(format!("13-tool-{i:02}-{name}.png"));
            std::fs::write(path, png).unwrap();
        }
    }
    w.close().await;
}

/// On a phone's width the conversation gets the screen: the session list
/// is a drawer opened from the header, and going to a session closes it.
/// A wide table scrolls inside its block, not the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_session_list_is_a_drawer() {
    let gw = Gateway::start_with_web(&[("CONFAB_DEMO_DELAY_MS", "0")]).await;
    let driver = Driver::start().await;
    let w = driver.window().await;
    w.client.set_window_size(390, 844).await.unwrap();
    open(&w, &gw, "/").await;
    wait_ready(&w).await;
    let wide = format!(
        "Wide:\n\n| {} |\n|{}|\n| {} |",
        (0..12)
            .map(|i| format!("column {i}"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(12).trim_end_matches('|'),
        (0..12)
            .map(|i| format!("value {i}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    w.paste_and_send(&wide).await;
    w.until(
        "the reply",
        "return !!document.querySelector('article.msg-agent[data-status=stored] table')",
    )
    .await;
    let hidden =
        "const r = document.querySelector('.sidebar').getBoundingClientRect(); return r.right <= 0";
    assert_eq!(w.js(hidden).await, true, "the list is out of the way");
    assert_eq!(
        w.js("return document.querySelector('.messages').getBoundingClientRect().height > 0.55 * window.innerHeight").await,
        true,
        "the conversation gets the screen"
    );
    assert_eq!(
        w.js("return document.documentElement.scrollWidth <= window.innerWidth")
            .await,
        true,
        "nothing makes the page scroll sideways"
    );
    assert_eq!(
        w.js("const t = document.querySelector('article.msg-agent .table'); return t.scrollWidth > t.clientWidth").await,
        true,
        "the wide table scrolls inside its block"
    );
    let _ = w.screenshot("14-phone").await;
    w.click("#drawer-toggle").await;
    w.until(
        "the drawer open",
        "const r = document.querySelector('.sidebar').getBoundingClientRect(); return r.left >= 0 && r.width > 200",
    )
    .await;
    let _ = w.screenshot("14-phone-drawer").await;
    // Going to a session (a new one) closes it.
    w.click("#new-session").await;
    w.until("the drawer closed", hidden).await;
    w.close().await;
}

mod sign_in {
    use super::{LAST_REPLY, session_path_id, wait_ready};
    use confab_tests::browser::{Driver, Window};
    use confab_tests::harness::Gateway;
    use confab_tests::oidc::{ALICE, BOB, Options, Provider, User};
    use std::time::Duration;

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    }

    /// A provider and a gateway (serving the web app) that signs people in
    /// there.
    async fn start(access_ttl: u64, env: &[(&str, &str)]) -> (Provider, Gateway) {
        let port = free_port();
        let p = Provider::start(Options {
            access_ttl,
            redirect_uris: vec![format!("http://127.0.0.1:{port}/")],
            ..Options::default()
        })
        .await;
        let provider_env = p.gateway_env();
        let mut all: Vec<(&str, &str)> = provider_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(env);
        let gw = Gateway::start_with_web_on(&all, port).await;
        (p, gw)
    }

    /// From the app's sign-in page, through the provider's login page, back
    /// to the app signed in.
    async fn sign_in(w: &Window, user: &User) {
        w.until(
            "the sign-in page",
            "return !!document.querySelector('main.sign-in #sign-in')",
        )
        .await;
        w.click("main.sign-in #sign-in").await;
        w.until(
            "the provider's login page",
            "return !!document.querySelector('#login')",
        )
        .await;
        w.js(&format!(
            "document.querySelector('#login').value = {}; document.querySelector('#password').value = {}; document.querySelector('form').submit(); return null;",
            serde_json::to_string(user.login).unwrap(),
            serde_json::to_string(user.password).unwrap()
        ))
        .await;
        w.until(
            "the app, signed in",
            &format!(
                "return document.querySelector('#user-name')?.innerText === {}",
                serde_json::to_string(user.name).unwrap()
            ),
        )
        .await;
        wait_ready(w).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn people_sign_in_at_the_provider_and_each_sees_only_their_own_sessions() {
        let (p, gw) = start(300, &[("CONFAB_DEMO_DELAY_MS", "5")]).await;
        let driver = Driver::start().await;
        let a = driver.window().await;
        a.goto(&format!("{}/", gw.base)).await;
        let _ = a.screenshot("10-sign-in-page").await;
        sign_in(&a, &ALICE).await;
        assert!(
            a.js("return !!document.querySelector('#sign-out')").await == true,
            "a Sign out in the header"
        );
        a.send_message("/words 40").await;
        a.until(
            "the stored reply",
            "return !!document.querySelector('article.msg-agent[data-status=stored]')",
        )
        .await;
        assert_eq!(
            a.js(LAST_REPLY)
                .await
                .as_str()
                .unwrap()
                .split_whitespace()
                .count(),
            40
        );
        let alices = a.path().await;
        let sid = session_path_id(&alices);
        let _ = a.screenshot("10-signed-in").await;
        // No token in the address, nor kept where another page could read
        // it for long: the access token is in memory only.
        let url = a.js("return location.href").await;
        assert!(!url.as_str().unwrap().contains("code="), "{url}");
        assert_eq!(
            a.js("return Object.keys(localStorage).filter(k => localStorage.getItem(k).includes('.ey')).length")
                .await,
            0
        );

        // Bob, in another browser profile, sees none of it; a page asked
        // for while signed out is where sign-in comes back to.
        let b = driver.window().await;
        b.goto(&format!("{}{alices}", gw.base)).await;
        sign_in(&b, &BOB).await;
        assert_eq!(b.path().await, alices, "back to the page asked for");
        b.until(
            "Bob's empty list",
            "return document.querySelector('#session-list').innerText.includes('No sessions yet')",
        )
        .await;
        assert!(
            !b.js("return document.body.innerText")
                .await
                .as_str()
                .unwrap()
                .contains("/words 40"),
            "none of Alice's session"
        );
        let bob_token_list = gw
            .api(Some(
                &p.sign_in(&BOB, &format!("{}/", gw.base)).await.access,
            ))
            .get(confab_protocol::routes::SESSIONS)
            .await;
        assert!(!bob_token_list.text.contains(&sid));

        // Sign out ends the session at the provider too: the next sign-in
        // asks for the password again.
        a.click("#sign-out").await;
        a.until(
            "the sign-in page after signing out",
            "return !!document.querySelector('main.sign-in #sign-in')",
        )
        .await;
        let _ = a.screenshot("10-signed-out").await;
        a.click("main.sign-in #sign-in").await;
        a.until(
            "the provider's login page again",
            "return !!document.querySelector('#login')",
        )
        .await;
        a.close().await;
        b.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_that_expires_during_a_reply_is_refreshed_without_a_reconnect_or_a_lost_frame()
    {
        // Access tokens for 6 s, checked without leeway; a reply of ~16 s.
        let (_p, gw) = start(
            6,
            &[
                ("CONFAB_DEMO_DELAY_MS", "40"),
                ("CONFAB_OIDC_CLOCK_SKEW_SECS", "0"),
            ],
        )
        .await;
        let driver = Driver::start().await;
        let w = driver.window().await;
        w.on_new_document(
            "window.__sockets = 0; const Ws = window.WebSocket; window.WebSocket = function (u, p) { window.__sockets++; return new Ws(u, p); }; window.WebSocket.prototype = Ws.prototype;",
        )
        .await;
        w.goto(&format!("{}/", gw.base)).await;
        sign_in(&w, &ALICE).await;
        w.js("window.__banners = 0; new MutationObserver(() => { if (document.querySelector('#banner-reconnecting, #banner-signed-out, #banner-disconnected, #banner-connecting')) window.__banners++; }).observe(document.body, {subtree: true, childList: true, attributes: true}); return null;").await;
        w.send_message("/words 400").await;
        let mut stored = false;
        for _ in 0..120 {
            if w.js("return !!document.querySelector('article.msg-agent[data-status=stored]')")
                .await
                == true
            {
                stored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(stored, "the reply ended");
        assert_eq!(
            w.js(LAST_REPLY)
                .await
                .as_str()
                .unwrap()
                .split_whitespace()
                .count(),
            400,
            "the reply is whole"
        );
        assert_eq!(w.js("return window.__sockets").await, 1, "one socket");
        assert_eq!(w.js("return window.__banners").await, 0, "no banner");
        // The token signed in with is long gone; the API still answers.
        w.send_message("/words 3").await;
        w.until(
            "the second reply",
            "return document.querySelectorAll('article.msg-agent[data-status=stored]').length === 2",
        )
        .await;

        // A refresh the provider refuses: sent to sign in again (the
        // provider remembers the person, so straight back), and the half
        // written message is still there.
        w.until(
            "an enabled message box",
            "const t = document.querySelector('#composer-input'); return !!t && !t.disabled;",
        )
        .await;
        w.js("const t = document.querySelector('#composer-input'); t.value = 'half a thought'; t.dispatchEvent(new Event('input', { bubbles: true })); window.__before = true; sessionStorage.setItem('confab.refresh', 'not-a-refresh-token'); return null;").await;
        let path = w.path().await;
        for _ in 0..60 {
            if w.js("return window.__before !== true && !!document.querySelector('#user-name')")
                .await
                == true
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        w.until(
            "the draft kept",
            "return document.querySelector('#composer-input')?.value === 'half a thought'",
        )
        .await;
        assert_eq!(w.path().await, path, "back on the same session");
        w.close().await;
    }
}
