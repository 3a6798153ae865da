//! The Redis engine: streams in Redis 7 (or Valkey), shared by any number of nodes.
//!
//! - `keys`: key names, one hash tag per stream so a stream lives in one Cluster slot;
//! - `codec`: the byte layouts of stored values;
//! - `view`: the transaction a `mooring_core` operation runs on, collecting what it reads
//!   and writes;
//! - `fetch`: reading what a run needs, consistently per stream;
//! - `commit` and `commit.lua`: applying a run's writes atomically, if nothing it read changed,
//!   and announcing them to the other nodes;
//! - `notices`: following other nodes' commits, so live readers here hear of them;
//! - `replicas`: acknowledging writes only once replicas have them (`WAIT`), when asked to.
//!
//! The rules stay in `mooring_core`; this engine only stores. An operation runs in Rust over a
//! view of what it read, and its writes land in one script call that first checks that every
//! stream it read is still at the version it saw (optimistic concurrency); on a change, the
//! operation runs again on fresh reads. `docs/design.md` says why.

mod codec;
mod commit;
mod fetch;
mod fleet;
mod keys;
mod notices;
mod replicas;
mod view;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wait_tests;

pub use replicas::{RedisOptions, DEFAULT_WAIT_TIMEOUT};

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::Client;
use fred::interfaces::{KeysInterface, SetsInterface};
use fred::prelude::{ClientLike, Config, ReconnectPolicy};
use fred::types::scripts::Script;
use fred::types::Builder;
use mooring_core::access::AccessTracker;
use mooring_core::append::{AppendError, AppendOutcome, AppendRequest};
use mooring_core::clock::Clock;
use mooring_core::create::{CreateError, CreateOutcome, CreateRequest};
use mooring_core::fleet::Fleet;
use mooring_core::ops::{self, Now};
use mooring_core::publish::{self, SessionSnapshot};
use mooring_core::read::{HeadError, ReadBatch, ReadError};
use mooring_core::session::{
    message_key, PublishError, PublishGroup, PublishOutcome, PublishRules,
};
use mooring_core::store::{AuxTable, DeleteError, LogStore, NoticeFeed, StoreError};
use mooring_core::stream::StreamInfo;
use mooring_core::{Position, ReadFrom};
use tokio::sync::Mutex;

use commit::Verdict;
use fetch::Fetch;
use replicas::{Landed, Replicas};
use view::{Miss, Snapshot, Txn};

/// Attempts of one operation before it gives up on streams that keep changing under it.
const MAX_ATTEMPTS: usize = 64;
/// States a sweep reads per command.
const SWEEP_CHUNK: usize = 512;
/// Speculative runs of one attempt; each fetches at least one new read, so this bounds reads
/// of very large forks, not ordinary operations (which need two or three).
const MAX_RUNS: usize = 4096;
/// Writers of one node to the same stream take turns (striped locks), so they do not
/// invalidate each other's reads; only writers on other nodes can make an attempt retry.
const WRITE_STRIPES: usize = 64;
/// How long the first connection may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one command may wait for Redis, including waits for a reconnection.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Streams in Redis. A cheap handle: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    /// Where `client` connects, for the notice subscribers' own connections.
    config: Config,
    client: Client,
    script: Script,
    /// `read.lua`, which reads one stream at one instant.
    read: Script,
    access: AccessTracker,
    clock: Arc<dyn Clock>,
    /// This handle's part of every commit token; the counter makes each token unique.
    instance: u64,
    commits: AtomicU64,
    stripes: Vec<Mutex<()>>,
    closed: AtomicBool,
    fleet: Arc<fleet::RedisFleet>,
    /// With `--redis-wait-replicas`: the commits' own connection and their waits.
    replicas: Option<Replicas>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.url)
            .field("commits", &self.inner.commits.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

pub(super) fn redis_error(what: &str, e: fred::error::Error) -> StoreError {
    StoreError::Io(format!("{what}: {e}"))
}

/// The URL with any user and password masked, for logs.
fn without_credentials(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &url[at..]),
        _ => url.to_owned(),
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://host:port`, `rediss://`, or a Cluster URL as
    /// `redis-cluster://host:port`) and loads the commit script; writes are acknowledged once
    /// the primary has them.
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::connect_with(url, clock, RedisOptions::default()).await
    }

    /// [`Self::connect`] with `options`. Waiting for replicas is refused on a Cluster URL:
    /// `WAIT` would have to follow each key to its shard.
    pub async fn connect_with(
        url: &str,
        clock: Arc<dyn Clock>,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let config = Config::from_url(url).map_err(|e| {
            let url = without_credentials(url);
            StoreError::Io(format!("reading the Redis URL {url:?}: {e}"))
        })?;
        if options.wait_replicas > 0 && config.server.is_clustered() {
            return Err(StoreError::Io(format!(
                "waiting for replicas is not supported on Redis Cluster ({}): WAIT would have \
                 to go to each key's shard; use one primary with replicas, or wait for none",
                without_credentials(url)
            )));
        }
        let client = connected(&config, url).await?;
        let script = Script::from_lua(commit::SCRIPT);
        script.load(&client).await.map_err(|e| {
            redis_error("loading the commit script (Redis 7 or newer is needed)", e)
        })?;
        let read = Script::from_lua(fetch::READ_SCRIPT);
        read.load(&client)
            .await
            .map_err(|e| redis_error("loading the read script", e))?;
        // Random per process: tokens of two nodes never collide.
        let instance = RandomState::new().hash_one(url);
        let node = writer(instance);
        let fleet = fleet::RedisFleet::new(client.clone(), node).await?;
        let replicas = match options.wait_replicas {
            0 => None,
            _ => Some(Replicas::new(connected(&config, url).await?, options).await?),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                url: without_credentials(url),
                config,
                client,
                script,
                read,
                access: AccessTracker::new(clock.now_ms()),
                clock,
                instance,
                fleet: Arc::new(fleet),
                commits: AtomicU64::new(0),
                stripes: (0..WRITE_STRIPES).map(|_| Mutex::new(())).collect(),
                closed: AtomicBool::new(false),
                replicas,
            }),
        })
    }

    /// Commits applied since this handle connected.
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    fn stripe(&self, name: &str) -> &Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut hasher);
        let at = usize::try_from(hasher.finish() % WRITE_STRIPES as u64).unwrap_or(0);
        &self.inner.stripes[at]
    }

    fn token(&self) -> String {
        let n = self.inner.commits.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n}", self.writer())
    }

    /// This handle's part of its commit tokens, which the notices of its commits carry.
    /// The streams of `names` a sweep has work on, from their states read in one command; the
    /// others cost nothing more. (Only a single primary has swept streams: a Cluster refuses
    /// them, so the command never spans slots.)
    async fn sweep_due<'n>(&self, names: &'n [String]) -> Result<Vec<&'n String>, StoreError> {
        let keys: Vec<String> = names.iter().map(|n| keys::state(n)).collect();
        let states: Vec<Option<bytes::Bytes>> = self
            .inner
            .client
            .mget(keys)
            .await
            .map_err(|e| redis_error("reading the swept streams' states", e))?;
        let now = Now {
            ms: self.inner.clock.now_ms(),
            access: &self.inner.access,
        };
        let mut due = Vec::new();
        for (name, bytes) in names.iter().zip(states) {
            let Some(bytes) = bytes else { continue };
            match codec::decode_state(&bytes) {
                Ok(state) if ops::sweep_due(name, &state, now) => due.push(name),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(stream = %name, error = %e, "a swept stream's state is unreadable; skipped")
                }
            }
        }
        Ok(due)
    }

    fn writer(&self) -> String {
        writer(self.inner.instance)
    }

    /// Runs `op` until a run needs nothing more than what was read; then, if it wrote,
    /// commits its writes. The operation's stream and `prefetch` are read before the first
    /// run, since it will ask for them: one round trip fewer.
    ///
    /// With replicas to wait for, answers only once they have what the operation answers
    /// from; the stream's turn is over by then, so the next writer need not wait for them.
    async fn run<R>(
        &self,
        plan: Plan<'_>,
        op: impl FnMut(&mut Txn<'_>, Now<'_>) -> R,
    ) -> Result<R, StoreError> {
        let (out, landed) = self.attempt(plan, op).await?;
        if let Some(replicas) = &self.inner.replicas {
            replicas.confirm(landed).await?;
        }
        Ok(out)
    }

    /// [`Self::run`] up to its answer, and what it left for the replicas to confirm.
    async fn attempt<R>(
        &self,
        plan: Plan<'_>,
        mut op: impl FnMut(&mut Txn<'_>, Now<'_>) -> R,
    ) -> Result<(R, Landed), StoreError> {
        if plan.writes && self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::ShuttingDown);
        }
        let _turn = match (plan.writes, plan.stream) {
            (true, Some(name)) => Some(self.stripe(name).lock().await),
            _ => None,
        };
        'attempt: for _ in 0..MAX_ATTEMPTS {
            let mut snapshot = Snapshot::default();
            let mut misses: Vec<Miss> = plan
                .stream
                .map(|n| Miss::State(n.to_owned()))
                .into_iter()
                .chain(plan.prefetch.iter().cloned())
                .collect();
            let now_ms = self.inner.clock.now_ms();
            let now = Now {
                ms: now_ms,
                access: &self.inner.access,
            };
            for _ in 0..MAX_RUNS {
                if !misses.is_empty() {
                    let fetched =
                        fetch::fetch(&self.inner.client, &self.inner.read, &mut snapshot, misses)
                            .await?;
                    if fetched == Fetch::Changed {
                        continue 'attempt;
                    }
                }
                let mut txn = Txn::new(&snapshot);
                let out = op(&mut txn, now);
                if txn.has_misses() {
                    misses = txn.into_misses();
                    continue;
                }
                // A stream written but never read has no version to check: read it first.
                let unread: Vec<Miss> = txn
                    .writes
                    .iter()
                    .map(|w| w.stream())
                    .filter(|n| snapshot.streams.get(*n).is_none_or(|f| f.version.is_none()))
                    .map(|n| Miss::State(n.to_owned()))
                    .collect();
                if !unread.is_empty() {
                    misses = unread;
                    continue;
                }
                if txn.writes.is_empty() {
                    // Every stream was read at one version, so the answer is of one instant.
                    // A write that wrote nothing may answer from a write not yet replicated
                    // (a retry found deduplicated); a sweep answers nobody.
                    let landed = if plan.writes && plan.stream.is_some() {
                        Landed::Unchanged
                    } else {
                        Landed::Nothing
                    };
                    return Ok((out, landed));
                }
                let call = commit::plan(&txn, &snapshot, &self.token())?;
                if self.inner.config.server.is_clustered() {
                    single_slot(&call.keys)?;
                }
                let replicas = self.inner.replicas.as_ref();
                let client = replicas.map_or(&self.inner.client, |r| r.client());
                let connection = replicas.and_then(|r| r.connection());
                let reply: i64 = self
                    .inner
                    .script
                    .evalsha_with_reload(client, call.keys, call.args)
                    .await
                    .map_err(|e| redis_error("committing", e))?;
                match Verdict::from_reply(reply)? {
                    Verdict::Applied => {
                        let ticket = replicas.map_or(0, |r| r.ticket());
                        return Ok((out, Landed::Committed { connection, ticket }));
                    }
                    // Not through this connection: its WAIT would not cover the write.
                    Verdict::AppliedBefore => return Ok((out, Landed::Unchanged)),
                    Verdict::Changed => {
                        tokio::task::yield_now().await;
                        continue 'attempt;
                    }
                }
            }
            return Err(StoreError::Io(format!(
                "an operation needed more than {MAX_RUNS} reads"
            )));
        }
        Err(StoreError::Io(format!(
            "streams kept changing during {MAX_ATTEMPTS} attempts of one operation"
        )))
    }

    /// [`Self::run`] for operations that answer `Result<T, E>`.
    async fn op<T, E: From<StoreError>>(
        &self,
        plan: Plan<'_>,
        op: impl FnMut(&mut Txn<'_>, Now<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        match self.run(plan, op).await {
            Ok(answer) => answer,
            Err(e) => Err(e.into()),
        }
    }
}

/// Refuses a commit whose keys live in several slots of a Redis Cluster (one script can only
/// touch one slot), before sending it: the cluster would refuse it, every time, and a storage
/// error would tell the client to retry.
fn single_slot(keys: &[String]) -> Result<(), StoreError> {
    let mut slots = keys.iter().map(|k| fred::util::redis_keyslot(k.as_bytes()));
    let first = slots.next();
    if slots.all(|s| Some(s) == first) {
        return Ok(());
    }
    Err(StoreError::Unsupported(
        "on Redis Cluster, forks, streams with an expiry (Stream-TTL, Stream-Expires-At) and \
         deleting a fork's source need keys of several slots in one commit; use a single Redis \
         primary for them (docs/deploy.md)"
            .to_owned(),
    ))
}

/// A store handle's part of its commit tokens, and its node's id in presence.
fn writer(instance: u64) -> String {
    format!("{instance:016x}")
}

/// A client connected to the Redis of `config` (`url` names it in errors).
async fn connected(config: &Config, url: &str) -> Result<Client, StoreError> {
    let client = builder(config.clone())
        .build()
        .map_err(|e| redis_error("configuring the Redis client", e))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, client.init()).await {
        Ok(Ok(_task)) => Ok(client),
        Ok(Err(e)) => {
            let url = without_credentials(url);
            Err(redis_error(&format!("connecting to {url}"), e))
        }
        Err(_) => Err(StoreError::Io(format!(
            "connecting to {}: no answer within {CONNECT_TIMEOUT:?}",
            without_credentials(url)
        ))),
    }
}

/// How every connection of the engine is set up.
fn builder(config: Config) -> Builder {
    let mut builder = Builder::from_config(config);
    // Reconnect forever, backing off to 2 s: Redis restarting must not end the node.
    builder.set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2));
    // A Redis that stops answering fails the operation (never acknowledging it) instead of
    // holding the request forever.
    builder.with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT);
    builder.with_connection_config(|c| {
        c.connection_timeout = CONNECT_TIMEOUT;
        c.tcp.nodelay = Some(true);
    });
    builder
}

/// What an operation is known to read before it runs.
#[derive(Debug)]
struct Plan<'a> {
    /// The stream the operation is about; writers of one node take turns on it.
    stream: Option<&'a str>,
    writes: bool,
    prefetch: Vec<Miss>,
}

impl<'a> Plan<'a> {
    fn read(stream: &'a str) -> Self {
        Self {
            stream: Some(stream),
            writes: false,
            prefetch: Vec::new(),
        }
    }

    fn write(stream: &'a str) -> Self {
        Self {
            writes: true,
            ..Self::read(stream)
        }
    }
}

/// The side-table entries a publish will look up: its ids, and the messages its events name.
fn publish_reads(name: &str, groups: &[PublishGroup]) -> Vec<Miss> {
    let mut reads = Vec::new();
    for event in groups.iter().flat_map(|g| &g.events) {
        if let Some(id) = &event.id {
            let key = id.as_bytes().to_vec();
            reads.push(Miss::Aux(name.to_owned(), AuxTable::PublishIds, key));
        }
        if let Some(reference) = event.reference {
            let key = message_key(reference).to_vec();
            reads.push(Miss::Aux(name.to_owned(), AuxTable::Messages, key));
        }
    }
    reads
}

#[async_trait]
impl LogStore for RedisStore {
    async fn create(&self, name: &str, req: CreateRequest) -> Result<CreateOutcome, CreateError> {
        self.op(Plan::write(name), |t, now| ops::create(t, name, &req, now))
            .await
    }

    async fn append(&self, name: &str, req: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let mut plan = Plan::write(name);
        if let Some(claim) = &req.producer {
            plan.prefetch
                .push(Miss::Producer(name.to_owned(), claim.id.clone()));
        }
        self.op(plan, |t, now| ops::append(t, name, &req, now))
            .await
    }

    async fn read(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadBatch, ReadError> {
        self.op(Plan::read(name), |t, now| {
            ops::read(t, name, from, max_bytes, now)
        })
        .await
    }

    async fn head(&self, name: &str) -> Result<StreamInfo, HeadError> {
        self.op(Plan::read(name), |t, now| ops::head(t, name, now))
            .await
    }

    async fn renew_life(&self, name: &str, epoch: u64) -> Result<Position, HeadError> {
        self.op(Plan::write(name), |t, now| {
            ops::renew_life(t, name, epoch, now)
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<(), DeleteError> {
        self.op(Plan::write(name), |t, now| ops::delete(t, name, now))
            .await
    }

    async fn publish(
        &self,
        name: &str,
        groups: Vec<PublishGroup>,
        rules: PublishRules,
    ) -> Result<Vec<Result<PublishOutcome, PublishError>>, StoreError> {
        let mut plan = Plan::write(name);
        plan.prefetch = publish_reads(name, &groups);
        self.op(plan, |t, now| {
            publish::publish(t, name, &groups, now, rules)
        })
        .await
    }

    async fn snapshot(&self, name: &str) -> Result<Option<SessionSnapshot>, ReadError> {
        let mut plan = Plan::read(name);
        // With the state in one round trip, so the messages match its tail exactly.
        plan.prefetch
            .push(Miss::AuxAll(name.to_owned(), AuxTable::Messages));
        self.op(plan, |t, now| publish::snapshot(t, name, now))
            .await
    }

    async fn sweep_expired(&self) -> Result<usize, StoreError> {
        // Stream by stream: one operation over every swept stream would start again whenever
        // any of them is written, and a busy session with a retention always is.
        let names: Vec<String> = self
            .inner
            .client
            .smembers(keys::EXPIRING)
            .await
            .map_err(|e| redis_error("reading the expiring index", e))?;
        let mut changed = 0;
        for chunk in names.chunks(SWEEP_CHUNK) {
            for name in self.sweep_due(chunk).await? {
                // One stream that cannot be swept now (busy past the attempts, unreadable)
                // must not hold up the others.
                match self
                    .op(Plan::write(name), |t, now| ops::sweep_stream(t, name, now))
                    .await
                {
                    Ok(swept) => changed += usize::from(swept),
                    Err(e @ StoreError::ShuttingDown) => return Err(e),
                    Err(e) => {
                        tracing::warn!(stream = %name, error = %e, "sweeping a stream failed; it is tried again at the next sweep")
                    }
                }
            }
        }
        Ok(changed)
    }

    async fn notices(&self) -> Result<Option<Box<dyn NoticeFeed>>, StoreError> {
        // A connection of its own: a subscribed connection serves nothing else.
        let subscriber = builder(self.inner.config.clone())
            .with_performance_config(|p| p.broadcast_channel_capacity = notices::MESSAGE_BUFFER)
            .build_subscriber_client()
            .map_err(|e| redis_error("configuring the notice subscriber", e))?;
        let feed = notices::follow(subscriber, self.writer()).await?;
        Ok(Some(Box::new(feed)))
    }

    fn fleet(&self) -> Option<Arc<dyn Fleet>> {
        Some(self.inner.fleet.clone())
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.closed.store(true, Ordering::Release);
        // Writes in flight hold a stripe; taking each one waits for them to finish.
        for stripe in &self.inner.stripes {
            drop(stripe.lock().await);
        }
        let commits = match &self.inner.replicas {
            Some(replicas) => replicas.quit().await,
            None => Ok(()),
        };
        self.inner
            .client
            .quit()
            .await
            .map_err(|e| redis_error("closing the Redis connection", e))?;
        commits
    }
}
