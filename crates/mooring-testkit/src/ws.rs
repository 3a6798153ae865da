//! A minimal raw client of the realtime protocol (`/v1/ws`), for tests.
//!
//! It speaks the frames of `mooring_protocol::realtime` and nothing more: no reconnects, no
//! dedupe, no folding. Tests drive those by hand so they can break them on purpose (drop the
//! socket mid-stream, stop reading, stay silent). Frames arriving while [`RealtimeClient::publish`]
//! waits for its answer are kept and returned by later reads, in order.

use std::collections::VecDeque;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mooring_protocol::realtime::{
    AttachFrom, AttachMode, ClientFrame, ServerFrame, PROTOCOL_VERSION,
};
use mooring_protocol::session::{Event, NewEvent};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("connecting to {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("the WebSocket failed: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("nothing arrived within {0:?}")]
    Timeout(Duration),
    #[error("the connection closed (close code {code:?}) while {doing}")]
    Closed { code: Option<u16>, doing: String },
    #[error("the server sent a frame this client does not understand ({error}): {text}")]
    BadFrame { error: String, text: String },
    #[error("unexpected frame while {doing}: {frame:?}")]
    Unexpected {
        doing: String,
        frame: Box<ServerFrame>,
    },
}

/// What an attach answered: its `attached` frame, and the catch-up events before `live`.
#[derive(Clone, Debug, PartialEq)]
pub struct Attachment {
    pub epoch: u64,
    pub mode: AttachMode,
    /// The high-water live events follow.
    pub serial: u64,
    pub events: Vec<Event>,
}

/// What a read returned.
// Unboxed so tests can match frames in place; one value lives at a time.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    Frame(ServerFrame),
    /// The server closed the connection: with the code of its close frame, or `None` if the
    /// connection ended without one.
    Closed(Option<u16>),
}

/// How to open a connection.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// The kernel receive buffer of the socket. Setting it turns off the kernel's autotuning,
    /// so a test that stops reading fills the server's queues after a known amount of data.
    pub recv_buffer: Option<u32>,
    /// Answer the server's protocol pings (on by default). Off, a client that does not send
    /// stays silent, as a dead peer would.
    pub answer_pings: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            recv_buffer: None,
            answer_pings: true,
        }
    }
}

/// One WebSocket connection to a node's `/v1/ws`.
#[derive(Debug)]
pub struct RealtimeClient {
    ws: WebSocketStream<TcpStream>,
    pending: VecDeque<ServerFrame>,
    answer_pings: bool,
    next_req: u64,
    /// From `welcome`; empty before the hello.
    pub connection_id: String,
    /// From `welcome`; empty before the hello.
    pub client_id: String,
    /// From `welcome`.
    pub heartbeat_ms: u64,
}

/// `host:port` of a node's address, given as `host:port`, `http://host:port` or `ws://host:port`.
fn host_port(addr: &str) -> &str {
    let rest = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

impl RealtimeClient {
    /// Opens a WebSocket without saying hello.
    pub async fn open(addr: &str, options: &ConnectOptions) -> Result<Self, WsError> {
        let host = host_port(addr).to_owned();
        let connect_error = |detail: String| WsError::Connect {
            addr: host.clone(),
            detail,
        };
        let target = tokio::net::lookup_host(&host)
            .await
            .map_err(|e| connect_error(e.to_string()))?
            .next()
            .ok_or_else(|| connect_error("no address".into()))?;
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| connect_error(e.to_string()))?;
        if let Some(bytes) = options.recv_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .map_err(|e| connect_error(e.to_string()))?;
        }
        let stream = socket
            .connect(target)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| connect_error(e.to_string()))?;
        let url = format!("ws://{host}/v1/ws");
        let (ws, _) = tokio_tungstenite::client_async(url, stream)
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        Ok(Self {
            ws,
            pending: VecDeque::new(),
            answer_pings: options.answer_pings,
            next_req: 1,
            connection_id: String::new(),
            client_id: String::new(),
            heartbeat_ms: 0,
        })
    }

    /// Opens a connection and says hello as `client_id`.
    pub async fn connect(addr: &str, client_id: &str) -> Result<Self, WsError> {
        Self::connect_with(addr, client_id, &ConnectOptions::default()).await
    }

    /// Opens a connection with `options` and says hello as `client_id`.
    pub async fn connect_with(
        addr: &str,
        client_id: &str,
        options: &ConnectOptions,
    ) -> Result<Self, WsError> {
        let mut client = Self::open(addr, options).await?;
        client
            .send(&ClientFrame::Hello {
                protocol: PROTOCOL_VERSION,
                client_id: Some(client_id.to_owned()),
            })
            .await?;
        match client.recv_frame(Duration::from_secs(10)).await? {
            ServerFrame::Welcome {
                connection_id,
                client_id,
                heartbeat_ms,
                ..
            } => {
                client.connection_id = connection_id;
                client.client_id = client_id;
                client.heartbeat_ms = heartbeat_ms;
                Ok(client)
            }
            frame => Err(WsError::Unexpected {
                doing: "waiting for welcome".into(),
                frame: Box::new(frame),
            }),
        }
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), WsError> {
        let text = serde_json::to_string(frame).unwrap_or_default();
        self.send_text(&text).await
    }

    /// Sends raw text, well-formed or not.
    pub async fn send_text(&mut self, text: &str) -> Result<(), WsError> {
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// Sends `attach`; the `attached` frame and what follows arrive through the reads.
    pub async fn attach(&mut self, session: &str, from: Option<AttachFrom>) -> Result<(), WsError> {
        self.send(&ClientFrame::Attach {
            session: session.to_owned(),
            from,
        })
        .await
    }

    /// Attaches to `session` from `from` and reads the catch-up: the `attached` frame, then
    /// each event up to `live` (an event of another life than the attach named is an error).
    pub async fn attach_and_catch_up(
        &mut self,
        session: &str,
        from: Option<AttachFrom>,
        timeout: Duration,
    ) -> Result<Attachment, WsError> {
        self.attach(session, from).await?;
        let unexpected = |doing: &str, frame: ServerFrame| WsError::Unexpected {
            doing: doing.to_owned(),
            frame: Box::new(frame),
        };
        let mut attachment = match self.recv_frame(timeout).await? {
            ServerFrame::Attached {
                epoch,
                mode,
                serial,
                ..
            } => Attachment {
                epoch,
                mode,
                serial,
                events: Vec::new(),
            },
            other => return Err(unexpected("waiting for attached", other)),
        };
        loop {
            match self.recv_frame(timeout).await? {
                ServerFrame::Event { epoch, event, .. } if epoch == attachment.epoch => {
                    attachment.events.push(event);
                }
                ServerFrame::Live { .. } => return Ok(attachment),
                other => return Err(unexpected("reading the catch-up", other)),
            }
        }
    }

    /// Sends `publish` without waiting; returns its `req`.
    pub async fn send_publish(
        &mut self,
        session: &str,
        events: Vec<NewEvent>,
    ) -> Result<u64, WsError> {
        let req = self.next_req;
        self.next_req += 1;
        self.send(&ClientFrame::Publish {
            req,
            session: session.to_owned(),
            events,
        })
        .await?;
        Ok(req)
    }

    /// Publishes and waits for the `ack` or `error` of this request (other frames are kept for
    /// later reads).
    pub async fn publish(
        &mut self,
        session: &str,
        events: Vec<NewEvent>,
        timeout: Duration,
    ) -> Result<ServerFrame, WsError> {
        let req = self.send_publish(session, events).await?;
        self.wait_for_req(req, timeout).await
    }

    /// Waits for the `ack` or `error` of request `req`; other frames are kept for later reads.
    pub async fn wait_for_req(
        &mut self,
        req: u64,
        timeout: Duration,
    ) -> Result<ServerFrame, WsError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut kept = Vec::new();
        let answer = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = match self.read_socket(left).await {
                Ok(Incoming::Frame(frame)) => frame,
                Ok(Incoming::Closed(code)) => {
                    break Err(WsError::Closed {
                        code,
                        doing: format!("waiting for the answer to request {req}"),
                    })
                }
                Err(e) => break Err(e),
            };
            match &frame {
                ServerFrame::Ack { req: r, .. } if *r == req => break Ok(frame),
                ServerFrame::Error { req: Some(r), .. } if *r == req => break Ok(frame),
                _ => kept.push(frame),
            }
        };
        self.pending.extend(kept);
        answer
    }

    /// The next frame or the end of the connection, waiting at most `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Incoming, WsError> {
        if let Some(frame) = self.pending.pop_front() {
            return Ok(Incoming::Frame(frame));
        }
        self.read_socket(timeout).await
    }

    /// The next frame; the end of the connection is an error.
    pub async fn recv_frame(&mut self, timeout: Duration) -> Result<ServerFrame, WsError> {
        match self.recv(timeout).await? {
            Incoming::Frame(frame) => Ok(frame),
            Incoming::Closed(code) => Err(WsError::Closed {
                code,
                doing: "reading".into(),
            }),
        }
    }

    /// Reads the socket (not the kept frames), answering and skipping protocol pings.
    async fn read_socket(&mut self, timeout: Duration) -> Result<Incoming, WsError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return Err(WsError::Timeout(timeout)),
                Ok(None) => return Ok(Incoming::Closed(None)),
                Ok(Some(Err(e))) => return closed_or(e),
                Ok(Some(Ok(message))) => message,
            };
            let text = match message {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    return Ok(Incoming::Closed(
                        frame.map(|f: CloseFrame| u16::from(f.code)),
                    ))
                }
                _ => continue,
            };
            let frame: ServerFrame =
                serde_json::from_str(&text).map_err(|e| WsError::BadFrame {
                    error: e.to_string(),
                    text: text.to_string(),
                })?;
            match frame {
                ServerFrame::Ping { nonce } => {
                    if self.answer_pings {
                        self.send(&ClientFrame::Pong { nonce }).await?;
                    }
                }
                frame => return Ok(Incoming::Frame(frame)),
            }
        }
    }

    /// Closes cleanly with a close frame (the server logs a clean close).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Let the server's close frame come back so the handshake completes.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Drops the TCP connection without a close frame, as a crashed client or a lost network
    /// would (the server logs a lost connection).
    pub fn drop_connection(self) {
        drop(self);
    }
}

/// A socket error that only means the peer went away reads as the end of the connection.
fn closed_or(error: tokio_tungstenite::tungstenite::Error) -> Result<Incoming, WsError> {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::ConnectionClosed | Error::AlreadyClosed => Ok(Incoming::Closed(None)),
        Error::Io(ref e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionAborted
            ) =>
        {
            Ok(Incoming::Closed(None))
        }
        Error::Protocol(
            tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
        ) => Ok(Incoming::Closed(None)),
        other => Err(WsError::Socket(other)),
    }
}

/// A `message.create` event.
pub fn create(name: &str, data: impl Into<serde_json::Value>) -> NewEvent {
    NewEvent {
        id: None,
        action: mooring_protocol::session::Action::MessageCreate,
        name: Some(name.to_owned()),
        reference: None,
        data: data.into(),
        extras: Default::default(),
    }
}

/// A `message.append` of `text` to message `reference`.
pub fn append(reference: u64, text: &str) -> NewEvent {
    NewEvent {
        id: None,
        action: mooring_protocol::session::Action::MessageAppend,
        name: None,
        reference: Some(reference),
        data: text.into(),
        extras: Default::default(),
    }
}

/// A `message.update` of message `reference` to `data`.
pub fn update(reference: u64, data: impl Into<serde_json::Value>) -> NewEvent {
    NewEvent {
        id: None,
        action: mooring_protocol::session::Action::MessageUpdate,
        name: None,
        reference: Some(reference),
        data: data.into(),
        extras: Default::default(),
    }
}

/// A `message.delete` of message `reference`.
pub fn delete(reference: u64) -> NewEvent {
    NewEvent {
        id: None,
        action: mooring_protocol::session::Action::MessageDelete,
        name: None,
        reference: Some(reference),
        data: serde_json::Value::Null,
        extras: Default::default(),
    }
}

/// An application `event` (kept in the log, not materialized).
pub fn app_event(name: &str, data: impl Into<serde_json::Value>) -> NewEvent {
    NewEvent {
        id: None,
        action: mooring_protocol::session::Action::Event,
        name: Some(name.to_owned()),
        reference: None,
        data: data.into(),
        extras: Default::default(),
    }
}

/// `from: {epoch, serial}`.
pub fn from_position(epoch: u64, serial: u64) -> Option<AttachFrom> {
    Some(AttachFrom::Position(mooring_protocol::Position {
        epoch,
        serial,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_any_form_name_the_same_host() {
        assert_eq!(host_port("127.0.0.1:7420"), "127.0.0.1:7420");
        assert_eq!(host_port("http://127.0.0.1:7420"), "127.0.0.1:7420");
        assert_eq!(host_port("ws://localhost:1/v1/ws"), "localhost:1");
    }
}
