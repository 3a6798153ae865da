//! The transaction an operation of `mooring_core` runs on: what was read from Redis so far,
//! the writes the operation made (visible to its own later reads), and what it asked for that
//! had not been read yet.
//!
//! `LogView` is synchronous and Redis is not, so an operation is run speculatively: a read of
//! something not fetched yet is recorded as a miss and answered as if absent, the run goes on
//! to collect more misses, and its result is thrown away. The engine fetches the misses and
//! runs the operation again; a run with no miss is the real one. Operations are pure functions
//! of what they read, so the real run sees a consistent state once every read is fetched.

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use mooring_core::producer::ProducerState;
use mooring_core::store::{AuxEntries, AuxTable, LogTxn, LogView, StoreError};
use mooring_core::stream::{Record, StreamState};

/// A range read as the operation asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct RecordsQuery {
    pub(super) after: u64,
    pub(super) upto: u64,
    pub(super) max_bytes: usize,
}

/// What has been read of one stream. `None` (outer) means not read yet.
#[derive(Debug, Default)]
pub(super) struct Fetched {
    /// The version token every read of this stream saw (`Some(None)`: the stream is absent).
    pub(super) version: Option<Option<String>>,
    pub(super) state: Option<Option<StreamState>>,
    pub(super) producers: HashMap<String, Option<ProducerState>>,
    pub(super) aux: HashMap<(AuxTable, Vec<u8>), Option<Vec<u8>>>,
    pub(super) aux_all: HashMap<AuxTable, AuxEntries>,
    pub(super) records: HashMap<RecordsQuery, Vec<Record>>,
}

/// Everything read from Redis for one attempt of an operation.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    pub(super) streams: HashMap<String, Fetched>,
    /// Members of the expiring index.
    pub(super) expiring: Option<Vec<String>>,
}

/// A read the operation made that the snapshot could not answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Miss {
    State(String),
    Producer(String, String),
    Aux(String, AuxTable, Vec<u8>),
    AuxAll(String, AuxTable),
    Records(String, RecordsQuery),
    Expiring,
}

impl Miss {
    /// The stream the read belongs to.
    pub(super) fn stream(&self) -> Option<&str> {
        match self {
            Self::State(n)
            | Self::Producer(n, _)
            | Self::Aux(n, _, _)
            | Self::AuxAll(n, _)
            | Self::Records(n, _) => Some(n),
            Self::Expiring => None,
        }
    }
}

/// One write, in the order the operation made it.
#[derive(Clone, Debug)]
pub(super) enum Write {
    State(String, Box<StreamState>),
    Record(String, u64, Vec<Bytes>),
    Producer(String, String, ProducerState),
    Aux(String, AuxTable, Vec<u8>, Vec<u8>),
    RemoveAux(String, AuxTable, Vec<u8>),
    /// Records up to a serial go (retention).
    Trim(String, u64),
    /// Records, producers and side tables go; the state stays.
    Clear(String),
    /// The stream goes entirely.
    Remove(String),
}

impl Write {
    pub(super) fn stream(&self) -> &str {
        match self {
            Self::State(n, _)
            | Self::Record(n, _, _)
            | Self::Producer(n, _, _)
            | Self::Aux(n, _, _, _)
            | Self::RemoveAux(n, _, _)
            | Self::Trim(n, _)
            | Self::Clear(n)
            | Self::Remove(n) => n,
        }
    }
}

/// This run's writes to one stream, as its later reads must see them.
#[derive(Debug, Default)]
struct Pending {
    /// Stored data was cleared: reads see only what was written after.
    cleared: bool,
    state: Option<Option<StreamState>>,
    /// Records up to this serial were trimmed: reads see none of them.
    trimmed: u64,
    records: BTreeMap<u64, Vec<Bytes>>,
    producers: HashMap<String, ProducerState>,
    /// `None`: removed.
    aux: BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>,
}

/// One run of an operation over a snapshot.
#[derive(Debug)]
pub(super) struct Txn<'a> {
    snapshot: &'a Snapshot,
    pending: HashMap<String, Pending>,
    pub(super) writes: Vec<Write>,
    misses: Vec<Miss>,
    seen: HashSet<Miss>,
}

impl<'a> Txn<'a> {
    pub(super) fn new(snapshot: &'a Snapshot) -> Self {
        Self {
            snapshot,
            pending: HashMap::new(),
            writes: Vec::new(),
            misses: Vec::new(),
            seen: HashSet::new(),
        }
    }

    /// Reads the run needed and the snapshot lacked, each once, in the order asked.
    pub(super) fn into_misses(self) -> Vec<Miss> {
        self.misses
    }

    pub(super) fn has_misses(&self) -> bool {
        !self.misses.is_empty()
    }

    /// The state of `name` in the snapshot, before this run's writes (`None`: not read).
    pub(super) fn original_state(&self, name: &str) -> Option<&Option<StreamState>> {
        self.snapshot.streams.get(name)?.state.as_ref()
    }

    /// The state of `name` after this run's writes, if the run wrote it.
    pub(super) fn written_state(&self, name: &str) -> Option<&Option<StreamState>> {
        self.pending.get(name)?.state.as_ref()
    }

    fn miss(&mut self, miss: Miss) {
        if self.seen.insert(miss.clone()) {
            self.misses.push(miss);
        }
    }

    fn fetched(&self, name: &str) -> Option<&'a Fetched> {
        self.snapshot.streams.get(name)
    }

    fn pending(&mut self, name: &str) -> &mut Pending {
        self.pending.entry(name.to_owned()).or_default()
    }

    fn cleared(&self, name: &str) -> bool {
        self.pending.get(name).is_some_and(|p| p.cleared)
    }

    /// Stored records in range, unless the run cleared them; `None` on a miss.
    fn stored_records(&mut self, name: &str, query: RecordsQuery) -> Option<Vec<Record>> {
        if self.cleared(name) {
            return Some(Vec::new());
        }
        match self.fetched(name).and_then(|f| f.records.get(&query)) {
            Some(records) => Some(records.clone()),
            None => {
                self.miss(Miss::Records(name.to_owned(), query));
                None
            }
        }
    }
}

impl LogView for Txn<'_> {
    fn state(&mut self, name: &str) -> Result<Option<StreamState>, StoreError> {
        if let Some(state) = self.pending.get(name).and_then(|p| p.state.clone()) {
            return Ok(state);
        }
        match self.fetched(name).and_then(|f| f.state.clone()) {
            Some(state) => Ok(state),
            None => {
                self.miss(Miss::State(name.to_owned()));
                Ok(None)
            }
        }
    }

    fn records(
        &mut self,
        name: &str,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let after = self
            .pending
            .get(name)
            .map_or(after, |p| after.max(p.trimmed));
        let written = self
            .pending
            .get(name)
            .is_some_and(|p| p.cleared || p.records.range(after + 1..).next().is_some());
        if !written {
            let query = RecordsQuery {
                after,
                upto,
                max_bytes,
            };
            return Ok(self.stored_records(name, query).unwrap_or_default());
        }
        // The run wrote into this range: merge its records over everything stored in it.
        let whole = RecordsQuery {
            after,
            upto,
            max_bytes: usize::MAX,
        };
        let mut merged: BTreeMap<u64, Vec<Bytes>> = self
            .stored_records(name, whole)
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r.serial, r.items))
            .collect();
        if let Some(p) = self.pending.get(name) {
            for (serial, items) in p.records.range(after + 1..=upto) {
                merged.insert(*serial, items.clone());
            }
        }
        let mut out = Vec::new();
        let mut bytes = 0;
        for (serial, items) in merged {
            if !out.is_empty() && bytes >= max_bytes {
                break;
            }
            let record = Record { serial, items };
            bytes += record.byte_len();
            out.push(record);
        }
        Ok(out)
    }

    fn producer(&mut self, name: &str, id: &str) -> Result<Option<ProducerState>, StoreError> {
        if let Some(p) = self.pending.get(name) {
            if let Some(state) = p.producers.get(id) {
                return Ok(Some(*state));
            }
            if p.cleared {
                return Ok(None);
            }
        }
        match self.fetched(name).and_then(|f| f.producers.get(id)) {
            Some(state) => Ok(*state),
            None => {
                self.miss(Miss::Producer(name.to_owned(), id.to_owned()));
                Ok(None)
            }
        }
    }

    fn expiring_streams(&mut self) -> Result<Vec<(String, StreamState)>, StoreError> {
        let mut names: Vec<String> = match &self.snapshot.expiring {
            Some(names) => names.clone(),
            None => {
                self.miss(Miss::Expiring);
                Vec::new()
            }
        };
        names.extend(self.pending.keys().cloned());
        names.sort_unstable();
        names.dedup();
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
        if let Some(p) = self.pending.get(name) {
            if let Some(value) = p.aux.get(&(table.tag(), key.to_vec())) {
                return Ok(value.clone());
            }
            if p.cleared {
                return Ok(None);
            }
        }
        match self
            .fetched(name)
            .and_then(|f| f.aux.get(&(table, key.to_vec())))
        {
            Some(value) => Ok(value.clone()),
            None => {
                self.miss(Miss::Aux(name.to_owned(), table, key.to_vec()));
                Ok(None)
            }
        }
    }

    fn aux_all(&mut self, name: &str, table: AuxTable) -> Result<AuxEntries, StoreError> {
        let stored = if self.cleared(name) {
            Vec::new()
        } else {
            match self.fetched(name).and_then(|f| f.aux_all.get(&table)) {
                Some(entries) => entries.clone(),
                None => {
                    self.miss(Miss::AuxAll(name.to_owned(), table));
                    Vec::new()
                }
            }
        };
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        if let Some(p) = self.pending.get(name) {
            for ((tag, key), value) in &p.aux {
                if *tag != table.tag() {
                    continue;
                }
                match value {
                    Some(value) => merged.insert(key.clone(), value.clone()),
                    None => merged.remove(key),
                };
            }
        }
        Ok(merged.into_iter().collect())
    }
}

impl LogTxn for Txn<'_> {
    fn put_state(&mut self, name: &str, state: &StreamState) -> Result<(), StoreError> {
        self.pending(name).state = Some(Some(state.clone()));
        self.writes
            .push(Write::State(name.to_owned(), Box::new(state.clone())));
        Ok(())
    }

    fn put_record(&mut self, name: &str, serial: u64, items: &[Bytes]) -> Result<(), StoreError> {
        self.pending(name).records.insert(serial, items.to_vec());
        self.writes
            .push(Write::Record(name.to_owned(), serial, items.to_vec()));
        Ok(())
    }

    fn put_producer(
        &mut self,
        name: &str,
        id: &str,
        state: ProducerState,
    ) -> Result<(), StoreError> {
        self.pending(name).producers.insert(id.to_owned(), state);
        self.writes
            .push(Write::Producer(name.to_owned(), id.to_owned(), state));
        Ok(())
    }

    fn put_aux(
        &mut self,
        name: &str,
        table: AuxTable,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.pending(name)
            .aux
            .insert((table.tag(), key.to_vec()), Some(value.to_vec()));
        self.writes.push(Write::Aux(
            name.to_owned(),
            table,
            key.to_vec(),
            value.to_vec(),
        ));
        Ok(())
    }

    fn trim_records(&mut self, name: &str, upto: u64) -> Result<(), StoreError> {
        let p = self.pending(name);
        p.trimmed = p.trimmed.max(upto);
        p.records = p.records.split_off(&upto.saturating_add(1));
        self.writes.push(Write::Trim(name.to_owned(), upto));
        Ok(())
    }

    fn remove_aux(&mut self, name: &str, table: AuxTable, key: &[u8]) -> Result<(), StoreError> {
        self.pending(name)
            .aux
            .insert((table.tag(), key.to_vec()), None);
        self.writes
            .push(Write::RemoveAux(name.to_owned(), table, key.to_vec()));
        Ok(())
    }

    fn clear_data(&mut self, name: &str) -> Result<(), StoreError> {
        let p = self.pending(name);
        p.cleared = true;
        p.trimmed = 0;
        p.records.clear();
        p.producers.clear();
        p.aux.clear();
        self.writes.push(Write::Clear(name.to_owned()));
        Ok(())
    }

    fn remove_stream(&mut self, name: &str) -> Result<(), StoreError> {
        let p = self.pending(name);
        p.cleared = true;
        p.trimmed = 0;
        p.state = Some(None);
        p.records.clear();
        p.producers.clear();
        p.aux.clear();
        self.writes.push(Write::Remove(name.to_owned()));
        Ok(())
    }
}
