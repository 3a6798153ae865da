//! REST errors: the realtime protocol's codes, with an HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mooring_core::read::ReadError;
use mooring_core::store::StoreError;
use mooring_protocol::realtime::{ErrorBody, ErrorCode};

use crate::realtime::errors::body;

/// A refused REST request.
#[derive(Debug)]
pub struct RestError(pub ErrorBody);

impl RestError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(body(code, message))
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub(crate) fn not_found(session: &str) -> Self {
        Self::new(
            ErrorCode::SessionNotFound,
            format!("no session {session:?}: publish to it first"),
        )
    }
}

/// The HTTP status of each code. Exhaustive: a new code needs a deliberate status.
pub(crate) fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadFrame
        | ErrorCode::UnsupportedProtocol
        | ErrorCode::HelloRequired
        | ErrorCode::InvalidSessionName
        | ErrorCode::InvalidEvent
        | ErrorCode::InvalidPattern
        | ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorCode::MessageNotFound | ErrorCode::SessionNotFound => StatusCode::NOT_FOUND,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::TooManyAttachments | ErrorCode::RateLimited | ErrorCode::TooManyConnections => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::SessionClosed | ErrorCode::NotASession | ErrorCode::InputTaken => {
            StatusCode::CONFLICT
        }
        ErrorCode::HistoryLost => StatusCode::GONE,
        ErrorCode::SeamOverflow | ErrorCode::StoreUnavailable | ErrorCode::ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.0 });
        (status(self.0.code), axum::Json(body)).into_response()
    }
}

impl From<StoreError> for RestError {
    fn from(e: StoreError) -> Self {
        let code = match e {
            StoreError::ShuttingDown => ErrorCode::ShuttingDown,
            StoreError::Poisoned(_) | StoreError::Io(_) | StoreError::Corrupt(_) => {
                ErrorCode::StoreUnavailable
            }
            // Asked again, the answer is the same: not a storage outage.
            StoreError::Unsupported(_) => ErrorCode::InvalidRequest,
        };
        Self::new(code, e.to_string())
    }
}

impl RestError {
    pub(crate) fn of_read(session: &str, e: ReadError) -> Self {
        match e {
            ReadError::NotFound | ReadError::Gone => Self::not_found(session),
            ReadError::EpochMismatch { .. } | ReadError::BeyondTail { .. } => {
                Self::invalid(e.to_string())
            }
            ReadError::BeforeRetained { .. } => Self::new(ErrorCode::HistoryLost, e.to_string()),
            ReadError::Store(e) => e.into(),
        }
    }
}
