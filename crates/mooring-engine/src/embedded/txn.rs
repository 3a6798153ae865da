//! The redb tables within one transaction.
//!
//! One generic [`Tables`] serves both sides: over a read transaction's tables it is a
//! [`LogView`] of one snapshot of the database file; over a write transaction's tables it takes
//! the [`Change`]s of a checkpoint or of a log replay. It remembers the first failure of a redb
//! call, because after one the transaction can no longer be trusted.

use std::collections::BTreeMap;
use std::fmt::Display;

use bytes::Bytes;

use mooring_core::producer::ProducerState;
use mooring_core::store::{AuxEntries, AuxTable, LogView, StoreError};
use mooring_core::stream::{Record, StreamState};
use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, Table, WriteTransaction};

use super::blocks::{after, entries, Block, BlockBuilder};
use super::journal::Change;
use super::tables::encode_record;
use super::tables::{
    decode_producer, decode_record, decode_state, CodecError, AUX, EXPIRING, PRODUCERS,
    RECORD_BLOCKS, STATES,
};

type StateKey = &'static str;
type RecordKey = (&'static str, u64);
type ProducerKey = (&'static str, &'static str);
type Blob = &'static [u8];
type AuxKey = (&'static str, u8, &'static [u8]);

/// The engine's tables within one transaction.
pub(super) struct Tables<S, R, P, X, A> {
    states: S,
    records: R,
    producers: P,
    expiring: X,
    aux: A,
    /// The first redb failure in this transaction, if any.
    failure: Option<String>,
}

/// The tables of a read snapshot.
pub(super) type ReadTables = Tables<
    ReadOnlyTable<StateKey, Blob>,
    ReadOnlyTable<RecordKey, Blob>,
    ReadOnlyTable<ProducerKey, Blob>,
    ReadOnlyTable<StateKey, ()>,
    ReadOnlyTable<AuxKey, Blob>,
>;

/// The tables of a write transaction.
pub(super) type WriteTables<'txn> = Tables<
    Table<'txn, StateKey, Blob>,
    Table<'txn, RecordKey, Blob>,
    Table<'txn, ProducerKey, Blob>,
    Table<'txn, StateKey, ()>,
    Table<'txn, AuxKey, Blob>,
>;

/// A redb failure as a [`StoreError`]; `what` says which operation failed.
pub(super) fn redb_error(what: &str, error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::Corrupted(msg) => StoreError::Corrupt(format!("{what}: {msg}")),
        other => StoreError::Io(format!("{what}: {other}")),
    }
}

fn corrupt(what: impl Display, error: CodecError) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

impl ReadTables {
    pub(super) fn open(txn: &ReadTransaction) -> Result<Self, StoreError> {
        let open = "opening a table for reading";
        Ok(Self {
            states: txn.open_table(STATES).map_err(|e| redb_error(open, e))?,
            records: txn
                .open_table(RECORD_BLOCKS)
                .map_err(|e| redb_error(open, e))?,
            producers: txn.open_table(PRODUCERS).map_err(|e| redb_error(open, e))?,
            expiring: txn.open_table(EXPIRING).map_err(|e| redb_error(open, e))?,
            aux: txn.open_table(AUX).map_err(|e| redb_error(open, e))?,
            failure: None,
        })
    }
}

impl<'txn> WriteTables<'txn> {
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let open = "opening a table for writing";
        Ok(Self {
            states: txn.open_table(STATES).map_err(|e| redb_error(open, e))?,
            records: txn
                .open_table(RECORD_BLOCKS)
                .map_err(|e| redb_error(open, e))?,
            producers: txn.open_table(PRODUCERS).map_err(|e| redb_error(open, e))?,
            expiring: txn.open_table(EXPIRING).map_err(|e| redb_error(open, e))?,
            aux: txn.open_table(AUX).map_err(|e| redb_error(open, e))?,
            failure: None,
        })
    }

    /// The first redb failure of this transaction, which makes it unfit to commit.
    pub(super) fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }
}

/// Passes a redb result through, remembering the first failure in `failure` for the writer.
/// A free function, so it can borrow the failure slot while a table is borrowed.
fn check<T>(
    failure: &mut Option<String>,
    what: &str,
    result: Result<T, impl Into<redb::Error>>,
) -> Result<T, StoreError> {
    result.map_err(|e| {
        let error = redb_error(what, e);
        failure.get_or_insert_with(|| error.to_string());
        error
    })
}

impl<S, R, P, X, A> LogView for Tables<S, R, P, X, A>
where
    S: ReadableTable<StateKey, Blob>,
    R: ReadableTable<RecordKey, Blob>,
    P: ReadableTable<ProducerKey, Blob>,
    X: ReadableTable<StateKey, ()>,
    A: ReadableTable<AuxKey, Blob>,
{
    fn aux(
        &mut self,
        name: &str,
        table: AuxTable,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let found = self.aux.get((name, table.tag(), key));
        let found = check(&mut self.failure, "reading a side table", found)?;
        Ok(found.map(|guard| guard.value().to_vec()))
    }

    fn aux_all(&mut self, name: &str, table: AuxTable) -> Result<AuxEntries, StoreError> {
        let what = "reading a side table";
        let empty: &[u8] = &[];
        let range = self
            .aux
            .range((name, table.tag(), empty)..(name, table.tag() + 1, empty));
        let entries = check(&mut self.failure, what, range)?
            .map(|entry| entry.map(|(k, v)| (k.value().2.to_vec(), v.value().to_vec())))
            .collect::<Result<Vec<_>, _>>();
        check(&mut self.failure, what, entries)
    }

    fn state(&mut self, name: &str) -> Result<Option<StreamState>, StoreError> {
        let found = self.states.get(name);
        let Some(guard) = check(&mut self.failure, "reading a stream state", found)? else {
            return Ok(None);
        };
        let state = decode_state(guard.value());
        state
            .map(Some)
            .map_err(|e| corrupt(format_args!("state of stream {name:?}"), e))
    }

    fn records(
        &mut self,
        name: &str,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        if after >= upto {
            return Ok(out);
        }
        // A block is keyed by its last serial: the first one holding a serial above `after`
        // is the first at or after `(name, after + 1)`; later blocks may hold serials past
        // `upto`, so the scan stops on the records, not on the keys.
        let range = self.records.range((name, after + 1)..=(name, u64::MAX));
        let range = check(&mut self.failure, "reading records", range)?;
        let mut bytes = 0;
        let mut previous = None;
        for entry in range {
            let (key, value) = check(&mut self.failure, "reading records", entry)?;
            let block_last = key.value().1;
            for entry in entries(value.value()) {
                let (serial, record) = entry.map_err(|e| {
                    corrupt(
                        format_args!("record block {block_last} of stream {name:?}"),
                        e,
                    )
                })?;
                // Serials rise through a block and from block to block, up to each block's key;
                // anything else would repeat or reorder records, so it is damage, not data.
                if previous.is_some_and(|p| serial <= p) || serial > block_last {
                    return Err(StoreError::Corrupt(format!(
                        "record block {block_last} of stream {name:?} holds serial {serial} out of order"
                    )));
                }
                previous = Some(serial);
                if serial <= after {
                    continue;
                }
                if serial > upto || (!out.is_empty() && bytes >= max_bytes) {
                    return Ok(out);
                }
                let items = decode_record(record)
                    .map_err(|e| corrupt(format_args!("record {serial} of stream {name:?}"), e))?;
                let record = Record { serial, items };
                bytes += record.byte_len();
                out.push(record);
            }
        }
        Ok(out)
    }

    fn producer(&mut self, name: &str, id: &str) -> Result<Option<ProducerState>, StoreError> {
        let found = self.producers.get((name, id));
        let Some(guard) = check(&mut self.failure, "reading a producer state", found)? else {
            return Ok(None);
        };
        let state = decode_producer(guard.value());
        state
            .map(Some)
            .map_err(|e| corrupt(format_args!("producer {id:?} of stream {name:?}"), e))
    }

    fn expiring_streams(&mut self) -> Result<Vec<(String, StreamState)>, StoreError> {
        let what = "listing expiring streams";
        let names = check(&mut self.failure, what, self.expiring.iter())?
            .map(|entry| entry.map(|(key, _)| key.value().to_owned()))
            .collect::<Result<Vec<String>, _>>();
        let names = check(&mut self.failure, what, names)?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            match self.state(&name)? {
                Some(state) => out.push((name, state)),
                // The index is written in the same transactions as the states, so this means
                // a bug; skipping keeps the sweeper working for every other stream.
                None => tracing::warn!(stream = %name, "expiry index names a missing stream"),
            }
        }
        Ok(out)
    }
}

impl WriteTables<'_> {
    /// Makes one change to the tables: a checkpoint writes the delta through here, and a
    /// replay of the log after a crash writes the same changes again.
    pub(super) fn write(&mut self, change: Change<'_>) -> Result<(), StoreError> {
        match change {
            Change::PutState {
                name,
                value,
                expiring,
            } => {
                let put = self.states.insert(name, value).map(drop);
                check(&mut self.failure, "writing a stream state", put)?;
                let index = if expiring {
                    self.expiring.insert(name, ()).map(drop)
                } else {
                    self.expiring.remove(name).map(drop)
                };
                check(&mut self.failure, "writing the expiry index", index)
            }
            Change::PutRecord {
                name,
                serial,
                value,
            } => {
                // A replayed record: a block of its own (checkpoints write full blocks).
                let mut block = BlockBuilder::default();
                block
                    .push_encoded(serial, value)
                    .map_err(|e| corrupt(format_args!("record {serial} of stream {name:?}"), e))?;
                self.put_open_block(name, &mut block)
            }
            Change::PutProducer { name, id, value } => {
                let put = self.producers.insert((name, id), value).map(drop);
                check(&mut self.failure, "writing a producer state", put)
            }
            Change::PutAux {
                name,
                table,
                key,
                value,
            } => {
                let put = self.aux.insert((name, table, key), value).map(drop);
                check(&mut self.failure, "writing a side table", put)
            }
            Change::TrimRecords { name, upto } => self.trim(name, upto),
            Change::RemoveAux { name, table, key } => {
                let removed = self.aux.remove((name, table, key)).map(drop);
                check(&mut self.failure, "removing a side-table entry", removed)
            }
            Change::ClearData { name } => self.clear(name),
            Change::RemoveStream { name } => {
                self.clear(name)?;
                let removed = self.states.remove(name).map(drop);
                check(&mut self.failure, "removing a stream state", removed)?;
                let unindexed = self.expiring.remove(name).map(drop);
                check(&mut self.failure, "writing the expiry index", unindexed)
            }
        }
    }

    /// Writes a stream's records (serials above any the file holds) as full blocks.
    pub(super) fn put_records(
        &mut self,
        name: &str,
        records: &BTreeMap<u64, Vec<Bytes>>,
    ) -> Result<(), StoreError> {
        let mut block = BlockBuilder::default();
        for (serial, items) in records {
            let closed = encode_record(items)
                .and_then(|record| block.add(*serial, &record))
                .map_err(|e| corrupt(format_args!("record {serial} of stream {name:?}"), e))?;
            for closed in closed {
                self.put_block(name, closed)?;
            }
        }
        self.put_open_block(name, &mut block)
    }

    /// Writes the block being built, if it holds a record.
    fn put_open_block(&mut self, name: &str, block: &mut BlockBuilder) -> Result<(), StoreError> {
        match block.take() {
            Some(block) => self.put_block(name, block),
            None => Ok(()),
        }
    }

    /// Writes a block. Its records must come after every record the file holds for the
    /// stream: a block that would overlap others would make reads repeat or skip records, so it
    /// is refused as a bug instead of written.
    fn put_block(&mut self, name: &str, block: Block) -> Result<(), StoreError> {
        let what = "writing records";
        // The first block ending at or after this one's first record must begin after its
        // last: blocks are keyed by their last serial, so that one block settles it.
        let next = {
            let mut range = check(
                &mut self.failure,
                what,
                self.records.range((name, block.first)..=(name, u64::MAX)),
            )?;
            match range.next() {
                None => None,
                Some(entry) => {
                    let (key, value) = check(&mut self.failure, what, entry)?;
                    let begins = entries(value.value()).next().and_then(Result::ok);
                    Some((key.value().1, begins.map(|(serial, _)| serial)))
                }
            }
        };
        if let Some((ends, begins)) = next {
            if begins.is_none_or(|b| b <= block.last) {
                let why = format!(
                    "records {}..={} of stream {name:?} would overlap the file's block ending at {ends}",
                    block.first, block.last
                );
                self.failure.get_or_insert_with(|| why.clone());
                return Err(StoreError::Corrupt(why));
            }
        }
        let put = self
            .records
            .insert((name, block.last), block.bytes.as_slice())
            .map(drop);
        check(&mut self.failure, what, put)
    }

    /// Removes every record up to `upto`: the blocks that end there or before, and those
    /// records from the block that holds `upto + 1`, if it begins before.
    fn trim(&mut self, name: &str, upto: u64) -> Result<(), StoreError> {
        let what = "trimming records";
        let trimmed = self
            .records
            .retain_in((name, 0)..=(name, upto), |_, _| false);
        check(&mut self.failure, what, trimmed)?;
        let straddling = {
            let mut range = check(
                &mut self.failure,
                what,
                self.records.range((name, upto)..=(name, u64::MAX)),
            )?;
            match range.next() {
                None => None,
                Some(entry) => {
                    let (key, value) = check(&mut self.failure, what, entry)?;
                    let last = key.value().1;
                    match after(value.value(), upto) {
                        Ok(kept) => kept.map(|kept| (last, kept)),
                        // Reads never start before the trim point, so the trimmed records only
                        // take space: a damaged block is left whole rather than failing the
                        // checkpoint (and every later open, which replays the trim).
                        Err(e) => {
                            tracing::warn!(stream = %name, block = last, error = %e, "a damaged record block straddles a trim; left as it is");
                            None
                        }
                    }
                }
            }
        };
        let Some((last, mut kept)) = straddling else {
            return Ok(());
        };
        let removed = self.records.remove((name, last)).map(drop);
        check(&mut self.failure, what, removed)?;
        self.put_open_block(name, &mut kept)
    }

    fn clear(&mut self, name: &str) -> Result<(), StoreError> {
        let empty: &[u8] = &[];
        let cleared = self
            .aux
            .retain_in((name, 0, empty)..=(name, u8::MAX, empty), |_, _| false);
        check(&mut self.failure, "removing side tables", cleared)?;
        let cleared = self
            .records
            .retain_in((name, 0)..=(name, u64::MAX), |_, _| false);
        check(&mut self.failure, "removing records", cleared)?;
        // Producer ids are strings, so there is no upper key to bound the range with: collect
        // this stream's ids by walking from its first one.
        let what = "listing producers";
        let ids = check(&mut self.failure, what, self.producers.range((name, "")..))?
            .map(|entry| {
                entry.map(|(key, _)| {
                    let (stream, id) = key.value();
                    (stream == name).then(|| id.to_owned())
                })
            })
            .map_while(Result::transpose)
            .collect::<Result<Vec<String>, _>>();
        let ids = check(&mut self.failure, what, ids)?;
        for id in ids {
            let removed = self.producers.remove((name, id.as_str())).map(drop);
            check(&mut self.failure, "removing a producer state", removed)?;
        }
        Ok(())
    }
}
