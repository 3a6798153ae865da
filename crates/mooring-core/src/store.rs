//! The storage contract engines implement.
//!
//! An engine provides two things: [`LogView`] and [`LogTxn`], reads and atomic writes over its
//! tables, and a [`LogStore`] that runs the shared operations of [`crate::ops`] inside them.
//! The rules (producers, closure, forks, expiry) live in this crate once; engines only store.

use async_trait::async_trait;
use bytes::Bytes;

use crate::append::{AppendError, AppendOutcome, AppendRequest};
use crate::create::{CreateError, CreateOutcome, CreateRequest};
use crate::producer::ProducerState;
use crate::publish::SessionSnapshot;
use crate::read::{HeadError, ReadBatch, ReadError};
use crate::session::{PublishError, PublishGroup, PublishOutcome, PublishRules};
use crate::stream::{Record, StreamInfo, StreamState};
use crate::ReadFrom;

/// A failure of the storage itself, not of the request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// An earlier write or fsync failed; the engine refuses writes until restarted, because
    /// it can no longer tell what reached the disk.
    #[error("storage is unavailable after a failed write ({0}); restart the server after checking the disk")]
    Poisoned(String),
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The storage cannot do this operation at all, as it is set up (retrying will not help).
    #[error("not supported by this storage: {0}")]
    Unsupported(String),
}

/// Why a delete was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    #[error("stream not found")]
    NotFound,
    #[error("stream was already deleted")]
    Gone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What another writer of the same data did: a wake-up for a stream it wrote (never the data
/// itself), or a presence change of a member connected through another node.
#[derive(Clone, Debug, PartialEq)]
pub enum StoreNotice {
    /// Another writer committed a write to `name` (an append, a publish, a create, a close or
    /// a removal); `tail` is the stream's last serial after it (0 once removed).
    Moved { name: String, tail: u64 },
    /// Notices may have been lost since the last one (the feed reconnected, or its reader fell
    /// behind): any stream may have moved, and any member of another node may have changed.
    Lost,
    /// A member connected through another node entered, changed or left. Unlike a wake-up it
    /// carries the change; like one it may be lost, and then `Lost` follows.
    Presence(crate::fleet::PresenceNotice),
    /// A user input written through another node waits for a worker. Like a wake-up it may be
    /// lost; the node that has it announces it again while it waits.
    Input(Box<crate::fleet::InputNotice>),
}

/// Notices of writes made by other writers (other nodes on a shared store).
///
/// Contract: a notice is sent after the write it announces is durable and visible to reads,
/// so a reader woken by it reads the write. Notices carry no data and may repeat; a notice
/// that is lost is always followed, sooner or later, by [`StoreNotice::Lost`], so a consumer
/// that treats `Lost` as "every stream moved" misses no write. Notices of this handle's own
/// writes may be left out.
#[async_trait]
pub trait NoticeFeed: Send + std::fmt::Debug {
    /// The next notice; `None` once the feed has ended (the store shut down).
    async fn next(&mut self) -> Option<StoreNotice>;
}

/// Side tables a stream keeps next to its records, written in the same transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuxTable {
    /// Materialized messages of a session, keyed by the big-endian serial of their create.
    Messages,
    /// Publish idempotency keys of a session: id -> (serial, time).
    PublishIds,
}

impl AuxTable {
    /// The persisted tag of the table. Pinned: stored data depends on it.
    pub const fn tag(self) -> u8 {
        match self {
            Self::Messages => 1,
            Self::PublishIds => 2,
        }
    }
}

/// Entries of a side table: (key, value) in key order.
pub type AuxEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// Reads over one consistent snapshot of an engine's tables.
pub trait LogView {
    /// The stored state of `name`, expired or not.
    fn state(&mut self, name: &str) -> Result<Option<StreamState>, StoreError>;

    /// Records of `name` with serials in `(after, upto]`, in order, stopping once `max_bytes`
    /// is reached (always at least one record if any is in range).
    fn records(
        &mut self,
        name: &str,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError>;

    /// The remembered state of producer `id` on `name`.
    fn producer(&mut self, name: &str, id: &str) -> Result<Option<ProducerState>, StoreError>;

    /// Every stored stream the sweeper visits ([`StreamState::swept`]): those with an expiry
    /// or a retention.
    fn expiring_streams(&mut self) -> Result<Vec<(String, StreamState)>, StoreError>;

    /// The value at `key` of side table `table` of `name`.
    fn aux(
        &mut self,
        name: &str,
        table: AuxTable,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every entry of side table `table` of `name`, in key order.
    fn aux_all(&mut self, name: &str, table: AuxTable) -> Result<AuxEntries, StoreError>;
}

/// Writes that become visible and durable together, or not at all.
///
/// Operations validate everything before their first write, so a refused request never writes.
pub trait LogTxn: LogView {
    fn put_state(&mut self, name: &str, state: &StreamState) -> Result<(), StoreError>;
    fn put_record(&mut self, name: &str, serial: u64, items: &[Bytes]) -> Result<(), StoreError>;
    fn put_producer(
        &mut self,
        name: &str,
        id: &str,
        state: ProducerState,
    ) -> Result<(), StoreError>;
    fn put_aux(
        &mut self,
        name: &str,
        table: AuxTable,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError>;
    /// Removes the records of `name` with serials up to `upto` (retention).
    fn trim_records(&mut self, name: &str, upto: u64) -> Result<(), StoreError>;
    /// Removes the entry at `key` of side table `table` of `name`.
    fn remove_aux(&mut self, name: &str, table: AuxTable, key: &[u8]) -> Result<(), StoreError>;
    /// Removes the records, producer states and side tables of `name`, keeping its state.
    fn clear_data(&mut self, name: &str) -> Result<(), StoreError>;
    /// Removes `name` entirely: state, records, producer states and side tables.
    fn remove_stream(&mut self, name: &str) -> Result<(), StoreError>;
}

/// A durable, ordered log store: the engine behind every surface.
///
/// Contract, for every implementation:
/// - **Order**: records of a stream have contiguous serials from 1; a read returns them in
///   serial order with the bytes they were appended with.
/// - **Atomicity**: an append's record, the stream's new state and the producer's new state
///   are stored together or not at all. So are a fork and its copied records.
/// - **Durability**: a method returns `Ok` only once its effect survives a crash of the process
///   (and, for disk engines, of the machine). A failed write poisons the store: every later write
///   answers [`StoreError::Poisoned`].
/// - **Expiry**: a stream past its expiry answers as if it did not exist, and is reclaimed by
///   [`LogStore::sweep_expired`] or its next write.
/// - **Retention**: a session with a retention loses its records older than it at the sweeps;
///   reads start after the last record removed.
#[async_trait]
pub trait LogStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates `name`, or confirms it exists with the same configuration.
    async fn create(&self, name: &str, req: CreateRequest) -> Result<CreateOutcome, CreateError>;

    /// Appends a record and/or closes the stream.
    async fn append(&self, name: &str, req: AppendRequest) -> Result<AppendOutcome, AppendError>;

    /// Reads records from `from`, up to about `max_bytes`. Resets a sliding TTL.
    async fn read(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadBatch, ReadError>;

    /// The stream's metadata and high-water position. Does not reset a sliding TTL.
    async fn head(&self, name: &str) -> Result<StreamInfo, HeadError>;

    /// Starts a new life of `name` if it is still in life `epoch` (its records stay, under a
    /// new epoch), because a reader found that it lost its end and gave its serials out again;
    /// answers the tail afterwards (of a life another reader may have started first).
    async fn renew_life(&self, name: &str, epoch: u64) -> Result<crate::Position, HeadError>;

    /// Deletes `name`; a stream with live forks is soft-deleted until its last fork goes.
    async fn delete(&self, name: &str) -> Result<(), DeleteError>;

    /// Publishes event groups into session `name` (created on first use), each group atomically;
    /// a retried id within the rules' dedupe window is acknowledged with its original serial.
    async fn publish(
        &self,
        name: &str,
        groups: Vec<PublishGroup>,
        rules: PublishRules,
    ) -> Result<Vec<Result<PublishOutcome, PublishError>>, StoreError>;

    /// The session's materialized messages and its high-water, from one snapshot; `None` if
    /// the session does not exist.
    async fn snapshot(&self, name: &str) -> Result<Option<SessionSnapshot>, ReadError>;

    /// Removes every expired stream and trims retained ones; returns how many it changed.
    async fn sweep_expired(&self) -> Result<usize, StoreError>;

    /// Subscribes to notices of writes made by other writers of the same data, for the live
    /// readers of this node. `Ok(None)` when nothing else can write it (the memory and embedded
    /// engines: one process owns the data, and its own writers wake its readers).
    async fn notices(&self) -> Result<Option<Box<dyn NoticeFeed>>, StoreError>;

    /// The presence this store shares with other nodes; `None` when one process owns the data
    /// (the memory and embedded engines).
    fn fleet(&self) -> Option<std::sync::Arc<dyn crate::fleet::Fleet>> {
        None
    }

    /// Finishes pending writes and stops accepting new ones.
    async fn shutdown(&self) -> Result<(), StoreError>;
}
