//! `/projects/{projectId}/sessions/{id}`: the history, the reply streaming
//! in, the composer and the session's controls.

use crate::api::{self, ApiError};
use crate::components::composer::Composer;
use crate::components::message_view::MessageView;
use crate::components::session_item::badge;
use crate::socket::SocketCmd;
use crate::state::{AppState, use_app};
use confab_protocol::client::{CurrentSession, Phase};
use confab_protocol::model::{Block, Message, MessageStatus, PermissionMode, Role, SessionStatus};
use confab_protocol::rest::NewMessage;
use confab_protocol::{
    MessageId, MessageText, ProjectId, ServerEvent, SessionId, Timestamp, TurnId,
};
use dioxus::prelude::*;

/// Runs `f` on the current session if it is still `id`.
fn with_current(mut app: AppState, id: &SessionId, f: impl FnOnce(&mut CurrentSession)) {
    app.current.with_mut(|c| {
        if let Some(c) = c.as_mut().filter(|c| c.session_id() == id) {
            f(c);
        }
    });
}

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
        let same = app
            .current
            .peek()
            .as_ref()
            .is_some_and(|c| *c.session_id() == id);
        if same {
            return;
        }
        let leaving = app
            .current
            .peek()
            .as_ref()
            .filter(|c| c.summary().is_some())
            .map(|c| c.session_id().clone());
        if let Some(old) = leaving {
            socket.send(SocketCmd::Unsubscribe(old));
        }
        app.current
            .set(Some(CurrentSession::new_loading(id.clone())));
        stick.set(true);
        spawn(async move {
            match api::session(&id).await {
                Ok(d) => {
                    with_current(app, &id, |c| c.apply_detail(&d));
                    app.sessions.write().upsert(d.session);
                    socket.send(SocketCmd::SubscribeCurrent);
                }
                Err(ApiError::NotFound) => with_current(app, &id, |c| c.not_found()),
                Err(ApiError::Refused { status: 400, .. }) => with_current(app, &id, |c| {
                    c.load_failed("This is not a valid session link.")
                }),
                Err(e) => with_current(app, &id, |c| c.load_failed(e.to_string())),
            }
        });
    });

    // Keep the newest text in view while the reader is at the bottom.
    use_effect(move || {
        let _ = app.current.read();
        if *stick.peek() {
            scroll_to_bottom();
        }
    });

    let mut send = move |typed: String| {
        let (sid, project) = (id(), project_id());
        let mut restore = restore;
        // Checked here as the server would: an empty or oversize text never
        // leaves the browser, and the user gets it back with the reason.
        let text = match MessageText::parse(typed.as_str()) {
            Ok(t) => t,
            Err(e) => {
                app.notice.set(Some(format!("Not sent: {e}.")));
                restore.set(Some(typed));
                return;
            }
        };
        let message_id = MessageId::from(uuid::Uuid::now_v7());
        let mine = Message {
            id: message_id.clone(),
            session_id: sid.clone(),
            seq: 0,
            role: Role::User,
            // The server gives the turn; the nil id stands until it answers.
            turn_id: TurnId::from(uuid::Uuid::nil()),
            created_at: Timestamp::from_millis(js_sys::Date::now() as i64),
            content: vec![Block::text(text.as_str())],
            status: MessageStatus::Complete,
            error: None,
            usage: None,
        };
        // Not yet on the server (also after a failed first send): create it.
        let creating = app
            .current
            .peek()
            .as_ref()
            .is_some_and(|c| c.summary().is_none());
        stick.set(true);
        if creating {
            with_current(app, &sid, |c| c.begin_create(mine));
            let mode = *app.default_mode.peek();
            spawn(async move {
                match api::create(
                    &sid,
                    &project,
                    mode,
                    NewMessage {
                        id: message_id.clone(),
                        text: text.clone(),
                    },
                )
                .await
                {
                    Ok(r) => {
                        with_current(app, &sid, |c| c.apply_created(&r));
                        app.sessions.write().upsert(r.session);
                        socket.send(SocketCmd::SubscribeCurrent);
                    }
                    Err(e) => {
                        with_current(app, &sid, |c| {
                            c.send_failed(&message_id, e.to_string());
                        });
                        restore.set(Some(typed));
                    }
                }
            });
        } else {
            with_current(app, &sid, |c| c.add_pending(mine));
            spawn(async move {
                match api::send(
                    &sid,
                    NewMessage {
                        id: message_id.clone(),
                        text: text.clone(),
                    },
                )
                .await
                {
                    Ok(r) => {
                        with_current(app, &sid, |c| c.apply_sent(&r));
                        app.sessions.write().upsert(r.session);
                    }
                    Err(e) => {
                        with_current(app, &sid, |c| {
                            c.send_failed(&message_id, e.to_string());
                        });
                        restore.set(Some(typed));
                    }
                }
            });
        }
    };

    let stop = move |_| {
        let sid = id();
        spawn(async move {
            match api::stop(&sid).await {
                Ok(s) => {
                    with_current(app, &sid, |c| {
                        c.apply_event(&ServerEvent::SessionUpdated { session: s.clone() });
                    });
                    app.sessions.write().upsert(s);
                }
                Err(e) => app.notice.set(Some(e.to_string())),
            }
        });
    };

    // Older pages load when the reader scrolls to the top (or asks).
    let mut loading_older = use_signal(|| false);
    let mut load_older = move || {
        let sid = id();
        let oldest = app
            .current
            .peek()
            .as_ref()
            .filter(|c| c.has_older())
            .and_then(|c| c.oldest_seq());
        let Some(oldest) = oldest else { return };
        if *loading_older.peek() {
            return;
        }
        loading_older.set(true);
        spawn(async move {
            let before = messages_height();
            if let Ok(page) = api::older(&sid, oldest).await {
                with_current(app, &sid, |c| c.apply_older(&page));
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
        spawn(async move {
            match api::update(&sid, None, Some(m)).await {
                Ok(s) => {
                    with_current(app, &sid, |c| {
                        c.apply_event(&ServerEvent::SessionUpdated { session: s.clone() });
                    });
                    app.sessions.write().upsert(s);
                }
                Err(e) => app.notice.set(Some(e.to_string())),
            }
        });
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
    let has_older = c.has_older();
    drop(current);

    // The server's word: a running turn keeps its Stop button whatever else is shown.
    let running = summary
        .as_ref()
        .is_some_and(|s| s.status == SessionStatus::Running);
    let title = summary
        .as_ref()
        .map_or_else(|| "New session".to_string(), |s| s.title.clone());
    let mode = summary
        .as_ref()
        .map(|s| s.permission_mode)
        .unwrap_or(*app.default_mode.read());
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

    rsx! {
        document::Title { "{title} · Confab" }
        section { class: "session-page", "data-phase": "{phase_name(&phase)}",
            header { class: "session-head",
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
                        for m in PermissionMode::ALL { option { key: "{m.as_str()}", value: "{m.as_str()}", "{m.as_str()}" } }
                    }
                    if summary.is_some() {
                        button { class: "link", onclick: move |_| { let sid = id(); spawn(async move { let _ = api::export(&sid, "md").await; }); }, "Export .md" }
                        button { class: "link", onclick: move |_| { let sid = id(); spawn(async move { let _ = api::export(&sid, "json").await; }); }, "Export .json" }
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
                for m in stored.iter() {
                    MessageView {
                        key: "{m.id}",
                        role: m.role,
                        content: m.content.clone(),
                        status: m.status,
                        error: m.error.clone(),
                        live: false,
                        pending: false,
                        on_retry: (m.status == MessageStatus::Failed && !running)
                            .then(|| asked.get(&(m.seq.saturating_sub(1))).cloned())
                            .flatten()
                            .map(|text| EventHandler::new(move |_| send(text.clone()))),
                    }
                }
                for m in pending.iter() {
                    MessageView { key: "{m.id}", role: Role::User, content: m.content.clone(), status: m.status, error: None, live: false, pending: true, on_retry: None }
                }
                if let Some(l) = live {
                    MessageView { key: "{l.message_id}", role: Role::Assistant, content: l.content.clone(), status: MessageStatus::Complete, error: None, live: true, pending: false, on_retry: None }
                }
            }
            Composer {
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
