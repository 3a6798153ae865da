//! Catch-up and long-poll reads (`GET`) and metadata (`HEAD`).

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::IF_NONE_MATCH;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mooring_core::read::ReadBatch;
use mooring_protocol::cursor::next_cursor;
use mooring_protocol::durable_streams as ds;
use mooring_protocol::{json_mode, ReadFrom};
use rand::Rng;

use super::error::DsError;
use super::query::{self, Live, ReadQuery};
use super::{response, sse};
use crate::state::AppState;

pub(super) async fn get(
    State(app): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, DsError> {
    let query = query::parse(raw.as_deref())?;
    match query.live {
        Live::CatchUp => catch_up(&app, &name, &query, &headers).await,
        Live::LongPoll => long_poll(&app, &name, &query).await,
        Live::Sse => sse::stream(app, name, query).await,
    }
}

pub(super) async fn head(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, DsError> {
    let info = app.store.head(&name).await?;
    let mut out = HeaderMap::new();
    response::metadata(&mut out, &info);
    response::cache(&mut out, response::NO_STORE);
    Ok((StatusCode::OK, out).into_response())
}

/// The body of a batch: a JSON array for JSON streams, the bytes themselves otherwise.
pub(super) fn body_of(batch: &ReadBatch) -> Vec<u8> {
    let items = batch.records.iter().flat_map(|r| r.items.iter());
    if batch.info.config.is_json() {
        let mut out = Vec::new();
        json_mode::write_array(items.map(|i| &i[..]), &mut out);
        out
    } else {
        let mut out = Vec::with_capacity(batch.records.iter().map(|r| r.byte_len()).sum());
        for item in items {
            out.extend_from_slice(item);
        }
        out
    }
}

/// The cursor for a live response.
pub(super) fn cursor(app: &AppState, client: Option<&str>) -> String {
    let jitter = rand::thread_rng().gen_range(1..=3600);
    next_cursor(app.clock.now_ms(), client, jitter).to_string()
}

/// Headers every data or up-to-date read response carries.
fn read_headers(batch: &ReadBatch) -> HeaderMap {
    let mut out = HeaderMap::new();
    response::content_type(&mut out, &batch.info.config.content_type);
    response::next_offset(&mut out, batch.next());
    if batch.up_to_date() {
        response::set(&mut out, ds::STREAM_UP_TO_DATE, "true");
        if batch.info.closed {
            response::closed(&mut out);
        }
    }
    out
}

fn etag(batch: &ReadBatch) -> String {
    let closed = if batch.info.closed && batch.up_to_date() {
        ":c"
    } else {
        ""
    };
    format!("\"{}:{}{closed}\"", batch.start, batch.next())
}

fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

async fn catch_up(
    app: &AppState,
    name: &str,
    query: &ReadQuery,
    headers: &HeaderMap,
) -> Result<Response, DsError> {
    let batch = app
        .store
        .read(name, query.from, app.config.max_read_bytes)
        .await?;
    let mut out = read_headers(&batch);
    if query.from == ReadFrom::Now {
        response::cache(&mut out, response::NO_STORE);
        return Ok((StatusCode::OK, out, Body::from(body_of(&batch))).into_response());
    }
    let tag = etag(&batch);
    if etag_matches(headers, &tag) {
        response::set(&mut out, "etag", &tag);
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    response::set(&mut out, "etag", &tag);
    response::cache(&mut out, response::CACHE_PUBLIC);
    Ok((StatusCode::OK, out, Body::from(body_of(&batch))).into_response())
}

async fn long_poll(app: &AppState, name: &str, query: &ReadQuery) -> Result<Response, DsError> {
    // Subscribe before reading, so an append between the read and the wait still wakes us.
    let mut changes = app.hub.subscribe(name);
    let deadline = tokio::time::Instant::now() + app.config.long_poll_timeout;
    let mut from = query.from;
    loop {
        let batch = app
            .store
            .read(name, from, app.config.max_read_bytes)
            .await?;
        if !batch.records.is_empty() {
            let mut out = read_headers(&batch);
            response::set(
                &mut out,
                ds::STREAM_CURSOR,
                cursor(app, query.cursor.as_deref()),
            );
            response::set(&mut out, "etag", etag(&batch));
            response::cache(&mut out, response::CACHE_PUBLIC);
            return Ok((StatusCode::OK, out, Body::from(body_of(&batch))).into_response());
        }
        if batch.info.closed {
            let mut out = read_headers(&batch);
            response::cache(&mut out, response::NO_STORE);
            return Ok((StatusCode::NO_CONTENT, out).into_response());
        }
        // Keep waiting at the position first resolved (`now` must not move with the tail).
        from = ReadFrom::After(batch.start);
        tokio::select! {
            () = changes.changed() => continue,
            () = tokio::time::sleep_until(deadline) => {}
            () = app.shutdown.cancelled() => {}
        }
        let mut out = read_headers(&batch);
        response::set(
            &mut out,
            ds::STREAM_CURSOR,
            cursor(app, query.cursor.as_deref()),
        );
        response::cache(&mut out, response::NO_STORE);
        return Ok((StatusCode::NO_CONTENT, out).into_response());
    }
}
