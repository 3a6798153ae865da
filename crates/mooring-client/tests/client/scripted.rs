//! Protocol situations a real node rarely produces on demand (a slow-consumer close, a seam
//! overflow, a view cut short, an ack lost with its connection, a silent peer), played by a
//! scripted server that speaks the frames by hand.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mooring_client::{
    event, Client, ClientOptions, PublishErrorKind, ReconnectPolicy, ResetReason, SessionItem,
    StartAt,
};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::node::{next, PROMPT};

struct Script {
    listener: TcpListener,
    connections: u32,
}

struct Peer {
    ws: WebSocketStream<TcpStream>,
    /// The `client_id` the client said hello with.
    client_id: Option<String>,
}

impl Script {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self {
            listener,
            connections: 0,
        }
    }

    fn options(&self) -> ClientOptions {
        let addr = self.listener.local_addr().expect("addr");
        ClientOptions {
            reconnect: ReconnectPolicy {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(50),
                jitter: true,
                max_attempts: None,
            },
            ..ClientOptions::new(format!("ws://{addr}/v1/ws"))
        }
    }

    /// Accepts the next connection and welcomes it with these heartbeat settings.
    async fn accept_with(&mut self, heartbeat_ms: u64) -> Peer {
        let (stream, _) = tokio::time::timeout(PROMPT, self.listener.accept())
            .await
            .expect("the client connects promptly")
            .expect("accept");
        let ws = tokio_tungstenite::accept_async(stream)
            .await
            .expect("upgrade");
        self.connections += 1;
        let mut peer = Peer {
            ws,
            client_id: None,
        };
        let hello = peer.recv().await;
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["protocol"], 1);
        peer.client_id = hello["client_id"].as_str().map(Into::into);
        let client_id = peer.client_id.clone().unwrap_or("anon-1".into());
        peer.send(json!({
            "type": "welcome", "protocol": 1, "connection_id": format!("c{}", self.connections),
            "client_id": client_id, "heartbeat_ms": heartbeat_ms,
            "dead_after_ms": heartbeat_ms * 5 / 2,
        }))
        .await;
        peer
    }

    async fn accept(&mut self) -> Peer {
        self.accept_with(60_000).await
    }
}

impl Peer {
    /// The next frame the client sent, skipping its pings.
    async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(PROMPT, self.ws.next())
                .await
                .expect("a frame arrives promptly")
                .expect("the socket is open")
                .expect("a message");
            if let Message::Text(text) = message {
                let frame: Value = serde_json::from_str(text.as_str()).expect("json");
                if frame["type"] != "ping" {
                    return frame;
                }
            }
        }
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    async fn close(mut self, code: u16) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "scripted".into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
    }

    async fn attached(&mut self, mode: &str, serial: u64) {
        self.send(json!({"type": "attached", "session": "s:1", "epoch": 0, "mode": mode, "serial": serial}))
            .await;
    }

    async fn event(&mut self, serial: u64) {
        self.send(
            json!({"type": "event", "session": "s:1", "epoch": 0, "serial": serial,
            "action": "message.create", "data": serial, "ts": 1}),
        )
        .await;
    }

    async fn view(&mut self, serial: u64, version: u64, data: &str) {
        self.send(
            json!({"type": "event", "session": "s:1", "epoch": 0, "serial": serial,
            "action": "message.create", "data": data, "ts": 1, "version": version}),
        )
        .await;
    }

    async fn live(&mut self, serial: u64) {
        self.send(json!({"type": "live", "session": "s:1", "serial": serial}))
            .await;
    }
}

fn event_serial(item: &SessionItem) -> Option<u64> {
    match item {
        SessionItem::Event(e) => Some(e.serial),
        _ => None,
    }
}

#[tokio::test]
async fn a_slow_consumer_close_reconnects_and_resumes_from_the_last_serial() {
    let mut script = Script::start().await;
    let connecting = tokio::spawn(Client::connect(script.options().client_id("me")));
    let mut first = script.accept().await;
    let client = connecting.await.expect("task").expect("connect");
    let attaching = {
        let client = client.clone();
        tokio::spawn(async move { client.attach("s:1", StartAt::Beginning).await })
    };
    let attach = first.recv().await;
    assert_eq!(
        attach,
        json!({"type": "attach", "session": "s:1", "from": "start"})
    );
    first.attached("replay", 2).await;
    let mut sub = attaching.await.expect("task").expect("attach");
    for serial in 1..=2 {
        first.event(serial).await;
    }
    first.live(2).await;
    first.event(3).await;
    for expected in [Some(1), Some(2), None, Some(3)] {
        assert_eq!(event_serial(&next(&mut sub).await), expected);
    }
    first.close(4008).await;

    let mut second = script.accept().await;
    assert_eq!(second.client_id.as_deref(), Some("me"), "same identity");
    let resume = second.recv().await;
    assert_eq!(resume["from"], json!({"epoch": 0, "serial": 3}));
    second.attached("replay", 4).await;
    second.event(3).await; // already seen: dropped
    second.event(4).await;
    second.live(4).await;
    assert_eq!(event_serial(&next(&mut sub).await), Some(4));
    assert_eq!(next(&mut sub).await, SessionItem::Live { serial: 4 });
}

#[tokio::test]
async fn a_seam_overflow_attaches_again_from_the_last_serial() {
    let mut script = Script::start().await;
    let connecting = tokio::spawn(Client::connect(script.options()));
    let mut peer = script.accept().await;
    let client = connecting.await.expect("task").expect("connect");
    let attaching = {
        let client = client.clone();
        tokio::spawn(async move { client.attach("s:1", StartAt::Beginning).await })
    };
    peer.recv().await;
    peer.attached("replay", 3).await;
    let mut sub = attaching.await.expect("task").expect("attach");
    peer.event(1).await;
    peer.send(
        json!({"type": "detached", "session": "s:1", "error": {"code": "seam_overflow",
        "message": "live events outran the replay", "retryable": true}}),
    )
    .await;
    let again = peer.recv().await;
    assert_eq!(again["type"], "attach");
    assert_eq!(again["from"], json!({"epoch": 0, "serial": 1}));
    peer.attached("replay", 3).await;
    for serial in 2..=3 {
        peer.event(serial).await;
    }
    peer.live(3).await;
    let mut items = Vec::new();
    for _ in 0..4 {
        items.push(next(&mut sub).await);
    }
    let serials: Vec<u64> = items.iter().filter_map(event_serial).collect();
    assert_eq!(serials, vec![1, 2, 3]);
    assert_eq!(items.last(), Some(&SessionItem::Live { serial: 3 }));
}

#[tokio::test]
async fn a_view_cut_short_is_reset_and_received_whole_again() {
    let mut script = Script::start().await;
    let connecting = tokio::spawn(Client::connect(script.options()));
    let mut first = script.accept().await;
    let client = connecting.await.expect("task").expect("connect");
    let attaching = {
        let client = client.clone();
        tokio::spawn(async move { client.attach("s:1", StartAt::Latest).await })
    };
    first.recv().await;
    first.attached("latest", 5).await;
    let mut sub = attaching.await.expect("task").expect("attach");
    first.view(1, 3, "Hel").await;
    assert_eq!(event_serial(&next(&mut sub).await), Some(1));
    drop(first); // cut without a close frame, mid-view

    let mut second = script.accept().await;
    let resume = second.recv().await;
    assert_eq!(
        resume["from"], "latest",
        "a partial view is no position to resume from"
    );
    second.attached("latest", 6).await;
    second.view(1, 6, "Hello").await;
    second.live(6).await;
    assert_eq!(
        next(&mut sub).await,
        SessionItem::Reset(ResetReason::ViewInterrupted)
    );
    assert_eq!(event_serial(&next(&mut sub).await), Some(1));
    assert_eq!(next(&mut sub).await, SessionItem::Live { serial: 6 });
    let messages = sub.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (messages[0].data.clone(), messages[0].version),
        ("Hello".into(), 6)
    );
}

#[tokio::test]
async fn a_publish_whose_ack_was_lost_is_resent_with_the_same_id() {
    let mut script = Script::start().await;
    let connecting = tokio::spawn(Client::connect(script.options()));
    let mut first = script.accept().await;
    let client = connecting.await.expect("task").expect("connect");
    let publishing = {
        let client = client.clone();
        tokio::spawn(async move { client.create_message("s:1", "m", "hi").await })
    };
    let sent = first.recv().await;
    let id = sent["events"][0]["id"].clone();
    assert!(id.is_string(), "an id was assigned: {sent}");
    drop(first); // the ack is lost with the connection

    let mut second = script.accept().await;
    let resent = second.recv().await;
    assert_eq!(resent["events"][0]["id"], id);
    second
        .send(
            json!({"type": "ack", "req": resent["req"], "session": "s:1", "epoch": 0,
            "results": [{"serial": 7, "duplicate": true}]}),
        )
        .await;
    let serial = publishing.await.expect("task").expect("published");
    assert_eq!(serial, 7);
}

#[tokio::test]
async fn without_ids_an_interrupted_publish_fails_rather_than_risk_a_duplicate() {
    let mut script = Script::start().await;
    let options = ClientOptions {
        assign_ids: false,
        ..script.options()
    };
    let connecting = tokio::spawn(Client::connect(options));
    let mut first = script.accept().await;
    let client = connecting.await.expect("task").expect("connect");
    let publishing = {
        let client = client.clone();
        tokio::spawn(async move { client.publish("s:1", vec![event::append(3, "lo")]).await })
    };
    let sent = first.recv().await;
    assert_eq!(sent["events"][0].get("id"), None);
    drop(first);
    let failed = publishing.await.expect("task").expect_err("interrupted");
    assert_eq!(failed.kind(), PublishErrorKind::Interrupted);
}

#[tokio::test]
async fn pings_are_answered_and_a_silent_server_is_left_for_another() {
    let mut script = Script::start().await;
    let connecting = tokio::spawn(Client::connect(script.options()));
    let mut first = script.accept_with(40).await;
    let _client = connecting.await.expect("task").expect("connect");
    first.send(json!({"type": "ping", "nonce": 7})).await;
    assert_eq!(first.recv().await, json!({"type": "pong", "nonce": 7}));
    // Say nothing more: after dead_after (100 ms) the client gives up on this connection.
    let second = tokio::time::timeout(Duration::from_secs(2), script.accept_with(60_000)).await;
    assert!(second.is_ok(), "the client reconnected after the silence");
    drop(first);
}
