//! Waiting for replicas (`--redis-wait-replicas`) against real `redis-server` processes: a
//! primary and a replica of it.

use std::sync::Arc;
use std::time::Duration;

use mooring_core::append::{AppendError, AppendKind, AppendRequest};
use mooring_core::clock::{ManualClock, SystemClock};
use mooring_core::store::{LogStore, StoreError};
use mooring_protocol::durable_streams::ProducerClaim;
use mooring_testkit::redis::RedisServer;

use super::replicas::Landed;
use super::tests::{data, text_stream};
use super::{keys, RedisOptions, RedisStore};
use crate::conformance;

fn waiting_for(replicas: u32, timeout_ms: u64) -> RedisOptions {
    RedisOptions {
        wait_replicas: replicas,
        wait_timeout: Duration::from_millis(timeout_ms),
    }
}

async fn store(server: &RedisServer, options: RedisOptions) -> RedisStore {
    RedisStore::connect_with(&server.url(), Arc::new(SystemClock), options)
        .await
        .expect("connect")
}

/// Whether `server` holds the record at `serial` of `name`.
fn holds(server: &RedisServer, name: &str, serial: u64) -> bool {
    let id = format!("{serial}-0");
    let range = ["XRANGE", &keys::records(name), &id, &id];
    server.command(&range).expect("XRANGE") == "*1"
}

/// How many `WAIT`s `server` has run.
fn waits(server: &RedisServer) -> u64 {
    let stats = server.info("commandstats").expect("INFO commandstats");
    let Some(line) = stats.lines().find(|l| l.starts_with("cmdstat_wait:")) else {
        return 0;
    };
    let calls = line
        .split([':', ','])
        .find_map(|part| part.strip_prefix("calls="));
    calls.and_then(|n| n.parse().ok()).unwrap_or(0)
}

fn refusal(result: Result<impl std::fmt::Debug, AppendError>) -> String {
    match result {
        Err(AppendError::Store(StoreError::Io(message))) => message,
        other => panic!("expected the append to be refused with Io, got {other:?}"),
    }
}

#[tokio::test]
async fn passes_the_engine_conformance_suite_waiting_for_a_replica() {
    let primary = RedisServer::start().expect("redis-server");
    let _replica = RedisServer::start_replica(&primary).expect("replica");
    conformance::run_all(|clock: ManualClock| {
        assert_eq!(primary.command(&["FLUSHALL"]).expect("flush"), "+OK");
        let url = primary.url();
        async move {
            RedisStore::connect_with(&url, Arc::new(clock), waiting_for(1, 5_000))
                .await
                .expect("connect")
        }
    })
    .await;
    assert!(waits(&primary) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_append_is_on_the_replica_already() {
    let primary = RedisServer::start().expect("redis-server");
    let replica = RedisServer::start_replica(&primary).expect("replica");
    let store = store(&primary, waiting_for(1, 5_000)).await;
    let mut writers = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let name = format!("replicated-{w}");
            store.create(&name, text_stream()).await.expect("create");
            let mut acked = Vec::new();
            for i in 0..25 {
                let out = store.append(&name, data(&format!("{i};"))).await;
                let serial = out.expect("append").next.serial;
                acked.push((name.clone(), serial));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await.expect("writer"));
    }
    assert_eq!(acked.len(), 100);
    // Read right after the acknowledgements: no time given to the replica to catch up.
    for (name, serial) in &acked {
        assert!(
            holds(&replica, name, *serial),
            "{name} {serial} not on the replica"
        );
    }
    let waited = waits(&primary);
    assert!(waited >= 1, "no WAIT reached the primary");
    // Commits answered while a wait is in flight share the next one.
    assert!(waited <= 104, "{waited} waits for 104 writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_the_replicas_did_not_acknowledge_is_refused_and_its_retry_is_not_acknowledged_either(
) {
    let primary = RedisServer::start().expect("redis-server");
    let mut replica = RedisServer::start_replica(&primary).expect("replica");
    let store = store(&primary, waiting_for(1, 200)).await;
    store.create("held", text_stream()).await.expect("create");
    let with_producer = || AppendRequest {
        producer: Some(ProducerClaim {
            id: "writer".into(),
            epoch: 0,
            seq: 0,
        }),
        ..data("once;")
    };

    replica.pause(true).expect("SIGSTOP the replica");
    let message = refusal(store.append("held", with_producer()).await);
    assert!(
        message.contains("only 0 of 1 replicas acknowledged it within 200 ms"),
        "{message}"
    );
    assert!(
        message.contains("retry it with the same producer"),
        "{message}"
    );
    // It reached the primary, as the message says; it was not acknowledged.
    assert!(holds(&primary, "held", 1));
    // The retry finds it there, deduplicated; the replica still lacks it, so the duplicate is
    // not acknowledged either.
    let message = refusal(store.append("held", with_producer()).await);
    assert!(message.contains("only 0 of 1 replicas"), "{message}");

    replica.pause(false).expect("SIGCONT the replica");
    let retried = store.append("held", with_producer()).await.expect("retry");
    assert_eq!(retried.kind, AppendKind::Duplicate);
    assert_eq!(retried.next.serial, 1);
    assert!(holds(&replica, "held", 1));

    // A replica gone for good: the same.
    replica.stop();
    let message = refusal(store.append("held", data("alone;")).await);
    assert!(message.contains("only 0 of 1 replicas"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_cut_off_with_its_connection_does_not_acknowledge_the_write() {
    let primary = RedisServer::start().expect("redis-server");
    let replica = RedisServer::start_replica(&primary).expect("replica");
    let store = store(&primary, waiting_for(1, 3_000)).await;
    store.create("cut", text_stream()).await.expect("create");
    replica.pause(true).expect("SIGSTOP the replica");
    let append = {
        let store = store.clone();
        tokio::spawn(async move { store.append("cut", data("cut;")).await })
    };
    // The commit is in, its WAIT is waiting for the stopped replica: cut the connection. A
    // WAIT resent on the new connection covers that connection's writes, not the commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(holds(&primary, "cut", 1), "the commit is in");
    let kill = ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"];
    let killed = primary.command(&kill).expect("CLIENT KILL");
    assert!(killed.starts_with(':') && killed != ":0", "{killed}");
    let result = append.await.expect("append task");
    replica.pause(false).expect("SIGCONT the replica");
    let message = refusal(result);
    assert!(message.contains("not acknowledged"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_another_connection_than_the_commits_does_not_count() {
    let primary = RedisServer::start().expect("redis-server");
    let _replica = RedisServer::start_replica(&primary).expect("replica");
    let store = store(&primary, waiting_for(1, 1_000)).await;
    let replicas = store.inner.replicas.as_ref().expect("waiting for replicas");
    let now = replicas.connection().expect("connected");
    let committed = |connection| Landed::Committed {
        connection: Some(connection),
        ticket: replicas.ticket(),
    };
    replicas
        .confirm(committed(now))
        .await
        .expect("the same connection");
    // On a fresh connection, WAIT counts every replica at once (it wrote nothing), so it says
    // nothing about a commit sent through the connection before.
    match replicas.confirm(committed(now - 1)).await {
        Err(StoreError::Io(message)) => assert!(message.contains("was replaced"), "{message}"),
        other => panic!("a wait on another connection counted: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replicas_to_wait_for_no_wait_is_sent() {
    let primary = RedisServer::start().expect("redis-server");
    let replica = RedisServer::start_replica(&primary).expect("replica");
    let store = store(&primary, RedisOptions::default()).await;
    store.create("plain", text_stream()).await.expect("create");
    replica.pause(true).expect("SIGSTOP the replica");
    for i in 0..10 {
        let out = store.append("plain", data(&format!("{i};"))).await;
        assert_eq!(out.expect("append").next.serial, i + 1);
    }
    replica.pause(false).expect("SIGCONT the replica");
    assert_eq!(waits(&primary), 0);
}

#[tokio::test]
async fn waiting_for_replicas_is_refused_on_a_cluster_url() {
    let url = "redis-cluster://127.0.0.1:1";
    let refused = RedisStore::connect_with(url, Arc::new(SystemClock), waiting_for(1, 100)).await;
    match refused {
        Err(StoreError::Io(message)) => assert!(message.contains("Redis Cluster"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
