//! Every REST call of the app, returning one error type.

use confab_protocol::model::{PermissionMode, SessionSummary};
use confab_protocol::rest::{
    ConfigResponse, CreateSessionRequest, ErrorBody, MessagePage, NewMessage, SendMessageRequest,
    SendMessageResponse, SessionDetail, SessionEnvelope, SessionPage, SessionWithMessages,
    UpdateSessionRequest,
};
use confab_protocol::{ProjectId, SessionId, routes};
use gloo_net::http::{Request, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub enum ApiError {
    /// The server could not be reached.
    Network,
    NotFound,
    /// The server refused with a message meant for the user.
    Refused {
        status: u16,
        message: String,
    },
    /// The answer could not be read.
    Unreadable,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Network => {
                f.write_str("The server could not be reached. Check your connection and try again.")
            }
            ApiError::NotFound => f.write_str("This session does not exist."),
            ApiError::Refused { message, .. } => f.write_str(message),
            ApiError::Unreadable => f.write_str("The server's answer could not be read."),
        }
    }
}

/// Where the API and socket live, from `/config.json` (empty: this origin).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoints {
    pub api_url: String,
    pub socket_url: String,
}

thread_local! {
    static ENDPOINTS: RefCell<Endpoints> = RefCell::new(Endpoints::default());
}

fn window() -> Option<web_sys::Window> {
    web_sys::window()
}

/// Reads `/config.json`; without one, the API and socket are on this origin.
pub async fn load_endpoints() {
    let loaded = match Request::get("/config.json").send().await {
        Ok(r) if r.ok() => r.json::<Endpoints>().await.unwrap_or_default(),
        _ => Endpoints::default(),
    };
    ENDPOINTS.with(|e| *e.borrow_mut() = loaded);
}

fn api(path: &str) -> String {
    let base = ENDPOINTS.with(|e| e.borrow().api_url.trim_end_matches('/').to_string());
    format!("{base}{path}")
}

/// The socket URL, with the token when one is set.
pub fn socket_url() -> String {
    let configured = ENDPOINTS.with(|e| e.borrow().socket_url.clone());
    let url = if configured.is_empty() {
        let loc = window().map(|w| w.location());
        let proto = loc
            .as_ref()
            .and_then(|l| l.protocol().ok())
            .unwrap_or_default();
        let host = loc.as_ref().and_then(|l| l.host().ok()).unwrap_or_default();
        let scheme = if proto == "https:" { "wss" } else { "ws" };
        format!("{scheme}://{host}/ws")
    } else {
        configured
    };
    match token() {
        Some(t) => format!("{url}?token={t}"),
        None => url,
    }
}

/// A bearer token kept in this browser (`localStorage["confab.token"]`).
fn token() -> Option<String> {
    window()?
        .local_storage()
        .ok()??
        .get_item("confab.token")
        .ok()?
        .filter(|t| !t.is_empty())
}

fn authorized(r: RequestBuilder) -> RequestBuilder {
    match token() {
        Some(t) => r.header("Authorization", &format!("Bearer {t}")),
        None => r,
    }
}

async fn answer<T: DeserializeOwned>(r: Result<Response, gloo_net::Error>) -> Result<T, ApiError> {
    let r = r.map_err(|_| ApiError::Network)?;
    if r.status() == 404 {
        return Err(ApiError::NotFound);
    }
    if !r.ok() {
        let status = r.status();
        let message = match r.json::<ErrorBody>().await {
            Ok(b) => b.error.message,
            Err(_) => format!("The server answered {status}."),
        };
        return Err(ApiError::Refused { status, message });
    }
    r.json::<T>().await.map_err(|_| ApiError::Unreadable)
}

async fn get<T: DeserializeOwned>(path: &str) -> Result<T, ApiError> {
    answer(authorized(Request::get(&api(path))).send().await).await
}

async fn send_json<B: serde::Serialize, T: DeserializeOwned>(
    r: RequestBuilder,
    body: &B,
) -> Result<T, ApiError> {
    let req = authorized(r).json(body).map_err(|_| ApiError::Unreadable)?;
    answer(req.send().await).await
}

pub async fn config() -> Result<ConfigResponse, ApiError> {
    get(routes::CONFIG).await
}

pub async fn list_sessions() -> Result<SessionPage, ApiError> {
    get(&routes::session_page(100)).await
}

pub async fn session(id: &SessionId) -> Result<SessionDetail, ApiError> {
    get(&routes::session(id)).await
}

pub async fn older(id: &SessionId, before_seq: u64) -> Result<MessagePage, ApiError> {
    get(&routes::message_page(id, None, Some(before_seq), 50)).await
}

pub async fn create(
    id: &SessionId,
    project_id: &ProjectId,
    permission_mode: PermissionMode,
    message: NewMessage,
) -> Result<SessionWithMessages, ApiError> {
    let body = CreateSessionRequest {
        id: Some(id.clone()),
        project_id: Some(project_id.clone()),
        title: None,
        permission_mode: Some(permission_mode),
        message,
    };
    send_json(Request::post(&api(routes::SESSIONS)), &body).await
}

pub async fn send(id: &SessionId, message: NewMessage) -> Result<SendMessageResponse, ApiError> {
    let body = SendMessageRequest {
        id: message.id,
        text: message.text,
        permission_mode: None,
    };
    send_json(Request::post(&api(&routes::messages(id))), &body).await
}

pub async fn stop(id: &SessionId) -> Result<SessionSummary, ApiError> {
    let r = authorized(Request::post(&api(&routes::stop(id))))
        .send()
        .await;
    answer::<SessionEnvelope>(r).await.map(|e| e.session)
}

pub async fn update(
    id: &SessionId,
    title: Option<String>,
    permission_mode: Option<PermissionMode>,
) -> Result<SessionSummary, ApiError> {
    let body = UpdateSessionRequest {
        title,
        permission_mode,
    };
    send_json::<_, SessionEnvelope>(Request::patch(&api(&routes::session(id))), &body)
        .await
        .map(|e| e.session)
}

pub async fn delete(id: &SessionId) -> Result<(), ApiError> {
    let r = authorized(Request::delete(&api(&routes::session(id))))
        .send()
        .await
        .map_err(|_| ApiError::Network)?;
    match r.status() {
        204 => Ok(()),
        404 => Err(ApiError::NotFound),
        s => Err(ApiError::Refused {
            status: s,
            message: format!("Deleting failed ({s})."),
        }),
    }
}

/// Downloads the export of a session as a file.
pub async fn export(id: &SessionId, format: &str) -> Result<(), ApiError> {
    let r = authorized(Request::get(&api(&routes::export(id, format))))
        .send()
        .await
        .map_err(|_| ApiError::Network)?;
    if !r.ok() {
        return Err(ApiError::Refused {
            status: r.status(),
            message: "The export failed.".into(),
        });
    }
    let text = r.text().await.map_err(|_| ApiError::Unreadable)?;
    let mime = if format == "json" {
        "application/json"
    } else {
        "text/markdown"
    };
    download(&format!("confab-{id}.{format}"), mime, &text).map_err(|_| ApiError::Unreadable)
}

fn download(filename: &str, mime: &str, contents: &str) -> Result<(), wasm_bindgen::JsValue> {
    use wasm_bindgen::JsCast;
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(contents));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob)?;
    let doc = window().and_then(|w| w.document()).ok_or("no document")?;
    let a: web_sys::HtmlAnchorElement = doc.create_element("a")?.dyn_into()?;
    a.set_href(&url);
    a.set_download(filename);
    doc.body().ok_or("no body")?.append_child(&a)?;
    a.click();
    a.remove();
    web_sys::Url::revoke_object_url(&url)?;
    Ok(())
}
