//! Creating streams and forks.

use bytes::Bytes;
use mooring_protocol::Position;

use crate::store::StoreError;
use crate::stream::{
    Expiry, ForkOrigin, Record, StreamConfig, StreamInfo, StreamState, DEFAULT_CONTENT_TYPE,
};

/// A request to create a stream, or a fork of one.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    /// `None`: the default type, or the source's for a fork.
    pub content_type: Option<String>,
    pub expiry: Expiry,
    /// Create the stream already closed.
    pub closed: bool,
    /// Items of an initial record; empty for none.
    pub items: Vec<Bytes>,
    pub fork: Option<ForkOrigin>,
}

/// Whether the stream was made or already there with the same configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    Created(StreamInfo),
    Existed(StreamInfo),
}

/// Why a create was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    #[error("a stream already exists here with a different configuration")]
    ConfigMismatch,
    #[error("this path belongs to a deleted stream whose forks still exist; it cannot be re-created until they are deleted")]
    PathSoftDeleted,
    #[error("fork source {0:?} not found")]
    SourceNotFound(String),
    #[error("fork source {0:?} was deleted")]
    SourceSoftDeleted(String),
    #[error("fork content type {given:?} does not match the source's {source_type:?}")]
    SourceContentTypeMismatch { given: String, source_type: String },
    #[error("fork offset {given} is not a position of the source (tail {tail})")]
    ForkOffsetInvalid { given: Position, tail: Position },
    #[error("fork sub-offset {sub_offset} is past the end of the next record ({limit})")]
    SubOffsetOvershoot { sub_offset: u64, limit: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `existing` was created with what `req` asks for.
pub fn matches_existing(existing: &StreamState, req: &CreateRequest) -> bool {
    let config = &existing.config;
    let type_matches = match &req.content_type {
        Some(given) => config.accepts(given),
        None => config.fork.is_some() || config.accepts(DEFAULT_CONTENT_TYPE),
    };
    type_matches
        && config.requested_expiry == req.expiry
        && existing.closed == req.closed
        && config.fork == req.fork
}

/// The state of a new plain stream: a new life of its name, with an epoch of its own.
pub fn new_stream_state(req: &CreateRequest, now_ms: u64) -> StreamState {
    StreamState {
        config: StreamConfig {
            content_type: req
                .content_type
                .clone()
                .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned()),
            requested_expiry: req.expiry,
            expiry: req.expiry,
            fork: req.fork.clone(),
        },
        epoch: crate::epoch::new_epoch(now_ms),
        tail: u64::from(!req.items.is_empty()),
        closed: req.closed,
        closed_by: None,
        stream_seq: None,
        created_ms: now_ms,
        last_write_ms: now_ms,
        forks: 0,
        soft_deleted: false,
        trimmed: 0,
        kept_from_ms: 0,
        retain_ms: None,
    }
}

/// Where a fork diverges: the records it inherits and the partial record past them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForkPoint {
    /// Inherit source records with serials `1..=upto`.
    pub upto: u64,
    /// Items of the source's next record inherited in part (sub-offset), if any.
    pub partial: Option<Vec<Bytes>>,
}

/// Resolves a fork's divergence point against its source.
///
/// `next_record` is the source record at `offset + 1`, needed only for a sub-offset.
pub fn fork_point(
    source: &StreamState,
    origin: &ForkOrigin,
    next_record: Option<&Record>,
) -> Result<ForkPoint, CreateError> {
    let tail = source.tail_position();
    let offset = origin.offset.unwrap_or(tail);
    // Serial 0 is the start of every life: it holds nothing that could belong to another.
    // A fork inherits records up to its offset: one before the retained range has none left.
    if (offset.epoch != source.epoch && offset.serial != 0)
        || offset.serial > source.tail
        || offset.serial < source.trimmed
    {
        return Err(CreateError::ForkOffsetInvalid {
            given: offset,
            tail,
        });
    }
    if origin.sub_offset == 0 {
        return Ok(ForkPoint {
            upto: offset.serial,
            partial: None,
        });
    }
    let overshoot = |limit| CreateError::SubOffsetOvershoot {
        sub_offset: origin.sub_offset,
        limit,
    };
    let Some(record) = next_record else {
        return Err(overshoot(0));
    };
    let partial = if source.config.is_json() {
        let n = usize::try_from(origin.sub_offset).unwrap_or(usize::MAX);
        if n > record.items.len() {
            return Err(overshoot(record.items.len() as u64));
        }
        record.items[..n].to_vec()
    } else {
        let len = record.byte_len();
        let n = usize::try_from(origin.sub_offset).unwrap_or(usize::MAX);
        if n > len {
            return Err(overshoot(len as u64));
        }
        vec![truncate_bytes(&record.items, n)]
    };
    Ok(ForkPoint {
        upto: offset.serial,
        partial: Some(partial),
    })
}

fn truncate_bytes(items: &[Bytes], n: usize) -> Bytes {
    let mut out = Vec::with_capacity(n);
    for item in items {
        let take = (n - out.len()).min(item.len());
        out.extend_from_slice(&item[..take]);
    }
    Bytes::from(out)
}

/// The state of a new fork of `source`.
pub fn fork_state(
    source: &StreamState,
    req: &CreateRequest,
    point: &ForkPoint,
    now_ms: u64,
) -> Result<StreamState, CreateError> {
    if let Some(given) = &req.content_type {
        if !source.config.accepts(given) {
            return Err(CreateError::SourceContentTypeMismatch {
                given: given.clone(),
                source_type: source.config.content_type.clone(),
            });
        }
    }
    let expiry = match req.expiry {
        Expiry::Never => source.config.expiry,
        own => own,
    };
    let inherited = point.upto + u64::from(point.partial.is_some());
    Ok(StreamState {
        config: StreamConfig {
            content_type: source.config.content_type.clone(),
            requested_expiry: req.expiry,
            expiry,
            fork: req.fork.clone(),
        },
        epoch: source.epoch,
        tail: inherited + u64::from(!req.items.is_empty()),
        closed: req.closed,
        closed_by: None,
        stream_seq: None,
        created_ms: now_ms,
        last_write_ms: now_ms,
        forks: 0,
        soft_deleted: false,
        // What the source trimmed is not copied: the fork starts where the source's records do.
        trimmed: source.trimmed,
        kept_from_ms: source.kept_from_ms,
        retain_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(content_type: &str, tail: u64) -> StreamState {
        new_stream_state(
            &CreateRequest {
                content_type: Some(content_type.into()),
                ..CreateRequest::default()
            },
            0,
        )
        .with_tail(tail)
    }

    impl StreamState {
        fn with_tail(mut self, tail: u64) -> Self {
            self.tail = tail;
            self
        }
    }

    fn origin(serial: u64, sub_offset: u64) -> ForkOrigin {
        ForkOrigin {
            source: "s".into(),
            offset: Some(Position { epoch: 0, serial }),
            sub_offset,
        }
    }

    fn record(items: &[&'static str]) -> Record {
        Record {
            serial: 1,
            items: items
                .iter()
                .map(|i| Bytes::from_static(i.as_bytes()))
                .collect(),
        }
    }

    #[test]
    fn a_binary_sub_offset_takes_bytes_of_the_next_record() {
        let point = fork_point(
            &source("text/plain", 1),
            &origin(0, 3),
            Some(&record(&["hello"])),
        );
        assert_eq!(
            point,
            Ok(ForkPoint {
                upto: 0,
                partial: Some(vec![Bytes::from_static(b"hel")])
            })
        );
    }

    #[test]
    fn a_json_sub_offset_takes_messages_of_the_next_record() {
        let rec = record(&["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"]);
        let point = fork_point(&source("application/json", 1), &origin(0, 2), Some(&rec));
        assert_eq!(point.map(|p| p.partial.map(|v| v.len())), Ok(Some(2)));
        let over = fork_point(&source("application/json", 1), &origin(0, 4), Some(&rec));
        assert!(matches!(over, Err(CreateError::SubOffsetOvershoot { .. })));
    }

    #[test]
    fn a_fork_offset_past_the_tail_is_refused() {
        let point = fork_point(&source("text/plain", 1), &origin(2, 0), None);
        assert!(matches!(point, Err(CreateError::ForkOffsetInvalid { .. })));
    }

    #[test]
    fn a_fork_without_expiry_inherits_its_sources() {
        let mut src = source("text/plain", 0);
        src.config.expiry = Expiry::TtlSecs(60);
        let req = CreateRequest::default();
        let point = ForkPoint {
            upto: 0,
            partial: None,
        };
        let fork = fork_state(&src, &req, &point, 0).map(|s| s.config.expiry);
        assert_eq!(fork, Ok(Expiry::TtlSecs(60)));
    }
}
