//! Fan-out: one publisher, many WebSocket subscribers of one session; deliveries a second.
//!
//! The publisher sends events at a fixed rate (never waiting for acknowledgements, which it
//! reads as they come); every subscriber counts the events it receives. Deliveries a second is
//! what all subscribers received in the measured window over its length. Subscribers count
//! frames without decoding them, except one in [`LATENCY_SAMPLE`], which decodes every event
//! for its publish-to-read latency (the event's data is the send time) and serial order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::fleet::{self, Failures};
use crate::latency::{human_us, Latencies, LatencySummary};
use crate::progress::Progress;
use crate::serial_check::{CheckTotals, SerialCheck};
use crate::sysmon::{self, CpuSample, CpuUse};
use crate::ws::{self, Endpoint, Frame, Socket};

/// One subscriber in this many decodes its events for latency and order.
pub const LATENCY_SAMPLE: usize = 50;

/// How long subscribers read after the window.
const DRAIN: Duration = Duration::from_secs(2);

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
    /// The server under test.
    pub label: String,
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
            "fan-out  {label}  1 publisher at {rate}/s to {subs} subscribers, {dur:.0} s\n  \
             deliveries {d} ({dps:.0}/s of {offered:.0}/s offered)  disconnected {disc}  errors {errors}\n  \
             latency   p50 {p50}  p99 {p99}  (sampled subscribers; gaps {gaps}, duplicates {dups})\n  \
             cpu       server {server} %  generator {gen} %  other {other} %",
            label = self.label,
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

#[derive(Debug, Clone, Copy)]
struct Clock {
    base: Instant,
    measure_from: Instant,
    end: Instant,
}

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

/// Runs the scenario. Must be called inside a Tokio runtime.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    if config.subscribers == 0 || config.rate == 0 {
        bail!("subscribers and rate must each be at least 1");
    }
    let progress = Progress::new(
        config.warmup + config.duration + DRAIN,
        &config.label,
        config.progress,
    );
    let mut failures = Failures::default();
    let mut publisher = config
        .endpoint
        .connect(usize::MAX, Some("publisher"))
        .await?;
    // The session exists before anyone attaches: one event, serial 1.
    ws::send(
        &mut publisher,
        &fleet::publish(
            1,
            &config.session,
            vec![fleet::plain_event("start", 0.into())],
        ),
    )
    .await?;
    fleet::await_ack(&mut publisher, 1).await?;
    let publisher = fleet::Held::new(publisher);

    let session = config.session.clone();
    let (subscribers, sub_failures) = fleet::open_many(
        &config.endpoint,
        config.subscribers,
        config.connect_parallel,
        move |index, mut ws: Socket| {
            let session = session.clone();
            async move {
                let at = fleet::attach_until_live(&mut ws, &session, fleet::from_start(), |_| {})
                    .await?;
                Ok((index, fleet::Held::new(ws), at.live))
            }
        },
        |n| {
            progress.update(
                Duration::ZERO,
                format!("subscribers {n}/{}", config.subscribers),
            )
        },
    )
    .await;
    failures.absorb(sub_failures);
    if subscribers.is_empty() {
        bail!("no subscriber could attach: {:?}", failures.samples);
    }
    let publisher = publisher
        .take()
        .await
        .context("the publisher, set aside while subscribers attached")?;
    let mut ready = Vec::with_capacity(subscribers.len());
    for (index, held, after) in subscribers {
        match held.take().await {
            Ok(ws) => ready.push((index, ws, after)),
            Err(e) => failures.add(&e),
        }
    }
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
        ));
    }
    let publishing = tokio::spawn(publish(
        publisher,
        config.session.clone(),
        config.rate,
        clock,
    ));

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
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            failures.add(&e);
            0
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
        label: config.label,
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

/// The publisher: `rate` events a second until the window ends, each carrying its send time
/// (microseconds since the base). Returns the events sent in the window.
async fn publish(mut ws: Socket, session: String, rate: u32, clock: Clock) -> anyhow::Result<u64> {
    let mut ticker = tokio::time::interval_at(clock.base, Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut req = 1;
    let mut in_window = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                if now >= clock.end {
                    return Ok(in_window);
                }
                req += 1;
                let micros = u64::try_from(now.duration_since(clock.base).as_micros()).unwrap_or(u64::MAX);
                ws::send(&mut ws, &fleet::publish(req, &session, vec![fleet::plain_event("tick", micros.into())])).await?;
                if now >= clock.measure_from {
                    in_window += 1;
                }
            }
            frame = ws::next_frame(&mut ws) => {
                let Some(frame) = frame? else { bail!("the publisher's connection closed") };
                match frame.kind.as_str() {
                    "error" => bail!("a publish was refused: {}", frame.describe()),
                    "ping" => ws::send_pong(&mut ws, frame.nonce.unwrap_or(0)).await?,
                    _ => {}
                }
            }
        }
    }
}

/// One subscriber: counts the events received in the window, until the drain ends.
async fn subscribe(
    mut ws: Socket,
    mut check: Option<SerialCheck>,
    clock: Clock,
    live: Arc<Live>,
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
        if ws::is_event(text.as_str()) {
            if now >= clock.measure_from && now < clock.end {
                tally.deliveries += 1;
                live.deliveries.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(check) = check.as_mut() {
                let Ok(frame) = Frame::parse(text.as_str()) else {
                    continue;
                };
                check.observe(frame.serial.unwrap_or(0));
                if let Some(sent) = frame.data.as_u64() {
                    let micros = u64::try_from(now.duration_since(clock.base).as_micros())
                        .unwrap_or(u64::MAX);
                    tally
                        .latencies
                        .record(Duration::from_micros(micros.saturating_sub(sent)));
                }
            }
        } else if text.as_str().starts_with(r#"{"type":"ping""#) {
            let nonce = Frame::parse(text.as_str())
                .ok()
                .and_then(|f| f.nonce)
                .unwrap_or(0);
            if ws::send_pong(&mut ws, nonce).await.is_err() {
                tally.closed = true;
                break;
            }
        }
    }
    tally.check = check;
    tally
}
