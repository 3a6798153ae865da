//! Resuming: a cut connection, a subscriber that falls behind, and a node that stays away.

use std::time::Duration;

use mooring_client::{
    Client, CloseReason, ConnectionStatus, EndReason, ReconnectPolicy, SessionItem, StartAt,
};
use mooring_core::store::LogStore;

use crate::node::{connection_id, next, reconnected, serials, until_live, Node, PROMPT};

const APPENDS: u64 = 60;

#[tokio::test]
async fn a_cut_connection_resumes_with_no_gap_and_no_duplicate() {
    let mut node = Node::start().await;
    let publisher = node.client("agent").await;
    let reader = node.client("reader").await;
    let answer = publisher
        .create_message("cut:1", "response", "")
        .await
        .expect("create");
    publisher
        .append("cut:1", answer, "start:")
        .await
        .expect("append");
    let mut sub = reader
        .attach("cut:1", StartAt::Latest)
        .await
        .expect("attach");
    assert_eq!(serials(&until_live(&mut sub).await), vec![answer]);

    // Appends keep coming while the node goes away and comes back; each is acknowledged.
    let publishing = tokio::spawn(async move {
        for n in 0..APPENDS {
            publisher
                .append("cut:1", answer, format!("{n},"))
                .await
                .expect("every append is acknowledged, across the restart");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(60)).await;
    let before = connection_id(&reader);
    node.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    node.resume().await;
    reconnected(&reader, &before).await;
    tokio::time::timeout(PROMPT, publishing)
        .await
        .expect("publishing ends")
        .expect("publisher task");

    let tail = node
        .store
        .snapshot("cut:1")
        .await
        .expect("snapshot")
        .expect("session")
        .info
        .tail
        .serial;
    assert_eq!(tail, 2 + APPENDS, "each append is in the log once");
    let mut seen = Vec::new();
    while seen.last() != Some(&tail) {
        match next(&mut sub).await {
            SessionItem::Event(e) => seen.push(e.serial),
            SessionItem::Live { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, (3..=tail).collect::<Vec<_>>(), "no gap, no duplicate");
    let snapshot = node.snapshot("cut:1").await;
    assert_eq!(sub.messages(), snapshot);
    let expected: String = (0..APPENDS).map(|n| format!("{n},")).collect();
    assert_eq!(snapshot[0].data, format!("start:{expected}"));
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_paused_without_loss_or_blocking_others() {
    let node = Node::start().await;
    let options = mooring_client::ClientOptions {
        subscription_buffer: 4,
        ..node.options("reader")
    };
    let reader = Client::connect(options).await.expect("connect");
    let writer = node.client("writer").await;
    let mut slow = reader
        .attach("slow:1", StartAt::Beginning)
        .await
        .expect("slow");
    let mut quick = reader
        .attach("quick:1", StartAt::Beginning)
        .await
        .expect("quick");
    until_live(&mut slow).await;
    until_live(&mut quick).await;

    for n in 0..40 {
        writer
            .create_message("slow:1", "m", n)
            .await
            .expect("publish");
    }
    // The slow subscriber has not read anything; the other session still flows.
    let serial = writer
        .create_message("quick:1", "m", "x")
        .await
        .expect("publish");
    assert!(matches!(next(&mut quick).await, SessionItem::Event(e) if e.serial == serial));

    let mut seen = Vec::new();
    while seen.last() != Some(&40) {
        if let SessionItem::Event(e) = next(&mut slow).await {
            seen.push(e.serial);
        }
    }
    assert_eq!(seen, (1..=40).collect::<Vec<_>>());
    assert_eq!(slow.messages(), node.snapshot("slow:1").await);
}

#[tokio::test]
async fn a_client_that_cannot_reconnect_gives_up_and_ends_its_subscriptions() {
    let mut node = Node::start().await;
    let options = mooring_client::ClientOptions {
        reconnect: ReconnectPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(20),
            jitter: false,
            max_attempts: Some(2),
        },
        ..node.options("c")
    };
    let client = Client::connect(options).await.expect("connect");
    let mut sub = client
        .attach("gone:1", StartAt::Latest)
        .await
        .expect("attach");
    until_live(&mut sub).await;
    node.stop().await;
    assert_eq!(
        next(&mut sub).await,
        SessionItem::Ended(EndReason::Disconnected)
    );
    assert_eq!(
        client.status(),
        ConnectionStatus::Closed(CloseReason::GaveUp { attempts: 2 })
    );
}
