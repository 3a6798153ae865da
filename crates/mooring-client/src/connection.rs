//! One WebSocket to a node: opening it with the `hello`/`welcome` handshake, and JSON frames
//! in and out. No state beyond the socket; the task in [`crate::task`] owns it.

use std::fmt;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use mooring_protocol::realtime::{ClientFrame, ServerFrame, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::{ConnectError, ConnectErrorKind, ServerError};

/// What the server said in `welcome`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Welcome {
    pub(crate) connection_id: String,
    pub(crate) client_id: String,
    pub(crate) heartbeat: Duration,
    pub(crate) dead_after: Duration,
}

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The server closed with this code (4008: slow consumer; 1001: going away; ...).
    Closed { code: u16, reason: String },
    /// The socket ended without a close frame.
    Ended,
    /// Reading or writing failed.
    Failed(String),
    /// Nothing arrived for `dead_after`.
    Silent,
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed { code, reason } => write!(f, "closed by the server ({code} {reason})"),
            Self::Ended => write!(f, "the socket ended without a close frame"),
            Self::Failed(e) => write!(f, "socket error: {e}"),
            Self::Silent => write!(f, "nothing heard within dead_after"),
        }
    }
}

/// What one read brought.
#[derive(Debug)]
pub(crate) enum Incoming {
    Frame(ServerFrame),
    /// A sign of life with nothing to act on (a WebSocket ping, an unknown frame).
    Alive,
    Lost(Lost),
}

/// An open, welcomed WebSocket.
#[derive(Debug)]
pub(crate) struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub(crate) welcome: Welcome,
}

impl Connection {
    /// Opens `url` with `credential` (sent as `Authorization: Bearer`), says `hello` as
    /// `client_id`, and waits for `welcome`, all within `timeout`.
    pub(crate) async fn open(
        url: &str,
        client_id: Option<&str>,
        credential: Option<&str>,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        tokio::time::timeout(timeout, Self::handshake(url, client_id, credential))
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::new(
                    ConnectErrorKind::TimedOut,
                    format!("no welcome from {url} within {timeout:?}"),
                ))
            })
    }

    async fn handshake(
        url: &str,
        client_id: Option<&str>,
        credential: Option<&str>,
    ) -> Result<Self, ConnectError> {
        let invalid_url = |e: tungstenite::Error| {
            ConnectError::new(ConnectErrorKind::InvalidUrl, format!("{url}: {e}"))
        };
        let mut request = url.into_client_request().map_err(invalid_url)?;
        if let Some(credential) = credential {
            // The header, not `?token=`: a query string ends up in proxies' access logs.
            let value = HeaderValue::from_str(&format!("Bearer {credential}")).map_err(|_| {
                ConnectError::new(
                    ConnectErrorKind::Credential,
                    "the credential has characters a header cannot carry (it is not shown)",
                )
            })?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        // No Nagle delay: frames are small and a cancel must not wait for the peer's ACK.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true)
            .await
            .map_err(|e| match e {
                tungstenite::Error::Url(e) => {
                    ConnectError::new(ConnectErrorKind::InvalidUrl, format!("{url}: {e}"))
                }
                e => ConnectError::new(ConnectErrorKind::Transport, format!("{url}: {e}")),
            })?;
        let mut connection = Self {
            ws,
            welcome: Welcome {
                connection_id: String::new(),
                client_id: String::new(),
                heartbeat: Duration::ZERO,
                dead_after: Duration::ZERO,
            },
        };
        let hello = ClientFrame::Hello {
            protocol: PROTOCOL_VERSION,
            client_id: client_id.map(Into::into),
        };
        let broken = |e: Lost| ConnectError::new(ConnectErrorKind::Handshake, e.to_string());
        connection.send(&hello).await.map_err(broken)?;
        loop {
            match connection.recv().await {
                Incoming::Frame(ServerFrame::Welcome {
                    connection_id,
                    client_id,
                    heartbeat_ms,
                    dead_after_ms,
                    ..
                }) => {
                    connection.welcome = Welcome {
                        connection_id,
                        client_id,
                        heartbeat: Duration::from_millis(heartbeat_ms.max(1)),
                        dead_after: Duration::from_millis(dead_after_ms.max(1)),
                    };
                    return Ok(connection);
                }
                Incoming::Frame(ServerFrame::Error { error, .. }) => {
                    return Err(ConnectError::server(
                        ConnectErrorKind::Refused,
                        ServerError::from(error),
                    ));
                }
                Incoming::Frame(ServerFrame::Ping { nonce }) => {
                    connection
                        .send(&ClientFrame::Pong { nonce })
                        .await
                        .map_err(broken)?;
                }
                Incoming::Frame(other) => {
                    return Err(ConnectError::new(
                        ConnectErrorKind::Handshake,
                        format!("expected welcome, got {other:?}"),
                    ));
                }
                Incoming::Alive => {}
                Incoming::Lost(lost) => return Err(broken(lost)),
            }
        }
    }

    pub(crate) async fn send(&mut self, frame: &ClientFrame) -> Result<(), Lost> {
        let text = serde_json::to_string(frame).map_err(|e| Lost::Failed(e.to_string()))?;
        self.send_text(text).await
    }

    /// Sends a frame already encoded.
    pub(crate) async fn send_text(&mut self, text: String) -> Result<(), Lost> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| Lost::Failed(e.to_string()))
    }

    /// The next frame. Cancel-safe: a frame is never half read.
    pub(crate) async fn recv(&mut self) -> Incoming {
        match self.ws.next().await {
            None => Incoming::Lost(Lost::Ended),
            Some(Err(e)) => Incoming::Lost(match e {
                tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
                    Lost::Ended
                }
                e => Lost::Failed(e.to_string()),
            }),
            Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
                Ok(frame) => Incoming::Frame(frame),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a frame this client does not know");
                    Incoming::Alive
                }
            },
            Some(Ok(Message::Close(frame))) => Incoming::Lost(match frame {
                Some(frame) => Lost::Closed {
                    code: frame.code.into(),
                    reason: frame.reason.to_string(),
                },
                None => Lost::Closed {
                    code: 1005,
                    reason: String::new(),
                },
            }),
            Some(Ok(_)) => Incoming::Alive,
        }
    }

    /// Closes cleanly (1000), waiting briefly for the server's close frame.
    pub(crate) async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "client closed".into(),
        };
        let closing = async {
            if self.ws.send(Message::Close(Some(frame))).await.is_ok() {
                while let Some(Ok(_)) = self.ws.next().await {}
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
    }
}
