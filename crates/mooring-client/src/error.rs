//! Errors per operation: `Error<Kind>` with a small kind enum for each of connect, attach,
//! publish and presence, carrying the server's [`ErrorCode`] when the server refused.

use std::fmt;

use mooring_protocol::realtime::{ErrorBody, ErrorCode};

/// An error the server sent: a stable code, a message a person can act on, and whether
/// retrying can help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
}

impl From<ErrorBody> for ServerError {
    fn from(body: ErrorBody) -> Self {
        Self {
            code: body.code,
            message: body.message,
            retryable: body.retryable,
        }
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The code as it travels (`message_not_found`), so it can be looked up in the docs.
        match serde_json::to_value(self.code) {
            Ok(serde_json::Value::String(code)) => write!(f, "{code}: {}", self.message),
            _ => write!(f, "{:?}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for ServerError {}

/// The error of one operation: what kind of failure, a message, and the server's error if
/// the server refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error<K> {
    kind: K,
    message: String,
    server: Option<ServerError>,
}

impl<K: Copy> Error<K> {
    pub(crate) fn new(kind: K, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            server: None,
        }
    }

    pub(crate) fn server(kind: K, error: ServerError) -> Self {
        Self {
            kind,
            message: error.to_string(),
            server: Some(error),
        }
    }

    pub fn kind(&self) -> K {
        self.kind
    }

    /// The server's error, when the server refused.
    pub fn server_error(&self) -> Option<&ServerError> {
        self.server.as_ref()
    }

    /// The server's error code, when the server refused.
    pub fn code(&self) -> Option<ErrorCode> {
        self.server.as_ref().map(|e| e.code)
    }
}

impl<K: fmt::Display> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl<K: fmt::Debug + fmt::Display> std::error::Error for Error<K> {}

/// Why [`Client::connect`](crate::Client::connect) failed.
pub type ConnectError = Error<ConnectErrorKind>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectErrorKind {
    /// The URL is not a `ws://` URL the client can open.
    #[error("invalid url")]
    InvalidUrl,
    /// The TCP connection or the WebSocket upgrade failed.
    #[error("could not open the WebSocket")]
    Transport,
    /// The server answered `hello` with an error (see [`Error::code`]).
    #[error("the server refused the connection")]
    Refused,
    /// The server broke the handshake: closed, or sent something other than `welcome`.
    #[error("handshake failed")]
    Handshake,
    /// No `welcome` within the connect timeout.
    #[error("timed out")]
    TimedOut,

    /// The credential could not be had (the token source failed) or cannot be sent (it is
    /// not valid header text).
    #[error("no usable credential")]
    Credential,
}

/// Why [`Client::attach`](crate::Client::attach) failed.
pub type AttachError = Error<AttachErrorKind>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttachErrorKind {
    /// The name breaks `[A-Za-z0-9:_./-]{1,255}`; nothing was sent.
    #[error("invalid session name")]
    InvalidSessionName,
    /// This client already has a live subscription to the session.
    #[error("already attached")]
    AlreadyAttached,
    /// The server refused the attach (see [`Error::code`]).
    #[error("the server refused the attach")]
    Refused,
    /// No `attached` within the request timeout (the client may still be reconnecting).
    #[error("timed out")]
    TimedOut,
    /// The client was closed, or gave up reconnecting.
    #[error("client closed")]
    Closed,
}

/// Why [`Client::publish`](crate::Client::publish) failed.
pub type PublishError = Error<PublishErrorKind>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishErrorKind {
    /// The name breaks `[A-Za-z0-9:_./-]{1,255}`; nothing was sent.
    #[error("invalid session name")]
    InvalidSessionName,
    /// A publish must carry at least one event; nothing was sent.
    #[error("no events")]
    Empty,
    /// The server refused the events (see [`Error::code`]); none was published.
    #[error("the server refused the publish")]
    Refused,
    /// The connection was lost before the acknowledgement and some event had no `id`, so the
    /// client did not retry: the events may or may not have been published.
    #[error("interrupted; outcome unknown")]
    Interrupted,
    /// No acknowledgement within the request timeout: the events may or may not have been
    /// published. Retrying with the same ids is safe inside the dedupe window.
    #[error("timed out; outcome unknown")]
    TimedOut,
    /// The client was closed, or gave up reconnecting, before the acknowledgement.
    #[error("client closed")]
    Closed,
    /// [`RunHandle::append`](crate::RunHandle::append) before the run's answer was created;
    /// nothing was sent.
    #[error("the run has no answer message")]
    NoAnswer,
}

/// Why [`Client::work`](crate::Client::work) failed.
pub type WorkError = Error<WorkErrorKind>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WorkErrorKind {
    /// The server refused the registration (see [`Error::code`]: `invalid_pattern`,
    /// `forbidden`).
    #[error("the server refused the registration")]
    Refused,
    /// No answer within the request timeout (the client may still be reconnecting; it
    /// registers when it is back).
    #[error("timed out")]
    TimedOut,
    /// The client was closed, or gave up reconnecting.
    #[error("client closed")]
    Closed,
}

/// Why a presence operation failed.
pub type PresenceError = Error<PresenceErrorKind>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PresenceErrorKind {
    /// The name breaks `[A-Za-z0-9:_./-]{1,255}`; nothing was sent.
    #[error("invalid session name")]
    InvalidSessionName,
    /// The member data is larger than [`ClientOptions::max_presence_data_bytes`](crate::ClientOptions::max_presence_data_bytes); nothing was sent.
    #[error("presence data too large")]
    TooLarge,
    /// An update of an instance this client has not entered; nothing was sent.
    #[error("not entered")]
    NotEntered,
    /// No answer within the request timeout.
    #[error("timed out")]
    TimedOut,
    /// The client was closed, or gave up reconnecting.
    #[error("client closed")]
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_keep_their_code() {
        let error = PublishError::server(
            PublishErrorKind::Refused,
            ServerError::from(ErrorBody {
                code: ErrorCode::MessageNotFound,
                message: "message 9 does not exist".into(),
                retryable: false,
            }),
        );
        assert_eq!(error.kind(), PublishErrorKind::Refused);
        assert_eq!(error.code(), Some(ErrorCode::MessageNotFound));
        assert_eq!(
            error.to_string(),
            "the server refused the publish: message_not_found: message 9 does not exist"
        );
        let local = AttachError::new(AttachErrorKind::InvalidSessionName, "\"a b\"");
        assert_eq!(local.code(), None);
    }
}
