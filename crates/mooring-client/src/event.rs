//! Constructors for the events a client publishes.

use mooring_protocol::session::{Action, Extras, NewEvent};

fn new(
    action: Action,
    name: Option<String>,
    reference: Option<u64>,
    data: serde_json::Value,
) -> NewEvent {
    NewEvent {
        id: None,
        action,
        name,
        reference,
        data,
        extras: Extras::new(),
    }
}

/// Starts a message named `name` (`response`, `user-input`, ...); its serial names it.
pub fn create(name: impl Into<String>, data: impl Into<serde_json::Value>) -> NewEvent {
    new(Action::MessageCreate, Some(name.into()), None, data.into())
}

/// Appends `text` to message `message` (a streamed answer's tokens).
pub fn append(message: u64, text: impl Into<String>) -> NewEvent {
    new(
        Action::MessageAppend,
        None,
        Some(message),
        serde_json::Value::String(text.into()),
    )
}

/// Replaces message `message`'s data.
pub fn update(message: u64, data: impl Into<serde_json::Value>) -> NewEvent {
    new(Action::MessageUpdate, None, Some(message), data.into())
}

/// Deletes message `message` from the materialized view (the log keeps every event).
pub fn delete(message: u64) -> NewEvent {
    new(
        Action::MessageDelete,
        None,
        Some(message),
        serde_json::Value::Null,
    )
}

/// Any other application event: kept in the log, not materialized.
pub fn custom(name: impl Into<String>, data: impl Into<serde_json::Value>) -> NewEvent {
    new(Action::Event, Some(name.into()), None, data.into())
}
