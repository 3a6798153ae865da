//! An in-process node on port 0 for the realtime tests, on the memory engine, the embedded
//! engine in a temporary directory, or any store a test wraps.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mooring_core::clock::{Clock, SystemClock};
use mooring_core::store::LogStore;
use mooring_engine::embedded::EmbeddedStore;
use mooring_engine::memory::MemoryStore;
use mooring_server::realtime::RealtimeConfig;
use mooring_server::{ServeError, ServerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Which engine a node runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    Memory,
    /// redb in a temporary directory, every commit fsynced.
    Embedded,
}

impl Engine {
    /// The engine named by environment variable `var` (`memory` or `embedded`), else `default`.
    pub(crate) fn from_env(var: &str, default: Engine) -> Engine {
        match std::env::var(var).ok().as_deref() {
            Some("memory") => Engine::Memory,
            Some("embedded") => Engine::Embedded,
            _ => default,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Engine::Memory => "memory",
            Engine::Embedded => "embedded",
        }
    }
}

/// A running node; dropping it starts its shutdown.
pub(crate) struct Node {
    /// `127.0.0.1:port`.
    pub(crate) addr: String,
    pub(crate) store: Arc<dyn LogStore>,
    shutdown: CancellationToken,
    served: Option<JoinHandle<Result<(), ServeError>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Node {
    /// A node on a fresh store of `engine`.
    pub(crate) async fn start(engine: Engine, realtime: RealtimeConfig) -> Node {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (store, dir): (Arc<dyn LogStore>, _) = match engine {
            Engine::Memory => (Arc::new(MemoryStore::new(clock)), None),
            Engine::Embedded => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let store = EmbeddedStore::open(dir.path(), clock).expect("embedded store opens");
                (Arc::new(store), Some(dir))
            }
        };
        let mut node = Node::on_store(store, realtime).await;
        node._dir = dir;
        node
    }

    /// A node serving `store`.
    pub(crate) async fn on_store(store: Arc<dyn LogStore>, realtime: RealtimeConfig) -> Node {
        // A deep accept queue: the churn tests open thousands of connections a second, and a
        // connect whose SYN is dropped by a full queue retries only after 1, 3, 7, 15... s.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let listener = socket.listen(4096).expect("listen");
        let addr = listener.local_addr().expect("addr").to_string();
        let shutdown = CancellationToken::new();
        let config = ServerConfig {
            realtime,
            ..ServerConfig::default()
        };
        let served = tokio::spawn(mooring_server::serve(
            listener,
            store.clone(),
            Arc::new(SystemClock),
            config,
            shutdown.clone(),
            Duration::from_secs(5),
        ));
        Node {
            addr,
            store,
            shutdown,
            served: Some(served),
            _dir: None,
        }
    }

    pub(crate) fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts the shutdown without waiting for it.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts the node down and waits until it stopped.
    pub(crate) async fn stop(mut self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        match self.served.take() {
            Some(served) => served.await.expect("the server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The realtime settings of the tests: defaults with rollup off, so each publish is one event.
pub(crate) fn no_rollup() -> RealtimeConfig {
    RealtimeConfig {
        rollup_window: Duration::ZERO,
        ..RealtimeConfig::default()
    }
}

/// Rollup off and publishes unthrottled: for tests of something other than the rate limit that
/// publish thousands of events as fast as they can.
pub(crate) fn unthrottled() -> RealtimeConfig {
    RealtimeConfig {
        max_publishes_per_sec: 1_000_000,
        publish_burst: 1_000_000,
        ..no_rollup()
    }
}

/// A value of environment variable `var`, or `default`.
pub(crate) fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}
