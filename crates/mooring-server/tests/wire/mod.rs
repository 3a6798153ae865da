//! A minimal realtime client and an in-process node for the server's own tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mooring_core::clock::{Clock, SystemClock};
use mooring_engine::memory::MemoryStore;
use mooring_server::realtime::RealtimeConfig;
use mooring_server::ServerConfig;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const PROMPT: Duration = Duration::from_secs(15);

pub struct Node {
    pub addr: String,
    pub store: Arc<MemoryStore>,
    _shutdown: tokio_util::sync::DropGuard,
}

pub async fn start(realtime: RealtimeConfig) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        realtime,
        ..ServerConfig::default()
    };
    tokio::spawn(mooring_server::serve(
        listener,
        store.clone(),
        clock,
        config,
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    Node {
        addr,
        store,
        _shutdown: shutdown.drop_guard(),
    }
}

pub fn no_rollup() -> RealtimeConfig {
    RealtimeConfig {
        rollup_window: Duration::ZERO,
        ..RealtimeConfig::default()
    }
}

/// A raw client: the socket, and frames read past while waiting for an ack.
pub struct Ws(
    WebSocketStream<MaybeTlsStream<TcpStream>>,
    std::collections::VecDeque<Value>,
);

impl Ws {
    pub async fn open(node: &Node) -> Ws {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", node.addr))
            .await
            .expect("connect");
        Ws(ws, std::collections::VecDeque::new())
    }

    pub async fn connect(node: &Node, client_id: &str) -> Ws {
        let mut ws = Ws::open(node).await;
        ws.send(json!({"type":"hello","protocol":1,"client_id":client_id}))
            .await;
        let welcome = ws.next_frame().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["client_id"], client_id);
        ws
    }

    pub async fn send(&mut self, frame: Value) {
        self.0
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    /// The next protocol frame (pings are skipped).
    pub async fn next_frame(&mut self) -> Value {
        if let Some(frame) = self.1.pop_front() {
            return frame;
        }
        self.read_frame().await
    }

    async fn read_frame(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + PROMPT;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.0.next())
                .await
                .expect("a frame arrives")
                .expect("socket open")
                .expect("frame");
            if let Message::Text(text) = msg {
                let v: Value = serde_json::from_str(&text).expect("json");
                if v["type"] != "ping" {
                    return v;
                }
                // Any frame is a sign of life; answering keeps a reading client alive.
                self.send(json!({"type":"pong","nonce":v["nonce"]})).await;
            }
        }
    }

    pub async fn publish(&mut self, req: u64, session: &str, events: Value) -> Value {
        self.send(json!({"type":"publish","req":req,"session":session,"events":events}))
            .await;
        loop {
            let f = self.read_frame().await;
            if f["req"] == req {
                return f;
            }
            self.1.push_back(f);
        }
    }
}
