//! `/projects/{projectId}/sessions/{id}`: the history, the reply streaming
//! in, the composer and the session's controls.

use crate::components::composer::Composer;
use crate::components::message_view::MessageView;
use crate::components::request_card::RequestCard;
use crate::components::session_item::badge;
use crate::state::{SocketCmd, use_app};
use confab_protocol::client::Phase;
use confab_protocol::model::{Message, MessageStatus, PermissionMode, Role};
use confab_protocol::{ProjectId, SessionId};
use dioxus::prelude::*;

fn messages_el() -> Option<web_sys::Element> {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id("messages"))
}

fn messages_height() -> i32 {
    messages_el().map_or(0, |el| el.scroll_height())
}

fn scroll_to_bottom() {
    if let Some(el) = messages_el() {
        el.set_scroll_top(el.scroll_height());
    }
}

#[component]
pub fn Session(project_id: ReadSignal<ProjectId>, id: ReadSignal<SessionId>) -> Element {
    let mut app = use_app();
    let socket = use_coroutine_handle::<SocketCmd>();
    let restore = use_signal(|| None::<String>);
    let mut stick = use_signal(|| true);

    // A new id in the URL: load it (or open it fresh if the server does not know it).
    use_effect(move || {
        let id = id();
        stick.set(true);
        app.open_session(socket, id);
    });

    // Keep the newest text in view while the reader is at the bottom.
    use_effect(move || {
        let _ = app.current.read();
        if *stick.peek() {
            scroll_to_bottom();
        }
    });

    let mut send = move |typed: String| {
        stick.set(true);
        app.send_message(socket, id(), project_id(), typed, restore);
    };

    let stop = move |_| app.stop_turn(socket, id());

    // Older pages load when the reader scrolls to the top (or asks).
    let mut loading_older = use_signal(|| false);
    let mut load_older = move || {
        let sid = id();
        let has_older = app.current.peek().as_ref().is_some_and(|c| c.has_older());
        if !has_older || *loading_older.peek() {
            return;
        }
        loading_older.set(true);
        spawn(async move {
            let before = messages_height();
            if app.load_older(sid).await {
                // Keep the reader's place: what was on screen stays there.
                gloo_timers::future::TimeoutFuture::new(0).await;
                if let Some(el) = messages_el() {
                    el.set_scroll_top(el.scroll_top() + el.scroll_height() - before);
                }
            }
            loading_older.set(false);
        });
    };

    let set_mode = move |e: FormEvent| {
        let sid = id();
        let Some(m) = PermissionMode::ALL
            .into_iter()
            .find(|m| m.as_str() == e.value())
        else {
            return;
        };
        app.set_mode(socket, sid, m);
    };

    let current = app.current.read();
    let Some(c) = current
        .as_ref()
        .filter(|c| c.session_id() == id.read().as_str())
    else {
        return rsx! { div { class: "loading", role: "status", "Loading…" } };
    };
    let phase = c.phase();
    let summary = c.summary().cloned();
    let stored: Vec<Message> = c.stored().cloned().collect();
    let pending: Vec<Message> = c.pending().to_vec();
    let live = c.live().cloned();
    let requests = c.requests().to_vec();
    let queued = c.queued().to_vec();
    let has_older = c.has_older();
    drop(current);

    // The server's word: a running turn keeps its Stop button whatever else is shown.
    let running = summary.as_ref().is_some_and(|s| s.status.is_active());
    let title = summary
        .as_ref()
        .map_or_else(|| "New session".to_string(), |s| s.title.clone());
    let mode = summary
        .as_ref()
        .map(|s| s.permission_mode)
        .unwrap_or(*app.default_mode.read());
    // What this server allows, and the session's own mode if it is above
    // (set before the ceiling was lowered), so the select shows the truth.
    let mut modes = app.allowed_modes();
    if !modes.contains(&mode) {
        modes.push(mode);
    }
    let placeholder = if summary.is_none() {
        "Start a session: type your first message"
    } else {
        "Message the agent"
    };
    // For "Try again": the user message each reply answered.
    let asked: std::collections::HashMap<u64, String> = stored
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| (m.seq, m.plain_text()))
        .collect();

    use_effect(use_reactive((&title,), |(title,)| crate::set_title(&title)));
    use_drop(|| crate::set_title(""));
    let mut entries: Vec<Entry> = stored
        .iter()
        .map(|m| Entry {
            key: m.id.to_string(),
            role: m.role,
            content: m.content.clone(),
            status: m.status,
            error: m.error.clone(),
            live: false,
            pending: false,
            retry: (m.status == MessageStatus::Failed && !running)
                .then(|| asked.get(&(m.seq.saturating_sub(1))).cloned())
                .flatten(),
        })
        .collect();
    entries.extend(pending.iter().map(|m| Entry {
        key: m.id.to_string(),
        role: Role::User,
        content: m.content.clone(),
        status: m.status,
        error: None,
        live: false,
        pending: true,
        retry: None,
    }));
    entries.extend(live.map(|l| Entry {
        key: l.message_id.to_string(),
        role: Role::Assistant,
        content: l.content,
        status: MessageStatus::Complete,
        error: None,
        live: true,
        pending: false,
        retry: None,
    }));
    rsx! {
        section { class: "session-page", "data-phase": "{phase_name(&phase)}",
            header { class: "session-head",
                button { class: "drawer-toggle", id: "drawer-toggle", r#type: "button", aria_label: "Sessions",
                    onclick: move |_| app.drawer.toggle(), "☰" }
                h1 { id: "session-title", "{title}" }
                if let Some(s) = &summary {
                    {
                        let (label, class) = badge(s);
                        rsx! {
                            span { class: "{class}", id: "session-status", "{label}" }
                            span { class: "meta", id: "session-usage",
                                "{s.message_count} messages · {s.usage.input_tokens} in / {s.usage.output_tokens} out tokens"
                            }
                        }
                    }
                }
                div { class: "session-tools",
                    label { r#for: "session-mode", "Permissions" }
                    select { id: "session-mode", value: "{mode.as_str()}", disabled: summary.is_none(), onchange: set_mode,
                        for m in modes { option { key: "{m.as_str()}", value: "{m.as_str()}", "{m.as_str()}" } }
                    }
                    if summary.is_some() {
                        button { class: "link", onclick: move |_| app.export(id(), "md"), "Export .md" }
                        button { class: "link", onclick: move |_| app.export(id(), "json"), "Export .json" }
                    }
                }
            }
            if phase == Phase::Creating {
                div { class: "banner", id: "banner-creating", role: "status", "Creating session…" }
            }
            if let Phase::Error(e) = &phase {
                div { class: "banner banner-bad", role: "alert", "{e}" }
            }
            if phase == Phase::Deleted {
                div { class: "banner banner-bad", role: "alert", "This session was deleted." }
            }
            div { class: "messages", id: "messages", aria_live: "polite",
                onscroll: move |_| {
                    if let Some(el) = messages_el() {
                        let gap = el.scroll_height() - el.scroll_top() - el.client_height();
                        stick.set(gap < 40);
                        if el.scroll_top() < 80 {
                            load_older();
                        }
                    }
                },
                if has_older {
                    button { class: "older", onclick: move |_| load_older(), "Load older messages" }
                }
                if stored.is_empty() && pending.is_empty() && phase == Phase::NotCreated {
                    div { class: "welcome",
                        h2 { "What should the agent work on?" }
                        p { "The session is saved when you send the first message." }
                    }
                }
                // One keyed list, so that a reply keeps its place and its
                // rendered blocks when the stream becomes the stored message.
                for e in entries {
                    MessageView {
                        key: "{e.key}",
                        role: e.role,
                        content: e.content,
                        status: e.status,
                        error: e.error,
                        live: e.live,
                        pending: e.pending,
                        on_retry: e.retry.map(|text| EventHandler::new(move |_| send(text.clone()))),
                    }
                }
                for r in requests {
                    RequestCard { key: "{r.id}", session_id: id(), request: r }
                }
            }
            if !queued.is_empty() {
                div { class: "queue", id: "queue", aria_label: "Queued messages",
                    for q in queued {
                        div { key: "{q.id}", class: "queued",
                            span { class: "badge", "queued" }
                            p { "{q.text}" }
                            button { class: "link", onclick: { let m = q.id.clone(); move |_| app.start_queued(id(), m.clone()) }, "Send now" }
                            button { class: "link", onclick: {
                                let (m, t) = (q.id.clone(), q.text.to_string());
                                let mut restore = restore;
                                move |_| { let t = t.clone(); app.cancel_queued(id(), m.clone(), move || restore.set(Some(t))) }
                            }, "Edit" }
                            button { class: "link", onclick: { let m = q.id.clone(); move |_| app.cancel_queued(id(), m.clone(), || ()) }, "Cancel" }
                        }
                    }
                }
            }
            Composer {
                // Each session has its own draft.
                key: "{id}",
                restore,
                disabled: matches!(phase, Phase::Creating | Phase::Loading | Phase::Deleted),
                running,
                placeholder: placeholder.to_string(),
                on_send: send,
                on_stop: stop,
            }
        }
    }
}

/// One message in the list: stored, waiting for the server, or the reply
/// being written.
struct Entry {
    key: String,
    role: Role,
    content: Vec<confab_protocol::model::Block>,
    status: MessageStatus,
    error: Option<String>,
    live: bool,
    pending: bool,
    /// For "Try again": the text to send again.
    retry: Option<String>,
}

fn phase_name(p: &Phase) -> &'static str {
    match p {
        Phase::NotCreated => "not-created",
        Phase::Creating => "creating",
        Phase::Loading => "loading",
        Phase::Idle => "idle",
        Phase::Running => "running",
        Phase::Deleted => "deleted",
        Phase::Error(_) => "error",
    }
}
