//! Retention end to end (issue 9): a real `mooring serve` with `--retention-secs`, on the
//! embedded engine and on a real `redis-server`. Events older than the retention are trimmed
//! while the session goes on; a client resuming from before them is told `history_lost` and
//! given the view, then follows live with no gap; a Durable Streams read from before them is
//! answered `410 Gone`; the live readers never notice.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mooring_testkit::protocol::realtime::{AttachMode, ServerFrame};
use mooring_testkit::protocol::Position;
use mooring_testkit::redis::RedisServer;
use mooring_testkit::ws::{self, RealtimeClient};
use mooring_testkit::{MooringProcess, ServerConfig};

const PROMPT: Duration = Duration::from_secs(15);
/// The `mooring` binary cargo built for these tests.
const MOORING: &str = env!("CARGO_BIN_EXE_mooring");
const SESSION: &str = "chat:kept";
/// How long the old events may take to be trimmed: the retention (2 s), the step a trim waits
/// for (1 s), a sweep interval (1 s), and room for a busy machine.
const TRIM_DEADLINE: Duration = Duration::from_secs(20);

async fn start(engine: Option<&str>, dir: &tempfile::TempDir) -> anyhow::Result<MooringProcess> {
    let mut config = ServerConfig::new(MOORING, dir.path())
        .arg("--retention-secs")
        .arg("2")
        .arg("--dedupe-window-secs")
        .arg("1");
    if let Some(engine) = engine {
        config = config.engine(engine);
    }
    Ok(MooringProcess::start(config).await?)
}

/// Publishes a message; returns (epoch, serial).
async fn publish(agent: &mut RealtimeClient, text: &str) -> anyhow::Result<(u64, u64)> {
    match agent
        .publish(SESSION, vec![ws::create("response", text)], PROMPT)
        .await?
    {
        ServerFrame::Ack { epoch, results, .. } => Ok((epoch, results[0].serial)),
        other => bail!("publish answered {other:?}"),
    }
}

/// A client's copy of the session: its messages by serial, and its position.
struct Reader {
    client: RealtimeClient,
    epoch: u64,
    serial: u64,
    messages: Vec<(u64, String)>,
}

impl Reader {
    async fn connect(node: &MooringProcess, label: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: RealtimeClient::connect(&node.base_url(), label).await?,
            epoch: 0,
            serial: 0,
            messages: Vec::new(),
        })
    }

    /// Attaches from the position held, reads the catch-up up to `live`; returns the mode.
    async fn attach(&mut self) -> anyhow::Result<AttachMode> {
        let from = ws::from_position(self.epoch, self.serial);
        let attached = self
            .client
            .attach_and_catch_up(SESSION, from, PROMPT)
            .await?;
        if attached.mode != AttachMode::Replay {
            self.messages.clear();
        }
        (self.epoch, self.serial) = (attached.epoch, attached.serial);
        for event in &attached.events {
            self.hold(event.serial, &event.data)?;
        }
        Ok(attached.mode)
    }

    fn hold(&mut self, serial: u64, data: &serde_json::Value) -> anyhow::Result<()> {
        let text = data.as_str().unwrap_or_default().to_owned();
        if let Some(last) = self.messages.last() {
            ensure!(serial > last.0, "serial {serial} after {}", last.0);
        }
        self.messages.push((serial, text));
        Ok(())
    }

    /// Reads live events until it holds `serial`; each must follow the one before it.
    async fn until(&mut self, serial: u64) -> anyhow::Result<()> {
        while self.serial < serial {
            match self.client.recv_frame(PROMPT).await? {
                ServerFrame::Event { event, .. } => {
                    ensure!(
                        event.serial == self.serial + 1,
                        "event {} at {}: a gap or a duplicate",
                        event.serial,
                        self.serial
                    );
                    self.serial = event.serial;
                    self.hold(event.serial, &event.data)?;
                }
                ServerFrame::Detached { .. } | ServerFrame::Error { .. } => {
                    bail!("a live reader was cut off")
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

/// The status, error code and `Stream-Next-Offset` of a Durable Streams read of the session
/// after `offset`.
async fn read_status(
    node: &MooringProcess,
    offset: Position,
) -> anyhow::Result<(u16, String, String)> {
    let url = format!("{}/v1/stream/{SESSION}", node.base_url());
    let response = reqwest::Client::new()
        .get(&url)
        .query(&[("offset", offset.to_string())])
        .send()
        .await?;
    let status = response.status().as_u16();
    let next = response
        .headers()
        .get("stream-next-offset")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = response.bytes().await?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((status, code, next))
}

async fn old_events_are_trimmed_and_late_readers_resync(
    node: &MooringProcess,
) -> anyhow::Result<()> {
    let mut agent = RealtimeClient::connect(&node.base_url(), "agent").await?;
    let (epoch, _) = publish(&mut agent, "old 1").await?;
    let (_, old_tail) = publish(&mut agent, "old 2").await?;
    let mut live = Reader::connect(node, "live").await?;
    ensure!(live.attach().await? == AttachMode::Replay);
    ensure!(live.texts() == ["old 1", "old 2"], "{:?}", live.texts());
    let away = (live.epoch, live.serial);
    let old = Position { epoch, serial: 1 };
    ensure!(
        read_status(node, old).await?.0 == 200,
        "readable before the trim"
    );

    // The session goes on; the old events age past the retention and are trimmed.
    let started = Instant::now();
    let mut tick = 0;
    let trimmed_at = loop {
        ensure!(started.elapsed() < TRIM_DEADLINE, "nothing was trimmed");
        tick += 1;
        let (_, serial) = publish(&mut agent, &format!("tick {tick}")).await?;
        live.until(serial).await?;
        let (status, code, next) = read_status(node, old).await?;
        if status == 410 {
            ensure!(code == "OFFSET_TRIMMED", "code {code}");
            // Where the kept records start: a position of this life, after the old events.
            let start = Position::parse(&next).context("Stream-Next-Offset")?;
            ensure!(start.epoch == epoch && start.serial >= 2, "{next}");
            break serial;
        }
        ensure!(status == 200, "status {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // A client that was away resumes from before the trim: told, and given the view.
    let mut late = Reader::connect(node, "late").await?;
    (late.epoch, late.serial) = away;
    ensure!(late.attach().await? == AttachMode::HistoryLost);
    ensure!(late.epoch == epoch, "the life goes on");
    let view = late.texts();
    ensure!(
        !view.contains(&"old 1") && !view.contains(&"old 2"),
        "trimmed messages are not in the view: {view:?}"
    );
    ensure!(
        view.last() == Some(&format!("tick {tick}").as_str()),
        "the view ends with the last message: {view:?}"
    );
    ensure!(late.serial >= trimmed_at);
    // Both readers follow the next events from where they are, with no gap.
    let (_, next) = publish(&mut agent, "after the trim").await?;
    late.until(next).await?;
    live.until(next).await?;
    ensure!(late.texts().last() == Some(&"after the trim"));
    // The live reader never missed a thing: it holds everything since it attached.
    let expected: Vec<String> = ["old 1".to_owned(), "old 2".to_owned()]
        .into_iter()
        .chain((1..=tick).map(|i| format!("tick {i}")))
        .chain(["after the trim".to_owned()])
        .collect();
    ensure!(live.texts() == expected, "{:?}", live.texts());
    ensure!(old_tail < trimmed_at);
    rest_pages_cover_what_is_kept(node).await
}

/// REST history pages start after the trimmed events and refuse a position among them; SSE
/// from such a position says `history_lost` and sends the view.
async fn rest_pages_cover_what_is_kept(node: &MooringProcess) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/sessions/{SESSION}", node.base_url());
    let page = http.get(format!("{url}/history")).send().await?;
    ensure!(page.status() == 200, "history: {}", page.status());
    let page: serde_json::Value = serde_json::from_slice(&page.bytes().await?)?;
    let trimmed = page["trimmed"].as_u64().context("trimmed")?;
    ensure!(trimmed >= 2, "the old events were trimmed: {page}");
    ensure!(
        page["events"][0]["serial"].as_u64() == Some(trimmed + 1),
        "a page from the start begins after the trimmed events: {page}"
    );
    let refused = http.get(format!("{url}/history?after=1")).send().await?;
    ensure!(
        refused.status() == 410,
        "after a trimmed serial: {}",
        refused.status()
    );
    let body: serde_json::Value = serde_json::from_slice(&refused.bytes().await?)?;
    ensure!(body["error"]["code"] == "history_lost", "{body}");

    let mut sse = http
        .get(format!("{url}/events"))
        .header("Last-Event-ID", "1")
        .send()
        .await?;
    let mut text = String::new();
    while !text.contains("event: live") {
        let chunk = tokio::time::timeout(PROMPT, sse.chunk())
            .await
            .context("waiting for SSE")??
            .context("the SSE stream ended")?;
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    ensure!(text.starts_with("event: history_lost\n"), "{text}");
    ensure!(
        !text.contains("\"old 1\""),
        "the view holds no trimmed message: {text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_a_session_on_the_embedded_engine() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = start(None, &dir).await?;
    old_events_are_trimmed_and_late_readers_resync(&node)
        .await
        .with_context(|| node.output_tail())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_a_session_on_redis() -> anyhow::Result<()> {
    let redis = RedisServer::start().context("starting redis-server")?;
    let dir = tempfile::tempdir()?;
    let node = start(Some(&redis.url()), &dir).await?;
    old_events_are_trimmed_and_late_readers_resync(&node)
        .await
        .with_context(|| node.output_tail())
}
