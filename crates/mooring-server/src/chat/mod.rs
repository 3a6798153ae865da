//! The AI SDK's own chat transports, served (docs/ai-sdk.md, "The stock transports"): the
//! frames of `WebSocketChatTransport` at `/v1/chat/ws`, and the HTTP and server-sent events of
//! `DefaultChatTransport` at `POST /v1/chat` and `GET /v1/chat/{id}/stream`. The chat id is the
//! session; a sent message becomes a `user-input` that dispatch hands to an agent, and the
//! stream is that agent's run, read back from the session, so every tab, device and transport
//! sees the same answer and a resume replays it from its start.

mod answer;
mod follow;
mod sse;
mod ws;

use axum::routing::{get, post};
use axum::Router;
use mooring_core::auth::Operation;
use mooring_core::session::PublishGroup;
use mooring_protocol::realtime::{ErrorCode, INPUT_NAME};
use mooring_protocol::session::{Action, NewEvent};
use serde_json::Value;

use crate::auth::Principal;
use crate::realtime::errors::{invalid_session_name, of_publish};
use crate::state::AppState;
use answer::{AnswerReader, Target};
use follow::Follower;

/// Routes of the chat surface.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/chat/ws", get(ws::upgrade))
        .route("/v1/chat", post(sse::send))
        .route("/v1/chat/{id}/stream", get(sse::resume))
}

/// A refusal: a code (for the HTTP status) and a message for the client.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Refused {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// `"<code>: <message>"`, the code as it travels (`forbidden`): what a stock client shows as
/// the error, over either transport.
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self.code) {
            Ok(Value::String(code)) => write!(f, "{code}: {}", self.message),
            _ => write!(f, "{:?}: {}", self.code, self.message),
        }
    }
}

/// What a `send` asks for: the chat and its newest user message.
#[derive(Debug)]
pub(crate) struct SendRequest {
    pub(crate) chat: String,
    pub(crate) message: Value,
}

/// Reads a `send` frame or body: `id`, `messages` (the last user message is the input),
/// `trigger` (only `submit-message`: a session keeps every answer, a regeneration is a new
/// input).
pub(crate) fn send_request(body: &Value) -> Result<SendRequest, Refused> {
    let invalid = |m: &str| Refused::new(ErrorCode::InvalidRequest, m);
    let chat = body
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the chat id (`id`) is missing"))?;
    check_chat(chat)?;
    match body.get("trigger").and_then(Value::as_str) {
        Some("submit-message") | None => {}
        Some("regenerate-message") => {
            return Err(invalid(
                "regenerate-message is not supported: a session keeps every answer; send the message again as a new one",
            ))
        }
        Some(other) => return Err(invalid(&format!("unknown trigger {other:?}"))),
    }
    let message = body
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| {
            m.iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        })
        .ok_or_else(|| invalid("`messages` holds no user message"))?;
    if message.get("id").and_then(Value::as_str).is_none() {
        return Err(invalid("the user message has no `id`"));
    }
    Ok(SendRequest {
        chat: chat.to_owned(),
        message: message.clone(),
    })
}

fn check_chat(chat: &str) -> Result<(), Refused> {
    match invalid_session_name(chat, "a chat id is a session name:") {
        Some(err) => Err(Refused::new(err.code, err.message)),
        None => Ok(()),
    }
}

/// Whether `principal` may do `operation` in `chat`.
pub(crate) fn allow(
    principal: &Principal,
    chat: &str,
    operation: Operation,
) -> Result<(), Refused> {
    check_chat(chat)?;
    if principal.allows(chat, operation) {
        Ok(())
    } else {
        Err(Refused::new(
            ErrorCode::Forbidden,
            format!("this credential does not grant {operation} on {chat:?}"),
        ))
    }
}

/// Publishes the user's message as the chat's input (dispatch hands it to an agent); returns
/// its serial. Its event id is `ui-<message id>`, so a resend is not a second input.
pub(crate) async fn publish_input(
    app: &AppState,
    chat: &str,
    client_id: Option<String>,
    message: Value,
) -> Result<u64, Refused> {
    let id = message
        .get("id")
        .and_then(Value::as_str)
        .map(|id| format!("ui-{id}"));
    let size = serde_json::to_string(&message).map_or(0, |m| m.len());
    let limit = app.sessions.config().max_event_bytes;
    if size > limit {
        return Err(Refused::new(
            ErrorCode::TooLarge,
            format!("the message is {size} bytes; the limit is {limit}"),
        ));
    }
    let event = NewEvent {
        id,
        action: Action::MessageCreate,
        name: Some(INPUT_NAME.to_owned()),
        reference: None,
        data: message,
        extras: Default::default(),
    };
    let group = PublishGroup::new(client_id, vec![event]);
    let outcome = app
        .sessions
        .publish(chat, group, None)
        .await
        .await
        .map_err(|_| Refused::new(ErrorCode::ShuttingDown, "the session stopped"))?
        .map_err(|e| {
            let body = of_publish(&e);
            Refused::new(body.code, body.message)
        })?;
    outcome
        .results
        .first()
        .map(|r| r.serial)
        .ok_or_else(|| Refused::new(ErrorCode::StoreUnavailable, "the input was not written"))
}

/// The chat's active run, newest first: its id and the serial of its start.
pub(crate) async fn active_run(app: &AppState, chat: &str) -> Option<(String, u64)> {
    let (_, runs) = app.sessions.inspect(chat).await;
    runs.into_iter()
        .max_by_key(|r| r.serial)
        .map(|r| (r.run_id, r.serial))
}

/// Where a request's answer is read from: after its input, or from its run's start.
pub(crate) enum From {
    Input(u64),
    Run { run_id: String, start: u64 },
}

/// Where a stream's chunks go: a WebSocket request's frames, or a response's events.
pub(crate) trait ChunkSink: Send {
    /// Sends one chunk; `false` once the reader left.
    fn chunk(&mut self, chunk: Value) -> impl std::future::Future<Output = bool> + Send;
    /// The run being answered is known (it may have started after the request).
    fn run(&mut self, run_id: &str);
}

/// Reads the answer `from` asks for and hands each chunk to `out` until the run ends. Returns
/// whether the run ended (rather than the reader leaving or the node stopping).
pub(crate) async fn stream_answer(
    app: &AppState,
    chat: &str,
    from: From,
    out: &mut impl ChunkSink,
) -> bool {
    let (target, after) = match from {
        From::Input(serial) => (Target::Input(serial), serial),
        From::Run { run_id, start } => {
            out.run(&run_id);
            (Target::Run(run_id), start.saturating_sub(1))
        }
    };
    let mut reader = AnswerReader::new(target);
    let mut follower = Follower::new(app.clone(), chat, after);
    let mut told = reader.run_id().is_some();
    while let Some((event, live)) = follower.next().await {
        let step = reader.on_event(&event, live);
        if !told {
            if let Some(run_id) = reader.run_id() {
                out.run(run_id);
                told = true;
            }
        }
        for chunk in step.chunks {
            if !out.chunk(chunk).await {
                return false;
            }
        }
        if step.done {
            return true;
        }
    }
    false
}

/// Publishes `control.cancel` for `run_id`: the stop of a stock transport is a real cancel.
pub(crate) async fn cancel(app: &AppState, chat: &str, client_id: Option<String>, run_id: &str) {
    let event = NewEvent {
        id: None,
        action: Action::ControlCancel,
        name: None,
        reference: None,
        data: serde_json::json!({ "run_id": run_id }),
        extras: Default::default(),
    };
    let group = PublishGroup::new(client_id, vec![event]);
    let written = app.sessions.publish(chat, group, None).await.await;
    if !matches!(written, Ok(Ok(_))) {
        tracing::warn!(chat, run_id, "cancelling a chat's run failed");
    }
}
