//! Retention: what every engine must do when a session's records age past its rule.

use mooring_core::clock::ManualClock;
use mooring_core::create::CreateError;
use mooring_core::read::{HeadError, ReadError};
use mooring_core::session::{PublishError, PublishOutcome, PublishRules};
use mooring_core::store::LogStore;
use mooring_core::ReadFrom;
use mooring_protocol::session::{Action, NewEvent};

use super::{at, fork_of, group, new_event, ALL};

pub(crate) const RULES: PublishRules = PublishRules {
    dedupe_window_ms: 1_000,
    retain_ms: Some(10_000),
};

async fn publish(
    store: &impl LogStore,
    name: &str,
    event: NewEvent,
    rules: PublishRules,
) -> Result<PublishOutcome, PublishError> {
    let mut out = store
        .publish(name, vec![group(vec![event])], rules)
        .await
        .expect("store");
    out.pop().expect("one outcome")
}

fn append(to: u64, text: &str) -> NewEvent {
    new_event(Action::MessageAppend, Some(to), text)
}

fn create(text: &str) -> NewEvent {
    new_event(Action::MessageCreate, None, text)
}

async fn serials(store: &impl LogStore, name: &str, from: ReadFrom) -> Result<Vec<u64>, ReadError> {
    let batch = store.read(name, from, ALL).await?;
    Ok(batch.records.iter().map(|r| r.serial).collect())
}

/// Writes session `chat` under [`RULES`]: a message, an append to it and a second message,
/// then six seconds later a third, then lets six more seconds pass, so the next sweep trims
/// serials 1 to 3 and keeps 4 (each event has a publish id). For the engines' own tests of
/// what a trim leaves in storage.
pub(crate) async fn aged_session(store: &impl LogStore, clock: &ManualClock) {
    let with_id = |mut event: NewEvent, id: &str| {
        event.id = Some(id.to_owned());
        event
    };
    let first = [
        with_id(create("a"), "a"),
        with_id(append(1, "b"), "b"),
        with_id(create("c"), "c"),
    ];
    for event in first {
        publish(store, "chat", event, RULES)
            .await
            .expect("published");
    }
    clock.advance(6_000);
    publish(store, "chat", with_id(create("d"), "d"), RULES)
        .await
        .expect("published");
    clock.advance(6_000);
}

/// Records older than the retention go at a sweep, with the messages nothing newer changed
/// and the publish ids of what went; positions before them are refused, not answered with a
/// gap; the session goes once nothing was written for the whole retention.
pub(super) async fn retention_trims_old_events_and_their_view(
    store: &impl LogStore,
    clock: &ManualClock,
) {
    let mut first = create("old");
    first.id = Some("req-old".into());
    publish(store, "keep:1", first, RULES).await.expect("1");
    publish(store, "keep:1", append(1, "er"), RULES)
        .await
        .expect("2");
    publish(store, "keep:1", create("long"), RULES)
        .await
        .expect("3");
    publish(store, "forever", create("kept"), PublishRules::default())
        .await
        .expect("no retention");
    clock.advance(6_000);
    publish(store, "keep:1", append(3, "er"), RULES)
        .await
        .expect("4");
    publish(store, "keep:1", create("mid"), RULES)
        .await
        .expect("5");
    assert_eq!(
        store.sweep_expired().await,
        Ok(0),
        "nothing is old enough yet"
    );

    clock.advance(6_000);
    assert_eq!(store.sweep_expired().await, Ok(1));
    let epoch = store.head("keep:1").await.expect("head").tail.epoch;
    assert_eq!(
        serials(store, "keep:1", ReadFrom::Start).await,
        Ok(vec![4, 5])
    );
    assert_eq!(
        serials(store, "keep:1", ReadFrom::After(at(epoch, 3))).await,
        Ok(vec![4, 5])
    );
    for before in [0, 1, 2] {
        assert_eq!(
            store
                .read("keep:1", ReadFrom::After(at(epoch, before)), ALL)
                .await,
            Err(ReadError::BeforeRetained {
                given: at(epoch, before),
                start: at(epoch, 3),
            }),
            "after serial {before}"
        );
    }
    let view = store
        .snapshot("keep:1")
        .await
        .expect("read")
        .expect("exists");
    let kept: Vec<_> = view
        .messages
        .iter()
        .map(|m| (m.serial, m.data.clone()))
        .collect();
    assert_eq!(
        kept,
        [(3, "longer".into()), (5, "mid".into())],
        "a message changed after the trim point stays whole"
    );
    assert_eq!(view.info.tail.serial, 5);
    assert_eq!(store.sweep_expired().await, Ok(0), "trims come in steps");
    assert_eq!(
        serials(store, "forever", ReadFrom::Start).await,
        Ok(vec![1]),
        "a session without retention keeps everything"
    );

    // The trimmed message is gone for new events too, and so is the trimmed publish id: a
    // window longer than the retention (the server refuses such rules) shows it went.
    assert_eq!(
        publish(store, "keep:1", append(1, "!"), RULES).await,
        Err(PublishError::MessageNotFound {
            index: 0,
            reference: 1
        })
    );
    let mut again = create("old");
    again.id = Some("req-old".into());
    let long_window = PublishRules {
        dedupe_window_ms: 60_000,
        ..RULES
    };
    let out = publish(store, "keep:1", again, long_window)
        .await
        .expect("6");
    assert_eq!(
        (out.results[0].serial, out.results[0].duplicate),
        (6, false)
    );

    // A fork inherits what is kept, and cannot start before it.
    let tail = store.head("keep:1").await.expect("head").tail;
    assert!(matches!(
        store
            .create("fork", fork_of("keep:1", Some(at(epoch, 2)), 0))
            .await,
        Err(CreateError::ForkOffsetInvalid { .. })
    ));
    store
        .create("fork", fork_of("keep:1", Some(tail), 0))
        .await
        .expect("fork at the tail");
    assert_eq!(
        serials(store, "fork", ReadFrom::Start).await,
        Ok(vec![4, 5, 6])
    );
    store.delete("fork").await.expect("delete the fork");

    // Nothing written for the whole retention: the session goes, and its next write starts a
    // new life.
    clock.advance(10_000);
    assert_eq!(store.head("keep:1").await, Err(HeadError::NotFound));
    assert_eq!(store.sweep_expired().await, Ok(1));
    let reborn = publish(store, "keep:1", create("new"), RULES)
        .await
        .expect("new life");
    assert_eq!(reborn.results[0].serial, 1);
    assert_ne!(reborn.epoch, epoch);
}
