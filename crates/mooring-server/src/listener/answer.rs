//! Answers written by the lean loop, framed as hyper frames the same response (status line,
//! length or chunks, `date`); lean appends and their refusals also carry the headers the outer
//! layers add (`crate::http::outer_headers`).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use std::io;

use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use http_body::Body as _;
use mooring_protocol::durable_streams as ds;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::durable_streams::Appended;

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

/// Any other answer (the router's, or a refusal of a lean append), written as hyper would: a
/// body of known size with its length, any other with chunked encoding as it comes, none for
/// a `HEAD` request or a status that has none. `common` holds header lines to add: those of the
/// outer layers for a lean refusal, none for the router's answers (the layers ran).
pub(crate) async fn response<W: AsyncWrite + Unpin>(
    tcp: &mut W,
    out: &mut Vec<u8>,
    response: Response,
    head_request: bool,
    common: &[u8],
    closing: bool,
) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let bodiless = head_request
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let exact = body.size_hint().exact();
    out.clear();
    status_line(out, parts.status);
    for (name, value) in &parts.headers {
        let framing = name == CONTENT_LENGTH || name == TRANSFER_ENCODING;
        // A `HEAD` answer keeps the length its handler gave: that of the body it would have.
        if !framing || (head_request && name == CONTENT_LENGTH) {
            field(out, name.as_str(), value.as_bytes());
        }
    }
    out.extend_from_slice(common);
    if closing {
        field(out, "connection", b"close");
    }
    out.extend_from_slice(b"date: ");
    date(out);
    out.extend_from_slice(b"\r\n");
    if bodiless {
        out.extend_from_slice(b"\r\n");
        return tcp.write_all(out).await;
    }
    if let Some(length) = exact.and_then(|n| usize::try_from(n).ok()) {
        let body = axum::body::to_bytes(body, length)
            .await
            .map_err(io::Error::other)?;
        field(out, "content-length", body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        return tcp.write_all(out).await;
    }
    field(out, "transfer-encoding", b"chunked");
    out.extend_from_slice(b"\r\n");
    tcp.write_all(out).await?;
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(io::Error::other)?;
        if chunk.is_empty() {
            continue;
        }
        out.clear();
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(b"\r\n");
        tcp.write_all(out).await?;
    }
    tcp.write_all(b"0\r\n\r\n").await
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
    async fn a_body_of_unknown_length_is_sent_in_chunks_as_it_comes() {
        let chunks = futures::stream::iter(["ab", "", "cde"].map(Ok::<_, io::Error>));
        let streamed = Response::new(axum::body::Body::from_stream(chunks));
        let (mut written, mut out) = (Vec::new(), Vec::new());
        response(&mut written, &mut out, streamed, false, b"", false)
            .await
            .expect("write");
        let written = text(&written);
        assert!(written.starts_with("HTTP/1.1 200 OK\r\n"), "{written}");
        assert!(
            written.contains("transfer-encoding: chunked\r\n"),
            "{written}"
        );
        assert!(!written.contains("content-length"), "{written}");
        assert!(
            written.ends_with("\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
            "an empty chunk is skipped, it would end the body: {written}"
        );
    }

    #[tokio::test]
    async fn a_head_answer_keeps_its_length_and_sends_no_body() {
        let mut answer = Response::new(axum::body::Body::from("twelve bytes"));
        answer
            .headers_mut()
            .insert(CONTENT_LENGTH, axum::http::HeaderValue::from_static("12"));
        let (mut written, mut out) = (Vec::new(), Vec::new());
        response(&mut written, &mut out, answer, true, b"", false)
            .await
            .expect("write");
        let written = text(&written);
        assert!(written.contains("content-length: 12\r\n"), "{written}");
        assert!(written.ends_with("\r\n\r\n"), "{written}");
        let sized = Response::new(axum::body::Body::from("twelve bytes"));
        let (mut written, mut out) = (Vec::new(), Vec::new());
        response(&mut written, &mut out, sized, false, b"", true)
            .await
            .expect("write");
        let written = text(&written);
        assert!(written.contains("content-length: 12\r\n"), "{written}");
        assert!(written.contains("connection: close\r\n"), "{written}");
        assert!(written.ends_with("\r\n\r\ntwelve bytes"), "{written}");
    }

    #[tokio::test]
    async fn a_refusal_carries_its_body_and_length() {
        let refusal = (StatusCode::NOT_FOUND, "{\"error\":1}").into_response();
        let (mut written, mut out) = (Vec::new(), Vec::new());
        response(&mut written, &mut out, refusal, false, b"", false)
            .await
            .expect("write");
        let out = text(&written);
        assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
        assert!(out.contains("content-length: 11\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n{\"error\":1}"), "{out}");
    }
}
