//! The Confab web app: routes, the root that owns state and socket, launch.

mod actions;
mod api;
mod auth;
mod components;
mod highlight;
mod history;
mod notify;
mod pages;
mod socket;
mod state;

use components::banner::Banners;
use components::sidebar::Sidebar;
use confab_protocol::{ProjectId, SessionId};
use dioxus::prelude::*;
use pages::home::Home;
use pages::not_found::NotFound;
use pages::session::Session;
use state::AppState;

#[derive(Routable, Clone, PartialEq)]
#[rustfmt::skip]
pub enum Route {
    #[layout(Shell)]
        #[route("/")]
        Home {},
        #[route("/projects/:project_id/sessions/:id")]
        Session { project_id: ProjectId, id: SessionId },
        #[route("/:..segments")]
        NotFound { segments: Vec<String> },
}

/// Moves keyboard focus to the element with this id, once it is on the page.
pub fn focus(id: &str) {
    use wasm_bindgen::JsCast;
    let el = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(id));
    if let Some(el) = el.and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok()) {
        let _ = el.focus();
    }
}

thread_local! {
    /// The tab title's parts: the page's own, and how many sessions wait
    /// for the person.
    static TITLE: std::cell::RefCell<(String, usize)> = Default::default();
}

/// Sets the page's part of the tab's title ("Confab" alone when empty).
pub fn set_title(page: &str) {
    TITLE.with(|t| t.borrow_mut().0 = page.to_string());
    show_title();
}

/// Sets how many sessions wait for the person; the title leads with it.
fn set_waiting(n: usize) {
    TITLE.with(|t| t.borrow_mut().1 = n);
    show_title();
}

fn show_title() {
    let Some(d) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    TITLE.with(|t| {
        let (page, waiting) = &*t.borrow();
        let mut title = String::new();
        if *waiting > 0 {
            title.push_str(&format!("({waiting}) "));
        }
        if !page.is_empty() {
            title.push_str(page);
            title.push_str(" · ");
        }
        title.push_str("Confab");
        d.set_title(&title);
    });
}

fn main() {
    console_error_panic_hook::set_once();
    dioxus::launch(App);
}

#[component]
fn App() -> Element {
    use_hook(|| {
        if let Some(h) = history::BrowserHistory::new() {
            dioxus_history::provide_history_context(std::rc::Rc::new(h));
        }
    });
    // Sign-in is settled before anything else talks to the API.
    let mut start = use_signal(|| None);
    use_future(move || async move {
        let settings = api::load_endpoints().await;
        start.set(Some(auth::start(settings).await));
    });
    match &*start.read() {
        None => rsx! {},
        Some(auth::Start::SignIn(why)) => rsx! { pages::sign_in::SignIn { why: why.clone() } },
        Some(auth::Start::Off) => rsx! { Signed { user: None } },
        Some(auth::Start::SignedIn(user)) => rsx! { Signed { user: Some(user.clone()) } },
    }
}

/// The app proper, once the person is signed in (or sign-in is off).
#[component]
fn Signed(user: Option<String>) -> Element {
    let mut app = use_context_provider(move || AppState::new(user.clone()));
    // The socket coroutine lives here, above the router, for the app's life.
    let socket = socket::use_socket(app);
    use_future(move || async move {
        if let Ok(c) = api::config().await {
            app.config.set(Some(c));
        }
    });
    use_future(move || async move {
        auth::keep_fresh(move || socket.send(state::SocketCmd::Renew)).await;
    });
    rsx! { Router::<Route> {} }
}

/// The layout: sidebar always mounted, banners, the page. On a phone's
/// width the sidebar is a drawer over the page, opened from the page's
/// header and closed by going anywhere.
#[component]
fn Shell() -> Element {
    let mut app = state::use_app();
    let route = use_route::<Route>();
    use_effect(use_reactive((&route,), move |_| app.drawer.set(false)));
    // A session asked for from outside the router (a notification's click).
    let nav = use_navigator();
    use_effect(move || {
        let wanted = app.open.read().clone();
        if let Some((project_id, id)) = wanted {
            app.open.set(None);
            nav.push(Route::Session { project_id, id });
        }
    });
    // The tab says how many sessions need the person.
    use_effect(move || {
        let waiting = app
            .sessions
            .read()
            .sorted()
            .iter()
            .filter(|s| s.status == confab_protocol::model::SessionStatus::Waiting)
            .count();
        set_waiting(waiting);
    });
    let open = (app.drawer)();
    rsx! {
        div { class: if open { "shell drawer-open" } else { "shell" },
            Sidebar {}
            div { class: "scrim", onclick: move |_| app.drawer.set(false) }
            main { class: "page",
                Banners {}
                Outlet::<Route> {}
            }
        }
    }
}
