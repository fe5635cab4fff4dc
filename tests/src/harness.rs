//! Runs a real `confab` process on a free port with its own data directory,
//! and talks to it as clients do: REST over HTTP, events over a WebSocket,
//! applied by the protocol crate's own state machines.

use confab_protocol::client::rest::{HttpRequest, HttpResponse, Method, RestClient, Transport};
use confab_protocol::client::{CurrentSession, Effect, SessionList};
use confab_protocol::model::{Block, Role};
use confab_protocol::socket::MAX_SERVER_FRAME_BYTES;
use confab_protocol::{ConnectionId, ServerEvent, routes};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

pub const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
pub const WAIT: Duration = Duration::from_secs(20);

/// A fresh UUIDv7 as the browser makes it.
pub fn id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

/// An HS256 token for `sub`, valid for an hour.
pub fn token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    token_expiring(sub, now + 3600)
}

/// An HS256 token for `sub` whose `exp` is `exp` (seconds since the epoch).
pub fn token_expiring(sub: &str, exp: i64) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": sub, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Waits, if need be, for the next clock minute, so that `needed` fits in
/// the current one: per-minute limits are counted in clock minutes.
pub async fn within_one_minute(needed: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into = Duration::from_millis((now.as_millis() % 60_000) as u64);
    if into + needed > Duration::from_secs(59) {
        tokio::time::sleep(Duration::from_secs(60) - into + Duration::from_millis(200)).await;
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Whether gateways run in emulated-AWS mode (`CONFAB_TEST_AWS=1`):
/// DynamoDB on moto, push through the management API, turns through the
/// Lambda worker path. `cargo xtask test` runs the end-to-end suites in both.
pub fn aws_mode() -> bool {
    std::env::var("CONFAB_TEST_AWS").is_ok_and(|v| v == "1")
}

/// The `confab` binary, built once per test process (a no-op when fresh).
pub fn confab_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CONFAB_BIN") {
            return PathBuf::from(p);
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "-p",
                "confab-local",
                "--features",
                "aws",
                "--bin",
                "confab",
            ])
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building confab failed");
        target_dir().join("debug").join("confab")
    })
    .clone()
}

/// A running `confab` process.
pub struct Gateway {
    child: Option<Child>,
    pub base: String,
    pub data: PathBuf,
    env: Vec<(String, String)>,
    web_dir: PathBuf,
    /// Listen here again after a restart (so open pages can reconnect).
    keep_port: bool,
    aws: bool,
    _dir: Option<tempfile::TempDir>,
}

/// The built web app (`trunk build`), which the browser tests need.
pub fn web_dist() -> PathBuf {
    let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/dist");
    assert!(
        dist.join("index.html").is_file(),
        "the web app is not built in {}: run `cargo xtask test` (or `trunk build --release --offline`)",
        dist.display()
    );
    dist
}

impl Gateway {
    /// Starts a gateway with a new data directory and these environment
    /// variables (`CONFAB_DEMO_DELAY_MS` defaults to 1 here).
    pub async fn start(env: &[(&str, &str)]) -> Gateway {
        Gateway::start_in(env, aws_mode()).await
    }

    /// A gateway in emulated-AWS mode, whatever `CONFAB_TEST_AWS` says.
    pub async fn start_aws(env: &[(&str, &str)]) -> Gateway {
        Gateway::start_in(env, true).await
    }

    async fn start_in(env: &[(&str, &str)], aws: bool) -> Gateway {
        let mut env = owned(env);
        if aws {
            // Tables of its own, kept across restarts like a data directory.
            let t = crate::moto::fresh_tables();
            env.push((
                "CONFAB_AWS_ENDPOINT".into(),
                crate::moto::moto().url.clone(),
            ));
            env.push(("CONFAB_SESSIONS_TABLE".into(), t.sessions));
            env.push(("CONFAB_MESSAGES_TABLE".into(), t.messages));
            env.push(("CONFAB_CONNECTIONS_TABLE".into(), t.connections));
            // The worker's schedule, every second rather than every minute,
            // so that what it does (resume an expired request, close a dead
            // turn) happens within a test.
            if !env.iter().any(|(k, _)| k == "CONFAB_EMULATED_SWEEP_SECS") {
                env.push(("CONFAB_EMULATED_SWEEP_SECS".into(), "1".into()));
            }
        }
        Gateway::launch(env, aws).await
    }

    /// Starts a gateway with a new data directory and `env`
    /// (`CONFAB_DEMO_DELAY_MS` defaults to 1 here).
    async fn launch(mut env: Vec<(String, String)>, aws: bool) -> Gateway {
        if !env.iter().any(|(k, _)| k == "CONFAB_DEMO_DELAY_MS") {
            env.push(("CONFAB_DEMO_DELAY_MS".into(), "1".into()));
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut gw = Gateway {
            child: None,
            base: String::new(),
            data: dir.path().to_path_buf(),
            env,
            web_dir: PathBuf::from("/nonexistent"),
            keep_port: false,
            aws,
            _dir: Some(dir),
        };
        gw.spawn().await;
        gw
    }

    /// A gateway serving the built web app, that restarts on the same port
    /// (so that open pages reconnect to it).
    pub async fn start_with_web(env: &[(&str, &str)]) -> Gateway {
        let web = web_dist();
        let mut gw = Gateway::start(env).await;
        gw.kill().await;
        gw.web_dir = web;
        gw.keep_port = true;
        gw.spawn().await;
        gw
    }

    /// A gateway serving the built web app on this port (an address a
    /// provider must know before the gateway starts).
    pub async fn start_with_web_on(env: &[(&str, &str)], port: u16) -> Gateway {
        let mut gw = Gateway::start(env).await;
        gw.kill().await;
        gw.web_dir = web_dist();
        gw.keep_port = true;
        gw.base = format!("http://127.0.0.1:{port}");
        gw.spawn().await;
        gw
    }

    /// A gateway with auth on (HS256 with `SECRET`).
    pub async fn start_jwt(env: &[(&str, &str)]) -> Gateway {
        let mut all = vec![("CONFAB_AUTH", "jwt"), ("CONFAB_JWT_SECRET", SECRET)];
        all.extend_from_slice(env);
        Gateway::start(&all).await
    }

    async fn spawn(&mut self) {
        let addr = match self.base.strip_prefix("http://") {
            Some(a) if self.keep_port => a.to_string(),
            _ => "127.0.0.1:0".to_string(),
        };
        let mut cmd = Command::new(confab_bin());
        if self.aws {
            cmd.arg("--aws-emulated");
        }
        cmd.args(["--addr", &addr, "--data-dir"])
            .arg(&self.data)
            .arg("--web-dir")
            .arg(&self.web_dir)
            .env_remove("CONFAB_AUTH")
            .env_remove("CONFAB_AGENT")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting confab");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("confab did not start in time")
            .expect("reading confab's output")
            .expect("confab exited before listening");
        let url = line
            .strip_prefix("confab listening on ")
            .expect("the listening line")
            .trim()
            .to_string();
        // Keep draining stdout so the process never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.base = url;
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("running")
    }

    /// Kills the process at once, as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("kill");
        }
    }

    /// Ctrl-C: sends SIGINT and waits for the exit code.
    pub async fn interrupt(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().expect("pid").to_string();
        let ok = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill -INT");
        assert!(ok.success());
        tokio::time::timeout(WAIT, c.wait())
            .await
            .expect("confab did not exit after Ctrl-C")
            .expect("wait")
    }

    /// A second emulated-AWS gateway on this one's tables (a data directory
    /// of its own), as a second Lambda instance shares DynamoDB: `env` and
    /// the table settings of this one.
    pub async fn sharing_tables(&self, env: &[(&str, &str)]) -> Gateway {
        assert!(self.aws, "only emulated-AWS gateways share tables");
        let mut all = owned(env);
        all.extend(
            self.env
                .iter()
                .filter(|(k, _)| k == "CONFAB_AWS_ENDPOINT" || k.ends_with("_TABLE"))
                .cloned(),
        );
        Gateway::launch(all, true).await
    }

    /// Starts the process again on the same data directory (a new port).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// The management API's endpoint (as API Gateway's `https://{domain}/{stage}`):
    /// this gateway's URL and the key it wrote into its data directory.
    pub fn management_endpoint(&self) -> String {
        let key = std::fs::read_to_string(self.data.join("management-key"))
            .expect("the gateway's management key");
        format!("{}/{}", self.base, key.trim())
    }

    /// The management endpoint's path on this gateway (`/{key}`).
    pub fn management_path(&self) -> String {
        self.management_endpoint()
            .trim_start_matches(&self.base)
            .to_string()
    }

    pub fn api(&self, token: Option<&str>) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: self.base.clone(),
            token: token.map(str::to_string),
        }
    }

    /// The socket URL with a token in it (refused when auth is on: tokens
    /// stay out of URLs), or with nothing.
    pub fn ws_url(&self, token: Option<&str>) -> String {
        let base = self.base.replacen("http://", "ws://", 1);
        match token {
            Some(t) => format!("{base}/ws?token={t}"),
            None => format!("{base}/ws"),
        }
    }

    /// The socket URL with a fresh one-use ticket for `token`'s owner.
    pub async fn ticket_url(&self, token: &str) -> String {
        let r = self
            .api(Some(token))
            .call("POST", routes::SOCKET_TICKET, None)
            .await;
        assert_eq!(r.status, 201, "a socket ticket: {}", r.text);
        let ticket = r.body["ticket"].as_str().expect("a ticket");
        let base = self.base.replacen("http://", "ws://", 1);
        format!("{base}/ws?ticket={ticket}")
    }

    /// A socket as `token`'s owner (through a ticket), or with auth off.
    pub async fn socket(&self, token: Option<&str>) -> Socket {
        let url = match token {
            Some(t) => self.ticket_url(t).await,
            None => self.ws_url(None),
        };
        Socket::connect(&url).await.expect("socket connects")
    }
}

/// An HTTP client for `/api`: raw requests (for bad input and exact
/// statuses) and, through `typed()`, the protocol's typed REST client.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    token: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

/// reqwest carrying the typed client's requests.
impl Transport for Api {
    type Error = reqwest::Error;

    async fn send(&self, r: HttpRequest) -> Result<HttpResponse, reqwest::Error> {
        let method = match r.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        };
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, r.path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = r.body {
            req = req.header("content-type", "application/json").body(b);
        }
        let res = req.send().await?;
        Ok(HttpResponse {
            status: res.status().as_u16(),
            body: res.text().await?,
        })
    }
}

impl Api {
    /// The protocol's typed REST client, as the web app uses it.
    pub fn typed(&self) -> RestClient<Api> {
        RestClient::new(self.clone())
    }

    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: base.to_string(),
            token: token.map(str::to_string),
        }
    }

    pub async fn raw(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Reply {
        self.request(method, path, body, &[]).await
    }

    /// A request with extra headers (as a browser on some site would send).
    pub async fn with_headers(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
        self.request(method, path, body, headers).await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            headers,
            text,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.raw(
            method,
            path,
            body.map(|b| serde_json::to_vec(&b).expect("json")),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    /// `POST /api/sessions` with a new session id and first message.
    pub async fn create(&self, session_id: &str, message_id: &str, text: &str) -> Reply {
        self.call(
            "POST",
            routes::SESSIONS,
            Some(json!({ "id": session_id, "message": { "id": message_id, "text": text } })),
        )
        .await
    }

    pub async fn send(&self, session_id: &str, message_id: &str, text: &str) -> Reply {
        self.call(
            "POST",
            &routes::messages(session_id),
            Some(json!({ "id": message_id, "text": text })),
        )
        .await
    }

    pub async fn stop(&self, session_id: &str) -> Reply {
        self.call("POST", &routes::stop(session_id), None).await
    }

    pub async fn session(&self, session_id: &str) -> Reply {
        self.get(&routes::session(session_id)).await
    }

    /// Every stored message of a session, oldest first.
    pub async fn all_messages(&self, session_id: &str) -> Vec<confab_protocol::Message> {
        let id = session_id.parse().expect("a session id");
        self.typed()
            .messages(&id, Some(0), None, 100)
            .await
            .expect("the messages")
            .messages
    }

    /// Polls the session until `cond` holds on its JSON.
    pub async fn wait_session(&self, session_id: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self.session(session_id).await;
            if r.status == 200 && cond(&r.body) {
                return r.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "session never reached the state; last: {}",
                r.text
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A WebSocket client. Every frame is parsed as a `ServerEvent`; frames over
/// the contract's size are counted.
pub struct Socket {
    sink: futures::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        WsMessage,
    >,
    rx: mpsc::UnboundedReceiver<ServerEvent>,
    /// The status and reason of the server's close frame, once it came.
    pub closed_with: Arc<std::sync::Mutex<Option<(u16, String)>>>,
    pub oversize_frames: Arc<AtomicUsize>,
    pub frames: Arc<AtomicUsize>,
    pub connection_id: Option<ConnectionId>,
}

#[derive(Debug)]
pub enum ConnectError {
    Http(u16),
    Other(String),
}

impl Socket {
    pub async fn connect(url: &str) -> Result<Socket, ConnectError> {
        Socket::connect_with_headers(url, &[]).await
    }

    /// `connect`, with these headers on the handshake.
    pub async fn connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Socket, ConnectError> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectError::Other(e.to_string()))?;
        for (k, v) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes())
                    .expect("header name"),
                v.parse().expect("header value"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(r) => {
                    ConnectError::Http(r.status().as_u16())
                }
                other => ConnectError::Other(other.to_string()),
            })?;
        let (sink, mut stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let oversize = Arc::new(AtomicUsize::new(0));
        let frames = Arc::new(AtomicUsize::new(0));
        let (o, f) = (oversize.clone(), frames.clone());
        let closed_with = Arc::new(std::sync::Mutex::new(None));
        let closed = closed_with.clone();
        tokio::spawn(async move {
            let mut joining = confab_protocol::socket::Reassembly::default();
            while let Some(Ok(msg)) = stream.next().await {
                if let WsMessage::Close(frame) = &msg {
                    *closed.lock().unwrap() = Some(
                        frame
                            .as_ref()
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                    continue;
                }
                let WsMessage::Text(t) = msg else { continue };
                f.fetch_add(1, Ordering::Relaxed);
                if t.len() > MAX_SERVER_FRAME_BYTES {
                    o.fetch_add(1, Ordering::Relaxed);
                }
                match serde_json::from_str::<ServerEvent>(t.as_str()) {
                    Ok(e) => match joining.accept(e) {
                        Ok(None) => {}
                        Ok(Some(e)) => {
                            if tx.send(e).is_err() {
                                break;
                            }
                        }
                        Err(e) => panic!("the server sent parts that do not join: {e}"),
                    },
                    Err(e) => panic!("server sent a frame outside the contract: {e}: {t}"),
                }
            }
        });
        Ok(Socket {
            sink,
            rx,
            closed_with,
            oversize_frames: oversize,
            frames,
            connection_id: None,
        })
    }

    pub async fn send_text(&mut self, s: &str) {
        self.sink
            .send(WsMessage::Text(s.to_string().into()))
            .await
            .expect("send");
    }

    pub async fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next event, or None after `timeout` (or when the socket closed).
    pub async fn next(&mut self, timeout: Duration) -> Option<ServerEvent> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }

    /// Waits for an event matching `pred`, returning it and the ones before.
    pub async fn expect(
        &mut self,
        what: &str,
        pred: impl Fn(&ServerEvent) -> bool,
    ) -> (ServerEvent, Vec<ServerEvent>) {
        self.expect_within(what, WAIT, pred).await
    }

    /// `expect` with a wait of its own.
    pub async fn expect_within(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&ServerEvent) -> bool,
    ) -> (ServerEvent, Vec<ServerEvent>) {
        let mut before = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(e) if pred(&e) => return (e, before),
                Some(e) => before.push(e),
                None => panic!("no {what} arrived; got {before:#?}"),
            }
        }
    }

    /// Waits for the server to close the socket; its status and reason.
    pub async fn wait_closed(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(c) = self.closed_with.lock().unwrap().clone() {
                return c;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server did not close the socket"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Says hello and waits for `ready`.
    pub async fn hello(&mut self) {
        self.send(&json!({ "action": "hello" })).await;
        let (e, _) = self
            .expect("ready", |e| matches!(e, ServerEvent::Ready { .. }))
            .await;
        if let ServerEvent::Ready { connection_id, .. } = e {
            self.connection_id = Some(connection_id);
        }
    }

    pub async fn subscribe(&mut self, session_id: &str, after_seq: u64) {
        self.send(
            &json!({ "action": "subscribe", "sessionId": session_id, "afterSeq": after_seq }),
        )
        .await;
    }

    /// Events that arrive within `d`.
    pub async fn drain(&mut self, d: Duration) -> Vec<ServerEvent> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        while let Some(e) = self
            .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            out.push(e);
        }
        out
    }

    pub async fn close(mut self) {
        let _ = self.sink.send(WsMessage::Close(None)).await;
    }
}

/// A client as the web app is one: a socket, the current session and the
/// session list, kept by the protocol's state machines.
pub struct Viewer {
    pub socket: Socket,
    pub current: CurrentSession,
    pub list: SessionList,
    pub events: Vec<ServerEvent>,
    pub resubscribes: usize,
    /// For every reply stored while this viewer watched it stream: the reply
    /// as assembled from frames, and as stored.
    pub assembled: Vec<(Vec<Block>, Vec<Block>)>,
    pending_resubscribe: bool,
    /// A renewal that must wait until then (`Effect::ResubscribeAfter`).
    resubscribe_at: Option<tokio::time::Instant>,
}

impl Viewer {
    /// Connects, says hello and subscribes from what `current` holds.
    pub async fn open(gw: &Gateway, token: Option<&str>, current: CurrentSession) -> Viewer {
        let mut v = Viewer::connect(gw, token, current).await;
        v.subscribe().await;
        v
    }

    /// Connects and says hello; subscribes later (once the session exists).
    pub async fn connect(gw: &Gateway, token: Option<&str>, current: CurrentSession) -> Viewer {
        let mut socket = gw.socket(token).await;
        socket.hello().await;
        Viewer {
            socket,
            current,
            list: SessionList::new(),
            events: Vec::new(),
            resubscribes: 0,
            assembled: Vec::new(),
            pending_resubscribe: false,
            resubscribe_at: None,
        }
    }

    pub async fn subscribe(&mut self) {
        self.current.subscribe_sent();
        let (sid, after) = (
            self.current.session_id().to_string(),
            self.current.last_seq(),
        );
        self.socket.subscribe(&sid, after).await;
    }

    /// Replaces the socket with a new connection and subscribes again.
    pub async fn reconnect(&mut self, gw: &Gateway, token: Option<&str>) {
        let mut socket = gw.socket(token).await;
        socket.hello().await;
        let old = std::mem::replace(&mut self.socket, socket);
        drop(old);
        self.subscribe().await;
    }

    fn apply(&mut self, e: ServerEvent) {
        if let ServerEvent::MessageCreated { message, .. } = &e
            && message.role == Role::Assistant
            && let Some(live) = self.current.live()
            && live.message_id == message.id
        {
            self.assembled
                .push((live.content.clone(), message.content.clone()));
        }
        self.list.apply(&e);
        match self.current.apply_event(&e) {
            Effect::Resubscribe { .. } => {
                self.resubscribes += 1;
                self.pending_resubscribe = true;
            }
            Effect::ResubscribeAfter { wait_ms } => {
                self.resubscribes += 1;
                self.resubscribe_at =
                    Some(tokio::time::Instant::now() + Duration::from_millis(wait_ms));
            }
            Effect::None => {}
        }
        self.events.push(e);
    }

    /// Applies events until `cond` holds.
    pub async fn until(&mut self, what: &str, cond: impl Fn(&Viewer) -> bool) {
        self.until_within(what, WAIT, cond).await
    }

    /// `until` with a wait of its own.
    pub async fn until_within(
        &mut self,
        what: &str,
        wait: Duration,
        cond: impl Fn(&Viewer) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        while !cond(self) {
            let now = tokio::time::Instant::now();
            if self.resubscribe_at.is_some_and(|at| now >= at) {
                self.resubscribe_at = None;
                self.pending_resubscribe = true;
            }
            if std::mem::take(&mut self.pending_resubscribe) {
                self.subscribe().await;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Some(at) = self.resubscribe_at
                && at < deadline
            {
                // Wait for an event, or until the renewal is due.
                let until_due = at.saturating_duration_since(tokio::time::Instant::now());
                if let Some(e) = self.socket.next(until_due).await {
                    self.apply(e);
                }
                continue;
            }
            match self.socket.next(left).await {
                Some(e) => self.apply(e),
                None => panic!(
                    "never reached: {what}; phase {:?}; last events {:#?}",
                    self.current.phase(),
                    &self.events[self.events.len().saturating_sub(6)..]
                ),
            }
        }
    }

    /// The text of the in-flight reply.
    pub fn live_text(&self) -> String {
        self.current
            .live()
            .map(|l| {
                l.content
                    .iter()
                    .filter_map(|b| b.as_text())
                    .collect::<String>()
            })
            .unwrap_or_default()
    }

    pub fn assistant_count(&self) -> usize {
        self.current
            .stored()
            .filter(|m| m.role == Role::Assistant)
            .count()
    }
}
