//! Judges a recovered server's logs against the writers' history.
//!
//! The rules, per stream:
//! - every acknowledged (or already recovered) payload is present, exactly once, byte for byte;
//! - an unknown-outcome payload is present at most once; a discarded one never comes back;
//! - each writer's present payloads appear in the order it sent them;
//! - nothing appears that no writer sent to that stream;
//! - acknowledged offsets sort in log order, and reading from an acknowledged offset starts with
//!   the message right after that payload (or is empty at the tail).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use crate::history::{Attempt, History, Outcome, PayloadId};
use crate::observation::{ObservedStream, ProbeResult};
use crate::Observation;

/// Which rule a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// An acknowledged (or recovered) payload, or a created stream, is missing.
    Lost,
    /// A payload appears more than once.
    Duplicate,
    /// A writer's payloads appear in a different order than it sent them.
    Reordered,
    /// A payload is present but its bytes differ from what was sent.
    Corrupted,
    /// A message that no writer sent to this stream.
    NeverSent,
    /// An unknown-outcome payload that was absent after an earlier recovery reappeared.
    Resurrected,
    /// An acknowledged offset does not point right after its payload.
    WrongOffset,
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Lost => "lost",
            Self::Duplicate => "duplicate",
            Self::Reordered => "reordered",
            Self::Corrupted => "corrupted",
            Self::NeverSent => "never-sent",
            Self::Resurrected => "resurrected",
            Self::WrongOffset => "wrong-offset",
        };
        f.write_str(name)
    }
}

/// One broken rule, with enough detail to find the messages involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub kind: ViolationKind,
    pub stream: String,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}: {}", self.kind, self.stream, self.detail)
    }
}

/// The checker's verdict.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub messages_checked: usize,
    pub probes_checked: usize,
    present: BTreeSet<(String, PayloadId)>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether the payload was found in its stream (used to settle unknown outcomes).
    pub fn is_present(&self, stream: &str, id: PayloadId) -> bool {
        self.present.contains(&(stream.to_owned(), id))
    }

    /// How many violations of one kind were found.
    pub fn count(&self, kind: ViolationKind) -> usize {
        self.violations.iter().filter(|v| v.kind == kind).count()
    }

    fn violation(&mut self, kind: ViolationKind, stream: &str, detail: String) {
        self.violations.push(Violation {
            kind,
            stream: stream.to_owned(),
            detail,
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} violations in {} messages and {} offset probes",
            self.violations.len(),
            self.messages_checked,
            self.probes_checked
        )?;
        // A broken engine can lose thousands of appends; the first ones tell the story.
        const SHOWN: usize = 40;
        for v in self.violations.iter().take(SHOWN) {
            write!(f, "\n  {v}")?;
        }
        if self.violations.len() > SHOWN {
            write!(f, "\n  ... and {} more", self.violations.len() - SHOWN)?;
        }
        Ok(())
    }
}

/// Checks every stream in the history or the observation.
///
/// `identify` recognises which payload a message claims to be (e.g. by fields it carries), so a
/// message whose bytes were damaged is reported as corrupted rather than as lost plus unknown.
pub fn check(
    history: &History,
    observation: &Observation,
    identify: impl Fn(&[u8]) -> Option<PayloadId>,
) -> Report {
    let mut by_stream: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for attempt in history.attempts() {
        by_stream.entry(&attempt.stream).or_default().push(attempt);
    }
    for name in observation.streams.keys() {
        by_stream.entry(name).or_default();
    }
    let unread = ObservedStream::default();
    let mut report = Report::default();
    for stream in &observation.missing_streams {
        let detail = "the stream itself is gone (404)".to_owned();
        report.violation(ViolationKind::Lost, stream, detail);
    }
    for (stream, attempts) in by_stream {
        let observed = observation.streams.get(stream).unwrap_or(&unread);
        StreamCheck {
            stream,
            attempts: &attempts,
            observed,
            report: &mut report,
        }
        .run(&identify);
    }
    report
}

/// The checks for one stream.
struct StreamCheck<'a> {
    stream: &'a str,
    attempts: &'a [&'a Attempt],
    observed: &'a ObservedStream,
    report: &'a mut Report,
}

impl StreamCheck<'_> {
    fn run(mut self, identify: &impl Fn(&[u8]) -> Option<PayloadId>) {
        let positions = self.locate_messages(identify);
        self.find_lost(&positions);
        self.check_writer_order(&positions);
        self.check_offset_order(&positions);
        self.check_probes(&positions);
        self.report.messages_checked += self.observed.messages.len();
        self.report.probes_checked += self.observed.probes.len();
        for id in positions.keys() {
            self.report.present.insert((self.stream.to_owned(), *id));
        }
    }

    fn violation(&mut self, kind: ViolationKind, detail: String) {
        self.report.violation(kind, self.stream, detail);
    }

    /// Maps each recognised payload to its first position, reporting messages that should not
    /// be there or not look like that.
    fn locate_messages(
        &mut self,
        identify: &impl Fn(&[u8]) -> Option<PayloadId>,
    ) -> HashMap<PayloadId, usize> {
        let sent: HashMap<PayloadId, &Attempt> = self.attempts.iter().map(|a| (a.id, *a)).collect();
        let mut positions = HashMap::new();
        for (at, message) in self.observed.messages.iter().enumerate() {
            let Some(id) = identify(message) else {
                let detail = format!("message #{at} is not a payload: {}", preview(message));
                self.violation(ViolationKind::NeverSent, detail);
                continue;
            };
            let Some(attempt) = sent.get(&id) else {
                let detail = format!("message #{at} claims to be {id}, never sent to this stream");
                self.violation(ViolationKind::NeverSent, detail);
                continue;
            };
            if let Some(first) = positions.get(&id) {
                let detail = format!("{id} at #{first} and again at #{at}");
                self.violation(ViolationKind::Duplicate, detail);
                continue;
            }
            positions.insert(id, at);
            if attempt.outcome == Outcome::Discarded {
                let detail = format!("{id} at #{at} was absent after an earlier recovery");
                self.violation(ViolationKind::Resurrected, detail);
            }
            if *message != attempt.payload {
                let detail = format!(
                    "{id} at #{at}: sent {}, read {}",
                    preview(&attempt.payload),
                    preview(message)
                );
                self.violation(ViolationKind::Corrupted, detail);
            }
        }
        positions
    }

    fn find_lost(&mut self, positions: &HashMap<PayloadId, usize>) {
        for attempt in self.attempts {
            let must_stay = matches!(
                attempt.outcome,
                Outcome::Acknowledged { .. } | Outcome::Recovered
            );
            if must_stay && !positions.contains_key(&attempt.id) {
                let detail = format!("{} ({:?}) is missing", attempt.id, attempt.outcome);
                self.violation(ViolationKind::Lost, detail);
            }
        }
    }

    /// Each writer's present payloads must keep their send order; comparing neighbours in send
    /// order is enough, since any inversion shows up between some present neighbours.
    fn check_writer_order(&mut self, positions: &HashMap<PayloadId, usize>) {
        let mut last_by_writer: HashMap<u32, (PayloadId, usize)> = HashMap::new();
        for attempt in self.attempts {
            let Some(&at) = positions.get(&attempt.id) else {
                continue;
            };
            if let Some(&(before, before_at)) = last_by_writer.get(&attempt.id.writer) {
                if at < before_at {
                    let detail = format!(
                        "{} (#{at}) was sent after {before} (#{before_at}) but is read before it",
                        attempt.id
                    );
                    self.violation(ViolationKind::Reordered, detail);
                }
            }
            last_by_writer.insert(attempt.id.writer, (attempt.id, at));
        }
    }

    /// Acknowledged payloads present in the log, with their offsets, in log order.
    fn acknowledged_in_log_order(
        &self,
        positions: &HashMap<PayloadId, usize>,
    ) -> Vec<(usize, PayloadId, &'_ str)> {
        let mut acked: Vec<(usize, PayloadId, &str)> = self
            .attempts
            .iter()
            .filter_map(|a| match &a.outcome {
                Outcome::Acknowledged { offset } => {
                    positions.get(&a.id).map(|&at| (at, a.id, offset.as_str()))
                }
                _ => None,
            })
            .collect();
        acked.sort_by_key(|&(at, _, _)| at);
        acked
    }

    /// Offsets are lexicographically sortable, so acknowledged offsets must rise with log order.
    fn check_offset_order(&mut self, positions: &HashMap<PayloadId, usize>) {
        let acked = self.acknowledged_in_log_order(positions);
        let mut complaints = Vec::new();
        for pair in acked.windows(2) {
            let ((at_a, id_a, off_a), (at_b, id_b, off_b)) = (pair[0], pair[1]);
            if off_a >= off_b {
                complaints.push(format!(
                    "{id_a} (#{at_a}) got offset {off_a} but the later {id_b} (#{at_b}) got {off_b}"
                ));
            }
        }
        for detail in complaints {
            self.violation(ViolationKind::WrongOffset, detail);
        }
    }

    /// A read from an acknowledged offset must begin right after that payload.
    fn check_probes(&mut self, positions: &HashMap<PayloadId, usize>) {
        let acked = self.acknowledged_in_log_order(positions);
        let mut complaints = Vec::new();
        for (at, id, offset) in acked {
            let Some(probe) = self.observed.probes.get(offset) else {
                continue;
            };
            let expected = self.observed.messages.get(at + 1);
            let problem = match (probe, expected) {
                (ProbeResult::Empty, None) => None,
                (ProbeResult::Starts(got), Some(want)) if got == want => None,
                (ProbeResult::Empty, Some(want)) => {
                    Some(format!("was empty, expected {}", preview(want)))
                }
                (ProbeResult::Starts(got), None) => Some(format!(
                    "started with {} though {id} is the tail",
                    preview(got)
                )),
                (ProbeResult::Starts(got), Some(want)) => Some(format!(
                    "started with {}, expected {}",
                    preview(got),
                    preview(want)
                )),
                (ProbeResult::Rejected(why), _) => Some(format!("was refused: {why}")),
            };
            if let Some(problem) = problem {
                complaints.push(format!(
                    "read from {id}'s offset {offset} (#{at}) {problem}"
                ));
            }
        }
        for detail in complaints {
            self.violation(ViolationKind::WrongOffset, detail);
        }
    }
}

/// A short, printable form of a message for violation details.
fn preview(bytes: &[u8]) -> String {
    const LIMIT: usize = 48;
    let text = String::from_utf8_lossy(bytes);
    if text.chars().count() <= LIMIT {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{head:?}... ({} bytes)", bytes.len())
    }
}

#[cfg(test)]
mod tests;
