//! The realtime WebSocket frame decoder: a text frame from a client becomes a `ClientFrame`
//! exactly as the connection decodes it (`serde_json::from_str`). Decoding never panics, and
//! a decoded frame re-encodes to text that decodes to the same frame. Server frames, which the
//! SDK decodes, are held to the same property.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mooring_protocol::realtime::{ClientFrame, ServerFrame};

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8; the transport refuses anything else before us.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = serde_json::from_str::<ClientFrame>(text) {
        let again = serde_json::to_string(&frame).expect("a decoded client frame encodes");
        let back: ClientFrame =
            serde_json::from_str(&again).expect("an encoded client frame decodes");
        assert_eq!(frame, back, "client frame changed on a round trip: {again}");
    }
    if let Ok(frame) = serde_json::from_str::<ServerFrame>(text) {
        let again = serde_json::to_string(&frame).expect("a decoded server frame encodes");
        let back: ServerFrame =
            serde_json::from_str(&again).expect("an encoded server frame decodes");
        assert_eq!(frame, back, "server frame changed on a round trip: {again}");
    }
});
