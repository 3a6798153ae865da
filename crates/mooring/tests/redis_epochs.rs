//! A Redis that lost its data (restarted without persistence) is a new life of every session
//! (issue 9): real `redis-server`, real `mooring serve` nodes. A client attached through
//! either node is told (`detached`, `history_lost`), never carried silently into the new
//! life, and ends with exactly the new life's view; a client resuming later from an old
//! position is answered `history_lost`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mooring_testkit::protocol::realtime::{AttachMode, ErrorCode, ServerFrame};
use mooring_testkit::protocol::session::NewEvent;
use mooring_testkit::redis::RedisServer;
use mooring_testkit::ws::{self, RealtimeClient};
use mooring_testkit::{start_node, MooringProcess};

const PROMPT: Duration = Duration::from_secs(15);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The `mooring` binary cargo built for these tests.
const MOORING: &str = env!("CARGO_BIN_EXE_mooring");

/// Publishes one event, retrying while the node's Redis connection comes back (the id makes
/// a retry land once); returns (epoch, serial).
async fn publish(
    client: &mut RealtimeClient,
    session: &str,
    event: NewEvent,
) -> anyhow::Result<(u64, u64)> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        match client
            .publish(session, vec![event.clone()], REQUEST_TIMEOUT)
            .await?
        {
            ServerFrame::Ack { epoch, results, .. } => return Ok((epoch, results[0].serial)),
            ServerFrame::Error { error, .. } if error.retryable => {
                ensure!(Instant::now() < deadline, "still failing: {error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => bail!("publish answered {other:?}"),
        }
    }
}

/// Publishes messages `<prefix> 1` to `<prefix> n` (ids `<prefix>-<i>`); returns the last's
/// (epoch, serial).
async fn publish_numbered(
    client: &mut RealtimeClient,
    session: &str,
    prefix: &str,
    n: usize,
) -> anyhow::Result<(u64, u64)> {
    let mut last = (0, 0);
    for i in 1..=n {
        let event = message(&format!("{prefix}-{i}"), &format!("{prefix} {i}"));
        last = publish(client, session, event).await?;
    }
    Ok(last)
}

/// Clients that were away resume from `old` through each node: each is told `history_lost`
/// and given the new life's view, `new` and `texts`.
async fn late_resumes_are_told(
    nodes: [&MooringProcess; 2],
    session: &str,
    old: (u64, u64),
    new: (u64, u64),
    texts: &[&str],
) -> anyhow::Result<()> {
    for (label, node) in ["late on a", "late on b"].into_iter().zip(nodes) {
        let mut late = Reader::connect(label, node, session).await?;
        (late.epoch, late.serial) = old;
        let mode = late.attach().await?;
        ensure!(mode == AttachMode::HistoryLost, "{label}: {mode:?}");
        ensure!((late.epoch, late.serial) == new, "{label}");
        ensure!(late.texts() == texts, "{label}: {:?}", late.texts());
    }
    Ok(())
}

fn message(id: &str, text: &str) -> NewEvent {
    let mut event = ws::create("response", text);
    event.id = Some(id.to_owned());
    event
}

/// A reader that keeps what a client keeps: the session's messages by serial, its position.
struct Reader {
    label: &'static str,
    client: RealtimeClient,
    session: String,
    epoch: u64,
    serial: u64,
    /// (serial, text) of every message held, in serial order.
    messages: Vec<(u64, String)>,
    /// `history_lost` signals received (a `detached` or an `attached` mode).
    told_lost: u32,
}

impl Reader {
    async fn connect(
        label: &'static str,
        node: &MooringProcess,
        session: &str,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            label,
            client: RealtimeClient::connect(&node.base_url(), label).await?,
            session: session.to_owned(),
            epoch: 0,
            serial: 0,
            messages: Vec::new(),
            told_lost: 0,
        })
    }

    /// Attaches from the position held and reads up to `live`.
    async fn attach(&mut self) -> anyhow::Result<AttachMode> {
        let from = ws::from_position(self.epoch, self.serial);
        let attached = self
            .client
            .attach_and_catch_up(&self.session, from, PROMPT)
            .await
            .with_context(|| self.label)?;
        if attached.mode != AttachMode::Replay {
            // A view replaces what the client holds.
            self.messages.clear();
        }
        if attached.mode == AttachMode::HistoryLost {
            self.told_lost += 1;
        }
        (self.epoch, self.serial) = (attached.epoch, attached.serial);
        for event in attached.events {
            let text = event.data.as_str().unwrap_or_default().to_owned();
            self.messages.push((event.serial, text));
        }
        Ok(attached.mode)
    }

    /// Reads live frames until the reader holds message `serial` of life `epoch`; a
    /// `detached` with `history_lost` is followed by an attach from the position held.
    async fn until(&mut self, epoch: u64, serial: u64) -> anyhow::Result<()> {
        while !(self.epoch == epoch && self.serial >= serial) {
            let frame = self.client.recv_frame(PROMPT).await.with_context(|| {
                format!(
                    "{}: waiting for {epoch}/{serial}, at {}/{}",
                    self.label, self.epoch, self.serial
                )
            })?;
            match frame {
                ServerFrame::Event {
                    epoch: e, event, ..
                } => {
                    // Serial 0 holds nothing: the first life shown is the one followed.
                    if self.serial == 0 {
                        self.epoch = e;
                    }
                    ensure!(
                        e == self.epoch && event.serial == self.serial + 1,
                        "{}: event {e}/{} at {}/{}: silently carried into another life, or a gap",
                        self.label,
                        event.serial,
                        self.epoch,
                        self.serial
                    );
                    self.serial = event.serial;
                    let text = event.data.as_str().unwrap_or_default().to_owned();
                    self.messages.push((event.serial, text));
                }
                ServerFrame::Detached {
                    error: Some(error), ..
                } if error.code == ErrorCode::HistoryLost && error.retryable => {
                    self.told_lost += 1;
                    self.attach().await?;
                }
                ServerFrame::Detached { .. } | ServerFrame::Error { .. } => {
                    bail!("{}: {frame:?}", self.label)
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn texts(&self) -> Vec<&str> {
        self.messages.iter().map(|(_, t)| t.as_str()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_told_when_redis_loses_a_session_and_end_with_the_new_life(
) -> anyhow::Result<()> {
    let mut redis = RedisServer::start().context("starting redis-server")?;
    let (a, _da) = start_node(MOORING, &redis.url()).await?;
    let (b, _db) = start_node(MOORING, &redis.url()).await?;
    let session = "chat:lost";
    let mut agent = RealtimeClient::connect(&a.base_url(), "agent").await?;
    let old = publish_numbered(&mut agent, session, "old", 3).await?;
    // One reader on the writer's node, one on another node.
    let mut on_a = Reader::connect("reader on a", &a, session).await?;
    let mut on_b = Reader::connect("reader on b", &b, session).await?;
    for reader in [&mut on_a, &mut on_b] {
        reader.attach().await?;
        assert_eq!(
            reader.texts(),
            ["old 1", "old 2", "old 3"],
            "{}",
            reader.label
        );
        assert_eq!((reader.epoch, reader.serial), old);
    }

    redis.lose_everything_and_restart()?;
    ensure!(redis.keys()?.is_empty(), "redis kept keys");
    let new = publish_numbered(&mut agent, session, "new", 2).await?;
    assert_ne!(
        new.0, old.0,
        "the session's new life has an epoch of its own"
    );
    assert_eq!(new.1, 2);

    for reader in [&mut on_a, &mut on_b] {
        reader.until(new.0, new.1).await?;
        assert!(
            reader.told_lost >= 1,
            "{}: never told the history was lost",
            reader.label
        );
        assert_eq!(reader.texts(), ["new 1", "new 2"], "{}", reader.label);
    }

    // A client that was away resumes from its old position: history_lost and the new view.
    late_resumes_are_told([&a, &b], session, old, new, &["new 1", "new 2"]).await?;
    Ok(())
}

/// A Redis that went back in time (a failover to a replica that lacked the last writes): the
/// session keeps its earlier records but lost its end, and its serials are given out again.
/// The node that writes next notices and starts a new life, so nobody resumes from a position
/// of the old one into serials that now hold other events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_the_last_writes_starts_a_new_life_and_nobody_resumes_into_it(
) -> anyhow::Result<()> {
    let mut redis = RedisServer::start().context("starting redis-server")?;
    let (a, _da) = start_node(MOORING, &redis.url()).await?;
    let (b, _db) = start_node(MOORING, &redis.url()).await?;
    let session = "chat:stale";
    let mut agent = RealtimeClient::connect(&a.base_url(), "agent").await?;
    publish_numbered(&mut agent, session, "kept", 3).await?;
    let copy = redis.keep_copy()?;
    let old = publish_numbered(&mut agent, session, "lost", 4).await?;
    assert_eq!(old.1, 7);
    let mut on_b = Reader::connect("reader on b", &b, session).await?;
    on_b.attach().await?;
    assert_eq!((on_b.epoch, on_b.serial), old);

    redis.restart_from(&copy)?;
    // The writer goes on: its next events take serials 4, 5, ... again. Enough of them to pass
    // the old tail, where a resume from the old position would be taken for good.
    let new = publish_numbered(&mut agent, session, "new", 6).await?;
    ensure!(
        new.0 != old.0,
        "the serials were given out again in the same life: {new:?}"
    );
    assert_eq!(new.1, 9, "the kept records stay, under the new life");

    let expected = [
        "kept 1", "kept 2", "kept 3", "new 1", "new 2", "new 3", "new 4", "new 5", "new 6",
    ];
    on_b.until(new.0, new.1).await?;
    ensure!(on_b.told_lost >= 1, "the reader on b was never told");
    assert_eq!(on_b.texts(), expected);

    // A client that saw the lost events resumes from past them: told, and given the new view.
    late_resumes_are_told([&a, &b], session, old, new, &expected).await?;
    Ok(())
}
