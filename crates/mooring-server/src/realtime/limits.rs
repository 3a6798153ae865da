//! Per-client limits of the realtime protocol: a publish rate per connection (token bucket) and
//! a number of connections per client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Publishes a connection may make: `rate` a second on average, `burst` at once.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    /// Takes one token at `now`; false if the bucket is empty.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available.
    pub(crate) fn wait(&self) -> Duration {
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }
}

/// Open connections by client id.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientConnections {
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One counted connection; dropping it releases its place.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    open: Arc<Mutex<HashMap<String, usize>>>,
    client_id: String,
}

impl ClientConnections {
    /// Counts a new connection of `client_id`, unless it already holds `max`.
    pub(crate) fn acquire(&self, client_id: &str, max: usize) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().ok()?;
        let count = open.entry(client_id.to_owned()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            open: self.open.clone(),
            client_id: client_id.to_owned(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.open.lock() {
            if let Some(count) = open.get_mut(&self.client_id) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&self.client_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3);
        assert!((0..3).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(bucket.wait() > Duration::ZERO);
        assert!(
            bucket.take(start + Duration::from_millis(100)),
            "10/s: one back after 100 ms"
        );
        assert!(!bucket.take(start + Duration::from_millis(100)));
        assert!(
            (0..3).all(|_| bucket.take(start + Duration::from_secs(10))),
            "refills to the burst"
        );
        assert!(!bucket.take(start + Duration::from_secs(10)));
    }

    #[test]
    fn a_client_holds_at_most_max_connections_and_gets_them_back() {
        let clients = ClientConnections::default();
        let a = clients.acquire("alice", 2);
        let b = clients.acquire("alice", 2);
        assert!(a.is_some() && b.is_some());
        assert!(clients.acquire("alice", 2).is_none());
        assert!(clients.acquire("bob", 2).is_some());
        drop(a);
        assert!(clients.acquire("alice", 2).is_some());
    }
}
