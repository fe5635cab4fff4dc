//! Code highlighting, loaded only when a code block first appears:
//! highlight.js (its "common" build, with Dockerfile added), served by the
//! app's own origin from `hl/` and added as a script the first time it is
//! needed, so the first load stays small. Its output is spans with classes
//! around the code's escaped text.

use std::cell::RefCell;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;

/// Where the app serves the highlighter (Trunk copies it there).
const SCRIPTS: &[&str] = &[
    "/hl-11.11.1/highlight.min.js",
    "/hl-11.11.1/dockerfile.min.js",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    NotLoaded,
    Loading,
    Ready,
    Failed,
}

thread_local! {
    static STATE: RefCell<State> = const { RefCell::new(State::NotLoaded) };
}

/// Whether the highlighter is loaded.
pub fn is_ready() -> bool {
    state() == State::Ready
}

fn state() -> State {
    STATE.with(|s| *s.borrow())
}

fn set_state(v: State) {
    STATE.with(|s| *s.borrow_mut() = v);
}

/// Adds a script to the page and waits until it has run.
async fn load_script(src: &str) -> Result<(), JsValue> {
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| JsValue::from_str("no document"))?;
    let script = document.create_element("script")?;
    script.set_attribute("src", src)?;
    let loaded = js_sys::Promise::new(&mut |resolve, reject| {
        let el: &web_sys::EventTarget = script.unchecked_ref();
        let _ = el.add_event_listener_with_callback("load", &resolve);
        let _ = el.add_event_listener_with_callback("error", &reject);
    });
    document
        .head()
        .ok_or_else(|| JsValue::from_str("no head"))?
        .append_child(&script)?;
    wasm_bindgen_futures::JsFuture::from(loaded)
        .await
        .map(|_| ())
}

/// Loads the highlighter once; true when it can be used. The loading runs
/// on its own, not in the asking component's task: a code block that goes
/// away meanwhile (a streamed reply becoming a stored one) must not leave
/// it half done for the others.
pub async fn ready() -> bool {
    if state() == State::NotLoaded {
        set_state(State::Loading);
        wasm_bindgen_futures::spawn_local(async {
            let mut ok = true;
            for src in SCRIPTS {
                if load_script(src).await.is_err() {
                    ok = false;
                    break;
                }
            }
            set_state(if ok { State::Ready } else { State::Failed });
        });
    }
    loop {
        match state() {
            State::Ready => return true,
            State::Failed => return false,
            _ => gloo_timers::future::TimeoutFuture::new(20).await,
        }
    }
}

/// `code` as highlighted HTML, if the highlighter knows `lang` (names and
/// aliases: `rs`, `ts`, `sh`, `yml`, `toml`, `docker`, …).
pub fn highlight(code: &str, lang: &str) -> Option<String> {
    let window = web_sys::window()?;
    let hljs = js_sys::Reflect::get(&window, &"hljs".into()).ok()?;
    if hljs.is_undefined() {
        return None;
    }
    let get_language: js_sys::Function = js_sys::Reflect::get(&hljs, &"getLanguage".into())
        .ok()?
        .dyn_into()
        .ok()?;
    if get_language
        .call1(&hljs, &lang.into())
        .ok()
        .is_none_or(|l| l.is_undefined())
    {
        return None;
    }
    let run: js_sys::Function = js_sys::Reflect::get(&hljs, &"highlight".into())
        .ok()?
        .dyn_into()
        .ok()?;
    let options = js_sys::Object::new();
    js_sys::Reflect::set(&options, &"language".into(), &lang.into()).ok()?;
    js_sys::Reflect::set(&options, &"ignoreIllegals".into(), &true.into()).ok()?;
    let result = run.call2(&hljs, &code.into(), &options).ok()?;
    js_sys::Reflect::get(&result, &"value".into())
        .ok()?
        .as_string()
}

/// Puts `text` on the clipboard.
pub async fn copy(text: &str) -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    let promise = window.navigator().clipboard().write_text(text);
    wasm_bindgen_futures::JsFuture::from(promise).await.is_ok()
}
