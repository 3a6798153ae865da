//! Getting in where one does not belong: credentials, capabilities and identity on every
//! surface (WebSocket, REST, Durable Streams, token issuance), each attempt refused with its
//! code, and nothing written (read back from the store). Then renewal and expiry on a live
//! WebSocket.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mooring_core::auth::Capabilities;
use mooring_core::clock::{Clock, SystemClock};
use mooring_core::store::LogStore;
use mooring_engine::memory::MemoryStore;
use mooring_server::auth::{ApiKey, Auth, JwtConfig, JwtKey};
use mooring_server::ServerConfig;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const RSA_PRIVATE: &[u8] = include_bytes!("../src/auth/testdata/rsa_private.pem");
const WAIT: Duration = Duration::from_secs(10);

struct Node {
    addr: String,
    store: Arc<dyn LogStore>,
    shutdown: CancellationToken,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(heartbeat: Duration) -> Node {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn LogStore> = Arc::new(MemoryStore::new(clock.clone()));
    let mut reader = Capabilities::default();
    reader.add_text("chat:**=subscribe").expect("caps");
    let keys = vec![
        ApiKey::new("backend", "backend-secret-0123", Capabilities::all()).expect("key"),
        ApiKey::new("reader", "reader-secret-01234", reader).expect("key"),
    ];
    let jwt = JwtConfig::new(JwtKey::Hs256(SECRET.to_vec())).expect("jwt");
    let mut config = ServerConfig {
        auth: Auth::new(keys, Some(jwt)).expect("auth"),
        ..ServerConfig::default()
    };
    config.realtime.heartbeat = heartbeat;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let shutdown = CancellationToken::new();
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
        shutdown,
    }
}

fn now() -> u64 {
    SystemClock.now_ms() / 1000
}

fn token_with(alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("sign")
}

fn alice_claims(exp: Option<u64>) -> Value {
    let mut c = json!({
        "client_id": "alice",
        "caps": { "chat:alice:*": ["subscribe", "publish"] },
    });
    if let Some(exp) = exp {
        c["exp"] = json!(exp);
    }
    c
}

fn hs(claims: Value) -> String {
    token_with(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
}

fn alice() -> String {
    hs(alice_claims(Some(now() + 600)))
}

/// Every bad credential, by name.
fn bad_credentials() -> Vec<(&'static str, String)> {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let good = alice();
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_sig = b64(b"forged signature bytes, 32 long!");
    parts[2] = &forged_sig;
    let tampered = parts.join(".");
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(alice_claims(Some(now() + 600)).to_string().as_bytes())
    );
    let rs = token_with(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa"),
        alice_claims(Some(now() + 600)),
    );
    let mut not_yet = alice_claims(Some(now() + 600));
    not_yet["nbf"] = json!(now() + 300);
    vec![
        ("wrong key", "backend:not-the-secret-000".to_owned()),
        ("tampered signature", tampered),
        ("alg none", alg_none),
        ("HS/RS confusion", rs),
        ("expired", hs(alice_claims(Some(now() - 60)))),
        ("not yet valid", hs(not_yet)),
        ("missing expiry", hs(alice_claims(None))),
    ]
}

/// One HTTP attempt: method, path, credential, extra header, body; the status and code.
async fn http(
    node: &Node,
    method: &str,
    path: &str,
    credential: Option<&str>,
    client_id: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut request = client.request(method, format!("http://{}{path}", node.addr));
    if let Some(c) = credential {
        request = request.bearer_auth(c);
    }
    if let Some(id) = client_id {
        request = request.header("Mooring-Client-Id", id);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    (status, code)
}

/// What, method, path, credential, `Mooring-Client-Id`, body, expected code.
type Attempt<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<Value>,
    &'a str,
);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How a WebSocket carries its credential.
#[derive(Clone, Copy, Debug)]
enum Carry {
    Query,
    Subprotocol,
    Header,
}

async fn ws_open(node: &Node, credential: Option<&str>, carry: Carry) -> Ws {
    let mut url = format!("ws://{}/v1/ws", node.addr);
    if let (Some(c), Carry::Query) = (credential, carry) {
        url.push_str(&format!("?token={c}"));
    }
    let mut request = url.into_client_request().expect("request");
    match (credential, carry) {
        (Some(c), Carry::Subprotocol) => {
            let value = format!("mooring.v1, mooring.bearer.{c}");
            request
                .headers_mut()
                .insert("sec-websocket-protocol", value.parse().expect("header"));
        }
        (Some(c), Carry::Header) => {
            let value = format!("Bearer {c}");
            request
                .headers_mut()
                .insert("authorization", value.parse().expect("header"));
        }
        _ => {}
    }
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    if matches!(carry, Carry::Subprotocol) && credential.is_some() {
        // The token is never echoed back: the server selects the plain subprotocol.
        let selected = response.headers().get("sec-websocket-protocol");
        assert_eq!(selected.and_then(|v| v.to_str().ok()), Some("mooring.v1"));
    }
    ws
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
}

/// The next protocol frame (pings answered and skipped); `Err(close code)` if the socket
/// closed.
async fn next(ws: &mut Ws) -> Result<Value, Option<u16>> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let frame: Value = serde_json::from_str(&text).expect("json");
                if frame["type"] != "ping" {
                    return Ok(frame);
                }
                let pong = json!({"type": "pong", "nonce": frame["nonce"]});
                let _ = ws.send(Message::Text(pong.to_string().into())).await;
            }
            Ok(Some(Ok(Message::Close(frame)))) => return Err(frame.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return Err(None),
            Err(_) => panic!("no frame within {WAIT:?}"),
        }
    }
}

/// The error code of the next frame and, if the socket then closes, its close code.
async fn refusal(ws: &mut Ws) -> (String, Option<u16>) {
    let frame = next(ws).await.expect("an error frame before the close");
    assert_eq!(frame["type"], "error", "{frame}");
    let code = frame["code"].as_str().unwrap_or("").to_owned();
    (code, next(ws).await.err().flatten())
}

async fn hello(ws: &mut Ws, client_id: Option<&str>) {
    let mut frame = json!({ "type": "hello", "protocol": 1 });
    if let Some(id) = client_id {
        frame["client_id"] = json!(id);
    }
    send(ws, frame).await;
}

async fn welcomed(node: &Node, credential: &str, carry: Carry) -> Ws {
    let mut ws = ws_open(node, Some(credential), carry).await;
    hello(&mut ws, None).await;
    let frame = next(&mut ws).await.expect("welcome");
    assert_eq!(frame["type"], "welcome", "{frame}");
    ws
}

fn publish(session: &str, action: &str) -> Value {
    let mut event = json!({ "action": action, "data": {"run_id": "r-1"} });
    if action == "message.create" {
        event = json!({ "data": "hi" });
    }
    json!({ "type": "publish", "req": 1, "session": session, "events": [event] })
}

/// An `approval.answer` event for approval `a-1`.
fn answer(decision: &str) -> Value {
    json!({"action": "approval.answer", "data": {"approval_id": "a-1", "decision": decision}})
}

/// Sessions the attempts aim at; none may exist afterwards.
const TARGETS: [&str; 5] = [
    "chat:alice:1",
    "chat:bob:1",
    "chat:alice:1:x",
    "billing:alice:1",
    "chat:lobby",
];

#[tokio::test]
async fn every_attempt_to_get_in_is_refused_and_nothing_is_written() {
    let node = start(Duration::from_secs(10)).await;
    let mut attempts = 0;
    let mut check = |what: String, got: (u16, String), expected: (u16, &str)| {
        attempts += 1;
        assert_eq!((got.0, got.1.as_str()), expected, "{what}");
    };
    let event = json!({ "data": "let me in" });

    // Bad credentials on REST, Durable Streams and token issuance: 401.
    for (what, credential) in bad_credentials() {
        let c = Some(credential.as_str());
        let got = http(
            &node,
            "POST",
            "/v1/sessions/chat:alice:1/events",
            c,
            None,
            Some(event.clone()),
        )
        .await;
        check(format!("REST publish, {what}"), got, (401, "unauthorized"));
        let got = http(
            &node,
            "GET",
            "/v1/sessions/chat:alice:1/history",
            c,
            None,
            None,
        )
        .await;
        check(format!("REST history, {what}"), got, (401, "unauthorized"));
        let got = http(&node, "PUT", "/v1/stream/chat:alice:1", c, None, None).await;
        check(format!("DS create, {what}"), got, (401, "UNAUTHORIZED"));
        let got = http(
            &node,
            "POST",
            "/v1/stream/chat:alice:1",
            c,
            None,
            Some(json!({"x": 1})),
        )
        .await;
        check(format!("DS append, {what}"), got, (401, "UNAUTHORIZED"));
    }
    for (path, code) in [
        ("/v1/sessions/chat:alice:1/events", "unauthorized"),
        ("/v1/stream/chat:alice:1", "UNAUTHORIZED"),
    ] {
        let got = http(&node, "POST", path, None, None, Some(event.clone())).await;
        check(
            format!("POST {path} without a credential"),
            got,
            (401, code),
        );
    }

    // Valid credentials, wrong place or wrong operation: 403.
    let alice = alice();
    let reader = "reader:reader-secret-01234";
    let a = Some(alice.as_str());
    let forbidden_http: Vec<Attempt<'_>> = vec![
        (
            "another user's session",
            "POST",
            "/v1/sessions/chat:bob:1/events",
            a,
            None,
            Some(event.clone()),
            "forbidden",
        ),
        (
            "wildcard escalation (one more segment)",
            "POST",
            "/v1/sessions/chat:alice:1:x/events",
            a,
            None,
            Some(event.clone()),
            "forbidden",
        ),
        (
            "another namespace",
            "POST",
            "/v1/sessions/billing:alice:1/events",
            a,
            None,
            Some(event.clone()),
            "forbidden",
        ),
        (
            "publish with only subscribe",
            "POST",
            "/v1/sessions/chat:lobby/events",
            Some(reader),
            None,
            Some(event.clone()),
            "forbidden",
        ),
        (
            "cancel without cancel",
            "POST",
            "/v1/sessions/chat:alice:1/cancel",
            a,
            None,
            Some(json!({})),
            "forbidden",
        ),
        (
            "control.cancel event without cancel",
            "POST",
            "/v1/sessions/chat:alice:1/events",
            a,
            None,
            Some(json!({"action": "control.cancel", "data": {}})),
            "forbidden",
        ),
        (
            "approve without approve",
            "POST",
            "/v1/sessions/chat:alice:1/approve",
            a,
            None,
            Some(json!({"approval_id": "a-1", "decision": "approve"})),
            "forbidden",
        ),
        (
            "approval.answer event without approve",
            "POST",
            "/v1/sessions/chat:alice:1/events",
            a,
            None,
            Some(answer("approve")),
            "forbidden",
        ),
        (
            "spoofed Mooring-Client-Id",
            "POST",
            "/v1/sessions/chat:alice:1/events",
            a,
            Some("bob"),
            Some(event.clone()),
            "forbidden",
        ),
        (
            "history without history",
            "GET",
            "/v1/sessions/chat:alice:1/history",
            a,
            None,
            None,
            "forbidden",
        ),
        (
            "presence without presence",
            "GET",
            "/v1/sessions/chat:alice:1/presence",
            a,
            None,
            None,
            "forbidden",
        ),
        (
            "DS create of another user's stream",
            "PUT",
            "/v1/stream/chat:bob:1",
            a,
            None,
            None,
            "FORBIDDEN",
        ),
        (
            "DS read of another user's stream",
            "GET",
            "/v1/stream/chat:bob:1?offset=-1",
            a,
            None,
            None,
            "FORBIDDEN",
        ),
        (
            "DS delete without admin",
            "DELETE",
            "/v1/stream/chat:alice:1",
            a,
            None,
            None,
            "FORBIDDEN",
        ),
        (
            "DS append with only subscribe",
            "POST",
            "/v1/stream/chat:lobby",
            Some(reader),
            None,
            Some(json!({"x": 1})),
            "FORBIDDEN",
        ),
        (
            "token minted with a token",
            "POST",
            "/v1/tokens",
            a,
            None,
            Some(json!({"client_id": "alice", "caps": {"chat:**": ["admin"]}})),
            "forbidden",
        ),
        (
            "token wider than its key",
            "POST",
            "/v1/tokens",
            Some(reader),
            None,
            Some(json!({"client_id": "eve", "caps": {"chat:**": ["publish"]}})),
            "forbidden",
        ),
    ];
    for (what, method, path, credential, client_id, body, code) in forbidden_http {
        let got = http(&node, method, path, credential, client_id, body).await;
        check(what.to_owned(), got, (403, code));
    }
    let got = http(
        &node,
        "POST",
        "/v1/tokens",
        None,
        None,
        Some(json!({"client_id": "eve", "caps": {}})),
    )
    .await;
    check("token without a key".into(), got, (401, "unauthorized"));

    // WebSocket: a bad credential is an error frame, then close 4003.
    let carries = [Carry::Query, Carry::Subprotocol, Carry::Header];
    for (i, (what, credential)) in bad_credentials().into_iter().enumerate() {
        // API keys hold ':', which a subprotocol cannot carry: those go in a header.
        let carry = if credential.contains(':') {
            Carry::Header
        } else {
            carries[i % 3]
        };
        let mut ws = ws_open(&node, Some(&credential), carry).await;
        let (code, close) = refusal(&mut ws).await;
        attempts += 1;
        assert_eq!(
            (code.as_str(), close),
            ("unauthorized", Some(4003)),
            "WS {what} by {carry:?}"
        );
    }
    let mut ws = ws_open(&node, None, Carry::Query).await;
    let got = refusal(&mut ws).await;
    attempts += 1;
    assert_eq!(
        (got.0.as_str(), got.1),
        ("unauthorized", Some(4003)),
        "WS without a credential"
    );
    let mut ws = ws_open(&node, Some(&alice), Carry::Query).await;
    hello(&mut ws, Some("bob")).await;
    let got = refusal(&mut ws).await;
    attempts += 1;
    assert_eq!(
        (got.0.as_str(), got.1),
        ("forbidden", Some(4003)),
        "WS hello spoofing client_id"
    );

    // WebSocket: valid credential, missing capability: a forbidden error frame per request.
    let mut ws = welcomed(&node, &alice, Carry::Subprotocol).await;
    let frames = [
        (
            "publish to another user's session",
            publish("chat:bob:1", "message.create"),
        ),
        (
            "publish with wildcard escalation",
            publish("chat:alice:1:x", "message.create"),
        ),
        (
            "publish to another namespace",
            publish("billing:alice:1", "message.create"),
        ),
        (
            "cancel without cancel",
            publish("chat:alice:1", "control.cancel"),
        ),
        (
            "approve without approve",
            json!({"type": "publish", "req": 1, "session": "chat:alice:1",
                   "events": [answer("approve")]}),
        ),
        (
            "attach another user's session",
            json!({"type": "attach", "session": "chat:bob:1"}),
        ),
        (
            "presence without presence",
            json!({"type": "presence", "session": "chat:alice:1", "action": "enter"}),
        ),
        (
            "presence_get without presence",
            json!({"type": "presence_get", "session": "chat:alice:1"}),
        ),
    ];
    for (what, frame) in frames {
        send(&mut ws, frame).await;
        let got = next(&mut ws).await.expect("an answer");
        attempts += 1;
        assert_eq!(
            (got["type"].as_str(), got["code"].as_str()),
            (Some("error"), Some("forbidden")),
            "WS {what}: {got}"
        );
    }
    let mut ws = welcomed(&node, reader, Carry::Header).await;
    send(&mut ws, publish("chat:lobby", "message.create")).await;
    let got = next(&mut ws).await.expect("an answer");
    attempts += 1;
    assert_eq!(
        got["code"], "forbidden",
        "WS publish with only subscribe: {got}"
    );

    assert!(attempts >= 30, "only {attempts} attempts");
    for session in TARGETS {
        assert!(
            node.store.head(session).await.is_err(),
            "{session} was written by a refused attempt"
        );
    }

    // And the same credential does get in where it belongs, stamped with its identity.
    let mut ws = welcomed(&node, &alice, Carry::Query).await;
    send(&mut ws, publish("chat:alice:ok", "message.create")).await;
    let ack = next(&mut ws).await.expect("ack");
    assert_eq!(ack["type"], "ack", "{ack}");
    let (status, _) = http(
        &node,
        "POST",
        "/v1/sessions/chat:alice:ok/events",
        a,
        Some("alice"),
        Some(event.clone()),
    )
    .await;
    assert_eq!(status, 201);
    let page: Value = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/stream/chat:alice:ok?offset=-1",
            node.addr
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    let stamped: Vec<&str> = page
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["client_id"].as_str())
        .collect();
    assert_eq!(stamped, ["alice", "alice"]);
}

#[tokio::test]
async fn a_token_renewed_on_a_live_connection_keeps_it_open_past_the_old_expiry() {
    let node = start(Duration::from_millis(200)).await;
    // exp 2 s ahead, plus the 5 s leeway: the old token ends about 7 s from now.
    let short = hs(alice_claims(Some(now() + 2)));
    let mut ws = welcomed(&node, &short, Carry::Query).await;
    send(&mut ws, json!({"type": "auth", "token": alice()})).await;
    let got = next(&mut ws).await.expect("authenticated");
    assert_eq!(got["type"], "authenticated", "{got}");
    assert_eq!(got["client_id"], "alice");
    // A renewal for another identity is refused, and the connection keeps its own.
    let bob = hs(json!({"client_id": "bob", "exp": now() + 600, "caps": {"**": ["admin"]}}));
    send(&mut ws, json!({"type": "auth", "token": bob})).await;
    assert_eq!(next(&mut ws).await.expect("error")["code"], "forbidden");
    // Past the old token's end, answering pings all along.
    let until = tokio::time::Instant::now() + Duration::from_secs(9);
    while tokio::time::Instant::now() < until {
        send(&mut ws, json!({"type": "ping", "nonce": 1})).await;
        assert_eq!(
            next(&mut ws).await.expect("still connected")["type"],
            "pong"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    send(&mut ws, publish("chat:alice:renewed", "message.create")).await;
    let ack = next(&mut ws).await.expect("still connected");
    assert_eq!(ack["type"], "ack", "{ack}");
}

#[tokio::test]
async fn an_expired_token_ends_the_connection_with_4003() {
    let node = start(Duration::from_millis(200)).await;
    let short = hs(alice_claims(Some(now() + 1)));
    let mut ws = welcomed(&node, &short, Carry::Header).await;
    let started = std::time::Instant::now();
    let (code, close) = refusal(&mut ws).await;
    assert_eq!((code.as_str(), close), ("unauthorized", Some(4003)));
    // exp (at most 1 s ahead) + 5 s leeway, and not much later.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

/// An agent asks for approval inside a run; a reviewer holding `approve` answers, over the
/// WebSocket and over REST; the agent receives each answer stamped with the reviewer's
/// verified identity (never the one a payload claims), and the run waits without stalling.
#[tokio::test]
async fn an_approval_is_answered_by_a_holder_of_approve_and_reaches_the_agent() {
    let node = start(Duration::from_secs(10)).await;
    let session = "chat:alice:approvals";
    let reviewer = hs(json!({
        "client_id": "reviewer",
        "exp": now() + 600,
        "caps": { "chat:alice:*": ["subscribe", "approve"] },
    }));
    let mut agent = welcomed(&node, &alice(), Carry::Header).await;
    send(
        &mut agent,
        json!({"type": "attach", "session": session, "from": "start"}),
    )
    .await;
    assert_eq!(
        next(&mut agent).await.expect("attached")["type"],
        "attached"
    );
    assert_eq!(next(&mut agent).await.expect("live")["type"], "live");
    let request = |approval_id: &str| {
        json!({"type": "publish", "req": 2, "session": session, "events": [
            {"action": "approval.request",
             "data": {"run_id": "r-1", "approval_id": approval_id, "prompt": "delete 3 files?"}}
        ]})
    };
    let start = json!({"type": "publish", "req": 1, "session": session,
                       "events": [{"action": "run.start", "data": {"run_id": "r-1"}}]});
    send(&mut agent, start).await;
    send(&mut agent, request("a-1")).await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let frame = next(&mut agent).await.expect("a frame");
        seen.push(frame["type"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(seen.iter().filter(|t| *t == "ack").count(), 2, "{seen:?}");

    // Waiting for the answer, as GET /runs shows it.
    let runs: Value = reqwest::Client::new()
        .get(format!("http://{}/v1/sessions/{session}/runs", node.addr))
        .bearer_auth(&reviewer)
        .send()
        .await
        .expect("runs")
        .json()
        .await
        .expect("json");
    assert_eq!(
        runs["runs"][0]["awaiting_approval"],
        json!(["a-1"]),
        "{runs}"
    );

    // The reviewer answers over the WebSocket, claiming to be someone else in the payload.
    let mut ws = welcomed(&node, &reviewer, Carry::Query).await;
    let mut denial = answer("deny");
    denial["client_id"] = json!("alice");
    send(
        &mut ws,
        json!({"type": "publish", "req": 1, "session": session, "events": [denial]}),
    )
    .await;
    let ack = next(&mut ws).await.expect("ack");
    // A client_id in an event is not a field of the protocol: refused, not stamped.
    assert_eq!(ack["code"], "bad_frame", "{ack}");
    send(
        &mut ws,
        json!({"type": "publish", "req": 2, "session": session, "events": [answer("deny")]}),
    )
    .await;
    assert_eq!(next(&mut ws).await.expect("ack")["type"], "ack");
    let got = next(&mut agent).await.expect("the answer");
    assert_eq!(
        (&got["action"], &got["client_id"], &got["data"]["decision"]),
        (
            &json!("approval.answer"),
            &json!("reviewer"),
            &json!("deny")
        ),
        "{got}"
    );

    // And over REST, for a second approval.
    send(&mut agent, request("a-2")).await;
    let mut acked = false;
    while !acked {
        let frame = next(&mut agent).await.expect("a frame");
        acked = frame["type"] == "ack";
    }
    let (status, _) = http(
        &node,
        "POST",
        &format!("/v1/sessions/{session}/approve"),
        Some(&reviewer),
        None,
        Some(json!({"approval_id": "a-2", "decision": "approve", "reason": "fine"})),
    )
    .await;
    assert_eq!(status, 201);
    let got = loop {
        let frame = next(&mut agent).await.expect("the answer");
        if frame["action"] == "approval.answer" {
            break frame;
        }
    };
    assert_eq!(
        (
            &got["client_id"],
            &got["data"]["approval_id"],
            &got["data"]["decision"]
        ),
        (&json!("reviewer"), &json!("a-2"), &json!("approve")),
        "{got}"
    );
    // An answer that is not approve or deny is refused with its code.
    let (status, code) = http(
        &node,
        "POST",
        &format!("/v1/sessions/{session}/events"),
        Some(&reviewer),
        None,
        Some(json!({"action": "approval.answer",
                    "data": {"approval_id": "a-3", "decision": "maybe"}})),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_event"));
}

/// A worker reads every input its pattern matches and starts runs there: registering needs
/// `subscribe` and `publish` on the whole pattern, not on some sessions of it.
#[tokio::test]
async fn a_worker_may_register_only_for_sessions_its_credential_covers() {
    let node = start(Duration::from_secs(10)).await;
    let mut ws = welcomed(&node, &alice(), Carry::Query).await;
    for (req, pattern) in [(1, "chat:**"), (2, "chat:*"), (3, "**"), (4, "chat:bob:*")] {
        send(
            &mut ws,
            json!({"type": "worker", "req": req, "patterns": [pattern]}),
        )
        .await;
        let refused = next(&mut ws).await.expect("an error");
        assert_eq!(refused["type"], "error", "{pattern}: {refused}");
        assert_eq!(refused["code"], "forbidden", "{pattern}");
        assert_eq!(refused["req"], req);
    }
    send(
        &mut ws,
        json!({"type": "worker", "req": 5, "patterns": ["chat:alice:*"]}),
    )
    .await;
    let ok = next(&mut ws).await.expect("registered");
    assert_eq!(ok["type"], "worker_registered", "{ok}");

    // A reader (subscribe only) may not be a worker either.
    let mut reader = welcomed(&node, "reader:reader-secret-01234", Carry::Header).await;
    send(
        &mut reader,
        json!({"type": "worker", "req": 1, "patterns": ["chat:**"]}),
    )
    .await;
    assert_eq!(next(&mut reader).await.expect("error")["code"], "forbidden");
}

/// The AI SDK's stock transports (`/v1/chat`): each request is refused with its code unless the
/// credential grants it on that chat, and a refused send writes nothing.
#[tokio::test]
async fn the_chat_transports_refuse_what_the_credential_does_not_grant() {
    let node = start(Duration::from_secs(10)).await;
    let send = |chat: &str| {
        json!({"id": chat, "trigger": "submit-message",
               "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}]})
    };
    let client = reqwest::Client::new();
    let post = |credential: Option<String>, body: Value| {
        let mut request = client
            .post(format!("http://{}/v1/chat", node.addr))
            .json(&body);
        if let Some(c) = credential {
            request = request.bearer_auth(c);
        }
        request.send()
    };
    // (credential, chat, status, code at the start of the body)
    let cases: Vec<(Option<String>, &str, u16, &str)> = vec![
        (None, "chat:alice:1", 401, "unauthorized"),
        (
            Some("backend:not-the-secret-000".into()),
            "chat:alice:1",
            401,
            "unauthorized",
        ),
        (Some(alice()), "chat:bob:1", 403, "forbidden"),
        (
            Some("reader:reader-secret-01234".into()),
            "chat:alice:1",
            403,
            "forbidden",
        ),
        (Some(alice()), "not a name", 400, "invalid_session_name"),
    ];
    for (credential, chat, status, code) in cases {
        let response = post(credential, send(chat)).await.expect("request");
        assert_eq!(response.status().as_u16(), status, "{chat}");
        let text = response.text().await.expect("body");
        assert!(text.starts_with(&format!("{code}: ")), "{chat}: {text}");
    }
    for chat in ["chat:alice:1", "chat:bob:1"] {
        assert!(node.store.head(chat).await.is_err(), "{chat} was written");
    }
    // A resume needs subscribe on the chat.
    let resume = client
        .get(format!("http://{}/v1/chat/chat:bob:1/stream", node.addr))
        .bearer_auth(alice())
        .send()
        .await
        .expect("request");
    assert_eq!(resume.status().as_u16(), 403);
    let resume = client
        .get(format!("http://{}/v1/chat/chat:alice:1/stream", node.addr))
        .bearer_auth(alice())
        .send()
        .await
        .expect("request");
    assert_eq!(resume.status().as_u16(), 204, "nothing active");

    // The WebSocket transport: no credential is closed with 4003; a send beyond the grant is
    // an `error` frame of that request, and the socket stays open.
    let url = format!("ws://{}/v1/chat/ws", node.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("upgrade");
    assert_eq!(next(&mut ws).await.err().flatten(), Some(4003));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}?token={}", alice()))
        .await
        .expect("upgrade");
    let mut frame = send("chat:bob:1");
    frame["type"] = json!("send");
    frame["requestId"] = json!("r1");
    frame["headers"] = json!({});
    frame["body"] = json!({});
    ws.send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
    let refused = next(&mut ws).await.expect("an error frame");
    assert_eq!(
        (refused["type"].as_str(), refused["requestId"].as_str()),
        (Some("error"), Some("r1"))
    );
    assert!(
        refused["errorText"]
            .as_str()
            .is_some_and(|t| t.starts_with("forbidden: ")),
        "{refused}"
    );
    let resume = json!({"type": "resume", "requestId": "r2", "id": "chat:alice:1", "headers": {}, "body": {}});
    ws.send(Message::Text(resume.to_string().into()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await.expect("a frame")["type"], "no-active");
    assert!(node.store.head("chat:bob:1").await.is_err());
}
