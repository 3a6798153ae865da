//! Durable Streams header values and JSON-mode bodies. The input is cut at NUL bytes into
//! header values and a body. No parser panics; a value that parses as a number is its
//! canonical text; a parsed expiry renders and parses back to the same instant; a JSON-mode
//! body split into messages and written back as an array splits into the same messages.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mooring_protocol::durable_streams::{
    format_expires_at, is_closed_flag, is_json, is_sse_text, media_type, parse_expires_at_ms,
    parse_fork_sub_offset, parse_producer, parse_ttl_secs, MAX_SAFE_INTEGER,
};
use mooring_protocol::json_mode::{flatten, write_array};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |b| *b == 0);
    let mut next = || parts.next().and_then(|p| std::str::from_utf8(p).ok());
    let (a, b, c, d) = (next(), next(), next(), next());
    let body = data.splitn(5, |b| *b == 0).nth(4).unwrap_or(data);

    for value in [a, b, c, d].into_iter().flatten() {
        if let Ok(n) = parse_ttl_secs(value) {
            assert_eq!(n.to_string(), value.trim(), "Stream-TTL is canonical");
        }
        if let Ok(n) = parse_fork_sub_offset(value) {
            assert_eq!(n.to_string(), value.trim());
        }
        if let Ok(ms) = parse_expires_at_ms(value) {
            let text = format_expires_at(ms);
            assert_eq!(parse_expires_at_ms(&text), Ok(ms), "{value:?} -> {text:?}");
        }
        let _ = is_closed_flag(Some(value));
        let media = media_type(value);
        assert_eq!(
            media,
            media_type(&media),
            "a media type is its own media type"
        );
        let _ = (is_json(value), is_sse_text(value));
    }
    if let Ok(Some(claim)) = parse_producer(a, b, c) {
        assert!(!claim.id.is_empty());
        assert!(claim.epoch <= MAX_SAFE_INTEGER && claim.seq <= MAX_SAFE_INTEGER);
    }

    for allow_empty in [false, true] {
        if let Ok(messages) = flatten(body, allow_empty) {
            assert!(allow_empty || !messages.is_empty());
            let mut array = Vec::new();
            write_array(messages.iter().map(Vec::as_slice), &mut array);
            assert_eq!(
                flatten(&array, true),
                Ok(messages),
                "messages survive re-writing"
            );
        }
    }
});
