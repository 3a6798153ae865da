//! Response headers shared by the protocol's operations.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use mooring_core::stream::{Expiry, StreamInfo};
use mooring_protocol::durable_streams::{self as ds, format_expires_at};
use mooring_protocol::Position;

/// Cache policy of immutable catch-up ranges.
pub(super) const CACHE_PUBLIC: &str = "public, max-age=60, stale-while-revalidate=300";
pub(super) const NO_STORE: &str = "no-store";

pub(super) fn set(headers: &mut HeaderMap, name: &'static str, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

pub(super) fn next_offset(headers: &mut HeaderMap, next: Position) {
    let value = match next.offset_bytes() {
        Some(bytes) => HeaderValue::from_bytes(&bytes),
        None => HeaderValue::from_str(&next.to_string()),
    };
    if let Ok(v) = value {
        headers.insert(HeaderName::from_static(ds::STREAM_NEXT_OFFSET), v);
    }
}

pub(super) fn closed(headers: &mut HeaderMap) {
    set(headers, ds::STREAM_CLOSED, "true");
}

pub(super) fn content_type(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(CONTENT_TYPE, v);
    }
}

pub(super) fn cache(headers: &mut HeaderMap, policy: &'static str) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(policy));
}

/// `Stream-TTL` / `Stream-Expires-At` of the expiry in force.
pub(super) fn expiry(headers: &mut HeaderMap, expiry: Expiry) {
    match expiry {
        Expiry::Never => {}
        Expiry::TtlSecs(secs) => set(headers, ds::STREAM_TTL, secs.to_string()),
        Expiry::AtMs(ms) => set(headers, ds::STREAM_EXPIRES_AT, format_expires_at(ms)),
    }
}

/// Metadata headers of `HEAD` and of create responses.
pub(super) fn metadata(headers: &mut HeaderMap, info: &StreamInfo) {
    content_type(headers, &info.config.content_type);
    next_offset(headers, info.tail);
    expiry(headers, info.config.expiry);
    if info.closed {
        closed(headers);
    }
}
