//! The Durable Streams HTTP protocol under `/v1/stream/{path}`.
//!
//! Handlers decode a request into a core request, call the store, and encode the answer; the
//! rules themselves live in `mooring_core`. Module per operation family: `write` (create,
//! append, close, delete), `read` (catch-up, long-poll, HEAD), `sse`.

mod error;
mod query;
mod read;
mod response;
mod sse;
mod write;

use axum::routing::get;
use axum::Router;

use crate::state::AppState;

pub use error::DsError;
pub(crate) use write::{run_append, Appended, RequestHeaders};

/// The URL prefix of every stream.
pub const STREAM_PREFIX: &str = "/v1/stream/";

/// Routes of the protocol.
pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/stream/{*path}",
        get(read::get)
            .head(read::head)
            .put(write::create)
            .post(write::append)
            .delete(write::delete),
    )
}
