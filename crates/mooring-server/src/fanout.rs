//! Live delivery across nodes: wakes this node's live readers when another node writes.
//!
//! On a store that other nodes write too (the Redis engine), [`LogStore::notices`] says which
//! streams they moved. For each, the session task of that stream (if one runs here) reads the
//! new events from the store and broadcasts them, and long-poll and SSE readers waiting on it
//! read again. Notices carry no events, so a lost one cannot become a gap: the next wake-up of
//! that session reads everything after what it last sent, and after a [`StoreNotice::Lost`]
//! every hot session and waiting reader is woken at once.
//!
//! [`LogStore::notices`]: mooring_core::store::LogStore::notices

use mooring_core::store::{NoticeFeed, StoreNotice};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::realtime::sessions::Sessions;

/// Wakes readers for each notice of `feed` until `shutdown` or the feed ends.
pub(crate) async fn relay(
    mut feed: Box<dyn NoticeFeed>,
    sessions: Sessions,
    hub: Hub,
    shutdown: CancellationToken,
) {
    loop {
        let notice = tokio::select! {
            notice = feed.next() => notice,
            () = shutdown.cancelled() => return,
        };
        match notice {
            Some(StoreNotice::Moved { name, .. }) => {
                sessions.poke(&name);
                hub.notify(&name);
            }
            Some(StoreNotice::Lost) => {
                let (hot, waiting) = (sessions.poke_all(), hub.notify_all());
                tracing::debug!(hot, waiting, "woke every reader after lost notices");
            }
            None => {
                tracing::warn!("the store's notices ended: writes through other nodes now reach live readers here only when this node writes the session or they reconnect");
                return;
            }
        }
    }
}
