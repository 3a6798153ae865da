//! Property: for any interleaving of creates, appends, updates, deletes, disconnects and resumes,
//! every reader's reconstructed messages equal the server's materialized messages, with no gap
//! and no duplicate.
//!
//! Each case runs a real in-process node (memory engine, rollup off or 5 ms), one writer that
//! pipelines its publishes, and one or two readers that read a few frames at a time, drop their
//! connection (cleanly or not) and resume from the last serial they saw, or from the
//! materialized view (`latest`), as a late joiner would. `PROPTEST_CASES` sets the case count.

mod common;

use std::time::Duration;

use common::{Engine, Node};
use mooring_protocol::realtime::{AttachFrom, AttachMode, AttachPoint, ErrorCode, ServerFrame};
use mooring_protocol::session::NewEvent;
use mooring_server::realtime::RealtimeConfig;
use mooring_testkit::session_check::{view_differences, ExpectedMessages, Reconstruction};
use mooring_testkit::ws::{self, Incoming, RealtimeClient, WsError};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const SESSION: &str = "prop:1";
const PROMPT: Duration = Duration::from_secs(10);
/// A reader's read op stops once nothing arrives for this long.
const QUIET: Duration = Duration::from_millis(5);

#[derive(Clone, Debug)]
enum Op {
    Create(String),
    /// `pick` chooses among the live messages (a create if there is none).
    Append {
        pick: usize,
        text: String,
    },
    /// Several appends in one publish: written atomically, with contiguous serials.
    AppendBatch {
        pick: usize,
        texts: Vec<String>,
    },
    Update {
        pick: usize,
        text: String,
    },
    Delete {
        pick: usize,
    },
    /// An append to a deleted message: must be refused with `message_not_found`.
    AppendToDeleted {
        pick: usize,
    },
    AppEvent,
    /// The writer waits for every acknowledgement.
    Sync,
    /// A reader reads up to `frames` frames (fewer if nothing more is there).
    Read {
        reader: usize,
        frames: usize,
    },
    Disconnect {
        reader: usize,
        clean: bool,
    },
    /// A disconnected reader reconnects and attaches from its last serial, or from `latest`.
    Resume {
        reader: usize,
        latest: bool,
    },
}

fn text() -> impl Strategy<Value = String> {
    "[a-zé ]{0,5}"
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => text().prop_map(Op::Create),
        6 => (any::<usize>(), text()).prop_map(|(pick, text)| Op::Append { pick, text }),
        1 => (any::<usize>(), prop::collection::vec(text(), 2..4))
            .prop_map(|(pick, texts)| Op::AppendBatch { pick, texts }),
        1 => (any::<usize>(), text()).prop_map(|(pick, text)| Op::Update { pick, text }),
        1 => any::<usize>().prop_map(|pick| Op::Delete { pick }),
        1 => any::<usize>().prop_map(|pick| Op::AppendToDeleted { pick }),
        1 => Just(Op::AppEvent),
        1 => Just(Op::Sync),
        4 => (0..2usize, 1..20usize).prop_map(|(reader, frames)| Op::Read { reader, frames }),
        2 => (0..2usize, any::<bool>()).prop_map(|(reader, clean)| Op::Disconnect { reader, clean }),
        2 => (0..2usize, prop::bool::weighted(0.2))
            .prop_map(|(reader, latest)| Op::Resume { reader, latest }),
    ]
}

fn failed(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// What a publish must be answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ack,
    Refused(ErrorCode),
}

struct Writer {
    client: RealtimeClient,
    expected: ExpectedMessages,
    live: Vec<u64>,
    deleted: Vec<u64>,
    outstanding: Vec<(u64, Answer)>,
}

impl Writer {
    async fn send(&mut self, events: Vec<NewEvent>, answer: Answer) -> Result<u64, TestCaseError> {
        let req = self
            .client
            .send_publish(SESSION, events)
            .await
            .map_err(failed)?;
        self.outstanding.push((req, answer));
        Ok(req)
    }

    /// Reads answers until `req` (or every request, if `None`) is answered; returns the serial
    /// `req` was acknowledged with.
    async fn wait(&mut self, req: Option<u64>) -> Result<Option<u64>, TestCaseError> {
        loop {
            if self.outstanding.is_empty()
                || req.is_some_and(|r| !self.outstanding.iter().any(|(q, _)| *q == r))
            {
                return Ok(None);
            }
            let frame = self.client.recv_frame(PROMPT).await.map_err(failed)?;
            let (answered, serial, code) = match &frame {
                ServerFrame::Ack { req, results, .. } => {
                    (*req, results.first().map(|r| r.serial), None)
                }
                ServerFrame::Error {
                    req: Some(req),
                    error,
                    ..
                } => (*req, None, Some(error.code)),
                other => return Err(failed(format!("the writer got {other:?}"))),
            };
            let Some(at) = self.outstanding.iter().position(|(q, _)| *q == answered) else {
                return Err(failed(format!("an answer to unknown request {answered}")));
            };
            let (_, want) = self.outstanding.remove(at);
            let got = code.map_or(Answer::Ack, Answer::Refused);
            prop_assert_eq!(got, want, "request {}: {:?}", answered, frame);
            if Some(answered) == req {
                return Ok(serial);
            }
        }
    }

    fn pick(&self, pick: usize) -> Option<u64> {
        (!self.live.is_empty()).then(|| self.live[pick % self.live.len()])
    }

    async fn create(&mut self, text: &str) -> Result<(), TestCaseError> {
        let req = self
            .send(vec![ws::create("response", text)], Answer::Ack)
            .await?;
        let serial = self
            .wait(Some(req))
            .await?
            .ok_or_else(|| failed("a create without a serial"))?;
        let client_id = self.client.client_id.clone();
        self.expected
            .create(serial, Some("response"), Some(&client_id), text.into());
        self.live.push(serial);
        Ok(())
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Create(text) => self.create(text).await?,
            Op::Append { pick, text } => match self.pick(*pick) {
                Some(m) => {
                    self.send(vec![ws::append(m, text)], Answer::Ack).await?;
                    self.expected.append(m, text);
                }
                None => self.create(text).await?,
            },
            Op::AppendBatch { pick, texts } => {
                if let Some(m) = self.pick(*pick) {
                    let events = texts.iter().map(|t| ws::append(m, t)).collect();
                    self.send(events, Answer::Ack).await?;
                    for t in texts {
                        self.expected.append(m, t);
                    }
                }
            }
            Op::Update { pick, text } => {
                if let Some(m) = self.pick(*pick) {
                    self.send(vec![ws::update(m, text.as_str())], Answer::Ack)
                        .await?;
                    self.expected.update(m, text.as_str().into());
                }
            }
            Op::Delete { pick } => {
                if let Some(m) = self.pick(*pick) {
                    self.send(vec![ws::delete(m)], Answer::Ack).await?;
                    self.expected.delete(m);
                    self.live.retain(|s| *s != m);
                    self.deleted.push(m);
                }
            }
            Op::AppendToDeleted { pick } => {
                if !self.deleted.is_empty() {
                    let m = self.deleted[pick % self.deleted.len()];
                    let refused = Answer::Refused(ErrorCode::MessageNotFound);
                    self.send(vec![ws::append(m, "x")], refused).await?;
                }
            }
            Op::AppEvent => {
                self.send(vec![ws::app_event("tool-call", "{}")], Answer::Ack)
                    .await?;
            }
            Op::Sync => {
                self.wait(None).await?;
            }
            Op::Read { .. } | Op::Disconnect { .. } | Op::Resume { .. } => {}
        }
        Ok(())
    }
}

struct Reader {
    name: String,
    client: Option<RealtimeClient>,
    recon: Reconstruction,
}

impl Reader {
    async fn connect(&mut self, addr: &str, latest: bool) -> Result<(), TestCaseError> {
        let mut client = RealtimeClient::connect(addr, &self.name)
            .await
            .map_err(failed)?;
        // A view cut off before its `live` is incomplete: ask for the view again.
        let latest = latest || self.recon.in_view();
        let from = match self.recon.resume_position() {
            _ if latest => AttachFrom::Named(AttachPoint::Latest),
            Some(p) => AttachFrom::Position(p),
            None => AttachFrom::Named(AttachPoint::Start),
        };
        client.attach(SESSION, Some(from)).await.map_err(failed)?;
        self.client = Some(client);
        Ok(())
    }

    /// Reads up to `frames` frames, stopping early once nothing arrives for `quiet`.
    async fn read(&mut self, frames: usize, quiet: Duration) -> Result<(), TestCaseError> {
        for _ in 0..frames {
            let Some(client) = self.client.as_mut() else {
                return Ok(());
            };
            let frame = match client.recv(quiet).await {
                Err(WsError::Timeout(_)) => return Ok(()),
                Err(e) => return Err(failed(format!("{}: {e}", self.name))),
                Ok(Incoming::Closed(code)) => {
                    return Err(failed(format!(
                        "{}: closed by the server ({code:?})",
                        self.name
                    )))
                }
                Ok(Incoming::Frame(frame)) => frame,
            };
            match frame {
                ServerFrame::Attached {
                    mode,
                    epoch,
                    serial,
                    ..
                } if mode != AttachMode::Replay => self.recon.begin_view(epoch, serial),
                ServerFrame::Event { event, .. } if self.recon.in_view() => {
                    self.recon.observe_view(&event)
                }
                ServerFrame::Event { epoch, event, .. } => {
                    self.recon.observe(epoch, &event);
                }
                ServerFrame::Live { .. } => self.recon.end_view(),
                ServerFrame::Detached { .. } | ServerFrame::Error { .. } => {
                    return Err(failed(format!("{}: unexpected {frame:?}", self.name)))
                }
                // Frames of features this test does not use (presence).
                _ => {}
            }
        }
        Ok(())
    }

    async fn disconnect(&mut self, clean: bool) {
        if let Some(client) = self.client.take() {
            if clean {
                client.close().await;
            } else {
                client.drop_connection();
            }
        }
    }
}

async fn run(ops: Vec<Op>, readers: usize, rollup_ms: u64) -> Result<(), TestCaseError> {
    let node = Node::start(
        Engine::Memory,
        RealtimeConfig {
            rollup_window: Duration::from_millis(rollup_ms),
            ..RealtimeConfig::default()
        },
    )
    .await;
    let mut readers: Vec<Reader> = (0..readers)
        .map(|i| Reader {
            name: format!("reader-{i}"),
            client: None,
            recon: Reconstruction::new(),
        })
        .collect();
    for reader in &mut readers {
        reader.connect(&node.addr, false).await?;
    }
    let mut writer = Writer {
        client: RealtimeClient::connect(&node.addr, "writer")
            .await
            .map_err(failed)?,
        expected: ExpectedMessages::new(),
        live: Vec::new(),
        deleted: Vec::new(),
        outstanding: Vec::new(),
    };
    let count = readers.len();
    for op in &ops {
        match op {
            Op::Read { reader, frames } => readers[reader % count].read(*frames, QUIET).await?,
            Op::Disconnect { reader, clean } => readers[reader % count].disconnect(*clean).await,
            Op::Resume { reader, latest } => {
                let reader = &mut readers[reader % count];
                if reader.client.is_none() {
                    reader.connect(&node.addr, *latest).await?;
                }
            }
            op => writer.apply(op).await?,
        }
    }
    writer.wait(None).await?;

    let snapshot = node.store.snapshot(SESSION).await.map_err(failed)?;
    let (tail, messages) = match snapshot {
        Some(s) => (s.info.tail.serial, s.messages),
        None => (0, Vec::new()),
    };
    let writer_diff = writer.expected.differences(&messages);
    prop_assert!(
        writer_diff.is_empty(),
        "server vs writer: {:?}",
        writer_diff
    );
    for reader in &mut readers {
        if reader.client.is_none() {
            reader.connect(&node.addr, false).await?;
        }
        let deadline = tokio::time::Instant::now() + PROMPT;
        while reader.recon.last_serial() < tail || reader.recon.in_view() {
            prop_assert!(
                tokio::time::Instant::now() < deadline,
                "{} stuck at serial {} of {}",
                reader.name,
                reader.recon.last_serial(),
                tail
            );
            reader.read(1, PROMPT).await?;
        }
        let report = reader.recon.report(Some(tail));
        prop_assert!(report.is_clean(), "{}: {}", reader.name, report);
        let got = reader.recon.messages();
        let vs_server = view_differences(&got, &messages);
        prop_assert!(
            vs_server.is_empty(),
            "{} vs server: {:?}",
            reader.name,
            vs_server
        );
        let vs_writer = writer.expected.differences(&got);
        prop_assert!(
            vs_writer.is_empty(),
            "{} vs writer: {:?}",
            reader.name,
            vs_writer
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: common::env_or("PROPTEST_CASES", 48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn readers_reconstruct_the_servers_messages_through_any_interleaving(
        ops in prop::collection::vec(op(), 1..80),
        readers in 1..=2usize,
        rollup_ms in prop_oneof![Just(0u64), Just(5u64)],
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(failed)?;
        runtime.block_on(run(ops, readers, rollup_ms))?;
    }
}
