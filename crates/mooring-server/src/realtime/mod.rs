//! The native realtime protocol over WebSocket at `/v1/ws` (see `docs/protocol.md`).
//!
//! - `sessions`: one task per hot session (`actor`), which orders, rolls up (`rollup`),
//!   writes and broadcasts;
//! - `connection`: one task per client socket; `attach`: the seam between history and live.

mod actor;
mod attach;
mod connection;
pub(crate) mod errors;
mod rollup;
pub mod sessions;

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The most a rollup window may be.
pub const MAX_ROLLUP_WINDOW: Duration = Duration::from_millis(500);

/// Settings of the realtime protocol.
#[derive(Clone, Debug)]
pub struct RealtimeConfig {
    /// How often each side pings; a peer silent for 2.5 heartbeats is dead.
    pub heartbeat: Duration,
    /// Rollup window of namespaces without their own.
    pub rollup_window: Duration,
    /// Rollup windows by namespace.
    pub namespace_rollup: HashMap<String, Duration>,
    /// How long a publish id is remembered.
    pub dedupe_window: Duration,
    /// Sessions one connection may attach at once.
    pub max_attachments: usize,
    /// Largest frame a client may send.
    pub max_frame_bytes: usize,
    /// Largest event (its `data`, `name` and `extras`, as JSON) a client may publish.
    pub max_event_bytes: usize,
    /// Largest presence `data` of a member, as JSON.
    pub max_presence_data_bytes: usize,
    /// How long a new connection has to send `hello`.
    pub hello_timeout: Duration,
    /// How long a session task lingers with nobody attached and nothing to do.
    pub session_idle_exit: Duration,
    /// How long a lost connection's presence and runs wait for it to come back.
    pub presence_grace: Duration,
    /// A run without progress this long emits `run.stalled`.
    pub stall_after: Duration,
    /// `stall_after` by namespace.
    pub namespace_stall_after: HashMap<String, Duration>,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            rollup_window: Duration::from_millis(40),
            namespace_rollup: HashMap::new(),
            dedupe_window: Duration::from_secs(120),
            max_attachments: 256,
            max_frame_bytes: 1 << 20,
            max_event_bytes: 64 << 10,
            max_presence_data_bytes: 1024,
            hello_timeout: Duration::from_secs(10),
            session_idle_exit: Duration::from_secs(30),
            presence_grace: Duration::from_secs(15),
            stall_after: Duration::from_secs(30),
            namespace_stall_after: HashMap::new(),
        }
    }
}

impl RealtimeConfig {
    /// A peer silent this long is dead.
    pub fn dead_after(&self) -> Duration {
        self.heartbeat * 5 / 2
    }

    /// The stall threshold of `namespace`.
    pub fn stall_after(&self, namespace: &str) -> Duration {
        self.namespace_stall_after
            .get(namespace)
            .copied()
            .unwrap_or(self.stall_after)
    }

    /// The rollup window of `namespace`, capped at [`MAX_ROLLUP_WINDOW`].
    pub fn rollup_window(&self, namespace: &str) -> Duration {
        self.namespace_rollup
            .get(namespace)
            .copied()
            .unwrap_or(self.rollup_window)
            .min(MAX_ROLLUP_WINDOW)
    }
}

/// Routes of the protocol.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/ws", get(upgrade))
}

async fn upgrade(State(app): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let max = app.sessions.config().max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let sessions = app.sessions.clone();
            let shutdown = app.shutdown.clone();
            let task = connection::serve(socket, sessions, shutdown);
            async move {
                app.tasks.spawn(task).await.ok();
            }
        })
}
