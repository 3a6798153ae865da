//! What the read side saw: each stream's messages in log order, and reads from chosen offsets.
//!
//! These are plain values so the checker can be tested without a server.

use std::collections::{BTreeMap, BTreeSet};

/// The first thing a read from one offset returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// The read started with this message.
    Starts(Vec<u8>),
    /// The read returned no messages: the offset is the tail.
    Empty,
    /// The server refused the offset (status and body), though it handed it out itself.
    Rejected(String),
}

/// One stream as read after recovery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedStream {
    /// Every message, in log order, read from the start until `Stream-Up-To-Date`.
    pub messages: Vec<Vec<u8>>,
    /// Reads from offsets that acknowledgements returned, keyed by that offset.
    pub probes: BTreeMap<String, ProbeResult>,
}

/// Every stream the read side looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub streams: BTreeMap<String, ObservedStream>,
    /// Streams the server answered 404 for, though they had been created.
    pub missing_streams: BTreeSet<String>,
}

impl Observation {
    pub fn new() -> Self {
        Self::default()
    }

    /// Total messages read across all streams.
    pub fn message_count(&self) -> usize {
        self.streams.values().map(|s| s.messages.len()).sum()
    }

    /// Total offset probes across all streams.
    pub fn probe_count(&self) -> usize {
        self.streams.values().map(|s| s.probes.len()).sum()
    }
}
