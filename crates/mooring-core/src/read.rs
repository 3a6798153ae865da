//! Reads: where a read starts, and what comes back.

use crate::store::StoreError;
use crate::stream::{Record, StreamInfo, StreamState};
use crate::{Position, ReadFrom};

/// Records from a read, with the stream's metadata at the time of the read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadBatch {
    pub records: Vec<Record>,
    pub info: StreamInfo,
    /// The position the read started after.
    pub start: Position,
}

impl ReadBatch {
    /// The position after the last record returned (the start if none).
    pub fn next(&self) -> Position {
        Position {
            epoch: self.start.epoch,
            serial: self.records.last().map_or(self.start.serial, |r| r.serial),
        }
    }

    /// Whether the batch reaches the stream's tail.
    pub fn up_to_date(&self) -> bool {
        self.next().serial >= self.info.tail.serial
    }
}

/// Why a read was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("stream not found")]
    NotFound,
    #[error("stream was deleted")]
    Gone,
    /// The position belongs to another life of the log: its history is gone.
    #[error("offset belongs to an earlier life of this stream; its history is gone (current position {current})")]
    EpochMismatch { current: Position },
    /// Retention removed the records after the position.
    #[error("offset {given} is before the retained records, which start after serial {start}: older records were removed by the retention rule")]
    BeforeRetained { given: Position, start: Position },
    #[error("offset {given} is beyond the stream's tail {tail}")]
    BeyondTail { given: Position, tail: Position },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a metadata request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("stream not found")]
    NotFound,
    #[error("stream was deleted")]
    Gone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The serial a read of `state` from `from` starts after.
pub fn start_serial(state: &StreamState, from: ReadFrom) -> Result<u64, ReadError> {
    let before_retained = |given| ReadError::BeforeRetained {
        given,
        start: Position {
            epoch: state.epoch,
            serial: state.trimmed,
        },
    };
    match from {
        // The start of what is kept: the first record retention did not remove.
        ReadFrom::Start => Ok(state.trimmed),
        ReadFrom::Now => Ok(state.tail),
        // After nothing of another life is the start of this one: nothing was missed, unless
        // retention removed records of this one.
        ReadFrom::After(p) if p.serial == 0 && state.trimmed > 0 => Err(before_retained(p)),
        ReadFrom::After(p) if p.serial == 0 => Ok(0),
        ReadFrom::After(p) if p.epoch != state.epoch => Err(ReadError::EpochMismatch {
            current: state.tail_position(),
        }),
        ReadFrom::After(p) if p.serial > state.tail => Err(ReadError::BeyondTail {
            given: p,
            tail: state.tail_position(),
        }),
        ReadFrom::After(p) if p.serial < state.trimmed => Err(before_retained(p)),
        ReadFrom::After(p) => Ok(p.serial),
    }
}
