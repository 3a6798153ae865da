//! The group-commit writer: one thread owns every write to the database.
//!
//! Writes arrive as [`Job`]s over a bounded channel. The writer takes one, drains whatever else
//! is already queued (up to a cap), runs them all in one redb write transaction, commits it with
//! one fsync, and only then answers each job. Under load many appends share one fsync; alone,
//! an append waits for nothing but its own.
//!
//! If any redb call fails, nothing of the batch is acknowledged: every job answers
//! [`StoreError::Poisoned`], and so does every later write, because after a failed write or
//! fsync the engine cannot tell what reached the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use mooring_core::access::AccessTracker;
use mooring_core::append::AppendError;
use mooring_core::create::CreateError;
use mooring_core::ops::Now;
use mooring_core::store::{DeleteError, StoreError};
use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use super::txn::{redb_error, WriteTables};

/// A write waiting for the writer.
pub(super) type Job = Box<dyn WriteJob>;

/// One queued write: its work, and where its answer goes.
pub(super) trait WriteJob: Send {
    /// Bytes this job adds to a batch, for the batch byte budget.
    fn weight(&self) -> usize;

    /// Runs the work in `tables`, keeping its result. Returns `true` if the work failed on
    /// storage (not on the request's merits), so it may have written part of its changes.
    /// May run more than once: the writer replays a batch without a job that failed this way.
    fn run(&mut self, tables: &mut WriteTables<'_>, access: &AccessTracker) -> bool;

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
    F: FnMut(&mut WriteTables<'_>, Now<'_>) -> Result<T, E> + Send + 'static,
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
    F: FnMut(&mut WriteTables<'_>, Now<'_>) -> Result<T, E> + Send + 'static,
{
    fn weight(&self) -> usize {
        self.weight
    }

    fn run(&mut self, tables: &mut WriteTables<'_>, access: &AccessTracker) -> bool {
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

    /// Committed write transactions since open.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

/// Limits of one batch.
#[derive(Clone, Copy, Debug)]
pub(super) struct BatchLimits {
    pub(super) max_ops: usize,
    pub(super) max_bytes: usize,
}

/// The writer thread's side.
pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) access: Arc<AccessTracker>,
    pub(super) state: Arc<WriterState>,
    pub(super) limits: BatchLimits,
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

    fn run(self, mut queue: mpsc::Receiver<Job>) {
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

    /// Runs the batch in one transaction and commits it durably. `Err` carries why the batch
    /// must be poisoned.
    fn execute(&self, batch: &mut [Slot]) -> Result<(), String> {
        loop {
            let mut txn = self
                .db
                .begin_write()
                .map_err(|e| redb_error("starting a write transaction", e).to_string())?;
            // The default, made explicit: the commit returns only after its fsync.
            txn.set_durability(Durability::Immediate);
            let mut tables = WriteTables::open(&txn).map_err(|e| e.to_string())?;
            let mut left_out = None;
            for (i, slot) in batch.iter_mut().enumerate().filter(|(_, s)| !s.settled) {
                let storage_failed = slot.job.run(&mut tables, &self.access);
                if let Some(why) = tables.take_failure() {
                    // Dropping the transaction aborts it; nothing of the batch is kept.
                    return Err(why);
                }
                if storage_failed {
                    left_out = Some(i);
                    break;
                }
            }
            let dirty = tables.is_dirty();
            drop(tables);
            if let Some(i) = left_out {
                // A damaged value or an unencodable record, with redb itself healthy: the job
                // may have written part of its changes, so drop them all and replay the rest
                // of the batch without it. It answers the storage error it met.
                if let Some(slot) = batch.get_mut(i) {
                    slot.settled = true;
                }
                txn.abort()
                    .map_err(|e| redb_error("aborting a write transaction", e).to_string())?;
                continue;
            }
            if !dirty {
                // Only refusals and duplicates: nothing to make durable, so no fsync. What they
                // answer from was committed durably by an earlier batch.
                return txn
                    .abort()
                    .map_err(|e| redb_error("aborting a write transaction", e).to_string());
            }
            txn.commit()
                .map_err(|e| redb_error("committing a write batch", e).to_string())?;
            self.state.commits.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::tables::STATES;
    use bytes::Bytes;
    use mooring_core::append::{AppendOutcome, AppendRequest};
    use mooring_core::create::{CreateOutcome, CreateRequest};
    use mooring_core::ops;
    use redb::backends::InMemoryBackend;

    fn writer() -> Writer {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .expect("database");
        crate::embedded::prepare(&db, std::path::Path::new("memory")).expect("prepared");
        Writer {
            db: Arc::new(db),
            access: Arc::new(AccessTracker::new(0)),
            state: Arc::default(),
            limits: BatchLimits {
                max_ops: 16,
                max_bytes: 1 << 20,
            },
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
        let writer = writer();
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
        let writer = writer();
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
        let writer = writer();
        let (a, mut refused) = append("nothing");
        let mut batch = slots([a]);
        writer.execute(&mut batch).expect("nothing to commit");
        batch.into_iter().for_each(|s| s.job.answer());
        assert_eq!(refused.try_recv(), Ok(Err(AppendError::NotFound)));
        assert_eq!(writer.state.commits(), 0);
    }
}
