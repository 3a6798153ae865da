//! Byte layouts of the values the Redis engine stores. Each begins with a layout version byte,
//! so one layout can change while older values stay readable; tests pin each byte for byte.

use bytes::Bytes;
use mooring_core::producer::ProducerState;
use mooring_core::store::StoreError;
use mooring_core::stream::StreamState;

const STATE_V1: u8 = 1;
const RECORD_V1: u8 = 1;
const PRODUCER_V1: u8 = 1;
const PRODUCER_LEN: usize = 1 + 8 + 8;

fn corrupt(what: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {why}"))
}

/// `01` then the state as JSON: states are small, and JSON lets fields be added with defaults.
pub(super) fn encode_state(state: &StreamState) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![STATE_V1];
    serde_json::to_writer(&mut out, state).map_err(|e| corrupt("encoding a stream state", e))?;
    Ok(out)
}

pub(super) fn decode_state(bytes: &[u8]) -> Result<StreamState, StoreError> {
    match bytes.split_first() {
        Some((&STATE_V1, json)) => {
            serde_json::from_slice(json).map_err(|e| corrupt("a stored stream state", e))
        }
        other => Err(corrupt(
            "a stored stream state",
            format!("unknown layout {:?}", other.map(|(v, _)| v)),
        )),
    }
}

/// `01`, item count as u32 LE, then each item as its length (u32 LE) and its bytes.
pub(super) fn encode_record(items: &[Bytes]) -> Result<Vec<u8>, StoreError> {
    let total: usize = items.iter().map(|i| 4 + i.len()).sum();
    let mut out = Vec::with_capacity(5 + total);
    out.push(RECORD_V1);
    let count = u32::try_from(items.len()).map_err(|e| corrupt("encoding a record", e))?;
    out.extend_from_slice(&count.to_le_bytes());
    for item in items {
        let len = u32::try_from(item.len()).map_err(|e| corrupt("encoding a record", e))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(item);
    }
    Ok(out)
}

pub(super) fn decode_record(bytes: &Bytes) -> Result<Vec<Bytes>, StoreError> {
    let bad = |why: &str| corrupt("a stored record", why);
    if bytes.first() != Some(&RECORD_V1) {
        return Err(bad("unknown layout"));
    }
    let mut at = 1;
    let count = read_u32(bytes, &mut at).ok_or_else(|| bad("truncated item count"))?;
    let mut items = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = read_u32(bytes, &mut at).ok_or_else(|| bad("truncated item length"))?;
        let end = at.checked_add(len).filter(|e| *e <= bytes.len());
        let end = end.ok_or_else(|| bad("truncated item"))?;
        items.push(bytes.slice(at..end));
        at = end;
    }
    if at != bytes.len() {
        return Err(bad("trailing bytes"));
    }
    Ok(items)
}

fn read_u32(buf: &[u8], at: &mut usize) -> Option<usize> {
    let raw: [u8; 4] = buf.get(*at..*at + 4)?.try_into().ok()?;
    *at += 4;
    usize::try_from(u32::from_le_bytes(raw)).ok()
}

/// `01`, epoch as u64 LE, last accepted seq as u64 LE.
pub(super) fn encode_producer(state: ProducerState) -> Vec<u8> {
    let mut out = Vec::with_capacity(PRODUCER_LEN);
    out.push(PRODUCER_V1);
    out.extend_from_slice(&state.epoch.to_le_bytes());
    out.extend_from_slice(&state.last_seq.to_le_bytes());
    out
}

pub(super) fn decode_producer(bytes: &[u8]) -> Result<ProducerState, StoreError> {
    let bad = || corrupt("a stored producer state", "wrong length or layout");
    if bytes.len() != PRODUCER_LEN || bytes[0] != PRODUCER_V1 {
        return Err(bad());
    }
    let word = |at: usize| -> Result<u64, StoreError> {
        let raw: [u8; 8] = bytes[at..at + 8].try_into().map_err(|_| bad())?;
        Ok(u64::from_le_bytes(raw))
    };
    Ok(ProducerState {
        epoch: word(1)?,
        last_seq: word(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout_is_pinned() {
        let items = [
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"c"),
        ];
        let encoded = encode_record(&items).expect("encode");
        assert_eq!(
            encoded,
            b"\x01\x03\x00\x00\x00\x02\x00\x00\x00ab\x00\x00\x00\x00\x01\x00\x00\x00c"
        );
        assert_eq!(decode_record(&Bytes::from(encoded)), Ok(items.to_vec()));
    }

    #[test]
    fn producer_layout_is_pinned() {
        let state = ProducerState {
            epoch: 2,
            last_seq: 258,
        };
        let encoded = encode_producer(state);
        assert_eq!(encoded, [1, 2, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_producer(&encoded), Ok(state));
    }

    #[test]
    fn damaged_values_are_corrupt_not_panics() {
        assert!(decode_record(&Bytes::from_static(b"\x01\x05\x00\x00\x00")).is_err());
        assert!(decode_record(&Bytes::from_static(b"\x02")).is_err());
        assert!(decode_producer(&[1, 2, 3]).is_err());
        assert!(decode_state(b"\x01{").is_err());
        assert!(decode_state(b"").is_err());
    }
}
