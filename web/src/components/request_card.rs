//! What the running turn asks the person: a tool to allow or deny, or
//! questions to answer. Every open tab shows the card; the first answer
//! wins and the card goes from every tab when the server says so.

use crate::state::use_app;
use confab_protocol::SessionId;
use confab_protocol::model::{Decision, PendingRequest, RequestKind};
use confab_protocol::rest::AnswerRequest;
use dioxus::prelude::*;
use std::collections::BTreeMap;

#[component]
pub fn RequestCard(session_id: SessionId, request: PendingRequest) -> Element {
    let app = use_app();
    let mut note = use_signal(String::new);
    let mut chosen = use_signal(BTreeMap::<String, String>::new);
    let mut sent = use_signal(|| false);
    let answer = {
        let rid = request.id.clone();
        move |decision: Decision| {
            if *sent.peek() {
                return;
            }
            sent.set(true);
            let message = Some(note.peek().trim().to_string()).filter(|m| !m.is_empty());
            app.answer_request(
                session_id.clone(),
                rid.clone(),
                AnswerRequest {
                    decision,
                    message,
                    answers: chosen.peek().clone(),
                },
            );
        }
    };
    let is_tool = request.kind == RequestKind::Tool;
    let title = match (&request.tool, is_tool) {
        (Some(t), true) => format!("Allow {t}?"),
        _ => "The agent asks".to_string(),
    };
    let input = request
        .input
        .as_ref()
        .map(|v| serde_json::to_string_pretty(v).unwrap_or_default());
    let all_chosen = chosen.read().len() >= request.questions.len();
    let (mut allow, mut allow_session, mut deny) = (answer.clone(), answer.clone(), answer);
    rsx! {
        div { class: "request-card", id: "request-{request.id}", "data-kind": if is_tool { "tool" } else { "question" },
            role: "group", aria_label: "The agent needs you",
            div { class: "request-head",
                span { class: "badge badge-waiting", "needs you" }
                span { class: "request-title", "{title}" }
            }
            if let Some(r) = &request.reason { p { class: "request-reason", "{r}" } }
            if let Some(i) = input { pre { class: "request-input", "{i}" } }
            for (qi, q) in request.questions.iter().enumerate() {
                fieldset { key: "{qi}", class: "request-question",
                    legend { "{q.question}" }
                    for (oi, o) in q.options.iter().enumerate() {
                        label { key: "{oi}", class: "request-option",
                            input { r#type: "radio", name: "{request.id}-{qi}", value: "{o.label}",
                                onchange: {
                                    let (q, l) = (q.question.clone(), o.label.clone());
                                    move |_| { chosen.write().insert(q.clone(), l.clone()); }
                                }
                            }
                            span { "{o.label}" }
                            if let Some(d) = &o.description { span { class: "meta", " — {d}" } }
                        }
                    }
                }
            }
            input { class: "request-note", r#type: "text", maxlength: "4000",
                placeholder: if is_tool { "Tell the agent why (optional)" } else { "Add a note (optional)" },
                value: "{note}", oninput: move |e| note.set(e.value()) }
            div { class: "request-actions",
                if is_tool {
                    button { class: "primary request-allow", r#type: "button", disabled: sent(),
                        onclick: move |_| allow(Decision::Allow), "Allow" }
                    button { class: "request-allow-session", r#type: "button", disabled: sent(),
                        onclick: move |_| allow_session(Decision::AllowSession), "Allow for this session" }
                    button { class: "request-deny", r#type: "button", disabled: sent(),
                        onclick: move |_| deny(Decision::Deny), "Deny" }
                } else {
                    button { class: "primary request-allow", r#type: "button", disabled: sent() || !all_chosen,
                        onclick: move |_| allow(Decision::Allow), "Answer" }
                    button { class: "request-deny", r#type: "button", disabled: sent(),
                        onclick: move |_| deny(Decision::Deny), "Skip" }
                }
            }
        }
    }
}
