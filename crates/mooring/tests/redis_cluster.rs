//! Two `mooring` nodes on a real Redis Cluster of three primaries (`redis-cluster://`).
//!
//! Sessions whose keys live on each of the three primaries are written through one node and
//! followed live through the other: every event arrives once, in order, and folds into the
//! writer's text; Durable Streams appends through one node are read through the other; and a
//! member entering through one node is a member on the other (presence across nodes, whose
//! keys live on other slots than the sessions').

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use mooring_client::{
    Action, Client, ClientOptions, PresenceAction, Role, SessionItem, StartAt, Subscription,
};
use mooring_testkit::redis_cluster::RedisCluster;
use mooring_testkit::{start_node, AppendOutcome, MooringProcess, StreamClient};

const MOORING: &str = env!("CARGO_BIN_EXE_mooring");
const PROMPT: Duration = Duration::from_secs(15);
const SESSIONS: usize = 9;
const APPENDS: usize = 20;

async fn client(id: &str, node: &MooringProcess) -> anyhow::Result<Client> {
    let url = format!("ws://127.0.0.1:{}/v1/ws", node.port());
    Client::connect(ClientOptions::new(url).client_id(id))
        .await
        .with_context(|| format!("connecting {id}"))
}

/// Reads `sub` until serial `last`, checking that serials come once and in order; returns
/// the text of the message events.
async fn follow(sub: &mut Subscription, last: u64) -> anyhow::Result<String> {
    let (mut at, mut text) = (0, String::new());
    while at < last {
        match tokio::time::timeout(PROMPT, sub.next()).await? {
            Some(SessionItem::Event(event)) => {
                ensure!(event.serial == at + 1, "serial {} after {at}", event.serial);
                at = event.serial;
                if matches!(event.action, Action::MessageCreate | Action::MessageAppend) {
                    text.push_str(event.data.as_str().unwrap_or_default());
                }
            }
            Some(SessionItem::Ended(reason)) => bail!("the subscription ended: {reason:?}"),
            None => bail!("the subscription ended"),
            _ => {}
        }
    }
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_every_primary_are_served_by_both_nodes() -> anyhow::Result<()> {
    let cluster = RedisCluster::start().context("starting a Redis Cluster")?;
    let (a, _da) = start_node(MOORING, &cluster.url()).await?;
    let (b, _db) = start_node(MOORING, &cluster.url()).await?;

    let names: Vec<String> = (0..SESSIONS).map(|i| format!("chat:c{i}")).collect();
    let mut primaries = BTreeSet::new();
    for name in &names {
        primaries.insert(cluster.primary_of(&format!("mooring:{{{name}}}:s"))?);
    }
    ensure!(
        primaries.len() == 3,
        "the sessions should span the three primaries, not {primaries:?}"
    );

    let writer = client("writer", &a).await?;
    let reader = client("reader", &b).await?;
    for name in &names {
        let mut sub = reader.attach(name.as_str(), StartAt::Beginning).await?;
        let message = writer.create_message(name.as_str(), "answer", "").await?;
        let mut expected = String::new();
        let mut last = message;
        for i in 0..APPENDS {
            let token = format!("{name}-{i} ");
            last = writer.append(name.as_str(), message, token.clone()).await?;
            expected.push_str(&token);
        }
        let seen = follow(&mut sub, last).await.with_context(|| name.clone())?;
        ensure!(seen == expected, "{name}: the reader folded {seen:?}");
    }

    // Durable Streams through both nodes, on streams of every primary.
    let (via_a, via_b) = (
        StreamClient::new(&a.base_url(), PROMPT)?,
        StreamClient::new(&b.base_url(), PROMPT)?,
    );
    for i in 0..SESSIONS {
        let stream = format!("ds-{i}");
        via_b.create_json_stream(&stream).await?;
        for n in 0..5 {
            let body = format!("{{\"n\":{n}}}").into_bytes();
            match via_b.append_json(&stream, body).await {
                AppendOutcome::Acknowledged { .. } => {}
                other => bail!("{stream}: append {n} was not acknowledged: {other:?}"),
            }
        }
        let read = via_a.read_all(&stream).await?;
        let expected: Vec<Vec<u8>> = (0..5)
            .map(|n| format!("{{\"n\":{n}}}").into_bytes())
            .collect();
        ensure!(read == expected, "{stream}: read {read:?} through a");
    }

    // What one script cannot do on a Cluster is refused as such, not as an outage to retry.
    let http = reqwest::Client::new();
    let fork = http
        .put(via_a.stream_url("a-fork"))
        .header("Content-Type", "application/json")
        .header("Stream-Forked-From", "/v1/stream/ds-0")
        .send()
        .await?;
    ensure!(
        fork.status() == 501,
        "a fork on a Cluster answered {}",
        fork.status()
    );
    let body = fork.text().await?;
    ensure!(body.contains("NOT_SUPPORTED"), "{body}");
    let ttl = http
        .put(via_a.stream_url("a-ttl"))
        .header("Content-Type", "text/plain")
        .header("Stream-TTL", "60")
        .send()
        .await?;
    ensure!(
        ttl.status() == 501,
        "a stream with a TTL answered {}",
        ttl.status()
    );

    // Presence across the nodes.
    let mut watch = reader.attach("chat:room", StartAt::Latest).await?;
    let guest = client("guest", &a).await?;
    guest
        .enter("chat:room", Role::User, "tab", serde_json::Value::Null)
        .await?;
    loop {
        match tokio::time::timeout(PROMPT, watch.next()).await? {
            Some(SessionItem::Presence { action, member }) => {
                ensure!(action == PresenceAction::Enter, "{action:?} of {member:?}");
                ensure!(member.client_id == "guest");
                break;
            }
            Some(SessionItem::Ended(reason)) => bail!("the watch ended: {reason:?}"),
            None => bail!("the watch ended"),
            _ => {}
        }
    }
    Ok(())
}
