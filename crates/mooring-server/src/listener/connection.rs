//! One connection: appends answered directly, other writes answered by the router on the same
//! connection, until a request needs hyper; then the rest of the connection is hyper's.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::{Service, ServiceExt};

use super::head::{self, AppendHead, Head};
use super::rewind::Rewind;
use super::{answer, LeanPath};
use crate::durable_streams::{run_append, Appended, DsError};

/// Bytes read at a time; also the room kept free before a read.
const READ_CHUNK: usize = 8 * 1024;

/// The most room made in the read buffer at a time while a body arrives; also the most read
/// ahead (a pipelined request) while a routed answer is under way.
const MAX_READ_AHEAD: usize = 64 * 1024;

/// A buffer grown past this (a large body, refusal or streamed chunk) is let go after use.
const MAX_KEPT: usize = 64 * 1024;

/// A head longer than this is handed off (hyper has its own limit and answer).
const MAX_LEAN_HEAD: usize = 16 * 1024;

/// A request taken by the lean loop, its body read.
enum Taken {
    Append(AppendHead),
    Routed(axum::http::Request<()>),
}

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
        let (head_len, content_length, taken) = match parsed {
            Head::Append(head) => (head.head_len, head.content_length, Taken::Append(head)),
            Head::Routed(head) => (
                head.head_len,
                head.content_length,
                Taken::Routed(head.request),
            ),
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
            // Room for what has come, not for what the head promises: a client that declares
            // a large body and sends nothing must not cost its length in memory.
            buf.reserve((total - buf.len()).min(MAX_READ_AHEAD));
            match tcp.read_buf(&mut buf).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
        let mut message = buf.split_to(total);
        let body = message.split_off(head_len).freeze();
        lean.lean_requests.increment(1);
        let go_on = match taken {
            Taken::Append(head) => {
                let appended = append(&lean, &head, body).await;
                // Read after the append: a shutdown that came during it closes the connection
                // after this answer, and the answer says so.
                let closing = shutdown.is_cancelled();
                let written = match appended {
                    Ok(appended) => {
                        out.clear();
                        answer::appended(&mut out, &appended, &lean.common, closing);
                        tcp.write_all(&out).await
                    }
                    Err(refusal) => {
                        let refusal = refusal.into_response();
                        answer::response(&mut tcp, &mut out, refusal, false, &lean.common, closing)
                            .await
                    }
                };
                written.is_ok() && !closing
            }
            Taken::Routed(request) => {
                let request = request.map(|()| Body::from(body));
                routed(
                    &mut tcp,
                    &mut buf,
                    &mut out,
                    service.clone(),
                    request,
                    &shutdown,
                )
                .await
            }
        };
        if !go_on {
            return;
        }
        if out.capacity() > MAX_KEPT {
            out = Vec::new();
        }
        if buf.capacity() > MAX_KEPT {
            buf = BytesMut::from(&buf[..]);
        }
    }
    hand_off(tcp, buf, service, shutdown).await;
}

/// Authorizes and runs an append.
async fn append(lean: &LeanPath, head: &AppendHead, body: Bytes) -> Result<Appended, DsError> {
    crate::auth::http::admit_append(&lean.app, head.authorization(), &head.name)?;
    run_append(&lean.app, &head.name, head, body).await
}

/// Has the router answer `request` and writes its answer, while watching the connection: a
/// client that leaves ends the handler (a streamed answer can last as long as the client
/// stays). Bytes of a next request that arrive meanwhile are kept in `buf`. False once the
/// connection is done (the client left, a write failed, or the answer closed it).
async fn routed<S>(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    service: S,
    request: Request,
    shutdown: &CancellationToken,
) -> bool
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    let head_request = request.method() == Method::HEAD;
    let (mut reader, mut writer) = tcp.split();
    let answered = async {
        let response = match service.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let closing = shutdown.is_cancelled();
        let written =
            answer::response(&mut writer, out, response, head_request, &[], closing).await;
        written.is_ok() && !closing
    };
    tokio::select! {
        go_on = answered => go_on,
        () = until_closed(&mut reader, buf) => false,
    }
}

/// Reads ahead into `buf` until the peer closes (or the connection fails); never returns while
/// the connection is open. Stops reading once `MAX_READ_AHEAD` bytes wait, as hyper does.
async fn until_closed<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) {
    while buf.len() < MAX_READ_AHEAD {
        buf.reserve(READ_CHUNK);
        match reader.read_buf(buf).await {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
    std::future::pending::<()>().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A body that sends one chunk and then waits forever, telling `dropped` when it goes.
    fn endless_body(dropped: tokio::sync::oneshot::Sender<()>) -> Body {
        struct Guard(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Guard {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let guard = Guard(Some(dropped));
        let chunks = futures::stream::unfold((guard, true), |(guard, first)| async move {
            if first {
                Some((
                    Ok::<_, std::io::Error>(Bytes::from_static(b"data: 1\n\n")),
                    (guard, false),
                ))
            } else {
                std::future::pending::<()>().await;
                None
            }
        });
        Body::from_stream(chunks)
    }

    #[tokio::test]
    async fn a_client_that_leaves_ends_a_streamed_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
        let mut body = Some(endless_body(dropped_tx));
        let service = tower::service_fn(move |_: Request| {
            let body = body.take().unwrap_or_default();
            async move { Ok::<_, Infallible>(Response::new(body)) }
        });
        let answering = tokio::spawn(async move {
            let (mut buf, mut out) = (BytesMut::new(), Vec::new());
            let request = Request::post("/v1/chat")
                .body(Body::empty())
                .expect("request");
            let shutdown = CancellationToken::new();
            routed(&mut server, &mut buf, &mut out, service, request, &shutdown).await
        });
        let mut first = [0u8; 256];
        let n = client.read(&mut first).await.expect("read");
        let head = String::from_utf8_lossy(&first[..n]).into_owned();
        assert!(head.contains("transfer-encoding: chunked"), "{head}");
        drop(client);
        let go_on = tokio::time::timeout(Duration::from_secs(5), answering)
            .await
            .expect("the answer ends once the client is gone")
            .expect("task");
        assert!(!go_on, "the connection is done");
        tokio::time::timeout(Duration::from_secs(5), dropped)
            .await
            .expect("the body was dropped")
            .expect("guard");
    }

    #[tokio::test]
    async fn watching_a_connection_keeps_what_arrives_and_ends_when_the_peer_leaves() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        let mut buf = BytesMut::new();
        let watched = tokio::spawn(async move {
            until_closed(&mut near, &mut buf).await;
            buf
        });
        far.write_all(b"GET /next").await.expect("write");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!watched.is_finished(), "an open connection is watched on");
        drop(far);
        let buf = tokio::time::timeout(std::time::Duration::from_secs(5), watched)
            .await
            .expect("ends once the peer leaves")
            .expect("task");
        assert_eq!(
            &buf[..],
            b"GET /next",
            "what arrived is kept for the next request"
        );
    }
}
