//! The baseline of `cargo xtask load`: a bare tokio-tungstenite server that
//! holds the same sockets and broadcasts frames of the same sizes, at the
//! same rate, as Confab does in each scenario. It stores nothing, checks
//! nothing and parses nothing on the way out: the limit of this stack on
//! this machine.
//!
//! Sockets connect to `/ws?group=K`. One socket connects to `/control` and
//! sends `{"frames": N, "size": S, "intervalMs": I}`: every group gets N
//! frames of about S bytes, shaped as Confab's `message.delta` (each with
//! its send time in microseconds, then padding), one every I ms (0: as
//! fast as the sockets take them), each encoded once and shared by the
//! group's sockets. The control socket is told `done` when all are sent.

use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

type Groups = Arc<Mutex<HashMap<u32, Vec<mpsc::Sender<Message>>>>>;

fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

#[tokio::main]
// The handshake callback's type is the library's: its error is an HTTP
// response.
#[allow(clippy::result_large_err)]
async fn main() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("baseline listening on {}", listener.local_addr()?);
    let groups: Groups = Arc::default();
    loop {
        let (tcp, _) = listener.accept().await?;
        let groups = groups.clone();
        tokio::spawn(async move {
            let mut path = String::new();
            // Buffers as small as Confab's (local/src/gateway.rs), so that
            // the two differ in what they do, not in how they are set.
            let config = WebSocketConfig::default()
                .read_buffer_size(4 * 1024)
                .write_buffer_size(8 * 1024);
            let ws = tokio_tungstenite::accept_hdr_async_with_config(
                tcp,
                |req: &Request, res: Response| {
                    path = req.uri().to_string();
                    Ok(res)
                },
                Some(config),
            )
            .await;
            let Ok(ws) = ws else { return };
            if path.starts_with("/control") {
                control(ws, groups).await;
                return;
            }
            let group: u32 = path
                .split("group=")
                .nth(1)
                .and_then(|g| g.parse().ok())
                .unwrap_or(0);
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = mpsc::channel::<Message>(256);
            groups
                .lock()
                .unwrap()
                .entry(group)
                .or_default()
                .push(tx.clone());
            let writer = tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
            });
            // A ping is answered as Confab answers it; anything else is
            // read and dropped.
            let pong = Message::text(r#"{"type":"pong"}"#);
            while let Some(Ok(m)) = stream.next().await {
                if let Message::Text(t) = &m
                    && t.contains("\"ping\"")
                    && tx.send(pong.clone()).await.is_err()
                {
                    break;
                }
            }
            writer.abort();
        });
    }
}

async fn control(ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, groups: Groups) {
    let (mut sink, mut stream) = ws.split();
    while let Some(Ok(Message::Text(cmd))) = stream.next().await {
        let v: serde_json::Value = serde_json::from_str(&cmd).unwrap_or_default();
        let frames = v["frames"].as_u64().unwrap_or(0);
        let size = v["size"].as_u64().unwrap_or(64) as usize;
        let interval = v["intervalMs"].as_u64().unwrap_or(0);
        let all: Vec<(u32, Vec<mpsc::Sender<Message>>)> = groups
            .lock()
            .unwrap()
            .iter()
            .map(|(g, s)| (*g, s.clone()))
            .collect();
        let tasks: Vec<_> = all
            .into_iter()
            .map(|(group, senders)| {
                tokio::spawn(async move {
                    let started = tokio::time::Instant::now();
                    let mut offset = 0usize;
                    for n in 0..frames {
                        if interval > 0 {
                            tokio::time::sleep_until(
                                started + std::time::Duration::from_millis(interval * (n + 1)),
                            )
                            .await;
                        }
                        let head = format!("{} ", now_us());
                        let pad = size.saturating_sub(head.len() + 190);
                        let text = format!("{head}{}", "x ".repeat(pad / 2));
                        let frame = serde_json::json!({
                            "type": "message.delta",
                            "sessionId": format!("00000000-0000-7000-8000-{group:012}"),
                            "messageId": "00000000-0000-7000-8000-000000000001",
                            "block": 0,
                            "offset": offset,
                            "text": text,
                        })
                        .to_string();
                        offset += text.chars().count();
                        // Encoded once, shared by the group's sockets.
                        let m = Message::text(frame);
                        for s in &senders {
                            let _ = s.send(m.clone()).await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            let _ = t.await;
        }
        if sink.send(Message::text("done")).await.is_err() {
            return;
        }
    }
}
