//! Publishing events into a session, and reading its materialized view.

use std::collections::HashMap;

use mooring_protocol::realtime::Published;
use mooring_protocol::session::{Action, Event, MessageView};

use crate::create::{new_stream_state, CreateRequest};
use crate::ops::{live_state, live_state_reclaiming, Now};
use crate::read::ReadError;
use crate::session::{
    decode_publish_id, encode_publish_id, fold, fold_target, message_key, record_of, FoldError,
    PublishError, PublishGroup, PublishOutcome, PublishRules, SESSION_CONTENT_TYPE,
};
use crate::store::{AuxTable, LogTxn, LogView, StoreError};
use crate::stream::{StreamInfo, StreamState};

/// Publishes each group atomically, creating the session on first use.
///
/// A refused group writes nothing and does not affect the others; the outer error is a storage
/// failure, after which nothing of the call may be acknowledged.
pub fn publish(
    txn: &mut impl LogTxn,
    name: &str,
    groups: &[PublishGroup],
    now: Now<'_>,
    rules: PublishRules,
) -> Result<Vec<Result<PublishOutcome, PublishError>>, StoreError> {
    let mut state = match live_state_reclaiming(txn, name, now)? {
        Some(state) => state,
        None => new_stream_state(
            &CreateRequest {
                content_type: Some(SESSION_CONTENT_TYPE.into()),
                ..CreateRequest::default()
            },
            now.ms,
        ),
    };
    let before = state.clone();
    // The namespace's rule as it stands now: a changed rule applies from the next publish.
    state.retain_ms = rules.retain_ms;
    let mut outcomes = Vec::with_capacity(groups.len());
    for group in groups {
        let outcome = match stage(txn, name, &state, group, now, rules.dedupe_window_ms)? {
            Ok(staged) => {
                write(txn, name, &staged, now)?;
                state.tail += staged.outcome.events.len() as u64;
                if !staged.outcome.events.is_empty() {
                    state.last_write_ms = now.ms.max(state.last_write_ms);
                }
                Ok(staged.outcome)
            }
            Err(e) => Err(e),
        };
        outcomes.push(outcome);
    }
    if state != before || txn.state(name)?.is_none() {
        txn.put_state(name, &state)?;
    }
    Ok(outcomes)
}

/// A validated group, ready to write.
struct Staged {
    outcome: PublishOutcome,
    views: HashMap<u64, MessageView>,
    ids: Vec<(String, u64)>,
}

/// Validates a group against the session as it stands, without writing.
fn stage(
    txn: &mut impl LogTxn,
    name: &str,
    state: &StreamState,
    group: &PublishGroup,
    now: Now<'_>,
    dedupe_window_ms: u64,
) -> Result<Result<Staged, PublishError>, StoreError> {
    if state.closed || state.soft_deleted {
        return Ok(Err(PublishError::Closed));
    }
    if !state.config.is_json() {
        return Ok(Err(PublishError::NotASession(name.to_owned())));
    }
    let mut staged = Staged {
        outcome: PublishOutcome {
            epoch: state.epoch,
            results: Vec::with_capacity(group.events.len()),
            events: Vec::new(),
        },
        views: HashMap::new(),
        ids: Vec::new(),
    };
    let mut next_serial = state.tail + 1;
    // In a coalescing group, the serial of the one event its appends fold into.
    let mut merged: Option<u64> = None;
    for (index, new) in group.events.iter().enumerate() {
        if let Some(id) = &new.id {
            if let Some(serial) = known_id(txn, name, id, &staged.ids, now.ms, dedupe_window_ms)? {
                staged.outcome.results.push(Published {
                    serial,
                    duplicate: true,
                });
                continue;
            }
        }
        if let Err(reason) = crate::runs::validate(new.action, &new.data) {
            return Ok(Err(PublishError::InvalidEvent {
                index,
                reason: reason.to_owned(),
            }));
        }
        if group.coalesce && (new.action != Action::MessageAppend || !new.data.is_string()) {
            return Ok(Err(PublishError::InvalidEvent {
                index,
                reason: "only text appends can be rolled up".to_owned(),
            }));
        }
        let event = Event {
            serial: merged.unwrap_or(next_serial),
            action: new.action,
            id: new.id.clone(),
            name: new.name.clone(),
            reference: new.reference,
            client_id: group.client_id.clone(),
            data: new.data.clone(),
            extras: new.extras.clone(),
            // Never behind an earlier event, so history can be searched by time.
            ts: now.ms.max(state.last_write_ms),
            version: None,
        };
        if event.reference.is_some_and(|r| r >= next_serial) {
            return Ok(Err(PublishError::MessageNotFound {
                index,
                reference: event.reference.unwrap_or_default(),
            }));
        }
        let target = fold_target(&event);
        let current = match staged.views.get(&target) {
            Some(view) => Some(view.clone()),
            None if event.action.needs_ref() => stored_view(txn, name, target)?,
            None => None,
        };
        match fold(current.as_ref(), &event) {
            Ok(Some(view)) => {
                staged.views.insert(target, view);
            }
            Ok(None) => {}
            Err(e) => return Ok(Err(refusal(index, e))),
        }
        if let Some(serial) = merged {
            // Rolled up: the fragment joins the event already staged for this group.
            if let Some(last) = staged.outcome.events.last_mut() {
                let text = format!(
                    "{}{}",
                    last.data.as_str().unwrap_or_default(),
                    event.data.as_str().unwrap_or_default()
                );
                last.data = text.into();
                if last.reference != event.reference {
                    return Ok(Err(PublishError::InvalidEvent {
                        index,
                        reason: "rolled-up appends must target one message".to_owned(),
                    }));
                }
                last.id = None;
            }
            if let Some(id) = &new.id {
                staged.ids.push((id.clone(), serial));
            }
            staged.outcome.results.push(Published {
                serial,
                duplicate: false,
            });
            continue;
        }
        if group.coalesce {
            merged = Some(next_serial);
        }
        if let Some(id) = &new.id {
            staged.ids.push((id.clone(), next_serial));
        }
        staged.outcome.results.push(Published {
            serial: next_serial,
            duplicate: false,
        });
        staged.outcome.events.push(event);
        next_serial += 1;
    }
    Ok(Ok(staged))
}

fn refusal(index: usize, error: FoldError) -> PublishError {
    let invalid = |reason: &str| PublishError::InvalidEvent {
        index,
        reason: reason.to_owned(),
    };
    match error {
        FoldError::MissingRef => {
            invalid("append, update and delete need `ref`, the message serial")
        }
        FoldError::UnexpectedRef => invalid("message.create takes no `ref`"),
        FoldError::AppendNotText => {
            invalid("appends concatenate text: `data` must be a string, and so must the message")
        }
        FoldError::NoSuchMessage(reference) => PublishError::MessageNotFound { index, reference },
    }
}

/// The serial an id was published under, if it was inside the dedupe window.
fn known_id(
    txn: &mut impl LogTxn,
    name: &str,
    id: &str,
    staged: &[(String, u64)],
    now_ms: u64,
    window_ms: u64,
) -> Result<Option<u64>, StoreError> {
    if let Some((_, serial)) = staged.iter().find(|(i, _)| i == id) {
        return Ok(Some(*serial));
    }
    let stored = txn.aux(name, AuxTable::PublishIds, id.as_bytes())?;
    Ok(stored
        .as_deref()
        .and_then(decode_publish_id)
        .filter(|(_, ts)| now_ms.saturating_sub(*ts) < window_ms)
        .map(|(serial, _)| serial))
}

fn stored_view(
    view: &mut impl LogView,
    name: &str,
    serial: u64,
) -> Result<Option<MessageView>, StoreError> {
    let Some(bytes) = view.aux(name, AuxTable::Messages, &message_key(serial))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("message {serial} of {name:?}: {e}")))
}

fn write(
    txn: &mut impl LogTxn,
    name: &str,
    staged: &Staged,
    now: Now<'_>,
) -> Result<(), StoreError> {
    for event in &staged.outcome.events {
        txn.put_record(name, event.serial, &record_of(event)?)?;
    }
    for (serial, view) in &staged.views {
        let bytes = serde_json::to_vec(view)
            .map_err(|e| StoreError::Corrupt(format!("encoding message {serial}: {e}")))?;
        txn.put_aux(name, AuxTable::Messages, &message_key(*serial), &bytes)?;
    }
    for (id, serial) in &staged.ids {
        let value = encode_publish_id(*serial, now.ms);
        txn.put_aux(name, AuxTable::PublishIds, id.as_bytes(), &value)?;
    }
    Ok(())
}

/// A session's materialized view: its live (not deleted) messages in serial order, and the
/// stream's metadata from the same snapshot, so the view covers exactly events up to `info.tail`.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSnapshot {
    pub info: StreamInfo,
    pub messages: Vec<MessageView>,
}

/// Reads a session's materialized view. A session never published to reads as empty.
pub fn snapshot(
    view: &mut impl LogView,
    name: &str,
    now: Now<'_>,
) -> Result<Option<SessionSnapshot>, ReadError> {
    let Some(state) = live_state(view, name, now)? else {
        return Ok(None);
    };
    if state.soft_deleted {
        return Err(ReadError::Gone);
    }
    now.access.touch(name, now.ms);
    let mut messages = Vec::new();
    for (key, bytes) in view.aux_all(name, AuxTable::Messages)? {
        let message: MessageView = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("message {key:?} of {name:?}: {e}")))?;
        if !message.deleted {
            messages.push(message);
        }
    }
    Ok(Some(SessionSnapshot {
        info: state.info(),
        messages,
    }))
}
