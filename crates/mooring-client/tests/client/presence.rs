//! Presence: members entering, updating and leaving as other clients see them, the snapshot a
//! late joiner gets, and a brief drop that must not show as a leave.

use std::time::{Duration, Instant};

use mooring_client::{
    Client, ClientOptions, Member, PresenceAction, PresenceErrorKind, ReconnectPolicy, Role,
    SessionItem, StartAt, Subscription,
};
use mooring_server::realtime::RealtimeConfig;
use serde_json::json;

use crate::node::{connection_id, next, reconnected, until_live, Node, PROMPT};
use crate::proxy::Proxy;

fn with_grace(grace: Duration) -> RealtimeConfig {
    RealtimeConfig {
        rollup_window: Duration::ZERO,
        presence_grace: grace,
        ..RealtimeConfig::default()
    }
}

/// The next presence change, skipping everything else.
async fn next_change(sub: &mut Subscription) -> (PresenceAction, Member) {
    loop {
        if let SessionItem::Presence { action, member } = next(sub).await {
            return (action, member);
        }
    }
}

fn who(members: &[Member]) -> Vec<(&str, &str)> {
    members
        .iter()
        .map(|m| (m.client_id.as_str(), m.instance.as_str()))
        .collect()
}

#[tokio::test]
async fn enter_update_and_leave_are_seen_by_another_client() {
    let node = Node::with(with_grace(Duration::from_secs(15))).await;
    let watcher = node.client("watcher").await;
    let mut watch = watcher
        .attach("p:1", StartAt::Latest)
        .await
        .expect("attach");
    until_live(&mut watch).await;
    let alice = node.client("alice").await;
    alice
        .enter("p:1", Role::User, "phone", json!({"typing": false}))
        .await
        .expect("enter");
    let (action, member) = next_change(&mut watch).await;
    assert_eq!(action, PresenceAction::Enter);
    assert_eq!(
        (member.role, member.data),
        (Role::User, json!({"typing": false}))
    );
    assert_eq!(who(&watch.members()), vec![("alice", "phone")]);

    alice
        .update_presence("p:1", "phone", json!({"typing": true}))
        .await
        .expect("update");
    let (action, member) = next_change(&mut watch).await;
    assert_eq!(action, PresenceAction::Update);
    assert_eq!(
        (member.role, member.data),
        (Role::User, json!({"typing": true}))
    );
    let got = watcher.presence_get("p:1").await.expect("get");
    assert_eq!(who(&got), vec![("alice", "phone")]);

    alice.leave("p:1", "phone").await.expect("leave");
    let (action, member) = next_change(&mut watch).await;
    assert_eq!(
        (action, member.client_id.as_str()),
        (PresenceAction::Leave, "alice")
    );
    assert!(watch.members().is_empty());
    assert!(watcher.presence_get("p:1").await.expect("get").is_empty());
    let refused = alice
        .update_presence("p:1", "phone", json!({}))
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(refused, Some(PresenceErrorKind::NotEntered));
    let too_big = alice
        .enter("p:1", Role::User, "phone", "x".repeat(2000))
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(too_big, Some(PresenceErrorKind::TooLarge));
}

#[tokio::test]
async fn a_late_joiner_gets_the_members_right_after_live_and_a_get_agrees() {
    let node = Node::start().await;
    let agent = node.client("agent").await;
    agent
        .enter("p:2", Role::Agent, "worker-1", json!({"model": "small"}))
        .await
        .expect("enter");
    let alice = node.client("alice").await;
    alice
        .enter("p:2", Role::User, "laptop", json!(null))
        .await
        .expect("enter");
    // Enters are not acknowledged: wait until the server lists both.
    tokio::time::timeout(PROMPT, async {
        while alice.presence_get("p:2").await.expect("get").len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both entered");

    let late = node.client("late").await;
    // Attach and ask at once: the get waits for the attach's live, so the attach's own
    // snapshot cannot be taken for its answer or the other way round.
    let (sub, got) = tokio::join!(
        late.attach("p:2", StartAt::Latest),
        late.presence_get("p:2")
    );
    let mut sub = sub.expect("attach");
    let got = got.expect("get");
    assert_eq!(who(&got), vec![("agent", "worker-1"), ("alice", "laptop")]);
    until_live(&mut sub).await;
    assert!(matches!(next(&mut sub).await, SessionItem::Members(m) if m.len() == 2));
    assert_eq!(sub.members(), got);
    assert_eq!(sub.members()[0].role, Role::Agent);
}

#[tokio::test]
async fn a_client_back_within_the_grace_keeps_its_presence() {
    let grace = Duration::from_millis(1500);
    let node = Node::with(with_grace(grace)).await;
    let proxy = Proxy::start(node.addr).await;
    let watcher = node.client("watcher").await;
    let mut watch = watcher
        .attach("p:3", StartAt::Latest)
        .await
        .expect("attach");
    until_live(&mut watch).await;
    let alice = Client::connect(ClientOptions {
        url: proxy.url(),
        ..node.options("alice")
    })
    .await
    .expect("connect");
    alice
        .enter("p:3", Role::User, "phone", json!({"typing": false}))
        .await
        .expect("enter");
    let (action, first) = next_change(&mut watch).await;
    assert_eq!(action, PresenceAction::Enter);

    let before = connection_id(&alice);
    let cut = Instant::now();
    proxy.cut();
    let after = reconnected(&alice, &before).await;
    let (action, back) = next_change(&mut watch).await;
    println!(
        "alice reconnected and was present again {:?} after the cut",
        cut.elapsed()
    );
    assert_eq!(action, PresenceAction::Update, "back, not entered anew");
    assert_eq!(back.connection_id, after);
    assert_eq!(back.data, first.data);

    // Nothing else happens to her through the end of the grace and beyond.
    let quiet = tokio::time::timeout(grace + Duration::from_millis(500), next_change(&mut watch));
    assert!(quiet.await.is_err(), "no leave");
    assert_eq!(who(&watch.members()), vec![("alice", "phone")]);
    let got = watcher.presence_get("p:3").await.expect("get");
    assert_eq!(
        got.first().map(|m| m.connection_id.as_str()),
        Some(after.as_str())
    );
}

#[tokio::test]
async fn a_client_that_does_not_come_back_leaves_after_the_grace() {
    let grace = Duration::from_millis(500);
    let node = Node::with(with_grace(grace)).await;
    let proxy = Proxy::start(node.addr).await;
    let watcher = node.client("watcher").await;
    let mut watch = watcher
        .attach("p:4", StartAt::Latest)
        .await
        .expect("attach");
    until_live(&mut watch).await;
    let bob = Client::connect(ClientOptions {
        url: proxy.url(),
        reconnect: ReconnectPolicy::never(),
        ..node.options("bob")
    })
    .await
    .expect("connect");
    bob.enter("p:4", Role::Operator, "desk", json!(null))
        .await
        .expect("enter");
    next_change(&mut watch).await;
    let cut = Instant::now();
    proxy.cut();
    let (action, member) = tokio::time::timeout(PROMPT, next_change(&mut watch))
        .await
        .expect("a leave");
    let waited = cut.elapsed();
    println!("bob left {waited:?} after his connection was cut (grace {grace:?})");
    assert_eq!(
        (action, member.role),
        (PresenceAction::Leave, Role::Operator)
    );
    assert!(waited >= grace, "not before the grace");
}

#[tokio::test]
async fn a_clean_close_leaves_at_once() {
    let node = Node::with(with_grace(Duration::from_secs(15))).await;
    let watcher = node.client("watcher").await;
    let mut watch = watcher
        .attach("p:5", StartAt::Latest)
        .await
        .expect("attach");
    until_live(&mut watch).await;
    let carol = node.client("carol").await;
    carol
        .enter("p:5", Role::User, "tab", json!(null))
        .await
        .expect("enter");
    next_change(&mut watch).await;
    let closed = Instant::now();
    carol.close().await;
    let (action, _) = next_change(&mut watch).await;
    assert_eq!(action, PresenceAction::Leave);
    assert!(
        closed.elapsed() < Duration::from_secs(5),
        "no grace for a goodbye"
    );
}
