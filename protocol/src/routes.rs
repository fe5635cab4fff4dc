//! The REST routes, written once. The server's router takes the templates
//! (`{id}` is axum's path parameter); clients build paths with the functions,
//! which fill in the same templates.

/// `GET`: `{"ok": true}`.
pub const HEALTH: &str = "/api/health";
/// `GET`: the agent, the auth mode and the limits.
pub const CONFIG: &str = "/api/config";
/// `GET`: the owner's projects.
pub const PROJECTS: &str = "/api/projects";
/// `POST`: create a session with its first message; `GET`: list sessions.
pub const SESSIONS: &str = "/api/sessions";
/// `GET`: a session with its latest messages; `PATCH`: rename or change the
/// permission mode; `DELETE`.
pub const SESSION: &str = "/api/sessions/{id}";
/// `POST`: send a message (starts a turn); `GET`: a page of messages.
pub const MESSAGES: &str = "/api/sessions/{id}/messages";
/// `POST`: stop the running turn.
pub const STOP: &str = "/api/sessions/{id}/stop";
/// `POST`: answer a request the running turn waits on.
pub const REQUEST: &str = "/api/sessions/{id}/requests/{requestId}";
/// `PATCH`: edit a queued message; `DELETE`: cancel it (until it starts).
pub const QUEUED: &str = "/api/sessions/{id}/queue/{messageId}";
/// `POST`: start a queued message now, stopping the running turn.
pub const QUEUED_START: &str = "/api/sessions/{id}/queue/{messageId}/start";
/// `GET ?format=md|json`: the whole session as a file.
pub const EXPORT: &str = "/api/sessions/{id}/export";
/// `POST`: a one-use ticket that opens a socket (`/ws?ticket=`) as the
/// caller, for the rest of their token's life.
pub const SOCKET_TICKET: &str = "/api/socket-ticket";
/// `GET`: the OpenAPI document of all of these (no auth).
pub const OPENAPI: &str = "/api/openapi.json";
/// What every route starts with.
pub const PREFIX: &str = "/api";

fn fill(template: &str, id: &str) -> String {
    template.replace("{id}", id)
}

/// [`SESSION`] of `id`.
pub fn session(id: &str) -> String {
    fill(SESSION, id)
}

/// [`MESSAGES`] of `id`.
pub fn messages(id: &str) -> String {
    fill(MESSAGES, id)
}

/// [`STOP`] of `id`.
pub fn stop(id: &str) -> String {
    fill(STOP, id)
}

/// [`REQUEST`] of session `id`.
pub fn request(id: &str, request_id: &str) -> String {
    fill(REQUEST, id).replace("{requestId}", request_id)
}

/// [`QUEUED`] of session `id`.
pub fn queued(id: &str, message_id: &str) -> String {
    fill(QUEUED, id).replace("{messageId}", message_id)
}

/// [`QUEUED_START`] of session `id`.
pub fn queued_start(id: &str, message_id: &str) -> String {
    fill(QUEUED_START, id).replace("{messageId}", message_id)
}

/// [`EXPORT`] of `id` in `format` (`md` or `json`).
pub fn export(id: &str, format: &str) -> String {
    format!("{}?format={format}", fill(EXPORT, id))
}

/// A page of [`MESSAGES`] of `id`: seq after `after` or before `before`.
pub fn message_page(id: &str, after: Option<u64>, before: Option<u64>, limit: usize) -> String {
    let mut path = format!("{}?limit={limit}", fill(MESSAGES, id));
    if let Some(a) = after {
        path.push_str(&format!("&afterSeq={a}"));
    }
    if let Some(b) = before {
        path.push_str(&format!("&beforeSeq={b}"));
    }
    path
}

/// A page of [`SESSIONS`], newest activity first.
pub fn session_page(limit: usize) -> String {
    format!("{SESSIONS}?limit={limit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fill_the_templates() {
        let id = "0192f0c1-7e3a-7cc0-8a8e-0d3c4b5a6f70";
        assert_eq!(session(id), format!("/api/sessions/{id}"));
        assert_eq!(stop(id), format!("/api/sessions/{id}/stop"));
        assert_eq!(
            export(id, "md"),
            format!("/api/sessions/{id}/export?format=md")
        );
        assert_eq!(
            message_page(id, None, Some(7), 50),
            format!("/api/sessions/{id}/messages?limit=50&beforeSeq=7")
        );
        for r in [
            HEALTH,
            CONFIG,
            OPENAPI,
            PROJECTS,
            SESSIONS,
            SESSION,
            MESSAGES,
            STOP,
            REQUEST,
            QUEUED,
            QUEUED_START,
            EXPORT,
            SOCKET_TICKET,
        ] {
            assert!(r.starts_with(PREFIX), "{r}");
        }
    }
}
