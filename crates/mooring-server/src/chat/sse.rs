//! `DefaultChatTransport`'s shape: `POST /v1/chat` with `{id, messages, trigger, …}` answers
//! with the run's UI message chunks as server-sent events (`data: <chunk>`, then
//! `data: [DONE]`); `GET /v1/chat/{id}/stream` replays the active run's answer from its start
//! and follows it, or answers `204` when none is active. A closed response stops the stream,
//! not the run: this transport has no way to say "stop" apart from a dropped connection.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mooring_core::auth::Operation;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{
    active_run, allow, publish_input, send_request, stream_answer, ChunkSink, From, Refused,
};
use crate::auth::Principal;
use crate::rest::publish::client_id;
use crate::state::AppState;

/// Events buffered per response before the reader of the session waits.
const BUFFER: usize = 64;

impl IntoResponse for Refused {
    /// The stock client shows a failed response's body text as the error: plain text, with
    /// the code first so it can be looked up in docs/errors.md.
    fn into_response(self) -> Response {
        (crate::rest::error::status(self.code), self.to_string()).into_response()
    }
}

fn principal(app: &AppState, headers: &HeaderMap) -> Result<Principal, Refused> {
    let credential = crate::auth::http::bearer(headers);
    app.config
        .auth
        .authenticate(credential, app.clock.now_ms())
        .map_err(|e| {
            Refused::new(
                mooring_protocol::realtime::ErrorCode::Unauthorized,
                e.to_string(),
            )
        })
}

/// The identity inputs are published under: the credential's, or on a node without auth the
/// `Mooring-Client-Id` header's.
fn identity(principal: &Principal, headers: &HeaderMap) -> Option<String> {
    principal.client_id.clone().or_else(|| client_id(headers))
}

pub(crate) async fn send(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Refused> {
    let principal = principal(&app, &headers)?;
    let Json(body) = body.map_err(|e| {
        Refused::new(
            mooring_protocol::realtime::ErrorCode::InvalidRequest,
            e.body_text(),
        )
    })?;
    let request = send_request(&body)?;
    allow(&principal, &request.chat, Operation::Publish)?;
    let input = publish_input(
        &app,
        &request.chat,
        identity(&principal, &headers),
        request.message,
    )
    .await?;
    Ok(events(app, request.chat, From::Input(input)))
}

pub(crate) async fn resume(
    State(app): State<AppState>,
    Path(chat): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let principal = principal(&app, &headers)?;
    allow(&principal, &chat, Operation::Subscribe)?;
    match active_run(&app, &chat).await {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some((run_id, start)) => Ok(events(app, chat, From::Run { run_id, start })),
    }
}

/// Chunks as `data:` events.
struct Events(mpsc::Sender<Bytes>);

impl ChunkSink for Events {
    async fn chunk(&mut self, chunk: Value) -> bool {
        let line = format!("data: {chunk}\n\n");
        self.0.send(Bytes::from(line)).await.is_ok()
    }

    fn run(&mut self, _run_id: &str) {}
}

/// The answer as server-sent events, read in a task of its own while the response is open.
fn events(app: AppState, chat: String, from: From) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    tokio::spawn(async move {
        // A comment first: the response starts at once, before the agent begins.
        if tx
            .send(Bytes::from_static(b": stream-open\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut sink = Events(tx.clone());
        let answer = stream_answer(&app, &chat, from, &mut sink);
        // A reader that leaves while the run has not begun stops the reading, not the run.
        let ended = tokio::select! {
            ended = answer => ended,
            () = tx.closed() => false,
        };
        if ended {
            let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("x-vercel-ai-ui-message-stream"),
        HeaderValue::from_static("v1"),
    );
    headers.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    (StatusCode::OK, headers, Body::from_stream(body)).into_response()
}
