//! A stand-in for an LLM provider's HTTP API on loopback: it replays reply
//! streams from fixture files in the provider's own wire format, answers
//! scripted error statuses, records every request, and notices when a client
//! hangs up before a reply is done.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// An error status with a JSON body and maybe `Retry-After`.
    Status {
        status: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// Server-sent events, `delay` apart; with `hold`, the stream then stays
    /// open (sending SSE comments) until the client goes away.
    Stream {
        events: Vec<String>,
        delay: Duration,
        hold: bool,
    },
}

impl Reply {
    /// The events of a fixture file under `tests/fixtures/`.
    pub fn fixture(name: &str) -> Reply {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let events = text
            .split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| format!("{e}\n\n"))
            .collect();
        Reply::Stream {
            events,
            delay: Duration::from_millis(5),
            hold: false,
        }
    }

    /// The same, then held open.
    pub fn held(name: &str) -> Reply {
        match Reply::fixture(name) {
            Reply::Stream { events, delay, .. } => Reply::Stream {
                events,
                delay,
                hold: true,
            },
            other => other,
        }
    }

    pub fn status(status: u16, body: &str) -> Reply {
        Reply::Status {
            status,
            retry_after: None,
            body: body.into(),
        }
    }
}

/// A request as the provider saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    /// Replies whose body was dropped before it was all sent.
    cut_off: AtomicUsize,
    /// Replies sent to the end.
    finished: AtomicUsize,
}

#[derive(Clone)]
pub struct FakeProvider {
    pub base: String,
    inner: Arc<Inner>,
}

impl FakeProvider {
    /// Starts the server on a free loopback port.
    pub async fn start() -> FakeProvider {
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/{*path}", post(answer))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeProvider { base, inner }
    }

    /// Queues answers, used in order.
    pub fn then(&self, reply: Reply) -> &Self {
        self.inner.script.lock().unwrap().push_back(reply);
        self
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().clone()
    }

    pub fn cut_off(&self) -> usize {
        self.inner.cut_off.load(Ordering::SeqCst)
    }

    pub fn finished(&self) -> usize {
        self.inner.finished.load(Ordering::SeqCst)
    }

    /// Waits until a reply has been cut off by the client, or panics.
    pub async fn wait_cut_off(&self, n: usize) {
        for _ in 0..200 {
            if self.cut_off() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "the client never closed the reply stream ({} cut off)",
            self.cut_off()
        );
    }
}

/// Counts a reply as cut off when dropped before its end.
struct Watch {
    inner: Arc<Inner>,
    done: std::cell::Cell<bool>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let counter = if self.done.get() {
            &self.inner.finished
        } else {
            &self.inner.cut_off
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

async fn answer(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    inner.seen.lock().unwrap().push(Seen {
        path: uri.path().to_string(),
        headers,
        body,
    });
    let Some(reply) = inner.script.lock().unwrap().pop_front() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no scripted reply").into_response();
    };
    match reply {
        Reply::Status {
            status,
            retry_after,
            body,
        } => {
            let mut r = (StatusCode::from_u16(status).expect("status"), body).into_response();
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().expect("header"));
            }
            r
        }
        Reply::Stream {
            events,
            delay,
            hold,
        } => {
            let watch = Watch {
                inner: inner.clone(),
                done: std::cell::Cell::new(false),
            };
            let stream = futures::stream::unfold(
                (events.into_iter(), watch),
                move |(mut it, watch)| async move {
                    tokio::time::sleep(delay).await;
                    match it.next() {
                        Some(e) => Some((Ok::<_, std::io::Error>(Bytes::from(e)), (it, watch))),
                        None if hold => {
                            Some((Ok(Bytes::from_static(b": keep-alive\n\n")), (it, watch)))
                        }
                        None => {
                            watch.done.set(true);
                            None
                        }
                    }
                },
            );
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("cache-control", "no-cache")
                .body(Body::from_stream(stream))
                .expect("response")
        }
    }
}
