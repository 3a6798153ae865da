//! Which requests the lean path takes, from a head that is whole in the buffer: a `POST`
//! append in the common shape is answered directly; other writes (`POST`, `PUT`, `HEAD`,
//! `DELETE`) with a plain body are passed to the router on the same connection; everything else
//! (reads, upgrades, unusual framing) is handed to hyper, which reads the same bytes from the
//! start.

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

/// Headers that mean the request needs hyper: bodies that are not a plain length, protocol
/// switches and interim answers. (`Connection` other than `keep-alive` too.)
const HANDED_OFF: [&str; 4] = ["transfer-encoding", "expect", "upgrade", "te"];

/// Headers that make an append the router's: CORS answers, and the identity check of the
/// authentication guard.
const ROUTED: [&str; 2] = ["origin", "mooring-client-id"];

/// The most headers the lean path reads; a request with more is handed off.
const MAX_HEADERS: usize = 32;

/// What the start of a connection's buffer holds.
#[derive(Debug)]
pub(crate) enum Head {
    /// An append the lean path answers: its head is `head_len` bytes, then `content_length`
    /// bytes of body.
    Append(AppendHead),
    /// Another `POST`, a create, a `HEAD` or a delete: the router answers it on this
    /// connection, so a producer that creates its stream before appending stays on the lean
    /// path. (Reads go to hyper: their answers may stream for as long as the client stays.)
    Routed(RoutedHead),
    /// Not all of a head yet.
    Partial,
    /// Anything else: hyper and the router answer it.
    Other,
}

/// A request for the router, whole but for its body.
#[derive(Debug)]
pub(crate) struct RoutedHead {
    pub(crate) request: axum::http::Request<()>,
    pub(crate) head_len: usize,
    pub(crate) content_length: usize,
}

/// The parts of an append's head the append reads, owned so that the body can be read into
/// the same buffer.
#[derive(Debug)]
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
    if request.version != Some(1) {
        return Head::Other;
    }
    let Some(framing) = framing(request.headers, max_body) else {
        return Head::Other;
    };
    match request.method {
        Some("POST") => append(&request, head_len, framing),
        Some("PUT" | "HEAD" | "DELETE") => routed(&request, head_len, framing),
        _ => Head::Other,
    }
}

/// What the headers say of the body, if the lean path can read it: its length.
fn framing(headers: &[httparse::Header<'_>], max_body: usize) -> Option<usize> {
    let mut content_length = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("content-length") {
            match (content_length, length(header.value)) {
                (None, Some(n)) => content_length = Some(n),
                // Two lengths, or one that is not a number: hyper refuses it properly.
                _ => return None,
            }
        } else if header.name.eq_ignore_ascii_case("connection") {
            if !header.value.eq_ignore_ascii_case(b"keep-alive") {
                return None;
            }
        } else if HANDED_OFF
            .iter()
            .any(|n| header.name.eq_ignore_ascii_case(n))
        {
            return None;
        }
    }
    let length = content_length.unwrap_or(0);
    // A longer body goes to hyper and the router, for its 413.
    (length <= max_body).then_some(length)
}

fn routed(request: &httparse::Request<'_, '_>, head_len: usize, content_length: usize) -> Head {
    let mut builder = axum::http::Request::builder()
        .method(request.method.unwrap_or_default())
        .uri(request.path.unwrap_or_default());
    for header in request.headers.iter() {
        builder = builder.header(header.name, header.value);
    }
    // A name or value the `http` types refuse is hyper's to answer.
    match builder.body(()) {
        Ok(request) => Head::Routed(RoutedHead {
            request,
            head_len,
            content_length,
        }),
        Err(_) => Head::Other,
    }
}

fn append(request: &httparse::Request<'_, '_>, head_len: usize, content_length: usize) -> Head {
    let Some(name) = request.path.and_then(stream_name) else {
        return routed(request, head_len, content_length);
    };
    let mut headers: Vec<(&'static str, Vec<u8>)> = Vec::new();
    for header in request.headers.iter() {
        if ROUTED.iter().any(|n| header.name.eq_ignore_ascii_case(n)) {
            return routed(request, head_len, content_length);
        }
        if let Some(kept) = KEPT.iter().find(|n| header.name.eq_ignore_ascii_case(n)) {
            if !headers.iter().any(|(n, _)| n == kept) {
                headers.push((kept, header.value.to_vec()));
            }
        }
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
    // httparse lets through a few bytes a URI may not hold (`<`, `>`, a backtick), which
    // hyper refuses with a 400; such a request is left to it.
    let valid = path.parse::<axum::http::uri::PathAndQuery>().is_ok();
    (plain && valid).then(|| name.to_owned())
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

    fn kind(raw: &[u8]) -> &'static str {
        match parse(raw, LIMIT) {
            Head::Append(_) => "append",
            Head::Routed(_) => "routed",
            Head::Partial => "partial",
            Head::Other => "other",
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
        assert_eq!(kind(b"POST /v1/stream/s HTTP/1.1\r\nContent-Le"), "partial");
    }

    #[test]
    fn other_writes_go_to_the_router_on_this_connection() {
        let routed = [
            "PUT /v1/stream/s HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "HEAD /v1/stream/s HTTP/1.1\r\n\r\n",
            "DELETE /v1/stream/s HTTP/1.1\r\n\r\n",
            "POST /v1/sessions/s/events HTTP/1.1\r\n\r\n",
            "POST /v1/stream/ HTTP/1.1\r\n\r\n",
            "POST /v1/stream/a%20b HTTP/1.1\r\n\r\n",
            "POST /v1/stream/s?x=1 HTTP/1.1\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nOrigin: https://a.example\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nMooring-Client-Id: a\r\n\r\n",
        ];
        for raw in routed {
            assert_eq!(kind(raw.as_bytes()), "routed", "{raw:?}");
        }
        let Head::Routed(head) = parse(routed[0].as_bytes(), LIMIT) else {
            panic!("routed");
        };
        assert_eq!(head.request.method(), "PUT");
        assert_eq!(head.request.uri(), "/v1/stream/s");
        assert_eq!(head.request.headers()["content-length"], "3");
        assert_eq!((head.head_len, head.content_length), (routed[0].len(), 3));
    }

    #[test]
    fn reads_and_unusual_framing_go_to_hyper() {
        let handed_off = [
            "GET /v1/stream/s HTTP/1.1\r\n\r\n",
            "OPTIONS /v1/stream/s HTTP/1.1\r\n\r\n",
            "POST /v1/stream/s HTTP/1.0\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT /v1/stream/s HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nConnection: close\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST /v1/stream/s HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",
            "PUT /v1/stream/s HTTP/1.1\r\nContent-Length: 1025\r\n\r\n",
            "POST /v1/stream/a<b> HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "not http at all\r\n\r\n",
        ];
        for raw in handed_off {
            assert_eq!(kind(raw.as_bytes()), "other", "{raw:?}");
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
    fn too_many_headers_go_to_hyper() {
        let mut raw = String::from("POST /v1/stream/s HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            raw.push_str(&format!("x-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(kind(raw.as_bytes()), "other");
    }
}
