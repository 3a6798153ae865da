//! One WebSocket connection: the hello, heartbeats, attachments and publishes of one client.
//!
//! One task owns the socket. Everything sent to the client goes through one bounded outbound
//! queue, so a connection's memory is bounded; attachments and acknowledgements feed it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::SinkExt;
use mooring_core::auth::{Operation, SessionPattern};
use mooring_core::clock::Clock;
use mooring_core::session::PublishGroup;
use mooring_protocol::realtime::{
    close, ClientFrame, ErrorBody, ErrorCode, ServerFrame, PROTOCOL_VERSION,
};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use mooring_protocol::presence::{Member, PresenceAction, Role};

use super::actor::PresenceRequest;
use super::attach::{self, AttachmentContext, AttachmentEnd};
use super::dispatch::WorkerLink;
use super::errors::{body, of_publish};
use super::limits::TokenBucket;
use super::outbound::{self, Outbound, QueueError, SlowSignal};
use super::sessions::Sessions;
use crate::auth::{Auth, AuthError, Principal};

/// Frames queued for one client before it counts as a slow consumer.
const OUTBOUND_FRAMES: usize = 1024;
/// Publishes of one connection waiting for their acknowledgement.
const MAX_PUBLISHES_IN_FLIGHT: usize = 1024;
/// How long a closing connection waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long the close frame to a dead peer may take to leave; nobody waits for its reply.
const DEAD_PEER_CLOSE_WAIT: Duration = Duration::from_millis(100);

static CONNECTIONS: AtomicU64 = AtomicU64::new(1);
static ATTACHMENTS: AtomicU64 = AtomicU64::new(1);

/// How a connection ended, for the log (and, later, presence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The client sent a close frame.
    Clean,
    /// The socket ended without a close frame, or the peer went silent.
    Lost,
    /// The server closed it (protocol error, slow consumer, shutdown).
    Closed(u16),
}

struct Attachment {
    cancel: CancellationToken,
    task: JoinHandle<AttachmentEnd>,
}

/// What a connection needs from its node.
pub(crate) struct Context {
    pub(crate) sessions: Sessions,
    pub(crate) shutdown: CancellationToken,
    pub(crate) auth: Auth,
    pub(crate) clock: Arc<dyn Clock>,
}

struct Connection {
    id: String,
    client_id: String,
    /// What the credential allows; replaced on renewal (`auth` frame).
    principal: Principal,
    auth: Auth,
    clock: Arc<dyn Clock>,
    sessions: Sessions,
    outbound: Outbound,
    attachments: HashMap<String, Attachment>,
    publishes: Arc<Semaphore>,
    /// Attachments report a slow consumer here.
    slow: SlowSignal,
    /// Sessions this connection published to or entered: told when it ends, so its presence
    /// and runs follow (leave, or wait out the grace for a reconnect).
    touched: HashSet<String>,
    publish_rate: TokenBucket,
    /// Whether it registered as a worker (its inputs go to others when it ends).
    worker: bool,
}

fn encode(frame: &ServerFrame) -> Option<Utf8Bytes> {
    serde_json::to_string(frame).ok().map(Utf8Bytes::from)
}

/// Queues `text` for the client, or reports a slow consumer if its queue is full (in frames
/// or in bytes).
fn queue_or_slow(outbound: &Outbound, slow: &SlowSignal, text: Utf8Bytes) {
    if outbound.try_queue(text) == Err(QueueError::Full) {
        slow.raise();
    }
}

fn error_frame(req: Option<u64>, session: Option<&str>, error: ErrorBody) -> ServerFrame {
    ServerFrame::Error {
        req,
        session: session.map(str::to_owned),
        error,
    }
}

async fn close_with(socket: &mut WebSocket, code: u16, reason: &'static str) -> Ending {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    let handshake = async {
        if socket.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        // Read what the client still sends, up to its close frame. A socket dropped with unread
        // input is reset, and a reset destroys the frames still on their way to the client: the
        // close frame with its code among them.
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    };
    // A client that reads nothing gets no close frame at all; do not wait for it forever.
    let _ = tokio::time::timeout(CLOSE_GRACE, handshake).await;
    Ending::Closed(code)
}

/// Sends `error` with `code` and closes with `close_code`.
async fn refuse(socket: &mut WebSocket, code: ErrorCode, message: String, close_code: u16) {
    if let Some(text) = encode(&error_frame(None, None, body(code, message))) {
        let _ = socket.send(Message::Text(text)).await;
    }
    Box::pin(close_with(socket, close_code, "refused")).await;
}

/// Where a credential's validity ends on this task's timer, if it ends: `exp` plus the
/// leeway tokens are verified with.
fn expiry_deadline(principal: &Principal, clock: &dyn Clock) -> Option<Instant> {
    let expires = principal.expires_at_ms? + crate::auth::jwt::LEEWAY_SECS * 1000;
    let left = expires.saturating_sub(clock.now_ms());
    Some(Instant::now() + Duration::from_millis(left))
}

/// Serves one upgraded connection until it ends.
pub(crate) async fn serve(
    mut socket: WebSocket,
    context: Context,
    principal: Result<Principal, AuthError>,
) {
    let Context {
        sessions,
        shutdown,
        auth,
        clock,
    } = context;
    let principal = match principal {
        Ok(principal) => principal,
        Err(e) => {
            let message = e.to_string();
            refuse(
                &mut socket,
                ErrorCode::Unauthorized,
                message,
                close::UNAUTHORIZED,
            )
            .await;
            return;
        }
    };
    // Borrowed from a handle to the node, not copied: a copy would live in every
    // connection's task.
    let node = sessions.clone();
    let config = node.config();
    let number = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let id = format!("c{number:x}");
    let Some(claimed) = Box::pin(hello(&mut socket, config.hello_timeout)).await else {
        return;
    };
    // The identity comes from the credential; a hello may repeat it but not change it.
    let client_id = match (&principal.client_id, claimed) {
        (None, claimed) => claimed.unwrap_or_else(|| format!("anon-{id}")),
        (Some(verified), None) => verified.clone(),
        (Some(verified), Some(claimed)) if claimed == *verified => claimed,
        (Some(verified), Some(_)) => {
            let message = format!("hello.client_id must be the credential's ({verified:?})");
            refuse(
                &mut socket,
                ErrorCode::Forbidden,
                message,
                close::UNAUTHORIZED,
            )
            .await;
            return;
        }
    };
    let Some(_slot) = sessions.connect(&client_id) else {
        let max = config.max_connections_per_client;
        let message = format!("{client_id:?} already holds {max} connections; close one");
        refuse(
            &mut socket,
            ErrorCode::TooManyConnections,
            message,
            close::TOO_MANY_CONNECTIONS,
        )
        .await;
        return;
    };
    let mut expires = expiry_deadline(&principal, clock.as_ref());
    let (outbound, mut queue) = outbound::channel(OUTBOUND_FRAMES, config.max_outbound_bytes);
    let slow = SlowSignal::default();
    let slow_rx = slow.clone();
    let mut conn = Connection {
        id: id.clone(),
        client_id,
        principal,
        auth,
        clock,
        sessions,
        outbound,
        attachments: HashMap::new(),
        publishes: Arc::new(Semaphore::new(MAX_PUBLISHES_IN_FLIGHT)),
        slow,
        touched: HashSet::new(),
        publish_rate: TokenBucket::new(config.max_publishes_per_sec, config.publish_burst),
        worker: false,
    };
    metrics::gauge!(crate::metrics::CONNECTIONS).increment(1.0);
    // Only the encoded text crosses the await: a frame kept in scope would keep its room in
    // the task for the connection's whole life.
    let welcome = encode(&ServerFrame::Welcome {
        protocol: PROTOCOL_VERSION,
        connection_id: conn.id.clone(),
        client_id: conn.client_id.clone(),
        heartbeat_ms: config.heartbeat.as_millis() as u64,
        dead_after_ms: config.dead_after().as_millis() as u64,
    });
    if let Some(text) = welcome {
        if socket.send(Message::Text(text)).await.is_err() {
            return;
        }
    }
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    let dead_after = config.dead_after();
    heartbeat.tick().await;
    let mut last_heard = Instant::now();
    let mut nonce = 0;
    let ending = loop {
        tokio::select! {
            incoming = socket.recv() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        // Boxed: the connection idles between frames for most of its life, and
                        // a future keeps room for its largest await point all along.
                        if let Err(code) = Box::pin(conn.on_frame(&text)).await {
                            break Box::pin(close_with(&mut socket, code, "protocol error")).await;
                        }
                        // The peer is not to blame for time this task spent on its frame (a
                        // slow store under load): frames it sent meanwhile wait unread.
                        last_heard = Instant::now();
                        // A renewal moves the deadline.
                        expires = expiry_deadline(&conn.principal, conn.clock.as_ref());
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let err = body(ErrorCode::BadFrame, "frames are JSON text, not binary");
                        conn.push(&error_frame(None, None, err)).await;
                    }
                    Some(Ok(Message::Close(_))) => break Ending::Clean,
                    Some(Ok(_)) => {}
                    Some(Err(e)) if too_big(&e) => {
                        break Box::pin(close_with(&mut socket, close::MESSAGE_TOO_BIG, "frame too large")).await;
                    }
                    Some(Err(_)) | None => break Ending::Lost,
                }
            }
            Some(text) = queue.recv() => {
                // A peer that takes nothing for dead_after is dead, like a silent one (and while
                // this send waits, nothing else of the connection runs).
                let sent = write_queued(&mut socket, text, &mut queue);
                if !matches!(tokio::time::timeout(dead_after, sent).await, Ok(Ok(()))) {
                    break Ending::Lost;
                }
            }
            () = sleep_until_some(expires) => {
                break Box::pin(conn.expired(&mut socket)).await;
            }
            () = slow_rx.raised() => {
                break Box::pin(close_with(&mut socket, close::SLOW_CONSUMER, "slow consumer: resume from the last serial")).await;
            }
            () = tokio::time::sleep_until(last_heard + dead_after) => {
                // Dead now: tell it why if the socket takes it, but wait for no reply.
                let close = Message::Close(Some(CloseFrame {
                    code: close::HEARTBEAT_TIMEOUT,
                    reason: Utf8Bytes::from_static("no heartbeat"),
                }));
                let _ = tokio::time::timeout(DEAD_PEER_CLOSE_WAIT, socket.send(close)).await;
                break Ending::Lost;
            }
            _ = heartbeat.tick() => {
                // Also by the node's clock, which tests move by hand.
                if conn.principal.expires_at_ms.is_some_and(|at| {
                    conn.clock.now_ms() > at + crate::auth::jwt::LEEWAY_SECS * 1000
                }) {
                    break Box::pin(conn.expired(&mut socket)).await;
                }
                nonce += 1;
                if let Some(text) = encode(&ServerFrame::Ping { nonce }) {
                    let sent = socket.send(Message::Text(text));
                    let sent = tokio::time::timeout(dead_after, sent).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        break Ending::Lost;
                    }
                }
            }
            () = shutdown.cancelled() => {
                break Box::pin(close_with(&mut socket, 1001, "server shutting down")).await;
            }
        }
    };
    conn.detach_all().await;
    if conn.worker {
        conn.sessions.dispatcher().connection_ended(&conn.id);
    }
    metrics::gauge!(crate::metrics::CONNECTIONS).decrement(1.0);
    let how = match ending {
        Ending::Clean => "clean",
        Ending::Lost => "lost",
        Ending::Closed(_) => "closed",
    };
    metrics::counter!(crate::metrics::CONNECTIONS_CLOSED, "how" => how).increment(1);
    let clean = ending == Ending::Clean;
    for session in &conn.touched {
        conn.sessions
            .connection_ended(session, &conn.id, clean)
            .await;
    }
    tracing::debug!(connection = %id, ?ending, "connection ended");
}

/// Whether a read failed on a frame or message over the size limit (the library refuses it
/// before reading it whole); the client is then told so with close code 1009.
fn too_big(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(tokio_tungstenite::tungstenite::Error::Capacity(_)) =
            e.downcast_ref::<tokio_tungstenite::tungstenite::Error>()
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits for `hello`; returns the identity it claims (`Some(None)`: none), or closes the
/// socket.
async fn hello(socket: &mut WebSocket, timeout: Duration) -> Option<Option<String>> {
    let first = tokio::time::timeout(timeout, socket.recv())
        .await
        .ok()??
        .ok()?;
    let Message::Text(text) = first else {
        close_with(socket, close::PROTOCOL_ERROR, "send hello first").await;
        return None;
    };
    let refusal = match serde_json::from_str::<ClientFrame>(&text) {
        Ok(ClientFrame::Hello {
            protocol,
            client_id,
        }) if protocol == PROTOCOL_VERSION => {
            return Some(client_id);
        }
        Ok(ClientFrame::Hello { protocol, .. }) => body(
            ErrorCode::UnsupportedProtocol,
            format!("this server speaks protocol {PROTOCOL_VERSION}, not {protocol}"),
        ),
        Ok(_) => body(ErrorCode::HelloRequired, "the first frame must be hello"),
        Err(e) => body(ErrorCode::BadFrame, format!("not a hello frame: {e}")),
    };
    if let Some(text) = encode(&error_frame(None, None, refusal)) {
        let _ = socket.send(Message::Text(text)).await;
    }
    close_with(socket, close::PROTOCOL_ERROR, "hello refused").await;
    None
}

/// The size of an event's extras: its keys and values.
fn extras_size(event: &mooring_protocol::session::NewEvent) -> usize {
    event.extras.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The size an event counts against the limit: its data, name and extras as JSON.
fn event_size(event: &mooring_protocol::session::NewEvent) -> usize {
    let data = serde_json::to_string(&event.data).map_or(0, |d| d.len());
    data + extras_size(event) + event.name.as_ref().map_or(0, String::len)
}

impl Connection {
    /// Queues a frame for the client without waiting: this task is the one that drains the
    /// queue, so waiting for room here would wedge the connection for good. A full queue is a
    /// slow consumer.
    async fn push(&self, frame: &ServerFrame) {
        if let Some(text) = encode(frame) {
            queue_or_slow(&self.outbound, &self.slow, text);
        }
    }

    /// Handles one client frame; `Err(close code)` ends the connection.
    async fn on_frame(&mut self, text: &str) -> Result<(), u16> {
        let frame_len = text.len();
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(e) => {
                let err = body(
                    ErrorCode::BadFrame,
                    format!("not a frame of protocol 1: {e}"),
                );
                self.push(&error_frame(None, None, err)).await;
                return Ok(());
            }
        };
        match frame {
            ClientFrame::Hello { .. } => {
                let err = body(ErrorCode::BadFrame, "hello was already received");
                self.push(&error_frame(None, None, err)).await;
            }
            ClientFrame::Ping { nonce } => self.push(&ServerFrame::Pong { nonce }).await,
            ClientFrame::Pong { .. } => {}
            ClientFrame::Attach { session, from } => {
                // A malformed name is reported as such before any capability is checked.
                if let Some(err) = self
                    .check_name(&session)
                    .or_else(|| self.not_allowed(&session, Operation::Subscribe))
                {
                    self.push(&error_frame(None, Some(&session), err)).await;
                    return Ok(());
                }
                self.attach(session, from).await
            }
            ClientFrame::Auth { token } => self.renew(&token).await,
            ClientFrame::Worker {
                req,
                patterns,
                capacity,
            } => self.register_worker(req, patterns, capacity).await,
            ClientFrame::DispatchRelease { session, input } => {
                if self.worker {
                    self.sessions
                        .dispatcher()
                        .release(&self.id, &session, input);
                }
            }
            ClientFrame::Detach { session } => {
                self.detach(&session).await;
                self.push(&ServerFrame::Detached {
                    session,
                    error: None,
                })
                .await;
            }
            ClientFrame::Presence {
                session,
                action,
                role,
                instance,
                data,
            } => {
                if let Some(err) = self
                    .check_name(&session)
                    .or_else(|| self.not_allowed(&session, Operation::Presence))
                {
                    self.push(&error_frame(None, Some(&session), err)).await;
                    return Ok(());
                }
                self.presence(session, action, role, instance, data).await
            }
            ClientFrame::PresenceGet { session } => {
                if let Some(err) = self
                    .check_name(&session)
                    .or_else(|| self.not_allowed(&session, Operation::Presence))
                {
                    self.push(&error_frame(None, Some(&session), err)).await;
                    return Ok(());
                }
                let (members, _) = self.sessions.inspect(&session).await;
                self.push(&ServerFrame::PresenceSnapshot { session, members })
                    .await;
            }
            ClientFrame::Publish {
                req,
                session,
                events,
            } => {
                if !self.publish_rate.take(Instant::now()) {
                    let rate = self.sessions.config().max_publishes_per_sec;
                    let wait = self.publish_rate.wait();
                    let err = body(
                        ErrorCode::RateLimited,
                        format!("over {rate} publishes a second; retry in {wait:?}"),
                    );
                    self.push(&error_frame(Some(req), Some(&session), err))
                        .await;
                    return Ok(());
                }
                let extras_limit = self.sessions.config().max_extras_bytes;
                if let Some(index) = events.iter().position(|e| extras_size(e) > extras_limit) {
                    let err = body(
                        ErrorCode::TooLarge,
                        format!("the extras of event {index} are over {extras_limit} bytes"),
                    );
                    self.push(&error_frame(Some(req), Some(&session), err))
                        .await;
                    return Ok(());
                }
                // A frame within the limit cannot hold an event over it; only measure big ones.
                let limit = self.sessions.config().max_event_bytes;
                if let Some(index) = (frame_len > limit)
                    .then(|| events.iter().position(|e| event_size(e) > limit))
                    .flatten()
                {
                    let err = body(
                        ErrorCode::TooLarge,
                        format!("event {index} is over {limit} bytes; split it into appends"),
                    );
                    self.push(&error_frame(Some(req), Some(&session), err))
                        .await;
                    return Ok(());
                }
                if let Some(err) = self
                    .check_name(&session)
                    .or_else(|| super::errors::not_granted(&self.principal, &session, &events))
                {
                    self.push(&error_frame(Some(req), Some(&session), err))
                        .await;
                    return Ok(());
                }
                self.publish(req, session, events).await
            }
        }
        Ok(())
    }

    /// `Some(forbidden)` if the credential does not grant `operation` on `session`.
    fn not_allowed(&self, session: &str, operation: Operation) -> Option<ErrorBody> {
        (!self.principal.allows(session, operation)).then(|| {
            body(
                ErrorCode::Forbidden,
                format!("this credential does not grant {operation} on {session:?}"),
            )
        })
    }

    /// Makes this connection a worker for `patterns` (none: no longer one). A worker reads the
    /// inputs of every session its patterns match and starts runs there, so its credential
    /// must grant `subscribe` and `publish` on the whole of each pattern.
    async fn register_worker(&mut self, req: u64, patterns: Vec<String>, capacity: Option<u32>) {
        let mut parsed = Vec::with_capacity(patterns.len());
        for text in &patterns {
            let pattern = match text.parse::<SessionPattern>() {
                Ok(pattern) => pattern,
                Err(e) => {
                    let err = body(ErrorCode::InvalidPattern, e.to_string());
                    self.push(&error_frame(Some(req), None, err)).await;
                    return;
                }
            };
            let missing = [Operation::Subscribe, Operation::Publish]
                .into_iter()
                .find(|op| !self.principal.allows_all(&pattern, *op));
            if let Some(op) = missing {
                let err = body(
                    ErrorCode::Forbidden,
                    format!("a worker for {text:?} needs {op} on every session it matches"),
                );
                self.push(&error_frame(Some(req), None, err)).await;
                return;
            }
            parsed.push(pattern);
        }
        if capacity == Some(0) {
            let err = body(ErrorCode::InvalidRequest, "capacity must be at least 1");
            self.push(&error_frame(Some(req), None, err)).await;
            return;
        }
        self.worker = !parsed.is_empty();
        let link = WorkerLink {
            outbound: self.outbound.clone(),
            slow: self.slow.clone(),
        };
        // Answered before any input is offered, so the worker knows it is one first.
        self.push(&ServerFrame::WorkerRegistered {
            req,
            patterns,
            capacity,
        })
        .await;
        self.sessions
            .dispatcher()
            .register(&self.id, &self.client_id, parsed, capacity, link);
    }

    /// Replaces the credential with a fresh token for the same identity, without dropping the
    /// connection. A refused renewal leaves the current credential in force until it expires.
    async fn renew(&mut self, token: &str) {
        let frame = match self.auth.authenticate(Some(token), self.clock.now_ms()) {
            Err(e) => error_frame(None, None, body(ErrorCode::Unauthorized, e.to_string())),
            Ok(p) if p.client_id.as_ref().is_some_and(|c| *c != self.client_id) => error_frame(
                None,
                None,
                body(
                    ErrorCode::Forbidden,
                    "a renewal must be for the connection's client_id",
                ),
            ),
            Ok(principal) => {
                let expires_at = principal.expires_at_ms.map(|ms| ms / 1000);
                self.principal = principal;
                ServerFrame::Authenticated {
                    client_id: self.client_id.clone(),
                    expires_at,
                }
            }
        };
        self.push(&frame).await;
    }

    /// The credential expired without renewal: say so, and close with 4003.
    async fn expired(&mut self, socket: &mut WebSocket) -> Ending {
        let err = body(
            ErrorCode::Unauthorized,
            "the token expired; connect again with a fresh one",
        );
        if let Some(text) = encode(&error_frame(None, None, err)) {
            let _ = socket.send(Message::Text(text)).await;
        }
        close_with(socket, close::UNAUTHORIZED, "token expired").await
    }

    fn check_name(&self, session: &str) -> Option<ErrorBody> {
        super::errors::invalid_session_name(session, "session names are")
    }

    async fn attach(
        &mut self,
        session: String,
        from: Option<mooring_protocol::realtime::AttachFrom>,
    ) {
        if let Some(err) = self.check_name(&session) {
            self.push(&error_frame(None, Some(&session), err)).await;
            return;
        }
        // Attaching again replaces the attachment (a resume from a new position).
        self.detach(&session).await;
        let limit = self.sessions.config().max_attachments;
        if self.attachments.len() >= limit {
            let err = body(
                ErrorCode::TooManyAttachments,
                format!("a connection may attach at most {limit} sessions"),
            );
            self.push(&error_frame(None, Some(&session), err)).await;
            return;
        }
        let cancel = CancellationToken::new();
        let ctx = AttachmentContext {
            sessions: self.sessions.clone(),
            outbound: self.outbound.clone(),
            cancel: cancel.clone(),
            id: ATTACHMENTS.fetch_add(1, Ordering::Relaxed),
            owner: (self.client_id.clone(), self.id.clone()),
        };
        let slow = self.slow.clone();
        let name = session.clone();
        let fut = async move {
            let id = ctx.id;
            let sessions = ctx.sessions.clone();
            let end = attach::run(ctx, name.clone(), from).await;
            sessions.unsubscribe(&name, id).await;
            if end == AttachmentEnd::SlowConsumer {
                slow.raise();
            }
            end
        };
        let task = tokio::spawn(fut);
        self.attachments
            .insert(session, Attachment { cancel, task });
    }

    async fn presence(
        &mut self,
        session: String,
        action: PresenceAction,
        role: Option<Role>,
        instance: Option<String>,
        data: serde_json::Value,
    ) {
        if let Some(err) = self.check_name(&session) {
            self.push(&error_frame(None, Some(&session), err)).await;
            return;
        }
        let limit = self.sessions.config().max_presence_data_bytes;
        if serde_json::to_string(&data).map_or(0, |d| d.len()) > limit {
            let err = body(
                ErrorCode::TooLarge,
                format!("presence data is limited to {limit} bytes"),
            );
            self.push(&error_frame(None, Some(&session), err)).await;
            return;
        }
        let instance = instance.unwrap_or_else(|| self.id.clone());
        let member = Member {
            client_id: self.client_id.clone(),
            instance,
            connection_id: self.id.clone(),
            role: role.unwrap_or(Role::User),
            data,
        };
        let request = match action {
            PresenceAction::Enter => PresenceRequest::Enter(member),
            PresenceAction::Update => PresenceRequest::Update(member),
            PresenceAction::Leave => PresenceRequest::Leave {
                client_id: member.client_id,
                instance: member.instance,
            },
        };
        self.touched.insert(session.clone());
        self.sessions.presence(&session, request).await;
    }

    async fn detach(&mut self, session: &str) {
        if let Some(attachment) = self.attachments.remove(session) {
            attachment.cancel.cancel();
            let _ = attachment.task.await;
        }
    }

    async fn detach_all(&mut self) {
        for (_, attachment) in self.attachments.drain() {
            attachment.cancel.cancel();
            let _ = attachment.task.await;
        }
    }

    async fn publish(
        &mut self,
        req: u64,
        session: String,
        events: Vec<mooring_protocol::session::NewEvent>,
    ) {
        if let Some(err) = self.check_name(&session) {
            self.push(&error_frame(Some(req), Some(&session), err))
                .await;
            return;
        }
        if events.is_empty() {
            let err = body(
                ErrorCode::InvalidEvent,
                "a publish needs at least one event",
            );
            self.push(&error_frame(Some(req), Some(&session), err))
                .await;
            return;
        }
        if let Some(err) = super::errors::server_only(&events) {
            self.push(&error_frame(Some(req), Some(&session), err))
                .await;
            return;
        }
        let Ok(permit) = self.publishes.clone().acquire_owned().await else {
            return;
        };
        let group = PublishGroup::new(Some(self.client_id.clone()), events);
        // Queued in frame order here; only the wait for durability runs on its own.
        self.touched.insert(session.clone());
        let reply = self
            .sessions
            .publish(&session, group, Some(self.id.clone()))
            .await;
        let outbound = self.outbound.clone();
        let slow = self.slow.clone();
        tokio::spawn(async move {
            let frame = match reply.await {
                Ok(Ok(outcome)) => ServerFrame::Ack {
                    req,
                    session,
                    epoch: outcome.epoch,
                    results: outcome.results,
                },
                Ok(Err(e)) => error_frame(Some(req), Some(&session), of_publish(&e)),
                Err(_) => error_frame(
                    Some(req),
                    Some(&session),
                    body(
                        ErrorCode::ShuttingDown,
                        "the session stopped before the write",
                    ),
                ),
            };
            if let Some(text) = encode(&frame) {
                // Not waiting for room: the permit this task holds is what lets the connection
                // read the client's next publish, and only the connection drains the queue.
                queue_or_slow(&outbound, &slow, text);
            }
            drop(permit);
        });
    }
}

/// Frames written with one flush at most: a burst goes out in few system calls, and one
/// connection's burst never holds its task for long.
const MAX_FRAMES_PER_WRITE: usize = 256;

/// Writes `first` and whatever else is already queued, then flushes once. One flush per frame
/// made fan-out a system call per event per subscriber (74% of the server's samples in
/// `send` with 10,000 subscribers).
async fn write_queued(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    queue: &mut outbound::OutboundQueue,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 1..MAX_FRAMES_PER_WRITE {
        let Some(text) = queue.try_recv() else { break };
        socket.feed(Message::Text(text)).await?;
    }
    socket.flush().await
}
