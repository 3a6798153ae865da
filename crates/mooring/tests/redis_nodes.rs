//! Two nodes on one Redis (a real `redis-server`): either node serves every stream, writes
//! through both interleave into one log, and a node killed with SIGKILL takes nothing with it.

use std::time::Duration;

use anyhow::{bail, Context};
use mooring_testkit::redis::RedisServer;
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
