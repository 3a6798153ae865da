//! The realtime scenarios' commands: arguments into a `Config`, run, print, write JSON.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;

use mooring_bench::pusher_sign::Credentials;
use mooring_bench::target::Target;
use mooring_bench::ws::Endpoint;
use mooring_bench::{
    catch_up, fan_out, fan_out_pusher, idle_connections, resume_storm, sysmon, token_streaming,
    ws_limit,
};

use crate::cli::{
    CatchUpArgs, FanOutArgs, FanOutPusherArgs, IdleConnectionsArgs, RealtimeArgs, ResumeStormArgs,
    TokenStreamingArgs, WsLimitArgs,
};
use crate::write_json;

/// Open files this process needs for `connections` sockets, with room for the rest.
fn open_files_for(connections: usize) -> anyhow::Result<()> {
    let wanted = connections as u64 + 1_024;
    let got = sysmon::raise_open_files(wanted)?;
    if got < wanted {
        eprintln!(
            "mooring-bench: the open-file limit is {got}, under the {wanted} this run needs \
             (raise it with `ulimit -n {wanted}`); connections beyond it will fail"
        );
    }
    Ok(())
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn endpoint(common: &RealtimeArgs, connections: usize) -> anyhow::Result<Endpoint> {
    let sources = common
        .source_addrs
        .unwrap_or_else(|| Endpoint::sources_for(connections));
    Endpoint::parse(&common.url, sources)
}

fn prefix(common: &RealtimeArgs, scenario: &str) -> String {
    common.name_prefix.clone().unwrap_or_else(|| {
        format!(
            "bench-{scenario}-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
        )
    })
}

fn finish(
    json: Option<&std::path::Path>,
    human: String,
    report: &impl Serialize,
) -> anyhow::Result<()> {
    println!("{human}");
    match json {
        Some(path) => write_json(path, report),
        None => Ok(()),
    }
}

pub(crate) fn token_streaming(args: TokenStreamingArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let most_runs = if args.find_max {
        args.steps.iter().copied().max().unwrap_or(args.runs)
    } else {
        args.runs
    };
    let connections = most_runs * (1 + args.subscribers);
    open_files_for(connections)?;
    let config = token_streaming::Config {
        endpoint: endpoint(c, connections)?,
        runs: args.runs,
        subscribers: args.subscribers,
        tokens_per_sec: args.tokens_per_sec,
        tokens_per_answer: args.tokens_per_answer,
        duration: Duration::from_secs(args.duration_secs),
        warmup: Duration::from_secs(args.warmup_secs),
        connect_parallel: c.connect_parallel,
        server_pids: c.server_pid.clone(),
        name_prefix: prefix(c, "tokens"),
        label: c.label.clone(),
        progress: !c.no_progress,
    };
    let rt = runtime(c.threads)?;
    if args.find_max {
        let limit = Duration::from_millis(args.p99_limit_ms);
        let report = rt.block_on(token_streaming::find_max(config, &args.steps, limit))?;
        let human = format!(
            "token-streaming --find-max  {}: the largest number of runs with p99 under {} ms is {}",
            report.label, args.p99_limit_ms, report.max_runs
        );
        finish(c.json.as_deref(), human, &report)
    } else {
        let report = rt.block_on(token_streaming::run(config))?;
        finish(c.json.as_deref(), report.human(), &report)
    }
}

pub(crate) fn fan_out(args: FanOutArgs) -> anyhow::Result<()> {
    let config = fan_out_config(&args)?;
    let report = runtime(args.common.threads)?.block_on(fan_out::run(config))?;
    finish(args.common.json.as_deref(), report.human(), &report)
}

pub(crate) fn fan_out_pusher(args: FanOutPusherArgs) -> anyhow::Result<()> {
    let c = &args.fan_out.common;
    let mut fan_out = fan_out_config(&args.fan_out)?;
    // --label defaults to "mooring", which would mislabel a peer's results.
    if c.label == "mooring" {
        fan_out.label = args.server.clone();
    }
    let config = fan_out_pusher::Config {
        fan_out,
        http: Target::parse(&c.url, "/")?,
        credentials: Credentials::new(args.app_id, args.key, args.secret)?,
        server: args.server,
    };
    let report = runtime(c.threads)?.block_on(fan_out_pusher::run(config))?;
    finish(c.json.as_deref(), report.human(), &report)
}

fn fan_out_config(args: &FanOutArgs) -> anyhow::Result<fan_out::Config> {
    let c = &args.common;
    open_files_for(args.subscribers + 1)?;
    Ok(fan_out::Config {
        endpoint: endpoint(c, args.subscribers + 1)?,
        subscribers: args.subscribers,
        rate: args.rate,
        duration: Duration::from_secs(args.duration_secs),
        warmup: Duration::from_secs(args.warmup_secs),
        connect_parallel: c.connect_parallel,
        server_pid: c.server_pid.first().copied(),
        session: prefix(c, "fanout"),
        label: c.label.clone(),
        progress: !c.no_progress,
    })
}

pub(crate) fn idle_connections(args: IdleConnectionsArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let server_pid = c
        .server_pid
        .first()
        .copied()
        .context("idle-connections reads the server's memory: give its --server-pid")?;
    open_files_for(args.connections + 1)?;
    let config = idle_connections::Config {
        endpoint: endpoint(c, args.connections + 1)?,
        connections: args.connections,
        sessions: args.sessions,
        connect_parallel: c.connect_parallel,
        settle: Duration::from_secs(args.settle_secs),
        server_pid,
        name_prefix: prefix(c, "idle"),
        label: c.label.clone(),
        progress: !c.no_progress,
    };
    let report = runtime(c.threads)?.block_on(idle_connections::run(config))?;
    finish(c.json.as_deref(), report.human(), &report)
}

pub(crate) fn resume_storm(args: ResumeStormArgs) -> anyhow::Result<()> {
    let c = &args.common;
    // During the storm a subscriber's old socket may linger while its new one opens.
    open_files_for(2 * args.subscribers + 1)?;
    let config = resume_storm::Config {
        endpoint: endpoint(c, args.subscribers + 1)?,
        subscribers: args.subscribers,
        sessions: args.sessions,
        rate: args.rate,
        before: Duration::from_secs(args.before_secs),
        after: Duration::from_secs(args.after_secs),
        connect_parallel: c.connect_parallel,
        server_pid: c.server_pid.first().copied(),
        name_prefix: prefix(c, "storm"),
        label: c.label.clone(),
        progress: !c.no_progress,
    };
    let report = runtime(c.threads)?.block_on(resume_storm::run(config))?;
    let clean = report.check.gaps == 0 && report.check.duplicates == 0 && report.incomplete == 0;
    finish(c.json.as_deref(), report.human(), &report)?;
    anyhow::ensure!(
        clean,
        "the storm lost or repeated events: {} gaps, {} duplicates, {} subscribers incomplete",
        report.check.gaps,
        report.check.duplicates,
        report.incomplete
    );
    Ok(())
}

pub(crate) fn catch_up(args: CatchUpArgs) -> anyhow::Result<()> {
    let c = &args.common;
    let config = catch_up::Config {
        endpoint: endpoint(c, 1)?,
        answers: args.answers,
        tokens: args.tokens,
        repeats: args.repeats,
        server_pid: c.server_pid.first().copied(),
        session: prefix(c, "catchup"),
        label: c.label.clone(),
        progress: !c.no_progress,
    };
    let report = runtime(c.threads)?.block_on(catch_up::run(config))?;
    finish(c.json.as_deref(), report.human(), &report)
}

pub(crate) fn ws_limit(args: WsLimitArgs) -> anyhow::Result<()> {
    open_files_for(2 * args.readers + 1)?;
    let config = ws_limit::Config {
        readers: args.readers,
        batch: args.batch,
        duration: Duration::from_secs(args.duration_secs),
        warmup: Duration::from_secs(args.warmup_secs),
        progress: !args.no_progress,
    };
    let report = runtime(args.threads)?.block_on(ws_limit::run(config))?;
    finish(args.json.as_deref(), report.human(), &report)
}
