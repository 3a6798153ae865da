//! A log's configuration and persisted state.

use bytes::Bytes;
use mooring_protocol::durable_streams::{is_json, media_type};
use mooring_protocol::{durable_streams::ProducerClaim, Position};
use serde::{Deserialize, Serialize};

/// The content type a stream gets when its creator names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// When a stream expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Expiry {
    #[default]
    Never,
    /// A sliding window: expires this many seconds after the last read or write.
    TtlSecs(u64),
    /// An absolute deadline in Unix milliseconds.
    AtMs(u64),
}

impl Expiry {
    /// Whether a stream last accessed at `last_access_ms` has expired at `now_ms`.
    pub fn has_expired(self, now_ms: u64, last_access_ms: u64) -> bool {
        match self {
            Self::Never => false,
            Self::TtlSecs(secs) => now_ms >= last_access_ms.saturating_add(secs * 1000),
            Self::AtMs(at) => now_ms >= at,
        }
    }
}

/// Where a fork diverged from its source, as requested.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOrigin {
    pub source: String,
    /// The requested divergence offset; `None` meant the source's tail at creation.
    pub offset: Option<Position>,
    pub sub_offset: u64,
}

/// What a stream was created with; a repeated create must match it to succeed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// The content type as given (or inherited, for forks).
    pub content_type: String,
    /// The expiry the creator asked for.
    pub requested_expiry: Expiry,
    /// The expiry in force (differs from the requested one when a fork inherits its source's).
    pub expiry: Expiry,
    pub fork: Option<ForkOrigin>,
}

impl StreamConfig {
    /// Whether records of this stream are JSON messages.
    pub fn is_json(&self) -> bool {
        is_json(&self.content_type)
    }

    /// Whether `content_type` names this stream's media type.
    pub fn accepts(&self, content_type: &str) -> bool {
        media_type(content_type) == media_type(&self.content_type)
    }
}

/// The persisted state of one stream besides its records and producers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    pub config: StreamConfig,
    /// The life of the log its positions belong to.
    pub epoch: u64,
    /// Serial of the last record; 0 when empty.
    pub tail: u64,
    pub closed: bool,
    /// The producer tuple whose append closed the stream, so its retry is a duplicate.
    pub closed_by: Option<ProducerClaim>,
    /// The last `Stream-Seq` accepted (scope: the whole stream).
    pub stream_seq: Option<String>,
    pub created_ms: u64,
    pub last_write_ms: u64,
    /// Forks created from this stream and not yet deleted.
    pub forks: u64,
    /// Deleted while forks remained: answers `410 Gone` and blocks re-creation.
    pub soft_deleted: bool,
    /// Records up to this serial were removed by retention: reads start after it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub trimmed: u64,
    /// Once trimmed: about the time of the oldest record kept, so the sweeper can tell from
    /// the state alone whether a trim is due.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kept_from_ms: u64,
    /// A session's retention, in ms: records older than this are trimmed, and the session
    /// expires once nothing was written to it for this long. Set by the session's publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_ms: Option<u64>,
}

/// Fields added after the first stored layout are left out at their defaults, so a state
/// without them reads as before and one stored earlier reads as new.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StreamState {
    /// The position after the last record.
    pub fn tail_position(&self) -> Position {
        Position {
            epoch: self.epoch,
            serial: self.tail,
        }
    }

    /// Whether the sweeper visits this stream: it can expire, or it has records to trim.
    pub fn swept(&self) -> bool {
        self.config.expiry != Expiry::Never || self.retain_ms.is_some()
    }

    /// Whether nothing was written for the retention period: every record is past it, and the
    /// session goes as a whole.
    pub fn retention_lapsed(&self, now_ms: u64) -> bool {
        self.retain_ms
            .is_some_and(|ms| now_ms >= self.last_write_ms.saturating_add(ms))
    }

    /// What readers and `HEAD` see.
    pub fn info(&self) -> StreamInfo {
        StreamInfo {
            config: self.config.clone(),
            tail: self.tail_position(),
            closed: self.closed,
            trimmed: self.trimmed,
        }
    }
}

/// A stream's metadata as readers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub config: StreamConfig,
    pub tail: Position,
    pub closed: bool,
    /// Records up to this serial were removed by retention.
    pub trimmed: u64,
}

/// One record of a log: one append. Bytes-mode records hold one item (the body); JSON-mode
/// records hold one item per message of the append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub serial: u64,
    pub items: Vec<Bytes>,
}

impl Record {
    pub fn byte_len(&self) -> usize {
        self.items.iter().map(Bytes::len).sum()
    }
}
