//! `mooring-bench`: Mooring's load generator and physical references.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use serde::Serialize;

use mooring_bench::target::Target;
use mooring_bench::{durable_appends, fsync_limit};

mod cli;
mod realtime_commands;

use cli::{Cli, Command, DurableAppendsArgs, FsyncLimitArgs};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::DurableAppends(args) => durable_appends_command(args),
        Command::FsyncLimit(args) => fsync_limit_command(args),
        Command::TokenStreaming(args) => realtime_commands::token_streaming(args),
        Command::FanOut(args) => realtime_commands::fan_out(args),
        Command::FanOutPusher(args) => realtime_commands::fan_out_pusher(args),
        Command::IdleConnections(args) => realtime_commands::idle_connections(args),
        Command::ResumeStorm(args) => realtime_commands::resume_storm(args),
        Command::CatchUp(args) => realtime_commands::catch_up(args),
        Command::WsLimit(args) => realtime_commands::ws_limit(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mooring-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn durable_appends_command(args: DurableAppendsArgs) -> anyhow::Result<()> {
    let target = Target::parse(&args.url, &args.stream_path)?;
    let name_prefix = args
        .name_prefix
        .unwrap_or_else(|| format!("bench-{}", chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")));
    let config = durable_appends::Config {
        target,
        producers: args.producers,
        streams: args.streams,
        size: args.size,
        duration: Duration::from_secs(args.duration_secs),
        warmup: Duration::from_secs(args.warmup_secs),
        name_prefix,
        label: args.label,
        progress: !args.no_progress,
    };
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    let report = runtime.block_on(durable_appends::run(config))?;
    println!("{}", report.human());
    if let Some(path) = args.json {
        write_json(&path, &report)?;
    }
    Ok(())
}

fn fsync_limit_command(args: FsyncLimitArgs) -> anyhow::Result<()> {
    let report = fsync_limit::run(&fsync_limit::Config {
        dir: args.dir,
        batch: args.batch,
        size: args.size,
        duration: Duration::from_secs(args.duration_secs),
        mode: args.file_mode.into(),
        progress: !args.no_progress,
    })?;
    println!("{}", report.human());
    if let Some(path) = args.json {
        write_json(&path, &report)?;
    }
    Ok(())
}

/// Writes `value` as pretty JSON, creating the parent directory if needed.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut text = serde_json::to_string_pretty(value).context("encoding the results")?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
