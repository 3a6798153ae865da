//! Frames of the native realtime protocol over WebSocket (`/v1/ws`): JSON text frames, one
//! connection multiplexing many sessions. `docs/protocol.md` is the prose of this module.

use serde::{Deserialize, Serialize};

use crate::presence::{Member, PresenceAction, Role};
use crate::session::{Event, NewEvent};
use crate::Position;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol the server selects. Browsers cannot set an `Authorization` header
/// on a WebSocket, so a browser offers this one together with
/// [`BEARER_SUBPROTOCOL_PREFIX`]`<token>`; the server answers with this one, never echoing the
/// token.
pub const SUBPROTOCOL: &str = "mooring.v1";

/// A subprotocol starting with this carries the credential after the prefix.
pub const BEARER_SUBPROTOCOL_PREFIX: &str = "mooring.bearer.";

/// The event `name` of a user input: a `message.create` with this name is dispatched to a
/// worker (see `docs/protocol.md`, Agent dispatch).
pub const INPUT_NAME: &str = "user-input";

/// Where an attach starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttachFrom {
    /// `"latest"`: the materialized view (one event per message, whole), then live.
    /// `"start"`: every event from the first, then live.
    Named(AttachPoint),
    /// `{"epoch":E,"serial":S}`: every event after this position, then live.
    Position(Position),
    /// `{"rewind":N}`: the last N events, then live.
    Rewind { rewind: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachPoint {
    Latest,
    Start,
}

/// Frames a client sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Hello {
        protocol: u32,
        /// The identity to publish as (anonymous nodes only; see the auth docs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    Ping {
        #[serde(default)]
        nonce: u64,
    },
    Pong {
        #[serde(default)]
        nonce: u64,
    },
    Attach {
        session: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<AttachFrom>,
    },
    Detach {
        session: String,
    },
    Publish {
        /// Echoed on the `ack` or `error` of this request.
        req: u64,
        session: String,
        events: Vec<NewEvent>,
    },
    /// Enter, update or leave a session's presence.
    Presence {
        session: String,
        action: PresenceAction,
        /// On enter: what the member is (default `user`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<Role>,
        /// A stable id of this tab or process, so a reconnect within the grace period keeps
        /// the member; the connection id if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instance: Option<String>,
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        data: serde_json::Value,
    },
    /// Asks for the current members (answered with `presence_snapshot`).
    PresenceGet {
        session: String,
    },
    /// Replaces the connection's credential with a fresh token (renewal before expiry), for
    /// the same `client_id`; answered with `authenticated`.
    Auth {
        token: String,
    },
    /// Makes this connection a worker for the sessions `patterns` match (session-name patterns
    /// as in capabilities: `chat:*`, `chat:**`), replacing any earlier registration; no
    /// patterns stops it being one. Answered with `worker_registered`.
    Worker {
        req: u64,
        patterns: Vec<String>,
        /// The most inputs it holds at once, dispatched or running (none: no limit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capacity: Option<u32>,
    },
    /// Gives a dispatched input back without starting its run: it goes to another worker.
    DispatchRelease {
        session: String,
        /// The serial of the input.
        input: u64,
    },
}

/// How an attach began.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Events after the requested position follow.
    Replay,
    /// The materialized view follows.
    Latest,
    /// The requested position belongs to another life of the log: its history is gone, and the
    /// materialized view follows instead.
    HistoryLost,
}

/// The outcome of one published event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub serial: u64,
    /// A retry of an event already published (same `id` inside the dedupe window).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// Frames the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        protocol: u32,
        connection_id: String,
        client_id: String,
        /// The server pings this often and expects the client to do the same.
        heartbeat_ms: u64,
        /// A peer silent this long is considered dead.
        dead_after_ms: u64,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// History or the view follows, then `live`.
    Attached {
        session: String,
        epoch: u64,
        mode: AttachMode,
        /// The high-water at attach: catch-up covers events up to this serial.
        serial: u64,
    },
    /// Catch-up is complete; events from here on are live.
    Live {
        session: String,
        serial: u64,
    },
    Event {
        session: String,
        epoch: u64,
        #[serde(flatten)]
        event: Event,
    },
    Detached {
        session: String,
        /// Why the server detached, if it did so on its own; `resumable` says whether attaching
        /// again from the last position seen will work.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<ErrorBody>,
    },
    /// A member entered, updated or left.
    Presence {
        session: String,
        action: PresenceAction,
        member: Member,
    },
    /// Every member, on attach (after `live`) and in answer to `presence_get`.
    PresenceSnapshot {
        session: String,
        members: Vec<Member>,
    },
    /// A renewed credential was accepted: its identity and when it expires (Unix seconds).
    Authenticated {
        client_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    Ack {
        req: u64,
        session: String,
        epoch: u64,
        results: Vec<Published>,
    },
    /// The connection's worker registration is now this.
    WorkerRegistered {
        req: u64,
        patterns: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        capacity: Option<u32>,
    },
    /// A user input for this worker to answer: it is this worker's alone until it publishes
    /// `run.start` naming the input, releases it, or its connection ends.
    Dispatch {
        session: String,
        epoch: u64,
        /// The input event (a `message.create` named `user-input`).
        input: Event,
        /// 1 for the first worker offered the input, 2 for the next, and so on.
        attempt: u32,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(flatten)]
        error: ErrorBody,
    },
}

/// An error: a stable code, a message a person can act on, and whether retrying helps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}

/// Stable error codes of the realtime protocol. A retired code is never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON or not a frame of this protocol.
    BadFrame,
    /// `hello` asked for a protocol version this server does not speak.
    UnsupportedProtocol,
    /// A frame other than `hello` arrived before it.
    HelloRequired,
    /// The session name does not match `[A-Za-z0-9:_./-]{1,255}`.
    InvalidSessionName,
    /// An event is malformed (for example an append without `ref`, or appended data that is
    /// not a string).
    InvalidEvent,
    /// `ref` names no message of the session, or a deleted one.
    MessageNotFound,
    /// An event or frame is larger than the server accepts.
    TooLarge,
    /// The connection is attached to as many sessions as it may be.
    TooManyAttachments,
    /// The session's live events outran the replay of its history; attach again from the last
    /// position seen.
    SeamOverflow,
    /// (In `detached`) the session's log began a new life (it was deleted, or lost by the
    /// storage): attach again from the last position seen; `attached` then says
    /// `history_lost` and the view follows.
    HistoryLost,
    /// The session is closed or deleted: it accepts no more events.
    SessionClosed,
    /// The name belongs to a Durable Stream that is not JSON, so it cannot hold events.
    NotASession,
    /// (REST) No session by this name.
    SessionNotFound,
    /// (REST) A query parameter or body is malformed; the message names it.
    InvalidRequest,
    /// The connection publishes faster than its rate limit; retry after a moment.
    RateLimited,
    /// The client holds as many connections as it may; close one, or retry once a lost one is
    /// noticed dead.
    TooManyConnections,
    /// The storage refused the write (full disk, failed fsync); nothing was acknowledged.
    StoreUnavailable,
    /// The server is shutting down.
    ShuttingDown,
    /// No credential, or one that is malformed, wrongly signed, expired or not yet valid.
    Unauthorized,
    /// The credential is valid but does not grant this operation on this session (or claims
    /// another identity).
    Forbidden,
    /// A `run.start` names an input that another worker holds or another run is answering.
    InputTaken,
    /// A worker pattern is not a valid session-name pattern.
    InvalidPattern,
}

/// WebSocket close codes the server uses besides 1000 (normal) and 1001 (going away).
pub mod close {
    /// A frame broke the protocol (bad JSON, missing hello).
    pub const PROTOCOL_ERROR: u16 = 4000;
    /// The peer sent nothing for `dead_after_ms`.
    pub const HEARTBEAT_TIMEOUT: u16 = 4001;
    /// The client read too slowly: its outbound queue filled. Resumable: reconnect and attach
    /// from the last position seen.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The client already holds as many connections as it may.
    pub const TOO_MANY_CONNECTIONS: u16 = 4029;
    /// The credential was refused, or it expired without renewal. Not resumable with the same
    /// credential: get a fresh token first.
    pub const UNAUTHORIZED: u16 = 4003;
    /// A frame was larger than the server accepts (1 MiB by default); the standard code.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Action;

    fn parse(text: &str) -> Option<ClientFrame> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn attach_accepts_every_form_of_from() {
        let latest = parse(r#"{"type":"attach","session":"s","from":"latest"}"#);
        let start = parse(r#"{"type":"attach","session":"s","from":"start"}"#);
        let pos = parse(r#"{"type":"attach","session":"s","from":{"epoch":0,"serial":4}}"#);
        let rewind = parse(r#"{"type":"attach","session":"s","from":{"rewind":10}}"#);
        let from = |f: Option<ClientFrame>| match f {
            Some(ClientFrame::Attach { from, .. }) => from,
            _ => None,
        };
        assert_eq!(from(latest), Some(AttachFrom::Named(AttachPoint::Latest)));
        assert_eq!(from(start), Some(AttachFrom::Named(AttachPoint::Start)));
        assert_eq!(
            from(pos),
            Some(AttachFrom::Position(Position {
                epoch: 0,
                serial: 4
            }))
        );
        assert_eq!(from(rewind), Some(AttachFrom::Rewind { rewind: 10 }));
    }

    #[test]
    fn publish_frames_carry_events() {
        let f = parse(
            r#"{"type":"publish","req":1,"session":"s","events":[{"action":"message.append","ref":3,"data":"lo"}]}"#,
        );
        let Some(ClientFrame::Publish { events, .. }) = f else {
            panic!("not a publish frame");
        };
        assert_eq!(events[0].action, Action::MessageAppend);
        assert_eq!(events[0].reference, Some(3));
    }

    /// Found by the `realtime_frame` fuzz target: without serde_json's exact float parsing,
    /// `-3e50` in event data decoded to -3.0000000000000002e50, so the server stored and sent
    /// on a number other than the one published, and each hop could move it again.
    #[test]
    fn numbers_in_event_data_pass_through_unchanged() {
        let text = r#"{"type":"publish","req":7,"session":"chat:42","events":[{"data":{"a":[1,2.5,-3e50,0.1,1.7976931348623157e308,5e-324]}}]}"#;
        let Some(frame) = parse(text) else {
            panic!("the frame decodes")
        };
        let ClientFrame::Publish { events, .. } = &frame else {
            panic!("a publish: {frame:?}")
        };
        let numbers: Vec<f64> = events[0].data["a"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default();
        assert_eq!(
            numbers,
            [1.0, 2.5, -3e50, 0.1, f64::MAX, 5e-324],
            "each number is the nearest f64 to its text"
        );
        let again = serde_json::to_string(&frame).unwrap_or_default();
        assert_eq!(parse(&again), Some(frame), "re-encoded: {again}");
    }

    #[test]
    fn unknown_frames_are_refused() {
        assert_eq!(parse(r#"{"type":"nope"}"#), None);
        assert_eq!(parse(r#"{"type":"ping","nonce":1,"extra":2}"#), None);
    }

    #[test]
    fn server_events_flatten_the_event() {
        let frame = ServerFrame::Event {
            session: "s".into(),
            epoch: 0,
            event: Event {
                serial: 1,
                action: Action::MessageCreate,
                id: None,
                name: Some("response".into()),
                reference: None,
                client_id: Some("agent".into()),
                data: serde_json::json!("he"),
                extras: Default::default(),
                ts: 5,
                version: None,
            },
        };
        let text = serde_json::to_string(&frame).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"type":"event","session":"s","epoch":0,"serial":1,"action":"message.create","name":"response","client_id":"agent","data":"he","ts":5}"#
        );
    }

    #[test]
    fn errors_have_snake_case_codes() {
        let frame = ServerFrame::Error {
            req: Some(2),
            session: None,
            error: ErrorBody {
                code: ErrorCode::MessageNotFound,
                message: "no".into(),
                retryable: false,
            },
        };
        let text = serde_json::to_string(&frame).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"type":"error","req":2,"code":"message_not_found","message":"no","retryable":false}"#
        );
    }
}
