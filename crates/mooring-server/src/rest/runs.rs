//! Presence and runs over REST: `GET presence`, `GET runs`, `POST cancel`, `POST approve`.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mooring_core::runs::ApprovalDecision;
use mooring_protocol::session::{Action, NewEvent};
use serde::Deserialize;
use serde_json::json;

use super::error::RestError;
use super::publish::{check_name, client_id, publish_events};
use crate::state::AppState;

pub(crate) async fn presence(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, RestError> {
    check_name(&name)?;
    let (members, _) = app.sessions.inspect(&name).await;
    Ok(Json(json!({ "session": name, "members": members })).into_response())
}

pub(crate) async fn runs(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, RestError> {
    check_name(&name)?;
    let (_, runs) = app.sessions.inspect(&name).await;
    Ok(Json(json!({ "session": name, "runs": runs })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelBody {
    #[serde(default)]
    run_id: Option<String>,
}

/// Publishes `control.cancel` for one run, or for every active run without `run_id`.
pub(crate) async fn cancel(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Option<Json<CancelBody>>,
) -> Result<Response, RestError> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let data = match body.run_id {
        Some(run_id) => json!({ "run_id": run_id }),
        None => json!({}),
    };
    let event = NewEvent {
        id: None,
        action: Action::ControlCancel,
        name: None,
        reference: None,
        data,
        extras: Default::default(),
    };
    publish_events(&app, &name, client_id(&headers), vec![event]).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApproveBody {
    approval_id: String,
    decision: ApprovalDecision,
    #[serde(default)]
    reason: Option<String>,
}

/// Publishes `approval.answer`: the decision on one approval an agent asked for.
pub(crate) async fn approve(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Json<ApproveBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, RestError> {
    let Json(body) = body.map_err(|e| RestError::invalid(e.body_text()))?;
    let mut data = json!({ "approval_id": body.approval_id, "decision": body.decision });
    if let Some(reason) = body.reason {
        data["reason"] = json!(reason);
    }
    let event = NewEvent {
        id: None,
        action: Action::ApprovalAnswer,
        name: None,
        reference: None,
        data,
        extras: Default::default(),
    };
    publish_events(&app, &name, client_id(&headers), vec![event]).await
}
