//! Presence on the wire: members of a session and the changes everyone attached hears of.

use serde::{Deserialize, Serialize};

/// What a member is in the session as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Agent,
    Operator,
}

/// One member as everyone sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub client_id: String,
    /// The member's instance: its own stable id, or the connection's.
    pub instance: String,
    pub connection_id: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

/// A change everyone attached should hear of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceAction {
    Enter,
    Update,
    Leave,
}
