//! The operations every engine runs, written once over [`LogView`] and [`LogTxn`].
//!
//! Each write operation validates first and writes last, so a refused request leaves the
//! transaction untouched and engines can batch many operations into one commit.

use crate::access::AccessTracker;
use crate::append::{plan_append, AppendError, AppendOutcome, AppendRequest};
use crate::create::{
    fork_point, fork_state, matches_existing, new_stream_state, CreateError, CreateOutcome,
    CreateRequest,
};
use crate::read::{start_serial, HeadError, ReadBatch, ReadError};
use crate::store::{DeleteError, LogTxn, LogView, StoreError};
use crate::stream::{StreamInfo, StreamState};
use crate::{Position, ReadFrom};

/// Records copied per step when a fork inherits its source's records.
const FORK_COPY_BATCH_BYTES: usize = 4 << 20;

/// What an operation knows of time.
#[derive(Clone, Copy, Debug)]
pub struct Now<'a> {
    pub ms: u64,
    pub access: &'a AccessTracker,
}

impl Now<'_> {
    fn expired(&self, name: &str, state: &StreamState) -> bool {
        let last = self.access.last_access(name, state.last_write_ms);
        state.config.expiry.has_expired(self.ms, last) || state.retention_lapsed(self.ms)
    }
}

/// A stream's state if it exists and has not expired.
pub(crate) fn live_state(
    view: &mut impl LogView,
    name: &str,
    now: Now<'_>,
) -> Result<Option<StreamState>, StoreError> {
    Ok(view.state(name)?.filter(|s| !now.expired(name, s)))
}

/// Like [`live_state`], but reclaims an expired stream inside the transaction.
pub(crate) fn live_state_reclaiming(
    txn: &mut impl LogTxn,
    name: &str,
    now: Now<'_>,
) -> Result<Option<StreamState>, StoreError> {
    match txn.state(name)? {
        Some(s) if now.expired(name, &s) => {
            remove_and_release(txn, name, &s, now)?;
            Ok(None)
        }
        other => Ok(other),
    }
}

pub fn create(
    txn: &mut impl LogTxn,
    name: &str,
    req: &CreateRequest,
    now: Now<'_>,
) -> Result<CreateOutcome, CreateError> {
    if let Some(existing) = live_state_reclaiming(txn, name, now)? {
        if existing.soft_deleted {
            return Err(CreateError::PathSoftDeleted);
        }
        return if matches_existing(&existing, req) {
            Ok(CreateOutcome::Existed(existing.info()))
        } else {
            Err(CreateError::ConfigMismatch)
        };
    }
    let state = match &req.fork {
        None => new_stream_state(req, now.ms),
        Some(origin) => {
            let source = live_state_reclaiming(txn, &origin.source, now)?
                .ok_or_else(|| CreateError::SourceNotFound(origin.source.clone()))?;
            if source.soft_deleted {
                return Err(CreateError::SourceSoftDeleted(origin.source.clone()));
            }
            let anchor = origin.offset.map_or(source.tail, |p| p.serial);
            let next = txn
                .records(&origin.source, anchor, anchor + 1, 0)?
                .into_iter()
                .next();
            let point = fork_point(&source, origin, next.as_ref())?;
            let state = fork_state(&source, req, &point, now.ms)?;
            copy_records(txn, &origin.source, name, source.trimmed, point.upto)?;
            if let Some(partial) = &point.partial {
                txn.put_record(name, point.upto + 1, partial)?;
            }
            let mut source = source;
            source.forks += 1;
            txn.put_state(&origin.source, &source)?;
            state
        }
    };
    if !req.items.is_empty() {
        txn.put_record(name, state.tail, &req.items)?;
    }
    txn.put_state(name, &state)?;
    Ok(CreateOutcome::Created(state.info()))
}

fn copy_records(
    txn: &mut impl LogTxn,
    source: &str,
    target: &str,
    after: u64,
    upto: u64,
) -> Result<(), StoreError> {
    let mut after = after;
    while after < upto {
        let batch = txn.records(source, after, upto, FORK_COPY_BATCH_BYTES)?;
        let Some(last) = batch.last().map(|r| r.serial) else {
            return Err(StoreError::Corrupt(format!(
                "stream {source:?} is missing records after serial {after}"
            )));
        };
        for record in &batch {
            txn.put_record(target, record.serial, &record.items)?;
        }
        after = last;
    }
    Ok(())
}

pub fn append(
    txn: &mut impl LogTxn,
    name: &str,
    req: &AppendRequest,
    now: Now<'_>,
) -> Result<AppendOutcome, AppendError> {
    let state = live_state_reclaiming(txn, name, now)?.ok_or(AppendError::NotFound)?;
    let producer = match &req.producer {
        Some(claim) => txn.producer(name, &claim.id)?,
        None => None,
    };
    let plan = plan_append(&state, producer, req, now.ms)?;
    for (serial, items) in (plan.first_serial..).zip(&plan.records) {
        txn.put_record(name, serial, items)?;
    }
    if let Some((id, producer)) = &plan.producer {
        txn.put_producer(name, id, *producer)?;
    }
    if plan.state != state {
        txn.put_state(name, &plan.state)?;
    }
    Ok(plan.outcome)
}

pub fn delete(txn: &mut impl LogTxn, name: &str, now: Now<'_>) -> Result<(), DeleteError> {
    let state = live_state_reclaiming(txn, name, now)?.ok_or(DeleteError::NotFound)?;
    if state.soft_deleted {
        return Err(DeleteError::Gone);
    }
    if state.forks > 0 {
        // Forks hold their own copies, so the data can go now; the entry stays as a tombstone.
        txn.clear_data(name)?;
        let mut tombstone = state;
        tombstone.soft_deleted = true;
        txn.put_state(name, &tombstone)?;
    } else {
        remove_and_release(txn, name, &state, now)?;
    }
    now.access.forget(name);
    Ok(())
}

/// Removes a stream and releases its fork source, cascading up the chain of soft-deleted
/// sources that no fork needs any more.
fn remove_and_release(
    txn: &mut impl LogTxn,
    name: &str,
    state: &StreamState,
    now: Now<'_>,
) -> Result<(), StoreError> {
    txn.remove_stream(name)?;
    now.access.forget(name);
    let mut origin = state.config.fork.as_ref().map(|f| f.source.clone());
    while let Some(source_name) = origin.take() {
        let Some(mut source) = txn.state(&source_name)? else {
            break;
        };
        source.forks = source.forks.saturating_sub(1);
        if source.soft_deleted && source.forks == 0 {
            txn.remove_stream(&source_name)?;
            origin = source.config.fork.as_ref().map(|f| f.source.clone());
        } else {
            txn.put_state(&source_name, &source)?;
        }
    }
    Ok(())
}

/// Removes every expired stream and trims the records retained ones no longer keep; returns
/// how many streams it changed.
pub fn sweep_expired(txn: &mut impl LogTxn, now: Now<'_>) -> Result<usize, StoreError> {
    let mut changed = 0;
    for (name, _) in txn.expiring_streams()? {
        changed += usize::from(sweep_stream(txn, &name, now)?);
    }
    Ok(changed)
}

/// Whether a sweep has work on `name`: it expired, or a trim is due. From the state alone, so
/// an engine can read many states at once and sweep only these.
pub fn sweep_due(name: &str, state: &StreamState, now: Now<'_>) -> bool {
    now.expired(name, state) || crate::retention::trim_due(state, now.ms)
}

/// Removes `name` if it expired, or trims the records its retention no longer keeps; returns
/// whether it changed anything. The unit of a sweep, for engines that sweep stream by stream.
pub fn sweep_stream(txn: &mut impl LogTxn, name: &str, now: Now<'_>) -> Result<bool, StoreError> {
    // Read here, not taken from the index: an earlier removal in the same sweep may have
    // changed the fork counts.
    let Some(state) = txn.state(name)? else {
        return Ok(false);
    };
    if now.expired(name, &state) {
        remove_and_release(txn, name, &state, now)?;
        return Ok(true);
    }
    crate::retention::trim(txn, name, &state, now.ms)
}

pub fn read(
    view: &mut impl LogView,
    name: &str,
    from: ReadFrom,
    max_bytes: usize,
    now: Now<'_>,
) -> Result<ReadBatch, ReadError> {
    let state = live_state(view, name, now)?.ok_or(ReadError::NotFound)?;
    if state.soft_deleted {
        return Err(ReadError::Gone);
    }
    now.access.touch(name, now.ms);
    let after = start_serial(&state, from)?;
    let records = if after < state.tail {
        view.records(name, after, state.tail, max_bytes)?
    } else {
        Vec::new()
    };
    Ok(ReadBatch {
        records,
        info: state.info(),
        start: Position {
            epoch: state.epoch,
            serial: after,
        },
    })
}

/// Starts a new life of `name` if it is still in life `epoch`, keeping its records; answers
/// the tail of the life it is in afterwards. For a log that lost its end (a Redis failover to
/// a replica that lacked the last writes): its serials were given out again, so positions of
/// the old life must not be honoured any more. A log already in another life is left alone
/// (another node noticed first).
pub fn renew_life(
    txn: &mut impl LogTxn,
    name: &str,
    epoch: u64,
    now: Now<'_>,
) -> Result<Position, HeadError> {
    let mut state = live_state(txn, name, now)?.ok_or(HeadError::NotFound)?;
    if state.soft_deleted {
        return Err(HeadError::Gone);
    }
    if state.epoch == epoch {
        state.epoch = crate::epoch::new_epoch(now.ms);
        txn.put_state(name, &state)?;
    }
    Ok(state.tail_position())
}

pub fn head(view: &mut impl LogView, name: &str, now: Now<'_>) -> Result<StreamInfo, HeadError> {
    let state = live_state(view, name, now)?.ok_or(HeadError::NotFound)?;
    if state.soft_deleted {
        return Err(HeadError::Gone);
    }
    Ok(state.info())
}
