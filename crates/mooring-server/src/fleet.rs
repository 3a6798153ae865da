//! This node among the others on a shared store: it beats, and it finds the nodes that died.
//!
//! Every `node_expiry / 5` the node beats (see [`Fleet::beat`]) and learns which nodes
//! are alive. A node alive at the last beat and not at this one died: every session task here
//! counts its members as lost connections, and the sessions where the dead node owned runs
//! are started here if they are not hot, so those runs end even if nobody watches. If this
//! node itself was silent past the expiry (a pause, a partition from the store), the others
//! may have dropped its members, so every session task records them again. Agent dispatch
//! learns at each beat whether another node has workers, and announces its waiting inputs
//! again once per expiry while one does.

use std::collections::BTreeSet;
use std::sync::Arc;

use mooring_core::fleet::Fleet;
use tokio_util::sync::CancellationToken;

use crate::realtime::sessions::Sessions;

/// Beats until `shutdown`.
pub(crate) async fn beat(shared: Arc<dyn Fleet>, sessions: Sessions, shutdown: CancellationToken) {
    let expiry = sessions.config().node_expiry;
    let expiry_ms = expiry.as_millis() as u64;
    let mut ticks = tokio::time::interval(expiry / 5);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alive: BTreeSet<String> = BTreeSet::new();
    let mut beats: u64 = 0;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        beats += 1;
        if beats % 5 == 0 {
            // Once per expiry: inputs written here that still wait are announced again, off
            // the beat's path (each asks the store about its claim).
            let dispatcher = sessions.dispatcher().clone();
            tokio::spawn(async move { dispatcher.announce_waiting().await });
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
        sessions.dispatcher().refresh_workers(&beat.alive).await;
        let now: BTreeSet<String> = beat.alive.into_iter().collect();
        for node in alive.difference(&now) {
            metrics::counter!(crate::metrics::NODES_LOST).increment(1);
            let sessions_told = sessions.node_lost(node);
            tracing::info!(
                node,
                sessions_told,
                "another node stopped beating; its members leave and its runs end after the presence grace"
            );
            // Sessions where it owned runs, even those nobody here is attached to.
            match shared.orphaned_sessions(node).await {
                Ok(orphaned) => {
                    for session in orphaned {
                        sessions.node_lost_in(&session, node).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(node, error = %e, "reading a dead node's sessions failed; its runs end when their sessions are next used");
                }
            }
        }
        alive = now;
    }
}
