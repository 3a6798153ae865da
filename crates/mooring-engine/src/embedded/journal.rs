//! The changes of one write batch, as bytes for the write-ahead log.
//!
//! Every change a batch makes to the tables is also written here, in the order it was made and
//! already in the tables' value layouts, so that replaying a batch after a crash sets the same
//! keys to the same bytes without running any rule again. Replaying a batch twice is harmless:
//! each change sets or removes keys, it never adds to what is there.
//!
//! Layout of a change: a tag byte, then its fields; a string or byte field is a little-endian
//! `u32` length and the bytes, a number is a little-endian `u64`.

use super::tables::CodecError;

const PUT_STATE: u8 = 1;
const PUT_RECORD: u8 = 2;
const PUT_PRODUCER: u8 = 3;
const PUT_AUX: u8 = 4;
const CLEAR_DATA: u8 = 5;
const REMOVE_STREAM: u8 = 6;
const TRIM_RECORDS: u8 = 7;
const REMOVE_AUX: u8 = 8;

/// One change to the tables, borrowing from a journal's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change<'a> {
    /// A stream's state (encoded), and whether it is in the expiry index.
    PutState {
        name: &'a str,
        value: &'a [u8],
        expiring: bool,
    },
    PutRecord {
        name: &'a str,
        serial: u64,
        value: &'a [u8],
    },
    PutProducer {
        name: &'a str,
        id: &'a str,
        value: &'a [u8],
    },
    PutAux {
        name: &'a str,
        table: u8,
        key: &'a [u8],
        value: &'a [u8],
    },
    /// Every record, producer and side-table entry of a stream; its state stays.
    ClearData { name: &'a str },
    /// The stream and everything of it.
    RemoveStream { name: &'a str },
    /// The stream's records with serials up to `upto` (retention).
    TrimRecords { name: &'a str, upto: u64 },
    RemoveAux {
        name: &'a str,
        table: u8,
        key: &'a [u8],
    },
}

/// The changes of one batch, appended as they are made.
#[derive(Debug, Default)]
pub(super) struct Journal {
    bytes: Vec<u8>,
}

impl Journal {
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(super) fn push(&mut self, change: Change<'_>) -> Result<(), CodecError> {
        let out = &mut self.bytes;
        match change {
            Change::PutState {
                name,
                value,
                expiring,
            } => {
                out.push(PUT_STATE);
                put_bytes(out, name.as_bytes())?;
                put_bytes(out, value)?;
                out.push(u8::from(expiring));
            }
            Change::PutRecord {
                name,
                serial,
                value,
            } => {
                out.push(PUT_RECORD);
                put_bytes(out, name.as_bytes())?;
                out.extend_from_slice(&serial.to_le_bytes());
                put_bytes(out, value)?;
            }
            Change::PutProducer { name, id, value } => {
                out.push(PUT_PRODUCER);
                put_bytes(out, name.as_bytes())?;
                put_bytes(out, id.as_bytes())?;
                put_bytes(out, value)?;
            }
            Change::PutAux {
                name,
                table,
                key,
                value,
            } => {
                out.push(PUT_AUX);
                put_bytes(out, name.as_bytes())?;
                out.push(table);
                put_bytes(out, key)?;
                put_bytes(out, value)?;
            }
            Change::ClearData { name } => {
                out.push(CLEAR_DATA);
                put_bytes(out, name.as_bytes())?;
            }
            Change::RemoveStream { name } => {
                out.push(REMOVE_STREAM);
                put_bytes(out, name.as_bytes())?;
            }
            Change::TrimRecords { name, upto } => {
                out.push(TRIM_RECORDS);
                put_bytes(out, name.as_bytes())?;
                out.extend_from_slice(&upto.to_le_bytes());
            }
            Change::RemoveAux { name, table, key } => {
                out.push(REMOVE_AUX);
                put_bytes(out, name.as_bytes())?;
                out.push(table);
                put_bytes(out, key)?;
            }
        }
        Ok(())
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), CodecError> {
    let len = u32::try_from(bytes.len()).map_err(|_| CodecError::ItemTooLarge(bytes.len()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// The changes in `bytes`, in order; the first undecodable one ends the walk with an error.
pub(super) fn changes(bytes: &[u8]) -> Changes<'_> {
    Changes { rest: bytes }
}

/// Iterator over the changes of a journal.
#[derive(Debug)]
pub(super) struct Changes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Changes<'a> {
    type Item = Result<Change<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.rest.split_first()?;
        self.rest = rest;
        let change = self.change(tag);
        if change.is_err() {
            // Nothing after a damaged change can be trusted to start where we think it does.
            self.rest = &[];
        }
        Some(change)
    }
}

impl<'a> Changes<'a> {
    fn change(&mut self, tag: u8) -> Result<Change<'a>, CodecError> {
        Ok(match tag {
            PUT_STATE => Change::PutState {
                name: self.text()?,
                value: self.bytes()?,
                expiring: self.byte()? != 0,
            },
            PUT_RECORD => Change::PutRecord {
                name: self.text()?,
                serial: self.number()?,
                value: self.bytes()?,
            },
            PUT_PRODUCER => Change::PutProducer {
                name: self.text()?,
                id: self.text()?,
                value: self.bytes()?,
            },
            PUT_AUX => Change::PutAux {
                name: self.text()?,
                table: self.byte()?,
                key: self.bytes()?,
                value: self.bytes()?,
            },
            CLEAR_DATA => Change::ClearData { name: self.text()? },
            REMOVE_STREAM => Change::RemoveStream { name: self.text()? },
            TRIM_RECORDS => Change::TrimRecords {
                name: self.text()?,
                upto: self.number()?,
            },
            REMOVE_AUX => Change::RemoveAux {
                name: self.text()?,
                table: self.byte()?,
                key: self.bytes()?,
            },
            other => return Err(CodecError::UnknownVersion(other)),
        })
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < len {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn number(&mut self) -> Result<u64, CodecError> {
        let raw = self.take(8)?;
        let mut buf = [0u8; 8];
        buf.copy_from_slice(raw);
        Ok(u64::from_le_bytes(buf))
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let raw = self.take(4)?;
        let mut buf = [0u8; 4];
        buf.copy_from_slice(raw);
        let len = u32::from_le_bytes(buf) as usize;
        self.take(len)
    }

    fn text(&mut self) -> Result<&'a str, CodecError> {
        let raw = self.bytes()?;
        std::str::from_utf8(raw).map_err(|e| CodecError::Json(format!("a name is not UTF-8: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<Change<'static>> {
        vec![
            Change::PutState {
                name: "chat:1",
                value: b"{state}",
                expiring: true,
            },
            Change::PutRecord {
                name: "chat:1",
                serial: 7,
                value: b"\x01record",
            },
            Change::PutProducer {
                name: "chat:1",
                id: "p-1",
                value: &[1, 0, 0],
            },
            Change::PutAux {
                name: "chat:1",
                table: 2,
                key: b"id-9",
                value: b"{}",
            },
            Change::ClearData { name: "old" },
            Change::RemoveStream { name: "gone" },
            Change::TrimRecords {
                name: "chat:1",
                upto: 5,
            },
            Change::RemoveAux {
                name: "chat:1",
                table: 1,
                key: &[0, 0, 0, 0, 0, 0, 0, 2],
            },
        ]
    }

    #[test]
    fn changes_come_back_in_order() {
        let mut journal = Journal::default();
        for change in sample() {
            journal.push(change).expect("encodes");
        }
        let back: Vec<_> = changes(journal.bytes())
            .collect::<Result<_, _>>()
            .expect("decodes");
        assert_eq!(back, sample());
        journal.clear();
        assert_eq!(changes(journal.bytes()).count(), 0);
    }

    #[test]
    fn a_cut_journal_is_refused_not_misread() {
        let mut journal = Journal::default();
        for change in sample() {
            journal.push(change).expect("encodes");
        }
        let bytes = journal.bytes();
        for cut in 1..bytes.len() {
            let decoded: Result<Vec<_>, _> = changes(&bytes[..cut]).collect();
            if let Ok(decoded) = decoded {
                // A cut between two changes decodes as a shorter journal, never a different one.
                assert_eq!(decoded[..], sample()[..decoded.len()], "cut at {cut}");
            }
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for change in changes(&bytes) {
                let _ = change;
            }
        }
    }
}
