//! Retention: a session keeps its events for a set time, and the sweeper trims older ones.
//!
//! A trim removes a prefix of the log: the records up to a serial, the materialized messages
//! nothing after that serial changed (so the view still folds from what is kept), and the
//! publish ids of the removed events. The state remembers the serial (`trimmed`): a read from
//! before it is refused ([`crate::read::ReadError::BeforeRetained`]) instead of answered with
//! a gap.

use mooring_protocol::session::MessageView;

use crate::session::{decode_publish_id, event_of};
use crate::store::{AuxTable, LogTxn, StoreError};
use crate::stream::{Record, StreamState};

/// Bytes of records examined per session per sweep: a long backlog is trimmed over several
/// sweeps, so one sweep's work stays bounded.
const SCAN_BYTES: usize = 1 << 20;

/// How far past its retention the oldest record may get before a trim: a tenth of the
/// retention, at least a second. Each trim rewrites the session's view, so trims come in steps
/// rather than at every sweep of a busy session.
fn slack_ms(retain_ms: u64) -> u64 {
    (retain_ms / 10).max(1_000)
}

/// Trims `name`'s records older than its retention; returns whether it removed any.
pub(crate) fn trim(
    txn: &mut impl LogTxn,
    name: &str,
    state: &StreamState,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let Some(retain_ms) = state.retain_ms else {
        return Ok(false);
    };
    if !trim_due(state, now_ms) {
        return Ok(false);
    }
    let cutoff = now_ms.saturating_sub(retain_ms);
    let records = txn.records(name, state.trimmed, state.tail, SCAN_BYTES)?;
    let Some(point) = trim_point(&records, cutoff, now_ms) else {
        return Ok(false);
    };
    txn.trim_records(name, point.upto)?;
    for (key, bytes) in txn.aux_all(name, AuxTable::Messages)? {
        let message: MessageView = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("message {key:?} of {name:?}: {e}")))?;
        if message.version <= point.upto {
            txn.remove_aux(name, AuxTable::Messages, &key)?;
        }
    }
    for (key, value) in txn.aux_all(name, AuxTable::PublishIds)? {
        if decode_publish_id(&value).is_none_or(|(serial, _)| serial <= point.upto) {
            txn.remove_aux(name, AuxTable::PublishIds, &key)?;
        }
    }
    let mut state = state.clone();
    state.trimmed = point.upto;
    state.kept_from_ms = point.kept_from_ms;
    txn.put_state(name, &state)?;
    Ok(true)
}

/// Whether the oldest record kept is past the retention by a step: decided from the state
/// alone, so a sweep costs one state read per session until a trim is due. Before the first
/// trim, the creation stands for the oldest record.
pub fn trim_due(state: &StreamState, now_ms: u64) -> bool {
    let Some(retain_ms) = state.retain_ms else {
        return false;
    };
    if state.trimmed >= state.tail || state.soft_deleted {
        return false;
    }
    let oldest_ms = if state.trimmed == 0 {
        state.created_ms
    } else {
        state.kept_from_ms
    };
    oldest_ms.saturating_add(slack_ms(retain_ms)) < now_ms.saturating_sub(retain_ms)
}

/// Where a trim ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TrimPoint {
    /// The last serial that goes.
    upto: u64,
    /// The time of the first record kept if it was read, else of the last one that goes.
    kept_from_ms: u64,
}

/// The time an event was written, if the record carries one (records appended through the
/// Durable Streams surface do not). A time after `now_ms` is not believed (a Durable Streams
/// client can write an event-shaped message): it would hold trims back for good.
fn stamp(record: &Record, now_ms: u64) -> Option<u64> {
    Some(event_of(record).ts).filter(|ts| *ts > 0 && *ts <= now_ms)
}

/// Where a trim of `records` (in serial order) ends: at the last stamped record older than
/// `cutoff`, with the unstamped records before it. Unstamped records after it stay until a
/// later stamped record shows that they are old enough.
fn trim_point(records: &[Record], cutoff: u64, now_ms: u64) -> Option<TrimPoint> {
    let mut point: Option<TrimPoint> = None;
    for record in records {
        match stamp(record, now_ms) {
            Some(ts) if ts < cutoff => {
                point = Some(TrimPoint {
                    upto: record.serial,
                    kept_from_ms: ts,
                });
            }
            Some(ts) => {
                if let Some(point) = &mut point {
                    point.kept_from_ms = ts;
                }
                break;
            }
            None => {}
        }
    }
    point
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn stamped(serial: u64, ts: u64) -> Record {
        let event = format!(r#"{{"serial":{serial},"action":"event","ts":{ts}}}"#);
        Record {
            serial,
            items: vec![Bytes::from(event)],
        }
    }

    fn unstamped(serial: u64) -> Record {
        Record {
            serial,
            items: vec![Bytes::from_static(b"[1,2]"), Bytes::from_static(b"3")],
        }
    }

    const NOW: u64 = 1_000;

    fn upto(records: &[Record], cutoff: u64) -> Option<u64> {
        trim_point(records, cutoff, NOW).map(|p| p.upto)
    }

    #[test]
    fn the_trim_point_is_the_last_record_older_than_the_cutoff() {
        let records = [
            stamped(4, 10),
            stamped(5, 20),
            stamped(6, 30),
            stamped(7, 25),
        ];
        assert_eq!(
            trim_point(&records, 25, NOW),
            Some(TrimPoint {
                upto: 5,
                kept_from_ms: 30
            })
        );
        assert_eq!(upto(&records, 10), None);
        assert_eq!(
            trim_point(&records, 100, NOW),
            Some(TrimPoint {
                upto: 7,
                kept_from_ms: 25
            }),
            "nothing kept was read: the last trimmed time is the bound"
        );
    }

    #[test]
    fn unstamped_records_go_only_with_an_older_stamped_one_after_them() {
        let records = [stamped(1, 10), unstamped(2), stamped(3, 20), unstamped(4)];
        assert_eq!(upto(&records, 15), Some(1));
        assert_eq!(upto(&records, 21), Some(3), "4 may be new");
        assert_eq!(upto(&[unstamped(1), unstamped(2)], u64::MAX), None);
        let future = [stamped(1, 10), stamped(2, NOW + 1), stamped(3, 20)];
        assert_eq!(
            upto(&future, 30),
            Some(3),
            "a time from the future is no stamp"
        );
    }

    #[test]
    fn trims_come_in_steps_of_a_tenth_of_the_retention() {
        assert_eq!(slack_ms(86_400_000), 8_640_000);
        assert_eq!(slack_ms(2_000), 1_000);
    }
}
