//! The embedded engine: streams in one redb file, written through a group-commit writer.
//!
//! - `tables`: the redb tables and the byte layouts of their values;
//! - `txn`: `LogView` and `LogTxn` over redb transactions;
//! - `writer`: the thread that batches writes and makes each batch durable with one sync;
//! - `journal` and `wal`: the write-ahead log that sync goes to;
//! - `overlay` and `layered`: the changes held in memory between checkpoints, and the view of
//!   the file through them that every operation runs on.
//!
//! Reads never wait for the writer's sync: they see the file through the changes already
//! durable in the log.

mod blocks;
mod checkpoint;
mod journal;
mod layered;
mod overlay;
mod tables;
mod txn;
mod upgrade;
mod wal;
mod writer;

#[cfg(test)]
mod block_tests;
#[cfg(test)]
mod tests;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use mooring_core::access::AccessTracker;
use mooring_core::append::{AppendError, AppendOutcome, AppendRequest};
use mooring_core::clock::Clock;
use mooring_core::create::{CreateError, CreateOutcome, CreateRequest};
use mooring_core::ops::{self, Now};
use mooring_core::publish::{self, SessionSnapshot};
use mooring_core::read::{HeadError, ReadBatch, ReadError};
use mooring_core::session::{PublishError, PublishGroup, PublishOutcome, PublishRules};
use mooring_core::store::{DeleteError, LogStore, LogView, NoticeFeed, StoreError};
use mooring_core::stream::StreamInfo;
use mooring_core::{Position, ReadFrom};
use redb::backends::FileBackend;
use redb::{Database, DatabaseError, ReadableTable, StorageBackend};
use tokio::sync::mpsc;

use checkpoint::Checkpointer;
use journal::Journal;
use layered::Layered;
use overlay::Layers;
use tables::{
    APPLIED_LSN_KEY, AUX, EXPIRING, FORMAT_VERSION, FORMAT_VERSION_KEY, META, PRODUCERS,
    RECORD_BLOCKS, STATES,
};
use txn::{redb_error, ReadTables, WriteTables};
use wal::{LogDisk, RealDisk, Recovered, Wal};
use writer::{read_layers, BatchLimits, Job, SharedLayers, WriteError, Writer, WriterState};

pub use wal::WAL_DIR;

/// Reads of pages up to this size run inline on the async worker; larger ones move to the
/// blocking pool.
///
/// Measured (`cargo test --release -p mooring-engine read_path_timing -- --ignored
/// --nocapture`, warm cache, 4 workers): a 10-record page costs about 5.5µs inline against
/// 22µs through `spawn_blocking` (3.4µs against 8.4µs with 16 concurrent readers), and even a
/// 1 MiB page costs about 56µs inline against 90-140µs offloaded. The hand-off to the blocking
/// pool costs more than a cached redb read, so reads run inline; the cap bounds how long one
/// read can hold a worker (well under 100µs when cached), and bigger pages pay for the hand-off
/// so that a slow disk stalls a blocking thread instead of the runtime.
const INLINE_READ_MAX_BYTES: usize = 1 << 20;

/// The database file inside the data directory.
pub const DB_FILE: &str = "mooring.redb";

/// Tuning of the embedded engine.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Most writes committed together.
    pub max_batch_ops: usize,
    /// A batch stops taking writes once their bodies reach this many bytes, bounding the
    /// memory and the commit time of one transaction.
    pub max_batch_bytes: usize,
    /// Writes that may wait for the writer before callers wait to enqueue.
    pub queue_depth: usize,
    /// redb's page cache; `None` keeps redb's default.
    pub cache_bytes: Option<usize>,
    /// Size of each of the two write-ahead log segments; a checkpoint comes at the latest
    /// when one fills, so this bounds the log's disk space and what a restart replays.
    pub wal_segment_bytes: u64,
    /// A checkpoint (a durable commit of the database file) comes once the changes held in
    /// memory since the last one reach this many bytes: the bound on that memory.
    pub checkpoint_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            max_batch_ops: 1024,
            max_batch_bytes: 16 << 20,
            queue_depth: 4096,
            cache_bytes: None,
            wal_segment_bytes: 32 << 20,
            checkpoint_bytes: 8 << 20,
        }
    }
}

/// Streams in a redb file. A cheap handle: clones share the database and its writer.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Arc<Database>,
    access: Arc<AccessTracker>,
    clock: Arc<dyn Clock>,
    writer: Arc<WriterState>,
    /// Changes durable in the log but not yet in the file.
    layers: SharedLayers,
    /// `None` once shutting down.
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .field("commits", &self.inner.writer.commits())
            .field("poisoned", &self.inner.writer.poisoned())
            .finish_non_exhaustive()
    }
}

/// These locks only guard taking an `Option`, which cannot panic half-way.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl EmbeddedStore {
    /// Opens the store in `dir` (created if missing) with default options.
    pub fn open(dir: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Self::open_with(dir, clock, EmbeddedOptions::default())
    }

    /// Opens the store in `dir` (created if missing).
    pub fn open_with(
        dir: &Path,
        clock: Arc<dyn Clock>,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Io(format!("creating data directory {}: {e}", dir.display()))
        })?;
        let path = dir.join(DB_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Io(format!("opening {}: {e}", path.display())))?;
        let backend = FileBackend::new(file).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Io(format!(
                "{} is already open in another process or store",
                path.display()
            )),
            other => redb_error(&format!("locking {}", path.display()), other),
        })?;
        Self::on_backend(backend, path, clock, options, Box::new(RealDisk))
    }

    /// Opens the store on any redb storage backend, with its write-ahead log beside `path`
    /// written through `disk`.
    pub(crate) fn on_backend(
        backend: impl StorageBackend,
        path: PathBuf,
        clock: Arc<dyn Clock>,
        options: EmbeddedOptions,
        disk: Box<dyn LogDisk>,
    ) -> Result<Self, StoreError> {
        let mut builder = Database::builder();
        // redb 3 reads only the v3 file format; new files start in it so an upgrade of redb
        // needs no migration.
        builder.create_with_file_format_v3(true);
        if let Some(bytes) = options.cache_bytes {
            builder.set_cache_size(bytes);
        }
        let db = builder
            .create_with_backend(backend)
            .map_err(|e| redb_error(&format!("opening {}", path.display()), e))?;
        prepare(&db, &path)?;
        let wal_dir = path
            .parent()
            .map_or_else(|| PathBuf::from(WAL_DIR), |dir| dir.join(WAL_DIR));
        let wal = recover(&db, &wal_dir, options.wal_segment_bytes, disk)?;
        let db = Arc::new(db);
        let access = Arc::new(AccessTracker::new(clock.now_ms()));
        let state = Arc::new(WriterState::default());
        let layers: SharedLayers = Arc::new(RwLock::new(Layers::default()));
        let checkpointer = Checkpointer::spawn(db.clone(), layers.clone(), state.clone())
            .map_err(|e| StoreError::Io(format!("starting the checkpoint thread: {e}")))?;
        let (queue, jobs) = mpsc::channel(options.queue_depth.max(1));
        let writer = Writer {
            db: db.clone(),
            access: access.clone(),
            state: state.clone(),
            limits: BatchLimits {
                max_ops: options.max_batch_ops.max(1),
                max_bytes: options.max_batch_bytes,
                delta_bytes: options.checkpoint_bytes,
            },
            wal,
            layers: layers.clone(),
            checkpointer,
            journal: Journal::default(),
        };
        let thread = writer
            .spawn(jobs)
            .map_err(|e| StoreError::Io(format!("starting the writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                db,
                access,
                clock,
                writer: state,
                layers,
                queue: Mutex::new(Some(queue)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Write transactions committed since open: with group commit, usually far fewer than
    /// the writes acknowledged.
    pub fn commits(&self) -> u64 {
        self.inner.writer.commits()
    }

    /// Durable commits of the database file since open: each time a log segment filled, and
    /// at a clean shutdown.
    pub fn checkpoints(&self) -> u64 {
        self.inner.writer.checkpoints()
    }

    fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Queues a write for the writer and waits for its answer, which comes only after the
    /// write's batch is durable. A caller that stops waiting once the write is queued does not
    /// withdraw it, like a client that times out after sending.
    async fn write<T, E, F>(&self, weight: usize, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: WriteError,
        F: FnMut(&mut Layered<'_>, Now<'_>) -> Result<T, E> + Send + 'static,
    {
        if let Some(why) = self.inner.writer.poisoned() {
            return Err(StoreError::Poisoned(why.to_owned()).into());
        }
        let Some(queue) = lock(&self.inner.queue).clone() else {
            return Err(StoreError::ShuttingDown.into());
        };
        let (job, answer) = writer::job(self.now(), weight, work);
        let sent = queue.send(job).await;
        // Our sender must not keep the writer alive past a shutdown.
        drop(queue);
        if sent.is_err() {
            return Err(self.writer_gone().into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err(self.writer_gone().into()))
    }

    /// Why the writer no longer answers.
    fn writer_gone(&self) -> StoreError {
        if let Some(why) = self.inner.writer.poisoned() {
            return StoreError::Poisoned(why.to_owned());
        }
        if lock(&self.inner.queue).is_none() {
            return StoreError::ShuttingDown;
        }
        let why = self
            .inner
            .writer
            .poison("the writer thread stopped unexpectedly".into());
        StoreError::Poisoned(why)
    }

    /// Runs `view` on what is durable now: the file through the changes since the last
    /// checkpoint. The layers are taken before the file's snapshot, and a checkpoint drops
    /// its changes from them only after its commit, so the two always agree.
    fn read_view<T, E: From<StoreError>>(
        &self,
        now_ms: u64,
        view: impl FnOnce(&mut Layered<'_>, Now<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mem = read_layers(&self.inner.layers);
        let txn = self
            .inner
            .db
            .begin_read()
            .map_err(|e| redb_error("starting a read transaction", e))?;
        let mut tables = Layered::reader(ReadTables::open(&txn)?, &mem);
        let now = Now {
            ms: now_ms,
            access: &self.inner.access,
        };
        view(&mut tables, now)
    }
}

/// Opens the write-ahead log and replays into the database the batches only it holds, in one
/// durable commit, so the log can start again from its beginning.
fn recover(
    db: &Database,
    dir: &Path,
    segment_bytes: u64,
    disk: Box<dyn LogDisk>,
) -> Result<Wal, StoreError> {
    let applied = {
        let txn = db
            .begin_read()
            .map_err(|e| redb_error("reading the log position", e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| redb_error("opening the meta table", e))?;
        let found = meta
            .get(APPLIED_LSN_KEY)
            .map_err(|e| redb_error("reading the log position", e))?;
        found.map_or(0, |v| v.value())
    };
    let (mut wal, records) = Wal::open(dir, segment_bytes, applied, disk)?;
    let last = records.last().map_or(applied, |r| r.lsn);
    if !records.is_empty() {
        replay(db, &records, last)?;
        tracing::info!(
            batches = records.len(),
            upto = last,
            "replayed the write-ahead log"
        );
    }
    wal.restart(last);
    Ok(wal)
}

/// Applies the recovered batches and records `last` as applied, durably.
fn replay(db: &Database, records: &[Recovered], last: u64) -> Result<(), StoreError> {
    let what = "replaying the write-ahead log";
    let txn = db.begin_write().map_err(|e| redb_error(what, e))?;
    {
        let mut tables = WriteTables::open(&txn)?;
        for record in records {
            for change in journal::changes(&record.payload) {
                let change = change.map_err(|e| {
                    StoreError::Corrupt(format!(
                        "batch {} of the write-ahead log cannot be read: {e}",
                        record.lsn
                    ))
                })?;
                tables.write(change)?;
            }
        }
        if let Some(why) = tables.take_failure() {
            return Err(StoreError::Io(format!("{what}: {why}")));
        }
        let mut meta = txn.open_table(META).map_err(|e| redb_error(what, e))?;
        meta.insert(APPLIED_LSN_KEY, last)
            .map_err(|e| redb_error(what, e))?;
    }
    txn.commit().map_err(|e| redb_error(what, e))
}

/// Checks the file's format version (recording it in a new file) and creates the tables.
fn prepare(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db
        .begin_write()
        .map_err(|e| redb_error("starting the opening transaction", e))?;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| redb_error("opening the meta table", e))?;
        let found = meta
            .get(FORMAT_VERSION_KEY)
            .map_err(|e| redb_error("reading the format version", e))?
            .map(|v| v.value());
        match found {
            Some(FORMAT_VERSION) => {}
            // Format 1 had no log; from now on one may hold batches the file does not.
            // Formats 1 and 2 kept one entry per record; their records become blocks.
            Some(1 | 2) | None => {
                meta.insert(FORMAT_VERSION_KEY, FORMAT_VERSION)
                    .map_err(|e| redb_error("writing the format version", e))?;
                if found.is_some() {
                    let moved = upgrade::convert_legacy_records(&txn)?;
                    tracing::info!(records = moved, path = %path.display(), "converted the records to storage format {FORMAT_VERSION}");
                }
            }
            Some(newer) if newer > FORMAT_VERSION => {
                return Err(StoreError::Corrupt(format!(
                    "{} uses storage format {newer}, but this build of Mooring reads formats up to {FORMAT_VERSION}; \
                     run a newer Mooring on it",
                    path.display()
                )));
            }
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "{} names unknown storage format {other}",
                    path.display()
                )));
            }
        }
        let create = "creating the tables";
        txn.open_table(STATES).map_err(|e| redb_error(create, e))?;
        txn.open_table(RECORD_BLOCKS)
            .map_err(|e| redb_error(create, e))?;
        txn.open_table(PRODUCERS)
            .map_err(|e| redb_error(create, e))?;
        txn.open_table(EXPIRING)
            .map_err(|e| redb_error(create, e))?;
    }
    // Added after format 1 shipped; creating it on open keeps older files readable.
    txn.open_table(AUX)
        .map_err(|e| redb_error("creating the side tables", e))?;
    txn.commit()
        .map_err(|e| redb_error("committing the opening transaction", e))
}

impl Drop for Inner {
    /// The last handle gone: finish queued writes and release the file, so the same
    /// directory can be opened again as soon as this returns.
    fn drop(&mut self) {
        drop(
            self.queue
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!(path = %self.path.display(), "the writer thread panicked");
            }
        }
    }
}

/// A write's share of the batch byte budget: roughly the bytes it will store.
fn weight<'a>(name: &str, items: impl IntoIterator<Item = &'a bytes::Bytes>) -> usize {
    name.len() + items.into_iter().map(bytes::Bytes::len).sum::<usize>()
}

#[async_trait]
impl LogStore for EmbeddedStore {
    async fn create(&self, name: &str, req: CreateRequest) -> Result<CreateOutcome, CreateError> {
        let weight = weight(name, &req.items);
        let name = name.to_owned();
        self.write(weight, move |t, now| ops::create(t, &name, &req, now))
            .await
    }

    async fn append(&self, name: &str, req: AppendRequest) -> Result<AppendOutcome, AppendError> {
        let weight = weight(name, req.records.iter().flatten());
        let name = name.to_owned();
        self.write(weight, move |t, now| ops::append(t, &name, &req, now))
            .await
    }

    async fn read(
        &self,
        name: &str,
        from: ReadFrom,
        max_bytes: usize,
    ) -> Result<ReadBatch, ReadError> {
        let now = self.now();
        if max_bytes <= INLINE_READ_MAX_BYTES {
            return self.read_view(now, |t, now| ops::read(t, name, from, max_bytes, now));
        }
        let store = self.clone();
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || {
            store.read_view(now, |t, now| ops::read(t, &name, from, max_bytes, now))
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(format!("a read task failed: {e}")).into()))
    }

    async fn head(&self, name: &str) -> Result<StreamInfo, HeadError> {
        // One state lookup: always cheaper inline than a hand-off (see INLINE_READ_MAX_BYTES).
        let now = self.now();
        self.read_view(now, |t, now| ops::head(t, name, now))
    }

    async fn renew_life(&self, name: &str, epoch: u64) -> Result<Position, HeadError> {
        let name = name.to_owned();
        self.write(name.len(), move |t, now| {
            ops::renew_life(t, &name, epoch, now)
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<(), DeleteError> {
        let name = name.to_owned();
        self.write(name.len(), move |t, now| ops::delete(t, &name, now))
            .await
    }

    async fn publish(
        &self,
        name: &str,
        groups: Vec<PublishGroup>,
        rules: PublishRules,
    ) -> Result<Vec<Result<PublishOutcome, PublishError>>, StoreError> {
        let weight = name.len()
            + groups
                .iter()
                .flat_map(|g| &g.events)
                // A cheap estimate: text dominates sessions; other values are small.
                .map(|e| e.data.as_str().map_or(64, str::len))
                .sum::<usize>();
        let name = name.to_owned();
        self.write(weight, move |t, now| {
            publish::publish(t, &name, &groups, now, rules)
        })
        .await
    }

    async fn snapshot(&self, name: &str) -> Result<Option<SessionSnapshot>, ReadError> {
        let now = self.now();
        self.read_view(now, |t, now| publish::snapshot(t, name, now))
    }

    async fn sweep_expired(&self) -> Result<usize, StoreError> {
        // The due streams are found by a reader, off the writer's path, and each is swept in a
        // batch of its own: sessions with a retention are all in the sweeper's index, and
        // reading every state inside one batch would hold every write back meanwhile. A
        // poisoned store says so even when nothing is due, as every write does.
        if let Some(why) = self.inner.writer.poisoned() {
            return Err(StoreError::Poisoned(why.to_owned()));
        }
        let due: Vec<String> = self.read_view(self.now(), |t, now| {
            let swept = t.expiring_streams()?.into_iter();
            Ok::<_, StoreError>(
                swept
                    .filter(|(name, state)| ops::sweep_due(name, state, now))
                    .map(|(name, _)| name)
                    .collect(),
            )
        })?;
        let mut changed = 0;
        for name in due {
            let swept = self
                .write(0, move |t, now| ops::sweep_stream(t, &name, now))
                .await?;
            changed += usize::from(swept);
        }
        Ok(changed)
    }

    async fn notices(&self) -> Result<Option<Box<dyn NoticeFeed>>, StoreError> {
        // One process holds the file's lock, so only its own writers move a stream.
        Ok(None)
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        // Closing the queue lets the writer finish what is queued, then stop.
        drop(lock(&self.inner.queue).take());
        let thread = lock(&self.inner.thread).take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                return Err(StoreError::Poisoned("the writer thread panicked".into()));
            }
        }
        Ok(())
    }
}
