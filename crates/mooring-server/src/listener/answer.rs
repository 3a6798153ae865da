//! Answers written by the lean path, byte for byte what hyper writes for the same response,
//! with the headers the outer layers add (`crate::http::outer_headers`).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::header::CONTENT_LENGTH;
use axum::http::StatusCode;
use axum::response::Response;
use mooring_protocol::durable_streams as ds;

use crate::durable_streams::Appended;

/// The most bytes of an error's body the lean path writes out (errors are a short JSON).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// An append's answer.
pub(crate) fn appended(out: &mut Vec<u8>, appended: &Appended, common: &[u8], closing: bool) {
    status_line(out, appended.status);
    out.extend_from_slice(ds::STREAM_NEXT_OFFSET.as_bytes());
    out.extend_from_slice(b": ");
    match appended.next.offset_bytes() {
        Some(bytes) => out.extend_from_slice(&bytes),
        None => out.extend_from_slice(appended.next.to_string().as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    if appended.closed {
        field(out, ds::STREAM_CLOSED, b"true");
    }
    if let Some((epoch, seq)) = appended.producer {
        field(out, ds::PRODUCER_EPOCH, epoch.to_string().as_bytes());
        field(out, ds::PRODUCER_SEQ, seq.to_string().as_bytes());
    }
    finish(out, appended.status, 0, common, closing);
}

/// Any other answer (a refusal): its headers and its body.
pub(crate) async fn response(out: &mut Vec<u8>, response: Response, common: &[u8], closing: bool) {
    let (parts, body) = response.into_parts();
    // A refusal's body is a JSON object already in memory; failing to collect it leaves the
    // body empty rather than the connection without an answer.
    let body = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    status_line(out, parts.status);
    for (name, value) in &parts.headers {
        if name != CONTENT_LENGTH {
            field(out, name.as_str(), value.as_bytes());
        }
    }
    finish(out, parts.status, body.len(), common, closing);
    out.extend_from_slice(&body);
}

fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The common headers, the length (none on a 204, as hyper does), the date, and the blank line.
fn finish(out: &mut Vec<u8>, status: StatusCode, length: usize, common: &[u8], closing: bool) {
    out.extend_from_slice(common);
    if status != StatusCode::NO_CONTENT {
        field(out, "content-length", length.to_string().as_bytes());
    }
    if closing {
        field(out, "connection", b"close");
    }
    out.extend_from_slice(b"date: ");
    date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

thread_local! {
    /// The `Date` of the current second, formatted once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second || text.is_empty() {
            *cached = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;
    use mooring_protocol::Position;

    fn text(out: &[u8]) -> String {
        String::from_utf8(out.to_vec()).expect("ascii")
    }

    #[test]
    fn an_append_by_a_producer_is_a_200_with_its_offset_and_producer_state() {
        let mut out = Vec::new();
        let answer = Appended {
            status: StatusCode::OK,
            next: Position {
                epoch: 1,
                serial: 3,
            },
            closed: false,
            producer: Some((2, 9)),
        };
        appended(&mut out, &answer, b"x-common: 1\r\n", false);
        let out = text(&out);
        let expected_offset = format!(
            "stream-next-offset: {}\r\n",
            Position {
                epoch: 1,
                serial: 3
            }
        );
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains(&expected_offset), "{out}");
        assert!(
            out.contains("producer-epoch: 2\r\nproducer-seq: 9\r\n"),
            "{out}"
        );
        assert!(
            out.contains("x-common: 1\r\ncontent-length: 0\r\ndate: "),
            "{out}"
        );
        assert!(out.ends_with(" GMT\r\n\r\n"), "{out}");
        assert!(!out.contains("connection"), "{out}");
    }

    #[test]
    fn a_204_has_no_length_and_a_closing_answer_says_so() {
        let mut out = Vec::new();
        let answer = Appended {
            status: StatusCode::NO_CONTENT,
            next: Position {
                epoch: 1,
                serial: 1,
            },
            closed: true,
            producer: None,
        };
        appended(&mut out, &answer, b"", true);
        let out = text(&out);
        assert!(out.starts_with("HTTP/1.1 204 No Content\r\n"), "{out}");
        assert!(out.contains("stream-closed: true\r\n"), "{out}");
        assert!(!out.contains("content-length"), "{out}");
        assert!(out.contains("connection: close\r\n"), "{out}");
    }

    #[tokio::test]
    async fn a_refusal_carries_its_body_and_length() {
        let refusal = (StatusCode::NOT_FOUND, "{\"error\":1}").into_response();
        let mut out = Vec::new();
        response(&mut out, refusal, b"", false).await;
        let out = text(&out);
        assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
        assert!(out.contains("content-length: 11\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n{\"error\":1}"), "{out}");
    }
}
