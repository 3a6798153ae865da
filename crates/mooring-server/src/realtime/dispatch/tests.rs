//! The dispatch table alone: who gets which input, and what happens when workers come and go.

use mooring_core::auth::SessionPattern;
use mooring_protocol::session::{Action, Event};

use super::table::{DispatchTable, HoldLimits, InputKey, Offer};

const HOLD_MS: u64 = 1_000;

fn table() -> DispatchTable<&'static str> {
    DispatchTable::new(HoldLimits {
        hold_ms: HOLD_MS,
        max_inputs: 3,
        max_bytes: 1 << 20,
    })
}

fn input(serial: u64) -> Event {
    Event {
        serial,
        action: Action::MessageCreate,
        id: None,
        name: Some("user-input".to_owned()),
        reference: None,
        client_id: Some("user".to_owned()),
        data: serde_json::json!("hello"),
        extras: Default::default(),
        ts: 0,
        version: None,
    }
}

fn patterns(list: &[&str]) -> Vec<SessionPattern> {
    list.iter()
        .map(|p| p.parse().unwrap_or_else(|e| panic!("{p}: {e}")))
        .collect()
}

fn key(session: &str, serial: u64) -> InputKey {
    (session.to_owned(), serial)
}

/// Where each offer went: (worker, session, serial, attempt).
fn sent(offers: Vec<Offer<&'static str>>) -> Vec<(&'static str, String, u64, u32)> {
    offers
        .into_iter()
        .map(|o| (o.link, o.session, o.input.serial, o.attempt))
        .collect()
}

fn register(
    t: &mut DispatchTable<&'static str>,
    worker: &'static str,
    pattern: &str,
    cap: Option<u32>,
) -> Vec<(&'static str, String, u64, u32)> {
    sent(
        t.register(worker, worker, patterns(&[pattern]), cap, worker, 0)
            .0,
    )
}

#[test]
fn an_input_goes_to_exactly_one_of_the_matching_workers() {
    let mut t = table();
    for w in ["w1", "w2", "w3"] {
        assert!(register(&mut t, w, "chat:*", None).is_empty());
    }
    let (offers, _) = t.input("chat:1", 0, input(4), 0);
    let offers = sent(offers);
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_eq!(
        (offers[0].1.as_str(), offers[0].2, offers[0].3),
        ("chat:1", 4, 1)
    );
    // The same input observed again (a second node's catch-up, a replay) is not offered again.
    assert!(t.input("chat:1", 0, input(4), 0).0.is_empty());
}

#[test]
fn inputs_spread_over_workers_by_load() {
    let mut t = table();
    register(&mut t, "w1", "chat:*", None);
    register(&mut t, "w2", "chat:*", None);
    let a = sent(t.input("chat:1", 0, input(1), 0).0);
    let b = sent(t.input("chat:2", 0, input(1), 0).0);
    assert_ne!(a[0].0, b[0].0, "two inputs, two idle workers: one each");
}

#[test]
fn only_workers_whose_pattern_matches_get_an_input() {
    let mut t = table();
    register(&mut t, "support", "support:*", None);
    assert!(t.input("chat:1", 0, input(1), 0).0.is_empty());
    assert_eq!(t.waiting(), 1);
    let offers = register(&mut t, "chat", "chat:**", None);
    assert_eq!(offers, vec![("chat", "chat:1".to_owned(), 1, 1)]);
}

#[test]
fn an_input_held_by_a_worker_that_dies_goes_to_another() {
    let mut t = table();
    register(&mut t, "w1", "chat:*", None);
    let first = sent(t.input("chat:1", 0, input(7), 0).0);
    assert_eq!(first[0].0, "w1");
    register(&mut t, "w2", "chat:*", None);
    let again = sent(t.connection_ended("w1", 10).0);
    assert_eq!(again, vec![("w2", "chat:1".to_owned(), 7, 2)]);
}

#[test]
fn a_started_input_is_not_given_again_when_its_worker_dies() {
    let mut t = table();
    register(&mut t, "w1", "chat:*", None);
    register(&mut t, "w2", "chat:*", None);
    let first = sent(t.input("chat:1", 0, input(7), 0).0);
    let holder = first[0].0;
    t.started("chat:1", "r1", Some(7), Some(holder));
    assert!(t.connection_ended(holder, 10).0.is_empty());
    assert_eq!((t.waiting(), t.assigned()), (0, 0));
}

#[test]
fn inputs_wait_while_no_worker_is_there_and_none_is_lost() {
    let mut t = table();
    register(&mut t, "w1", "chat:*", None);
    assert!(t.connection_ended("w1", 0).0.is_empty());
    assert!(t.input("chat:1", 0, input(1), 1).0.is_empty());
    assert!(t.input("chat:2", 0, input(1), 2).0.is_empty());
    let offers = register(&mut t, "w2", "chat:*", None);
    let serials: Vec<_> = offers.iter().map(|o| o.1.clone()).collect();
    assert_eq!(serials, ["chat:1", "chat:2"], "oldest first");
}

#[test]
fn only_the_holder_may_start_the_run_of_an_input() {
    let mut t = table();
    register(&mut t, "w1", "chat:*", None);
    let _ = t.input("chat:1", 0, input(3), 0);
    let input = key("chat:1", 3);
    assert!(t.may_start(&input, Some("w2"), "r1").is_err());
    assert!(t.may_start(&input, None, "r1").is_err());
    assert!(t.may_start(&input, Some("w1"), "r1").is_ok());
    t.started("chat:1", "r1", Some(3), Some("w1"));
    assert!(
        t.may_start(&input, Some("w2"), "r2").is_err(),
        "r1 answers it"
    );
    assert!(
        t.may_start(&input, Some("w1"), "r2").is_ok(),
        "its own second run"
    );
    assert!(
        t.may_start(&input, Some("w1"), "r1").is_ok(),
        "the same start, resent"
    );
    let _ = t.ended("chat:1", "r1", 5);
    assert!(
        t.may_start(&input, Some("w2"), "r2").is_ok(),
        "a new run after it ended"
    );
}

#[test]
fn capacity_holds_inputs_back_until_a_run_ends() {
    let mut t = table();
    register(&mut t, "w1", "chat:*", Some(1));
    assert_eq!(sent(t.input("chat:1", 0, input(1), 0).0).len(), 1);
    assert!(t.input("chat:2", 0, input(1), 0).0.is_empty(), "w1 is full");
    t.started("chat:1", "r1", Some(1), Some("w1"));
    assert_eq!(t.waiting(), 1);
    let offers = sent(t.ended("chat:1", "r1", 5).0);
    assert_eq!(offers, vec![("w1", "chat:2".to_owned(), 1, 1)]);
}

#[test]
fn a_released_input_goes_to_another_worker_and_never_back() {
    let mut t = table();
    register(&mut t, "w1", "chat:*", None);
    let _ = t.input("chat:1", 0, input(2), 0);
    assert!(
        sent(t.release("w1", &key("chat:1", 2), 1).0).is_empty(),
        "not to w1 again"
    );
    let offers = register(&mut t, "w2", "chat:*", None);
    assert_eq!(offers, vec![("w2", "chat:1".to_owned(), 2, 2)]);
    // A release by a worker that does not hold it changes nothing.
    assert!(sent(t.release("w1", &key("chat:1", 2), 2).0).is_empty());
    assert_eq!(t.assigned(), 1);
}

#[test]
fn waiting_inputs_are_bounded_in_time_and_number() {
    let mut t = table();
    for serial in 1..=4 {
        let (_, dropped) = t.input("chat:1", 0, input(serial), 0);
        assert_eq!(dropped.evicted, usize::from(serial == 4));
    }
    assert_eq!(t.waiting(), 3);
    let (_, dropped) = t.input("chat:2", 0, input(1), HOLD_MS + 1);
    assert_eq!(dropped.expired, 3);
    assert_eq!(t.waiting(), 1);
}

#[test]
fn a_narrower_registration_gives_back_what_it_no_longer_matches() {
    let mut t = table();
    register(&mut t, "w1", "**", None);
    let _ = t.input("chat:1", 0, input(1), 0);
    register(&mut t, "w2", "chat:*", None);
    let offers = register(&mut t, "w1", "support:*", None);
    assert_eq!(offers, vec![("w2", "chat:1".to_owned(), 1, 2)]);
}

/// With several nodes: an input heard of from another node is taken in only for a matching
/// worker here, and only inputs written here are announced again while they wait.
#[test]
fn inputs_of_other_nodes_come_in_only_for_a_matching_worker() {
    let mut t = table();
    register(&mut t, "support", "support:*", None);
    assert!(t.remote_input("chat:1", 0, input(1), 0).0.is_empty());
    assert_eq!(t.waiting(), 0, "no worker here could answer it");
    register(&mut t, "busy", "chat:*", Some(0));
    assert!(t.remote_input("chat:1", 0, input(1), 0).0.is_empty());
    assert_eq!(t.waiting(), 1, "a matching worker, with no room yet");
    t.input("chat:2", 0, input(5), 0);
    let local: Vec<InputKey> = t.local_waiting().into_iter().map(|w| w.key).collect();
    assert_eq!(local, [key("chat:2", 5)], "only the input written here");
}

/// An input offered here holds this node's claim: handed on between this node's workers it
/// keeps it; waiting again, it is returned once; taken elsewhere, it is forgotten and the
/// worker's room goes to the next input.
#[test]
fn a_claimed_input_that_waits_again_is_returned_once() {
    let mut t = table();
    register(&mut t, "w1", "chat:*", Some(1));
    let offered = sent(t.input("chat:1", 0, input(1), 0).0);
    assert_eq!(offered[0].0, "w1");
    assert!(t.returned().is_empty(), "no claim won yet");
    assert_eq!(
        t.claim_won(&key("chat:1", 1), "w1"),
        super::table::ClaimWon::Send
    );
    assert!(t.returned().is_empty(), "offered, not waiting");
    t.connection_ended("w1", 0);
    let returned: Vec<InputKey> = t.returned().into_iter().map(|w| w.key).collect();
    assert_eq!(returned, [key("chat:1", 1)]);
    assert!(t.returned().is_empty(), "returned once");

    let offered = register(&mut t, "w2", "chat:*", Some(1));
    assert_eq!(offered, vec![("w2", "chat:1".to_owned(), 1, 2)]);
    assert!(t.input("chat:1", 0, input(2), 0).0.is_empty(), "w2 is full");
    let next = sent(t.taken_elsewhere(&key("chat:1", 1), 0).0);
    assert_eq!(
        next,
        vec![("w2", "chat:1".to_owned(), 2, 1)],
        "its room goes on"
    );
    t.put_back(&key("chat:1", 2));
    assert!(t.is_waiting(&key("chat:1", 2)));
    let returned: Vec<InputKey> = t.returned().into_iter().map(|w| w.key).collect();
    assert_eq!(
        returned,
        [key("chat:1", 2)],
        "a claim that may have landed is given back"
    );
}

/// A claim won for an offer that no longer stands is not lost: if the input waits again it
/// counts as held here (to be given back), and if it is gone the claim is not needed.
#[test]
fn a_claim_won_late_is_given_back_not_kept() {
    use super::table::ClaimWon;
    let mut t = table();
    register(&mut t, "w1", "chat:*", Some(1));
    t.input("chat:1", 0, input(1), 0);
    assert_eq!(t.claim_won(&key("chat:1", 1), "w1"), ClaimWon::Send);
    t.input("chat:1", 0, input(2), 0);
    t.connection_ended("w1", 0);
    t.returned();
    // w1 died before the claim of its second offer came back.
    assert_eq!(t.claim_won(&key("chat:1", 2), "w1"), ClaimWon::Stale);
    let returned: Vec<InputKey> = t.returned().into_iter().map(|w| w.key).collect();
    assert!(returned.contains(&key("chat:1", 2)), "{returned:?}");
    assert_eq!(t.claim_won(&key("chat:9", 9), "w1"), ClaimWon::Unneeded);
}
