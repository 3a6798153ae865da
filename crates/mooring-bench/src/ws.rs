//! A lean client of Mooring's realtime protocol (`/v1/ws`, `docs/protocol.md`) for load.
//!
//! A load generator holds thousands of sockets, so this keeps each one small (a 4 KiB read
//! buffer) and leaves the loop to the scenario: it opens sockets from several loopback source
//! addresses (each address has its own ephemeral ports), says hello, encodes the frames of
//! `mooring_protocol::realtime` and decodes what the server sends into a flat [`Frame`] that
//! borrows nothing and skips what a scenario never reads.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures::{SinkExt as _, StreamExt as _};
use mooring_protocol::realtime::{ClientFrame, PROTOCOL_VERSION};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// One realtime connection.
pub type Socket = WebSocketStream<TcpStream>;

/// How long a handshake (TCP, upgrade, hello) may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections a single source address is given before the next one is used: under the
/// 28,232 ephemeral ports Linux hands out by default.
pub const CONNECTIONS_PER_SOURCE: usize = 20_000;

/// The realtime endpoints of one node or several (connections go to them in turn) and the
/// local addresses to connect from.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addrs: Vec<SocketAddr>,
    sources: Vec<IpAddr>,
}

impl Endpoint {
    /// Parses `http://host:port`, `ws://host:port` or `host:port` (an IP address, not a name),
    /// or several separated by commas (nodes sharing one store: connection `i` goes to node
    /// `i % n`). A loopback target is reached from `sources` addresses 127.0.0.1, 127.0.0.2,
    /// …; any other from the default source.
    pub fn parse(urls: &str, sources: usize) -> anyhow::Result<Self> {
        let mut addrs = Vec::new();
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
            let host_port = rest.split('/').next().unwrap_or(rest);
            let addr: SocketAddr = host_port
                .parse()
                .with_context(|| format!("{url:?}: expected an IP address and port"))?;
            addrs.push(addr);
        }
        let Some(&addr) = addrs.first() else {
            bail!("{urls:?}: no node address");
        };
        let sources = if addr.ip().is_loopback() && addr.is_ipv4() {
            (1..=sources.clamp(1, 250))
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self { addrs, sources })
    }

    /// Source addresses enough for `connections` sockets.
    pub fn sources_for(connections: usize) -> usize {
        connections.div_ceil(CONNECTIONS_PER_SOURCE).max(1)
    }

    /// The (first) node's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The node connection number `index` goes to.
    fn addr_for(&self, index: usize) -> SocketAddr {
        self.addrs[index % self.addrs.len()]
    }

    /// Opens the WebSocket of connection number `index` (its source address is picked by
    /// `index`) and says hello, as `client_id` or anonymously.
    pub async fn connect(&self, index: usize, client_id: Option<&str>) -> anyhow::Result<Socket> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner(index, client_id))
            .await
            .with_context(|| format!("no welcome within {CONNECT_TIMEOUT:?}"))?
    }

    async fn connect_inner(&self, index: usize, client_id: Option<&str>) -> anyhow::Result<Socket> {
        let mut ws = self.upgrade(index, "/v1/ws").await?;
        send(
            &mut ws,
            &ClientFrame::Hello {
                protocol: PROTOCOL_VERSION,
                client_id: client_id.map(str::to_owned),
            },
        )
        .await?;
        loop {
            let frame = next_frame(&mut ws)
                .await?
                .context("closed before welcome")?;
            match frame.kind.as_str() {
                "welcome" => return Ok(ws),
                "ping" => send_pong(&mut ws, frame.nonce.unwrap_or(0)).await?,
                _ => bail!("expected welcome, got {}", frame.describe()),
            }
        }
    }

    /// Opens the TCP connection of connection number `index` (its source address is picked by
    /// `index`) and upgrades it to a WebSocket at `path`, saying nothing yet: the first frame is
    /// the protocol's (Mooring's hello, or a Pusher server's `connection_established`).
    pub async fn upgrade(&self, index: usize, path: &str) -> anyhow::Result<Socket> {
        let addr = self.addr_for(index);
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .context("creating a socket")?;
        if !self.sources.is_empty() {
            let source = self.sources[index % self.sources.len()];
            bind_source(&socket, source)?;
        }
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .context("upgrading to a WebSocket")?;
        Ok(ws)
    }
}

/// The text of a client frame.
pub fn encode(frame: &ClientFrame) -> anyhow::Result<Message> {
    Ok(Message::text(
        serde_json::to_string(frame).context("encoding a frame")?,
    ))
}

/// Sends one frame.
pub async fn send(ws: &mut Socket, frame: &ClientFrame) -> anyhow::Result<()> {
    ws.send(encode(frame)?).await.context("sending a frame")
}

/// Answers a protocol ping.
pub async fn send_pong(ws: &mut Socket, nonce: u64) -> anyhow::Result<()> {
    send(ws, &ClientFrame::Pong { nonce }).await
}

/// Whether a text frame is an `event` (the server writes `type` first), without decoding it.
pub fn is_event(text: &str) -> bool {
    text.starts_with(r#"{"type":"event""#)
}

/// The next text frame, decoded; `None` when the connection ended without a close frame. A
/// close frame from the server is an error naming its code (4008: slow consumer, 4001: silent
/// peer). WebSocket-level pings are answered by the socket itself.
pub async fn next_frame(ws: &mut Socket) -> anyhow::Result<Option<Frame>> {
    while let Some(message) = ws.next().await {
        match message.context("reading from the WebSocket")? {
            Message::Text(text) => return Frame::parse(text.as_str()).map(Some),
            Message::Close(Some(close)) => {
                bail!(
                    "the server closed the connection: {} {}",
                    u16::from(close.code),
                    close.reason
                )
            }
            Message::Close(None) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

/// A server frame, flattened: the fields the scenarios read, each absent when the frame has
/// none.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Frame {
    /// `welcome`, `attached`, `live`, `event`, `ack`, `error`, `ping`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The session of an `attached`, `live`, `event`, `ack` or `error`.
    pub session: Option<String>,
    /// The event's serial, or the high-water of `attached` and `live`.
    pub serial: Option<u64>,
    /// The log's life, on `attached`, `event` and `ack`.
    pub epoch: Option<u64>,
    /// An event's action (`message.create`, `message.append`, …).
    pub action: Option<String>,
    /// An `attached` frame's mode.
    pub mode: Option<String>,
    /// An event's data.
    #[serde(default)]
    pub data: serde_json::Value,
    /// The request an `ack` or `error` answers.
    pub req: Option<u64>,
    /// A ping's nonce.
    pub nonce: Option<u64>,
    /// An `ack`'s serials, one per event.
    #[serde(default)]
    pub results: Vec<Published>,
    /// An `error`'s code.
    pub code: Option<String>,
    /// An `error`'s message.
    pub message: Option<String>,
    /// A `detached` frame's reason.
    pub error: Option<serde_json::Value>,
}

/// The outcome of one published event in an `ack`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Published {
    /// Its serial.
    pub serial: u64,
}

impl Frame {
    /// Decodes a server frame.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        serde_json::from_str(text).with_context(|| {
            let excerpt: String = text.chars().take(200).collect();
            format!("the server sent a frame this client cannot read: {excerpt}")
        })
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => format!("{} {code}: {message}", self.kind),
            _ => self.kind.clone(),
        }
    }
}

/// Binds `socket` to `source` with the port left to `connect`: a bind to port 0 makes the
/// kernel pick a free port at once, searching every port in use, which with 20,000 sockets on
/// a source address was most of the load generator's CPU in a resume storm; chosen at
/// connect, a port is shared by any connections to different destinations.
pub(crate) fn bind_source(socket: &TcpSocket, source: IpAddr) -> anyhow::Result<()> {
    if source.is_ipv4() {
        nix::sys::socket::setsockopt(
            socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .context("setting IP_BIND_ADDRESS_NO_PORT")?;
    }
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("binding to {source}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_events_acks_and_errors() -> anyhow::Result<()> {
        let text = r#"{"type":"event","session":"s","epoch":0,"serial":18,"action":"message.append","ref":12,"client_id":"a","data":"lo","ts":1}"#;
        assert!(is_event(text));
        let f = Frame::parse(text)?;
        assert_eq!((f.kind.as_str(), f.serial), ("event", Some(18)));
        assert_eq!(f.data.as_str(), Some("lo"));
        let f = Frame::parse(
            r#"{"type":"ack","req":7,"session":"s","epoch":0,"results":[{"serial":23}]}"#,
        )?;
        assert!(!is_event(r#"{"type":"ack"}"#));
        assert_eq!((f.req, f.results[0].serial), (Some(7), 23));
        let f = Frame::parse(
            r#"{"type":"error","req":1,"code":"rate_limited","message":"slow down","retryable":true}"#,
        )?;
        assert_eq!(f.describe(), "error rate_limited: slow down");
        assert!(Frame::parse("not json").is_err());
        Ok(())
    }

    #[test]
    fn loopback_targets_get_one_source_per_slice_of_connections() -> anyhow::Result<()> {
        let e = Endpoint::parse("http://127.0.0.1:7420", 3)?;
        assert_eq!(e.sources.len(), 3);
        assert_eq!(e.sources[2], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(Endpoint::sources_for(50_000), 3);
        assert_eq!(Endpoint::sources_for(10), 1);
        assert!(Endpoint::parse("ws://10.0.0.1:1", 3)?.sources.is_empty());
        assert!(Endpoint::parse("http://localhost:1", 1).is_err());
        Ok(())
    }

    #[test]
    fn connections_go_to_each_node_of_a_list_in_turn() {
        let e = Endpoint::parse("http://127.0.0.1:7420, ws://127.0.0.1:7421", 1)
            .unwrap_or_else(|err| panic!("{err}"));
        let ports: Vec<u16> = (0..4).map(|i| e.addr_for(i).port()).collect();
        assert_eq!(ports, [7420, 7421, 7420, 7421]);
        assert!(Endpoint::parse(" , ", 1).is_err());
    }
}
