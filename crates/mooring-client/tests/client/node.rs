//! A node served in process on the memory engine, that can be restarted on the same address
//! with the same store (so clients see their connection cut and come back to the same log).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mooring_client::{
    Client, ClientOptions, ConnectionStatus, MessageView, ReconnectPolicy, SessionItem,
    Subscription,
};
use mooring_core::clock::{Clock, SystemClock};
use mooring_core::store::LogStore;
use mooring_engine::memory::MemoryStore;
use mooring_server::realtime::RealtimeConfig;
use mooring_server::{ServeError, ServerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound for anything that should happen promptly.
pub(crate) const PROMPT: Duration = Duration::from_secs(15);

pub(crate) struct Node {
    pub(crate) addr: SocketAddr,
    pub(crate) store: Arc<MemoryStore>,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
    shutdown: CancellationToken,
    served: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Node {
    /// A node with rollup off, so each publish is one log event.
    pub(crate) async fn start() -> Self {
        Self::with(RealtimeConfig {
            rollup_window: Duration::ZERO,
            ..RealtimeConfig::default()
        })
        .await
    }

    pub(crate) async fn with(realtime: RealtimeConfig) -> Self {
        Self::with_config(ServerConfig {
            realtime,
            ..ServerConfig::default()
        })
        .await
    }

    pub(crate) async fn with_config(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut node = Self {
            addr,
            store: Arc::new(MemoryStore::new(clock.clone())),
            clock,
            config,
            shutdown: CancellationToken::new(),
            served: None,
        };
        node.serve(listener);
        node
    }

    fn serve(&mut self, listener: TcpListener) {
        self.shutdown = CancellationToken::new();
        self.served = Some(tokio::spawn(mooring_server::serve(
            listener,
            self.store.clone(),
            self.clock.clone(),
            self.config.clone(),
            self.shutdown.clone(),
            Duration::from_secs(5),
        )));
    }

    pub(crate) fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    /// The epoch of `session`'s current life.
    pub(crate) async fn epoch(&self, session: &str) -> u64 {
        self.store
            .head(session)
            .await
            .expect("the session exists")
            .tail
            .epoch
    }

    /// Stops serving: every connection is closed (1001), the store is kept.
    pub(crate) async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(served) = self.served.take() {
            let stopped = tokio::time::timeout(PROMPT, served).await;
            assert!(
                matches!(stopped, Ok(Ok(Ok(())))),
                "node stopped: {stopped:?}"
            );
        }
    }

    /// Serves again on the same address with the same store.
    pub(crate) async fn resume(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.serve(listener);
    }

    /// The server's materialized view of `session`.
    pub(crate) async fn snapshot(&self, session: &str) -> Vec<MessageView> {
        self.store
            .snapshot(session)
            .await
            .expect("snapshot")
            .map(|s| s.messages)
            .unwrap_or_default()
    }

    /// Options for a client of this node that reconnects quickly.
    pub(crate) fn options(&self, client_id: &str) -> ClientOptions {
        ClientOptions {
            reconnect: ReconnectPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
                jitter: true,
                max_attempts: None,
            },
            ..ClientOptions::new(self.url()).client_id(client_id)
        }
    }

    pub(crate) async fn client(&self, client_id: &str) -> Client {
        Client::connect(self.options(client_id))
            .await
            .expect("connect")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The next item, promptly.
pub(crate) async fn next(sub: &mut Subscription) -> SessionItem {
    tokio::time::timeout(PROMPT, sub.next())
        .await
        .expect("an item arrives promptly")
        .expect("the subscription is open")
}

/// Items up to and including the next `Live`.
pub(crate) async fn until_live(sub: &mut Subscription) -> Vec<SessionItem> {
    let mut items = Vec::new();
    loop {
        let item = next(sub).await;
        let live = matches!(item, SessionItem::Live { .. });
        items.push(item);
        if live {
            return items;
        }
    }
}

/// The serials of the events among `items`.
pub(crate) fn serials(items: &[SessionItem]) -> Vec<u64> {
    items
        .iter()
        .filter_map(|i| match i {
            SessionItem::Event(e) => Some(e.serial),
            _ => None,
        })
        .collect()
}

/// Waits until `client` is connected with a connection id other than `old`.
pub(crate) async fn reconnected(client: &Client, old: &str) -> String {
    let mut changes = client.status_changes();
    let wait = async {
        loop {
            if let ConnectionStatus::Connected { connection_id, .. } = &*changes.borrow_and_update()
            {
                if connection_id != old {
                    return connection_id.clone();
                }
            }
            changes.changed().await.expect("client alive");
        }
    };
    tokio::time::timeout(PROMPT, wait)
        .await
        .expect("reconnects promptly")
}

pub(crate) fn connection_id(client: &Client) -> String {
    match client.status() {
        ConnectionStatus::Connected { connection_id, .. } => connection_id,
        other => panic!("not connected: {other:?}"),
    }
}
