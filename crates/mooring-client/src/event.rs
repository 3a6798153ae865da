//! Constructors for the events a client publishes.

use mooring_protocol::session::{Action, Extras, NewEvent};

use crate::runs::{ApprovalDecision, RunStatus};

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

/// An agent starts run `run_id`, answering the message at serial `input` if given.
pub fn run_start(run_id: &str, input: Option<u64>) -> NewEvent {
    let mut data = serde_json::json!({ "run_id": run_id });
    if let Some(input) = input {
        data["input"] = input.into();
    }
    new(Action::RunStart, None, None, data)
}

/// Run `run_id` ends with `status`, and a reason people can read if given.
pub fn run_end(run_id: &str, status: RunStatus, reason: Option<String>) -> NewEvent {
    let mut data = serde_json::json!({ "run_id": run_id, "status": status });
    if let Some(reason) = reason {
        data["reason"] = reason.into();
    }
    new(Action::RunEnd, None, None, data)
}

/// Stops run `run_id`, or every active run of the session when `None`. A cancel for a run
/// that has not started yet is held by the server and applied when it starts.
pub fn cancel(run_id: Option<&str>) -> NewEvent {
    let data = match run_id {
        Some(run_id) => serde_json::json!({ "run_id": run_id }),
        None => serde_json::json!({}),
    };
    new(Action::ControlCancel, None, None, data)
}

/// Redirects run `run_id` with `data` (what the agent should do differently).
pub fn steer(run_id: &str, data: impl Into<serde_json::Value>) -> NewEvent {
    let data = serde_json::json!({ "run_id": run_id, "data": data.into() });
    new(Action::ControlSteer, None, None, data)
}

/// Run `run_id` asks for approval `approval_id`, showing `prompt` to whoever answers.
pub fn approval_request(
    run_id: &str,
    approval_id: &str,
    prompt: impl Into<serde_json::Value>,
) -> NewEvent {
    let data = serde_json::json!({ "run_id": run_id, "approval_id": approval_id, "prompt": prompt.into() });
    new(Action::ApprovalRequest, None, None, data)
}

/// The answer to approval `approval_id` (needs the `approve` capability), with a reason
/// people can read if given.
pub fn approval_answer(
    approval_id: &str,
    decision: ApprovalDecision,
    reason: Option<String>,
) -> NewEvent {
    let mut data = serde_json::json!({ "approval_id": approval_id, "decision": decision });
    if let Some(reason) = reason {
        data["reason"] = reason.into();
    }
    new(Action::ApprovalAnswer, None, None, data)
}
