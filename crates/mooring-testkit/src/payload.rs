//! The JSON messages crash-test writers send: `{"w":W,"n":N,"pad":"..."}`.
//!
//! Each message names its writer and sequence number, so the checker can tell which payload a
//! damaged message was meant to be. The padding is derived from the id, so two payloads never
//! share bytes and a flipped byte inside the padding is still caught.

use serde::Deserialize;

use crate::history::PayloadId;

/// Builds the message for `id` with `pad_len` characters of padding.
pub fn encode(id: PayloadId, pad_len: usize) -> Vec<u8> {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    let start = (u64::from(id.writer) + id.seq) as usize;
    let pad: String = (0..pad_len)
        .map(|i| char::from(LETTERS[(start + i) % LETTERS.len()]))
        .collect();
    format!(r#"{{"w":{},"n":{},"pad":"{pad}"}}"#, id.writer, id.seq).into_bytes()
}

/// Reads back which payload a message claims to be; `None` if it is not one of ours.
pub fn identify(message: &[u8]) -> Option<PayloadId> {
    #[derive(Deserialize)]
    struct Tag {
        w: u32,
        n: u64,
    }
    let tag: Tag = serde_json::from_slice(message).ok()?;
    Some(PayloadId {
        writer: tag.w,
        seq: tag.n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_what_it_encodes() {
        let id = PayloadId { writer: 7, seq: 42 };
        let message = encode(id, 5);
        assert_eq!(message, br#"{"w":7,"n":42,"pad":"xyzab"}"#);
        assert_eq!(identify(&message), Some(id));
        assert_eq!(identify(b"{\"w\":1}"), None);
        assert_eq!(identify(b"not json"), None);
    }
}
