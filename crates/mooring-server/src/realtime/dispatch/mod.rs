//! Agent dispatch: connections register as workers for session-name patterns, and each user
//! input (a `message.create` named `user-input`) is offered to exactly one of them. The input
//! is that worker's until it publishes `run.start` naming it; if the worker releases it, stops
//! being a worker or its connection ends first, the input goes to another. Inputs with no
//! worker wait, bounded in count, bytes and time.
//!
//! The state is in this node's memory (`table`), behind one lock held only for bookkeeping:
//! frames are queued to workers after it is released. With several nodes on one store, the
//! nodes share inputs and claims through it (`shared`).

mod shared;
mod table;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use mooring_core::auth::SessionPattern;
use mooring_core::clock::Clock;
use mooring_core::fleet::{Fleet, InputClaim, InputNotice};
use mooring_core::session::{PublishError, PublishGroup};
use mooring_protocol::realtime::{ServerFrame, INPUT_NAME};
use mooring_protocol::session::{Action, Event, NewEvent};

use super::outbound::{Outbound, QueueError, SlowSignal};
use shared::Shared;
use table::{ClaimWon, DispatchTable, Dropped, HoldLimits, InputKey, Offer, Waiting};

/// How long an input waits for a worker by default.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(600);
/// Inputs that wait at once, by default.
pub const DEFAULT_MAX_WAITING: usize = 10_000;
/// Bytes of waiting inputs, by default.
const DEFAULT_MAX_WAITING_BYTES: usize = 64 << 20;

/// Where a worker's dispatch frames go: its connection's outbound queue, and the signal that
/// closes it as a slow consumer when the queue is full.
#[derive(Clone, Debug)]
pub(crate) struct WorkerLink {
    pub(crate) outbound: Outbound,
    pub(crate) slow: SlowSignal,
}

/// The node's dispatcher.
#[derive(Clone)]
pub struct Dispatcher {
    table: Arc<Mutex<DispatchTable<WorkerLink>>>,
    clock: Arc<dyn Clock>,
    /// With several nodes on one store (its fleet, and the node expiry): the claims and
    /// announcements shared with them.
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// Whether `event` is a user input to dispatch.
pub(crate) fn is_input(event: &Event) -> bool {
    event.action == Action::MessageCreate && event.name.as_deref() == Some(INPUT_NAME)
}

/// The `run_id` and `input` of a run event's data.
fn run_fields(data: &serde_json::Value) -> (Option<&str>, Option<u64>) {
    (
        data.get("run_id").and_then(serde_json::Value::as_str),
        data.get("input").and_then(serde_json::Value::as_u64),
    )
}

impl Dispatcher {
    /// A dispatcher whose waiting inputs are held for `hold`, at most `max_waiting` of them;
    /// with `fleet`, it shares inputs with the other nodes of the store.
    pub fn new(
        hold: Duration,
        max_waiting: usize,
        clock: Arc<dyn Clock>,
        fleet: Option<(Arc<dyn Fleet>, Duration)>,
    ) -> Self {
        let hold_ms = u64::try_from(hold.as_millis()).unwrap_or(u64::MAX);
        let limits = HoldLimits {
            hold_ms,
            max_inputs: max_waiting,
            max_bytes: DEFAULT_MAX_WAITING_BYTES,
        };
        Self {
            table: Arc::new(Mutex::new(DispatchTable::new(limits))),
            clock,
            shared: fleet.map(|(fleet, node_expiry)| {
                let expiry_ms = u64::try_from(node_expiry.as_millis()).unwrap_or(u64::MAX);
                Arc::new(Shared::new(fleet, hold_ms, expiry_ms))
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DispatchTable<WorkerLink>> {
        // The table stays consistent across a panic in a caller: every method leaves it whole.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inputs waiting for a worker, and inputs offered and not started.
    pub fn pending(&self) -> (usize, usize) {
        let table = self.lock();
        (table.waiting(), table.assigned())
    }

    /// Refuses a publish whose `run.start` names an input another worker holds or another
    /// run answers.
    pub(crate) fn may_publish(
        &self,
        session: &str,
        events: &[NewEvent],
        connection: Option<&str>,
    ) -> Result<(), PublishError> {
        let mut starts = events
            .iter()
            .enumerate()
            .filter(|(_, event)| event.action == Action::RunStart)
            .filter_map(|(index, event)| match run_fields(&event.data) {
                (Some(run_id), Some(input)) => Some((index, run_id, input)),
                _ => None,
            })
            .peekable();
        // Every publish of every session passes here: the node-wide lock is taken only for
        // the few that start a run answering an input.
        if starts.peek().is_none() {
            return Ok(());
        }
        let table = self.lock();
        for (index, run_id, input) in starts {
            if let Err(holder) = table.may_start(&(session.to_owned(), input), connection, run_id) {
                return Err(PublishError::InputTaken {
                    index,
                    input,
                    holder,
                });
            }
        }
        Ok(())
    }

    /// Events of `session` that became durable, published from `connection` if known: new
    /// inputs are dispatched, and runs starting and ending move the workers' load.
    pub(crate) fn observe(
        &self,
        session: &str,
        epoch: u64,
        events: &[Event],
        connection: Option<&str>,
    ) {
        let relevant =
            |e: &Event| is_input(e) || matches!(e.action, Action::RunStart | Action::RunEnd);
        if !events.iter().any(relevant) {
            return;
        }
        let now = self.clock.now_ms();
        let mut offers = Vec::new();
        let mut dropped = Dropped::default();
        let mut waiting = Vec::new();
        {
            let mut table = self.lock();
            for event in events.iter().filter(|e| relevant(e)) {
                let (run_id, input) = run_fields(&event.data);
                let (more, lost) = match (event.action, run_id) {
                    (Action::RunStart, Some(run_id)) => {
                        table.started(session, run_id, input, connection);
                        continue;
                    }
                    (Action::RunEnd, Some(run_id)) => table.ended(session, run_id, now),
                    (Action::MessageCreate, _) => {
                        let offered = table.input(session, epoch, event.clone(), now);
                        let key = (session.to_owned(), event.serial);
                        if table.is_waiting(&key) {
                            waiting.push(Waiting {
                                key,
                                epoch,
                                event: event.clone(),
                            });
                        }
                        offered
                    }
                    _ => continue,
                };
                offers.extend(more);
                dropped.add(lost);
            }
            metrics::gauge!(crate::metrics::DISPATCH_WAITING).set(table.waiting() as f64);
        }
        self.deliver(offers, dropped);
        // Nobody here could take them: perhaps a worker of another node can.
        if let Some(shared) = &self.shared {
            for input in waiting {
                let shared = shared.clone();
                tokio::spawn(async move { shared.announce(&input).await });
            }
            self.give_back_returned();
        }
    }

    /// Runs of `session` started or ended through another node (read from the store): an
    /// input they answer is no longer offered here, and a worker's run that ends frees room.
    pub(crate) fn observe_elsewhere(&self, session: &str, events: &[Event]) {
        let now = self.clock.now_ms();
        let (offers, dropped) = self.change(|table| {
            let mut offers = Vec::new();
            let mut dropped = Dropped::default();
            for event in events {
                let (run_id, input) = run_fields(&event.data);
                let Some(run_id) = run_id else { continue };
                match event.action {
                    // Not recorded as running here: only its end through this node's own
                    // table would remove it.
                    Action::RunStart => {
                        if let Some(input) = input {
                            table.answered_elsewhere(&(session.to_owned(), input));
                        }
                    }
                    Action::RunEnd => {
                        let (more, lost) = table.ended(session, run_id, now);
                        offers.extend(more);
                        dropped.add(lost);
                    }
                    _ => {}
                }
            }
            (offers, dropped)
        });
        self.deliver(offers, dropped);
    }

    /// An input written through another node: offered here if a worker of this node can
    /// answer it (and this node wins its claim).
    pub(crate) fn remote_input(&self, notice: InputNotice) {
        let now = self.clock.now_ms();
        let (offers, dropped) = self
            .change(|table| table.remote_input(&notice.session, notice.epoch, notice.input, now));
        self.deliver(offers, dropped);
    }

    /// At each beat, with the other nodes alive: tells the store whether this node has
    /// workers, and learns whether another node has.
    pub(crate) async fn refresh_workers(&self, alive: &[String]) {
        if let Some(shared) = &self.shared {
            let has_workers = self.lock().has_workers();
            shared.refresh_workers(has_workers, alive).await;
        }
    }

    /// Announces again the inputs written through this node that still wait for a worker and
    /// that no live node holds (an announcement may have been lost, or a worker registered on
    /// another node since); forgets those a run answers.
    pub(crate) async fn announce_waiting(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        // One round at a time: a slow store must not pile rounds up. Nothing to do while no
        // other node has workers.
        if !shared.worth_announcing() {
            return;
        }
        let Some(_round) = shared.announcing() else {
            return;
        };
        // Who beats is asked once a round, not once an input.
        let alive = match shared.alive().await {
            Ok(alive) => alive,
            Err(e) => {
                tracing::warn!(error = %e, "reading which nodes are alive failed; waiting inputs are announced at the next round");
                return;
            }
        };
        let waiting = self.lock().local_waiting();
        for input in waiting {
            match shared.still_waits(&input, &alive).await {
                Some(true) => shared.announce(&input).await,
                Some(false) => {}
                None => {
                    let now = self.clock.now_ms();
                    let (offers, dropped) =
                        self.change(|table| table.taken_elsewhere(&input.key, now));
                    self.deliver(offers, dropped);
                }
            }
        }
    }

    /// Checks each `run.start` naming an input against the store's claims before it is
    /// written (several nodes only): refused if another live node holds the input, or a run of
    /// another client answers it. Answers the claims it changed, each with what it was, for
    /// [`Self::unstart_inputs`] if the publish is refused after all.
    pub(crate) async fn start_inputs(
        &self,
        session: &str,
        group: &PublishGroup,
    ) -> Result<Vec<(u64, String)>, PublishError> {
        let mut marks = Vec::new();
        let Some(shared) = &self.shared else {
            return Ok(marks);
        };
        let client = group.client_id.as_deref().unwrap_or_default();
        let starts = group
            .events
            .iter()
            .enumerate()
            .filter(|(_, event)| event.action == Action::RunStart)
            .filter_map(|(index, event)| Some((index, run_fields(&event.data).1?)));
        for (index, input) in starts {
            match shared.start(session, input, client).await {
                Ok(Ok(before)) => marks.push((input, before)),
                Ok(Err(node)) => {
                    shared.unstart(session, client, &marks).await;
                    return Err(PublishError::InputTaken {
                        index,
                        input,
                        holder: format!("dispatched through node {node}"),
                    });
                }
                Err(e) => {
                    shared.unstart(session, client, &marks).await;
                    return Err(PublishError::Store(e));
                }
            }
        }
        Ok(marks)
    }

    /// The publish whose inputs [`Self::start_inputs`] marked started was refused or failed:
    /// the claims go back, so the inputs can still be answered.
    pub(crate) async fn unstart_inputs(
        &self,
        session: &str,
        group_client: Option<&str>,
        marks: &[(u64, String)],
    ) {
        if let Some(shared) = &self.shared {
            let client = group_client.unwrap_or_default();
            shared.unstart(session, client, marks).await;
        }
    }

    /// Makes `connection` a worker for `patterns` (none: stops it being one).
    pub(crate) fn register(
        &self,
        connection: &str,
        client_id: &str,
        patterns: Vec<SessionPattern>,
        capacity: Option<u32>,
        link: WorkerLink,
    ) {
        let now = self.clock.now_ms();
        let (offers, dropped) = self
            .change(|table| table.register(connection, client_id, patterns, capacity, link, now));
        self.deliver(offers, dropped);
    }

    /// `connection` gives the input at `serial` of `session` back.
    pub(crate) fn release(&self, connection: &str, session: &str, serial: u64) {
        let now = self.clock.now_ms();
        let key = (session.to_owned(), serial);
        let (offers, dropped) = self.change(|table| table.release(connection, &key, now));
        self.deliver(offers, dropped);
    }

    /// `connection` ended: the inputs it held go to other workers.
    pub(crate) fn connection_ended(&self, connection: &str) {
        let now = self.clock.now_ms();
        let (offers, dropped) = self.change(|table| table.connection_ended(connection, now));
        self.deliver(offers, dropped);
    }

    /// Changes the table under its lock, and sets the waiting gauge to what it holds after;
    /// with several nodes, gives back the claims of inputs that wait again.
    fn change<T>(&self, change: impl FnOnce(&mut DispatchTable<WorkerLink>) -> T) -> T {
        let result = {
            let mut table = self.lock();
            let result = change(&mut table);
            metrics::gauge!(crate::metrics::DISPATCH_WAITING).set(table.waiting() as f64);
            result
        };
        self.give_back_returned();
        result
    }

    /// Inputs this node held that wait again: their claims go back and the other nodes hear
    /// of them.
    fn give_back_returned(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let returned = self.lock().returned();
        for input in returned {
            let shared = shared.clone();
            tokio::spawn(async move { shared.give_back(&input).await });
        }
    }

    /// Sends each offer to its worker; with several nodes, only once this node holds the
    /// input's claim.
    fn deliver(&self, offers: Vec<Offer<WorkerLink>>, dropped: Dropped) {
        report_drops(&dropped);
        let Some(shared) = &self.shared else {
            offers.into_iter().for_each(send);
            return;
        };
        for offer in offers {
            let (this, shared) = (self.clone(), shared.clone());
            tokio::spawn(async move {
                let key: InputKey = (offer.session.clone(), offer.input.serial);
                let claim = shared.claim(&key.0, key.1).await;
                tracing::debug!(session = %key.0, input = key.1, ?claim, "claimed an input to offer");
                match claim {
                    Ok(InputClaim::Won) => {
                        let now = this.lock().claim_won(&key, &offer.connection);
                        match now {
                            ClaimWon::Send => send(offer),
                            ClaimWon::Stale => this.give_back_returned(),
                            ClaimWon::Unneeded => {
                                if let Err(e) = shared.fleet.release_input(&key.0, key.1).await {
                                    tracing::warn!(session = %key.0, input = key.1, error = %e, "giving back an input's claim failed");
                                }
                            }
                        }
                    }
                    Ok(InputClaim::HeldBy(_) | InputClaim::Started(_)) => {
                        let now = this.clock.now_ms();
                        let (offers, dropped) =
                            this.change(|table| table.taken_elsewhere(&key, now));
                        this.deliver(offers, dropped);
                    }
                    Err(e) => {
                        tracing::warn!(session = %key.0, input = key.1, error = %e, "claiming an input failed; it is given back and announced again");
                        this.change(|table| table.put_back(&key));
                    }
                }
            });
        }
    }
}

/// Queues an offer to its worker; a worker whose queue is full is closed as a slow consumer,
/// and its inputs go to others when its connection ends.
fn send(offer: Offer<WorkerLink>) {
    let attempt = if offer.attempt == 1 { "first" } else { "again" };
    metrics::counter!(crate::metrics::DISPATCHED, "attempt" => attempt).increment(1);
    let frame = ServerFrame::Dispatch {
        session: offer.session,
        epoch: offer.epoch,
        input: offer.input,
        attempt: offer.attempt,
    };
    let Ok(text) = serde_json::to_string(&frame) else {
        return;
    };
    if offer.link.outbound.try_queue(Utf8Bytes::from(text)) == Err(QueueError::Full) {
        offer.link.slow.raise();
    }
}

/// Logs and counts inputs dropped from dispatch.
fn report_drops(dropped: &Dropped) {
    report_dropped(
        dropped.expired,
        "expired",
        "inputs waited longer than the hold for a worker and were dropped from dispatch",
    );
    report_dropped(
        dropped.evicted,
        "evicted",
        "too many inputs waited for a worker; the oldest were dropped from dispatch",
    );
}

/// Logs and counts `inputs` dropped from dispatch for one reason, `why` (the metric's label).
fn report_dropped(inputs: usize, why: &'static str, message: &str) {
    if inputs == 0 {
        return;
    }
    tracing::warn!(inputs, "{message}");
    metrics::counter!(crate::metrics::DISPATCH_DROPPED, "why" => why).increment(inputs as u64);
}
