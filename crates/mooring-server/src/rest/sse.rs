//! `GET /v1/sessions/{name}/events`: a session as server-sent events.
//!
//! With `Last-Event-ID: S` (or `?after=S`) the stream replays every event after serial S, then
//! follows live; each event carries `id: <serial>`, so a browser's automatic reconnect resumes
//! exactly. Without a position it starts with the materialized view (one whole message per
//! event, sent without ids), then an `event: live` whose id is the view's high-water. A
//! position before the events retention kept gets `event: history_lost`, then the view.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mooring_core::read::ReadError;
use mooring_core::session::event_of;
use mooring_protocol::session::Event;
use mooring_protocol::{Position, ReadFrom};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::error::RestError;
use super::publish::check_name;
use crate::state::AppState;

/// Frames buffered per SSE client before the sender waits for it.
const SSE_BUFFER: usize = 64;
/// A comment line this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The server ends a stream after this long; the client resumes with `Last-Event-ID`.
const MAX_STREAM: Duration = Duration::from_secs(300);
const PAGE_BYTES: usize = 256 << 10;

#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    after: Option<u64>,
}

fn frame(event: &Event, with_id: bool) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_default();
    let action = serde_json::to_value(event.action)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let id = if with_id {
        format!("id: {}\n", event.serial)
    } else {
        String::new()
    };
    Bytes::from(format!("{id}event: {action}\ndata: {data}\n\n"))
}

pub(crate) async fn events(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, RestError> {
    check_name(&name)?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| RestError::invalid("Last-Event-ID must be an event serial"))
        })
        .transpose()?;
    let after = last_id.or(query.after);
    let (tx, rx) = mpsc::channel::<Bytes>(SSE_BUFFER);
    // Subscribe before the first read, so nothing published in between is missed.
    let changes = app.hub.subscribe(&name);
    tokio::spawn(pump(app, name, after, tx, changes));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut out = HeaderMap::new();
    out.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    out.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok((StatusCode::OK, out, Body::from_stream(body)).into_response())
}

async fn pump(
    app: AppState,
    name: String,
    after: Option<u64>,
    tx: mpsc::Sender<Bytes>,
    mut changes: crate::hub::Subscription,
) {
    let mut position = match after {
        Some(serial) => serial,
        None => match send_view(&app, &name, &tx).await {
            Some(serial) => serial,
            None => return,
        },
    };
    let deadline = tokio::time::Instant::now() + MAX_STREAM;
    loop {
        let epoch = app
            .store
            .head(&name)
            .await
            .map(|i| i.tail.epoch)
            .unwrap_or(0);
        let from = ReadFrom::After(Position {
            epoch,
            serial: position,
        });
        let read = app.store.read(&name, from, PAGE_BYTES).await;
        if let Err(ReadError::BeforeRetained { .. }) = read {
            // The events after the position were trimmed: say so, then start over from the
            // view as a stream without a position does.
            let lost = "event: history_lost\ndata: {\"code\":\"history_lost\",\"message\":\"the events after this position were removed by the retention rule; the view follows\"}\n\n";
            if tx.send(Bytes::from_static(lost.as_bytes())).await.is_err() {
                return;
            }
            match send_view(&app, &name, &tx).await {
                Some(serial) => position = serial,
                None => return,
            }
            continue;
        }
        if let Ok(batch) = read {
            for record in &batch.records {
                if tx.send(frame(&event_of(record), true)).await.is_err() {
                    return;
                }
                position = record.serial;
            }
            if !batch.up_to_date() {
                continue;
            }
        }
        tokio::select! {
            () = changes.changed() => {}
            () = tokio::time::sleep(KEEP_ALIVE) => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep_until(deadline) => return,
            () = app.shutdown.cancelled() => return,
            () = tx.closed() => return,
        }
    }
}

/// Sends the materialized view; returns the serial live events follow.
async fn send_view(app: &AppState, name: &str, tx: &mpsc::Sender<Bytes>) -> Option<u64> {
    let snapshot = app.store.snapshot(name).await.ok().flatten();
    let (serial, messages) = snapshot.map_or((0, Vec::new()), |s| (s.info.tail.serial, s.messages));
    for message in messages {
        tx.send(frame(&message.as_event(), false)).await.ok()?;
    }
    let live = format!("id: {serial}\nevent: live\ndata: {{\"serial\":{serial}}}\n\n");
    tx.send(Bytes::from(live)).await.ok()?;
    Some(serial)
}
