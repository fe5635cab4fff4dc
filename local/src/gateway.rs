//! The local stand-in for API Gateway: REST through the shared Router, `/ws`
//! through the shared socket handlers, the `@connections` management
//! endpoint, and the built web app.

use crate::registry::{Outbox, Outgoing, Registry};
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{
    CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade, close_code,
};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use confab_functions::api::auth::Auth;
use confab_functions::api::socket;
use confab_functions::ports::{Push, Store};
use confab_protocol::socket::parse_client_frame;
use confab_protocol::{ClientFrame, ConnectionId};
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};

/// Largest frame a client may send before the socket is closed (API
/// Gateway's own limit); frames over the contract's 8 KiB get an error frame.
const MAX_INCOMING_FRAME: usize = 128 * 1024;

/// What a socket reads into at once. The library's default (128 KiB) is
/// held by every socket from the start: 10,000 idle sockets held 1.4 GB.
/// A larger frame still arrives; the buffer grows for it.
const READ_BUFFER: usize = 4 * 1024;
/// Written frames are gathered up to this before they go to the socket.
const WRITE_BUFFER: usize = 8 * 1024;

/// The answer to `ping`, encoded once.
static PONG: std::sync::LazyLock<Bytes> = std::sync::LazyLock::new(|| {
    Bytes::from(serde_json::to_vec(&confab_protocol::ServerEvent::Pong).unwrap_or_default())
});

/// A write to a socket that takes longer than this closes it: its client is
/// not reading.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Gateway {
    pub store: Arc<dyn Store>,
    pub push: Arc<dyn Push>,
    pub registry: Arc<Registry>,
    pub auth: Arc<Auth>,
    /// Auth is off: answer only this machine, directly (no proxy).
    pub local_only: bool,
    /// Sockets one owner may hold at once.
    pub max_sockets_per_owner: usize,
    /// The management endpoint's key: the first segment of its path, as a
    /// stage is on API Gateway. Only this process and its own push client
    /// know it (and the data directory's `management-key`, 0600).
    pub management_key: String,
    /// The SQLite store's write counter (none on emulated AWS).
    pub store_writes: Option<Arc<confab_functions::store::sqlite::Counters>>,
}

/// Lets a management request through only under this process's key
/// (compared in constant time); any other key is an unknown path.
async fn management_key(
    State(gw): State<Arc<Gateway>>,
    Path((key, _)): Path<(String, String)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !gw.key_matches(&key) {
        return not_here();
    }
    next.run(req).await
}

impl Gateway {
    /// Whether `key` is this process's management key (in constant time).
    fn key_matches(&self, key: &str) -> bool {
        let (a, b) = (self.management_key.as_bytes(), key.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
    }
}

/// `GET /{key}/@stats`: what an operator (and `cargo xtask load`) watches:
/// open sockets and the store's writes so far.
async fn stats(State(gw): State<Arc<Gateway>>, Path(key): Path<String>) -> Response {
    if !gw.key_matches(&key) {
        return not_here();
    }
    axum::Json(serde_json::json!({
        "sockets": gw.registry.len(),
        "storeWrites": gw
            .store_writes
            .as_ref()
            .map(|c| c.writes.load(std::sync::atomic::Ordering::Relaxed)),
        "storeCommits": gw
            .store_writes
            .as_ref()
            .map(|c| c.commits.load(std::sync::atomic::Ordering::Relaxed)),
    }))
    .into_response()
}

/// What a wrong management key gets: the same as any unknown path.
fn not_here() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({ "message": "Not Found" })),
    )
        .into_response()
}

/// Headers a proxy adds: a request that carries one came from somewhere
/// else than the peer the gateway sees.
const PROXY_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Refuses what a browser sends on behalf of another site: a request whose
/// `Origin` is not this gateway's own (cross-site requests and socket
/// hijacking), and, while auth is off, a `Host` that is a name other than
/// `localhost` (a DNS-rebinding page). Non-browser clients send no `Origin`.
async fn same_site_only(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = req.headers();
    if gw.local_only {
        // Without auth, only this machine, and not through a proxy that
        // could carry other machines' requests.
        if !peer.ip().is_loopback() {
            return refused("without auth, Confab answers only this machine");
        }
        if PROXY_HEADERS.iter().any(|h| headers.contains_key(*h)) {
            return refused("without auth, Confab does not answer through a proxy");
        }
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            == Some(host);
        if !same {
            return refused("requests from other sites are refused");
        }
    }
    if matches!(*gw.auth, Auth::None) && !host_is_local(host) {
        return refused("without auth, Confab answers only at an IP address or localhost");
    }
    next.run(req).await
}

/// `localhost` or an IP literal, with or without a port.
fn host_is_local(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

fn refused(message: &str) -> Response {
    let body = confab_protocol::rest::ErrorBody {
        error: confab_protocol::rest::ErrorDetail {
            code: confab_protocol::rest::ErrorCode::Unauthorized,
            message: message.to_string(),
        },
        request: None,
    };
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// The management endpoint is for this machine's own processes.
pub(crate) async fn loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !peer.ip().is_loopback() {
        return refused("the management endpoint answers only on this machine");
    }
    next.run(req).await
}

/// What the web app is told beyond where the API is: how to sign in
/// (`auth` in `/config.json`), and the origins it may talk to for that.
#[derive(Clone, Debug, Default)]
pub struct WebApp {
    pub auth: Option<serde_json::Value>,
    pub connect_src: Vec<String>,
}

pub fn router(gw: Arc<Gateway>, api: Router, web_dir: Option<PathBuf>, web: WebApp) -> Router {
    let guard = axum::middleware::from_fn_with_state(gw.clone(), same_site_only);
    let sockets = Router::new()
        .route("/ws", get(upgrade))
        .route(
            "/{key}/@connections/{id}",
            get(conn_info)
                .post(conn_post)
                .delete(conn_delete)
                .layer(axum::middleware::from_fn_with_state(
                    gw.clone(),
                    management_key,
                ))
                .layer(axum::middleware::from_fn(loopback_only)),
        )
        .route(
            "/{key}/@stats",
            get(stats).layer(axum::middleware::from_fn(loopback_only)),
        )
        // The old, keyless path: not there.
        .route(
            "/@connections/{*rest}",
            axum::routing::any(|| async { not_here() }),
        )
        .with_state(gw);
    let web_auth = web.auth.clone();
    let config_file = web_dir
        .as_ref()
        .map(|d| d.join("config.json"))
        .filter(|f| f.is_file());
    let app = api.merge(sockets).route(
        "/config.json",
        get(move || web_config(config_file.clone(), web_auth.clone())),
    );
    let web_dir = web_dir.filter(|d| d.join("index.html").is_file());
    let csp = content_security_policy(
        web_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("index.html")).ok())
            .as_deref()
            .unwrap_or(""),
        &web.connect_src,
    );
    let app = match web_dir {
        Some(dir) => {
            let index = dir.join("index.html");
            app.fallback_service(ServeDir::new(dir).fallback(ServeFile::new(index)))
        }
        None => app.fallback(no_web_app),
    };
    let csp = HeaderValue::from_str(&csp).expect("the policy is ASCII");
    app.layer(guard)
        .layer(axum::middleware::from_fn(move |req, next| {
            security_headers(csp.clone(), req, next)
        }))
}

/// The browser's rules for the web app: its scripts only from this origin
/// (and the one inline loader Trunk writes, by its hash), WebAssembly
/// compiled, no framing by other sites, no sniffing, no referrer to others.
/// `'unsafe-eval'` is there because Dioxus's web renderer runs its document
/// updates (such as the title) through `new Function`; it evaluates only
/// what the app's own code hands it, and no script from elsewhere, inline
/// or injected, may run.
fn content_security_policy(index_html: &str, connect_src: &[String]) -> String {
    let hashes: String = inline_script_hashes(index_html)
        .iter()
        .map(|h| format!(" {h}"))
        .collect();
    let connect: String = connect_src.iter().map(|o| format!(" {o}")).collect();
    format!(
        "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' 'unsafe-eval'{hashes}; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'{connect}; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The CSP sources (`'sha256-…'`) of the inline scripts of a page: the
/// loader Trunk writes into `index.html`. `cargo xtask deploy` gives the
/// same to CloudFront's policy (`confab --print-script-hashes`).
pub fn inline_script_hashes(index_html: &str) -> Vec<String> {
    use base64::engine::general_purpose::STANDARD;
    use sha2::Digest;
    let mut hashes = Vec::new();
    let mut rest = index_html;
    while let Some(at) = rest.find("<script") {
        let tag_end = match rest[at..].find('>') {
            Some(e) => at + e,
            None => break,
        };
        let tag = &rest[at..tag_end];
        let body_end = match rest[tag_end..].find("</script>") {
            Some(e) => tag_end + e,
            None => break,
        };
        if !tag.contains("src=") {
            let body = &rest[tag_end + 1..body_end];
            hashes.push(format!(
                "'sha256-{}'",
                STANDARD.encode(sha2::Sha256::digest(body.as_bytes()))
            ));
        }
        rest = &rest[body_end..];
    }
    hashes
}

async fn security_headers(
    csp: HeaderValue,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// Where the web app finds the API and the socket, and how it signs in: the
/// web directory's own `config.json` when it has one, else this origin
/// (empty URLs) and this gateway's sign-in settings.
async fn web_config(file: Option<PathBuf>, auth: Option<serde_json::Value>) -> Response {
    if let Some(f) = file
        && let Ok(body) = tokio::fs::read(&f).await
    {
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let mut config = serde_json::json!({ "apiUrl": "", "socketUrl": "" });
    if let Some(auth) = auth {
        config["auth"] = auth;
    }
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(config)).into_response()
}

async fn no_web_app() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><meta charset=utf-8><title>Confab</title>",
        "<h1>Confab is running</h1>",
        "<p>No built web app was found in the web directory (<code>--web-dir</code>, ",
        "default <code>web/dist</code>).</p>",
        "<p>The API is at <a href=/api/health>/api</a> and the socket at <code>/ws</code>.</p>"
    ))
}

/// A fresh connection id in API Gateway's form: 16 base64 characters.
fn new_connection_id() -> ConnectionId {
    let bytes = uuid::Uuid::now_v7().into_bytes();
    ConnectionId::parse(base64::engine::general_purpose::URL_SAFE.encode(&bytes[6..]))
        .expect("URL-safe base64 is a valid connection id")
}

async fn upgrade(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let id = new_connection_id();
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Registered before $connect so that an event broadcast meanwhile waits
    // in the queue instead of finding the connection gone.
    let rx = gw.registry.add(&id, peer.ip().to_string(), agent);
    let handshake = socket::Handshake {
        ticket: q.get("ticket").map(String::as_str),
        token: q.get("token").map(String::as_str),
    };
    let who = match socket::connect(
        &*gw.store,
        &gw.auth,
        &id,
        handshake,
        gw.max_sockets_per_owner,
    )
    .await
    {
        Ok(who) => who,
        Err(e) => {
            gw.registry.remove(&id);
            let _ = socket::disconnect(&*gw.store, &id).await;
            return confab_functions::api::rest::ApiError(e).into_response();
        }
    };
    // The socket ends when its token does, unless renewed with a fresher
    // one meanwhile: told with an `error` frame, then closed.
    if let Some(mut until) = who.auth_expires_ms {
        let (gw, id) = (gw.clone(), id.clone());
        tokio::spawn(async move {
            loop {
                let left = until - confab_functions::clock::now_ms();
                tokio::time::sleep(std::time::Duration::from_millis(left.max(0) as u64)).await;
                if gw.registry.info(&id).is_none() {
                    return;
                }
                match gw.store.connection(&id).await {
                    Ok(Some(renewed)) => match renewed.auth_expires_ms {
                        Some(later) if later > until => until = later,
                        Some(_) => break,
                        None => return,
                    },
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if let Err(e) = socket::expire(&*gw.store, &*gw.push, &id).await {
                tracing::warn!(
                    error = &e as &dyn std::error::Error,
                    "closing an expired socket failed"
                );
            }
        });
    }
    let failed = gw.clone();
    let failed_id = id.clone();
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(MAX_INCOMING_FRAME)
        .max_frame_size(MAX_INCOMING_FRAME)
        .on_failed_upgrade(move |_| {
            failed.registry.remove(&failed_id);
            let store = failed.store.clone();
            tokio::spawn(async move {
                let _ = socket::disconnect(&*store, &failed_id).await;
            });
        })
        .on_upgrade(move |socket| serve_socket(gw, id, socket, rx))
}

/// Whether a read failed because the client's message is over the limit.
fn too_big(e: axum::Error) -> bool {
    matches!(
        e.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}

async fn serve_socket(gw: Arc<Gateway>, id: ConnectionId, socket: WebSocket, outbox: Outbox) {
    let Outbox {
        mut rx,
        queued,
        cut,
    } = outbox;
    let (mut sink, mut stream) = socket.split();
    // The reader's reason to close (a frame too big), sent ahead of anything
    // still queued.
    let (close_tx, mut close_rx) = tokio::sync::oneshot::channel::<CloseFrame>();
    let mut writer = tokio::spawn(async move {
        loop {
            let out = tokio::select! {
                biased;
                _ = cut.notified() => {
                    // Too far behind: what waits is dropped now, with the
                    // socket; a close frame is tried, briefly.
                    let bye = CloseFrame {
                        code: close_code::POLICY,
                        reason: "too far behind: the client does not read what it is sent".into(),
                    };
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(WsMessage::Close(Some(bye)))).await;
                    break;
                }
                why = &mut close_rx => {
                    if let Ok(frame) = why {
                        let _ = sink.send(WsMessage::Close(Some(frame))).await;
                    }
                    break;
                }
                out = rx.recv() => match out {
                    Some(out) => out,
                    None => break,
                },
            };
            let msg = match out {
                // The frame encoded once for every subscriber, shared: no
                // copy per connection.
                Outgoing::Frame(b) => match axum::extract::ws::Utf8Bytes::try_from(b.clone()) {
                    Ok(s) => WsMessage::Text(s),
                    Err(_) => WsMessage::Binary(b),
                },
                Outgoing::Close(why) => {
                    let frame = why.map(|(code, reason)| CloseFrame {
                        code,
                        reason: reason.into(),
                    });
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(WsMessage::Close(frame)))
                        .await;
                    break;
                }
            };
            let len = match &msg {
                WsMessage::Text(t) => t.len(),
                WsMessage::Binary(b) => b.len(),
                _ => 0,
            };
            let sent = tokio::select! {
                biased;
                _ = cut.notified() => break,
                r = tokio::time::timeout(WRITE_TIMEOUT, sink.send(msg)) => r,
            };
            match sent {
                Ok(Ok(())) => {
                    queued.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::info!("a socket write timed out; closing the connection");
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.close()).await;
    });
    let mut writer_done = false;
    loop {
        // The writer ending (cut off, timed out, closed) ends the reading too.
        let read = tokio::select! {
            r = stream.next() => r,
            _ = &mut writer => {
                writer_done = true;
                break;
            }
        };
        let Some(read) = read else { break };
        let msg = match read {
            Ok(msg) => msg,
            Err(e) => {
                if too_big(e) {
                    let _ = close_tx.send(CloseFrame {
                        code: close_code::SIZE,
                        reason: format!(
                            "message too big: frames are at most {} KiB",
                            MAX_INCOMING_FRAME / 1024
                        )
                        .into(),
                    });
                }
                break;
            }
        };
        let text = match msg {
            WsMessage::Text(t) => t.as_str().to_string(),
            WsMessage::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
            WsMessage::Close(_) => break,
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
        };
        gw.registry.touch(&id);
        // A ping needs no store: here a socket's token is ended by its own
        // timer, not checked at each frame as on API Gateway.
        if matches!(parse_client_frame(&text), Ok(ClientFrame::Ping)) {
            let _ = gw.registry.send(&id, PONG.clone());
            continue;
        }
        if let Err(e) = socket::route(&*gw.store, &*gw.push, &id, &text).await {
            tracing::error!(error = &e as &dyn std::error::Error, "socket route failed");
        }
    }
    gw.registry.remove(&id);
    if let Err(e) = socket::disconnect(&*gw.store, &id).await {
        tracing::warn!(
            error = &e as &dyn std::error::Error,
            "forgetting a connection failed"
        );
    }
    if !writer_done {
        let _ = writer.await;
    }
}

/// API Gateway's answer for a connection that is no more: the SDKs read the
/// error type from the header.
fn gone() -> Response {
    (
        StatusCode::GONE,
        [("x-amzn-ErrorType", "GoneException")],
        axum::Json(serde_json::json!({ "message": "Gone" })),
    )
        .into_response()
}

async fn conn_info(
    State(gw): State<Arc<Gateway>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    match gw.registry.info(&id) {
        Some(info) => axum::Json(info).into_response(),
        None => gone(),
    }
}

async fn conn_post(
    State(gw): State<Arc<Gateway>>,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_INCOMING_FRAME {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [("x-amzn-ErrorType", "PayloadTooLargeException")],
            axum::Json(serde_json::json!({ "message": "Payload too large" })),
        )
            .into_response();
    }
    match gw.registry.send(&id, body) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(_) => gone(),
    }
}

async fn conn_delete(
    State(gw): State<Arc<Gateway>>,
    Path((_, id)): Path<(String, String)>,
) -> Response {
    if gw.registry.close(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gone()
    }
}

#[cfg(test)]
mod tests {
    use super::host_is_local;

    #[test]
    fn only_ip_literals_and_localhost_are_local_hosts() {
        for ok in [
            "127.0.0.1:8787",
            "localhost:8787",
            "LOCALHOST",
            "[::1]:8787",
            "192.168.1.5:8787",
            "10.0.0.1",
        ] {
            assert!(host_is_local(ok), "{ok}");
        }
        for bad in [
            "evil.example:8787",
            "evil.example",
            "127.0.0.1.nip.io:8787",
            "localhost.evil:80",
            "",
        ] {
            assert!(!host_is_local(bad), "{bad}");
        }
    }
}
