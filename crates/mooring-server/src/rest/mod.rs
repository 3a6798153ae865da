//! REST and SSE over sessions, under `/v1/sessions/{name}/` (see `docs/protocol.md`).

pub(crate) mod error;
mod history;
pub(crate) mod publish;
mod runs;
mod sse;

use axum::routing::{get, post};
use axum::Router;

pub use error::RestError;

use crate::state::AppState;

/// Routes of the REST surface.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/sessions/{name}/events",
            post(publish::events).get(sse::events),
        )
        .route(
            "/v1/sessions/{name}/messages/{serial}/append",
            post(publish::append),
        )
        .route("/v1/sessions/{name}/history", get(history::history))
        .route("/v1/sessions/{name}/presence", get(runs::presence))
        .route("/v1/sessions/{name}/runs", get(runs::runs))
        .route("/v1/sessions/{name}/cancel", post(runs::cancel))
        .route("/v1/sessions/{name}/approve", post(runs::approve))
}
