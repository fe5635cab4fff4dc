//! One session in the sidebar: title, live status, rename and delete.

use crate::Route;
use crate::state::{SocketCmd, use_app};
use confab_protocol::model::{SessionStatus, SessionSummary, TurnOutcome};
use dioxus::prelude::*;

/// The badge text and class for a session's state.
pub fn badge(s: &SessionSummary) -> (&'static str, &'static str) {
    match (s.status, s.last_turn.as_ref().map(|t| t.outcome)) {
        (SessionStatus::Running, _) => ("running", "badge badge-running"),
        (SessionStatus::Waiting, _) => ("needs you", "badge badge-waiting"),
        (SessionStatus::Idle, Some(TurnOutcome::Failed)) => ("failed", "badge badge-failed"),
        (SessionStatus::Idle, Some(TurnOutcome::Stopped)) => ("stopped", "badge badge-stopped"),
        (SessionStatus::Idle, Some(TurnOutcome::Interrupted)) => {
            ("interrupted", "badge badge-failed")
        }
        (SessionStatus::Idle, Some(TurnOutcome::Completed)) => ("done", "badge badge-done"),
        (SessionStatus::Idle, None) => ("idle", "badge badge-idle"),
    }
}

#[component]
pub fn SessionItem(summary: SessionSummary, active: bool) -> Element {
    let app = use_app();
    let socket = use_coroutine_handle::<SocketCmd>();
    let nav = use_navigator();
    let mut renaming = use_signal(|| false);
    let mut name = use_signal(|| summary.title.clone());
    let (label, class) = badge(&summary);
    let id = summary.id.clone();
    let route = Route::Session {
        project_id: summary.project_id.clone(),
        id: id.clone(),
    };
    let save = {
        let id = id.clone();
        move || {
            let (id, title) = (id.clone(), name.peek().trim().to_string());
            renaming.set(false);
            if title.is_empty() {
                return;
            }
            app.rename(socket, id, title);
        }
    };
    let remove = {
        let id = id.clone();
        move |_| {
            let ok = web_sys::window()
                .and_then(|w| {
                    w.confirm_with_message("Delete this session and all its messages?")
                        .ok()
                })
                .unwrap_or(false);
            if !ok {
                return;
            }
            let id = id.clone();
            let on_screen = app
                .current
                .peek()
                .as_ref()
                .is_some_and(|c| *c.session_id() == id);
            app.delete_session(id, move || {
                if on_screen {
                    nav.push(Route::Home {});
                }
            });
        }
    };
    let title = summary.title.clone();
    let rename_id = format!("rename-{id}");
    use_effect({
        let rename_id = rename_id.clone();
        move || {
            if renaming() {
                crate::focus(&rename_id);
            }
        }
    });
    rsx! {
        li { class: if active { "session active" } else { "session" }, "data-session-id": "{id}",
            if renaming() {
                input {
                    id: "{rename_id}",
                    class: "rename",
                    aria_label: "Session title",
                    value: "{name}",
                    oninput: move |e| name.set(e.value()),
                    onkeydown: {
                        let mut save = save.clone();
                        move |e: KeyboardEvent| {
                            if e.key() == Key::Enter { save(); }
                            if e.key() == Key::Escape { renaming.set(false); }
                        }
                    },
                }
            } else {
                Link { to: route, class: "session-link",
                    span { class: "session-title", "{title}" }
                    span { class: "{class}", "data-badge": "{label}", "{label}" }
                }
                div { class: "session-actions",
                    button { class: "icon", title: "Rename", aria_label: "Rename {title}",
                        onclick: move |_| { name.set(title.clone()); renaming.set(true); }, "✎" }
                    button { class: "icon", title: "Delete", aria_label: "Delete session", onclick: remove, "🗑" }
                }
            }
        }
    }
}
