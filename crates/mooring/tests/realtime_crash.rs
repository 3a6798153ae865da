//! Kill and restart over the realtime protocol, on the embedded engine: writers stream messages
//! and readers follow them over WebSocket while the `mooring` process is SIGKILLed mid-stream and
//! restarted on the same data directory, several times. Every client reconnects and resumes.
//!
//! What must hold at the end, per session:
//! - every acknowledged event is in the log at the serial it was acknowledged with (0 lost), and
//!   no event appears twice (0 duplicates);
//! - writers that retry with ids (sessions 0 and 1) end with exactly what they sent, each event
//!   once (the dedupe window survives the restart);
//! - writers that do not retry their appends (sessions 2 and 3) find each message holding its
//!   acknowledged appends and then some of its unacknowledged ones, whole and in order;
//! - every reader saw every serial once, in order, and folds it into messages equal to the
//!   server's materialized view and to the writer's.
//!
//! `MOORING_RT_CRASH_CYCLES` [3] sets the kills, `MOORING_RT_CRASH_SEED` replays a run.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use mooring_testkit::protocol::realtime::{AttachFrom, AttachMode, AttachPoint, ServerFrame};
use mooring_testkit::protocol::session::{Action, MessageView, NewEvent};
use mooring_testkit::rng::{seed_from_env, SeededRng};
use mooring_testkit::session_check::{
    events_of, view_differences, ExpectedMessages, Reconstruction, SessionReport,
};
use mooring_testkit::ws::{self, Incoming, RealtimeClient, WsError};
use mooring_testkit::{MooringProcess, ServerConfig, StreamClient};
use tokio::sync::watch;

const SESSIONS: usize = 4;
const READERS: usize = 2;
const WINDOW: usize = 16;
/// How long clients keep trying to reach a restarting server.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
const PROMPT: Duration = Duration::from_secs(10);

fn session_name(i: usize) -> String {
    format!("crash:s{i}")
}

fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Connects to the node's current address, retrying while it restarts.
async fn reconnect(
    addr: &watch::Receiver<String>,
    client_id: &str,
) -> anyhow::Result<RealtimeClient> {
    let since = Instant::now();
    loop {
        let current = addr.borrow().clone();
        match RealtimeClient::connect(&current, client_id).await {
            Ok(client) => return Ok(client),
            Err(e) if since.elapsed() > RECONNECT_FOR => {
                bail!("{client_id}: could not reconnect for {RECONNECT_FOR:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The materialized view through a fresh `latest` attach, as a reconstruction.
async fn fetch_view(
    addr: &watch::Receiver<String>,
    session: &str,
) -> anyhow::Result<Reconstruction> {
    let mut client = reconnect(addr, "view-checker").await?;
    client
        .attach(session, Some(AttachFrom::Named(AttachPoint::Latest)))
        .await?;
    let mut view = Reconstruction::new();
    loop {
        match client.recv_frame(PROMPT).await? {
            ServerFrame::Attached { epoch, serial, .. } => view.begin_view(epoch, serial),
            ServerFrame::Event { event, .. } => view.observe_view(&event),
            ServerFrame::Live { .. } => break,
            _ => {}
        }
    }
    view.end_view();
    client.close().await;
    Ok(view)
}

/// A publish sent and not yet acknowledged.
struct InFlight {
    req: u64,
    events: Vec<NewEvent>,
    /// Resent after a reconnect (it has ids), or abandoned.
    retry: bool,
    /// For a non-retried append: its index among the current message's appends.
    append_index: Option<usize>,
}

/// The appends of the current message of a writer that does not retry them.
#[derive(Default)]
struct Unretried {
    appends: Vec<String>,
    /// Appends found missing after a restart (unacknowledged, and not written).
    lost: Vec<bool>,
    /// The first append sent on the current connection.
    conn_start: usize,
    /// Appends below this index are acknowledged (so durable, with every one before them).
    acked: usize,
}

impl Unretried {
    /// The text of the appends below `upto` that were written.
    fn text(&self, upto: usize) -> String {
        self.appends[..upto]
            .iter()
            .zip(&self.lost)
            .filter(|(_, lost)| !**lost)
            .map(|(t, _)| t.as_str())
            .collect()
    }
}

#[derive(Default)]
struct WriterTotals {
    acked: u64,
    duplicates: u64,
    resent: u64,
    reconnects: u64,
    abandoned: u64,
    abandoned_survived: u64,
}

/// What an acknowledged event was.
#[derive(Clone, Debug)]
struct Acked {
    id: Option<String>,
    action: Action,
    reference: Option<u64>,
}

struct Writer {
    session: String,
    client_id: String,
    retrying: bool,
    addr: watch::Receiver<String>,
    client: Option<RealtimeClient>,
    in_flight: VecDeque<InFlight>,
    expected: ExpectedMessages,
    /// Acknowledged events by serial (several when appends were rolled up into one event).
    acked: BTreeMap<u64, Vec<Acked>>,
    next_id: u64,
    current: Unretried,
    current_message: Option<u64>,
    totals: WriterTotals,
}

impl Writer {
    fn id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.session, self.next_id)
    }

    /// Takes one answer; returns the first event's id and serial.
    fn settle(&mut self, frame: ServerFrame) -> anyhow::Result<(Option<String>, u64)> {
        let ServerFrame::Ack { req, results, .. } = frame else {
            bail!("{}: writer got {frame:?}", self.session);
        };
        let Some(at) = self.in_flight.iter().position(|f| f.req == req) else {
            bail!("{}: an answer to unknown request {req}", self.session);
        };
        let Some(done) = self.in_flight.remove(at) else {
            bail!("{}: request {req} vanished", self.session);
        };
        ensure!(
            results.len() == done.events.len(),
            "{}: {} results for {} events",
            self.session,
            results.len(),
            done.events.len()
        );
        for (event, result) in done.events.iter().zip(&results) {
            self.totals.acked += 1;
            self.totals.duplicates += u64::from(result.duplicate);
            self.acked.entry(result.serial).or_default().push(Acked {
                id: event.id.clone(),
                action: event.action,
                reference: event.reference,
            });
        }
        if let Some(index) = done.append_index {
            self.current.acked = self.current.acked.max(index + 1);
        }
        let first = done.events.first().and_then(|e| e.id.clone());
        Ok((first, results.first().map_or(0, |r| r.serial)))
    }

    /// Sends through reconnects. A non-retried append whose send fails has an unknown outcome:
    /// it is kept as unacknowledged, and settled after the reconnect like the others.
    async fn send(
        &mut self,
        events: Vec<NewEvent>,
        retry: bool,
        append: Option<&str>,
    ) -> anyhow::Result<()> {
        loop {
            if self.client.is_none() {
                self.recover().await?;
            }
            let Some(client) = self.client.as_mut() else {
                continue;
            };
            let sent = client.send_publish(&self.session, events.clone()).await;
            if sent.is_err() && retry {
                self.client = None;
                continue;
            }
            let append_index = append.map(|text| {
                self.current.appends.push(text.to_owned());
                self.current.lost.push(false);
                self.current.appends.len() - 1
            });
            self.in_flight.push_back(InFlight {
                req: sent.as_ref().map_or(0, |r| *r),
                events,
                retry,
                append_index,
            });
            if sent.is_err() {
                self.client = None;
            }
            return Ok(());
        }
    }

    /// Reads one answer; a lost connection is recovered from instead.
    async fn read_one(&mut self) -> anyhow::Result<Option<(Option<String>, u64)>> {
        let Some(client) = self.client.as_mut() else {
            self.recover().await?;
            return Ok(None);
        };
        match client.recv(PROMPT).await {
            Ok(Incoming::Frame(frame)) => self.settle(frame).map(Some),
            Ok(Incoming::Closed(_)) | Err(WsError::Socket(_)) => {
                self.client = None;
                self.recover().await?;
                Ok(None)
            }
            Err(e) => Err(e).context(format!("{}: writer", self.session)),
        }
    }

    /// Reconnects, settles abandoned appends against the server's view, and resends what is
    /// retried, in the order it was first sent.
    async fn recover(&mut self) -> anyhow::Result<()> {
        self.totals.reconnects += 1;
        let mut client = reconnect(&self.addr, &self.client_id).await?;
        let pending: Vec<InFlight> = self.in_flight.drain(..).collect();
        let abandoned = pending.iter().filter(|f| !f.retry).count() as u64;
        self.totals.abandoned += abandoned;
        if self.current.acked < self.current.appends.len() {
            self.settle_unretried().await?;
        }
        for f in pending.into_iter().filter(|f| f.retry) {
            self.totals.resent += 1;
            let req = client.send_publish(&self.session, f.events.clone()).await?;
            self.in_flight.push_back(InFlight { req, ..f });
        }
        self.client = Some(client);
        Ok(())
    }

    /// The current message's unacknowledged appends may or may not have landed; those that did
    /// must be whole and in order after the acknowledged ones.
    async fn settle_unretried(&mut self) -> anyhow::Result<()> {
        let Some(message) = self.current_message else {
            return Ok(());
        };
        let view = fetch_view(&self.addr, &self.session).await?;
        let found = view.messages().into_iter().find(|m| m.serial == message);
        let Some(found) = found else {
            bail!(
                "{}: message {message} vanished after a restart",
                self.session
            );
        };
        let text = found.data.as_str().unwrap_or_default().to_owned();
        let c = &mut self.current;
        let start = c.conn_start;
        let len = c.appends.len();
        let mut candidate = c.text(start);
        let mut landed = None;
        for n in start..=len {
            if n > start {
                candidate.push_str(&c.appends[n - 1]);
            }
            if n >= c.acked && candidate == text {
                landed = Some(n);
                break;
            }
        }
        let Some(n) = landed else {
            bail!(
                "{}: message {message} reads {text:?}; expected {:?} (acknowledged through \
                 append {}) and then some of {:?}, whole and in order",
                self.session,
                c.text(c.acked.max(start)),
                c.acked,
                &c.appends[c.acked.max(start)..]
            );
        };
        self.totals.abandoned_survived += (n - c.acked.max(start)) as u64;
        for lost in &mut c.lost[n..len] {
            *lost = true;
        }
        c.conn_start = len;
        c.acked = len;
        Ok(())
    }

    async fn create(&mut self) -> anyhow::Result<u64> {
        // Creates always carry an id and are retried, so the message exists exactly once.
        let id = self.id();
        let mut event = ws::create("response", "");
        event.id = Some(id.clone());
        self.send(vec![event], true, None).await?;
        loop {
            if let Some((Some(answered), serial)) = self.read_one().await? {
                if answered == id {
                    return Ok(serial);
                }
            }
        }
    }

    async fn publish(
        &mut self,
        mut events: Vec<NewEvent>,
        append: Option<&str>,
    ) -> anyhow::Result<()> {
        let retry = self.retrying || append.is_none();
        if retry {
            for e in &mut events {
                e.id = Some(self.id());
            }
        }
        self.send(events, retry, append.filter(|_| !retry)).await?;
        while self.in_flight.len() >= WINDOW {
            self.read_one().await?;
        }
        Ok(())
    }

    /// Waits for every answer, then fixes the current message's expected text.
    async fn finish_message(&mut self) -> anyhow::Result<()> {
        while !self.in_flight.is_empty() {
            self.read_one().await?;
        }
        if let (false, Some(message)) = (self.retrying, self.current_message) {
            let text = self.current.text(self.current.appends.len());
            self.expected.update(message, text.into());
        }
        Ok(())
    }

    async fn run(
        mut self,
        stop: watch::Receiver<bool>,
        mut rng: SeededRng,
    ) -> anyhow::Result<(Writer, u64)> {
        const WORDS: [&str; 8] = [
            "Why ",
            "is ",
            "the ",
            "sky ",
            "blue",
            "? ",
            "Rayleigh ",
            "scattering. ",
        ];
        while !*stop.borrow() {
            let message = self.create().await?;
            self.expected
                .create(message, Some("response"), Some(&self.client_id), "".into());
            self.current_message = Some(message);
            self.current = Unretried::default();
            for _ in 0..rng.between(10, 40) {
                let word = WORDS[rng.between(0, WORDS.len() as u64 - 1) as usize];
                self.publish(vec![ws::append(message, word)], Some(word))
                    .await?;
                if self.retrying {
                    self.expected.append(message, word);
                }
                if rng.between(0, 3) == 0 {
                    tokio::time::sleep(Duration::from_millis(rng.between(1, 10))).await;
                }
            }
            if self.retrying && rng.between(0, 9) == 0 {
                let text = format!("rewritten {message}");
                self.publish(vec![ws::update(message, text.as_str())], None)
                    .await?;
                self.expected.update(message, text.into());
            }
            if self.retrying && rng.between(0, 9) == 0 {
                self.publish(vec![ws::delete(message)], None).await?;
                self.expected.delete(message);
            }
            self.finish_message().await?;
        }
        let last = self.acked.keys().next_back().copied().unwrap_or(0);
        if let Some(client) = self.client.take() {
            client.close().await;
        }
        Ok((self, last))
    }
}

/// Follows a session across restarts until it has seen serial `last`.
async fn follow(
    session: String,
    client_id: String,
    addr: watch::Receiver<String>,
    mut last: watch::Receiver<Option<u64>>,
) -> anyhow::Result<(Reconstruction, u64)> {
    let mut recon = Reconstruction::new();
    let mut connections = 0;
    loop {
        let done = |r: &Reconstruction, l: &watch::Receiver<Option<u64>>| {
            l.borrow().is_some_and(|l| r.last_serial() >= l)
        };
        if done(&recon, &last) {
            return Ok((recon, connections));
        }
        let mut client = reconnect(&addr, &client_id).await?;
        connections += 1;
        let from = match recon.resume_position() {
            Some(p) => AttachFrom::Position(p),
            None => AttachFrom::Named(AttachPoint::Start),
        };
        if client.attach(&session, Some(from)).await.is_err() {
            continue;
        }
        loop {
            if done(&recon, &last) {
                client.close().await;
                return Ok((recon, connections));
            }
            let incoming = tokio::select! {
                incoming = client.recv(Duration::from_millis(200)) => incoming,
                _ = last.changed() => continue,
            };
            match incoming {
                Err(WsError::Timeout(_)) => {}
                Ok(Incoming::Closed(_)) | Err(WsError::Socket(_)) => break,
                Err(e) => return Err(e).context(client_id.clone()),
                Ok(Incoming::Frame(frame)) => match frame {
                    ServerFrame::Event { epoch, event, .. } => {
                        recon.observe(epoch, &event);
                    }
                    ServerFrame::Attached { mode, serial, .. } => {
                        ensure!(
                            mode == AttachMode::Replay,
                            "{client_id}: attach answered {mode:?} at serial {serial}: a reader \
                             saw an event the restart lost"
                        );
                    }
                    ServerFrame::Detached { .. } | ServerFrame::Error { .. } => {
                        bail!("{client_id}: unexpected {frame:?}")
                    }
                    _ => {}
                },
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resume_without_loss_across_sigkill_and_restart() -> anyhow::Result<()> {
    let seed = seed_from_env("MOORING_RT_CRASH_SEED");
    let cycles: u64 = env_or("MOORING_RT_CRASH_CYCLES", 3);
    println!(
        "realtime crash: seed {seed} (replay with MOORING_RT_CRASH_SEED={seed}), {cycles} kills"
    );
    let mut rng = SeededRng::new(seed);
    let started = Instant::now();
    let data = tempfile::tempdir().context("data directory")?;
    // Writers publish as fast as the node acknowledges; the rate limit is not under test.
    let config = ServerConfig::new(env!("CARGO_BIN_EXE_mooring"), data.path())
        .arg("--max-publishes-per-sec")
        .arg("1000000")
        .arg("--publish-burst")
        .arg("1000000");
    let mut server = MooringProcess::start(config).await?;
    let (addr_tx, addr) = watch::channel(server.base_url());
    let (stop_tx, stop) = watch::channel(false);

    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut finals = Vec::new();
    for i in 0..SESSIONS {
        let session = session_name(i);
        let (tx, rx) = watch::channel(None);
        finals.push(tx);
        for r in 0..READERS {
            readers.push((
                i,
                tokio::spawn(follow(
                    session.clone(),
                    format!("reader-{r}-{session}"),
                    addr.clone(),
                    rx.clone(),
                )),
            ));
        }
        let writer = Writer {
            session: session.clone(),
            client_id: format!("writer-{session}"),
            retrying: i < 2,
            addr: addr.clone(),
            client: None,
            in_flight: VecDeque::new(),
            expected: ExpectedMessages::new(),
            acked: BTreeMap::new(),
            next_id: 0,
            current: Unretried::default(),
            current_message: None,
            totals: WriterTotals::default(),
        };
        writers.push(tokio::spawn(writer.run(stop.clone(), rng.fork())));
    }

    for _ in 0..cycles {
        tokio::time::sleep(Duration::from_millis(rng.between(300, 1500))).await;
        server.kill()?;
        tokio::time::sleep(Duration::from_millis(rng.between(0, 300))).await;
        server.restart().await?;
        addr_tx.send_replace(server.base_url());
    }
    tokio::time::sleep(Duration::from_millis(rng.between(200, 800))).await;
    stop_tx.send_replace(true);

    let mut done = Vec::new();
    for (i, writer) in writers.into_iter().enumerate() {
        let (writer, last) = writer.await.context("writer task")??;
        finals[i].send_replace(Some(last));
        done.push(writer);
    }
    let mut follows: Vec<Vec<(Reconstruction, u64)>> = (0..SESSIONS).map(|_| Vec::new()).collect();
    for (i, reader) in readers {
        follows[i].push(reader.await.context("reader task")??);
    }

    let http = StreamClient::new(&server.base_url(), PROMPT)?;
    let mut totals = SessionReport::default();
    let mut sum = WriterTotals::default();
    let mut reader_connections = 0;
    for (i, writer) in done.iter().enumerate() {
        let session = session_name(i);
        let log = events_of(&http.read_all(&session).await?).map_err(anyhow::Error::msg)?;
        let tail = log.len() as u64;
        for (at, event) in log.iter().enumerate() {
            ensure!(
                event.serial == at as u64 + 1,
                "{session}: serial {} at {at}",
                event.serial
            );
        }
        // 0 lost: every acknowledged serial holds the ids it was acknowledged for.
        let by_serial: BTreeMap<u64, &mooring_testkit::protocol::session::Event> =
            log.iter().map(|e| (e.serial, e)).collect();
        for (serial, events) in &writer.acked {
            let Some(event) = by_serial.get(serial) else {
                bail!("{session}: acknowledged serial {serial} is not in the log of {tail}");
            };
            for acked in events {
                // Rolled-up appends share one event; anything else is the event itself.
                let held = if acked.action == Action::MessageAppend {
                    event.action == Action::MessageAppend && event.reference == acked.reference
                } else {
                    event.id == acked.id && event.action == acked.action
                };
                ensure!(
                    held,
                    "{session}: serial {serial} does not hold acknowledged {acked:?}: {event:?}"
                );
            }
        }
        // 0 duplicates: no id is written twice.
        let mut seen = HashSet::new();
        for event in &log {
            if let Some(id) = &event.id {
                ensure!(seen.insert(id.clone()), "{session}: id {id} written twice");
            }
        }
        let view = fetch_view(&addr, &session).await?;
        let view_messages: Vec<MessageView> = view.messages();
        let writer_diff = writer.expected.differences(&view_messages);
        ensure!(
            writer_diff.is_empty(),
            "{session}: server vs writer: {writer_diff:?}"
        );
        for (r, (recon, connections)) in follows[i].iter().enumerate() {
            reader_connections += connections;
            let report = recon.report(Some(tail));
            ensure!(report.is_clean(), "{session} reader {r}: {report}");
            totals.add(&report);
            let messages = recon.messages();
            let vs_server = view_differences(&messages, &view_messages);
            ensure!(
                vs_server.is_empty(),
                "{session} reader {r} vs server: {vs_server:?}"
            );
            let vs_writer = writer.expected.differences(&messages);
            ensure!(
                vs_writer.is_empty(),
                "{session} reader {r} vs writer: {vs_writer:?}"
            );
        }
        let t = &writer.totals;
        sum.acked += t.acked;
        sum.duplicates += t.duplicates;
        sum.resent += t.resent;
        sum.reconnects += t.reconnects;
        sum.abandoned += t.abandoned;
        sum.abandoned_survived += t.abandoned_survived;
    }
    println!(
        "realtime crash: {cycles} kills, {} events acknowledged ({} acknowledged as duplicates of \
         a resend), {} publishes resent with their ids, {} unacknowledged appends abandoned ({} of \
         them had landed, whole and in order), {} writer reconnects, {} reader connections, {} \
         events delivered, lost {}, duplicated {}, reordered {}, {:.1} s",
        sum.acked,
        sum.duplicates,
        sum.resent,
        sum.abandoned,
        sum.abandoned_survived,
        sum.reconnects,
        reader_connections,
        totals.deliveries,
        totals.lost,
        totals.duplicates,
        totals.reorders,
        started.elapsed().as_secs_f64()
    );
    ensure!(sum.reconnects >= cycles, "the writers never noticed a kill");
    Ok(())
}
