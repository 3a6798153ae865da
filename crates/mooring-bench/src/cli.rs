//! Command-line arguments.

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand, ValueEnum};

use mooring_bench::fsync_limit::FileMode;

/// Mooring's load generator: measures a server (Mooring or a peer) over its wire protocol, and
/// the physical limits of this machine, and writes the results as JSON.
#[derive(Debug, Parser)]
#[command(name = "mooring-bench", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Durable appends over the Durable Streams protocol.
    ///
    /// Creates the streams (PUT, application/octet-stream), then runs --producers producers, each
    /// on its own HTTP/1.1 keep-alive connection, appending --size-byte bodies one at a time
    /// (send, wait for the 2xx, send the next) to the streams in round-robin order. Reports
    /// appends a second, latency percentiles and errors.
    DurableAppends(DurableAppendsArgs),

    /// Raw group-commit rate of a disk: write --batch records of --size bytes, fdatasync, repeat.
    ///
    /// The ceiling for a log whose commits carry --batch appends each, so a server's durable
    /// appends read as a percentage of it.
    FsyncLimit(FsyncLimitArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct DurableAppendsArgs {
    /// Base URL of the server (plain http).
    #[arg(long, default_value = "http://127.0.0.1:7420")]
    pub(crate) url: String,

    /// Path under the base URL where streams are named.
    #[arg(long, default_value = "/v1/stream/")]
    pub(crate) stream_path: String,

    /// Concurrent producers, one connection each.
    #[arg(long, default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub(crate) producers: usize,

    /// Streams appended to.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub(crate) streams: usize,

    /// Bytes per append.
    #[arg(long, default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=(16 << 20)).map(|n| n as usize))]
    pub(crate) size: usize,

    /// Seconds measured.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) duration_secs: u64,

    /// Seconds of appends before the measurement, not counted.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub(crate) warmup_secs: u64,

    /// Worker threads of the load generator (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=256).map(|n| n as usize))]
    pub(crate) threads: usize,

    /// Streams are named PREFIX-0000, PREFIX-0001, ... [default: bench-<UTC time>]
    #[arg(long)]
    pub(crate) name_prefix: Option<String>,

    /// Name of the server under test, carried into the results.
    #[arg(long, default_value = "server")]
    pub(crate) label: String,

    /// Write the results as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,

    /// Never show the progress bar (it is shown only when standard output is a terminal).
    #[arg(long)]
    pub(crate) no_progress: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FsyncLimitArgs {
    /// Directory on the disk to measure (a temporary file is written there and removed).
    #[arg(long)]
    pub(crate) dir: PathBuf,

    /// Records per fdatasync.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub(crate) batch: usize,

    /// Bytes per record.
    #[arg(long, default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=(16 << 20)).map(|n| n as usize))]
    pub(crate) size: usize,

    /// Seconds measured.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) duration_secs: u64,

    /// prewritten: records overwrite a region written and synced beforehand (data-only syncs,
    /// the true ceiling); growing: records extend the file, so each sync also persists its size.
    #[arg(long, value_enum, default_value_t = FileModeArg::Prewritten)]
    pub(crate) file_mode: FileModeArg,

    /// Write the results as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,

    /// Never show the progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum FileModeArg {
    Prewritten,
    Growing,
}

impl From<FileModeArg> for FileMode {
    fn from(arg: FileModeArg) -> Self {
        match arg {
            FileModeArg::Prewritten => FileMode::Prewritten,
            FileModeArg::Growing => FileMode::Growing,
        }
    }
}
