//! Redis key names. Pinned: stored data depends on them.
//!
//! Every key of one stream is `mooring:{<name>}:<suffix>`: the braces make the escaped name the
//! key's hash tag, so all of a stream's keys live in one slot of a Redis Cluster and one script
//! may touch them together. The name is escaped so that it holds no brace (which would end the
//! tag early) and so that two streams never share a key.

use mooring_core::store::AuxTable;

/// The set of names of streams that have an expiry, read by the sweeper.
pub(super) const EXPIRING: &str = "mooring:expiring";

/// The pub/sub channel on which every commit announces the streams it wrote (`notices.rs`).
/// Not a key: it holds nothing, and it belongs to no stream's slot.
pub(super) const NOTICES: &str = "mooring:moved";

/// The pub/sub channel on which nodes announce presence changes (`presence.rs`).
pub(super) const PRESENCE: &str = "mooring:presence";

/// The nodes and when each last beat (a sorted set), for presence across nodes.
pub(super) const NODES: &str = "mooring:nodes";

/// Set and removed by one script (`sync.lua`) before a `WAIT` that must cover everything the
/// primary holds (`replicas.rs`); it never stays.
pub(super) const SYNC: &str = "mooring:sync";

/// The name with `%`, `{` and `}` percent-escaped.
fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

fn key(name: &str, suffix: &str) -> String {
    format!("mooring:{{{}}}:{suffix}", escape(name))
}

/// The stream's state (a string).
pub(super) fn state(name: &str) -> String {
    key(name, "s")
}

/// The version token of the stream's last commit (a string); absent iff the state is.
pub(super) fn version(name: &str) -> String {
    key(name, "v")
}

/// The stream's records (a Redis Stream, entry id `<serial>-0`).
pub(super) fn records(name: &str) -> String {
    key(name, "r")
}

/// The stream's producer states (a hash: producer id -> state).
pub(super) fn producers(name: &str) -> String {
    key(name, "p")
}

/// A side table of the stream (a hash: key -> value).
pub(super) fn aux(name: &str, table: AuxTable) -> String {
    key(name, &format!("a{}", table.tag()))
}

/// The session's members connected through each node (a hash: member -> node and member).
pub(super) fn members(name: &str) -> String {
    key(name, "m")
}

/// The session's active runs and the node owning each (a hash: run id -> node and client).
pub(super) fn runs(name: &str) -> String {
    key(name, "o")
}

/// Who holds input `serial` of the session for dispatch (a string with an expiry).
pub(super) fn input_claim(name: &str, serial: u64) -> String {
    key(name, &format!("d:{serial}"))
}

/// The nodes that have workers (a set), so that inputs are announced only while some do.
pub(super) const WORKER_NODES: &str = "mooring:workers";

/// The pub/sub channel on which nodes announce user inputs waiting for a worker.
pub(super) const INPUTS: &str = "mooring:inputs";

/// The sessions in which `node` owns runs (a set), for the nodes that survive it. A key of
/// its own slot: nothing else is written with it.
pub(super) fn node_runs(node: &str) -> String {
    format!("mooring:node:{node}:runs")
}

/// Every key that holds the stream's data besides its state and version. The run owners go
/// with the data: the runs of a removed log are over, and a dead node's runs must not be
/// ended into a session created again under the same name. (Presence stays: it is about
/// connections, which a removal does not end.)
pub(super) fn data(name: &str) -> [String; 5] {
    [
        records(name),
        producers(name),
        aux(name, AuxTable::Messages),
        aux(name, AuxTable::PublishIds),
        runs(name),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_pinned() {
        assert_eq!(state("chat:1"), "mooring:{chat:1}:s");
        assert_eq!(version("chat:1"), "mooring:{chat:1}:v");
        assert_eq!(records("a/b"), "mooring:{a/b}:r");
        assert_eq!(producers("x"), "mooring:{x}:p");
        assert_eq!(aux("x", AuxTable::Messages), "mooring:{x}:a1");
        assert_eq!(aux("x", AuxTable::PublishIds), "mooring:{x}:a2");
        assert_eq!(members("x"), "mooring:{x}:m");
        assert_eq!(runs("x"), "mooring:{x}:o");
        assert_eq!(input_claim("x", 7), "mooring:{x}:d:7");
        assert_eq!(INPUTS, "mooring:inputs");
        assert_eq!(WORKER_NODES, "mooring:workers");
        assert_eq!(node_runs("00ff"), "mooring:node:00ff:runs");
        assert_eq!(NOTICES, "mooring:moved");
        assert_eq!(PRESENCE, "mooring:presence");
        assert_eq!(NODES, "mooring:nodes");
        assert_eq!(SYNC, "mooring:sync");
    }

    #[test]
    fn braces_in_names_cannot_break_the_hash_tag_or_collide() {
        assert_eq!(state("a}b{%"), "mooring:{a%7Db%7B%25}:s");
        // Without escaping, "a}:s" would share a slot prefix with "a" and confuse readers.
        assert_ne!(state("a}:s"), state("a"));
        assert_ne!(state("%7D"), state("}"));
    }
}
