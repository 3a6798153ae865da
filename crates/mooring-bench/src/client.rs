//! One HTTP/1.1 keep-alive connection speaking the Durable Streams protocol.
//!
//! Deliberately thin: a request goes out, the whole answer is read, the connection is reused.
//! One connection carries one request at a time, which is what a sequential producer is.

use std::fmt;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::target::Target;

/// The answer to one request: its status and body (kept short for error reports).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// The response body.
    pub body: Bytes,
    /// Whether the server said it closes the connection after this answer (`Connection:
    /// close`): the next request needs a new connection.
    pub closes: bool,
}

impl Answer {
    /// The first bytes of the body as text, for error messages.
    pub fn body_excerpt(&self) -> String {
        let end = self.body.len().min(200);
        String::from_utf8_lossy(&self.body[..end]).trim().to_owned()
    }
}

/// An open keep-alive connection to a target.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
    authority: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens a TCP connection (no Nagle delay) and an HTTP/1.1 session on it.
    pub async fn open(target: &Target) -> anyhow::Result<Self> {
        let tcp = TcpStream::connect((target.host(), target.port()))
            .await
            .with_context(|| format!("connecting to {}", target.authority()))?;
        tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (sender, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP/1.1 handshake")?;
        let driver = tokio::spawn(async move {
            // The connection ends with an error when the server closes it; the next request on
            // the sender then fails and the caller reconnects, so the error is not lost.
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            driver,
            authority: target.authority(),
        })
    }

    /// `PUT path` with a content type: creates a stream (201) or finds it as configured (200).
    pub async fn create_stream(
        &mut self,
        path: &str,
        content_type: &str,
    ) -> anyhow::Result<Answer> {
        self.send(Method::PUT, path, content_type, Bytes::new())
            .await
    }

    /// `POST path` with a body: one Durable Streams append, or a call of another HTTP API (a
    /// Pusher server's events).
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        self.send(Method::POST, path, content_type, body).await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.authority)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .context("building the request")?;
        self.sender
            .ready()
            .await
            .context("connection closed before the request")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .context("sending the request")?;
        let status = response.status();
        let closes = response
            .headers()
            .get(CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the response body")?
            .to_bytes();
        Ok(Answer {
            status,
            body,
            closes,
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
