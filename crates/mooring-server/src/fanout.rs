//! Live delivery across nodes: wakes this node's live readers when another node writes.
//!
//! On a store that other nodes write too (the Redis engine), [`LogStore::notices`] says which
//! streams they moved. For each, the session task of that stream (if one runs here) reads the
//! new events from the store and broadcasts them, and long-poll and SSE readers waiting on it
//! read again. Notices carry no events, so a lost one cannot become a gap: the next wake-up of
//! that session reads everything after what it last sent, and after a [`StoreNotice::Lost`]
//! every hot session and waiting reader is woken at once.
//!
//! Presence changes of other nodes' members go to the session's task, if one runs here; after
//! `Lost`, every task records its own members again and reads the others' afresh. User inputs
//! written through other nodes go to agent dispatch.
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
                metrics::counter!(crate::metrics::STORE_NOTICES, "kind" => "moved").increment(1);
                sessions.poke(&name);
                hub.notify(&name);
            }
            Some(StoreNotice::Presence(notice)) => {
                metrics::counter!(crate::metrics::STORE_NOTICES, "kind" => "presence").increment(1);
                sessions.remote_presence(notice);
            }
            Some(StoreNotice::Input(notice)) => {
                metrics::counter!(crate::metrics::STORE_NOTICES, "kind" => "input").increment(1);
                sessions.dispatcher().remote_input(*notice);
            }
            Some(StoreNotice::Lost) => {
                metrics::counter!(crate::metrics::STORE_NOTICES, "kind" => "lost").increment(1);
                // Presence changes may be lost too, and if Redis lost its data, ours with it.
                sessions.resync_presence();
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::time::Duration;

    use mooring_core::clock::SystemClock;
    use mooring_engine::memory::MemoryStore;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::realtime::RealtimeConfig;

    /// A feed that sends its notices, then ends.
    #[derive(Debug)]
    struct Given(VecDeque<StoreNotice>);

    // By hand, as `async_trait` writes it: this crate does not depend on it.
    impl NoticeFeed for Given {
        fn next<'a, 'b>(
            &'a mut self,
        ) -> Pin<Box<dyn Future<Output = Option<StoreNotice>> + Send + 'b>>
        where
            'a: 'b,
            Self: 'b,
        {
            let notice = self.0.pop_front();
            Box::pin(async move { notice })
        }
    }

    async fn relay_all(hub: &Hub, notices: Vec<StoreNotice>) {
        let clock = Arc::new(SystemClock);
        let store = Arc::new(MemoryStore::new(clock.clone()));
        let shutdown = CancellationToken::new();
        let config = RealtimeConfig::default();
        let (tasks, hub_) = (TaskTracker::new(), hub.clone());
        let sessions = Sessions::new(store, hub_, config, shutdown.clone(), tasks, clock);
        let feed = Box::new(Given(notices.into()));
        relay(feed, sessions, hub.clone(), shutdown).await;
    }

    async fn woken(sub: &mut crate::hub::Subscription) -> bool {
        tokio::time::timeout(Duration::from_millis(50), sub.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_moved_stream_wakes_its_readers_only() {
        let hub = Hub::default();
        let (mut s, mut t) = (hub.subscribe("s"), hub.subscribe("t"));
        let moved = StoreNotice::Moved {
            name: "s".into(),
            tail: 3,
        };
        relay_all(&hub, vec![moved]).await;
        assert!(woken(&mut s).await, "the moved stream's reader");
        assert!(!woken(&mut t).await, "another stream's reader");
    }

    #[tokio::test]
    async fn lost_notices_wake_every_reader() {
        let hub = Hub::default();
        let (mut s, mut t) = (hub.subscribe("s"), hub.subscribe("t"));
        relay_all(&hub, vec![StoreNotice::Lost]).await;
        assert!(woken(&mut s).await);
        assert!(woken(&mut t).await);
    }
}
