//! Idempotent producers: which `(id, epoch, seq)` claims are new, duplicate, or refused.

use mooring_protocol::durable_streams::ProducerClaim;
use serde::{Deserialize, Serialize};

/// What the store remembers of one producer on one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerState {
    pub epoch: u64,
    pub last_seq: u64,
}

/// The verdict on a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerVerdict {
    /// New data: append it and remember this state.
    Accept(ProducerState),
    /// Already appended: acknowledge without writing; echo this state.
    Duplicate(ProducerState),
}

/// Why a claim was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("stale producer epoch {claimed}: this producer is at epoch {current}")]
    StaleEpoch { claimed: u64, current: u64 },
    #[error("a new producer epoch must start at Producer-Seq 0")]
    NewEpochMustStartAtZero,
    #[error("producer sequence gap: expected {expected}, received {received}")]
    SeqGap { expected: u64, received: u64 },
}

/// Judges `claim` against the producer's remembered state (`None` if never seen).
pub fn judge(
    state: Option<ProducerState>,
    claim: &ProducerClaim,
) -> Result<ProducerVerdict, ProducerError> {
    let accept = |seq| {
        Ok(ProducerVerdict::Accept(ProducerState {
            epoch: claim.epoch,
            last_seq: seq,
        }))
    };
    let Some(state) = state else {
        return match claim.seq {
            0 => accept(0),
            received => Err(ProducerError::SeqGap {
                expected: 0,
                received,
            }),
        };
    };
    if claim.epoch < state.epoch {
        return Err(ProducerError::StaleEpoch {
            claimed: claim.epoch,
            current: state.epoch,
        });
    }
    if claim.epoch > state.epoch {
        return match claim.seq {
            0 => accept(0),
            _ => Err(ProducerError::NewEpochMustStartAtZero),
        };
    }
    if claim.seq <= state.last_seq {
        Ok(ProducerVerdict::Duplicate(state))
    } else if claim.seq == state.last_seq + 1 {
        accept(claim.seq)
    } else {
        Err(ProducerError::SeqGap {
            expected: state.last_seq + 1,
            received: claim.seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claim(epoch: u64, seq: u64) -> ProducerClaim {
        ProducerClaim {
            id: "p".into(),
            epoch,
            seq,
        }
    }

    fn st(epoch: u64, last_seq: u64) -> Option<ProducerState> {
        Some(ProducerState { epoch, last_seq })
    }

    #[test]
    fn follows_the_protocol_table() {
        use ProducerVerdict::*;
        assert_eq!(
            judge(None, &claim(0, 0)),
            Ok(Accept(ProducerState {
                epoch: 0,
                last_seq: 0
            }))
        );
        assert_eq!(
            judge(None, &claim(0, 3)),
            Err(ProducerError::SeqGap {
                expected: 0,
                received: 3
            })
        );
        assert_eq!(
            judge(st(0, 0), &claim(0, 0)),
            Ok(Duplicate(ProducerState {
                epoch: 0,
                last_seq: 0
            }))
        );
        assert_eq!(
            judge(st(0, 4), &claim(0, 5)),
            Ok(Accept(ProducerState {
                epoch: 0,
                last_seq: 5
            }))
        );
        assert_eq!(
            judge(st(0, 0), &claim(0, 5)),
            Err(ProducerError::SeqGap {
                expected: 1,
                received: 5
            })
        );
        assert_eq!(
            judge(st(0, 7), &claim(1, 0)),
            Ok(Accept(ProducerState {
                epoch: 1,
                last_seq: 0
            }))
        );
        assert_eq!(
            judge(st(0, 7), &claim(1, 1)),
            Err(ProducerError::NewEpochMustStartAtZero)
        );
        assert_eq!(
            judge(st(1, 0), &claim(0, 1)),
            Err(ProducerError::StaleEpoch {
                claimed: 0,
                current: 1
            })
        );
    }

    proptest! {
        /// Replaying any sequence of claims through `judge` accepts each (epoch, seq) at most
        /// once, and accepted claims increase strictly.
        #[test]
        fn never_accepts_a_claim_twice(claims in proptest::collection::vec((0u64..3, 0u64..6), 0..60)) {
            let mut state = None;
            let mut accepted: Vec<(u64, u64)> = Vec::new();
            for (epoch, seq) in claims {
                if let Ok(ProducerVerdict::Accept(next)) = judge(state, &claim(epoch, seq)) {
                    prop_assert!(!accepted.contains(&(epoch, seq)));
                    if let Some(last) = accepted.last() {
                        prop_assert!((epoch, seq) > *last);
                    }
                    accepted.push((epoch, seq));
                    state = Some(next);
                }
            }
        }

        /// A retry of the last accepted claim is always a duplicate.
        #[test]
        fn retry_of_the_last_accepted_is_a_duplicate(epoch in 0u64..5, seq in 0u64..100) {
            let state = st(epoch, seq);
            prop_assert!(matches!(judge(state, &claim(epoch, seq)), Ok(ProducerVerdict::Duplicate(_))));
        }
    }
}
