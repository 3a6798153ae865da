//! The Rust SDK for Mooring's realtime protocol (`docs/protocol.md`): attach to sessions,
//! publish events, and keep going across disconnects with no gap and no duplicate.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mooring_client::{Client, ClientOptions, SessionItem, StartAt};
//!
//! let client = Client::connect(ClientOptions::new("ws://127.0.0.1:7420/v1/ws")).await?;
//! let mut chat = client.attach("chat:42", StartAt::Latest).await?;
//! let answer = client.create_message("chat:42", "response", "").await?;
//! client.append("chat:42", answer, "Rayleigh scattering").await?;
//! while let Some(item) = chat.next().await {
//!     if let SessionItem::Live { .. } = item {
//!         println!("{:?}", chat.messages());
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! An agent runs in a session, and hears of a cancel or a steer as soon as its client does:
//!
//! ```no_run
//! # async fn demo(client: mooring_client::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use mooring_client::{Role, RunStatus};
//!
//! client.enter("chat:42", Role::Agent, "worker-1", serde_json::json!({})).await?;
//! let mut run = client.start_run("chat:42", "run-7", Some(12)).await?;
//! run.create_answer("response").await?;
//! for token in ["Rayleigh", " scattering"] {
//!     tokio::select! {
//!         cancel = run.cancelled() => {
//!             let reason = format!("cancelled by {:?}", cancel.by);
//!             run.end(RunStatus::Cancelled, Some(reason)).await?;
//!             return Ok(());
//!         }
//!         appended = run.append(token) => { appended?; }
//!     }
//! }
//! run.end(RunStatus::Completed, None).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! A [`Client`] is a cheap `Clone` handle holding a channel sender; one task owns the socket
//! and exits with a named [`CloseReason`].
//!
//! - [`client`]: the handle: `connect`, `attach`, `publish` and its conveniences, runs
//!   (`start_run`, `cancel`, `steer`), presence (`enter`, `update_presence`, `leave`,
//!   `presence_get`), `close`.
//! - [`options`]: [`ClientOptions`] and the [`ReconnectPolicy`].
//! - `task`: the task that owns the socket: heartbeats, routing frames, reconnecting.
//! - `connection`: one WebSocket: the credential, the `hello`/`welcome` handshake and JSON
//!   frames.
//! - [`credential`]: a [`Credential`] (a static token or API key, or a [`TokenSource`]) and
//!   the renewal of tokens over the live connection before they expire.
//! - `attachments`: the attached sessions as the task sees them; pauses a session whose
//!   subscriber falls behind instead of blocking the socket.
//! - `cursor`: pure: each session's place in its log, deduplication by serial, and where to
//!   attach again after an interruption.
//! - `publishes`: publishes awaiting their `ack`, resent after a reconnect when safe.
//! - [`runs`]: an agent's [`RunHandle`], and the table routing cancels and steers to runs.
//! - `presence`: what this client entered (entered again after each reconnect) and
//!   `presence_get` requests awaiting their snapshot.
//! - [`subscription`]: the [`Subscription`] stream of [`SessionItem`]s.
//! - [`accumulate`]: pure: folds events into messages with the server's own fold.
//! - `backoff`: pure: exponential backoff with full jitter.
//! - [`error`]: per-operation errors: [`ConnectError`], [`AttachError`], [`PublishError`],
//!   [`PresenceError`].
//! - [`event`]: constructors for published events.
//!
//! # Guarantees
//!
//! - A subscription yields each serial of its session once, in order, across reconnects: it
//!   attaches again from the last serial it delivered and drops anything at or before it.
//! - Its [`messages`](Subscription::messages) equal the server's materialized view as of the
//!   last event yielded. When the view must be replaced (lost history, or a `latest` view cut
//!   short) it yields [`SessionItem::Reset`] first.
//! - A publish whose events all have ids is resent after a reconnect; the server drops the
//!   duplicate within its dedupe window (2 minutes by default).
//! - Nothing is unbounded: each subscription buffers at most
//!   [`ClientOptions::subscription_buffer`] items (a subscriber that falls behind has its
//!   session paused and resumed, without slowing the others), and at most
//!   [`ClientOptions::max_in_flight`] publishes await their ack.
//! - A run hears of each control of its session once, in order, from its own `run.start` on:
//!   a cancel naming it, a cancel of every run, a cancel held for it before it started, and
//!   its steers (at most [`runs::STEER_BUFFER`] unread).
//! - What a client entered in presence it enters again, with the same instance, on every new
//!   connection: a drop shorter than the server's grace is never seen as a leave.

pub mod accumulate;
mod attachments;
mod backoff;
pub mod client;
mod connection;
pub mod credential;
mod cursor;
pub mod error;
pub mod event;
pub mod options;
mod presence;
mod publishes;
pub mod runs;
pub mod subscription;
mod task;
pub mod work;

pub use accumulate::Accumulator;
pub use client::{Client, StartAt};
pub use credential::{Credential, Token, TokenSource};
pub use cursor::ResetReason;
pub use error::{
    AttachError, AttachErrorKind, ConnectError, ConnectErrorKind, PresenceError, PresenceErrorKind,
    PublishError, PublishErrorKind, ServerError, WorkError, WorkErrorKind,
};
pub use options::{ClientOptions, ReconnectPolicy};
pub use runs::{Approval, ApprovalDecision, Cancel, CancelReason, RunHandle, RunStatus, Steer};
pub use subscription::{EndReason, SessionItem, Subscription};
pub use task::{CloseReason, ConnectionStatus};
pub use work::{Dispatch, Work};

pub use mooring_protocol::presence::{Member, PresenceAction, Role};
pub use mooring_protocol::realtime::{ErrorCode, Published};
pub use mooring_protocol::session::{Action, Event, MessageView, NewEvent};
pub use mooring_protocol::Position;
