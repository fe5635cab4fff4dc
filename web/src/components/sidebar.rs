//! The sidebar: New session, search, the session list grouped by project,
//! the default permission mode and the agent in use.

use super::session_item::SessionItem;
use crate::Route;
use crate::state::{AppState, save_default_mode, use_app};
use confab_protocol::client::CurrentSession;
use confab_protocol::model::PermissionMode;
use confab_protocol::{ProjectId, SessionId};
use dioxus::prelude::*;

/// Makes a session id here and opens it at once; nothing is stored until
/// the first message.
pub fn open_new_session(app: AppState, nav: dioxus::router::Navigator) {
    nav.push(new_session_route(app));
}

/// Prepares a fresh session and returns where it lives.
pub fn new_session_route(mut app: AppState) -> Route {
    let id = SessionId::from(uuid::Uuid::now_v7());
    let project = app
        .current
        .peek()
        .as_ref()
        .and_then(|c| c.summary().map(|s| s.project_id.clone()))
        .unwrap_or_else(ProjectId::default_project);
    app.current
        .set(Some(CurrentSession::new_unsaved(id.clone())));
    Route::Session {
        project_id: project,
        id,
    }
}

#[component]
pub fn Sidebar() -> Element {
    let mut app = use_app();
    let nav = use_navigator();
    let mut query = use_signal(String::new);
    // Ctrl/Cmd+Shift+O anywhere opens a new session.
    use_hook(move || {
        use wasm_bindgen::JsCast;
        let cb = wasm_bindgen::closure::Closure::<dyn FnMut(web_sys::KeyboardEvent)>::new(
            move |e: web_sys::KeyboardEvent| {
                if (e.ctrl_key() || e.meta_key())
                    && e.shift_key()
                    && e.key().eq_ignore_ascii_case("o")
                {
                    e.prevent_default();
                    open_new_session(app, nav);
                }
            },
        );
        if let Some(doc) = web_sys::window().and_then(|w| w.document()) {
            let _ = doc.add_event_listener_with_callback("keydown", cb.as_ref().unchecked_ref());
        }
        cb.forget();
    });
    let current_id = app
        .current
        .read()
        .as_ref()
        .map(|c| c.session_id().to_string());
    let q = query().trim().to_lowercase();
    let list = app.sessions.read();
    let groups: Vec<(ProjectId, Vec<confab_protocol::SessionSummary>)> = list
        .by_project()
        .into_iter()
        .map(|(p, v)| {
            let v: Vec<_> = v
                .into_iter()
                .filter(|s| {
                    q.is_empty()
                        || s.title.to_lowercase().contains(&q)
                        || s.first_message_preview.to_lowercase().contains(&q)
                })
                .cloned()
                .collect();
            (p, v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let total = list.len();
    drop(list);
    let agent = app
        .config
        .read()
        .as_ref()
        .map(|c| (c.agent.provider.clone(), c.agent.model.clone()));
    let mode = (app.default_mode)();
    let modes = app.allowed_modes();
    rsx! {
        aside { class: "sidebar", aria_label: "Sessions",
            div { class: "brand-row",
                div { class: "brand", "Confab" }
                if let Some(user) = (app.user)() {
                    span { class: "user", id: "user-name", title: "{user}", "{user}" }
                    button { class: "link", id: "sign-out", r#type: "button",
                        onclick: move |_| { spawn(crate::auth::sign_out()); }, "Sign out" }
                }
            }
            button { class: "new-session", id: "new-session", title: "New session (Ctrl+Shift+O)",
                onclick: move |_| open_new_session(app, nav), "+ New session" }
            input { class: "search", r#type: "search", aria_label: "Search sessions", placeholder: "Search sessions",
                value: "{query}", oninput: move |e| query.set(e.value()) }
            nav { class: "session-list", id: "session-list",
                if total == 0 {
                    p { class: "empty", "No sessions yet." }
                } else if groups.is_empty() {
                    p { class: "empty", "No session matches." }
                }
                for (project, sessions) in groups {
                    section { key: "{project}", class: "project",
                        h2 { class: "project-name", "{project}" }
                        ul {
                            for s in sessions {
                                SessionItem { key: "{s.id}", active: current_id.as_deref() == Some(s.id.as_str()), summary: s.clone() }
                            }
                        }
                    }
                }
            }
            footer { class: "sidebar-foot",
                label { r#for: "default-mode", "New sessions start in" }
                select { id: "default-mode", value: "{mode.as_str()}",
                    onchange: move |e| {
                        if let Some(m) = PermissionMode::ALL.into_iter().find(|m| m.as_str() == e.value()) {
                            app.default_mode.set(m);
                            save_default_mode(m);
                        }
                    },
                    for m in modes { option { key: "{m.as_str()}", value: "{m.as_str()}", "{m.as_str()}" } }
                }
                button { class: "link", id: "notify-toggle", r#type: "button",
                    title: "Tell me when a session needs me or finishes while this tab is in the background",
                    onclick: move |_| {
                        let on = !*app.notify.peek();
                        spawn(async move {
                            match crate::notify::toggle(on).await {
                                Ok(now) => app.notify.set(now),
                                Err(why) => app.notice.set(Some(why.to_string())),
                            }
                        });
                    },
                    if (app.notify)() { "Notifications on" } else { "Notify me" }
                }
                if let Some((provider, model)) = agent {
                    p { class: "agent", id: "agent-info",
                        if provider == "demo" { span { class: "demo-label", "Demo agent" } " · offline, for trying Confab" }
                        else { "{provider} · {model}" }
                    }
                }
            }
        }
    }
}
