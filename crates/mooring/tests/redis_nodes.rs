//! Two nodes on one Redis (a real `redis-server`): either node serves every stream, writes
//! through both interleave into one log, and a node killed with SIGKILL takes nothing with it.
//! A node told to wait for a replica acknowledges only what the replica has.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use mooring_testkit::protocol::realtime::{AttachFrom, AttachPoint, ServerFrame};
use mooring_testkit::redis::RedisServer;
use mooring_testkit::ws::{self, RealtimeClient};
use mooring_testkit::{AppendOutcome, MooringProcess, ServerConfig, StreamClient};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn message(n: usize) -> Vec<u8> {
    format!("{{\"n\":{n}}}").into_bytes()
}

async fn append(client: &StreamClient, stream: &str, n: usize) -> anyhow::Result<()> {
    match client.append_json(stream, message(n)).await {
        AppendOutcome::Acknowledged { .. } => Ok(()),
        other => bail!("append {n} was not acknowledged: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_redis_serve_one_log_and_survive_a_node_kill() -> anyhow::Result<()> {
    let redis = RedisServer::start().context("starting redis-server")?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let node = |dir: &tempfile::TempDir| {
        ServerConfig::new(env!("CARGO_BIN_EXE_mooring"), dir.path()).engine(&redis.url())
    };
    let mut a = MooringProcess::start(node(&dir_a)).await?;
    let b = MooringProcess::start(node(&dir_b)).await?;
    let via_a = StreamClient::new(&a.base_url(), REQUEST_TIMEOUT)?;
    let via_b = StreamClient::new(&b.base_url(), REQUEST_TIMEOUT)?;

    via_a.create_json_stream("shared").await?;
    for n in 0..40 {
        let client = if n % 2 == 0 { &via_a } else { &via_b };
        append(client, "shared", n).await?;
    }
    let expected: Vec<Vec<u8>> = (0..40).map(message).collect();
    assert_eq!(via_a.read_all("shared").await?, expected, "read through a");
    assert_eq!(via_b.read_all("shared").await?, expected, "read through b");

    a.kill()?;
    append(&via_b, "shared", 40).await?;
    let after = via_b.read_all("shared").await?;
    assert_eq!(after.len(), 41, "b still serves every acknowledged append");
    assert_eq!(after.last(), Some(&message(40)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waiting_for_a_replica_acknowledges_only_what_the_replica_has() -> anyhow::Result<()>
{
    let redis = RedisServer::start().context("starting redis-server")?;
    let replica = RedisServer::start_replica(&redis).context("starting a replica")?;
    let (node, _dir) = waiting_node(&redis).await?;
    let client = StreamClient::new(&node.base_url(), REQUEST_TIMEOUT)?;
    client.create_json_stream("replicated").await?;
    // The replica may take a moment to keep up with its first writes.
    let mut attempts = 0;
    while let Err(e) = append(&client, "replicated", 0).await {
        attempts += 1;
        ensure!(
            attempts < 20,
            "the first append was never acknowledged: {e}"
        );
    }

    replica.pause(true)?;
    let refused = client.append_json("replicated", message(1)).await;
    replica.pause(false)?;
    match refused {
        AppendOutcome::Unknown { reason } => assert!(reason.contains("503"), "{reason}"),
        other => bail!("an append the replica did not get was answered {other:?}"),
    }
    append(&client, "replicated", 2).await?;
    Ok(())
}

/// A publish refused for want of a replica has still landed on the primary: the refusing
/// node's own live readers get it at once, not only with the session's next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_refused_for_want_of_a_replica_still_reaches_the_nodes_readers(
) -> anyhow::Result<()> {
    let redis = RedisServer::start().context("starting redis-server")?;
    let replica = RedisServer::start_replica(&redis).context("starting a replica")?;
    let (node, _dir) = waiting_node(&redis).await?;
    let session = "chat:refused";
    let mut writer = RealtimeClient::connect(&node.base_url(), "writer").await?;
    // The replica may take a moment to keep up with its first writes: retried, with an id.
    let mut first = ws::create("answer", "kept");
    first.id = Some("first".into());
    let mut attempts = 0;
    loop {
        let answer = writer
            .publish(session, vec![first.clone()], REQUEST_TIMEOUT)
            .await?;
        match answer {
            ServerFrame::Ack { .. } => break,
            ServerFrame::Error { .. } if attempts < 20 => attempts += 1,
            other => bail!("the first publish was answered {other:?}"),
        }
    }
    let mut reader = RealtimeClient::connect(&node.base_url(), "reader").await?;
    reader
        .attach(session, Some(AttachFrom::Named(AttachPoint::Start)))
        .await?;
    loop {
        if let ServerFrame::Live { .. } = reader.recv_frame(REQUEST_TIMEOUT).await? {
            break;
        }
    }

    replica.pause(true)?;
    let refused = writer
        .publish(
            session,
            vec![ws::create("answer", "landed")],
            REQUEST_TIMEOUT,
        )
        .await;
    replica.pause(false)?;
    ensure!(
        matches!(&refused, Ok(ServerFrame::Error { .. })),
        "a publish the replica did not get was answered {refused:?}"
    );
    loop {
        match reader.recv_frame(Duration::from_secs(3)).await {
            Ok(ServerFrame::Event { event, .. }) => {
                ensure!(event.serial == 2, "serial {} arrived", event.serial);
                ensure!(event.data == "landed");
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => bail!("the landed event never reached the reader: {e}"),
        }
    }
}

/// A node on `redis` that waits for one replica, at most 200 ms, before it acknowledges.
async fn waiting_node(redis: &RedisServer) -> anyhow::Result<(MooringProcess, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let config = ServerConfig::new(env!("CARGO_BIN_EXE_mooring"), dir.path())
        .engine(&redis.url())
        .arg("--redis-wait-replicas")
        .arg("1")
        .arg("--redis-wait-timeout-ms")
        .arg("200");
    Ok((MooringProcess::start(config).await?, dir))
}

/// What `mooring serve` with `args` says on standard error as it refuses to start.
fn refusal_to_start(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mooring"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()?;
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        bail!("it started: {said}");
    }
    Ok(said)
}

#[test]
fn a_node_refuses_to_wait_for_replicas_on_a_cluster_or_without_redis() -> anyhow::Result<()> {
    let cluster = ["--engine", "redis-cluster://127.0.0.1:1"];
    let said = refusal_to_start(&[&cluster[..], &["--redis-wait-replicas", "1"]].concat())?;
    assert!(said.contains("not supported on Redis Cluster"), "{said}");
    let said = refusal_to_start(&["--engine", "memory", "--redis-wait-replicas", "1"])?;
    assert!(said.contains("needs the Redis engine"), "{said}");
    Ok(())
}
