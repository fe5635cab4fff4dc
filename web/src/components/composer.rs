//! The message box: Enter sends, Shift+Enter is a new line. While a turn
//! runs, Stop stops it and a message sent waits in the queue.

use dioxus::prelude::*;

fn draft_key() -> String {
    let path = web_sys::window()
        .and_then(|w| w.location().pathname().ok())
        .unwrap_or_default();
    format!("confab.draft:{path}")
}

#[component]
pub fn Composer(
    /// Text given back after a failed send, so nothing typed is lost.
    restore: Signal<Option<String>>,
    disabled: bool,
    running: bool,
    placeholder: String,
    on_send: EventHandler<String>,
    on_stop: EventHandler<()>,
) -> Element {
    // What is typed is kept in this tab as it is typed, so that a reload or
    // a trip to sign in again loses none of it.
    let key = use_hook(draft_key);
    let mut draft = use_signal(|| crate::state::tab_get(&key).unwrap_or_default());
    let saving = key.clone();
    use_effect(move || crate::state::tab_set(&saving, &draft()));
    // Focus lands in the message box when the page opens.
    use_effect(|| crate::focus("composer-input"));
    let mut restore = restore;
    use_effect(move || {
        if let Some(t) = restore() {
            draft.set(t);
            restore.set(None);
        }
    });
    let mut submit = move || {
        let text = draft.peek().trim().to_string();
        if text.is_empty() || disabled {
            return;
        }
        draft.set(String::new());
        on_send.call(text);
    };
    rsx! {
        form { class: "composer",
            onsubmit: move |e: FormEvent| { e.prevent_default(); submit(); },
            textarea {
                id: "composer-input",
                aria_label: "Message",
                placeholder: "{placeholder}",
                rows: "3",
                disabled,
                value: "{draft}",
                oninput: move |e| draft.set(e.value()),
                onkeydown: move |e: KeyboardEvent| {
                    if e.key() == Key::Enter && !e.modifiers().contains(Modifiers::SHIFT) && !e.is_composing() {
                        e.prevent_default();
                        submit();
                    }
                },
            }
            div { class: "composer-actions",
                span { class: "hint",
                    if running { "Enter to queue: it is sent when the reply ends" } else { "Enter to send · Shift+Enter for a new line" }
                }
                if running {
                    button { r#type: "button", class: "stop", id: "stop-button", onclick: move |_| on_stop.call(()), "Stop" }
                }
                button { r#type: "submit", class: "send", id: "send-button", disabled: disabled || draft().trim().is_empty(),
                    if running { "Queue" } else { "Send" }
                }
            }
        }
    }
}
