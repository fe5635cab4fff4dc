//! The live socket connections of this process: what API Gateway keeps for a
//! WebSocket API, and what its `@connections` management endpoint reaches.

use async_trait::async_trait;
use bytes::Bytes;
use confab_functions::ports::{Push, PushError};
use confab_protocol::Timestamp;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, mpsc};

/// What a connection's writer serves: its queue, the bytes in it, and the
/// signal that cuts it off.
pub struct Outbox {
    pub rx: mpsc::Receiver<Outgoing>,
    pub queued: Arc<AtomicUsize>,
    pub cut: Arc<Notify>,
}

/// Frames waiting for a slow connection before it is cut off...
const QUEUE: usize = 4096;
/// ...or bytes: a client that does not read cannot make the server hold
/// more than this for it.
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;

pub enum Outgoing {
    Frame(Bytes),
    /// Close the socket, with a status and reason when there is one to give.
    Close(Option<(u16, &'static str)>),
}

struct Entry {
    tx: mpsc::Sender<Outgoing>,
    /// Bytes queued and not yet written to the socket.
    queued: Arc<AtomicUsize>,
    /// Told when the connection is cut off: its writer drops what waits.
    cut: Arc<Notify>,
    connected_at: Timestamp,
    last_active_ms: AtomicI64,
    source_ip: String,
    user_agent: String,
}

/// What `GET @connections/{id}` answers.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInfo {
    pub connected_at: Timestamp,
    pub last_active_at: Timestamp,
    pub identity: Identity,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub source_ip: String,
    pub user_agent: String,
}

#[derive(Default)]
pub struct Registry {
    conns: Mutex<HashMap<String, Entry>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection; frames for it queue until its socket is served.
    pub fn add(&self, id: &str, source_ip: String, user_agent: String) -> Outbox {
        let (tx, rx) = mpsc::channel(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let cut = Arc::new(Notify::new());
        let now = confab_functions::clock::now_ms();
        self.lock().insert(
            id.to_string(),
            Entry {
                tx,
                queued: queued.clone(),
                cut: cut.clone(),
                connected_at: Timestamp::from_millis(now),
                last_active_ms: AtomicI64::new(now),
                source_ip,
                user_agent,
            },
        );
        Outbox { rx, queued, cut }
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    pub fn touch(&self, id: &str) {
        if let Some(e) = self.lock().get(id) {
            e.last_active_ms
                .store(confab_functions::clock::now_ms(), Ordering::Relaxed);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a frame. A connection that is unknown, closed, or so far behind
    /// that its queue is full is gone.
    pub fn send(&self, id: &str, frame: Bytes) -> Result<(), PushError> {
        let mut conns = self.lock();
        let Some(e) = conns.get(id) else {
            return Err(PushError::Gone);
        };
        let len = frame.len();
        if e.queued.fetch_add(len, Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            tracing::warn!(
                connection = id,
                "connection does not read what it is sent; cutting it off"
            );
            if let Some(e) = conns.remove(id) {
                e.cut.notify_one();
            }
            return Err(PushError::Gone);
        }
        match e.tx.try_send(Outgoing::Frame(frame)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(connection = id, "connection too far behind; closing it");
                conns.remove(id);
                Err(PushError::Gone)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                conns.remove(id);
                Err(PushError::Gone)
            }
        }
    }

    pub fn info(&self, id: &str) -> Option<ConnectionInfo> {
        self.lock().get(id).map(|e| ConnectionInfo {
            connected_at: e.connected_at,
            last_active_at: Timestamp::from_millis(e.last_active_ms.load(Ordering::Relaxed)),
            identity: Identity {
                source_ip: e.source_ip.clone(),
                user_agent: e.user_agent.clone(),
            },
        })
    }

    /// Closes a connection from the server side.
    pub fn close(&self, id: &str) -> bool {
        self.close_with_status(id, None)
    }

    /// Closes a connection from the server side with a status and reason,
    /// after what is queued for it.
    pub fn close_with(&self, id: &str, why: (u16, &'static str)) -> bool {
        self.close_with_status(id, Some(why))
    }

    fn close_with_status(&self, id: &str, why: Option<(u16, &'static str)>) -> bool {
        match self.lock().remove(id) {
            Some(e) => {
                let _ = e.tx.try_send(Outgoing::Close(why));
                true
            }
            None => false,
        }
    }

    pub fn close_all(&self) {
        for (_, e) in self.lock().drain() {
            let _ =
                e.tx.try_send(Outgoing::Close(Some((1001, "the server is shutting down"))));
        }
    }

    /// Closes every connection that has sent nothing since `before_ms` (its
    /// heartbeat stopped); returns how many.
    pub fn close_idle(&self, before_ms: i64) -> usize {
        let mut conns = self.lock();
        let idle: Vec<String> = conns
            .iter()
            .filter(|(_, e)| e.last_active_ms.load(Ordering::Relaxed) < before_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            if let Some(e) = conns.remove(id) {
                let _ = e.tx.try_send(Outgoing::Close(Some((
                    1000,
                    "idle: nothing was heard from the client",
                ))));
            }
        }
        idle.len()
    }
}

/// How the server closes a socket whose token expired (after an `error`
/// frame that says so): policy violation.
pub const EXPIRED_CLOSE: (u16, &str) = (1008, "the token expired");

/// `Push` straight into the registry: the in-process `PostToConnection`.
pub struct LocalPush(pub std::sync::Arc<Registry>);

#[async_trait]
impl Push for LocalPush {
    async fn post(&self, connection_id: &str, frame: Bytes) -> Result<(), PushError> {
        self.0.send(connection_id, frame)
    }

    async fn close(&self, connection_id: &str) -> Result<(), PushError> {
        if self.0.close_with(connection_id, EXPIRED_CLOSE) {
            Ok(())
        } else {
            Err(PushError::Gone)
        }
    }
}
