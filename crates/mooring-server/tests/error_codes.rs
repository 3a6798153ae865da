//! Every error code and close code of `docs/protocol.md`, provoked over a real WebSocket.
//!
//! `seam_overflow` needs a replay outrun by live traffic; it is provoked in `backpressure.rs`
//! (`a_replay_outrun_by_live_events_fails_closed_with_seam_overflow_and_resumes`), as is the
//! slow-consumer close `4008`; `history_lost` needs a session deleted under an attachment, in
//! `epochs.rs`; the REST-only codes are provoked in `rest.rs`. [`every_documented_code_is_provoked`] keeps this list in step with
//! the documentation.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{no_rollup, Engine, Node};
use mooring_core::clock::SystemClock;
use mooring_core::store::StoreError;
use mooring_engine::embedded::EmbeddedStore;
use mooring_protocol::realtime::{
    close, AttachFrom, AttachPoint, ErrorBody, ErrorCode, ServerFrame,
};
use mooring_protocol::session::NewEvent;
use mooring_server::realtime::RealtimeConfig;
use mooring_testkit::faults::FaultyStore;
use mooring_testkit::ws::{self, ConnectOptions, Incoming, RealtimeClient};
use serde_json::json;

const PROMPT: Duration = Duration::from_secs(15);

/// Each documented error code and the test here (or in `backpressure.rs`) that provokes it.
const PROVOKED: &[(&str, &str)] = &[
    ("bad_frame", "a_bad_first_frame_is_refused_and_closed_with_4000"),
    ("unsupported_protocol", "hello_errors_close_with_4000"),
    ("hello_required", "hello_errors_close_with_4000"),
    ("invalid_session_name", "refused_requests_name_their_code"),
    ("invalid_event", "refused_requests_name_their_code"),
    ("message_not_found", "refused_requests_name_their_code"),
    ("too_large", "refused_requests_name_their_code"),
    ("too_many_attachments", "a_connection_attaches_at_most_max_attachments_sessions"),
    (
        "seam_overflow",
        "backpressure.rs: a_replay_outrun_by_live_events_fails_closed_with_seam_overflow_and_resumes",
    ),
    (
        "history_lost",
        "epochs.rs: a_hot_session_deleted_over_durable_streams_and_written_again_is_a_new_life",
    ),
    ("session_closed", "a_closed_session_refuses_events"),
    ("rate_limited", "realtime.rs: limits_answer_with_their_codes"),
    ("too_many_connections", "realtime.rs: limits_answer_with_their_codes"),
    (
        "session_not_found",
        "rest.rs: history_pages_both_ways_return_every_event_once",
    ),
    (
        "invalid_request",
        "rest.rs: history_pages_both_ways_return_every_event_once",
    ),
    ("not_a_session", "a_durable_stream_of_another_type_is_not_a_session"),
    ("store_unavailable", "a_refused_write_is_store_unavailable_and_a_retry_with_its_id_lands_once"),
    ("shutting_down", "a_stopped_store_answers_shutting_down"),
    (
        "unauthorized",
        "auth.rs: every_attempt_to_get_in_is_refused_and_nothing_is_written",
    ),
    (
        "forbidden",
        "auth.rs: every_attempt_to_get_in_is_refused_and_nothing_is_written",
    ),
    (
        "input_taken",
        "dispatch.rs: one_input_three_workers_exactly_one_run",
    ),
    (
        "invalid_pattern",
        "dispatch.rs: a_bad_pattern_is_refused_with_its_code",
    ),
];

fn error_of(frame: &ServerFrame) -> &ErrorBody {
    match frame {
        ServerFrame::Error { error, .. } => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn connect(node: &Node, client_id: &str) -> RealtimeClient {
    RealtimeClient::connect(&node.addr, client_id)
        .await
        .expect("connect")
}

async fn publish(client: &mut RealtimeClient, session: &str, events: Vec<NewEvent>) -> ServerFrame {
    client
        .publish(session, events, PROMPT)
        .await
        .expect("an answer")
}

/// The serial of an acknowledged single-event publish.
fn serial_of(frame: &ServerFrame) -> u64 {
    match frame {
        ServerFrame::Ack { results, .. } => results[0].serial,
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// Reads until the connection ends; returns the frames before it and the close code.
async fn until_closed(client: &mut RealtimeClient) -> (Vec<ServerFrame>, Option<u16>) {
    let mut frames = Vec::new();
    loop {
        match client.recv(PROMPT).await.expect("the connection ends") {
            Incoming::Frame(frame) => frames.push(frame),
            Incoming::Closed(code) => return (frames, code),
        }
    }
}

fn codes(frames: &[ServerFrame]) -> Vec<ErrorCode> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Error { error, .. } => Some(error.code),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn every_documented_code_is_provoked() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol.md"
    ))
    .expect("docs/protocol.md");
    let errors = doc.split("## Errors").nth(1).expect("an Errors section");
    let documented: BTreeSet<&str> = errors
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let provoked: BTreeSet<&str> = PROVOKED.iter().map(|(code, _)| *code).collect();
    assert_eq!(
        documented, provoked,
        "documented codes vs codes provoked by a test"
    );
    for code in provoked {
        let parsed: Result<ErrorCode, _> = serde_json::from_value(json!(code));
        assert!(
            parsed.is_ok(),
            "{code} is not an error code of the protocol crate"
        );
    }
    for close_code in [
        "`1000`", "`1001`", "`1009`", "`4000`", "`4001`", "`4003`", "`4008`", "`4029`",
    ] {
        assert!(
            doc.contains(close_code),
            "close code {close_code} is not documented"
        );
    }
}

#[tokio::test]
async fn hello_errors_close_with_4000() {
    let node = Node::start(Engine::Memory, no_rollup()).await;
    let mut c = RealtimeClient::open(&node.addr, &ConnectOptions::default())
        .await
        .expect("open");
    c.attach("s", None).await.expect("send");
    let (frames, code) = until_closed(&mut c).await;
    assert_eq!(codes(&frames), [ErrorCode::HelloRequired]);
    assert_eq!(code, Some(close::PROTOCOL_ERROR));

    let mut c = RealtimeClient::open(&node.addr, &ConnectOptions::default())
        .await
        .expect("open");
    c.send_text(r#"{"type":"hello","protocol":2}"#)
        .await
        .expect("send");
    let (frames, code) = until_closed(&mut c).await;
    assert_eq!(codes(&frames), [ErrorCode::UnsupportedProtocol]);
    assert!(!error_of(&frames[0]).retryable);
    assert_eq!(code, Some(close::PROTOCOL_ERROR));
}

#[tokio::test]
async fn a_bad_first_frame_is_refused_and_closed_with_4000() {
    let node = Node::start(Engine::Memory, no_rollup()).await;
    let mut c = RealtimeClient::open(&node.addr, &ConnectOptions::default())
        .await
        .expect("open");
    c.send_text("not json").await.expect("send");
    let (frames, code) = until_closed(&mut c).await;
    assert_eq!(codes(&frames), [ErrorCode::BadFrame]);
    assert_eq!(code, Some(close::PROTOCOL_ERROR));

    // After the hello a bad frame is refused and the connection stays.
    let mut c = connect(&node, "c").await;
    for bad in [
        "not json",
        r#"{"type":"bogus"}"#,
        r#"{"type":"ping","nonce":1,"extra":true}"#,
        r#"{"type":"hello","protocol":1}"#,
    ] {
        c.send_text(bad).await.expect("send");
        let frame = c.recv_frame(PROMPT).await.expect("an answer");
        assert_eq!(error_of(&frame).code, ErrorCode::BadFrame, "{bad}");
    }
    let ack = publish(&mut c, "s", vec![ws::create("note", "still here")]).await;
    assert_eq!(serial_of(&ack), 1);
}

#[tokio::test]
async fn refused_requests_name_their_code() {
    let node = Node::start(Engine::Memory, no_rollup()).await;
    let mut c = connect(&node, "c").await;
    let refused = |frame: &ServerFrame, code: ErrorCode| {
        let error = error_of(frame);
        assert_eq!(error.code, code, "{error:?}");
        assert!(!error.retryable, "{error:?}");
    };

    for name in ["has space", "", "x?y"] {
        let f = publish(&mut c, name, vec![ws::create("n", "x")]).await;
        refused(&f, ErrorCode::InvalidSessionName);
        c.attach(name, None).await.expect("send");
        let f = c.recv_frame(PROMPT).await.expect("an answer");
        refused(&f, ErrorCode::InvalidSessionName);
    }
    let long = "a".repeat(256);
    let f = publish(&mut c, &long, vec![ws::create("n", "x")]).await;
    refused(&f, ErrorCode::InvalidSessionName);

    let message = serial_of(&publish(&mut c, "s", vec![ws::create("response", "He")]).await);
    let mut no_ref = ws::append(message, "x");
    no_ref.reference = None;
    let mut create_with_ref = ws::create("response", "x");
    create_with_ref.reference = Some(message);
    let mut not_text = ws::append(message, "x");
    not_text.data = json!({"not": "text"});
    for (events, what) in [
        (vec![no_ref], "an append without ref"),
        (vec![create_with_ref], "a create with a ref"),
        (vec![not_text], "an append of an object"),
        (Vec::new(), "no events"),
    ] {
        let f = publish(&mut c, "s", events).await;
        let error = error_of(&f);
        assert_eq!(error.code, ErrorCode::InvalidEvent, "{what}: {error:?}");
    }

    let f = publish(&mut c, "s", vec![ws::append(99, "x")]).await;
    refused(&f, ErrorCode::MessageNotFound);
    let deleted = serial_of(&publish(&mut c, "s", vec![ws::create("response", "")]).await);
    serial_of(&publish(&mut c, "s", vec![ws::delete(deleted)]).await);
    let f = publish(&mut c, "s", vec![ws::append(deleted, "x")]).await;
    refused(&f, ErrorCode::MessageNotFound);

    // A refused event refuses its whole publish: nothing of it is written.
    let f = publish(
        &mut c,
        "s",
        vec![ws::append(message, "llo"), ws::append(deleted, "x")],
    )
    .await;
    refused(&f, ErrorCode::MessageNotFound);
    let snapshot = node
        .store
        .snapshot("s")
        .await
        .expect("read")
        .expect("session");
    assert_eq!(snapshot.messages[0].data, "He");

    let f = publish(&mut c, "s", vec![ws::create("blob", "x".repeat(70 << 10))]).await;
    refused(&f, ErrorCode::TooLarge);
    // Just under the limit is accepted.
    serial_of(&publish(&mut c, "s", vec![ws::create("blob", "x".repeat(60 << 10))]).await);
}

#[tokio::test]
async fn a_connection_attaches_at_most_max_attachments_sessions() {
    let node = Node::start(
        Engine::Memory,
        RealtimeConfig {
            max_attachments: 2,
            ..no_rollup()
        },
    )
    .await;
    let mut c = connect(&node, "c").await;
    let start = Some(AttachFrom::Named(AttachPoint::Start));
    for session in ["a", "b"] {
        c.attach(session, start.clone()).await.expect("send");
        assert!(matches!(
            c.recv_frame(PROMPT).await,
            Ok(ServerFrame::Attached { .. })
        ));
        assert!(matches!(
            c.recv_frame(PROMPT).await,
            Ok(ServerFrame::Live { .. })
        ));
    }
    // Attaching again to a held session replaces that attachment; a third session is refused.
    c.attach("a", start.clone()).await.expect("send");
    assert!(matches!(
        c.recv_frame(PROMPT).await,
        Ok(ServerFrame::Attached { .. })
    ));
    assert!(matches!(
        c.recv_frame(PROMPT).await,
        Ok(ServerFrame::Live { .. })
    ));
    c.attach("c", start.clone()).await.expect("send");
    let f = c.recv_frame(PROMPT).await.expect("an answer");
    let error = error_of(&f);
    assert_eq!(error.code, ErrorCode::TooManyAttachments);
    assert!(!error.retryable);
    // Detaching one makes room.
    c.send_text(r#"{"type":"detach","session":"b"}"#)
        .await
        .expect("send");
    assert!(matches!(
        c.recv_frame(PROMPT).await,
        Ok(ServerFrame::Detached { error: None, .. })
    ));
    c.attach("c", start).await.expect("send");
    assert!(matches!(
        c.recv_frame(PROMPT).await,
        Ok(ServerFrame::Attached { .. })
    ));
}

#[tokio::test]
async fn a_closed_session_refuses_events() {
    let node = Node::start(Engine::Memory, no_rollup()).await;
    let mut c = connect(&node, "c").await;
    serial_of(
        &publish(
            &mut c,
            "chat:closing",
            vec![ws::create("note", "last words")],
        )
        .await,
    );
    let closed = reqwest::Client::new()
        .post(node.http_url("/v1/stream/chat:closing"))
        .header("Stream-Closed", "true")
        .send()
        .await
        .expect("close");
    assert!(closed.status().is_success(), "{}", closed.status());
    let f = publish(&mut c, "chat:closing", vec![ws::create("note", "more")]).await;
    let error = error_of(&f);
    assert_eq!(error.code, ErrorCode::SessionClosed, "{error:?}");
    assert!(!error.retryable);
}

#[tokio::test]
async fn a_durable_stream_of_another_type_is_not_a_session() {
    let node = Node::start(Engine::Memory, no_rollup()).await;
    let created = reqwest::Client::new()
        .put(node.http_url("/v1/stream/plain-text"))
        .header("Content-Type", "text/plain")
        .send()
        .await
        .expect("create");
    assert!(created.status().is_success(), "{}", created.status());
    let mut c = connect(&node, "c").await;
    let f = publish(&mut c, "plain-text", vec![ws::create("note", "hi")]).await;
    let error = error_of(&f);
    assert_eq!(error.code, ErrorCode::NotASession, "{error:?}");
    assert!(!error.retryable);
}

#[tokio::test]
async fn a_refused_write_is_store_unavailable_and_a_retry_with_its_id_lands_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = EmbeddedStore::open(dir.path(), Arc::new(SystemClock)).expect("open");
    let store = Arc::new(FaultyStore::new(Arc::new(engine)));
    let node = Node::on_store(store.clone(), no_rollup()).await;
    let mut c = connect(&node, "c").await;
    serial_of(&publish(&mut c, "s", vec![ws::create("note", "before")]).await);

    store.fail_publishes(StoreError::Io("injected: no space left on device".into()));
    let mut event = ws::create("note", "important");
    event.id = Some("k-1".into());
    let f = publish(&mut c, "s", vec![event.clone()]).await;
    let error = error_of(&f);
    assert_eq!(error.code, ErrorCode::StoreUnavailable, "{error:?}");
    assert!(error.retryable);
    let poisoned = publish(&mut c, "s", vec![event.clone()]).await;
    assert_eq!(
        error_of(&poisoned).code,
        ErrorCode::StoreUnavailable,
        "a poisoned store refuses too"
    );
    store.fail_publishes(StoreError::Poisoned("injected fsync failure".into()));
    let f = publish(&mut c, "s", vec![event.clone()]).await;
    assert_eq!(error_of(&f).code, ErrorCode::StoreUnavailable);

    // As the table says: retry with the same id once the storage is back.
    store.heal();
    let f = publish(&mut c, "s", vec![event.clone()]).await;
    let ServerFrame::Ack { results, .. } = &f else {
        panic!("expected an ack, got {f:?}");
    };
    assert_eq!((results[0].serial, results[0].duplicate), (2, false));
    let f = publish(&mut c, "s", vec![event]).await;
    let ServerFrame::Ack { results, .. } = &f else {
        panic!("expected an ack, got {f:?}");
    };
    assert_eq!((results[0].serial, results[0].duplicate), (2, true));
    let snapshot = node
        .store
        .snapshot("s")
        .await
        .expect("read")
        .expect("session");
    assert_eq!(snapshot.info.tail.serial, 2);
}

#[tokio::test]
async fn a_stopped_store_answers_shutting_down() {
    let node = Node::start(Engine::Embedded, no_rollup()).await;
    let mut c = connect(&node, "c").await;
    serial_of(&publish(&mut c, "s", vec![ws::create("note", "before")]).await);
    node.store.shutdown().await.expect("the store stops");
    let f = publish(&mut c, "s", vec![ws::create("note", "after")]).await;
    let error = error_of(&f);
    assert_eq!(error.code, ErrorCode::ShuttingDown, "{error:?}");
    assert!(error.retryable);
}

#[tokio::test]
async fn a_stopping_node_closes_connections_with_1001() {
    let node = Node::start(Engine::Memory, no_rollup()).await;
    let mut c = connect(&node, "c").await;
    c.attach("s", Some(AttachFrom::Named(AttachPoint::Start)))
        .await
        .expect("send");
    assert!(matches!(
        c.recv_frame(PROMPT).await,
        Ok(ServerFrame::Attached { .. })
    ));
    node.begin_shutdown();
    let (_, code) = until_closed(&mut c).await;
    assert_eq!(code, Some(1001));
    node.stop().await.expect("the node stops cleanly");
}

#[tokio::test]
async fn a_silent_client_is_closed_with_4001_after_dead_after() {
    let heartbeat = Duration::from_millis(100);
    let node = Node::start(
        Engine::Memory,
        RealtimeConfig {
            heartbeat,
            ..no_rollup()
        },
    )
    .await;
    let dead_after = heartbeat * 5 / 2;

    // A client that answers pings outlives several dead_after periods.
    let mut alive = connect(&node, "alive").await;
    let until = Instant::now() + dead_after * 4;
    while Instant::now() < until {
        match alive.recv(dead_after).await {
            Err(mooring_testkit::ws::WsError::Timeout(_)) => {}
            other => panic!("a client answering pings got {other:?}"),
        }
    }

    // A silent one (tungstenite answers WebSocket pings on its own, but protocol pings are JSON
    // frames, which this client leaves unanswered) is closed with 4001.
    let silent = ConnectOptions {
        answer_pings: false,
        ..ConnectOptions::default()
    };
    let mut c = RealtimeClient::connect_with(&node.addr, "silent", &silent)
        .await
        .expect("connect");
    let since = Instant::now();
    let (_, code) = until_closed(&mut c).await;
    let after = since.elapsed();
    assert_eq!(code, Some(close::HEARTBEAT_TIMEOUT));
    assert!(
        after >= dead_after - heartbeat && after <= dead_after + heartbeat * 4,
        "closed after {after:?}; dead_after is {dead_after:?}"
    );
}
