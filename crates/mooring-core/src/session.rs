//! Realtime sessions on the log: events as records, publishing with idempotency keys, and the
//! materialized messages folded from `message.*` events.
//!
//! A session is a JSON stream whose records each hold one [`Event`]. Materialized messages and
//! publish ids live in side tables written in the same transaction as the events, so the view
//! never disagrees with the log.

use std::collections::BTreeMap;

use bytes::Bytes;
use mooring_protocol::realtime::Published;
use mooring_protocol::session::{Action, Event, MessageView, NewEvent};

use crate::store::StoreError;
use crate::stream::Record;

/// The content type of a session's stream.
pub const SESSION_CONTENT_TYPE: &str = "application/json";
/// The default window inside which a retried publish id is recognized.
pub const DEFAULT_DEDUPE_WINDOW_MS: u64 = 120_000;

/// What a session's namespace rules ask of its publishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishRules {
    /// How long a publish id is remembered: a retry within it gets its first serial back.
    pub dedupe_window_ms: u64,
    /// How long the session keeps its events ([`StreamState::retain_ms`]); `None`: forever.
    ///
    /// [`StreamState::retain_ms`]: crate::stream::StreamState::retain_ms
    pub retain_ms: Option<u64>,
}

impl Default for PublishRules {
    fn default() -> Self {
        Self {
            dedupe_window_ms: DEFAULT_DEDUPE_WINDOW_MS,
            retain_ms: None,
        }
    }
}

/// Events published by one request: validated and written together, or not at all.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishGroup {
    /// The publisher's verified identity, stamped on every event.
    pub client_id: Option<String>,
    pub events: Vec<NewEvent>,
    /// Rollup: the events are text appends to one message (from several requests), written as
    /// one event; each keeps its own result, and each `id` is remembered for that event.
    pub coalesce: bool,
}

impl PublishGroup {
    /// A group written event by event.
    pub fn new(client_id: Option<String>, events: Vec<NewEvent>) -> Self {
        Self {
            client_id,
            events,
            coalesce: false,
        }
    }
}

/// What a group's publish did.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishOutcome {
    pub epoch: u64,
    /// One per event of the group, in order.
    pub results: Vec<Published>,
    /// The events written (duplicates excluded), in serial order, for fan-out.
    pub events: Vec<Event>,
}

/// Why a group was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PublishError {
    #[error("session is closed or deleted; it accepts no more events")]
    Closed,
    #[error("{0:?} is a Durable Stream of another content type, not a session")]
    NotASession(String),
    #[error("event {index}: {reason}")]
    InvalidEvent { index: usize, reason: String },
    #[error("event {index}: message {reference} does not exist or was deleted")]
    MessageNotFound { index: usize, reference: u64 },
    /// A `run.start` for an input that another worker holds, or that a run still answers.
    #[error("event {index}: input {input} is already taken ({holder}); drop it")]
    InputTaken {
        index: usize,
        input: u64,
        holder: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an event cannot be folded into its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FoldError {
    MissingRef,
    UnexpectedRef,
    NoSuchMessage(u64),
    AppendNotText,
}

/// The key of a message view in its side table: the big-endian serial, so key order is serial
/// order.
pub fn message_key(serial: u64) -> [u8; 8] {
    serial.to_be_bytes()
}

/// Folds `event` into the view of the message it concerns.
///
/// `current` is the view of `event.reference` (for append, update, delete); returns the view
/// to store under [`fold_target`], or `None` for events that touch no message.
pub fn fold(
    current: Option<&MessageView>,
    event: &Event,
) -> Result<Option<MessageView>, FoldError> {
    match event.action {
        Action::Event
        | Action::RunStart
        | Action::RunEnd
        | Action::RunStalled
        | Action::ControlCancel
        | Action::ControlSteer
        | Action::ApprovalRequest
        | Action::ApprovalAnswer => Ok(None),
        Action::MessageCreate => {
            if event.reference.is_some() {
                return Err(FoldError::UnexpectedRef);
            }
            Ok(Some(MessageView {
                serial: event.serial,
                name: event.name.clone(),
                client_id: event.client_id.clone(),
                data: event.data.clone(),
                extras: event.extras.clone(),
                version: event.serial,
                deleted: false,
                ts: event.ts,
            }))
        }
        Action::MessageAppend | Action::MessageUpdate | Action::MessageDelete => {
            let reference = event.reference.ok_or(FoldError::MissingRef)?;
            let Some(view) = current.filter(|v| !v.deleted) else {
                return Err(FoldError::NoSuchMessage(reference));
            };
            let mut next = view.clone();
            next.version = event.serial;
            if event.name.is_some() {
                next.name = event.name.clone();
            }
            if !event.extras.is_empty() {
                next.extras = event.extras.clone();
            }
            match event.action {
                Action::MessageAppend => {
                    let fragment = event.data.as_str().ok_or(FoldError::AppendNotText)?;
                    next.data = match &view.data {
                        serde_json::Value::Null => fragment.into(),
                        serde_json::Value::String(s) => format!("{s}{fragment}").into(),
                        _ => return Err(FoldError::AppendNotText),
                    };
                }
                Action::MessageUpdate => next.data = event.data.clone(),
                _ => {
                    next.deleted = true;
                    next.data = serde_json::Value::Null;
                }
            }
            Ok(Some(next))
        }
    }
}

/// The serial of the message an event's fold is stored under.
pub fn fold_target(event: &Event) -> u64 {
    event.reference.unwrap_or(event.serial)
}

/// A record of a session as an event.
///
/// Records written by the realtime protocol hold one event each. Records written through the
/// Durable Streams surface hold plain JSON messages: one message becomes an `event` whose data is
/// the message, several become one `event` whose data is their array.
pub fn event_of(record: &Record) -> Event {
    if let [item] = record.items.as_slice() {
        if let Ok(mut event) = serde_json::from_slice::<Event>(item) {
            event.serial = record.serial;
            return event;
        }
    }
    let mut messages: Vec<serde_json::Value> = record
        .items
        .iter()
        .map(|i| serde_json::from_slice(i).unwrap_or(serde_json::Value::Null))
        .collect();
    let data = if messages.len() == 1 {
        messages.pop().unwrap_or_default()
    } else {
        serde_json::Value::Array(messages)
    };
    Event {
        serial: record.serial,
        action: Action::Event,
        id: None,
        name: Some("durable-stream".into()),
        reference: None,
        client_id: None,
        data,
        extras: BTreeMap::new(),
        ts: 0,
        version: None,
    }
}

/// The stored form of an event: one JSON item.
pub fn record_of(event: &Event) -> Result<Vec<Bytes>, StoreError> {
    serde_json::to_vec(event)
        .map(|v| vec![Bytes::from(v)])
        .map_err(|e| StoreError::Corrupt(format!("encoding event {}: {e}", event.serial)))
}

/// A publish id's stored value: the serial it was given and when.
pub fn encode_publish_id(serial: u64, ts: u64) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&serial.to_be_bytes());
    out[8..].copy_from_slice(&ts.to_be_bytes());
    out
}

pub fn decode_publish_id(value: &[u8]) -> Option<(u64, u64)> {
    let serial = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let ts = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((serial, ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(serial: u64, action: Action, reference: Option<u64>, data: &str) -> Event {
        Event {
            serial,
            action,
            id: None,
            name: None,
            reference,
            client_id: Some("agent".into()),
            data: data.into(),
            extras: BTreeMap::new(),
            ts: serial,
            version: None,
        }
    }

    #[test]
    fn appends_fold_into_one_message() {
        let create = event(1, Action::MessageCreate, None, "He");
        let view = fold(None, &create).ok().flatten().expect("created");
        let view = fold(
            Some(&view),
            &event(2, Action::MessageAppend, Some(1), "llo"),
        )
        .ok()
        .flatten()
        .expect("appended");
        assert_eq!(view.data, "Hello");
        assert_eq!((view.serial, view.version), (1, 2));
        let view = fold(Some(&view), &event(3, Action::MessageUpdate, Some(1), "Hi"))
            .ok()
            .flatten()
            .expect("updated");
        assert_eq!(view.data, "Hi");
        let view = fold(Some(&view), &event(4, Action::MessageDelete, Some(1), ""))
            .ok()
            .flatten()
            .expect("deleted");
        assert!(view.deleted);
        assert_eq!(
            fold(Some(&view), &event(5, Action::MessageAppend, Some(1), "x")),
            Err(FoldError::NoSuchMessage(1))
        );
    }

    #[test]
    fn malformed_message_events_are_refused() {
        let append = event(2, Action::MessageAppend, None, "x");
        assert_eq!(fold(None, &append), Err(FoldError::MissingRef));
        let create = event(2, Action::MessageCreate, Some(1), "x");
        assert_eq!(fold(None, &create), Err(FoldError::UnexpectedRef));
        let mut object = event(1, Action::MessageCreate, None, "");
        object.data = serde_json::json!({"k": 1});
        let view = fold(None, &object).ok().flatten().expect("created");
        let append = event(2, Action::MessageAppend, Some(1), "x");
        assert_eq!(fold(Some(&view), &append), Err(FoldError::AppendNotText));
    }

    #[test]
    fn durable_stream_messages_read_as_events() {
        let record = Record {
            serial: 4,
            items: vec![Bytes::from_static(b"{\"a\":1}")],
        };
        let e = event_of(&record);
        assert_eq!((e.serial, e.action), (4, Action::Event));
        assert_eq!(e.data, serde_json::json!({"a": 1}));
        let stored = event(9, Action::MessageCreate, None, "hi");
        let record = Record {
            serial: 9,
            items: record_of(&stored).expect("encodes"),
        };
        assert_eq!(event_of(&record), stored);
    }

    #[test]
    fn publish_ids_round_trip() {
        assert_eq!(decode_publish_id(&encode_publish_id(7, 99)), Some((7, 99)));
        assert_eq!(decode_publish_id(&[1, 2]), None);
    }
}
