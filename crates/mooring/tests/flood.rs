//! A flood from one client, against the real binary: frames over the size limit, events over
//! the size limit, a publish storm past the rate limit, and a socket attached to a busy session
//! that never reads. Meanwhile a well-behaved pair of connections on another session measures
//! publish-to-delivery latency.
//!
//! What must hold:
//! - the flooder gets the documented answers: `too_large` for each oversized event, the
//!   connection ended for each frame over 1 MiB, `rate_limited` in the storm, and the socket
//!   that never reads is closed as a slow consumer (`4008`, counted in
//!   `mooring_slow_consumer_disconnects_total`);
//! - the server's resident memory (`VmRSS` of the `mooring serve` process, sampled every
//!   100 ms) grows by less than [`RSS_GROWTH_BOUND`] beyond the events it accepted, over its
//!   value before the flood, while the flood pushes several times that through it;
//! - the calm session's latency p99 stays under [`P99_BOUND`] (or [`P99_FACTOR`] times its
//!   p99 before the flood, if the machine is that slow on its own), and it loses nothing.
//!
//! The bounds are properties, not benchmarks: generous enough for a loaded 2-core machine and
//! a debug build (the figures measured so far are beside each constant; a run prints its own
//! with `--nocapture`), and tight
//! enough that a server holding what the flooder sends, or stalling every session behind one
//! flooded connection, fails. Linux only: memory is read from `/proc`.
#![cfg(target_os = "linux")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mooring_protocol::realtime::{AttachFrom, AttachPoint, ErrorCode, ServerFrame};
use mooring_testkit::ws::{self, ConnectOptions, Incoming, RealtimeClient};
use mooring_testkit::{MooringProcess, ServerConfig};

/// How long the flood lasts at least, and at most: it goes on past the least until the idle
/// reader was closed as a slow consumer (how soon depends on how fast this machine's disk
/// takes the busy session's writes). The server's heartbeat is set long enough (dead after
/// 75 s) that the idle reader, which answers no ping, is not dropped as dead first.
const FLOOD: Duration = Duration::from_secs(10);
const FLOOD_MAX: Duration = Duration::from_secs(60);
/// Resident memory the flood may add to the server beyond the events it accepted (which the
/// store's page cache may hold, and which the rate limit caps). The flood sends over 400 MiB,
/// most of it in frames the server must refuse; each connection's queue holds at most 4 MiB.
/// Measured here: +19 to +60 MiB in all, 11 to 14 MiB of it accepted events.
const RSS_GROWTH_BOUND: u64 = 96 << 20;
/// Latency bound of the calm session: 99% of its events during the flood arrive within this
/// of their publish, or within [`P99_FACTOR`] times the p99 of the same session before the
/// flood, whichever is larger (on a machine whose disk or CPU stalls on its own, the flood
/// is only answerable for what it adds). Measured on a loaded 2-core machine with debug
/// builds and a fuzzer running: p99 16 to 21 ms alone, 299 to 323 ms during the flood (its
/// storm is thousands of frames a second the server must read to refuse, and the busy
/// session's fsyncs share the disk); with a build of the whole workspace beside it, 518 ms
/// alone. A node that let one connection stall the others would take seconds.
const P99_BOUND: Duration = Duration::from_millis(750);
const P99_FACTOR: u32 = 3;
/// Busy publishes in flight at once: an agent pipelining a few. (With 32, this machine's
/// calm session saw p99 0.85 to 1 s: the embedded engine writes sessions' commits in one
/// queue, so a session with many large publishes in flight delays every other.)
const BUSY_WINDOW: usize = 4;
/// Publish rate of the flooder's node, low enough that one connection surely exceeds it.
const RATE: u32 = 100;
const BURST: u32 = 200;
/// How often the flooder opens a connection to send a frame over the limit: 40 MiB a second.
const OVERSIZED_EVERY: Duration = Duration::from_millis(50);
/// How long the calm session runs before the flood starts.
const CALM_ALONE: Duration = Duration::from_secs(3);
/// Answers the test waits for.
const PROMPT: Duration = Duration::from_secs(30);
/// Events published to the session the idle reader is attached to: near the 64 KiB limit.
const BUSY_EVENT_BYTES: usize = 48 << 10;

/// `VmRSS` (or another `/proc/<pid>/status` field) in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The value of a counter on `/metrics` (0 if it was never incremented).
async fn counter(base_url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base_url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// What the flooder saw.
#[derive(Debug, Default)]
struct FloodReport {
    oversized_events: u64,
    too_large: u64,
    oversized_frames: u64,
    frames_ended: u64,
    storm_sent: u64,
    storm_acked: u64,
    rate_limited: u64,
    busy_published: u64,
    bytes_sent: u64,
}

/// Latencies of the calm session, before and during the flood.
#[derive(Debug, Default)]
struct Calm {
    published: usize,
    before: Vec<Duration>,
    during: Vec<Duration>,
}

/// The calm session on its own thread and runtime, so the flooding tasks of this test process
/// cannot delay its reads: one writer publishing every 20 ms and waiting for each ack, one
/// reader attached from the latest. `ready` is told once both are connected; from then on it
/// publishes until `stop`, tagging each event with whether `flooding` was set when it was sent.
fn calm(
    url: String,
    flooding: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) -> Calm {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let mut reader = RealtimeClient::connect(&url, "calm-reader")
            .await
            .expect("connect");
        reader
            .attach("calm:1", Some(AttachFrom::Named(AttachPoint::Latest)))
            .await
            .expect("attach");
        let mut writer = RealtimeClient::connect(&url, "calm-writer")
            .await
            .expect("connect");
        ready.send(()).expect("the test waits");
        let sent_at: Mutex<HashMap<i64, (Instant, bool)>> = Mutex::default();
        let write = async {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let during = flooding.load(Ordering::Relaxed);
                sent_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(n, (Instant::now(), during));
                let ack = writer
                    .publish("calm:1", vec![ws::create("tick", n)], PROMPT)
                    .await
                    .expect("calm publish");
                assert!(matches!(ack, ServerFrame::Ack { .. }), "{ack:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            n
        };
        let read = async {
            let mut calm = Calm::default();
            loop {
                let frame = match reader.recv(Duration::from_millis(500)).await {
                    Ok(Incoming::Frame(frame)) => frame,
                    Ok(Incoming::Closed(code)) => panic!("the calm reader was closed: {code:?}"),
                    Err(_) if stop.load(Ordering::Relaxed) => break calm,
                    Err(_) => continue,
                };
                let ServerFrame::Event { event, .. } = frame else {
                    continue;
                };
                let Some(n) = event.data.as_i64() else {
                    continue;
                };
                let sent = sent_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&n)
                    .copied();
                if let Some((at, during)) = sent {
                    let latency = at.elapsed();
                    if during {
                        calm.during.push(latency);
                    } else {
                        calm.before.push(latency);
                    }
                }
            }
        };
        let (published, mut calm) = tokio::join!(write, read);
        calm.published = usize::try_from(published).unwrap_or(usize::MAX);
        calm
    })
}

fn summary(latencies: &mut [Duration]) -> (Duration, Duration, Duration) {
    latencies.sort();
    if latencies.is_empty() {
        return Default::default();
    }
    (
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        latencies[latencies.len() - 1],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_client_leaves_memory_bounded_and_other_sessions_prompt() {
    let data = tempfile::tempdir().expect("data dir");
    let config = ServerConfig::new(env!("CARGO_BIN_EXE_mooring"), data.path())
        .arg("--max-publishes-per-sec")
        .arg(&RATE.to_string())
        .arg("--publish-burst")
        .arg(&BURST.to_string())
        .arg("--heartbeat-ms")
        .arg("30000");
    let server = MooringProcess::start(config).await.expect("server");
    let pid = server.pid().expect("a running server");
    let url = server.base_url();

    // The idle reader attaches before the flood and never reads after `live`.
    let mut idle = RealtimeClient::connect_with(
        &url,
        "flooder",
        &ConnectOptions {
            recv_buffer: Some(32 << 10),
            answer_pings: false,
        },
    )
    .await
    .expect("connect");
    idle.attach("flood:busy", Some(AttachFrom::Named(AttachPoint::Latest)))
        .await
        .expect("attach");
    for _ in 0..2 {
        match idle.recv_frame(PROMPT).await.expect("attached, live") {
            ServerFrame::Attached { .. } | ServerFrame::Live { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    // The calm session runs alone first, for a latency to compare with.
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = Arc::new(AtomicBool::new(false));
    let (ready, is_ready) = std::sync::mpsc::channel();
    let calm_thread = std::thread::spawn({
        let (url, flooding, stop) = (url.clone(), flooding.clone(), stop.clone());
        move || calm(url, flooding, stop, ready)
    });
    tokio::task::spawn_blocking(move || is_ready.recv())
        .await
        .expect("join")
        .expect("the calm session connects");
    tokio::time::sleep(CALM_ALONE).await;
    let baseline = proc_status_bytes(pid, "VmRSS");
    let slow_before = counter(&url, "mooring_slow_consumer_disconnects_total").await;

    flooding.store(true, Ordering::Relaxed);
    let report = Arc::new(Mutex::new(FloodReport::default()));
    let flood = vec![
        tokio::spawn(storm(url.clone(), stop.clone(), report.clone())),
        tokio::spawn(busy(url.clone(), stop.clone(), report.clone())),
        tokio::spawn(oversized_frames(url.clone(), stop.clone(), report.clone())),
    ];
    let started = Instant::now();
    let mut peak = baseline;
    let mut last_check = started;
    while started.elapsed() < FLOOD_MAX {
        peak = peak.max(proc_status_bytes(pid, "VmRSS"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() >= FLOOD && last_check.elapsed() >= Duration::from_millis(500) {
            last_check = Instant::now();
            let closed = counter(&url, "mooring_slow_consumer_disconnects_total").await;
            if closed > slow_before {
                break;
            }
        }
    }
    let flooded = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.expect("a flood task");
    }
    peak = peak.max(proc_status_bytes(pid, "VmRSS"));
    let mut calm = tokio::task::spawn_blocking(move || calm_thread.join())
        .await
        .expect("join")
        .expect("the calm session");

    // The idle reader reads now: what the kernel held, then the end of its connection.
    let mut idle_events = 0u64;
    let ending = loop {
        match idle.recv(PROMPT).await {
            Ok(Incoming::Frame(ServerFrame::Event { .. })) => idle_events += 1,
            Ok(Incoming::Frame(_)) => {}
            Ok(Incoming::Closed(code)) => break code,
            Err(e) => panic!("the idle reader's connection was kept open: {e}"),
        }
    };
    let slow_consumers =
        counter(&url, "mooring_slow_consumer_disconnects_total").await - slow_before;
    let report = std::mem::take(&mut *report.lock().unwrap_or_else(|p| p.into_inner()));

    let received = calm.before.len() + calm.during.len();
    let (alone_p50, alone_p99, alone_max) = summary(&mut calm.before);
    let (p50, p99, max) = summary(&mut calm.during);
    let bound = P99_BOUND.max(alone_p99 * P99_FACTOR);
    let growth = peak.saturating_sub(baseline);
    println!(
        "flood for {flooded:.1?}: {:.1} MiB sent by the flooder; {} oversized events -> {} too_large; \
         {} frames over 1 MiB -> {} connections ended; storm {} publishes -> {} acked, {} \
         rate_limited; {} busy events of {} KiB; idle reader got {idle_events} events then \
         close {ending:?}, slow consumer closes {slow_consumers}",
        mib(report.bytes_sent),
        report.oversized_events,
        report.too_large,
        report.oversized_frames,
        report.frames_ended,
        report.storm_sent,
        report.storm_acked,
        report.rate_limited,
        report.busy_published,
        BUSY_EVENT_BYTES >> 10,
    );
    println!(
        "server RSS: {:.1} MiB before, peak {:.1} MiB (+{:.1} MiB; bound +{:.0} MiB beyond \
         {:.1} MiB of accepted events), VmHWM {:.1} MiB",
        mib(baseline),
        mib(peak),
        mib(growth),
        mib(RSS_GROWTH_BOUND),
        mib(report.busy_published * BUSY_EVENT_BYTES as u64),
        mib(proc_status_bytes(pid, "VmHWM")),
    );
    println!(
        "calm session: {received} of {} events; alone ({} events) p50 {alone_p50:?}, p99 \
         {alone_p99:?}, max {alone_max:?}; during the flood ({} events) p50 {p50:?}, p99 \
         {p99:?}, max {max:?} (bound p99 {bound:?})",
        calm.published,
        calm.before.len(),
        calm.during.len(),
    );

    assert_eq!(report.too_large, report.oversized_events);
    assert!(report.oversized_events > 0);
    assert_eq!(report.frames_ended, report.oversized_frames);
    assert!(report.oversized_frames > 0);
    assert!(report.rate_limited > 0, "the storm was never rate limited");
    assert!(
        ending.is_none() || ending == Some(4008),
        "the idle reader ended with {ending:?}"
    );
    assert!(slow_consumers >= 1.0, "no slow consumer was closed");
    assert!(idle_events < report.busy_published);
    let accepted = report.busy_published * BUSY_EVENT_BYTES as u64;
    assert!(
        growth < RSS_GROWTH_BOUND + accepted,
        "the server grew by {:.1} MiB, {:.1} MiB of it accepted events",
        mib(growth),
        mib(accepted)
    );
    assert!(
        report.bytes_sent > 2 * RSS_GROWTH_BOUND,
        "the flood was too small to tell"
    );
    assert_eq!(received, calm.published, "calm events were lost");
    assert!(!calm.during.is_empty());
    assert!(
        p99 < bound,
        "calm latency p99 {p99:?} during the flood (bound {bound:?})"
    );
}

/// Events over the size limit, then publish frames as fast as the socket takes them.
async fn storm(url: String, stop: Arc<AtomicBool>, report: Arc<Mutex<FloodReport>>) {
    let mut client = RealtimeClient::connect(&url, "flooder")
        .await
        .expect("connect");
    let huge = "x".repeat(100 << 10);
    for _ in 0..3 {
        let answer = client
            .publish(
                "flood:storm",
                vec![ws::create("huge", huge.as_str())],
                PROMPT,
            )
            .await
            .expect("an answer to an oversized event");
        let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
        report.oversized_events += 1;
        report.bytes_sent += huge.len() as u64;
        if matches!(answer, ServerFrame::Error { ref error, .. } if error.code == ErrorCode::TooLarge)
        {
            report.too_large += 1;
        }
    }
    while !stop.load(Ordering::Relaxed) {
        // 250 frames at once, then their answers: far over 100 a second.
        for i in 0..250 {
            client
                .send_publish("flood:storm", vec![ws::app_event("spam", i)])
                .await
                .expect("storm publish");
        }
        let (mut acked, mut limited) = (0, 0);
        for _ in 0..250 {
            match client.recv_frame(PROMPT).await.expect("a storm answer") {
                ServerFrame::Ack { .. } => acked += 1,
                ServerFrame::Error { error, .. } if error.code == ErrorCode::RateLimited => {
                    limited += 1
                }
                other => panic!("the storm got {other:?}"),
            }
        }
        let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
        report.storm_sent += 250;
        report.storm_acked += acked;
        report.rate_limited += limited;
        report.bytes_sent += 250 * 80;
    }
}

/// Publishes events near the size limit to the session the idle reader is attached to, as
/// fast as the rate limit lets it.
async fn busy(url: String, stop: Arc<AtomicBool>, report: Arc<Mutex<FloodReport>>) {
    let mut client = RealtimeClient::connect(&url, "flooder")
        .await
        .expect("connect");
    let filler = "b".repeat(BUSY_EVENT_BYTES);
    // Many publishes in flight, so the session gets busy however slow each fsync is: the
    // idle reader must be sent more than the socket buffers and its queue hold.
    let mut in_flight = 0;
    while !stop.load(Ordering::Relaxed) || in_flight > 0 {
        if in_flight < BUSY_WINDOW && !stop.load(Ordering::Relaxed) {
            client
                .send_publish("flood:busy", vec![ws::create("busy", filler.as_str())])
                .await
                .expect("a busy publish");
            in_flight += 1;
            continue;
        }
        let answer = client.recv_frame(PROMPT).await.expect("a busy answer");
        in_flight -= 1;
        let limited = {
            let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
            report.bytes_sent += BUSY_EVENT_BYTES as u64;
            match answer {
                ServerFrame::Ack { .. } => {
                    report.busy_published += 1;
                    false
                }
                ServerFrame::Error { error, .. } if error.code == ErrorCode::RateLimited => {
                    report.rate_limited += 1;
                    true
                }
                other => panic!("the busy publisher got {other:?}"),
            }
        };
        if limited {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Connections that each send one 2 MiB frame (the limit is 1 MiB): each must be ended. One
/// every [`OVERSIZED_EVERY`]: unpaced, this test's own process spends a core masking 2 MiB
/// frames (a debug build), which measures the machine rather than the server.
async fn oversized_frames(url: String, stop: Arc<AtomicBool>, report: Arc<Mutex<FloodReport>>) {
    let frame = format!(
        r#"{{"type":"publish","req":1,"session":"flood:frames","events":[{{"data":"{}"}}]}}"#,
        "f".repeat(2 << 20)
    );
    let mut pace = tokio::time::interval(OVERSIZED_EVERY);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let mut client = RealtimeClient::connect(&url, "flooder")
            .await
            .expect("connect");
        // The server may reset the socket before the whole frame is written.
        let sent = client.send_text(&frame).await;
        let ended = match sent {
            Err(_) => true,
            Ok(()) => loop {
                match client.recv(PROMPT).await {
                    Ok(Incoming::Closed(_)) => break true,
                    Ok(Incoming::Frame(_)) => continue,
                    Err(_) => break false,
                }
            },
        };
        let mut report = report.lock().unwrap_or_else(|p| p.into_inner());
        report.oversized_frames += 1;
        report.frames_ended += u64::from(ended);
        report.bytes_sent += frame.len() as u64;
    }
}
