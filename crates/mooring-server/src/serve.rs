//! Running a node: accept, serve, and shut down with a deadline.

use std::sync::Arc;
use std::time::Duration;

use mooring_core::clock::Clock;
use mooring_core::store::{LogStore, StoreError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::realtime::sessions::Sessions;
use crate::state::{AppState, Node, ServerConfig};
use crate::upkeep;
use crate::{fanout, fleet, http};

/// Why a node stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("accepting connections failed: {0}")]
    Accept(#[from] std::io::Error),
    #[error("connections did not drain within {0:?}")]
    DrainTimeout(Duration),
    #[error("following the store's notices failed: {0}")]
    Notices(StoreError),
    #[error("flushing the store failed: {0}")]
    Flush(#[from] StoreError),
}

/// Serves `store` on `listener` until `shutdown` is cancelled, then stops accepting, ends live
/// reads, waits up to `drain` for requests in flight, and flushes the store.
pub async fn serve(
    listener: TcpListener,
    store: Arc<dyn LogStore>,
    clock: Arc<dyn Clock>,
    config: ServerConfig,
    shutdown: CancellationToken,
    drain: Duration,
) -> Result<(), ServeError> {
    crate::metrics::install();
    let tasks = TaskTracker::new();
    let hub = Hub::default();
    let sessions = Sessions::new(
        store.clone(),
        hub.clone(),
        config.realtime.clone(),
        shutdown.clone(),
        tasks.clone(),
        clock.clone(),
    );
    let app = AppState::new(Node {
        store: store.clone(),
        hub,
        clock,
        config: Arc::new(config),
        shutdown: shutdown.clone(),
        sessions,
        tasks: tasks.clone(),
    });
    let notices = store.notices().await.map_err(ServeError::Notices)?;
    if let Some(feed) = notices {
        tasks.spawn(fanout::relay(
            feed,
            app.sessions.clone(),
            app.hub.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(shared) = store.fleet() {
        tasks.spawn(fleet::beat(shared, app.sessions.clone(), shutdown.clone()));
    }
    tasks.spawn(upkeep::sweep_expired(
        store.clone(),
        app.config.sweep_interval,
        shutdown.clone(),
    ));
    let service = http::app(app.clone());
    let served = tokio::spawn(crate::listener::run(
        listener,
        app,
        service,
        shutdown.clone(),
    ));
    shutdown.cancelled().await;
    tasks.close();
    let drained = tokio::time::timeout(drain, async {
        let result = served.await;
        tasks.wait().await;
        result
    })
    .await;
    let result = match drained {
        Ok(Ok(())) => Ok(()),
        Ok(Err(join)) => Err(ServeError::Accept(std::io::Error::other(join))),
        Err(_) => Err(ServeError::DrainTimeout(drain)),
    };
    store.shutdown().await?;
    result
}
