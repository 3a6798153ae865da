//! Turns a run's writes into one call of the commit script (`commit.lua`): a compare-and-set
//! on the version tokens of every stream the run read, then the writes, atomically.

use std::collections::HashMap;

use bytes::Bytes;
use fred::types::Value;
use mooring_core::store::StoreError;
use mooring_core::stream::StreamState;

use super::codec::{encode_producer, encode_record, encode_state};
use super::view::{Snapshot, Txn, Write};
use super::{keys, notices};

/// The commit script, loaded once per Redis and called by its hash.
pub(super) const SCRIPT: &str = include_str!("commit.lua");

/// What the script answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Applied,
    /// This very commit was applied by an earlier send of the command (the connection broke
    /// before its answer): applied, but not by this send.
    AppliedBefore,
    /// A stream the run read changed since: nothing was written.
    Changed,
}

impl Verdict {
    pub(super) fn from_reply(reply: i64) -> Result<Self, StoreError> {
        match reply {
            1 => Ok(Self::Applied),
            2 => Ok(Self::AppliedBefore),
            0 => Ok(Self::Changed),
            other => Err(StoreError::Io(format!(
                "the commit script answered {other}"
            ))),
        }
    }
}

/// The script's keys and arguments.
#[derive(Debug, Default)]
pub(super) struct Call {
    pub(super) keys: Vec<String>,
    index: HashMap<String, usize>,
    pub(super) args: Vec<Value>,
}

impl Call {
    /// The 1-based index of `key` in KEYS, adding it if new.
    fn key(&mut self, key: String) -> Value {
        let next = self.keys.len() + 1;
        let at = *self.index.entry(key.clone()).or_insert_with(|| {
            self.keys.push(key);
            next
        });
        Value::from(at as i64)
    }

    fn op(&mut self, op: &'static str, key: String, a: Value, b: Value) {
        let key = self.key(key);
        self.args.extend([Value::from(op), key, a, b]);
    }

    /// Publishes `message` on `channel` once the writes are applied. A channel is not a key:
    /// declaring it would route the script by its slot on a Cluster.
    fn publish(&mut self, channel: &str, message: String) {
        let (channel, message) = (Value::from(channel), Value::from(message));
        self.args
            .extend([Value::from("pub"), Value::from(0), channel, message]);
    }
}

/// Whether the sweeper visits the stream: it is in the expiring index.
fn swept(state: &Option<StreamState>) -> bool {
    state.as_ref().is_some_and(StreamState::swept)
}

fn bytes(b: Vec<u8>) -> Value {
    Value::Bytes(Bytes::from(b))
}

/// The call that commits `txn`'s writes if every stream of `snapshot` is as it was read.
pub(super) fn plan(txn: &Txn<'_>, snapshot: &Snapshot, token: &str) -> Result<Call, StoreError> {
    let mut call = Call::default();
    let mut checks = Vec::new();
    for (name, fetched) in &snapshot.streams {
        if let Some(seen) = &fetched.version {
            call.key(keys::version(name));
            checks.push(Value::from(seen.clone().unwrap_or_default()));
        }
    }
    call.args.push(Value::from(checks.len() as i64));
    call.args.extend(checks);
    call.args.push(Value::from(token));
    let empty = || Value::from("");
    let mut touched: Vec<&str> = Vec::new();
    for write in &txn.writes {
        let name = write.stream();
        if !touched.contains(&name) {
            touched.push(name);
        }
        match write {
            Write::State(_, state) => {
                call.op(
                    "set",
                    keys::state(name),
                    bytes(encode_state(state)?),
                    empty(),
                );
            }
            Write::Record(_, serial, items) => {
                let id = Value::from(format!("{serial}-0"));
                call.op(
                    "xadd",
                    keys::records(name),
                    id,
                    bytes(encode_record(items)?),
                );
            }
            Write::Producer(_, id, state) => {
                let id = Value::from(id.as_str());
                call.op(
                    "hset",
                    keys::producers(name),
                    id,
                    bytes(encode_producer(*state)),
                );
            }
            Write::Aux(_, table, key, value) => {
                let key = bytes(key.clone());
                call.op("hset", keys::aux(name, *table), key, bytes(value.clone()));
            }
            Write::RemoveAux(_, table, key) => {
                let key = bytes(key.clone());
                call.op("hdel", keys::aux(name, *table), key, empty());
            }
            Write::Trim(_, upto) => {
                // Entry ids are `<serial>-0`: MINID keeps the entries from the next serial on.
                let first_kept = Value::from(format!("{}-0", upto.saturating_add(1)));
                call.op("xtrim", keys::records(name), first_kept, empty());
            }
            Write::Clear(_) | Write::Remove(_) => {
                for key in keys::data(name) {
                    call.op("del", key, empty(), empty());
                }
                if matches!(write, Write::Remove(_)) {
                    call.op("del", keys::state(name), empty(), empty());
                }
            }
        }
    }
    for &name in &touched {
        let version = new_version(txn, snapshot, name, token);
        let after = txn.written_state(name);
        let before = txn.original_state(name);
        let now_expiring = after.map(swept);
        // The index is one key outside every stream's slot: touch it only when membership
        // changes, so the usual append stays inside its stream's slot.
        if let Some(now_expiring) = now_expiring {
            if before.map(swept) != Some(now_expiring) {
                let op = if now_expiring { "sadd" } else { "srem" };
                call.op(op, keys::EXPIRING.to_owned(), Value::from(name), empty());
            }
        }
        let state_key = call.key(keys::state(name));
        call.op("ver", keys::version(name), state_key, Value::from(version));
    }
    // Last, so that every write is applied before any node hears of it.
    for name in touched {
        let tail = match txn.written_state(name).or(txn.original_state(name)) {
            Some(Some(state)) => state.tail,
            _ => 0,
        };
        call.publish(keys::NOTICES, notices::message(token, tail, name));
    }
    Ok(call)
}

/// The life part of a version: it changes only when the stream's records are replaced.
pub(super) fn life(version: &str) -> &str {
    version.split_once('/').map_or(version, |(life, _)| life)
}

/// Commits a version remembers, so that a resent commit is recognized even after other
/// commits of the stream.
const RECENT_COMMITS: usize = 8;

/// The version `name` gets from this commit: a new life if the commit creates the stream or
/// drops its records, else the life it had; then this commit's token and the latest before.
fn new_version(txn: &Txn<'_>, snapshot: &Snapshot, name: &str, token: &str) -> String {
    let replaced = txn
        .writes
        .iter()
        .any(|w| w.stream() == name && matches!(w, Write::Clear(_) | Write::Remove(_)));
    let known = snapshot
        .streams
        .get(name)
        .and_then(|f| f.version.clone().flatten());
    match known {
        Some(version) if !replaced => {
            let recent = version.split_once('/').map_or("", |(_, tokens)| tokens);
            let earlier = recent.split(',').filter(|t| !t.is_empty());
            let tokens: Vec<&str> = std::iter::once(token)
                .chain(earlier.take(RECENT_COMMITS - 1))
                .collect();
            format!("{}/{}", life(&version), tokens.join(","))
        }
        _ => format!("{token}/{token}"),
    }
}
