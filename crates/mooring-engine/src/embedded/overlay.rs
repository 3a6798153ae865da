//! Changes that are durable in the write-ahead log but not yet in the database file.
//!
//! A batch's changes go to the log with one sync and then into the [`Delta`] kept in memory;
//! readers see the database file through it. A checkpoint writes the whole delta into the file
//! in one durable commit and empties it. So the file is written in large commits, a few times a
//! second under load, instead of once per batch.
//!
//! A delta holds, per stream, what was set since the last checkpoint, and whether the stream's
//! data was cleared (a delete or a fork's cleanup): a cleared stream's records, producers and
//! side tables in the layers below are gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use mooring_core::producer::ProducerState;
use mooring_core::stream::{Record, StreamState};

/// What readers see above the database file: the changes gathered since the last checkpoint
/// began (`active`), over those a running checkpoint is writing into the file (`frozen`).
#[derive(Debug, Default)]
pub(super) struct Layers {
    pub(super) active: Delta,
    pub(super) frozen: Option<Arc<Delta>>,
}

impl Layers {
    /// What each layer holds about `name`, top first.
    pub(super) fn stream(&self, name: &str) -> [Option<&StreamDelta>; 2] {
        [
            self.active.stream(name),
            self.frozen.as_deref().and_then(|d| d.stream(name)),
        ]
    }

    /// Every stream either layer holds something about.
    pub(super) fn names(&self) -> impl Iterator<Item = &String> {
        self.active
            .streams()
            .chain(self.frozen.iter().flat_map(|d| d.streams()))
            .map(|(name, _)| name)
    }
}

/// Changes to the tables, per stream.
#[derive(Debug, Default)]
pub(super) struct Delta {
    streams: HashMap<String, StreamDelta>,
    /// Roughly the bytes held, to bound the memory between checkpoints.
    bytes: usize,
}

/// Changes to one stream.
#[derive(Debug, Default, Clone)]
pub(super) struct StreamDelta {
    /// `Some(None)`: removed; `Some(Some(_))`: set; `None`: untouched.
    pub(super) state: Option<Option<StreamState>>,
    /// The layers below hold none of this stream's records, producers or side tables.
    pub(super) cleared: bool,
    /// Records up to this serial are gone, in this layer and those below (retention).
    pub(super) trimmed: u64,
    pub(super) records: BTreeMap<u64, Vec<Bytes>>,
    pub(super) producers: HashMap<String, ProducerState>,
    /// `None`: the entry was removed.
    pub(super) aux: BTreeMap<(u8, Vec<u8>), Option<Vec<u8>>>,
}

/// What a layer knows about one lookup.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found<T> {
    /// The layer holds the answer.
    Here(T),
    /// The layer knows the answer is "nothing" (removed or cleared).
    Gone,
    /// Ask the layer below.
    Below,
}

/// A state's share of the byte budget: small, and JSON-sized.
const STATE_BYTES: usize = 128;

impl Delta {
    pub(super) fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn stream(&self, name: &str) -> Option<&StreamDelta> {
        self.streams.get(name)
    }

    pub(super) fn streams(&self) -> impl Iterator<Item = (&String, &StreamDelta)> {
        self.streams.iter()
    }

    fn entry(&mut self, name: &str) -> &mut StreamDelta {
        if !self.streams.contains_key(name) {
            self.bytes += name.len() + STATE_BYTES;
        }
        self.streams.entry(name.to_owned()).or_default()
    }

    pub(super) fn put_state(&mut self, name: &str, state: StreamState) {
        self.entry(name).state = Some(Some(state));
    }

    pub(super) fn put_record(&mut self, name: &str, serial: u64, items: Vec<Bytes>) {
        self.bytes += 16 + items.iter().map(Bytes::len).sum::<usize>();
        self.entry(name).records.insert(serial, items);
    }

    pub(super) fn put_producer(&mut self, name: &str, id: &str, state: ProducerState) {
        self.bytes += 32 + id.len();
        self.entry(name).producers.insert(id.to_owned(), state);
    }

    pub(super) fn put_aux(&mut self, name: &str, table: u8, key: &[u8], value: &[u8]) {
        self.bytes += 16 + key.len() + value.len();
        self.entry(name)
            .aux
            .insert((table, key.to_vec()), Some(value.to_vec()));
    }

    pub(super) fn remove_aux(&mut self, name: &str, table: u8, key: &[u8]) {
        self.bytes += 16 + key.len();
        self.entry(name).aux.insert((table, key.to_vec()), None);
    }

    pub(super) fn trim_records(&mut self, name: &str, upto: u64) {
        self.entry(name).trim(upto);
    }

    pub(super) fn clear_data(&mut self, name: &str) {
        self.entry(name).clear();
    }

    pub(super) fn remove_stream(&mut self, name: &str) {
        self.clear_data(name);
        self.entry(name).state = Some(None);
    }

    /// Lays `newer` over this delta: afterwards this one answers as `newer` over it did.
    pub(super) fn absorb(&mut self, newer: Delta) {
        self.bytes += newer.bytes;
        for (name, change) in newer.streams {
            let stream = self.streams.entry(name).or_default();
            if change.cleared {
                stream.clear();
            }
            stream.trim(change.trimmed);
            if change.state.is_some() {
                stream.state = change.state;
            }
            stream.records.extend(change.records);
            stream.producers.extend(change.producers);
            stream.aux.extend(change.aux);
        }
    }

    pub(super) fn clear(&mut self) {
        self.streams.clear();
        self.bytes = 0;
    }
}

impl StreamDelta {
    fn clear(&mut self) {
        self.cleared = true;
        // Clearing covers any trim before it.
        self.trimmed = 0;
        self.records.clear();
        self.producers.clear();
        self.aux.clear();
    }

    fn trim(&mut self, upto: u64) {
        if upto > self.trimmed {
            self.trimmed = upto;
            self.records = self.records.split_off(&(upto + 1));
        }
    }

    pub(super) fn state(&self) -> Found<StreamState> {
        match &self.state {
            Some(Some(state)) => Found::Here(state.clone()),
            Some(None) => Found::Gone,
            None => Found::Below,
        }
    }

    pub(super) fn producer(&self, id: &str) -> Found<ProducerState> {
        match self.producers.get(id) {
            Some(state) => Found::Here(*state),
            None if self.cleared => Found::Gone,
            None => Found::Below,
        }
    }

    pub(super) fn aux(&self, table: u8, key: &[u8]) -> Found<Vec<u8>> {
        // Side-table keys are looked up by value; the map is keyed by owned bytes.
        match self.aux.get(&(table, key.to_vec())) {
            Some(Some(value)) => Found::Here(value.clone()),
            Some(None) => Found::Gone,
            None if self.cleared => Found::Gone,
            None => Found::Below,
        }
    }

    /// The side-table entries of `table` this layer set (`Some`) or removed (`None`), in key
    /// order.
    pub(super) fn aux_of(&self, table: u8) -> impl Iterator<Item = (&Vec<u8>, &Option<Vec<u8>>)> {
        self.aux
            .range((table, Vec::new())..)
            .take_while(move |((t, _), _)| *t == table)
            .map(|((_, key), value)| (key, value))
    }

    /// Records with serials in `(after, upto]`, in order.
    pub(super) fn records_in(&self, after: u64, upto: u64) -> impl Iterator<Item = Record> + '_ {
        let range = if after < upto {
            self.records.range(after + 1..=upto)
        } else {
            self.records.range(1..1)
        };
        range.map(|(serial, items)| Record {
            serial: *serial,
            items: items.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(text: &str) -> Vec<Bytes> {
        vec![Bytes::copy_from_slice(text.as_bytes())]
    }

    #[test]
    fn a_newer_delta_overrides_and_clears() {
        let mut older = Delta::default();
        older.put_record("s", 1, items("a"));
        older.put_record("s", 2, items("b"));
        older.put_aux("s", 1, b"k", b"v");
        older.put_producer(
            "s",
            "p",
            ProducerState {
                epoch: 0,
                last_seq: 3,
            },
        );
        let mut newer = Delta::default();
        newer.put_record("s", 3, items("c"));
        older.absorb(newer);
        let s = older.stream("s").expect("stream");
        assert_eq!(
            s.records_in(0, 10).map(|r| r.serial).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(s.aux(1, b"k"), Found::Here(b"v".to_vec()));
        assert_eq!(s.aux(1, b"x"), Found::Below);

        let mut removal = Delta::default();
        removal.remove_stream("s");
        older.absorb(removal);
        let s = older.stream("s").expect("stream");
        assert_eq!(s.records_in(0, 10).count(), 0);
        assert_eq!(s.state(), Found::Gone);
        assert_eq!(
            s.aux(1, b"k"),
            Found::Gone,
            "cleared hides the layers below"
        );
        assert_eq!(s.producer("p"), Found::Gone);
    }

    #[test]
    fn side_tables_are_listed_per_table_in_key_order() {
        let mut delta = Delta::default();
        delta.put_aux("s", 2, b"b", b"2");
        delta.put_aux("s", 1, b"z", b"0");
        delta.put_aux("s", 2, b"a", b"1");
        delta.put_aux("s", 3, b"a", b"3");
        let s = delta.stream("s").expect("stream");
        let listed: Vec<_> = s.aux_of(2).map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(
            listed,
            [
                (b"a".to_vec(), Some(b"1".to_vec())),
                (b"b".to_vec(), Some(b"2".to_vec()))
            ]
        );
    }

    #[test]
    fn trims_and_removals_hide_what_is_below() {
        let mut older = Delta::default();
        for serial in 1..=4 {
            older.put_record("s", serial, items("x"));
        }
        older.put_aux("s", 1, b"k", b"v");
        let mut newer = Delta::default();
        newer.trim_records("s", 2);
        newer.remove_aux("s", 1, b"k");
        assert_eq!(newer.stream("s").expect("stream").aux(1, b"k"), Found::Gone);
        older.absorb(newer);
        let s = older.stream("s").expect("stream");
        assert_eq!(s.trimmed, 2);
        assert_eq!(
            s.records_in(0, 10).map(|r| r.serial).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(s.aux(1, b"k"), Found::Gone);

        let mut removal = Delta::default();
        removal.remove_stream("s");
        older.absorb(removal);
        assert_eq!(
            older.stream("s").expect("stream").trimmed,
            0,
            "a clear covers the trim"
        );
    }

    #[test]
    fn bytes_grow_with_what_is_held_and_clear_resets() {
        let mut delta = Delta::default();
        assert!(delta.is_empty());
        delta.put_record("s", 1, items(&"x".repeat(1000)));
        assert!(delta.bytes() >= 1000);
        delta.clear();
        assert_eq!(delta.bytes(), 0);
        assert!(delta.is_empty());
    }
}
