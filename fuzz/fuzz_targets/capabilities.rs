//! Capability grants as tokens and keys carry them (`mooring_core::auth`): session-name
//! patterns and operation names from arbitrary text. Lines `a PATTERN=OPS` and `b PATTERN=OPS`
//! build two capability sets; lines `s NAME` are sessions to probe. Parsing never panics, and
//! for every probe and operation:
//! - a set written as a token's `caps` claim and read back allows exactly what it did;
//! - if `a` is within `b` (what `POST /v1/tokens` checks before minting), `a` allows nothing
//!   `b` does not: no escalation through patterns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mooring_core::auth::{Capabilities, Operation};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (mut a, mut b) = (Capabilities::default(), Capabilities::default());
    let mut sessions = Vec::new();
    for line in text.lines() {
        match line.split_at_checked(2) {
            Some(("a ", grant)) => {
                let _ = a.add_text(grant);
            }
            Some(("b ", grant)) => {
                let _ = b.add_text(grant);
            }
            Some(("s ", session)) => sessions.push(session),
            _ => {}
        }
    }
    let claim = a.to_claim();
    let back = Capabilities::from_pairs(
        claim
            .iter()
            .map(|(p, ops)| (p.as_str(), ops.iter().map(String::as_str))),
    )
    .expect("a claim written from grants reads back");
    let within = a.is_within(&b);
    // (Not `back.is_within(&a)`: the claim merges grants of one pattern, and the check is
    // per grant, conservatively.)
    assert!(a.is_within(&a) && a.is_within(&back));
    for session in sessions {
        for op in Operation::ALL {
            let allowed = a.allows(session, op);
            assert_eq!(allowed, back.allows(session, op), "{session:?} {op}");
            if within && allowed {
                assert!(b.allows(session, op), "{session:?} {op}: a is within b");
            }
        }
    }
});
