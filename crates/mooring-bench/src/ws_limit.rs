//! The physical reference for fan-out: how many small WebSocket frames a second one process
//! can push to local readers, with nothing else to do.
//!
//! The process listens on loopback and opens `readers` connections to itself (from several
//! source addresses, as fan-out does). Each accepted connection gets a writer task that sends
//! the same pre-encoded frame (an event of the size fan-out sends) over and over, `batch`
//! frames per flush; each reader counts what arrives. Frames a second is what the readers
//! received in the measured window over its length: the ceiling for a server that must also
//! decide what to send, and for the load generator that must also read it, on the same cores.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::progress::Progress;
use crate::sysmon::{CpuSample, CpuUse};
use crate::ws::CONNECTIONS_PER_SOURCE;

/// The frame pushed: a fan-out event of the usual shape.
const FRAME: &str = r#"{"type":"event","session":"bench-fanout","epoch":0,"serial":123456,"action":"event","name":"tick","client_id":"publisher","data":12345678,"ts":1764000000123}"#;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Reader connections.
    pub readers: usize,
    /// Frames written per flush.
    pub batch: usize,
    /// Measured window.
    pub duration: Duration,
    /// Pushing before the window, not counted.
    pub warmup: Duration,
    /// Show a progress bar.
    pub progress: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `ws-limit`.
    pub scenario: &'static str,
    /// When the window began (RFC 3339).
    pub started_at: String,
    /// Reader connections.
    pub readers: usize,
    /// Frames per flush.
    pub batch: usize,
    /// Bytes of each frame's payload.
    pub frame_bytes: usize,
    /// Measured window, seconds.
    pub duration_secs: f64,
    /// Frames received in the window.
    pub frames: u64,
    /// `frames` per second.
    pub frames_per_sec: f64,
    /// CPU during the window (this process is writer and reader both).
    pub cpu: CpuUse,
}

impl Report {
    /// A line for people.
    pub fn human(&self) -> String {
        format!(
            "ws-limit  {r} local readers, {b} frames per flush, {bytes} B frames, {d:.0} s\n  \
             {rate:.0} frames/s  (cpu: this process {gen} %, other {other} %)",
            r = self.readers,
            b = self.batch,
            bytes = self.frame_bytes,
            d = self.duration_secs,
            rate = self.frames_per_sec,
            gen = self.cpu.generator_cpu_percent,
            other = self.cpu.other_cpu_percent,
        )
    }
}

/// Runs the reference. Must be called inside a Tokio runtime.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    if config.readers == 0 || config.batch == 0 {
        bail!("readers and batch must each be at least 1");
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("listening on loopback")?;
    let addr = listener.local_addr().context("the listener's address")?;
    let stop = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicU64::new(0));
    let progress = Progress::new(config.warmup + config.duration, "ws-limit", config.progress);
    let mut pairs = Vec::with_capacity(config.readers);
    for index in 0..config.readers {
        let socket = tokio::net::TcpSocket::new_v4().context("creating a socket")?;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (index / CONNECTIONS_PER_SOURCE) as u8);
        crate::ws::bind_source(&socket, source.into())?;
        let (client, server) = tokio::join!(socket.connect(addr), listener.accept());
        let client = client.context("connecting to the local listener")?;
        let (server, _) = server.context("accepting")?;
        client.set_nodelay(true).context("setting TCP_NODELAY")?;
        server.set_nodelay(true).context("setting TCP_NODELAY")?;
        let config_ws = WebSocketConfig::default().read_buffer_size(4096);
        let url = format!("ws://{addr}/");
        let (client, server) = tokio::join!(
            tokio_tungstenite::client_async_with_config(url, client, Some(config_ws)),
            tokio_tungstenite::accept_async(server)
        );
        let (reader, _) = client.context("the client handshake")?;
        let writer = server.context("the server handshake")?;
        pairs.push((reader, writer));
        if index % 500 == 0 {
            progress.update(
                Duration::ZERO,
                format!("connections {index}/{}", config.readers),
            );
        }
    }

    let start = Instant::now();
    let window = (
        start + config.warmup,
        start + config.warmup + config.duration,
    );
    let mut writers = JoinSet::new();
    let mut readers = JoinSet::new();
    for (reader, writer) in pairs {
        writers.spawn(push(writer, config.batch, Arc::clone(&stop)));
        readers.spawn(count(reader, window, Arc::clone(&frames)));
    }
    tokio::time::sleep_until(window.0).await;
    let started_at = chrono::Utc::now().to_rfc3339();
    let cpu_start = CpuSample::now(None)?;
    while Instant::now() < window.1 {
        tokio::time::sleep(Duration::from_millis(250).min(window.1 - Instant::now())).await;
        progress.update(
            start.elapsed(),
            format!("{} frames", frames.load(Ordering::Relaxed)),
        );
    }
    let cpu = cpu_start.until(&CpuSample::now(None)?);
    // Stop the writers first: a reader that always finds a frame waiting must not be the only
    // thing that ends the run.
    stop.store(true, Ordering::Relaxed);
    let mut received = 0;
    while let Some(done) = readers.join_next().await {
        received += done.context("a reader task failed")?;
    }
    // Writers blocked on a full socket would wait for ever: they are stopped, not joined.
    writers.shutdown().await;
    progress.finish();
    let secs = config.duration.as_secs_f64();
    Ok(Report {
        scenario: "ws-limit",
        started_at,
        readers: config.readers,
        batch: config.batch,
        frame_bytes: FRAME.len(),
        duration_secs: secs,
        frames: received,
        frames_per_sec: received as f64 / secs,
        cpu,
    })
}

/// Writes the frame `batch` at a time until stopped.
async fn push<S>(mut ws: tokio_tungstenite::WebSocketStream<S>, batch: usize, stop: Arc<AtomicBool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = Message::text(FRAME);
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..batch {
            if ws.feed(frame.clone()).await.is_err() {
                return;
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// Counts the text frames received in the window; returns at its end.
async fn count<S>(
    mut ws: tokio_tungstenite::WebSocketStream<S>,
    window: (Instant, Instant),
    shown: Arc<AtomicU64>,
) -> u64
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut counted = 0u64;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(window.1, ws.next()).await {
        let now = Instant::now();
        // A timeout only fires while the read waits; a reader that never waits (frames always
        // queued, as in a debug build) ends here.
        if now >= window.1 {
            break;
        }
        if matches!(message, Message::Text(_)) && now >= window.0 {
            counted += 1;
            // The progress figure is shared in chunks: one counter touched per frame by every
            // task would slow what it measures.
            if counted % 1024 == 0 {
                shown.fetch_add(1024, Ordering::Relaxed);
            }
        }
    }
    counted
}
