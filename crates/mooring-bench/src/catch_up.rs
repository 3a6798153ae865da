//! Catch-up: a late joiner to a long session; the time until it holds the full
//! materialized view.
//!
//! The session is filled first: `answers` messages, each a `message.create` and `tokens`
//! appends (sent in publish frames of up to [`APPENDS_PER_PUBLISH`], each acknowledged before
//! the next). Then, `repeats` times, a new connection attaches with `latest` and reads until
//! `live`: the time from opening the connection to `live` is the time to the full view, and
//! the view is checked (every message, whole). For contrast, the same joiner replaying every
//! event from the start is timed once.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use serde::Serialize;

use crate::fleet;
use crate::progress::Progress;
use crate::sysmon::{CpuSample, CpuUse};
use crate::ws::{self, Endpoint};

/// Appends per publish frame while filling the session (well under the 1 MiB frame limit).
pub const APPENDS_PER_PUBLISH: usize = 500;

/// The text of every token.
const TOKEN: &str = "tok, ";

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The node.
    pub endpoint: Endpoint,
    /// Messages (answers) in the session.
    pub answers: usize,
    /// Tokens (appends) per answer.
    pub tokens: usize,
    /// Late joiners timed, one after the other.
    pub repeats: usize,
    /// The server's pid, for its CPU.
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
    /// Always `catch-up`.
    pub scenario: &'static str,
    /// The server under test.
    pub label: String,
    /// When the first joiner began (RFC 3339).
    pub started_at: String,
    /// Messages in the session.
    pub answers: usize,
    /// Tokens per message.
    pub tokens: usize,
    /// The session's high-water after filling: events in its log.
    pub log_events: u64,
    /// Seconds to fill the session.
    pub fill_secs: f64,
    /// Bytes of message text in the view.
    pub view_bytes: u64,
    /// Each joiner's time from connecting to `live` with the whole view, milliseconds.
    pub view_ms: Vec<f64>,
    /// The median of `view_ms`.
    pub view_median_ms: f64,
    /// Time from connecting to `live` replaying every event from the start, milliseconds.
    pub replay_ms: f64,
    /// Events the replay delivered.
    pub replay_events: u64,
    /// CPU while the joiners ran.
    pub cpu: CpuUse,
}

impl Report {
    /// A few lines for people.
    pub fn human(&self) -> String {
        format!(
            "catch-up  {label}  {a} answers x {t} tokens ({events} log events, {kib:.0} KiB of text; filled in {fill:.1} s)\n  \
             full view in {median:.1} ms (median of {runs:?})\n  \
             replay of every event from the start: {replay:.1} ms ({re} events)",
            label = self.label,
            a = self.answers,
            t = self.tokens,
            events = self.log_events,
            kib = self.view_bytes as f64 / 1024.0,
            fill = self.fill_secs,
            median = self.view_median_ms,
            runs = self.view_ms,
            replay = self.replay_ms,
            re = self.replay_events,
        )
    }
}

/// Runs the scenario. Must be called inside a Tokio runtime.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    if config.answers == 0 || config.tokens == 0 || config.repeats == 0 {
        bail!("answers, tokens and repeats must each be at least 1");
    }
    let progress = Progress::new(Duration::from_secs(1), &config.label, config.progress);
    let filled_at = Instant::now();
    let log_events = fill(&config, &progress).await?;
    let fill_secs = filled_at.elapsed().as_secs_f64();

    let expected_len = config.tokens * TOKEN.len();
    let started_at = chrono::Utc::now().to_rfc3339();
    let cpu_start = CpuSample::now(config.server_pid)?;
    let mut view_ms = Vec::new();
    let mut view_bytes = 0;
    for i in 0..config.repeats {
        progress.update(
            Duration::ZERO,
            format!("late joiner {}/{}", i + 1, config.repeats),
        );
        let began = Instant::now();
        let mut ws = config.endpoint.connect(i, None).await?;
        let mut messages = 0usize;
        let mut bytes = 0u64;
        let mut wrong = 0usize;
        fleet::attach_until_live(&mut ws, &config.session, fleet::from_latest(), |f| {
            let len = f.data.as_str().map_or(0, str::len);
            messages += 1;
            bytes += len as u64;
            if len != expected_len {
                wrong += 1;
            }
        })
        .await?;
        view_ms.push(began.elapsed().as_secs_f64() * 1e3);
        ensure!(
            messages == config.answers && wrong == 0,
            "the view held {messages} messages ({wrong} of the wrong length); expected {} of {expected_len} bytes",
            config.answers
        );
        view_bytes = bytes;
    }
    let cpu = cpu_start.until(&CpuSample::now(config.server_pid)?);

    progress.update(Duration::ZERO, "replay from the start".into());
    let began = Instant::now();
    let mut ws = config.endpoint.connect(config.repeats, None).await?;
    let mut replay_events = 0u64;
    fleet::attach_until_live(&mut ws, &config.session, fleet::from_start(), |_| {
        replay_events += 1
    })
    .await?;
    let replay_ms = began.elapsed().as_secs_f64() * 1e3;
    ensure!(
        replay_events == log_events,
        "the replay delivered {replay_events} of {log_events} events"
    );
    progress.finish();

    let mut sorted = view_ms.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Report {
        scenario: "catch-up",
        label: config.label,
        started_at,
        answers: config.answers,
        tokens: config.tokens,
        log_events,
        fill_secs,
        view_bytes,
        view_median_ms: sorted[sorted.len() / 2],
        view_ms,
        replay_ms,
        replay_events,
        cpu,
    })
}

/// Writes the answers; returns the session's high-water.
async fn fill(config: &Config, progress: &Progress) -> anyhow::Result<u64> {
    let mut ws = config
        .endpoint
        .connect(usize::MAX, Some("catch-up-agent"))
        .await?;
    let mut req = 0;
    let mut high = 0;
    for answer in 0..config.answers {
        progress.update(
            Duration::ZERO,
            format!("filling: answer {}/{}", answer + 1, config.answers),
        );
        req += 1;
        ws::send(
            &mut ws,
            &fleet::publish(
                req,
                &config.session,
                vec![fleet::create_message("response")],
            ),
        )
        .await?;
        let message = fleet::first_serial(&fleet::await_ack(&mut ws, req).await?)?;
        high = high.max(message);
        let mut left = config.tokens;
        while left > 0 {
            let n = left.min(APPENDS_PER_PUBLISH);
            left -= n;
            req += 1;
            let events = (0..n)
                .map(|_| fleet::append(message, TOKEN.to_owned()))
                .collect();
            ws::send(&mut ws, &fleet::publish(req, &config.session, events)).await?;
            let ack = fleet::await_ack(&mut ws, req).await?;
            let last = ack
                .results
                .iter()
                .map(|p| p.serial)
                .max()
                .context("an empty ack")?;
            high = high.max(last);
        }
    }
    Ok(high)
}
