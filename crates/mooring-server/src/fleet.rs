//! This node among the others on a shared store: it beats, and it finds the nodes that died.
//!
//! Every `node_expiry / 5` the node beats (see [`SharedPresence::beat`]) and learns which nodes
//! are alive. A node alive at the last beat and not at this one died: every session task here
//! counts its members as lost connections. If this node itself was silent past the expiry (a
//! pause, a partition from the store), the others may have dropped its members, so every
//! session task records them again.

use std::collections::BTreeSet;
use std::sync::Arc;

use mooring_core::fleet::SharedPresence;
use tokio_util::sync::CancellationToken;

use crate::realtime::sessions::Sessions;

/// Beats until `shutdown`.
pub(crate) async fn beat(
    shared: Arc<dyn SharedPresence>,
    sessions: Sessions,
    shutdown: CancellationToken,
) {
    let expiry = sessions.config().node_expiry;
    let expiry_ms = expiry.as_millis() as u64;
    let mut ticks = tokio::time::interval(expiry / 5);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alive: BTreeSet<String> = BTreeSet::new();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let beat = match shared.beat(expiry_ms).await {
            Ok(beat) => beat,
            Err(e) => {
                tracing::warn!(error = %e, "beating failed; other nodes count this one dead after {expiry:?} without a beat");
                continue;
            }
        };
        if beat.was_dead {
            let sessions_told = sessions.resync_presence();
            tracing::warn!(
                sessions_told,
                "this node was silent past the node expiry; recording its members again"
            );
        }
        let now: BTreeSet<String> = beat.alive.into_iter().collect();
        for node in alive.difference(&now) {
            metrics::counter!(crate::metrics::NODES_LOST).increment(1);
            let sessions_told = sessions.node_lost(node);
            tracing::info!(
                node,
                sessions_told,
                "another node stopped beating; its members leave after the presence grace"
            );
        }
        alive = now;
    }
}
