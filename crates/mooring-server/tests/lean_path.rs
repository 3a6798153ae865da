//! Appends on the lean connection path (`listener`), over raw TCP so every byte is ours:
//! pipelining, bodies split across reads, a connection handed to the router mid-way, refusals,
//! and answers that match the router's.

use std::sync::Arc;
use std::time::Duration;

use mooring_core::clock::{Clock, SystemClock};
use mooring_engine::memory::MemoryStore;
use mooring_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

struct Node {
    addr: String,
    shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let shutdown = CancellationToken::new();
    tokio::spawn(mooring_server::serve(
        listener,
        Arc::new(MemoryStore::new(clock.clone())),
        clock,
        ServerConfig::default(),
        shutdown.clone(),
        Duration::from_secs(5),
    ));
    Node { addr, shutdown }
}

/// One parsed answer: status, headers (lowercase names, in order) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client connection that reads answers one at a time from a shared buffer, so answers
/// that arrive together (pipelining) are split correctly.
struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(node: &Node) -> Self {
        let tcp = TcpStream::connect(&node.addr).await.expect("connect");
        Self {
            tcp,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("send");
    }

    async fn answer(&mut self) -> Answer {
        tokio::time::timeout(WAIT, self.read_answer())
            .await
            .expect("an answer in time")
    }

    /// The answer to a `HEAD` request: its length names a body that is not sent.
    async fn head_answer(&mut self) -> Answer {
        tokio::time::timeout(WAIT, self.read_answer_framed(false))
            .await
            .expect("an answer in time")
    }

    async fn read_answer(&mut self) -> Answer {
        self.read_answer_framed(true).await
    }

    async fn read_answer_framed(&mut self, with_body: bool) -> Answer {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(head_len) = parsed.parse(&self.buf).expect("http") {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let length = headers
                    .iter()
                    .find(|(n, _)| n == "content-length" && with_body)
                    .map_or(0, |(_, v)| v.parse::<usize>().expect("length"));
                if self.buf.len() >= head_len + length {
                    let status = parsed.code.expect("status");
                    let body = self.buf[head_len..head_len + length].to_vec();
                    self.buf.drain(..head_len + length);
                    return Answer {
                        status,
                        headers,
                        body,
                    };
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.tcp.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the connection closed before a whole answer");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True once the server has closed the connection (and sent nothing more).
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(WAIT, self.tcp.read(&mut chunk)).await,
            Ok(Ok(0))
        )
    }
}

fn post(name: &str, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v1/stream/{name} HTTP/1.1\r\nhost: t\r\ncontent-type: text/plain\r\n{extra}\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Creates `name` on a connection of its own.
async fn created(node: &Node, name: &str) {
    let mut conn = Conn::open(node).await;
    conn.send(&create(name)).await;
    assert_eq!(conn.answer().await.status, 201);
}

fn create(name: &str) -> Vec<u8> {
    format!(
        "PUT /v1/stream/{name} HTTP/1.1\r\nhost: t\r\ncontent-type: text/plain\r\n\
         content-length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn read_all(name: &str) -> Vec<u8> {
    format!("GET /v1/stream/{name}?offset=-1 HTTP/1.1\r\nhost: t\r\n\r\n").into_bytes()
}

/// A counter's value at `/metrics` (the recorder is shared by every node of this process).
async fn counter(node: &Node, name: &str) -> u64 {
    let mut conn = Conn::open(node).await;
    conn.send(b"GET /metrics HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let text = String::from_utf8(conn.answer().await.body).expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn plain_appends_take_the_lean_path() {
    let node = start().await;
    let mut conn = Conn::open(&node).await;
    created(&node, "l").await;
    let before = counter(&node, "mooring_http_lean_requests_total").await;
    for _ in 0..5 {
        conn.send(&post("l", "", "x")).await;
        assert_eq!(conn.answer().await.status, 204);
    }
    let after = counter(&node, "mooring_http_lean_requests_total").await;
    // Other tests of this process may add to it too, never take away.
    assert!(after >= before + 5, "{before} -> {after}");
}

#[tokio::test]
async fn a_producer_that_creates_its_stream_first_stays_on_the_lean_path() {
    let node = start().await;
    let mut conn = Conn::open(&node).await;
    let before = counter(&node, "mooring_http_lean_requests_total").await;
    conn.send(&create("own")).await;
    let created = conn.answer().await;
    assert_eq!(created.status, 201);
    assert!(
        created.header("x-content-type-options").is_some(),
        "the outer layers ran"
    );
    // A HEAD answer has a length but no body: the next answer must parse from the right byte.
    conn.send(b"HEAD /v1/stream/own HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    let head = conn.head_answer().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/plain"));
    for body in ["a", "b", "c"] {
        conn.send(&post("own", "", body)).await;
        assert_eq!(conn.answer().await.status, 204);
    }
    let after = counter(&node, "mooring_http_lean_requests_total").await;
    assert!(after >= before + 3, "{before} -> {after}");
    conn.send(b"DELETE /v1/stream/own HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    assert_eq!(conn.answer().await.status, 204);
    conn.send(&post("own", "", "d")).await;
    assert_eq!(conn.answer().await.status, 404, "deleted");
}

#[tokio::test]
async fn pipelined_appends_are_answered_in_order() {
    let node = start().await;
    let mut conn = Conn::open(&node).await;
    created(&node, "p").await;
    let mut three = Vec::new();
    for body in ["a", "b", "c"] {
        three.extend(post("p", "", body));
    }
    conn.send(&three).await;
    let mut offsets = Vec::new();
    for _ in 0..3 {
        let answer = conn.answer().await;
        assert_eq!(answer.status, 204, "{answer:?}");
        offsets.push(
            answer
                .header("stream-next-offset")
                .expect("offset")
                .to_owned(),
        );
    }
    let mut sorted = offsets.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(offsets, sorted, "offsets rise, one per append");
    conn.send(&read_all("p")).await;
    let read = conn.answer().await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body, b"abc");
}

#[tokio::test]
async fn a_body_that_arrives_in_pieces_is_waited_for() {
    let node = start().await;
    let mut conn = Conn::open(&node).await;
    created(&node, "s").await;
    let whole = post("s", "", "hello world");
    let (head, tail) = whole.split_at(whole.len() - 6);
    // The head, cut in the middle of a header name, then the rest of it and half the body.
    let (first, second) = head.split_at(20);
    conn.send(first).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.send(second).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.send(tail).await;
    assert_eq!(conn.answer().await.status, 204);
    conn.send(&read_all("s")).await;
    assert_eq!(conn.answer().await.body, b"hello world");
}

#[tokio::test]
async fn the_router_takes_over_a_connection_and_answers_the_same_way() {
    let node = start().await;
    let mut conn = Conn::open(&node).await;
    created(&node, "r").await;
    conn.send(&post("r", "", "lean")).await;
    let lean = conn.answer().await;
    // A chunked body is the router's: from here on the connection is hyper's.
    conn.send(
        b"POST /v1/stream/r HTTP/1.1\r\nhost: t\r\ncontent-type: text/plain\r\n\
          transfer-encoding: chunked\r\n\r\n6\r\nrouted\r\n0\r\n\r\n",
    )
    .await;
    let routed = conn.answer().await;
    assert_eq!((lean.status, routed.status), (204, 204));
    let names = |a: &Answer| {
        let mut names: Vec<String> = a
            .headers
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| n != "date")
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(&lean),
        names(&routed),
        "the same headers on both paths"
    );
    for (name, value) in &lean.headers {
        if name != "date" && name != "stream-next-offset" {
            assert_eq!(routed.header(name), Some(value.as_str()), "{name}");
        }
    }
    assert!(lean.header("x-content-type-options").is_some());
    // The connection keeps working after the hand-off, appends included.
    conn.send(&post("r", "", "again")).await;
    assert_eq!(conn.answer().await.status, 204);
    conn.send(&read_all("r")).await;
    assert_eq!(conn.answer().await.body, b"leanroutedagain");
}

#[tokio::test]
async fn a_refusal_on_the_lean_path_has_its_code_and_keeps_the_connection() {
    let node = start().await;
    let mut conn = Conn::open(&node).await;
    conn.send(&post("missing", "", "x")).await;
    let refused = conn.answer().await;
    assert_eq!(refused.status, 404);
    let body: serde_json::Value = serde_json::from_slice(&refused.body).expect("json");
    assert_eq!(body["error"]["code"], "STREAM_NOT_FOUND");
    assert_eq!(refused.header("content-type"), Some("application/json"));
    conn.send(&post("missing", "producer-id: p\r\n", "x")).await;
    let refused = conn.answer().await;
    assert_eq!(refused.status, 400, "a producer id without epoch and seq");
    conn.send(&create("now")).await;
    assert_eq!(conn.answer().await.status, 201);
}

#[tokio::test]
async fn an_origin_gets_the_routers_cors_answer() {
    let node = start().await;
    let mut conn = Conn::open(&node).await;
    created(&node, "c").await;
    conn.send(&post("c", "origin: https://app.example\r\n", "x"))
        .await;
    let answer = conn.answer().await;
    assert_eq!(answer.status, 204);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn a_shutdown_closes_an_idle_lean_connection() {
    let node = start().await;
    created(&node, "d").await;
    let mut idle = Conn::open(&node).await;
    idle.send(&post("d", "", "x")).await;
    assert_eq!(idle.answer().await.status, 204);
    node.shutdown.cancel();
    assert!(
        idle.closed().await,
        "an idle connection is closed on shutdown"
    );
}
