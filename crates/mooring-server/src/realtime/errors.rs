//! Realtime errors: every refusal as a stable code, a message, and whether to retry.

use mooring_core::session::PublishError;
use mooring_core::store::StoreError;
use mooring_protocol::realtime::{ErrorBody, ErrorCode};
use mooring_protocol::session::is_valid_session_name;

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

/// Refuses a `name` that is not a session name; `Some(error)` opens its message with `called`,
/// what the client knows the name as ("session names are", "a chat id is a session name:"),
/// and states the rule.
pub(crate) fn invalid_session_name(name: &str, called: &str) -> Option<ErrorBody> {
    (!is_valid_session_name(name)).then(|| {
        body(
            ErrorCode::InvalidSessionName,
            format!("{called} 1 to 255 of A-Z a-z 0-9 : _ . / -"),
        )
    })
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
        // Asked again, the answer is the same: not a storage outage.
        PublishError::Store(StoreError::Unsupported(_)) => body(ErrorCode::InvalidRequest, message),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_session_name_is_refused_in_the_words_of_its_surface() {
        assert!(invalid_session_name("chat:1", "session names are").is_none());
        let rest = invalid_session_name("not a name", "session names are");
        let chat = invalid_session_name("", "a chat id is a session name:");
        let (Some(rest), Some(chat)) = (rest, chat) else {
            panic!("an invalid name passed");
        };
        assert_eq!(rest.code, ErrorCode::InvalidSessionName);
        assert_eq!(
            rest.message,
            "session names are 1 to 255 of A-Z a-z 0-9 : _ . / -"
        );
        assert_eq!(chat.code, ErrorCode::InvalidSessionName);
        assert_eq!(
            chat.message,
            "a chat id is a session name: 1 to 255 of A-Z a-z 0-9 : _ . / -"
        );
        assert!(!rest.retryable && !chat.retryable);
    }
}
