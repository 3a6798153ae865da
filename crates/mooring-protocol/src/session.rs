//! Session events: the records of a realtime session's log, as they travel and as they are
//! stored (one JSON object per record).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The longest session name.
pub const MAX_SESSION_NAME: usize = 255;

/// What an event does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Starts a message; its serial names it.
    #[serde(rename = "message.create")]
    MessageCreate,
    /// Appends text to message `ref` (a streamed answer's tokens).
    #[serde(rename = "message.append")]
    MessageAppend,
    /// Replaces message `ref`'s data (and name or extras when given).
    #[serde(rename = "message.update")]
    MessageUpdate,
    /// Deletes message `ref`.
    #[serde(rename = "message.delete")]
    MessageDelete,
    /// An agent starts a run: `data: {run_id, input?}`.
    #[serde(rename = "run.start")]
    RunStart,
    /// A run ends: `data: {run_id, status, reason?}`; status is `completed`, `cancelled`,
    /// `failed` or `agent_lost`.
    #[serde(rename = "run.end")]
    RunEnd,
    /// (Server) a run made no progress for the namespace's `stall_after`: `data: {run_id}`.
    #[serde(rename = "run.stalled")]
    RunStalled,
    /// Stop a run (`data: {run_id}`), or every active run (no `run_id`).
    #[serde(rename = "control.cancel")]
    ControlCancel,
    /// Redirect a run: `data: {run_id, data}`.
    #[serde(rename = "control.steer")]
    ControlSteer,
    /// An agent asks a person to approve a step of a run: `data: {run_id, approval_id,
    /// prompt?}`.
    #[serde(rename = "approval.request")]
    ApprovalRequest,
    /// The answer to an approval request: `data: {approval_id, decision, reason?}`, decision
    /// `approve` or `deny`. Needs the `approve` capability.
    #[serde(rename = "approval.answer")]
    ApprovalAnswer,
    /// Anything else an application publishes; kept in the log, not materialized.
    #[serde(rename = "event")]
    Event,
}

impl Action {
    /// Whether the action targets an existing message through `ref`.
    pub fn needs_ref(self) -> bool {
        matches!(
            self,
            Self::MessageAppend | Self::MessageUpdate | Self::MessageDelete
        )
    }
}

/// Small string headers carried with an event.
pub type Extras = BTreeMap<String, String>;

/// An event as a publisher sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// Idempotency key: a retry with the same id inside the dedupe window is acknowledged with
    /// the original serial and publishes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default = "default_action")]
    pub action: Action,
    /// Application event name (`user-input`, `response`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Target message serial for append, update and delete.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<u64>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extras: Extras,
}

fn default_action() -> Action {
    Action::MessageCreate
}

/// An event in a session's log, as stored and delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub serial: u64,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<u64>,
    /// Identity of the publisher, stamped by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extras: Extras,
    /// Server time of the append, Unix milliseconds.
    pub ts: u64,
    /// Only on a materialized message (attach `latest`): the last serial folded into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl MessageView {
    /// The message as one whole `message.create` event, as a late joiner receives it.
    pub fn as_event(&self) -> Event {
        Event {
            serial: self.serial,
            action: Action::MessageCreate,
            id: None,
            name: self.name.clone(),
            reference: None,
            client_id: self.client_id.clone(),
            data: self.data.clone(),
            extras: self.extras.clone(),
            ts: self.ts,
            version: Some(self.version),
        }
    }
}

/// A message folded from its create and every later append, update and delete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageView {
    /// Serial of the `message.create`: the message's identity.
    pub serial: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extras: Extras,
    /// The last serial folded into this view.
    pub version: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    pub ts: u64,
}

/// Whether `name` is a valid session name: `[A-Za-z0-9:_./-]{1,255}`.
pub fn is_valid_session_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SESSION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_./-".contains(&b))
}

/// The namespace of a session: the part before the first `:` (the whole name if none).
pub fn namespace(name: &str) -> &str {
    name.split_once(':').map_or(name, |(ns, _)| ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_follow_the_grammar() {
        assert!(is_valid_session_name("chat:user-42/run_1.a"));
        assert!(!is_valid_session_name(""));
        assert!(!is_valid_session_name("has space"));
        assert!(!is_valid_session_name(&"a".repeat(256)));
        assert_eq!(namespace("chat:user-42:x"), "chat");
        assert_eq!(namespace("plain"), "plain");
    }

    #[test]
    fn events_have_a_pinned_json_shape() {
        let e = Event {
            serial: 3,
            action: Action::MessageAppend,
            id: None,
            name: None,
            reference: Some(2),
            client_id: Some("agent".into()),
            data: serde_json::json!("lo"),
            extras: Extras::new(),
            ts: 7,
            version: None,
        };
        let text = serde_json::to_string(&e).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"serial":3,"action":"message.append","ref":2,"client_id":"agent","data":"lo","ts":7}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&text).ok(), Some(e));
    }

    #[test]
    fn a_new_event_defaults_to_message_create() {
        let e: NewEvent = serde_json::from_str(r#"{"data":"hi"}"#).unwrap_or_else(|_| NewEvent {
            id: None,
            action: Action::Event,
            name: None,
            reference: None,
            data: serde_json::Value::Null,
            extras: Extras::new(),
        });
        assert_eq!(e.action, Action::MessageCreate);
        assert!(serde_json::from_str::<NewEvent>(r#"{"bogus":1}"#).is_err());
    }
}
