//! Create (`PUT`), append and close (`POST`), and delete (`DELETE`).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, HOST, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use mooring_core::append::{AppendKind, AppendRequest};
use mooring_core::create::{CreateOutcome, CreateRequest};
use mooring_core::stream::{Expiry, ForkOrigin};
use mooring_protocol::durable_streams::{self as ds};
use mooring_protocol::{json_mode, Position};

use super::error::DsError;
use super::response;
use super::STREAM_PREFIX;
use crate::state::AppState;

/// The headers of a request, by lowercase name: axum's map, or the few an append reads on the
/// lean connection path (`crate::listener`).
pub(crate) trait RequestHeaders {
    /// The first value of `name`, as sent.
    fn raw(&self, name: &str) -> Option<&[u8]>;
}

impl RequestHeaders for HeaderMap {
    fn raw(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }
}

/// A header's value as text, refused unless visible ASCII (`crate::http::visible_text`), so
/// both paths refuse the same values.
fn header<'a>(headers: &'a impl RequestHeaders, name: &str) -> Result<Option<&'a str>, DsError> {
    let Some(raw) = headers.raw(name) else {
        return Ok(None);
    };
    match crate::http::visible_text(raw) {
        Some(text) => Ok(Some(text)),
        None => Err(DsError::bad_request(
            "INVALID_HEADER",
            format!("{name} must be visible ASCII text"),
        )),
    }
}

/// The stream name a `Stream-Forked-From` path refers to.
fn source_name(path: &str) -> String {
    let path = path.trim();
    path.strip_prefix(STREAM_PREFIX)
        .or_else(|| path.strip_prefix('/'))
        .unwrap_or(path)
        .to_owned()
}

fn expiry(headers: &HeaderMap) -> Result<Expiry, DsError> {
    let ttl = header(headers, ds::STREAM_TTL)?;
    let at = header(headers, ds::STREAM_EXPIRES_AT)?;
    match (ttl, at) {
        (Some(_), Some(_)) => Err(DsError::bad_request(
            "INVALID_EXPIRY",
            "send Stream-TTL or Stream-Expires-At, not both",
        )),
        (Some(ttl), None) => Ok(Expiry::TtlSecs(ds::parse_ttl_secs(ttl)?)),
        (None, Some(at)) => Ok(Expiry::AtMs(ds::parse_expires_at_ms(at)?)),
        (None, None) => Ok(Expiry::Never),
    }
}

fn fork(headers: &HeaderMap) -> Result<Option<ForkOrigin>, DsError> {
    let from = header(headers, ds::STREAM_FORKED_FROM)?;
    let offset = header(headers, ds::STREAM_FORK_OFFSET)?;
    let sub = header(headers, ds::STREAM_FORK_SUB_OFFSET)?;
    let Some(from) = from else {
        if offset.is_some() || sub.is_some() {
            return Err(DsError::bad_request(
                "INVALID_HEADER",
                "Stream-Fork-Offset and Stream-Fork-Sub-Offset need Stream-Forked-From",
            ));
        }
        return Ok(None);
    };
    let offset = offset
        .map(|o| Position::parse(o.trim()))
        .transpose()
        .map_err(|e| DsError::bad_request("INVALID_FORK_OFFSET", e.to_string()))?;
    let sub_offset = sub.map(ds::parse_fork_sub_offset).transpose()?.unwrap_or(0);
    Ok(Some(ForkOrigin {
        source: source_name(from),
        offset,
        sub_offset,
    }))
}

/// The record items of a body: JSON messages for JSON streams, else the body as one item.
fn items(content_type: Option<&str>, body: Bytes, creating: bool) -> Result<Vec<Bytes>, DsError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    if content_type.is_some_and(ds::is_json) {
        let messages = json_mode::flatten(&body, creating)?;
        return Ok(messages.into_iter().map(Bytes::from).collect());
    }
    if body.len() <= OWN_COPY_MAX_BYTES {
        return Ok(vec![Bytes::copy_from_slice(&body)]);
    }
    Ok(vec![body])
}

/// Bodies up to this size are copied before they are kept. A small body arrives as a slice of
/// its connection's read buffer (8 KiB or more); kept as it is, the record would hold that
/// whole buffer in memory until the store lets go of it (the embedded engine keeps records in
/// memory until its checkpoint), and the connection would allocate a new buffer for its next
/// request. A copy of a few hundred bytes is cheaper than both.
const OWN_COPY_MAX_BYTES: usize = 16 * 1024;

pub(super) async fn create(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DsError> {
    let content_type = header(&headers, CONTENT_TYPE.as_str())?.map(str::to_owned);
    let req = CreateRequest {
        expiry: expiry(&headers)?,
        closed: ds::is_closed_flag(header(&headers, ds::STREAM_CLOSED)?),
        items: items(content_type.as_deref(), body, true)?,
        fork: fork(&headers)?,
        content_type,
    };
    let outcome = app.store.create(&name, req).await?;
    let (status, info) = match outcome {
        CreateOutcome::Created(info) => (StatusCode::CREATED, info),
        CreateOutcome::Existed(info) => (StatusCode::OK, info),
    };
    let mut out = HeaderMap::new();
    response::metadata(&mut out, &info);
    if status == StatusCode::CREATED {
        let host = header(&headers, HOST.as_str())?.unwrap_or("localhost");
        if let Ok(v) = format!("http://{host}{STREAM_PREFIX}{name}").parse() {
            out.insert(LOCATION, v);
        }
    }
    Ok((status, out).into_response())
}

pub(super) async fn append(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, DsError> {
    let appended = run_append(&app, &name, &headers, body).await?;
    let mut out = HeaderMap::new();
    response::next_offset(&mut out, appended.next);
    if appended.closed {
        response::closed(&mut out);
    }
    if let Some((epoch, seq)) = appended.producer {
        response::set(&mut out, ds::PRODUCER_EPOCH, epoch.to_string());
        response::set(&mut out, ds::PRODUCER_SEQ, seq.to_string());
    }
    Ok((appended.status, out).into_response())
}

/// The answer to an append, before it is written out by either path.
#[derive(Debug)]
pub(crate) struct Appended {
    pub(crate) status: StatusCode,
    pub(crate) next: Position,
    pub(crate) closed: bool,
    /// The producer's epoch and last accepted sequence number.
    pub(crate) producer: Option<(u64, u64)>,
}

/// Appends (or closes) `name` from a `POST`: the rules of the protocol for its headers and
/// body, the store's write, and the wake-ups of readers.
pub(crate) async fn run_append(
    app: &AppState,
    name: &str,
    headers: &impl RequestHeaders,
    body: Bytes,
) -> Result<Appended, DsError> {
    let close = ds::is_closed_flag(header(headers, ds::STREAM_CLOSED)?);
    let content_type = header(headers, CONTENT_TYPE.as_str())?.map(str::to_owned);
    if body.is_empty() && !close {
        return Err(DsError::bad_request(
            "EMPTY_BODY",
            "an append needs a body; to close the stream send Stream-Closed: true",
        ));
    }
    if !body.is_empty() && content_type.is_none() {
        return Err(DsError::bad_request(
            "CONTENT_TYPE_REQUIRED",
            "an append with a body needs a Content-Type matching the stream's",
        ));
    }
    let producer = ds::parse_producer(
        header(headers, ds::PRODUCER_ID)?,
        header(headers, ds::PRODUCER_EPOCH)?,
        header(headers, ds::PRODUCER_SEQ)?,
    )?;
    let has_producer = producer.is_some();
    let has_data = !body.is_empty();
    let req = AppendRequest {
        // One POST is one record.
        records: Some(items(content_type.as_deref(), body, false)?)
            .filter(|r| !r.is_empty())
            .into_iter()
            .collect(),
        content_type,
        close,
        stream_seq: header(headers, ds::STREAM_SEQ)?.map(str::to_owned),
        producer,
    };
    let outcome = app.store.append(name, req).await?;
    if outcome.kind == AppendKind::Written {
        metrics::counter!(crate::metrics::DS_APPENDS).increment(1);
        app.hub.notify(name);
        app.sessions.poke(name);
    }
    // 200 tells a producer its data is new; a close alone or a duplicate carries no new data.
    let status = if has_producer && has_data && outcome.kind == AppendKind::Written {
        StatusCode::OK
    } else {
        StatusCode::NO_CONTENT
    };
    Ok(Appended {
        status,
        next: outcome.next,
        closed: outcome.closed,
        producer: outcome.producer.map(|p| (p.epoch, p.last_seq)),
    })
}

pub(super) async fn delete(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, DsError> {
    app.store.delete(&name).await?;
    app.hub.notify(&name);
    // A hot session's task must learn that the life it broadcast ended.
    app.sessions.poke(&name);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_body_is_kept_as_a_copy_and_a_large_one_as_it_came() {
        let buffer = Bytes::from(vec![7u8; 64 * 1024]);
        let small = buffer.slice(..256);
        let kept = items(Some("application/octet-stream"), small.clone(), false).expect("items");
        assert_eq!(kept, vec![small.clone()]);
        assert_ne!(
            kept[0].as_ptr(),
            small.as_ptr(),
            "not a slice of the read buffer"
        );
        let large = buffer.slice(..OWN_COPY_MAX_BYTES + 1);
        let kept = items(Some("application/octet-stream"), large.clone(), false).expect("items");
        assert_eq!(kept[0].as_ptr(), large.as_ptr(), "no copy of a large body");
    }
}
