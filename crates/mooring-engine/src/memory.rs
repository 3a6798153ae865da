//! The memory engine: every stream in plain maps behind one mutex.
//!
//! It is the oracle of the conformance suite and the engine of `--engine memory`. Durability is
//! the process's lifetime: nothing survives a restart, which `--engine memory` says at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use mooring_core::access::AccessTracker;
use mooring_core::append::{AppendError, AppendOutcome, AppendRequest};
use mooring_core::clock::Clock;
use mooring_core::create::{CreateError, CreateOutcome, CreateRequest};
use mooring_core::ops::{self, Now};
use mooring_core::producer::ProducerState;
use mooring_core::publish::{self, SessionSnapshot};
use mooring_core::read::{HeadError, ReadBatch, ReadError};
use mooring_core::session::{PublishError, PublishGroup, PublishOutcome, PublishRules};
use mooring_core::store::{
    AuxEntries, AuxTable, DeleteError, LogStore, LogTxn, LogView, NoticeFeed, StoreError,
};
use mooring_core::stream::{Record, StreamInfo, StreamState};
use mooring_core::{Position, ReadFrom};

#[derive(Debug, Default, Clone)]
struct Tables {
    states: HashMap<String, StreamState>,
    records: HashMap<String, BTreeMap<u64, Vec<Bytes>>>,
    producers: HashMap<String, HashMap<String, ProducerState>>,
    aux: HashMap<(String, AuxTable), BTreeMap<Vec<u8>, Vec<u8>>>,
}

/// Streams held in memory.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    tables: Arc<Mutex<Tables>>,
    access: Arc<AccessTracker>,
    clock: Arc<dyn Clock>,
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            tables: Arc::default(),
            access: Arc::new(AccessTracker::new(clock.now_ms())),
            clock,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        self.tables
            .lock()
            .map_err(|_| StoreError::Poisoned("memory engine lock poisoned by a panic".into()))
    }

    fn now(&self) -> Now<'_> {
        Now {
            ms: self.clock.now_ms(),
            access: &self.access,
        }
    }

    /// Runs a write operation on a copy-free transaction: the operations validate before they
    /// write, so a refusal leaves the tables as they were.
    fn write<T, E: From<StoreError>>(
        &self,
        op: impl FnOnce(&mut Tables) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut tables = self.lock()?;
        op(&mut tables)
    }
}

impl LogView for Tables {
    fn state(&mut self, name: &str) -> Result<Option<StreamState>, StoreError> {
        Ok(self.states.get(name).cloned())
    }

    fn records(
        &mut self,
        name: &str,
        after: u64,
        upto: u64,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let Some(log) = self.records.get(name) else {
            return Ok(out);
        };
        for (serial, items) in log.range(after.saturating_add(1)..=upto) {
            if !out.is_empty() && bytes >= max_bytes {
                break;
            }
            let record = Record {
                serial: *serial,
                items: items.clone(),
            };
            bytes += record.byte_len();
            out.push(record);
        }
        Ok(out)
    }

    fn producer(&mut self, name: &str, id: &str) -> Result<Option<ProducerState>, StoreError> {
        Ok(self.producers.get(name).and_then(|p| p.get(id)).copied())
    }

    fn expiring_streams(&mut self) -> Result<Vec<(String, StreamState)>, StoreError> {
        Ok(self
            .states
            .iter()
            .filter(|(_, s)| s.swept())
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect())
    }

    fn aux(
        &mut self,
        name: &str,
        table: AuxTable,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .aux
            .get(&(name.to_owned(), table))
            .and_then(|t| t.get(key))
            .cloned())
    }

    fn aux_all(&mut self, name: &str, table: AuxTable) -> Result<AuxEntries, StoreError> {
        Ok(self
            .aux
            .get(&(name.to_owned(), table))
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }
}

impl LogTxn for Tables {
    fn put_state(&mut self, name: &str, state: &StreamState) -> Result<(), StoreError> {
        self.states.insert(name.to_owned(), state.clone());
        Ok(())
    }

    fn put_record(&mut self, name: &str, serial: u64, items: &[Bytes]) -> Result<(), StoreError> {
        self.records
            .entry(name.to_owned())
            .or_default()
            .insert(serial, items.to_vec());
        Ok(())
    }

    fn put_producer(
        &mut self,
        name: &str,
        id: &str,
        state: ProducerState,
    ) -> Result<(), StoreError> {
        self.producers
            .entry(name.to_owned())
            .or_default()
            .insert(id.to_owned(), state);
        Ok(())
    }

    fn put_aux(
        &mut self,
        name: &str,
        table: AuxTable,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError> {
        self.aux
            .entry((name.to_owned(), table))
            .or_default()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn trim_records(&mut self, name: &str, upto: u64) -> Result<(), StoreError> {
        if let Some(records) = self.records.get_mut(name) {
            *records = records.split_off(&upto.saturating_add(1));
        }
        Ok(())
    }

    fn remove_aux(&mut self, name: &str, table: AuxTable, key: &[u8]) -> Result<(), StoreError> {
        if let Some(entries) = self.aux.get_mut(&(name.to_owned(), table)) {
            entries.remove(key);
        }
        Ok(())
    }

    fn clear_data(&mut self, name: &str) -> Result<(), StoreError> {
        self.records.remove(name);
        self.producers.remove(name);
        self.aux.retain(|(stream, _), _| stream != name);
        Ok(())
    }

    fn remove_stream(&mut self, name: &str) -> Result<(), StoreError> {
        self.clear_data(name)?;
        self.states.remove(name);
        Ok(())
    }
}

#[async_trait]
impl LogStore for MemoryStore {
    async fn create(&self, name: &str, req: CreateRequest) -> Result<CreateOutcome, CreateError> {
        let now = self.now();
        self.write(|t| ops::create(t, name, &req, now))
    }

    async fn append(&self, name: &str, req: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let now = self.now();
        self.write(|t| ops::append(t, name, &req, now))
    }

    async fn read(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadBatch, ReadError> {
        let now = self.now();
        ops::read(&mut *self.lock()?, name, from, max_bytes, now)
    }

    async fn head(&self, name: &str) -> Result<StreamInfo, HeadError> {
        let now = self.now();
        ops::head(&mut *self.lock()?, name, now)
    }

    async fn renew_life(&self, name: &str, epoch: u64) -> Result<Position, HeadError> {
        let now = self.now();
        self.write(|t| ops::renew_life(t, name, epoch, now))
    }

    async fn delete(&self, name: &str) -> Result<(), DeleteError> {
        let now = self.now();
        self.write(|t| ops::delete(t, name, now))
    }

    async fn publish(
        &self,
        name: &str,
        groups: Vec<PublishGroup>,
        rules: PublishRules,
    ) -> Result<Vec<Result<PublishOutcome, PublishError>>, StoreError> {
        let now = self.now();
        self.write(|t| publish::publish(t, name, &groups, now, rules))
    }

    async fn snapshot(&self, name: &str) -> Result<Option<SessionSnapshot>, ReadError> {
        let now = self.now();
        publish::snapshot(&mut *self.lock()?, name, now)
    }

    async fn sweep_expired(&self) -> Result<usize, StoreError> {
        let now = self.now();
        self.write(|t| ops::sweep_expired(t, now))
    }

    async fn notices(&self) -> Result<Option<Box<dyn NoticeFeed>>, StoreError> {
        // The data lives in this process: only its own writers move it.
        Ok(None)
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mooring_core::clock::ManualClock;

    #[tokio::test]
    async fn passes_the_engine_conformance_suite() {
        crate::conformance::run_all(|clock: ManualClock| async move {
            MemoryStore::new(Arc::new(clock))
        })
        .await;
    }
}
