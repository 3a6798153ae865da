//! The Durable Streams surface end to end over real HTTP, in process, on the memory engine.
//! (The peer conformance suite covers the protocol's letter; these cover our own promises.)

use std::sync::Arc;
use std::time::Duration;

use mooring_core::clock::{Clock, SystemClock};
use mooring_engine::memory::MemoryStore;
use mooring_server::ServerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything that should happen "promptly"; far above any real latency, far
/// below the waits it proves were cut short.
const PROMPT: Duration = Duration::from_secs(15);

struct Node {
    base: String,
    shutdown: CancellationToken,
    served: JoinHandle<Result<(), mooring_server::ServeError>>,
    http: reqwest::Client,
}

async fn start(config: ServerConfig) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(mooring_server::serve(
        listener,
        store,
        clock,
        config,
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    Node {
        base,
        shutdown,
        served,
        http: reqwest::Client::new(),
    }
}

impl Node {
    fn url(&self, name: &str) -> String {
        format!("{}/v1/stream/{name}", self.base)
    }

    async fn create(&self, name: &str, content_type: &str) {
        let res = self
            .http
            .put(self.url(name))
            .header("content-type", content_type)
            .send()
            .await
            .expect("create");
        assert_eq!(res.status(), 201);
    }

    async fn append(&self, name: &str, body: &'static str) -> String {
        let res = self
            .http
            .post(self.url(name))
            .header("content-type", "text/plain")
            .body(body)
            .send()
            .await
            .expect("append");
        assert_eq!(res.status(), 204);
        header(&res, "stream-next-offset")
    }
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn long_waits() -> ServerConfig {
    ServerConfig {
        long_poll_timeout: Duration::from_secs(600),
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn a_long_poll_wakes_when_an_append_lands() {
    let node = start(long_waits()).await;
    node.create("lp", "text/plain").await;
    let tail = node.append("lp", "first").await;
    let poll = node
        .http
        .get(format!("{}?offset={tail}&live=long-poll", node.url("lp")))
        .send();
    let poll = tokio::spawn(poll);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let next = node.append("lp", "second").await;
    let res = tokio::time::timeout(PROMPT, poll)
        .await
        .expect("woken long before the 600 s timeout")
        .expect("task")
        .expect("response");
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "stream-next-offset"), next);
    assert!(header(&res, "stream-cursor")
        .chars()
        .all(|c| c.is_ascii_digit()));
    assert_eq!(res.text().await.expect("body"), "second");
}

#[tokio::test]
async fn sse_sends_history_then_live_appends() {
    let node = start(long_waits()).await;
    node.create("sse", "text/plain").await;
    node.append("sse", "old").await;
    let mut res = node
        .http
        .get(format!("{}?offset=-1&live=sse", node.url("sse")))
        .send()
        .await
        .expect("sse");
    assert_eq!(header(&res, "content-type"), "text/event-stream");
    let mut seen = String::new();
    let mut appended = false;
    let deadline = tokio::time::Instant::now() + PROMPT;
    // Until the live batch and its control event are both in.
    while !(seen.contains("data:new") && seen.matches("event: control").count() >= 2) {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .expect("events arrive promptly")
            .expect("chunk")
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if !appended && seen.contains("\"upToDate\":true") {
            node.append("sse", "new").await;
            appended = true;
        }
    }
    let old = seen.find("data:old").expect("history first");
    let new = seen.find("data:new").expect("then live");
    assert!(old < new);
    let last_control = seen.rfind("event: control").expect("control");
    assert!(
        last_control > new,
        "every data event is followed by a control event"
    );
}

#[tokio::test]
async fn shutdown_ends_pending_long_polls_and_drains() {
    let node = start(long_waits()).await;
    node.create("sd", "text/plain").await;
    let poll = tokio::spawn(
        node.http
            .get(format!("{}?offset=now&live=long-poll", node.url("sd")))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.shutdown.cancel();
    let res = tokio::time::timeout(PROMPT, poll)
        .await
        .expect("the long-poll ends at shutdown, not after 600 s")
        .expect("task")
        .expect("response");
    assert_eq!(res.status(), 204);
    let served = tokio::time::timeout(PROMPT, node.served)
        .await
        .expect("drained")
        .expect("task");
    assert!(served.is_ok(), "{served:?}");
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    let node = start(ServerConfig {
        max_append_bytes: 1024,
        ..ServerConfig::default()
    })
    .await;
    node.create("big", "text/plain").await;
    let res = node
        .http
        .post(node.url("big"))
        .header("content-type", "text/plain")
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("append");
    assert_eq!(res.status(), 413);
    let head = node.http.head(node.url("big")).send().await.expect("head");
    let next = header(&head, "stream-next-offset");
    assert!(
        next.ends_with("_0000000000000000"),
        "nothing was written: {next}"
    );
}

#[tokio::test]
async fn errors_carry_a_stable_code() {
    let node = start(ServerConfig::default()).await;
    let res = node
        .http
        .get(format!("{}?offset=-1", node.url("nothing")))
        .send()
        .await
        .expect("read");
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.expect("json error body");
    assert_eq!(body["error"]["code"], "STREAM_NOT_FOUND");
    let res = node
        .http
        .get(format!("{}?offset=bogus", node.url("nothing")))
        .send()
        .await
        .expect("read");
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.expect("json error body");
    assert_eq!(body["error"]["code"], "INVALID_OFFSET");
}

#[tokio::test]
async fn every_answer_carries_the_security_and_cors_headers() {
    let node = start(ServerConfig::default()).await;
    node.create("h", "text/plain").await;
    let append = node
        .http
        .post(node.url("h"))
        .header("content-type", "text/plain")
        .header("origin", "https://app.example")
        .body("x")
        .send()
        .await
        .expect("append");
    let missing = node
        .http
        .get(format!("{}/no/such/route", node.base))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    for res in [&append, &missing] {
        let headers = res.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cross-origin-resource-policy"], "cross-origin");
        // No allowlist configured: any origin may read.
        assert_eq!(headers["access-control-allow-origin"], "*");
    }
    assert!(append
        .headers()
        .get("access-control-expose-headers")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("stream-next-offset")));
    node.shutdown.cancel();
}
