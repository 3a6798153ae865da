//! Token streaming: N runs at once, each an agent streaming an answer token by token into one
//! message (`message.create`, then `message.append` per token, as `docs/protocol.md` says) to
//! a session with 5 subscribers; latency from the agent's write to each subscriber's read.
//!
//! Every token's text is the microseconds since the run's start at which the agent sent it,
//! then `|`, so a subscriber reads the send time of every token even when the server's rollup
//! folds several into one event. Tokens sent in the measured window count; subscribers keep
//! reading for a drain period after it so the slowest of them are still counted. Agents send
//! on a fixed schedule and never wait for acknowledgements (they are read as they come), as a
//! model's tokens arrive whether or not the last one was stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::fleet::{self, Failures};
use crate::latency::{human_us, Latencies, LatencySummary};
use crate::progress::Progress;
use crate::serial_check::{CheckTotals, SerialCheck};
use crate::sysmon::{self, CpuSample, CpuUse};
use crate::ws::{self, Endpoint, Socket};

/// How long subscribers read after the window, for tokens still on their way.
const DRAIN: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node.
    pub endpoint: Endpoint,
    /// Concurrent runs, one session and one agent connection each.
    pub runs: usize,
    /// Subscriber connections per session.
    pub subscribers: usize,
    /// Tokens each agent sends a second.
    pub tokens_per_sec: u32,
    /// Tokens per answer; then the agent starts the next message.
    pub tokens_per_answer: u32,
    /// Measured window.
    pub duration: Duration,
    /// Streaming before the window, not counted.
    pub warmup: Duration,
    /// Handshakes in flight while connecting.
    pub connect_parallel: usize,
    /// The server's pids (several nodes, and their store), for their CPU and memory, summed.
    pub server_pids: Vec<u32>,
    /// Sessions are named `{name_prefix}-{run}`.
    pub name_prefix: String,
    /// A name for the server (and its settings) under test.
    pub label: String,
    /// Show a progress bar.
    pub progress: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `token-streaming`.
    pub scenario: &'static str,
    /// The server under test.
    pub label: String,
    /// When the measured window began (RFC 3339).
    pub started_at: String,
    /// Concurrent runs (sessions, agents).
    pub runs: usize,
    /// Subscribers per session.
    pub subscribers_per_run: usize,
    /// Connections held (agents and subscribers).
    pub connections: usize,
    /// Tokens per second per agent.
    pub tokens_per_sec: u32,
    /// Measured window, seconds.
    pub duration_secs: f64,
    /// Tokens sent in the window.
    pub tokens_sent: u64,
    /// Token deliveries expected in the window (tokens × subscribers).
    pub deliveries_expected: u64,
    /// Token deliveries received, of tokens sent in the window.
    pub deliveries: u64,
    /// Token deliveries a second.
    pub deliveries_per_sec: f64,
    /// Agent write to subscriber read, of every delivery counted.
    pub latency: LatencySummary,
    /// Publishes refused and connections lost during the run.
    pub errors: u64,
    /// A few error messages.
    pub error_samples: Vec<String>,
    /// Serial order as seen by the subscribers (must be clean).
    pub check: CheckTotals,
    /// CPU during the window.
    pub cpu: CpuUse,
    /// Server memory before connecting, KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server memory at the end of the window, KiB.
    pub server_rss_kib: Option<u64>,
    /// Server peak memory, KiB.
    pub server_peak_rss_kib: Option<u64>,
}

impl Report {
    /// A few lines for people.
    pub fn human(&self) -> String {
        let l = &self.latency;
        format!(
            "token-streaming  {label}  {runs} runs x {subs} subscribers, {tps} tokens/s, {dur:.0} s\n  \
             deliveries {d} of {e} ({rate:.0}/s)  errors {errors}  gaps {gaps}  duplicates {dups}\n  \
             latency   p50 {p50}  p99 {p99}  p999 {p999}  max {max}\n  \
             cpu       server {server} %  generator {gen} %  other {other} %   server rss {rss} KiB",
            label = self.label,
            runs = self.runs,
            subs = self.subscribers_per_run,
            tps = self.tokens_per_sec,
            dur = self.duration_secs,
            d = self.deliveries,
            e = self.deliveries_expected,
            rate = self.deliveries_per_sec,
            errors = self.errors,
            gaps = self.check.gaps,
            dups = self.check.duplicates,
            p50 = human_us(l.p50_us),
            p99 = human_us(l.p99_us),
            p999 = human_us(l.p999_us),
            max = human_us(l.max_us),
            server = self.cpu.server_cpu_percent.map_or("?".to_owned(), |v| v.to_string()),
            gen = self.cpu.generator_cpu_percent,
            other = self.cpu.other_cpu_percent,
            rss = self.server_rss_kib.map_or("?".to_owned(), |v| v.to_string()),
        )
    }
}

/// The run's clock, shared by agents and subscribers.
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: Instant,
    measure_from: Instant,
    end: Instant,
}

impl Clock {
    fn micros(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.base).as_micros()).unwrap_or(u64::MAX)
    }

    fn in_window(&self, micros: u64) -> bool {
        micros >= self.micros(self.measure_from) && micros < self.micros(self.end)
    }
}

#[derive(Debug, Default)]
struct Live {
    tokens: AtomicU64,
    deliveries: AtomicU64,
}

/// Runs the scenario. Must be called inside a Tokio runtime.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    if config.runs == 0 || config.tokens_per_sec == 0 || config.tokens_per_answer == 0 {
        bail!("runs, tokens per second and tokens per answer must each be at least 1");
    }
    let rss_before = sysmon::sum_over(&config.server_pids, sysmon::rss_kib);
    let connections = config.runs * (1 + config.subscribers);
    let progress = Progress::new(
        config.warmup + config.duration + DRAIN,
        &config.label,
        config.progress,
    );
    let sessions: Arc<Vec<String>> = Arc::new(
        (0..config.runs)
            .map(|i| format!("{}-{i:05}", config.name_prefix))
            .collect(),
    );

    // Agents first: each creates its first message, so subscribers attach to a live session.
    let mut failures = Failures::default();
    let agent_sessions = Arc::clone(&sessions);
    let (mut agents, agent_failures) = fleet::open_many(
        &config.endpoint,
        config.runs,
        config.connect_parallel,
        move |index, mut ws: Socket| {
            let session = agent_sessions[index].clone();
            async move {
                ws::send(
                    &mut ws,
                    &fleet::publish(1, &session, vec![fleet::create_message("response")]),
                )
                .await?;
                let message = fleet::first_serial(&fleet::await_ack(&mut ws, 1).await?)?;
                Ok((index, fleet::Held::new(ws), message))
            }
        },
        |n| progress.update(Duration::ZERO, format!("agents {n}/{}", config.runs)),
    )
    .await;
    failures.absorb(agent_failures);
    let sub_sessions = Arc::clone(&sessions);
    let per_run = config.subscribers;
    let (subscribers, sub_failures) = fleet::open_many(
        &config.endpoint,
        config.runs * per_run,
        config.connect_parallel,
        move |index, mut ws: Socket| {
            let session = sub_sessions[index / per_run.max(1)].clone();
            async move {
                let mut check = SerialCheck::after(0);
                fleet::attach_until_live(&mut ws, &session, fleet::from_start(), |f| {
                    check.observe(f.serial.unwrap_or(0))
                })
                .await?;
                Ok((fleet::Held::new(ws), check))
            }
        },
        |n| {
            progress.update(
                Duration::ZERO,
                format!("subscribers {n}/{}", config.runs * per_run),
            )
        },
    )
    .await;
    failures.absorb(sub_failures);
    if !failures.samples.is_empty() && agents.is_empty() {
        bail!("no agent could connect: {:?}", failures.samples);
    }

    let base = Instant::now();
    let clock = Clock {
        base,
        measure_from: base + config.warmup,
        end: base + config.warmup + config.duration,
    };
    let live = Arc::new(Live::default());
    let mut readers = JoinSet::new();
    for (held, check) in subscribers {
        let ws = match held.take().await {
            Ok(ws) => ws,
            Err(e) => {
                failures.add(&e);
                continue;
            }
        };
        readers.spawn(subscribe(ws, check, clock, Arc::clone(&live)));
    }
    let mut writers = JoinSet::new();
    agents.sort_by_key(|(index, _, _)| *index);
    for (index, held, message) in agents {
        let ws = match held.take().await {
            Ok(ws) => ws,
            Err(e) => {
                failures.add(&e);
                continue;
            }
        };
        // Spread the agents' ticks over one token interval, as independent runs would be.
        let interval = Duration::from_secs(1) / config.tokens_per_sec;
        let offset = interval.mul_f64((index % 64) as f64 / 64.0);
        writers.spawn(agent(
            ws,
            sessions[index].clone(),
            message,
            clock,
            offset,
            interval,
            config.tokens_per_answer,
            Arc::clone(&live),
        ));
    }

    tokio::time::sleep_until(clock.measure_from).await;
    let started_at = chrono::Utc::now().to_rfc3339();
    let cpu_start = CpuSample::now_all(&config.server_pids)?;
    let ticker = tokio::spawn(tick(Arc::clone(&live), progress.clone(), clock));
    tokio::time::sleep_until(clock.end).await;
    let cpu = cpu_start.until(&CpuSample::now_all(&config.server_pids)?);
    let rss = sysmon::sum_over(&config.server_pids, sysmon::rss_kib);

    let mut tokens_sent = 0;
    while let Some(done) = writers.join_next().await {
        match done {
            Ok(Ok(sent)) => tokens_sent += sent,
            Ok(Err(e)) => failures.add(&e),
            Err(e) => failures.add(&anyhow::Error::new(e)),
        }
    }
    let mut latencies = Latencies::new();
    let mut check = CheckTotals::default();
    while let Some(done) = readers.join_next().await {
        match done {
            Ok(Ok((l, c))) => {
                latencies.merge(&l);
                c.add_to(&mut check);
            }
            Ok(Err(e)) => failures.add(&e),
            Err(e) => failures.add(&anyhow::Error::new(e)),
        }
    }
    ticker.abort();
    progress.finish();
    let secs = config.duration.as_secs_f64();
    Ok(Report {
        scenario: "token-streaming",
        label: config.label,
        started_at,
        runs: config.runs,
        subscribers_per_run: config.subscribers,
        connections,
        tokens_per_sec: config.tokens_per_sec,
        duration_secs: secs,
        tokens_sent,
        deliveries_expected: tokens_sent * config.subscribers as u64,
        deliveries: latencies.len(),
        deliveries_per_sec: latencies.len() as f64 / secs,
        latency: latencies.summary(),
        errors: failures.count,
        error_samples: failures.samples,
        check,
        cpu,
        server_rss_before_kib: rss_before,
        server_rss_kib: rss,
        server_peak_rss_kib: sysmon::sum_over(&config.server_pids, sysmon::peak_rss_kib),
    })
}

/// One agent: a token every `interval` into the current message; a new message every
/// `per_answer` tokens. Returns the tokens it sent in the measured window.
#[allow(clippy::too_many_arguments)]
async fn agent(
    mut ws: Socket,
    session: String,
    mut message: u64,
    clock: Clock,
    offset: Duration,
    interval: Duration,
    per_answer: u32,
    live: Arc<Live>,
) -> anyhow::Result<u64> {
    let mut ticker = tokio::time::interval_at(clock.base + offset, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut req = 1;
    let mut in_answer = 0;
    let mut creating: Option<u64> = None;
    let mut sent_in_window = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                if now >= clock.end {
                    break;
                }
                if creating.is_some() {
                    continue;
                }
                req += 1;
                let micros = clock.micros(now);
                let frame = fleet::publish(req, &session, vec![fleet::append(message, format!("{micros}|"))]);
                ws::send(&mut ws, &frame).await?;
                live.tokens.fetch_add(1, Ordering::Relaxed);
                if clock.in_window(micros) {
                    sent_in_window += 1;
                }
                in_answer += 1;
                if in_answer >= per_answer {
                    req += 1;
                    ws::send(&mut ws, &fleet::publish(req, &session, vec![fleet::create_message("response")])).await?;
                    creating = Some(req);
                    in_answer = 0;
                }
            }
            frame = ws::next_frame(&mut ws) => {
                let Some(frame) = frame? else { bail!("the agent's connection closed") };
                match frame.kind.as_str() {
                    "ack" if frame.req.is_some() && frame.req == creating => {
                        message = fleet::first_serial(&frame)?;
                        creating = None;
                    }
                    "error" => bail!("the agent's publish was refused: {}", frame.describe()),
                    "ping" => ws::send_pong(&mut ws, frame.nonce.unwrap_or(0)).await?,
                    _ => {}
                }
            }
        }
    }
    Ok(sent_in_window)
}

/// One subscriber: reads until the drain ends, recording the latency of every token sent in
/// the window and checking serial order.
async fn subscribe(
    mut ws: Socket,
    mut check: SerialCheck,
    clock: Clock,
    live: Arc<Live>,
) -> anyhow::Result<(Latencies, SerialCheck)> {
    let mut latencies = Latencies::new();
    let stop = clock.end + DRAIN;
    loop {
        let frame = match tokio::time::timeout_at(stop, ws::next_frame(&mut ws)).await {
            Err(_) => break,
            Ok(frame) => match frame? {
                Some(frame) => frame,
                None => bail!("a subscriber's connection closed"),
            },
        };
        match frame.kind.as_str() {
            "event" => {
                let now = clock.micros(Instant::now());
                check.observe(frame.serial.unwrap_or(0));
                let Some(text) = frame.data.as_str() else {
                    continue;
                };
                for token in text.split('|').filter(|t| !t.is_empty()) {
                    let Ok(sent) = token.parse::<u64>() else {
                        continue;
                    };
                    if clock.in_window(sent) {
                        latencies.record(Duration::from_micros(now.saturating_sub(sent)));
                        live.deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            "ping" => ws::send_pong(&mut ws, frame.nonce.unwrap_or(0)).await?,
            "detached" | "error" => bail!("a subscriber got {}", frame.describe()),
            _ => {}
        }
    }
    Ok((latencies, check))
}

/// Updates the bar twice a second until the window ends.
async fn tick(live: Arc<Live>, progress: Progress, clock: Clock) {
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    loop {
        interval.tick().await;
        let now = Instant::now();
        let phase = if now < clock.measure_from {
            "warm-up"
        } else if now < clock.end {
            "measuring"
        } else {
            "draining"
        };
        progress.update(
            now - clock.base,
            format!(
                "{phase}  tokens {}  deliveries {}",
                live.tokens.load(Ordering::Relaxed),
                live.deliveries.load(Ordering::Relaxed)
            ),
        );
    }
}

/// One step of `--find-max`.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Runs in this step.
    pub runs: usize,
    /// Its p99, microseconds.
    pub p99_us: u64,
    /// Whether it stayed under the limit, with every token delivered and no error.
    pub passed: bool,
}

/// What `--find-max` found.
#[derive(Debug, Clone, Serialize)]
pub struct MaxReport {
    /// Always `token-streaming-max`.
    pub scenario: &'static str,
    /// The server under test.
    pub label: String,
    /// The p99 every step must stay under, microseconds.
    pub p99_limit_us: u64,
    /// The largest number of runs that passed (0 if none did).
    pub max_runs: usize,
    /// Each step's summary.
    pub steps: Vec<Step>,
    /// Each step in full.
    pub reports: Vec<Report>,
}

/// Runs `config` at each of `steps` runs in turn, stopping after the first step whose p99 is
/// at or above `p99_limit`, that lost deliveries, or that had errors.
pub async fn find_max(
    config: Config,
    steps: &[usize],
    p99_limit: Duration,
) -> anyhow::Result<MaxReport> {
    let limit_us = u64::try_from(p99_limit.as_micros()).unwrap_or(u64::MAX);
    let mut out = MaxReport {
        scenario: "token-streaming-max",
        label: config.label.clone(),
        p99_limit_us: limit_us,
        max_runs: 0,
        steps: Vec::new(),
        reports: Vec::new(),
    };
    for (i, &runs) in steps.iter().enumerate() {
        let step = Config {
            runs,
            name_prefix: format!("{}-n{runs}-{i}", config.name_prefix),
            ..config.clone()
        };
        let report = run(step).await?;
        eprintln!("{}", report.human());
        // Every token must arrive; a little slack for tokens in flight at the drain's end would
        // hide losses, so there is none.
        let passed = report.latency.p99_us < limit_us
            && report.errors == 0
            && report.deliveries >= report.deliveries_expected;
        out.steps.push(Step {
            runs,
            p99_us: report.latency.p99_us,
            passed,
        });
        out.reports.push(report);
        if !passed {
            break;
        }
        out.max_runs = runs;
        // Let the previous step's connections close before the next.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_in_microseconds_from_the_base() {
        let base = Instant::now();
        let clock = Clock {
            base,
            measure_from: base + Duration::from_secs(1),
            end: base + Duration::from_secs(3),
        };
        assert!(!clock.in_window(999_999));
        assert!(clock.in_window(1_000_000));
        assert!(clock.in_window(2_999_999));
        assert!(!clock.in_window(3_000_000));
        assert_eq!(clock.micros(base + Duration::from_millis(5)), 5_000);
    }
}
