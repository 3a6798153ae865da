//! One task per hot session: it orders publishes, rolls appends up, writes them in batches,
//! and broadcasts what became durable to the session's subscribers, in serial order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use mooring_core::clock::Clock;
use mooring_core::fleet::{Fleet, PresenceNotice};
use mooring_core::presence::{Member, PresenceAction, PresenceChange, PresenceTable};
use mooring_core::read::ReadError;
use mooring_core::runs::{Run, RunEffect, RunStatus, RunTable};
use mooring_core::session::{event_of, PublishError, PublishGroup, PublishOutcome, PublishRules};
use mooring_core::store::LogStore;
use mooring_protocol::realtime::ServerFrame;
use mooring_protocol::session::{Action, Event, NewEvent};
use mooring_protocol::ReadFrom;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fleet_link::{FleetLink, NODE_LOST_REASON};
use super::rollup::{Reply, Rollup};
use crate::hub::Hub;

/// Commands taken from the inbox per turn before writing, so bursts share one commit.
const MAX_COMMANDS_PER_TURN: usize = 1024;
/// Bytes of history read per step when catching up on events written outside the actor.
const CATCH_UP_BYTES: usize = 1 << 20;

/// A live frame on its way to one subscriber: the serial of the event it carries (`None` for
/// frames outside the log, such as presence) and the encoded frame.
pub(crate) type LiveItem = (Option<u64>, Utf8Bytes);

/// The identity the server publishes its own events under (run stalls, lost agents).
pub(crate) const SERVER_CLIENT_ID: &str = "mooring";

/// What a subscriber learns when it registers.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) epoch: u64,
    /// The serial its feed starts after.
    pub(crate) high_water: u64,
    pub(crate) members: Vec<Member>,
}

/// A presence request of one connection.
#[derive(Debug)]
pub(crate) enum PresenceRequest {
    Enter(Member),
    Update(Member),
    Leave { client_id: String, instance: String },
}

/// One attachment's live feed.
#[derive(Debug)]
pub(crate) struct Subscriber {
    /// The attaching client and connection, if any: its runs follow it here.
    pub(crate) owner: Option<(String, String)>,
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<LiveItem>,
    /// Set before the actor drops a subscriber whose feed was full.
    pub(crate) overflowed: Arc<AtomicBool>,
    /// Set before the actor drops a subscriber because the log began a new life (it was
    /// deleted, or lost with its storage): what the subscriber holds is of the old one.
    pub(crate) life_ended: Arc<AtomicBool>,
}

/// What a session task is asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    Publish {
        group: PublishGroup,
        reply: Reply,
        /// The connection it came from (runs and presence follow a client that reconnects).
        connection_id: Option<String>,
    },
    /// Registers a live feed.
    Subscribe {
        subscriber: Subscriber,
        reply: oneshot::Sender<Registered>,
    },
    Presence(PresenceRequest),
    /// A connection that entered presence or started runs here ended.
    ConnectionEnded {
        connection_id: String,
        clean: bool,
    },
    /// The session's members and active runs.
    Inspect {
        reply: oneshot::Sender<(Vec<Member>, Vec<Run>)>,
    },
    Unsubscribe {
        id: u64,
    },
    /// The log moved outside this task (a Durable Streams append): broadcast what is new.
    Poke,
    /// A member connected through another node changed.
    RemotePresence(PresenceNotice),
    /// Another node died: its members are lost connections now.
    NodeLost {
        node: String,
    },
    /// Presence notices may have been lost, or the other nodes may have dropped ours: record
    /// our members again and read the others' afresh.
    ResyncPresence,
}

/// Settings of one session task.
#[derive(Clone, Debug)]
pub(crate) struct ActorSettings {
    pub(crate) rollup_window: Duration,
    /// The namespace's dedupe window and retention.
    pub(crate) publish_rules: PublishRules,
    pub(crate) idle_exit: Duration,
    /// How long a lost connection's members and runs wait for it to come back.
    pub(crate) presence_grace: Duration,
    /// A run without progress this long stalls.
    pub(crate) stall_after: Duration,
    /// Inputs written here are dispatched to workers; run starts are checked against it.
    pub(crate) dispatcher: super::dispatch::Dispatcher,
    /// Presence shared with the other nodes of the store, if it has any.
    pub(crate) shared: Option<Arc<dyn Fleet>>,
    /// A node silent this long is dead.
    pub(crate) node_expiry: Duration,
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
    clock: Arc<dyn Clock>,
    presence: PresenceTable,
    runs: RunTable,
    /// Connections lost without a close, and when their runs end if they do not come back.
    lost: Vec<(String, u64)>,
    /// When the oldest publish waiting to be written reached this task.
    oldest_pending: Option<Instant>,
    /// This session's share of the run gauges: (active, stalled).
    run_gauges: (f64, f64),
    /// On a store shared with other nodes: this session's part in the fleet.
    fleet: Option<FleetLink>,
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
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (epoch, high_water) = match store.head(&name).await {
            Ok(info) => (info.tail.epoch, info.tail.serial),
            Err(_) => (0, 0),
        };
        let mut presence = PresenceTable::default();
        let fleet = match &settings.shared {
            // Before anyone attaches: the first snapshot already holds the other nodes' members.
            Some(shared) => Some(
                FleetLink::start(
                    shared.clone(),
                    &name,
                    settings.node_expiry.as_millis() as u64,
                    settings.presence_grace.as_millis() as u64,
                    clock.now_ms(),
                    &mut presence,
                )
                .await,
            ),
            None => None,
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
            clock,
            presence,
            runs: RunTable::default(),
            lost: Vec::new(),
            oldest_pending: None,
            run_gauges: (0.0, 0.0),
            fleet,
        }
    }

    /// Moves the global run gauges by this session's change since the last call.
    fn sync_run_gauges(&mut self) {
        let runs = self.runs.active();
        let stalled = runs.iter().filter(|r| r.stalled).count() as f64;
        let active = runs.len() as f64 - stalled;
        let (was_active, was_stalled) = self.run_gauges;
        metrics::gauge!(crate::metrics::ACTIVE_RUNS, "state" => "active")
            .increment(active - was_active);
        metrics::gauge!(crate::metrics::ACTIVE_RUNS, "state" => "stalled")
            .increment(stalled - was_stalled);
        self.run_gauges = (active, stalled);
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// When presence or runs next need attention (a grace ending, a run stalling).
    fn next_timer(&self) -> Option<Instant> {
        let grace = self.lost.iter().map(|(_, at)| *at).min();
        let stall = self
            .runs
            .next_stall(self.settings.stall_after.as_millis() as u64);
        let orphans = self.fleet.as_ref().and_then(FleetLink::next_orphan_check);
        let due = [grace, stall, self.presence.next_expiry(), orphans]
            .into_iter()
            .flatten()
            .min()?;
        let wait = due.saturating_sub(self.now_ms());
        Some(Instant::now() + Duration::from_millis(wait))
    }

    /// Handles what time brought: members whose grace ran out, lost agents, stalled runs.
    async fn on_timer(&mut self) {
        let now = self.now_ms();
        for departure in self.presence.expire(now) {
            match (&departure.node, &mut self.fleet) {
                (None, Some(fleet)) => fleet.announce(&departure.change),
                // Its node is dead and cannot say so itself.
                (Some(node), Some(fleet)) => {
                    fleet.forget_member(node, &departure.change.member).await;
                }
                (_, None) => {}
            }
            self.broadcast_presence(departure.change);
        }
        let (due, waiting): (Vec<_>, Vec<_>) = self.lost.drain(..).partition(|(_, at)| *at <= now);
        self.lost = waiting;
        let mut effects = Vec::new();
        for (connection, _) in due {
            effects.extend(self.runs.connection_gone(&connection));
        }
        if let Some(fleet) = &self.fleet {
            // Only the node that owns a run ends it: its agent may have come back elsewhere.
            effects = fleet.keep_owned(effects, &mut self.runs).await;
        }
        effects.extend(
            self.runs
                .tick(now, self.settings.stall_after.as_millis() as u64),
        );
        self.apply(effects).await;
        if let Some(fleet) = &mut self.fleet {
            let orphans = fleet.due_orphans(now).await;
            if !orphans.is_empty() {
                self.end_orphans(orphans).await;
            }
        }
        self.sync_run_gauges();
    }

    /// Ends runs whose owning node died and that no node took over. Every node that survives
    /// does this, under one event id per run, so each ends once.
    async fn end_orphans(&mut self, run_ids: Vec<String>) {
        for run_id in run_ids {
            tracing::info!(session = %self.name, run_id, "a run's node died and its agent did not come back: agent_lost");
            let data = serde_json::json!({
                "run_id": run_id,
                "status": RunStatus::AgentLost,
                "reason": NODE_LOST_REASON,
            });
            let id = format!("agent-lost:{run_id}");
            self.queue_own(Some(id), Action::RunEnd, data);
        }
        self.flush().await;
    }

    /// Queues an event of the server's own. Nobody waits for it; its outcome is the broadcast.
    fn queue_own(&mut self, id: Option<String>, action: Action, data: serde_json::Value) {
        let event = NewEvent {
            id,
            action,
            name: None,
            reference: None,
            data,
            extras: Default::default(),
        };
        let group = PublishGroup::new(Some(SERVER_CLIENT_ID.to_owned()), vec![event]);
        let (reply, _) = oneshot::channel();
        self.rollup.push(group, reply, false, None);
    }

    /// Publishes what the run table asked for, as the server.
    async fn apply(&mut self, effects: Vec<RunEffect>) {
        if effects.is_empty() {
            return;
        }
        for effect in effects {
            let (action, data) = match effect {
                RunEffect::Cancel { run_id, by } => (
                    Action::ControlCancel,
                    serde_json::json!({ "run_id": run_id, "held_from": by }),
                ),
                RunEffect::Stalled { run_id } => {
                    (Action::RunStalled, serde_json::json!({ "run_id": run_id }))
                }
                RunEffect::End {
                    run_id,
                    status,
                    reason,
                } => (
                    Action::RunEnd,
                    serde_json::json!({ "run_id": run_id, "status": status, "reason": reason }),
                ),
            };
            self.queue_own(None, action, data);
        }
        self.flush().await;
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
            // Members of other nodes keep no task: it reads them again when it starts.
            let idle = self.subscribers.is_empty()
                && self.fleet.as_ref().is_none_or(FleetLink::is_idle)
                && self.rollup.is_empty()
                && self.presence.local_members().is_empty()
                && self.runs.active().is_empty();
            let flush_at = self.flush_at;
            let timer = self.next_timer();
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
                () = sleep_until_opt(timer) => self.on_timer().await,
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
            self.sync_fleet().await;
        }
        let (active, stalled) = self.run_gauges;
        metrics::gauge!(crate::metrics::ACTIVE_RUNS, "state" => "active").decrement(active);
        metrics::gauge!(crate::metrics::ACTIVE_RUNS, "state" => "stalled").decrement(stalled);
    }

    /// Applies one command; returns whether pending publishes must be written now.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Publish {
                group,
                reply,
                connection_id,
            } => {
                let claim = self.settings.dispatcher.may_publish(
                    &self.name,
                    &group.events,
                    connection_id.as_deref(),
                );
                if let Err(e) = claim {
                    let _ = reply.send(Err(e));
                    return false;
                }
                if let (Some(conn), Some(client)) = (&connection_id, &group.client_id) {
                    // A client publishing again after a reconnect keeps its runs.
                    self.runs.rebind(client, conn);
                    self.lost.retain(|(c, _)| self.runs.owns(c));
                    if let Some(fleet) = &mut self.fleet {
                        fleet.seen(client, conn);
                    }
                }
                let merge = !self.settings.rollup_window.is_zero();
                self.oldest_pending.get_or_insert_with(Instant::now);
                let must_flush = self.rollup.push(group, reply, merge, connection_id);
                // The first append after a quiet window goes out at once (leading edge).
                let quiet = self
                    .last_flush
                    .is_none_or(|t| t.elapsed() >= self.settings.rollup_window);
                must_flush || (quiet && self.flush_at.is_none())
            }
            Command::Subscribe { subscriber, reply } => {
                if let Some((client, conn)) = &subscriber.owner {
                    // A client attaching again after a reconnect keeps its runs, even if it is
                    // quiet (a slow tool call) until the grace would have run out.
                    self.runs.rebind(client, conn);
                    self.lost.retain(|(c, _)| self.runs.owns(c));
                    if let Some(fleet) = &mut self.fleet {
                        fleet.seen(client, conn);
                    }
                }
                let registered = Registered {
                    epoch: self.epoch,
                    high_water: self.high_water,
                    members: self.presence.members(),
                };
                if reply.send(registered).is_ok() {
                    self.subscribers.push(subscriber);
                }
                false
            }
            Command::Presence(request) => {
                let change = match request {
                    PresenceRequest::Enter(member) | PresenceRequest::Update(member) => {
                        let conn = member.connection_id.clone();
                        self.runs.rebind(&member.client_id, &conn);
                        Some(self.presence.enter(member))
                    }
                    PresenceRequest::Leave {
                        client_id,
                        instance,
                    } => self.presence.leave(&client_id, &instance),
                };
                if let Some(change) = change {
                    self.announce(&change);
                    self.broadcast_presence(change);
                }
                false
            }
            Command::ConnectionEnded {
                connection_id,
                clean,
            } => {
                let now = self.now_ms();
                let grace = self.settings.presence_grace.as_millis() as u64;
                for change in self
                    .presence
                    .connection_ended(&connection_id, clean, now, grace)
                {
                    self.announce(&change);
                    self.broadcast_presence(change);
                }
                if let Some(fleet) = &mut self.fleet {
                    fleet.connection_ended(&connection_id);
                }
                if self.runs.owns(&connection_id) {
                    // A clean close is a goodbye: no grace. A lost one may come back.
                    let at = if clean { now } else { now + grace };
                    self.lost.push((connection_id, at));
                }
                false
            }
            Command::Inspect { reply } => {
                let _ = reply.send((self.presence.members(), self.runs.active()));
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
            Command::RemotePresence(notice) => {
                let PresenceNotice {
                    node,
                    action,
                    member,
                    ..
                } = notice;
                let change = match action {
                    PresenceAction::Enter | PresenceAction::Update => {
                        Some(self.presence.enter_remote(&node, member))
                    }
                    PresenceAction::Leave => {
                        self.presence
                            .leave_remote(&node, &member.client_id, &member.instance)
                    }
                };
                if let Some(change) = change {
                    self.broadcast_presence(change);
                }
                false
            }
            Command::NodeLost { node } => {
                let (now, grace) = (self.now_ms(), self.settings.presence_grace.as_millis());
                self.presence.node_lost(&node, now, grace as u64);
                if let Some(fleet) = &mut self.fleet {
                    fleet.node_lost(&node, now);
                }
                false
            }
            Command::ResyncPresence => {
                let members = self.presence.local_members();
                if let Some(fleet) = &mut self.fleet {
                    fleet.resync(members);
                }
                false
            }
        }
    }

    /// Queues a change of a member connected here for the other nodes.
    fn announce(&mut self, change: &PresenceChange) {
        if let Some(fleet) = &mut self.fleet {
            fleet.announce(change);
        }
    }

    /// Tells the other nodes what this turn changed, and passes on what changed of theirs.
    async fn sync_fleet(&mut self) {
        let now = self.now_ms();
        let Some(fleet) = &mut self.fleet else {
            return;
        };
        for change in fleet.sync(&mut self.presence, &mut self.runs, now).await {
            self.broadcast_presence(change);
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
        let received = self.oldest_pending.take();
        let flush = self.rollup.take();
        let writing = Instant::now();
        let result = self
            .store
            .publish(&self.name, flush.groups, self.settings.publish_rules)
            .await;
        metrics::histogram!(crate::metrics::SESSION_WRITE).record(writing.elapsed().as_secs_f64());
        let mut outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(e) => {
                for (reply, _) in flush.waiters.into_iter().flatten() {
                    let _ = reply.send(Err(PublishError::Store(e.clone())));
                }
                // A write answered with an error may still have landed (a connection that broke
                // after the commit, a wait for replicas that timed out): read what is there
                // now, as after a poke, so this node's readers get it without waiting for the
                // session's next write.
                self.flush_at = Some(Instant::now());
                return;
            }
        };
        let old = self.epoch;
        let regressed = outcomes.iter().flatten().any(|o| {
            o.epoch == old
                && o.events
                    .first()
                    .is_some_and(|e| e.serial <= self.high_water)
        });
        if regressed {
            // Before any acknowledgement: what was written belongs to the new life.
            if let Some(epoch) = self.renew_life(old).await {
                for o in outcomes.iter_mut().flatten().filter(|o| o.epoch == old) {
                    o.epoch = epoch;
                }
            }
        }
        if let Some(fleet) = &mut self.fleet {
            // Before any acknowledgement: a node that dies right after acknowledging a
            // run.start must have said that the run is its own, or nobody would end it.
            let written = outcomes.iter().zip(&flush.connections);
            for (outcome, connection) in written {
                for event in outcome.iter().flat_map(|o| &o.events) {
                    record_run(fleet, event, connection.is_some());
                }
            }
            fleet.sync_runs().await;
        }
        let mut written: Vec<Event> = Vec::new();
        let mut effects = Vec::new();
        let now = self.now_ms();
        let groups = outcomes
            .into_iter()
            .zip(flush.waiters)
            .zip(flush.connections);
        for ((outcome, waiters), connection) in groups {
            if let Ok(o) = &outcome {
                self.enter_life(o.epoch);
                for event in &o.events {
                    effects.extend(self.runs.observe(event, connection.as_deref(), now));
                }
                // Before any acknowledgement: a worker that dies right after its run.start is
                // acknowledged must find the input already claimed, not given to another.
                self.settings.dispatcher.observe(
                    &self.name,
                    o.epoch,
                    &o.events,
                    connection.as_deref(),
                );
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
        metrics::counter!(crate::metrics::EVENTS_IN).increment(written.len() as u64);
        let delivered = !written.is_empty();
        for event in written {
            if event.serial > self.high_water {
                self.broadcast(event);
            }
        }
        if let (true, Some(received)) = (delivered, received) {
            metrics::histogram!(crate::metrics::PUBLISH_TO_DELIVER)
                .record(received.elapsed().as_secs_f64());
        }
        if !effects.is_empty() {
            Box::pin(self.apply(effects)).await;
        }
        self.sync_run_gauges();
    }

    /// Follows the log into the life `epoch` (a publish outcome or a read says which).
    ///
    /// A new life after events of the old one were broadcast: every subscriber holds positions
    /// that mean nothing now, so each is dropped with `life_ended` set (its attachment tells the
    /// client, which attaches again and gets the view) and broadcasting starts from serial 0.
    /// Without anything broadcast (a session written for the first time), nobody holds
    /// anything of the old life and the subscribers simply follow into the new one.
    fn enter_life(&mut self, epoch: u64) {
        if epoch == self.epoch {
            return;
        }
        tracing::info!(session = %self.name, old = self.epoch, new = epoch, high_water = self.high_water, "session log began a new life");
        if self.high_water > 0 {
            self.end_life();
        }
        self.epoch = epoch;
        self.high_water = 0;
    }

    /// The log lost its end in life `old`: serials this task broadcast are given out again (its
    /// storage went back in time, as when Redis fails over to a replica that lacked the last
    /// writes). Starts a new life, so that positions of the old one are refused and every
    /// client re-syncs; answers its epoch, `None` if the store could not say.
    async fn renew_life(&mut self, old: u64) -> Option<u64> {
        tracing::warn!(session = %self.name, epoch = old, high_water = self.high_water, "the session's log lost its end; starting a new life");
        metrics::counter!(crate::metrics::LOGS_REGRESSED).increment(1);
        match self.store.renew_life(&self.name, old).await {
            Ok(tail) => Some(tail.epoch),
            Err(e) => {
                tracing::warn!(session = %self.name, error = %e, "starting a new life failed");
                None
            }
        }
    }

    /// Drops every subscriber with `life_ended` set: what they hold is of a life that ended.
    fn end_life(&mut self) {
        if !self.subscribers.is_empty() {
            metrics::counter!(crate::metrics::LIVES_ENDED).increment(1);
        }
        for s in self.subscribers.drain(..) {
            s.life_ended.store(true, Ordering::SeqCst);
        }
        self.high_water = 0;
    }

    /// Broadcasts events from the store after the high-water, up to `upto`.
    async fn catch_up(&mut self, upto: u64) {
        while self.high_water < upto {
            let from = ReadFrom::After(mooring_protocol::Position {
                epoch: self.epoch,
                serial: self.high_water,
            });
            let batch = match self.store.read(&self.name, from, CATCH_UP_BYTES).await {
                Ok(batch) => {
                    // After serial 0 a read answers from whatever life the log is in.
                    self.enter_life(batch.start.epoch);
                    if batch.records.is_empty() {
                        return;
                    }
                    batch
                }
                // The log lost its end in the life we broadcast (a stale replica took over):
                // the serials past its tail will be given out again, so it starts a new life.
                Err(ReadError::BeyondTail { tail, .. }) if tail.epoch == self.epoch => {
                    let old = self.epoch;
                    let renewed = self.renew_life(old).await;
                    self.end_life();
                    self.epoch = renewed.unwrap_or(old);
                    if renewed.is_none() {
                        return;
                    }
                    continue;
                }
                // The life we broadcast ended: the log was deleted, or lost with its storage
                // (and maybe written again).
                Err(
                    ReadError::EpochMismatch { current }
                    | ReadError::BeyondTail { tail: current, .. },
                ) => {
                    self.end_life();
                    self.epoch = current.epoch;
                    continue;
                }
                // Retention removed events this task never broadcast (nothing woke it while
                // they were written and trimmed): its subscribers cannot be given them, so
                // they re-sync, and broadcasting goes on from the retained records.
                Err(ReadError::BeforeRetained { start, .. }) => {
                    self.end_life();
                    self.epoch = start.epoch;
                    self.high_water = start.serial;
                    continue;
                }
                Err(ReadError::NotFound | ReadError::Gone) => {
                    if self.high_water > 0 {
                        self.end_life();
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(session = %self.name, error = %e, "catching up a session failed");
                    return;
                }
            };
            // Runs started and ended through other nodes move this node's dispatch too: its
            // copies of answered inputs go, and its workers' room comes back.
            let mut runs = Vec::new();
            for record in &batch.records {
                if record.serial <= upto {
                    let event = event_of(record);
                    if matches!(event.action, Action::RunStart | Action::RunEnd) {
                        runs.push(event.clone());
                    }
                    self.broadcast(event);
                }
            }
            if !runs.is_empty() {
                self.settings
                    .dispatcher
                    .observe_elsewhere(&self.name, &runs);
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
        self.send_all(Some(serial), Utf8Bytes::from(text));
    }

    fn broadcast_presence(&mut self, change: PresenceChange) {
        let frame = ServerFrame::Presence {
            session: self.name.clone(),
            action: change.action,
            member: change.member,
        };
        if let Ok(text) = serde_json::to_string(&frame) {
            self.send_all(None, Utf8Bytes::from(text));
        }
    }

    /// Queues a frame to every subscriber; a full feed drops its subscriber (it resumes).
    fn send_all(&mut self, serial: Option<u64>, bytes: Utf8Bytes) {
        if serial.is_some() {
            metrics::counter!(crate::metrics::EVENTS_OUT).increment(self.subscribers.len() as u64);
        }
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

/// Tells the fleet of a run this node started (from one of its connections) or ended.
fn record_run(fleet: &mut FleetLink, event: &Event, from_here: bool) {
    let Some(run_id) = mooring_core::runs::run_id_of(event) else {
        return;
    };
    match event.action {
        Action::RunStart if from_here => {
            fleet.own(run_id, event.client_id.as_deref().unwrap_or_default());
        }
        Action::RunEnd => fleet.ended(run_id),
        _ => {}
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
