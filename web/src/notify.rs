//! Browser notifications: off until the person turns them on (asked on
//! their click, as browsers require); then, while this tab is hidden, a
//! session that starts waiting for the person or finishes a turn says so,
//! and clicking the notification opens the session here.

use crate::state::{AppState, storage};
use confab_protocol::ServerEvent;
use confab_protocol::model::{SessionStatus, SessionSummary, TurnOutcome};
use dioxus::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;
use web_sys::{Notification, NotificationOptions, NotificationPermission};

const KEY: &str = "confab.notify";

/// Whether this browser has notifications at all (some phones' do not:
/// touching the API there would throw).
pub fn supported() -> bool {
    web_sys::window()
        .is_some_and(|w| js_sys::Reflect::has(&w, &"Notification".into()).unwrap_or(false))
}

/// Whether notifications are on: asked for here and allowed by the browser.
pub fn enabled() -> bool {
    supported()
        && Notification::permission() == NotificationPermission::Granted
        && storage().and_then(|s| s.get_item(KEY).ok()?).as_deref() == Some("1")
}

/// Turns notifications on (asking the browser on this click when it has
/// not been asked) or off. Answers whether they are on afterwards.
pub async fn toggle(on: bool) -> Result<bool, &'static str> {
    let save = |v: &str| {
        if let Some(s) = storage() {
            let _ = s.set_item(KEY, v);
        }
    };
    if !on {
        save("0");
        return Ok(false);
    }
    if !supported() {
        return Err("This browser does not show notifications.");
    }
    let granted = match Notification::permission() {
        NotificationPermission::Granted => true,
        NotificationPermission::Denied => false,
        _ => match Notification::request_permission() {
            Ok(p) => {
                wasm_bindgen_futures::JsFuture::from(p)
                    .await
                    .ok()
                    .and_then(|v| v.as_string())
                    .as_deref()
                    == Some("granted")
            }
            Err(_) => false,
        },
    };
    if granted {
        save("1");
        Ok(true)
    } else {
        Err("Notifications are blocked for this site in the browser's settings.")
    }
}

/// What a change of a session's summary has to say to a person who is not
/// looking: it waits for them, or its turn ended.
fn news(before: Option<SessionStatus>, s: &SessionSummary) -> Option<(String, &'static str)> {
    let was_on = before.is_some_and(SessionStatus::is_active);
    match s.status {
        SessionStatus::Waiting if before != Some(SessionStatus::Waiting) => Some((
            format!("Needs you: {}", s.title),
            "The agent is waiting for your answer.",
        )),
        SessionStatus::Idle if was_on => {
            let body = match s.last_turn.as_ref().map(|t| t.outcome) {
                Some(TurnOutcome::Failed) => "The reply failed.",
                Some(TurnOutcome::Stopped) => "The reply was stopped.",
                Some(TurnOutcome::Interrupted) => "The reply was interrupted.",
                _ => "The agent has finished.",
            };
            Some((format!("Done: {}", s.title), body))
        }
        _ => None,
    }
}

/// Called with each event before it is applied, and the status the list
/// held for its session: shows a notification when there is news and this
/// tab is hidden.
pub fn on_event(app: AppState, event: &ServerEvent, before: Option<SessionStatus>) {
    let ServerEvent::SessionUpdated { session } = event else {
        return;
    };
    let hidden = web_sys::window()
        .and_then(|w| w.document())
        .is_some_and(|d| d.hidden());
    if !hidden || !enabled() {
        return;
    }
    let Some((title, body)) = news(before, session) else {
        return;
    };
    let opts = NotificationOptions::new();
    opts.set_body(body);
    // One notification per session: a newer one replaces the last.
    opts.set_tag(session.id.as_str());
    let Ok(n) = Notification::new_with_options(&title, &opts) else {
        return;
    };
    let (project_id, id) = (session.project_id.clone(), session.id.clone());
    let mut open = app.open;
    let click = Closure::<dyn FnMut()>::new(move || {
        if let Some(w) = web_sys::window() {
            let _ = w.focus();
        }
        open.set(Some((project_id.clone(), id.clone())));
    });
    n.set_onclick(Some(click.as_ref().unchecked_ref()));
    // Lives as long as the notification can be clicked.
    click.forget();
}
