//! Appends and closes: the rules, as a pure function from a stream's state to a plan.
//!
//! Every engine runs [`plan_append`] while it holds the stream's write lock (or inside its
//! atomic script), then applies the plan atomically: the record, the new stream state and the
//! producer state land together or not at all.

use bytes::Bytes;
use mooring_protocol::{durable_streams::ProducerClaim, Position};

use crate::producer::{judge, ProducerError, ProducerState, ProducerVerdict};
use crate::stream::StreamState;

/// An append, a close, or an append that closes.
#[derive(Clone, Debug, Default)]
pub struct AppendRequest {
    /// Content type of the body; required when `items` is not empty.
    pub content_type: Option<String>,
    /// Records to append, atomically and with contiguous serials; each holds its items (one
    /// for bytes, one per message in JSON mode). Empty only for a close without data.
    pub records: Vec<Vec<Bytes>>,
    /// Close the stream after this append (atomically).
    pub close: bool,
    /// `Stream-Seq`: must exceed the last one byte-wise.
    pub stream_seq: Option<String>,
    pub producer: Option<ProducerClaim>,
}

/// What an accepted append changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendPlan {
    /// Records to write at serials `first_serial..`, in order; empty if no data is appended.
    pub records: Vec<Vec<Bytes>>,
    /// Serial of the first record written.
    pub first_serial: u64,
    /// The stream state after the append.
    pub state: StreamState,
    /// The producer state to remember, if the request carried a claim that was accepted.
    pub producer: Option<(String, ProducerState)>,
    pub outcome: AppendOutcome,
}

/// How an append was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The tail after the request.
    pub next: Position,
    /// The stream is closed (by this request or before it).
    pub closed: bool,
    pub kind: AppendKind,
    /// The producer state to echo (`Producer-Epoch`, `Producer-Seq`).
    pub producer: Option<ProducerState>,
}

/// Whether anything was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendKind {
    /// New data or a new closure was written.
    Written,
    /// A retry of something already written: nothing new.
    Duplicate,
}

/// Why an append was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("stream not found")]
    NotFound,
    #[error("stream was deleted")]
    Gone,
    #[error("stream is closed; no further appends are accepted")]
    Closed { next: Position },
    #[error("content type {given:?} does not match the stream's {expected:?}")]
    ContentTypeMismatch { given: String, expected: String },
    #[error("Stream-Seq {given:?} is not greater than the last accepted {last:?}")]
    SeqRegression { given: String, last: String },
    #[error(transparent)]
    Producer(#[from] ProducerError),
    #[error("an append needs data or Stream-Closed: true")]
    Empty,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Decides an append against the stream's current state and its producer's state.
pub fn plan_append(
    state: &StreamState,
    producer: Option<ProducerState>,
    req: &AppendRequest,
    now_ms: u64,
) -> Result<AppendPlan, AppendError> {
    if state.soft_deleted {
        return Err(AppendError::Gone);
    }
    let has_data = !req.records.is_empty();
    if req.records.iter().any(Vec::is_empty) {
        return Err(AppendError::Empty);
    }
    if !has_data && !req.close {
        return Err(AppendError::Empty);
    }
    if state.closed {
        return already_closed(state, producer, req);
    }
    if has_data {
        let given = req.content_type.as_deref().unwrap_or_default();
        if !state.config.accepts(given) {
            return Err(AppendError::ContentTypeMismatch {
                given: given.to_owned(),
                expected: state.config.content_type.clone(),
            });
        }
    }
    let mut next_producer = None;
    if let Some(claim) = &req.producer {
        match judge(producer, claim)? {
            ProducerVerdict::Duplicate(echo) => {
                return Ok(unchanged(state, AppendKind::Duplicate, Some(echo)));
            }
            ProducerVerdict::Accept(accepted) => next_producer = Some((claim.id.clone(), accepted)),
        }
    }
    if let (Some(given), Some(last)) = (&req.stream_seq, &state.stream_seq) {
        if given.as_bytes() <= last.as_bytes() {
            return Err(AppendError::SeqRegression {
                given: given.clone(),
                last: last.clone(),
            });
        }
    }
    let mut next = state.clone();
    next.tail += req.records.len() as u64;
    if req.close {
        next.closed = true;
        next.closed_by = req.producer.clone();
    }
    if req.stream_seq.is_some() {
        next.stream_seq = req.stream_seq.clone();
    }
    next.last_write_ms = now_ms.max(state.last_write_ms);
    let outcome = AppendOutcome {
        next: next.tail_position(),
        closed: next.closed,
        kind: AppendKind::Written,
        producer: next_producer.as_ref().map(|(_, s)| *s),
    };
    Ok(AppendPlan {
        records: req.records.clone(),
        first_serial: state.tail + 1,
        state: next,
        producer: next_producer,
        outcome,
    })
}

/// A closed stream accepts only a retry of the closing request or another close without data.
fn already_closed(
    state: &StreamState,
    producer: Option<ProducerState>,
    req: &AppendRequest,
) -> Result<AppendPlan, AppendError> {
    let is_closing_retry = req.producer.is_some() && req.producer == state.closed_by;
    if is_closing_retry {
        return Ok(unchanged(state, AppendKind::Duplicate, producer));
    }
    if req.close && req.records.is_empty() {
        return Ok(unchanged(state, AppendKind::Duplicate, None));
    }
    Err(AppendError::Closed {
        next: state.tail_position(),
    })
}

fn unchanged(state: &StreamState, kind: AppendKind, producer: Option<ProducerState>) -> AppendPlan {
    AppendPlan {
        records: Vec::new(),
        first_serial: state.tail + 1,
        state: state.clone(),
        producer: None,
        outcome: AppendOutcome {
            next: state.tail_position(),
            closed: state.closed,
            kind,
            producer,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Expiry, StreamConfig};

    fn open_stream() -> StreamState {
        StreamState {
            config: StreamConfig {
                content_type: "text/plain".into(),
                requested_expiry: Expiry::Never,
                expiry: Expiry::Never,
                fork: None,
            },
            epoch: 0,
            tail: 0,
            closed: false,
            closed_by: None,
            stream_seq: None,
            created_ms: 0,
            last_write_ms: 0,
            forks: 0,
            soft_deleted: false,
            trimmed: 0,
            kept_from_ms: 0,
            retain_ms: None,
        }
    }

    fn data(text: &'static str) -> AppendRequest {
        AppendRequest {
            content_type: Some("text/plain".into()),
            records: vec![vec![Bytes::from_static(text.as_bytes())]],
            ..AppendRequest::default()
        }
    }

    #[test]
    fn an_append_takes_the_next_serial() {
        let plan = plan_append(&open_stream(), None, &data("a"), 5);
        let plan = plan.expect("append is accepted");
        assert_eq!(plan.state.tail, 1);
        assert_eq!(plan.state.last_write_ms, 5);
        assert_eq!(plan.outcome.kind, AppendKind::Written);
        assert_eq!(plan.records.len(), 1);
        assert_eq!(plan.first_serial, 1);
    }

    #[test]
    fn closed_wins_over_content_type_and_seq_conflicts() {
        let mut s = open_stream();
        s.closed = true;
        s.stream_seq = Some("9".into());
        let mut req = data("x");
        req.content_type = Some("application/json".into());
        req.stream_seq = Some("1".into());
        assert!(matches!(
            plan_append(&s, None, &req, 0),
            Err(AppendError::Closed { .. })
        ));
    }

    #[test]
    fn stream_seq_compares_bytewise() {
        let mut s = open_stream();
        s.stream_seq = Some("2".into());
        let mut req = data("x");
        req.stream_seq = Some("10".into());
        assert!(matches!(
            plan_append(&s, None, &req, 0),
            Err(AppendError::SeqRegression { .. })
        ));
        s.stream_seq = Some("09".into());
        assert!(plan_append(&s, None, &req, 0).is_ok());
    }

    #[test]
    fn close_without_data_is_idempotent() {
        let mut s = open_stream();
        s.closed = true;
        let req = AppendRequest {
            close: true,
            ..AppendRequest::default()
        };
        let plan = plan_append(&s, None, &req, 0).expect("idempotent close");
        assert_eq!(plan.outcome.kind, AppendKind::Duplicate);
        assert!(plan.outcome.closed);
    }

    #[test]
    fn only_the_closing_producer_tuple_retries_successfully() {
        let claim = ProducerClaim {
            id: "p".into(),
            epoch: 0,
            seq: 3,
        };
        let mut closing = data("last");
        closing.close = true;
        closing.producer = Some(claim.clone());
        let plan = plan_append(
            &open_stream(),
            Some(ProducerState {
                epoch: 0,
                last_seq: 2,
            }),
            &closing,
            0,
        )
        .expect("closing append");
        let closed = plan.state;
        assert_eq!(closed.closed_by, Some(claim));
        let retry = plan_append(&closed, plan.producer.map(|p| p.1), &closing, 0);
        assert_eq!(retry.map(|p| p.outcome.kind), Ok(AppendKind::Duplicate));
        let mut other = closing.clone();
        other.producer = Some(ProducerClaim {
            id: "p".into(),
            epoch: 0,
            seq: 4,
        });
        assert!(matches!(
            plan_append(&closed, None, &other, 0),
            Err(AppendError::Closed { .. })
        ));
    }

    #[test]
    fn a_batch_takes_contiguous_serials() {
        let mut s = open_stream();
        s.tail = 4;
        let mut req = data("a");
        req.records.push(vec![Bytes::from_static(b"b")]);
        let plan = plan_append(&s, None, &req, 0).expect("batch");
        assert_eq!((plan.first_serial, plan.state.tail), (5, 6));
        assert_eq!(plan.outcome.next.serial, 6);
        req.records.push(Vec::new());
        assert_eq!(plan_append(&s, None, &req, 0), Err(AppendError::Empty));
    }

    #[test]
    fn an_empty_request_without_close_is_refused() {
        let req = AppendRequest::default();
        assert_eq!(
            plan_append(&open_stream(), None, &req, 0),
            Err(AppendError::Empty)
        );
    }
}
