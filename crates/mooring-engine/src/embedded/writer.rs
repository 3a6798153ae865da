//! The group-commit writer: one thread owns every write to the database.
//!
//! Writes arrive as [`Job`]s over a bounded channel. The writer takes one, drains whatever else
//! is already queued (up to a cap), runs them all against one view of the tables, appends the
//! batch's changes to the write-ahead log with one `fdatasync`, then lays them over what readers
//! see, and only then answers each job. Nothing is ever read that a crash could take back.
//! Under load many appends share one sync; alone, an append waits for nothing but its own.
//! Checkpoints write the changes gathered in memory into the database file (see `overlay` and
//! `wal`).
//!
//! If any redb call fails, nothing of the batch is acknowledged: every job answers
//! [`StoreError::Poisoned`], and so does every later write, because after a failed write or
//! fsync the engine cannot tell what reached the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use mooring_core::access::AccessTracker;
use mooring_core::append::AppendError;
use mooring_core::create::CreateError;
use mooring_core::ops::Now;
use mooring_core::read::HeadError;
use mooring_core::store::{DeleteError, StoreError};
use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{commit_deltas, Checkpointer, Frozen};
use super::journal::Journal;
use super::layered::Layered;
use super::overlay::{Delta, Layers};
use super::txn::{redb_error, ReadTables};
use super::wal::Wal;

/// A write waiting for the writer.
pub(super) type Job = Box<dyn WriteJob>;

/// One queued write: its work, and where its answer goes.
pub(super) trait WriteJob: Send {
    /// Bytes this job adds to a batch, for the batch byte budget.
    fn weight(&self) -> usize;

    /// Runs the work in `tables`, keeping its result. Returns `true` if the work failed on
    /// storage (not on the request's merits), so it may have written part of its changes.
    /// May run more than once: the writer replays a batch without a job that failed this way.
    fn run(&mut self, tables: &mut Layered<'_>, access: &AccessTracker) -> bool;

    /// Sends the kept result; called only after the batch committed.
    fn answer(self: Box<Self>);

    /// Sends `error` instead of any result.
    fn fail(self: Box<Self>, error: StoreError);
}

/// Errors of write operations that can tell a storage failure from a refusal.
pub(super) trait WriteError: From<StoreError> + Send + 'static {
    fn is_storage_failure(&self) -> bool;
}

impl WriteError for StoreError {
    fn is_storage_failure(&self) -> bool {
        true
    }
}

impl WriteError for CreateError {
    fn is_storage_failure(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

impl WriteError for AppendError {
    fn is_storage_failure(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

impl WriteError for HeadError {
    fn is_storage_failure(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

impl WriteError for DeleteError {
    fn is_storage_failure(&self) -> bool {
        matches!(self, Self::Store(_))
    }
}

struct Pending<T, E, F> {
    work: F,
    now_ms: u64,
    weight: usize,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

/// A job running `work` with the time `now_ms` (taken when the request arrived), and the
/// receiver of its answer.
pub(super) fn job<T, E, F>(
    now_ms: u64,
    weight: usize,
    work: F,
) -> (Job, oneshot::Receiver<Result<T, E>>)
where
    T: Send + 'static,
    E: WriteError,
    F: FnMut(&mut Layered<'_>, Now<'_>) -> Result<T, E> + Send + 'static,
{
    let (reply, answer) = oneshot::channel();
    let pending = Pending {
        work,
        now_ms,
        weight,
        result: None,
        reply,
    };
    (Box::new(pending), answer)
}

impl<T, E, F> WriteJob for Pending<T, E, F>
where
    T: Send + 'static,
    E: WriteError,
    F: FnMut(&mut Layered<'_>, Now<'_>) -> Result<T, E> + Send + 'static,
{
    fn weight(&self) -> usize {
        self.weight
    }

    fn run(&mut self, tables: &mut Layered<'_>, access: &AccessTracker) -> bool {
        let now = Now {
            ms: self.now_ms,
            access,
        };
        let result = (self.work)(tables, now);
        let failed = matches!(&result, Err(e) if e.is_storage_failure());
        self.result = Some(result);
        failed
    }

    fn answer(self: Box<Self>) {
        let result = self.result.unwrap_or_else(|| {
            Err(StoreError::Poisoned("internal: a write finished without running".into()).into())
        });
        // The caller may have gone (timed out); its write stands all the same.
        let _ = self.reply.send(result);
    }

    fn fail(self: Box<Self>, error: StoreError) {
        let _ = self.reply.send(Err(error.into()));
    }
}

/// What the writer shares with the store handles.
#[derive(Debug, Default)]
pub(super) struct WriterState {
    poisoned: OnceLock<String>,
    commits: AtomicU64,
    checkpoints: AtomicU64,
}

impl WriterState {
    /// Why writes are refused, once a write failed.
    pub(super) fn poisoned(&self) -> Option<&str> {
        self.poisoned.get().map(String::as_str)
    }

    /// Refuses writes from now on; the first reason given stays the reason.
    pub(super) fn poison(&self, why: String) -> String {
        self.poisoned.get_or_init(|| why).clone()
    }

    /// Counts a finished checkpoint.
    pub(super) fn checkpointed(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }

    /// Committed write batches since open.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Durable commits of the database file since open (checkpoints of the log).
    pub(super) fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }
}

/// Limits of one batch.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchLimits {
    pub(super) max_ops: usize,
    pub(super) max_bytes: usize,
    /// A checkpoint begins once the changes held in memory reach this many bytes.
    pub(super) delta_bytes: usize,
}

/// The changes held in memory, shared by the writer, the checkpoint thread and the readers.
pub(super) type SharedLayers = Arc<RwLock<Layers>>;

/// Nothing holding this lock can panic half-way through a change that matters: the writer
/// poisons itself on any failure, and readers only read.
pub(super) fn read_layers(layers: &RwLock<Layers>) -> RwLockReadGuard<'_, Layers> {
    layers.read().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn write_layers(layers: &RwLock<Layers>) -> RwLockWriteGuard<'_, Layers> {
    layers.write().unwrap_or_else(PoisonError::into_inner)
}

/// The writer thread's side.
pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) access: Arc<AccessTracker>,
    pub(super) state: Arc<WriterState>,
    pub(super) limits: BatchLimits,
    pub(super) wal: Wal,
    pub(super) layers: SharedLayers,
    pub(super) checkpointer: Checkpointer,
    /// The journal of the batch being run, kept between batches for its allocation.
    pub(super) journal: Journal,
}

/// A job of the current batch; `settled` once it failed on storage and was left out.
struct Slot {
    job: Job,
    settled: bool,
}

impl Writer {
    /// Starts the writer thread; it runs until every sender of `queue` is gone and the queue
    /// is empty, so closing the queue finishes the queued writes first.
    pub(super) fn spawn(self, queue: mpsc::Receiver<Job>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("mooring-writer".into())
            .spawn(move || self.run(queue))
    }

    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        while let Some(first) = queue.blocking_recv() {
            let batch = self.gather(first, &mut queue);
            if let Some(why) = self.state.poisoned() {
                let error = StoreError::Poisoned(why.to_owned());
                batch.into_iter().for_each(|s| s.job.fail(error.clone()));
                continue;
            }
            let mut batch = batch;
            match self.execute(&mut batch) {
                Ok(()) => batch.into_iter().for_each(|s| s.job.answer()),
                Err(why) => {
                    tracing::error!(error = %why, writes = batch.len(), "a write batch failed; refusing writes until restart");
                    let error = StoreError::Poisoned(self.state.poison(why));
                    batch.into_iter().for_each(|s| s.job.fail(error.clone()));
                }
            }
        }
        // A clean stop leaves the database file complete on its own: the log has nothing to
        // replay at the next open.
        if self.state.poisoned().is_none() {
            let last = self.wal.next_lsn() - 1;
            let closed = self
                .checkpointer
                .wait()
                .and_then(|()| self.checkpoint_now(None, last));
            if let Err(why) = closed {
                tracing::error!(error = %why, "the closing checkpoint failed; the write-ahead log will be replayed at the next open");
            }
        }
    }

    /// `first` and whatever else is already queued, within the batch limits.
    fn gather(&self, first: Job, queue: &mut mpsc::Receiver<Job>) -> Vec<Slot> {
        let mut bytes = first.weight();
        let mut batch = vec![Slot {
            job: first,
            settled: false,
        }];
        while batch.len() < self.limits.max_ops && bytes < self.limits.max_bytes {
            let Ok(job) = queue.try_recv() else { break };
            bytes = bytes.saturating_add(job.weight());
            batch.push(Slot {
                job,
                settled: false,
            });
        }
        batch
    }

    /// Runs the batch and makes it durable, then visible. `Err` carries why the engine must
    /// be poisoned.
    fn execute(&mut self, batch: &mut [Slot]) -> Result<(), String> {
        loop {
            let (pending, dirty, left_out) = self.run_batch(batch)?;
            if let Some(i) = left_out {
                // A damaged value or an unencodable record, with the storage itself healthy:
                // the job may have made part of its changes, so drop them all and run the rest
                // of the batch again without it. It answers the storage error it met.
                if let Some(slot) = batch.get_mut(i) {
                    slot.settled = true;
                }
                continue;
            }
            if !dirty {
                // Only refusals and duplicates: nothing to make durable, so no sync. What they
                // answered from is already durable.
                return Ok(());
            }
            self.commit(pending)?;
            self.state.commits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    }

    /// Runs the jobs not yet settled; returns their changes, whether they wrote anything, and
    /// the job that failed on storage, if one did (the jobs after it did not run).
    fn run_batch(&mut self, batch: &mut [Slot]) -> Result<(Delta, bool, Option<usize>), String> {
        // The layers first, then the file: a checkpoint drops its changes from the layers
        // only after its commit, so this order never misses them (see `read_view`).
        let layers = self.layers.clone();
        let mem = read_layers(&layers);
        let txn = self
            .db
            .begin_read()
            .map_err(|e| redb_error("starting a read of the database", e).to_string())?;
        let base = ReadTables::open(&txn).map_err(|e| e.to_string())?;
        let mut tables = Layered::batch(base, &mem, std::mem::take(&mut self.journal));
        let mut left_out = None;
        for (i, slot) in batch.iter_mut().enumerate().filter(|(_, s)| !s.settled) {
            if slot.job.run(&mut tables, &self.access) {
                left_out = Some(i);
                break;
            }
        }
        let (pending, journal, dirty) = tables.finish();
        self.journal = journal;
        Ok((pending, dirty, left_out))
    }

    /// Makes a batch's changes durable in the log, then visible. When the log's segment is
    /// full, a checkpoint begins (after the one under way, if any, ends) and the log moves on
    /// to its other segment; a batch too large for a whole segment goes to the file directly.
    fn commit(&mut self, pending: Delta) -> Result<(), String> {
        let len = self.journal.bytes().len();
        if !self.wal.fits(len) {
            self.checkpointer.wait()?;
            self.begin_checkpoint()?;
            if !self.wal.fits(len) {
                self.checkpointer.wait()?;
                let lsn = self.wal.next_lsn();
                return self.checkpoint_now(Some(pending), lsn);
            }
        }
        self.wal
            .append(self.journal.bytes())
            .map_err(|e| format!("writing the write-ahead log: {e}"))?;
        let held = {
            let mut mem = write_layers(&self.layers);
            mem.active.absorb(pending);
            mem.active.bytes()
        };
        if held >= self.limits.delta_bytes && !self.checkpointer.running()? {
            self.begin_checkpoint()?;
        }
        Ok(())
    }

    /// Freezes the changes gathered so far, hands them to the checkpoint thread, and moves
    /// the log to its other segment, whose records the last checkpoint covered. The caller
    /// made sure no checkpoint is under way.
    fn begin_checkpoint(&mut self) -> Result<(), String> {
        let lsn = self.wal.next_lsn() - 1;
        let delta = {
            let mut mem = write_layers(&self.layers);
            let delta = Arc::new(std::mem::take(&mut mem.active));
            mem.frozen = Some(delta.clone());
            delta
        };
        self.wal.checkpointed(lsn);
        if delta.is_empty() {
            write_layers(&self.layers).frozen = None;
            return Ok(());
        }
        self.checkpointer.start(Frozen { delta, lsn })
    }

    /// Writes the changes held in memory (and `extra`, a batch too large for the log) into
    /// the file on this thread, recording `lsn`; the caller made sure no checkpoint is under
    /// way.
    fn checkpoint_now(&mut self, extra: Option<Delta>, lsn: u64) -> Result<(), String> {
        let layers = self.layers.clone();
        let mem = read_layers(&layers);
        if mem.active.is_empty() && extra.is_none() {
            return Ok(());
        }
        let mut deltas = vec![&mem.active];
        deltas.extend(extra.as_ref());
        commit_deltas(&self.db, &deltas, lsn)?;
        drop(mem);
        write_layers(&self.layers).active.clear();
        self.wal.checkpointed(lsn);
        self.state.checkpointed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::tables::STATES;
    use crate::embedded::wal::RealDisk;
    use bytes::Bytes;
    use mooring_core::append::{AppendOutcome, AppendRequest};
    use mooring_core::create::{CreateOutcome, CreateRequest};
    use mooring_core::ops;
    use redb::backends::InMemoryBackend;

    /// A writer on an in-memory database, its log in `dir`.
    fn writer(dir: &std::path::Path) -> Writer {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .expect("database");
        crate::embedded::prepare(&db, std::path::Path::new("memory")).expect("prepared");
        let (wal, _) = Wal::open(dir, 1 << 20, 0, Box::new(RealDisk)).expect("log");
        let db = Arc::new(db);
        let layers = SharedLayers::default();
        let state = Arc::<WriterState>::default();
        Writer {
            db: db.clone(),
            access: Arc::new(AccessTracker::new(0)),
            state: state.clone(),
            limits: BatchLimits {
                max_ops: 16,
                max_bytes: 1 << 20,
                delta_bytes: 1 << 20,
            },
            wal,
            layers: layers.clone(),
            checkpointer: Checkpointer::spawn(db.clone(), layers, state.clone())
                .expect("checkpoint thread"),
            journal: Journal::default(),
        }
    }

    fn create(name: &'static str) -> (Job, oneshot::Receiver<Result<CreateOutcome, CreateError>>) {
        let req = CreateRequest {
            content_type: Some("text/plain".into()),
            ..CreateRequest::default()
        };
        job(0, 0, move |t, now| ops::create(t, name, &req, now))
    }

    fn append(name: &'static str) -> (Job, oneshot::Receiver<Result<AppendOutcome, AppendError>>) {
        let req = AppendRequest {
            content_type: Some("text/plain".into()),
            records: vec![vec![Bytes::from_static(b"x")]],
            ..AppendRequest::default()
        };
        job(0, 0, move |t, now| ops::append(t, name, &req, now))
    }

    fn slots(jobs: impl IntoIterator<Item = Job>) -> Vec<Slot> {
        jobs.into_iter()
            .map(|job| Slot {
                job,
                settled: false,
            })
            .collect()
    }

    #[test]
    fn a_batch_commits_once_and_answers_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = writer(dir.path());
        let (c, mut created) = create("s");
        let (a1, mut first) = append("s");
        let (a2, mut second) = append("s");
        let (missing, mut refused) = append("nothing");
        let mut batch = slots([c, a1, a2, missing]);
        writer.execute(&mut batch).expect("commits");
        assert!(
            first.try_recv().is_err(),
            "no answer before the writer sends it"
        );
        batch.into_iter().for_each(|s| s.job.answer());
        assert_eq!(writer.state.commits(), 1);
        assert!(matches!(
            created.try_recv(),
            Ok(Ok(CreateOutcome::Created(_)))
        ));
        assert_eq!(
            first.try_recv().map(|r| r.map(|o| o.next.serial)),
            Ok(Ok(1))
        );
        assert_eq!(
            second.try_recv().map(|r| r.map(|o| o.next.serial)),
            Ok(Ok(2))
        );
        assert_eq!(refused.try_recv(), Ok(Err(AppendError::NotFound)));
    }

    #[test]
    fn a_job_failing_on_storage_is_left_out_and_the_rest_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = writer(dir.path());
        {
            let txn = writer.db.begin_write().expect("txn");
            txn.open_table(STATES)
                .expect("table")
                .insert("damaged", [9u8, 9].as_slice())
                .expect("insert");
            txn.commit().expect("commit");
        }
        let (c, mut created) = create("s");
        let (bad, mut damaged) = append("damaged");
        let (good, mut appended) = append("s");
        let mut batch = slots([c, bad, good]);
        writer
            .execute(&mut batch)
            .expect("commits without the damaged job");
        batch.into_iter().for_each(|s| s.job.answer());
        assert!(matches!(
            created.try_recv(),
            Ok(Ok(CreateOutcome::Created(_)))
        ));
        assert!(matches!(
            damaged.try_recv(),
            Ok(Err(AppendError::Store(StoreError::Corrupt(_))))
        ));
        assert_eq!(
            appended.try_recv().map(|r| r.map(|o| o.next.serial)),
            Ok(Ok(1))
        );
        assert_eq!(writer.state.commits(), 1);
        assert_eq!(
            writer.state.poisoned(),
            None,
            "a damaged value is not a failed write"
        );
    }

    #[test]
    fn a_batch_of_refusals_needs_no_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = writer(dir.path());
        let (a, mut refused) = append("nothing");
        let mut batch = slots([a]);
        writer.execute(&mut batch).expect("nothing to commit");
        batch.into_iter().for_each(|s| s.job.answer());
        assert_eq!(refused.try_recv(), Ok(Err(AppendError::NotFound)));
        assert_eq!(writer.state.commits(), 0);
    }
}
