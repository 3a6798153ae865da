//! Reconstruct-and-compare for realtime sessions: what one client saw of one session, folded
//! into messages, and checked for gaps, duplicates and reordering by serial.
//!
//! A [`Reconstruction`] takes the events a client received, across all its reconnects, in the
//! order they arrived. It folds them into messages with the same rule the server uses
//! ([`mooring_core::session::fold`]), so a client that saw every event exactly once, in order,
//! ends with messages equal to the server's materialized view, field for field. Its
//! [`SessionReport`] counts what went wrong:
//!
//! - a **gap**: a delivery that skipped serials not seen before it (the serials are **lost** if
//!   they never arrive);
//! - a **duplicate**: a serial delivered again;
//! - a **reorder**: a serial delivered after a higher one.
//!
//! [`ExpectedMessages`] is the writer's side: the messages it meant to produce, built from what
//! it published and the serials it was acknowledged with.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use mooring_core::session::{fold, fold_target};
use mooring_protocol::session::{Event, MessageView};
use mooring_protocol::Position;

/// How many problem descriptions a report keeps.
const MAX_PROBLEMS: usize = 10;

/// What one delivery was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The next serial, or one after a higher serial's gap was filled in order.
    InOrder,
    /// Serials before it were skipped.
    AfterGap,
    /// A serial already delivered.
    Duplicate,
    /// A serial lower than one already delivered.
    Reordered,
}

/// What one client saw of one session.
#[derive(Clone, Debug, Default)]
pub struct Reconstruction {
    epoch: Option<u64>,
    /// Every serial up to this one was seen (or covered by a materialized view).
    contiguous: u64,
    /// Serials seen above `contiguous` (after a gap).
    ahead: BTreeSet<u64>,
    max_seen: u64,
    /// Folded messages by the serial of their create, deleted ones included.
    messages: BTreeMap<u64, MessageView>,
    /// A materialized view began and its `live` has not arrived yet.
    in_view: bool,
    report: SessionReport,
}

/// The counts of a reconstruction (or a sum of several).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionReport {
    /// Events received (duplicates included).
    pub deliveries: u64,
    /// Serials up to the expected last one that never arrived.
    pub lost: u64,
    pub gaps: u64,
    pub duplicates: u64,
    pub reorders: u64,
    /// Events that could not be folded into their message (a missing create, a bad append).
    pub fold_errors: u64,
    /// Events of another epoch than the first one seen.
    pub epoch_changes: u64,
    /// The first few problems, described.
    pub problems: Vec<String>,
}

impl SessionReport {
    /// No loss, gap, duplicate, reorder, fold error or epoch change.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.gaps == 0
            && self.duplicates == 0
            && self.reorders == 0
            && self.fold_errors == 0
            && self.epoch_changes == 0
    }

    /// Adds `other`'s counts to these (for totals over many clients).
    pub fn add(&mut self, other: &SessionReport) {
        self.deliveries += other.deliveries;
        self.lost += other.lost;
        self.gaps += other.gaps;
        self.duplicates += other.duplicates;
        self.reorders += other.reorders;
        self.fold_errors += other.fold_errors;
        self.epoch_changes += other.epoch_changes;
        for problem in &other.problems {
            if self.problems.len() < MAX_PROBLEMS {
                self.problems.push(problem.clone());
            }
        }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }
}

impl fmt::Display for SessionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} deliveries, {} lost, {} gaps, {} duplicated, {} reordered, {} fold errors, {} epoch changes",
            self.deliveries,
            self.lost,
            self.gaps,
            self.duplicates,
            self.reorders,
            self.fold_errors,
            self.epoch_changes
        )?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl Reconstruction {
    pub fn new() -> Self {
        Self::default()
    }

    /// The epoch of the events seen, once one was.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// The highest serial seen: where a client resumes (`from: {epoch, serial}`).
    pub fn last_serial(&self) -> u64 {
        self.max_seen
    }

    /// The position to attach from after a disconnect; `None` before anything was seen.
    pub fn resume_position(&self) -> Option<Position> {
        self.epoch.map(|epoch| Position {
            epoch,
            serial: self.max_seen,
        })
    }

    fn check_epoch(&mut self, epoch: u64, serial: u64) {
        match self.epoch {
            None => self.epoch = Some(epoch),
            // Holding nothing yet (attached before the session existed, so at serial 0 of no
            // life): the first life to arrive is the one followed, as the clients do.
            Some(_) if self.max_seen == 0 && self.messages.is_empty() => self.epoch = Some(epoch),
            Some(e) if e != epoch => {
                self.report.epoch_changes += 1;
                self.report
                    .problem(format!("serial {serial} came in epoch {epoch}, not {e}"));
                self.epoch = Some(epoch);
            }
            Some(_) => {}
        }
    }

    fn seen(&self, serial: u64) -> bool {
        serial <= self.contiguous || self.ahead.contains(&serial)
    }

    fn mark_seen(&mut self, serial: u64) {
        if serial == self.contiguous + 1 {
            self.contiguous = serial;
            while self.ahead.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        } else {
            self.ahead.insert(serial);
        }
        self.max_seen = self.max_seen.max(serial);
    }

    /// Takes one event of a replay or of the live stream, in arrival order.
    pub fn observe(&mut self, epoch: u64, event: &Event) -> Delivery {
        let serial = event.serial;
        self.report.deliveries += 1;
        self.check_epoch(epoch, serial);
        if serial == 0 || self.seen(serial) {
            self.report.duplicates += 1;
            self.report
                .problem(format!("serial {serial} delivered again"));
            return Delivery::Duplicate;
        }
        let delivery = if serial < self.max_seen {
            self.report.reorders += 1;
            self.report.problem(format!(
                "serial {serial} arrived after serial {}",
                self.max_seen
            ));
            Delivery::Reordered
        } else if serial > self.max_seen + 1 {
            self.report.gaps += 1;
            self.report.problem(format!(
                "serial {serial} followed serial {}: {} skipped",
                self.max_seen,
                serial - self.max_seen - 1
            ));
            Delivery::AfterGap
        } else {
            Delivery::InOrder
        };
        self.mark_seen(serial);
        self.fold(event);
        delivery
    }

    fn fold(&mut self, event: &Event) {
        let target = fold_target(event);
        match fold(self.messages.get(&target), event) {
            Ok(Some(view)) => {
                self.messages.insert(target, view);
            }
            Ok(None) => {}
            Err(e) => {
                self.report.fold_errors += 1;
                self.report.problem(format!(
                    "serial {} ({:?} of message {target}) does not fold: {e:?}",
                    event.serial, event.action
                ));
            }
        }
    }

    /// Starts over from a materialized view (attach `latest`, or `history_lost`) covering every
    /// event up to `high_water`: what was folded so far is replaced by the view's messages.
    ///
    /// The view is whole only at its `live` frame ([`end_view`](Self::end_view)); a client cut
    /// off before that must attach `latest` again, not resume from the view's high-water, or it
    /// would miss the messages it had not received yet ([`in_view`](Self::in_view) says so).
    pub fn begin_view(&mut self, epoch: u64, high_water: u64) {
        self.in_view = true;
        let holding = self.max_seen > 0 || !self.messages.is_empty();
        if let Some(e) = self.epoch.filter(|e| *e != epoch && holding) {
            self.report.epoch_changes += 1;
            self.report
                .problem(format!("a view of epoch {epoch} replaced epoch {e}"));
        }
        self.epoch = Some(epoch);
        self.messages.clear();
        self.ahead.clear();
        self.contiguous = high_water;
        self.max_seen = high_water;
    }

    /// The view begun by [`begin_view`](Self::begin_view) is complete (its `live` arrived).
    pub fn end_view(&mut self) {
        self.in_view = false;
    }

    /// Whether a view began and is not complete yet.
    pub fn in_view(&self) -> bool {
        self.in_view
    }

    /// Takes one message of a materialized view (a whole `message.create` with its `version`).
    pub fn observe_view(&mut self, event: &Event) {
        self.report.deliveries += 1;
        let view = MessageView {
            serial: event.serial,
            name: event.name.clone(),
            client_id: event.client_id.clone(),
            data: event.data.clone(),
            extras: event.extras.clone(),
            version: event.version.unwrap_or(event.serial),
            deleted: false,
            ts: event.ts,
        };
        if self.messages.insert(event.serial, view).is_some() {
            self.report.duplicates += 1;
            self.report
                .problem(format!("message {} sent twice in one view", event.serial));
        }
    }

    /// The live messages, in serial order: comparable with a server snapshot's messages.
    pub fn messages(&self) -> Vec<MessageView> {
        self.messages
            .values()
            .filter(|m| !m.deleted)
            .cloned()
            .collect()
    }

    /// The counts so far; serials up to `expected_last` that never arrived count as lost.
    pub fn report(&self, expected_last: Option<u64>) -> SessionReport {
        let mut report = self.report.clone();
        if let Some(last) = expected_last {
            let seen = self.contiguous.min(last) + self.ahead.range(..=last).count() as u64;
            report.lost = last.saturating_sub(seen);
            if report.lost > 0 {
                let first = (1..=last).find(|s| !self.seen(*s)).unwrap_or(0);
                report.problem(format!(
                    "{} of serials 1..={last} never arrived (the first is {first})",
                    report.lost
                ));
            }
        }
        report
    }
}

/// One message as its writer meant it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedMessage {
    pub name: Option<String>,
    pub client_id: Option<String>,
    pub data: serde_json::Value,
}

/// The messages a writer produced, from what it published and the serials it was given.
#[derive(Clone, Debug, Default)]
pub struct ExpectedMessages {
    messages: BTreeMap<u64, ExpectedMessage>,
}

impl ExpectedMessages {
    pub fn new() -> Self {
        Self::default()
    }

    /// A message created at `serial`.
    pub fn create(
        &mut self,
        serial: u64,
        name: Option<&str>,
        client_id: Option<&str>,
        data: serde_json::Value,
    ) {
        self.messages.insert(
            serial,
            ExpectedMessage {
                name: name.map(str::to_owned),
                client_id: client_id.map(str::to_owned),
                data,
            },
        );
    }

    /// Appends `text` to message `reference`; false if it does not exist.
    pub fn append(&mut self, reference: u64, text: &str) -> bool {
        let Some(message) = self.messages.get_mut(&reference) else {
            return false;
        };
        message.data = match &message.data {
            serde_json::Value::String(s) => format!("{s}{text}").into(),
            serde_json::Value::Null => text.into(),
            _ => return false,
        };
        true
    }

    /// Replaces message `reference`'s data; false if it does not exist.
    pub fn update(&mut self, reference: u64, data: serde_json::Value) -> bool {
        match self.messages.get_mut(&reference) {
            Some(message) => {
                message.data = data;
                true
            }
            None => false,
        }
    }

    /// Deletes message `reference`; false if it does not exist.
    pub fn delete(&mut self, reference: u64) -> bool {
        self.messages.remove(&reference).is_some()
    }

    pub fn contains(&self, serial: u64) -> bool {
        self.messages.contains_key(&serial)
    }

    pub fn get(&self, serial: u64) -> Option<&ExpectedMessage> {
        self.messages.get(&serial)
    }

    /// Serials of the messages, in order.
    pub fn serials(&self) -> Vec<u64> {
        self.messages.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// How `got` differs from these messages (name, client and data of each); empty if equal.
    pub fn differences(&self, got: &[MessageView]) -> Vec<String> {
        let mut out = Vec::new();
        let got_by_serial: BTreeMap<u64, &MessageView> =
            got.iter().map(|m| (m.serial, m)).collect();
        for (serial, want) in &self.messages {
            match got_by_serial.get(serial) {
                None => out.push(format!("message {serial} is missing")),
                Some(m) => {
                    let have = ExpectedMessage {
                        name: m.name.clone(),
                        client_id: m.client_id.clone(),
                        data: m.data.clone(),
                    };
                    if have != *want {
                        out.push(format!(
                            "message {serial} is {} but should be {}",
                            short(&have),
                            short(want)
                        ));
                    }
                }
            }
        }
        for serial in got_by_serial
            .keys()
            .filter(|s| !self.messages.contains_key(s))
        {
            out.push(format!("message {serial} should not exist"));
        }
        out
    }
}

fn short(message: &ExpectedMessage) -> String {
    let data = message.data.to_string();
    let data = if data.len() > 80 {
        let head: String = data.chars().take(80).collect();
        format!("{head}…({} bytes)", data.len())
    } else {
        data
    };
    format!("{:?}/{:?}: {data}", message.name, message.client_id)
}

/// A session's records as read through the Durable Streams surface (one JSON event each).
pub fn events_of(items: &[Vec<u8>]) -> Result<Vec<Event>, String> {
    items
        .iter()
        .map(|item| {
            serde_json::from_slice(item)
                .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(item)))
        })
        .collect()
}

/// How two lists of materialized messages differ, field for field; empty if equal.
pub fn view_differences(got: &[MessageView], want: &[MessageView]) -> Vec<String> {
    let mut out = Vec::new();
    let got: BTreeMap<u64, &MessageView> = got.iter().map(|m| (m.serial, m)).collect();
    let want: BTreeMap<u64, &MessageView> = want.iter().map(|m| (m.serial, m)).collect();
    for (serial, w) in &want {
        match got.get(serial) {
            None => out.push(format!("message {serial} is missing")),
            Some(g) if g != w => out.push(format!("message {serial} is {g:?}, expected {w:?}")),
            Some(_) => {}
        }
    }
    for serial in got.keys().filter(|s| !want.contains_key(s)) {
        out.push(format!("message {serial} should not exist"));
    }
    out
}

#[cfg(test)]
mod tests {
    use mooring_protocol::session::Action;

    use super::*;

    fn event(serial: u64, action: Action, reference: Option<u64>, data: &str) -> Event {
        Event {
            serial,
            action,
            id: None,
            name: Some("response".into()),
            reference,
            client_id: Some("agent".into()),
            data: data.into(),
            extras: Default::default(),
            ts: 1_000 + serial,
            version: None,
        }
    }

    /// A message created at 1 and appended to by every later serial ("a", "b", ...).
    fn stream(len: u64) -> Vec<Event> {
        (1..=len)
            .map(|s| match s {
                1 => event(1, Action::MessageCreate, None, ""),
                s => {
                    let letter = char::from(b'a' + ((s - 2) % 26) as u8).to_string();
                    event(s, Action::MessageAppend, Some(1), &letter)
                }
            })
            .collect()
    }

    fn deliver(serials: &[u64], events: &[Event]) -> Reconstruction {
        let mut r = Reconstruction::new();
        for s in serials {
            r.observe(0, &events[*s as usize - 1]);
        }
        r
    }

    #[test]
    fn every_event_once_in_order_is_clean_and_folds() {
        let events = stream(5);
        let r = deliver(&[1, 2, 3, 4, 5], &events);
        let report = r.report(Some(5));
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.deliveries, 5);
        assert_eq!(r.messages()[0].data, "abcd");
        assert_eq!(r.messages()[0].version, 5);
        assert_eq!(
            r.resume_position(),
            Some(Position {
                epoch: 0,
                serial: 5
            })
        );
    }

    #[test]
    fn a_gap_fails_the_check() {
        let events = stream(5);
        let r = deliver(&[1, 2, 4, 5], &events);
        let report = r.report(Some(5));
        assert!(!report.is_clean());
        assert_eq!((report.gaps, report.lost), (1, 1), "{report}");
        assert_eq!(r.messages()[0].data, "acd");
    }

    #[test]
    fn a_lost_tail_fails_the_check() {
        let events = stream(5);
        let report = deliver(&[1, 2, 3], &events).report(Some(5));
        assert_eq!((report.gaps, report.lost), (0, 2), "{report}");
        assert!(!report.is_clean());
    }

    #[test]
    fn a_duplicate_fails_the_check_and_is_not_folded_twice() {
        let events = stream(4);
        let r = deliver(&[1, 2, 3, 3, 4], &events);
        let report = r.report(Some(4));
        assert!(!report.is_clean());
        assert_eq!((report.duplicates, report.lost), (1, 0), "{report}");
        assert_eq!(r.messages()[0].data, "abc");
    }

    #[test]
    fn a_reorder_fails_the_check() {
        let events = stream(4);
        let r = deliver(&[1, 3, 2, 4], &events);
        let report = r.report(Some(4));
        assert!(!report.is_clean());
        assert_eq!(
            (report.reorders, report.gaps, report.lost, report.duplicates),
            (1, 1, 0, 0),
            "{report}"
        );
        assert_eq!(r.messages()[0].data, "bac");
    }

    #[test]
    fn an_append_to_a_message_never_seen_is_a_fold_error() {
        let events = stream(3);
        let mut r = Reconstruction::new();
        r.observe(0, &events[1]);
        let report = r.report(None);
        assert_eq!((report.fold_errors, report.gaps), (1, 1), "{report}");
    }

    #[test]
    fn a_view_replaces_history_and_live_events_continue_it() {
        let events = stream(6);
        let mut r = deliver(&[1, 2], &events);
        r.begin_view(0, 4);
        let mut whole = event(1, Action::MessageCreate, None, "abc");
        whole.version = Some(4);
        whole.ts = events[0].ts;
        r.observe_view(&whole);
        assert!(r.in_view());
        r.end_view();
        assert!(!r.in_view());
        r.observe(0, &events[4]);
        r.observe(0, &events[5]);
        let report = r.report(Some(6));
        assert!(report.is_clean(), "{report}");
        assert_eq!(r.messages()[0].data, "abcde");
        assert_eq!(r.messages()[0].version, 6);
        // An event the view already covered is a duplicate.
        r.observe(0, &events[3]);
        assert_eq!(r.report(Some(6)).duplicates, 1);
    }

    #[test]
    fn another_epoch_is_reported() {
        let events = stream(2);
        let mut r = deliver(&[1], &events);
        r.observe(1, &events[1]);
        assert_eq!(r.report(None).epoch_changes, 1);
    }

    #[test]
    fn expected_messages_compare_by_name_client_and_data() {
        let events = stream(3);
        let r = deliver(&[1, 2, 3], &events);
        let mut want = ExpectedMessages::new();
        want.create(1, Some("response"), Some("agent"), "".into());
        assert!(want.append(1, "a"));
        assert!(want.append(1, "b"));
        assert!(want.differences(&r.messages()).is_empty());
        assert!(want.update(1, "other".into()));
        assert_eq!(want.differences(&r.messages()).len(), 1);
        assert!(want.delete(1));
        assert_eq!(
            want.differences(&r.messages()),
            ["message 1 should not exist"]
        );
        assert!(!want.append(1, "x"));
    }

    #[test]
    fn views_compare_field_for_field() {
        let events = stream(3);
        let a = deliver(&[1, 2, 3], &events).messages();
        let b = deliver(&[1, 2], &events).messages();
        assert!(view_differences(&a, &a).is_empty());
        assert_eq!(view_differences(&a, &b).len(), 1);
        assert_eq!(view_differences(&a, &[]), ["message 1 should not exist"]);
    }
}
