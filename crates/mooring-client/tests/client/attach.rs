//! Attaching: the materialized view, replays from a position, several subscribers.

use mooring_client::{AttachErrorKind, Position, SessionItem, StartAt};

use crate::node::{next, serials, until_live, Node};

#[tokio::test]
async fn attach_latest_sees_whole_messages_then_live_appends() {
    let node = Node::start().await;
    let agent = node.client("agent").await;
    let question = agent
        .create_message("chat:1", "user-input", "Why is the sky blue?")
        .await
        .expect("question");
    let answer = agent
        .create_message("chat:1", "response", "")
        .await
        .expect("answer");
    for token in ["Ray", "leigh", " scattering"] {
        agent.append("chat:1", answer, token).await.expect("append");
    }

    let reader = node.client("reader").await;
    let mut sub = reader
        .attach("chat:1", StartAt::Latest)
        .await
        .expect("attach");
    let items = until_live(&mut sub).await;
    let view: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            SessionItem::Event(e) => Some((e.serial, e.version, e.data.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        view,
        vec![
            (question, Some(question), "Why is the sky blue?".into()),
            (answer, Some(answer + 3), "Rayleigh scattering".into()),
        ],
        "each message once, whole, never one event per token"
    );
    assert_eq!(
        items.last(),
        Some(&SessionItem::Live { serial: answer + 3 })
    );
    assert_eq!(sub.messages(), node.snapshot("chat:1").await);

    let appended = agent.append("chat:1", answer, ".").await.expect("append");
    let SessionItem::Event(live) = next(&mut sub).await else {
        panic!("a live event");
    };
    assert_eq!(live.serial, appended);
    assert_eq!(
        sub.message(answer).map(|m| m.data.clone()),
        Some("Rayleigh scattering.".into())
    );
    assert_eq!(sub.messages(), node.snapshot("chat:1").await);
    assert_eq!(
        sub.position(),
        Some(Position {
            epoch: node.epoch("chat:1").await,
            serial: appended
        })
    );
}

#[tokio::test]
async fn attach_from_a_position_replays_exactly_the_events_after_it() {
    let node = Node::start().await;
    let client = node.client("agent").await;
    for n in 1..=5u64 {
        let serial = client
            .create_message("log:1", "note", n)
            .await
            .expect("publish");
        assert_eq!(serial, n);
    }
    let from = Position {
        epoch: node.epoch("log:1").await,
        serial: 2,
    };
    let mut sub = client
        .attach("log:1", StartAt::After(from))
        .await
        .expect("attach");
    let items = until_live(&mut sub).await;
    assert_eq!(serials(&items), vec![3, 4, 5]);
    assert_eq!(items.last(), Some(&SessionItem::Live { serial: 5 }));

    let mut rewound = node
        .client("other")
        .await
        .attach("log:1", StartAt::Rewind(2))
        .await
        .expect("attach");
    assert_eq!(serials(&until_live(&mut rewound).await), vec![4, 5]);
    let mut all = node
        .client("third")
        .await
        .attach("log:1", StartAt::Beginning)
        .await
        .expect("attach");
    assert_eq!(serials(&until_live(&mut all).await), vec![1, 2, 3, 4, 5]);
    assert_eq!(all.messages(), node.snapshot("log:1").await);
}

#[tokio::test]
async fn two_clients_on_one_session_see_the_same_messages() {
    let node = Node::start().await;
    let alice = node.client("alice").await;
    let bob = node.client("bob").await;
    let mut alice_sub = alice.attach("room:1", StartAt::Latest).await.expect("a");
    let mut bob_sub = bob.attach("room:1", StartAt::Beginning).await.expect("b");
    until_live(&mut alice_sub).await;
    until_live(&mut bob_sub).await;

    let hello = alice
        .create_message("room:1", "chat", "hello")
        .await
        .expect("1");
    let typo = bob
        .create_message("room:1", "chat", "hi alcie")
        .await
        .expect("2");
    bob.update("room:1", typo, "hi alice").await.expect("3");
    let reply = alice
        .create_message("room:1", "response", "")
        .await
        .expect("4");
    alice.append("room:1", reply, "streamed").await.expect("5");
    alice.delete("room:1", hello).await.expect("6");
    let last = bob
        .publish(
            "room:1",
            vec![mooring_client::event::custom("typing", false)],
        )
        .await
        .expect("7")[0]
        .serial;

    for sub in [&mut alice_sub, &mut bob_sub] {
        let mut seen = Vec::new();
        while seen.last() != Some(&last) {
            if let SessionItem::Event(e) = next(sub).await {
                seen.push(e.serial);
            }
        }
        assert_eq!(seen, (1..=last).collect::<Vec<_>>());
    }
    let snapshot = node.snapshot("room:1").await;
    assert_eq!(snapshot.len(), 2, "the deleted message is gone");
    assert_eq!(alice_sub.messages(), snapshot);
    assert_eq!(bob_sub.messages(), snapshot);
}

#[tokio::test]
async fn a_client_holds_one_subscription_per_session() {
    let node = Node::start().await;
    let client = node.client("c").await;
    let bad = client.attach("has space", StartAt::Latest).await;
    assert_eq!(
        bad.err().map(|e| e.kind()),
        Some(AttachErrorKind::InvalidSessionName)
    );
    let first = client.attach("s:1", StartAt::Latest).await.expect("first");
    let again = client.attach("s:1", StartAt::Latest).await;
    assert_eq!(
        again.err().map(|e| e.kind()),
        Some(AttachErrorKind::AlreadyAttached)
    );
    drop(first);
    let mut after_drop = client
        .attach("s:1", StartAt::Latest)
        .await
        .expect("attach again once the first is dropped");
    until_live(&mut after_drop).await;
    client
        .create_message("s:1", "m", "x")
        .await
        .expect("publish");
    assert!(matches!(next(&mut after_drop).await, SessionItem::Event(_)));
}

#[tokio::test]
async fn lost_history_resets_the_subscriber_and_sends_the_view() {
    let node = Node::start().await;
    let client = node.client("c").await;
    client
        .create_message("s:2", "m", "kept")
        .await
        .expect("publish");
    // A position ahead of the log: the log lost its tail, as after a restore.
    let ahead = Position {
        epoch: node.epoch("s:2").await,
        serial: 50,
    };
    let mut sub = client
        .attach("s:2", StartAt::After(ahead))
        .await
        .expect("attach");
    let items = until_live(&mut sub).await;
    assert_eq!(
        items.first(),
        Some(&SessionItem::Reset(
            mooring_client::ResetReason::HistoryLost
        ))
    );
    assert_eq!(serials(&items), vec![1]);
    assert_eq!(sub.messages(), node.snapshot("s:2").await);
    assert_eq!(
        sub.position(),
        Some(Position {
            epoch: node.epoch("s:2").await,
            serial: 1
        })
    );
}

#[tokio::test]
async fn appends_rolled_up_by_the_server_fold_into_the_same_message() {
    let node = Node::with(mooring_server::realtime::RealtimeConfig::default()).await;
    let options = mooring_client::ClientOptions {
        assign_ids: false,
        ..node.options("agent")
    };
    let agent = mooring_client::Client::connect(options)
        .await
        .expect("connect");
    let reader = node.client("reader").await;
    let answer = agent
        .create_message("roll:1", "response", "")
        .await
        .expect("create");
    let mut early = reader
        .attach("roll:1", StartAt::Latest)
        .await
        .expect("attach");
    until_live(&mut early).await;

    let appends = (0..30).map(|n| agent.append("roll:1", answer, format!("t{n} ")));
    let serials = futures::future::join_all(appends).await;
    let last = serials
        .into_iter()
        .map(|s| s.expect("append"))
        .max()
        .expect("some");
    assert!(last < answer + 30, "appends inside the window share events");

    let late_client = node.client("late").await;
    let mut late = late_client
        .attach("roll:1", StartAt::Latest)
        .await
        .expect("attach");
    until_live(&mut late).await;
    while early.position().map(|p| p.serial) != Some(last) {
        next(&mut early).await;
    }
    let snapshot = node.snapshot("roll:1").await;
    assert_eq!(early.messages(), snapshot);
    assert_eq!(late.messages(), snapshot);
    let text = snapshot[0].data.as_str().unwrap_or_default().to_owned();
    assert_eq!(text.split_whitespace().count(), 30);
}
