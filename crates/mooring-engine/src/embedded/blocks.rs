//! Record blocks: the layout of a stream's records in the database file.
//!
//! A checkpoint writes thousands of records. One redb insert each cost about a sixth of the
//! server's CPU under load (each a B-tree descent comparing string keys), so the records of one
//! stream are written as blocks of consecutive records instead, a few tens of KiB each: one
//! insert per block. A block's key is `(stream, serial of its last record)`, so the block
//! holding serial `s` is the first one at or after `(stream, s)`, and a read is still one range
//! scan.
//!
//! Block, layout 1: `[1]`, then per record its serial as u64 LE, the length of its value as
//! u32 LE, and the value in the record layout of `tables` (`encode_record`). Serials rise within
//! a block and from one block to the next.

use super::tables::CodecError;

const BLOCK_V1: u8 = 1;

/// Bytes before a record's value within a block: serial and length.
const ENTRY_HEADER: usize = 8 + 4;

/// A block is closed once it holds this many bytes, and a record that would take it past them
/// starts the next one, so a large record gets a block of its own.
pub(super) const BLOCK_TARGET_BYTES: usize = 32 << 10;

/// A block being filled.
#[derive(Debug)]
pub(super) struct BlockBuilder {
    bytes: Vec<u8>,
    first: Option<u64>,
    last: Option<u64>,
}

impl Default for BlockBuilder {
    fn default() -> Self {
        Self {
            bytes: vec![BLOCK_V1],
            first: None,
            last: None,
        }
    }
}

/// A finished block: the serials of its first and last records, and its bytes.
#[derive(Debug)]
pub(super) struct Block {
    pub(super) first: u64,
    pub(super) last: u64,
    pub(super) bytes: Vec<u8>,
}

impl BlockBuilder {
    /// Whether a record of `len` bytes should start a new block instead of joining this one.
    pub(super) fn would_overflow(&self, len: usize) -> bool {
        self.last.is_some() && self.bytes.len() + ENTRY_HEADER + len > BLOCK_TARGET_BYTES
    }

    /// Adds a record already in the record layout.
    pub(super) fn push_encoded(&mut self, serial: u64, record: &[u8]) -> Result<(), CodecError> {
        let len =
            u32::try_from(record.len()).map_err(|_| CodecError::ItemTooLarge(record.len()))?;
        self.bytes.reserve(ENTRY_HEADER + record.len());
        self.bytes.extend_from_slice(&serial.to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(record);
        self.first.get_or_insert(serial);
        self.last = Some(serial);
        Ok(())
    }

    /// Adds a record given by its items.
    #[cfg(test)]
    pub(super) fn push(&mut self, serial: u64, items: &[bytes::Bytes]) -> Result<(), CodecError> {
        self.push_encoded(serial, &super::tables::encode_record(items)?)
    }

    /// Adds a record already in the record layout, and returns the blocks it closed: the open
    /// one if the record would take it past the target, then the record's own if it filled it.
    /// The one rule for where blocks end, for every writer of blocks.
    pub(super) fn add(
        &mut self,
        serial: u64,
        record: &[u8],
    ) -> Result<impl Iterator<Item = Block>, CodecError> {
        // Refused before anything is closed, so an error loses no block.
        u32::try_from(record.len()).map_err(|_| CodecError::ItemTooLarge(record.len()))?;
        let before = if self.would_overflow(record.len()) {
            self.take()
        } else {
            None
        };
        self.push_encoded(serial, record)?;
        let filled = if self.full() { self.take() } else { None };
        Ok([before, filled].into_iter().flatten())
    }

    /// Whether the block is full enough to be written.
    pub(super) fn full(&self) -> bool {
        self.bytes.len() >= BLOCK_TARGET_BYTES
    }

    /// The block; `None` if it holds no record. The builder is left empty, ready for the
    /// next block.
    pub(super) fn take(&mut self) -> Option<Block> {
        let last = self.last.take()?;
        let first = self.first.take().unwrap_or(last);
        let bytes = std::mem::replace(&mut self.bytes, vec![BLOCK_V1]);
        Some(Block { first, last, bytes })
    }
}

/// The records of a block, in order: each serial with its value in the record layout. A
/// damaged block yields an error and then nothing more.
pub(super) fn entries(block: &[u8]) -> impl Iterator<Item = Result<(u64, &[u8]), CodecError>> {
    let mut rest = match block.split_first() {
        None => Err(CodecError::Empty),
        Some((&BLOCK_V1, rest)) => Ok(rest),
        Some((&v, _)) => Err(CodecError::UnknownVersion(v)),
    };
    std::iter::from_fn(move || match &mut rest {
        Err(e) => {
            let e = e.clone();
            rest = Ok(&[]);
            Some(Err(e))
        }
        Ok([]) => None,
        Ok(bytes) => {
            let entry = next_entry(bytes);
            match entry {
                Ok((serial, record, after)) => {
                    rest = Ok(after);
                    Some(Ok((serial, record)))
                }
                Err(e) => {
                    rest = Ok(&[]);
                    Some(Err(e))
                }
            }
        }
    })
}

/// The records of `block` above `upto`, as a new block; `None` if it holds none at or below
/// `upto` (nothing to rewrite).
pub(super) fn after(block: &[u8], upto: u64) -> Result<Option<BlockBuilder>, CodecError> {
    let mut kept = BlockBuilder::default();
    let mut dropped = false;
    for entry in entries(block) {
        let (serial, record) = entry?;
        if serial <= upto {
            dropped = true;
        } else {
            kept.push_encoded(serial, record)?;
        }
    }
    Ok(dropped.then_some(kept))
}

fn next_entry(bytes: &[u8]) -> Result<(u64, &[u8], &[u8]), CodecError> {
    let (serial, rest) = bytes.split_at_checked(8).ok_or(CodecError::Truncated)?;
    let (len, rest) = rest.split_at_checked(4).ok_or(CodecError::Truncated)?;
    let serial = u64::from_le_bytes(serial.try_into().map_err(|_| CodecError::Truncated)?);
    let len = u32::from_le_bytes(len.try_into().map_err(|_| CodecError::Truncated)?);
    let len = usize::try_from(len).map_err(|_| CodecError::Truncated)?;
    let (record, after) = rest.split_at_checked(len).ok_or(CodecError::Truncated)?;
    Ok((serial, record, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::tables::decode_record;
    use bytes::Bytes;
    use proptest::prelude::*;

    #[test]
    fn block_layout_is_pinned() {
        let mut block = BlockBuilder::default();
        block.push(7, &[Bytes::from_static(b"ab")]).expect("pushes");
        block.push(9, &[]).expect("pushes");
        let Block { first, last, bytes } = block.take().expect("a block");
        assert_eq!((first, last), (7, 9));
        assert_eq!(
            bytes,
            [
                1, // layout version
                7, 0, 0, 0, 0, 0, 0, 0, // serial
                11, 0, 0, 0, // record length
                1, 1, 0, 0, 0, 2, 0, 0, 0, b'a', b'b', // record 7, record layout 1
                9, 0, 0, 0, 0, 0, 0, 0, // serial
                5, 0, 0, 0, // record length
                1, 0, 0, 0, 0, // record 9: no items
            ]
        );
        assert!(block.take().is_none(), "the builder starts over empty");
    }

    #[test]
    fn adding_records_closes_blocks_at_the_target_and_gives_a_large_record_its_own() {
        let mut block = BlockBuilder::default();
        let small = vec![0u8; 1000];
        let mut closed = Vec::new();
        for serial in 1..=40 {
            closed.extend(block.add(serial, &small).expect("adds"));
        }
        assert_eq!(closed.len(), 1, "about 32 records of 1 KB fill a block");
        let first = &closed[0];
        assert_eq!(first.first, 1);
        assert!(
            first.bytes.len() <= BLOCK_TARGET_BYTES,
            "{}",
            first.bytes.len()
        );
        let large = vec![0u8; BLOCK_TARGET_BYTES];
        let closed: Vec<Block> = block.add(41, &large).expect("adds").collect();
        let ends: Vec<(u64, u64)> = closed.iter().map(|b| (b.first, b.last)).collect();
        assert_eq!(
            ends,
            vec![(first.last + 1, 40), (41, 41)],
            "the open block closes first, then the large record's own"
        );
        assert!(block.take().is_none(), "nothing left open");
    }

    #[test]
    fn a_record_that_would_pass_the_target_starts_a_new_block() {
        let mut block = BlockBuilder::default();
        assert!(
            !block.would_overflow(BLOCK_TARGET_BYTES * 2),
            "an empty block takes any"
        );
        block.push(1, &[Bytes::from_static(b"x")]).expect("pushes");
        assert!(!block.would_overflow(100));
        assert!(block.would_overflow(BLOCK_TARGET_BYTES));
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let errors = |bytes: &[u8]| entries(bytes).filter(Result::is_err).count();
        assert_eq!(entries(&[]).collect::<Vec<_>>(), [Err(CodecError::Empty)]);
        assert_eq!(
            entries(&[2]).collect::<Vec<_>>(),
            [Err(CodecError::UnknownVersion(2))]
        );
        assert_eq!(entries(&[1]).count(), 0, "an empty block holds no record");
        assert_eq!(errors(&[1, 7, 0, 0]), 1, "serial cut short");
        assert_eq!(errors(&[1, 7, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1]), 1);
    }

    proptest! {
        #[test]
        fn blocks_give_back_what_was_pushed(
            records in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4),
                0..30,
            )
        ) {
            let mut block = BlockBuilder::default();
            for (serial, items) in records.iter().enumerate() {
                let items: Vec<Bytes> = items.iter().map(|i| Bytes::copy_from_slice(i)).collect();
                block.push(serial as u64 + 1, &items).expect("pushes");
            }
            let back: Vec<(u64, Vec<Bytes>)> = match block.take() {
                None => Vec::new(),
                Some(block) => entries(&block.bytes)
                    .map(|e| {
                        let (serial, record) = e.expect("intact");
                        (serial, decode_record(record).expect("decodes"))
                    })
                    .collect(),
            };
            let expected: Vec<(u64, Vec<Bytes>)> = records
                .iter()
                .enumerate()
                .map(|(i, items)| {
                    (i as u64 + 1, items.iter().map(|b| Bytes::copy_from_slice(b)).collect())
                })
                .collect();
            prop_assert_eq!(back, expected);
        }

        #[test]
        fn any_bytes_read_as_a_block_end_at_their_first_error(
            bytes in prop::collection::vec(any::<u8>(), 0..200)
        ) {
            let read: Vec<_> = entries(&bytes).collect();
            let first_error = read.iter().position(Result::is_err);
            if let Some(at) = first_error {
                prop_assert_eq!(at, read.len() - 1, "nothing follows an error");
            }
            let held: usize = read.iter().flatten().map(|(_, r)| ENTRY_HEADER + r.len()).sum();
            prop_assert!(held < bytes.len().max(1), "entries lie within the block");
        }
    }
}
