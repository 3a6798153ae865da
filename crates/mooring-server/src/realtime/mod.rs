//! The native realtime protocol over WebSocket at `/v1/ws` (see `docs/protocol.md`).
//!
//! - `sessions`: one task per hot session (`actor`), which orders, rolls up (`rollup`),
//!   writes and broadcasts;
//! - `connection`: one task per client socket; `attach`: the seam between history and live.

mod actor;
mod attach;
mod connection;
pub mod dispatch;
pub(crate) mod errors;
mod fleet_link;
mod limits;
mod outbound;
mod rollup;
pub mod sessions;

use std::collections::HashMap;
use std::time::Duration;

use mooring_core::session::PublishRules;

use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use mooring_protocol::realtime::{ErrorCode, BEARER_SUBPROTOCOL_PREFIX, SUBPROTOCOL};

use crate::rest::RestError;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

/// The most a rollup window may be.
pub const MAX_ROLLUP_WINDOW: Duration = Duration::from_millis(500);

/// Bytes queued for one connection by default: 64 events of the largest size (64 KiB), or
/// thousands of ordinary ones.
pub const DEFAULT_MAX_OUTBOUND_BYTES: usize = 4 << 20;

/// The WebSocket read buffer of a connection. The library zero-fills its whole read buffer
/// before each read, so its default of 128 KiB made every idle connection cost 145 KiB of
/// resident memory (`mooring-bench idle-connections`), and 8 KiB still 25.8; client frames are
/// small (a 2 KiB read still holds a dozen publishes), and a larger frame grows the buffer as
/// needed. Below 2 KiB, opening 10,000 connections began to fail.
const READ_BUFFER_BYTES: usize = 2 << 10;

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
    /// How long sessions keep their events, in namespaces without their own; `None`: forever.
    pub retention: Option<Duration>,
    /// Retention by namespace (`None`: that namespace keeps everything).
    pub namespace_retention: HashMap<String, Option<Duration>>,
    /// Sessions one connection may attach at once.
    pub max_attachments: usize,
    /// Largest frame a client may send.
    pub max_frame_bytes: usize,
    /// Largest event (its `data`, `name` and `extras`, as JSON) a client may publish.
    pub max_event_bytes: usize,
    /// Largest presence `data` of a member, as JSON.
    pub max_presence_data_bytes: usize,
    /// Largest `extras` of one event (keys and values).
    pub max_extras_bytes: usize,
    /// Publish frames a connection may send a second, on average.
    pub max_publishes_per_sec: u32,
    /// Publish frames a connection may send at once.
    pub publish_burst: u32,
    /// Connections one client id may hold open at once.
    pub max_connections_per_client: usize,
    /// Bytes of frames queued for one connection before its client counts as a slow consumer
    /// (close `4008`); the queue also holds at most 1,024 frames.
    pub max_outbound_bytes: usize,
    /// How long a new connection has to send `hello`.
    pub hello_timeout: Duration,
    /// How long a session task lingers with nobody attached and nothing to do.
    pub session_idle_exit: Duration,
    /// How long a lost connection's presence and runs wait for it to come back.
    pub presence_grace: Duration,
    /// On a store shared by several nodes: a node that has not beaten for this long is dead,
    /// and the others count its members as lost connections. Nodes beat five times as often.
    pub node_expiry: Duration,
    /// A run without progress this long emits `run.stalled`.
    pub stall_after: Duration,
    /// `stall_after` by namespace.
    pub namespace_stall_after: HashMap<String, Duration>,
    /// How long a user input waits for a worker before dispatch gives up on it.
    pub dispatch_hold: Duration,
    /// User inputs that may wait for a worker at once; over it, the oldest is dropped.
    pub max_waiting_inputs: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(10),
            rollup_window: Duration::from_millis(40),
            namespace_rollup: HashMap::new(),
            dedupe_window: Duration::from_secs(120),
            retention: None,
            namespace_retention: HashMap::new(),
            max_attachments: 256,
            max_frame_bytes: 1 << 20,
            max_event_bytes: 64 << 10,
            max_presence_data_bytes: 1024,
            max_extras_bytes: 4096,
            max_publishes_per_sec: 20_000,
            publish_burst: 40_000,
            max_connections_per_client: 256,
            max_outbound_bytes: DEFAULT_MAX_OUTBOUND_BYTES,
            hello_timeout: Duration::from_secs(10),
            session_idle_exit: Duration::from_secs(30),
            presence_grace: Duration::from_secs(15),
            node_expiry: Duration::from_secs(5),
            stall_after: Duration::from_secs(30),
            namespace_stall_after: HashMap::new(),
            dispatch_hold: dispatch::DEFAULT_HOLD,
            max_waiting_inputs: dispatch::DEFAULT_MAX_WAITING,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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

    /// The retention of `namespace`; `None`: it keeps everything.
    pub fn retention(&self, namespace: &str) -> Option<Duration> {
        self.namespace_retention
            .get(namespace)
            .copied()
            .unwrap_or(self.retention)
    }

    /// What the namespace's rules ask of a publish into one of its sessions.
    pub fn publish_rules(&self, namespace: &str) -> PublishRules {
        PublishRules {
            dedupe_window_ms: millis(self.dedupe_window),
            retain_ms: self.retention(namespace).map(millis),
        }
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

/// The credential of an upgrade: `?token=`, a `mooring.bearer.<token>` subprotocol (browsers
/// can set neither headers nor cookies on a cross-site WebSocket), or `Authorization: Bearer`.
pub(crate) fn credential<'a>(
    query: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
) -> Option<&'a str> {
    if let Some(token) = query.get("token") {
        return Some(token);
    }
    let offered = headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|p| p.strip_prefix(BEARER_SUBPROTOCOL_PREFIX));
    offered.or_else(|| crate::auth::http::bearer(headers))
}

/// The refusal of a WebSocket upgrade from an origin not in `--allowed-origins`, if it is one.
/// A browser always sends Origin; other clients may not, and are not the ones a page could
/// turn against their user, so only a present Origin is checked.
pub(crate) fn origin_refused(app: &AppState, headers: &HeaderMap) -> Option<Response> {
    let allowed = app.config.allowed_origins.as_ref()?;
    let origin = headers.get(axum::http::header::ORIGIN)?;
    (!allowed.iter().any(|a| a.as_bytes() == origin.as_bytes())).then(|| {
        RestError::new(ErrorCode::Forbidden, "this origin may not connect").into_response()
    })
}

async fn upgrade(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = origin_refused(&app, &headers) {
        return refused;
    }
    // Verified before the upgrade, refused after it: a browser sees no HTTP status of a failed
    // upgrade, but it does see an error frame and close code 4003.
    let principal = app
        .config
        .auth
        .authenticate(credential(&query, &headers), app.clock.now_ms());
    let max = app.sessions.config().max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        .protocols([SUBPROTOCOL])
        .on_upgrade(move |socket| {
            let task = connection::serve(
                socket,
                connection::Context {
                    sessions: app.sessions.clone(),
                    shutdown: app.shutdown.clone(),
                    auth: app.config.auth.clone(),
                    clock: app.clock.clone(),
                },
                principal,
            );
            async move {
                app.tasks.spawn(task).await.ok();
            }
        })
}
