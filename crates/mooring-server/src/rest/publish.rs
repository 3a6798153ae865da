//! `POST /v1/sessions/{name}/events` and `POST /v1/sessions/{name}/messages/{serial}/append`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use mooring_core::session::PublishGroup;
use mooring_protocol::realtime::ErrorCode;
use mooring_protocol::session::{Action, NewEvent};
use serde::Deserialize;
use serde_json::json;

use super::error::RestError;
use crate::auth::Principal;
use crate::realtime::errors::{invalid_session_name, of_publish};
use crate::state::AppState;

/// Header naming the publisher on a node without auth (with auth, the credential does).
pub(crate) const CLIENT_ID_HEADER: &str = "mooring-client-id";

/// One event, or `{"events": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum PublishBody {
    Many { events: Vec<NewEvent> },
    One(NewEvent),
}

pub(crate) fn client_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(CLIENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(crate) fn check_name(name: &str) -> Result<(), RestError> {
    match invalid_session_name(name, "session names are") {
        Some(err) => Err(RestError(err)),
        None => Ok(()),
    }
}

/// Publishes through the session's task, so REST writes are ordered and broadcast like any.
pub(crate) async fn publish_events(
    app: &AppState,
    name: &str,
    client_id: Option<String>,
    events: Vec<NewEvent>,
) -> Result<Response, RestError> {
    check_name(name)?;
    if events.is_empty() {
        return Err(RestError::new(
            ErrorCode::InvalidEvent,
            "a publish needs at least one event",
        ));
    }
    if let Some(err) = crate::realtime::errors::server_only(&events) {
        return Err(RestError(err));
    }
    let group = PublishGroup::new(client_id, events);
    let outcome = app
        .sessions
        .publish(name, group, None)
        .await
        .await
        .map_err(|_| RestError::new(ErrorCode::ShuttingDown, "the session stopped"))?
        .map_err(|e| RestError(of_publish(&e)))?;
    let body = json!({ "session": name, "epoch": outcome.epoch, "results": outcome.results });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) async fn events(
    State(app): State<AppState>,
    Path(name): Path<String>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Json<PublishBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, RestError> {
    let Json(body) = body.map_err(|e| RestError::invalid(e.body_text()))?;
    let events = match body {
        PublishBody::Many { events } => events,
        PublishBody::One(event) => vec![event],
    };
    if let Some(err) = crate::realtime::errors::not_granted(&principal, &name, &events) {
        return Err(RestError(err));
    }
    publish_events(&app, &name, client_id(&headers), events).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppendBody {
    data: String,
    #[serde(default)]
    id: Option<String>,
}

pub(crate) async fn append(
    State(app): State<AppState>,
    Path((name, serial)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Result<Json<AppendBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, RestError> {
    let Json(body) = body.map_err(|e| RestError::invalid(e.body_text()))?;
    let event = NewEvent {
        id: body.id,
        action: Action::MessageAppend,
        name: None,
        reference: Some(serial),
        data: body.data.into(),
        extras: Default::default(),
    };
    publish_events(&app, &name, client_id(&headers), vec![event]).await
}
