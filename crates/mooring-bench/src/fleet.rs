//! Opening many realtime connections, attaching them, and the events they publish.

use std::future::Future;

use anyhow::{bail, Context as _};
use futures::{SinkExt as _, StreamExt as _};
use mooring_protocol::realtime::{AttachFrom, AttachPoint, ClientFrame};
use mooring_protocol::session::{Action, NewEvent};
use mooring_protocol::Position;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::ws::{self, Endpoint, Frame, Socket};

/// How many error messages a report keeps as samples.
pub const ERROR_SAMPLES: usize = 5;

/// Connections that could not be opened or set up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Failures {
    /// How many.
    pub count: u64,
    /// A few of their messages.
    pub samples: Vec<String>,
}

impl Failures {
    /// Counts one failure.
    pub fn add(&mut self, error: &anyhow::Error) {
        self.count += 1;
        if self.samples.len() < ERROR_SAMPLES {
            self.samples.push(format!("{error:#}"));
        }
    }

    /// Adds another set.
    pub fn absorb(&mut self, other: Failures) {
        self.count += other.count;
        for sample in other.samples {
            if self.samples.len() < ERROR_SAMPLES {
                self.samples.push(sample);
            }
        }
    }
}

/// Opens `count` connections, at most `parallel` handshakes at a time, each set up by `setup`
/// (given its index and the socket after `welcome`). Returns what each setup returned, in no
/// particular order, and the failures; `on_done` is told each time one finishes.
pub async fn open_many<T, F, Fut>(
    endpoint: &Endpoint,
    count: usize,
    parallel: usize,
    setup: F,
    on_done: impl FnMut(usize),
) -> (Vec<T>, Failures)
where
    T: Send + 'static,
    F: Fn(usize, Socket) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let endpoint = endpoint.clone();
    let open = move |index| {
        let endpoint = endpoint.clone();
        let setup = setup.clone();
        async move {
            let socket = endpoint.connect(index, None).await?;
            setup(index, socket).await
        }
    };
    run_many(count, parallel, open, on_done).await
}

/// Runs `open` for indexes `0..count`, at most `parallel` at a time, each in a task of its
/// own: the part of [`open_many`] that does not know the protocol, for clients of other
/// servers. Returns what each returned, in no particular order, and the failures; `on_done`
/// is told each time one finishes.
pub async fn run_many<T, F, Fut>(
    count: usize,
    parallel: usize,
    open: F,
    mut on_done: impl FnMut(usize),
) -> (Vec<T>, Failures)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let mut opened = futures::stream::iter(0..count)
        .map(|index| tokio::spawn(open(index)))
        .buffer_unordered(parallel.max(1));
    let mut done = Vec::with_capacity(count);
    let mut failures = Failures::default();
    while let Some(joined) = opened.next().await {
        match joined {
            Ok(Ok(value)) => done.push(value),
            Ok(Err(e)) => failures.add(&e),
            Err(e) => failures.add(&anyhow::Error::new(e).context("a connecting task failed")),
        }
        on_done(done.len() + failures.count as usize);
    }
    (done, failures)
}

/// Where an attach reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// The log's life.
    pub epoch: u64,
    /// The mode the server announced (`replay`, `latest`, `history_lost`).
    pub replay: bool,
    /// The serial of `live`: catch-up is complete up to here.
    pub live: u64,
}

/// Attaches `session` from `from` and reads until `live`, giving each event of the catch-up to
/// `on_event` and answering pings.
pub async fn attach_until_live(
    ws: &mut Socket,
    session: &str,
    from: AttachFrom,
    mut on_event: impl FnMut(&Frame),
) -> anyhow::Result<Attached> {
    ws::send(
        ws,
        &ClientFrame::Attach {
            session: session.to_owned(),
            from: Some(from),
        },
    )
    .await?;
    let mut epoch = 0;
    let mut replay = false;
    loop {
        let frame = ws::next_frame(ws)
            .await?
            .with_context(|| format!("the connection closed while attaching {session}"))?;
        match frame.kind.as_str() {
            "attached" => {
                epoch = frame.epoch.unwrap_or(0);
                replay = frame.mode.as_deref() == Some("replay");
            }
            "event" => on_event(&frame),
            "live" => {
                return Ok(Attached {
                    epoch,
                    replay,
                    live: frame.serial.unwrap_or(0),
                })
            }
            "ping" => ws::send_pong(ws, frame.nonce.unwrap_or(0)).await?,
            "error" | "detached" => bail!("attaching {session}: {}", frame.describe()),
            _ => {}
        }
    }
}

/// Attach from the first event.
pub fn from_start() -> AttachFrom {
    AttachFrom::Named(AttachPoint::Start)
}

/// Attach for the materialized view.
pub fn from_latest() -> AttachFrom {
    AttachFrom::Named(AttachPoint::Latest)
}

/// Attach after `serial` of life `epoch`.
pub fn from_position(epoch: u64, serial: u64) -> AttachFrom {
    AttachFrom::Position(Position { epoch, serial })
}

/// A publish frame of `events` to `session`.
pub fn publish(req: u64, session: &str, events: Vec<NewEvent>) -> ClientFrame {
    ClientFrame::Publish {
        req,
        session: session.to_owned(),
        events,
    }
}

/// A `message.create` starting an answer.
pub fn create_message(name: &str) -> NewEvent {
    new_event(Action::MessageCreate, Some(name), None, "".into())
}

/// A `message.append` of `text` to message `message`.
pub fn append(message: u64, text: String) -> NewEvent {
    new_event(Action::MessageAppend, None, Some(message), text.into())
}

/// A plain `event` (kept in the log, not materialized).
pub fn plain_event(name: &str, data: serde_json::Value) -> NewEvent {
    new_event(Action::Event, Some(name), None, data)
}

fn new_event(
    action: Action,
    name: Option<&str>,
    reference: Option<u64>,
    data: serde_json::Value,
) -> NewEvent {
    NewEvent {
        id: None,
        action,
        name: name.map(str::to_owned),
        reference,
        data,
        extras: Default::default(),
    }
}

/// Reads until the `ack` of `req`, answering pings; fails on an `error` for it.
pub async fn await_ack(ws: &mut Socket, req: u64) -> anyhow::Result<Frame> {
    loop {
        let frame = ws::next_frame(ws)
            .await?
            .context("the connection closed before the acknowledgement")?;
        match frame.kind.as_str() {
            "ack" if frame.req == Some(req) => return Ok(frame),
            "error" if frame.req == Some(req) => bail!("publish refused: {}", frame.describe()),
            "ping" => ws::send_pong(ws, frame.nonce.unwrap_or(0)).await?,
            _ => {}
        }
    }
}

/// The serial of the first event an `ack` acknowledges.
pub fn first_serial(ack: &Frame) -> anyhow::Result<u64> {
    ack.results
        .first()
        .map(|p| p.serial)
        .context("an ack without results")
}

/// A connection set aside while others open: a task answers its heartbeats (a connection
/// silent for `dead_after_ms` is closed by the server) until it is taken back. Only pings are
/// expected meanwhile; anything else that arrives is dropped.
#[derive(Debug)]
pub struct Held {
    release: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Socket>>,
}

impl Held {
    /// Starts answering `ws`'s heartbeats.
    pub fn new(ws: Socket) -> Self {
        Self::answering(ws, mooring_pong)
    }

    /// Starts answering `ws`'s heartbeats in another protocol: `reply` is given each text
    /// frame and returns the answer to send, if any.
    pub fn answering(mut ws: Socket, reply: fn(&str) -> anyhow::Result<Option<Message>>) -> Self {
        let (release, mut released) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut released => return Ok(ws),
                    message = ws.next() => match message {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(answer) = reply(text.as_str())? {
                                ws.send(answer).await.context("answering a heartbeat")?;
                            }
                        }
                        Some(Ok(Message::Close(Some(close)))) => bail!(
                            "the server closed the connection while held: {} {}",
                            u16::from(close.code),
                            close.reason
                        ),
                        Some(Ok(Message::Close(None))) | None => {
                            bail!("the connection closed while held")
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            return Err(anyhow::Error::new(e).context("reading a held connection"))
                        }
                    },
                }
            }
        });
        Self { release, task }
    }

    /// Takes the connection back.
    pub async fn take(self) -> anyhow::Result<Socket> {
        let _ = self.release.send(());
        self.task.await.context("a holding task failed")?
    }
}

/// The answer to a realtime-protocol frame while held: a pong to a ping.
fn mooring_pong(text: &str) -> anyhow::Result<Option<Message>> {
    let frame = Frame::parse(text)?;
    if frame.kind != "ping" {
        return Ok(None);
    }
    ws::encode(&ClientFrame::Pong {
        nonce: frame.nonce.unwrap_or(0),
    })
    .map(Some)
}
