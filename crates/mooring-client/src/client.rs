//! The client handle: cheap to clone, it only holds the sender of the task's command queue.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mooring_protocol::realtime::{AttachFrom, AttachPoint, Published};
use mooring_protocol::session::{is_valid_session_name, NewEvent};
use mooring_protocol::Position;
use rand::distributions::Alphanumeric;
use rand::Rng;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::attachments::AttachRequest;
use crate::connection::Connection;
use crate::error::{
    AttachError, AttachErrorKind, ConnectError, Error, PublishError, PublishErrorKind,
};
use crate::event;
use crate::options::ClientOptions;
use crate::subscription::Subscription;
use crate::task::{Command, ConnectionStatus, Task};

/// Commands (attach, publish, detach, close) queued for the task at once.
const COMMAND_QUEUE: usize = 256;
/// Characters of an id assigned to an event published without one.
const ASSIGNED_ID_LEN: usize = 22;

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
}

impl Client {
    /// Connects and says hello. The first connection must succeed; after that the client
    /// reconnects on its own, as `options.reconnect` says.
    pub async fn connect(options: ClientOptions) -> Result<Self, ConnectError> {
        let connection = Connection::open(
            &options.url,
            options.client_id.as_deref(),
            options.connect_timeout,
        )
        .await?;
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        let (status_tx, status) = watch::channel(ConnectionStatus::Connected {
            connection_id: connection.welcome.connection_id.clone(),
            client_id: connection.welcome.client_id.clone(),
        });
        let task = Task::new(&options, queue, status_tx);
        tokio::spawn(task.run(connection));
        Ok(Self {
            commands,
            status,
            in_flight: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            options: Arc::new(options),
        })
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

    async fn publish_one(
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
