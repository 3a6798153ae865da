//! `mooring serve`: open the engine, listen, and stop cleanly on SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use mooring_core::clock::{Clock, SystemClock};
use mooring_core::store::LogStore;
use mooring_engine::embedded::EmbeddedStore;
use mooring_engine::memory::MemoryStore;
use mooring_server::realtime::RealtimeConfig;
use mooring_server::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::cli::{EngineKind, LogFormat, ServeArgs};

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MOORING_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn open_store(args: &ServeArgs, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<dyn LogStore>> {
    Ok(match args.engine {
        EngineKind::Memory => {
            tracing::warn!("engine: memory; nothing is kept when the process stops");
            Arc::new(MemoryStore::new(clock))
        }
        EngineKind::Embedded => {
            let store = EmbeddedStore::open(&args.data_dir, clock).with_context(|| {
                format!("opening the embedded engine in {}", args.data_dir.display())
            })?;
            tracing::info!(data_dir = %args.data_dir.display(), "engine: embedded");
            Arc::new(store)
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = open_store(&args, clock.clone()).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr().context("reading the bound address")?;
    tracing::info!(address = %local, "mooring is listening");
    let realtime = RealtimeConfig {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        rollup_window: Duration::from_millis(args.rollup_window_ms),
        namespace_rollup: args
            .namespace_rollup
            .iter()
            .map(|(ns, ms)| (ns.clone(), Duration::from_millis(*ms)))
            .collect(),
        dedupe_window: Duration::from_secs(args.dedupe_window_secs),
        presence_grace: Duration::from_millis(args.presence_grace_ms),
        stall_after: Duration::from_millis(args.stall_after_ms),
        namespace_stall_after: args
            .namespace_stall_after
            .iter()
            .map(|(ns, ms)| (ns.clone(), Duration::from_millis(*ms)))
            .collect(),
        ..RealtimeConfig::default()
    };
    let config = ServerConfig {
        realtime,
        long_poll_timeout: args.long_poll_timeout(),
        max_append_bytes: usize::try_from(args.max_append_bytes).unwrap_or(usize::MAX),
        ..ServerConfig::default()
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    mooring_server::serve(
        listener,
        store,
        clock,
        config,
        shutdown,
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await
    .context("serving")?;
    tracing::info!("mooring stopped cleanly");
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: no new connections, draining requests in flight");
    shutdown.cancel();
}
