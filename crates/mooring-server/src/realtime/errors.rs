//! Realtime errors: every refusal as a stable code, a message, and whether to retry.

use mooring_core::session::PublishError;
use mooring_core::store::StoreError;
use mooring_protocol::realtime::{ErrorBody, ErrorCode};

pub(crate) fn body(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    let retryable = matches!(
        code,
        ErrorCode::SeamOverflow
            | ErrorCode::HistoryLost
            | ErrorCode::StoreUnavailable
            | ErrorCode::ShuttingDown
            | ErrorCode::RateLimited
            | ErrorCode::TooManyConnections
    );
    ErrorBody {
        code,
        message: message.into(),
        retryable,
    }
}

/// The wire error of a refused publish. Exhaustive: a new error needs a deliberate code.
pub(crate) fn of_publish(error: &PublishError) -> ErrorBody {
    let message = error.to_string();
    match error {
        PublishError::Closed => body(ErrorCode::SessionClosed, message),
        PublishError::NotASession(_) => body(ErrorCode::NotASession, message),
        PublishError::InvalidEvent { .. } => body(ErrorCode::InvalidEvent, message),
        PublishError::MessageNotFound { .. } => body(ErrorCode::MessageNotFound, message),
        PublishError::InputTaken { .. } => body(ErrorCode::InputTaken, message),
        PublishError::Store(StoreError::ShuttingDown) => body(ErrorCode::ShuttingDown, message),
        PublishError::Store(
            StoreError::Poisoned(_) | StoreError::Io(_) | StoreError::Corrupt(_),
        ) => body(ErrorCode::StoreUnavailable, message),
    }
}

/// Refuses events only the server may publish; `Some(error)` names the first.
pub(crate) fn server_only(events: &[mooring_protocol::session::NewEvent]) -> Option<ErrorBody> {
    let index = events
        .iter()
        .position(|e| e.action == mooring_protocol::session::Action::RunStalled)?;
    Some(body(
        ErrorCode::InvalidEvent,
        format!("event {index}: run.stalled is published by the server"),
    ))
}

/// Refuses a publish whose events the principal may not publish on `session`; `Some(error)`
/// names the first such event and the operation it needs. All or nothing, like the publish.
pub(crate) fn not_granted(
    principal: &crate::auth::Principal,
    session: &str,
    events: &[mooring_protocol::session::NewEvent],
) -> Option<ErrorBody> {
    events.iter().enumerate().find_map(|(index, event)| {
        let needed = mooring_core::auth::Operation::to_publish(event.action);
        (!principal.allows(session, needed)).then(|| {
            body(
                ErrorCode::Forbidden,
                format!("event {index}: this credential does not grant {needed} on {session:?}"),
            )
        })
    })
}
