//! One connection: appends answered on the lean path until a request needs more, then the
//! rest of the connection served by hyper and the router.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use super::head::{self, AppendHead, Head};
use super::rewind::Rewind;
use super::{answer, LeanPath};
use crate::durable_streams::run_append;

/// Bytes read at a time; also the room kept free before a read.
const READ_CHUNK: usize = 8 * 1024;

/// A head longer than this is handed off (hyper has its own limit and answer).
const MAX_LEAN_HEAD: usize = 16 * 1024;

/// Serves `tcp` until it closes, or until `shutdown` finds it between requests.
pub(super) async fn serve<S>(
    mut tcp: TcpStream,
    lean: Arc<LeanPath>,
    service: S,
    shutdown: CancellationToken,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::new();
    loop {
        let parsed = if buf.is_empty() {
            Head::Partial
        } else {
            head::parse(&buf, lean.max_body)
        };
        let (head_len, content_length) = match &parsed {
            Head::Append(head) => (head.head_len, head.content_length),
            Head::Routed(head) => (head.head_len, head.content_length),
            Head::Other => break,
            Head::Partial => {
                if buf.len() >= MAX_LEAN_HEAD {
                    break;
                }
                if buf.capacity() - buf.len() < READ_CHUNK / 2 {
                    buf.reserve(READ_CHUNK);
                }
                // Between requests, a shutdown closes the connection; an idle client
                // reconnects.
                let read = tokio::select! {
                    biased;
                    () = shutdown.cancelled(), if buf.is_empty() => return,
                    read = tcp.read_buf(&mut buf) => read,
                };
                match read {
                    Ok(n) if n > 0 => continue,
                    _ => return,
                }
            }
        };
        let total = head_len + content_length;
        while buf.len() < total {
            buf.reserve(total - buf.len());
            match tcp.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
        let mut message = buf.split_to(total);
        let body = message.split_off(head_len).freeze();
        let closing = shutdown.is_cancelled();
        let written = match parsed {
            Head::Append(head) => {
                metrics::counter!(crate::metrics::LEAN_REQUESTS).increment(1);
                append(&lean, &head, body, &mut out, closing).await;
                tcp.write_all(&out).await
            }
            Head::Routed(head) => {
                let head_request = head.request.method() == Method::HEAD;
                let request = head.request.map(|()| Body::from(body));
                let response = match service.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                answer::routed(&mut tcp, &mut out, response, head_request, closing).await
            }
            // Both were dealt with above.
            Head::Partial | Head::Other => return,
        };
        if written.is_err() || closing {
            return;
        }
    }
    hand_off(tcp, buf, service, shutdown).await;
}

/// Answers an append into `out`.
async fn append(lean: &LeanPath, head: &AppendHead, body: Bytes, out: &mut Vec<u8>, closing: bool) {
    out.clear();
    match crate::auth::http::admit_append(&lean.app, head.authorization(), &head.name) {
        Err(refusal) => answer::response(out, refusal.into_response(), &lean.common, closing).await,
        Ok(()) => match run_append(&lean.app, &head.name, head, body).await {
            Ok(appended) => answer::appended(out, &appended, &lean.common, closing),
            Err(e) => answer::response(out, e.into_response(), &lean.common, closing).await,
        },
    }
}

/// Serves the rest of the connection with hyper (upgrades included), from the bytes already
/// read.
async fn hand_off<S>(tcp: TcpStream, read: BytesMut, service: S, shutdown: CancellationToken)
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    metrics::counter!(crate::metrics::HAND_OFFS).increment(1);
    let io = TokioIo::new(Rewind::new(read.freeze(), tcp));
    let service = TowerToHyperService::new(
        service
            .map_request(|request: hyper::Request<hyper::body::Incoming>| request.map(Body::new)),
    );
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            // Finish the request in flight, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::trace!("connection ended with an error: {e}");
    }
}
