//! A crash-test writer: appends self-identifying messages one at a time until the server stops
//! answering, and records what it was told.

use crate::client::{AppendOutcome, StreamClient};
use crate::history::{History, PayloadId};
use crate::payload;
use crate::rng::SeededRng;

/// What one writer does in one run.
#[derive(Clone, Debug)]
pub struct WriterPlan {
    pub writer: u32,
    pub stream: String,
    /// Sequence numbers continue across runs, so every payload stays unique.
    pub first_seq: u64,
    /// Upper bound on appends, so a server that never dies cannot keep the test running.
    pub max_appends: u64,
    pub max_pad: u64,
}

/// What a writer did.
#[derive(Debug)]
pub struct WriterRun {
    /// This run's appends, in send order.
    pub history: History,
    /// The sequence number to start the next run at.
    pub next_seq: u64,
    /// Appends whose connection was refused: certainly not applied, so not in the history,
    /// and the checker reports them as never sent if they show up.
    pub not_delivered: u64,
}

/// Appends until the first append without an acknowledgement.
///
/// Only one append is in flight at a time, so send order is acknowledgement order, and after
/// the first failure nothing of this writer can still be on its way to the server.
pub async fn run_writer(client: StreamClient, plan: WriterPlan, mut rng: SeededRng) -> WriterRun {
    let mut run = WriterRun {
        history: History::new(),
        next_seq: plan.first_seq,
        not_delivered: 0,
    };
    for _ in 0..plan.max_appends {
        let id = PayloadId {
            writer: plan.writer,
            seq: run.next_seq,
        };
        run.next_seq += 1;
        let pad = usize::try_from(rng.between(0, plan.max_pad)).unwrap_or(0);
        let message = payload::encode(id, pad);
        match client.append_json(&plan.stream, message.clone()).await {
            AppendOutcome::Acknowledged { offset } => {
                run.history
                    .record_acknowledged(&plan.stream, id, message, offset);
            }
            AppendOutcome::Unknown { .. } => {
                run.history.record_unknown(&plan.stream, id, message);
                break;
            }
            AppendOutcome::NotDelivered { .. } => {
                run.not_delivered += 1;
                break;
            }
        }
    }
    run
}
