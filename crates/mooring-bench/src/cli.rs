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

    /// Token streaming over the realtime protocol: --runs agents, each streaming tokens at
    /// --tokens-per-sec into one message per answer of its own session, with --subscribers
    /// readers per session. Reports agent-to-screen latency (p50/p99/p999), the server's CPU and
    /// memory (with --server-pid), and with --find-max the largest number of runs whose p99
    /// stays under --p99-limit-ms. The server's rollup window is its own setting
    /// (`mooring serve --rollup-window-ms`): name it in --label.
    TokenStreaming(TokenStreamingArgs),

    /// Fan-out: one publisher at --rate events a second to --subscribers WebSocket subscribers
    /// of one session; deliveries a second.
    FanOut(FanOutArgs),

    /// Fan-out against a Pusher server (Sockudo): --subscribers WebSocket subscribers of one
    /// public channel, and a publisher posting --rate events a second to the signed HTTP API
    /// (`/apps/{id}/batch_events`, in order on one connection, up to 10 events a request).
    FanOutPusher(FanOutPusherArgs),

    /// Idle connections: opens --connections connections, each attached to a session, and
    /// reads the server's memory before and after (needs --server-pid): memory per connection.
    IdleConnections(IdleConnectionsArgs),

    /// Resume storm: --subscribers subscribers of sessions being written all drop at once and
    /// resume from their last serial; time until all are caught up, gaps and duplicates.
    ResumeStorm(ResumeStormArgs),

    /// Catch-up: fills a session with --answers messages of --tokens appends, then times a late
    /// joiner until it holds the full materialized view.
    CatchUp(CatchUpArgs),

    /// The physical reference for fan-out: small WebSocket frames a second this process can push
    /// to --readers local readers, batched --batch frames per flush.
    WsLimit(WsLimitArgs),
}

/// What every realtime scenario takes.
#[derive(Debug, clap::Args)]
pub(crate) struct RealtimeArgs {
    /// Base URL of the node (an IP address, plain http or ws).
    #[arg(long, default_value = "http://127.0.0.1:7420")]
    pub(crate) url: String,

    /// Pid of the server process, for its CPU and memory from /proc. Token streaming takes
    /// several, separated by commas (the nodes of a --url list and their store), and sums them.
    #[arg(long, value_delimiter = ',')]
    pub(crate) server_pid: Vec<u32>,

    /// Loopback source addresses to connect from (127.0.0.1, .2, …); one per 20,000
    /// connections when absent.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=250).map(|n| n as usize))]
    pub(crate) source_addrs: Option<usize>,

    /// WebSocket handshakes in flight while connecting.
    #[arg(long, default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub(crate) connect_parallel: usize,

    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=256).map(|n| n as usize))]
    pub(crate) threads: usize,

    /// Sessions are named PREFIX-… [default: bench-<scenario>-<UTC time>]
    #[arg(long)]
    pub(crate) name_prefix: Option<String>,

    /// Name of the server under test (and its settings), carried into the results.
    #[arg(long, default_value = "mooring")]
    pub(crate) label: String,

    /// Write the results as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,

    /// Never show the progress bar (it is shown only when standard output is a terminal).
    #[arg(long)]
    pub(crate) no_progress: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TokenStreamingArgs {
    #[command(flatten)]
    pub(crate) common: RealtimeArgs,

    /// Concurrent runs: one session and one agent connection each.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub(crate) runs: usize,

    /// Subscriber connections per session.
    #[arg(long, default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(0..=1_000).map(|n| n as usize))]
    pub(crate) subscribers: usize,

    /// Tokens each agent sends a second.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub(crate) tokens_per_sec: u32,

    /// Tokens per answer, then a new message.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) tokens_per_answer: u32,

    /// Seconds measured (per step with --find-max).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) duration_secs: u64,

    /// Seconds of streaming before the measurement, not counted.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub(crate) warmup_secs: u64,

    /// Step the number of runs up through --steps and report the largest whose p99 stays under
    /// --p99-limit-ms with every token delivered.
    #[arg(long)]
    pub(crate) find_max: bool,

    /// Runs of each --find-max step.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,250,500,1000,1500,2000,3000,4000"
    )]
    pub(crate) steps: Vec<usize>,

    /// The p99 latency a --find-max step must stay under, milliseconds.
    #[arg(long, default_value_t = 100)]
    pub(crate) p99_limit_ms: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FanOutArgs {
    #[command(flatten)]
    pub(crate) common: RealtimeArgs,

    /// Subscriber connections, all attached to one session.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub(crate) subscribers: usize,

    /// Events the publisher sends a second.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) rate: u32,

    /// Seconds measured.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) duration_secs: u64,

    /// Seconds of publishing before the measurement, not counted.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub(crate) warmup_secs: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct FanOutPusherArgs {
    #[command(flatten)]
    pub(crate) fan_out: FanOutArgs,

    /// The app's id.
    #[arg(long)]
    pub(crate) app_id: String,

    /// The app's key.
    #[arg(long)]
    pub(crate) key: String,

    /// The app's secret (a benchmark app's; it signs the publishes).
    #[arg(long)]
    pub(crate) secret: String,

    /// The kind of server, carried into the results as `server`.
    #[arg(long, default_value = "sockudo")]
    pub(crate) server: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct IdleConnectionsArgs {
    #[command(flatten)]
    pub(crate) common: RealtimeArgs,

    /// Connections to open.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub(crate) connections: usize,

    /// Sessions the connections attach to (spread evenly).
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub(crate) sessions: usize,

    /// Seconds to wait with every connection open before reading the server's memory.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub(crate) settle_secs: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ResumeStormArgs {
    #[command(flatten)]
    pub(crate) common: RealtimeArgs,

    /// Subscriber connections.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub(crate) subscribers: usize,

    /// Sessions written, the subscribers spread over them.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub(crate) sessions: usize,

    /// Events a second the writer publishes, over all sessions.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    pub(crate) rate: u32,

    /// Seconds of streaming before the drop.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub(crate) before_secs: u64,

    /// Seconds of streaming after everyone caught up.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub(crate) after_secs: u64,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CatchUpArgs {
    #[command(flatten)]
    pub(crate) common: RealtimeArgs,

    /// Messages (answers) in the session.
    #[arg(long, default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub(crate) answers: usize,

    /// Tokens (appends) per answer.
    #[arg(long, default_value_t = 2_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub(crate) tokens: usize,

    /// Late joiners timed, one after the other.
    #[arg(long, default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1_000).map(|n| n as usize))]
    pub(crate) repeats: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct WsLimitArgs {
    /// Local reader connections.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub(crate) readers: usize,

    /// Frames written per flush.
    #[arg(long, default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub(crate) batch: usize,

    /// Seconds measured.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub(crate) duration_secs: u64,

    /// Seconds of pushing before the measurement.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub(crate) warmup_secs: u64,

    /// Worker threads.
    #[arg(long, default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=256).map(|n| n as usize))]
    pub(crate) threads: usize,

    /// Write the results as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,

    /// Never show the progress bar.
    #[arg(long)]
    pub(crate) no_progress: bool,
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
