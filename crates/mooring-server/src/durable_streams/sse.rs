//! Server-sent events reads (`live=sse`).
//!
//! Each batch of records goes out as one `data` event followed by one `control` event carrying
//! the next offset. Text and JSON streams travel as UTF-8; any other type as base64, announced
//! by `Stream-SSE-Data-Encoding: base64`. The connection ends when the stream is closed and
//! fully sent, after `sse_max_duration` (clients resume from the last offset), or at shutdown.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use mooring_core::read::ReadBatch;
use mooring_protocol::durable_streams as ds;
use mooring_protocol::ReadFrom;
use tokio::sync::mpsc;

use super::error::DsError;
use super::query::ReadQuery;
use super::read::{body_of, cursor};
use super::response;
use crate::state::AppState;

/// Events buffered per SSE connection before the writer waits for the client to read.
const SSE_BUFFER: usize = 8;

pub(super) async fn stream(
    app: AppState,
    name: String,
    query: ReadQuery,
) -> Result<Response, DsError> {
    // The first read answers errors (404, 410, 400) as plain HTTP before the stream starts.
    let first = app
        .store
        .read(&name, query.from, app.config.max_read_bytes)
        .await?;
    let base64 = !ds::is_sse_text(&first.info.config.content_type);
    let (tx, rx) = mpsc::channel::<Bytes>(SSE_BUFFER);
    tokio::spawn(pump(app, name, query, first, base64, tx));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if base64 {
        response::set(&mut headers, ds::STREAM_SSE_DATA_ENCODING, "base64");
    }
    Ok((StatusCode::OK, headers, Body::from_stream(body)).into_response())
}

/// Reads and sends until the stream is finished, the client is gone, or time is up.
async fn pump(
    app: AppState,
    name: String,
    query: ReadQuery,
    first: ReadBatch,
    base64: bool,
    tx: mpsc::Sender<Bytes>,
) {
    let mut changes = app.hub.subscribe(&name);
    let deadline = tokio::time::Instant::now() + app.config.sse_max_duration;
    let mut batch = first;
    let mut announced = false;
    loop {
        let finished = batch.info.closed && batch.up_to_date();
        if !batch.records.is_empty() && tx.send(data_event(&batch, base64)).await.is_err() {
            return;
        }
        if !batch.records.is_empty() || !announced {
            let control = control_event(&app, &batch, query.cursor.as_deref());
            if tx.send(control).await.is_err() {
                return;
            }
            announced = true;
        }
        if finished {
            return;
        }
        let from = ReadFrom::After(batch.next());
        if batch.up_to_date() {
            tokio::select! {
                () = changes.changed() => {}
                () = tokio::time::sleep_until(deadline) => return,
                () = app.shutdown.cancelled() => return,
                () = tx.closed() => return,
            }
        }
        batch = match app.store.read(&name, from, app.config.max_read_bytes).await {
            Ok(b) => b,
            // Deleted or expired mid-stream: end the connection; the client's next request
            // learns why.
            Err(_) => return,
        };
    }
}

fn data_event(batch: &ReadBatch, base64: bool) -> Bytes {
    let body = body_of(batch);
    let text = if base64 {
        base64::engine::general_purpose::STANDARD.encode(&body)
    } else {
        String::from_utf8_lossy(&body).into_owned()
    };
    let mut out = String::with_capacity(text.len() + 32);
    out.push_str("event: data\n");
    // CR, LF and CRLF all end an SSE line: split on each, so payload bytes can never forge an
    // event boundary or a field of their own.
    for line in text.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
        out.push_str("data:");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

fn control_event(app: &AppState, batch: &ReadBatch, client_cursor: Option<&str>) -> Bytes {
    let mut control = serde_json::Map::new();
    control.insert("streamNextOffset".into(), batch.next().to_string().into());
    let finished = batch.info.closed && batch.up_to_date();
    if finished {
        control.insert("streamClosed".into(), true.into());
    } else {
        control.insert("streamCursor".into(), cursor(app, client_cursor).into());
    }
    if batch.up_to_date() {
        control.insert("upToDate".into(), true.into());
    }
    let json = serde_json::Value::Object(control).to_string();
    Bytes::from(format!("event: control\ndata:{json}\n\n"))
}
