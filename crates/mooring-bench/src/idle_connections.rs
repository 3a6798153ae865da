//! Idle connections: how much server memory each open, attached, quiet connection costs.
//!
//! Creates the sessions (one event each), reads the server's resident memory, opens C
//! connections (each says hello and attaches one session, spread over the sessions), lets the
//! server settle, and reads its memory again: (after − before) / C is the memory per
//! connection. Every connection answers the server's heartbeats throughout, as a live client
//! would, so none is dropped as dead.

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;
use tokio::sync::watch;

use crate::fleet::{self, Failures};
use crate::progress::Progress;
use crate::sysmon::{self, CpuSample, CpuUse};
use crate::ws::{self, Endpoint, Socket};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node.
    pub endpoint: Endpoint,
    /// Connections to open.
    pub connections: usize,
    /// Sessions they attach to.
    pub sessions: usize,
    /// Handshakes in flight while connecting.
    pub connect_parallel: usize,
    /// How long to wait, all open, before reading the server's memory.
    pub settle: Duration,
    /// The server's pid (required: its memory is the result).
    pub server_pid: u32,
    /// Sessions are named `{name_prefix}-{index}`.
    pub name_prefix: String,
    /// A name for the server under test.
    pub label: String,
    /// Show a progress bar.
    pub progress: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `idle-connections`.
    pub scenario: &'static str,
    /// The server under test.
    pub label: String,
    /// When the connections began to open (RFC 3339).
    pub started_at: String,
    /// Connections asked for.
    pub connections_asked: usize,
    /// Connections open and attached when memory was read.
    pub connections: usize,
    /// Sessions attached to.
    pub sessions: usize,
    /// Seconds it took to open and attach them all.
    pub connect_secs: f64,
    /// Server resident memory before, KiB.
    pub server_rss_before_kib: u64,
    /// Server resident memory with every connection open, KiB.
    pub server_rss_after_kib: u64,
    /// (after − before) / connections, bytes.
    pub bytes_per_connection: f64,
    /// This load generator's resident memory at the end, KiB (its side of the same sockets).
    pub generator_rss_kib: Option<u64>,
    /// Connections that failed to open or attach.
    pub errors: u64,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// CPU while the connections opened.
    pub cpu: CpuUse,
}

impl Report {
    /// A few lines for people.
    pub fn human(&self) -> String {
        format!(
            "idle-connections  {label}  {c} of {asked} connections over {s} sessions, opened in {secs:.1} s\n  \
             server rss {before} KiB -> {after} KiB: {per:.0} bytes ({kib:.1} KiB) per connection  errors {errors}",
            label = self.label,
            c = self.connections,
            asked = self.connections_asked,
            s = self.sessions,
            secs = self.connect_secs,
            before = self.server_rss_before_kib,
            after = self.server_rss_after_kib,
            per = self.bytes_per_connection,
            kib = self.bytes_per_connection / 1024.0,
            errors = self.errors,
        )
    }
}

/// Runs the scenario. Must be called inside a Tokio runtime.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    if config.connections == 0 || config.sessions == 0 {
        bail!("connections and sessions must each be at least 1");
    }
    let sessions: Vec<String> = (0..config.sessions)
        .map(|i| format!("{}-{i:05}", config.name_prefix))
        .collect();
    let mut writer = config
        .endpoint
        .connect(usize::MAX, Some("idle-setup"))
        .await?;
    for (i, session) in sessions.iter().enumerate() {
        let req = i as u64 + 1;
        ws::send(
            &mut writer,
            &fleet::publish(req, session, vec![fleet::plain_event("start", 0.into())]),
        )
        .await?;
        fleet::await_ack(&mut writer, req).await?;
    }
    drop(writer);
    // The setup connection's teardown and the first sessions' caches settle first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = sysmon::rss_kib(config.server_pid).context("reading the server's memory")?;

    let progress = Progress::new(Duration::from_secs(1), &config.label, config.progress);
    let (stop, stopped) = watch::channel(false);
    let sessions = std::sync::Arc::new(sessions);
    let started_at = chrono::Utc::now().to_rfc3339();
    let cpu_start = CpuSample::now(Some(config.server_pid))?;
    let opened_at = std::time::Instant::now();
    // Each connection is held (its heartbeats answered) from the moment it is attached: opening
    // tens of thousands takes longer than the server waits for a silent peer.
    let (holders, failures) = fleet::open_many(
        &config.endpoint,
        config.connections,
        config.connect_parallel,
        {
            let sessions = std::sync::Arc::clone(&sessions);
            let stopped = stopped.clone();
            move |index, mut ws: Socket| {
                let session = sessions[index % sessions.len()].clone();
                let stopped = stopped.clone();
                async move {
                    fleet::attach_until_live(&mut ws, &session, fleet::from_latest(), |_| {})
                        .await?;
                    Ok(tokio::spawn(hold(ws, stopped)))
                }
            }
        },
        |n| {
            if n % 500 == 0 || n == config.connections {
                progress.update(
                    Duration::ZERO,
                    format!("connections {n}/{}", config.connections),
                );
            }
        },
    )
    .await;
    let connect_secs = opened_at.elapsed().as_secs_f64();
    let cpu = cpu_start.until(&CpuSample::now(Some(config.server_pid))?);
    let open = holders.len();
    progress.update(Duration::ZERO, format!("{open} open; settling"));
    tokio::time::sleep(config.settle).await;
    let after = sysmon::rss_kib(config.server_pid).context("reading the server's memory")?;
    let generator_rss_kib = sysmon::rss_kib(std::process::id());
    let _ = stop.send(true);
    let mut dropped = 0u64;
    for holder in holders {
        if !matches!(holder.await, Ok(true)) {
            dropped += 1;
        }
    }
    progress.finish();
    let mut failures: Failures = failures;
    if dropped > 0 {
        failures.add(&anyhow::anyhow!("{dropped} connections closed while held"));
    }
    Ok(Report {
        scenario: "idle-connections",
        label: config.label,
        started_at,
        connections_asked: config.connections,
        connections: open,
        sessions: config.sessions,
        connect_secs,
        server_rss_before_kib: before,
        server_rss_after_kib: after,
        bytes_per_connection: (after.saturating_sub(before) as f64 * 1024.0) / open.max(1) as f64,
        generator_rss_kib,
        errors: failures.count,
        error_samples: failures.samples,
        cpu,
    })
}

/// Holds a connection open, answering heartbeats, until told to stop; false if it closed.
async fn hold(mut ws: Socket, mut stop: watch::Receiver<bool>) -> bool {
    loop {
        tokio::select! {
            _ = stop.changed() => return true,
            frame = ws::next_frame(&mut ws) => match frame {
                Ok(Some(frame)) if frame.kind == "ping" => {
                    if ws::send_pong(&mut ws, frame.nonce.unwrap_or(0)).await.is_err() {
                        return false;
                    }
                }
                Ok(Some(_)) => {}
                _ => return false,
            },
        }
    }
}
