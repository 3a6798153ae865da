//! Durable appends over the Durable Streams protocol.
//!
//! `producers` tasks each hold one keep-alive connection and append `size`-byte bodies one at a
//! time: send, wait for the 2xx, send the next. Producer `p` sends its `k`-th append to stream
//! `(p + k) mod streams`, so every producer visits every stream in turn and, at any moment, the
//! producers are spread over the streams rather than piled on one. The streams are created
//! first (`PUT`, `application/octet-stream`). Appends that start during the warm-up are not
//! counted; the rate is the appends started in the measured window over its length, and their
//! latency is from the request leaving to its whole answer arriving.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::Connection;
use crate::latency::{human_us, Latencies, LatencySummary};
use crate::progress::Progress;
use crate::target::Target;

/// The content type of every stream and append of this scenario.
pub const CONTENT_TYPE: &str = "application/octet-stream";

/// An append without an answer by then counts as a transport error (and the connection is
/// replaced), so a stalled server cannot hold the run past its end for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many error messages a report keeps as samples.
const ERROR_SAMPLES: usize = 5;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server.
    pub target: Target,
    /// Concurrent producers, one connection each.
    pub producers: usize,
    /// Streams the producers append to.
    pub streams: usize,
    /// Bytes per append.
    pub size: usize,
    /// Length of the measured window.
    pub duration: Duration,
    /// Time appended before the measured window, not counted.
    pub warmup: Duration,
    /// Streams are named `{name_prefix}-{index}`.
    pub name_prefix: String,
    /// A name for the server under test, carried into the report.
    pub label: String,
    /// Show a progress bar (when standard output is a terminal).
    pub progress: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `durable-appends`.
    pub scenario: &'static str,
    /// The name given to the server under test.
    pub label: String,
    /// Where the streams live.
    pub url: String,
    /// When the measured run began (RFC 3339).
    pub started_at: String,
    /// Concurrent producers.
    pub producers: usize,
    /// Streams appended to.
    pub streams: usize,
    /// Bytes per append.
    pub size_bytes: usize,
    /// Measured window, seconds.
    pub duration_secs: f64,
    /// Warm-up before it, seconds.
    pub warmup_secs: f64,
    /// Appends acknowledged (2xx) that started in the measured window.
    pub appends: u64,
    /// `appends` per second of the measured window.
    pub appends_per_sec: f64,
    /// Payload bytes acknowledged per second.
    pub bytes_per_sec: f64,
    /// Failed appends over the whole run, warm-up included (non-2xx answers and transport errors).
    pub errors: u64,
    /// Errors by kind: `http <status>`, `transport` (including no answer in 30 s), `connect`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// A few error messages, for diagnosis.
    pub error_samples: Vec<String>,
    /// Latency of the appends counted in `appends`.
    pub latency: LatencySummary,
    /// Appends acknowledged in each whole second of the run, warm-up included.
    pub timeline: Vec<u64>,
}

impl Report {
    /// A few lines for people.
    pub fn human(&self) -> String {
        let l = &self.latency;
        format!(
            "durable-appends  {label}  {producers} producers, {streams} streams, {size} B, {dur:.0} s\n  \
             appends   {appends} ({rate:.0}/s, {mib:.2} MiB/s)  errors {errors}\n  \
             latency   p50 {p50}  p99 {p99}  p999 {p999}  max {max}",
            label = self.label,
            producers = self.producers,
            streams = self.streams,
            size = self.size_bytes,
            dur = self.duration_secs,
            appends = self.appends,
            rate = self.appends_per_sec,
            mib = self.bytes_per_sec / (1024.0 * 1024.0),
            errors = self.errors,
            p50 = human_us(l.p50_us),
            p99 = human_us(l.p99_us),
            p999 = human_us(l.p999_us),
            max = human_us(l.max_us),
        )
    }
}

/// Counters every producer adds to while running, read by the progress ticker.
#[derive(Debug, Default)]
struct Live {
    acked: AtomicU64,
    errors: AtomicU64,
}

/// What one producer brings back.
#[derive(Debug, Default)]
struct Tally {
    appends: u64,
    latencies: Latencies,
    errors_by_kind: BTreeMap<String, u64>,
    error_samples: Vec<String>,
}

impl Tally {
    fn error(&mut self, live: &Live, kind: String, sample: impl FnOnce() -> String) {
        live.errors.fetch_add(1, Ordering::Relaxed);
        *self.errors_by_kind.entry(kind).or_default() += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(sample());
        }
    }

    fn absorb(&mut self, other: Tally) {
        self.appends += other.appends;
        self.latencies.merge(&other.latencies);
        for (kind, n) in other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += n;
        }
        for sample in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(sample);
            }
        }
    }
}

/// The run's clock: warm-up until `measure_from`, measured until `end`.
#[derive(Debug, Clone, Copy)]
struct Window {
    measure_from: Instant,
    end: Instant,
}

/// Runs the scenario. Must be called inside a Tokio runtime.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    if config.producers == 0 || config.streams == 0 || config.size == 0 {
        bail!("producers, streams and size must each be at least 1");
    }
    if config.duration.is_zero() {
        bail!("the measured duration must be longer than zero");
    }
    let paths: Arc<Vec<String>> = Arc::new(
        (0..config.streams)
            .map(|i| {
                config
                    .target
                    .stream_path(&format!("{}-{i:04}", config.name_prefix))
            })
            .collect(),
    );
    create_streams(&config.target, &paths).await?;

    let body = Bytes::from(payload(config.size));
    let live = Arc::new(Live::default());
    let started_at = chrono::Utc::now().to_rfc3339();
    let start = Instant::now();
    let window = Window {
        measure_from: start + config.warmup,
        end: start + config.warmup + config.duration,
    };

    let mut producers = JoinSet::new();
    for index in 0..config.producers {
        producers.spawn(produce(
            index,
            config.target.clone(),
            Arc::clone(&paths),
            body.clone(),
            Arc::clone(&live),
            window,
        ));
    }

    let progress = Progress::new(
        config.warmup + config.duration,
        &config.label,
        config.progress,
    );
    let ticker = tokio::spawn(tick(Arc::clone(&live), progress.clone(), start, window));

    let mut total = Tally::default();
    while let Some(done) = producers.join_next().await {
        total.absorb(done.context("a producer task failed")?);
    }
    // The ticker returns by itself at the end of the window, which the producers have passed.
    let timeline = ticker.await.unwrap_or_default();
    progress.finish();

    let secs = config.duration.as_secs_f64();
    let errors = total.errors_by_kind.values().sum();
    Ok(Report {
        scenario: "durable-appends",
        label: config.label,
        url: config.target.to_string(),
        started_at,
        producers: config.producers,
        streams: config.streams,
        size_bytes: config.size,
        duration_secs: secs,
        warmup_secs: config.warmup.as_secs_f64(),
        appends: total.appends,
        appends_per_sec: total.appends as f64 / secs,
        bytes_per_sec: (total.appends as f64 * config.size as f64) / secs,
        errors,
        errors_by_kind: total.errors_by_kind,
        error_samples: total.error_samples,
        latency: total.latencies.summary(),
        timeline,
    })
}

/// Creates every stream, a few at a time; any answer but 201 or 200 stops the run.
async fn create_streams(target: &Target, paths: &Arc<Vec<String>>) -> anyhow::Result<()> {
    let workers = paths.len().min(8);
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let target = target.clone();
        let paths = Arc::clone(paths);
        tasks.spawn(async move {
            let mut conn = Connection::open(&target).await?;
            for path in paths.iter().skip(worker).step_by(workers) {
                let answer = conn
                    .create_stream(path, CONTENT_TYPE)
                    .await
                    .with_context(|| format!("creating {path}"))?;
                if !answer.status.is_success() {
                    bail!(
                        "creating {path}: {} {}",
                        answer.status,
                        answer.body_excerpt()
                    );
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a stream-creating task failed")??;
    }
    Ok(())
}

/// One producer: sequential appends on one connection until the window ends.
async fn produce(
    index: usize,
    target: Target,
    paths: Arc<Vec<String>>,
    body: Bytes,
    live: Arc<Live>,
    window: Window,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Connection> = None;
    let mut stream = index % paths.len();
    loop {
        if Instant::now() >= window.end {
            break;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Connection::open(&target).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    tally.error(&live, "connect".to_owned(), || format!("{e:#}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let path = &paths[stream];
        let sent = Instant::now();
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT, c.post(path, CONTENT_TYPE, body.clone()))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {REQUEST_TIMEOUT:?}")));
        let elapsed = sent.elapsed();
        match answer {
            Ok(answer) if answer.status.is_success() => {
                live.acked.fetch_add(1, Ordering::Relaxed);
                if sent >= window.measure_from && sent < window.end {
                    tally.appends += 1;
                    tally.latencies.record(elapsed);
                }
            }
            Ok(answer) => {
                tally.error(&live, format!("http {}", answer.status.as_u16()), || {
                    format!("POST {path}: {} {}", answer.status, answer.body_excerpt())
                });
            }
            Err(e) => {
                tally.error(&live, "transport".to_owned(), || {
                    format!("POST {path}: {e:#}")
                });
                conn = None;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        stream = (stream + 1) % paths.len();
    }
    tally
}

/// Updates the bar five times a second and returns the acknowledgements of each whole second.
async fn tick(live: Arc<Live>, progress: Progress, start: Instant, window: Window) -> Vec<u64> {
    let mut timeline = Vec::new();
    let mut last_second_total = 0;
    let mut next_second = start + Duration::from_secs(1);
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        interval.tick().await;
        let now = Instant::now();
        let acked = live.acked.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        if now >= next_second {
            timeline.push(acked - last_second_total);
            last_second_total = acked;
            next_second += Duration::from_secs(1);
        }
        let phase = if now < window.measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        let rate = timeline.last().copied().unwrap_or(0);
        progress.update(
            now - start,
            format!("{phase}  {rate}/s  acked {acked}  errors {errors}"),
        );
        if now >= window.end {
            return timeline;
        }
    }
}

/// A recognisable, non-compressible-looking body of `size` bytes.
fn payload(size: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            b'a' + (state % 26) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_size() {
        assert_eq!(payload(256).len(), 256);
        assert!(payload(64).iter().all(u8::is_ascii_lowercase));
    }
}
