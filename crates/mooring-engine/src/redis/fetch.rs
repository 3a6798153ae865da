//! Reads what a speculative run missed, stream by stream.
//!
//! Each stream's reads go in one call of `read.lua` together with its version token, so they
//! come from one instant of that stream. A stream read in several round trips must show the same
//! token each time; if it changed in between, the snapshot mixes two states and the attempt
//! starts over.

use std::collections::BTreeMap;

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::SetsInterface;
use fred::types::scripts::Script;
use fred::types::Value;
use mooring_core::store::{AuxEntries, AuxTable, StoreError};
use mooring_core::stream::Record;

use super::codec::{decode_producer, decode_record, decode_state};
use super::commit::life;
use super::keys;
use super::redis_error;
use super::view::{Fetched, Miss, RecordsQuery, Snapshot};

/// Records asked for per `XRANGE` at first; doubled per page up to [`MAX_PAGE`].
const FIRST_PAGE: u64 = 64;
const MAX_PAGE: u64 = 4096;

/// Whether the snapshot is still one consistent view after a fetch.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Fetch {
    Consistent,
    /// A stream changed between two reads of it: start the attempt over.
    Changed,
}

/// The read script, loaded once per Redis and called by its hash.
pub(super) const READ_SCRIPT: &str = include_str!("read.lua");

/// Fetches `misses` into `snapshot`; `read` is [`READ_SCRIPT`].
pub(super) async fn fetch(
    client: &Client,
    read: &Script,
    snapshot: &mut Snapshot,
    misses: Vec<Miss>,
) -> Result<Fetch, StoreError> {
    let mut by_stream: BTreeMap<String, Vec<Miss>> = BTreeMap::new();
    for miss in misses {
        match miss.stream() {
            Some(name) => by_stream.entry(name.to_owned()).or_default().push(miss),
            None => {
                let names: Vec<String> = client
                    .smembers(keys::EXPIRING)
                    .await
                    .map_err(|e| redis_error("reading the expiring index", e))?;
                snapshot.expiring = Some(names);
            }
        }
    }
    for (name, misses) in by_stream {
        let fetched = snapshot.streams.entry(name.clone()).or_default();
        if fetch_stream(client, read, &name, fetched, &misses).await? == Fetch::Changed {
            return Ok(Fetch::Changed);
        }
    }
    Ok(Fetch::Consistent)
}

/// Records the version a read saw; false if an earlier read of the stream saw another.
fn same_version(fetched: &mut Fetched, seen: Value) -> Result<bool, StoreError> {
    let seen = text(seen, "a version token")?;
    match &fetched.version {
        None => {
            fetched.version = Some(seen);
            Ok(true)
        }
        Some(known) => Ok(*known == seen),
    }
}

/// Like [`same_version`], but for records, which only ever grow within one life: records up
/// to a tail read earlier are still the same after later appends. Without this, a reader of
/// a stream written faster than two round trips would start over forever.
fn same_life(fetched: &mut Fetched, seen: Value) -> Result<bool, StoreError> {
    let seen = text(seen, "a version token")?;
    match &fetched.version {
        None => {
            fetched.version = Some(seen);
            Ok(true)
        }
        Some(known) => Ok(known.as_deref().map(life) == seen.as_deref().map(life)),
    }
}

async fn fetch_stream(
    client: &Client,
    read: &Script,
    name: &str,
    fetched: &mut Fetched,
    misses: &[Miss],
) -> Result<Fetch, StoreError> {
    let what = |e| redis_error(&format!("reading stream {name:?}"), e);
    let mut reads = Reads::new(name);
    let mut asked = Vec::new();
    for miss in misses {
        match miss {
            Miss::State(_) => reads.push(keys::state(name), "get", []),
            Miss::Producer(_, id) => {
                reads.push(keys::producers(name), "hget", [Value::from(id.as_str())]);
            }
            Miss::Aux(_, table, key) => {
                let field = Value::Bytes(Bytes::copy_from_slice(key));
                reads.push(keys::aux(name, *table), "hget", [field]);
            }
            Miss::AuxAll(_, table) => reads.push(keys::aux(name, *table), "hgetall", []),
            // Paged separately below.
            Miss::Records(..) | Miss::Expiring => continue,
        }
        asked.push(miss);
    }
    if !asked.is_empty() || fetched.version.is_none() {
        let mut results = reads.send(client, read).await.map_err(what)?;
        if results.len() != asked.len() + 1 {
            return Err(StoreError::Io(format!(
                "reading stream {name:?}: {} replies to {} commands",
                results.len(),
                asked.len() + 1
            )));
        }
        let answers = results.split_off(1);
        let version = results.pop().unwrap_or(Value::Null);
        if !same_version(fetched, version)? {
            return Ok(Fetch::Changed);
        }
        for (miss, value) in asked.into_iter().zip(answers) {
            store_answer(fetched, name, miss, value)?;
        }
    }
    for miss in misses {
        if let Miss::Records(_, query) = miss {
            match read_records(client, read, name, fetched, *query).await? {
                Some(records) => {
                    fetched.records.insert(*query, records);
                }
                None => return Ok(Fetch::Changed),
            }
        }
    }
    Ok(Fetch::Consistent)
}

fn store_answer(
    fetched: &mut Fetched,
    name: &str,
    miss: &Miss,
    value: Value,
) -> Result<(), StoreError> {
    match miss {
        Miss::State(_) => {
            let state = bytes(value, "a stream state")?;
            fetched.state = Some(state.as_deref().map(decode_state).transpose()?);
        }
        Miss::Producer(_, id) => {
            let state = bytes(value, "a producer state")?;
            let state = state.as_deref().map(decode_producer).transpose()?;
            fetched.producers.insert(id.clone(), state);
        }
        Miss::Aux(_, table, key) => {
            let value = bytes(value, "a side-table value")?.map(|b| b.to_vec());
            fetched.aux.insert((*table, key.clone()), value);
        }
        Miss::AuxAll(_, table) => {
            fetched
                .aux_all
                .insert(*table, entries(value, name, *table)?);
        }
        Miss::Records(..) | Miss::Expiring => {}
    }
    Ok(())
}

/// Reads records as `LogView::records` defines them, in pages; `None` if the stream changed
/// between pages.
async fn read_records(
    client: &Client,
    read: &Script,
    name: &str,
    fetched: &mut Fetched,
    query: RecordsQuery,
) -> Result<Option<Vec<Record>>, StoreError> {
    let what = |e| redis_error(&format!("reading records of {name:?}"), e);
    let mut out: Vec<Record> = Vec::new();
    let mut bytes = 0usize;
    let mut after = query.after;
    let mut page = FIRST_PAGE;
    while after < query.upto {
        let count = page.min(query.upto - after);
        let mut reads = Reads::new(name);
        let range = [
            Value::from(format!("{}-0", after + 1)),
            Value::from(format!("{}-0", query.upto)),
            Value::from(count as i64),
        ];
        reads.push(keys::records(name), "xrange", range);
        let mut replies = reads.send(client, read).await.map_err(what)?.into_iter();
        let (Some(version), Some(entries)) = (replies.next(), replies.next()) else {
            return Err(StoreError::Io(format!(
                "reading records of {name:?}: a short reply"
            )));
        };
        if !same_life(fetched, version)? {
            return Ok(None);
        }
        let entries = stream_entries(entries, name)?;
        let Some(last) = entries.last().map(|r| r.serial) else {
            break;
        };
        for record in entries {
            if !out.is_empty() && bytes >= query.max_bytes {
                return Ok(Some(out));
            }
            bytes += record.byte_len();
            out.push(record);
        }
        after = last;
        page = (page * 2).min(MAX_PAGE);
    }
    Ok(Some(out))
}

/// One call of `read.lua`: the stream's version, then each read with its arguments.
struct Reads {
    keys: Vec<String>,
    args: Vec<Value>,
}

impl Reads {
    fn new(name: &str) -> Self {
        Self {
            keys: vec![keys::version(name)],
            args: Vec::new(),
        }
    }

    /// Adds `op` of `key` with up to three arguments (the script takes four values per read).
    fn push<const N: usize>(&mut self, key: String, op: &str, given: [Value; N]) {
        self.keys.push(key);
        self.args.push(Value::from(op));
        let mut given = given.into_iter();
        for _ in 0..3 {
            self.args
                .push(given.next().unwrap_or_else(|| Value::from("")));
        }
    }

    async fn send(self, client: &Client, read: &Script) -> Result<Vec<Value>, fred::error::Error> {
        read.evalsha_with_reload(client, self.keys, self.args).await
    }
}

fn corrupt(what: &str, value: &Value) -> StoreError {
    StoreError::Corrupt(format!("{what}: unexpected reply {:?}", value.kind()))
}

fn bytes(value: Value, what: &str) -> Result<Option<Bytes>, StoreError> {
    match value {
        Value::Null => Ok(None),
        Value::Bytes(b) => Ok(Some(b)),
        Value::String(s) => Ok(Some(s.inner().clone())),
        other => Err(corrupt(what, &other)),
    }
}

fn text(value: Value, what: &str) -> Result<Option<String>, StoreError> {
    match bytes(value, what)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{what}: {e}"))),
    }
}

/// `HGETALL` as key order pairs (a flat array in RESP2, a map in RESP3).
fn entries(value: Value, name: &str, table: AuxTable) -> Result<AuxEntries, StoreError> {
    let what = format!("side table {} of {name:?}", table.tag());
    let mut out = BTreeMap::new();
    match value {
        Value::Null => {}
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                let k = bytes(k, &what)?.unwrap_or_default();
                let v = bytes(v, &what)?.unwrap_or_default();
                out.insert(k.to_vec(), v.to_vec());
            }
        }
        Value::Map(map) => {
            for (k, v) in map.inner() {
                let v = bytes(v, &what)?.unwrap_or_default();
                out.insert(k.as_bytes().to_vec(), v.to_vec());
            }
        }
        other => return Err(corrupt(&what, &other)),
    }
    Ok(out.into_iter().collect())
}

/// `XRANGE` entries `[id, [field, value]]` as records; the id's first part is the serial.
fn stream_entries(value: Value, name: &str) -> Result<Vec<Record>, StoreError> {
    let what = format!("records of {name:?}");
    let Value::Array(entries) = value else {
        return match value {
            Value::Null => Ok(Vec::new()),
            other => Err(corrupt(&what, &other)),
        };
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else {
            return Err(corrupt(&what, &entry));
        };
        let mut parts = parts.into_iter();
        let (Some(id), Some(Value::Array(fields))) = (parts.next(), parts.next()) else {
            return Err(StoreError::Corrupt(format!("{what}: a malformed entry")));
        };
        let id = text(id, &what)?.unwrap_or_default();
        let serial = id
            .split_once('-')
            .and_then(|(s, _)| s.parse::<u64>().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("{what}: entry id {id:?}")))?;
        let body = fields
            .into_iter()
            .nth(1)
            .map(|v| bytes(v, &what))
            .transpose()?
            .flatten()
            .ok_or_else(|| StoreError::Corrupt(format!("{what}: entry {id} has no record")))?;
        out.push(Record {
            serial,
            items: decode_record(&body)?,
        });
    }
    Ok(out)
}
