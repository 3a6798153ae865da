//! Last-access times of streams with a sliding TTL.
//!
//! Reads reset a sliding TTL, but persisting a write for every read would turn reads into
//! writes. Engines keep read times here, in memory, and persist only write times. After a restart
//! nothing is known of reads, so every stream counts as accessed at start-up: a restart can only
//! lengthen a stream's life, never cut it short.

use std::collections::HashMap;
use std::sync::Mutex;

/// Read times of TTL streams since this process started.
#[derive(Debug)]
pub struct AccessTracker {
    started_ms: u64,
    last_read: Mutex<HashMap<String, u64>>,
}

impl AccessTracker {
    pub fn new(started_ms: u64) -> Self {
        Self {
            started_ms,
            last_read: Mutex::new(HashMap::new()),
        }
    }

    /// Records a read of `name` at `now_ms`.
    pub fn touch(&self, name: &str, now_ms: u64) {
        if let Ok(mut map) = self.last_read.lock() {
            match map.get_mut(name) {
                Some(t) => *t = (*t).max(now_ms),
                None => {
                    map.insert(name.to_owned(), now_ms);
                }
            }
        }
    }

    /// The latest access of `name`, given its persisted last write.
    pub fn last_access(&self, name: &str, last_write_ms: u64) -> u64 {
        let read = self
            .last_read
            .lock()
            .ok()
            .and_then(|map| map.get(name).copied())
            .unwrap_or(0);
        read.max(last_write_ms).max(self.started_ms)
    }

    /// Forgets `name` (deleted or expired), so the map holds only live streams.
    pub fn forget(&self, name: &str) {
        if let Ok(mut map) = self.last_read.lock() {
            map.remove(name);
        }
    }
}
