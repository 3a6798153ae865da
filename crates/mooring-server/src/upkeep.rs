//! Background upkeep: reclaiming expired streams.

use std::sync::Arc;
use std::time::Duration;

use mooring_core::store::LogStore;
use tokio_util::sync::CancellationToken;

/// Sweeps expired streams every `interval` until `shutdown`.
pub(crate) async fn sweep_expired(
    store: Arc<dyn LogStore>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match store.sweep_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(streams = n, "reclaimed expired streams"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired streams failed"),
        }
    }
}
