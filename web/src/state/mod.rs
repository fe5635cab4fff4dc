//! The app's state: a `Copy` struct of signals around the protocol's state
//! machines, provided once at the root.

use confab_protocol::SessionId;
use confab_protocol::client::{CurrentSession, SessionList};
use confab_protocol::model::PermissionMode;
use confab_protocol::rest::ConfigResponse;
use dioxus::prelude::*;

/// The socket's state, as a WebSocket's `readyState` says it, plus ours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadyState {
    #[default]
    Uninstantiated,
    Connecting,
    Open,
    Closing,
    Closed,
}

/// What the banners show.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Conn {
    pub state: ReadyState,
    /// The server said `ready`.
    pub ready: bool,
    /// The reconnect attempt under way or next (0 while connected).
    pub attempt: u32,
    /// Seconds until the next attempt.
    pub retry_in: Option<u32>,
    /// Attempts used up: waiting for the Reconnect button.
    pub gave_up: bool,
    /// The socket was open at least once (so a drop is a reconnect).
    pub was_open: bool,
    /// Reconnecting because the token the socket was opened with expired:
    /// planned, so no banner.
    pub renewing: bool,
    /// The server refused this browser's token: nothing is retried until
    /// the person signs in again and asks to reconnect.
    pub signed_out: bool,
}

/// What components ask of the socket.
#[derive(Clone, Debug, PartialEq)]
pub enum SocketCmd {
    /// Subscribe to the current session (from what it holds).
    SubscribeCurrent,
    Unsubscribe(SessionId),
    /// Try again now (the Reconnect button).
    Reconnect,
    /// The access token was refreshed: carry the socket on with it.
    Renew,
}

#[derive(Clone, Copy)]
pub struct AppState {
    /// Who is signed in, when sign-in is on.
    pub user: Signal<Option<String>>,
    /// Every session of the user, newest activity first; always mounted.
    pub sessions: Signal<SessionList>,
    /// The session on screen.
    pub current: Signal<Option<CurrentSession>>,
    pub conn: Signal<Conn>,
    pub config: Signal<Option<ConfigResponse>>,
    /// The permission mode new sessions start with.
    pub default_mode: Signal<PermissionMode>,
    /// A message for the user that is not about one session.
    pub notice: Signal<Option<String>>,
    /// On a phone's width: the session list is open over the page.
    pub drawer: Signal<bool>,
    /// A session to open, asked from outside the router (a notification).
    pub open: Signal<Option<(confab_protocol::ProjectId, confab_protocol::SessionId)>>,
    /// Browser notifications are on.
    pub notify: Signal<bool>,
}

impl AppState {
    /// The modes this server allows (`/api/config`); until it has said,
    /// those of its default ceiling.
    pub fn allowed_modes(&self) -> Vec<PermissionMode> {
        let ceiling = self
            .config
            .read()
            .as_ref()
            .map_or(PermissionMode::Default, |c| c.limits.max_permission_mode);
        PermissionMode::ALL
            .into_iter()
            .filter(|m| ceiling.allows(*m))
            .collect()
    }

    /// The mode a new session starts in: the chosen default, if allowed.
    pub fn start_mode(&self) -> PermissionMode {
        let m = *self.default_mode.peek();
        if self.allowed_modes().contains(&m) {
            m
        } else {
            PermissionMode::Default
        }
    }

    pub fn new(user: Option<String>) -> AppState {
        AppState {
            user: Signal::new(user),
            sessions: Signal::new(SessionList::new()),
            current: Signal::new(None),
            conn: Signal::new(Conn::default()),
            config: Signal::new(None),
            default_mode: Signal::new(load_default_mode()),
            notice: Signal::new(None),
            drawer: Signal::new(false),
            open: Signal::new(None),
            notify: Signal::new(crate::notify::enabled()),
        }
    }
}

/// The app state; the root provides it.
pub fn use_app() -> AppState {
    try_use_context::<AppState>().expect("AppState is provided by App at the root")
}

/// This browser's local storage for the app's settings, when it has one.
/// This tab's storage.
fn session_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.session_storage().ok()?
}

/// A value kept in this tab (`sessionStorage`); None when empty or absent.
pub fn tab_get(key: &str) -> Option<String> {
    session_storage()?
        .get_item(key)
        .ok()?
        .filter(|v| !v.is_empty())
}

/// Keeps `value` in this tab; an empty one removes the key.
pub fn tab_set(key: &str, value: &str) {
    if let Some(s) = session_storage() {
        let _ = if value.is_empty() {
            s.remove_item(key)
        } else {
            s.set_item(key, value)
        };
    }
}

pub fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

pub fn load_default_mode() -> PermissionMode {
    storage()
        .and_then(|s| s.get_item("confab.defaultMode").ok()?)
        .and_then(|v| PermissionMode::ALL.into_iter().find(|m| m.as_str() == v))
        .unwrap_or_default()
}

pub fn save_default_mode(m: PermissionMode) {
    if let Some(s) = storage() {
        let _ = s.set_item("confab.defaultMode", m.as_str());
    }
}
