//! Wake-ups for readers waiting at a stream's tail.
//!
//! A long-poll or SSE reader subscribes *before* it reads, so an append that lands between its
//! read and its wait still wakes it. The hub carries no data, only "this stream moved": readers
//! always read the records from the store. Entries exist only while someone waits, so the map
//! never outgrows the number of waiting readers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Per-stream change signals.
#[derive(Debug, Clone, Default)]
pub struct Hub {
    streams: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
}

/// A reader's subscription to one stream; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
    name: String,
    receiver: Option<watch::Receiver<u64>>,
}

impl Hub {
    /// Subscribes to changes of `name`.
    pub fn subscribe(&self, name: &str) -> Subscription {
        let receiver = self.streams.lock().ok().map(|mut map| {
            map.entry(name.to_owned())
                .or_insert_with(|| watch::channel(0).0)
                .subscribe()
        });
        Subscription {
            hub: self.clone(),
            name: name.to_owned(),
            receiver,
        }
    }

    /// Wakes every reader of `name`.
    pub fn notify(&self, name: &str) {
        if let Ok(map) = self.streams.lock() {
            if let Some(sender) = map.get(name) {
                sender.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }

    /// Wakes every waiting reader of every stream; returns how many streams had some.
    pub fn notify_all(&self) -> usize {
        let Ok(map) = self.streams.lock() else {
            return 0;
        };
        for sender in map.values() {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
        map.len()
    }

    /// Streams with at least one waiting reader.
    pub fn watched(&self) -> usize {
        self.streams.lock().map(|m| m.len()).unwrap_or(0)
    }
}

impl Subscription {
    /// Waits until the stream changes after the subscription (or the previous wake-up).
    pub async fn changed(&mut self) {
        match &mut self.receiver {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        if let Ok(mut map) = self.hub.streams.lock() {
            if map.get(&self.name).is_some_and(|s| s.receiver_count() == 0) {
                map.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_notify_after_subscribing_wakes_the_reader() {
        let hub = Hub::default();
        let mut sub = hub.subscribe("s");
        hub.notify("s");
        tokio::time::timeout(Duration::from_secs(1), sub.changed())
            .await
            .expect("woken");
    }

    #[tokio::test]
    async fn other_streams_do_not_wake_it() {
        let hub = Hub::default();
        let mut sub = hub.subscribe("s");
        hub.notify("t");
        let woke = tokio::time::timeout(Duration::from_millis(50), sub.changed()).await;
        assert!(woke.is_err());
    }

    #[tokio::test]
    async fn notify_all_wakes_readers_of_every_stream() {
        let hub = Hub::default();
        let (mut s, mut t) = (hub.subscribe("s"), hub.subscribe("t"));
        assert_eq!(hub.notify_all(), 2);
        for sub in [&mut s, &mut t] {
            tokio::time::timeout(Duration::from_secs(1), sub.changed())
                .await
                .expect("woken");
        }
    }

    #[test]
    fn entries_go_with_their_last_reader() {
        let hub = Hub::default();
        let a = hub.subscribe("s");
        let b = hub.subscribe("s");
        assert_eq!(hub.watched(), 1);
        drop(a);
        assert_eq!(hub.watched(), 1);
        drop(b);
        assert_eq!(hub.watched(), 0);
    }
}
