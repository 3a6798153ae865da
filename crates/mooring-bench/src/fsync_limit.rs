//! The physical reference: how fast this disk takes group commits.
//!
//! Appends `batch` records of `size` bytes to a file in one `write`, then `fdatasync`s it, over
//! and over for the duration. Each round is what an ideal group-commit log does for a batch of
//! `batch` appends, with no indexing, no checksums and no network, so `records_per_sec` at batch
//! `N` is the ceiling for a server whose commits carry `N` appends each, and a server's figure
//! reads as a percentage of it.
//!
//! Two file modes, because on a journaling file system they differ by an order of magnitude:
//! * `prewritten` (the default, the true ceiling): the records land in a 64 MiB region written
//!   and synced beforehand, wrapping around, so `fdatasync` flushes data only — what a log with
//!   preallocated, zero-filled segments pays;
//! * `growing`: the file grows with every round, as a plain append-only file does, so each
//!   `fdatasync` must also persist the new size (a journal commit); emptied past 256 MiB.

use std::fs::File;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::latency::{human_us, Latencies, LatencySummary};
use crate::progress::Progress;

/// A growing file starts over past this size.
const ROTATE_BYTES: u64 = 256 << 20;

/// Size of the region a prewritten file cycles through (at least one round).
const PREWRITTEN_BYTES: u64 = 64 << 20;

/// How the file under test is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileMode {
    /// Records overwrite a region written and synced beforehand: data-only syncs.
    Prewritten,
    /// Records extend the file: every sync also persists the new size.
    Growing,
}

impl FileMode {
    fn name(self) -> &'static str {
        match self {
            FileMode::Prewritten => "prewritten",
            FileMode::Growing => "growing",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory on the disk to measure; a temporary file is made (and removed) there.
    pub dir: PathBuf,
    /// Records per sync.
    pub batch: usize,
    /// Bytes per record.
    pub size: usize,
    /// How long to measure.
    pub duration: Duration,
    /// How the file is laid out.
    pub mode: FileMode,
    /// Show a progress bar (when standard output is a terminal).
    pub progress: bool,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Always `fsync-limit`.
    pub scenario: &'static str,
    /// The directory measured.
    pub dir: String,
    /// When the run began (RFC 3339).
    pub started_at: String,
    /// Records per sync.
    pub batch: usize,
    /// Bytes per record.
    pub size_bytes: usize,
    /// How the file was laid out.
    pub file_mode: FileMode,
    /// Seconds measured.
    pub duration_secs: f64,
    /// Rounds of write + `fdatasync` completed.
    pub syncs: u64,
    /// Rounds a second.
    pub syncs_per_sec: f64,
    /// Records a second (`syncs_per_sec × batch`): the ceiling for commits of `batch` appends.
    pub records_per_sec: f64,
    /// Bytes a second.
    pub bytes_per_sec: f64,
    /// Time of one round (write and `fdatasync`).
    pub sync_latency: LatencySummary,
}

impl Report {
    /// A few lines for people.
    pub fn human(&self) -> String {
        let l = &self.sync_latency;
        format!(
            "fsync-limit  batch {batch} × {size} B, {mode} file, {dur:.1} s in {dir}\n  \
             syncs     {syncs} ({sps:.0}/s)  records {rps:.0}/s  ({mib:.2} MiB/s)\n  \
             latency   p50 {p50}  p99 {p99}  p999 {p999}  max {max}",
            batch = self.batch,
            size = self.size_bytes,
            mode = self.file_mode.name(),
            dur = self.duration_secs,
            dir = self.dir,
            syncs = self.syncs,
            sps = self.syncs_per_sec,
            rps = self.records_per_sec,
            mib = self.bytes_per_sec / (1024.0 * 1024.0),
            p50 = human_us(l.p50_us),
            p99 = human_us(l.p99_us),
            p999 = human_us(l.p999_us),
            max = human_us(l.max_us),
        )
    }
}

/// Runs the measurement (blocking: call it off any async runtime).
pub fn run(config: &Config) -> anyhow::Result<Report> {
    if config.batch == 0 || config.size == 0 {
        bail!("batch and size must each be at least 1");
    }
    if config.duration.is_zero() {
        bail!("the duration must be longer than zero");
    }
    let meta = std::fs::metadata(&config.dir)
        .with_context(|| format!("{} cannot be read", config.dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", config.dir.display());
    }
    let round_bytes = config
        .batch
        .checked_mul(config.size)
        .filter(|&n| n <= 1 << 30)
        .context("batch × size must be at most 1 GiB")?;
    let buffer = vec![b'r'; round_bytes];
    let mut file = tempfile::Builder::new()
        .prefix(".mooring-bench-fsync-")
        .tempfile_in(&config.dir)
        .with_context(|| format!("creating a file in {}", config.dir.display()))?;
    let region = match config.mode {
        FileMode::Prewritten => {
            let region = PREWRITTEN_BYTES.max(round_bytes as u64);
            prewrite(file.as_file_mut(), region)?;
            region
        }
        FileMode::Growing => ROTATE_BYTES,
    };
    let progress = Progress::new(config.duration, "fsync-limit", config.progress);

    let started_at = chrono::Utc::now().to_rfc3339();
    let mut latencies = Latencies::new();
    let mut written: u64 = 0;
    let mut syncs: u64 = 0;
    let start = Instant::now();
    let mut next_update = start;
    loop {
        let now = Instant::now();
        if now - start >= config.duration {
            break;
        }
        if written + round_bytes as u64 > region {
            let f = file.as_file_mut();
            if config.mode == FileMode::Growing {
                f.set_len(0).context("emptying the file")?;
                f.sync_all().context("syncing the emptied file")?;
            }
            f.seek(SeekFrom::Start(0)).context("rewinding the file")?;
            written = 0;
        }
        let round = Instant::now();
        let f: &mut File = file.as_file_mut();
        f.write_all(&buffer).context("writing")?;
        f.sync_data().context("fdatasync")?;
        latencies.record(round.elapsed());
        written += round_bytes as u64;
        syncs += 1;
        if round >= next_update {
            let elapsed = round - start;
            let rate = syncs as f64 / elapsed.as_secs_f64().max(1e-3);
            progress.update(elapsed, format!("{rate:.0} syncs/s"));
            next_update = round + Duration::from_millis(200);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    progress.finish();
    file.close().context("removing the file")?;

    let syncs_per_sec = syncs as f64 / secs;
    Ok(Report {
        scenario: "fsync-limit",
        dir: config.dir.display().to_string(),
        started_at,
        batch: config.batch,
        size_bytes: config.size,
        file_mode: config.mode,
        duration_secs: secs,
        syncs,
        syncs_per_sec,
        records_per_sec: syncs_per_sec * config.batch as f64,
        bytes_per_sec: syncs_per_sec * round_bytes as f64,
        sync_latency: latencies.summary(),
    })
}

/// Fills the first `len` bytes of `file` with zeros, syncs it all and rewinds.
fn prewrite(file: &mut File, len: u64) -> anyhow::Result<()> {
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).context("prewriting the file")?;
        left -= n as u64;
    }
    file.sync_all().context("syncing the prewritten file")?;
    file.seek(SeekFrom::Start(0))
        .context("rewinding the file")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_short_run_in_both_modes() -> anyhow::Result<()> {
        for mode in [FileMode::Prewritten, FileMode::Growing] {
            let dir = tempfile::tempdir()?;
            let report = run(&Config {
                dir: dir.path().to_owned(),
                batch: 4,
                size: 256,
                duration: Duration::from_millis(200),
                mode,
                progress: false,
            })?;
            assert!(report.syncs > 0);
            assert_eq!(report.file_mode, mode);
            assert_eq!(report.records_per_sec, report.syncs_per_sec * 4.0);
            assert_eq!(report.sync_latency.count, report.syncs);
            // The scratch file is gone.
            assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        }
        Ok(())
    }

    #[test]
    fn refuses_a_missing_directory() {
        let config = Config {
            dir: PathBuf::from("/nonexistent/mooring-bench"),
            batch: 1,
            size: 1,
            duration: Duration::from_millis(1),
            mode: FileMode::Prewritten,
            progress: false,
        };
        assert!(run(&config).is_err());
    }
}
