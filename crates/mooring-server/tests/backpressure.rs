//! Backpressure end to end: a client that stops reading is closed with 4008 and resumes without
//! loss; a replay outrun by live events fails closed with `seam_overflow` and resumes without
//! loss.
//!
//! The readers here use a small fixed socket receive buffer, which turns off the kernel's
//! autotuning (up to tens of MiB on loopback), so "stops reading" fills the server's queues after
//! a predictable amount of data.

mod common;

use std::time::Duration;

use common::{unthrottled, Engine, Node};
use mooring_protocol::realtime::{
    close, AttachFrom, AttachMode, AttachPoint, ClientFrame, ErrorCode, ServerFrame,
};
use mooring_protocol::session::NewEvent;
use mooring_testkit::session_check::{view_differences, Reconstruction};
use mooring_testkit::ws::{self, ConnectOptions, Incoming, RealtimeClient};

const PROMPT: Duration = Duration::from_secs(20);
/// The receive buffer of a reader that stops reading.
const SMALL_RECV_BUFFER: u32 = 32 << 10;
/// Publishes in flight per writer.
const WINDOW: usize = 64;

fn start() -> Option<AttachFrom> {
    Some(AttachFrom::Named(AttachPoint::Start))
}

/// A message of about `bytes` bytes, numbered.
fn big(i: u64, bytes: usize) -> NewEvent {
    let filler = char::from(b'a' + (i % 26) as u8).to_string().repeat(bytes);
    ws::create("blob", format!("{i}:{filler}"))
}

/// Publishes `events` one per request, `WINDOW` in flight, and waits until all are acknowledged.
async fn publish_all(writer: &mut RealtimeClient, session: &str, events: Vec<NewEvent>) -> u64 {
    let mut in_flight = 0;
    let mut last = 0;
    let mut settle = |frame: ServerFrame| match frame {
        ServerFrame::Ack { results, .. } => {
            last = results
                .iter()
                .map(|r| r.serial)
                .max()
                .unwrap_or(last)
                .max(last);
        }
        other => panic!("the writer got {other:?}"),
    };
    for event in events {
        writer
            .send_publish(session, vec![event])
            .await
            .expect("publish");
        in_flight += 1;
        while in_flight >= WINDOW {
            settle(writer.recv_frame(PROMPT).await.expect("ack"));
            in_flight -= 1;
        }
    }
    while in_flight > 0 {
        settle(writer.recv_frame(PROMPT).await.expect("ack"));
        in_flight -= 1;
    }
    last
}

/// Reads until the reconstruction has seen `last`, failing on anything but events and the
/// frames of an attach.
async fn read_until(client: &mut RealtimeClient, recon: &mut Reconstruction, last: u64) {
    while recon.last_serial() < last {
        match client.recv_frame(PROMPT).await.expect("a frame") {
            ServerFrame::Event { epoch, event, .. } => {
                recon.observe(epoch, &event);
            }
            ServerFrame::Attached { mode, .. } => assert_eq!(mode, AttachMode::Replay),
            ServerFrame::Live { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_4008_and_resumes_without_loss() {
    slow_consumer(false).await;
}

/// A client pings every heartbeat, slow or not; its pong must not wedge the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_that_pings_is_closed_with_4008_and_resumes_without_loss() {
    slow_consumer(true).await;
}

async fn slow_consumer(ping_while_full: bool) {
    let node = Node::start(Engine::Memory, unthrottled()).await;
    let session = "slow:1";
    let options = ConnectOptions {
        recv_buffer: Some(SMALL_RECV_BUFFER),
        ..ConnectOptions::default()
    };
    let mut slow = RealtimeClient::connect_with(&node.addr, "slow", &options)
        .await
        .expect("connect");
    slow.attach(session, start()).await.expect("attach");
    let mut recon = Reconstruction::new();
    assert!(matches!(
        slow.recv_frame(PROMPT).await,
        Ok(ServerFrame::Attached { .. })
    ));
    assert!(matches!(
        slow.recv_frame(PROMPT).await,
        Ok(ServerFrame::Live { .. })
    ));

    // 2,000 events of 16 KiB: far more than the server's socket buffer (at most 4 MiB) and the
    // connection's queue (1,024 frames) hold, while the slow client reads nothing.
    let mut writer = RealtimeClient::connect(&node.addr, "writer")
        .await
        .expect("connect");
    let events: Vec<_> = (0..2000).map(|i| big(i, 16 << 10)).collect();
    let last = publish_all(&mut writer, session, events).await;
    assert_eq!(last, 2000);
    // Let the attachment meet the full queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if ping_while_full {
        slow.send(&ClientFrame::Ping { nonce: 1 })
            .await
            .expect("ping");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let code = loop {
        let incoming = slow.recv(PROMPT).await;
        match incoming.unwrap_or_else(|e| {
            panic!(
                "the slow client stopped getting anything at serial {}: {e}",
                recon.last_serial()
            )
        }) {
            Incoming::Frame(ServerFrame::Event { epoch, event, .. }) => {
                recon.observe(epoch, &event);
            }
            Incoming::Frame(ServerFrame::Pong { .. }) if ping_while_full => {}
            Incoming::Frame(other) => panic!("unexpected {other:?}"),
            Incoming::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(close::SLOW_CONSUMER));
    let cut_at = recon.last_serial();
    assert!(
        cut_at < last,
        "the slow client was closed after it had everything"
    );

    // Resume from the last serial seen: everything else arrives, once, in order.
    let mut again = RealtimeClient::connect(&node.addr, "slow")
        .await
        .expect("reconnect");
    let from = recon.resume_position().map(AttachFrom::Position);
    again.attach(session, from).await.expect("attach");
    read_until(&mut again, &mut recon, last).await;
    let report = recon.report(Some(last));
    assert!(report.is_clean(), "{report}");
    let snapshot = node
        .store
        .snapshot(session)
        .await
        .expect("snapshot")
        .expect("session");
    let diff = view_differences(&recon.messages(), &snapshot.messages);
    assert!(diff.is_empty(), "{diff:?}");
    println!(
        "slow consumer (pinged while full: {ping_while_full}): closed with 4008 at serial \
         {cut_at} of {last}, resumed, {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_outrun_by_live_events_fails_closed_with_seam_overflow_and_resumes() {
    let node = Node::start(Engine::Memory, unthrottled()).await;
    let session = "seam:1";
    let mut writer = RealtimeClient::connect(&node.addr, "writer")
        .await
        .expect("connect");
    // A history of 2,500 events of 8 KiB: its replay fills the socket and the queue long before
    // it ends, so it blocks while the reader reads nothing.
    let history: Vec<_> = (0..2500).map(|i| big(i, 8 << 10)).collect();
    let high_water = publish_all(&mut writer, session, history).await;

    let options = ConnectOptions {
        recv_buffer: Some(SMALL_RECV_BUFFER),
        ..ConnectOptions::default()
    };
    let mut reader = RealtimeClient::connect_with(&node.addr, "reader", &options)
        .await
        .expect("connect");
    reader.attach(session, start()).await.expect("attach");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // More live events than the attachment's seam buffer (4,096) holds, while its replay is
    // stuck.
    let live: Vec<_> = (0..4500)
        .map(|i| ws::app_event("tick", serde_json::json!(i)))
        .collect();
    let last = publish_all(&mut writer, session, live).await;
    assert_eq!(last, high_water + 4500);

    let mut recon = Reconstruction::new();
    match reader.recv_frame(PROMPT).await.expect("attached") {
        ServerFrame::Attached { mode, serial, .. } => {
            assert_eq!((mode, serial), (AttachMode::Replay, high_water));
        }
        other => panic!("expected attached, got {other:?}"),
    }
    let error = loop {
        match reader.recv_frame(PROMPT).await.expect("a frame") {
            ServerFrame::Event { epoch, event, .. } => {
                assert!(
                    event.serial <= high_water,
                    "serial {} arrived before the replay ended",
                    event.serial
                );
                recon.observe(epoch, &event);
            }
            ServerFrame::Detached { error, .. } => break error.expect("detached with an error"),
            other => panic!("expected the replay then detached, got {other:?}"),
        }
    };
    assert_eq!(error.code, ErrorCode::SeamOverflow, "{error:?}");
    assert!(error.retryable);
    // Failing closed means nothing was skipped before the detach.
    let report = recon.report(Some(recon.last_serial()));
    assert!(report.is_clean(), "{report}");

    // Attach again on the same connection from the last serial seen.
    let from = recon.resume_position().map(AttachFrom::Position);
    reader.attach(session, from).await.expect("attach");
    read_until(&mut reader, &mut recon, last).await;
    let report = recon.report(Some(last));
    assert!(report.is_clean(), "{report}");
    let snapshot = node
        .store
        .snapshot(session)
        .await
        .expect("snapshot")
        .expect("session");
    let diff = view_differences(&recon.messages(), &snapshot.messages);
    assert!(diff.is_empty(), "{diff:?}");
    println!("seam overflow: detached after the replay of {high_water} events, resumed, {report}");
}

/// A client that stops reading for good (its reading stuck, its socket open) cannot be sent
/// anything, not even the close: the server must still give up on it within `dead_after`, and not
/// hold its queue forever. The client keeps pinging, so it is not silent: only what it does not
/// read can tell the server it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_again_is_dropped_after_dead_after() {
    // Long enough that a busy debug build never misses the writer's frames for dead_after.
    let heartbeat = Duration::from_millis(1000);
    let node = Node::start(
        Engine::Memory,
        mooring_server::realtime::RealtimeConfig {
            heartbeat,
            ..unthrottled()
        },
    )
    .await;
    let session = "frozen:1";
    let options = ConnectOptions {
        recv_buffer: Some(SMALL_RECV_BUFFER),
        answer_pings: false,
    };
    let mut frozen = RealtimeClient::connect_with(&node.addr, "frozen", &options)
        .await
        .expect("connect");
    frozen.attach(session, start()).await.expect("attach");

    // 32 KiB events: the socket buffers hold at most a few hundred of them (4 MiB on Linux by
    // default), the connection's queue 1,024 more.
    let mut writer = RealtimeClient::connect(&node.addr, "writer")
        .await
        .expect("connect");
    let publishing = tokio::spawn(async move {
        let events: Vec<_> = (0..1400).map(|i| big(i, 32 << 10)).collect();
        publish_all(&mut writer, session, events).await
    });
    // Ping (without reading) for far longer than dead_after (2.5 s), until the server is gone.
    for nonce in 0..20 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        if frozen.send(&ClientFrame::Ping { nonce }).await.is_err() {
            break;
        }
    }
    publishing.await.expect("the writer");

    // Whatever the kernel still holds can be read, then the connection ends. A server that had
    // given up on it could not get a close frame through the full socket; one still holding it
    // would go on sending, then close with 4008 now that the client reads again.
    let mut frames = 0u64;
    let code = loop {
        match frozen.recv(Duration::from_secs(5)).await {
            Ok(Incoming::Frame(_)) => frames += 1,
            Ok(Incoming::Closed(code)) => break code,
            Err(e) => panic!("after {frames} frames: {e}"),
        }
    };
    assert_eq!(
        code, None,
        "the server still held the connection of a client that read nothing for 8 s \
         (closed with {code:?} after {frames} frames)"
    );
    assert!(frames < 1024, "{frames} frames arrived: the queue was kept");
}

/// A publisher far ahead of reading its acknowledgements fills its own queue with them; it must
/// be answered or closed as a slow consumer, never left wedged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_does_not_read_its_acks_is_not_wedged() {
    let node = Node::start(Engine::Memory, unthrottled()).await;
    let options = ConnectOptions {
        recv_buffer: Some(SMALL_RECV_BUFFER),
        ..ConnectOptions::default()
    };
    let mut writer = RealtimeClient::connect_with(&node.addr, "eager", &options)
        .await
        .expect("connect");
    let sent = 5000u64;
    for i in 0..sent {
        writer
            .send_publish("eager:1", vec![ws::app_event("tick", i)])
            .await
            .expect("publish");
    }
    let mut acks = 0;
    let ending = loop {
        match writer.recv(Duration::from_secs(5)).await {
            Ok(Incoming::Frame(ServerFrame::Ack { .. })) => {
                acks += 1;
                if acks == sent {
                    break None;
                }
            }
            Ok(Incoming::Frame(other)) => panic!("unexpected {other:?}"),
            Ok(Incoming::Closed(code)) => break Some(code),
            Err(e) => panic!("wedged after {acks} of {sent} acknowledgements: {e}"),
        }
    };
    if let Some(code) = ending {
        assert_eq!(
            code,
            Some(close::SLOW_CONSUMER),
            "after {acks} acknowledgements"
        );
    }
    println!("eager publisher: {acks} of {sent} acknowledgements read, then {ending:?}");
}

/// The queue is bounded in bytes as well as frames: a reader that stops while 600 events of
/// 16 KiB arrive (fewer than the 1,024 frames the queue holds, more than the kernel's buffers
/// and a 256 KiB byte bound) is closed with 4008, and resumes without loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_by_the_byte_bound_before_the_frame_bound() {
    let node = Node::start(
        Engine::Memory,
        mooring_server::realtime::RealtimeConfig {
            max_outbound_bytes: 256 << 10,
            ..unthrottled()
        },
    )
    .await;
    let session = "bytes:1";
    let options = ConnectOptions {
        recv_buffer: Some(SMALL_RECV_BUFFER),
        ..ConnectOptions::default()
    };
    let mut slow = RealtimeClient::connect_with(&node.addr, "slow", &options)
        .await
        .expect("connect");
    slow.attach(session, start()).await.expect("attach");
    let mut writer = RealtimeClient::connect(&node.addr, "writer")
        .await
        .expect("connect");
    // 600 x 16 KiB = 9.4 MiB: over the socket buffers (at most 4 MiB + 32 KiB here) plus the
    // byte bound, while 600 frames fit the frame bound.
    let events: Vec<_> = (0..600).map(|i| big(i, 16 << 10)).collect();
    let last = publish_all(&mut writer, session, events).await;
    assert_eq!(last, 600);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut recon = Reconstruction::new();
    let code = loop {
        match slow.recv(PROMPT).await.expect("a frame or the close") {
            Incoming::Frame(ServerFrame::Event { epoch, event, .. }) => {
                recon.observe(epoch, &event);
            }
            Incoming::Frame(ServerFrame::Attached { .. } | ServerFrame::Live { .. }) => {}
            Incoming::Frame(other) => panic!("unexpected {other:?}"),
            Incoming::Closed(code) => break code,
        }
    };
    assert_eq!(code, Some(close::SLOW_CONSUMER));
    let cut_at = recon.last_serial();
    assert!(cut_at < last, "closed after it had everything");

    let mut again = RealtimeClient::connect(&node.addr, "slow")
        .await
        .expect("reconnect");
    let from = recon.resume_position().map(AttachFrom::Position);
    again.attach(session, from).await.expect("attach");
    read_until(&mut again, &mut recon, last).await;
    let report = recon.report(Some(last));
    assert!(report.is_clean(), "{report}");
    println!(
        "byte bound 256 KiB: closed with 4008 at serial {cut_at} of {last}, resumed, {report}"
    );
}
