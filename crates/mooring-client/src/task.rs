//! The one task that owns a client's socket: it connects, answers and sends heartbeats,
//! routes frames to attachments, runs, presence and publishes, reconnects with backoff, and
//! exits with a named [`CloseReason`].

use std::time::Duration;

use mooring_protocol::presence::Role;
use mooring_protocol::realtime::{ClientFrame, ErrorCode, ServerFrame};
use mooring_protocol::session::NewEvent;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::attachments::{AttachReply, AttachRequest, Attachments};
use crate::backoff::Backoff;
use crate::connection::{Connection, Incoming, Lost};
use crate::credential::Credentials;
use crate::error::{ConnectErrorKind, ServerError};
use crate::options::ClientOptions;
use crate::presence::{GetReply, Presences};
use crate::publishes::{PublishReply, Publishes};
use crate::runs::{RunWatch, RunWatches};
use crate::subscription::EndReason;
use crate::work::{Confirm, Dispatch, Workers};

/// What a client handle (or a subscription) asks of the task.
#[derive(Debug)]
pub(crate) enum Command {
    Attach(AttachRequest),
    /// A subscription was dropped.
    Detach {
        session: String,
    },
    Publish {
        session: String,
        events: Vec<NewEvent>,
        reply: PublishReply,
    },
    Close {
        done: oneshot::Sender<()>,
    },
    /// A run follows its session's controls; `ready` once the session is attached.
    WatchRun {
        watch: RunWatch,
        ready: AttachReply,
    },
    /// A run's handle was dropped.
    Unwatch {
        id: u64,
    },
    Enter {
        session: String,
        instance: String,
        role: Role,
        data: serde_json::Value,
    },
    Update {
        session: String,
        instance: String,
        data: serde_json::Value,
        /// Whether the instance was entered.
        reply: oneshot::Sender<bool>,
    },
    Leave {
        session: String,
        instance: String,
    },
    PresenceGet {
        session: String,
        reply: GetReply,
    },
    /// Registers as a worker, replacing any registration.
    Work {
        id: u64,
        patterns: Vec<String>,
        capacity: Option<u32>,
        inputs: mpsc::UnboundedSender<Dispatch>,
        confirm: Confirm,
    },
    /// A registration's handle was dropped.
    StopWork {
        id: u64,
    },
    /// Gives a dispatched input back.
    Release {
        session: String,
        serial: u64,
    },
}

/// The client's connection, as its handles can watch it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionStatus {
    Connected {
        connection_id: String,
        /// The identity the server stamps on this client's events.
        client_id: String,
    },
    /// The connection was lost; waiting before attempt number `attempt`. `close_code` is the
    /// code the server closed the lost connection with, if it sent one (`4003`: the token
    /// expired; `4008`: slow consumer; see `docs/errors.md`).
    Reconnecting {
        attempt: u32,
        close_code: Option<u16>,
    },
    /// The task has exited; every operation now fails.
    Closed(CloseReason),
}

/// Why a client's task exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// [`Client::close`](crate::Client::close) was called, or every handle and subscription
    /// was dropped.
    Closed,
    /// Reconnecting failed this many times in a row (see `ReconnectPolicy::max_attempts`).
    GaveUp { attempts: u32 },
    /// The server refused the client for good (for example `unsupported_protocol`).
    Refused(ServerError),
}

/// How one connection ended.
enum Ended {
    Lost(Lost),
    Close(Option<oneshot::Sender<()>>),
}

type Exit = (CloseReason, Option<oneshot::Sender<()>>);

#[derive(Debug)]
pub(crate) struct Task {
    url: String,
    client_id: Option<String>,
    connect_timeout: Duration,
    credentials: Credentials,
    commands: mpsc::Receiver<Command>,
    status: watch::Sender<ConnectionStatus>,
    attachments: Attachments,
    publishes: Publishes,
    runs: RunWatches,
    presences: Presences,
    workers: Workers,
    /// Frames larger than this are not sent (the server would close with 1009).
    max_frame_bytes: usize,
    backoff: Backoff,
    rng: StdRng,
}

impl Task {
    pub(crate) fn new(
        options: &ClientOptions,
        credentials: Credentials,
        commands: mpsc::Receiver<Command>,
        status: watch::Sender<ConnectionStatus>,
    ) -> Self {
        Self {
            url: options.url.clone(),
            client_id: options.client_id.clone(),
            connect_timeout: options.connect_timeout,
            credentials,
            commands,
            status,
            attachments: Attachments::default(),
            publishes: Publishes::new(options.resend_within),
            runs: RunWatches::default(),
            presences: Presences::default(),
            workers: Workers::default(),
            max_frame_bytes: options.max_frame_bytes,
            backoff: Backoff::new(options.reconnect.clone()),
            rng: StdRng::from_entropy(),
        }
    }

    /// Runs until the client is closed or gives up; returns why.
    pub(crate) async fn run(mut self, mut connection: Connection) -> CloseReason {
        let (reason, done) = loop {
            let started = Instant::now();
            let close_code = match self.serve(&mut connection).await {
                Ended::Close(done) => {
                    connection.close().await;
                    break (CloseReason::Closed, done);
                }
                Ended::Lost(lost) => {
                    tracing::warn!(%lost, url = %self.url, "connection lost");
                    match lost {
                        Lost::Closed { code, .. } => Some(code),
                        _ => None,
                    }
                }
            };
            self.attachments.on_disconnected();
            self.publishes.on_disconnected();
            self.presences.on_disconnected();
            self.backoff.connection_ended(started.elapsed());
            match self.reconnect(close_code).await {
                Ok(next) => connection = next,
                Err(exit) => break exit,
            }
        };
        let end = match reason {
            CloseReason::Closed => EndReason::ClientClosed,
            CloseReason::GaveUp { .. } | CloseReason::Refused(_) => EndReason::Disconnected,
        };
        self.attachments.end_all(&end);
        self.publishes
            .fail_all(&format!("the client closed: {reason:?}"));
        tracing::info!(?reason, "client task exiting");
        self.status
            .send_replace(ConnectionStatus::Closed(reason.clone()));
        if let Some(done) = done {
            let _ = done.send(());
        }
        reason
    }

    /// Serves one connection until it is lost or the client closes.
    async fn serve(&mut self, connection: &mut Connection) -> Ended {
        let welcome = connection.welcome.clone();
        tracing::debug!(connection_id = %welcome.connection_id, "connected");
        // Keep the identity the server gave us across reconnects.
        self.client_id = Some(welcome.client_id.clone());
        self.status.send_replace(ConnectionStatus::Connected {
            connection_id: welcome.connection_id,
            client_id: welcome.client_id,
        });
        let mut out = Vec::new();
        self.attachments.on_connected(&mut out);
        // Presence again, with the same instances: a member back within the grace stays (and
        // its runs with it).
        self.presences.on_connected(&mut out);
        self.workers.on_connected(&mut out);
        out.extend(self.publishes.on_connected(Instant::now()));
        let mut ping =
            tokio::time::interval_at(Instant::now() + welcome.heartbeat, welcome.heartbeat);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let dead = tokio::time::sleep(welcome.dead_after);
        tokio::pin!(dead);
        let mut nonce = 0;
        loop {
            let attachments = &self.attachments;
            self.presences
                .flush(|session| attachments.awaiting_live(session), &mut out);
            for frame in out.drain(..) {
                let text = match serde_json::to_string(&frame) {
                    Ok(text) => text,
                    Err(e) => return Ended::Lost(Lost::Failed(e.to_string())),
                };
                if text.len() > self.max_frame_bytes {
                    self.refuse_oversized(&frame, text.len());
                    continue;
                }
                if let Err(lost) = connection.send_text(text).await {
                    return Ended::Lost(lost);
                }
            }
            tokio::select! {
                incoming = connection.recv() => {
                    dead.as_mut().reset(Instant::now() + welcome.dead_after);
                    match incoming {
                        Incoming::Frame(frame) => self.on_frame(frame, &mut out),
                        Incoming::Alive => {}
                        Incoming::Lost(lost) => return Ended::Lost(lost),
                    }
                }
                command = self.commands.recv() => {
                    if let Some(close) = self.on_command(command, &mut out) {
                        return Ended::Close(close);
                    }
                }
                _ = ping.tick() => {
                    nonce += 1;
                    out.push(ClientFrame::Ping { nonce });
                }
                () = &mut dead => return Ended::Lost(Lost::Silent),
                token = self.credentials.renewed() => out.push(ClientFrame::Auth { token }),
                Some(session) = self.attachments.next_room(), if self.attachments.any_paused() => {
                    self.attachments.on_room(&session, &mut out);
                }
            }
        }
    }

    /// Waits out the backoff (still taking commands) and reconnects.
    async fn reconnect(&mut self, close_code: Option<u16>) -> Result<Connection, Exit> {
        // Nothing is sent while disconnected: the tables keep what the next connection needs.
        let mut unsent = Vec::new();
        loop {
            if !self.backoff.may_retry() {
                let attempts = self.backoff.failures();
                return Err((CloseReason::GaveUp { attempts }, None));
            }
            let delay = self.backoff.next_delay(&mut self.rng);
            let attempt = self.backoff.failures();
            self.status.send_replace(ConnectionStatus::Reconnecting {
                attempt,
                close_code,
            });
            tracing::debug!(attempt, ?delay, "reconnecting");
            let wake = tokio::time::sleep(delay);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    () = &mut wake => break,
                    command = self.commands.recv() => {
                        if let Some(close) = self.on_command(command, &mut unsent) {
                            return Err((CloseReason::Closed, close));
                        }
                    }
                    Some(session) = self.attachments.next_room(), if self.attachments.any_paused() => {
                        self.attachments.on_room(&session, &mut unsent);
                    }
                }
                unsent.clear();
            }
            // A fresh token for every connection: the last one may have expired meanwhile.
            let opened = match self.credentials.for_connect(self.connect_timeout).await {
                Ok(credential) => {
                    Connection::open(
                        &self.url,
                        self.client_id.as_deref(),
                        credential.as_deref(),
                        self.connect_timeout,
                    )
                    .await
                }
                Err(e) => Err(crate::error::ConnectError::new(
                    ConnectErrorKind::Credential,
                    e,
                )),
            };
            match opened {
                Ok(connection) => return Ok(connection),
                Err(e) if e.kind() == ConnectErrorKind::Refused => {
                    match e.server_error().filter(|s| !s.retryable) {
                        Some(server) => return Err((CloseReason::Refused(server.clone()), None)),
                        None => tracing::warn!(error = %e, attempt, "reconnect refused"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, attempt, "reconnect failed"),
            }
        }
    }

    /// Applies a command; returns `Some` when the client is closing (with the closer's
    /// acknowledgement, if it waits for one).
    fn on_command(
        &mut self,
        command: Option<Command>,
        out: &mut Vec<ClientFrame>,
    ) -> Option<Option<oneshot::Sender<()>>> {
        match command {
            None => return Some(None),
            Some(Command::Close { done }) => return Some(Some(done)),
            Some(Command::Attach(request)) => self.attachments.add(request, out),
            Some(Command::Detach { session }) => self.attachments.detach(&session, out),
            Some(Command::Publish {
                session,
                events,
                reply,
            }) => out.extend(self.publishes.add(session, events, reply, Instant::now())),
            Some(Command::WatchRun { watch, ready }) => {
                let session = watch.session.clone();
                self.runs.add(watch);
                self.attachments.follow(&session, ready, out);
            }
            Some(Command::Unwatch { id }) => self.unwatch(id, out),
            Some(Command::Enter {
                session,
                instance,
                role,
                data,
            }) => self.presences.enter(session, instance, role, data, out),
            Some(Command::Update {
                session,
                instance,
                data,
                reply,
            }) => {
                let _ = reply.send(self.presences.update(session, instance, data, out));
            }
            Some(Command::Leave { session, instance }) => {
                self.presences.leave(session, instance, out)
            }
            Some(Command::PresenceGet { session, reply }) => self.presences.get(session, reply),
            Some(Command::Work {
                id,
                patterns,
                capacity,
                inputs,
                confirm,
            }) => self
                .workers
                .register(id, patterns, capacity, inputs, confirm, out),
            Some(Command::StopWork { id }) => self.workers.stop(id, out),
            Some(Command::Release { session, serial }) => {
                self.workers.release(session, serial, out)
            }
        }
        None
    }

    /// A frame the server would close the connection for (1009): a publish fails with
    /// `too_large` instead, before anything is sent; anything else is dropped with a warning.
    fn refuse_oversized(&mut self, frame: &ClientFrame, size: usize) {
        let max = self.max_frame_bytes;
        match frame {
            ClientFrame::Publish { req, .. } => {
                let error = ServerError {
                    code: ErrorCode::TooLarge,
                    message: format!(
                        "the publish is {size} bytes as a frame; the server takes at most {max}: publish fewer events at once, or stream a long text as appends"
                    ),
                    retryable: false,
                };
                self.publishes.on_error(*req, error);
            }
            _ => tracing::warn!(size, max, "a frame over the server's limit was not sent"),
        }
    }

    fn unwatch(&mut self, id: u64, out: &mut Vec<ClientFrame>) {
        if let Some(session) = self.runs.remove(id) {
            self.attachments.unfollow(&session, out);
        }
    }

    fn on_frame(&mut self, frame: ServerFrame, out: &mut Vec<ClientFrame>) {
        match frame {
            ServerFrame::Ping { nonce } => out.push(ClientFrame::Pong { nonce }),
            ServerFrame::Pong { .. } | ServerFrame::Welcome { .. } => {}
            ServerFrame::Authenticated { expires_at, .. } => {
                self.credentials.on_authenticated(expires_at)
            }
            ServerFrame::Presence {
                session,
                action,
                member,
            } => self.attachments.on_presence(&session, action, member, out),
            ServerFrame::PresenceSnapshot { session, members } => {
                self.attachments.on_snapshot(&session, &members, out);
                self.presences.on_snapshot(&session, members);
            }
            ServerFrame::Attached {
                session,
                epoch,
                mode,
                serial,
            } => self
                .attachments
                .on_attached(&session, epoch, mode, serial, out),
            ServerFrame::Live { session, serial } => {
                self.attachments.on_live(&session, serial, out)
            }
            ServerFrame::Event {
                session,
                epoch,
                event,
            } => {
                let copy = self.runs.watches(&session).then(|| event.clone());
                let new = self.attachments.on_event(&session, epoch, event, out);
                if let Some(event) = copy.filter(|_| new) {
                    for id in self.runs.on_event(&session, &event) {
                        self.unwatch(id, out);
                    }
                }
            }
            ServerFrame::Detached { session, error } => {
                self.attachments
                    .on_detached(&session, error.map(ServerError::from), out)
            }
            ServerFrame::Ack { req, results, .. } => self.publishes.on_ack(req, results),
            ServerFrame::WorkerRegistered { req, .. } => self.workers.on_registered(req),
            ServerFrame::Dispatch {
                session,
                epoch,
                input,
                attempt,
            } => {
                let dispatch = Dispatch {
                    session,
                    epoch,
                    input,
                    attempt,
                };
                self.workers.on_dispatch(dispatch, out)
            }
            ServerFrame::Error {
                req: Some(req),
                error,
                ..
            } if Workers::owns(req) => self.workers.on_error(req, error.into()),
            ServerFrame::Error {
                req: Some(req),
                error,
                ..
            } => self.publishes.on_error(req, error.into()),
            // Only presence frames are refused for size without a request id; an attach never is.
            ServerFrame::Error {
                req: None,
                session: Some(session),
                error,
            } if error.code == ErrorCode::TooLarge => {
                tracing::warn!(session, message = %error.message, "presence refused")
            }
            ServerFrame::Error {
                req: None,
                session: Some(session),
                error,
            } => self.attachments.on_error(&session, error.into()),
            ServerFrame::Error {
                req: None,
                session: None,
                error,
            } => {
                tracing::warn!(code = ?error.code, message = %error.message, "server error");
                // Outside any request and session, these answer a renewal (or announce the
                // expiry that closes the connection).
                if matches!(error.code, ErrorCode::Unauthorized | ErrorCode::Forbidden) {
                    self.credentials.on_refused();
                }
            }
        }
    }
}
