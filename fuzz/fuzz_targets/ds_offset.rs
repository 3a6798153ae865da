//! Durable Streams offsets and the live-read cursor. An offset that parses re-renders to the
//! same text (offsets are opaque tokens a client echoes back byte for byte); `offset` query
//! values never panic; the cursor a server answers is never behind the current interval.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mooring_protocol::cursor::{next_cursor, CURSOR_EPOCH_MS, CURSOR_INTERVAL_MS};
use mooring_protocol::{Position, ReadFrom};

fuzz_target!(|data: &[u8]| {
    // The first 10 bytes choose the clock and the jitter; the rest is the client's text.
    if data.len() < 10 {
        return;
    }
    let (head, rest) = data.split_at(10);
    let mut now = [0u8; 8];
    now.copy_from_slice(&head[..8]);
    let now_ms = u64::from_le_bytes(now);
    // The server draws its jitter from 1 to 3600 seconds.
    let jitter_secs = u64::from(u16::from_le_bytes([head[8], head[9]])) % 3600 + 1;
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };

    if let Ok(position) = Position::parse(text) {
        assert_eq!(position.to_string(), text, "an offset re-renders as sent");
        assert_eq!(ReadFrom::parse(text), Ok(ReadFrom::After(position)));
    }
    match ReadFrom::parse(text) {
        Ok(ReadFrom::Start) => assert_eq!(text, "-1"),
        Ok(ReadFrom::Now) => assert_eq!(text, "now"),
        Ok(ReadFrom::After(p)) => assert_eq!(p.to_string(), text),
        Err(_) => {}
    }

    let current = now_ms.saturating_sub(CURSOR_EPOCH_MS) / CURSOR_INTERVAL_MS;
    let cursor = next_cursor(now_ms, Some(text), jitter_secs);
    assert!(
        cursor >= current,
        "cursor {cursor} behind interval {current}"
    );
    if text.parse::<u64>().is_ok_and(|echoed| echoed >= current) {
        assert!(
            cursor > current || cursor == u64::MAX,
            "an echo moves forward"
        );
    }
});
