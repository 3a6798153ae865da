//! Accepting connections, and the lean path for Durable Streams appends.
//!
//! Most of an append's CPU went to the general HTTP stack (hyper's connection machinery, the
//! router, tower layers, header maps): see docs/design.md, "The lean path for appends". Each
//! connection's requests are read here first: a `POST` append in the common shape is answered
//! directly, other writes are answered by the router on the same connection, and at the first
//! request of any other kind (a read, an upgrade, unusual framing) the connection is handed to
//! hyper for the rest of its life, from the bytes already read.

mod answer;
mod connection;
mod head;
mod rewind;

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::state::AppState;

/// What the lean path needs of the node.
pub(crate) struct LeanPath {
    app: AppState,
    /// The node's append limit: longer bodies go to the router for its 413.
    max_body: usize,
    /// Header lines the outer layers add to every answer, formatted once.
    common: Vec<u8>,
    /// `mooring_http_lean_requests_total`, looked up once rather than per request.
    lean_requests: metrics::Counter,
}

impl std::fmt::Debug for LeanPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanPath")
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// Accepts connections on `listener` until `shutdown`, then waits for every connection to end
/// (each finishes its request in flight).
pub(crate) async fn run<S>(
    listener: TcpListener,
    app: AppState,
    service: S,
    shutdown: CancellationToken,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let common = crate::http::outer_headers(&app.config).await;
    let lean = Arc::new(LeanPath {
        max_body: app.config.max_append_bytes,
        app,
        common,
        lean_requests: metrics::counter!(crate::metrics::LEAN_REQUESTS),
    });
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _)) => {
                // Small frames (a token, a cancel) must leave at once, not wait for Nagle.
                let _ = tcp.set_nodelay(true);
                connections.spawn(connection::serve(
                    tcp,
                    lean.clone(),
                    service.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) if dropped_before_accept(&e) => {}
            Err(e) => {
                // Out of file descriptors, most likely: wait for connections to close.
                tracing::error!("accepting a connection failed: {e}");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// Errors of one connection that went away while queued, not of the listener.
fn dropped_before_accept(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
