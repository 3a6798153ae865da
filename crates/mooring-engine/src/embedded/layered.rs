//! [`LogView`] and [`LogTxn`] over the database file seen through the deltas above it.
//!
//! From the top: the batch being run (`pending`, empty for readers), then the changes held in
//! memory (`mem`: those since the last checkpoint began, then those a running checkpoint is
//! writing), then a read snapshot of the database file (`base`). A lookup
//! takes the first layer that knows the answer; a layer that cleared a stream hides that
//! stream's data below it. The writer's batch writes go to `pending` and to the journal it
//! logs; readers never see `pending`.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use mooring_core::producer::ProducerState;
use mooring_core::store::{AuxEntries, AuxTable, LogTxn, LogView, StoreError};
use mooring_core::stream::{Record, StreamState};

use super::journal::{Change, Journal};
use super::overlay::{Delta, Found, Layers, StreamDelta};
use super::tables::{encode_producer, encode_record, encode_state, CodecError};
use super::txn::ReadTables;

/// The tables as a batch or a reader sees them.
pub(super) struct Layered<'a> {
    base: ReadTables,
    mem: &'a Layers,
    pending: Delta,
    journal: Journal,
    dirty: bool,
}

fn corrupt(what: &str, error: CodecError) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

impl<'a> Layered<'a> {
    /// A reader's view: the file through `mem`.
    pub(super) fn reader(base: ReadTables, mem: &'a Layers) -> Self {
        Self::batch(base, mem, Journal::default())
    }

    /// A batch's view, recording its changes into `journal` (cleared first, so one
    /// allocation serves every batch).
    pub(super) fn batch(base: ReadTables, mem: &'a Layers, mut journal: Journal) -> Self {
        journal.clear();
        Self {
            base,
            mem,
            pending: Delta::default(),
            journal,
            dirty: false,
        }
    }

    /// The batch's changes, its journal, and whether it wrote anything.
    pub(super) fn finish(self) -> (Delta, Journal, bool) {
        (self.pending, self.journal, self.dirty)
    }

    /// The layers that know `name`, top first, down to the first that cleared it; and whether
    /// the file below is still visible.
    fn layers(&self, name: &str) -> (Vec<&StreamDelta>, bool) {
        let mut out = Vec::with_capacity(3);
        let [active, frozen] = self.mem.stream(name);
        for layer in [self.pending.stream(name), active, frozen]
            .into_iter()
            .flatten()
        {
            out.push(layer);
            if layer.cleared {
                return (out, false);
            }
        }
        (out, true)
    }

    fn record(&mut self, change: Change<'_>) -> Result<(), StoreError> {
        self.dirty = true;
        self.journal
            .push(change)
            .map_err(|e| corrupt("recording a change for the write-ahead log", e))
    }
}

/// The first layer's answer, if any layer knows it.
fn first<T>(layers: &[&StreamDelta], ask: impl Fn(&StreamDelta) -> Found<T>) -> Found<T> {
    for layer in layers {
        match ask(layer) {
            Found::Below => continue,
            known => return known,
        }
    }
    Found::Below
}

impl LogView for Layered<'_> {
    fn state(&mut self, name: &str) -> Result<Option<StreamState>, StoreError> {
        let (layers, _) = self.layers(name);
        match first(&layers, StreamDelta::state) {
            Found::Here(state) => Ok(Some(state)),
            Found::Gone => Ok(None),
            Found::Below => self.base.state(name),
        }
    }

    fn records(
        &mut self,
        name: &str,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let (layers, file_visible) = self.layers(name);
        // A trim in any layer removed the records up to it from every layer below.
        let after = layers.iter().map(|l| l.trimmed).fold(after, u64::max);
        // Cloning the few layer records in range is cheap (items are shared `Bytes`); it
        // frees `self` for the file's read below.
        let mut above: BTreeMap<u64, Record> = BTreeMap::new();
        for layer in layers.iter().rev() {
            above.extend(layer.records_in(after, upto).map(|r| (r.serial, r)));
        }
        let mut out = if file_visible {
            self.base.records(name, after, upto, max_bytes)?
        } else {
            Vec::new()
        };
        let mut bytes: usize = out.iter().map(Record::byte_len).sum();
        if !out.is_empty() && bytes >= max_bytes {
            // The file's page is full; the layers hold later serials, for the next page.
            return Ok(out);
        }
        let from = out.last().map_or(after, |r| r.serial);
        for (_, record) in above.range(from + 1..) {
            if !out.is_empty() && bytes >= max_bytes {
                break;
            }
            bytes += record.byte_len();
            out.push(record.clone());
        }
        Ok(out)
    }

    fn producer(&mut self, name: &str, id: &str) -> Result<Option<ProducerState>, StoreError> {
        let (layers, _) = self.layers(name);
        match first(&layers, |l| l.producer(id)) {
            Found::Here(state) => Ok(Some(state)),
            Found::Gone => Ok(None),
            Found::Below => self.base.producer(name, id),
        }
    }

    fn expiring_streams(&mut self) -> Result<Vec<(String, StreamState)>, StoreError> {
        let mut names: BTreeSet<String> = self
            .base
            .expiring_streams()?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        names.extend(self.mem.names().cloned());
        names.extend(self.pending.streams().map(|(name, _)| name.clone()));
        let mut out = Vec::new();
        for name in names {
            if let Some(state) = self.state(&name)? {
                if state.swept() {
                    out.push((name, state));
                }
            }
        }
        Ok(out)
    }

    fn aux(
        &mut self,
        name: &str,
        table: AuxTable,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let (layers, _) = self.layers(name);
        match first(&layers, |l| l.aux(table.tag(), key)) {
            Found::Here(value) => Ok(Some(value)),
            Found::Gone => Ok(None),
            Found::Below => self.base.aux(name, table, key),
        }
    }

    fn aux_all(&mut self, name: &str, table: AuxTable) -> Result<AuxEntries, StoreError> {
        let (layers, file_visible) = self.layers(name);
        // Top layer first: the first layer to set or remove a key decides it.
        let mut all: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for layer in &layers {
            for (key, value) in layer.aux_of(table.tag()) {
                all.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        if file_visible {
            for (key, value) in self.base.aux_all(name, table)? {
                all.entry(key).or_insert(Some(value));
            }
        }
        Ok(all
            .into_iter()
            .filter_map(|(key, value)| Some((key, value?)))
            .collect())
    }
}

impl LogTxn for Layered<'_> {
    fn put_state(&mut self, name: &str, state: &StreamState) -> Result<(), StoreError> {
        let value = encode_state(state).map_err(|e| corrupt("encoding a stream state", e))?;
        self.record(Change::PutState {
            name,
            value: &value,
            expiring: state.swept(),
        })?;
        self.pending.put_state(name, state.clone());
        Ok(())
    }

    fn put_record(&mut self, name: &str, serial: u64, items: &[Bytes]) -> Result<(), StoreError> {
        let value = encode_record(items).map_err(|e| corrupt("encoding a record", e))?;
        self.record(Change::PutRecord {
            name,
            serial,
            value: &value,
        })?;
        self.pending.put_record(name, serial, items.to_vec());
        Ok(())
    }

    fn put_producer(
        &mut self,
        name: &str,
        id: &str,
        state: ProducerState,
    ) -> Result<(), StoreError> {
        let value = encode_producer(state);
        self.record(Change::PutProducer {
            name,
            id,
            value: &value,
        })?;
        self.pending.put_producer(name, id, state);
        Ok(())
    }

    fn put_aux(
        &mut self,
        name: &str,
        table: AuxTable,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.record(Change::PutAux {
            name,
            table: table.tag(),
            key,
            value,
        })?;
        self.pending.put_aux(name, table.tag(), key, value);
        Ok(())
    }

    fn trim_records(&mut self, name: &str, upto: u64) -> Result<(), StoreError> {
        self.record(Change::TrimRecords { name, upto })?;
        self.pending.trim_records(name, upto);
        Ok(())
    }

    fn remove_aux(&mut self, name: &str, table: AuxTable, key: &[u8]) -> Result<(), StoreError> {
        self.record(Change::RemoveAux {
            name,
            table: table.tag(),
            key,
        })?;
        self.pending.remove_aux(name, table.tag(), key);
        Ok(())
    }

    fn clear_data(&mut self, name: &str) -> Result<(), StoreError> {
        self.record(Change::ClearData { name })?;
        self.pending.clear_data(name);
        Ok(())
    }

    fn remove_stream(&mut self, name: &str) -> Result<(), StoreError> {
        self.record(Change::RemoveStream { name })?;
        self.pending.remove_stream(name);
        Ok(())
    }
}

/// Writes `delta` into the database file's tables, as a checkpoint does.
pub(super) fn write_delta(
    tables: &mut super::txn::WriteTables<'_>,
    delta: &Delta,
) -> Result<(), StoreError> {
    for (name, stream) in delta.streams() {
        if stream.cleared {
            tables.write(Change::ClearData { name })?;
        }
        if stream.trimmed > 0 {
            tables.write(Change::TrimRecords {
                name,
                upto: stream.trimmed,
            })?;
        }
        match &stream.state {
            Some(Some(state)) => {
                let value =
                    encode_state(state).map_err(|e| corrupt("encoding a stream state", e))?;
                tables.write(Change::PutState {
                    name,
                    value: &value,
                    expiring: state.swept(),
                })?;
            }
            Some(None) => tables.write(Change::RemoveStream { name })?,
            None => {}
        }
        tables.put_records(name, &stream.records)?;
        for (id, state) in &stream.producers {
            tables.write(Change::PutProducer {
                name,
                id,
                value: &encode_producer(*state),
            })?;
        }
        for ((table, key), value) in &stream.aux {
            let table = *table;
            tables.write(match value {
                Some(value) => Change::PutAux {
                    name,
                    table,
                    key,
                    value,
                },
                None => Change::RemoveAux { name, table, key },
            })?;
        }
    }
    Ok(())
}
