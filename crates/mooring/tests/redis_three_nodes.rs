//! Three `mooring` nodes on one real `redis-server`, each client behind a load balancer that
//! fails over to the next node. A writer streams one answer through node A; readers follow it
//! through B and C, and every client but the writer is in the session's presence. Node C is
//! SIGKILLed mid-stream.
//!
//! What must hold:
//! - every reader, including those whose node died and who resumed through another, receives
//!   every serial once, in order, and ends with exactly the writer's text (0 lost, 0
//!   duplicated, 0 reordered);
//! - the readers that came back through another node within the presence grace never leave
//!   (watchers on A and B see updates, not leaves);
//! - a member that cannot come back (its balancer knows only C) leaves, as seen from A and B,
//!   within the documented bound: node expiry + one beat (expiry / 5) + presence grace, plus
//!   [`SLACK`] for delivery and scheduling; and not before the grace.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mooring_client::{
    Action, Client, ClientOptions, Member, PresenceAction, ReconnectPolicy, Role, SessionItem,
    StartAt, Subscription,
};
use mooring_testkit::balancer::Balancer;
use mooring_testkit::redis::RedisServer;
use mooring_testkit::{MooringProcess, ServerConfig};
use tempfile::TempDir;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const SESSION: &str = "chat:three";
const GRACE_MS: u64 = 1_000;
const NODE_EXPIRY_MS: u64 = 1_000;
/// Nodes beat five times per expiry.
const BEAT_MS: u64 = NODE_EXPIRY_MS / 5;
/// Delivery of the leave and scheduling on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(1_500);
const APPENDS: usize = 300;
/// The node dies after this many acknowledged appends.
const KILL_AFTER: usize = 100;
const PROMPT: Duration = Duration::from_secs(20);

async fn node(redis: &RedisServer) -> anyhow::Result<(MooringProcess, TempDir)> {
    let dir = tempfile::tempdir()?;
    let config = ServerConfig::new(env!("CARGO_BIN_EXE_mooring"), dir.path())
        .engine(&redis.url())
        .arg("--presence-grace-ms")
        .arg(&GRACE_MS.to_string())
        .arg("--node-expiry-ms")
        .arg(&NODE_EXPIRY_MS.to_string())
        .arg("--heartbeat-ms")
        .arg("500");
    let process = MooringProcess::start(config)
        .await
        .context("starting a node")?;
    Ok((process, dir))
}

fn addr(node: &MooringProcess) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], node.port()))
}

/// Three nodes on one Redis, and the balancers clients reach them through: through A (or B
/// if A is gone), through B (or A), through C (or A, or B), and through C alone.
struct Three {
    _redis: RedisServer,
    _nodes: [(MooringProcess, TempDir); 2],
    c: MooringProcess,
    _c_dir: TempDir,
    via_a: Balancer,
    via_b: Balancer,
    via_c: Balancer,
    only_c: Balancer,
}

impl Three {
    async fn start() -> anyhow::Result<Self> {
        let redis = RedisServer::start().context("starting redis-server")?;
        let a = node(&redis).await?;
        let b = node(&redis).await?;
        let (c, c_dir) = node(&redis).await?;
        let (pa, pb, pc) = (addr(&a.0), addr(&b.0), addr(&c));
        Ok(Self {
            via_a: Balancer::start(vec![pa, pb]).await?,
            via_b: Balancer::start(vec![pb, pa]).await?,
            via_c: Balancer::start(vec![pc, pa, pb]).await?,
            only_c: Balancer::start(vec![pc]).await?,
            _redis: redis,
            _nodes: [a, b],
            c,
            _c_dir: c_dir,
        })
    }
}

async fn client(id: &str, through: &Balancer) -> anyhow::Result<Client> {
    let mut options = ClientOptions::new(through.ws_url()).client_id(id);
    options.reconnect = ReconnectPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(300),
        jitter: false,
        max_attempts: None,
    };
    Client::connect(options)
        .await
        .with_context(|| format!("connecting {id}"))
}

/// What one attached client saw, in order: events, and presence changes with when they came.
#[derive(Debug, Default)]
struct Seen {
    serials: Vec<u64>,
    text: String,
    changes: Vec<(Instant, PresenceAction, String)>,
    members: Vec<Member>,
}

/// Collects a subscription's items until it has seen serial `upto` and the time is past
/// `not_before`, both given later through `last`.
fn follow(
    label: &'static str,
    mut sub: Subscription,
    mut last: mpsc::Receiver<(u64, Instant)>,
) -> JoinHandle<anyhow::Result<Seen>> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut until: Option<(u64, Instant)> = None;
        loop {
            if let Some((upto, not_before)) = until {
                if seen.serials.last().copied().unwrap_or(0) >= upto && Instant::now() >= not_before
                {
                    seen.members = sub.members();
                    return Ok(seen);
                }
            }
            let item = tokio::select! {
                item = tokio::time::timeout(Duration::from_millis(100), sub.next()) => match item {
                    Ok(item) => item,
                    Err(_) => continue,
                },
                given = last.recv(), if until.is_none() => {
                    until = given;
                    continue;
                }
            };
            match item {
                Some(SessionItem::Event(event)) => {
                    let expected = seen.serials.last().copied().unwrap_or(0) + 1;
                    ensure!(
                        event.serial == expected,
                        "{label}: serial {} after {} (a gap, a duplicate or out of order)",
                        event.serial,
                        expected - 1
                    );
                    seen.serials.push(event.serial);
                    if matches!(event.action, Action::MessageCreate | Action::MessageAppend) {
                        seen.text.push_str(event.data.as_str().unwrap_or_default());
                    }
                }
                Some(SessionItem::Presence { action, member }) => {
                    seen.changes
                        .push((Instant::now(), action, member.client_id));
                }
                Some(SessionItem::Reset(reason)) => bail!("{label}: reset ({reason:?})"),
                Some(SessionItem::Ended(reason)) => {
                    bail!("{label}: the subscription ended ({reason:?})")
                }
                None => bail!("{label}: the subscription ended"),
                _ => {}
            }
        }
    })
}

/// Waits until the session's members, as `client` asks for them, are exactly `expected`.
async fn members_become(client: &Client, expected: &[&str]) -> anyhow::Result<()> {
    let want: BTreeSet<&str> = expected.iter().copied().collect();
    let since = Instant::now();
    loop {
        let members = client.presence_get(SESSION).await?;
        let have: BTreeSet<&str> = members.iter().map(|m| m.client_id.as_str()).collect();
        if have == want {
            return Ok(());
        }
        if since.elapsed() > PROMPT {
            bail!("members are {have:?}, not {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_stream_loses_nothing_and_its_members_leave_within_the_bound(
) -> anyhow::Result<()> {
    let mut three = Three::start().await?;

    let writer = client("writer", &three.via_a).await?;
    let message = writer.create_message(SESSION, "answer", "").await?;

    // Readers through B and C, all in presence; watchers through A and B.
    let mut followers = Vec::new();
    let mut clients = Vec::new();
    for (id, through) in [
        ("reader-b", &three.via_b),
        ("reader-c1", &three.via_c),
        ("reader-c2", &three.via_c),
        ("watcher-a", &three.via_a),
        ("watcher-b", &three.via_b),
    ] {
        let client = client(id, through).await?;
        let sub = client.attach(SESSION, StartAt::Beginning).await?;
        if id.starts_with("reader") {
            client
                .enter(SESSION, Role::User, "tab", serde_json::Value::Null)
                .await?;
        }
        let (tell, told) = mpsc::channel(1);
        followers.push((id, tell, follow(id, sub, told)));
        clients.push(client);
    }
    let lonely = client("lonely", &three.only_c).await?;
    lonely
        .enter(SESSION, Role::Agent, "proc", serde_json::Value::Null)
        .await?;
    let everyone = ["reader-b", "reader-c1", "reader-c2", "lonely"];
    members_become(&clients[3], &everyone)
        .await
        .context("watcher-a")?;
    members_become(&clients[4], &everyone)
        .await
        .context("watcher-b")?;

    let mut expected = String::new();
    let mut last = message;
    let mut killed_at = None;
    for i in 0..APPENDS {
        let token = format!("t{i} ");
        last = writer.append(SESSION, message, token.clone()).await?;
        expected.push_str(&token);
        if i + 1 == KILL_AFTER {
            three.c.kill()?;
            killed_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = killed_at.context("the node was killed")?;
    let bound = Duration::from_millis(NODE_EXPIRY_MS + BEAT_MS + GRACE_MS);
    let linger_until = killed_at + bound + SLACK;

    for (_, tell, _) in &followers {
        tell.send((last, linger_until)).await?;
    }
    for (id, _, follower) in followers {
        let seen = follower.await??;
        ensure!(
            seen.serials.len() as u64 == last,
            "{id} saw {} serials of {last}",
            seen.serials.len()
        );
        ensure!(seen.text == expected, "{id} folded another text");
        if !id.starts_with("watcher") {
            continue;
        }
        // Presence as this watcher saw it after the kill.
        let after: Vec<_> = seen
            .changes
            .iter()
            .filter(|(at, _, _)| *at >= killed_at)
            .collect();
        for (_, action, who) in &after {
            ensure!(
                !(*action == PresenceAction::Leave && who.starts_with("reader")),
                "{id} saw {who} leave, though it came back within the grace: {after:?}"
            );
        }
        let left = after
            .iter()
            .find(|(_, action, who)| *action == PresenceAction::Leave && who == "lonely")
            .with_context(|| format!("{id} never saw the dead node's member leave: {after:?}"))?;
        let took = left.0 - killed_at;
        println!("{id}: the dead node's member left {took:?} after the kill (bound {bound:?})");
        ensure!(
            took <= bound + SLACK,
            "{id}: the member left {took:?} after the kill, past {bound:?} + {SLACK:?}"
        );
        ensure!(
            took >= Duration::from_millis(GRACE_MS),
            "{id}: the member left {took:?} after the kill, before the grace"
        );
        let mut now: Vec<&str> = seen.members.iter().map(|m| m.client_id.as_str()).collect();
        now.sort_unstable();
        ensure!(
            now == ["reader-b", "reader-c1", "reader-c2"],
            "{id} ends with members {now:?}"
        );
    }
    drop(lonely);
    Ok(())
}

/// The `run.end`s of `session` in its log, as (run id, status), read through `via`.
async fn run_ends(via: &Balancer, session: &str) -> anyhow::Result<Vec<(String, String)>> {
    let reader = client("auditor", via).await?;
    let mut sub = reader.attach(session, StartAt::Beginning).await?;
    let mut ends = Vec::new();
    loop {
        match tokio::time::timeout(PROMPT, sub.next()).await? {
            Some(SessionItem::Event(event)) if event.action == Action::RunEnd => {
                let field = |name: &str| event.data[name].as_str().unwrap_or_default().to_owned();
                ends.push((field("run_id"), field("status")));
            }
            Some(SessionItem::Live { .. }) => break,
            Some(SessionItem::Ended(reason)) => bail!("the audit ended: {reason:?}"),
            None => bail!("the audit ended"),
            _ => {}
        }
    }
    reader.close().await;
    Ok(ends)
}

/// Waits for `run_id`'s `run.end` on `sub`; answers its status and when it came.
async fn run_end_of(sub: &mut Subscription, run_id: &str) -> anyhow::Result<(String, Instant)> {
    loop {
        match tokio::time::timeout(PROMPT, sub.next()).await? {
            Some(SessionItem::Event(event))
                if event.action == Action::RunEnd && event.data["run_id"] == run_id =>
            {
                let status = event.data["status"].as_str().unwrap_or_default();
                return Ok((status.to_owned(), Instant::now()));
            }
            Some(SessionItem::Ended(reason)) => bail!("the watch ended: {reason:?}"),
            None => bail!("the watch ended"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_follow_their_agent_to_another_node_and_end_agent_lost_when_it_cannot_follow(
) -> anyhow::Result<()> {
    let mut three = Three::start().await?;

    // Watchers of the watched session on A and B; the cold session has none.
    let (watch_a, watch_b) = (
        client("watch-a", &three.via_a).await?,
        client("watch-b", &three.via_b).await?,
    );
    let mut on_a = watch_a.attach(SESSION, StartAt::Beginning).await?;
    let mut on_b = watch_b.attach(SESSION, StartAt::Beginning).await?;

    // Three agents connected through C: one can fail over to A, two cannot.
    let mover = client("mover", &three.via_c).await?;
    let stranded = client("stranded", &three.only_c).await?;
    let cold = client("cold", &three.only_c).await?;
    let mut moving = mover.start_run(SESSION, "r-moves", None).await?;
    moving.create_answer("answer").await?;
    moving.append("before ").await?;
    let _stuck = stranded.start_run(SESSION, "r-stranded", None).await?;
    let _cold = cold.start_run("chat:cold", "r-cold", None).await?;

    three.c.kill()?;
    let killed_at = Instant::now();
    // The mover's client reconnects through A and carries on, well within the grace.
    moving
        .append("after ")
        .await
        .context("the mover appends through A")?;
    let (status, ended_at) = run_end_of(&mut on_a, "r-stranded").await?;
    ensure!(status == "agent_lost", "the stranded run ended {status}");
    let took = ended_at - killed_at;
    let bound = Duration::from_millis(NODE_EXPIRY_MS + BEAT_MS + GRACE_MS);
    println!("the stranded run ended agent_lost {took:?} after the kill (bound {bound:?})");
    ensure!(
        took <= bound + SLACK && took >= Duration::from_millis(GRACE_MS),
        "the stranded run ended {took:?} after the kill, outside [{GRACE_MS} ms, {bound:?} + {SLACK:?}]"
    );
    let (status, _) = run_end_of(&mut on_b, "r-stranded").await?;
    ensure!(
        status == "agent_lost",
        "B saw the stranded run end {status}"
    );

    // The mover ends its own run, past the time the stranded one was ended.
    moving
        .end(mooring_client::RunStatus::Completed, None)
        .await
        .context("the mover ends its run through A")?;
    let (status, _) = run_end_of(&mut on_b, "r-moves").await?;
    ensure!(
        status == "completed",
        "the mover's run ended {status}, not by its agent"
    );

    let mut ends = run_ends(&three.via_a, SESSION).await?;
    ends.sort();
    ensure!(
        ends == [
            ("r-moves".to_owned(), "completed".to_owned()),
            ("r-stranded".to_owned(), "agent_lost".to_owned()),
        ],
        "each run ends once, the moved one by its agent: {ends:?}"
    );
    // Nobody watched the cold session; it ends all the same.
    let since = Instant::now();
    loop {
        let ends = run_ends(&three.via_b, "chat:cold").await?;
        if ends == [("r-cold".to_owned(), "agent_lost".to_owned())] {
            break;
        }
        ensure!(ends.is_empty(), "the cold run ended {ends:?}");
        ensure!(since.elapsed() < PROMPT, "the cold run never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
