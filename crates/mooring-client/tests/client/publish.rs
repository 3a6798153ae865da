//! Publishing: acknowledgements, refusals with their code, and deduplicated retries.

use mooring_client::{event, ErrorCode, PublishErrorKind, SessionItem, StartAt};

use crate::node::{next, until_live, Node};

#[tokio::test]
async fn a_retried_publish_with_the_same_id_is_deduplicated() {
    let node = Node::start().await;
    let client = node.client("agent").await;
    let mut sub = client
        .attach("dedupe:1", StartAt::Beginning)
        .await
        .expect("attach");
    until_live(&mut sub).await;
    let mut create = event::create("user-input", "once");
    create.id = Some("input-7".into());
    let first = client
        .publish("dedupe:1", vec![create.clone()])
        .await
        .expect("first");
    let retry = client
        .publish("dedupe:1", vec![create])
        .await
        .expect("retry");
    assert_eq!(first[0].serial, retry[0].serial);
    assert!(!first[0].duplicate);
    assert!(retry[0].duplicate, "the retry is recognized");

    let marker = client
        .create_message("dedupe:1", "m", "after")
        .await
        .expect("marker");
    let mut seen = Vec::new();
    while seen.last() != Some(&marker) {
        if let SessionItem::Event(e) = next(&mut sub).await {
            seen.push(e.serial);
        }
    }
    assert_eq!(seen, vec![first[0].serial, marker], "published once");
    assert_eq!(node.snapshot("dedupe:1").await.len(), 2);
}

#[tokio::test]
async fn a_batch_is_acknowledged_event_by_event_with_contiguous_serials() {
    let node = Node::start().await;
    let client = node.client("agent").await;
    let results = client
        .publish(
            "batch:1",
            vec![
                event::create("a", 1),
                event::create("b", 2),
                event::custom("c", 3),
            ],
        )
        .await
        .expect("publish");
    let serials: Vec<u64> = results.iter().map(|r| r.serial).collect();
    assert_eq!(serials, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_refused_publish_carries_the_server_code() {
    let node = Node::start().await;
    let client = node.client("agent").await;
    let missing = client.append("refuse:1", 99, "x").await;
    let error = missing.expect_err("no message 99");
    assert_eq!(error.kind(), PublishErrorKind::Refused);
    assert_eq!(error.code(), Some(ErrorCode::MessageNotFound));
    let empty = client.publish("refuse:1", Vec::new()).await;
    assert_eq!(empty.err().map(|e| e.kind()), Some(PublishErrorKind::Empty));
    let bad_name = client.create_message("bad name", "m", "x").await;
    assert_eq!(
        bad_name.err().map(|e| e.kind()),
        Some(PublishErrorKind::InvalidSessionName)
    );
}

#[tokio::test]
async fn closing_ends_subscriptions_and_fails_later_calls() {
    let node = Node::start().await;
    let client = node.client("agent").await;
    let mut sub = client
        .attach("close:1", StartAt::Latest)
        .await
        .expect("attach");
    until_live(&mut sub).await;
    client.close().await;
    assert_eq!(
        next(&mut sub).await,
        SessionItem::Ended(mooring_client::EndReason::ClientClosed)
    );
    assert_eq!(sub.next().await, None);
    let late = client.create_message("close:1", "m", "x").await;
    assert_eq!(late.err().map(|e| e.kind()), Some(PublishErrorKind::Closed));
}

/// A publish over the server's frame limit would close the connection (1009) and fail again
/// after every reconnect: the client refuses it with `too_large` before sending, and the
/// connection goes on.
#[tokio::test]
async fn a_publish_over_the_frame_limit_is_refused_before_it_is_sent() {
    let node = Node::start().await;
    let client = node.client("big").await;
    let before = crate::node::connection_id(&client);
    let huge = event::create("response", "x".repeat(2 << 20));
    let err = client
        .publish("publish:big", vec![huge])
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), PublishErrorKind::Refused);
    assert_eq!(err.code(), Some(ErrorCode::TooLarge));
    let serial = client
        .create_message("publish:big", "response", "small")
        .await
        .expect("the connection goes on");
    assert_eq!(serial, 1, "the refused publish wrote nothing");
    assert_eq!(crate::node::connection_id(&client), before, "no reconnect");
}
