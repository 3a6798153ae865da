//! Checkpoints: the changes held in memory, written into the database file in one durable
//! commit.
//!
//! A checkpoint of a few megabytes takes a redb commit of thousands of inserts and a sync of
//! the pages they touched: a hundred milliseconds or more. So it runs on its own thread while
//! the writer goes on logging batches: the writer freezes the changes gathered so far and moves
//! the log to its other segment; the checkpoint thread writes the frozen changes into the file
//! and then drops them from what readers see. Only if the new segment fills before the
//! checkpoint ends does the writer wait for it.

use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use redb::{Database, Durability};

use super::layered::write_delta;
use super::overlay::{Delta, Layers};
use super::tables::{APPLIED_LSN_KEY, META};
use super::txn::{redb_error, WriteTables};
use super::writer::{write_layers, WriterState};

/// Writes `deltas` (lowest first) into the file in one durable commit recording `lsn` as the
/// last batch the file holds. `Err` carries why the engine must be poisoned.
pub(super) fn commit_deltas(db: &Database, deltas: &[&Delta], lsn: u64) -> Result<(), String> {
    let what = "writing a checkpoint";
    let mut txn = db
        .begin_write()
        .map_err(|e| redb_error(what, e).to_string())?;
    txn.set_durability(Durability::Immediate);
    {
        let mut tables = WriteTables::open(&txn).map_err(|e| e.to_string())?;
        for delta in deltas {
            write_delta(&mut tables, delta).map_err(|e| e.to_string())?;
        }
        if let Some(why) = tables.take_failure() {
            return Err(why);
        }
        let mut meta = txn
            .open_table(META)
            .map_err(|e| redb_error(what, e).to_string())?;
        meta.insert(APPLIED_LSN_KEY, lsn)
            .map_err(|e| redb_error(what, e).to_string())?;
    }
    txn.commit()
        .map_err(|e| redb_error("committing a checkpoint", e).to_string())
}

/// Frozen changes to write, and the last batch they hold.
pub(super) struct Frozen {
    pub(super) delta: Arc<Delta>,
    pub(super) lsn: u64,
}

/// The writer's handle on the checkpoint thread.
#[derive(Debug)]
pub(super) struct Checkpointer {
    work: Option<mpsc::Sender<Frozen>>,
    done: mpsc::Receiver<Result<(), String>>,
    thread: Option<JoinHandle<()>>,
    /// Whether a checkpoint was handed over and its end not yet seen.
    running: bool,
}

impl std::fmt::Debug for Frozen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen").field("lsn", &self.lsn).finish()
    }
}

impl Checkpointer {
    pub(super) fn spawn(
        db: Arc<Database>,
        layers: Arc<RwLock<Layers>>,
        state: Arc<WriterState>,
    ) -> std::io::Result<Self> {
        let (work, jobs) = mpsc::channel::<Frozen>();
        let (report, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mooring-checkpoint".into())
            .spawn(move || {
                for frozen in jobs {
                    let started = std::time::Instant::now();
                    let result = commit_deltas(&db, &[&frozen.delta], frozen.lsn);
                    if result.is_ok() {
                        // Only now may readers stop seeing the frozen changes in memory: the
                        // file they open from here on holds them.
                        write_layers(&layers).frozen = None;
                        state.checkpointed();
                        tracing::debug!(
                            lsn = frozen.lsn,
                            bytes = frozen.delta.bytes(),
                            took_us = started.elapsed().as_micros(),
                            "checkpoint"
                        );
                    }
                    if report.send(result).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Self {
            work: Some(work),
            done,
            thread: Some(thread),
            running: false,
        })
    }

    /// Whether a checkpoint is under way.
    pub(super) fn running(&mut self) -> Result<bool, String> {
        if self.running {
            match self.done.try_recv() {
                Ok(result) => {
                    self.running = false;
                    result?;
                }
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err("the checkpoint thread stopped unexpectedly".into());
                }
            }
        }
        Ok(self.running)
    }

    /// Waits for the checkpoint under way, if any.
    pub(super) fn wait(&mut self) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        self.done
            .recv()
            .map_err(|_| "the checkpoint thread stopped unexpectedly".to_string())?
    }

    /// Hands `frozen` to the thread; the caller made sure none is running.
    pub(super) fn start(&mut self, frozen: Frozen) -> Result<(), String> {
        let work = self
            .work
            .as_ref()
            .ok_or_else(|| "internal: the checkpoint thread was stopped".to_string())?;
        work.send(frozen)
            .map_err(|_| "the checkpoint thread stopped unexpectedly".to_string())?;
        self.running = true;
        Ok(())
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.work.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the checkpoint thread panicked");
            }
        }
    }
}
