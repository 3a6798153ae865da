//! Which requests the lean path takes: a `POST` append whose head is whole in the buffer and
//! asks for nothing beyond the common case. Everything else is handed to hyper, which reads the
//! same bytes from the start.

use crate::durable_streams::{RequestHeaders, STREAM_PREFIX};

/// Headers an append reads; any other header is ignored, as the axum path ignores it.
const KEPT: [&str; 7] = [
    "content-type",
    "stream-closed",
    "stream-seq",
    "producer-id",
    "producer-epoch",
    "producer-seq",
    "authorization",
];

/// Headers that mean the request needs the full stack: CORS answers (`origin`), bodies that are
/// not a plain length, protocol switches and interim answers, the end of the connection, and
/// the identity check of the authentication guard.
const HANDED_OFF: [&str; 6] = [
    "origin",
    "transfer-encoding",
    "expect",
    "upgrade",
    "te",
    "mooring-client-id",
];

/// The most headers the lean path reads; a request with more is handed off.
const MAX_HEADERS: usize = 32;

/// What the start of a connection's buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// An append the lean path answers: its head is `head_len` bytes, then `content_length`
    /// bytes of body.
    Append(AppendHead),
    /// Not all of a head yet.
    Partial,
    /// Anything else: hyper and the router answer it.
    Other,
}

/// The parts of an append's head the append reads, owned so that the body can be read into
/// the same buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AppendHead {
    pub(crate) name: String,
    pub(crate) head_len: usize,
    pub(crate) content_length: usize,
    headers: Vec<(&'static str, Vec<u8>)>,
}

impl AppendHead {
    pub(crate) fn authorization(&self) -> Option<&[u8]> {
        self.raw("authorization")
    }
}

impl RequestHeaders for AppendHead {
    fn raw(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Reads the head at the start of `buf`. `max_body` is the node's append limit: a longer body
/// is handed off so the router answers it with its 413.
pub(crate) fn parse(buf: &[u8], max_body: usize) -> Head {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Head::Partial,
        // Too many headers, or not HTTP: hyper gives the answer and closes.
        Err(_) => return Head::Other,
    };
    if request.method != Some("POST") || request.version != Some(1) {
        return Head::Other;
    }
    let Some(name) = request.path.and_then(stream_name) else {
        return Head::Other;
    };
    let mut content_length = None;
    let mut headers: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            match (content_length, length(header.value)) {
                (None, Some(n)) => content_length = Some(n),
                // Two lengths, or one that is not a number: hyper refuses it properly.
                _ => return Head::Other,
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            if !header.value.eq_ignore_ascii_case(b"keep-alive") {
                return Head::Other;
            }
        } else if HANDED_OFF
            .iter()
            .any(|n| header.name.eq_ignore_ascii_case(n))
        {
            return Head::Other;
        } else if let Some(kept) = KEPT.iter().find(|n| header.name.eq_ignore_ascii_case(n)) {
            if !headers.iter().any(|(n, _)| n == kept) {
                headers.push((kept, header.value.to_vec()));
            }
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > max_body {
        return Head::Other;
    }
    Head::Append(AppendHead {
        name,
        head_len,
        content_length,
        headers,
    })
}

/// The stream a request path names, when the lean path can take it as it is: no query, and
/// no percent-encoding (the router decodes it; the lean path leaves that to the router).
fn stream_name(path: &str) -> Option<String> {
    let name = path.strip_prefix(STREAM_PREFIX)?;
    let plain = !name.is_empty() && !name.contains(['%', '?', '#']);
    plain.then(|| name.to_owned())
}

fn length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1024;

    fn append(raw: &str) -> AppendHead {
        match parse(raw.as_bytes(), LIMIT) {
            Head::Append(head) => head,
            other => panic!("expected an append, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_append_is_taken_with_the_headers_it_reads() {
        let raw = "POST /v1/stream/chat-1 HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n\
                   Producer-Id: p\r\nProducer-Epoch: 0\r\nProducer-Seq: 7\r\nUser-Agent: u\r\n\
                   Authorization: Bearer k\r\nContent-Length: 5\r\n\r\nhello";
        let head = append(raw);
        assert_eq!(head.name, "chat-1");
        assert_eq!(head.head_len, raw.len() - 5);
        assert_eq!(head.content_length, 5);
        assert_eq!(head.raw("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(head.raw("producer-seq"), Some(&b"7"[..]));
        assert_eq!(head.authorization(), Some(&b"Bearer k"[..]));
        assert_eq!(head.raw("user-agent"), None, "not an append's header");
    }

    #[test]
    fn the_first_of_repeated_headers_counts_as_in_the_router() {
        let head =
            append("POST /v1/stream/s HTTP/1.1\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\n");
        assert_eq!(head.raw("content-type"), Some(&b"a/b"[..]));
        assert_eq!(head.content_length, 0);
    }

    #[test]
    fn a_nested_name_is_a_name() {
        assert_eq!(
            append("POST /v1/stream/a/b/c HTTP/1.1\r\n\r\n").name,
            "a/b/c"
        );
    }

    #[test]
    fn an_unfinished_head_waits() {
        let raw = b"POST /v1/stream/s HTTP/1.1\r\nContent-Le";
        assert_eq!(parse(raw, LIMIT), Head::Partial);
    }

    #[test]
    fn everything_else_goes_to_the_router() {
        let handed_off = [
            "GET /v1/stream/s HTTP/1.1\r\n\r\n",
            "PUT /v1/stream/s HTTP/1.1\r\n\r\n",
            "POST /v1/sessions/s/events HTTP/1.1\r\n\r\n",
            "POST /v1/stream/ HTTP/1.1\r\n\r\n",
            "POST /v1/stream/a%20b HTTP/1.1\r\n\r\n",
            "POST /v1/stream/s?x=1 HTTP/1.1\r\n\r\n",
            "POST /v1/stream/s HTTP/1.0\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nOrigin: https://a.example\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nConnection: close\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nMooring-Client-Id: a\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "not http at all\r\n\r\n",
        ];
        for raw in handed_off {
            assert_eq!(parse(raw.as_bytes(), LIMIT), Head::Other, "{raw:?}");
        }
    }

    #[test]
    fn keep_alive_and_a_body_at_the_limit_stay_on_the_lean_path() {
        let head = append(
            "POST /v1/stream/s HTTP/1.1\r\nConnection: Keep-Alive\r\nContent-Length: 1024\r\n\r\n",
        );
        assert_eq!(head.content_length, LIMIT);
    }

    #[test]
    fn too_many_headers_go_to_the_router() {
        let mut raw = String::from("POST /v1/stream/s HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            raw.push_str(&format!("x-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(parse(raw.as_bytes(), LIMIT), Head::Other);
    }
}
