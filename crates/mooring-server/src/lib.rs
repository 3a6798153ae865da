//! The Mooring node: every HTTP surface on one port, over one `LogStore`.
//!
//! - [`auth`]: API keys and tokens, verified into a principal; the HTTP guards.
//! - [`durable_streams`]: the Durable Streams protocol under `/v1/stream/`.
//! - [`realtime`]: the native realtime protocol at `/v1/ws`.
//! - [`rest`]: REST and SSE over sessions at `/v1/sessions/`.
//! - [`hub`]: wake-ups for live readers.
//! - `fanout`: wakes them for writes through other nodes, on a store that several nodes share.
//! - `fleet`: on such a store, beats and finds the nodes that died (for presence).
//! - [`http`]: the shared layers (CORS, security headers, body limits) and `/healthz`.
//! - `serve`: runs a node until its shutdown token fires, then drains within a deadline.

pub mod auth;
pub mod chat;
pub mod durable_streams;
mod fanout;
mod fleet;
pub mod http;
pub mod hub;
mod listener;
pub mod metrics;
pub mod realtime;
pub mod rest;
mod serve;
pub mod state;
mod upkeep;

pub use serve::{serve, ServeError};
pub use state::{AppState, ServerConfig};
