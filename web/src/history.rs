//! The router's history over the browser's: the address bar shows the
//! route, Back and Forward move between routes, a reload opens the same one.

use dioxus_history::History;
use std::sync::Arc;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::Closure;

pub struct BrowserHistory {
    window: web_sys::Window,
}

impl BrowserHistory {
    pub fn new() -> Option<BrowserHistory> {
        web_sys::window().map(|window| BrowserHistory { window })
    }

    fn history(&self) -> Option<web_sys::History> {
        self.window.history().ok()
    }
}

impl History for BrowserHistory {
    fn current_route(&self) -> String {
        let l = self.window.location();
        format!(
            "{}{}{}",
            l.pathname().unwrap_or_else(|_| "/".into()),
            l.search().unwrap_or_default(),
            l.hash().unwrap_or_default()
        )
    }

    fn go_back(&self) {
        if let Some(h) = self.history() {
            let _ = h.back();
        }
    }

    fn go_forward(&self) {
        if let Some(h) = self.history() {
            let _ = h.forward();
        }
    }

    fn push(&self, route: String) {
        if let Some(h) = self.history() {
            let _ = h.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&route));
        }
        self.window.scroll_to_with_x_and_y(0.0, 0.0);
    }

    fn replace(&self, route: String) {
        if let Some(h) = self.history() {
            let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&route));
        }
    }

    fn external(&self, url: String) -> bool {
        self.window.location().set_href(&url).is_ok()
    }

    /// Back and Forward: the router reads the new address.
    fn updater(&self, callback: Arc<dyn Fn() + Send + Sync>) {
        let on_pop = Closure::<dyn FnMut()>::new(move || callback());
        let _ = self
            .window
            .add_event_listener_with_callback("popstate", on_pop.as_ref().unchecked_ref());
        // For the page's life, as the router's.
        on_pop.forget();
    }
}
