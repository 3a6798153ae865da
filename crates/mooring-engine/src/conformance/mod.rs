//! The engine conformance suite: what every [`LogStore`] must do, checked the same way for all.
//!
//! [`run_all`] takes a factory that builds a fresh, empty store on a given clock. Besides the
//! scenario checks, [`compare_with_oracle`] replays a seeded random workload on the engine and
//! on the memory engine and requires identical answers.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use mooring_core::append::{AppendError, AppendKind, AppendRequest};
use mooring_core::clock::ManualClock;
use mooring_core::create::{CreateError, CreateOutcome, CreateRequest};
use mooring_core::producer::ProducerError;
use mooring_core::read::{HeadError, ReadError};
use mooring_core::session::{PublishError, PublishGroup, PublishOutcome, PublishRules};
use mooring_core::store::{DeleteError, LogStore};
use mooring_core::stream::{Expiry, ForkOrigin, StreamInfo};
use mooring_core::{Position, ReadFrom};
use mooring_protocol::durable_streams::ProducerClaim;
use mooring_protocol::session::{Action, NewEvent};

use crate::memory::MemoryStore;

pub(crate) mod retention;

/// A start time far from zero, so expiry arithmetic is exercised with realistic values.
const T0: u64 = 1_800_000_000_000;
const ALL: usize = usize::MAX;

/// Runs every scenario against stores built by `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: LogStore,
    F: Fn(ManualClock) -> Fut,
    Fut: Future<Output = S>,
{
    let fresh = || {
        let clock = ManualClock::new(T0);
        let store = make(clock.clone());
        async move { (store.await, clock) }
    };
    appends_take_contiguous_serials(&fresh().await.0).await;
    create_is_idempotent_for_the_same_config(&fresh().await.0).await;
    json_messages_keep_their_bytes(&fresh().await.0).await;
    reads_start_where_asked(&fresh().await.0).await;
    reads_page_by_bytes(&fresh().await.0).await;
    closing_is_final_and_idempotent(&fresh().await.0).await;
    producers_dedupe_and_fence(&fresh().await.0).await;
    stream_seq_must_increase(&fresh().await.0).await;
    delete_then_recreate_is_clean(&fresh().await.0).await;
    every_life_of_a_session_has_its_own_epoch(&fresh().await.0).await;
    a_renewed_life_keeps_the_records_and_refuses_old_positions(&fresh().await.0).await;
    forks_inherit_and_diverge(&fresh().await.0).await;
    soft_deleted_sources_go_with_their_last_fork(&fresh().await.0).await;
    let (store, clock) = fresh().await;
    ttl_slides_with_reads_and_writes(&store, &clock).await;
    let (store, clock) = fresh().await;
    expires_at_is_absolute_and_swept(&store, &clock).await;
    let (store, clock) = fresh().await;
    retention::retention_trims_old_events_and_their_view(&store, &clock).await;
    batches_are_atomic_and_contiguous(&fresh().await.0).await;
    sessions_fold_appends_into_messages(&fresh().await.0).await;
    publish_ids_dedupe_within_the_window(&fresh().await.0).await;
    refused_groups_write_nothing(&fresh().await.0).await;
    coalesced_appends_become_one_event(&fresh().await.0).await;
    let (store, _) = fresh().await;
    concurrent_appends_never_share_a_serial(Arc::new(store)).await;
    let (store, clock) = fresh().await;
    compare_with_oracle(&store, &clock, 7).await;
}

fn text(t: &str) -> Vec<Bytes> {
    vec![Bytes::copy_from_slice(t.as_bytes())]
}

fn plain(content_type: &str) -> CreateRequest {
    CreateRequest {
        content_type: Some(content_type.into()),
        ..CreateRequest::default()
    }
}

fn data(t: &str) -> AppendRequest {
    AppendRequest {
        content_type: Some("text/plain".into()),
        records: vec![text(t)],
        ..AppendRequest::default()
    }
}

fn at(epoch: u64, serial: u64) -> Position {
    Position { epoch, serial }
}

/// The epoch of `name`'s current life.
async fn epoch_of(store: &impl LogStore, name: &str) -> u64 {
    store.head(name).await.expect("stream exists").tail.epoch
}

async fn all_text(store: &impl LogStore, name: &str) -> String {
    let batch = store.read(name, ReadFrom::Start, ALL).await;
    let batch = batch.expect("stream is readable");
    let bytes: Vec<u8> = batch
        .records
        .iter()
        .flat_map(|r| r.items.iter().flat_map(|i| i.iter().copied()))
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn appends_take_contiguous_serials(store: &impl LogStore) {
    store
        .create("s", plain("text/plain"))
        .await
        .expect("create");
    let e = epoch_of(store, "s").await;
    for (i, word) in ["a", "b", "c"].iter().enumerate() {
        let out = store.append("s", data(word)).await.expect("append");
        assert_eq!(out.next, at(e, i as u64 + 1));
        assert_eq!(out.kind, AppendKind::Written);
    }
    let batch = store.read("s", ReadFrom::Start, ALL).await.expect("read");
    let serials: Vec<u64> = batch.records.iter().map(|r| r.serial).collect();
    assert_eq!(serials, [1, 2, 3]);
    assert_eq!(all_text(store, "s").await, "abc");
    assert_eq!(store.head("s").await.map(|i| i.tail), Ok(at(e, 3)));
    assert_eq!(
        store.append("missing", data("x")).await,
        Err(AppendError::NotFound)
    );
}

async fn create_is_idempotent_for_the_same_config(store: &impl LogStore) {
    let first = store.create("c", plain("text/plain")).await;
    assert!(matches!(first, Ok(CreateOutcome::Created(_))));
    let again = store.create("c", plain("text/plain; charset=utf-8")).await;
    assert!(matches!(again, Ok(CreateOutcome::Existed(_))));
    let other = store.create("c", plain("application/json")).await;
    assert_eq!(other, Err(CreateError::ConfigMismatch));
    let mut ttl = plain("text/plain");
    ttl.expiry = Expiry::TtlSecs(60);
    assert_eq!(
        store.create("c", ttl).await,
        Err(CreateError::ConfigMismatch)
    );
}

async fn json_messages_keep_their_bytes(store: &impl LogStore) {
    let mut req = plain("application/json");
    req.items = vec![
        Bytes::from_static(b"{\"a\": 1}"),
        Bytes::from_static(b"[2]"),
    ];
    store.create("j", req).await.expect("create");
    let batch = store.read("j", ReadFrom::Start, ALL).await.expect("read");
    assert_eq!(batch.records.len(), 1);
    assert_eq!(
        batch.records[0].items,
        [
            Bytes::from_static(b"{\"a\": 1}"),
            Bytes::from_static(b"[2]")
        ]
    );
}

async fn reads_start_where_asked(store: &impl LogStore) {
    store
        .create("r", plain("text/plain"))
        .await
        .expect("create");
    for w in ["1", "2", "3"] {
        store.append("r", data(w)).await.expect("append");
    }
    let e = epoch_of(store, "r").await;
    let after_one = store.read("r", ReadFrom::After(at(e, 1)), ALL).await;
    let after_one = after_one.expect("read");
    assert_eq!(after_one.records.first().map(|r| r.serial), Some(2));
    assert!(after_one.up_to_date());
    let now = store.read("r", ReadFrom::Now, ALL).await.expect("read");
    assert!(now.records.is_empty());
    assert_eq!(now.next(), at(e, 3));
    assert!(matches!(
        store.read("r", ReadFrom::After(at(e, 4)), ALL).await,
        Err(ReadError::BeyondTail { .. })
    ));
    let other_life = Position {
        epoch: 9,
        serial: 1,
    };
    assert!(matches!(
        store.read("r", ReadFrom::After(other_life), ALL).await,
        Err(ReadError::EpochMismatch { .. })
    ));
    assert_eq!(
        store.read("none", ReadFrom::Start, ALL).await,
        Err(ReadError::NotFound)
    );
}

async fn reads_page_by_bytes(store: &impl LogStore) {
    store
        .create("p", plain("text/plain"))
        .await
        .expect("create");
    let mut expected = String::new();
    for i in 0..50 {
        let chunk = format!("{i:03}-").repeat(10);
        expected.push_str(&chunk);
        store.append("p", data(&chunk)).await.expect("append");
    }
    let mut from = ReadFrom::Start;
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let batch = store.read("p", from, 100).await.expect("read");
        assert!(
            !batch.records.is_empty(),
            "a page below the tail has records"
        );
        for r in &batch.records {
            got.extend(r.items.iter().flat_map(|i| i.iter().copied()));
        }
        pages += 1;
        if batch.up_to_date() {
            break;
        }
        from = ReadFrom::After(batch.next());
    }
    assert!(pages > 1, "small pages split the read");
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

async fn closing_is_final_and_idempotent(store: &impl LogStore) {
    store
        .create("x", plain("text/plain"))
        .await
        .expect("create");
    let mut last = data("end");
    last.close = true;
    let out = store.append("x", last).await.expect("append and close");
    assert!(out.closed);
    let e = epoch_of(store, "x").await;
    assert_eq!(out.next, at(e, 1));
    let refused = store.append("x", data("more")).await;
    assert_eq!(refused, Err(AppendError::Closed { next: at(e, 1) }));
    let close_again = AppendRequest {
        close: true,
        ..AppendRequest::default()
    };
    let again = store.append("x", close_again).await.expect("close again");
    assert_eq!((again.kind, again.closed), (AppendKind::Duplicate, true));
    assert_eq!(store.head("x").await.map(|i| i.closed), Ok(true));
    assert_eq!(all_text(store, "x").await, "end");
}

fn claim(epoch: u64, seq: u64) -> Option<ProducerClaim> {
    Some(ProducerClaim {
        id: "writer".into(),
        epoch,
        seq,
    })
}

async fn producers_dedupe_and_fence(store: &impl LogStore) {
    store
        .create("pr", plain("text/plain"))
        .await
        .expect("create");
    let send = |c, t: &str| {
        let mut req = data(t);
        req.producer = c;
        store.append("pr", req)
    };
    let first = send(claim(0, 0), "a").await.expect("first");
    assert_eq!(first.kind, AppendKind::Written);
    let dup = send(claim(0, 0), "a").await.expect("retry");
    assert_eq!(dup.kind, AppendKind::Duplicate);
    assert_eq!(dup.next, at(epoch_of(store, "pr").await, 1));
    assert_eq!(
        send(claim(0, 5), "b").await,
        Err(AppendError::Producer(ProducerError::SeqGap {
            expected: 1,
            received: 5
        }))
    );
    send(claim(1, 0), "b").await.expect("new epoch");
    assert_eq!(
        send(claim(0, 1), "c").await,
        Err(AppendError::Producer(ProducerError::StaleEpoch {
            claimed: 0,
            current: 1
        }))
    );
    assert_eq!(all_text(store, "pr").await, "ab");
}

async fn stream_seq_must_increase(store: &impl LogStore) {
    store
        .create("q", plain("text/plain"))
        .await
        .expect("create");
    let with_seq = |s: &str| {
        let mut req = data("x");
        req.stream_seq = Some(s.into());
        req
    };
    store.append("q", with_seq("002")).await.expect("first seq");
    assert!(matches!(
        store.append("q", with_seq("001")).await,
        Err(AppendError::SeqRegression { .. })
    ));
    store
        .append("q", with_seq("010"))
        .await
        .expect("higher seq");
}

async fn delete_then_recreate_is_clean(store: &impl LogStore) {
    store
        .create("d", plain("text/plain"))
        .await
        .expect("create");
    store.append("d", data("old")).await.expect("append");
    let old = store.head("d").await.expect("head").tail;
    store.delete("d").await.expect("delete");
    assert_eq!(store.head("d").await, Err(HeadError::NotFound));
    assert_eq!(store.delete("d").await, Err(DeleteError::NotFound));
    let again = store.create("d", plain("text/plain")).await;
    assert!(matches!(again, Ok(CreateOutcome::Created(_))));
    assert_eq!(all_text(store, "d").await, "");
    store.append("d", data("new")).await.expect("append");
    assert_eq!(all_text(store, "d").await, "new");
    // The new life has an epoch of its own, so a position of the old one is not mistaken for
    // one of the new (serial 1 exists in both).
    let new = store.head("d").await.expect("head").tail;
    assert_ne!(
        new.epoch, old.epoch,
        "a re-created stream starts a new life"
    );
    assert!(matches!(
        store.read("d", ReadFrom::After(old), ALL).await,
        Err(ReadError::EpochMismatch { current }) if current == new
    ));
    // Holding nothing of the old life (serial 0), a reader misses nothing of the new one.
    let from_nothing = store
        .read("d", ReadFrom::After(at(old.epoch, 0)), ALL)
        .await;
    let from_nothing = from_nothing.expect("read from the start");
    assert_eq!(
        (from_nothing.start, from_nothing.next()),
        (at(new.epoch, 0), new)
    );
}

async fn every_life_of_a_session_has_its_own_epoch(store: &impl LogStore) {
    let first = publish_one(store, "life", vec![new_event(Action::Event, None, "a")]).await;
    assert_ne!(
        first.epoch, 0,
        "epoch 0 is only the epoch of logs older than epochs"
    );
    store.delete("life").await.expect("delete");
    let second = publish_one(store, "life", vec![new_event(Action::Event, None, "b")]).await;
    assert_ne!(second.epoch, first.epoch);
    assert_eq!(second.results[0].serial, 1);
    let snap = store.snapshot("life").await.expect("read").expect("exists");
    assert_eq!(snap.info.tail, at(second.epoch, 1));
    assert!(matches!(
        store
            .read("life", ReadFrom::After(at(first.epoch, 1)), ALL)
            .await,
        Err(ReadError::EpochMismatch { .. })
    ));
    // Many lives in quick succession (one millisecond of the manual clock): all differ.
    let mut seen = vec![first.epoch, second.epoch];
    for _ in 0..20 {
        store.delete("life").await.expect("delete");
        let next = publish_one(store, "life", vec![new_event(Action::Event, None, "c")]).await;
        assert!(
            !seen.contains(&next.epoch),
            "epoch {} came back",
            next.epoch
        );
        assert!(next.epoch <= mooring_core::epoch::MAX_EPOCH);
        seen.push(next.epoch);
    }
}

async fn a_renewed_life_keeps_the_records_and_refuses_old_positions(store: &impl LogStore) {
    store
        .create("renew", plain("text/plain"))
        .await
        .expect("create");
    for t in ["a", "b", "c"] {
        store.append("renew", data(t)).await.expect("append");
    }
    let old = epoch_of(store, "renew").await;
    let renewed = store.renew_life("renew", old).await.expect("renew");
    assert_ne!(renewed.epoch, old);
    assert_eq!(renewed.serial, 3, "the records stay");
    assert_eq!(all_text(store, "renew").await, "abc");
    assert!(matches!(
        store.read("renew", ReadFrom::After(at(old, 2)), ALL).await,
        Err(ReadError::EpochMismatch { .. })
    ));
    let batch = store
        .read("renew", ReadFrom::After(at(renewed.epoch, 2)), ALL)
        .await
        .expect("a position of the new life");
    assert_eq!(batch.records.len(), 1);
    // Another reader that noticed the same loss later changes nothing.
    let again = store.renew_life("renew", old).await.expect("renew again");
    assert_eq!(again, renewed);
    assert!(matches!(
        store.renew_life("missing", old).await,
        Err(HeadError::NotFound)
    ));
}

fn fork_of(source: &str, offset: Option<Position>, sub_offset: u64) -> CreateRequest {
    CreateRequest {
        fork: Some(ForkOrigin {
            source: source.into(),
            offset,
            sub_offset,
        }),
        ..CreateRequest::default()
    }
}

async fn forks_inherit_and_diverge(store: &impl LogStore) {
    store
        .create("src", plain("text/plain"))
        .await
        .expect("create");
    for w in ["one ", "two ", "three"] {
        store.append("src", data(w)).await.expect("append");
    }
    let e = epoch_of(store, "src").await;
    store
        .create("f1", fork_of("src", Some(at(e, 2)), 0))
        .await
        .expect("fork");
    assert_eq!(all_text(store, "f1").await, "one two ");
    store.append("f1", data("fork")).await.expect("fork append");
    assert_eq!(all_text(store, "f1").await, "one two fork");
    assert_eq!(all_text(store, "src").await, "one two three");
    store
        .create("f2", fork_of("src", Some(at(e, 2)), 3))
        .await
        .expect("sub fork");
    assert_eq!(all_text(store, "f2").await, "one two thr");
    store
        .create("f3", fork_of("src", None, 0))
        .await
        .expect("tail fork");
    assert_eq!(all_text(store, "f3").await, "one two three");
    assert!(matches!(
        store.create("f4", fork_of("src", Some(at(e, 9)), 0)).await,
        Err(CreateError::ForkOffsetInvalid { .. })
    ));
    assert!(matches!(
        store.create("f4", fork_of("src", Some(at(e, 3)), 1)).await,
        Err(CreateError::SubOffsetOvershoot { .. })
    ));
    assert!(matches!(
        store.create("f4", fork_of("nothing", None, 0)).await,
        Err(CreateError::SourceNotFound(_))
    ));
    let again = store.create("f1", fork_of("src", Some(at(e, 2)), 0)).await;
    assert!(matches!(again, Ok(CreateOutcome::Existed(_))));
    // A fork continues its source's life: positions up to the fork point mean the same in
    // both. The start of any life (serial 0) is a fork point of every life.
    assert_eq!(epoch_of(store, "f1").await, e);
    store
        .create("f5", fork_of("src", Some(at(e + 1, 0)), 0))
        .await
        .expect("a fork at the start of another life");
    assert_eq!(all_text(store, "f5").await, "");
    assert!(matches!(
        store
            .create("f6", fork_of("src", Some(at(e + 1, 1)), 0))
            .await,
        Err(CreateError::ForkOffsetInvalid { .. })
    ));
}

async fn soft_deleted_sources_go_with_their_last_fork(store: &impl LogStore) {
    store
        .create("a", plain("text/plain"))
        .await
        .expect("create");
    store.append("a", data("root")).await.expect("append");
    store
        .create("b", fork_of("a", None, 0))
        .await
        .expect("fork");
    store
        .create("c", fork_of("b", None, 0))
        .await
        .expect("fork of fork");
    store.delete("a").await.expect("soft delete");
    store.delete("b").await.expect("soft delete");
    assert_eq!(store.head("a").await, Err(HeadError::Gone));
    assert_eq!(store.delete("b").await, Err(DeleteError::Gone));
    assert_eq!(
        store.create("a", plain("text/plain")).await,
        Err(CreateError::PathSoftDeleted)
    );
    assert!(matches!(
        store.create("z", fork_of("a", None, 0)).await,
        Err(CreateError::SourceSoftDeleted(_))
    ));
    assert_eq!(all_text(store, "c").await, "root");
    store.delete("c").await.expect("delete last fork");
    assert_eq!(store.head("b").await, Err(HeadError::NotFound));
    assert_eq!(store.head("a").await, Err(HeadError::NotFound));
    let recreated = store.create("a", plain("text/plain")).await;
    assert!(matches!(recreated, Ok(CreateOutcome::Created(_))));
}

async fn ttl_slides_with_reads_and_writes(store: &impl LogStore, clock: &ManualClock) {
    let mut req = plain("text/plain");
    req.expiry = Expiry::TtlSecs(10);
    store.create("t", req).await.expect("create");
    clock.advance(8_000);
    store
        .read("t", ReadFrom::Start, ALL)
        .await
        .expect("read resets");
    clock.advance(8_000);
    store.append("t", data("w")).await.expect("write resets");
    clock.advance(8_000);
    assert!(
        store.head("t").await.is_ok(),
        "not expired before its window ends"
    );
    store.head("t").await.expect("head");
    clock.advance(2_000);
    assert_eq!(
        store.head("t").await,
        Err(HeadError::NotFound),
        "head does not reset"
    );
    assert_eq!(
        store.append("t", data("late")).await,
        Err(AppendError::NotFound)
    );
}

async fn expires_at_is_absolute_and_swept(store: &impl LogStore, clock: &ManualClock) {
    let mut req = plain("text/plain");
    req.expiry = Expiry::AtMs(T0 + 5_000);
    store.create("e", req).await.expect("create");
    store.append("e", data("x")).await.expect("append");
    clock.advance(4_999);
    assert!(store.read("e", ReadFrom::Start, ALL).await.is_ok());
    clock.advance(1);
    assert_eq!(
        store.read("e", ReadFrom::Start, ALL).await,
        Err(ReadError::NotFound)
    );
    assert_eq!(store.sweep_expired().await, Ok(1));
    assert_eq!(store.sweep_expired().await, Ok(0));
    let fresh = store.create("e", plain("text/plain")).await;
    assert!(matches!(fresh, Ok(CreateOutcome::Created(_))));
}

async fn batches_are_atomic_and_contiguous(store: &impl LogStore) {
    store
        .create("bt", plain("text/plain"))
        .await
        .expect("create");
    store.append("bt", data("a")).await.expect("append");
    let mut batch = data("b");
    batch.records.push(text("c"));
    batch.records.push(text("d"));
    let out = store.append("bt", batch.clone()).await.expect("batch");
    let e = epoch_of(store, "bt").await;
    assert_eq!(out.next, at(e, 4));
    let read = store.read("bt", ReadFrom::After(at(e, 1)), ALL).await;
    let serials: Vec<u64> = read
        .expect("read")
        .records
        .iter()
        .map(|r| r.serial)
        .collect();
    assert_eq!(serials, [2, 3, 4]);
    // A refused batch writes none of its records.
    batch.stream_seq = Some("1".into());
    store.append("bt", batch.clone()).await.expect("with seq");
    assert!(store.append("bt", batch).await.is_err());
    assert_eq!(store.head("bt").await.map(|i| i.tail), Ok(at(e, 7)));
}

async fn concurrent_appends_never_share_a_serial<S: LogStore>(store: Arc<S>) {
    store
        .create("cc", plain("text/plain"))
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut serials = Vec::new();
            for i in 0..25 {
                let out = store.append("cc", data(&format!("{w}:{i};"))).await;
                serials.push(out.expect("append").next.serial);
            }
            serials
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<u64>>());
}

fn new_event(action: Action, reference: Option<u64>, data: &str) -> NewEvent {
    NewEvent {
        id: None,
        action,
        name: None,
        reference,
        data: data.into(),
        extras: Default::default(),
    }
}

fn group(events: Vec<NewEvent>) -> PublishGroup {
    PublishGroup::new(Some("agent".into()), events)
}

async fn publish_one(store: &impl LogStore, name: &str, events: Vec<NewEvent>) -> PublishOutcome {
    let mut out = store
        .publish(name, vec![group(events)], PublishRules::default())
        .await
        .expect("store");
    out.pop().expect("one outcome").expect("published")
}

async fn sessions_fold_appends_into_messages(store: &impl LogStore) {
    let created = publish_one(
        store,
        "chat",
        vec![new_event(Action::MessageCreate, None, "He")],
    );
    let created = created.await;
    assert_eq!(created.results[0].serial, 1);
    assert_eq!(created.events[0].client_id.as_deref(), Some("agent"));
    for piece in ["l", "lo", " there"] {
        publish_one(
            store,
            "chat",
            vec![new_event(Action::MessageAppend, Some(1), piece)],
        )
        .await;
    }
    publish_one(
        store,
        "chat",
        vec![new_event(Action::MessageCreate, None, "second")],
    )
    .await;
    let snap = store.snapshot("chat").await.expect("read").expect("exists");
    assert_eq!(snap.info.tail.serial, 5);
    let texts: Vec<_> = snap.messages.iter().map(|m| m.data.clone()).collect();
    assert_eq!(texts, ["Hello there", "second"]);
    assert_eq!(snap.messages[0].version, 4);
    publish_one(
        store,
        "chat",
        vec![new_event(Action::MessageDelete, Some(5), "")],
    )
    .await;
    let snap = store.snapshot("chat").await.expect("read").expect("exists");
    assert_eq!(snap.messages.len(), 1, "deleted messages leave the view");
    let log = store.read("chat", ReadFrom::Start, ALL).await.expect("log");
    assert_eq!(log.records.len(), 6, "the log keeps every event");
    assert_eq!(store.snapshot("none").await, Ok(None));
}

async fn publish_ids_dedupe_within_the_window(store: &impl LogStore) {
    let mut first = new_event(Action::MessageCreate, None, "once");
    first.id = Some("req-1".into());
    let a = publish_one(store, "ids", vec![first.clone()]).await;
    let b = publish_one(store, "ids", vec![first.clone()]).await;
    assert_eq!(b.results[0].serial, a.results[0].serial);
    assert!(b.results[0].duplicate);
    assert!(b.events.is_empty(), "a duplicate publishes nothing");
    let twice = publish_one(store, "ids", vec![first.clone(), first]).await;
    assert!(twice.results.iter().all(|r| r.duplicate));
    assert_eq!(store.head("ids").await.map(|i| i.tail.serial), Ok(1));
}

async fn refused_groups_write_nothing(store: &impl LogStore) {
    publish_one(
        store,
        "rg",
        vec![new_event(Action::MessageCreate, None, "x")],
    )
    .await;
    let good = group(vec![new_event(Action::MessageAppend, Some(1), "y")]);
    let bad = group(vec![
        new_event(Action::MessageCreate, None, "z"),
        new_event(Action::MessageAppend, Some(9), "w"),
    ]);
    let out = store
        .publish("rg", vec![bad, good], PublishRules::default())
        .await
        .expect("store");
    assert!(matches!(
        out[0],
        Err(PublishError::MessageNotFound {
            index: 1,
            reference: 9
        })
    ));
    let good = out[1].as_ref().expect("the other group is unaffected");
    assert_eq!(good.results[0].serial, 2);
    let snap = store.snapshot("rg").await.expect("read").expect("exists");
    assert_eq!(snap.messages.len(), 1);
    assert_eq!(snap.messages[0].data, "xy");
    let mut plain_stream = plain("text/plain");
    plain_stream.items = text("bytes");
    store.create("bytes", plain_stream).await.expect("create");
    let out = store
        .publish(
            "bytes",
            vec![group(vec![new_event(Action::Event, None, "e")])],
            PublishRules::default(),
        )
        .await
        .expect("store");
    assert!(matches!(out[0], Err(PublishError::NotASession(_))));
}

async fn coalesced_appends_become_one_event(store: &impl LogStore) {
    publish_one(
        store,
        "co",
        vec![new_event(Action::MessageCreate, None, "")],
    )
    .await;
    let mut retried = new_event(Action::MessageAppend, Some(1), "a");
    retried.id = Some("t1".into());
    publish_one(store, "co", vec![retried.clone()]).await;
    let mut fresh_id = new_event(Action::MessageAppend, Some(1), "c");
    fresh_id.id = Some("t3".into());
    let mut rolled = group(vec![
        retried,
        new_event(Action::MessageAppend, Some(1), "b"),
        fresh_id.clone(),
    ]);
    rolled.coalesce = true;
    let out = store
        .publish("co", vec![rolled], PublishRules::default())
        .await
        .expect("store");
    let out = out[0].as_ref().expect("published");
    assert_eq!(out.events.len(), 1, "three appends, one event");
    assert_eq!(
        out.events[0].data, "bc",
        "the retried fragment is not appended twice"
    );
    let results: Vec<(u64, bool)> = out
        .results
        .iter()
        .map(|r| (r.serial, r.duplicate))
        .collect();
    assert_eq!(results, [(2, true), (3, false), (3, false)]);
    let again = publish_one(store, "co", vec![fresh_id]).await;
    assert_eq!(
        (again.results[0].serial, again.results[0].duplicate),
        (3, true)
    );
    let snap = store.snapshot("co").await.expect("read").expect("exists");
    assert_eq!(
        (snap.messages[0].data.as_str(), snap.messages[0].version),
        (Some("abc"), 3)
    );
}

/// A tiny deterministic generator, so a failing seed replays exactly.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below.max(1)
    }
}

/// Replays a seeded random workload on `store` and on the memory oracle; every answer and
/// every stream's final content must be the same.
pub async fn compare_with_oracle(store: &impl LogStore, clock: &ManualClock, seed: u64) {
    let oracle = MemoryStore::new(Arc::new(clock.clone()));
    let mut rng = Lcg(seed);
    let names = ["o1", "o2", "o3", "o4"];
    for step in 0..400 {
        let name = names[rng.next(names.len() as u64) as usize];
        let what = rng.next(100);
        let label = format!("seed {seed} step {step} on {name}");
        match what {
            0..=9 => {
                let req = if rng.next(4) == 0 {
                    fork_of(names[rng.next(4) as usize], None, 0)
                } else {
                    plain(["text/plain", "application/json"][rng.next(2) as usize])
                };
                let a = store.create(name, req.clone()).await;
                let b = oracle.create(name, req).await;
                assert_eq!(same(&a), same(&b), "create, {label}");
            }
            10..=69 => {
                let mut req = data(&format!("{step},"));
                if rng.next(5) == 0 {
                    req.producer = claim(rng.next(2), rng.next(4));
                }
                if rng.next(20) == 0 {
                    req.close = true;
                }
                let a = store.append(name, req.clone()).await;
                let b = oracle.append(name, req).await;
                assert_eq!(same(&a), same(&b), "append, {label}");
            }
            70..=89 => {
                // Each engine draws its own epochs: read each from a position of its own life.
                let serial = rng.next(6);
                let life = |info: Result<StreamInfo, HeadError>| info.map_or(0, |i| i.tail.epoch);
                let from_a = ReadFrom::After(at(life(store.head(name).await), serial));
                let from_b = ReadFrom::After(at(life(oracle.head(name).await), serial));
                let a = store.read(name, from_a, 16).await;
                let b = oracle.read(name, from_b, 16).await;
                assert_eq!(same(&a), same(&b), "read, {label}");
            }
            _ => {
                let a = store.delete(name).await;
                let b = oracle.delete(name).await;
                assert_eq!(a, b, "delete, {label}");
            }
        }
    }
    for name in names {
        let a = store.read(name, ReadFrom::Start, ALL).await;
        let b = oracle.read(name, ReadFrom::Start, ALL).await;
        assert_eq!(same(&a), same(&b), "final content of {name}, seed {seed}");
    }
}

/// An answer with the epochs of lives (drawn from time, so different in every engine) blotted
/// out; producer epochs (small numbers) stay.
fn same(answer: &impl std::fmt::Debug) -> String {
    let text = format!("{answer:?}");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find("epoch: ") {
        let (head, tail) = rest.split_at(i + "epoch: ".len());
        out.push_str(head);
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits >= 13 {
            out.push('E');
        } else {
            out.push_str(&tail[..digits]);
        }
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}
