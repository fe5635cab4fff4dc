//! Every REST call of the app: the protocol crate's typed client over the
//! browser's fetch, with the base URL of `/config.json` and the token of this
//! browser. One error type, `ApiError`.

use confab_protocol::backoff::Backoff;
use confab_protocol::client::rest::{HttpRequest, HttpResponse, Method, RestClient, Transport};
use confab_protocol::model::{PermissionMode, SessionSummary};
use confab_protocol::rest::{
    ConfigResponse, CreateSessionRequest, ErrorCode, MessagePage, NewMessage, SendAnswer,
    SessionDetail, SessionPage, SessionWithMessages, UpdateSessionRequest,
};
use confab_protocol::{MessageId, ProjectId, SessionId};
use gloo_net::http::{Request, RequestBuilder};
use gloo_timers::future::TimeoutFuture;
use std::cell::RefCell;

pub use confab_protocol::client::rest::RestError as ApiError;

/// Where the API and socket live, from `/config.json` (empty: this origin).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoints {
    pub api_url: String,
    pub socket_url: String,
    /// How people sign in; absent when they do not.
    pub auth: Option<crate::auth::AuthSettings>,
}

thread_local! {
    static ENDPOINTS: RefCell<Endpoints> = RefCell::new(Endpoints::default());
}

fn window() -> Option<web_sys::Window> {
    web_sys::window()
}

/// Reads `/config.json`; without one, the API and socket are on this origin.
/// Returns how people sign in, if they do.
pub async fn load_endpoints() -> Option<crate::auth::AuthSettings> {
    let loaded = match Request::get("/config.json").send().await {
        Ok(r) if r.ok() => r.json::<Endpoints>().await.unwrap_or_default(),
        _ => Endpoints::default(),
    };
    let auth = loaded.auth.clone();
    ENDPOINTS.with(|e| *e.borrow_mut() = loaded);
    auth
}

fn api(path: &str) -> String {
    let base = ENDPOINTS.with(|e| e.borrow().api_url.trim_end_matches('/').to_string());
    format!("{base}{path}")
}

/// The socket URL: with a fresh one-use ticket when this browser has a
/// token (the token itself stays out of URLs).
pub async fn socket_url() -> Result<String, ApiError> {
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
    if token().is_none() {
        return Ok(url);
    }
    let ticket = client().socket_ticket().await?;
    Ok(format!("{url}?ticket={}", ticket.ticket))
}

/// The signed-in person's access token; without sign-in, a bearer token
/// kept in this browser (`localStorage["confab.token"]`, for scripts).
fn token() -> Option<String> {
    if crate::auth::enabled() {
        return crate::auth::access_token();
    }
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

/// The browser's fetch, to the configured API, with this browser's token.
struct Fetch;

impl Transport for Fetch {
    type Error = gloo_net::Error;

    /// A 401 with sign-in on gets one fresh token and one more try.
    async fn send(&self, r: HttpRequest) -> Result<HttpResponse, gloo_net::Error> {
        let url = api(&r.path);
        let mut tried = false;
        loop {
            let builder = match r.method {
                Method::Get => Request::get(&url),
                Method::Post => Request::post(&url),
                Method::Patch => Request::patch(&url),
                Method::Delete => Request::delete(&url),
            };
            let builder = authorized(builder);
            let response = match &r.body {
                Some(body) => {
                    builder
                        .header("Content-Type", "application/json")
                        .body(body.clone())?
                        .send()
                        .await?
                }
                None => builder.send().await?,
            };
            if response.status() == 401 && !tried && crate::auth::renew_after_refusal().await {
                tried = true;
                continue;
            }
            return Ok(HttpResponse {
                status: response.status(),
                body: response.text().await.unwrap_or_default(),
            });
        }
    }
}

/// A one-use ticket for the socket, for `renew`.
pub async fn socket_ticket() -> Result<String, ApiError> {
    Ok(client().socket_ticket().await?.ticket)
}

fn client() -> RestClient<Fetch> {
    RestClient::new(Fetch)
}

pub async fn config() -> Result<ConfigResponse, ApiError> {
    client().config().await
}

pub async fn list_sessions() -> Result<SessionPage, ApiError> {
    client().list_sessions(100).await
}

pub async fn session(id: &SessionId) -> Result<SessionDetail, ApiError> {
    client().session(id).await
}

pub async fn older(id: &SessionId, before_seq: u64) -> Result<MessagePage, ApiError> {
    client().messages(id, None, Some(before_seq), 50).await
}

/// How a create or send is sent again while the server answers 503
/// `unavailable`: its message is stored and only the start of the reply
/// failed, which the same request (same ids) finishes.
const UNAVAILABLE_RETRY: Backoff = Backoff {
    first: std::time::Duration::from_millis(500),
    max: std::time::Duration::from_secs(4),
    retries: 4,
    jitter: 0.2,
};

/// Calls `call` again while it answers `unavailable`, within
/// [`UNAVAILABLE_RETRY`].
async fn again_while_unavailable<T, F, Fut>(mut call: F) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut retry = 0;
    loop {
        let result = call().await;
        if let Err(ApiError::Refused {
            code: Some(ErrorCode::Unavailable),
            ..
        }) = &result
        {
            retry += 1;
            if let Some(wait) = UNAVAILABLE_RETRY.delay(retry, js_sys::Math::random()) {
                TimeoutFuture::new(wait.as_millis() as u32).await;
                continue;
            }
        }
        return result;
    }
}

pub async fn create(
    id: &SessionId,
    project_id: &ProjectId,
    permission_mode: PermissionMode,
    message: NewMessage,
) -> Result<SessionWithMessages, ApiError> {
    let request = CreateSessionRequest {
        id: Some(id.clone()),
        project_id: Some(project_id.clone()),
        title: None,
        permission_mode: Some(permission_mode),
        message,
    };
    again_while_unavailable(|| async { Ok(client().create_session(&request).await?.value) }).await
}

pub async fn send(id: &SessionId, message: NewMessage) -> Result<SendAnswer, ApiError> {
    again_while_unavailable(|| async {
        Ok(client()
            .send_message(id, message.clone(), None)
            .await?
            .value)
    })
    .await
}

pub async fn cancel_queued(id: &SessionId, message_id: &MessageId) -> Result<(), ApiError> {
    client().cancel_queued(id, message_id).await
}

pub async fn start_queued(id: &SessionId, message_id: &MessageId) -> Result<u16, ApiError> {
    client().start_queued(id, message_id).await
}

pub async fn stop(id: &SessionId) -> Result<SessionSummary, ApiError> {
    Ok(client().stop(id).await?.value)
}

pub async fn update(
    id: &SessionId,
    title: Option<String>,
    permission_mode: Option<PermissionMode>,
) -> Result<SessionSummary, ApiError> {
    let request = UpdateSessionRequest {
        title,
        permission_mode,
    };
    client().update(id, &request).await
}

pub async fn answer_request(
    id: &SessionId,
    request_id: &confab_protocol::RequestId,
    answer: &confab_protocol::rest::AnswerRequest,
) -> Result<confab_protocol::model::PendingRequest, ApiError> {
    client().answer_request(id, request_id, answer).await
}

pub async fn delete(id: &SessionId) -> Result<(), ApiError> {
    client().delete(id).await
}

/// Downloads the export of a session as a file.
pub async fn export(id: &SessionId, format: &str) -> Result<(), ApiError> {
    let text = client().export(id, format).await?;
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
