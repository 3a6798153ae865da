//! Resume storm: many subscribers of sessions being written all lose their connections at
//! once, mid-stream, and resume from the last serial each saw; the time until every one is
//! caught up, and every gap and duplicate across the whole run.
//!
//! A writer publishes events round-robin over the sessions at a fixed rate throughout. Each
//! subscriber attaches from the start and checks its serials ([`SerialCheck`]). At the drop,
//! every subscriber closes its socket without a close frame (as a network failure would) and
//! at once reconnects and attaches from `{epoch, last serial}`; it is caught up when `live`
//! arrives. A subscriber whose reconnect fails retries after a short pause, as a client would.
//! After the storm the writer stops, and every subscriber must hold each serial of its session
//! exactly once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::fleet::{self, Failures};
use crate::latency::{human_us, Latencies, LatencySummary};
use crate::progress::Progress;
use crate::serial_check::{CheckTotals, SerialCheck};
use crate::sysmon::{CpuSample, CpuUse};
use crate::ws::{self, Endpoint, Socket};

/// A storm not caught up by then is reported as such rather than waited for.
const STORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Reconnect attempts per subscriber before it gives up.
const MAX_ATTEMPTS: u32 = 20;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node.
    pub endpoint: Endpoint,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Sessions they are spread over, all written.
    pub sessions: usize,
    /// Events a second the writer publishes, over all sessions.
    pub rate: u32,
    /// Streaming before the drop.
    pub before: Duration,
    /// Streaming after everyone caught up, before the writer stops.
    pub after: Duration,
    /// Handshakes in flight while first connecting (the storm itself has no limit).
    pub connect_parallel: usize,
    /// The server's pid, for its CPU.
    pub server_pid: Option<u32>,
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
    /// Always `resume-storm`.
    pub scenario: &'static str,
    /// The server under test.
    pub label: String,
    /// When the drop happened (RFC 3339).
    pub dropped_at: String,
    /// Subscribers attached before the drop.
    pub subscribers: usize,
    /// Sessions written.
    pub sessions: usize,
    /// Writer events a second.
    pub rate: u32,
    /// Subscribers caught up again.
    pub caught_up: u64,
    /// From the drop until the last subscriber's `live`, seconds (all of them, if
    /// `caught_up == subscribers`).
    pub all_caught_up_secs: f64,
    /// From the drop until each subscriber's `live`.
    pub catch_up: LatencySummary,
    /// Reconnect attempts that failed and were retried.
    pub retries: u64,
    /// Events published by the writer.
    pub published: u64,
    /// Times the writer's connection was closed under it and opened again (its unacknowledged
    /// publishes may or may not be in the log; the check allows for either).
    pub writer_reconnects: u64,
    /// Why, the first few times.
    pub writer_close_samples: Vec<String>,
    /// Serial order at every subscriber over the whole run: gaps and duplicates must be 0.
    pub check: CheckTotals,
    /// Subscribers that did not end holding every serial of their session.
    pub incomplete: u64,
    /// Failures (connections, publishes).
    pub errors: u64,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// CPU from the drop until all were caught up.
    pub cpu: CpuUse,
}

impl Report {
    /// A few lines for people.
    pub fn human(&self) -> String {
        format!(
            "resume-storm  {label}  {subs} subscribers over {sessions} sessions, writer {rate}/s\n  \
             caught up {caught} in {all:.2} s (p50 {p50}, p99 {p99})  retries {retries}\n  \
             gaps {gaps}  duplicates {dups}  incomplete {incomplete}  errors {errors}\n  \
             cpu       server {server} %  generator {gen} %  other {other} %",
            label = self.label,
            subs = self.subscribers,
            sessions = self.sessions,
            rate = self.rate,
            caught = self.caught_up,
            all = self.all_caught_up_secs,
            p50 = human_us(self.catch_up.p50_us),
            p99 = human_us(self.catch_up.p99_us),
            retries = self.retries,
            gaps = self.check.gaps,
            dups = self.check.duplicates,
            incomplete = self.incomplete,
            errors = self.errors,
            server = self.cpu.server_cpu_percent.map_or("?".to_owned(), |v| v.to_string()),
            gen = self.cpu.generator_cpu_percent,
            other = self.cpu.other_cpu_percent,
        )
    }
}

/// What the run tells its subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Streaming,
    /// Drop the connection now and resume; the instant is the drop.
    Drop(Instant),
    /// The writer has stopped at these final serials: read until reaching them.
    Finish,
}

#[derive(Debug, Default)]
struct Live {
    caught_up: AtomicU64,
    retries: AtomicU64,
}

/// What one subscriber brings back.
#[derive(Debug)]
struct Outcome {
    session: usize,
    check: SerialCheck,
    catch_up: Option<Duration>,
    error: Option<anyhow::Error>,
}

/// Runs the scenario. Must be called inside a Tokio runtime.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    if config.subscribers == 0 || config.sessions == 0 || config.rate == 0 {
        bail!("subscribers, sessions and rate must each be at least 1");
    }
    let progress = Progress::new(Duration::from_secs(1), &config.label, config.progress);
    let names: Arc<Vec<String>> = Arc::new(
        (0..config.sessions)
            .map(|i| format!("{}-{i:05}", config.name_prefix))
            .collect(),
    );
    let mut writer = config
        .endpoint
        .connect(usize::MAX, Some("storm-writer"))
        .await?;
    let mut high = vec![0u64; config.sessions];
    for (i, session) in names.iter().enumerate() {
        let req = i as u64 + 1;
        ws::send(
            &mut writer,
            &fleet::publish(req, session, vec![fleet::plain_event("start", 0.into())]),
        )
        .await?;
        high[i] = fleet::first_serial(&fleet::await_ack(&mut writer, req).await?)?;
    }

    let writer = fleet::Held::new(writer);
    let mut failures = Failures::default();
    let (subscribers, open_failures) = fleet::open_many(
        &config.endpoint,
        config.subscribers,
        config.connect_parallel,
        {
            let names = Arc::clone(&names);
            move |index, mut ws: Socket| {
                let session = index % names.len();
                let name = names[session].clone();
                async move {
                    let mut check = SerialCheck::after(0);
                    let at = fleet::attach_until_live(&mut ws, &name, fleet::from_start(), |f| {
                        check.observe(f.serial.unwrap_or(0))
                    })
                    .await?;
                    Ok((index, session, fleet::Held::new(ws), check, at.epoch))
                }
            }
        },
        |n| {
            if n % 500 == 0 {
                progress.update(
                    Duration::ZERO,
                    format!("subscribers {n}/{}", config.subscribers),
                );
            }
        },
    )
    .await;
    failures.absorb(open_failures);
    if subscribers.is_empty() {
        bail!("no subscriber could attach: {:?}", failures.samples);
    }
    let attached = subscribers.len();

    let (phase, phases) = watch::channel(Phase::Streaming);
    let live = Arc::new(Live::default());
    let mut readers = JoinSet::new();
    let writer = writer
        .take()
        .await
        .context("the writer, set aside while subscribers attached")?;
    for (index, session, held, check, epoch) in subscribers {
        let ws = match held.take().await {
            Ok(ws) => ws,
            Err(e) => {
                failures.add(&e);
                continue;
            }
        };
        readers.spawn(subscribe(
            config.endpoint.clone(),
            index,
            session,
            names[session].clone(),
            ws,
            check,
            epoch,
            phases.clone(),
            Arc::clone(&live),
        ));
    }
    let (stop_writer, writer_stop) = watch::channel(false);
    let writing = tokio::spawn(write(
        config.endpoint.clone(),
        writer,
        Arc::clone(&names),
        high,
        config.rate,
        writer_stop,
    ));

    tokio::time::sleep(config.before).await;
    let dropped_at = chrono::Utc::now().to_rfc3339();
    let cpu_start = CpuSample::now(config.server_pid)?;
    let drop_instant = Instant::now();
    let _ = phase.send(Phase::Drop(drop_instant));
    let deadline = drop_instant + STORM_TIMEOUT;
    loop {
        let caught = live.caught_up.load(Ordering::Relaxed);
        progress.update(
            drop_instant.elapsed(),
            format!("storm: caught up {caught}/{attached}"),
        );
        if caught as usize >= attached || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu = cpu_start.until(&CpuSample::now(config.server_pid)?);
    tokio::time::sleep(config.after).await;
    let _ = stop_writer.send(true);
    let (published, high, writer_closes) = match writing.await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return Err(e.context("the writer failed")),
        Err(e) => return Err(anyhow::Error::new(e).context("the writer task failed")),
    };
    let high = Arc::new(high);
    let _ = phase.send(Phase::Finish);

    let mut check = CheckTotals::default();
    let mut catch_up = Latencies::new();
    let mut slowest = Duration::ZERO;
    let mut incomplete = 0;
    let finish_by = Instant::now() + Duration::from_secs(30);
    while let Some(done) = tokio::time::timeout_at(finish_by, readers.join_next())
        .await
        .unwrap_or_else(|_| {
            readers.abort_all();
            None
        })
    {
        let outcome = match done {
            Ok(outcome) => outcome,
            Err(e) => {
                failures.add(&anyhow::Error::new(e));
                incomplete += 1;
                continue;
            }
        };
        outcome.check.add_to(&mut check);
        if !outcome.check.complete_to(high[outcome.session]) {
            incomplete += 1;
        }
        if let Some(d) = outcome.catch_up {
            catch_up.record(d);
            slowest = slowest.max(d);
        }
        if let Some(e) = outcome.error {
            failures.add(&e);
        }
    }
    progress.finish();
    let caught_up = catch_up.len();
    Ok(Report {
        scenario: "resume-storm",
        label: config.label,
        dropped_at,
        subscribers: attached,
        sessions: config.sessions,
        rate: config.rate,
        caught_up,
        all_caught_up_secs: slowest.as_secs_f64(),
        catch_up: catch_up.summary(),
        retries: live.retries.load(Ordering::Relaxed),
        published,
        writer_reconnects: writer_closes.count,
        writer_close_samples: writer_closes.samples,
        check,
        incomplete,
        errors: failures.count,
        error_samples: failures.samples,
        cpu,
    })
}

/// The writer: `rate` events a second round-robin over the sessions, until stopped; returns
/// how many it published, each session's last acknowledged serial, and the times its
/// connection was closed under it (it reconnects, as an agent would).
async fn write(
    endpoint: Endpoint,
    mut ws: Socket,
    names: Arc<Vec<String>>,
    mut high: Vec<u64>,
    rate: u32,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(u64, Vec<u64>, Failures)> {
    let mut closes = Failures::default();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut req = names.len() as u64;
    let mut sent_to: std::collections::HashMap<u64, usize> = Default::default();
    let mut next = 0usize;
    let mut published = 0u64;
    let mut stopping = false;
    loop {
        if stopping && sent_to.is_empty() {
            return Ok((published, high, closes));
        }
        tokio::select! {
            _ = stop.changed(), if !stopping => stopping = true,
            _ = ticker.tick(), if !stopping => {
                req += 1;
                let session = next % names.len();
                next += 1;
                ws::send(&mut ws, &fleet::publish(req, &names[session], vec![fleet::plain_event("tick", req.into())])).await?;
                sent_to.insert(req, session);
            }
            frame = ws::next_frame(&mut ws) => {
                let frame = match frame.and_then(|f| f.context("the connection ended")) {
                    Ok(frame) => frame,
                    Err(e) => {
                        closes.add(&e);
                        if closes.count > 20 {
                            bail!("the writer's connection keeps closing: {:?}", closes.samples);
                        }
                        // Unacknowledged publishes may or may not have been written.
                        sent_to.clear();
                        ws = endpoint.connect(usize::MAX, Some("storm-writer")).await?;
                        continue;
                    }
                };
                match frame.kind.as_str() {
                    "ack" => {
                        if let Some(session) = frame.req.and_then(|r| sent_to.remove(&r)) {
                            let serial = fleet::first_serial(&frame)?;
                            high[session] = high[session].max(serial);
                            published += 1;
                        }
                    }
                    "error" => bail!("a publish was refused: {}", frame.describe()),
                    "ping" => ws::send_pong(&mut ws, frame.nonce.unwrap_or(0)).await?,
                    _ => {}
                }
            }
        }
    }
}

/// One subscriber through the whole run.
#[allow(clippy::too_many_arguments)]
async fn subscribe(
    endpoint: Endpoint,
    index: usize,
    session: usize,
    name: String,
    mut ws: Socket,
    mut check: SerialCheck,
    epoch: u64,
    mut phases: watch::Receiver<Phase>,
    live: Arc<Live>,
) -> Outcome {
    let mut outcome = Outcome {
        session,
        check: SerialCheck::default(),
        catch_up: None,
        error: None,
    };
    let result: anyhow::Result<()> = async {
        // Until the drop: read live events.
        let dropped_at = loop {
            tokio::select! {
                changed = phases.changed() => {
                    changed.context("the run ended before the drop")?;
                    if let Phase::Drop(at) = *phases.borrow_and_update() {
                        break at;
                    }
                }
                frame = ws::next_frame(&mut ws) => {
                    let frame = frame?.context("closed before the drop")?;
                    match frame.kind.as_str() {
                        "event" => check.observe(frame.serial.unwrap_or(0)),
                        "ping" => ws::send_pong(&mut ws, frame.nonce.unwrap_or(0)).await?,
                        _ => {}
                    }
                }
            }
        };
        // The drop: no close frame, as a lost network would leave it.
        drop(ws);
        let mut attempts = 0;
        let (mut ws, at) = loop {
            attempts += 1;
            let resumed = async {
                let mut ws = endpoint.connect(index, None).await?;
                let from = fleet::from_position(epoch, check.last().unwrap_or(0));
                let at = fleet::attach_until_live(&mut ws, &name, from, |f| {
                    check.observe(f.serial.unwrap_or(0))
                })
                .await?;
                anyhow::Ok((ws, at))
            }
            .await;
            match resumed {
                Ok(done) => break done,
                Err(_) if attempts < MAX_ATTEMPTS => {
                    live.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempts))).await;
                }
                Err(e) => return Err(e.context(format!("resuming after {attempts} attempts"))),
            }
        };
        if !at.replay {
            bail!("the resume was not a replay (history lost?)");
        }
        outcome.catch_up = Some(dropped_at.elapsed());
        live.caught_up.fetch_add(1, Ordering::Relaxed);
        // After: read until the writer's final serial of this session... once it is known.
        loop {
            tokio::select! {
                changed = phases.changed() => {
                    if changed.is_err() || *phases.borrow_and_update() == Phase::Finish {
                        break;
                    }
                }
                frame = ws::next_frame(&mut ws) => {
                    let frame = frame?.context("closed after resuming")?;
                    match frame.kind.as_str() {
                        "event" => check.observe(frame.serial.unwrap_or(0)),
                        "ping" => ws::send_pong(&mut ws, frame.nonce.unwrap_or(0)).await?,
                        _ => {}
                    }
                }
            }
        }
        // The writer has stopped with every publish acknowledged, so the final events are
        // on their way: read what is left, briefly.
        while let Ok(frame) =
            tokio::time::timeout(Duration::from_secs(2), ws::next_frame(&mut ws)).await
        {
            let Some(frame) = frame? else { break };
            match frame.kind.as_str() {
                "event" => check.observe(frame.serial.unwrap_or(0)),
                "ping" => ws::send_pong(&mut ws, frame.nonce.unwrap_or(0)).await?,
                _ => {}
            }
        }
        Ok(())
    }
    .await;
    outcome.error = result.err();
    outcome.check = check;
    outcome
}
