//! REST and SSE over sessions, end to end over real HTTP, in process, on the memory engine.

use std::sync::Arc;
use std::time::Duration;

use mooring_core::clock::{Clock, SystemClock};
use mooring_engine::memory::MemoryStore;
use mooring_server::realtime::RealtimeConfig;
use mooring_server::ServerConfig;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const PROMPT: Duration = Duration::from_secs(15);

struct Node {
    base: String,
    http: reqwest::Client,
    _shutdown: tokio_util::sync::DropGuard,
}

async fn start() -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let shutdown = CancellationToken::new();
    let config = ServerConfig {
        realtime: RealtimeConfig {
            rollup_window: Duration::ZERO,
            ..RealtimeConfig::default()
        },
        ..ServerConfig::default()
    };
    tokio::spawn(mooring_server::serve(
        listener,
        store,
        clock,
        config,
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    Node {
        base,
        http: reqwest::Client::new(),
        _shutdown: shutdown.drop_guard(),
    }
}

impl Node {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("mooring-client-id", "rest-writer")
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("get");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn history_pages_both_ways_return_every_event_once() {
    let node = start().await;
    for i in 1..=25 {
        let (status, _) = node
            .post("/v1/sessions/h/events", json!({"action":"event","data":i}))
            .await;
        assert_eq!(status, 201);
    }
    let mut forward = Vec::new();
    let mut next = Some("?direction=forward&limit=7".to_owned());
    while let Some(query) = next {
        let (status, page) = node.get(&format!("/v1/sessions/h/history{query}")).await;
        assert_eq!(status, 200, "{page}");
        forward.extend(
            page["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["serial"].clone()),
        );
        next = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(forward, (1..=25).map(Value::from).collect::<Vec<_>>());
    let mut backward = Vec::new();
    let mut next = Some("?direction=backward&limit=6".to_owned());
    while let Some(query) = next {
        let (_, page) = node.get(&format!("/v1/sessions/h/history{query}")).await;
        backward.extend(
            page["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["serial"].clone()),
        );
        next = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(
        backward,
        (1..=25).rev().map(Value::from).collect::<Vec<_>>()
    );
    let (_, page) = node.get("/v1/sessions/h/history?since=0&limit=3").await;
    assert_eq!(page["events"][0]["serial"], 1);
    let (status, page) = node.get("/v1/sessions/h/history?after=1&since=1").await;
    assert_eq!(
        (status, page["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, page) = node.get("/v1/sessions/none/history").await;
    assert_eq!(
        (status, page["error"]["code"].as_str()),
        (404, Some("session_not_found"))
    );
}

#[tokio::test]
async fn a_rest_session_reads_the_same_over_sse_and_durable_streams() {
    let node = start().await;
    let (_, created) = node
        .post(
            "/v1/sessions/chat:r/events",
            json!({"name":"response","data":"He"}),
        )
        .await;
    let msg = created["results"][0]["serial"].as_u64().expect("serial");
    let (status, _) = node
        .post(
            &format!("/v1/sessions/chat:r/messages/{msg}/append"),
            json!({"data":"llo"}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, history) = node.get("/v1/sessions/chat:r/history").await;
    let (_, stream) = node.get("/v1/stream/chat:r?offset=-1").await;
    assert_eq!(
        history["events"], stream,
        "REST history and the Durable Stream agree"
    );
    assert_eq!(stream[0]["client_id"], "rest-writer");
    let sse = sse_until(&node, "/v1/sessions/chat:r/events?after=0", None, 2).await;
    let ids: Vec<u64> = sse.iter().map(|(id, _)| id.unwrap_or(0)).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(sse[1].1, stream[1]);
}

/// Reads SSE events until `count` data events arrived; returns (id, data).
async fn sse_until(
    node: &Node,
    path: &str,
    last_event_id: Option<u64>,
    count: usize,
) -> Vec<(Option<u64>, Value)> {
    let mut req = node.http.get(format!("{}{path}", node.base));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let mut res = req.send().await.expect("sse");
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < count {
        let chunk = tokio::time::timeout(PROMPT, res.chunk())
            .await
            .expect("events arrive")
            .expect("chunk")
            .expect("open");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(|v| v.parse().ok());
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                if !block.contains("event: live") {
                    out.push((id, serde_json::from_str(data).expect("json")));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn sse_resumes_by_last_event_id_without_loss() {
    let node = start().await;
    for i in 1..=5 {
        node.post("/v1/sessions/s/events", json!({"action":"event","data":i}))
            .await;
    }
    let first = sse_until(&node, "/v1/sessions/s/events?after=0", None, 3).await;
    let last = first.last().and_then(|(id, _)| *id).expect("id");
    assert_eq!(last, 3);
    // The connection is cut after event 3; more is published meanwhile.
    for i in 6..=8 {
        node.post("/v1/sessions/s/events", json!({"action":"event","data":i}))
            .await;
    }
    let rest = sse_until(&node, "/v1/sessions/s/events", Some(last), 5).await;
    let data: Vec<Value> = rest.iter().map(|(_, e)| e["data"].clone()).collect();
    assert_eq!(data, (4..=8).map(Value::from).collect::<Vec<_>>());
}
