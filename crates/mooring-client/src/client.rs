//! The client handle: cheap to clone, it only holds the sender of the task's command queue.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mooring_protocol::presence::{Member, Role};
use mooring_protocol::realtime::{AttachFrom, AttachPoint, Published};
use mooring_protocol::session::{is_valid_session_name, NewEvent};
use mooring_protocol::Position;
use rand::distributions::Alphanumeric;
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::attachments::AttachRequest;
use crate::connection::Connection;
use crate::credential::Credentials;
use crate::error::{
    AttachError, AttachErrorKind, ConnectError, Error, PresenceError, PresenceErrorKind,
    PublishError, PublishErrorKind, WorkError, WorkErrorKind,
};
use crate::event;
use crate::options::ClientOptions;
use crate::runs::{ApprovalDecision, RunHandle, RunWatch, APPROVAL_BUFFER, STEER_BUFFER};
use crate::subscription::Subscription;
use crate::task::{Command, ConnectionStatus, Task};
use crate::work::Work;

/// Commands (attach, publish, detach, close) queued for the task at once.
const COMMAND_QUEUE: usize = 256;
/// Characters of an id assigned to an event published without one.
const ASSIGNED_ID_LEN: usize = 22;
/// Names each run watch in its client's task.
static NEXT_RUN_WATCH: AtomicU64 = AtomicU64::new(1);
/// Names each worker registration in its client's task.
static NEXT_WORK: AtomicU64 = AtomicU64::new(1);

/// Where an attach starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The materialized view: each live message once, whole, then live events.
    Latest,
    /// Every event from serial 1, then live events.
    Beginning,
    /// Every event after this position (from [`Subscription::position`]), then live events.
    After(Position),
    /// The last N events, then live events. Messages created before the window are not
    /// accumulated.
    Rewind(u64),
}

impl From<StartAt> for AttachFrom {
    fn from(start: StartAt) -> Self {
        match start {
            StartAt::Latest => AttachFrom::Named(AttachPoint::Latest),
            StartAt::Beginning => AttachFrom::Named(AttachPoint::Start),
            StartAt::After(position) => AttachFrom::Position(position),
            StartAt::Rewind(rewind) => AttachFrom::Rewind { rewind },
        }
    }
}

/// A connection to a Mooring node, shared by every clone. Dropping the last clone (and the
/// last subscription) closes the connection.
#[derive(Clone, Debug)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<ConnectionStatus>,
    in_flight: Arc<Semaphore>,
    options: Arc<ClientOptions>,
    expires_at: watch::Receiver<Option<u64>>,
}

impl Client {
    /// Connects and says hello. The first connection must succeed; after that the client
    /// reconnects on its own, as `options.reconnect` says.
    pub async fn connect(options: ClientOptions) -> Result<Self, ConnectError> {
        let mut credentials = Credentials::new(options.credential.clone(), options.renew_before);
        let credential = credentials
            .for_connect(options.connect_timeout)
            .await
            .map_err(|e| ConnectError::new(crate::error::ConnectErrorKind::Credential, e))?;
        let connection = Connection::open(
            &options.url,
            options.client_id.as_deref(),
            credential.as_deref(),
            options.connect_timeout,
        )
        .await?;
        let expires_at = credentials.expiry();
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        let (status_tx, status) = watch::channel(ConnectionStatus::Connected {
            connection_id: connection.welcome.connection_id.clone(),
            client_id: connection.welcome.client_id.clone(),
        });
        let task = Task::new(&options, credentials, queue, status_tx);
        tokio::spawn(task.run(connection));
        Ok(Self {
            commands,
            status,
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            options: Arc::new(options),
            expires_at,
        })
    }

    /// When the token in force expires, Unix seconds: from the [`Token`](crate::Token) the
    /// source gave, then from each renewal the server confirmed. `None` without a token (or
    /// with a token of unknown expiry).
    pub fn credential_expires_at(&self) -> Option<u64> {
        *self.expires_at.borrow()
    }

    /// Follows the expiry of the token in force as renewals move it.
    pub fn credential_expiry_changes(&self) -> watch::Receiver<Option<u64>> {
        self.expires_at.clone()
    }

    /// The connection as it is now.
    pub fn status(&self) -> ConnectionStatus {
        self.status.borrow().clone()
    }

    /// Follows the connection's status as it changes.
    pub fn status_changes(&self) -> watch::Receiver<ConnectionStatus> {
        self.status.clone()
    }

    /// Attaches to `session` from `start`, and returns once the server confirmed.
    ///
    /// The subscription resumes by itself after any disconnect, from the last serial it
    /// delivered. A client holds at most one subscription per session.
    pub async fn attach(
        &self,
        session: impl Into<String>,
        start: StartAt,
    ) -> Result<Subscription, AttachError> {
        let session = session.into();
        if !is_valid_session_name(&session) {
            return Err(AttachError::new(
                AttachErrorKind::InvalidSessionName,
                format!("{session:?} does not match [A-Za-z0-9:_./-]{{1,255}}"),
            ));
        }
        let (items, items_rx) = mpsc::channel(self.options.subscription_buffer.max(1));
        let (end, end_rx) = oneshot::channel();
        let (reply, reply_rx) = oneshot::channel();
        // Made before waiting: if the wait times out, dropping it detaches the session.
        let subscription =
            Subscription::new(session.clone(), items_rx, end_rx, self.commands.clone());
        let request = AttachRequest {
            session,
            from: start.into(),
            items,
            end,
            reply,
        };
        let closed = || AttachError::new(AttachErrorKind::Closed, "the client is closed");
        let attached = async {
            self.commands
                .send(Command::Attach(request))
                .await
                .map_err(|_| closed())?;
            reply_rx.await.map_err(|_| closed())?
        };
        self.within_timeout(attached, AttachErrorKind::TimedOut)
            .await?;
        Ok(subscription)
    }

    /// Publishes `events` to `session` atomically, and returns once they are durable: one
    /// result per event, in order.
    ///
    /// With [`ClientOptions::assign_ids`] (the default) every event gets an `id` if it has
    /// none, and a publish interrupted by a disconnect is sent again after reconnecting; the
    /// server recognizes the retry and publishes nothing twice.
    pub async fn publish(
        &self,
        session: impl Into<String>,
        mut events: Vec<NewEvent>,
    ) -> Result<Vec<Published>, PublishError> {
        let session = session.into();
        if !is_valid_session_name(&session) {
            return Err(PublishError::new(
                PublishErrorKind::InvalidSessionName,
                format!("{session:?} does not match [A-Za-z0-9:_./-]{{1,255}}"),
            ));
        }
        if events.is_empty() {
            return Err(PublishError::new(PublishErrorKind::Empty, "no events"));
        }
        if self.options.assign_ids {
            for e in events.iter_mut().filter(|e| e.id.is_none()) {
                e.id = Some(new_id());
            }
        }
        let closed = || PublishError::new(PublishErrorKind::Closed, "the client is closed");
        let published = async {
            let _slot = self.in_flight.acquire().await.map_err(|_| closed())?;
            let (reply, reply_rx) = oneshot::channel();
            let command = Command::Publish {
                session,
                events,
                reply,
            };
            self.commands.send(command).await.map_err(|_| closed())?;
            reply_rx.await.map_err(|_| closed())?
        };
        self.within_timeout(published, PublishErrorKind::TimedOut)
            .await
    }

    /// Starts a message; returns its serial, which names it.
    pub async fn create_message(
        &self,
        session: impl Into<String>,
        name: impl Into<String>,
        data: impl Into<serde_json::Value>,
    ) -> Result<u64, PublishError> {
        self.publish_one(session, event::create(name, data)).await
    }

    /// Appends `text` to message `message`; returns the serial of the log event that holds it
    /// (appends inside the server's rollup window share one).
    pub async fn append(
        &self,
        session: impl Into<String>,
        message: u64,
        text: impl Into<String>,
    ) -> Result<u64, PublishError> {
        self.publish_one(session, event::append(message, text))
            .await
    }

    /// Replaces message `message`'s data.
    pub async fn update(
        &self,
        session: impl Into<String>,
        message: u64,
        data: impl Into<serde_json::Value>,
    ) -> Result<u64, PublishError> {
        self.publish_one(session, event::update(message, data))
            .await
    }

    /// Deletes message `message` from the materialized view.
    pub async fn delete(
        &self,
        session: impl Into<String>,
        message: u64,
    ) -> Result<u64, PublishError> {
        self.publish_one(session, event::delete(message)).await
    }

    pub(crate) async fn publish_one(
        &self,
        session: impl Into<String>,
        event: NewEvent,
    ) -> Result<u64, PublishError> {
        let results = self.publish(session, vec![event]).await?;
        results.first().map(|p| p.serial).ok_or_else(|| {
            PublishError::new(
                PublishErrorKind::Refused,
                "the server acknowledged without a result",
            )
        })
    }

    /// Starts run `run_id` in `session` as an agent (`run.start`, answering the message at
    /// serial `input` if given), and returns its handle once the start is durable.
    ///
    /// The handle hears of cancels and steers for the run from the session's events: through
    /// this client's subscription of the session if it has one (keep reading it: a paused
    /// subscription delays them), otherwise through an attachment the client makes for its
    /// runs. A cancel sent before the run existed reaches it right after the start.
    ///
    /// The server ends the run `agent_lost` if this client's connection is lost for longer
    /// than the presence grace. A reconnect within the grace keeps the run once the client
    /// publishes again or enters presence again; an agent that may be quiet for a while
    /// should [`enter`](Self::enter) the session's presence, which the client repeats on every
    /// new connection.
    pub async fn start_run(
        &self,
        session: impl Into<String>,
        run_id: impl Into<String>,
        input: Option<u64>,
    ) -> Result<RunHandle, PublishError> {
        let session = session.into();
        let run_id = run_id.into();
        if !is_valid_session_name(&session) {
            return Err(PublishError::new(
                PublishErrorKind::InvalidSessionName,
                format!("{session:?} does not match [A-Za-z0-9:_./-]{{1,255}}"),
            ));
        }
        let (cancel_tx, cancel) = tokio::sync::watch::channel(None);
        let (steer_tx, steers) = mpsc::channel(STEER_BUFFER);
        let (approval_tx, approvals) = mpsc::channel(APPROVAL_BUFFER);
        let watch_id = NEXT_RUN_WATCH.fetch_add(1, Ordering::Relaxed);
        let mut start = event::run_start(&run_id, input);
        let start_id = new_id();
        start.id = Some(start_id.clone());
        let watch = RunWatch {
            id: watch_id,
            session: session.clone(),
            run_id: run_id.clone(),
            start_id,
            cancel: cancel_tx,
            steers: steer_tx,
            approvals: approval_tx,
        };
        // Made first: if anything below fails, dropping it forgets the watch.
        let mut handle = RunHandle {
            client: self.clone(),
            session: session.clone(),
            run_id,
            serial: 0,
            answer: None,
            cancel,
            steers,
            approvals,
            watch_id,
        };
        let (ready, ready_rx) = oneshot::channel();
        let closed = || AttachError::new(AttachErrorKind::Closed, "the client is closed");
        let attached = async {
            self.commands
                .send(Command::WatchRun { watch, ready })
                .await
                .map_err(|_| closed())?;
            ready_rx.await.map_err(|_| closed())?
        };
        self.within_timeout(attached, AttachErrorKind::TimedOut)
            .await
            .map_err(publish_error_of)?;
        handle.serial = self.publish_one(session, start).await?;
        Ok(handle)
    }

    /// Asks to stop run `run_id`, or every active run of the session with `None`; returns the
    /// serial of the `control.cancel`. A cancel for a run that has not started is held by the
    /// server and reaches the agent right after the run starts.
    pub async fn cancel(
        &self,
        session: impl Into<String>,
        run_id: Option<&str>,
    ) -> Result<u64, PublishError> {
        self.publish_one(session, event::cancel(run_id)).await
    }

    /// Redirects run `run_id` with `data`; returns the serial of the `control.steer`.
    pub async fn steer(
        &self,
        session: impl Into<String>,
        run_id: &str,
        data: impl Into<serde_json::Value>,
    ) -> Result<u64, PublishError> {
        self.publish_one(session, event::steer(run_id, data)).await
    }

    /// Answers approval `approval_id` (needs the `approve` capability on nodes with auth);
    /// returns the serial of the `approval.answer`. The first answer is the decision.
    pub async fn answer_approval(
        &self,
        session: impl Into<String>,
        approval_id: &str,
        decision: ApprovalDecision,
        reason: Option<String>,
    ) -> Result<u64, PublishError> {
        let answer = event::approval_answer(approval_id, decision, reason);
        self.publish_one(session, answer).await
    }

    /// A run's handle is gone (best effort: if the queue is full, the task notices the handle
    /// gone at the session's next event).
    pub(crate) fn unwatch_run(&self, id: u64) {
        let _ = self.commands.try_send(Command::Unwatch { id });
    }

    /// Enters `session`'s presence as `instance` (a stable id of this tab or process) with
    /// `role` and small `data`. Entering again changes role and data.
    ///
    /// The client keeps the presence until [`leave`](Self::leave): after a reconnect it enters
    /// again with the same instance, so a drop shorter than the server's presence grace shows
    /// as an `update`, never as a leave. There is no acknowledgement: this returns once the
    /// client took the request.
    pub async fn enter(
        &self,
        session: impl Into<String>,
        role: Role,
        instance: impl Into<String>,
        data: impl Into<serde_json::Value>,
    ) -> Result<(), PresenceError> {
        let session = self.presence_session(session)?;
        let data = self.presence_data(data.into())?;
        self.presence_command(Command::Enter {
            session,
            instance: instance.into(),
            role,
            data,
        })
        .await
    }

    /// Replaces the data of `instance`, entered earlier with [`enter`](Self::enter).
    pub async fn update_presence(
        &self,
        session: impl Into<String>,
        instance: impl Into<String>,
        data: impl Into<serde_json::Value>,
    ) -> Result<(), PresenceError> {
        let session = self.presence_session(session)?;
        let data = self.presence_data(data.into())?;
        let instance = instance.into();
        let (reply, reply_rx) = oneshot::channel();
        let command = Command::Update {
            session: session.clone(),
            instance: instance.clone(),
            data,
            reply,
        };
        self.presence_command(command).await?;
        match reply_rx.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(PresenceError::new(
                PresenceErrorKind::NotEntered,
                format!("{instance:?} has not entered {session:?}"),
            )),
            Err(_) => Err(presence_closed()),
        }
    }

    /// Leaves `session`'s presence as `instance`: at once, or as soon as the client is
    /// connected again.
    pub async fn leave(
        &self,
        session: impl Into<String>,
        instance: impl Into<String>,
    ) -> Result<(), PresenceError> {
        let session = self.presence_session(session)?;
        self.presence_command(Command::Leave {
            session,
            instance: instance.into(),
        })
        .await
    }

    /// The members of `session` now, as the server knows them (attached or not).
    pub async fn presence_get(
        &self,
        session: impl Into<String>,
    ) -> Result<Vec<Member>, PresenceError> {
        let session = self.presence_session(session)?;
        let (reply, reply_rx) = oneshot::channel();
        let asked = async {
            self.presence_command(Command::PresenceGet { session, reply })
                .await?;
            reply_rx.await.map_err(|_| presence_closed())
        };
        self.within_timeout(asked, PresenceErrorKind::TimedOut)
            .await
    }

    fn presence_session(&self, session: impl Into<String>) -> Result<String, PresenceError> {
        let session = session.into();
        if is_valid_session_name(&session) {
            Ok(session)
        } else {
            Err(PresenceError::new(
                PresenceErrorKind::InvalidSessionName,
                format!("{session:?} does not match [A-Za-z0-9:_./-]{{1,255}}"),
            ))
        }
    }

    fn presence_data(&self, data: serde_json::Value) -> Result<serde_json::Value, PresenceError> {
        let limit = self.options.max_presence_data_bytes;
        let size = serde_json::to_string(&data).map_or(0, |d| d.len());
        if size > limit {
            return Err(PresenceError::new(
                PresenceErrorKind::TooLarge,
                format!("presence data is {size} bytes; the limit is {limit}"),
            ));
        }
        Ok(data)
    }

    async fn presence_command(&self, command: Command) -> Result<(), PresenceError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| presence_closed())
    }

    /// Makes this client a worker for the sessions `patterns` match (`chat:*`, `chat:**`; the
    /// patterns of capabilities), with at most `capacity` inputs at once (offered or
    /// running); returns once the server confirmed. Each user input of those sessions is
    /// dispatched to exactly one worker: answer it with
    /// [`start_run`](Self::start_run)`(session, run_id, Some(input.serial))`. If this client
    /// loses its connection before the `run.start`, the input goes to another worker. A new
    /// registration replaces the last one.
    pub async fn work<P: Into<String>>(
        &self,
        patterns: impl IntoIterator<Item = P>,
        capacity: Option<u32>,
    ) -> Result<Work, WorkError> {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        let id = NEXT_WORK.fetch_add(1, Ordering::Relaxed);
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let (confirm, confirmed) = oneshot::channel();
        let closed = || WorkError::new(WorkErrorKind::Closed, "the client is closed");
        // Made first: if the wait below fails, dropping it withdraws the registration.
        let work = Work {
            id,
            client: self.clone(),
            inputs,
        };
        let registered = async {
            self.commands
                .send(Command::Work {
                    id,
                    patterns,
                    capacity,
                    inputs: inputs_tx,
                    confirm,
                })
                .await
                .map_err(|_| closed())?;
            match confirmed.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(server)) => Err(WorkError::server(WorkErrorKind::Refused, server)),
                Err(_) => Err(closed()),
            }
        };
        self.within_timeout(registered, WorkErrorKind::TimedOut)
            .await?;
        Ok(work)
    }

    /// Queues a command for the task; a closed client ignores it.
    pub(crate) async fn command(&self, command: Command) {
        let _ = self.commands.send(command).await;
    }

    /// Queues a command without waiting (from `Drop`); a full queue drops it.
    pub(crate) fn try_command(&self, command: Command) {
        let _ = self.commands.try_send(command);
    }

    /// Closes the connection cleanly, ends every subscription and fails every pending
    /// publish; returns once the task has exited.
    pub async fn close(&self) {
        let (done, done_rx) = oneshot::channel();
        if self.commands.send(Command::Close { done }).await.is_ok() {
            let _ = done_rx.await;
        }
    }

    async fn within_timeout<T, K: Copy>(
        &self,
        work: impl Future<Output = Result<T, Error<K>>>,
        timed_out: K,
    ) -> Result<T, Error<K>> {
        match self.options.request_timeout {
            None => work.await,
            Some(limit) => tokio::time::timeout(limit, work)
                .await
                .unwrap_or_else(|_| Err(Error::new(timed_out, timeout_message(limit)))),
        }
    }
}

fn presence_closed() -> PresenceError {
    PresenceError::new(PresenceErrorKind::Closed, "the client is closed")
}

/// A run could not follow its session: said as a failed start.
fn publish_error_of(error: AttachError) -> PublishError {
    let kind = match error.kind() {
        AttachErrorKind::InvalidSessionName => PublishErrorKind::InvalidSessionName,
        AttachErrorKind::TimedOut => PublishErrorKind::TimedOut,
        AttachErrorKind::Closed => PublishErrorKind::Closed,
        AttachErrorKind::Refused | AttachErrorKind::AlreadyAttached => PublishErrorKind::Refused,
    };
    match error.server_error() {
        Some(server) => PublishError::server(kind, server.clone()),
        None => PublishError::new(kind, error.to_string()),
    }
}

fn timeout_message(limit: Duration) -> String {
    format!("no answer within {limit:?}")
}

/// A random idempotency key.
fn new_id() -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(ASSIGNED_ID_LEN)
        .map(char::from)
        .collect()
}
