//! A session's events after a serial, history then live, each once and in order: reads from
//! the store, woken by the hub (subscribed before the first read, so nothing is missed).

use std::collections::VecDeque;

use mooring_core::read::ReadError;
use mooring_core::session::event_of;
use mooring_protocol::session::Event;
use mooring_protocol::{Position, ReadFrom};

use crate::hub::Subscription;
use crate::state::AppState;

const PAGE_BYTES: usize = 256 << 10;

pub(crate) struct Follower {
    app: AppState,
    name: String,
    position: u64,
    changes: Subscription,
    pending: VecDeque<Event>,
    /// A read has reached the tail once: what follows is live.
    caught_up: bool,
    /// Whether the events in `pending` came after catching up.
    pending_live: bool,
}

impl Follower {
    /// Follows `name` from the event after `after`.
    pub(crate) fn new(app: AppState, name: &str, after: u64) -> Self {
        let changes = app.hub.subscribe(name);
        Self {
            app,
            name: name.to_owned(),
            position: after,
            changes,
            pending: VecDeque::new(),
            caught_up: false,
            pending_live: false,
        }
    }

    /// The next event and whether it is live; `None` when the node shuts down, or retention
    /// removed the events after the position.
    pub(crate) async fn next(&mut self) -> Option<(Event, bool)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((event, self.pending_live));
            }
            let epoch = match self.app.store.head(&self.name).await {
                Ok(info) => info.tail.epoch,
                Err(_) => 0,
            };
            let from = ReadFrom::After(Position {
                epoch,
                serial: self.position,
            });
            self.pending_live = self.caught_up;
            match self.app.store.read(&self.name, from, PAGE_BYTES).await {
                Ok(batch) if !batch.records.is_empty() => {
                    self.caught_up |= batch.up_to_date();
                    for record in &batch.records {
                        self.position = record.serial;
                        self.pending.push_back(event_of(record));
                    }
                    continue;
                }
                // Retention removed events this follow has not given: what it was asked for
                // cannot be told whole, so it ends rather than skip them.
                Err(ReadError::BeforeRetained { .. }) => {
                    tracing::info!(session = %self.name, after = self.position, "the events to follow were trimmed by retention");
                    return None;
                }
                // Nothing new (or no session yet): wait for the next write.
                _ => self.caught_up = true,
            }
            tokio::select! {
                () = self.changes.changed() => {}
                () = self.app.shutdown.cancelled() => return None,
            }
        }
    }
}
