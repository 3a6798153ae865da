//! Churn: many sessions, a writer streaming messages into each, and readers that keep dropping
//! their connection and resuming from the last serial they saw. Every reader must end with every
//! event exactly once, in order, and with messages equal to the writer's and the server's.
//!
//! Size and pace come from the environment (defaults in brackets):
//! `MOORING_CHURN_SESSIONS` [50], `MOORING_CHURN_EVENTS` per session [2000],
//! `MOORING_CHURN_READERS` per session [3], `MOORING_CHURN_DROP_MS` mean life of a reader's
//! connection, counted from the answer to its attach and exponentially distributed [250],
//! `MOORING_CHURN_ENGINE` `embedded` or `memory` [embedded], `MOORING_CHURN_SEED` to replay a
//! run. `scripts/churn-big` runs the big size.
//!
//! Half the sessions are in namespace `roll`, whose appends are rolled up (20 ms window), the
//! other half in `churn`, without rollup, so both paths are churned.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_or, Engine, Node};
use mooring_protocol::realtime::{AttachFrom, AttachMode, AttachPoint, ServerFrame};
use mooring_protocol::session::NewEvent;
use mooring_testkit::rng::{seed_from_env, SeededRng};
use mooring_testkit::session_check::{
    view_differences, ExpectedMessages, Reconstruction, SessionReport,
};
use mooring_testkit::ws::{self, Incoming, RealtimeClient, WsError};
use tokio::sync::watch;
use tokio::time::Instant as TokioInstant;

/// Publishes a writer keeps in flight before waiting for acknowledgements.
const WRITER_WINDOW: usize = 32;
/// A reader that sees nothing new for this long while it still misses events fails the test
/// (`MOORING_CHURN_STALL_SECS`).
const STALL: Duration = Duration::from_secs(60);
/// One connection attempt; a client retries after it (a fresh SYN, not the kernel's backoff).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a reader wakes to check whether it is done.
const READER_TICK: Duration = Duration::from_millis(100);
const ROLLUP_WINDOW: Duration = Duration::from_millis(20);

#[derive(Clone, Debug)]
struct Params {
    sessions: usize,
    events: u64,
    readers: usize,
    drop_mean_ms: f64,
    engine: Engine,
    seed: u64,
}

impl Params {
    fn from_env() -> Params {
        Params {
            sessions: env_or("MOORING_CHURN_SESSIONS", 50),
            events: env_or("MOORING_CHURN_EVENTS", 2000),
            readers: env_or("MOORING_CHURN_READERS", 3),
            drop_mean_ms: env_or("MOORING_CHURN_DROP_MS", 250.0),
            engine: Engine::from_env("MOORING_CHURN_ENGINE", Engine::Embedded),
            seed: seed_from_env("MOORING_CHURN_SEED"),
        }
    }
}

fn session_name(i: usize) -> String {
    if i % 2 == 0 {
        format!("churn:s{i}")
    } else {
        format!("roll:s{i}")
    }
}

/// What a writer made.
struct Written {
    expected: ExpectedMessages,
    published: u64,
    /// The highest serial it was acknowledged with: the session's last event.
    last_serial: u64,
}

/// What a reader saw, and how often it was cut off.
struct Read {
    reconstruction: Reconstruction,
    /// Drops the reader chose: clean closes and abandoned sockets.
    clean_drops: u64,
    abrupt_drops: u64,
    /// Cut-offs by the server: `seam_overflow` detaches and slow-consumer closes.
    seam_overflows: u64,
    server_closes: u64,
    /// Attaches that did not replay (they should all replay).
    unexpected_modes: Vec<String>,
    /// The slowest connect (to `welcome`) and attach (to `attached`).
    slowest_connect: Duration,
    slowest_attach: Duration,
    /// Connects that failed (and were retried), and the last failure.
    failed_connects: u64,
    last_connect_error: Option<String>,
    slowest_close: Duration,
    slowest_recv: Duration,
}

/// A uniform value in [0, 1).
fn unit(rng: &mut SeededRng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// An exponentially distributed delay with mean `mean_ms`.
fn exponential(rng: &mut SeededRng, mean_ms: f64) -> Duration {
    let ms = -mean_ms * (1.0 - unit(rng)).ln();
    Duration::from_micros((ms * 1000.0) as u64)
}

const WORDS: [&str; 12] = [
    "the ",
    "sky ",
    "is ",
    "blue ",
    "because ",
    "of ",
    "Rayleigh ",
    "scattering",
    ", ",
    "which ",
    "favours ",
    "short wavelengths. ",
];

struct Writer {
    client: RealtimeClient,
    session: String,
    outstanding: HashMap<u64, Option<u64>>,
    last_serial: u64,
    progress: Arc<AtomicU64>,
}

impl Writer {
    /// Handles one answer; fails on any refusal.
    fn settle(&mut self, frame: ServerFrame) -> Result<(), String> {
        match frame {
            ServerFrame::Ack { req, results, .. } => {
                let serial = results.iter().map(|r| r.serial).max().unwrap_or(0);
                self.last_serial = self.last_serial.max(serial);
                self.progress.store(self.last_serial, Ordering::Relaxed);
                if let Some(slot) = self.outstanding.get_mut(&req) {
                    *slot = Some(serial);
                }
                Ok(())
            }
            other => Err(format!("{}: writer got {other:?}", self.session)),
        }
    }

    async fn read_one(&mut self) -> Result<(), String> {
        let frame = self
            .client
            .recv_frame(Duration::from_secs(30))
            .await
            .map_err(|e| format!("{}: writer: {e}", self.session))?;
        self.settle(frame)?;
        self.outstanding.retain(|_, serial| serial.is_none());
        Ok(())
    }

    async fn send(&mut self, event: NewEvent) -> Result<u64, String> {
        let req = self
            .client
            .send_publish(&self.session, vec![event])
            .await
            .map_err(|e| format!("{}: writer: {e}", self.session))?;
        self.outstanding.insert(req, None);
        while self.outstanding.len() >= WRITER_WINDOW {
            self.read_one().await?;
        }
        Ok(req)
    }

    /// Publishes and waits for this request's serial.
    async fn send_and_wait(&mut self, event: NewEvent) -> Result<u64, String> {
        let req = self
            .client
            .send_publish(&self.session, vec![event])
            .await
            .map_err(|e| format!("{}: writer: {e}", self.session))?;
        self.outstanding.insert(req, None);
        loop {
            let frame = self
                .client
                .recv_frame(Duration::from_secs(30))
                .await
                .map_err(|e| format!("{}: writer: {e}", self.session))?;
            self.settle(frame)?;
            if let Some(Some(serial)) = self.outstanding.get(&req).copied() {
                self.outstanding.retain(|_, serial| serial.is_none());
                return Ok(serial);
            }
        }
    }
}

/// Streams `events` events into `session`: messages created, appended to word by word, now and
/// then rewritten or deleted, and a few application events.
async fn write(
    addr: String,
    session: String,
    events: u64,
    progress: Arc<AtomicU64>,
    mut rng: SeededRng,
) -> Result<Written, String> {
    let client_id = format!("writer-{session}");
    let client = RealtimeClient::connect(&addr, &client_id)
        .await
        .map_err(|e| format!("{session}: writer connect: {e}"))?;
    let mut w = Writer {
        client,
        session: session.clone(),
        outstanding: HashMap::new(),
        last_serial: 0,
        progress,
    };
    let mut expected = ExpectedMessages::new();
    let mut published = 0;
    while published < events {
        let message = w.send_and_wait(ws::create("response", "")).await?;
        expected.create(message, Some("response"), Some(&client_id), "".into());
        published += 1;
        let appends = rng.between(5, 60).min(events - published);
        for _ in 0..appends {
            let word = WORDS[rng.between(0, WORDS.len() as u64 - 1) as usize];
            w.send(ws::append(message, word)).await?;
            expected.append(message, word);
            published += 1;
        }
        if published < events && rng.between(0, 99) < 15 {
            let data = serde_json::json!({"rewritten": message});
            w.send(ws::update(message, data.clone())).await?;
            expected.update(message, data);
            published += 1;
        }
        if published < events && rng.between(0, 99) < 8 {
            w.send(ws::delete(message)).await?;
            expected.delete(message);
            published += 1;
        }
        if published < events && rng.between(0, 99) < 5 {
            w.send(ws::app_event(
                "tool-call",
                serde_json::json!({"after": message}),
            ))
            .await?;
            published += 1;
        }
    }
    while !w.outstanding.is_empty() {
        w.read_one().await?;
    }
    w.client.close().await;
    Ok(Written {
        expected,
        published,
        last_serial: w.last_serial,
    })
}

/// Reads `session` until it has seen serial `last` (once the writer says which), dropping the
/// connection after exponentially distributed times and resuming from the last serial seen.
async fn read(
    addr: String,
    session: String,
    reader: usize,
    mut last: watch::Receiver<Option<u64>>,
    written: Arc<AtomicU64>,
    drop_mean_ms: f64,
    mut rng: SeededRng,
) -> Result<Read, String> {
    let stall = Duration::from_secs(env_or("MOORING_CHURN_STALL_SECS", STALL.as_secs()));
    let mut out = Read {
        reconstruction: Reconstruction::new(),
        clean_drops: 0,
        abrupt_drops: 0,
        seam_overflows: 0,
        server_closes: 0,
        unexpected_modes: Vec::new(),
        slowest_connect: Duration::ZERO,
        slowest_attach: Duration::ZERO,
        failed_connects: 0,
        last_connect_error: None,
        slowest_close: Duration::ZERO,
        slowest_recv: Duration::ZERO,
    };
    let client_id = format!("reader-{reader}-{session}");
    let mut progress_at = Instant::now();
    let mut progress_serial = 0;
    let done = |out: &Read, last: &watch::Receiver<Option<u64>>| {
        last.borrow()
            .is_some_and(|l| out.reconstruction.last_serial() >= l)
    };
    'connection: loop {
        if done(&out, &last) {
            return Ok(out);
        }
        let connecting = Instant::now();
        let attempt = RealtimeClient::connect(&addr, &client_id);
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Err(WsError::Timeout(CONNECT_TIMEOUT)));
        out.slowest_connect = out.slowest_connect.max(connecting.elapsed());
        let mut client = match connected {
            Ok(c) => c,
            Err(e) if progress_at.elapsed() < stall => {
                out.failed_connects += 1;
                out.last_connect_error = Some(format!("{e} after {:?}", connecting.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(e) => return Err(format!("{session} reader {reader}: connect: {e}")),
        };
        let from = |r: &Reconstruction| match r.resume_position() {
            Some(p) => Some(AttachFrom::Position(p)),
            None => Some(AttachFrom::Named(AttachPoint::Start)),
        };
        client
            .attach(&session, from(&out.reconstruction))
            .await
            .map_err(|e| format!("{session} reader {reader}: attach: {e}"))?;
        let mut attaching = Some(Instant::now());
        // The connection's life is counted from the answer to its attach: a reader dropping
        // before a busy node even answered would never make progress.
        let mut drop_at: Option<TokioInstant> = None;
        loop {
            if done(&out, &last) {
                client.close().await;
                return Ok(out);
            }
            if out.reconstruction.last_serial() != progress_serial {
                progress_serial = out.reconstruction.last_serial();
                progress_at = Instant::now();
            } else if progress_at.elapsed() > stall {
                return Err(format!(
                    "{session} reader {reader}: stalled at serial {progress_serial} (writer's last: \
                     {:?}, acknowledged so far: {}; {} drops, {} server closes, {} seam retries, \
                     slowest connect {:?}, slowest attach {:?}, waiting for attached: {:?}, \
                     {} failed connects, the last: {:?}, slowest close {:?}, slowest read {:?})",
                    *last.borrow(),
                    written.load(Ordering::Relaxed),
                    out.clean_drops + out.abrupt_drops,
                    out.server_closes,
                    out.seam_overflows,
                    out.slowest_connect,
                    out.slowest_attach,
                    attaching.map(|t| t.elapsed()),
                    out.failed_connects,
                    out.last_connect_error,
                    out.slowest_close,
                    out.slowest_recv,
                ));
            }
            let now = TokioInstant::now();
            if drop_at.is_some_and(|at| now >= at) {
                if rng.between(0, 1) == 0 {
                    let closing = Instant::now();
                    client.close().await;
                    out.slowest_close = out.slowest_close.max(closing.elapsed());
                    out.clean_drops += 1;
                } else {
                    client.drop_connection();
                    out.abrupt_drops += 1;
                }
                continue 'connection;
            }
            let wait = drop_at.map_or(READER_TICK, |at| (at - now).min(READER_TICK));
            let receiving = Instant::now();
            let incoming = tokio::select! {
                incoming = client.recv(wait) => incoming,
                _ = last.changed() => continue,
            };
            out.slowest_recv = out.slowest_recv.max(receiving.elapsed());
            match incoming {
                Err(WsError::Timeout(_)) => {}
                Err(e) => return Err(format!("{session} reader {reader}: {e}")),
                Ok(Incoming::Closed(_)) => {
                    out.server_closes += 1;
                    continue 'connection;
                }
                Ok(Incoming::Frame(frame)) => match &frame {
                    ServerFrame::Event { epoch, event, .. } => {
                        out.reconstruction.observe(*epoch, event);
                    }
                    ServerFrame::Attached { mode, serial, .. } => {
                        if let Some(t) = attaching.take() {
                            out.slowest_attach = out.slowest_attach.max(t.elapsed());
                        }
                        if drop_at.is_none() {
                            drop_at =
                                Some(TokioInstant::now() + exponential(&mut rng, drop_mean_ms));
                        }
                        if *mode != AttachMode::Replay {
                            out.unexpected_modes
                                .push(format!("attach answered {mode:?} at serial {serial}"));
                        }
                    }
                    ServerFrame::Detached { error: Some(e), .. } if e.retryable => {
                        out.seam_overflows += 1;
                        attaching = Some(Instant::now());
                        client
                            .attach(&session, from(&out.reconstruction))
                            .await
                            .map_err(|e| format!("{session} reader {reader}: attach: {e}"))?;
                    }
                    ServerFrame::Detached { .. } | ServerFrame::Error { .. } => {
                        return Err(format!("{session} reader {reader}: unexpected {frame:?}"))
                    }
                    // `live`, and frames of other features (presence) this test does not use.
                    _ => {}
                },
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn readers_that_keep_dropping_miss_nothing_and_see_nothing_twice() {
    let p = Params::from_env();
    println!(
        "churn: seed {} (replay with MOORING_CHURN_SEED={}), {} sessions x {} events, {} readers each, drops every {} ms on average, {} engine",
        p.seed, p.seed, p.sessions, p.events, p.readers, p.drop_mean_ms, p.engine.name()
    );
    let started = Instant::now();
    // Writers publish as fast as the node acknowledges; the rate limit is not under test.
    let mut realtime = common::unthrottled();
    realtime
        .namespace_rollup
        .insert("roll".to_owned(), ROLLUP_WINDOW);
    let node = Node::start(p.engine, realtime).await;
    let mut rng = SeededRng::new(p.seed);

    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut finals = Vec::new();
    for i in 0..p.sessions {
        let session = session_name(i);
        let (tx, rx) = watch::channel(None);
        finals.push(tx);
        let progress = Arc::new(AtomicU64::new(0));
        for r in 0..p.readers {
            readers.push((
                i,
                tokio::spawn(read(
                    node.addr.clone(),
                    session.clone(),
                    r,
                    rx.clone(),
                    progress.clone(),
                    p.drop_mean_ms,
                    rng.fork(),
                )),
            ));
        }
        writers.push(tokio::spawn(write(
            node.addr.clone(),
            session,
            p.events,
            progress,
            rng.fork(),
        )));
    }

    let mut written = Vec::new();
    for (i, writer) in writers.into_iter().enumerate() {
        let w = writer.await.expect("writer task").expect("writer");
        let _ = finals[i].send(Some(w.last_serial));
        written.push(w);
    }
    let wrote_in = started.elapsed();

    let mut reads: Vec<Vec<Read>> = (0..p.sessions).map(|_| Vec::new()).collect();
    let mut failures = Vec::new();
    for (i, reader) in readers {
        match reader.await.expect("reader task") {
            Ok(r) => reads[i].push(r),
            Err(e) => failures.push(e),
        }
    }

    let mut totals = SessionReport::default();
    let (mut clean, mut abrupt, mut seams, mut closes) = (0, 0, 0, 0);
    let (mut slowest_connect, mut slowest_attach) = (Duration::ZERO, Duration::ZERO);
    let mut failed_connects = 0;
    let mut log_events = 0;
    for (i, (w, rs)) in written.iter().zip(&reads).enumerate() {
        let session = session_name(i);
        let snapshot = node
            .store
            .snapshot(&session)
            .await
            .expect("snapshot reads")
            .expect("session exists");
        log_events += snapshot.info.tail.serial;
        if snapshot.info.tail.serial != w.last_serial {
            failures.push(format!(
                "{session}: the log ends at {} but the writer's last serial is {}",
                snapshot.info.tail.serial, w.last_serial
            ));
        }
        let server_diff = w.expected.differences(&snapshot.messages);
        if !server_diff.is_empty() {
            failures.push(format!("{session}: server vs writer: {server_diff:?}"));
        }
        for (r, read) in rs.iter().enumerate() {
            let report = read.reconstruction.report(Some(w.last_serial));
            totals.add(&report);
            clean += read.clean_drops;
            abrupt += read.abrupt_drops;
            seams += read.seam_overflows;
            closes += read.server_closes;
            slowest_connect = slowest_connect.max(read.slowest_connect);
            slowest_attach = slowest_attach.max(read.slowest_attach);
            failed_connects += read.failed_connects;
            if !report.is_clean() {
                failures.push(format!("{session} reader {r}: {report}"));
            }
            if !read.unexpected_modes.is_empty() {
                failures.push(format!("{session} reader {r}: {:?}", read.unexpected_modes));
            }
            let messages = read.reconstruction.messages();
            let vs_writer = w.expected.differences(&messages);
            if !vs_writer.is_empty() {
                failures.push(format!("{session} reader {r} vs writer: {vs_writer:?}"));
            }
            let vs_server = view_differences(&messages, &snapshot.messages);
            if !vs_server.is_empty() {
                failures.push(format!("{session} reader {r} vs server: {vs_server:?}"));
            }
        }
    }
    let published: u64 = written.iter().map(|w| w.published).sum();
    let messages: usize = written.iter().map(|w| w.expected.len()).sum();
    println!(
        "churn: {} sessions, {published} events published ({log_events} log events after rollup, \
         {messages} live messages), {} readers, {} reconnects ({clean} clean, {abrupt} abrupt, \
         {closes} closed by the server, {seams} seam_overflow re-attaches), {} events delivered, \
         lost {}, duplicated {}, reordered {}, gaps {}; slowest connect {} ms ({failed_connects} \
         connects retried), slowest attach {} ms; written in {:.1} s, total {:.1} s",
        p.sessions,
        p.sessions * p.readers,
        clean + abrupt + closes + seams,
        totals.deliveries,
        totals.lost,
        totals.duplicates,
        totals.reorders,
        totals.gaps,
        slowest_connect.as_millis(),
        slowest_attach.as_millis(),
        wrote_in.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        failures.is_empty(),
        "seed {}: {} failures, the first: {:#?}",
        p.seed,
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(totals.is_clean(), "{totals}");
    assert_eq!(published, p.events * p.sessions as u64);
    node.stop().await.expect("the node stops cleanly");
}
