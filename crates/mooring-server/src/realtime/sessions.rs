//! The sessions of this node: one task per hot session, started on first use and stopped when
//! nobody has used it for a while.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mooring_core::session::{PublishError, PublishGroup, PublishOutcome};
use mooring_core::store::{LogStore, StoreError};
use mooring_protocol::session::namespace;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use mooring_core::clock::Clock;
use mooring_core::fleet::PresenceNotice;
use mooring_core::runs::Run;
use mooring_protocol::presence::Member;

use super::actor::{ActorSettings, Command, PresenceRequest, Registered, SessionActor, Subscriber};
use super::dispatch::Dispatcher;
use super::limits::{ClientConnections, ConnectionSlot};
use super::RealtimeConfig;
use crate::hub::Hub;

/// Commands a session task queues before publishers wait.
const SESSION_INBOX: usize = 4096;

/// Handle to the node's session tasks.
#[derive(Clone, Debug)]
pub struct Sessions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    running: Mutex<HashMap<String, mpsc::Sender<Command>>>,
    store: Arc<dyn LogStore>,
    hub: Hub,
    config: RealtimeConfig,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    clock: Arc<dyn Clock>,
    /// Open connections by client, for the per-client limit.
    clients: ClientConnections,
    dispatcher: Dispatcher,
}

/// Why a session could not be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server is shutting down")]
pub struct SessionsClosed;

impl Sessions {
    pub fn new(
        store: Arc<dyn LogStore>,
        hub: Hub,
        config: RealtimeConfig,
        shutdown: CancellationToken,
        tasks: TaskTracker,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let dispatcher = Dispatcher::new(
            config.dispatch_hold,
            config.max_waiting_inputs,
            clock.clone(),
            store.fleet().map(|fleet| (fleet, config.node_expiry)),
        );
        Self {
            inner: Arc::new(Inner {
                dispatcher,
                running: Mutex::new(HashMap::new()),
                store,
                hub,
                config,
                shutdown,
                tasks,
                clock,
                clients: ClientConnections::default(),
            }),
        }
    }

    /// Counts a connection of `client_id` against its limit; `None` if it holds the most.
    pub(crate) fn connect(&self, client_id: &str) -> Option<ConnectionSlot> {
        let max = self.inner.config.max_connections_per_client;
        self.inner.clients.acquire(client_id, max)
    }

    pub fn config(&self) -> &RealtimeConfig {
        &self.inner.config
    }

    /// The node's agent dispatch.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.inner.dispatcher
    }

    pub fn store(&self) -> &Arc<dyn LogStore> {
        &self.inner.store
    }

    /// Sessions with a running task.
    pub fn running(&self) -> usize {
        self.inner.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Queues a publish; the receiver answers once it is durable (or refused).
    pub(crate) async fn publish(
        &self,
        name: &str,
        group: PublishGroup,
        connection_id: Option<String>,
    ) -> oneshot::Receiver<Result<PublishOutcome, PublishError>> {
        let (reply, rx) = oneshot::channel();
        // With several nodes: a run answering an input another node holds is refused here,
        // before its session task sees it.
        let marks = match self.inner.dispatcher.start_inputs(name, &group).await {
            Ok(marks) => marks,
            Err(e) => {
                let _ = reply.send(Err(e));
                return rx;
            }
        };
        let client = group.client_id.clone();
        let command = Command::Publish {
            group,
            reply,
            connection_id,
        };
        if let Err(Command::Publish { reply, .. }) = self.send(name, command).await {
            let _ = reply.send(Err(PublishError::Store(StoreError::ShuttingDown)));
        }
        if marks.is_empty() {
            return rx;
        }
        // A run refused after all must not keep its input marked started: put the claims back
        // before the caller hears. (Not after a storage error: the run may be in the log, and
        // its agent's retry passes the mark anyway.)
        let (relay, answer) = oneshot::channel();
        let (dispatcher, name) = (self.inner.dispatcher.clone(), name.to_owned());
        tokio::spawn(async move {
            let Ok(result) = rx.await else {
                return;
            };
            if matches!(&result, Err(e) if !matches!(e, PublishError::Store(_))) {
                dispatcher
                    .unstart_inputs(&name, client.as_deref(), &marks)
                    .await;
            }
            let _ = relay.send(result);
        });
        answer
    }

    /// Registers a live feed; returns the session's epoch, the serial the feed starts after,
    /// and the members at that instant.
    pub(crate) async fn subscribe(
        &self,
        name: &str,
        subscriber: Subscriber,
    ) -> Result<Registered, SessionsClosed> {
        let (reply, rx) = oneshot::channel();
        self.send(name, Command::Subscribe { subscriber, reply })
            .await
            .map_err(|_| SessionsClosed)?;
        rx.await.map_err(|_| SessionsClosed)
    }

    /// The sender of the session's task if one runs; never starts one.
    fn running_sender(&self, name: &str) -> Option<mpsc::Sender<Command>> {
        self.inner
            .running
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned())
    }

    pub(crate) async fn unsubscribe(&self, name: &str, id: u64) {
        if let Some(sender) = self.running_sender(name) {
            let _ = sender.send(Command::Unsubscribe { id }).await;
        }
    }

    pub(crate) async fn presence(&self, name: &str, request: PresenceRequest) {
        let _ = self.send(name, Command::Presence(request)).await;
    }

    /// Tells a session that a connection which entered presence or started runs there ended.
    pub(crate) async fn connection_ended(&self, name: &str, connection_id: &str, clean: bool) {
        let command = Command::ConnectionEnded {
            connection_id: connection_id.to_owned(),
            clean,
        };
        let _ = self.send(name, command).await;
    }

    /// The members and active runs of a session (empty if it has no task).
    pub async fn inspect(&self, name: &str) -> (Vec<Member>, Vec<Run>) {
        let (reply, rx) = oneshot::channel();
        if self.send(name, Command::Inspect { reply }).await.is_err() {
            return (Vec::new(), Vec::new());
        }
        rx.await.unwrap_or_default()
    }

    /// Tells a running session task that its log moved outside it; no task is started.
    pub fn poke(&self, name: &str) {
        if let Some(sender) = self.running_sender(name) {
            let _ = sender.try_send(Command::Poke);
        }
    }

    /// Pokes every running session task (their logs may have moved unseen); returns how many.
    pub fn poke_all(&self) -> usize {
        self.tell_all(|| Command::Poke)
    }

    /// Passes a presence change of another node's member to the session's task, if one runs
    /// (one that starts later reads the members from the store).
    pub(crate) fn remote_presence(&self, notice: PresenceNotice) {
        if let Some(sender) = self.running_sender(&notice.session) {
            if let Err(e) = sender.try_send(Command::RemotePresence(notice)) {
                // A full inbox: the session reads the members afresh instead.
                tracing::debug!(error = %e, "a presence notice found its session busy; resyncing");
                let _ = sender.try_send(Command::ResyncPresence);
            }
        }
    }

    /// Tells every running session task that `node` died; returns how many.
    pub(crate) fn node_lost(&self, node: &str) -> usize {
        self.tell_all(|| Command::NodeLost {
            node: node.to_owned(),
        })
    }

    /// Tells session `name`'s task that `node` died, starting the task if none runs.
    pub(crate) async fn node_lost_in(&self, name: &str, node: &str) {
        let command = Command::NodeLost {
            node: node.to_owned(),
        };
        let _ = self.send(name, command).await;
    }

    /// Asks every running session task to record its members again and read the other
    /// nodes' afresh; returns how many.
    pub(crate) fn resync_presence(&self) -> usize {
        self.tell_all(|| Command::ResyncPresence)
    }

    fn tell_all(&self, command: impl Fn() -> Command) -> usize {
        let senders: Vec<mpsc::Sender<Command>> = match self.inner.running.lock() {
            Ok(running) => running.values().cloned().collect(),
            Err(_) => return 0,
        };
        for sender in &senders {
            let _ = sender.try_send(command());
        }
        senders.len()
    }

    /// Sends to the session's task, starting one if none runs. Gives the command back if the
    /// node is shutting down.
    async fn send(&self, name: &str, mut command: Command) -> Result<(), Command> {
        // A task may stop between our lookup and our send; then start a new one and retry.
        for _ in 0..3 {
            let Some(sender) = self.sender(name) else {
                return Err(command);
            };
            match sender.send(command).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => command = back,
            }
        }
        Err(command)
    }

    fn sender(&self, name: &str) -> Option<mpsc::Sender<Command>> {
        if self.inner.shutdown.is_cancelled() {
            return None;
        }
        let mut running = self.inner.running.lock().ok()?;
        if let Some(sender) = running.get(name).filter(|s| !s.is_closed()) {
            return Some(sender.clone());
        }
        let (tx, rx) = mpsc::channel(SESSION_INBOX);
        running.insert(name.to_owned(), tx.clone());
        let inner = self.inner.clone();
        let name = name.to_owned();
        self.inner.tasks.spawn(async move {
            let settings = ActorSettings {
                rollup_window: inner.config.rollup_window(namespace(&name)),
                publish_rules: inner.config.publish_rules(namespace(&name)),
                idle_exit: inner.config.session_idle_exit,
                presence_grace: inner.config.presence_grace,
                stall_after: inner.config.stall_after(namespace(&name)),
                dispatcher: inner.dispatcher.clone(),
                shared: inner.store.fleet(),
                node_expiry: inner.config.node_expiry,
            };
            let actor = SessionActor::start(
                name.clone(),
                inner.store.clone(),
                inner.hub.clone(),
                settings,
                inner.clock.clone(),
            )
            .await;
            let release = |inbox: &mpsc::Receiver<Command>| {
                // Under the map lock, so nobody can pick up our sender while we decide.
                let Ok(mut running) = inner.running.lock() else {
                    return true;
                };
                if !inbox.is_empty() {
                    return false;
                }
                running.remove(&name);
                true
            };
            actor.run(rx, inner.shutdown.clone(), release).await;
        });
        Some(tx)
    }
}
