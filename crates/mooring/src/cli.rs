//! Command-line arguments: parsed raw by clap, then validated into a [`ServeSettings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Mooring: durable sessions for AI applications.
///
/// A session is a named, durable, ordered log between agents and clients. Any tab, device or
/// operator attaches, gets the history, then the live stream; reconnects resume with no gap and
/// no duplicate. Sessions are also readable and writable as Durable Streams.
#[derive(Debug, Parser)]
#[command(name = "mooring", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a Mooring node.
    ///
    /// Listens on one port for every surface: the Durable Streams protocol at /v1/stream/...,
    /// and /healthz. Every setting can also come from a MOORING_* environment variable.
    Serve(ServeArgs),
}

/// Storage engines a node can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum EngineKind {
    /// Files in --data-dir (redb), each append fsynced before it is acknowledged.
    Embedded,
    /// Process memory only: everything is lost when the process stops. For tests and demos.
    Memory,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "MOORING_LISTEN", default_value = "127.0.0.1:7420")]
    pub(crate) listen: SocketAddr,

    /// Directory of the embedded engine's files (created if missing).
    #[arg(long, env = "MOORING_DATA_DIR", default_value = "./mooring-data")]
    pub(crate) data_dir: PathBuf,

    /// Storage engine.
    #[arg(long, env = "MOORING_ENGINE", value_enum, default_value_t = EngineKind::Embedded)]
    pub(crate) engine: EngineKind,

    /// How long a long-poll read waits for new data before answering 204, in milliseconds.
    #[arg(long, env = "MOORING_LONG_POLL_TIMEOUT_MS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(1..=300_000))]
    pub(crate) long_poll_timeout_ms: u64,

    /// Largest accepted append or create body, in bytes.
    #[arg(long, env = "MOORING_MAX_APPEND_BYTES", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    pub(crate) max_append_bytes: u64,

    /// Seconds to wait for requests in flight at shutdown before giving up on them.
    #[arg(long, env = "MOORING_DRAIN_TIMEOUT_SECS", default_value_t = 10)]
    pub(crate) drain_timeout_secs: u64,

    /// Log format.
    #[arg(long, env = "MOORING_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

impl ServeArgs {
    pub(crate) fn long_poll_timeout(&self) -> Duration {
        Duration::from_millis(self.long_poll_timeout_ms)
    }
}
