//! One task per hot session: it orders publishes, rolls appends up, writes them in batches,
//! and broadcasts what became durable to the session's subscribers, in serial order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use mooring_core::session::{event_of, PublishError, PublishGroup, PublishOutcome};
use mooring_core::store::LogStore;
use mooring_protocol::realtime::ServerFrame;
use mooring_protocol::session::Event;
use mooring_protocol::ReadFrom;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::rollup::{Reply, Rollup};
use crate::hub::Hub;

/// Commands taken from the inbox per turn before writing, so bursts share one commit.
const MAX_COMMANDS_PER_TURN: usize = 1024;
/// Bytes of history read per step when catching up on events written outside the actor.
const CATCH_UP_BYTES: usize = 1 << 20;

/// A live event on its way to one subscriber: its serial and its encoded frame.
pub(crate) type LiveItem = (u64, Utf8Bytes);

/// One attachment's live feed.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<LiveItem>,
    /// Set before the actor drops a subscriber whose feed was full.
    pub(crate) overflowed: Arc<AtomicBool>,
}

/// What a session task is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        group: PublishGroup,
        reply: Reply,
    },
    /// Registers a live feed; replies the session's epoch and the serial the feed starts after.
    Subscribe {
        subscriber: Subscriber,
        reply: oneshot::Sender<(u64, u64)>,
    },
    Unsubscribe {
        id: u64,
    },
    /// The log moved outside this task (a Durable Streams append): broadcast what is new.
    Poke,
}

/// Settings of one session task.
#[derive(Clone, Debug)]
pub(crate) struct ActorSettings {
    pub(crate) rollup_window: Duration,
    pub(crate) dedupe_window_ms: u64,
    pub(crate) idle_exit: Duration,
}

pub(crate) struct SessionActor {
    name: String,
    store: Arc<dyn LogStore>,
    hub: Hub,
    settings: ActorSettings,
    subscribers: Vec<Subscriber>,
    epoch: u64,
    /// The last serial broadcast: every event up to it is durable and has been sent.
    high_water: u64,
    rollup: Rollup,
    /// When the next rollup flush is due (pending appends wait for it).
    flush_at: Option<Instant>,
    last_flush: Option<Instant>,
}

impl std::fmt::Debug for SessionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionActor")
            .field("name", &self.name)
            .field("high_water", &self.high_water)
            .finish_non_exhaustive()
    }
}

impl SessionActor {
    pub(crate) async fn start(
        name: String,
        store: Arc<dyn LogStore>,
        hub: Hub,
        settings: ActorSettings,
    ) -> Self {
        let (epoch, high_water) = match store.head(&name).await {
            Ok(info) => (info.tail.epoch, info.tail.serial),
            Err(_) => (0, 0),
        };
        Self {
            name,
            store,
            hub,
            settings,
            subscribers: Vec::new(),
            epoch,
            high_water,
            rollup: Rollup::default(),
            flush_at: None,
            last_flush: None,
        }
    }

    /// Runs until idle with nobody attached (then `release` decides whether to stop) or until
    /// shutdown, flushing pending appends before it stops.
    pub(crate) async fn run(
        mut self,
        mut inbox: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
        release: impl Fn(&mpsc::Receiver<Command>) -> bool,
    ) {
        loop {
            let idle = self.subscribers.is_empty() && self.rollup.is_empty();
            let flush_at = self.flush_at;
            tokio::select! {
                command = inbox.recv() => {
                    let Some(command) = command else { break };
                    let mut flush_now = self.handle(command);
                    for _ in 1..MAX_COMMANDS_PER_TURN {
                        match inbox.try_recv() {
                            Ok(command) => flush_now |= self.handle(command),
                            Err(_) => break,
                        }
                    }
                    if flush_now {
                        self.flush().await;
                    } else if !self.rollup.is_empty() && self.flush_at.is_none() {
                        self.schedule_flush();
                    }
                }
                () = sleep_until_opt(flush_at) => self.flush().await,
                () = tokio::time::sleep(self.settings.idle_exit), if idle => {
                    if release(&inbox) {
                        break;
                    }
                }
                () = shutdown.cancelled() => {
                    self.flush().await;
                    break;
                }
            }
        }
    }

    /// Applies one command; returns whether pending publishes must be written now.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Publish { group, reply } => {
                let merge = !self.settings.rollup_window.is_zero();
                let must_flush = self.rollup.push(group, reply, merge);
                // The first append after a quiet window goes out at once (leading edge).
                let quiet = self
                    .last_flush
                    .is_none_or(|t| t.elapsed() >= self.settings.rollup_window);
                must_flush || (quiet && self.flush_at.is_none())
            }
            Command::Subscribe { subscriber, reply } => {
                if reply.send((self.epoch, self.high_water)).is_ok() {
                    self.subscribers.push(subscriber);
                }
                false
            }
            Command::Unsubscribe { id } => {
                self.subscribers.retain(|s| s.id != id);
                false
            }
            Command::Poke => {
                self.flush_at = Some(self.flush_at.unwrap_or_else(Instant::now));
                false
            }
        }
    }

    fn schedule_flush(&mut self) {
        let base = self.last_flush.unwrap_or_else(Instant::now);
        self.flush_at = Some(base + self.settings.rollup_window);
    }

    /// Writes everything pending in one store call, acknowledges, and broadcasts.
    async fn flush(&mut self) {
        self.flush_at = None;
        if self.rollup.is_empty() {
            // A poke: only events written elsewhere to pass on.
            self.catch_up(u64::MAX).await;
            return;
        }
        self.last_flush = Some(Instant::now());
        let flush = self.rollup.take();
        let result = self
            .store
            .publish(&self.name, flush.groups, self.settings.dedupe_window_ms)
            .await;
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(e) => {
                for (reply, _) in flush.waiters.into_iter().flatten() {
                    let _ = reply.send(Err(PublishError::Store(e.clone())));
                }
                return;
            }
        };
        let mut written: Vec<Event> = Vec::new();
        for (outcome, waiters) in outcomes.into_iter().zip(flush.waiters) {
            if let Ok(o) = &outcome {
                self.epoch = o.epoch;
                written.extend(o.events.iter().cloned());
            }
            for (reply, own) in waiters {
                let _ = reply.send(outcome.clone().map(|o| PublishOutcome {
                    epoch: o.epoch,
                    results: o.results.get(own).map(<[_]>::to_vec).unwrap_or_default(),
                    events: Vec::new(),
                }));
            }
        }
        if let Some(first) = written.first() {
            // Something else wrote between our last broadcast and this batch: send it first.
            if first.serial > self.high_water + 1 {
                self.catch_up(first.serial - 1).await;
            }
            self.hub.notify(&self.name);
        }
        for event in written {
            if event.serial > self.high_water {
                self.broadcast(event);
            }
        }
    }

    /// Broadcasts events from the store after the high-water, up to `upto`.
    async fn catch_up(&mut self, upto: u64) {
        while self.high_water < upto {
            let from = ReadFrom::After(mooring_protocol::Position {
                epoch: self.epoch,
                serial: self.high_water,
            });
            let batch = match self.store.read(&self.name, from, CATCH_UP_BYTES).await {
                Ok(batch) if !batch.records.is_empty() => batch,
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(session = %self.name, error = %e, "catching up a session failed");
                    return;
                }
            };
            for record in &batch.records {
                if record.serial <= upto {
                    self.broadcast(event_of(record));
                }
            }
        }
    }

    fn broadcast(&mut self, event: Event) {
        self.high_water = event.serial;
        let serial = event.serial;
        let frame = ServerFrame::Event {
            session: self.name.clone(),
            epoch: self.epoch,
            event,
        };
        let Ok(text) = serde_json::to_string(&frame) else {
            return;
        };
        let bytes = Utf8Bytes::from(text);
        self.subscribers
            .retain(|s| match s.tx.try_send((serial, bytes.clone())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.overflowed.store(true, Ordering::SeqCst);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
