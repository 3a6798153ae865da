//! The checker must catch each kind of damage on purpose, and pass an honest history.

use std::collections::BTreeMap;

use super::*;
use crate::payload;

const STREAM: &str = "orders";

fn id(writer: u32, seq: u64) -> PayloadId {
    PayloadId { writer, seq }
}

fn message(writer: u32, seq: u64) -> Vec<u8> {
    payload::encode(id(writer, seq), 12)
}

/// The offset a server would return after the `count`th message.
fn offset(count: usize) -> String {
    format!("0000000000000000_{count:016}")
}

/// Two writers interleaved on one stream, every append acknowledged with an honest offset.
/// Returns the history and the log an honest server would hold.
fn interleaved() -> (History, Vec<Vec<u8>>) {
    let order = [(1, 0), (2, 0), (1, 1), (2, 1), (1, 2)];
    let mut history = History::new();
    let mut log = Vec::new();
    for (at, &(w, n)) in order.iter().enumerate() {
        history.record_acknowledged(STREAM, id(w, n), message(w, n), offset(at + 1));
        log.push(message(w, n));
    }
    (history, log)
}

/// What reading from each acknowledged offset would honestly return for `log`.
fn honest_probes(log: &[Vec<u8>]) -> BTreeMap<String, ProbeResult> {
    (0..log.len())
        .map(|at| {
            let result = match log.get(at + 1) {
                Some(next) => ProbeResult::Starts(next.clone()),
                None => ProbeResult::Empty,
            };
            (offset(at + 1), result)
        })
        .collect()
}

fn observed(log: Vec<Vec<u8>>, probes: BTreeMap<String, ProbeResult>) -> Observation {
    let mut observation = Observation::new();
    observation.streams.insert(
        STREAM.to_owned(),
        ObservedStream {
            messages: log,
            probes,
        },
    );
    observation
}

fn run(history: &History, observation: &Observation) -> Report {
    check(history, observation, payload::identify)
}

fn kinds(report: &Report) -> Vec<ViolationKind> {
    report.violations.iter().map(|v| v.kind).collect()
}

#[test]
fn honest_history_passes() {
    let (history, log) = interleaved();
    let probes = honest_probes(&log);
    let report = run(&history, &observed(log, probes));
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.messages_checked, 5);
    assert_eq!(report.probes_checked, 5);
}

#[test]
fn lost_acknowledged_append_is_reported() {
    let (history, mut log) = interleaved();
    log.remove(2); // w1/n1
    let report = run(&history, &observed(log, BTreeMap::new()));
    assert_eq!(kinds(&report), [ViolationKind::Lost], "{report}");
    assert!(report.violations[0].detail.contains("w1/n1"), "{report}");
    assert_eq!(report.violations[0].stream, STREAM);
}

#[test]
fn acknowledged_appends_of_an_unread_stream_are_lost() {
    let (history, _) = interleaved();
    let report = run(&history, &Observation::new());
    assert_eq!(report.count(ViolationKind::Lost), 5, "{report}");
}

#[test]
fn a_vanished_stream_is_lost_even_without_appends() {
    let mut observation = Observation::new();
    observation.missing_streams.insert("empty".to_owned());
    let report = run(&History::new(), &observation);
    assert_eq!(kinds(&report), [ViolationKind::Lost], "{report}");
    assert_eq!(report.violations[0].stream, "empty");
}

#[test]
fn reordered_pair_is_reported() {
    let (history, mut log) = interleaved();
    log.swap(0, 2); // w1/n1 now comes before w1/n0
    let report = run(&history, &observed(log, BTreeMap::new()));
    assert_eq!(report.count(ViolationKind::Reordered), 1, "{report}");
    assert!(report
        .violations
        .iter()
        .any(|v| v.kind == ViolationKind::Reordered
            && v.detail.contains("w1/n0")
            && v.detail.contains("w1/n1")));
    // The acknowledged offsets no longer rise with log order either.
    assert!(report.count(ViolationKind::WrongOffset) > 0, "{report}");
    let others = report.violations.iter().filter(|v| {
        !matches!(
            v.kind,
            ViolationKind::Reordered | ViolationKind::WrongOffset
        )
    });
    assert_eq!(others.count(), 0, "{report}");
}

#[test]
fn duplicate_is_reported() {
    let (history, mut log) = interleaved();
    log.push(message(2, 0));
    let report = run(&history, &observed(log, BTreeMap::new()));
    assert_eq!(kinds(&report), [ViolationKind::Duplicate], "{report}");
    assert!(report.violations[0].detail.contains("w2/n0"), "{report}");
}

#[test]
fn corrupted_bytes_are_reported() {
    let (history, mut log) = interleaved();
    let damaged = &mut log[3]; // w2/n1, damage inside the padding
    let last_pad_byte = damaged.len() - 3;
    damaged[last_pad_byte] ^= 0x01;
    let report = run(&history, &observed(log, BTreeMap::new()));
    assert_eq!(kinds(&report), [ViolationKind::Corrupted], "{report}");
    assert!(report.violations[0].detail.contains("w2/n1"), "{report}");
}

#[test]
fn wrong_offset_is_reported() {
    let (history, log) = interleaved();
    let mut probes = honest_probes(&log);
    // Reading from w1/n0's offset skips w2/n0: the offset points one message too far.
    probes.insert(offset(1), ProbeResult::Starts(log[2].clone()));
    let report = run(&history, &observed(log, probes));
    assert_eq!(kinds(&report), [ViolationKind::WrongOffset], "{report}");
    assert!(report.violations[0].detail.contains("w1/n0"), "{report}");
}

#[test]
fn offset_that_misses_the_tail_is_reported() {
    let (history, log) = interleaved();
    let mut probes = honest_probes(&log);
    probes.insert(offset(5), ProbeResult::Starts(log[4].clone()));
    probes.insert(offset(2), ProbeResult::Empty);
    probes.insert(
        offset(3),
        ProbeResult::Rejected("400: bad offset".to_owned()),
    );
    let report = run(&history, &observed(log, probes));
    assert_eq!(report.count(ViolationKind::WrongOffset), 3, "{report}");
    assert_eq!(report.violations.len(), 3, "{report}");
}

#[test]
fn offsets_out_of_log_order_are_reported() {
    let mut history = History::new();
    history.record_acknowledged(STREAM, id(1, 0), message(1, 0), offset(1));
    // A second append acknowledged with the same offset: one of them must be wrong.
    history.record_acknowledged(STREAM, id(2, 0), message(2, 0), offset(1));
    let log = vec![message(1, 0), message(2, 0)];
    let report = run(&history, &observed(log, BTreeMap::new()));
    assert_eq!(kinds(&report), [ViolationKind::WrongOffset], "{report}");
}

#[test]
fn message_never_sent_is_reported() {
    let (history, mut log) = interleaved();
    log.push(message(9, 0));
    log.push(b"garbage".to_vec());
    let report = run(&history, &observed(log, BTreeMap::new()));
    assert_eq!(
        kinds(&report),
        [ViolationKind::NeverSent, ViolationKind::NeverSent],
        "{report}"
    );
}

#[test]
fn payload_sent_to_another_stream_is_reported() {
    let (history, log) = interleaved();
    let mut observation = observed(log, BTreeMap::new());
    let elsewhere = ObservedStream {
        messages: vec![message(1, 0)],
        probes: BTreeMap::new(),
    };
    observation
        .streams
        .insert("elsewhere".to_owned(), elsewhere);
    let report = run(&history, &observation);
    assert_eq!(kinds(&report), [ViolationKind::NeverSent], "{report}");
    assert_eq!(report.violations[0].stream, "elsewhere");
}

/// History with an unknown-outcome append from writer 1 after its acknowledged ones.
fn with_unknown_tail() -> (History, Vec<Vec<u8>>) {
    let (mut history, log) = interleaved();
    history.record_unknown(STREAM, id(1, 3), message(1, 3));
    (history, log)
}

#[test]
fn unknown_outcome_may_be_absent_or_present_once() {
    let (history, log) = with_unknown_tail();
    let absent = run(&history, &observed(log.clone(), honest_probes(&log)));
    assert!(absent.is_ok(), "{absent}");

    let mut with_it = log;
    with_it.push(message(1, 3));
    let present = run(
        &history,
        &observed(with_it.clone(), honest_probes(&with_it)),
    );
    assert!(present.is_ok(), "{present}");
    assert!(present.is_present(STREAM, id(1, 3)));
}

#[test]
fn unknown_outcome_present_twice_is_a_duplicate() {
    let (history, mut log) = with_unknown_tail();
    log.push(message(1, 3));
    log.push(message(1, 3));
    let report = run(&history, &observed(log, BTreeMap::new()));
    assert_eq!(kinds(&report), [ViolationKind::Duplicate], "{report}");
}

#[test]
fn unknown_outcome_before_earlier_acknowledged_append_is_reordered() {
    let (history, mut log) = with_unknown_tail();
    log.insert(0, message(1, 3));
    let report = run(&history, &observed(log, BTreeMap::new()));
    assert_eq!(kinds(&report), [ViolationKind::Reordered], "{report}");
}

#[test]
fn settled_unknowns_keep_their_fate() {
    let (mut history, log) = with_unknown_tail();
    history.record_unknown(STREAM, id(2, 2), message(2, 2));
    // After a restart, w1/n3 is present and w2/n2 is not.
    let mut recovered = log.clone();
    recovered.push(message(1, 3));
    let first = run(&history, &observed(recovered, BTreeMap::new()));
    assert!(first.is_ok(), "{first}");
    history.settle_unknowns(|stream, id| first.is_present(stream, id));

    // Later, the recovered one vanishes and the discarded one shows up.
    let mut later = log;
    later.push(message(2, 2));
    let second = run(&history, &observed(later, BTreeMap::new()));
    assert_eq!(
        kinds(&second),
        [ViolationKind::Resurrected, ViolationKind::Lost],
        "{second}"
    );
}
