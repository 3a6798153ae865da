//! Fan-out: one publisher, many WebSocket subscribers of one session; deliveries a second.
//!
//! The publisher sends events at a fixed rate (never waiting for acknowledgements, which it
//! reads as they come); every subscriber counts the events it receives. Deliveries a second is
//! what all subscribers received in the measured window over its length. Subscribers count
//! frames without decoding them, except one in [`LATENCY_SAMPLE`], which decodes every event
//! for its publish-to-read latency (the event's data is the send time) and serial order.
//!
//! This file is the measuring half (the window, the subscribers' read loop, the totals), which
//! knows the wire only through [`Wire`]: [`run`] (`fan_out/mooring.rs`) drives it over
//! Mooring's realtime protocol, [`crate::fan_out_pusher`] against a Pusher server such as
//! Sockudo.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::fleet::{self, Failures};
use crate::latency::{human_us, Latencies, LatencySummary};
use crate::progress::Progress;
use crate::serial_check::{CheckTotals, SerialCheck};
use crate::sysmon::{self, CpuSample, CpuUse};
use crate::ws::{Endpoint, Socket};

mod mooring;

pub use mooring::run;

/// One subscriber in this many decodes its events for latency and order.
pub const LATENCY_SAMPLE: usize = 50;

/// How long subscribers read after the window.
pub const DRAIN: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node.
    pub endpoint: Endpoint,
    /// Subscriber connections, all attached to one session.
    pub subscribers: usize,
    /// Events the publisher sends a second.
    pub rate: u32,
    /// Measured window.
    pub duration: Duration,
    /// Publishing before the window, not counted.
    pub warmup: Duration,
    /// Handshakes in flight while connecting.
    pub connect_parallel: usize,
    /// The server's pid, for its CPU and memory.
    pub server_pid: Option<u32>,
    /// The session's name.
    pub session: String,
    /// A name for the server under test.
    pub label: String,
    /// Show a progress bar.
    pub progress: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `fan-out`.
    pub scenario: &'static str,
    /// The server under test and its settings, as given.
    pub label: String,
    /// The kind of server: `mooring`, or the Pusher server named (`sockudo`).
    pub server: String,
    /// When the measured window began (RFC 3339).
    pub started_at: String,
    /// Subscribers that attached.
    pub subscribers: usize,
    /// Events a second the publisher was asked to send.
    pub rate: u32,
    /// Measured window, seconds.
    pub duration_secs: f64,
    /// Events published in the window.
    pub published: u64,
    /// Events received by all subscribers in the window.
    pub deliveries: u64,
    /// `deliveries` per second.
    pub deliveries_per_sec: f64,
    /// `published × subscribers` per second: what full delivery would be.
    pub offered_per_sec: f64,
    /// Publish-to-read latency, from the sampled subscribers.
    pub latency: LatencySummary,
    /// Serial order at the sampled subscribers.
    pub check: CheckTotals,
    /// Subscribers the server closed (for example as slow consumers, 4008).
    pub disconnected: u64,
    /// Connections that failed to open or attach, and publish errors.
    pub errors: u64,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// CPU during the window.
    pub cpu: CpuUse,
    /// Server memory at the end of the window, KiB.
    pub server_rss_kib: Option<u64>,
}

impl Report {
    /// A few lines for people.
    pub fn human(&self) -> String {
        format!(
            "fan-out  {label} ({kind})  1 publisher at {rate}/s to {subs} subscribers, {dur:.0} s\n  \
             deliveries {d} ({dps:.0}/s of {offered:.0}/s offered)  disconnected {disc}  errors {errors}\n  \
             latency   p50 {p50}  p99 {p99}  (sampled subscribers; gaps {gaps}, duplicates {dups})\n  \
             cpu       server {server} %  generator {gen} %  other {other} %",
            label = self.label,
            kind = self.server,
            rate = self.rate,
            subs = self.subscribers,
            dur = self.duration_secs,
            d = self.deliveries,
            dps = self.deliveries_per_sec,
            offered = self.offered_per_sec,
            disc = self.disconnected,
            errors = self.errors,
            p50 = human_us(self.latency.p50_us),
            p99 = human_us(self.latency.p99_us),
            gaps = self.check.gaps,
            dups = self.check.duplicates,
            server = self.cpu.server_cpu_percent.map_or("?".to_owned(), |v| v.to_string()),
            gen = self.cpu.generator_cpu_percent,
            other = self.cpu.other_cpu_percent,
        )
    }
}

/// The run's timeline: publishing starts at `base`, the window is `measure_from..end`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// When publishing starts; send times are microseconds since this.
    pub base: Instant,
    /// When the measured window opens.
    pub measure_from: Instant,
    /// When it closes (publishing stops).
    pub end: Instant,
}

impl Clock {
    /// Microseconds from `base` to `now`: the send time an event carries.
    pub fn micros(&self, now: Instant) -> u64 {
        u64::try_from(now.duration_since(self.base).as_micros()).unwrap_or(u64::MAX)
    }
}

/// How the subscribers' read loop tells the frames of one protocol apart.
pub trait Wire: Send + Sync + 'static {
    /// What a text frame is, without decoding more of it than needed (most subscribers only
    /// count).
    fn classify(&self, text: &str) -> Incoming;
    /// The sequence number and send time (microseconds since [`Clock::base`]) an event frame
    /// carries, for the sampled subscribers; `None` when it cannot be read.
    fn decode(&self, text: &str) -> Option<Sent>;
}

/// A text frame, as [`Wire::classify`] sees it.
#[derive(Debug)]
pub enum Incoming {
    /// One of the published events.
    Event,
    /// A heartbeat, with the answer to send.
    Ping(Message),
    /// Anything else.
    Other,
}

/// What a published event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Its place in the stream: consecutive from the first event, for gaps and duplicates.
    pub serial: u64,
    /// When it was sent, microseconds since [`Clock::base`].
    pub micros: Option<u64>,
}

/// What a publisher did: the events it sent in the window, and what stopped it, if anything.
#[derive(Debug)]
pub struct Published {
    /// Events sent in the measured window.
    pub in_window: u64,
    /// Why it stopped before the end, or failed to send everything.
    pub error: Option<anyhow::Error>,
}

impl Published {
    /// A publisher that sent `in_window` events and met no error.
    pub fn ok(in_window: u64) -> Self {
        Self {
            in_window,
            error: None,
        }
    }
}

/// A subscriber ready for the window: its index (one in [`LATENCY_SAMPLE`] is sampled), its
/// socket, and the serial its stream starts after.
pub type Ready = (usize, Socket, u64);

#[derive(Debug, Default)]
struct Live {
    deliveries: AtomicU64,
    disconnected: AtomicU64,
}

/// What a subscriber brings back.
#[derive(Debug, Default)]
struct Tally {
    deliveries: u64,
    latencies: Latencies,
    check: Option<SerialCheck>,
    closed: bool,
}

/// Checks the config and starts the progress bar.
pub fn start(config: &Config) -> anyhow::Result<Progress> {
    if config.subscribers == 0 || config.rate == 0 {
        bail!("subscribers and rate must each be at least 1");
    }
    Ok(Progress::new(
        config.warmup + config.duration + DRAIN,
        &config.label,
        config.progress,
    ))
}

/// Shows how many subscribers are connected.
pub fn connecting(progress: &Progress, done: usize, of: usize) {
    progress.update(Duration::ZERO, format!("subscribers {done}/{of}"));
}

/// Takes back the subscribers held while the others attached.
pub async fn take_back(
    held: Vec<(usize, fleet::Held, u64)>,
    failures: &mut Failures,
) -> Vec<Ready> {
    let mut ready = Vec::with_capacity(held.len());
    for (index, held, after) in held {
        match held.take().await {
            Ok(ws) => ready.push((index, ws, after)),
            Err(e) => failures.add(&e),
        }
    }
    ready
}

/// The measured part, whatever the protocol: starts `publish` and a reader per subscriber of
/// `ready`, samples CPU over the window, and adds up what the readers bring back.
pub async fn measure<P, Fut>(
    config: &Config,
    server: &str,
    progress: &Progress,
    ready: Vec<Ready>,
    mut failures: Failures,
    wire: Arc<dyn Wire>,
    publish: P,
) -> anyhow::Result<Report>
where
    P: FnOnce(Clock) -> Fut,
    Fut: Future<Output = Published> + Send + 'static,
{
    let attached = ready.len();
    let base = Instant::now();
    let clock = Clock {
        base,
        measure_from: base + config.warmup,
        end: base + config.warmup + config.duration,
    };
    let live = Arc::new(Live::default());
    let mut readers = JoinSet::new();
    for (index, ws, after) in ready {
        let sampled = index % LATENCY_SAMPLE == 0;
        readers.spawn(subscribe(
            ws,
            sampled.then(|| SerialCheck::after(after)),
            clock,
            Arc::clone(&live),
            Arc::clone(&wire),
        ));
    }
    let publishing = tokio::spawn(publish(clock));

    let ticker = {
        let live = Arc::clone(&live);
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_millis(500));
            let mut last = (Instant::now(), 0);
            loop {
                interval.tick().await;
                let now = Instant::now();
                let d = live.deliveries.load(Ordering::Relaxed);
                let rate = (d - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
                last = (now, d);
                progress.update(
                    now - clock.base,
                    format!(
                        "{rate:.0} deliveries/s  disconnected {}",
                        live.disconnected.load(Ordering::Relaxed)
                    ),
                );
            }
        })
    };
    tokio::time::sleep_until(clock.measure_from).await;
    let started_at = chrono::Utc::now().to_rfc3339();
    let cpu_start = CpuSample::now(config.server_pid)?;
    tokio::time::sleep_until(clock.end).await;
    let cpu = cpu_start.until(&CpuSample::now(config.server_pid)?);
    let rss = config.server_pid.and_then(sysmon::rss_kib);

    let published = match publishing.await {
        Ok(Published { in_window, error }) => {
            if let Some(e) = error {
                failures.add(&e);
            }
            in_window
        }
        Err(e) => {
            failures.add(&anyhow::Error::new(e));
            0
        }
    };
    let mut deliveries = 0;
    let mut latencies = Latencies::new();
    let mut check = CheckTotals::default();
    let mut disconnected = 0;
    while let Some(done) = readers.join_next().await {
        match done {
            Ok(tally) => {
                deliveries += tally.deliveries;
                latencies.merge(&tally.latencies);
                if let Some(c) = tally.check {
                    c.add_to(&mut check);
                }
                disconnected += u64::from(tally.closed);
            }
            Err(e) => failures.add(&anyhow::Error::new(e)),
        }
    }
    ticker.abort();
    progress.finish();
    let secs = config.duration.as_secs_f64();
    Ok(Report {
        scenario: "fan-out",
        label: config.label.clone(),
        server: server.to_owned(),
        started_at,
        subscribers: attached,
        rate: config.rate,
        duration_secs: secs,
        published,
        deliveries,
        deliveries_per_sec: deliveries as f64 / secs,
        offered_per_sec: published as f64 * attached as f64 / secs,
        latency: latencies.summary(),
        check,
        disconnected,
        errors: failures.count,
        error_samples: failures.samples,
        cpu,
        server_rss_kib: rss,
    })
}

/// One subscriber: counts the events received in the window, until the drain ends.
async fn subscribe(
    mut ws: Socket,
    mut check: Option<SerialCheck>,
    clock: Clock,
    live: Arc<Live>,
    wire: Arc<dyn Wire>,
) -> Tally {
    let mut tally = Tally::default();
    let stop = clock.end + DRAIN;
    loop {
        let message = match tokio::time::timeout_at(stop, ws.next()).await {
            Err(_) => break,
            Ok(Some(Ok(message))) => message,
            Ok(_) => {
                tally.closed = true;
                live.disconnected.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        let Message::Text(text) = message else {
            continue;
        };
        let now = Instant::now();
        match wire.classify(text.as_str()) {
            Incoming::Event => {
                if now >= clock.measure_from && now < clock.end {
                    tally.deliveries += 1;
                    live.deliveries.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(check) = check.as_mut() {
                    let Some(sent) = wire.decode(text.as_str()) else {
                        continue;
                    };
                    check.observe(sent.serial);
                    if let Some(micros) = sent.micros {
                        tally.latencies.record(Duration::from_micros(
                            clock.micros(now).saturating_sub(micros),
                        ));
                    }
                }
            }
            Incoming::Ping(pong) => {
                if ws.send(pong).await.is_err() {
                    tally.closed = true;
                    break;
                }
            }
            Incoming::Other => {}
        }
    }
    tally.check = check;
    tally
}
