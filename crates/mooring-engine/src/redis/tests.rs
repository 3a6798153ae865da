//! The Redis engine against real `redis-server` processes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mooring_core::append::AppendRequest;
use mooring_core::clock::{ManualClock, SystemClock};
use mooring_core::create::CreateRequest;
use mooring_core::session::{PublishGroup, PublishRules};
use mooring_core::store::{LogStore, NoticeFeed, StoreNotice};
use mooring_core::ReadFrom;
use mooring_protocol::session::{Action, NewEvent};
use mooring_testkit::redis::RedisServer;

use super::RedisStore;
use crate::conformance;

pub(super) fn text_stream() -> CreateRequest {
    CreateRequest {
        content_type: Some("text/plain".into()),
        ..CreateRequest::default()
    }
}

pub(super) fn data(t: &str) -> AppendRequest {
    AppendRequest {
        content_type: Some("text/plain".into()),
        records: vec![vec![Bytes::copy_from_slice(t.as_bytes())]],
        ..AppendRequest::default()
    }
}

/// A store on an emptied Redis.
async fn fresh(server: &RedisServer, clock: ManualClock) -> RedisStore {
    assert_eq!(server.command(&["FLUSHALL"]).expect("flush"), "+OK");
    RedisStore::connect(&server.url(), Arc::new(clock))
        .await
        .expect("connect")
}

#[tokio::test]
async fn passes_the_engine_conformance_suite() {
    let server = RedisServer::start().expect("redis-server");
    conformance::run_all(|clock| fresh(&server, clock)).await;
}

#[tokio::test]
async fn matches_the_oracle_on_more_seeds() {
    let server = RedisServer::start().expect("redis-server");
    for seed in [1, 2, 3, 11] {
        let clock = ManualClock::new(1_800_000_000_000);
        let store = fresh(&server, clock.clone()).await;
        conformance::compare_with_oracle(&store, &clock, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_never_share_a_serial() {
    let server = RedisServer::start().expect("redis-server");
    let clock = Arc::new(SystemClock);
    let a = RedisStore::connect(&server.url(), clock.clone()).await;
    let b = RedisStore::connect(&server.url(), clock).await;
    let (a, b) = (a.expect("node a"), b.expect("node b"));
    a.create("shared", text_stream()).await.expect("create");
    let mut tasks = Vec::new();
    for (n, node) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut serials = Vec::new();
            for i in 0..40 {
                let out = node.append("shared", data(&format!("{n}.{i};"))).await;
                serials.push(out.expect("append").next.serial);
            }
            serials
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer"));
    }
    all.sort_unstable();
    assert_eq!(all, (1..=160).collect::<Vec<u64>>());
    let read = b.read("shared", ReadFrom::Start, usize::MAX).await;
    assert_eq!(read.expect("read").records.len(), 160);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_a_redis_crash() {
    let server = RedisServer::start().expect("redis-server");
    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock))
        .await
        .expect("connect");
    store
        .create("durable", text_stream())
        .await
        .expect("create");
    let acks = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (store, acks) = (store.clone(), acks.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..600 {
                match store.append("durable", data(&format!("{i};"))).await {
                    Ok(out) => {
                        acked.push((out.next.serial, format!("{i};")));
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    // Redis is down: the append is refused, never acknowledged.
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
            acked
        })
    };
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while acks.load(Ordering::Relaxed) < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    waited
        .await
        .expect("100 appends acknowledged before the crash");
    let before_crash = acks.load(Ordering::Relaxed);
    let server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.crash_and_restart().expect("redis-server restarts");
        server
    })
    .await
    .expect("restart");
    let acked = writer.await.expect("writer");
    assert!(
        acked.len() > before_crash,
        "the same handle writes again once Redis is back"
    );
    let read = store.read("durable", ReadFrom::Start, usize::MAX).await;
    let records = read.expect("read after the restart").records;
    for (serial, text) in &acked {
        let record = records.iter().find(|r| r.serial == *serial);
        let stored = record.map(|r| r.items.concat());
        assert_eq!(
            stored.as_deref(),
            Some(text.as_bytes()),
            "acknowledged serial {serial} after the crash"
        );
    }
    drop(server);
}

#[tokio::test]
async fn every_key_of_a_session_shares_its_hash_tag_and_delete_leaves_none() {
    let server = RedisServer::start().expect("redis-server");
    let store = fresh(&server, ManualClock::new(1_800_000_000_000)).await;
    let event = |action, reference, data: &str| NewEvent {
        id: Some(format!("id-{data}")),
        action,
        name: None,
        reference,
        data: data.into(),
        extras: Default::default(),
    };
    let group = PublishGroup::new(
        Some("agent".into()),
        vec![
            event(Action::MessageCreate, None, "he"),
            event(Action::MessageAppend, Some(1), "llo"),
        ],
    );
    let out = store
        .publish("chat:{odd}", vec![group], PublishRules::default())
        .await
        .expect("store");
    assert!(out[0].is_ok(), "{out:?}");
    let fleet = store.fleet().expect("a fleet");
    fleet
        .own_run("chat:{odd}", "r1", "agent")
        .await
        .expect("own a run");
    let mut keys = server.keys().expect("keys");
    let node_runs = format!("mooring:node:{}:runs", fleet.node());
    keys.retain(|k| *k != node_runs);
    assert_eq!(
        keys.len(),
        6,
        "state, version, records, messages, ids, run owners: {keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| k.starts_with("mooring:{chat:%7Bodd%7D}:")),
        "{keys:?}"
    );
    store.delete("chat:{odd}").await.expect("delete");
    assert_eq!(server.keys().expect("keys"), vec![node_runs]);
}

/// A trim removes the stream entries, messages and publish ids from Redis, not only from
/// what reads are given.
#[tokio::test]
async fn a_trim_removes_what_it_trims_from_redis() {
    let server = RedisServer::start().expect("redis-server");
    let clock = ManualClock::new(1_800_000_000_000);
    let store = fresh(&server, clock.clone()).await;
    conformance::retention::aged_session(&store, &clock).await;
    assert_eq!(store.sweep_expired().await, Ok(1));
    let count = |command: &str, key: &str| server.command(&[command, key]).expect("redis");
    assert_eq!(count("XLEN", "mooring:{chat}:r"), ":1", "records");
    assert_eq!(count("HLEN", "mooring:{chat}:a1"), ":1", "messages");
    assert_eq!(count("HLEN", "mooring:{chat}:a2"), ":1", "publish ids");
}

/// An input's claim: one node holds it at a time, the claim of a node found dead counts for
/// nothing, a started input cannot be taken (even from a dead node), and only the holder
/// gives it back.
#[tokio::test]
async fn one_live_node_holds_an_input_at_a_time() {
    use mooring_core::fleet::InputClaim;
    let server = RedisServer::start().expect("redis-server");
    let clock = ManualClock::new(1_800_000_000_000);
    let a = fresh(&server, clock.clone())
        .await
        .fleet()
        .expect("a fleet");
    let b = RedisStore::connect(&server.url(), Arc::new(clock))
        .await
        .expect("connect")
        .fleet()
        .expect("a fleet");
    let none: &[String] = &[];
    let ttl = 60_000;
    assert_eq!(
        a.claim_input("chat:1", 4, none, ttl).await,
        Ok(InputClaim::Won)
    );
    assert_eq!(
        a.claim_input("chat:1", 4, none, ttl).await,
        Ok(InputClaim::Won),
        "again"
    );
    assert_eq!(
        b.claim_input("chat:1", 4, none, ttl).await,
        Ok(InputClaim::HeldBy(a.node().to_owned()))
    );
    assert_eq!(
        b.start_input("chat:1", 4, "agent-b", none, ttl).await,
        Ok(Err(a.node().to_owned()))
    );
    b.release_input("chat:1", 4)
        .await
        .expect("not b's to give back");
    assert_eq!(
        b.input_state("chat:1", 4).await,
        Ok(Some(InputClaim::HeldBy(a.node().to_owned())))
    );
    // b found `a` dead: its claim counts for nothing.
    let a_dead = [a.node().to_owned()];
    assert_eq!(
        b.claim_input("chat:1", 4, &a_dead, ttl).await,
        Ok(InputClaim::Won)
    );
    a.release_input("chat:1", 4).await.expect("release");
    assert_eq!(
        a.input_state("chat:1", 4).await,
        Ok(Some(InputClaim::HeldBy(b.node().to_owned()))),
        "a no longer holds it, so its release changes nothing"
    );
    b.release_input("chat:1", 4).await.expect("release");
    assert_eq!(a.input_state("chat:1", 4).await, Ok(None));
    // Started by agent-a: nobody can take it, and only agent-a may start runs for it, even
    // through a node found dead.
    let started = a.start_input("chat:1", 4, "agent-a", none, ttl).await;
    assert_eq!(started, Ok(Ok(String::new())), "the claim before: none");
    assert_eq!(
        b.claim_input("chat:1", 4, &a_dead, ttl).await,
        Ok(InputClaim::Started(a.node().to_owned()))
    );
    assert_eq!(
        b.start_input("chat:1", 4, "agent-b", &a_dead, ttl).await,
        Ok(Err(a.node().to_owned()))
    );
    let again = b.start_input("chat:1", 4, "agent-a", none, ttl).await;
    assert!(matches!(again, Ok(Ok(_))), "agent-a again: {again:?}");
    // A start refused after all goes back to the claim before it.
    assert_eq!(
        b.claim_input("chat:1", 5, none, ttl).await,
        Ok(InputClaim::Won)
    );
    let before = a
        .start_input("chat:1", 5, "agent-a", &[b.node().to_owned()], ttl)
        .await;
    assert_eq!(before, Ok(Ok(format!("held {}", b.node()))));
    a.restore_input("chat:1", 5, "agent-a", &format!("held {}", b.node()), ttl)
        .await
        .expect("restore");
    assert_eq!(
        a.input_state("chat:1", 5).await,
        Ok(Some(InputClaim::HeldBy(b.node().to_owned())))
    );
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_at_start_not_a_hang() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://user:secret@127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let refused = RedisStore::connect(&url, Arc::new(SystemClock)).await;
    let message = refused.expect_err("nothing listens there").to_string();
    assert!(started.elapsed() < Duration::from_secs(9), "{message}");
    assert!(
        !message.contains("secret"),
        "the password stays out: {message}"
    );
}

/// Timing, not a check: `cargo test -p mooring-engine redis_append_timing -- --ignored
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing"]
async fn redis_append_timing() {
    let server = RedisServer::start().expect("redis-server");
    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock))
        .await
        .expect("connect");
    store.create("seq", text_stream()).await.expect("create");
    let started = std::time::Instant::now();
    for i in 0..500 {
        store
            .append("seq", data(&format!("{i}")))
            .await
            .expect("append");
    }
    let sequential = started.elapsed();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for s in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("par{s}");
            store.create(&name, text_stream()).await.expect("create");
            for i in 0..100 {
                store
                    .append(&name, data(&format!("{i}")))
                    .await
                    .expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let parallel = started.elapsed();
    println!(
        "redis engine: 500 sequential appends in {sequential:?} ({:.0}/s); 16 streams x 100 \
         concurrent appends in {parallel:?} ({:.0}/s)",
        500.0 / sequential.as_secs_f64(),
        1600.0 / parallel.as_secs_f64()
    );
}

/// The commit script by hand: one commit sent twice (as a client resends after a broken
/// connection) lands once, and a commit planned on a stale read lands not at all.
#[tokio::test]
async fn a_resent_commit_lands_once_and_a_stale_one_not_at_all() {
    use mooring_core::access::AccessTracker;
    use mooring_core::ops::{self, Now};

    use super::commit::{self, Verdict};
    use super::fetch::{self, Fetch};
    use super::view::{Miss, Snapshot, Txn};

    let server = RedisServer::start().expect("redis-server");
    let store = fresh(&server, ManualClock::new(1_800_000_000_000)).await;
    store.create("cas", text_stream()).await.expect("create");
    let mut snapshot = Snapshot::default();
    let read = fetch::fetch(
        &store.inner.client,
        &store.inner.read,
        &mut snapshot,
        vec![Miss::State("cas".into())],
    );
    assert_eq!(read.await.expect("fetch"), Fetch::Consistent);
    let access = AccessTracker::new(1_800_000_000_000);
    let now = Now {
        ms: 1_800_000_000_000,
        access: &access,
    };
    let commit_of = |token: &str, text: &str| {
        let mut txn = Txn::new(&snapshot);
        ops::append(&mut txn, "cas", &data(text), now).expect("append plans");
        commit::plan(&txn, &snapshot, token).expect("plan")
    };
    let send = |call: commit::Call| async {
        let reply: i64 = store
            .inner
            .script
            .evalsha_with_reload(&store.inner.client, call.keys, call.args)
            .await
            .expect("script");
        Verdict::from_reply(reply).expect("verdict")
    };
    assert_eq!(send(commit_of("test.1", "once")).await, Verdict::Applied);
    assert_eq!(
        send(commit_of("test.1", "once")).await,
        Verdict::AppliedBefore
    );
    assert_eq!(
        send(commit_of("test.2", "stale")).await,
        Verdict::Changed,
        "planned on the version before test.1"
    );
    // Another node writes; test.1 resent after that is still recognized.
    store.append("cas", data("other")).await.expect("append");
    assert_eq!(
        send(commit_of("test.1", "once")).await,
        Verdict::AppliedBefore
    );
    let read = store.read("cas", ReadFrom::Start, usize::MAX).await;
    let records: Vec<Vec<u8>> = read
        .expect("read")
        .records
        .iter()
        .map(|r| r.items.concat())
        .collect();
    assert_eq!(records, [b"once".to_vec(), b"other".to_vec()]);
}

/// Records only grow within a stream's life, so a long read of a stream another node keeps
/// appending to completes instead of starting over at every append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_reads_complete_while_another_node_appends() {
    let server = RedisServer::start().expect("redis-server");
    let clock = Arc::new(SystemClock);
    let reader = RedisStore::connect(&server.url(), clock.clone()).await;
    let writer = RedisStore::connect(&server.url(), clock).await;
    let (reader, writer) = (reader.expect("reader node"), writer.expect("writer node"));
    writer.create("hot", text_stream()).await.expect("create");
    for i in 0..600 {
        writer
            .append("hot", data(&format!("{i};")))
            .await
            .expect("fill");
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appends = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut written = 0;
            while !stop.load(Ordering::Relaxed) {
                writer.append("hot", data("x;")).await.expect("append");
                written += 1;
            }
            written
        })
    };
    for _ in 0..20 {
        let read = reader.read("hot", ReadFrom::Start, usize::MAX).await;
        let records = read.expect("a read completes under appends").records;
        assert!(records.len() >= 600);
        let serials: Vec<u64> = records.iter().map(|r| r.serial).collect();
        assert_eq!(serials, (1..=records.len() as u64).collect::<Vec<_>>());
    }
    stop.store(true, Ordering::Relaxed);
    assert!(
        appends.await.expect("writer") > 0,
        "the writer ran meanwhile"
    );
}

/// A Redis that stops answering (SIGSTOP) fails an append with an error, never an
/// acknowledgement and never a request held forever; once it answers again, writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_fails_appends_instead_of_hanging() {
    let server = RedisServer::start().expect("redis-server");
    let store = RedisStore::connect(&server.url(), Arc::new(SystemClock))
        .await
        .expect("connect");
    store.create("stuck", text_stream()).await.expect("create");
    server.pause(true).expect("SIGSTOP");
    let started = std::time::Instant::now();
    let stuck = tokio::time::timeout(Duration::from_secs(30), store.append("stuck", data("x")));
    let answer = stuck.await.expect("answered within the command timeout");
    server.pause(false).expect("SIGCONT");
    assert!(answer.is_err(), "{answer:?}");
    assert!(started.elapsed() >= super::COMMAND_TIMEOUT / 2);
    let after = store
        .append("stuck", data("y"))
        .await
        .expect("writes go on");
    let read = store.read("stuck", ReadFrom::Start, usize::MAX).await;
    let last = read.expect("read").records.last().map(|r| r.items.concat());
    assert_eq!(last.as_deref(), Some(&b"y"[..]), "next {:?}", after.next);
}

/// The next notice of `feed`, failing after a few seconds.
async fn next_notice(feed: &mut Box<dyn NoticeFeed>) -> StoreNotice {
    tokio::time::timeout(Duration::from_secs(5), feed.next())
        .await
        .expect("a notice within 5 s")
        .expect("the feed is open")
}

/// Skips the `Lost` a feed sends once it has subscribed.
async fn settled(store: &RedisStore) -> Box<dyn NoticeFeed> {
    let mut feed = store.notices().await.expect("subscribe").expect("a feed");
    assert_eq!(next_notice(&mut feed).await, StoreNotice::Lost);
    feed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_other_nodes_not_its_own() {
    let server = RedisServer::start().expect("redis-server");
    let clock = Arc::new(SystemClock);
    let a = RedisStore::connect(&server.url(), clock.clone()).await;
    let b = RedisStore::connect(&server.url(), clock).await;
    let (a, b) = (a.expect("node a"), b.expect("node b"));
    let mut on_a = settled(&a).await;
    let mut on_b = settled(&b).await;

    a.create("s", text_stream()).await.expect("create");
    a.append("s", data("one")).await.expect("append");
    let moved = |tail| StoreNotice::Moved {
        name: "s".into(),
        tail,
    };
    assert_eq!(next_notice(&mut on_b).await, moved(0), "the create");
    assert_eq!(next_notice(&mut on_b).await, moved(1), "the append");
    let event = NewEvent {
        id: None,
        action: Action::MessageCreate,
        name: None,
        reference: None,
        data: "hi".into(),
        extras: Default::default(),
    };
    let group = PublishGroup::new(Some("agent".into()), vec![event]);
    b.publish("t", vec![group], PublishRules::default())
        .await
        .expect("publish");
    let created = StoreNotice::Moved {
        name: "t".into(),
        tail: 1,
    };
    assert_eq!(
        next_notice(&mut on_a).await,
        created,
        "a hears of b's publish"
    );
    // a's own commits came before b's on the one channel: had a heard them, they would be
    // first. And b did not hear its own publish.
    let quiet = tokio::time::timeout(Duration::from_millis(300), on_b.next()).await;
    assert!(quiet.is_err(), "b heard its own write: {quiet:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_subscriber_reconnects_and_says_notices_were_lost() {
    let server = RedisServer::start().expect("redis-server");
    let clock = Arc::new(SystemClock);
    let a = RedisStore::connect(&server.url(), clock.clone()).await;
    let b = RedisStore::connect(&server.url(), clock).await;
    let (a, b) = (a.expect("node a"), b.expect("node b"));
    let mut on_b = settled(&b).await;
    let killed = server
        .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .expect("client kill");
    assert_eq!(
        killed, ":1",
        "b's subscriber was the one pub/sub connection"
    );
    assert_eq!(next_notice(&mut on_b).await, StoreNotice::Lost);
    // Subscribed again: the next commit is heard.
    a.create("s", text_stream()).await.expect("create");
    let moved = StoreNotice::Moved {
        name: "s".into(),
        tail: 0,
    };
    assert_eq!(next_notice(&mut on_b).await, moved);
}

fn member(client: &str, connection: &str) -> mooring_core::presence::Member {
    mooring_core::presence::Member {
        client_id: client.into(),
        instance: "tab".into(),
        connection_id: connection.into(),
        role: mooring_core::presence::Role::User,
        data: serde_json::Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_by_the_nodes_and_a_dead_nodes_members_are_dropped() {
    use mooring_core::presence::PresenceAction;
    let server = RedisServer::start().expect("redis-server");
    let clock = Arc::new(SystemClock);
    let a = RedisStore::connect(&server.url(), clock.clone()).await;
    let b = RedisStore::connect(&server.url(), clock).await;
    let (a, b) = (a.expect("node a"), b.expect("node b"));
    let (pa, pb) = (a.fleet().expect("shared"), b.fleet().expect("shared"));
    let mut on_b = settled(&b).await;
    const EXPIRY: u64 = 400;
    assert!(!pa.beat(EXPIRY).await.expect("beat").was_dead);
    let seen_by_b = pb.beat(EXPIRY).await.expect("beat");
    assert_eq!(seen_by_b.alive, vec![pa.node().to_owned()]);

    let alice = member("alice", "c1");
    pa.announce("s", PresenceAction::Enter, &alice)
        .await
        .expect("announce");
    match next_notice(&mut on_b).await {
        StoreNotice::Presence(notice) => {
            assert_eq!(
                (notice.node.as_str(), notice.session.as_str(), notice.action),
                (pa.node(), "s", PresenceAction::Enter)
            );
            assert_eq!(notice.member, alice);
        }
        other => panic!("b heard {other:?}"),
    }
    let remote = pb.members("s", EXPIRY).await.expect("members");
    assert_eq!(remote.len(), 1);
    assert_eq!(
        (remote[0].node.as_str(), &remote[0].member),
        (pa.node(), &alice)
    );
    assert!(
        pa.members("s", EXPIRY).await.expect("members").is_empty(),
        "not its own"
    );

    // alice reconnects through b: a's late leave must not remove her.
    let moved = member("alice", "c9");
    pb.announce("s", PresenceAction::Enter, &moved)
        .await
        .expect("announce");
    pa.announce("s", PresenceAction::Leave, &alice)
        .await
        .expect("announce");
    let remote = pa.members("s", EXPIRY).await.expect("members");
    assert_eq!(remote.len(), 1, "b's alice stays");
    assert_eq!(remote[0].member, moved);

    // b stops beating: past the expiry a finds it dead, and its member is dropped from the
    // store as a reads it.
    tokio::time::sleep(Duration::from_millis(EXPIRY + 100)).await;
    assert!(pa.beat(EXPIRY).await.expect("beat").alive.is_empty());
    assert!(pa.members("s", EXPIRY).await.expect("members").is_empty());
    let left = server
        .command(&["HLEN", &super::keys::members("s")])
        .expect("hlen");
    assert_eq!(left, ":0", "the dead node's member is gone from the store");
    assert!(
        pb.beat(EXPIRY).await.expect("beat").was_dead,
        "b learns the others may have dropped its members"
    );
}

#[tokio::test]
async fn a_node_lists_a_session_while_it_owns_runs_there() {
    let server = RedisServer::start().expect("redis-server");
    let store = fresh(&server, ManualClock::new(1_800_000_000_000)).await;
    let fleet = store.fleet().expect("a fleet");
    let list = super::keys::node_runs(fleet.node());
    let listed = || {
        server
            .command(&["SISMEMBER", &list, "chat:1"])
            .expect("sismember")
    };
    fleet.own_run("chat:1", "r1", "agent").await.expect("own");
    fleet.own_run("chat:1", "r2", "agent").await.expect("own");
    assert_eq!(listed(), ":1");
    fleet.end_run("chat:1", "r1").await.expect("end");
    assert_eq!(listed(), ":1", "r2 is still owned");
    fleet.end_run("chat:1", "r2").await.expect("end");
    assert_eq!(listed(), ":0", "no run left");

    // Another node takes a run over: the session leaves this node's list.
    fleet.own_run("chat:1", "r3", "agent").await.expect("own");
    let other = RedisStore::connect(&server.url(), Arc::new(SystemClock))
        .await
        .expect("node b");
    let other = other.fleet().expect("a fleet");
    let claimed = other.claim_runs("chat:1", "agent").await.expect("claim");
    assert_eq!(claimed, vec!["r3".to_owned()]);
    assert_eq!(listed(), ":0", "r3 is b's now");
    let b_list = super::keys::node_runs(other.node());
    let b_listed = server
        .command(&["SISMEMBER", &b_list, "chat:1"])
        .expect("sismember");
    assert_eq!(b_listed, ":1");
}
