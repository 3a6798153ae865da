//! The writer side's record of what it asked the server to append and what it was told.
//!
//! A crash test can only judge the server against what clients could know: an append the server
//! acknowledged must survive, an append whose reply never came may or may not have. This module
//! keeps exactly that knowledge, in the order each writer sent its appends.

use std::collections::BTreeSet;
use std::fmt;

/// Names one payload: which writer sent it and its position in that writer's sequence.
///
/// Writers have at most one append in flight, so `seq` order is both send order and
/// acknowledgement order for a writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PayloadId {
    pub writer: u32,
    pub seq: u64,
}

impl fmt::Display for PayloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}/n{}", self.writer, self.seq)
    }
}

/// What the writer knows about one append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered 2xx with this `Stream-Next-Offset`: the payload is durable.
    Acknowledged { offset: String },
    /// Sent, but no answer came back (the server died mid-request): either fate is allowed.
    Unknown,
    /// Was unknown, then seen in the log after a restart: from now on it must stay.
    Recovered,
    /// Was unknown, then absent after a restart: nothing may bring it back later.
    Discarded,
}

/// One append the writer sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub stream: String,
    pub id: PayloadId,
    pub payload: Vec<u8>,
    pub outcome: Outcome,
}

/// Every append sent so far, each writer's in the order it sent them.
#[derive(Clone, Debug, Default)]
pub struct History {
    attempts: Vec<Attempt>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an append the server acknowledged with `offset` as its new tail.
    pub fn record_acknowledged(
        &mut self,
        stream: &str,
        id: PayloadId,
        payload: Vec<u8>,
        offset: String,
    ) {
        self.push(stream, id, payload, Outcome::Acknowledged { offset });
    }

    /// Records an append that was sent but whose outcome the writer never learned.
    pub fn record_unknown(&mut self, stream: &str, id: PayloadId, payload: Vec<u8>) {
        self.push(stream, id, payload, Outcome::Unknown);
    }

    fn push(&mut self, stream: &str, id: PayloadId, payload: Vec<u8>, outcome: Outcome) {
        self.attempts.push(Attempt {
            stream: stream.to_owned(),
            id,
            payload,
            outcome,
        });
    }

    /// Appends another history (e.g. one writer's records for a cycle) after this one.
    pub fn extend(&mut self, other: History) {
        self.attempts.extend(other.attempts);
    }

    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// The streams any attempt was sent to, sorted.
    pub fn streams(&self) -> BTreeSet<String> {
        self.attempts.iter().map(|a| a.stream.clone()).collect()
    }

    /// Counts attempts whose outcome matches `pick`.
    pub fn count(&self, pick: impl Fn(&Outcome) -> bool) -> usize {
        self.attempts.iter().filter(|a| pick(&a.outcome)).count()
    }

    /// Fixes the fate of unknown-outcome appends once a recovered server has been read.
    ///
    /// After a restart nothing can still be in flight, so whatever the log shows now is final:
    /// later checks then treat a recovered append like an acknowledged one and a discarded one
    /// like one that was never durable. `present` says whether a payload is in its stream now.
    pub fn settle_unknowns(&mut self, present: impl Fn(&str, PayloadId) -> bool) {
        for attempt in &mut self.attempts {
            if attempt.outcome == Outcome::Unknown {
                attempt.outcome = if present(&attempt.stream, attempt.id) {
                    Outcome::Recovered
                } else {
                    Outcome::Discarded
                };
            }
        }
    }
}
