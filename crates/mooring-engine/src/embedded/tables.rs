//! The redb tables of the embedded engine and the byte layouts of their values.
//!
//! Every value starts with a layout version byte, so a later release can change one layout
//! and still read what an earlier one wrote. The database as a whole carries
//! [`FORMAT_VERSION`] in the meta table; a file from a newer release is refused at open.

use bytes::Bytes;
use mooring_core::producer::ProducerState;
use mooring_core::stream::StreamState;
use redb::TableDefinition;

/// The storage format this build writes and the newest it reads. Format 2 added the
/// write-ahead log: a format-1 build would ignore it and lose the batches only it holds.
/// Format 3 keeps records in blocks ([`RECORD_BLOCKS`]); older files are converted at open.
pub(super) const FORMAT_VERSION: u64 = 3;

/// Key of the format version in [`META`].
pub(super) const FORMAT_VERSION_KEY: &str = "format_version";

/// Key in [`META`] of the lsn of the last batch the database holds (see `wal`).
pub(super) const APPLIED_LSN_KEY: &str = "wal_applied_lsn";

/// Settings of the database as a whole.
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Stream name -> [`encode_state`].
pub(super) const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("stream_states");

/// (stream name, serial of the block's last record) -> a block of records (`blocks`). The
/// key order keeps a stream's blocks contiguous and in serial order, so a read is one range
/// scan.
pub(super) const RECORD_BLOCKS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("record_blocks");

/// Formats 1 and 2: (stream name, serial) -> [`encode_record`], one entry per record. Read
/// only to convert a file to format 3.
pub(super) const LEGACY_RECORDS: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("records");

/// (stream name, producer id) -> [`encode_producer`].
pub(super) const PRODUCERS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("producers");

/// Names of streams that have an expiry, so a sweep visits only those instead of decoding
/// every stream's state.
pub(super) const EXPIRING: TableDefinition<&str, ()> = TableDefinition::new("expiring_streams");

/// (stream name, side-table tag, key) -> value: the side tables of `AuxTable`. Values are
/// written by the core already versioned (JSON with their own shape), so they are stored as is.
pub(super) const AUX: TableDefinition<(&str, u8, &[u8]), &[u8]> = TableDefinition::new("aux");

const STATE_V1: u8 = 1;
const RECORD_V1: u8 = 1;
const PRODUCER_V1: u8 = 1;

/// Length of a producer value: version byte, epoch, last seq.
const PRODUCER_LEN: usize = 1 + 8 + 8;

/// Why a stored value could not be decoded; the caller adds which value it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum CodecError {
    #[error("empty value")]
    Empty,
    #[error("unknown layout version {0}")]
    UnknownVersion(u8),
    #[error("value ends early")]
    Truncated,
    #[error("{0} unexpected bytes after the value")]
    Trailing(usize),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("item of {0} bytes exceeds the 4 GiB limit of the record layout")]
    ItemTooLarge(usize),
    #[error("record of {0} items exceeds the item count limit of the record layout")]
    TooManyItems(usize),
}

fn split_version(bytes: &[u8]) -> Result<(u8, &[u8]), CodecError> {
    bytes
        .split_first()
        .map(|(v, rest)| (*v, rest))
        .ok_or(CodecError::Empty)
}

/// Stream state, layout 1: `[1]` then the state as JSON. JSON keeps the layout readable and
/// lets fields be added with defaults; states are small and written once per append batch.
pub(super) fn encode_state(state: &StreamState) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![STATE_V1];
    serde_json::to_writer(&mut out, state).map_err(|e| CodecError::Json(e.to_string()))?;
    Ok(out)
}

pub(super) fn decode_state(bytes: &[u8]) -> Result<StreamState, CodecError> {
    match split_version(bytes)? {
        (STATE_V1, json) => {
            serde_json::from_slice(json).map_err(|e| CodecError::Json(e.to_string()))
        }
        (v, _) => Err(CodecError::UnknownVersion(v)),
    }
}

/// Record items, layout 1: `[1]`, item count as u32 LE, then per item its length as u32 LE
/// followed by its bytes.
pub(super) fn encode_record(items: &[Bytes]) -> Result<Vec<u8>, CodecError> {
    let count = u32::try_from(items.len()).map_err(|_| CodecError::TooManyItems(items.len()))?;
    let payload: usize = items.iter().map(|i| 4 + i.len()).sum();
    let mut out = Vec::with_capacity(1 + 4 + payload);
    out.push(RECORD_V1);
    out.extend_from_slice(&count.to_le_bytes());
    for item in items {
        let len = u32::try_from(item.len()).map_err(|_| CodecError::ItemTooLarge(item.len()))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(item);
    }
    Ok(out)
}

/// Decodes a record with one copy: the stored bytes land in one buffer that the items share.
pub(super) fn decode_record(bytes: &[u8]) -> Result<Vec<Bytes>, CodecError> {
    let (version, _) = split_version(bytes)?;
    if version != RECORD_V1 {
        return Err(CodecError::UnknownVersion(version));
    }
    let buf = Bytes::copy_from_slice(bytes);
    let mut at = 1;
    let count = read_u32(&buf, &mut at)?;
    // Bound the allocation by what the value can hold, so a damaged count cannot ask for
    // gigabytes.
    let mut items = Vec::with_capacity(count.min((buf.len() - at) / 4));
    for _ in 0..count {
        let len = read_u32(&buf, &mut at)?;
        let end = at.checked_add(len).ok_or(CodecError::Truncated)?;
        if end > buf.len() {
            return Err(CodecError::Truncated);
        }
        items.push(buf.slice(at..end));
        at = end;
    }
    match buf.len() - at {
        0 => Ok(items),
        extra => Err(CodecError::Trailing(extra)),
    }
}

fn read_u32(buf: &[u8], at: &mut usize) -> Result<usize, CodecError> {
    let end = *at + 4;
    let raw: [u8; 4] = buf
        .get(*at..end)
        .and_then(|s| s.try_into().ok())
        .ok_or(CodecError::Truncated)?;
    *at = end;
    usize::try_from(u32::from_le_bytes(raw)).map_err(|_| CodecError::Truncated)
}

/// Producer state, layout 1: `[1]`, epoch as u64 LE, last seq as u64 LE.
pub(super) fn encode_producer(state: ProducerState) -> [u8; PRODUCER_LEN] {
    let mut out = [0; PRODUCER_LEN];
    out[0] = PRODUCER_V1;
    out[1..9].copy_from_slice(&state.epoch.to_le_bytes());
    out[9..17].copy_from_slice(&state.last_seq.to_le_bytes());
    out
}

pub(super) fn decode_producer(bytes: &[u8]) -> Result<ProducerState, CodecError> {
    let (version, rest) = split_version(bytes)?;
    if version != PRODUCER_V1 {
        return Err(CodecError::UnknownVersion(version));
    }
    let raw: &[u8; 16] = rest.try_into().map_err(|_| match rest.len() {
        n if n < 16 => CodecError::Truncated,
        n => CodecError::Trailing(n - 16),
    })?;
    let (epoch, seq) = raw.split_at(8);
    let word = |b: &[u8]| b.try_into().map(u64::from_le_bytes);
    Ok(ProducerState {
        epoch: word(epoch).map_err(|_| CodecError::Truncated)?,
        last_seq: word(seq).map_err(|_| CodecError::Truncated)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooring_core::stream::{Expiry, ForkOrigin, StreamConfig};
    use mooring_protocol::durable_streams::ProducerClaim;
    use mooring_protocol::Position;
    use proptest::prelude::*;

    #[test]
    fn record_layout_is_pinned() {
        let items = [
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"c"),
        ];
        let bytes = encode_record(&items).expect("encodes");
        assert_eq!(
            bytes,
            [
                1, // layout version
                3, 0, 0, 0, // item count
                2, 0, 0, 0, b'a', b'b', // item 1
                0, 0, 0, 0, // item 2, empty
                1, 0, 0, 0, b'c', // item 3
            ]
        );
        assert_eq!(decode_record(&bytes).expect("decodes"), items);
        assert_eq!(encode_record(&[]).expect("encodes"), [1, 0, 0, 0, 0]);
    }

    #[test]
    fn producer_layout_is_pinned() {
        let state = ProducerState {
            epoch: 2,
            last_seq: 0x0102_0304_0506_0708,
        };
        let bytes = encode_producer(state);
        assert_eq!(
            bytes,
            [1, 2, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1],
            "version, epoch LE, last seq LE"
        );
        assert_eq!(decode_producer(&bytes), Ok(state));
    }

    fn sample_state() -> StreamState {
        StreamState {
            config: StreamConfig {
                content_type: "text/plain".into(),
                requested_expiry: Expiry::TtlSecs(60),
                expiry: Expiry::AtMs(5),
                fork: Some(ForkOrigin {
                    source: "src".into(),
                    offset: Some(Position {
                        epoch: 0,
                        serial: 2,
                    }),
                    sub_offset: 1,
                }),
            },
            epoch: 0,
            tail: 3,
            closed: true,
            closed_by: Some(ProducerClaim {
                id: "w".into(),
                epoch: 1,
                seq: 4,
            }),
            stream_seq: Some("007".into()),
            created_ms: 10,
            last_write_ms: 20,
            forks: 1,
            soft_deleted: false,
            trimmed: 0,
            kept_from_ms: 0,
            retain_ms: None,
        }
    }

    #[test]
    fn state_layout_is_pinned() {
        let bytes = encode_state(&sample_state()).expect("encodes");
        assert_eq!(bytes[0], 1, "layout version");
        let json = std::str::from_utf8(&bytes[1..]).expect("utf-8");
        assert_eq!(
            json,
            concat!(
                r#"{"config":{"content_type":"text/plain","requested_expiry":{"TtlSecs":60},"#,
                r#""expiry":{"AtMs":5},"fork":{"source":"src","offset":{"epoch":0,"serial":2},"#,
                r#""sub_offset":1}},"epoch":0,"tail":3,"closed":true,"#,
                r#""closed_by":{"id":"w","epoch":1,"seq":4},"stream_seq":"007","#,
                r#""created_ms":10,"last_write_ms":20,"forks":1,"soft_deleted":false}"#
            ),
            "changing this layout needs a new layout version"
        );
        assert_eq!(decode_state(&bytes), Ok(sample_state()));
    }

    #[test]
    fn retention_fields_are_optional_in_layout_1() {
        let mut trimmed = sample_state();
        trimmed.trimmed = 7;
        trimmed.kept_from_ms = 30;
        trimmed.retain_ms = Some(60_000);
        let bytes = encode_state(&trimmed).expect("encodes");
        let json = std::str::from_utf8(&bytes[1..]).expect("utf-8");
        assert!(
            json.ends_with(
                r#""soft_deleted":false,"trimmed":7,"kept_from_ms":30,"retain_ms":60000}"#
            ),
            "{json}"
        );
        assert_eq!(decode_state(&bytes), Ok(trimmed));
    }

    #[test]
    fn damaged_values_are_refused() {
        assert_eq!(decode_record(&[]), Err(CodecError::Empty));
        assert_eq!(
            decode_record(&[2, 0, 0, 0, 0]),
            Err(CodecError::UnknownVersion(2))
        );
        assert_eq!(decode_record(&[1, 1, 0]), Err(CodecError::Truncated));
        assert_eq!(
            decode_record(&[1, 1, 0, 0, 0, 5, 0, 0, 0, b'x']),
            Err(CodecError::Truncated)
        );
        assert_eq!(
            decode_record(&[1, 0, 0, 0, 0, 9]),
            Err(CodecError::Trailing(1))
        );
        assert_eq!(
            decode_record(&[1, 0xff, 0xff, 0xff, 0xff]),
            Err(CodecError::Truncated),
            "a huge count in a short value"
        );
        assert_eq!(decode_producer(&[1, 0, 0]), Err(CodecError::Truncated));
        assert_eq!(decode_producer(&[1; 18]), Err(CodecError::Trailing(1)));
        assert_eq!(
            decode_producer(&[9; 17]),
            Err(CodecError::UnknownVersion(9))
        );
        assert_eq!(decode_state(&[2, b'{']), Err(CodecError::UnknownVersion(2)));
        assert!(matches!(decode_state(&[1, b'{']), Err(CodecError::Json(_))));
    }

    fn expiry() -> impl Strategy<Value = Expiry> {
        prop_oneof![
            Just(Expiry::Never),
            any::<u64>().prop_map(Expiry::TtlSecs),
            any::<u64>().prop_map(Expiry::AtMs),
        ]
    }

    prop_compose! {
        fn stream_state()(
            content_type in ".{0,20}",
            requested_expiry in expiry(),
            expiry in expiry(),
            fork in proptest::option::of((".{0,10}", proptest::option::of((any::<u64>(), any::<u64>())), any::<u64>())),
            epoch in any::<u64>(),
            tail in any::<u64>(),
            closed in any::<bool>(),
            closed_by in proptest::option::of((".{0,10}", any::<u64>(), any::<u64>())),
            stream_seq in proptest::option::of(".{0,10}"),
            times in (any::<u64>(), any::<u64>()),
            forks in any::<u64>(),
            soft_deleted in any::<bool>(),
            retention in (any::<u64>(), any::<u64>(), proptest::option::of(any::<u64>())),
        ) -> StreamState {
            StreamState {
                config: StreamConfig {
                    content_type,
                    requested_expiry,
                    expiry,
                    fork: fork.map(|(source, offset, sub_offset)| ForkOrigin {
                        source,
                        offset: offset.map(|(epoch, serial)| Position { epoch, serial }),
                        sub_offset,
                    }),
                },
                epoch,
                tail,
                closed,
                closed_by: closed_by.map(|(id, epoch, seq)| ProducerClaim { id, epoch, seq }),
                stream_seq,
                created_ms: times.0,
                last_write_ms: times.1,
                forks,
                soft_deleted,
                trimmed: retention.0,
                kept_from_ms: retention.1,
                retain_ms: retention.2,
            }
        }
    }

    proptest! {
        #[test]
        fn records_round_trip(items in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let items: Vec<Bytes> = items.into_iter().map(Bytes::from).collect();
            let bytes = encode_record(&items).expect("encodes");
            prop_assert_eq!(decode_record(&bytes), Ok(items));
        }

        #[test]
        fn producers_round_trip(epoch in any::<u64>(), last_seq in any::<u64>()) {
            let state = ProducerState { epoch, last_seq };
            prop_assert_eq!(decode_producer(&encode_producer(state)), Ok(state));
        }

        #[test]
        fn states_round_trip(state in stream_state()) {
            let bytes = encode_state(&state).expect("encodes");
            prop_assert_eq!(decode_state(&bytes), Ok(state));
        }

        /// No byte string makes the record decoder panic or over-allocate.
        #[test]
        fn record_decoder_survives_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_record(&bytes);
        }
    }
}
