//! Live delivery across nodes on one Redis (a real `redis-server`, real `mooring serve`
//! processes): a reader attached to one node receives what other nodes publish, live, in order,
//! with no gap and no duplicate; long-poll and SSE readers of the Durable Streams surface are
//! woken by appends through another node; a wake-up that never arrives is no gap; and live
//! delivery across nodes comes back by itself after Redis restarts.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mooring_testkit::protocol::realtime::{AttachFrom, AttachPoint, ServerFrame};
use mooring_testkit::protocol::session::{Action, Event, NewEvent};
use mooring_testkit::redis::RedisServer;
use mooring_testkit::ws::{self, RealtimeClient};
use mooring_testkit::{start_node, AppendOutcome, MooringProcess, StreamClient};

/// How long a live event may take to reach a reader on another node.
const PROMPT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The `mooring` binary cargo built for these tests.
const MOORING: &str = env!("CARGO_BIN_EXE_mooring");

/// A realtime reader of one session, checking that serials arrive contiguously.
struct Reader {
    label: &'static str,
    client: RealtimeClient,
    session: String,
    events: Vec<Event>,
}

impl Reader {
    /// Attaches to `session` from its start through `node`, and reads up to `live`.
    async fn attach(
        label: &'static str,
        node: &MooringProcess,
        session: &str,
    ) -> anyhow::Result<Self> {
        let mut client = RealtimeClient::connect(&node.base_url(), label).await?;
        let from = AttachFrom::Named(AttachPoint::Start);
        client.attach(session, Some(from)).await?;
        let mut reader = Self {
            label,
            client,
            session: session.to_owned(),
            events: Vec::new(),
        };
        loop {
            match reader.client.recv_frame(PROMPT).await? {
                ServerFrame::Event { event, .. } => reader.take(event)?,
                ServerFrame::Live { .. } => return Ok(reader),
                _ => {}
            }
        }
    }

    fn last(&self) -> u64 {
        self.events.last().map_or(0, |e| e.serial)
    }

    fn take(&mut self, event: Event) -> anyhow::Result<()> {
        let expected = self.last() + 1;
        ensure!(
            event.serial == expected,
            "{}: serial {} after {} (a gap, a duplicate or out of order)",
            self.label,
            event.serial,
            self.last()
        );
        self.events.push(event);
        Ok(())
    }

    /// Reads live events until serial `upto`, each within [`PROMPT`].
    async fn until(&mut self, upto: u64) -> anyhow::Result<()> {
        while self.last() < upto {
            let frame = self.client.recv_frame(PROMPT).await.with_context(|| {
                let label = self.label;
                format!("{label}: waiting for serial {upto}, at {}", self.last())
            })?;
            match frame {
                ServerFrame::Event { session, event, .. } if session == self.session => {
                    self.take(event)?;
                }
                ServerFrame::Detached { .. } | ServerFrame::Error { .. } => {
                    bail!("{}: {frame:?}", self.label)
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Fails if an event arrives within `wait`.
    async fn quiet_for(&mut self, wait: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.client.recv_frame(left).await {
                Ok(ServerFrame::Event { event, .. }) => {
                    bail!("{}: serial {} arrived early", self.label, event.serial)
                }
                Ok(_) => {}
                Err(ws::WsError::Timeout(_)) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The text of message `serial`: its create's data and its appends, as this reader saw them.
    fn text(&self, serial: u64) -> String {
        let mut text = String::new();
        for event in &self.events {
            let part = event.data.as_str().unwrap_or_default();
            match event.action {
                Action::MessageCreate if event.serial == serial => text.push_str(part),
                Action::MessageAppend if event.reference == Some(serial) => text.push_str(part),
                _ => {}
            }
        }
        text
    }
}

/// Publishes `events` and returns the serial of the last.
async fn publish(
    client: &mut RealtimeClient,
    session: &str,
    events: Vec<NewEvent>,
) -> anyhow::Result<u64> {
    match client.publish(session, events, REQUEST_TIMEOUT).await? {
        ServerFrame::Ack { results, .. } => results
            .last()
            .map(|r| r.serial)
            .context("an ack without results"),
        other => bail!("publish answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_on_other_nodes_receive_a_streamed_message_live_in_order() -> anyhow::Result<()> {
    let redis = RedisServer::start().context("starting redis-server")?;
    let (a, _da) = start_node(MOORING, &redis.url()).await?;
    let (b, _db) = start_node(MOORING, &redis.url()).await?;
    let (c, _dc) = start_node(MOORING, &redis.url()).await?;
    let session = "chat:fanout";
    let mut agent = RealtimeClient::connect(&a.base_url(), "agent").await?;
    let mut user = RealtimeClient::connect(&b.base_url(), "user").await?;
    let answer = publish(&mut agent, session, vec![ws::create("response", "Hel")]).await?;
    assert_eq!(answer, 1);

    // Attached on b (which also writes) and on c (which only reads).
    let mut on_b = Reader::attach("reader on b", &b, session).await?;
    let mut on_c = Reader::attach("reader on c", &c, session).await?;
    let mut text = "Hel".to_owned();
    for i in 0..30 {
        let serial = if i % 7 == 3 {
            let event = ws::app_event("typing", serde_json::json!({ "i": i }));
            publish(&mut user, session, vec![event]).await?
        } else {
            let part = format!("lo{i} ");
            text.push_str(&part);
            publish(&mut agent, session, vec![ws::append(answer, &part)]).await?
        };
        // Each event reaches both readers before the next is published: live, not at the end.
        on_b.until(serial).await?;
        on_c.until(serial).await?;
    }
    assert_eq!(on_b.text(answer), text, "the message as read on b");
    assert_eq!(on_c.text(answer), text, "the message as read on c");
    assert_eq!(on_b.events, on_c.events, "both readers saw the same log");

    // And what they saw live is the log itself.
    let fresh = Reader::attach("fresh reader on a", &a, session).await?;
    assert_eq!(fresh.events, on_c.events);
    Ok(())
}

/// Reads the body of a live SSE response until it holds `needle`.
async fn sse_until(mut response: reqwest::Response, needle: &str) -> anyhow::Result<String> {
    let mut seen = String::new();
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout(PROMPT, response.chunk())
            .await
            .with_context(|| format!("no SSE data within {PROMPT:?}; so far: {seen:?}"))??
            .context("the SSE response ended")?;
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_and_sse_readers_are_woken_by_an_append_through_another_node(
) -> anyhow::Result<()> {
    let redis = RedisServer::start().context("starting redis-server")?;
    let (a, _da) = start_node(MOORING, &redis.url()).await?;
    let (b, _db) = start_node(MOORING, &redis.url()).await?;
    let via_a = StreamClient::new(&a.base_url(), REQUEST_TIMEOUT)?;
    let via_b = StreamClient::new(&b.base_url(), REQUEST_TIMEOUT)?;
    via_a.create_json_stream("ds:live").await?;
    let first = via_a.append_json("ds:live", br#"{"n":1}"#.to_vec()).await;
    ensure!(
        matches!(first, AppendOutcome::Acknowledged { .. }),
        "{first:?}"
    );
    let tail = via_b.read_page("ds:live", "-1").await?.next_offset;

    // Both wait at the tail on b; the long-poll would otherwise wait 20 s.
    let http = reqwest::Client::new();
    let url = via_b.stream_url("ds:live");
    let long_poll = http
        .get(&url)
        .query(&[("offset", tail.as_str()), ("live", "long-poll")])
        .send();
    let long_poll = tokio::spawn(long_poll);
    let sse = http
        .get(&url)
        .query(&[("offset", tail.as_str()), ("live", "sse")])
        .send()
        .await?;
    ensure!(sse.status().is_success(), "sse answered {}", sse.status());
    let sse = tokio::spawn(sse_until(sse, r#"{"n":2}"#));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let appended = Instant::now();
    let second = via_a.append_json("ds:live", br#"{"n":2}"#.to_vec()).await;
    ensure!(
        matches!(second, AppendOutcome::Acknowledged { .. }),
        "{second:?}"
    );
    let answer = tokio::time::timeout(PROMPT, long_poll)
        .await
        .context("the long-poll on b was not woken")???;
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    assert_eq!(answer.text().await?, r#"[{"n":2}]"#);
    tokio::time::timeout(PROMPT, sse)
        .await
        .context("the SSE reader on b was not woken")???;
    assert!(appended.elapsed() < PROMPT);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_wake_up_is_no_gap_and_a_killed_subscriber_catches_up() -> anyhow::Result<()> {
    let redis = RedisServer::start().context("starting redis-server")?;
    // Node a writes as a user whose right to publish the test takes away: its commits still
    // land, but nobody is told.
    let user = [
        "ACL", "SETUSER", "quiet", "on", ">secret", "~*", "&*", "+@all",
    ];
    assert_eq!(redis.command(&user)?, "+OK");
    let quiet_url = redis.url().replace("redis://", "redis://quiet:secret@");
    let (a, _da) = start_node(MOORING, &quiet_url).await?;
    let (b, _db) = start_node(MOORING, &redis.url()).await?;
    let (c, _dc) = start_node(MOORING, &redis.url()).await?;
    let session = "chat:lost";
    let mut agent = RealtimeClient::connect(&a.base_url(), "agent").await?;
    let mut other = RealtimeClient::connect(&c.base_url(), "other").await?;
    let answer = publish(&mut agent, session, vec![ws::create("response", "")]).await?;
    let mut on_b = Reader::attach("reader on b", &b, session).await?;
    let serial = publish(&mut agent, session, vec![ws::append(answer, "heard ")]).await?;
    on_b.until(serial).await?;

    let revoke = ["ACL", "SETUSER", "quiet", "resetchannels"];
    assert_eq!(redis.command(&revoke)?, "+OK");
    let mut text = "heard ".to_owned();
    for i in 0..5 {
        let part = format!("unheard{i} ");
        text.push_str(&part);
        publish(&mut agent, session, vec![ws::append(answer, &part)]).await?;
    }
    // The wake-ups really are missing: b sends nothing of it.
    on_b.quiet_for(Duration::from_millis(500)).await?;
    // The next wake-up (a write through c) makes b read everything it missed, in order.
    let event = ws::app_event("ping", serde_json::json!(1));
    let serial = publish(&mut other, session, vec![event]).await?;
    on_b.until(serial).await?;
    assert_eq!(on_b.text(answer), text);

    // Every subscriber connection dies; a write right away may be published while b is not
    // listening. b subscribes again and reads what it may have missed.
    let killed = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"])?;
    ensure!(killed != ":0", "no subscriber was killed: {killed}");
    let event = ws::app_event("during", serde_json::json!(2));
    let serial = publish(&mut other, session, vec![event]).await?;
    on_b.until(serial).await?;
    let event = ws::app_event("after", serde_json::json!(3));
    let serial = publish(&mut other, session, vec![event]).await?;
    on_b.until(serial).await?;

    // b counted what it heard: wake-ups, and the losses it repaired.
    let metrics = reqwest::get(format!("{}/metrics", b.base_url()))
        .await?
        .text()
        .await?;
    for kind in ["moved", "lost"] {
        let line = format!("mooring_store_notices_total{{kind=\"{kind}\"}}");
        ensure!(
            metrics.contains(&line),
            "no {line} in b's metrics:\n{metrics}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_on_another_node_keep_receiving_after_redis_restarts() -> anyhow::Result<()> {
    let mut redis = RedisServer::start().context("starting redis-server")?;
    let (a, _da) = start_node(MOORING, &redis.url()).await?;
    let (b, _db) = start_node(MOORING, &redis.url()).await?;
    let session = "chat:restart";
    let mut agent = RealtimeClient::connect(&a.base_url(), "agent").await?;
    let answer = publish(&mut agent, session, vec![ws::create("response", "before ")]).await?;
    let mut on_b = Reader::attach("reader on b", &b, session).await?;

    // Killed and restarted from its append-only file: every connection of both nodes breaks.
    redis.crash_and_restart()?;
    let mut text = "before ".to_owned();
    for i in 0..3 {
        let part = format!("after{i} ");
        text.push_str(&part);
        let mut event = ws::append(answer, &part);
        // Retried while a's connection comes back; the id makes a retry land once.
        event.id = Some(format!("after-{i}"));
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let serial = loop {
            match agent
                .publish(session, vec![event.clone()], REQUEST_TIMEOUT)
                .await?
            {
                ServerFrame::Ack { results, .. } => break results[0].serial,
                ServerFrame::Error { error, .. } if error.retryable => {
                    ensure!(Instant::now() < deadline, "still failing: {error:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => bail!("publish answered {other:?}"),
            }
        };
        on_b.until(serial).await?;
    }
    assert_eq!(on_b.text(answer), text);
    Ok(())
}
