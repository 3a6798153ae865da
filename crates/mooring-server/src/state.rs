//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use mooring_core::clock::Clock;
use mooring_core::store::LogStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::hub::Hub;
use crate::realtime::sessions::Sessions;
use crate::realtime::RealtimeConfig;

/// Limits and timings of the HTTP surfaces.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long a long-poll waits for data before answering `204`.
    pub long_poll_timeout: Duration,
    /// How long an SSE connection stays open before the server closes it (clients resume).
    pub sse_max_duration: Duration,
    /// Bytes of records one read returns at most (at least one record is always returned).
    pub max_read_bytes: usize,
    /// Largest request body accepted by an append or create.
    pub max_append_bytes: usize,
    /// How often expired streams are reclaimed.
    pub sweep_interval: Duration,
    pub realtime: RealtimeConfig,
    /// Credentials and capabilities; anonymous by default.
    pub auth: Auth,
    /// Origins browsers may connect from (WebSocket upgrade and CORS); `None` allows any,
    /// which the Durable Streams suite and anonymous loopback nodes rely on.
    pub allowed_origins: Option<Vec<String>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            long_poll_timeout: Duration::from_secs(20),
            sse_max_duration: Duration::from_secs(60),
            max_read_bytes: 1 << 20,
            max_append_bytes: 16 << 20,
            sweep_interval: Duration::from_secs(1),
            realtime: RealtimeConfig::default(),
            auth: Auth::anonymous(),
            allowed_origins: None,
        }
    }
}

/// The shared handle of a running node: one pointer, because every request clones it (each
/// extractor and middleware takes its own), and cloning seven shared fields cost a measurable
/// share of a small append's CPU.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Node>);

impl AppState {
    pub fn new(node: Node) -> Self {
        Self(Arc::new(node))
    }
}

impl std::ops::Deref for AppState {
    type Target = Node;

    fn deref(&self) -> &Node {
        &self.0
    }
}

/// What a running node shares between its requests and tasks.
#[derive(Debug)]
pub struct Node {
    pub store: Arc<dyn LogStore>,
    pub hub: Hub,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<ServerConfig>,
    /// Cancelled when the node starts shutting down; live reads end on it.
    pub shutdown: CancellationToken,
    /// Realtime sessions of this node.
    pub sessions: Sessions,
    /// Long-lived tasks (connections, sessions) that shutdown waits for.
    pub tasks: TaskTracker,
}
