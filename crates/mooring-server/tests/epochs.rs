//! A session deleted and written again is a new life of its log: attached clients are told,
//! positions of the old life are answered `history_lost`, never resumed into the new one.
//! (Issue 9; the same through a Redis that lost its data is tested in the `mooring` crate.)

mod common;

use std::time::Duration;

use common::{no_rollup, Engine, Node};
use mooring_protocol::realtime::{AttachMode, ErrorCode, ServerFrame};
use mooring_protocol::session::Event;
use mooring_testkit::ws::{self, RealtimeClient};

const PROMPT: Duration = Duration::from_secs(15);

async fn connect(node: &Node, client_id: &str) -> RealtimeClient {
    RealtimeClient::connect(&node.addr, client_id)
        .await
        .expect("connect")
}

async fn publish(client: &mut RealtimeClient, session: &str, text: &str) -> u64 {
    match client
        .publish(session, vec![ws::create("response", text)], PROMPT)
        .await
        .expect("an answer")
    {
        ServerFrame::Ack { results, .. } => results[0].serial,
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// Reads an attachment's `attached`, its events and `live`.
async fn attachment(client: &mut RealtimeClient) -> (u64, AttachMode, Vec<Event>) {
    let (epoch, mode) = match client.recv_frame(PROMPT).await.expect("attached") {
        ServerFrame::Attached { epoch, mode, .. } => (epoch, mode),
        other => panic!("expected attached, got {other:?}"),
    };
    let mut events = Vec::new();
    loop {
        match client.recv_frame(PROMPT).await.expect("a frame") {
            ServerFrame::Event {
                event, epoch: e, ..
            } => {
                assert_eq!(e, epoch, "an event of another life than attached said");
                events.push(event);
            }
            ServerFrame::Live { .. } => return (epoch, mode, events),
            other => panic!("expected an event or live, got {other:?}"),
        }
    }
}

fn data(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.data.as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_hot_session_deleted_over_durable_streams_and_written_again_is_a_new_life() {
    let node = Node::start(Engine::Embedded, no_rollup()).await;
    let session = "chat:reborn";
    let mut writer = connect(&node, "writer").await;
    for text in ["old 1", "old 2", "old 3"] {
        publish(&mut writer, session, text).await;
    }
    let mut reader = connect(&node, "reader").await;
    reader
        .attach(session, ws::from_position(0, 0))
        .await
        .expect("attach");
    let (old_epoch, _, events) = attachment(&mut reader).await;
    assert_eq!(data(&events), ["old 1", "old 2", "old 3"]);

    let http = reqwest::Client::new();
    let url = node.http_url(&format!("/v1/stream/{session}"));
    let deleted = http.delete(&url).send().await.expect("delete");
    assert_eq!(deleted.status(), 204);
    // The attached reader is told its life ended, instead of being continued into the next.
    match reader.recv_frame(PROMPT).await.expect("a frame") {
        ServerFrame::Detached {
            error: Some(error), ..
        } => {
            assert_eq!(error.code, ErrorCode::HistoryLost, "{error:?}");
            assert!(error.retryable);
        }
        other => panic!("expected detached with history_lost, got {other:?}"),
    }

    for text in ["new 1", "new 2"] {
        publish(&mut writer, session, text).await;
    }
    // Resuming from the old position: history_lost and exactly the new life's view.
    reader
        .attach(session, ws::from_position(old_epoch, 3))
        .await
        .expect("attach");
    let (new_epoch, mode, view) = attachment(&mut reader).await;
    assert_eq!(mode, AttachMode::HistoryLost);
    assert_ne!(new_epoch, old_epoch);
    assert_eq!(data(&view), ["new 1", "new 2"]);
    publish(&mut writer, session, "new 3").await;
    match reader.recv_frame(PROMPT).await.expect("a live event") {
        ServerFrame::Event { epoch, event, .. } => {
            assert_eq!((epoch, event.serial), (new_epoch, 3));
        }
        other => panic!("expected an event, got {other:?}"),
    }

    // Over Durable Streams an offset of the old life is refused with 410, naming the tail.
    let old_offset = format!("{old_epoch:016}_{:016}", 3);
    let read = http
        .get(format!("{url}?offset={old_offset}"))
        .send()
        .await
        .expect("read");
    assert_eq!(read.status(), 410);
    let next = read.headers()["stream-next-offset"].to_str().expect("text");
    assert_eq!(next, format!("{new_epoch:016}_{:016}", 3));
    let body: serde_json::Value = read.json().await.expect("json");
    assert_eq!(body["error"]["code"], "HISTORY_LOST");
}
