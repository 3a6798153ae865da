//! Acknowledging writes only once replicas have them (`WAIT`), when the node is told to.
//!
//! `WAIT n timeout` blocks the connection it is sent on until `n` replicas acknowledged every
//! write that connection made, and answers how many did. So the commits and their `WAIT`s go
//! through a connection of their own: a `WAIT` never holds up the node's reads, beats and
//! presence, which share the other one. One `WAIT` is in flight at a time; the commits answered
//! while it waits are covered by the next one, so under load many commits share a wait, as
//! many appends share an fsync in the embedded engine.
//!
//! `WAIT` covers the connection's writes only, and a new connection has none: a `WAIT` sent
//! after a reconnection answers at once. So the connection's id (`CLIENT ID`) is read before
//! the commit is sent and again after the `WAIT`, and a change refuses the write. A write that
//! wrote nothing (a retry found deduplicated, a refusal) may answer from a write that is on the
//! primary only: it first makes a tiny write of its own (`sync.lua`), so that its `WAIT`
//! covers everything the primary held when it read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientInterface, ServerInterface};
use fred::prelude::ClientLike;
use fred::types::config::Options;
use fred::types::scripts::Script;
use mooring_core::store::StoreError;
use tokio::sync::Mutex;

use super::{keys, redis_error, COMMAND_TIMEOUT};

/// A write of nothing, so that a `WAIT` after it covers everything the primary holds.
const SYNC: &str = include_str!("sync.lua");

/// The default of [`RedisOptions::wait_timeout`].
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(1_000);

/// How the Redis engine acknowledges writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// Acknowledge a write only once this many replicas have it (`WAIT`); 0 acknowledges it
    /// once the primary has it.
    pub wait_replicas: u32,
    /// How long a write waits for those replicas before it is refused. At least 1 ms:
    /// `WAIT` with 0 would wait for ever.
    pub wait_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            wait_replicas: 0,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
        }
    }
}

/// What an operation leaves for the replicas to confirm before it is answered.
#[derive(Debug)]
pub(super) enum Landed {
    /// It only read.
    Nothing,
    /// A write that wrote nothing, or whose commit was applied by an earlier send (the
    /// connection broke): what it answers from may be on the primary only.
    Unchanged,
    /// Its commit was applied through the connection `connection` (its id when the commit
    /// was sent), answered once `ticket` waits had been sent.
    Committed {
        connection: Option<i64>,
        ticket: u64,
    },
}

/// A finished `WAIT`, which covers the commits answered before it was sent.
#[derive(Clone, Debug)]
struct Waited {
    /// Its place among the waits sent.
    index: u64,
    /// The connection's id once it answered.
    connection: Option<i64>,
    /// How many replicas acknowledged, or why the `WAIT` failed.
    acked: Result<i64, String>,
}

/// The commit connection and its waits.
#[derive(Debug)]
pub(super) struct Replicas {
    client: Client,
    sync: Script,
    wanted: u32,
    timeout: Duration,
    /// Waits sent so far.
    sent: AtomicU64,
    /// The last wait; held while one is in flight, so there is one at a time.
    last: Mutex<Option<Waited>>,
}

impl Replicas {
    /// Waits for `options.wait_replicas` replicas on `client`, a connection of its own
    /// through which every commit must go.
    pub(super) async fn new(client: Client, options: RedisOptions) -> Result<Self, StoreError> {
        let sync = Script::from_lua(SYNC);
        sync.load(&client)
            .await
            .map_err(|e| redis_error("loading the replica sync script", e))?;
        Ok(Self {
            client,
            sync,
            wanted: options.wait_replicas,
            timeout: options.wait_timeout.max(Duration::from_millis(1)),
            sent: AtomicU64::new(0),
            last: Mutex::new(None),
        })
    }

    /// The connection commits go through.
    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    /// The id of the commit connection now, if it is connected.
    pub(super) fn connection(&self) -> Option<i64> {
        let ids = self.client.connection_ids();
        match ids.len() {
            1 => ids.values().next().copied(),
            _ => None,
        }
    }

    /// Waits sent so far: a commit answered now is covered by any wait sent after.
    pub(super) fn ticket(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Answers `Ok` once the replicas have what the operation `landed`, or the error to
    /// answer instead of acknowledging it.
    pub(super) async fn confirm(&self, landed: Landed) -> Result<(), StoreError> {
        match landed {
            Landed::Nothing => Ok(()),
            Landed::Committed { connection, ticket } => self.wait_after(connection, ticket).await,
            Landed::Unchanged => {
                let connection = self.connection();
                let synced: Result<i64, _> = self
                    .sync
                    .evalsha_with_reload(&self.client, vec![keys::SYNC.to_owned()], ())
                    .await;
                synced.map_err(|e| {
                    StoreError::Io(format!(
                        "writing the mark the replicas must acknowledge: {e}; {NOT_ACKNOWLEDGED}"
                    ))
                })?;
                self.wait_after(connection, self.ticket()).await
            }
        }
    }

    /// Waits for a `WAIT` sent after `ticket` on the connection `connection`: the last one
    /// if it qualifies, else a new one.
    async fn wait_after(&self, connection: Option<i64>, ticket: u64) -> Result<(), StoreError> {
        let mut last = self.last.lock().await;
        let waited = match &*last {
            Some(w) if w.index > ticket && connection.is_some() && w.connection == connection => {
                w.clone()
            }
            _ => {
                let index = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
                let timeout_ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
                // Redis answers by the timeout; the command timeout is for a Redis that
                // answers nothing at all.
                let options = Options {
                    timeout: Some(self.timeout + COMMAND_TIMEOUT),
                    ..Options::default()
                };
                let acked = self
                    .client
                    .with_options(&options)
                    .wait::<i64>(i64::from(self.wanted), timeout_ms)
                    .await
                    .map_err(|e| e.to_string());
                let waited = Waited {
                    index,
                    connection: self.connection(),
                    acked,
                };
                *last = Some(waited.clone());
                waited
            }
        };
        drop(last);
        if connection.is_none() || waited.connection != connection {
            return Err(StoreError::Io(format!(
                "the connection to Redis was replaced while the write waited for its replicas, \
                 so whether they have it cannot be told; {NOT_ACKNOWLEDGED}"
            )));
        }
        match waited.acked {
            Ok(acked) if acked >= i64::from(self.wanted) => Ok(()),
            Ok(acked) => Err(StoreError::Io(format!(
                "the write reached Redis but only {acked} of {} replicas acknowledged it within \
                 {} ms; {NOT_ACKNOWLEDGED}",
                self.wanted,
                self.timeout.as_millis()
            ))),
            Err(e) => Err(StoreError::Io(format!(
                "waiting for {} replicas (WAIT): {e}; {NOT_ACKNOWLEDGED}",
                self.wanted
            ))),
        }
    }

    /// Closes the commit connection.
    pub(super) async fn quit(&self) -> Result<(), StoreError> {
        self.client
            .quit()
            .await
            .map_err(|e| redis_error("closing the Redis commit connection", e))
    }
}

/// What a refused write's message tells the user to do.
const NOT_ACKNOWLEDGED: &str = "the write is not acknowledged (it may be in the log): retry it \
     with the same producer or publish id and it is deduplicated";
